"""Image names, the content store, manifests and platform selection: no root needed."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from kobako.image import manifest as mf
from kobako.image import reference
from kobako.image.content import ContentError, ContentStore
from kobako.storage.snapshots import chain_ids

H = "a" * 64


@pytest.mark.parametrize("given, want", [
    ("busybox", "docker.io/library/busybox:latest"),
    ("busybox:1.36", "docker.io/library/busybox:1.36"),
    ("me/app", "docker.io/me/app:latest"),
    ("index.docker.io/library/busybox", "docker.io/library/busybox:latest"),
    ("localhost/app", "localhost/app:latest"),
    ("localhost:5000/a/b/c:v1", "localhost:5000/a/b/c:v1"),
    ("127.0.0.1:5000/kbars/busybox:1", "127.0.0.1:5000/kbars/busybox:1"),
    ("quay.io/org/img", "quay.io/org/img:latest"),
    (f"busybox@sha256:{H}", f"docker.io/library/busybox@sha256:{H}"),
    (f"busybox:1@sha256:{H}", f"docker.io/library/busybox:1@sha256:{H}"),
    ("a_b-c__d/f--g.h", "docker.io/a_b-c__d/f--g.h:latest"),
])
def test_reference_normalises_like_docker(given, want):
    assert str(reference.parse(given)) == want


@pytest.mark.parametrize("bad", ["", "Busybox", "bad name", "a:", "a@sha256:xyz", "-a", "a..b", "a/",
                                 "a:-x", "a::b", "a@md5:" + H, " a", "a_-b" * 0 + "a___b", "x/" * 200 + "y"])
def test_reference_rejects_what_docker_rejects(bad):
    with pytest.raises(reference.InvalidReference):
        reference.parse(bad)


def test_reference_locator_and_familiar():
    r = reference.parse("busybox")
    assert r.locator == "latest" and r.name == "docker.io/library/busybox"
    assert reference.parse(f"x@sha256:{H}").locator == f"sha256:{H}"
    assert reference.familiar("docker.io/library/busybox:latest") == "busybox:latest"
    assert reference.familiar("docker.io/me/app:1") == "me/app:1"
    assert reference.familiar("127.0.0.1:5000/x:1") == "127.0.0.1:5000/x:1"
    assert reference.looks_like_id("abc123") and reference.looks_like_id("sha256:" + H)
    assert not reference.looks_like_id("busybox")


def test_content_store_verifies_and_is_atomic(tmp_path):
    cs = ContentStore(str(tmp_path))
    data = b"hello"
    good = "sha256:" + hashlib.sha256(data).hexdigest()
    assert cs.put(data, good) == good and cs.has(good, 5) and cs.read(good) == data
    with pytest.raises(ContentError, match="digest mismatch"):
        cs.put(b"other", "sha256:" + "0" * 64)
    with cs.writer(good, 10) as w:
        w.write(data)
        with pytest.raises(ContentError, match="truncated"):
            w.commit()
    with pytest.raises(ContentError, match="larger"):
        with cs.writer(good, 2) as w:
            w.write(data)
    assert os.listdir(cs.ingest_dir) == []  # nothing half-written stays behind
    assert list(cs.digests()) == [good]
    with open(cs.path(good), "wb") as f:  # corrupted on disk: read notices
        f.write(b"HELLO")
    with pytest.raises(ContentError, match="corrupt"):
        cs.read(good)
    with pytest.raises(ContentError):
        cs.path("sha256:../../etc/passwd")


def _desc(mt: str, data: bytes, **kw) -> dict:
    return {"mediaType": mt, "digest": "sha256:" + hashlib.sha256(data).hexdigest(), "size": len(data), **kw}


def test_manifest_parse_and_select():
    m = {"schemaVersion": 2, "mediaType": mf.DOCKER_MANIFEST, "config": _desc(mf.DOCKER_CONFIG, b"{}"),
         "layers": [_desc(mf.DOCKER_LAYER_GZIP, b"x")]}
    parsed = mf.parse(json.dumps(m).encode())
    assert isinstance(parsed, mf.Manifest) and parsed.layers[0].size == 1
    idx = {"schemaVersion": 2, "mediaType": mf.OCI_INDEX, "manifests": [
        _desc(mf.OCI_MANIFEST, b"arm", platform={"os": "linux", "architecture": "arm64", "variant": "v8"}),
        _desc(mf.OCI_MANIFEST, b"amd", platform={"os": "linux", "architecture": "amd64"}),
        _desc(mf.OCI_MANIFEST, b"win", platform={"os": "windows", "architecture": "amd64"}),
    ]}
    i = mf.parse(json.dumps(idx).encode())
    assert isinstance(i, mf.Index)
    assert mf.select(i, {"os": "linux", "architecture": "amd64"}).size == 3
    assert mf.select(i, mf.parse_platform("linux/arm64")).size == 3 and \
        mf.select(i, mf.parse_platform("linux/arm64")).platform["architecture"] == "arm64"
    with pytest.raises(mf.NoMatchingManifest, match="no matching manifest for linux/s390x in the manifest"):
        mf.select(i, mf.parse_platform("linux/s390x"))


@pytest.mark.parametrize("doc, msg", [
    (b"not json", "not valid JSON"), (b"[]", "not a JSON object"),
    (b'{"schemaVersion": 1, "fsLayers": []}', "schema 1"),
    (b'{"config": {"digest": "sha256:x", "size": 1}, "layers": []}', "invalid digest"),
    (b'{"config": {"digest": "sha256:' + b"a" * 64 + b'", "size": -1}, "layers": []}', "size"),
    (b'{"mediaType": "application/vnd.oci.image.manifest.v1+json", "config": {"digest": "sha256:'
     + b"a" * 64 + b'", "size": 1}, "layers": [{"mediaType": "text/html", "digest": "sha256:'
     + b"a" * 64 + b'", "size": 1}]}', "unsupported layer media type"),
])
def test_manifest_garbage_is_one_clear_error(doc, msg):
    with pytest.raises(mf.ManifestError, match=msg):
        mf.parse(doc)


def test_chain_ids_follow_the_oci_spec():
    a, b = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    c = chain_ids([a, b])
    assert c[0] == a
    assert c[1] == "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()


def test_new_layers_keep_away_from_inodes_freed_recently(tmp_path, monkeypatch):
    """ext4 without a journal skips recently freed inodes one by one: `begin` retries a temp
    dir that lands in a region a removed layer freed in the last 300 s; older ones are fine."""
    import time

    from kobako.storage import snapshots
    s = snapshots.Snapshots(str(tmp_path))
    os.makedirs(os.path.join(s.dir, "gone", "fs", "deep"))
    regions = iter([5, 7, 7, 9])  # the removed tree's, then three temp dirs in turn
    monkeypatch.setattr(snapshots, "_region", lambda path: next(regions))
    s._remove_tree(os.path.join(s.dir, "gone"))
    assert not os.path.exists(os.path.join(s.dir, "gone"))
    with open(os.path.join(str(tmp_path), "snapshots.freed"), "a") as f:
        f.write(f"7 {int(time.time())}\n9 {int(time.time()) - 301}\ngarbage\n")
    assert s._recently_freed() == {5, 7}
    tmp = s.begin()
    assert os.path.basename(tmp).startswith(".tmp-") and os.path.isdir(os.path.join(tmp, "fs"))
    assert os.listdir(s.dir) == [os.path.basename(tmp)]  # the two misses are gone
    with pytest.raises(StopIteration):
        next(regions)  # 9 was taken: it was freed too long ago to matter


@pytest.mark.parametrize("damage", ["cut", "crc", "tail"])
def test_layer_damaged_after_the_tar_end_is_rejected_and_removed(tmp_path, damage):
    """The gzip trailer and the tar's end padding are read after the last member (by the
    decoding thread, after extraction): damage there is one LayerError, and no snapshot."""
    import gzip
    import io
    import tarfile

    from kobako.image.unpack import unpack_stream
    from kobako.storage.layer import LayerError
    from kobako.storage.snapshots import Snapshots
    b = io.BytesIO()
    with tarfile.open(fileobj=b, mode="w") as t:
        ti = tarfile.TarInfo("a")
        ti.size = 3 << 20
        t.addfile(ti, io.BytesIO(os.urandom(ti.size)))
    raw = b.getvalue() + bytes(8 << 20)  # a long zero tail: read only by the final drain
    gz = gzip.compress(raw)
    gz = {"cut": gz[:-3], "crc": gz[:-8] + bytes([gz[-8] ^ 1]) + gz[-7:], "tail": gz + b"xyz"}[damage]
    snaps = Snapshots(str(tmp_path))
    diff = "sha256:" + hashlib.sha256(raw).hexdigest()
    with pytest.raises(LayerError, match="truncated or corrupt"):
        unpack_stream(snaps, io.BytesIO(gz), diff, diff)
    assert os.listdir(snaps.dir) == []
