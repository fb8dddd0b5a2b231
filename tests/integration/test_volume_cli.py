"""Volumes through the CLI with a private data root: create/ls/inspect/rm/prune output
shapes, errors as one line, volumes held by a container record, nothing left after rm;
and `seed` checked against what the kernel's overlayfs shows for the same layers."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from engine_support import Kobako, assert_user_error

from kobako.storage.volumes import VolumeStore

pytestmark = pytest.mark.root
HEX64 = re.compile(r"[0-9a-f]{64}")
REPO = Path(__file__).resolve().parents[2]

class VKobako(Kobako):
    def volumes_dir(self) -> list[str]:
        d = self.data / "volumes"
        return sorted(os.listdir(d)) if d.exists() else []

    def fake_container(self, *volumes: str) -> Path:
        """A container record that uses volumes (what `run -v NAME:/dest` will write)."""
        cid = os.urandom(32).hex()
        d = self.data / "containers" / cid
        d.mkdir(parents=True)
        (d / "container.json").write_text(json.dumps({
            "id": cid, "name": f"fake_{cid[:6]}", "created": "2024-01-01T00:00:00Z",
            "volumes": [{"name": v, "destination": f"/{v}"} for v in volumes],
            "status": "exited", "chainIds": [], "image": "", "imageName": ""}))
        return d


@pytest.fixture
def k(session_base: Path):
    kb = VKobako(Path(tempfile.mkdtemp(prefix="vol", dir=session_base)))
    yield kb
    for n in kb.volumes_dir():
        if not n.startswith("."):
            kb("volume", "rm", "-f", n, check=False)


def ls_rows(k: VKobako, *args: str) -> list[list[str]]:
    lines = k("volume", "ls", *args).stdout.splitlines()
    assert lines[0].split() == ["DRIVER", "VOLUME", "NAME"]
    return [ln.split() for ln in lines[1:]]


def test_create_ls_inspect(k: VKobako):
    assert k("volume", "create", "v1").stdout == "v1\n"
    assert k("volume", "create", "--label", "team=a", "--label", "bare", "-o", "type=tmpfs",
             "-o", "device=tmpfs", "-o", "o=size=1m", "v2").stdout == "v2\n"
    assert k("volume", "create", "--name", "v3", "-d", "local").stdout == "v3\n"
    anon = k("volume", "create").stdout.strip()
    assert HEX64.fullmatch(anon)
    assert k("volume", "create", "v1").stdout == "v1\n"  # exists: the same volume, no error

    assert ls_rows(k) == [["local", anon], ["local", "v1"], ["local", "v2"], ["local", "v3"]]
    assert k("volume", "ls", "-q").stdout.split() == [anon, "v1", "v2", "v3"]
    assert k("volume", "ls", "--format", "{{.Name}}:{{.Driver}}:{{.Labels}}", "-f", "label=team").stdout \
        == "v2:local:bare=,team=a\n"
    assert k("volume", "ls", "-q", "-f", "name=v", "-f", "label=team=a").stdout == "v2\n"
    row = json.loads(k("volume", "ls", "--format", "json", "-f", "name=v1").stdout)
    assert row["Name"] == "v1" and row["Driver"] == "local" and row["Scope"] == "local"
    out = k("volume", "ls", "--format", "table {{.Name}}\t{{.Scope}}", "-f", "name=v3").stdout
    assert out.split("\n")[:2] == ["VOLUME NAME   SCOPE", "v3            local"]

    docs = json.loads(k("volume", "inspect", "v2", "v1").stdout)
    assert [d["Name"] for d in docs] == ["v2", "v1"]
    d = docs[0]
    assert list(d) == ["CreatedAt", "Driver", "Labels", "Mountpoint", "Name", "Options", "Scope"]
    assert d["Labels"] == {"team": "a", "bare": ""} and d["Options"]["type"] == "tmpfs"
    assert d["Mountpoint"] == str(k.data / "volumes" / "v2" / "_data") and d["Driver"] == "local"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", d["CreatedAt"])
    st = os.stat(d["Mountpoint"])
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o755, 0)
    assert json.loads(k("volume", "inspect", anon).stdout)[0]["Labels"] == {"com.docker.volume.anonymous": ""}
    assert k("volume", "inspect", "-f", "{{.Name}} {{.Driver}}", "v1", "v3").stdout == "v1 local\nv3 local\n"


def test_inspect_and_rm_of_missing_volumes(k: VKobako):
    k("volume", "create", "v1")
    cp = k("volume", "inspect", "v1", "nope", check=False)
    assert [d["Name"] for d in json.loads(cp.stdout)] == ["v1"]
    assert_user_error(cp, "no such volume: nope", code=1)
    cp = k("volume", "rm", "nope", check=False)
    assert_user_error(cp, "no such volume: nope", code=1)
    assert cp.stdout == ""
    assert k("volume", "rm", "-f", "nope").stdout == "nope\n"  # -f: a missing volume is no error
    cp = k("volume", "rm", "nope", "v1", check=False)  # one failure does not stop the others
    assert cp.returncode == 1 and cp.stdout == "v1\n" and "no such volume: nope" in cp.stderr
    assert k.volumes_dir() == [".lock"]


@pytest.mark.parametrize("argv, words", [
    (["volume", "create", "a_b!"], ["invalid characters", "[a-zA-Z0-9][a-zA-Z0-9_.-]"]),
    (["volume", "create", "a"], ["too short", "2 characters"]),
    (["volume", "create", "../etc"], ["invalid characters"]),
    (["volume", "create", "-d", "nfs", "x1"], ["plugin", "nfs", "local"]),
    (["volume", "create", "-o", "foo=1", "x1"], ["invalid option", "foo"]),
    (["volume", "create", "-o", "type=tmpfs", "x1"], ['missing required option: "device"']),
    (["volume", "create", "--name", "x1", "x2"], ["conflicting options"]),
    (["volume", "ls", "-f", "color=red"], ["invalid filter 'color'"]),
    (["volume", "ls", "-f", "dangling"], ["bad format of filter"]),
    (["volume", "ls", "-f", "dangling=maybe"], ["dangling=maybe"]),
])
def test_user_errors_are_one_line(k: VKobako, argv: list[str], words: list[str]):
    assert_user_error(k(*argv, check=False), *words)
    assert [n for n in k.volumes_dir() if not n.startswith(".")] == []


def test_usage_errors(k: VKobako):
    cp = k("volume", "create", "a1", "a2", check=False)
    assert cp.returncode == 125 and "accepts at most 1 argument" in cp.stderr
    cp = k("volume", "rm", check=False)
    assert cp.returncode == 125 and "requires at least 1 argument" in cp.stderr
    assert "Usage:  kobako volume prune" in k("volume", "prune", "--help").stdout


def test_a_volume_a_container_record_uses_is_kept(k: VKobako):
    k("volume", "create", "v1")
    k("volume", "create", "v2")
    anon = k("volume", "create").stdout.strip()
    rec = k.fake_container("v1", anon)
    cid = rec.name
    try:
        for argv in (["volume", "rm", "v1"], ["volume", "rm", "-f", "v1"]):
            cp = k(*argv, check=False)
            line = assert_user_error(cp, code=1)
            assert line == f"Error: remove v1: volume is in use - [{cid[:12]}]"
        assert k("volume", "ls", "-q", "-f", "dangling=true").stdout.split() == ["v2"]
        assert sorted(k("volume", "ls", "-q", "-f", "dangling=false").stdout.split()) == sorted([anon, "v1"])
        out = k("volume", "prune", "-a", "-f").stdout
        assert out == "Deleted Volumes:\nv2\n\nTotal reclaimed space: 0B\n"
        assert k("volume", "ls", "-q").stdout.split() == [anon, "v1"]
    finally:
        (rec / "container.json").unlink()
        rec.rmdir()
    assert k("volume", "rm", "v1", anon).stdout.split() == ["v1", anon]
    assert k.volumes_dir() == [".lock"]


def test_prune_output_and_what_it_removes(k: VKobako):
    assert k("volume", "prune", "-f").stdout == "Total reclaimed space: 0B\n"
    anon = k("volume", "create").stdout.strip()
    k("volume", "create", "named")
    k("volume", "create", "--label", "keep=yes", "kept")
    mp = Path(json.loads(k("volume", "inspect", anon).stdout)[0]["Mountpoint"])
    (mp / "f").write_bytes(b"x" * 1500)
    assert k("volume", "prune", "-f").stdout == f"Deleted Volumes:\n{anon}\n\nTotal reclaimed space: 1.5kB\n"
    assert not mp.exists()
    assert k("volume", "prune", "-f", "-a", "--filter", "label!=keep").stdout == \
        "Deleted Volumes:\nnamed\n\nTotal reclaimed space: 0B\n"
    assert k("volume", "ls", "-q").stdout == "kept\n"
    assert k("volume", "prune", "-f", "--filter", "all=true", "--filter", "label=keep=yes").stdout.startswith(
        "Deleted Volumes:\nkept\n")
    assert k.volumes_dir() == [".lock"]


def test_concurrent_creates_and_removes(k: VKobako):
    def many(*argv: str) -> list[subprocess.Popen]:
        return [subprocess.Popen([sys.executable, "-m", "kobako.cli.main", *argv], env=k.env, cwd=REPO,
                                 text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(6)]

    procs = many("volume", "create", "same") + many("volume", "create")
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e for _, e in outs]
    assert [o for o, _ in outs[:6]] == ["same\n"] * 6
    names = k("volume", "ls", "-q").stdout.split()
    assert len(names) == 7 and "same" in names
    procs = many("volume", "rm", "-f", *names)
    for p in procs:
        p.communicate(timeout=60)
        assert p.returncode == 0
    assert k.volumes_dir() == [".lock"]


def test_rm_refuses_a_volume_with_a_mount_under_it(k: VKobako):
    k("volume", "create", "m1")
    mp = k.data / "volumes" / "m1" / "_data"
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "kbt-vol", str(mp)], check=True)
    try:
        (mp / "on-tmpfs").write_text("x")
        cp = k("volume", "rm", "m1", check=False)
        assert_user_error(cp, "mount point", "unmount", code=1)
        assert (mp / "on-tmpfs").exists()
    finally:
        subprocess.run(["umount", str(mp)], check=True)
    assert k("volume", "rm", "m1").stdout == "m1\n" and k.volumes_dir() == [".lock"]


# -- seed against the kernel's overlayfs ---------------------------------------------------------


def _tree(root: Path) -> dict[str, tuple]:
    out: dict[str, tuple] = {}
    for dirpath, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            kind = stat.S_IFMT(st.st_mode)
            what: object = None
            if stat.S_ISLNK(st.st_mode):
                what = os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                what = Path(p).read_bytes()
            mode = 0 if stat.S_ISLNK(st.st_mode) else stat.S_IMODE(st.st_mode)
            out[rel] = (kind, mode, st.st_uid, st.st_gid, what)
    return out


def _layers(base: Path) -> list[Path]:
    """Three layers (bottom first) with whiteouts, an opaque dir, type changes and symlinks."""
    ly = [base / f"l{i}" for i in range(3)]

    def f(i: int, rel: str, data: bytes = b"", mode: int = 0o644, owner: tuple[int, int] = (0, 0)) -> None:
        p = ly[i] / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        os.chown(p, *owner)
        os.chmod(p, mode)

    def wh(i: int, rel: str) -> None:
        (ly[i] / rel).parent.mkdir(parents=True, exist_ok=True)
        os.mknod(ly[i] / rel, stat.S_IFCHR, 0)

    for d in ly:
        d.mkdir(parents=True)
    f(0, "srv/www/index.html", b"<h1>0</h1>", 0o640, (33, 33))
    f(0, "srv/www/old.css", b"gone")
    f(0, "srv/www/assets/a.js", b"a")
    f(0, "srv/www/cache/c1", b"hidden")
    f(0, "srv/www/t1/deep", b"dir becomes file")
    f(0, "srv/www/t2", b"file becomes dir")
    os.symlink("index.html", ly[0] / "srv/www/home.html")
    os.symlink("/etc/shadow", ly[0] / "srv/www/shadow")
    wh(1, "srv/www/old.css")
    f(1, "srv/www/cache/c2", b"new cache")
    os.setxattr(ly[1] / "srv/www/cache", "trusted.overlay.opaque", b"y")
    f(1, "srv/www/t1", b"now a file")
    f(1, "srv/www/t2/inner", b"now a dir")
    f(1, "srv/www/assets/b.js", b"b", 0o600, (1000, 1000))
    wh(1, "srv/www/home.html")
    f(2, "srv/www/assets/c.js", b"c")
    f(2, "srv/www/index.html", b"<h1>2</h1>", 0o644, (33, 33))
    os.chown(ly[2] / "srv/www", 33, 33)
    os.chmod(ly[2] / "srv/www", 0o750)
    return ly


def test_seed_matches_the_overlay_mount(k: VKobako, session_base: Path):
    base = Path(tempfile.mkdtemp(prefix="seed", dir=session_base))
    layers = _layers(base)
    merged = base / "merged"
    merged.mkdir()
    lower = ":".join(str(d) for d in reversed(layers))
    subprocess.run(["mount", "-t", "overlay", "kbt-seed", "-o", f"lowerdir={lower}", str(merged)], check=True)
    try:
        want = _tree(merged / "srv" / "www")
        st = os.stat(merged / "srv" / "www")
    finally:
        subprocess.run(["umount", str(merged)], check=True)
    assert "old.css" not in want and "cache/c1" not in want and "home.html" not in want  # the kernel agrees
    k("volume", "create", "web")
    store = VolumeStore(str(k.data))
    store.seed("web", [str(d) for d in reversed(layers)], "/srv/www")
    mp = Path(store.mountpoint("web"))
    assert _tree(mp) == want
    got = os.stat(mp)
    assert (got.st_mode, got.st_uid, got.st_gid) == (st.st_mode, st.st_uid, st.st_gid)
    assert json.loads(k("volume", "inspect", "web").stdout)[0]["Name"] == "web"
    k("volume", "rm", "web")
    assert k.volumes_dir() == [".lock"]


def test_a_failed_create_leaves_no_anonymous_volume(k: VKobako, busybox_rootfs: Path):
    """The anonymous volumes of a create are steps of its record: a create that fails after
    making them (here: the name is taken) removes them again."""
    k("import", str(busybox_rootfs), "kbt/busybox:1")
    k("create", "--name", "taken", "-v", "/data", "kbt/busybox:1", "true")
    before = k.volumes_dir()
    cp = k("create", "--name", "taken", "-v", "/data", "-v", "/more", "kbt/busybox:1", "true", check=False)
    assert_user_error(cp, "already in use")
    assert k.volumes_dir() == before
    k("rm", "-v", "taken")
