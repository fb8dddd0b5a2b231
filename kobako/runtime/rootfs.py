"""The container's root filesystem: spec mounts, /dev, pivot_root, masked and
read-only paths. Runs in the init, inside its new mount namespace.

Every destination is resolved relative to an open fd of the rootfs with
openat2(RESOLVE_IN_ROOT), and mounted through /proc/self/fd/N: a symlink in the
image (say /proc -> /) cannot point a mount at the host.
"""

from __future__ import annotations

import os
import stat

from kobako.linux import fs
from kobako.linux import mount as m
from kobako.runtime import jsonfast
from kobako.runtime.errors import RuntimeFailure

# A root filesystem the runtime mounts itself (kobako's engine sets it; see mount_root).
ROOT_MOUNT_ANNOTATION = "org.kobako.rootfs.mount"
# In a user namespace, idmap.setup stages binds and the idmapped root on a tmpfs that is the
# init's cwd: a mount of the in-memory config then names its staged copy under STAGED.
STAGED = "_staged"
STAGED_ROOT = "root"
DEFAULT_DEVICES = [  # path, major, minor: what every container gets, as in runc
    ("/dev/null", 1, 3), ("/dev/zero", 1, 5), ("/dev/full", 1, 7),
    ("/dev/random", 1, 8), ("/dev/urandom", 1, 9), ("/dev/tty", 5, 0),
]
DEV_LINKS = [("/proc/self/fd", "fd"), ("/proc/self/fd/0", "stdin"), ("/proc/self/fd/1", "stdout"),
             ("/proc/self/fd/2", "stderr"), ("pts/ptmx", "ptmx")]


def ensure(rootfd: int, path: str, is_file: bool = False) -> int:
    """O_PATH fd of path inside the root, creating it (and its missing parents, nearest
    existing one first found) if missing."""
    try:
        return fs.open_in_root(rootfd, path)
    except FileNotFoundError:
        pass
    parent_path, _, name = path.rstrip("/").rpartition("/")
    parent = ensure(rootfd, parent_path)
    try:
        try:
            if is_file:  # (O_EXCL: a dangling symlink there is not followed out of the root)
                os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o644,
                                 dir_fd=parent))
            else:
                os.mkdir(name, 0o755, dir_fd=parent)
        except FileExistsError:
            pass  # made meanwhile, or a symlink: resolved inside the root below
        return fs.open_in_root(rootfd, path)
    finally:
        os.close(parent)


def _at(fd: int) -> str:
    return fs.proc_fd(fd)


class Rootfs:
    def __init__(self, cfg: dict, steps, userns: bool, cgroupns: bool, placed) -> None:
        self.cfg = cfg
        self.steps = steps
        self.userns = userns
        self.cgroupns = cgroupns
        self.path = os.path.realpath(os.path.join(cfg["_bundle"], cfg["root"]["path"]))
        self.linux = cfg.get("linux") or {}
        self.rootfd = -1
        self.placed = placed  # waits until the init is in its cgroup; returns the cgroup record
        self.premounted = False  # the root is mounted already (idmap.py)
        self.tree_fd = -1  # the root as a detached mount, to attach (rootless: container._premount_root)
        self.stage_fd = -1  # our cwd at the start: where idmap.setup staged the bind mounts

    # -- before pivot_root --------------------------------------------------------
    def prepare(self) -> None:
        prop = self.linux.get("rootfsPropagation")
        # An unbindable "/" would refuse the bind of the root onto itself below when the
        # bundle lies on /'s own mount: it is made unbindable at the end (finish), as crun does.
        early = prop if prop and "unbindable" not in prop else None
        flag = m.PROPAGATION[early] if early else m.MS_SLAVE | m.MS_REC
        # Nothing we mount may propagate back to the host.
        m.mount(None, "/", None, flag | (m.MS_REC if flag & m.MS_SHARED else 0))
        if flag & m.MS_SHARED:
            m.mount(None, "/", None, m.MS_SLAVE | m.MS_REC)
        self.steps.made("mount(2) MS_REC|" + (early or "MS_SLAVE"), "/ made non-propagating")
        if self.premounted or any(mnt.get(STAGED) for mnt in self.cfg.get("mounts") or []):
            self.stage_fd = os.open(".", fs.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        if self.premounted:  # the idmapped root, on the stage (idmap.py)
            self.path = f"{_at(self.stage_fd)}/{STAGED_ROOT}"
        root_mount = (self.cfg.get("annotations") or {}).get(ROOT_MOUNT_ANNOTATION)
        if root_mount and self.tree_fd >= 0:
            m.move_mount(self.tree_fd, self.path)
            os.close(self.tree_fd)
            self.steps.made("move_mount(2)", f"root filesystem on {self.path} (mounted outside the "
                            "container)")
        elif root_mount and not self.premounted:
            self.mount_root(root_mount)
        else:  # (an idmapped root came with a more privileged namespace: locked, pivot_root refuses it)
            m.mount(self.path, self.path, None, m.MS_BIND | m.MS_REC)
            self.steps.made("mount(2) MS_BIND", f"rootfs {self.path} bound onto itself for pivot_root")
        self.rootfd = os.open(self.path, fs.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        dev_bound = False
        for mnt in self.cfg.get("mounts") or []:
            self.mount_one(mnt)
            if mnt["destination"].rstrip("/") == "/dev" and self._is_bind(mnt):
                dev_bound = True
        if self.stage_fd >= 0 and not self.premounted:  # (the root's path goes through it: kept)
            os.close(self.stage_fd)
            self.stage_fd = -1
        if not dev_bound:
            self.make_devices()

    def mount_root(self, desc: str) -> None:
        """The engine's overlay (image layers + the container's upper dir), described by the
        storage layer and mounted here, in the container's own mount namespace: it dies with
        the container, so a kill -9 of everything leaves no mount on the host."""
        try:
            d = jsonfast.loads(desc)
            typ, src, opts = d["type"], d.get("source") or d["type"], ",".join(d.get("options") or [])
            cwd = d.get("cwd")
        except (ValueError, KeyError, TypeError):
            raise RuntimeFailure(f"annotation {ROOT_MOUNT_ANNOTATION} is not a mount description") from None
        try:
            if cwd:  # short relative lowerdirs: the mount options are limited to one page
                os.chdir(cwd)
            m.mount(src, self.path, typ, 0, opts or None)
        except OSError as e:
            raise RuntimeFailure(f"cannot mount the root filesystem ({typ}) on {self.path}: {e.strerror}",
                                 _mount_hint(e.errno, typ)) from None
        finally:
            if cwd:
                os.chdir("/")
        self.steps.made(f"mount(2) {typ}", f"root filesystem on {self.path}")

    @staticmethod
    def _is_bind(mnt: dict) -> bool:
        return mnt.get("type") == "bind" or any(o in ("bind", "rbind") for o in mnt.get("options") or [])

    def mount_one(self, mnt: dict) -> None:
        try:
            self._mount_one(mnt)
        except OSError as e:  # name the destination, not the /proc/self/fd/N it went through
            typ = mnt.get("type") or "bind"
            src = mnt.get("source") or typ
            raise RuntimeFailure(f"cannot mount {typ} {src} on {mnt['destination']}: {e.strerror}",
                                 _mount_hint(e.errno, typ)) from None

    def _mount_one(self, mnt: dict) -> None:
        dest = mnt["destination"]
        typ = mnt.get("type") or "none"
        flags, prop, data = m.parse_options(mnt.get("options") or [])
        if self._is_bind(mnt):
            src = mnt.get("source") or ""
            if not src.startswith("/"):
                src = os.path.join(self.cfg["_bundle"], src)
            if mnt.get(STAGED):  # attached by the host's root (idmap.setup), from our cwd
                src = f"{_at(self.stage_fd)}/{mnt[STAGED]}"
            try:
                st = os.stat(src)
            except FileNotFoundError:
                raise RuntimeFailure(f"bind mount source {src} for {dest} does not exist") from None
            fd = ensure(self.rootfd, dest, is_file=not stat.S_ISDIR(st.st_mode))
            try:
                m.mount(src, _at(fd), None, m.MS_BIND | (flags & m.MS_REC))
            finally:
                os.close(fd)
            extra = flags & ~(m.MS_BIND | m.MS_REC | m.MS_REMOUNT)
            if extra:
                self._remount(dest, extra)
            what = f"bind {src} at {dest}"
        elif typ == "cgroup":
            self.mount_cgroup(dest, flags, self.placed() or {"leaves": [], "layout": "v2"})
            what = f"cgroup hierarchies at {dest}"
        else:
            fd = ensure(self.rootfd, dest)
            try:
                try:
                    m.mount(mnt.get("source") or typ, _at(fd), typ, flags, ",".join(data) or None)
                except PermissionError:
                    if typ != "sysfs":
                        raise
                    # sysfs needs a net namespace the user namespace owns: bind the host's
                    m.mount("/sys", _at(fd), None, m.MS_BIND | m.MS_REC)
                    self._remount(dest, flags | m.MS_BIND)
            finally:
                os.close(fd)
            opts = ",".join(mnt.get("options") or [])
            what = f"{typ} at {dest}" + (f" ({opts})" if opts else "")
        if prop:
            fd = fs.open_in_root(self.rootfd, dest)
            try:
                m.mount(None, _at(fd), None, prop)
            finally:
                os.close(fd)
        self.steps.made("mount(2)", what)

    def _remount(self, dest: str, flags: int) -> None:
        """Bind mounts take ro/nosuid/... only on a second, MS_REMOUNT, call."""
        fd = fs.open_in_root(self.rootfd, dest)
        try:
            target = _at(fd)
            m.mount(None, target, None, m.MS_BIND | m.MS_REMOUNT | flags | _locked_flags(target))
        finally:
            os.close(fd)

    def mount_cgroup(self, dest: str, flags: int, cgroup: dict) -> None:
        ro = flags & m.MS_RDONLY
        base = flags & (m.MS_NOSUID | m.MS_NODEV | m.MS_NOEXEC)
        leaves = cgroup.get("leaves") or []
        if cgroup.get("layout") == "v2":
            fd = ensure(self.rootfd, dest)
            try:
                if self.cgroupns:
                    m.mount("cgroup2", _at(fd), "cgroup2", flags)
                elif leaves:
                    m.mount(leaves[0]["dir"], _at(fd), None, m.MS_BIND | m.MS_REC)
                    self._remount(dest, flags)
            finally:
                os.close(fd)
            return
        fd = ensure(self.rootfd, dest)
        try:
            m.mount("tmpfs", _at(fd), "tmpfs", base, "mode=755")
        finally:
            os.close(fd)
        # The tmpfs is new, empty and seen by no one else: each hierarchy's directory is made
        # in it directly, through one fd of it (not found again from the root each time).
        top = fs.open_in_root(self.rootfd, dest)
        try:
            for leaf in leaves:
                name = os.path.basename(leaf["mount"])
                try:
                    os.mkdir(name, 0o755, dir_fd=top)
                except FileExistsError:
                    pass
                fd = fs.openat2(top, name, fs.O_PATH, fs.RESOLVE_BENEATH | fs.RESOLVE_NO_SYMLINKS)
                try:
                    if self.cgroupns:
                        if leaf["v"] == 2:
                            m.mount("cgroup2", _at(fd), "cgroup2", flags)
                        else:
                            m.mount("cgroup", _at(fd), "cgroup", flags, leaf["ctrls"])
                    else:
                        m.mount(leaf["dir"], _at(fd), None, m.MS_BIND)
                        if flags:
                            self._remount(f"{dest.rstrip('/')}/{name}", flags)
                finally:
                    os.close(fd)
            if ro:
                target = _at(top)
                m.mount(None, target, None, m.MS_BIND | m.MS_REMOUNT | flags | _locked_flags(target))
        finally:
            os.close(top)

    def make_devices(self) -> None:
        devfd = ensure(self.rootfd, "/dev")
        try:
            devices = [{"path": p, "type": "c", "major": a, "minor": b, "fileMode": 0o666, "uid": 0, "gid": 0}
                       for p, a, b in DEFAULT_DEVICES]
            listed = {d["path"] for d in self.linux.get("devices") or []}
            devices = [d for d in devices if d["path"] not in listed] + list(self.linux.get("devices") or [])
            parents = {"/dev": devfd}
            try:
                for d in devices:
                    where = os.path.dirname(d["path"])
                    if where not in parents:
                        parents[where] = ensure(self.rootfd, where)
                    self.make_device(d, parents[where])
            finally:
                for fd in parents.values():
                    if fd != devfd:
                        os.close(fd)
            for target, name in DEV_LINKS:
                try:
                    if name == "ptmx":
                        try:
                            os.unlink(name, dir_fd=devfd)
                        except FileNotFoundError:
                            pass
                    os.symlink(target, name, dir_fd=devfd)
                except FileExistsError:
                    pass
            if os.path.exists("/proc/kcore"):
                try:
                    os.symlink("/proc/kcore", "core", dir_fd=devfd)
                except FileExistsError:
                    pass
            self.steps.made("symlink(2)", "/dev/fd, /dev/std{in,out,err}, /dev/ptmx")
        finally:
            os.close(devfd)

    def make_device(self, d: dict, parent: int) -> None:
        """The device node d["path"] in the directory open at `parent` (an O_PATH fd)."""
        path = d["path"]
        name = os.path.basename(path)
        kind = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}[d["type"]]
        mode = d.get("fileMode", 0o666) & 0o7777
        if self.userns and kind != stat.S_IFIFO:
            # mknod is refused in a user namespace: bind the host's node instead
            os.close(os.open(name, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600, dir_fd=parent))
            fd = fs.openat2(parent, name, fs.O_PATH, fs.RESOLVE_BENEATH | fs.RESOLVE_NO_SYMLINKS)
            try:
                m.mount(path, _at(fd), None, m.MS_BIND)
            finally:
                os.close(fd)
            self.steps.made("mount(2) MS_BIND", f"device {path} from the host")
            return
        try:
            os.unlink(name, dir_fd=parent)
        except FileNotFoundError:
            pass
        os.mknod(name, mode | kind, os.makedev(d.get("major", 0), d.get("minor", 0)), dir_fd=parent)
        os.chmod(name, mode, dir_fd=parent)  # mknod's mode is filtered by the umask
        os.chown(name, d.get("uid", 0) or 0, d.get("gid", 0) or 0, dir_fd=parent)
        self.steps.made("mknod(2)", f"device {path} {d['type']} {d.get('major', 0)}:{d.get('minor', 0)}")

    # -- the switch ----------------------------------------------------------------
    def pivot(self, no_pivot: bool = False) -> None:
        if self.rootfd >= 0:
            os.close(self.rootfd)
            self.rootfd = -1
        if no_pivot:
            os.chdir(self.path)
            if self.stage_fd >= 0:
                os.close(self.stage_fd)
                self.stage_fd = -1
            m.mount(self.path, "/", None, 0x2000)  # MS_MOVE
            os.chroot(".")
            os.chdir("/")
            self.steps.made("chroot(2) (--no-pivot)", f"root is now {self.path}")
            return
        old = os.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
        new = os.open(self.path, os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
        if self.stage_fd >= 0:  # it would hold the detached host tree
            os.close(self.stage_fd)
            self.stage_fd = -1
        try:
            os.fchdir(new)
            m.pivot_root(".", ".")
            os.fchdir(old)
            # The old root is stacked under the new one: detach it without propagating
            m.mount(None, ".", None, m.MS_SLAVE | m.MS_REC)
            m.umount2(".", m.MNT_DETACH)
            os.chdir("/")
        finally:
            os.close(old)
            os.close(new)
        self.steps.made("pivot_root(2)", f"root is now {self.path}; the host's mounts are detached")

    # -- after pivot_root ------------------------------------------------------------
    def finish(self) -> None:
        for key, value in (self.linux.get("sysctl") or {}).items():
            p = "/proc/sys/" + key.replace(".", "/")
            try:
                with open(p, "w") as f:
                    f.write(str(value))
            except OSError as e:
                raise RuntimeFailure(f"cannot set sysctl {key}={value}: {e.strerror}") from None
            self.steps.made("write /proc/sys", f"sysctl {key}={value}")
        for p in self.linux.get("maskedPaths") or []:
            self.mask(p)
        for p in self.linux.get("readonlyPaths") or []:
            self.readonly(p)
        if (self.cfg.get("root") or {}).get("readonly"):
            m.mount(None, "/", None, m.MS_BIND | m.MS_REMOUNT | m.MS_RDONLY | _locked_flags("/"))
            self.steps.made("mount(2) MS_REMOUNT|MS_RDONLY", "root filesystem read-only")
        prop = self.linux.get("rootfsPropagation")
        if prop:
            m.mount(None, "/", None, m.PROPAGATION[prop])

    def mask(self, p: str) -> None:
        try:
            st = os.stat(p)
        except (FileNotFoundError, NotADirectoryError):
            return
        if stat.S_ISDIR(st.st_mode):
            m.mount("tmpfs", p, "tmpfs", m.MS_RDONLY)
        else:
            m.mount("/dev/null", p, None, m.MS_BIND)
        self.steps.made("mount(2)", f"masked {p}")

    def readonly(self, p: str) -> None:
        try:
            m.mount(p, p, None, m.MS_BIND | m.MS_REC)
        except (FileNotFoundError, NotADirectoryError):
            return
        m.mount(None, p, None, m.MS_BIND | m.MS_REMOUNT | m.MS_RDONLY | m.MS_REC | _locked_flags(p))
        self.steps.made("mount(2) MS_BIND|MS_REMOUNT|MS_RDONLY", f"read-only {p}")


def _mount_hint(err: int, typ: str) -> str | None:
    return {19: f"this kernel has no {typ!r} filesystem",
            22: "check the mount options",
            1: "not permitted here (a user namespace cannot mount this)"}.get(err)


def _locked_flags(path: str) -> int:
    """Flags a remount must keep (a user namespace may not clear them)."""
    f = os.statvfs(path).f_flag
    out = 0
    for st_bit, ms_bit in ((2, m.MS_NOSUID), (4, m.MS_NODEV), (8, m.MS_NOEXEC), (1024, m.MS_NOATIME),
                           (2048, m.MS_NODIRATIME), (4096, m.MS_RELATIME)):
        if f & st_bit:
            out |= ms_bit
    return out
