"""Multi-platform images kept whole (pull --all-platforms, load of a named index): the index
record and the per-platform images it holds -- picking a platform offline, listing, tag,
rmi, prune and GC, save and load of the whole index, and the undo of a failed operation."""

from __future__ import annotations

import io
import json
import os
import tarfile
import types

import pytest
from test_image_platforms import TWO, oci_archive

from kobako import errors
from kobako.engine import images as engine_images
from kobako.image import archive, gc
from kobako.image import manifest as mf
from kobako.image.store import ImageStore
from kobako.storage.snapshots import Snapshots

NAME = "docker.io/kbt/multi:1"
on_amd64 = pytest.mark.skipif(os.uname().machine != "x86_64", reason="the default platform is the host's")


def _engine(root: str) -> types.SimpleNamespace:
    return types.SimpleNamespace(root=root, images=ImageStore(root), snapshots=Snapshots(root),
                                 containers=types.SimpleNamespace(all=lambda: []))


@pytest.fixture
def e(tmp_path):
    eng = _engine(str(tmp_path))
    assert archive.load(eng.images, eng.snapshots, io.BytesIO(oci_archive(TWO))) == [NAME]
    return eng


def _arches(recs) -> list[str]:
    return sorted(r["architecture"] for r in recs)


@on_amd64
def test_load_of_a_named_index_keeps_every_platform_and_picks_offline(e):
    [index] = e.images.indexes()
    assert index["names"] == [NAME]
    assert _arches(e.images.all()) == ["amd64", "arm"]
    assert all(not r["names"] for r in e.images.all())  # the name is the index's
    assert e.images.resolve(NAME)["architecture"] == "amd64"
    arm = e.images.resolve(NAME, mf.parse_platform("linux/arm/v7"))
    assert (arm["architecture"], arm["variant"]) == ("arm", "v7")
    with pytest.raises(mf.NoMatchingManifest, match="no matching manifest for linux/s390x"):
        e.images.resolve(NAME, mf.parse_platform("linux/s390x"))
    assert e.images.resolve(f"docker.io/kbt/multi@{index['id']}")["architecture"] == "amd64"


def test_load_platform_of_a_named_index_loads_one_image_as_before(tmp_path):
    eng = _engine(str(tmp_path))
    archive.load(eng.images, eng.snapshots, io.BytesIO(oci_archive(TWO)),
                 platform=mf.parse_platform("linux/arm"))
    assert eng.images.indexes() == []
    assert [r["names"] for r in eng.images.all()] == [[NAME]]


@on_amd64
def test_images_lists_the_name_once_as_the_host_platform_or_once_per_platform_filtered(e):
    rows = engine_images.listing(e, {})
    assert [(r["architecture"], names) for r, names in rows] == [("amd64", [NAME])]
    assert rows[0][0]["listDigest"] == e.images.indexes()[0]["id"]
    rows = engine_images.listing(e, {"platform": ["linux/arm", "linux/amd64"]})
    assert sorted((r["architecture"], tuple(n)) for r, n in rows) == [("amd64", (NAME,)), ("arm", (NAME,))]
    assert engine_images.listing(e, {"dangling": ["true"]}) == []  # held images are not dangling


def test_tag_names_the_index_and_moving_its_last_name_drops_it(e):
    engine_images.tag(e, "kbt/multi:1", "kbt/other:2")
    [index] = e.images.indexes()
    assert index["names"] == [NAME, "docker.io/kbt/other:2"]
    assert e.images.resolve("kbt/other:2", mf.parse_platform("linux/arm"))["architecture"] == "arm"
    amd = [r for r in e.images.all() if r["architecture"] == "amd64"][0]
    e.images.tag(amd["id"], NAME)  # a plain image takes one name, then the other
    e.images.tag(amd["id"], "docker.io/kbt/other:2")
    assert e.images.indexes() == []  # reached only by names: gone; its images dangle, as a moved tag's
    out, _ = gc.prune_images(e)
    assert [d for d in out if "Deleted" in d] and _arches(e.images.all()) == ["amd64"]


def test_rmi_removes_the_index_its_images_and_their_blobs(e):
    gc.remove_image(e, "kbt/multi:1")
    assert e.images.indexes() == [] and e.images.all() == []
    assert list(e.images.content.digests()) == [] and e.snapshots.all() == []


def test_rmi_keeps_an_image_named_on_its_own(e):
    arm = e.images.resolve(NAME, mf.parse_platform("linux/arm"))
    e.images.tag(arm["id"], "docker.io/kbt/arm:1")
    out = gc.remove_image(e, "kbt/multi:1")
    assert out[0] == "Untagged: kbt/multi:1" and out[1].startswith("Deleted: sha256:")
    assert [r["names"] for r in e.images.all()] == [["docker.io/kbt/arm:1"]]


def test_rmi_of_an_index_a_container_uses_needs_force(e):
    host = e.images.resolve(NAME)
    e.containers.all = lambda: [{"id": "c" * 64, "name": "web", "image": host["id"]}]
    with pytest.raises(errors.InvalidArgument, match=r"container cccccccccccc \(web\) uses"):
        gc.remove_image(e, "kbt/multi:1")
    assert e.images.indexes()
    gc.remove_image(e, "kbt/multi:1", force=True)
    assert e.images.indexes() == []


def test_rmi_of_one_held_image_by_id_is_a_conflict_naming_the_index(e):
    arm = e.images.resolve(NAME, mf.parse_platform("linux/arm"))
    with pytest.raises(errors.Conflict, match="linux/arm/v7 image of the multi-platform image kbt/multi:1"):
        gc.remove_image(e, arm["id"])


def test_prune_keeps_what_an_index_holds_and_prune_all_removes_it_whole(e):
    assert gc.prune_images(e)[0] == []
    assert len(e.images.all()) == 2
    index_id = e.images.indexes()[0]["id"]
    assert index_id in gc.referenced(e)[0]
    gc.collect(e)
    assert e.images.content.has(index_id)
    out, _ = gc.prune_images(e, all_images=True)
    assert {"Untagged": "kbt/multi:1"} in out and {"Deleted": index_id} in out
    assert e.images.indexes() == [] and e.images.all() == [] and list(e.images.content.digests()) == []


def test_save_oci_writes_the_whole_index_and_load_keeps_it(e, tmp_path):
    [(index, names)] = engine_images.archive_targets(e, ["kbt/multi:1"])
    out = io.BytesIO()
    archive.save(e.images, [(index, names)], out, "oci-archive")
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as t:
        top = json.load(t.extractfile("index.json"))  # type: ignore[arg-type]
    [entry] = top["manifests"]
    assert entry["digest"] == index["id"] and entry["annotations"]["io.containerd.image.name"] == NAME
    other = _engine(str(tmp_path / "again"))
    assert archive.load(other.images, other.snapshots, io.BytesIO(out.getvalue())) == [NAME]
    assert [x["id"] for x in other.images.indexes()] == [index["id"]]
    assert _arches(other.images.all()) == ["amd64", "arm"]


@on_amd64
def test_save_docker_archive_of_an_index_writes_the_hosts_image(e):
    out = io.BytesIO()
    archive.save(e.images, engine_images.archive_targets(e, ["kbt/multi:1"]), out, "docker-archive")
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as t:
        [item] = json.load(t.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert item["Config"] == "blobs/sha256/" + e.images.resolve(NAME)["id"][7:]


def test_push_of_an_index_is_refused_clearly(e):
    with pytest.raises(errors.NotImplementedYet, match="multi-platform image"):
        engine_images.push_source(e, "kbt/multi:1")


def test_a_failed_load_of_an_index_leaves_nothing(tmp_path):
    eng = _engine(str(tmp_path))
    with pytest.raises(RuntimeError), gc.undo_on_failure(eng):
        archive.load(eng.images, eng.snapshots, io.BytesIO(oci_archive(TWO)))
        raise RuntimeError("the next step failed")
    assert eng.images.indexes() == [] and eng.images.all() == []
    assert list(eng.images.content.digests()) == [] and eng.snapshots.all() == []


def test_attestations_and_nested_indexes_are_no_platform_image():
    def d(mt: str, plat: dict | None = None) -> mf.Descriptor:
        return mf.Descriptor.parse({"mediaType": mt, "digest": "sha256:" + "a" * 64, "size": 1,
                                    **({"platform": plat} if plat else {})}, "t")
    assert mf.is_image_entry(d(mf.OCI_MANIFEST, {"os": "linux", "architecture": "arm64"}))
    assert not mf.is_image_entry(d(mf.OCI_MANIFEST, {"os": "unknown", "architecture": "unknown"}))
    assert not mf.is_image_entry(d(mf.OCI_INDEX))
