"""A stored layer's bytes for save and push: its blob when the content store has one;
else (a pulled layer keeps no blob, see storage/tarsplit) the tar rebuilt from its
snapshot and tar-split, checked against the diff ID before anything uses it.

Push and OCI save want a compressed blob: a rebuilt layer is gzipped anew (as Docker
does on push), which gives it a new digest, so the manifest written with it is new too.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator

from kobako import errors
from kobako.image import manifest as mf
from kobako.image.content import ContentError, ContentStore
from kobako.storage import tarsplit
from kobako.storage.snapshots import Snapshots

_LEVEL = 3  # isal's levels run 0-3; 3 comes close to gzip -6 and is still ~3x faster


class LayerDataError(errors.InvalidArgument):
    pass


def _split(snaps: Snapshots, chain: str, diff_id: str) -> str:
    split = snaps.tarsplit(chain)
    if split is None:
        raise LayerDataError(f"layer {diff_id} has neither a blob nor a tar-split (pull the image again)")
    return split


def rebuilt(snaps: Snapshots, chain: str, diff_id: str) -> Iterator[bytes]:
    """The layer tar from the snapshot of `chain`; raises at the end if it does not hash to
    `diff_id` (a caller that streams it on must run it to its end, and fail then)."""
    split = _split(snaps, chain, diff_id)
    h = hashlib.sha256()
    try:
        for piece in tarsplit.assemble(split, snaps.fs(chain)):
            h.update(piece)
            yield piece
    except tarsplit.TarSplitError as e:
        raise LayerDataError(f"layer {diff_id} cannot be rebuilt: {e}") from None
    if "sha256:" + h.hexdigest() != diff_id:
        raise LayerDataError(f"layer {diff_id} rebuilt from its snapshot hashes to sha256:{h.hexdigest()}: "
                             "the snapshot was changed on disk (pull the image again)")


def rebuilt_size(snaps: Snapshots, chain: str, diff_id: str) -> int:
    split = _split(snaps, chain, diff_id)
    try:
        return tarsplit.size(split)
    except tarsplit.TarSplitError as e:
        raise LayerDataError(f"layer {diff_id} cannot be rebuilt: {e}") from None


def compressed(content: ContentStore, snaps: Snapshots, desc: mf.Descriptor, diff_id: str,
               chain: str) -> mf.Descriptor:
    """`desc` if its blob is stored, else a gzip blob made from the snapshot (stored, so a
    push can upload it) and its descriptor."""
    if content.has(desc.digest, desc.size):
        return desc
    try:
        from isal import isal_zlib as z
        level = _LEVEL
    except ImportError:
        import zlib as z  # type: ignore[no-redef]
        level = 6
    c = z.compressobj(level, z.DEFLATED, 31)  # 31: a gzip member, mtime 0: the same bytes each time
    with content.writer() as w:
        for piece in rebuilt(snaps, chain, diff_id):
            w.write(c.compress(piece))
        w.write(c.flush())
        digest = w.commit()
    docker = desc.media_type.startswith("application/vnd.docker.")
    media = mf.DOCKER_LAYER_GZIP if docker else mf.OCI_LAYER_GZIP
    # no annotations: those of the pulled blob (zstd:chunked, eStargz tables) describe its bytes
    return mf.Descriptor(media, digest, content.size(digest))


def with_layers(body: bytes, layers: list[mf.Descriptor]) -> bytes:
    """The manifest `body` with its layer descriptors replaced (same order)."""
    doc = json.loads(body)
    if len(doc.get("layers") or []) != len(layers):
        raise ContentError("manifest and image record disagree on the layers")
    doc["layers"] = [d.to_json() for d in layers]
    return mf.dumps(doc)


def ready_layers(content: ContentStore, snaps: Snapshots, rec: dict,
                 keep: Callable[[mf.Descriptor], bool] | None = None) -> tuple[list[mf.Descriptor], bool]:
    """The image's layer descriptors with a blob behind each (rebuilt where missing, unless
    `keep(desc)` says the destination has the original already); True if any changed."""
    out, changed = [], False
    diffs, chains = rec.get("diffIds") or [], rec.get("chainIds") or []
    for i, d in enumerate(rec.get("layers", [])):
        desc = mf.Descriptor.parse(d, "layer")
        if content.has(desc.digest, desc.size) or (keep is not None and keep(desc)):
            out.append(desc)
            continue
        if i >= len(diffs) or i >= len(chains):
            raise LayerDataError(f"layer {desc.digest} is missing from the content store "
                                 "(pull the image again)")
        new = compressed(content, snaps, desc, diffs[i], chains[i])
        changed = changed or new.digest != desc.digest
        out.append(new)
    return out, changed


def snapshots_of(content: ContentStore) -> Snapshots:
    return Snapshots(content.root)
