"""`kobako pull`: manifest (or index -> the platform's manifest), config, then every
layer streamed from the registry straight into the content store and its snapshot."""

from __future__ import annotations

import hashlib
import threading

from kobako.image import manifest as mf
from kobako.image.reference import Reference
from kobako.image.store import ImageStore, now_iso
from kobako.image.unpack import Progress, Status, UnpackError, ensure_layers, gc_shield, record
from kobako.storage.snapshots import Snapshots


def pull(store: ImageStore, snaps: Snapshots, ref: Reference, platform: dict | None = None,
         insecure: bool | None = None, progress: Progress | None = None,
         say=lambda s: None, credentials: tuple[str, str] | None = None,
         status: Status | None = None, all_platforms: bool = False) -> dict:
    """`status(layer digest, text)`: docker's per-layer lines (see unpack.ensure_layers).
    `all_platforms` (skopeo copy --all, podman pull --all-platforms): from an index, every
    platform's image, then an index record naming them (returned); a tag that is a single
    manifest gives that image as a plain pull does."""
    from kobako.image.registry import Client
    content = store.content
    local = threading.local()

    def client() -> Client:
        c = getattr(local, "client", None)
        if c is None:
            c = local.client = Client(ref.domain, insecure=insecure, credentials=credentials)
        return c

    with gc_shield(store.root):
        body, mtype, digest = client().get_manifest(ref.path, ref.locator)
        doc = mf.parse(body, mtype, what=f"manifest of {ref}")
        index_digest, variant = None, ""
        if isinstance(doc, mf.Index) and all_platforms:
            return _pull_index(store, snaps, ref, body, digest, doc, client, progress, status)
        if isinstance(doc, mf.Index):
            d = mf.select(doc, platform)  # before anything is stored: a platform it lacks leaves nothing
            index_digest = digest
            content.put(body, digest)
            variant = mf.entry_platform(d).get("variant", "")
            body, mtype, digest = client().get_manifest(ref.path, d.digest)
            doc = mf.parse(body, mtype, what=f"manifest {d.digest}")
            if isinstance(doc, mf.Index):
                raise UnpackError(f"{ref}: an index inside an index is not supported")
        say(f"{ref.locator}: pulling from {ref.name}")
        names = [str(ref.with_tag(ref.tag))] if ref.tag else []
        return _pull_image(store, snaps, ref, body, digest, doc, client, names, index_digest, variant,
                           platform, progress, status)


def _pull_image(store: ImageStore, snaps: Snapshots, ref: Reference, body: bytes, digest: str,
                doc: mf.Manifest, client, names: list[str], index_digest: str | None, variant: str,
                platform: dict | None, progress: Progress | None, status: Status | None) -> dict:
    """One image: its config, its layers (each verified as it streams), its manifest, then
    its record (the last step, so a record never names a missing blob)."""
    content = store.content
    cfg = doc.config
    if not content.has(cfg.digest, cfg.size):
        if cfg.size > 16 << 20:
            raise UnpackError(f"image config of {ref} is implausibly large ({cfg.size} bytes)")
        s = client().open_blob(ref.path, cfg.digest, cfg.size)
        try:
            data = b"".join(iter(lambda: s.read(1 << 20), b""))
        finally:
            s.close()
        content.put(data, cfg.digest)
    config = mf.parse_config(content.read(cfg.digest))
    have = mf.config_platform(config, variant)
    if platform and not mf.platform_matches(have, platform):  # a single-platform image (dockerd's words)
        raise mf.NoMatchingManifest(f"image with reference {ref} was found but does not match the "
                                    f"specified platform: wanted {mf.platform_string(platform)}, "
                                    f"actual: {mf.platform_string(have)}")
    chains = ensure_layers(store, snaps, doc.layers, config["rootfs"]["diff_ids"],
                           fetch=lambda d: client().open_blob(ref.path, d.digest, d.size),
                           progress=progress, status=status)
    content.put(body, "sha256:" + hashlib.sha256(body).hexdigest())
    return record(store, snaps, digest, doc, config, chains, names,
                  [f"{ref.name}@{digest}"], index_digest, variant)


def _pull_index(store: ImageStore, snaps: Snapshots, ref: Reference, body: bytes, digest: str,
                index: mf.Index, client, progress: Progress | None, status: Status | None) -> dict:
    """pull --all-platforms of an index: every platform's image (untagged records), then the
    index record that names them and takes the tag. A failure midway unwinds what this pull
    made (gc.undo_on_failure); a kill leaves untagged images no index holds, which
    `image prune` removes: the index record is written last."""
    entries = [d for d in index.manifests if mf.is_image_entry(d)]
    if not entries:
        raise UnpackError(f"{ref}: the index lists no image manifest")
    store.content.put(body, digest)
    held = []
    for d in entries:
        mbody, mtype, mdigest = client().get_manifest(ref.path, d.digest)  # verified against d.digest
        doc = mf.parse(mbody, mtype or d.media_type or None, what=f"manifest {d.digest}")
        if isinstance(doc, mf.Index):
            raise UnpackError(f"{ref}: an index inside an index is not supported")
        plat = mf.entry_platform(d)
        rec = _pull_image(store, snaps, ref, mbody, mdigest, doc, client, [], digest,
                          plat.get("variant", ""), None, progress, status)
        held.append({"digest": mdigest, "mediaType": doc.media_type, "size": len(mbody),
                     "platform": plat, "image": rec["id"]})
    names = [str(ref.with_tag(ref.tag))] if ref.tag else []
    return store.add_index({"id": digest, "mediaType": index.media_type, "size": len(body),
                            "manifests": held, "added": now_iso()}, names, [f"{ref.name}@{digest}"])
