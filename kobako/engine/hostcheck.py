"""What this host lacks for kobako, and the fix for each: `kobako system check`, and the hint
a failed command gets when the cause is one of these.

Each check is a function of a `Host` returning a `Result` (name, status, detail, fix). A
`Host` is where the checks read the machine: files under a root directory (/proc, /sys,
/etc, /dev), the user, and *probes* that try a kernel feature for real in a throwaway child
(an overlay mount in a new user and mount namespace, a BPF device program loaded and
closed, nf_tables asked over netlink). Unit tests hand the checks a Host over a fake tree
with the probes replaced, so every check runs without root.

Which checks a user gets depends on who runs kobako: root's containers need overlay,
cgroups, seccomp, nftables and a free bridge subnet; a non-root user's need a user namespace
made with newuidmap/newgidmap from /etc/subuid and /etc/subgid, overlay in that namespace (or
fuse-overlayfs), /dev/net/tun and slirp4netns. A check is FAIL when a default
`kobako run` (bridge network, no options) cannot work without the fix; warn when only some
feature needs it (limits, --userns, published ports below a bound, time namespaces).

Nothing here is imported on `kobako run`'s start-up path: only by `system check` and, after
a failure, by `hint()`.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable

OK, WARN, FAIL = "ok", "warn", "FAIL"
# what a limit needs, on v1 (each a hierarchy) or in a v2 tree (each in cgroup.controllers)
LIMIT_CONTROLLERS = ("cpu", "memory", "pids")
SUBIDS_NEEDED = 65536  # a container's 0-65535, as podman and useradd size a range


class Result:
    """One check's answer. `fix`: the exact thing to do, for a result that is not ok."""

    __slots__ = ("name", "status", "detail", "fix")

    def __init__(self, name: str, status: str, detail: str, fix: str = "") -> None:
        self.name, self.status, self.detail, self.fix = name, status, detail, fix

    def as_json(self) -> dict:
        return {"name": self.name, "status": self.status, "detail": self.detail, "fix": self.fix}

    def __repr__(self) -> str:
        return f"Result({self.name!r}, {self.status!r}, {self.detail!r}, {self.fix!r})"


def kernel_version(release: str) -> tuple[int, int]:
    """'6.1.0-18-amd64' -> (6, 1)."""
    nums = []
    for part in (release.split(".") + ["0", "0"])[:2]:
        digits = ""
        for ch in part:
            if not ch.isdigit():
                break
            digits += ch
        nums.append(int(digits or 0))
    return nums[0], nums[1]


# -- where the checks read the host ---------------------------------------------------------

class Host:
    """The machine as the checks see it. Paths are the host's (`/proc/...`), read under
    `root` ("/" for real); the probes touch the real kernel and are replaced in tests."""

    def __init__(self, root: str = "/", uid: int | None = None, gid: int | None = None,
                 user: str | None = None, data_root: str | None = None) -> None:
        self.root = root
        self.uid = os.geteuid() if uid is None else uid
        self.gid = os.getegid() if gid is None else gid
        self._user = user
        self._data_root = data_root
        self._memo: dict[str, str | None] = {}

    # -- files -------------------------------------------------------------------------------
    def path(self, p: str) -> str:
        return p if self.root == "/" else os.path.join(self.root, p.lstrip("/"))

    def read(self, p: str) -> str | None:
        try:
            with open(self.path(p), errors="replace") as f:
                return f.read()
        except OSError:
            return None

    def exists(self, p: str) -> bool:
        return os.path.lexists(self.path(p))

    def stat(self, p: str) -> os.stat_result | None:
        try:
            return os.stat(self.path(p))
        except OSError:
            return None

    def writable(self, p: str) -> bool:
        return os.access(self.path(p), os.W_OK)

    def read_write(self, p: str) -> bool:
        return os.access(self.path(p), os.R_OK | os.W_OK)

    def which(self, name: str) -> str | None:
        """A program on PATH, or in the sbin directories a user's PATH may lack."""
        dirs = (os.environ.get("PATH") or "").split(":") + ["/usr/local/sbin", "/usr/sbin", "/sbin",
                                                              "/usr/local/bin", "/usr/bin", "/bin"]
        for d in dirs:
            if d.startswith("/") and os.access(self.path(os.path.join(d, name)), os.X_OK):
                return os.path.join(d, name)
        return None

    def has_file_caps(self, p: str) -> bool:
        """File capabilities (how Fedora's newuidmap gets its privilege, where Debian's is setuid)."""
        try:
            return bool(os.getxattr(self.path(p), "security.capability"))
        except OSError:
            return False

    # -- facts -------------------------------------------------------------------------------
    @property
    def is_root(self) -> bool:
        return self.uid == 0

    @property
    def user(self) -> str:
        if self._user is None:
            import pwd
            try:
                self._user = pwd.getpwuid(self.uid).pw_name
            except KeyError:
                self._user = str(self.uid)
        return self._user

    @property
    def data_root(self) -> str:
        if self._data_root is None:
            from kobako import paths
            self._data_root = paths.data_root()
        return self._data_root

    def kernel(self) -> str:
        return (self.read("/proc/sys/kernel/osrelease") or os.uname().release).strip()

    def sysctl(self, key: str) -> str | None:
        v = self.read("/proc/sys/" + key.replace(".", "/"))
        return None if v is None else v.strip()

    def cgroup_mounts(self) -> tuple[dict[str, str], str | None]:
        """The cgroup hierarchies (runtime/cgroups' own reader): {v1 mount point: controllers},
        the cgroup2 mount point."""
        from kobako.runtime.cgroups import mounts
        try:
            return mounts(self.path("/proc/self/mountinfo"))
        except OSError:
            return {}, None

    def routes(self) -> list[str]:
        """The host's IPv4 routes: what the network layer checks a new bridge's subnet against."""
        from kobako.network.ipam import host_routes
        return host_routes()

    def default_network(self) -> tuple[str, dict | None]:
        """The default network's state file, and its record when it has been made."""
        from kobako.network.ipam import file_name
        from kobako.network.networks import DEFAULT
        p = os.path.join(self.data_root, "networks", "ipam", file_name(DEFAULT) + ".json")
        raw = self.read(p)
        if raw is None:
            return p, None
        import json
        try:
            rec = json.loads(raw)
        except ValueError:
            return p, None
        return p, rec if isinstance(rec, dict) and rec.get("subnet") else None

    def library(self, name: str) -> str | None:
        """None when the shared library loads, else why not."""
        import ctypes
        try:
            ctypes.CDLL(name)
            return None
        except OSError as e:
            return str(e)

    # -- probes: a kernel feature tried for real --------------------------------------------
    def _once(self, key: str, probe: Callable[[], str | None]) -> str | None:
        if key not in self._memo:
            self._memo[key] = probe()
        return self._memo[key]

    def scratch_parent(self) -> str:
        """Where a probe's throwaway directories go: the data root, else its nearest existing
        ancestor the user may write (the filesystem the store will be on), else /tmp."""
        d = self.data_root
        while True:
            if os.path.isdir(d) and os.access(d, os.W_OK | os.X_OK):
                return d
            up = os.path.dirname(d)
            if up == d:
                import tempfile
                return tempfile.gettempdir()
            d = up

    def try_overlay(self, userns: bool) -> str | None:
        """Mount an overlay in a child's own mount namespace (and, with `userns`, its own user
        namespace, the user mapped to its root, as rootless kobako is), write through it, and
        let the namespace go. None when it worked, else the error."""
        return self._once(f"overlay{userns}", lambda: _try_overlay(self.scratch_parent(), userns))

    def try_userns(self) -> str | None:
        return self._once("userns", lambda: _in_child(_new_userns))

    def try_idmap(self) -> str | None:
        """Root: an idmapped copy of the data root's filesystem made and dropped. Others: only
        whether mount_setattr(2) exists (idmapping a host filesystem needs the host's root)."""
        if not self.is_root:
            return self._once("idmap", _mount_setattr_exists)
        return self._once("idmap", lambda: _try_idmap(self.scratch_parent()))

    def try_bpf_device(self) -> str | None:
        return self._once("bpf", _try_bpf_device)

    def try_nftables(self) -> str | None:
        """The kernel's nf_tables asked over netlink (read-only). A non-root user asks in a
        network namespace of its own, where it holds CAP_NET_ADMIN."""
        if self.is_root:
            return self._once("nft", _ask_nftables)
        import kobako.network.nftables  # noqa: F401 - before the child's fork (see _in_child)
        return self._once("nft", lambda: _in_child(_ask_nftables_in_own_netns))


# -- the probes themselves (run in the real kernel) ------------------------------------------

def _describe(e: BaseException) -> str:
    from kobako.errors import describe
    return describe(e) or type(e).__name__


def _in_child(fn: Callable[[], object]) -> str | None:
    """Run fn in a forked child (namespaces it makes die with it): None when it returned,
    else what it raised, as one line."""
    # what the probes import, imported before the fork: a child of a threaded process (the
    # API service) should not have to take the import machinery's locks
    import kobako.errors  # noqa: F401
    import kobako.linux.mount  # noqa: F401
    import kobako.linux.namespaces  # noqa: F401
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's report is what the parent sees
        msg = b""
        try:
            os.close(r)
            fn()
        except BaseException as e:  # noqa: BLE001 - reported to the parent as text
            msg = _describe(e).encode(errors="replace")[:2000] or b"failed"
        finally:
            os.write(w, msg)
            os._exit(0)
    os.close(w)
    from kobako.linux.fs import read_all
    try:
        out = read_all(r)
    finally:
        os.close(r)
    _, status = os.waitpid(pid, 0)
    if out:
        return out.decode(errors="replace")
    if not os.WIFEXITED(status):
        return f"the probe died (status {status:#x})"
    return None


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _new_userns(netns: bool = False) -> None:
    """In a child: a user namespace of its own with the caller as its root (a one-id map
    needs no newuidmap), and with `netns` a network namespace owned by it."""
    from kobako.linux import namespaces as ns
    uid, gid = os.geteuid(), os.getegid()
    ns.unshare(ns.CLONE_NEWUSER | (ns.CLONE_NEWNET if netns else 0))
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"0 {uid} 1")
    _write("/proc/self/gid_map", f"0 {gid} 1")


def _try_overlay(parent: str, userns: bool) -> str | None:
    import tempfile
    base = tempfile.mkdtemp(prefix=".kobako-check-", dir=parent)
    try:
        for d in ("lower", "upper", "work", "merged"):
            os.mkdir(os.path.join(base, d))

        def mount_overlay() -> None:
            from kobako.linux import mount as m
            from kobako.linux import namespaces as ns
            if userns:
                _new_userns()
            ns.unshare(ns.CLONE_NEWNS)
            m.mount(None, "/", None, m.MS_REC | m.MS_PRIVATE)  # nothing propagates to the host
            opts = f"lowerdir={base}/lower,upperdir={base}/upper,workdir={base}/work"
            # rootless overlay keeps its own metadata in user.* xattrs: trusted.* needs the host's root
            m.mount("overlay", f"{base}/merged", "overlay", 0, opts + (",userxattr" if userns else ""))
            _write(f"{base}/merged/probe", "kobako")

        return _in_child(mount_overlay)
    finally:
        _remove_tree(base)


def _remove_tree(base: str) -> None:
    """Remove a probe's directory; overlay leaves work/work at mode 0, which its owner may
    not enter until it is given back its permissions."""
    import shutil
    for d, dirs, _ in os.walk(base):  # top-down: a directory is opened up before it is entered
        for x in dirs:
            try:
                os.chmod(os.path.join(d, x), 0o700)
            except OSError:
                pass
    shutil.rmtree(base, ignore_errors=True)


def _try_idmap(parent: str) -> str | None:
    from kobako.linux import mount as m
    from kobako.runtime import idmap
    one = [{"containerID": 0, "hostID": 65534, "size": 1}]
    try:
        userns = idmap.make_userns(one, one)  # the runtime's own way of making one
    except Exception as e:  # noqa: BLE001 - the answer is the error
        return _describe(e)
    try:
        tree = m.open_tree(parent)
        try:
            m.set_attrs(tree, 0, userns, parent)  # detached: closing it is its unmount
        finally:
            os.close(tree)
    except OSError as e:
        return _describe(e)
    finally:
        os.close(userns)
    return None


def _mount_setattr_exists() -> str | None:
    from kobako.linux import libc
    r = libc.LIBC.syscall(libc.syscall_number("mount_setattr"), -1, b"", 0, None, 0)
    if r == -1 and libc.errno() == 38:  # ENOSYS; EBADF for the bad fd means it is there
        return "mount_setattr: this kernel does not offer it (ENOSYS)"
    return None


def _try_bpf_device() -> str | None:
    """Load (and close, never attach) the device filter the runtime assembles for a container
    with no extra devices: the program kobako puts on every container's cgroup on v2."""
    from kobako.linux import bpf
    from kobako.runtime.cgroups import devices
    try:
        fd = bpf.prog_load(devices.assemble([]), bpf.BPF_PROG_TYPE_CGROUP_DEVICE, "kobako_check")
    except OSError as e:
        return _describe(e)
    os.close(fd)
    return None


def _ask_nftables_raise() -> None:
    from kobako.network import nftables
    nftables.present("kobako")  # True or False: either way the kernel answered


def _ask_nftables_in_own_netns() -> None:
    _new_userns(netns=True)
    _ask_nftables_raise()


def _ask_nftables() -> str | None:
    try:
        _ask_nftables_raise()
    except OSError as e:
        return _describe(e)
    return None


# -- the checks -------------------------------------------------------------------------------

def _as_root(h: Host, cmd: str) -> str:
    return cmd if h.is_root else f"as root: {cmd}"


def _sysctl_fix(h: Host, key: str, value: str, conf: str) -> str:
    return _as_root(h, f"sysctl -w {key}={value} && echo '{key} = {value}' > /etc/sysctl.d/{conf}.conf")


def check_kernel(h: Host) -> Result:
    return Result("kernel", OK, f"Linux {h.kernel()} ({os.uname().machine})")


def check_overlay(h: Host) -> Result:
    """Root: an overlay mount on the data root's filesystem (every container's root is one)."""
    err = h.try_overlay(userns=False)
    where = h.scratch_parent()
    if err is None:
        return Result("overlay", OK, f"overlay mounts work (one tried under {where})")
    return Result("overlay", FAIL, f"an overlay mount under {where} failed: {err}",
                  "modprobe overlay (a kernel built with CONFIG_OVERLAY_FS); the data root (KOBAKO_ROOT) "
                  "must be on a filesystem overlay takes as an upper dir: ext4, xfs with ftype=1, btrfs, "
                  "tmpfs (not overlayfs itself, nor 9p or NFS)")


def check_overlay_userns(h: Host) -> Result:
    """Non-root: overlay mounted inside the user's own user namespace (Linux 5.11+), or
    fuse-overlayfs where the kernel refuses."""
    rel = h.kernel()
    if kernel_version(rel) < (5, 11):
        err = f"Linux {rel} is older than 5.11, the first to mount overlay in a user namespace"
    else:
        err = h.try_overlay(userns=True)
    if err is None:
        return Result("overlay-userns", OK, f"the kernel mounts overlay in a user namespace "
                      f"(one tried under {h.scratch_parent()})")
    fuse = h.which("fuse-overlayfs")
    if fuse and h.read_write("/dev/fuse"):
        return Result("overlay-userns", WARN, f"{err}; {fuse} is used instead (slower)",
                      "a kernel >= 5.11 mounts overlay in a user namespace itself")
    return Result("overlay-userns", FAIL, f"{err}, and fuse-overlayfs"
                  + (" cannot open /dev/fuse" if fuse else " is not installed"),
                  "apt-get install fuse-overlayfs, with /dev/fuse readable and writable by the user "
                  "(see the fuse check), or a kernel >= 5.11")


def check_fuse_overlayfs(h: Host) -> Result:
    path = h.which("fuse-overlayfs")
    if path:
        return Result("fuse-overlayfs", OK, f"{path} (the fallback where the kernel's overlay refuses)")
    if h.try_overlay(userns=True) is None:
        return Result("fuse-overlayfs", OK, "not installed; not needed: the kernel's overlay works in a "
                      "user namespace")
    return Result("fuse-overlayfs", WARN, "not installed, and the kernel's overlay refuses a user namespace",
                  _as_root(h, "apt-get install fuse-overlayfs"))


def _device(h: Host, path: str, module: str) -> tuple[bool, str, str]:
    """/dev/net/tun or /dev/fuse: (open to this user for reading and writing, what was found,
    the fix)."""
    st = h.stat(path)
    if st is None:
        return False, f"{path} does not exist", _as_root(h, f"modprobe {module}")
    mode = stat.S_IMODE(st.st_mode)
    if h.read_write(path):
        return True, f"{path} is open to {h.user} (mode {mode:04o})", ""
    return False, f"{path} is mode {mode:04o}, owner uid {st.st_uid}: {h.user} cannot open it", _as_root(
        h, f"chmod 0666 {path}; to keep it after a reboot: echo 'KERNEL==\"{module}\", MODE=\"0666\"' "
        f"> /etc/udev/rules.d/60-kobako-{module}.rules (Debian's udev default is 0666)")


def check_tun(h: Host) -> Result:
    ok, found, fix = _device(h, "/dev/net/tun", "tun")
    if ok:
        return Result("tun", OK, found)
    return Result("tun", FAIL, f"{found}; slirp4netns (a rootless container's network) needs it",
                  fix)


def check_fuse(h: Host) -> Result:
    ok, found, fix = _device(h, "/dev/fuse", "fuse")
    if ok:
        return Result("fuse", OK, found)
    if h.try_overlay(userns=True) is None:
        return Result("fuse", OK, f"{found}; not needed: the kernel's overlay works in a user namespace")
    return Result("fuse", WARN, f"{found}; fuse-overlayfs (the fallback for overlay) needs it", fix)


def check_idmapped_mounts(h: Host) -> Result:
    rel = h.kernel()
    needs = "--userns (a container in user namespace of its own)" if h.is_root else "--userns keep-id"
    if kernel_version(rel) < (5, 12):
        return Result("idmapped-mounts", WARN, f"Linux {rel} is older than 5.12: no idmapped mounts, "
                      f"which {needs} needs", "a kernel >= 5.12 (5.19+ to idmap overlay layers)")
    err = h.try_idmap()
    if err is None:
        how = f"an idmapped mount of {h.scratch_parent()} made" if h.is_root else "mount_setattr(2) is there"
        return Result("idmapped-mounts", OK, f"{how} (Linux {rel})")
    return Result("idmapped-mounts", WARN, f"{err}; {needs} needs idmapped mounts",
                  "a kernel >= 5.12 with mount_setattr(2) not blocked by a seccomp filter, and a data root "
                  "on a filesystem that supports idmapping (ext4, xfs, btrfs, tmpfs 6.3+)")


def check_time_namespace(h: Host) -> Result:
    if h.exists("/proc/self/ns/time"):
        return Result("time-namespace", OK, "/proc/self/ns/time exists (OCI linux.timeOffsets work)")
    return Result("time-namespace", WARN, "no /proc/self/ns/time: a config.json asking for a time namespace "
                  "is refused", "a kernel >= 5.6 built with CONFIG_TIME_NS")


def _layout(v1: dict[str, str], v2: str | None) -> str:
    if v2 and not v1:
        return "pure cgroup v2"
    return "hybrid (v1 controllers, plus cgroup2)" if v2 else "cgroup v1"


def _v1_controllers(v1: dict[str, str]) -> set[str]:
    return {c for ctrls in v1.values() for c in ctrls.split(",") if c and not c.startswith("name=")}


def check_cgroups(h: Host) -> Result:
    v1, v2 = h.cgroup_mounts()
    if not v1 and not v2:
        return Result("cgroups", FAIL, "no cgroup filesystem is mounted under /sys/fs/cgroup",
                      _as_root(h, "mount -t cgroup2 none /sys/fs/cgroup (systemd mounts it at boot)"))
    have1 = _v1_controllers(v1)
    have2 = set((h.read(f"{v2}/cgroup.controllers") or "").split()) if v2 else set()
    parts = []
    if v1:
        parts.append("v1: " + ", ".join(sorted(have1)))
    if v2:
        parts.append(f"v2 at {v2}: " + (", ".join(sorted(have2)) or "no controllers"))
    detail = f"{_layout(v1, v2)}; " + "; ".join(parts)
    missing = [c for c in LIMIT_CONTROLLERS if c not in have1 | have2]
    if missing:
        if v2 and not v1:
            fix = _as_root(h, f"echo '{' '.join('+' + c for c in missing)}' > {v2}/cgroup.subtree_control")
        else:
            fix = _as_root(h, "; ".join(f"mkdir -p /sys/fs/cgroup/{c} && mount -t cgroup -o {c} cgroup "
                                        f"/sys/fs/cgroup/{c}" for c in missing))
        return Result("cgroups", WARN, f"{detail}; no {', '.join(missing)} controller: the limits that "
                      "need it are refused", fix)
    return Result("cgroups", OK, detail)


DELEGATE_FIX = ("as root: mkdir -p /etc/systemd/system/user@.service.d && "
                "printf '[Service]\\nDelegate=yes\\n' > /etc/systemd/system/user@.service.d/delegate.conf && "
                "systemctl daemon-reload, then log in again; without systemd: as root, "
                "mkdir -p /sys/fs/cgroup/kobako-{user}/session && "
                "chown -R {user}: /sys/fs/cgroup/kobako-{user} && "
                "echo '+cpu +memory +pids' > /sys/fs/cgroup/cgroup.subtree_control, and start the user's "
                "session in its child (echo $$ > /sys/fs/cgroup/kobako-{user}/session/cgroup.procs, then "
                "su - {user}): a cgroup with processes of its own cannot pass controllers down")


def own_v2_cgroup(text: str) -> str | None:
    """The v2 line of /proc/self/cgroup (`0::/path`)."""
    for line in text.splitlines():
        if line.startswith("0::"):
            return line[3:] or "/"
    return None


def delegated_subtree(h: Host, v2: str, own: str) -> str | None:
    """The top-most cgroup, among the user's own and its ancestors, whose cgroup.subtree_control
    the user may write: where a delegation (systemd's user@UID.service) begins."""
    found = None
    parts = [p for p in own.split("/") if p]
    for n in range(len(parts), -1, -1):
        d = os.path.join(v2, *parts[:n]) if n else v2
        if h.writable(f"{d}/cgroup.subtree_control"):
            found = d
        elif found is not None:
            break
    return found


def check_cgroup_delegation(h: Host) -> Result:
    """Non-root: limits need a cgroup v2 subtree delegated to the user."""
    v1, v2 = h.cgroup_mounts()
    fix = DELEGATE_FIX.format(user=h.user)
    pure_fix = ("boot with pure cgroup v2 (kernel command line systemd.unified_cgroup_hierarchy=1, "
                "the default since Debian 11), then delegate: " + fix)
    if v2 is None or _v1_controllers(v1) & set(LIMIT_CONTROLLERS):
        return Result("cgroup-delegation", WARN, f"{_layout(v1, v2)}: cgroup v1 cannot be delegated to a "
                      "user, so a limit (-m, --cpus, --pids-limit) is refused", pure_fix)
    own = own_v2_cgroup(h.read("/proc/self/cgroup") or "") or "/"
    top = delegated_subtree(h, v2, own)
    if top is None:
        where = f"its cgroup {own} is not" if own == "/" else f"neither its cgroup {own} nor any above it is"
        return Result("cgroup-delegation", WARN, f"no cgroup v2 subtree is delegated to {h.user} ({where} "
                      "writable): a limit is refused", fix)
    ctrls = (h.read(f"{top}/cgroup.controllers") or "").split()
    missing = [c for c in LIMIT_CONTROLLERS if c not in ctrls]
    if missing:
        return Result("cgroup-delegation", WARN, f"{top} is delegated to {h.user} with controllers "
                      f"{', '.join(ctrls) or 'none'}; no {', '.join(missing)}: the limits that need it "
                      "are refused", fix)
    return Result("cgroup-delegation", OK, f"{top} is delegated to {h.user}: {', '.join(ctrls)}")


def check_bpf_devices(h: Host) -> Result:
    """Root: on cgroup v2 the device rules are a BPF program kobako loads itself."""
    v1, v2 = h.cgroup_mounts()
    if "devices" in _v1_controllers(v1):
        return Result("bpf-devices", OK, "not needed: device rules go to the v1 devices controller")
    err = h.try_bpf_device()
    if err is None:
        return Result("bpf-devices", OK, "a BPF_PROG_TYPE_CGROUP_DEVICE program loads (the device filter "
                      "kobako puts on each container's cgroup v2)")
    return Result("bpf-devices", FAIL, f"the cgroup v2 device filter does not load: {err}",
                  "a kernel built with CONFIG_BPF_SYSCALL and CONFIG_CGROUP_BPF (Debian's is); no LSM or "
                  "seccomp policy blocking bpf(2) for root")


def check_seccomp(h: Host) -> Result:
    err = h.library("libseccomp.so.2")
    if err is None:
        return Result("seccomp", OK, "libseccomp.so.2 loads (the default seccomp profile is compiled "
                      "with it)")
    return Result("seccomp", FAIL, f"libseccomp.so.2 does not load: {err}",
                  _as_root(h, "apt-get install libseccomp2"))


def check_nftables(h: Host) -> Result:
    """libnftables (kobako's rules go through it in-process) and the kernel's nf_tables. Root's
    bridge network needs both; a user's networks live in the user's own network namespace."""
    status = FAIL if h.is_root else WARN
    needs = "the default bridge network (NAT, published ports)" if h.is_root else "user networks"
    err = h.library("libnftables.so.1")
    if err is not None:
        return Result("nftables", status, f"libnftables.so.1 does not load ({err}); {needs} need it",
                      _as_root(h, "apt-get install nftables (it brings libnftables1)"))
    err = h.try_nftables()
    if err is not None:
        return Result("nftables", status, f"the kernel's nf_tables does not answer: {err}; {needs} need it",
                      _as_root(h, "modprobe nf_tables (a kernel built with CONFIG_NF_TABLES)"))
    return Result("nftables", OK, "libnftables.so.1 loads and the kernel's nf_tables answers")


def check_nft(h: Host) -> Result:
    path = h.which("nft")
    if path:
        return Result("nft", OK, f"{path} (to read kobako's rules: nft list table inet kobako)")
    return Result("nft", WARN, "the nft command is not installed: kobako does not need it, but the commands "
                  "`kobako explain` prints to check its rules do", _as_root(h, "apt-get install nftables"))


def check_userns(h: Host) -> Result:
    maxns = h.sysctl("user.max_user_namespaces")
    if h.is_root:
        if maxns == "0":
            return Result("userns", WARN, "user.max_user_namespaces is 0: --userns cannot make a user "
                          "namespace",
                          _sysctl_fix(h, "user.max_user_namespaces", "15000", "90-kobako-userns"))
        return Result("userns", OK, f"user.max_user_namespaces = {maxns}")
    bad: list[tuple[str, str, str]] = []  # (what, sysctl key, value that fixes it)
    if maxns == "0":
        bad.append(("user.max_user_namespaces is 0", "user.max_user_namespaces", "15000"))
    clone = h.sysctl("kernel.unprivileged_userns_clone")
    if clone == "0":  # Debian's own switch (kernels before 6.1), where it exists
        bad.append(("kernel.unprivileged_userns_clone is 0", "kernel.unprivileged_userns_clone", "1"))
    aa = h.sysctl("kernel.apparmor_restrict_unprivileged_userns")
    if aa == "1":  # Ubuntu 23.10+
        bad.append(("AppArmor restricts unprivileged user namespaces "
                    "(kernel.apparmor_restrict_unprivileged_userns = 1)",
                    "kernel.apparmor_restrict_unprivileged_userns", "0"))
    if bad:
        return Result("userns", FAIL, "; ".join(b[0] for b in bad) + f": {h.user} cannot make a user "
                      "namespace",
                      "; ".join(_sysctl_fix(h, k, v, "90-kobako-userns") for _, k, v in bad))
    err = h.try_userns()
    if err is not None:
        return Result("userns", FAIL, f"unshare(CLONE_NEWUSER) failed: {err}",
                      "a kernel built with CONFIG_USER_NS; no seccomp or LSM policy refusing user namespaces "
                      "to this user")
    facts = [f"user.max_user_namespaces = {maxns}"] + (
        [f"kernel.unprivileged_userns_clone = {clone}"] if clone is not None else [])
    return Result("userns", OK, f"{h.user} can make a user namespace ({', '.join(facts)})")


def _idmap_tool(h: Host, name: str) -> Result:
    path = h.which(name)
    if path is None:
        return Result(name, FAIL, f"{name} is not installed: a user namespace with {h.user}'s subordinate "
                      "ids needs it", _as_root(h, "apt-get install uidmap"))
    st = h.stat(path)
    if st is not None and st.st_uid == 0 and st.st_mode & stat.S_ISUID:
        return Result(name, OK, f"{path} is setuid root")
    if h.has_file_caps(path):
        return Result(name, OK, f"{path} has file capabilities")
    return Result(name, FAIL, f"{path} is neither setuid root nor given file capabilities: it cannot write "
                  "another user's id map", _as_root(h, f"chown root: {path} && chmod u+s {path} "
                                                       "(as Debian's uidmap package installs it)"))


def check_newuidmap(h: Host) -> Result:
    return _idmap_tool(h, "newuidmap")


def check_newgidmap(h: Host) -> Result:
    return _idmap_tool(h, "newgidmap")


def parse_subids(text: str) -> list[tuple[str, int, int]]:
    """/etc/subuid or /etc/subgid: (user name or uid, first id, count) per valid line."""
    out = []
    for line in text.splitlines():
        f = line.strip().split(":")
        if len(f) == 3 and f[0] and f[1].isdigit() and f[2].isdigit():
            out.append((f[0], int(f[1]), int(f[2])))
    return out


def free_range(taken: list[tuple[int, int]], size: int = SUBIDS_NEEDED, low: int = 100000) -> int:
    """The lowest first id >= low of `size` ids no (start, count) in `taken` overlaps: where
    useradd would put a new user's range."""
    at = low
    for start, count in sorted(taken):
        if start + count <= at:
            continue
        if start >= at + size:
            break
        at = start + count
    return at


def check_subids(h: Host, kind: str) -> Result:
    """kind: "subuid" or "subgid"."""
    path = f"/etc/{kind}"
    entries = {k: parse_subids(h.read(f"/etc/{k}") or "") for k in ("subuid", "subgid")}
    mine = [(s, c) for who, s, c in entries[kind] if who in (h.user, str(h.uid))]
    total = sum(c for _, c in mine)
    if total >= SUBIDS_NEEDED:
        ranges = ", ".join(f"{s}-{s + c - 1}" for s, c in mine)
        return Result(kind, OK, f"{h.user} has {total} ids in {path}: {ranges}")
    start = free_range([(s, c) for k in entries for _, s, c in entries[k]])
    rng = f"{start}-{start + SUBIDS_NEEDED - 1}"
    detail = (f"{h.user} has no range in {path}" if not mine else
              f"{h.user} has only {total} ids in {path} ({SUBIDS_NEEDED} needed)")
    return Result(kind, FAIL, detail + ": a container's ids 0-65535 need their own host ids",
                  _as_root(h, f"usermod --add-subuids {rng} --add-subgids {rng} {h.user}"))


def check_subuid(h: Host) -> Result:
    return check_subids(h, "subuid")


def check_subgid(h: Host) -> Result:
    return check_subids(h, "subgid")


def check_rootless_network(h: Host) -> Result:
    found = h.which("slirp4netns")  # the only way out kobako/network/rootlessns.py uses (not pasta)
    if found:
        return Result("rootless-network", OK, found + " (a rootless container's network)")
    return Result("rootless-network", FAIL, "slirp4netns is not installed: a rootless "
                  "container has no network without it", _as_root(h, "apt-get install slirp4netns"))


def check_unprivileged_ports(h: Host) -> Result:
    v = h.sysctl("net.ipv4.ip_unprivileged_port_start")
    if v is None or not v.isdigit():
        return Result("unprivileged-ports", OK, "net.ipv4.ip_unprivileged_port_start is not there: no bound")
    if int(v) == 0:
        return Result("unprivileged-ports", OK, "net.ipv4.ip_unprivileged_port_start = 0: any port can be "
                      "published")
    return Result("unprivileged-ports", WARN, f"net.ipv4.ip_unprivileged_port_start = {v}: a port below {v} "
                  f"cannot be published (-p {min(80, int(v) - 1)}:80 is refused)",
                  _sysctl_fix(h, "net.ipv4.ip_unprivileged_port_start", "0", "90-kobako-ports"))


def subnet_collisions(candidates: list[str], routes: list[str]) -> list[tuple[str, str]]:
    """(candidate, route) for each host route a candidate subnet overlaps (the default route
    overlaps everything and counts for none, as in the network layer)."""
    from kobako.network.ipam import overlaps
    return [(c, r) for c in candidates for r in routes if not r.endswith("/0") and overlaps(c, r)]




def check_default_subnet(h: Host) -> Result:
    """Root: the default network's bridge subnet against the host's routes. A bridge kobako
    already made carries its own route (and the network layer makes no check then)."""
    path, net = h.default_network()
    routes = h.routes()
    if net is not None:
        subnet, br = net["subnet"], net.get("bridge") or "kobako0"
        if h.exists(f"/sys/class/net/{br}"):
            return Result("default-subnet", OK, f"{subnet} on bridge {br}, which is up")
        hits = subnet_collisions([subnet], routes)
        if hits:
            r = hits[0][1]
            return Result("default-subnet", FAIL, f"the default network's subnet {subnet} overlaps the "
                          f"host's route {r}: a default `kobako run` cannot make its bridge {br}",
                          f"free it: `ip route show {r}` names the device that holds it (another engine's "
                          f"bridge, a VPN); remove that, or with no kobako container running, rm {path} so "
                          "that kobako picks a subnet no route uses")
        return Result("default-subnet", OK, f"{subnet} (the default network's): no host route overlaps it")
    # the network layer's own allocator and pool (network/ipam.py), against the host's routes
    from kobako.network import ipam
    try:
        cand = ipam.pick_subnet(ipam.configured_pools(), [], routes)
    except ipam.IPAMError:
        pools = ", ".join(p.describe() for p in ipam.configured_pools())
        return Result("default-subnet", FAIL, f"every subnet of kobako's address pool ({pools}) overlaps a "
                      "host route",
                      "free one: remove a route from `ip route` that covers a subnet of the pool")
    first = ipam.pick_subnet(ipam.configured_pools(), [], [])
    skipped = f"; {first} and others before it are taken by host routes" if cand != first else ""
    return Result("default-subnet", OK, f"the default network will get {cand}{skipped}")


# -- which checks, for whom ---------------------------------------------------------------------

# (check, who: "root", "user" or "all", areas whose failures it may explain)
CHECKS: list[tuple[Callable[[Host], Result], str, tuple[str, ...]]] = [
    (check_kernel, "all", ()),
    (check_userns, "all", ("runtime",)),
    (check_newuidmap, "user", ("runtime",)),
    (check_newgidmap, "user", ("runtime",)),
    (check_subuid, "user", ("runtime",)),
    (check_subgid, "user", ("runtime",)),
    (check_overlay, "root", ("runtime",)),
    (check_overlay_userns, "user", ("runtime",)),
    (check_fuse_overlayfs, "user", ()),
    (check_fuse, "user", ()),
    (check_idmapped_mounts, "all", ()),
    (check_time_namespace, "all", ()),
    (check_cgroups, "all", ("runtime",)),
    (check_cgroup_delegation, "user", ()),
    (check_bpf_devices, "root", ("runtime",)),
    (check_seccomp, "all", ("runtime",)),
    (check_nftables, "all", ("network",)),
    (check_nft, "all", ()),
    (check_default_subnet, "root", ("network",)),
    (check_tun, "user", ("network",)),
    (check_rootless_network, "user", ("network",)),
    (check_unprivileged_ports, "user", ()),
]


def _applies(h: Host, who: str) -> bool:
    return who == "all" or (who == "root") == h.is_root


def run_checks(h: Host | None = None, area: str | None = None) -> list[Result]:
    """Every check that applies to this user (only those of `area` when given). A check that
    breaks itself is a FAIL naming the error, never a traceback."""
    h = h or Host()
    out = []
    for fn, who, areas in CHECKS:
        if not _applies(h, who) or (area is not None and area not in areas):
            continue
        try:
            out.append(fn(h))
        except Exception as e:  # noqa: BLE001 - one check's bug must not hide the others' answers
            name = fn.__name__.removeprefix("check_").replace("_", "-")
            out.append(Result(name, FAIL, f"the check itself failed: {_describe(e)}",
                              "report it, with KOBAKO_DEBUG=1 kobako system check"))
    return out


def why(area: str, h: Host | None = None) -> str | None:
    """The likely cause of a failure in `area` ("runtime": making the container; "network":
    its network), when this host lacks something for it: the first failing check's finding
    and fix, or None. A diagnosis for steps.Record.diagnose."""
    for r in run_checks(h, area):
        if r.status == FAIL:
            return f"{r.detail}; fix: {r.fix}"
    return None


def hint(error: BaseException, area: str) -> None:
    """Give a kobako error that has no hint the host's reason, if the checks of `area` find one."""
    if getattr(error, "hint", False) is not None:  # has one, or is no kobako error
        return
    try:
        reason = why(area)
    except Exception:  # noqa: BLE001 - a diagnosis must never replace the error it explains
        return
    if reason:
        error.hint = reason  # type: ignore[attr-defined]


def hint_start_failure(error: BaseException) -> None:
    """A container that did not start: the host's reason from the runtime's checks, unless
    the container's own program was the problem (126/127: not found, not executable)."""
    from kobako.errors import CannotStart
    if CannotStart(str(error)).exit_code == 125:
        hint(error, "runtime")
