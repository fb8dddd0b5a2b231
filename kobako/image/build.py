"""Making images locally: a layer blob from a directory or a tar (import, commit), and
the config + manifest around a stack of layers."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from typing import BinaryIO

from kobako.image import manifest as mf
from kobako.image.content import ContentStore
from kobako.image.store import ImageStore, now_iso
from kobako.image.unpack import register_local
from kobako.storage import layer
from kobako.storage.snapshots import Snapshots


def _compressor(level: int = 1):
    try:
        from isal import isal_zlib
        return isal_zlib.compressobj(level, isal_zlib.DEFLATED, 31)
    except ImportError:
        import zlib
        return zlib.compressobj(level, zlib.DEFLATED, 31)


class LayerSink:
    """A file-like the tar writer writes into: hashes the tar (diff ID), gzips it
    (isal when installed: several times faster than zlib) into a content writer."""

    def __init__(self, content: ContentStore) -> None:
        self.w = content.writer()
        self.diff = hashlib.sha256()
        self.z = _compressor()
        self.raw = 0

    def write(self, data: bytes) -> int:
        self.diff.update(data)
        self.raw += len(data)
        out = self.z.compress(data)
        if out:
            self.w.write(out)
        return len(data)

    def finish(self) -> tuple[mf.Descriptor, str]:
        self.w.write(self.z.flush())
        size = self.w.written
        digest = self.w.commit()
        return mf.Descriptor(mf.OCI_LAYER_GZIP, digest, size), "sha256:" + self.diff.hexdigest()

    def abort(self) -> None:
        self.w.abort()


def layer_from(content: ContentStore, produce: Callable[[BinaryIO], None]) -> tuple[mf.Descriptor, str]:
    sink = LayerSink(content)
    try:
        produce(sink)  # type: ignore[arg-type]
        return sink.finish()
    except BaseException:
        sink.abort()
        raise


def layer_from_tar(content: ContentStore, src: BinaryIO) -> tuple[mf.Descriptor, str]:
    """A tarball (plain, gzip or zstd) as one layer. It is checked by unpacking it later;
    here only copied, decompressed, so the diff ID is the digest of the tar itself."""
    def produce(out: BinaryIO) -> None:
        r = layer.open_decompressed(src)
        while True:
            b = r.read(1 << 20)
            if not b:
                break
            out.write(b)
    return layer_from(content, produce)


def layer_from_dir(content: ContentStore, path: str, diff: bool = False) -> tuple[mf.Descriptor, str]:
    """A directory as one layer: a plain tree (import of a host dir) or an overlay upper
    dir with its whiteouts turned into .wh. entries (commit)."""
    return layer_from(content, lambda out: (layer.write_diff if diff else layer.write_tree)(path, out))


def host_config() -> dict:
    p = mf.host_platform()
    out = {"architecture": p["architecture"], "os": p["os"]}
    if p.get("variant"):
        out["variant"] = p["variant"]
    return out


def new_image(store: ImageStore, snaps: Snapshots, base: dict | None, layers: list[tuple[mf.Descriptor, str]],
              container_config: dict | None, history: dict, names: list[str],
              extra: dict | None = None) -> dict:
    """Stack `layers` on `base` (an image record, or None), write config + OCI manifest,
    unpack and record the image."""
    content = store.content
    if base:
        config = json.loads(content.read(base["id"]))
        base_layers = [mf.Descriptor.parse(d, "base image") for d in base["layers"]]
    else:
        config = {**host_config(), "config": {}, "rootfs": {"type": "layers", "diff_ids": []}, "history": []}
        base_layers = []
    config = dict(config)
    config["created"] = history.get("created") or now_iso()
    if container_config is not None:
        config["config"] = container_config
    config["rootfs"] = {"type": "layers",
                        "diff_ids": list(config["rootfs"]["diff_ids"]) + [d for _, d in layers]}
    h = dict(history)
    h.setdefault("created", config["created"])
    if not layers:
        h["empty_layer"] = True
    config["history"] = list(config.get("history") or []) + [h]
    for k, v in (extra or {}).items():
        if v is None:
            config.pop(k, None)  # (a platform without a variant)
        else:
            config[k] = v
    descs = [d.to_json() for d in base_layers] + [d.to_json() for d, _ in layers]
    return assemble(store, snaps, config, descs, names)


def config_id(config: dict) -> str:
    """The image ID a config document gets (the digest of its canonical bytes)."""
    return "sha256:" + hashlib.sha256(mf.dumps(config)).hexdigest()


def assemble(store: ImageStore, snaps: Snapshots, config: dict, layers: list[dict], names: list[str]) -> dict:
    """An image from a whole config document and its layers' descriptors (all blobs in the
    content store): write config + OCI manifest, unpack what is missing, record it."""
    config_bytes = mf.dumps(config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": mf.OCI_MANIFEST,
        "config": {"mediaType": mf.OCI_CONFIG, "digest": "sha256:" + hashlib.sha256(config_bytes).hexdigest(),
                   "size": len(config_bytes)},
        "layers": layers,
    }
    return register_local(store, snaps, mf.dumps(manifest), config_bytes, names)


def import_source(store: ImageStore, snaps: Snapshots, source: str, names: list[str],
                  changes: dict | None = None, message: str = "", platform: dict | None = None) -> dict:
    """`kobako import`: a tarball (file or '-') or a host directory (such as '/') as a base image,
    recorded for `platform` (normalised; the host's by default): the files are taken as they
    are, so it is the caller's word that they are that platform's, as docker import takes it."""
    import sys
    if source != "-" and os.path.isdir(source):
        desc = layer_from_dir(store.content, source)
        src = source
    elif source == "-":
        desc = layer_from_tar(store.content, sys.stdin.buffer)
        src = "-"
    else:
        try:
            f = open(source, "rb")
        except OSError as e:
            raise layer.LayerError(f"cannot read {source}: {e.strerror}") from None
        with f:
            desc = layer_from_tar(store.content, f)
        src = source
    hist = {"created_by": f"kobako import {src}"}
    if message:
        hist["comment"] = message
    extra = None
    if platform:
        extra = {"architecture": platform["architecture"], "os": platform["os"],
                 "variant": platform.get("variant")}
    return new_image(store, snaps, None, [desc], changes or {}, hist, names, extra)
