"""Layer tars: apply one (hostile input) into a directory, and write a directory back as one.

A layer is a tar of a filesystem change set: files, directories, links, device
nodes, and whiteouts (`.wh.NAME` deletes NAME from the layers below,
`DIR/.wh..wh..opq` hides everything below DIR). `extract` turns it into an
overlay layer directory: whiteouts become what overlayfs understands (a 0:0
character device, the trusted.overlay.opaque xattr). `write_diff` does the
reverse for an overlay upperdir (commit, diff), `write_tree` for a plain directory
(import, export).

The tar comes from a registry or a user, so every name is resolved inside the
destination: each parent directory is opened with openat2(RESOLVE_IN_ROOT) from
an fd of dest (an absolute or '..' symlink planted by an earlier member stays in
the root), and the last component is made with the *at() calls relative to that
parent fd, never following a symlink there.
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import stat
import struct
import tarfile
import zlib
from collections import OrderedDict
from collections.abc import Iterator
from typing import TYPE_CHECKING, BinaryIO

from kobako import errors
from kobako.linux import fs

CHUNK = 1 << 20  # bytes per read/write of file content
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
OPAQUE_XATTRS = ("trusted.overlay.opaque", "user.overlay.opaque")


def overlay_xattr(name: str) -> str:
    """The xattr overlayfs reads for `name`: trusted.overlay.* for root; in a user namespace
    (rootless) trusted.* is the host's to write, so overlays are mounted with `userxattr` and
    read user.overlay.* (kernel >= 5.11)."""
    from kobako.linux.namespaces import in_user_namespace
    return f"{'user' if in_user_namespace() else 'trusted'}.overlay.{name}"
XATTR_PAX = "SCHILY.xattr."
_CACHE_MAX = 128  # parent dir fds kept open during one extract()
_META_TYPES = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE, tarfile.GNUTYPE_LONGNAME,
               tarfile.GNUTYPE_LONGLINK)
_META_MAX = 1 << 20  # bytes of a PAX or long-name header, as Go's archive/tar allows

_DIR_FLAGS = fs.O_PATH | os.O_DIRECTORY
_IN_ROOT = fs.RESOLVE_IN_ROOT | fs.RESOLVE_NO_MAGICLINKS
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_DEVICE_KINDS = {tarfile.CHRTYPE: stat.S_IFCHR, tarfile.BLKTYPE: stat.S_IFBLK, tarfile.FIFOTYPE: stat.S_IFIFO}
_TAR_KINDS = {v: k for k, v in _DEVICE_KINDS.items()}


class LayerError(errors.InvalidArgument):
    """A layer that cannot be read or applied: one line a person can act on."""


# -- decompression ----------------------------------------------------------------------------


GZIP_MAGIC, ZSTD_MAGIC = b"\x1f\x8b", b"\x28\xb5\x2f\xfd"


def _sniff(stream: BinaryIO) -> tuple[bytes, _Prefixed]:
    """The first 4 bytes, and the whole stream again (those put back in front)."""
    head = b""
    while len(head) < 4:  # a pipe or socket may hand out fewer bytes than asked
        more = stream.read(4 - len(head))
        if not more:
            break
        head += more
    return head, _Prefixed(head, stream)


def open_decompressed(stream: BinaryIO) -> BinaryIO:
    """A streaming reader of the tar inside `stream`: gzip, zstd or plain, told by the first bytes.
    Close it when done (the isal reader runs a thread); that does not close `stream`."""
    head, src = _sniff(stream)
    if head[:2] == GZIP_MAGIC:
        try:  # isal (Intel's igzip) inflates several times faster than zlib, in a thread of its own
            from isal import igzip_threaded
            # 4 MiB blocks: the inflater holds the GIL while it works, and every block it
            # hands over waits for the tar-parsing thread to let go of it; fewer, bigger
            # blocks made a 200 MB layer's unpack steadier (1.2-1.3 s vs 1.2-2+ s here)
            return igzip_threaded.open(src, "rb", threads=1, block_size=4 << 20)
        except ImportError:
            return _Decoded.gzip(src)  # type: ignore[return-value]
    if head == ZSTD_MAGIC:
        return _Decoded.zstd(src)  # type: ignore[return-value]
    return src  # type: ignore[return-value]


def decoded_chunks(stream: BinaryIO) -> Iterator[bytes]:
    """The tar inside `stream` (gzip, zstd or plain, told by the first bytes) as a series
    of pieces, decoded on the caller's thread: the pull runs this on a thread of its own,
    where the network read, the blob digest, inflating and hashing all happen in turn."""
    head, src = _sniff(stream)
    if head[:2] == GZIP_MAGIC:
        yield from _Decoded.igzip(src).chunks()  # type: ignore[arg-type]
    elif head == ZSTD_MAGIC:
        yield from _Decoded.zstd(src).chunks()  # type: ignore[arg-type]
    else:
        if head:
            yield head
        while data := stream.read(CHUNK):
            yield data


class _Prefixed(io.RawIOBase):
    """`raw` with the bytes already sniffed off its front put back."""

    def __init__(self, head: bytes, raw: BinaryIO) -> None:
        super().__init__()
        self._head = head
        self._raw = raw

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if not self._head:
            return self._raw.read(size)
        if size is None or size < 0:
            out, self._head = self._head + self._raw.read(), b""
            return out
        out, self._head = self._head[:size], self._head[size:]
        return out

    def readinto(self, b) -> int:  # type: ignore[override]
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)


class _Decoded(io.RawIOBase):
    """Streaming decompression of one or more concatenated gzip members or zstd frames.
    A stream that stops inside one raises EOFError: a cut-off download must not pass for
    a shorter layer (tarfile alone would take a cut at a header boundary for the end)."""

    def __init__(self, raw: BinaryIO, start, in_size: int, bounded: bool, skip_zeros: bool,
                 read_size: int = 1 << 16) -> None:
        super().__init__()
        self._raw = raw
        self._read_size = read_size
        self._start = start  # makes the decoder of one member/frame
        self._in_size = in_size
        self._bounded = bounded  # decoder takes max_length (zlib), else feed in_size at a time
        self._skip_zeros = skip_zeros
        self._in = b""
        self._out = b""
        self._pos = 0
        self._d = None  # None between members

    @classmethod
    def gzip(cls, raw: BinaryIO) -> _Decoded:
        # wbits=31: zlib parses the gzip header and checks CRC and length itself; zero
        # padding after a member is allowed, as gzip(1) allows it.
        return cls(raw, lambda: zlib.decompressobj(31), 1 << 16, True, True)

    @classmethod
    def zstd(cls, raw: BinaryIO) -> _Decoded:
        try:
            import zstandard
        except ImportError:
            raise LayerError("zstd layer needs the zstandard package (pip install zstandard)")
        # zstandard's decompress() has no output limit: small input pieces bound the memory
        # one call can take (an RLE block turns 4 bytes into 128 KiB: 2 KiB in, <= 64 MiB out).
        return cls(raw, zstandard.ZstdDecompressor().decompressobj, 2048, False, False)

    @classmethod
    def igzip(cls, raw: BinaryIO) -> _Decoded:
        """gzip through isal (Intel's igzip: ~2x zlib's speed) when it is installed. Big
        pieces in and out: the caller runs it on a thread of its own, and every call is
        a hand-over of the GIL (1 MiB in, <= 4 MiB out kept a pull's threads from waiting
        on each other)."""
        try:
            from isal import isal_zlib as z
        except ImportError:
            z = zlib  # type: ignore[assignment]
        return cls(raw, lambda: z.decompressobj(31), 1 << 16, True, True, 1 << 20)

    def chunks(self) -> Iterator[bytes]:
        """The decoded stream as the decoder hands it out, without copying."""
        while self._fill():  # leaves the piece in _out, at _pos 0
            out, self._out = self._out, b""
            yield out

    _OUT_MAX = 4 << 20  # zlib output per call: bounds memory against a zip bomb

    def readable(self) -> bool:
        return True

    def _fill(self) -> bool:
        """Decode more into self._out; False at the clean end of the stream."""
        while True:
            if not self._in:
                self._in = self._raw.read(self._read_size)
                if not self._in:
                    if self._d is not None:
                        raise EOFError("compressed layer ended before its end-of-stream marker")
                    return False
            if self._d is None:
                if self._skip_zeros:
                    self._in = self._in.lstrip(b"\0")
                    if not self._in:
                        continue
                self._d = self._start()
            if self._bounded:
                out = self._d.decompress(self._in, self._OUT_MAX)
                rest = self._d.unconsumed_tail
            else:
                out = self._d.decompress(self._in[:self._in_size])
                rest = self._in[self._in_size:]
            if self._d.eof:
                self._in, self._d = self._d.unused_data + rest, None
            else:
                self._in = rest
            if out:
                self._out, self._pos = out, 0
                return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            parts = []
            while chunk := self.read(CHUNK):
                parts.append(chunk)
            return b"".join(parts)
        if self._pos >= len(self._out) and not self._fill():
            return b""
        if self._pos == 0 and size >= len(self._out):
            out, self._out = self._out, b""
            return out
        out = self._out[self._pos:self._pos + size]
        self._pos += len(out)
        return out

    def readinto(self, b) -> int:  # type: ignore[override]
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)


# -- extraction -------------------------------------------------------------------------------


LAYER, COPY_IN, COPY_OUT = "layer", "copy-in", "copy-out"


def extract(stream: BinaryIO, dest: str, mode: str = LAYER, top: str | None = None,
            split: str | None = None, owner: tuple[int, int] | None = None) -> int:
    """Apply one (decompressed) layer tar, read sequentially, into the directory `dest`.
    Returns the bytes of file content written. Bad input raises LayerError only.

    `mode`: LAYER (an image layer: whiteouts, owners, devices as written); COPY_IN
    (`kobako cp` into a container: names like .wh.x are plain files, and a directory is
    never replaced by a non-directory); COPY_OUT (`cp` from a container to the host: as
    COPY_IN, and nothing the container chose may gain privilege on the host: no device
    nodes, no setuid/setgid bits, no xattrs such as file capabilities).

    `owner` (COPY_IN/COPY_OUT): the uid/gid every entry gets, as `docker cp` without -a
    gives files the destination's user; None keeps the owners the tar names (cp -a).

    `split`: also record the tar-split there (see tarsplit), reading the stream to its end;
    no file is left there if the layer cannot be rebuilt from what it unpacked to."""
    x = _Extractor(dest)
    x.mode = mode
    x.top = top  # `cp FILE c:/dir/NEW`: the archive's top entry lands under this name
    x.owner = owner
    src = _Source(stream)
    if split:
        from kobako.storage import tarsplit
        x.split = src.split = tarsplit.Recorder(split)
    try:
        try:
            # mode "r" over a forward-only source, not stream mode "r|": tarfile's _Stream
            # copies every byte through buffers of its own (~30% of parsing a 6,800-entry layer)
            tf = _parse(lambda: tarfile.TarFile(fileobj=src, mode="r", tarinfo=_Header,
                                                encoding="utf-8", errors="surrogateescape"))
        except _EmptyLayer:
            return 0
        while (m := _parse(tf.next)) is not None:
            tf.members.clear()  # tarfile keeps every header; we need none of them later
            x.apply(tf, m)
        x.finish()
        if x.split:
            _parse(lambda: src.seek(1 << 62))  # the rest (end blocks, padding) belongs to the tar too
            _parse(x.split.flush)
        return x.written
    finally:
        x.close()
        if x.split:
            x.split.close()


def _parse(step):
    """Run a tarfile header-parsing step: whatever it raises on hostile bytes (ReadError,
    or ValueError from a bad GNU.sparse number...) is a corrupt layer."""
    try:
        return step()
    except (LayerError, _EmptyLayer):
        raise
    except OSError as e:  # ours, not the layer's: writing the tar-split (the source's are LayerError)
        if e.errno == errno.ENOSPC:
            raise
        raise LayerError(f"cannot record the layer: {e.strerror or e}")
    except Exception as e:
        raise LayerError(f"layer is truncated or corrupt: {e or type(e).__name__}")


class _EmptyLayer(Exception):
    """A zero-byte stream: an empty layer, as Go's archive/tar reads it."""


_FIELDS = struct.Struct("100s8s8s8s12s12s8sc100s8x32s32s8s8s155s")
_ZEROS = bytes(tarfile.BLOCKSIZE)
_DEVICES = (tarfile.CHRTYPE, tarfile.BLKTYPE)


def _num(field: bytes) -> int:
    """tarfile.nti, without its detours for the common case (octal digits)."""
    if field[:1] in (b"\x80", b"\xff"):
        return tarfile.nti(field)  # base-256 (GNU, for big sizes, ids and negative times)
    field = field.split(b"\0", 1)[0].strip()
    try:
        return int(field, 8) if field else 0
    except ValueError:
        raise tarfile.InvalidHeaderError("invalid header") from None


def _str(field: bytes, encoding: str, errors: str) -> str:
    return field.split(b"\0", 1)[0].decode(encoding, errors)


class _Header(tarfile.TarInfo):
    """tarfile ends an archive quietly at a cut-off or garbage header after the first;
    for a layer that is corruption, so say so. A clean end (zero block, or the stream
    ending exactly at a header boundary, which Go's archive/tar also accepts) stays one.

    `frombuf` is tarfile's, field for field, with one struct unpack and fast number and
    checksum parsing: tarfile's own took half of the time spent parsing a layer."""

    @classmethod
    def frombuf(cls, buf: bytes, encoding: str, errors: str) -> tarfile.TarInfo:
        if len(buf) != tarfile.BLOCKSIZE or buf[156:157] == tarfile.GNUTYPE_SPARSE:
            return super().frombuf(buf, encoding, errors)  # its errors; old GNU sparse maps
        if buf == _ZEROS:
            raise tarfile.EOFHeaderError("end of file header")
        (name, mode, uid, gid, size, mtime, chksum, type_, linkname, uname, gname,
         devmajor, devminor, prefix) = _FIELDS.unpack_from(buf)
        obj = cls()
        obj.chksum = _num(chksum)
        # unsigned sum with the checksum field as spaces; tarfile also takes a signed one
        if obj.chksum != 256 + sum(buf) - sum(chksum) and obj.chksum not in tarfile.calc_chksums(buf):
            raise tarfile.InvalidHeaderError("bad checksum")
        obj.name = _str(name, encoding, errors)
        obj.mode = _num(mode)
        obj.uid = _num(uid)
        obj.gid = _num(gid)
        obj.size = _num(size)
        obj.mtime = _num(mtime)
        obj.type = type_
        obj.linkname = _str(linkname, encoding, errors)
        obj.uname = _str(uname, encoding, errors)
        obj.gname = _str(gname, encoding, errors)
        if type_ in _DEVICES:  # as Go's archive/tar, only where they mean something
            obj.devmajor = _num(devmajor)
            obj.devminor = _num(devminor)
        if type_ == tarfile.AREGTYPE and obj.name.endswith("/"):
            obj.type = tarfile.DIRTYPE  # old V7 tar: a directory as a file with a trailing slash
        if obj.type == tarfile.DIRTYPE:
            obj.name = obj.name.rstrip("/")
        if prefix[:1] not in (b"", b"\0") and obj.type not in tarfile.GNU_TYPES:
            obj.name = _str(prefix, encoding, errors) + "/" + obj.name  # a ustar long name
        return obj

    @classmethod
    def fromtarfile(cls, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        try:
            buf = tarfile_.fileobj.read(tarfile.BLOCKSIZE)  # as TarInfo.fromtarfile, plus checks
            obj = cls.frombuf(buf, tarfile_.encoding, tarfile_.errors)
        except tarfile.EmptyHeaderError:
            if tarfile_.fileobj.tell() == 0:
                raise _EmptyLayer()
            raise
        except tarfile.TruncatedHeaderError:
            raise tarfile.ReadError("the stream ends inside a header")
        except tarfile.InvalidHeaderError as e:
            raise tarfile.ReadError(f"bad header at byte {tarfile_.offset}: {e}")
        if obj.type in _META_TYPES and obj.size > _META_MAX:  # tarfile would read it all into memory
            raise tarfile.ReadError(f"a {obj.size}-byte extended header at byte {tarfile_.offset}")
        obj.offset = tarfile_.fileobj.tell() - tarfile.BLOCKSIZE
        return obj._proc_member(tarfile_)


if TYPE_CHECKING:
    from kobako.storage.tarsplit import Recorder


class _Source:
    """The input stream for tarfile, read in big pieces (tarfile asks for 10 KiB at a time),
    its failures (network, gzip, zstd errors of any class) made LayerError. Seekable
    forward only, which is all tarfile's mode "r" needs to skip to the next header."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.buf = b""
        self.pos = 0
        self.base = 0  # stream offset of buf[0]
        self.split: Recorder | None = None  # gets every byte that is not file content
        self.kept = 0  # stream offset up to which bytes went to split (or were content)
        self.content = False  # reading a file's content (read1 from _copy)

    def _keep(self, upto: int) -> None:
        """Bytes of buf before stream offset `upto` not yet recorded: to the tar-split
        (or skipped, inside a file's content)."""
        if upto > self.kept:
            if not self.content:
                self.split.raw(self.buf[self.kept - self.base:upto - self.base])  # type: ignore[union-attr]
            self.kept = upto

    def begin_content(self) -> None:
        if self.split:
            self._keep(self.base + self.pos)
            self.content = True

    def end_content(self, path: str, size: int) -> None:
        if self.split:
            self._keep(self.base + self.pos)
            self.content = False
            self.split.file(path, size)

    def read(self, size: int = -1) -> bytes:
        """`size` bytes (all that is left for -1), fewer only at the end of the stream:
        tarfile's mode "r" takes a short read for a truncated archive."""
        out = self.read1(size)
        if not out or 0 <= size <= len(out):
            return out
        parts, have = [out], len(out)
        while (size < 0 or have < size) and (more := self.read1(size - have if size >= 0 else -1)):
            parts.append(more)
            have += len(more)
        return b"".join(parts)

    def read1(self, size: int) -> bytes:
        """What is buffered (one read of the source when nothing is): no copying to join pieces."""
        if self.pos >= len(self.buf):
            if self.split:
                self._keep(self.base + len(self.buf))
            self.base += len(self.buf)
            try:
                self.buf, self.pos = self.raw.read(CHUNK), 0
            except LayerError:
                raise
            except Exception as e:
                raise LayerError(f"layer is truncated or corrupt: {e or type(e).__name__}")
            if not self.buf:
                return b""
        if self.pos == 0 and (size < 0 or size >= len(self.buf)):
            out = self.buf
            self.pos = len(out)
            return out
        out = self.buf[self.pos:self.pos + size] if size >= 0 else self.buf[self.pos:]
        self.pos += len(out)
        return out

    def tell(self) -> int:
        return self.base + self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence != 0 or offset < self.tell():
            raise LayerError("layer is corrupt: a member reaches back into the one before it")
        while offset > self.base + len(self.buf):
            self.pos = len(self.buf)
            if not self.read1(CHUNK):
                return self.tell()  # the end: the caller's next read finds nothing
        self.pos = offset - self.base
        return offset


def _umask() -> int:
    """The process's umask, read without setting it (os.umask would, for every thread)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o777  # unknown: then every mode is set explicitly


def _clean(name: str) -> str:
    """A member name as a path relative to the layer root: no '', '.', or leading '/';
    '..' is resolved lexically and stops at the root, as RESOLVE_IN_ROOT does."""
    parts: list[str] = []
    for p in name.split("/"):
        if p == "..":
            if parts:
                parts.pop()
        elif p and p != ".":
            parts.append(p)
    return "/".join(parts)


def _ns(mtime: float) -> int:
    return mtime * 1_000_000_000 if isinstance(mtime, int) else int(mtime * 1e9)


class _Extractor:
    def __init__(self, dest: str) -> None:
        try:
            self.rootfd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise LayerError(f"cannot open layer directory {dest}: {e.strerror}")
        self.dest = dest
        self.root = os.geteuid() == 0
        self.written = 0
        # Parent dir fds by path. Only paths reached without any symlink are kept, so a
        # cached path changes meaning only when it (or a parent) is removed: _remove() drops it.
        self.cache: OrderedDict[str, int] = OrderedDict()
        self.temp: list[int] = []  # fds for one member (reached through a symlink): closed after it
        self.mtimes: dict[str, int] = {}  # dirs: set at the end, creating children changes them
        # What a new entry gets without fchown/fchmod (most of a layer: root-owned 0644/0755):
        # our ids, unless made in a setgid directory; its mode as created, less the umask.
        self.ids = (os.geteuid(), os.getegid())
        self.umask = _umask()
        self.setgid = {""} if os.fstat(self.rootfd).st_mode & stat.S_ISGID else set()
        self.split: Recorder | None = None
        self.owner: tuple[int, int] | None = None  # COPY_IN/COPY_OUT: every entry's uid/gid

    def close(self) -> None:
        for fd in [*self.cache.values(), *self.temp, self.rootfd]:
            os.close(fd)
        self.cache.clear()
        self.temp.clear()

    # -- parent directories --
    def _dir(self, path: str, create: bool = True) -> int:
        """fd of directory `path` inside the root; missing ones are made (0755, as Docker does)."""
        if not path:
            return self.rootfd
        fd = self.cache.get(path)
        if fd is not None:
            self.cache.move_to_end(path)
            return fd
        try:
            return self._lookup(path)
        except FileNotFoundError:
            if not create:
                raise
        # Find the deepest ancestor there is, then make the rest top down: a loop, not
        # recursion, and one fd at a time, however deep the name.
        parts = path.split("/")
        have = len(parts) - 1
        while have:
            try:
                top = self._lookup("/".join(parts[:have]))
                break
            except FileNotFoundError:
                have -= 1
        else:
            top = self.rootfd
        stable = top == self.rootfd or "/".join(parts[:have]) in self.cache
        fd = top
        for name in parts[have:]:
            try:
                os.mkdir(name, 0o755, dir_fd=fd)
            except FileExistsError:
                pass  # a dangling symlink, say: the open below refuses it
            new = os.open(name, _DIR_FLAGS | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            if fd != top:
                os.close(fd)
            fd = new
        if stable:
            self.cache[path] = fd
        else:
            self.temp.append(fd)
        return fd

    def _lookup(self, path: str) -> int:
        try:
            fd = fs.openat2(self.rootfd, path, _DIR_FLAGS, _IN_ROOT | fs.RESOLVE_NO_SYMLINKS)
            self.cache[path] = fd
        except OSError as e:
            if e.errno != errno.ELOOP:
                raise
            # A symlink on the way: follow it, but inside the root; not cached, as its
            # target may be replaced by a later member without the cache seeing it.
            fd = fs.openat2(self.rootfd, path, _DIR_FLAGS, _IN_ROOT)
            self.temp.append(fd)
        return fd

    def _forget(self, path: str) -> None:
        sub = path + "/"
        for k in [k for k in self.cache if k == path or k.startswith(sub)]:
            os.close(self.cache.pop(k))

    def _remove(self, pfd: int, name: str, path: str) -> None:
        """Remove whatever is at name (a directory with all it holds), never following a symlink."""
        try:
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if self.split:  # files recorded before may be gone: the tar cannot be rebuilt
            self.split.taint(f"{path!r} replaced")
        if stat.S_ISDIR(st.st_mode):
            self._forget(path)
            shutil.rmtree(name, dir_fd=pfd)
        else:
            os.unlink(name, dir_fd=pfd)
        self.mtimes.pop(path, None)

    def _owned_as_made(self, m: tarfile.TarInfo, parent: str) -> bool:
        """A new entry in `parent` is already m.uid:m.gid: only in a fresh layer directory
        (copies go into directories we did not make), under a parent reached without a
        symlink (cached) that this extraction did not make setgid."""
        return (self.mode == LAYER and (m.uid, m.gid) == self.ids and parent not in self.setgid
                and (not parent or parent in self.cache))

    # -- members --
    mode = LAYER
    top: str | None = None

    def _retop(self, name: str) -> str:
        parts = _clean(name).split("/")
        if parts and parts[0]:
            parts[0] = self.top  # type: ignore[assignment]
        return "/".join(parts)

    def _as_copy(self, m: tarfile.TarInfo, path: str, parent: str, name: str) -> bool:
        """COPY_IN/COPY_OUT: adjust or refuse the member; False: skip it."""
        if self.owner is not None:
            m.uid, m.gid = self.owner
        if self.mode == COPY_OUT:
            if m.type in _DEVICE_KINDS:
                return False
            m.mode &= ~0o7000
            m.pax_headers = {k: v for k, v in m.pax_headers.items() if not k.startswith(XATTR_PAX)}
        if not m.isdir() and name:
            try:
                st = os.stat(name, dir_fd=self._dir(parent), follow_symlinks=False)
            except (FileNotFoundError, NotADirectoryError):
                return True
            import stat as st_mod
            if st_mod.S_ISDIR(st.st_mode):
                raise LayerError(f"cannot overwrite directory {path!r} with a non-directory")
        return True

    def apply(self, tf: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        while len(self.cache) > _CACHE_MAX:  # trim here, never while a member holds fds
            os.close(self.cache.popitem(last=False)[1])
        if self.top:
            m.name = self._retop(m.name)
            if m.islnk():
                m.linkname = self._retop(m.linkname)
        path = _clean(m.name)
        parent, _, name = path.rpartition("/")
        try:
            if self.mode != LAYER and not self._as_copy(m, path, parent, name):
                return
            if name.startswith(WHITEOUT) and self.mode == LAYER:
                self._whiteout(parent, name)
            elif m.isdir():
                self._mkdir(m, path, parent, name)
            elif not name:
                return  # the root as a non-directory: nothing to make
            elif m.isreg():
                self._file(tf, m, path, self._dir(parent), name)
            elif m.issym():
                self._symlink(m, path, self._dir(parent), name)
            elif m.islnk():
                self._hardlink(m, path, self._dir(parent), name)
            elif m.type in _DEVICE_KINDS:
                self._node(m, path, self._dir(parent), name)
            # other types (GNU volume headers, unknown vendor types): skipped, as Docker does
        except (OSError, ValueError, OverflowError) as e:
            what = f"{e.strerror}" if isinstance(e, OSError) and e.strerror else str(e)
            raise LayerError(f"cannot extract {m.name!r} into {self.dest}: {what}")
        finally:
            while self.temp:
                os.close(self.temp.pop())

    def _whiteout(self, parent: str, name: str) -> None:
        pfd = self._dir(parent)
        if name == OPAQUE:  # hide the lower layers' DIR: overlayfs reads this xattr
            os.setxattr(fs.proc_fd(pfd), overlay_xattr("opaque"), b"y")
            return
        gone = name[len(WHITEOUT):]
        if gone in ("", ".", "..") or gone.startswith(WHITEOUT):
            return  # nothing to delete, or aufs metadata (.wh..wh.plnk...)
        path = f"{parent}/{gone}" if parent else gone
        self._make(pfd, gone, path, lambda: os.mknod(gone, stat.S_IFCHR, 0, dir_fd=pfd))

    def _make(self, pfd: int, name: str, path: str, make) -> None:
        """make() the entry; if something is already there, remove it first (never write through it)."""
        try:
            make()
        except FileExistsError:
            self._remove(pfd, name, path)
            make()

    def _mkdir(self, m: tarfile.TarInfo, path: str, parent: str, name: str) -> None:
        if not name:  # './' in the tar: the root's own metadata
            fd = self.rootfd
        else:
            pfd = self._dir(parent)
            cacheable = not parent or parent in self.cache
            try:
                os.mkdir(name, 0o700, dir_fd=pfd)
            except FileExistsError:
                pass  # a directory stays (new metadata below); anything else is replaced
            try:
                fd = os.open(name, _OPEN_DIR, dir_fd=pfd)
            except OSError as e:
                if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                self._remove(pfd, name, path)
                os.mkdir(name, 0o700, dir_fd=pfd)
                fd = os.open(name, _OPEN_DIR, dir_fd=pfd)
            if cacheable:
                old = self.cache.pop(path, None)
                if old is not None:
                    os.close(old)
                self.cache[path] = fd
            else:
                self.temp.append(fd)
        os.fchown(fd, m.uid, m.gid)
        os.fchmod(fd, m.mode & 0o7777)  # after chown: chown clears setgid
        if m.mode & stat.S_ISGID:
            self.setgid.add(path)
        else:
            self.setgid.discard(path)
        self._xattrs(fd, m)
        self.mtimes[path] = _ns(m.mtime)

    def _file(self, tf: tarfile.TarFile, m: tarfile.TarInfo, path: str, pfd: int, name: str) -> None:
        fd = -1
        made = m.mode & 0o755 & ~self.umask  # no group/other write and no setuid until the end

        def make() -> None:
            nonlocal fd
            fd = os.open(name, _FILE_FLAGS, made, dir_fd=pfd)  # O_EXCL: never an existing file/link

        self._make(pfd, name, path, make)
        try:
            src = tf.fileobj  # positioned at this member's data (stream mode)
            if m.sparse is not None:
                if self.split:
                    self.split.taint(f"{path!r} is sparse")
                # GNU sparse: the data blocks are stored one after another; seek over the holes.
                stored = tf.offset - m.offset_data
                if sum(n for _, n in m.sparse) > stored or any(o + n > m.size for o, n in m.sparse):
                    raise LayerError(f"layer is corrupt: bad sparse map for {m.name!r}")
                for offset, n in m.sparse:
                    os.lseek(fd, offset, os.SEEK_SET)
                    self._copy(src, fd, n, m)
                os.ftruncate(fd, m.size)
            elif m.size:
                src.begin_content()
                self._copy(src, fd, m.size, m)
                src.end_content(path, m.size)
            if not self._owned_as_made(m, path.rpartition("/")[0]):
                os.fchown(fd, m.uid, m.gid)
            if m.mode & 0o7777 != made:
                os.fchmod(fd, m.mode & 0o7777)  # after chown, which clears setuid/setgid
            self._xattrs(fd, m)  # after chown, which clears security.capability
            t = _ns(m.mtime)
            os.utime(fd, ns=(t, t))
        finally:
            os.close(fd)

    def _copy(self, src, fd: int, size: int, m: tarfile.TarInfo) -> None:
        while size:
            buf = src.read1(min(size, CHUNK))  # src: the _Source under tarfile
            if not buf:
                raise LayerError(f"layer is truncated or corrupt: the data of {m.name!r} ends early")
            size -= len(buf)
            self.written += len(buf)
            view = memoryview(buf)
            while view:
                view = view[os.write(fd, view):]

    def _symlink(self, m: tarfile.TarInfo, path: str, pfd: int, name: str) -> None:
        # The target is stored as is: it is resolved later, inside the container's root
        # (or inside this root by _dir), never on the host.
        self._make(pfd, name, path, lambda: os.symlink(m.linkname, name, dir_fd=pfd))
        if not self._owned_as_made(m, path.rpartition("/")[0]):
            os.chown(name, m.uid, m.gid, dir_fd=pfd, follow_symlinks=False)
        t = _ns(m.mtime)
        os.utime(name, ns=(t, t), dir_fd=pfd, follow_symlinks=False)

    def _hardlink(self, m: tarfile.TarInfo, path: str, pfd: int, name: str) -> None:
        target = _clean(m.linkname)
        if target == path:
            return  # a link to itself: the entry is already there
        if not target:
            raise LayerError(f"layer is corrupt: hardlink {m.name!r} points at the layer root")
        self._remove(pfd, name, path)  # first: it may hold the cached parent of the target
        tparent, _, tname = target.rpartition("/")
        try:
            tpfd = self._dir(tparent, create=False)
            # linkat without AT_SYMLINK_FOLLOW: a symlink target is linked, not followed.
            os.link(tname, name, src_dir_fd=tpfd, dst_dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            raise LayerError(f"layer is corrupt: hardlink {m.name!r} points at {m.linkname!r}, "
                             "which is not in the layer before it")

    def _node(self, m: tarfile.TarInfo, path: str, pfd: int, name: str) -> None:
        mode = _DEVICE_KINDS[m.type] | (m.mode & 0o7777)
        dev = os.makedev(m.devmajor, m.devminor) if m.type != tarfile.FIFOTYPE else 0
        try:
            self._make(pfd, name, path, lambda: os.mknod(name, mode, dev, dir_fd=pfd))
        except PermissionError:
            if self.root or m.type == tarfile.FIFOTYPE:
                raise
            return  # not root: no device nodes (as rootless Docker/Podman)
        os.chown(name, m.uid, m.gid, dir_fd=pfd, follow_symlinks=False)
        os.chmod(name, m.mode & 0o7777, dir_fd=pfd, follow_symlinks=False)
        self._xattrs(f"{fs.proc_fd(pfd)}/{name}", m)
        t = _ns(m.mtime)
        os.utime(name, ns=(t, t), dir_fd=pfd, follow_symlinks=False)

    def _xattrs(self, target: int | str, m: tarfile.TarInfo) -> None:
        """PAX SCHILY.xattr.* onto the entry. trusted.* and user.overlay.* are never taken
        from a layer: overlayfs acts on them (opaque, redirect, metacopy)."""
        if not m.pax_headers:
            return
        for key, value in m.pax_headers.items():
            if not key.startswith(XATTR_PAX) or key.startswith(("trusted.", "user.overlay."), len(XATTR_PAX)):
                continue
            try:
                os.setxattr(target, key[len(XATTR_PAX):], value.encode("utf-8", "surrogateescape"),
                            follow_symlinks=False if isinstance(target, str) else True)
            except OSError as e:
                if e.errno == errno.EOPNOTSUPP or (e.errno == errno.EPERM and (
                        not self.root or key.startswith("user.", len(XATTR_PAX)))):
                    continue  # no xattrs here, a namespace we may not write, user.* on a device
                raise

    def finish(self) -> None:
        for path, t in self.mtimes.items():
            try:
                if not path:
                    os.utime(self.rootfd, ns=(t, t))
                else:
                    parent, _, name = path.rpartition("/")
                    os.utime(name, ns=(t, t), dir_fd=self._dir(parent, create=False),
                             follow_symlinks=False)
            except OSError:
                pass  # removed again by a later member
            finally:
                while self.temp:
                    os.close(self.temp.pop())


# -- writing a layer --------------------------------------------------------------------------


def write_diff(upper: str, out: BinaryIO) -> None:
    """`upper` (an overlay upperdir) as an uncompressed layer tar: overlay whiteouts
    become `.wh.NAME`, opaque directories get `DIR/.wh..wh..opq`."""
    _TreeWriter(out, overlay=True).run(upper)


def write_tree(root: str, out: BinaryIO) -> None:
    """A plain directory as an uncompressed layer tar; other mounts below it are left out
    (their mountpoint directory stays)."""
    _TreeWriter(out, overlay=False).run(root)


def _listdir(dfd: int) -> list[str]:
    return sorted(os.listdir(dfd), key=os.fsencode)  # byte order, as Go's filepath.Walk


def _keep_xattr(name: str) -> bool:
    # trusted.*/user.overlay.*: overlayfs's own bookkeeping; security.selinux: a host label
    return not (name.startswith(("trusted.", "user.overlay.")) or name == "security.selinux")


class _TreeWriter:
    """Walks the tree by fds (O_NOFOLLOW at every step, so a running container that swaps
    a directory for a symlink cannot make us archive a host file), in sorted order, writing
    PAX headers with whole-second mtimes, as Docker's layers have."""

    def __init__(self, out: BinaryIO, overlay: bool) -> None:
        self.out = out
        self.overlay = overlay
        self.links: dict[tuple[int, int], str] = {}  # (dev, ino) -> first name, for hardlinks
        self.dev = 0

    def run(self, root: str) -> None:
        try:
            rootfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise LayerError(f"cannot read {root}: {e.strerror}")
        self.dev = os.fstat(rootfd).st_dev
        # Depth first with a stack of (dir fd, its name + '/', its entries left): no recursion,
        # a deep tree costs one fd per level.
        stack = [(rootfd, "", iter(_listdir(rootfd)))]
        try:
            while stack:
                dfd, prefix, names = stack[-1]
                name = next(names, None)
                if name is None:
                    os.close(stack.pop()[0])
                    continue
                child = self._entry(dfd, name, prefix + name)
                if child is not None:
                    stack.append((child, f"{prefix}{name}/", iter(_listdir(child))))
            self.out.write(b"\0" * (2 * tarfile.BLOCKSIZE))  # end-of-archive marker
        except OSError as e:
            where = f" ({e.filename})" if e.filename else ""
            raise LayerError(f"cannot archive {root}: {e.strerror or e}{where}")
        finally:
            for fd, _, _ in stack:
                os.close(fd)

    def _entry(self, dfd: int, name: str, path: str) -> int | None:
        """Write the header (and content) of one entry; a directory's fd comes back to walk."""
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            return None  # gone since listdir
        kind = stat.S_IFMT(st.st_mode)
        if kind == stat.S_IFDIR:
            fd = os.open(name, _OPEN_DIR, dir_fd=dfd)
            try:
                st = os.fstat(fd)
                xattrs = self._xattrs(fd)
                self._add(self._info(path, st, tarfile.DIRTYPE, xattrs))
                if self.overlay and any(xattrs.get(k) == b"y" for k in OPAQUE_XATTRS):
                    self._add(self._info(f"{path}/{OPAQUE}", st, tarfile.REGTYPE, {}, mode=0))
            except BaseException:
                os.close(fd)
                raise
            if st.st_dev == self.dev:
                return fd
            os.close(fd)  # another mount: keep the mountpoint, not its contents
            return None
        if self.overlay and kind == stat.S_IFCHR and st.st_rdev == 0:  # overlay whiteout
            parent, _, base = path.rpartition("/")
            wh = f"{parent}/{WHITEOUT}{base}" if parent else WHITEOUT + base
            self._add(self._info(wh, st, tarfile.REGTYPE, {}, mode=0))
            return None
        if kind == stat.S_IFSOCK:
            return None  # sockets are not in layers
        if st.st_nlink > 1:
            first = self.links.setdefault((st.st_dev, st.st_ino), path)
            if first != path:
                info = self._info(path, st, tarfile.LNKTYPE, {})
                info.linkname = first
                self._add(info)
                return None
        if kind == stat.S_IFREG:
            self._regular(dfd, name, path)
        elif kind == stat.S_IFLNK:
            info = self._info(path, st, tarfile.SYMTYPE, {})
            info.linkname = os.readlink(name, dir_fd=dfd)
            self._add(info)
        else:  # char, block, fifo
            xattrs = self._xattrs(f"{fs.proc_fd(dfd)}/{name}")
            info = self._info(path, st, _TAR_KINDS[kind], xattrs)
            if kind != stat.S_IFIFO:
                info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
            self._add(info)
        return None

    def _regular(self, dfd: int, name: str, path: str) -> None:
        # O_NONBLOCK: should a fifo have been swapped in since the stat, do not hang on it
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise LayerError(f"{path} changed while being archived")
            info = self._info(path, st, tarfile.REGTYPE, self._xattrs(fd))
            info.size = st.st_size
            self._add(info)
            left = st.st_size
            while left:
                buf = os.read(fd, min(left, CHUNK))
                if not buf:
                    raise LayerError(f"{path} shrank while being archived")
                self.out.write(buf)
                left -= len(buf)
            if st.st_size % tarfile.BLOCKSIZE:
                self.out.write(b"\0" * (tarfile.BLOCKSIZE - st.st_size % tarfile.BLOCKSIZE))
        finally:
            os.close(fd)

    def _xattrs(self, target: int | str) -> dict[str, bytes]:
        follow = isinstance(target, int)  # a path names the entry itself (a device or fifo)
        try:
            names = os.listxattr(target, follow_symlinks=follow)
            return {n: os.getxattr(target, n, follow_symlinks=follow) for n in names}
        except OSError as e:
            if e.errno in (errno.EOPNOTSUPP, errno.ENODATA):
                return {}
            raise

    def _info(self, path: str, st: os.stat_result, kind: bytes, xattrs: dict[str, bytes],
              mode: int | None = None) -> tarfile.TarInfo:
        info = tarfile.TarInfo(path)
        info.type = kind
        info.mode = stat.S_IMODE(st.st_mode) if mode is None else mode
        info.uid, info.gid = st.st_uid, st.st_gid
        info.uname = info.gname = ""
        info.mtime = int(st.st_mtime)
        for k, v in xattrs.items():
            if _keep_xattr(k):
                info.pax_headers[XATTR_PAX + k] = v.decode("utf-8", "surrogateescape")
        return info

    def _add(self, info: tarfile.TarInfo) -> None:
        self.out.write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
