"""A build context and the files COPY/ADD take from it: `.dockerignore` with Docker's
semantics, sources found (wildcards, symlinks followed inside the context only), their
content digest for the build cache, and the copy itself into an image's root.

The context is hostile input (a tar from an API client, or a directory with symlinks
pointing anywhere): every source is resolved with openat2(RESOLVE_IN_ROOT) from an fd of
the context root, and every file is read through fds opened O_NOFOLLOW, so nothing outside
the context is ever read. The destination side resolves inside the image's root the same
way, so a symlink in the image cannot send a copy onto the host.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import posixpath
import re
import stat
import time
from collections.abc import Iterator

from kobako.errors import InvalidArgument, NotFound
from kobako.linux import fs


class ContextError(InvalidArgument):
    pass


class SourceNotFound(NotFound):
    pass


# -- .dockerignore (moby's patternmatcher) ---------------------------------------------------------

def _glob_regex(pattern: str, doublestar: bool) -> str:
    """A Go filepath.Match pattern (and `**` for .dockerignore) as a regular expression."""
    out = ""
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "*":
            if doublestar and i + 1 < n and pattern[i + 1] == "*":
                i += 2
                if i < n and pattern[i] == "/":
                    i += 1
                out += ".*" if i >= n else "(.*/)?"
                continue
            out += "[^/]*"
        elif ch == "?":
            out += "[^/]"
        elif ch == "\\":
            if i + 1 < n:
                out += re.escape(pattern[i + 1])
                i += 1
            else:
                out += "\\\\"
        elif ch == "[":
            end = pattern.find("]", i + 2 if i + 1 < n and pattern[i + 1] in "^!" else i + 1)
            if end < 0:
                raise ContextError(f"syntax error in pattern {pattern!r}: unclosed [")
            body = pattern[i + 1:end]
            if body[:1] == "!":
                body = "^" + body[1:]
            out += "[" + body.replace("\\", "\\\\") + "]"
            i = end
        else:
            out += re.escape(ch)
        i += 1
    return "^" + out + "$"


class Ignore:
    """The patterns of a .dockerignore: a path is excluded when the last pattern that matches
    it (or one of its parent directories) is not a `!` exception."""

    def __init__(self, lines: list[str]) -> None:
        self.patterns: list[tuple[re.Pattern, bool, int]] = []
        for i, raw in enumerate(lines):
            if i == 0:
                raw = raw.lstrip("\ufeff")
            if raw.startswith("#"):
                continue
            p = raw.strip()
            if not p:
                continue
            neg = p.startswith("!")
            if neg:
                p = p[1:].strip()
            if not p:
                continue
            p = posixpath.normpath(p)
            if len(p) > 1 and p.startswith("/"):
                p = p.lstrip("/")
            if p == ".":
                continue
            self.patterns.append((re.compile(_glob_regex(p, True), re.S), neg, len(p.split("/"))))
        self.exceptions = any(neg for _, neg, _ in self.patterns)

    @classmethod
    def read(cls, text: str) -> Ignore:
        return cls(text.splitlines())

    def excluded(self, rel: str) -> bool:
        if not self.patterns:
            return False
        matched = False
        parent = posixpath.dirname(rel)
        parent_dirs = parent.split("/") if parent else []
        for rx, neg, ndirs in self.patterns:
            hit = bool(rx.match(rel))
            if not hit and parent_dirs and ndirs <= len(parent_dirs):
                hit = bool(rx.match("/".join(parent_dirs[:ndirs])))
            if hit:
                matched = not neg
        return matched


# -- trees of files: the context, or another stage's root --------------------------------------------

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_WILD = re.compile(r"[*?\[]")


class Source:
    """One resolved source: `rel` (its path in the tree, symlinks resolved), `st` its lstat
    (of what `rel` names), and `name` (its base name, for a file copied into a directory)."""

    __slots__ = ("rel", "st", "name")

    def __init__(self, rel: str, st: os.stat_result, name: str) -> None:
        self.rel, self.st, self.name = rel, st, name

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.st.st_mode)


class Tree:
    """Files under a directory, read through fds only. `ignore`: the context's .dockerignore;
    `what`: how errors name it."""

    def __init__(self, path: str | None, ignore: Ignore | None = None, what: str = "build context") -> None:
        self.path = path
        self.ignore = ignore or Ignore([])
        self.what = what
        self.fd = -1
        self.digests: DigestCache | None = None
        if path is not None:
            try:
                self.fd = os.open(path, _DIR)
            except OSError as e:
                raise ContextError(f"cannot read the {what} {path}: {e.strerror}") from None
            self.real = os.path.realpath(fs.proc_fd(self.fd))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def excluded(self, rel: str) -> bool:
        return bool(rel) and self.ignore.excluded(rel)

    # -- finding sources --
    def sources(self, src: str) -> list[Source]:
        """What a COPY/ADD source names: one path (symlinks followed inside the tree), or
        every path a wildcard pattern matches."""
        clean = posixpath.normpath("/" + src).lstrip("/")
        if _WILD.search(clean):
            rx = re.compile(_glob_regex(clean, False), re.S)
            found = [s for s in self._walk_all() if rx.match(s.rel)]
            if not found:
                raise SourceNotFound(f"no source files were specified: {src!r} matches nothing in the "
                                     f"{self.what}")
            return found
        return [self.lookup(clean, src)]

    def lookup(self, rel: str, shown: str | None = None) -> Source:
        shown = shown if shown is not None else rel
        why = " or excluded by .dockerignore" if self.what == "build context" else ""
        missing = SourceNotFound(f"file not found in {self.what}{why}: stat {shown}: file does not exist")
        if self.fd < 0:
            raise missing
        try:
            fd = fs.open_in_root(self.fd, rel)
        except (FileNotFoundError, NotADirectoryError):
            raise missing from None
        except OSError as e:
            raise ContextError(f"cannot read {shown} in the {self.what}: {e.strerror}") from None
        try:
            real = os.readlink(fs.proc_fd(fd))
            st = os.fstat(fd)
        finally:
            os.close(fd)
        if real != self.real and not real.startswith(self.real.rstrip("/") + "/"):
            raise missing  # the tree itself moved meanwhile
        resolved = real[len(self.real):].strip("/")
        if self.excluded(resolved):
            raise missing
        return Source(resolved, st, posixpath.basename(rel) or posixpath.basename(resolved))

    def _walk_all(self) -> Iterator[Source]:
        """Every path in the tree, parents before children; a matched directory is not
        walked into (its contents come with it)."""
        if self.fd < 0:
            return
        for rel, st, _, _ in self.entries(""):
            yield Source(rel, st, posixpath.basename(rel))

    def open_dir(self, rel: str) -> int:
        return fs.open_in_root(self.fd, rel or ".", _DIR) if rel else os.dup(self.fd)

    def entries(self, rel: str) -> Iterator[tuple[str, os.stat_result, int, str]]:
        """(path in the tree, lstat, fd of its directory, its name) for everything under the
        directory `rel`, sorted, excluded paths left out (a directory is still walked when a
        `!` exception may match inside it). The fds are valid until the next item."""
        top = self.open_dir(rel)
        stack = [(top, rel)]
        try:
            while stack:
                dfd, drel = stack.pop()
                try:
                    names = sorted(os.listdir(dfd))
                    subdirs = []
                    for name in names:
                        path = f"{drel}/{name}" if drel else name
                        try:
                            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                        except FileNotFoundError:
                            continue
                        isdir = stat.S_ISDIR(st.st_mode)
                        if self.excluded(path):
                            if isdir and self.ignore.exceptions:
                                subdirs.append((name, path, False))
                            continue
                        yield path, st, dfd, name
                        if isdir:
                            subdirs.append((name, path, True))
                    for name, path, _ in reversed(subdirs):
                        try:
                            stack.append((os.open(name, _DIR | os.O_NOFOLLOW, dir_fd=dfd), path))
                        except OSError:
                            continue
                finally:
                    os.close(dfd)
        finally:
            for fd, _ in stack:
                os.close(fd)

    # -- the cache key of what a COPY takes --
    def remember_digests(self, directory: str) -> None:
        """Keep the content digests of this tree's files in `directory` between builds (a
        DigestCache file per tree, named after its real path)."""
        name = hashlib.sha256(self.real.encode()).hexdigest()[:32] + ".json"
        self.digests = DigestCache(os.path.join(directory, name), self.real)

    def digest(self, sources: list[Source]) -> str:
        """A digest of the names, kinds, modes, sizes, link targets and contents of the sources
        (not owners or times: a COPY sets the owner, and a touched file is the same file, as
        Docker's tarsum treats it). A regular file's content counts by its own sha256, which
        the tree's DigestCache (if any) gives without reading an unchanged file."""
        h = hashlib.sha256()
        for s in sources:
            h.update(f"source {s.rel}\0".encode())
            if s.is_dir:
                for path, st, dfd, name in self.entries(s.rel):
                    self._hash_entry(h, path[len(s.rel):].lstrip("/"), path, st, dfd, name)
            else:
                parent = posixpath.dirname(s.rel)
                dfd = self.open_dir(parent)
                try:
                    st = os.stat(posixpath.basename(s.rel), dir_fd=dfd, follow_symlinks=False)
                    self._hash_entry(h, "", s.rel, st, dfd, posixpath.basename(s.rel))
                finally:
                    os.close(dfd)
        if self.digests is not None:
            self.digests.save(self.fd)
        return h.hexdigest()

    def _hash_entry(self, h, shown: str, rel: str, st: os.stat_result, dfd: int, name: str) -> None:
        h.update(f"{shown}\0{stat.S_IFMT(st.st_mode)}\0{stat.S_IMODE(st.st_mode):o}\0".encode())
        if stat.S_ISREG(st.st_mode):
            h.update(f"{st.st_size}\0".encode())
            known = self.digests.get(rel, st) if self.digests is not None else None
            h.update((known or self._content(rel, st, dfd, name)).encode())
        elif stat.S_ISLNK(st.st_mode):
            h.update(os.readlink(name, dir_fd=dfd).encode() + b"\0")

    def _content(self, rel: str, st: os.stat_result, dfd: int, name: str) -> str:
        """sha256 of a regular file, read through an fd; remembered when the file did not
        change while it was read."""
        c = hashlib.sha256()
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dfd)
        try:
            while chunk := os.read(fd, 1 << 20):
                c.update(chunk)
            after = os.fstat(fd)
        finally:
            os.close(fd)
        digest = c.hexdigest()
        if self.digests is not None and _identity(after) == _identity(st):
            self.digests.put(rel, st, digest)
        return digest


def _identity(st: os.stat_result) -> list[int]:
    """What says a file is unchanged: the kernel sets ctime to the current time on every
    change of content or metadata (write, truncate, chmod, utime...), and no system call
    sets it to a chosen value."""
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _identity_in(root: int, rel: str) -> list[int]:
    """The identity of what `rel` names in the tree now (no symlink followed); [] if nothing."""
    try:
        fd = fs.open_in_root(root, rel, fs.O_PATH | os.O_NOFOLLOW)
    except OSError:
        return []
    try:
        return _identity(os.fstat(fd))
    finally:
        os.close(fd)


class DigestCache:
    """The sha256 of a tree's regular files from earlier builds, by path in the tree, each
    with the identity of the file it was read from (device, inode, size, mtime and ctime in
    ns, as git's index and BuildKit's contenthash keep): a file whose identity is unchanged
    is not read again.

    The racily-clean rule (git's): a file changed within MARGIN_NS before it was read is not
    remembered, so a later change inside the same timestamp tick (a coarse kernel clock, a
    filesystem with 1 s or 2 s times) cannot leave its ctime equal. What this cannot see: a
    change that leaves ctime as it was, which no system call does but which setting the
    clock back, restoring a filesystem snapshot in place, writing the block device beneath
    the filesystem, or a filesystem that does not keep ctime (some FUSE and network
    filesystems; a server clock more than MARGIN_NS behind ours) can do; and a write
    through a shared mapping into a page already dirty when the file was read. (A build
    with --no-cache copies the files as they are whatever their digest; `builder prune`
    forgets the digests.)

    The file is a hint: a missing or unreadable one is an empty cache. Saving merges with
    what another build saved meanwhile, under an flock of the directory, and replaces the
    file by rename: concurrent builds never see half a file."""

    MARGIN_NS = 2_000_000_000

    def __init__(self, path: str, context: str) -> None:
        self.path, self.context = path, context
        self.start = time.time_ns()  # before any file of this build is read
        self.files: dict[str, list] | None = None
        self.added: dict[str, list] = {}
        self.seen: set[str] = set()

    def _load(self) -> dict[str, list]:
        try:
            with open(self.path, "rb") as f:
                doc = json.loads(f.read())
            files = doc["files"] if doc.get("context") == self.context else {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            files = {}
        return files if isinstance(files, dict) else {}

    def get(self, rel: str, st: os.stat_result) -> str | None:
        if self.files is None:
            self.files = self._load()
        self.seen.add(rel)
        e = self.files.get(rel)
        if isinstance(e, list) and len(e) == 6 and e[:5] == _identity(st) and isinstance(e[5], str):
            return e[5]
        return None

    def put(self, rel: str, st: os.stat_result, digest: str) -> None:
        self.seen.add(rel)
        if max(st.st_mtime_ns, st.st_ctime_ns) < self.start - self.MARGIN_NS:
            self.added[rel] = _identity(st) + [digest]

    def save(self, root: int) -> None:
        """Write what was added (if anything), merged with the file as it is now; entries
        whose path no longer names the file they describe are dropped. `root`: an fd of
        the tree. A cache that cannot be written (a full disk) is left as it was."""
        if not self.added:
            return
        from kobako.paths import atomic_write
        d = os.path.dirname(self.path)
        try:
            os.makedirs(d, mode=0o700, exist_ok=True)
            lock = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            files = self._load()
            for rel in [r for r in files if r not in self.seen and r not in self.added]:
                e = files[rel]
                if not isinstance(e, list) or _identity_in(root, rel)[:2] != e[:2]:
                    del files[rel]  # gone, or another file now
            files.update(self.added)
            data = json.dumps({"context": self.context, "files": files}, separators=(",", ":")).encode()
            # a cache: losing it costs a re-read, so no fsync
            atomic_write(self.path, data, 0o600, durable=False)
        except OSError:
            return
        finally:
            os.close(lock)
        self.files = files
        self.added = {}


def read_in(tree: Tree, rel: str, limit: int = 16 << 20) -> bytes:
    """A small file of the tree (the Dockerfile, .dockerignore), read inside it."""
    fd = fs.open_in_root(tree.fd, rel, os.O_RDONLY)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ContextError(f"{rel} in the {tree.what} is not a regular file")
        data = b""
        while chunk := os.read(fd, 1 << 20):
            data += chunk
            if len(data) > limit:
                raise ContextError(f"{rel} is larger than {limit >> 20} MiB")
        return data
    finally:
        os.close(fd)


def is_archive(head: bytes) -> bool:
    """An archive ADD unpacks: tar (plain, gzip, bzip2, xz, zstd)."""
    return (head[:2] == b"\x1f\x8b" or head[:3] == b"BZh" or head[:6] == b"\xfd7zXZ\x00"
            or head[:4] == b"\x28\xb5\x2f\xfd" or head[257:262] == b"ustar")


# -- the copy into an image's root (runs where the root is mounted) ----------------------------------

class Copier:
    """Copies sources of a Tree into the directory fd `root` (an image's root), resolving
    every destination inside it. `ids`: the owner of everything copied and of the
    directories made; `chmod`: the mode of everything copied (None: the source's)."""

    def __init__(self, root: int, ids: tuple[int, int], chmod: int | None) -> None:
        self.root, self.ids, self.chmod = root, ids, chmod

    def _parent(self, path: str) -> int:
        """fd of directory `path` (absolute in the root), made (0755, owned by ids) if missing."""
        parts = [p for p in path.split("/") if p]
        fd = os.dup(self.root)
        try:
            for i, name in enumerate(parts):
                try:
                    nfd = fs.open_in_root(self.root, "/".join(parts[:i + 1]), _DIR)
                except FileNotFoundError:
                    os.mkdir(name, 0o755, dir_fd=fd)
                    os.chown(name, *self.ids, dir_fd=fd, follow_symlinks=False)
                    nfd = fs.open_in_root(self.root, "/".join(parts[:i + 1]), _DIR)
                except NotADirectoryError:
                    raise ContextError(f"cannot copy to {path}: /{'/'.join(parts[:i + 1])} is not a "
                                       "directory in the image") from None
                os.close(fd)
                fd = nfd
            return fd
        except BaseException:
            os.close(fd)
            raise

    def is_dir(self, path: str) -> bool:
        try:
            fd = fs.open_in_root(self.root, path)
        except (FileNotFoundError, NotADirectoryError):
            return False
        try:
            return stat.S_ISDIR(os.fstat(fd).st_mode)
        finally:
            os.close(fd)

    def copy(self, tree: Tree, src: Source, dest: str, into: bool) -> None:
        """One source to `dest`: a directory's contents into dest; a file into dest (when
        `into`: dest ends in '/' or is a directory) or as dest."""
        if src.is_dir:
            top = self._parent(dest)
            try:
                self._tree(tree, src.rel, top)
            finally:
                os.close(top)
            return
        parent, name = (dest, src.name) if into else posixpath.split(dest.rstrip("/") or "/")
        if not name:
            raise ContextError(f"cannot copy {src.rel} to {dest}: not a file name")
        pfd = self._parent(parent)
        sdfd = tree.open_dir(posixpath.dirname(src.rel))
        try:
            st = os.stat(posixpath.basename(src.rel), dir_fd=sdfd, follow_symlinks=False)
            self._entry(sdfd, posixpath.basename(src.rel), st, pfd, name)
        finally:
            os.close(sdfd)
            os.close(pfd)

    def _tree(self, tree: Tree, rel: str, top: int) -> None:
        dirs: dict[str, int] = {rel: top}
        dirs_meta: list[tuple[str, os.stat_result]] = []
        try:
            for path, st, sdfd, name in tree.entries(rel):
                parent = posixpath.dirname(path)
                pfd = dirs.get(parent)
                if pfd is None:  # below an excluded directory kept for an exception: made as needed
                    pfd = self._mkdirs_under(dirs, rel, parent)
                self._entry(sdfd, name, st, pfd, name)
                if stat.S_ISDIR(st.st_mode):
                    dirs[path] = os.open(name, _DIR | os.O_NOFOLLOW, dir_fd=pfd)
                    dirs_meta.append((path, st))
            for path, st in reversed(dirs_meta):  # times last: filling a directory changes its mtime
                os.utime(dirs[path], ns=(st.st_atime_ns, st.st_mtime_ns))
        finally:
            for p, fd in dirs.items():
                if p != rel:
                    os.close(fd)

    def _mkdirs_under(self, dirs: dict[str, int], top: str, path: str) -> int:
        parent = posixpath.dirname(path)
        pfd = dirs.get(parent) if parent in dirs else self._mkdirs_under(dirs, top, parent)
        name = posixpath.basename(path)
        try:
            os.mkdir(name, 0o755, dir_fd=pfd)
            os.chown(name, *self.ids, dir_fd=pfd, follow_symlinks=False)
        except FileExistsError:
            pass
        dirs[path] = os.open(name, _DIR | os.O_NOFOLLOW, dir_fd=pfd)
        return dirs[path]

    def _clear(self, pfd: int, name: str, want_dir: bool) -> bool:
        """Make room for `name`: a non-directory there goes; a directory stays for a directory
        and refuses a file. True if a directory is there already."""
        try:
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            if not want_dir:
                raise ContextError(f"cannot overwrite directory {name!r} with a non-directory")
            return True
        os.unlink(name, dir_fd=pfd)
        return False

    def _mode(self, st: os.stat_result) -> int:
        return self.chmod if self.chmod is not None else stat.S_IMODE(st.st_mode)

    def _entry(self, sdfd: int, sname: str, st: os.stat_result, pfd: int, name: str) -> None:
        kind = stat.S_IFMT(st.st_mode)
        times = (st.st_atime_ns, st.st_mtime_ns)
        if kind == stat.S_IFDIR:
            if not self._clear(pfd, name, True):
                os.mkdir(name, 0o700, dir_fd=pfd)
            os.chown(name, *self.ids, dir_fd=pfd, follow_symlinks=False)
            os.chmod(name, self._mode(st), dir_fd=pfd, follow_symlinks=False)
        elif kind == stat.S_IFREG:
            self._clear(pfd, name, False)
            src = os.open(sname, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=sdfd)
            try:
                dst = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                              0o600, dir_fd=pfd)
                try:
                    left = os.fstat(src).st_size
                    while left > 0:
                        try:
                            n = os.copy_file_range(src, dst, min(left, 1 << 30))
                        except OSError:
                            n = os.sendfile(dst, src, None, min(left, 1 << 30))
                        if n <= 0:
                            break
                        left -= n
                    os.fchown(dst, *self.ids)
                    os.fchmod(dst, self._mode(st))  # after chown, which clears setuid
                    os.utime(dst, ns=times)
                finally:
                    os.close(dst)
            finally:
                os.close(src)
        elif kind == stat.S_IFLNK:
            self._clear(pfd, name, False)
            os.symlink(os.readlink(sname, dir_fd=sdfd), name, dir_fd=pfd)
            os.chown(name, *self.ids, dir_fd=pfd, follow_symlinks=False)
            os.utime(name, ns=times, dir_fd=pfd, follow_symlinks=False)
        # fifos, sockets and device nodes of a context are not copied


def lookup_ids(root: int, spec: str) -> tuple[int, int]:
    """--chown USER[:GROUP], names looked up in the image's /etc/passwd and /etc/group."""
    user, _, group = spec.partition(":")

    def table(rel: str) -> list[list[str]]:
        try:
            fd = fs.open_in_root(root, rel, os.O_RDONLY)
        except OSError:
            return []
        with os.fdopen(fd, "r", errors="replace") as f:
            return [ln.split(":") for ln in f.read().splitlines() if ln and not ln.startswith("#")]

    def find(rel: str, name: str, what: str) -> list[str]:
        for row in table(rel):
            if row[0] == name and len(row) > 2:
                return row
        raise ContextError(f"unable to convert uid/gid chown string to host mapping: can't find {what} for "
                           f"{what == 'uid' and 'user' or 'group'} {name}: no such entry in /{rel}")

    if user.isdigit():
        uid, gid = int(user), int(user)
    else:
        row = find("etc/passwd", user, "uid")
        uid, gid = int(row[2]), int(row[3]) if len(row) > 3 and row[3].isdigit() else 0
    if group:
        gid = int(group) if group.isdigit() else int(find("etc/group", group, "gid")[2])
    return uid, gid
