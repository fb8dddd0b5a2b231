"""kobako.storage.volumes: names, create/get/list/remove/prune with the local driver's rules,
and `seed` (an image's content copied into an empty volume) against hand-made overlay
layers: whiteouts, opaque directories, symlinks, hard links, owners, modes and times."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from kobako.storage.volumes import (
    ANONYMOUS_LABEL,
    VolumeError,
    VolumeInUse,
    VolumeNotFound,
    VolumeStore,
    valid_name,
)

CID1, CID2 = "a" * 64, "b" * 64
MTIME = 1_600_000_000
CAP_NET_RAW = bytes.fromhex("0100000200200000000000000000000000000000")  # security.capability v2


@pytest.fixture
def store(tmp_path: Path) -> VolumeStore:
    return VolumeStore(str(tmp_path / "data"))


def rec(cid: str, *names: str) -> dict:
    return {"id": cid, "name": cid[:4], "volumes": [{"name": n, "destination": f"/{n}"} for n in names]}


def leftovers(store: VolumeStore) -> list[str]:
    return sorted(os.listdir(store.dir))


# -- names, create, get, list -----------------------------------------------------------------


@pytest.mark.parametrize("name, ok", [
    ("v1", True), ("my_vol.data-1", True), ("0a", True), ("A" * 255, True),
    ("a", False), ("", False), ("_v", False), (".v", False), ("-v", False), ("a/b", False),
    ("../x", False), ("v 1", False), ("v:1", False), ("ünï", False), ("A" * 256, False),
])
def test_name_rules(name: str, ok: bool):
    assert valid_name(name) is ok


def test_create_lays_out_the_volume(store: VolumeStore):
    vol = store.create("v1", labels={"k": "v"})
    vdir = Path(store.dir) / "v1"
    data = vdir / "_data"
    assert data.is_dir() and stat.S_IMODE(data.stat().st_mode) == 0o755
    assert (data.stat().st_uid, data.stat().st_gid) == (os.getuid(), os.getgid())
    on_disk = json.loads((vdir / "volume.json").read_text())
    assert on_disk == vol
    assert vol["Name"] == "v1" and vol["Driver"] == "local" and vol["Scope"] == "local"
    assert vol["Mountpoint"] == str(data) == store.mountpoint("v1")
    assert vol["Labels"] == {"k": "v"} and vol["Options"] == {} and vol["seeded"] is False
    assert vol["CreatedAt"].endswith("Z") and len(vol["CreatedAt"]) == 20
    assert store.get("v1") == vol
    assert leftovers(store) == [".lock", "v1"]


def test_create_again_returns_the_volume_unchanged(store: VolumeStore):
    first = store.create("v1", labels={"a": "1"})
    (Path(first["Mountpoint"]) / "keep").write_text("x")
    again = store.create("v1", labels={"b": "2"})
    assert again == first and (Path(first["Mountpoint"]) / "keep").exists()


def test_anonymous_volume_has_a_hex_name_and_the_anonymous_label(store: VolumeStore):
    vol = store.create()
    assert len(vol["Name"]) == 64 and int(vol["Name"], 16) >= 0
    assert vol["Labels"] == {ANONYMOUS_LABEL: ""}
    assert store.create()["Name"] != vol["Name"]


@pytest.mark.parametrize("name, msg", [
    ("a", "too short"), ("../escape", "invalid characters"), ("-x", "invalid characters"),
    ("a/b", "invalid characters"), ("x" * 300, "too long"), ("é", "invalid characters"),
])
def test_create_refuses_bad_names(store: VolumeStore, name: str, msg: str):
    with pytest.raises(VolumeError, match=msg):
        store.create(name)
    assert leftovers(store) == []


@pytest.mark.parametrize("opts, msg", [
    ({"foo": "1"}, 'invalid option: "foo"'), ({"size": "10G"}, "quota"),
    ({"type": "tmpfs"}, 'missing required option: "device"'),
    ({"o": "size=1m", "device": "tmpfs"}, 'missing required option: "type"'),
])
def test_create_checks_the_local_drivers_options(store: VolumeStore, opts: dict, msg: str):
    with pytest.raises(VolumeError, match=msg):
        store.create("v1", options=opts)
    with pytest.raises(VolumeNotFound):
        store.get("v1")


def test_create_keeps_valid_options(store: VolumeStore):
    opts = {"type": "tmpfs", "device": "tmpfs", "o": "size=1m"}
    assert store.create("t1", options=opts)["Options"] == opts


def test_get_and_mountpoint_refuse_unknown_and_hostile_names(store: VolumeStore):
    with pytest.raises(VolumeNotFound, match="^no such volume: nope$"):
        store.get("nope")
    for bad in ("../../etc", "/etc", ".lock", ""):
        with pytest.raises(VolumeNotFound):
            store.get(bad)
        with pytest.raises(VolumeNotFound):
            store.mountpoint(bad)


def test_list_is_sorted_and_skips_what_is_not_a_volume(store: VolumeStore):
    for n in ("zz", "aa", "mm"):
        store.create(n)
    os.mkdir(os.path.join(store.dir, "stray"))  # no volume.json: not a volume
    Path(store.dir, "broken").mkdir()
    Path(store.dir, "broken", "volume.json").write_text("{nope")
    assert [v["Name"] for v in store.list()] == ["aa", "mm", "zz"]
    with pytest.raises(VolumeError, match="not valid JSON"):
        store.get("broken")


def test_crash_leftovers_are_swept_under_the_lock(store: VolumeStore):
    for n in (".tmp-0123", ".rm-4567"):
        os.makedirs(os.path.join(store.dir, n, "_data"))
    store.create("v1")
    assert leftovers(store) == [".lock", "v1"]


# -- users, remove, prune ---------------------------------------------------------------------


def test_users_and_in_use_read_the_records():
    recs = [rec(CID1, "v1", "v2"), rec(CID2, "v2"), {"id": "c" * 64, "name": "x"},
            {"id": "d" * 64, "name": "y", "volumes": None}]
    assert VolumeStore.users(recs, "v1") == [CID1]
    assert VolumeStore.users(recs, "v2") == [CID1, CID2]
    assert VolumeStore.users(recs, "v3") == []
    assert VolumeStore.in_use(recs) == {"v1", "v2"}


def test_remove_deletes_everything(store: VolumeStore):
    vol = store.create("v1")
    Path(vol["Mountpoint"], "d").mkdir()
    Path(vol["Mountpoint"], "d", "f").write_text("data")
    os.symlink("/etc", Path(vol["Mountpoint"], "etc"))  # never followed by the delete
    store.remove("v1", [])
    assert leftovers(store) == [".lock"] and os.path.isdir("/etc")
    with pytest.raises(VolumeNotFound):
        store.get("v1")


def test_remove_in_use_is_refused_even_with_force(store: VolumeStore):
    store.create("v1")
    for force in (False, True):
        with pytest.raises(VolumeInUse) as ei:
            store.remove("v1", [CID1, CID2], force=force)
        assert str(ei.value) == f"remove v1: volume is in use - [{CID1[:12]}, {CID2[:12]}]"
    assert store.get("v1")["Name"] == "v1"


def test_remove_missing_volume(store: VolumeStore):
    with pytest.raises(VolumeNotFound, match="no such volume: nope"):
        store.remove("nope", [])
    store.remove("nope", [], force=True)  # -f forgives a missing volume, as docker does
    store.remove("../x", [], force=True)


def test_prune_removes_unused_anonymous_volumes_by_default(store: VolumeStore):
    anon_used, anon_free = store.create()["Name"], store.create()["Name"]
    store.create("named")
    data = Path(store.mountpoint(anon_free))
    (data / "f").write_bytes(b"x" * 1000)
    (data / "d").mkdir()
    (data / "d" / "g").write_bytes(b"y" * 234)
    os.link(data / "f", data / "hard")  # one inode: counted once
    removed, freed = store.prune({anon_used})
    assert removed == [anon_free] and freed == 1234
    assert sorted(v["Name"] for v in store.list()) == sorted([anon_used, "named"])
    removed, freed = store.prune({anon_used}, all_volumes=True)
    assert removed == ["named"] and freed == 0
    assert [v["Name"] for v in store.list()] == [anon_used]


def test_prune_match_narrows_it(store: VolumeStore):
    store.create("keep", labels={"team": "a"})
    store.create("drop", labels={"team": "b"})
    removed, _ = store.prune(set(), all_volumes=True, match=lambda v: v["Labels"].get("team") == "b")
    assert removed == ["drop"] and [v["Name"] for v in store.list()] == ["keep"]


# -- seed: the image's content into an empty volume ---------------------------------------------


class Layers:
    """Overlay lower directories built by hand (index 0 = the bottom layer)."""

    def __init__(self, base: Path, n: int) -> None:
        self.dirs = [base / f"layer{i}" for i in range(n)]
        for d in self.dirs:
            d.mkdir(parents=True)

    @property
    def top_first(self) -> list[str]:
        return [str(d) for d in reversed(self.dirs)]

    def dir(self, i: int, rel: str, mode: int = 0o755, owner: tuple[int, int] = (0, 0),
            opaque: bool = False) -> Path:
        p = self.dirs[i] / rel
        p.mkdir(parents=True, exist_ok=True)
        os.chown(p, *owner)
        os.chmod(p, mode)
        if opaque:
            os.setxattr(p, "trusted.overlay.opaque", b"y")
        return p

    def file(self, i: int, rel: str, data: bytes = b"", mode: int = 0o644, owner: tuple[int, int] = (0, 0),
             mtime: int = MTIME) -> Path:
        p = self.dirs[i] / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        os.chown(p, *owner)
        os.chmod(p, mode)
        os.utime(p, (mtime, mtime))
        return p

    def symlink(self, i: int, rel: str, target: str) -> Path:
        p = self.dirs[i] / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, p)
        return p

    def whiteout(self, i: int, rel: str) -> None:
        p = self.dirs[i] / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        os.mknod(p, stat.S_IFCHR | 0o000, 0)


def listing(root: str | Path) -> dict[str, tuple]:
    """Every entry under root: kind, mode, owner, and content or target."""
    out: dict[str, tuple] = {}
    root = str(root)
    for dirpath, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("l", st.st_uid, st.st_gid, os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("d", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
            elif stat.S_ISREG(st.st_mode):
                out[rel] = ("f", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, Path(p).read_bytes())
            else:
                out[rel] = ("o", stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
    return out


@pytest.fixture
def layers(tmp_path: Path) -> Layers:
    """Three layers whose merged /data holds every case the merge must get right."""
    if os.geteuid() != 0:
        pytest.skip("needs root (mknod whiteouts, trusted.* xattrs, chown)")
    ly = Layers(tmp_path / "img", 3)
    # bottom layer
    ly.dir(0, "data", 0o755)
    ly.file(0, "data/a.txt", b"lower a", 0o640, (1000, 1001))
    ly.file(0, "data/gone.txt", b"deleted above")
    ly.file(0, "data/sub/x", b"x from 0")
    ly.file(0, "data/opq/lower.txt", b"hidden by the opaque dir")
    ly.file(0, "data/wasdir/inner", b"hidden: a file replaced the dir")
    ly.file(0, "data/wasfile", b"hidden: a dir replaced the file")
    ly.file(0, "data/d/old", b"hidden: whiteout then a new dir")
    ly.symlink(0, "data/link", "a.txt")
    ly.symlink(0, "data/escape", "/etc/passwd")
    ly.symlink(0, "data/up", "../../..")
    h = ly.file(0, "data/hard1", b"linked", 0o600)
    os.link(h, ly.dirs[0] / "data" / "hard2")
    os.mkfifo(ly.dirs[0] / "data" / "fifo")
    os.chmod(ly.dirs[0] / "data" / "fifo", 0o620)
    os.setxattr(ly.dirs[0] / "data" / "a.txt", "user.note", b"kept")
    ly.file(0, "elsewhere/secret", b"not under /data")
    # middle layer
    ly.dir(1, "data", 0o755)
    ly.whiteout(1, "data/gone.txt")
    ly.dir(1, "data/opq", 0o700, (5, 6), opaque=True)
    ly.file(1, "data/opq/new.txt", b"new in opq")
    ly.file(1, "data/sub/y", b"y from 1")
    ly.file(1, "data/wasdir", b"now a file")
    ly.file(1, "data/wasfile/inner", b"now a dir")
    ly.whiteout(1, "data/d")
    ly.file(1, "data/suid", b"#!", 0o4755)
    # top layer: /data itself takes this layer's owner and mode
    ly.dir(2, "data", 0o750, (1234, 4321))
    ly.file(2, "data/sub/z", b"z from 2")
    ly.file(2, "data/d/new", b"new d")
    ly.file(2, "data/a.txt", b"top a", 0o600, (7, 8), mtime=MTIME + 5)
    os.utime(ly.dirs[2] / "data", (MTIME, MTIME))
    return ly


@pytest.mark.root
def test_seed_copies_the_merged_view(store: VolumeStore, layers: Layers):
    store.create("v1")
    store.seed("v1", layers.top_first, "/data")
    data = store.mountpoint("v1")
    got = listing(data)
    assert got == {
        "a.txt": ("f", 0o600, 7, 8, b"top a"),
        "sub": ("d", 0o755, 0, 0), "sub/x": ("f", 0o644, 0, 0, b"x from 0"),
        "sub/y": ("f", 0o644, 0, 0, b"y from 1"), "sub/z": ("f", 0o644, 0, 0, b"z from 2"),
        "opq": ("d", 0o700, 5, 6), "opq/new.txt": ("f", 0o644, 0, 0, b"new in opq"),
        "wasdir": ("f", 0o644, 0, 0, b"now a file"),
        "wasfile": ("d", 0o755, 0, 0), "wasfile/inner": ("f", 0o644, 0, 0, b"now a dir"),
        "d": ("d", 0o755, 0, 0), "d/new": ("f", 0o644, 0, 0, b"new d"),
        "link": ("l", 0, 0, "a.txt"), "escape": ("l", 0, 0, "/etc/passwd"), "up": ("l", 0, 0, "../../.."),
        "hard1": ("f", 0o600, 0, 0, b"linked"), "hard2": ("f", 0o600, 0, 0, b"linked"),
        "fifo": ("o", stat.S_IFIFO, 0o620, 0, 0),
        "suid": ("f", 0o4755, 0, 0, b"#!"),
    }
    st = os.stat(data)
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o750, 1234, 4321)
    assert st.st_mtime == MTIME
    assert os.stat(os.path.join(data, "a.txt")).st_mtime == MTIME + 5
    assert os.stat(os.path.join(data, "hard1")).st_ino == os.stat(os.path.join(data, "hard2")).st_ino
    assert "trusted.overlay.opaque" not in os.listxattr(os.path.join(data, "opq"))
    assert store.get("v1")["seeded"] is True
    assert leftovers(store) == [".lock", "v1"]
    assert sorted(os.listdir(os.path.join(store.dir, "v1"))) == ["_data", "volume.json"]


@pytest.mark.root
def test_seed_copies_xattrs_best_effort(store: VolumeStore, tmp_path: Path):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    ly = Layers(tmp_path / "img", 1)
    f = ly.file(0, "data/ping", b"\x7fELF", 0o755)
    os.setxattr(f, "user.note", b"kept")
    try:
        os.setxattr(f, "security.capability", CAP_NET_RAW)
    except OSError:
        pytest.skip("no security.capability here")
    store.create("v1")
    store.seed("v1", ly.top_first, "/data")
    got = os.path.join(store.mountpoint("v1"), "ping")
    assert os.getxattr(got, "user.note") == b"kept"
    assert os.getxattr(got, "security.capability") == CAP_NET_RAW


@pytest.mark.root
def test_seed_only_into_an_empty_unseeded_volume(store: VolumeStore, layers: Layers):
    vol = store.create("full")
    Path(vol["Mountpoint"], "mine").write_text("user data")
    store.seed("full", layers.top_first, "/data")
    assert os.listdir(vol["Mountpoint"]) == ["mine"] and store.get("full")["seeded"] is True

    vol = store.create("once")
    store.seed("once", layers.top_first, "/data/sub")
    assert sorted(os.listdir(vol["Mountpoint"])) == ["x", "y", "z"]
    for n in ("x", "y", "z"):
        os.unlink(os.path.join(vol["Mountpoint"], n))
    store.seed("once", layers.top_first, "/data/sub")  # seeded already: the user emptied it
    assert os.listdir(vol["Mountpoint"]) == []


@pytest.mark.root
@pytest.mark.parametrize("path", ["/missing", "/data/gone.txt", "/data/a.txt", "/data/link", "/data/d/old",
                                  "/data/opq/lower.txt", "/data/wasdir", "/"])
def test_seed_copies_nothing_where_the_image_has_no_directory(store: VolumeStore, layers: Layers, path: str):
    vol = store.create("v1")
    store.seed("v1", layers.top_first, path)
    assert os.listdir(vol["Mountpoint"]) == [] and store.get("v1")["seeded"] is True
    st = os.stat(vol["Mountpoint"])
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o755, 0)


@pytest.mark.root
def test_seed_never_follows_a_symlink_in_the_path(store: VolumeStore, layers: Layers, tmp_path: Path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("host file")
    layers.symlink(2, "viahost", str(outside))
    layers.symlink(2, "viaup", "../../outside")  # relative: would climb out of the layer
    layers.symlink(2, "data2", "data")  # inside the image, but still a symlink component
    for i, path in enumerate(("/viahost", "/viaup", "/data2", "/data2/sub", "/data/up/outside")):
        name = f"v{i}"
        vol = store.create(name)
        store.seed(name, layers.top_first, path)
        assert os.listdir(vol["Mountpoint"]) == [], path


@pytest.mark.root
def test_seed_normalises_the_path(store: VolumeStore, layers: Layers):
    vol = store.create("v1")
    store.seed("v1", layers.top_first, "/../data/./sub/")
    assert sorted(os.listdir(vol["Mountpoint"])) == ["x", "y", "z"]


@pytest.mark.root
def test_seed_of_a_missing_volume_or_layer(store: VolumeStore, layers: Layers, tmp_path: Path):
    with pytest.raises(VolumeNotFound):
        store.seed("nope", layers.top_first, "/data")
    store.create("v1")
    with pytest.raises(VolumeError, match="cannot copy /data from the image"):
        store.seed("v1", [str(tmp_path / "no-such-layer")], "/data")
    assert store.get("v1")["seeded"] is False
    assert sorted(os.listdir(os.path.join(store.dir, "v1"))) == ["_data", "volume.json"]


@pytest.mark.root
def test_seed_takes_layer_roots_through_links(store: VolumeStore, layers: Layers, tmp_path: Path):
    links = []
    for i, d in enumerate(layers.top_first):  # as the snapshots' l/<short> links name them
        links.append(str(tmp_path / f"short{i}"))
        os.symlink(d, links[-1])
    vol = store.create("v1")
    store.seed("v1", links, "/data/sub")
    assert sorted(os.listdir(vol["Mountpoint"])) == ["x", "y", "z"]
