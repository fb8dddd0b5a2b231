"""Removing images and collecting what nothing references any more: blobs, snapshots,
leftovers of crashed pulls. Collection takes gc.lock exclusively; pulls, loads and
imports hold it shared, so a collection never removes what one of them has written
but not yet recorded (it waits, or with wait=False skips this round)."""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager

from kobako import errors
from kobako.image.store import ImageError
from kobako.paths import dir_size


@contextmanager
def exclusive(root: str, wait: bool = True):
    fd = os.open(os.path.join(root, "gc.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def referenced(e) -> tuple[set[str], set[str]]:
    blobs: set[str] = set()
    chains: set[str] = set()
    for r in e.images.all():
        blobs.add(r["id"])
        blobs.add(r["manifest"]["digest"])
        if r.get("index"):
            blobs.add(r["index"])
        blobs.update(d["digest"] for d in r.get("layers", []))
        chains.update(r.get("chainIds", []))
    for x in e.images.indexes():  # an index record keeps its own blob and its manifests'
        blobs.add(x["id"])
        blobs.update(m["digest"] for m in x.get("manifests", []))
    for c in e.containers.all():
        chains.update(c.get("chainIds", []))
    from kobako.image.buildcache import BuildCache
    cache_blobs, cache_chains = BuildCache(e.root).references()  # layers of cached build steps
    return blobs | cache_blobs, chains | cache_chains


def collect(e, wait: bool = False) -> int:
    """Remove unreferenced blobs and snapshots; returns bytes freed."""
    freed = 0
    with exclusive(e.root, wait) as got:
        if not got:
            return 0
        blobs, chains = referenced(e)
        content = e.images.content
        for d in list(content.digests()):
            if d not in blobs:
                try:
                    freed += content.size(d)
                except OSError:
                    pass
                content.delete(d)
        for c in e.snapshots.all():
            if c not in chains:
                freed += e.snapshots.size(c)
                e.snapshots.remove(c)
        # nobody holds the shield: every temp file or dir is a crash's leftover
        content.prune_ingest(older_than=0)
        e.snapshots.prune_temp()
    return freed


@contextmanager
def undo_on_failure(e):
    """The steps of an operation that makes an image (pull, load, import, commit, build's
    final image), recorded in one step record (kobako/steps.py, layer "image"): each blob
    new to the content store (`image:blob`), snapshot published (`image:snapshot`) and
    image record written (`image:record`) is a step whose undo is registered as it is
    made, before the next step; each is a fault point, and `--trace` shows them. On a
    failure `unwind()` undoes them newest first: the records go, then the blobs and
    snapshots that nothing references (`_drop_blob`, `_drop_snapshot`), so a failed
    operation leaves the store as it was."""
    import threading

    from kobako import steps
    rec = steps.Record("image")
    guard = threading.Lock()  # layers are fetched and unpacked on several threads at once
    content, snaps, store = e.images.content, e.snapshots, e.images

    def blob(digest: str) -> None:
        with guard:
            rec.made("blob", "write, rename(2)", f"blob {digest}", lambda: _drop_blob(e, digest),
                     f"blob {digest} removed unless an image uses it")

    def snapshot(chain: str) -> None:
        with guard:
            rec.made("snapshot", "mkdir(2), rename(2)", f"snapshot {chain} (a layer unpacked)",
                     lambda: _drop_snapshot(e, chain), f"snapshot {chain} removed unless an image uses it")

    def record(image_id: str, names: list[str]) -> None:
        named = f" ({', '.join(names)})" if names else ""
        with guard:
            rec.made("record", "write", f"image record {image_id}{named}", lambda: _drop_record(e, image_id),
                     f"image record {image_id} removed")

    saved = content.made, snaps.made, store.made  # an operation inside another (build's pull)
    content.made, snaps.made, store.made = blob, snapshot, record
    try:
        yield rec
    except BaseException as err:
        rec.unwind(err)
        raise
    finally:
        content.made, snaps.made, store.made = saved


def _drop_blob(e, digest: str) -> None:
    """A blob's undo: removed when no image, container or build-cache entry references it,
    and only when no other pull or load holds the GC shield (one of them may have found
    the blob and be about to record it): otherwise the next collection takes it."""
    with exclusive(e.root, wait=False) as alone:
        if alone and digest not in referenced(e)[0]:
            e.images.content.delete(digest)


def _drop_snapshot(e, chain: str) -> None:
    """A snapshot's undo, under the same rule as a blob's."""
    with exclusive(e.root, wait=False) as alone:
        if alone and chain not in referenced(e)[1]:
            e.snapshots.remove(chain)


def _drop_record(e, image_id: str) -> None:
    """An image (or index) record's undo: this operation wrote it new, so nothing else names it."""
    with e.images.locked():
        e.images.delete_record(image_id)
        e.images.delete_index(image_id)


def users(e, image_id: str) -> list[dict]:
    return [c for c in e.containers.all() if c.get("image") == image_id]


def remove_image(e, name: str, force: bool = False, prune: bool = True) -> list[str]:
    """docker rmi: untag NAME, or delete the image when it was its last name (or named by
    ID); `prune` (docker's default; --no-prune turns it off) also deletes the untagged
    parents (commit and build bases) that nothing else holds: no name, no container, no
    other child."""
    from kobako.image import reference
    familiar = reference.familiar
    store = e.images
    index = store.resolve_index(name)
    if index is not None and store.get(index["id"]) is None:
        return _remove_index(e, index, name, force)
    rec = store.resolve(name)
    out: list[str] = []
    by_id = reference.looks_like_id(name) and name.removeprefix("sha256:") in rec["id"]
    names = rec.get("names", [])
    if not by_id:
        full = str(reference.parse(name))
        if full in names and len(names) > 1:
            store.untag(rec["id"], full)
            return [f"Untagged: {familiar(full)}"]
    elif len(names) > 1 and not force:
        raise ImageError(f"conflict: unable to delete {rec['id'][7:19]} (must be forced) - image is "
                         f"referenced in multiple repositories")
    if any(r.get("parent") == rec["id"] for r in store.all()):  # dockerd: a parent stays, untagged
        if by_id:
            raise ImageError(f"conflict: unable to delete {rec['id'][7:19]} (cannot be forced) - image "
                             "has dependent child images")
        full = str(reference.parse(name))
        store.untag(rec["id"], full)
        return [f"Untagged: {familiar(full)}"]
    held = store.holders(rec["id"])
    if held:  # by ID: the index that holds it names it (dockerd refuses a child the same way)
        label = familiar(held[0]["names"][0]) if held[0].get("names") else held[0]["id"]
        raise errors.Conflict(f"conflict: unable to delete {rec['id'][7:19]} (cannot be forced) - image is "
                              f"the {platform_label(rec)} image of the multi-platform image {label}; "
                              f"remove {label} instead")
    used = users(e, rec["id"])
    if used and not force:
        c = used[0]
        raise ImageError(f"conflict: unable to remove image {familiar(name)}: container {c['id'][:12]} "
                         f"({c['name']}) uses it; remove the container first or use -f")
    with store.locked():
        store.delete_record(rec["id"])
    out += [f"Untagged: {familiar(n)}" for n in names]
    out.append(f"Deleted: {rec['id']}")
    if prune:
        out += _prune_parents(e, rec.get("parent", ""))
    collect(e)
    return out


def platform_label(rec: dict) -> str:
    return "/".join(x for x in (rec.get("os") or "linux", rec.get("architecture") or "", rec.get("variant"))
                    if x)


def _remove_index(e, index: dict, name: str, force: bool) -> list[str]:
    """rmi of a name an index record holds: untag it when the index has another name; else
    the index record goes, and with it each of its images that nothing else holds (no name,
    no other index; a container's image only with force, as for one image)."""
    from kobako.image import reference
    store = e.images
    full = str(reference.parse(name))
    names = index.get("names", [])
    if full in names and len(names) > 1:
        store.untag_index(index["id"], full)
        return [f"Untagged: {reference.familiar(full)}"]
    images = [m["image"] for m in index.get("manifests", [])]
    if not force:
        for image_id in images:
            used = users(e, image_id)
            if used:
                c = used[0]
                raise ImageError(f"conflict: unable to remove image {reference.familiar(name)}: container "
                                 f"{c['id'][:12]} ({c['name']}) uses its {image_id[7:19]}; remove the "
                                 "container first or use -f")
    with store.locked():
        store.delete_index(index["id"])
    out = [f"Untagged: {reference.familiar(n)}" for n in names]
    out.append(f"Deleted: {index['id']}")
    for image_id in dict.fromkeys(images):
        rec = store.get(image_id)
        if rec is None or rec.get("names") or store.holders(image_id):
            continue
        if any(r.get("parent") == image_id for r in store.all()):
            continue
        with store.locked():
            store.delete_record(image_id)
        out.append(f"Deleted: {image_id}")
    collect(e)
    return out


def _prune_parents(e, parent: str) -> list[str]:
    store = e.images
    out = []
    while parent:
        p = store.get(parent)
        if p is None or p.get("names") or users(e, parent):
            break
        if any(r.get("parent") == parent for r in store.all()):
            break  # another child still stands on it
        with store.locked():
            store.delete_record(parent)
        out.append(f"Deleted: {parent}")
        parent = p.get("parent", "")
    return out


def prune_images(e, all_images: bool = False, match=None) -> tuple[list[dict], int]:
    """Remove images no container uses: untagged ones, or all of them with all_images; `match`
    (a record -> bool) narrows further. Returns dockerd's ImagesDeleted entries
    ({"Untagged": name} for each name, then {"Deleted": id}) and the bytes freed."""
    from kobako.image.reference import familiar
    out: list[dict] = []
    if all_images:  # an index none of whose images a container uses goes whole (its images below)
        for x in e.images.indexes():
            ids = [m.get("image") for m in x.get("manifests", [])]
            if any(users(e, i) for i in ids):
                continue
            if match is not None and not any(match(r) for i in ids if (r := e.images.get(i)) is not None):
                continue
            with e.images.locked():
                e.images.delete_index(x["id"])
            out += [{"Untagged": familiar(n)} for n in x.get("names") or []]
            out.append({"Deleted": x["id"]})
    held = {m.get("image") for x in e.images.indexes() for m in x.get("manifests", [])}
    for r in e.images.all():
        if users(e, r["id"]) or r["id"] in held:  # an index's images go with the index
            continue
        if r.get("names") and not all_images:
            continue
        if match is not None and not match(r):
            continue
        with e.images.locked():
            e.images.delete_record(r["id"])
        out += [{"Untagged": familiar(n)} for n in r.get("names") or []]
        out.append({"Deleted": r["id"]})
    freed = collect(e, wait=True)
    return out, freed


def disk_usage(e) -> dict:
    blobs, chains = referenced(e)
    imgs = e.images.all()
    active = {c.get("image") for c in e.containers.all()}
    snap_sizes = {c: e.snapshots.size(c) for c in e.snapshots.all()}
    img_total = sum(snap_sizes.values())
    img_unused = sum(s for c, s in snap_sizes.items()
                     if not any(c in r.get("chainIds", []) for r in imgs if r["id"] in active))
    cont = e.containers.all()
    cont_sizes = [dir_size(e.containers.path(c["id"], "upper"), allocated=True) for c in cont]
    from kobako.storage.volumes import VolumeStore
    vs = VolumeStore(e.root)
    vols = [v["Name"] for v in vs.list()]
    used = vs.in_use(cont)
    vol_sizes = {v: dir_size(vs.mountpoint(v), allocated=True) for v in vols}
    vol_total = sum(vol_sizes.values())
    from kobako.image.buildcache import BuildCache, CacheMounts
    cache = BuildCache(e.root).all()
    image_chains = {c for r in imgs for c in r.get("chainIds", [])}
    cache_only = {ce["chainId"] for _, ce in cache if ce.get("chainId") and ce["chainId"] not in image_chains}
    mounts, mounts_size = CacheMounts(e.root).size()  # RUN --mount=type=cache directories
    cache_size = sum(snap_sizes.get(c, 0) for c in cache_only) + mounts_size
    return {
        "Images": {"total": len(imgs), "active": len([r for r in imgs if r["id"] in active]),
                   "size": img_total, "reclaimable": img_unused},
        "Containers": {"total": len(cont), "active": len([c for c in cont if c.get("status") == "running"]),
                       "size": sum(cont_sizes),
                       "reclaimable": sum(s for c, s in zip(cont, cont_sizes, strict=True)
                                          if c.get("status") != "running")},
        "Local Volumes": {"total": len(vols), "active": len([v for v in vols if v in used]),
                          "size": vol_total,
                          "reclaimable": sum(s for v, s in vol_sizes.items() if v not in used)},
        "Build Cache": {"total": len(cache) + mounts, "active": 0, "size": cache_size,
                        "reclaimable": cache_size},
        "Blobs": {"total": len(list(e.images.content.digests())), "active": len(blobs),
                  "size": sum(_size(e.images.content, d) for d in e.images.content.digests()),
                  "reclaimable": 0},
    }


def _size(content, d: str) -> int:
    try:
        return content.size(d)
    except OSError:
        return 0

