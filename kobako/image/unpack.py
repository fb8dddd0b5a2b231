"""From blobs to a runnable image: unpack layers into snapshots, verify diff IDs, and
write the image record. Pull, load, import and commit all end here.

A layer is read once: compressed bytes -> (content store writer, when the blob is
new) -> decompress -> hash (diff ID) -> extract. Every digest is checked before the
snapshot or blob becomes visible; on any failure both are discarded.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from contextlib import contextmanager
from typing import BinaryIO

from kobako import errors
from kobako.image import manifest as mf
from kobako.image.content import ContentError, ContentStore, Writer
from kobako.image.store import ImageStore, now_iso
from kobako.storage import layer, tarsplit
from kobako.storage.snapshots import Snapshots, chain_ids

Progress = Callable[[str, int, int | None], None]  # (layer digest, bytes done, total)
# (layer digest, docker's status: "Pulling fs layer", "Already exists", "Download complete",
# "Extracting", "Pull complete"); called from the download threads
Status = Callable[[str, str], None]


class UnpackError(errors.InvalidArgument):
    pass


class TeeReader:
    """Reads from `src`, passes every byte to a content writer and counts progress."""

    def __init__(self, src: BinaryIO, writer: Writer | None, key: str, total: int | None,
                 progress: Progress | None) -> None:
        self.src, self.writer, self.key, self.total, self.progress = src, writer, key, total, progress
        self.done = 0
        self._last = 0

    def read(self, n: int = -1) -> bytes:
        data = self.src.read(n if n and n > 0 else 1 << 20)
        if data:
            if self.writer is not None:
                self.writer.write(data)
            self.done += len(data)
            if self.progress and (self.done - self._last >= 1 << 19 or self.done == self.total):
                self._last = self.done
                self.progress(self.key, self.done, self.total)
        return data

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


class Pipeline:
    """Decodes the layer on a thread of its own and hashes it there (hashlib and the
    inflater release the GIL while they work), handing the pieces to the caller's thread,
    which parses the tar and makes files: on two cores the halves overlap instead of
    adding up. One thread does the whole chain (network read, blob digest, inflate, hash):
    with one thread per step the steps queued for the GIL behind each other, and the
    unpack of a 200 MB layer took ~1.25 s instead of ~0.9 s."""

    def __init__(self, src: BinaryIO) -> None:
        import queue
        self.src = src
        self.hash = hashlib.sha256()
        self.q: queue.Queue = queue.Queue(maxsize=8)  # <= 8 x 4 MiB decoded in memory
        self.done = False
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for data in layer.decoded_chunks(self.src):
                self.hash.update(data)
                if not self._put(data):
                    return
            self._put(b"")
        except BaseException as e:  # handed to the reader, raised in its thread
            self._put(e)

    def _put(self, item: object) -> bool:
        import queue
        while not self.stop.is_set():
            try:
                self.q.put(item, timeout=0.2)
                return True
            except queue.Full:
                pass
        return False

    def read(self, n: int = -1) -> bytes:
        """The next decoded piece, whatever its size (the tar reader takes any)."""
        if self.done:
            return b""
        item = self.q.get()
        if isinstance(item, BaseException):
            self.done = True
            raise item
        if not item:
            self.done = True
        return item

    def drain(self) -> None:
        """Reads what follows the tar's end (padding, the gzip trailer): part of the diff ID."""
        try:
            while self.read():
                pass
        except layer.LayerError:
            raise
        except Exception as e:  # a decoder's own error class (zlib, zstd): one message
            raise layer.LayerError(f"layer is truncated or corrupt: {e or type(e).__name__}") from None

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)

    @property
    def digest(self) -> str:
        return "sha256:" + self.hash.hexdigest()


@contextmanager
def gc_shield(root: str):
    """Held (shared) by everything that adds blobs or snapshots; GC takes it exclusively,
    so a collection never removes what a concurrent pull has written but not yet recorded."""
    import fcntl
    fd = os.open(os.path.join(root, "gc.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


def unpack_stream(snaps: Snapshots, compressed: BinaryIO, diff_id: str, chain_id: str,
                  before_commit: Callable[[bool], None] | None = None, split: bool = False) -> int:
    """Extract one layer from a compressed stream into a new snapshot; returns its size.
    `before_commit(has_split)` runs after extraction and the diff ID check, before the
    snapshot is published (the pull verifies the blob's digest there). With `split`, the
    snapshot gets a tar-split when the layer can be rebuilt from it (has_split)."""
    tmp = snaps.begin()
    try:
        hr = None
        record = os.path.join(tmp, tarsplit.NAME) if split else None
        try:
            hr = Pipeline(compressed)
            size = layer.extract(hr, os.path.join(tmp, "fs"), split=record)  # type: ignore[arg-type]
            hr.drain()  # the tar's end padding belongs to the diff ID too
        except (EOFError, OSError, ValueError) as e:
            if isinstance(e, OSError) and e.errno == 28:
                raise UnpackError("no space left on the device holding the image store") from None
            raise layer.LayerError(f"layer is truncated or corrupt: {e}") from None
        finally:
            if hr is not None:
                hr.close()
        if hr.digest != diff_id:
            raise UnpackError(f"layer content does not match the image config: diff ID {hr.digest}, "
                              f"expected {diff_id}")
        if before_commit:
            before_commit(record is not None and os.path.exists(record))
        snaps.commit(tmp, chain_id, diff_id, size)
        return size
    except BaseException:
        snaps.abort(tmp)
        raise


def unpack_blob(content: ContentStore, snaps: Snapshots, digest: str, diff_id: str, chain_id: str) -> int:
    """Unpack a layer whose (verified) blob is already in the content store."""
    with content.open(digest) as f:
        return unpack_stream(snaps, f, diff_id, chain_id)


_unpack_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def ensure_layers(store: ImageStore, snaps: Snapshots, layers: list[mf.Descriptor], diff_ids: list[str],
                  fetch: Callable[[mf.Descriptor], BinaryIO] | None = None,
                  progress: Progress | None = None, jobs: int = 4, status: Status | None = None) -> list[str]:
    """Make sure every layer has its blob and snapshot; returns the chain IDs.
    Missing blobs come from `fetch` (a registry stream) and are unpacked as they arrive;
    layers are independent overlay directories, so they are fetched and unpacked in parallel."""
    if len(layers) != len(diff_ids):
        raise UnpackError(f"image config names {len(diff_ids)} layers, the manifest {len(layers)}")
    chains = chain_ids(diff_ids)
    content = store.content
    say = status or (lambda digest, text: None)

    def present(i: int) -> bool:
        return snaps.exists(chains[i]) and (content.has(layers[i].digest, layers[i].size)
                                            or bool(snaps.tarsplit(chains[i])))

    if status:  # docker's first line per layer, before any download starts
        for i, desc in enumerate(layers):
            say(desc.digest, "Already exists" if present(i) else "Pulling fs layer")

    def one(i: int) -> None:
        desc, diff, chain = layers[i], diff_ids[i], chains[i]
        have_blob = content.has(desc.digest, desc.size)
        have_snap = snaps.exists(chain)
        if have_snap and (have_blob or snaps.tarsplit(chain)):
            if progress:
                progress(desc.digest, desc.size, desc.size)
            return
        if have_blob:
            say(desc.digest, "Extracting")
            unpack_blob(content, snaps, desc.digest, diff, chain)
            if progress:
                progress(desc.digest, desc.size, desc.size)
            say(desc.digest, "Pull complete")
            return
        if fetch is None:
            raise UnpackError(f"layer {desc.digest} is missing from the content store")
        if have_snap:  # a snapshot from before tar-splits, without its blob: fetch the blob
            _download(content, fetch, desc, progress)
            say(desc.digest, "Pull complete")
            return
        src = fetch(desc)
        try:
            # The blob is verified as it streams by, not stored: the snapshot and its
            # tar-split give the layer back (see tarsplit).
            with content.writer(desc.digest, desc.size, keep=False) as w:
                tee = TeeReader(src, w, desc.digest, desc.size, progress)

                def publish(has_split: bool) -> None:
                    tee.drain()
                    w.commit()
                    say(desc.digest, "Download complete")
                    if not has_split:  # a layer that cannot be rebuilt: keep its blob after all
                        # no fsync of its own: the snapshot's syncfs, next, flushes it too
                        _download(content, fetch, desc, None, durable=False)  # type: ignore[arg-type]
                try:
                    unpack_stream(snaps, tee, diff, chain, before_commit=publish, split=True)
                except layer.LayerError as e:
                    raise layer.LayerError(f"layer {desc.digest[:19]}… as downloaded: {e}") from None
            say(desc.digest, "Pull complete")
        finally:
            _close(src)

    missing = [i for i in range(len(layers)) if not snaps.exists(chains[i])]
    if not missing:
        for i in range(len(layers)):
            one(i)
        return chains
    from kobako.storage.snapshots import Flusher
    with Flusher(snaps.dir):
        _run_all(one, len(layers), jobs)
    return chains


def _download(content: ContentStore, fetch: Callable[[mf.Descriptor], BinaryIO], desc: mf.Descriptor,
              progress: Progress | None, durable: bool = True) -> None:
    src = fetch(desc)
    try:
        with content.writer(desc.digest, desc.size) as w:
            TeeReader(src, w, desc.digest, desc.size, progress).drain()
            w.commit(durable)
    finally:
        _close(src)


def _close(src: object) -> None:
    close = getattr(src, "close", None)
    if close:
        close()


def _run_all(one: Callable[[int], None], n: int, jobs: int) -> None:
    if jobs <= 1 or n <= 1:
        for i in range(n):
            one(i)
    else:
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(min(jobs, n)) as pool:
            futures = [pool.submit(one, i) for i in range(n)]
            errors = []
            for f in futures:
                try:
                    f.result()
                except BaseException as e:  # collect all; report the first
                    errors.append(e)
            if errors:
                raise errors[0]


def record(store: ImageStore, snaps: Snapshots, manifest_digest: str, manifest: mf.Manifest,
           config: dict, chains: list[str], names: list[str], repo_digests: list[str] | None = None,
           index_digest: str | None = None, variant: str = "") -> dict:
    """The image's record; `variant`: its index entry's, kept when the config names none (an
    image pulled for linux/arm/v7 is v7 whatever its config says)."""
    plat = mf.config_platform(config, variant)
    rec = {
        "id": manifest.config.digest,
        "manifest": {"digest": manifest_digest, "mediaType": manifest.media_type,
                     "size": store.content.size(manifest_digest)},
        "index": index_digest,
        "layers": [d.to_json() for d in manifest.layers],
        "diffIds": config["rootfs"]["diff_ids"],
        "chainIds": chains,
        "created": config.get("created") or now_iso(),
        "added": now_iso(),
        "size": sum(snaps.size(c) for c in chains),
        "os": plat["os"],
        "architecture": plat["architecture"],
    }
    if plat.get("variant"):
        rec["variant"] = plat["variant"]
    return store.add(rec, names, repo_digests)


def register_local(store: ImageStore, snaps: Snapshots, manifest_bytes: bytes, config_bytes: bytes,
                   names: list[str], variant: str = "") -> dict:
    """An image whose blobs are all in the content store already (load, import, commit):
    store manifest and config, unpack what is missing, write the record (`variant`: its
    index entry's, see record)."""
    content = store.content
    m = mf.parse(manifest_bytes)
    if not isinstance(m, mf.Manifest):
        raise UnpackError("expected an image manifest, got an index")
    config = mf.parse_config(config_bytes)
    try:
        content.put(config_bytes, m.config.digest)
    except ContentError as e:
        raise UnpackError(f"image config: {e}") from None
    digest = content.put(manifest_bytes)
    chains = ensure_layers(store, snaps, m.layers, config["rootfs"]["diff_ids"])
    return record(store, snaps, digest, m, config, chains, names, variant=variant)
