"""The image store keeps each image's platform: picking an index entry, the variant an index
entry names when the config does not, load --platform from a multi-platform OCI archive,
save writing the platform back, import for another platform, and inspect's fields."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile

import pytest

from kobako import errors
from kobako.image import archive
from kobako.image import manifest as mf
from kobako.image.store import ImageStore
from kobako.storage.snapshots import Snapshots


def _sha(b: bytes) -> str:
    return "sha256:" + hashlib.sha256(b).hexdigest()


def _entry(body: bytes, platform: dict, mt: str = mf.OCI_MANIFEST, **extra) -> dict:
    return {"mediaType": mt, "digest": _sha(body), "size": len(body), "platform": platform, **extra}


def test_select_prefers_the_exact_variant_and_says_dockers_words():
    v6, v7, bare = b"v6", b"v7", b"bare"
    i = mf.Index(mf.OCI_INDEX, [mf.Descriptor.parse(d, "t") for d in (
        _entry(v6, {"os": "linux", "architecture": "arm", "variant": "v6"}),
        _entry(v7, {"os": "linux", "architecture": "arm", "variant": "v7"}),
        _entry(bare, {"os": "linux", "architecture": "arm64"}))])
    assert mf.select(i, mf.parse_platform("linux/arm")).digest == _sha(v7)  # arm is arm/v7
    assert mf.select(i, mf.parse_platform("linux/arm/v6")).digest == _sha(v6)
    assert mf.select(i, mf.parse_platform("linux/arm64/v8")).digest == _sha(bare)
    with pytest.raises(mf.NoMatchingManifest) as e:
        mf.select(i, mf.parse_platform("linux/s390x"))
    assert str(e.value) == "no matching manifest for linux/s390x in the manifest list entries"
    assert isinstance(e.value, errors.NotFound) and e.value.status == 404


def test_config_platform_takes_the_entrys_variant_when_the_config_has_none():
    assert mf.config_platform({"os": "linux", "architecture": "arm"}, "v6") == {
        "os": "linux", "architecture": "arm", "variant": "v6"}
    assert mf.config_platform({"architecture": "arm", "variant": "v7"}, "v6")["variant"] == "v7"
    assert mf.config_platform({"architecture": "aarch64", "variant": "v8"}) == {
        "os": "linux", "architecture": "arm64"}


def test_inspect_omits_an_empty_variant_as_dockerd():
    from kobako.engine.views import image_platform_fields
    assert image_platform_fields({"architecture": "amd64", "os": "linux"}, {}) == {
        "Architecture": "amd64", "Os": "linux"}
    assert image_platform_fields({"architecture": "arm", "os": "linux"}, {"variant": "v7"}) == {
        "Architecture": "arm", "Variant": "v7", "Os": "linux"}
    assert image_platform_fields({"architecture": "arm64", "os": "linux", "variant": "v8"},
                                 {})["Variant"] == "v8"


def _layer(text: bytes) -> bytes:
    b = io.BytesIO()
    with tarfile.open(fileobj=b, mode="w") as t:
        ti = tarfile.TarInfo("arch")
        ti.size = len(text)
        t.addfile(ti, io.BytesIO(text))
    return b.getvalue()


def oci_archive(images: list[tuple[dict, bytes]], name: str | None = "kbt/multi:1") -> bytes:
    """An OCI layout: one image per (config platform, file content), under one named index
    entry that points at a nested multi-platform index (as docker 25+ and buildx write it)."""
    blobs: dict[str, bytes] = {}
    entries = []
    for plat, text in images:
        layer = _layer(text)
        cfg = mf.dumps({**{k: v for k, v in plat.items() if k != "entry_variant"}, "config": {},
                        "rootfs": {"type": "layers", "diff_ids": [_sha(layer)]}})
        man = mf.dumps({"schemaVersion": 2, "mediaType": mf.OCI_MANIFEST,
                        "config": {"mediaType": mf.OCI_CONFIG, "digest": _sha(cfg), "size": len(cfg)},
                        "layers": [{"mediaType": mf.OCI_LAYER, "digest": _sha(layer), "size": len(layer)}]})
        for b in (layer, cfg, man):
            blobs[_sha(b)] = b
        p = {"os": plat["os"], "architecture": plat["architecture"]}
        if plat.get("entry_variant") or plat.get("variant"):
            p["variant"] = plat.get("entry_variant") or plat["variant"]
        entries.append(_entry(man, p))
    nested = mf.dumps({"schemaVersion": 2, "mediaType": mf.OCI_INDEX, "manifests": entries})
    blobs[_sha(nested)] = nested
    top = _entry(nested, None, mf.OCI_INDEX)
    del top["platform"]
    if name:
        top["annotations"] = {"io.containerd.image.name": "docker.io/" + name,
                              "org.opencontainers.image.ref.name": "1"}
    files = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}',
             "index.json": mf.dumps({"schemaVersion": 2, "mediaType": mf.OCI_INDEX, "manifests": [top]}),
             **{"blobs/sha256/" + d[7:]: b for d, b in blobs.items()}}
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as t:
        for n, b in files.items():
            ti = tarfile.TarInfo(n)
            ti.size = len(b)
            t.addfile(ti, io.BytesIO(b))
    return out.getvalue()


TWO = [({"os": "linux", "architecture": "amd64"}, b"amd64\n"),
       ({"os": "linux", "architecture": "arm", "entry_variant": "v7"}, b"armv7\n")]


@pytest.fixture
def store(tmp_path):
    return ImageStore(str(tmp_path)), Snapshots(str(tmp_path))


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the default platform is the host's")
def test_load_picks_the_hosts_platform_or_the_one_asked_for(store):
    images, snaps = store
    assert archive.load(images, snaps, io.BytesIO(oci_archive(TWO))) == ["docker.io/kbt/multi:1"]
    assert images.resolve("kbt/multi:1")["architecture"] == "amd64"
    archive.load(images, snaps, io.BytesIO(oci_archive(TWO)), platform=mf.parse_platform("linux/arm/v7"))
    rec = images.resolve("kbt/multi:1")
    # the config names no variant: the index entry's is kept
    assert (rec["architecture"], rec.get("variant")) == ("arm", "v7")


def test_load_of_a_platform_the_archive_lacks_is_dockers_error_and_loads_nothing(store):
    images, snaps = store
    for plat in ("linux/s390x", "linux/arm/v6"):
        with pytest.raises(mf.NoMatchingManifest, match=f"no matching manifest for {plat} in the manifest"):
            archive.load(images, snaps, io.BytesIO(oci_archive(TWO)), platform=mf.parse_platform(plat))
    assert images.all() == []


def test_load_platform_refuses_a_single_image_of_another(store, tmp_path):
    images, snaps = store
    one = oci_archive([({"os": "linux", "architecture": "arm64"}, b"arm64\n")])
    archive.load(images, snaps, io.BytesIO(one), platform=mf.parse_platform("arm64"))
    rec = images.resolve("kbt/multi:1")
    assert rec["architecture"] == "arm64"
    out = io.BytesIO()  # a docker-archive: its image has no index entry, only its config's platform
    archive.save(images, [(rec, ["docker.io/kbt/multi:1"])], out, "docker-archive")
    other = ImageStore(str(tmp_path / "again")), Snapshots(str(tmp_path / "again"))
    with pytest.raises(mf.NoMatchingManifest, match="wanted linux/amd64, actual: linux/arm64"):
        archive.load(*other, io.BytesIO(out.getvalue()), platform=mf.parse_platform("linux/amd64"))
    assert other[0].all() == []


@pytest.mark.parametrize("fmt", ["oci-archive", "docker-archive"])
def test_save_then_load_keeps_the_variant(store, tmp_path, fmt):
    images, snaps = store
    archive.load(images, snaps, io.BytesIO(oci_archive(TWO)), platform=mf.parse_platform("linux/arm"))
    rec = images.resolve("kbt/multi:1")
    out = io.BytesIO()
    archive.save(images, [(rec, ["docker.io/kbt/multi:1"])], out, fmt)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as t:
        index = json.load(t.extractfile("index.json"))  # type: ignore[arg-type]
    assert index["manifests"][0]["platform"] == {"architecture": "arm", "os": "linux", "variant": "v7"}
    other = ImageStore(str(tmp_path / "again")), Snapshots(str(tmp_path / "again"))
    archive.load(other[0], other[1], io.BytesIO(out.getvalue()))
    again = other[0].resolve("kbt/multi:1")
    assert (again["id"], again["architecture"], again.get("variant")) == (rec["id"], "arm", "v7")


def test_import_records_the_platform_given(store):
    from kobako.image.build import import_source
    images, snaps = store
    src = io.BytesIO(_layer(b"x"))
    path = f"/proc/self/fd/{os.memfd_create('t')}"
    with open(path, "wb") as f:
        f.write(src.getvalue())
    rec = import_source(images, snaps, path, ["docker.io/kbt/imp:1"],
                        platform=mf.parse_platform("linux/arm/v6"))
    cfg = json.loads(images.content.read(rec["id"]))
    assert (cfg["os"], cfg["architecture"], cfg["variant"]) == ("linux", "arm", "v6")
    assert (rec["architecture"], rec["variant"]) == ("arm", "v6")
    rec = import_source(images, snaps, path, [], platform=mf.parse_platform("linux/arm64"))
    assert "variant" not in json.loads(images.content.read(rec["id"]))
