"""kobako load of broken or hostile archives: one ArchiveError, and the data root exactly as
before (no image record, no blob, no snapshot, no temp file), so that a retry with a good
archive then succeeds."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
import types
from pathlib import Path

import pytest

from kobako.image import archive, build, gc
from kobako.image.archive import ArchiveError
from kobako.image.store import ImageStore
from kobako.storage.snapshots import Snapshots

pytestmark = pytest.mark.root


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> dict:
    """Good archives of image t:1 (and of u:2, for two-image cases), built once."""
    base = tmp_path_factory.mktemp("good")
    store, snaps = ImageStore(str(base / "root")), Snapshots(str(base / "root"))
    out = {}
    for name, text in (("t:1", "one"), ("u:2", "two")):
        tree = base / name.replace(":", "_")
        (tree / "dir").mkdir(parents=True)
        (tree / "file.txt").write_text(text * 4000)  # layer members of some KB: a middle to flip
        (tree / "dir" / "x").write_bytes(os.urandom(5000))
        (tree / "link").symlink_to("file.txt")
        out[name] = build.import_source(store, snaps, str(tree), [f"docker.io/library/{name}"])
    for fmt in ("docker-archive", "oci-archive"):
        buf = io.BytesIO()
        archive.save(store, [(out["t:1"], out["t:1"]["names"])], buf, fmt)
        out[fmt] = buf.getvalue()
    buf = io.BytesIO()
    archive.save(store, [(out["t:1"], ["t:1"]), (out["u:2"], ["u:2"])], buf)
    out["two"] = buf.getvalue()
    return out


class Root:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.store = ImageStore(str(path))
        self.snaps = Snapshots(str(path))

    def state(self) -> dict:
        def files(sub: str) -> list[str]:  # (empty directories such as blobs/sha256 do not count)
            d = self.path / sub
            return sorted(str(p.relative_to(d)) for p in d.rglob("*") if not p.is_dir()) if d.exists() else []
        return {"images": [r["id"] for r in self.store.all()], "blobs": files("blobs"),
                "snapshots": sorted(os.listdir(self.path / "snapshots")), "links": files("l"),
                "ingest": files("ingest"), "tmp": files("tmp")}

    def load(self, data: bytes) -> list[str]:
        """As every caller loads: in the step record that unwinds a failed load (gc.undo_on_failure)."""
        e = types.SimpleNamespace(root=str(self.path), images=self.store, snapshots=self.snaps,
                                  containers=types.SimpleNamespace(all=lambda: []))
        with gc.undo_on_failure(e):
            return archive.load(self.store, self.snaps, io.BytesIO(data))

    def rejects(self, data: bytes, *words: str) -> str:
        """Loading `data` fails with an ArchiveError naming `words` and changes nothing."""
        before = self.state()
        with pytest.raises(ArchiveError) as e:
            self.load(data)
        msg = str(e.value)
        assert "\n" not in msg and msg, msg
        for w in words:
            assert w in msg, f"{w!r} not in {msg!r}"
        assert self.state() == before, "the failed load left something behind"
        return msg


@pytest.fixture
def dst(tmp_path) -> Root:
    return Root(tmp_path / "dst")


def tar_of(files: dict[str, bytes], symlinks: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
        for name, target in (symlinks or {}).items():
            ti = tarfile.TarInfo(name)
            ti.type, ti.linkname = tarfile.SYMTYPE, target
            t.addfile(ti)
    return buf.getvalue()


def members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        return {m.name: t.extractfile(m).read() for m in t.getmembers() if m.isreg()}


def rewrite(data: bytes, change) -> bytes:
    """The archive with change(files) applied to its {name: bytes} (a dict to edit in place)."""
    files = members(data)
    change(files)
    return tar_of(files)


def flip_in_member(data: bytes, name: str, at: float = 0.5) -> bytes:
    """Flip one byte inside member `name` in place: the tar stays well-formed."""
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        m = t.getmember(name)
    buf = bytearray(data)
    buf[m.offset_data + int(m.size * at)] ^= 0x01
    return bytes(buf)


def docker_layers(data: bytes) -> list[str]:
    return json.loads(members(data)["manifest.json"])[0]["Layers"]


def test_tampered_layer_then_the_good_archive_loads(good, dst):
    bad = flip_in_member(good["docker-archive"], docker_layers(good["docker-archive"])[0])
    dst.rejects(bad, "layer 1 of t:1", "does not match its digest", "corrupt or was modified")
    assert dst.state()["blobs"] == [] and dst.snaps.all() == []
    assert dst.load(good["docker-archive"]) == ["docker.io/library/t:1"]
    assert dst.store.resolve("t:1")["id"] == good["t:1"]["id"]


def test_tampered_layer_in_an_oci_archive(good, dst):
    layer = good["t:1"]["layers"][0]["digest"]
    bad = flip_in_member(good["oci-archive"], "blobs/sha256/" + layer[7:])
    dst.rejects(bad, "layer 1 of t:1", "does not match its digest")
    assert dst.load(good["oci-archive"]) == ["docker.io/library/t:1"]


def test_tampered_second_image_loads_neither(good, dst):
    data = good["two"]
    second = json.loads(members(data)["manifest.json"])[1]["Layers"][0]
    dst.rejects(flip_in_member(data, second), "layer 1 of u:2")
    assert sorted(dst.load(data)) == ["docker.io/library/t:1", "docker.io/library/u:2"]


def test_tampered_config(good, dst):
    item = json.loads(members(good["docker-archive"])["manifest.json"])[0]
    dst.rejects(flip_in_member(good["docker-archive"], item["Config"], 0.3), "config of t:1",
                "does not match its digest")


def test_bad_layer_with_a_matching_digest_is_rolled_back(good, dst):
    """A layer whose bytes match the config's diff ID but is not a tar: caught at unpack, after
    its blob went into the store. The blob, the snapshot of the good layer before it and the
    record must all go."""
    files = members(good["docker-archive"])
    item = json.loads(files["manifest.json"])[0]
    config = json.loads(files[item["Config"]])
    junk = b"\xff" * 2048
    config["rootfs"]["diff_ids"].append(sha(junk))
    cfg = json.dumps(config).encode()
    files["blobs/sha256/" + sha(junk)[7:]] = junk
    files["blobs/sha256/" + sha(cfg)[7:]] = cfg
    item["Config"] = "blobs/sha256/" + sha(cfg)[7:]
    item["Layers"].append("blobs/sha256/" + sha(junk)[7:])
    files["manifest.json"] = json.dumps([item]).encode()
    dst.rejects(tar_of(files), "t:1")
    assert dst.load(good["docker-archive"]) == ["docker.io/library/t:1"]


@pytest.mark.parametrize("where", ["layer data", "layer header", "last member"])
def test_truncated_archive(good, dst, where):
    data = good["docker-archive"]
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        layer = t.getmember(docker_layers(data)[0])
        last = [m for m in t.getmembers() if m.isreg()][-1]
    cut = {"layer data": layer.offset_data + layer.size // 2, "layer header": layer.offset + 100,
           "last member": last.offset_data + last.size // 2}[where]
    dst.rejects(data[:cut], "truncated")
    assert dst.load(data) == ["docker.io/library/t:1"]


def test_truncated_compressed_archive(good, dst):
    packed = gzip.compress(good["docker-archive"])
    dst.rejects(packed[:len(packed) // 2], "truncated or corrupt")
    dst.rejects(packed[:2] + b"\0" * 200, "corrupt")


@pytest.mark.parametrize("data", [b"", os.urandom(10000), b"hello world\n" * 100, b"\0" * 4096])
def test_garbage(dst, data):
    dst.rejects(data, "not an image archive")


def test_tar_without_manifest_or_index(dst):
    dst.rejects(tar_of({"hello.txt": b"hi", "etc/passwd": b"root:x:0:0::/:/bin/sh\n"}),
                "not an image archive: no manifest.json or index.json")


def test_pre_1_10_archive(dst):
    dst.rejects(tar_of({"repositories": b"{}", "abc/json": b"{}"}), "before 1.10")


def test_missing_member(good, dst):
    def drop(files):
        del files[docker_layers(good["docker-archive"])[0]]
    dst.rejects(rewrite(good["docker-archive"], drop), "layer 1 of t:1", "missing from the archive")


def test_missing_config(good, dst):
    def drop(files):
        del files[json.loads(files["manifest.json"])[0]["Config"]]
    dst.rejects(rewrite(good["docker-archive"], drop), "config of t:1", "missing")


@pytest.mark.parametrize("where", ["Layers", "Config"])
@pytest.mark.parametrize("path", ["../../etc/passwd", "/etc/passwd", "blobs/../../etc/passwd"])
def test_member_path_outside_the_archive(good, dst, where, path):
    def evil(files):
        items = json.loads(files["manifest.json"])
        if where == "Layers":
            items[0]["Layers"][0] = path
        else:
            items[0]["Config"] = path
        files["manifest.json"] = json.dumps(items).encode()
        files["etc/passwd"] = b"root:x:0:0::/:/bin/sh\n"  # an archive member named like the target
    dst.rejects(rewrite(good["docker-archive"], evil), "outside the archive")


def test_symlink_member_pointing_outside(good, dst):
    files = members(good["docker-archive"])
    items = json.loads(files["manifest.json"])
    items[0]["Layers"][0] = "evil/layer.tar"
    files["manifest.json"] = json.dumps(items).encode()
    dst.rejects(tar_of(files, {"evil/layer.tar": "../../../../etc/passwd"}), "links outside the archive")
    dst.rejects(tar_of(files, {"evil/layer.tar": "/etc/passwd"}), "outside the archive")
    dst.rejects(tar_of(files, {"evil/layer.tar": "layer.tar"}), "too many links")


def test_config_not_json(good, dst):
    def bad(files):
        files[json.loads(files["manifest.json"])[0]["Config"]] = b"{not json"
        items = json.loads(files["manifest.json"])
        items[0]["Config"] = "config.json"  # a name that claims no digest
        files["config.json"] = b"{not json"
        files["manifest.json"] = json.dumps(items).encode()
    dst.rejects(rewrite(good["docker-archive"], bad), "t:1", "not valid JSON")


@pytest.mark.parametrize("doc", [b"{not json", b"{}", b"[]", b"[1]", b'[{"Config": 5}]', b"[" * 100000,
                                 b'[{"Config": "c", "Layers": [], "RepoTags": ["Bad Name!"]}]'])
def test_bad_manifest_json(good, dst, doc):
    def bad(files):
        files["manifest.json"] = doc
    dst.rejects(rewrite(good["docker-archive"], bad))


def test_layer_count_mismatch(good, dst):
    def bad(files):
        items = json.loads(files["manifest.json"])
        items[0]["Layers"] = items[0]["Layers"] * 100000
        files["manifest.json"] = json.dumps(items).encode()
    dst.rejects(rewrite(good["docker-archive"], bad), "manifest.json lists 100000 layers, its image config 1")


def test_config_declaring_many_layers(good, dst):
    def bad(files):
        items = json.loads(files["manifest.json"])
        config = json.loads(files[items[0]["Config"]])
        config["rootfs"]["diff_ids"] *= 5000
        cfg = json.dumps(config).encode()
        files["big.json"] = cfg
        items[0]["Config"] = "big.json"
        files["manifest.json"] = json.dumps(items).encode()
    dst.rejects(rewrite(good["docker-archive"], bad), "manifest.json lists 1 layer, its image config 5000")


def test_oci_index_problems(good, dst):
    files = members(good["oci-archive"])
    index = json.loads(files["index.json"])
    mdesc = index["manifests"][0]
    manifest = json.loads(files["blobs/sha256/" + mdesc["digest"][7:]])

    def variant(**changes) -> bytes:
        f = dict(files)
        f.update(changes)
        return tar_of(f)

    dst.rejects(variant(**{"index.json": b"[["}), "index.json")
    dst.rejects(variant(**{"oci-layout": b'{"imageLayoutVersion": "9.0.0"}'}), "layout version")
    gone = dict(files)
    del gone["blobs/sha256/" + manifest["config"]["digest"][7:]]
    dst.rejects(tar_of(gone), "config", "missing")
    wrong_size = {**index, "manifests": [{**mdesc, "size": mdesc["size"] + 1}]}
    dst.rejects(variant(**{"index.json": json.dumps(wrong_size).encode()}), "bytes, its descriptor says")
    loop = {**index, "manifests": [{**mdesc, "mediaType": "application/vnd.oci.image.index.v1+json",
                                    "digest": sha(b"x"), "size": 1}]}
    dst.rejects(variant(**{"index.json": json.dumps(loop).encode(), "blobs/sha256/" + sha(b"x")[7:]: b"y"}),
                "does not match its digest")
    assert dst.load(good["oci-archive"]) == ["docker.io/library/t:1"]


def test_huge_extended_header(dst):
    """A PAX header declaring gigabytes: refused, not read into memory."""
    ti = tarfile.TarInfo("manifest.json")
    hdr = bytearray(ti.tobuf(format=tarfile.USTAR_FORMAT))
    hdr[156] = ord("x")  # typeflag: PAX extended header
    hdr[124:136] = b"%011o\0" % ((1 << 32) + 1)  # size: 4 GiB
    hdr[148:156] = b" " * 8
    hdr[148:155] = b"%06o\0" % sum(hdr)
    dst.rejects(bytes(hdr) + b"\0" * 4096, "extended header")


def gzip_layers(data: bytes, named_by_digest: bool) -> bytes:
    """The archive with its layers gzip-compressed, as older or containerd-made archives have
    them: at blobs/sha256/<digest of the gzip> or at a name that claims no digest."""
    files = members(data)
    items = json.loads(files["manifest.json"])
    for i, path in enumerate(items[0]["Layers"]):
        gz = gzip.compress(files.pop(path), mtime=0)
        new = "blobs/sha256/" + sha(gz)[7:] if named_by_digest else f"layer{i}/layer.tar"
        files[new] = gz
        items[0]["Layers"][i] = new
    files["manifest.json"] = json.dumps(items).encode()
    return tar_of(files)


@pytest.mark.parametrize("named_by_digest", [True, False])
def test_tampered_compressed_layer(good, dst, named_by_digest):
    data = gzip_layers(good["docker-archive"], named_by_digest)
    assert dst.load(data) == ["docker.io/library/t:1"]  # the compressed form itself is fine
    other = Root(dst.path.parent / "other")
    path = docker_layers(data)[0]
    # a flipped byte inside the deflate stream: caught by the file name's digest, or else by
    # gzip's CRC or the diff ID when the layer is unpacked (after its blob was stored)
    words = ("layer 1 of t:1", "digest in its file name") if named_by_digest else ("t:1",)
    other.rejects(flip_in_member(data, path, 0.6), *words)
    assert other.load(data) == ["docker.io/library/t:1"]
