"""The content store: blobs by digest under <data root>/blobs/<algo>/<hex>.

Every blob is verified against its digest and size while it is written; a blob is
only ever visible under its final name complete and fsynced (written under
ingest/, then renamed), so a crash or a full disk leaves at most a stray temp file
that `prune_ingest` removes. Readers can trust what `path()` returns.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

from kobako import errors
from kobako.image.reference import ALGORITHMS, HEX, InvalidReference, check_digest
from kobako.paths import fsync_dir

CHUNK = 1 << 20


class ContentError(errors.InvalidArgument):
    pass


class Writer:
    """Streams a blob into ingest/, hashing as it goes; `commit` verifies and publishes it.
    With keep=False nothing is written: `commit` only verifies (a pulled layer whose
    snapshot and tar-split stand for the blob)."""

    def __init__(self, store: ContentStore, expected: str | None, size: int | None,
                 keep: bool = True) -> None:
        self.store = store
        self.expected = expected
        self.size = size
        import hashlib
        algo = expected.split(":", 1)[0] if expected else "sha256"
        self.hash = hashlib.new(algo)
        self.algo = algo
        self.written = 0
        self.keep = keep
        self.tmp = os.path.join(store.ingest_dir, os.urandom(16).hex())
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        self.fd = os.open(self.tmp, flags, 0o644) if keep else -1

    def write(self, data: bytes | memoryview) -> int:
        self.hash.update(data)
        view = memoryview(data) if self.keep else b""
        while view:
            view = view[os.write(self.fd, view):]
        self.written += len(data)
        if self.size is not None and self.written > self.size:
            raise ContentError(f"blob {self.expected} is larger than the {self.size} bytes announced")
        return len(data)

    def commit(self, durable: bool = True) -> str:
        digest = f"{self.algo}:{self.hash.hexdigest()}"
        try:
            if self.size is not None and self.written != self.size:
                raise ContentError(f"blob {self.expected}: got {self.written} bytes, expected {self.size} "
                                   "(truncated download?)")
            if self.expected and digest != self.expected:
                raise ContentError(f"digest mismatch: expected {self.expected}, content hashes to {digest}")
            if not self.keep:
                return digest
            if durable:
                os.fsync(self.fd)
            os.close(self.fd)
            self.fd = -1
            final = self.store.path(digest)
            os.makedirs(os.path.dirname(final), exist_ok=True)
            new = not os.path.exists(final)
            os.rename(self.tmp, final)
            if new and self.store.made is not None:
                self.store.made(digest)  # a step: its undo is registered before the next one
            if durable:
                fsync_dir(os.path.dirname(final))
            return digest
        finally:
            self.abort()

    def abort(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if not self.keep:
            return
        try:
            os.unlink(self.tmp)
        except FileNotFoundError:
            pass

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc) -> None:
        self.abort()


class ContentStore:
    def __init__(self, root: str) -> None:
        self.root = root
        self.blob_dir = os.path.join(root, "blobs")
        self.ingest_dir = os.path.join(root, "ingest")
        # called with the digest of each blob new to the store, while gc.undo_on_failure records
        self.made: Callable[[str], None] | None = None
        for d in (self.blob_dir, self.ingest_dir):
            os.makedirs(d, mode=0o700, exist_ok=True)

    def path(self, digest: str) -> str:
        try:
            check_digest(digest)
        except InvalidReference as e:
            raise ContentError(str(e)) from None
        algo, h = digest.split(":", 1)
        return os.path.join(self.blob_dir, algo, h)

    def has(self, digest: str, size: int | None = None) -> bool:
        try:
            st = os.stat(self.path(digest))
        except FileNotFoundError:
            return False
        return size is None or st.st_size == size

    def writer(self, expected: str | None = None, size: int | None = None, keep: bool = True) -> Writer:
        if expected:
            self.path(expected)  # validates the form
        return Writer(self, expected, size, keep)

    def put(self, data: bytes, expected: str | None = None, durable: bool = True) -> str:
        if expected and self.has(expected, len(data)):
            return expected
        with self.writer(expected, len(data) if expected else None) as w:
            w.write(data)
            return w.commit(durable)

    def read(self, digest: str, verify: bool = True) -> bytes:
        try:
            with open(self.path(digest), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise ContentError(f"blob {digest} is not in the content store") from None
        if verify:
            algo = digest.split(":", 1)[0]
            got = f"{algo}:{_hash(algo, data)}"
            if got != digest:
                raise ContentError(f"blob {digest} is corrupt on disk (hashes to {got})")
        return data

    def open(self, digest: str):
        try:
            return open(self.path(digest), "rb")
        except FileNotFoundError:
            raise ContentError(f"blob {digest} is not in the content store") from None

    def size(self, digest: str) -> int:
        return os.stat(self.path(digest)).st_size

    def delete(self, digest: str) -> None:
        try:
            os.unlink(self.path(digest))
        except FileNotFoundError:
            pass

    def digests(self) -> Iterator[str]:
        for algo, n in ALGORITHMS.items():
            d = os.path.join(self.blob_dir, algo)
            try:
                names = os.listdir(d)
            except FileNotFoundError:
                continue
            for name in names:
                if len(name) == n and set(name) <= HEX:
                    yield f"{algo}:{name}"

    def prune_ingest(self, older_than: float = 3600.0) -> int:
        """Remove temp files left by crashed writers (not those of a pull still running)."""
        import time
        n = 0
        now = time.time()
        for name in os.listdir(self.ingest_dir):
            p = os.path.join(self.ingest_dir, name)
            try:
                if now - os.stat(p).st_mtime > older_than:
                    os.unlink(p)
                    n += 1
            except FileNotFoundError:
                pass
        return n


def _hash(algo: str, data: bytes) -> str:
    """hexdigest; small blobs (configs, manifests) through the builtin _sha256, which loads in
    microseconds where hashlib's OpenSSL binding takes ~3 ms of `kobako run`'s start-up."""
    if algo == "sha256":
        import _sha256
        return _sha256.sha256(data).hexdigest()
    import hashlib
    return hashlib.new(algo, data).hexdigest()


def sha256_of(data: bytes) -> str:
    import hashlib
    return "sha256:" + hashlib.sha256(data).hexdigest()
