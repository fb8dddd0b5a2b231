"""Tar-split: a layer tar kept as the bytes that are not file content (headers, PAX
records, padding, the end blocks) plus references to the files in its snapshot.

A pulled layer is unpacked and its compressed blob is not stored: the snapshot already
holds every file's bytes, and writing the blob too made a pull write ~1.5x the data
(Docker and Podman keep the same kind of record and no blob). `assemble` gives back
the exact uncompressed tar, byte for byte, so its sha256 is the layer's diff ID again
(save writes it as is; push and OCI save compress it anew).

Recorded while `layer.extract` reads the tar. A layer that changes its own files while
it is unpacked (a path written twice, a directory replaced, GNU sparse files) cannot be
rebuilt from the result: the recording is then dropped, and the caller keeps the blob.

File format, little-endian: records `R` u32 length + bytes, and `F` u64 size + u32 path
length + path (as in the tar, cleaned: relative to the snapshot's root).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator

from kobako import errors
from kobako.linux import fs

NAME = "tarsplit"  # next to the snapshot's fs/ directory
_READ = 1 << 20
_PATH_MAX = 4096


class TarSplitError(errors.InvalidArgument):
    pass


class Recorder:
    def __init__(self, path: str) -> None:
        self.path = path
        self.f = open(path, "wb", buffering=1 << 20)  # closed by close()
        self.tainted = ""

    def raw(self, data: bytes | memoryview) -> None:
        if data and not self.tainted:
            self.f.write(b"R" + len(data).to_bytes(4, "little"))
            self.f.write(data)

    def file(self, path: str, size: int) -> None:
        if not self.tainted:
            p = path.encode("utf-8", "surrogateescape")
            if len(p) >= _PATH_MAX:  # made through cached parent fds, but not openable in one go
                self.taint(f"{path[:40]!r}... is longer than PATH_MAX")
                return
            self.f.write(b"F" + size.to_bytes(8, "little") + len(p).to_bytes(4, "little") + p)

    def taint(self, why: str) -> None:
        self.tainted = self.tainted or why

    def flush(self) -> None:
        self.f.flush()

    def close(self) -> None:
        """Done: a tainted recording is removed (the caller keeps the blob instead)."""
        self.f.close()
        if self.tainted:
            os.unlink(self.path)


def _records(path: str) -> Iterator[tuple[bytes, str, int]]:
    """(raw bytes, "", 0) or (b"", file path, size), in tar order."""
    try:
        f = open(path, "rb", buffering=1 << 20)
    except OSError as e:
        raise TarSplitError(f"cannot read the layer's tar-split: {e.strerror}") from None
    with f:
        while kind := f.read(1):
            if kind == b"R":
                n = int.from_bytes(f.read(4), "little")
                data = f.read(n)
                if len(data) != n:
                    raise TarSplitError("the layer's tar-split is cut short")
                yield data, "", 0
            elif kind == b"F":
                head = f.read(12)
                if len(head) != 12:
                    raise TarSplitError("the layer's tar-split is cut short")
                size, n = int.from_bytes(head[:8], "little"), int.from_bytes(head[8:], "little")
                name = f.read(n)
                if len(name) != n:
                    raise TarSplitError("the layer's tar-split is cut short")
                yield b"", name.decode("utf-8", "surrogateescape"), size
            else:
                raise TarSplitError("the layer's tar-split is corrupt")


def size(path: str) -> int:
    """Bytes of the tar that `assemble` gives."""
    return sum(len(raw) + n for raw, _, n in _records(path))


def assemble(path: str, root: str) -> Iterator[bytes]:
    """The layer tar, from the tar-split at `path` and the files under `root`. Every name
    is resolved inside root (a snapshot is our own, but still holds a layer's symlinks)."""
    try:
        rootfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise TarSplitError(f"cannot open the layer's snapshot: {e.strerror}") from None
    try:
        for raw, name, n in _records(path):
            if raw:
                yield raw
                continue
            try:
                # O_NONBLOCK: a fifo put there must not hang us; only a regular file is read
                fd = fs.openat2(rootfd, name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                                fs.RESOLVE_IN_ROOT | fs.RESOLVE_NO_MAGICLINKS)
            except OSError as e:
                raise TarSplitError(f"layer file {name!r} is gone from its snapshot: {e.strerror}") from None
            try:
                yield from _content(fd, name, n)
            except OSError as e:
                raise TarSplitError(f"cannot read {name!r} of the snapshot: {e.strerror}") from None
            finally:
                os.close(fd)
    finally:
        os.close(rootfd)


def _content(fd: int, name: str, n: int) -> Iterator[bytes]:
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        raise TarSplitError(f"layer file {name!r} in its snapshot is no longer a regular file")
    left = n
    while left:
        data = os.read(fd, min(left, _READ))
        if not data:
            raise TarSplitError(f"layer file {name!r} in its snapshot is shorter than it was")
        left -= len(data)
        yield data
    if os.read(fd, 1):
        raise TarSplitError(f"layer file {name!r} in its snapshot is longer than it was")
