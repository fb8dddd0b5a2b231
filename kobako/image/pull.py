"""`kobako pull`: manifest (or index -> the platform's manifest), config, then every
layer streamed from the registry straight into the content store and its snapshot."""

from __future__ import annotations

import hashlib
import threading

from kobako.image import manifest as mf
from kobako.image.reference import Reference
from kobako.image.store import ImageStore
from kobako.image.unpack import Progress, Status, UnpackError, ensure_layers, gc_shield, record
from kobako.storage.snapshots import Snapshots


def pull(store: ImageStore, snaps: Snapshots, ref: Reference, platform: dict | None = None,
         insecure: bool | None = None, progress: Progress | None = None,
         say=lambda s: None, credentials: tuple[str, str] | None = None,
         status: Status | None = None) -> dict:
    """`status(layer digest, text)`: docker's per-layer lines (see unpack.ensure_layers)."""
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
        names = [str(ref.with_tag(ref.tag))] if ref.tag else []
        return record(store, snaps, digest, doc, config, chains, names,
                      [f"{ref.name}@{digest}"], index_digest, variant)
