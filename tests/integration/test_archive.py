"""kobako save / load: docker-archive and oci-archive, round trips between data roots,
pipes, compressed archives, archives as Docker 20.10 and skopeo write them."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest

from kobako.image import archive, build
from kobako.image.store import ImageStore
from kobako.storage.snapshots import Snapshots

pytestmark = pytest.mark.root

SKOPEO = "/usr/bin/skopeo"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def root(path: Path) -> tuple[ImageStore, Snapshots]:
    return ImageStore(str(path)), Snapshots(str(path))


def make_tree(d: Path, text: str = "hello") -> Path:
    (d / "dir" / "sub").mkdir(parents=True)
    (d / "file.txt").write_text(text + "\n")
    (d / "dir" / "sub" / "data.bin").write_bytes(os.urandom(3000))
    (d / "dir" / "exec.sh").write_text("#!/bin/sh\necho hi\n")
    (d / "dir" / "exec.sh").chmod(0o755)
    (d / "link").symlink_to("file.txt")
    return d


@pytest.fixture
def src(tmp_path):
    """A data root with image t:1 (a few files, a dir, a symlink) and its tree."""
    store, snaps = root(tmp_path / "src")
    tree = make_tree(tmp_path / "tree1")
    rec = build.import_source(store, snaps, str(tree), ["docker.io/library/t:1"])
    return store, snaps, rec


def save_bytes(store: ImageStore, images, fmt: str = "docker-archive") -> bytes:
    buf = io.BytesIO()
    archive.save(store, images, buf, fmt)
    return buf.getvalue()


def members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        return {m.name: t.extractfile(m).read() for m in t.getmembers() if m.isreg()}


def snapshot_file(snaps: Snapshots, rec: dict, rel: str) -> Path:
    return Path(snaps.fs(rec["chainIds"][-1])) / rel


def assert_clean_tmp(store: ImageStore) -> None:
    tmp = Path(store.root) / "tmp"
    assert not tmp.exists() or list(tmp.iterdir()) == [], "temp files left under <root>/tmp"
    assert list((Path(store.root) / "ingest").iterdir()) == [], "ingest files left behind"


def test_docker_archive_layout(src):
    store, _, rec = src
    m = members(save_bytes(store, [(rec, rec["names"])]))
    manifest = json.loads(m["manifest.json"])
    assert len(manifest) == 1
    item = manifest[0]
    assert item["RepoTags"] == ["t:1"]  # the familiar form, as docker save writes it
    assert item["Config"] == "blobs/sha256/" + rec["id"][7:]
    assert sha(m[item["Config"]]) == rec["id"]
    config = json.loads(m[item["Config"]])
    diff_ids = config["rootfs"]["diff_ids"]
    assert item["Layers"] == ["blobs/sha256/" + d[7:] for d in diff_ids]
    for path, diff in zip(item["Layers"], diff_ids, strict=True):
        data = m[path]
        assert data[:2] != b"\x1f\x8b", "docker-archive layers are uncompressed"
        assert sha(data) == diff
        names = tarfile.open(fileobj=io.BytesIO(data)).getnames()
        assert "file.txt" in names and "link" in names and "dir/sub/data.bin" in names
    assert json.loads(m["repositories"]) == {"t": {"1": diff_ids[-1][7:]}}
    # the same tar is an OCI layout too, its manifest pointing at the same uncompressed layers
    assert json.loads(m["oci-layout"])["imageLayoutVersion"] == "1.0.0"
    index = json.loads(m["index.json"])
    (desc,) = index["manifests"]
    assert desc["annotations"] == {"io.containerd.image.name": "docker.io/library/t:1",
                                   "org.opencontainers.image.ref.name": "1"}
    body = m["blobs/sha256/" + desc["digest"][7:]]
    assert sha(body) == desc["digest"] and len(body) == desc["size"]
    oci = json.loads(body)
    assert oci["config"]["digest"] == rec["id"]
    assert [(x["digest"], x["size"], x["mediaType"]) for x in oci["layers"]] == \
        [(d, len(m["blobs/sha256/" + d[7:]]), "application/vnd.oci.image.layer.v1.tar") for d in diff_ids]
    assert_clean_tmp(store)


def test_docker_archive_round_trip(src, tmp_path):
    store, _, rec = src
    data = save_bytes(store, [(rec, rec["names"])])
    dst, dsnaps = root(tmp_path / "dst")
    said: list[str] = []
    assert archive.load(dst, dsnaps, io.BytesIO(data), said.append) == ["docker.io/library/t:1"]
    assert said, "progress was never reported"
    got = dst.resolve("t:1")
    assert got["id"] == rec["id"]
    assert got["names"] == ["docker.io/library/t:1"]
    assert got["diffIds"] == rec["diffIds"] and got["chainIds"] == rec["chainIds"]
    f = snapshot_file(dsnaps, got, "file.txt")
    assert f.read_text() == "hello\n"
    assert os.readlink(snapshot_file(dsnaps, got, "link")) == "file.txt"
    assert os.stat(snapshot_file(dsnaps, got, "dir/exec.sh")).st_mode & 0o777 == 0o755
    assert_clean_tmp(dst)
    # loading it again changes nothing and still reports the name
    assert archive.load(dst, dsnaps, io.BytesIO(data)) == ["docker.io/library/t:1"]
    assert len(dst.all()) == 1
    # and what was loaded saves to the same archive again (layers, config, names)
    again = members(save_bytes(dst, [(got, got["names"])]))
    first = members(data)
    assert json.loads(again["manifest.json"]) == json.loads(first["manifest.json"])
    for p in json.loads(first["manifest.json"])[0]["Layers"]:
        assert again[p] == first[p]


def test_oci_archive_round_trip(src, tmp_path):
    store, _, rec = src
    data = save_bytes(store, [(rec, rec["names"])], "oci-archive")
    m = members(data)
    assert "manifest.json" not in m
    index = json.loads(m["index.json"])
    (desc,) = index["manifests"]
    assert desc["digest"] == rec["manifest"]["digest"]  # the manifest as stored
    assert desc["annotations"]["org.opencontainers.image.ref.name"] == "1"
    assert desc["annotations"]["io.containerd.image.name"] == "docker.io/library/t:1"
    for layer in rec["layers"]:
        blob = m["blobs/sha256/" + layer["digest"][7:]]
        assert blob[:2] == b"\x1f\x8b", "oci-archive keeps the blobs as stored (gzip)"
        assert sha(blob) == layer["digest"]
    dst, dsnaps = root(tmp_path / "dst")
    assert archive.load(dst, dsnaps, io.BytesIO(data)) == ["docker.io/library/t:1"]
    got = dst.resolve("t:1")
    assert got["id"] == rec["id"]
    assert got["manifest"]["digest"] == rec["manifest"]["digest"]
    assert got["layers"] == rec["layers"]
    assert snapshot_file(dsnaps, got, "file.txt").read_text() == "hello\n"
    assert_clean_tmp(dst)


@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive"])
def test_two_images_and_two_tags_in_one_archive(src, tmp_path, fmt):
    store, snaps, rec = src
    rec2 = build.import_source(store, snaps, str(make_tree(tmp_path / "tree2", "other")),
                               ["docker.io/library/u:2"])
    store.tag(rec["id"], "quay.io/me/t:x")
    rec = store.get(rec["id"])
    data = save_bytes(store, [(rec, ["t:1"]), (rec2, rec2["names"]), (rec, ["quay.io/me/t:x"])], fmt)
    if fmt == "docker-archive":
        items = json.loads(members(data)["manifest.json"])
        assert [i["RepoTags"] for i in items] == [["t:1", "quay.io/me/t:x"], ["u:2"]]
    dst, dsnaps = root(tmp_path / "dst")
    loaded = archive.load(dst, dsnaps, io.BytesIO(data))
    assert sorted(loaded) == ["docker.io/library/t:1", "docker.io/library/u:2", "quay.io/me/t:x"]
    assert dst.resolve("quay.io/me/t:x")["id"] == rec["id"]
    assert dst.resolve("t:1")["id"] == rec["id"]
    assert dst.resolve("u:2")["id"] == rec2["id"]
    assert snapshot_file(dsnaps, dst.resolve("u:2"), "file.txt").read_text() == "other\n"


def test_untagged_image_loads_by_id(src, tmp_path):
    store, _, rec = src
    data = save_bytes(store, [(rec, [])])
    assert json.loads(members(data)["manifest.json"])[0]["RepoTags"] == []
    dst, dsnaps = root(tmp_path / "dst")
    assert archive.load(dst, dsnaps, io.BytesIO(data)) == [rec["id"]]
    assert dst.get(rec["id"])["names"] == []


def pipe_out(fn) -> bytes:
    """What fn(writer) writes into a pipe, read by another thread: `out` is not seekable."""
    r, w = os.pipe()
    chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: os.read(r, 1 << 16), b"")))
    reader.start()
    try:
        with os.fdopen(w, "wb") as f:
            assert not f.seekable()
            fn(f)
    finally:
        reader.join()
        os.close(r)
    return b"".join(chunks)


def pipe_in(data: bytes, fn):
    """fn(reader) reading `data` from a pipe fed by another thread: `src` is not seekable."""
    r, w = os.pipe()

    def feed() -> None:
        try:
            with os.fdopen(w, "wb") as f:
                f.write(data)
        except BrokenPipeError:
            pass

    t = threading.Thread(target=feed)
    t.start()
    try:
        with os.fdopen(r, "rb") as f:
            assert not f.seekable()
            return fn(f)
    finally:
        t.join()


@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive"])
def test_save_to_a_pipe_and_load_from_a_pipe(src, tmp_path, fmt):
    store, _, rec = src
    data = pipe_out(lambda f: archive.save(store, [(rec, rec["names"])], f, fmt))
    assert data == save_bytes(store, [(rec, rec["names"])], fmt), "the same archive, to a pipe or a file"
    dst, dsnaps = root(tmp_path / "dst")
    assert pipe_in(data, lambda f: archive.load(dst, dsnaps, f)) == ["docker.io/library/t:1"]
    assert dst.resolve("t:1")["id"] == rec["id"]
    assert_clean_tmp(dst)


@pytest.mark.parametrize("compress", ["gzip", "zstd"])
def test_compressed_archive(src, tmp_path, compress):
    store, _, rec = src
    data = save_bytes(store, [(rec, rec["names"])])
    if compress == "gzip":
        packed = gzip.compress(data)
    else:
        import zstandard
        packed = zstandard.ZstdCompressor().compress(data)
    dst, dsnaps = root(tmp_path / "dst")
    assert archive.load(dst, dsnaps, io.BytesIO(packed)) == ["docker.io/library/t:1"]
    assert dst.resolve("t:1")["id"] == rec["id"]
    # from a pipe too, and from a real file (seekable: spooled only because it is compressed)
    dst2, dsnaps2 = root(tmp_path / "dst2")
    assert pipe_in(packed, lambda f: archive.load(dst2, dsnaps2, f)) == ["docker.io/library/t:1"]
    p = tmp_path / "img.tar.z"
    p.write_bytes(packed)
    dst3, dsnaps3 = root(tmp_path / "dst3")
    with open(p, "rb") as f:
        assert archive.load(dst3, dsnaps3, f) == ["docker.io/library/t:1"]
    for s in (dst, dst2, dst3):
        assert_clean_tmp(s)


def layer_tar(files: dict[str, bytes], dirs: tuple[str, ...] = ()) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for d in dirs:
            ti = tarfile.TarInfo(d)
            ti.type, ti.mode = tarfile.DIRTYPE, 0o755
            t.addfile(ti)
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode = len(data), 0o644
            t.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def docker_2010_archive(layers: list[bytes], tags: list[str], compress_layers: bool = False,
                        duplicate_as_symlink: bool = False) -> tuple[bytes, str]:
    """An archive laid out as `docker save` 20.10 writes it: <v1 id>/{layer.tar,json,VERSION},
    <config hex>.json, manifest.json, repositories. Returns (archive, image ID)."""
    diff_ids = [sha(x) for x in layers]
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
                         "created": "2021-01-01T00:00:00Z",
                         "rootfs": {"type": "layers", "diff_ids": diff_ids},
                         "history": [{"created_by": "test"} for _ in layers]}).encode()
    cid = sha(config)
    files: dict[str, bytes] = {f"{cid[7:]}.json": config}
    links: dict[str, str] = {}
    paths = []
    parent = ""
    for i, data in enumerate(layers):
        v1 = hashlib.sha256(f"{parent} {diff_ids[i]}".encode()).hexdigest()
        if duplicate_as_symlink and i > 0 and data == layers[0]:
            links[f"{v1}/layer.tar"] = f"../{paths[0].split('/')[0]}/layer.tar"
        else:
            files[f"{v1}/layer.tar"] = gzip.compress(data) if compress_layers else data
        files[f"{v1}/json"] = json.dumps({"id": v1, "parent": parent} if parent else {"id": v1}).encode()
        files[f"{v1}/VERSION"] = b"1.0"
        paths.append(f"{v1}/layer.tar")
        parent = v1
    files["manifest.json"] = json.dumps([{"Config": f"{cid[7:]}.json", "RepoTags": tags,
                                          "Layers": paths}]).encode()
    repos: dict = {}
    for t in tags:
        repo, tag = t.rsplit(":", 1)
        repos.setdefault(repo, {})[tag] = parent
    files["repositories"] = json.dumps(repos).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name in sorted(set(files) | set(links)):
            if "/" in name:
                d = name.split("/")[0]
                if d not in t.getnames():
                    ti = tarfile.TarInfo(d)
                    ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                    t.addfile(ti)
            ti = tarfile.TarInfo(name)
            if name in links:
                ti.type, ti.linkname = tarfile.SYMTYPE, links[name]
                t.addfile(ti)
            else:
                ti.size = len(files[name])
                t.addfile(ti, io.BytesIO(files[name]))
    return buf.getvalue(), cid


def test_docker_2010_layout(tmp_path):
    l1 = layer_tar({"etc/hostname": b"box\n", "bin/tool": b"#!/bin/sh\n"}, ("etc", "bin"))
    l2 = layer_tar({"etc/motd": b"welcome\n", ".wh.gone": b""}, ("etc",))
    data, cid = docker_2010_archive([l1, l2], ["old:20.10"])
    dst, dsnaps = root(tmp_path / "dst")
    assert archive.load(dst, dsnaps, io.BytesIO(data)) == ["docker.io/library/old:20.10"]
    rec = dst.resolve("old:20.10")
    assert rec["id"] == cid
    assert rec["diffIds"] == [sha(l1), sha(l2)]
    assert Path(dsnaps.fs(rec["chainIds"][0]), "etc/hostname").read_bytes() == b"box\n"
    assert Path(dsnaps.fs(rec["chainIds"][1]), "etc/motd").read_bytes() == b"welcome\n"
    # uncompressed layers are stored as they came, named by their diff ID
    assert [d["digest"] for d in rec["layers"]] == rec["diffIds"]
    assert {d["mediaType"] for d in rec["layers"]} == {"application/vnd.oci.image.layer.v1.tar"}


def test_docker_archive_with_gzip_layers_and_a_symlinked_duplicate(tmp_path):
    l1 = layer_tar({"a": b"1"})
    l2 = layer_tar({"b": b"2"})
    data, cid = docker_2010_archive([l1, l2, l1], ["gz:1"], compress_layers=True, duplicate_as_symlink=True)
    dst, dsnaps = root(tmp_path / "dst")
    assert archive.load(dst, dsnaps, io.BytesIO(data)) == ["docker.io/library/gz:1"]
    rec = dst.resolve("gz:1")
    assert rec["id"] == cid
    assert [d["mediaType"] for d in rec["layers"]] == ["application/vnd.oci.image.layer.v1.tar+gzip"] * 3
    assert Path(dsnaps.fs(rec["chainIds"][2]), "a").read_bytes() == b"1"
    # and it saves back as uncompressed layers named by diff ID
    m = members(save_bytes(dst, [(rec, rec["names"])]))
    assert sha(m["blobs/sha256/" + sha(l2)[7:]]) == sha(l2)


@pytest.fixture
def skopeo():
    if not os.path.exists(SKOPEO):
        pytest.skip("skopeo is not installed")
    return [SKOPEO, "--insecure-policy"]


def test_skopeo_reads_our_archives_and_we_read_its(src, tmp_path, skopeo):
    store, _, rec = src
    docker_tar, oci_tar = tmp_path / "d.tar", tmp_path / "o.tar"
    with open(docker_tar, "wb") as f:
        archive.save(store, [(rec, rec["names"])], f)
    with open(oci_tar, "wb") as f:
        archive.save(store, [(rec, rec["names"])], f, "oci-archive")
    # skopeo reads kobako's docker-archive (as docker-archive, and its OCI layout half too)
    out = tmp_path / "ocidir"
    p = subprocess.run(skopeo + ["copy", f"docker-archive:{docker_tar}", f"oci:{out}"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    p = subprocess.run(skopeo + ["inspect", "--config", f"oci-archive:{docker_tar}"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["rootfs"]["diff_ids"] == rec["diffIds"]
    # kobako reads what skopeo makes of kobako's oci-archive
    sk = tmp_path / "sk.tar"
    p = subprocess.run(skopeo + ["copy", f"oci-archive:{oci_tar}", f"docker-archive:{sk}:t:2"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    dst, dsnaps = root(tmp_path / "dst")
    with open(sk, "rb") as f:
        assert archive.load(dst, dsnaps, f) == ["docker.io/library/t:2"]
    assert dst.resolve("t:2")["id"] == rec["id"]
    # and an OCI layout skopeo wrote (tag-only ref.name: the image comes in untagged)
    layout = tmp_path / "layout.tar"
    with tarfile.open(layout, "w") as t:
        for name in sorted(os.listdir(out)):
            t.add(out / name, arcname=name)
    dst2, dsnaps2 = root(tmp_path / "dst2")
    with open(layout, "rb") as f:
        (loaded,) = archive.load(dst2, dsnaps2, f)
    assert dst2.all()[0]["diffIds"] == rec["diffIds"]
    shutil.rmtree(out)


def test_oci_layout_with_a_multi_platform_index(src, tmp_path):
    """index.json -> an index of two platforms under one name: the host's is loaded (the other
    one's blobs need not even be in the archive), and it gets the outer entry's name."""
    store, _, rec = src
    files = members(save_bytes(store, [(rec, [])], "oci-archive"))
    (mdesc,) = json.loads(files["index.json"])["manifests"]
    other_cfg = json.dumps({"architecture": "s390x", "os": "linux",
                            "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    other = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                   "digest": sha(other_cfg), "size": len(other_cfg)}, "layers": []}).encode()
    files["blobs/sha256/" + sha(other)[7:]] = other
    s390x = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha(other),
             "size": len(other), "platform": {"os": "linux", "architecture": "s390x"}}
    assert mdesc["platform"]["architecture"] != "s390x"  # kobako's save gives the host's platform
    nested = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                         "manifests": [s390x, mdesc]}).encode()
    files["blobs/sha256/" + sha(nested)[7:]] = nested
    files["index.json"] = json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": sha(nested), "size": len(nested),
         "annotations": {"org.opencontainers.image.ref.name": "example.com/multi:3"}}]}).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, data in files.items():
            ti = tarfile.TarInfo("./" + name)  # as `tar -C dir .` writes names
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
    dst, dsnaps = root(tmp_path / "dst")
    assert archive.load(dst, dsnaps, io.BytesIO(buf.getvalue())) == ["example.com/multi:3"]
    assert dst.resolve("example.com/multi:3")["id"] == rec["id"]
    assert len(dst.all()) == 1
