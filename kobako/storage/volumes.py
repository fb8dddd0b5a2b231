"""Named volumes with the semantics of Docker's `local` driver.

    <data root>/volumes/<name>/_data        what is bind-mounted into containers (0755 root)
    <data root>/volumes/<name>/volume.json  Name, Driver, Mountpoint, CreatedAt, Labels, Options,
                                            Scope, and `seeded` (the image's content was copied in)
    <data root>/volumes/.lock               flock around create, remove, prune and seed

A volume is made in volumes/.tmp-<random>/ and renamed into place, and removed by a rename
to volumes/.rm-<random>/ before the delete, so a crash never leaves half a volume under a
real name; leftovers are swept under the lock. Names never start with '.', so these can
not collide with a volume (nor can the lock: a volume may well be called "lock").

`seed` copies what an image holds at a mount destination into an empty volume on its
first mount, as Docker does; it reads the image's layer directories itself (overlay
whiteouts and opaque directories included) through fds opened with O_NOFOLLOW, so a
symlink in an image never points the copy outside the layers.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import secrets
import shutil
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from kobako import errors
from kobako.paths import atomic_write, dir_size

DRIVER = "local"
ANONYMOUS_LABEL = "com.docker.volume.anonymous"  # Docker 23+: what `volume prune` removes by default
_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")
# the local driver's options: type/device/o go together (a mount(8) triple)
_VALID_OPTS = ("type", "device", "o")
_REQUIRED_WITH = {"type": ("device",), "device": ("type",), "o": ("type", "device")}
_OPAQUE = ("trusted.overlay.opaque", "user.overlay.opaque")
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class VolumeError(errors.InvalidArgument):
    pass


class VolumeNotFound(errors.NotFound, VolumeError):
    pass


class VolumeInUse(errors.Conflict, VolumeError):
    pass


def valid_name(name: str) -> bool:
    return bool(_NAME.fullmatch(name)) and len(name) <= 255


def check_name(name: str) -> None:
    if not valid_name(name):
        if len(name) > 255:
            raise VolumeError(f"create {name[:32]}...: volume name is too long (at most 255 characters)")
        if len(name) == 1 and name.isascii() and name.isalnum():  # docker says "invalid characters" here
            raise VolumeError(f'create {name}: "{name}" is too short: a volume name needs at least 2 '
                              'characters')
        raise VolumeError(f'create {name}: "{name}" includes invalid characters for a local volume name, '
                          'only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass a host '
                          "directory, use absolute path")


def check_options(name: str, options: dict) -> None:
    """The local driver's checks: only type/device/o, each with the others it needs."""
    for k in options:
        if k == "size":
            raise VolumeError(f"create {name}: quota size requested but no quota support")
        if k not in _VALID_OPTS:
            raise VolumeError(f'create {name}: invalid option: "{k}" (the local driver takes type, '
                              'device, o)')
    for k, needs in _REQUIRED_WITH.items():
        if k in options:
            for n in needs:
                if n not in options:
                    raise VolumeError(f'create {name}: missing required option: "{n}"')


def _mounts_under(path: str) -> list[str]:
    """Mount points at or below path (rmtree must never descend into a mounted filesystem)."""
    path = os.path.realpath(path)
    out = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                target = line.split()[4]
                target = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), target)
                if target == path or target.startswith(path + "/"):
                    out.append(target)
    except OSError:
        pass
    return out


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class VolumeStore:
    def __init__(self, root: str) -> None:
        self.dir = os.path.join(root, "volumes")
        # 0700: what a container wrote (setuid files of its root) is out of other users' reach;
        # with --userns the runtime, still the host's root, opens the volume (runtime/idmap.py)
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        if os.stat(self.dir).st_mode & 0o077:  # made 0711 by kobako before 2026-11
            os.chmod(self.dir, 0o700)
        self._depth = 0
        self._lock_fd = -1

    # -- paths and locking ---------------------------------------------------------------
    def _vdir(self, name: str) -> str:
        if not valid_name(name):  # never join a name like '../x' onto the store
            raise VolumeNotFound(f"no such volume: {name}")
        return os.path.join(self.dir, name)

    def mountpoint(self, name: str) -> str:
        return os.path.join(self._vdir(name), "_data")

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """The store's flock; re-entrant within one store (prune calls remove's body)."""
        if self._depth == 0:
            fd = os.open(os.path.join(self.dir, ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._lock_fd = fd
            self._sweep()
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0:
                os.close(self._lock_fd)
                self._lock_fd = -1

    def _sweep(self) -> None:
        """Leftovers of a crashed create/remove/seed: dead, since whoever made them held the lock."""
        for n in os.listdir(self.dir):
            if n.startswith((".tmp-", ".rm-")):
                shutil.rmtree(os.path.join(self.dir, n), ignore_errors=True)

    # -- records ---------------------------------------------------------------------------
    def _save(self, vol: dict) -> None:
        atomic_write(os.path.join(self.dir, vol["Name"], "volume.json"),
                     json.dumps(vol, indent=1).encode(), mode=0o600)

    def get(self, name: str) -> dict:
        path = os.path.join(self._vdir(name), "volume.json")
        try:
            with open(path, "rb") as f:
                vol = json.loads(f.read())
        except (FileNotFoundError, NotADirectoryError):
            raise VolumeNotFound(f"no such volume: {name}") from None
        except ValueError:
            raise VolumeError(f"volume {name}: {path} is not valid JSON") from None
        vol["Mountpoint"] = self.mountpoint(name)  # also right after the data root moved
        return vol

    def list(self) -> list[dict]:
        out = []
        for n in sorted(os.listdir(self.dir)):
            if not valid_name(n):
                continue
            try:
                out.append(self.get(n))
            except VolumeError:
                continue  # not a volume (or a broken one): inspect NAME says which
        return out

    def create(self, name: str | None = None, labels: dict | None = None,
               options: dict | None = None) -> dict:
        """A new volume, or the existing one of that name unchanged (as docker does)."""
        labels, options = dict(labels or {}), dict(options or {})
        if name is None:
            name = secrets.token_hex(32)
            labels.setdefault(ANONYMOUS_LABEL, "")
        check_name(name)
        check_options(name, options)
        with self._locked():
            try:
                return self.get(name)
            except VolumeNotFound:
                pass
            return self._make(name, labels, options)

    def _make(self, name: str, labels: dict, options: dict) -> dict:
        """The volume's steps (kobako/steps.py, layer "volume"; `volume create --trace` shows
        them, each a fault point): made under a temp name, so a crash leaves only what the
        next `_sweep` removes; a failure unwinds at once."""
        from kobako import steps
        rec = steps.Record("volume")
        tmp = os.path.join(self.dir, ".tmp-" + secrets.token_hex(8))
        final = os.path.join(self.dir, name)
        try:
            os.mkdir(tmp, 0o700)
            rec.made("dir", "mkdir(2)", f"volume directory {tmp}",
                     lambda: shutil.rmtree(tmp, ignore_errors=True), f"rm -r {tmp}")
            os.mkdir(os.path.join(tmp, "_data"), 0o755)
            os.chmod(os.path.join(tmp, "_data"), 0o755)  # whatever the umask
            rec.made("data", "mkdir(2), chmod(2)", f"{tmp}/_data (0755)")
            vol = {"Name": name, "Driver": DRIVER, "Mountpoint": os.path.join(final, "_data"),
                   "CreatedAt": _now(), "Labels": labels, "Options": options, "Scope": "local",
                   "seeded": False}
            atomic_write(os.path.join(tmp, "volume.json"), json.dumps(vol, indent=1).encode(), mode=0o600)
            rec.made("record", "write", f"{tmp}/volume.json")
            os.rename(tmp, final)
            rec.made("rename", "rename(2)", f"volume {name} at {final}")
        except BaseException as e:
            rec.unwind(e)
            raise
        rec.forget()
        return vol

    # -- users, removal, prune ---------------------------------------------------------------
    @staticmethod
    def users(engine_containers: list[dict], name: str) -> list[str]:
        """IDs of the containers whose records mount volume `name`."""
        return [r["id"] for r in engine_containers
                if any(isinstance(v, dict) and v.get("name") == name for v in r.get("volumes") or [])]

    @staticmethod
    def in_use(engine_containers: list[dict]) -> set[str]:
        return {v["name"] for r in engine_containers for v in r.get("volumes") or []
                if isinstance(v, dict) and v.get("name")}

    def remove(self, name: str, users: list[str], force: bool = False) -> None:
        """Delete a volume no container uses. force only forgives a missing volume: one in use
        is refused even then, as docker does."""
        if users:
            raise VolumeInUse(f"remove {name}: volume is in use - [{', '.join(u[:12] for u in users)}]")
        with self._locked():
            try:
                self.get(name)
            except VolumeNotFound:
                if force:
                    return
                raise
            vdir = self._vdir(name)
            mounted = _mounts_under(vdir)
            if mounted:
                raise VolumeError(f"remove {name}: {mounted[0]} is a mount point: unmount it first")
            trash = os.path.join(self.dir, ".rm-" + secrets.token_hex(8))
            os.rename(vdir, trash)  # gone from the store at once; the delete may take a while
            shutil.rmtree(trash, ignore_errors=True)

    def prune(self, in_use: set[str], all_volumes: bool = False,
              match: Callable[[dict], bool] | None = None) -> tuple[list[str], int]:
        """Remove volumes no container uses: anonymous ones only unless all_volumes (Docker 23+).
        match narrows further (the CLI's label filters). Returns the names and the bytes freed."""
        removed, freed = [], 0
        with self._locked():
            for vol in self.list():
                name = vol["Name"]
                if name in in_use or (not all_volumes and ANONYMOUS_LABEL not in (vol.get("Labels") or {})):
                    continue
                if match is not None and not match(vol):
                    continue
                size = dir_size(vol["Mountpoint"])
                try:
                    self.remove(name, [])
                except VolumeError:
                    continue  # a mount under it: leave it, as docker skips what it cannot remove
                removed.append(name)
                freed += size
        return removed, freed

    # -- copying the image's content in -------------------------------------------------------
    def seed(self, name: str, lower_dirs: list[str], path_in_image: str) -> None:
        """On the first mount of an empty volume, copy what the image (lower_dirs: its layer
        directories, top first) holds at path_in_image into it, with owners, modes, times and
        xattrs; the volume's root takes the image directory's owner and mode. Nothing is copied
        where the path is missing, not a directory, or has a symlink among its components.
        Afterwards the volume is marked seeded, copied or not, and is never seeded again."""
        with self._locked():
            vol = self.get(name)
            if vol.get("seeded"):
                return
            data = self.mountpoint(name)
            if not os.listdir(data):
                try:
                    self._seed_into(data, lower_dirs, path_in_image)
                except (OSError, RecursionError) as e:
                    what = e.strerror if isinstance(e, OSError) and e.strerror else "directory tree too deep"
                    where = f" ({e.filename})" if isinstance(e, OSError) and e.filename else ""
                    raise VolumeError(f"volume {name}: cannot copy {path_in_image} from the image: "
                                      f"{what}{where}") from None
            vol["seeded"] = True
            self._save(vol)

    def _seed_into(self, data: str, lower_dirs: list[str], path_in_image: str) -> None:
        parts = [p for p in os.path.normpath("/" + path_in_image).split("/") if p]
        if not parts:
            return  # a volume on / is refused long before this
        srcs = _resolve(lower_dirs, parts)
        if not srcs:
            return
        vdir = os.path.dirname(data)
        for n in os.listdir(vdir):  # a crashed seed's copy (seeding holds the lock)
            if n.startswith(".tmp-seed-"):
                shutil.rmtree(os.path.join(vdir, n), ignore_errors=True)
        tmp = os.path.join(vdir, ".tmp-seed-" + secrets.token_hex(8))
        try:
            os.mkdir(tmp, 0o700)
            tfd = os.open(tmp, _DIR)
            try:
                _Copier(tfd).merged_dir(srcs, tfd)
                _copy_meta(os.fstat(srcs[0]), tfd, None, srcs[0])
            finally:
                os.close(tfd)
            try:
                os.rename(tmp, data)  # over the empty _data: the copy appears whole or not at all
            except OSError as e:
                if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    return  # someone wrote to it meanwhile: theirs stays, as on a non-empty volume
                if e.errno != errno.EBUSY:
                    raise
                self._move_entries(tmp, data)  # _data is a mount point here: move what is inside
        finally:
            for fd in srcs:
                os.close(fd)
            if os.path.lexists(tmp):
                shutil.rmtree(tmp, ignore_errors=True)

    @staticmethod
    def _move_entries(tmp: str, data: str) -> None:
        for n in os.listdir(tmp):
            os.rename(os.path.join(tmp, n), os.path.join(data, n))
        st = os.lstat(tmp)
        os.chown(data, st.st_uid, st.st_gid)
        os.chmod(data, stat.S_IMODE(st.st_mode))
        os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns))


# -- the merged view of the image's layers -----------------------------------------------------


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _opaque(target: int | str) -> bool:
    for key in _OPAQUE:
        try:
            # an fd is never a symlink, and Python refuses follow_symlinks=False with one
            if os.getxattr(target, key, follow_symlinks=isinstance(target, int)) == b"y":
                return True
        except OSError:
            pass
    return False


def _resolve(lower_dirs: list[str], parts: list[str]) -> list[int] | None:
    """Directory fds (top first) of the layers that make up the merged directory at parts,
    or None where the image has no directory there (missing, a whiteout, a file, a symlink)."""
    # the layer roots are our own paths (maybe the l/<short> links): only what is inside is untrusted
    fds = [os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC) for d in lower_dirs]
    try:
        for part in parts:
            nxt: list[int] = []
            try:
                for fd in fds:
                    try:
                        st = os.stat(part, dir_fd=fd, follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    if _is_whiteout(st) or not stat.S_ISDIR(st.st_mode):
                        break  # a whiteout, or a non-directory hiding the layers below (if on top)
                    cfd = os.open(part, _DIR, dir_fd=fd)
                    nxt.append(cfd)
                    if _opaque(cfd):
                        break
            except BaseException:
                for fd in nxt:
                    os.close(fd)
                raise
            for fd in fds:
                os.close(fd)
            fds = nxt
            if not fds:
                return None
        out, fds = fds, []
        return out
    finally:
        for fd in fds:
            os.close(fd)


class _Dir:
    __slots__ = ("srcs", "blocked")

    def __init__(self, src: tuple[int, str], blocked: bool) -> None:
        self.srcs = [src]
        self.blocked = blocked  # an opaque dir, a whiteout or a file below ends the merge


class _Copier:
    def __init__(self, root_fd: int) -> None:
        self.root_fd = root_fd
        self.links: dict[tuple[int, int], str] = {}  # source inode -> first copy, relative to root

    def merged_dir(self, srcs: list[int], dst: int, rel: str = "") -> None:
        """Copy the merged content of directories srcs (top first) into the directory dst."""
        entries: dict[str, _Dir | tuple[int, os.stat_result] | None] = {}
        for sfd in srcs:
            for n in os.listdir(sfd):
                st = os.stat(n, dir_fd=sfd, follow_symlinks=False)
                have = entries.get(n, False)
                if have is False:
                    if _is_whiteout(st):
                        entries[n] = None
                    elif stat.S_ISDIR(st.st_mode):
                        entries[n] = _Dir((sfd, n), _opaque(f"/proc/self/fd/{sfd}/{n}"))
                    else:
                        entries[n] = (sfd, st)
                elif isinstance(have, _Dir) and not have.blocked:
                    if stat.S_ISDIR(st.st_mode) and not _is_whiteout(st):
                        have.srcs.append((sfd, n))
                        have.blocked = _opaque(f"/proc/self/fd/{sfd}/{n}")
                    else:
                        have.blocked = True
        for n in sorted(entries):
            e = entries[n]
            path = f"{rel}/{n}" if rel else n
            if isinstance(e, _Dir):
                self._dir(n, e, dst, path)
            elif e is not None:
                self._other(n, e[0], e[1], dst, path)

    def _dir(self, n: str, e: _Dir, dst: int, path: str) -> None:
        fds: list[int] = []
        try:
            for sfd, sn in e.srcs:
                fds.append(os.open(sn, _DIR, dir_fd=sfd))
            os.mkdir(n, 0o700, dir_fd=dst)
            dfd = os.open(n, _DIR, dir_fd=dst)
            try:
                self.merged_dir(fds, dfd, path)
                _copy_meta(os.fstat(fds[0]), dfd, None, fds[0])  # after the children: keeps mtime
            finally:
                os.close(dfd)
        finally:
            for fd in fds:
                os.close(fd)

    def _other(self, n: str, sfd: int, st: os.stat_result, dst: int, path: str) -> None:
        kind = stat.S_IFMT(st.st_mode)
        if kind == stat.S_IFREG:
            key = (st.st_dev, st.st_ino)
            first = self.links.get(key) if st.st_nlink > 1 else None
            if first is not None:
                os.link(first, n, src_dir_fd=self.root_fd, dst_dir_fd=dst, follow_symlinks=False)
                return
            src = os.open(n, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=sfd)
            try:
                out = os.open(n, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                              dir_fd=dst)
                try:
                    _copy_data(src, out, st.st_size)
                    _copy_meta(st, out, None, src)
                finally:
                    os.close(out)
            finally:
                os.close(src)
            if st.st_nlink > 1:
                self.links[key] = path
        elif kind == stat.S_IFLNK:
            os.symlink(os.readlink(n, dir_fd=sfd), n, dir_fd=dst)
            os.chown(n, st.st_uid, st.st_gid, dir_fd=dst, follow_symlinks=False)
            os.utime(n, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=dst, follow_symlinks=False)
        elif kind in (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO):
            os.mknod(n, kind | 0o600, st.st_rdev, dir_fd=dst)
            _copy_meta(st, dst, n, f"/proc/self/fd/{sfd}/{n}")
        # sockets: nothing to copy, as cp -a and docker leave them


def _copy_data(src: int, out: int, size: int) -> None:
    left = size
    try:
        while left > 0:
            n = os.copy_file_range(src, out, min(left, 1 << 30))  # a reflink where the fs can
            if n == 0:
                return
            left -= n
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise
        while True:
            buf = os.read(src, 1 << 20)
            if not buf:
                return
            view = memoryview(buf)
            while view:
                view = view[os.write(out, view):]


def _copy_meta(st: os.stat_result, fd: int, name: str | None, xattr_src: int | str) -> None:
    """Owner, then mode (chown clears setuid bits), xattrs (chown clears security.capability),
    then times. With name, the entry is `name` in directory fd (a device node or fifo)."""
    if name is None:
        os.fchown(fd, st.st_uid, st.st_gid)
        os.fchmod(fd, stat.S_IMODE(st.st_mode))
        target: int | str = fd
    else:
        os.chown(name, st.st_uid, st.st_gid, dir_fd=fd, follow_symlinks=False)
        os.chmod(name, stat.S_IMODE(st.st_mode), dir_fd=fd)
        target = f"/proc/self/fd/{fd}/{name}"
    fs, ft = isinstance(xattr_src, int), isinstance(target, int)  # fds: follow_symlinks must stay True
    try:
        keys = os.listxattr(xattr_src, follow_symlinks=fs)
    except OSError:
        keys = []
    for k in keys:
        if k.startswith(("trusted.overlay.", "user.overlay.")):
            continue  # overlay's own bookkeeping (opaque, redirect): meaningless in a volume
        try:
            os.setxattr(target, k, os.getxattr(xattr_src, k, follow_symlinks=fs), follow_symlinks=ft)
        except OSError:
            continue  # best effort: a filesystem without xattrs, a namespace we may not write
    if name is None:
        os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))
    else:
        os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=fd, follow_symlinks=False)
