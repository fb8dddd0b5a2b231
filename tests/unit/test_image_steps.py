"""The image layer's and the volume store's step records: each blob, snapshot, image record
and volume directory is a step (a fault point, a trace line) whose undo `unwind()` runs on
failure, and the undo never removes what another image started using meanwhile."""

from __future__ import annotations

import os
import types

import pytest

from kobako import steps
from kobako.image import gc
from kobako.image.store import ImageStore
from kobako.storage.snapshots import Snapshots
from kobako.storage.volumes import VolumeStore


def _engine(root: str) -> types.SimpleNamespace:
    images = ImageStore(root)
    return types.SimpleNamespace(root=root, images=images, snapshots=Snapshots(root),
                                 containers=types.SimpleNamespace(all=lambda: []))


def _snapshot(snaps: Snapshots, chain: str) -> None:
    tmp = snaps.begin()
    snaps.commit(tmp, chain, chain, 0)


def _record(image_id: str, layer: str, chain: str) -> dict:
    return {"id": image_id, "manifest": {"digest": image_id}, "layers": [{"digest": layer}],
            "chainIds": [chain]}


@pytest.fixture
def traced():
    r, w = os.pipe()
    steps.trace_to(w)

    def lines() -> str:
        steps.trace_to(-1)
        os.close(w)
        return os.read(r, 1 << 16).decode()
    try:
        yield lines
    finally:
        steps.trace_to(-1)
        os.close(r)


def test_a_failed_operation_unwinds_its_record_blobs_and_snapshots(tmp_path, traced):
    e = _engine(str(tmp_path))
    content = e.images.content
    chain = "sha256:" + "c" * 64
    with pytest.raises(RuntimeError), gc.undo_on_failure(e):
        config = content.put(b"{}")
        layer = content.put(b"layer")
        _snapshot(e.snapshots, chain)
        e.images.add(_record(config, layer, chain), ["docker.io/library/t:1"])
        raise RuntimeError("the next step failed")
    assert list(content.digests()) == []
    assert e.snapshots.all() == []
    assert e.images.all() == []
    out = traced()
    for point in ("image:blob]", "image:blob#2]", "image:snapshot]", "image:record]"):
        assert point in out
    assert out.index(f"image record {config} removed") < out.index(f"blob {layer} removed unless")


def test_the_undo_keeps_what_another_image_uses_and_what_existed_before(tmp_path):
    e = _engine(str(tmp_path))
    content = e.images.content
    old = content.put(b"there before")
    chain = "sha256:" + "d" * 64
    with pytest.raises(RuntimeError), gc.undo_on_failure(e):
        layer = content.put(b"layer")
        content.put(b"there before")  # not new: no step, nothing to undo
        _snapshot(e.snapshots, chain)
        # another load recorded an image using the same layer meanwhile (not through this record)
        e.images.made, hook = None, e.images.made
        e.images.add(_record("sha256:" + "e" * 64, layer, chain), [])
        e.images.made = hook
        raise RuntimeError("failed")
    assert set(content.digests()) == {old, layer}
    assert e.snapshots.all() == [chain]


def test_nothing_is_removed_while_another_operation_holds_the_gc_shield(tmp_path):
    from kobako.image.unpack import gc_shield
    e = _engine(str(tmp_path))
    with gc_shield(e.root), pytest.raises(RuntimeError), gc.undo_on_failure(e):
        blob = e.images.content.put(b"found by the other load")
        raise RuntimeError("failed")
    assert list(e.images.content.digests()) == [blob]  # the next collection takes it


def test_an_existing_image_record_is_no_step(tmp_path):
    e = _engine(str(tmp_path))
    rec = _record("sha256:" + "a" * 64, "sha256:" + "b" * 64, "sha256:" + "c" * 64)
    e.images.add(dict(rec), [])
    with pytest.raises(RuntimeError), gc.undo_on_failure(e):
        e.images.add(dict(rec), ["docker.io/library/t:2"])
        raise RuntimeError("failed")
    assert e.images.get(rec["id"]) is not None


def test_the_hooks_are_off_after_the_operation(tmp_path):
    e = _engine(str(tmp_path))
    with gc.undo_on_failure(e):
        pass
    assert (e.images.made, e.images.content.made, e.snapshots.made) == (None, None, None)


def test_volume_create_is_recorded_and_unwound(tmp_path, traced, monkeypatch):
    store = VolumeStore(str(tmp_path / "data"))
    store.create("good")
    out = traced()
    for point in ("[volume:dir]", "[volume:data]", "[volume:record]", "[volume:rename]"):
        assert point in out

    def fail(*a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr("kobako.storage.volumes.atomic_write", fail)
    with pytest.raises(OSError):
        store.create("bad")
    assert sorted(os.listdir(store.dir)) == [".lock", "good"]
