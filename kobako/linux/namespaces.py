"""unshare(2) and setns(2): where every namespace of a container is made or joined."""

from __future__ import annotations

import os

from kobako.linux import fs, libc

CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# OCI namespace type -> (clone flag, name under /proc/PID/ns/)
TYPES: dict[str, tuple[int, str]] = {
    "user": (CLONE_NEWUSER, "user"),
    "mount": (CLONE_NEWNS, "mnt"),
    "pid": (CLONE_NEWPID, "pid"),
    "network": (CLONE_NEWNET, "net"),
    "ipc": (CLONE_NEWIPC, "ipc"),
    "uts": (CLONE_NEWUTS, "uts"),
    "cgroup": (CLONE_NEWCGROUP, "cgroup"),
    "time": (CLONE_NEWTIME, "time"),
}


def flag_names(flags: int) -> str:
    return "|".join(f"CLONE_NEW{k.upper()}" for k, (f, _) in TYPES.items() if flags & f)


def unshare(flags: int) -> None:
    libc.check(libc.LIBC.unshare(flags), f"unshare {flag_names(flags)}")


def setns(fd: int, nstype: int = 0, what: str = "") -> None:
    libc.check(libc.LIBC.setns(fd, nstype), f"setns {flag_names(nstype) or 'any'}", what)


def enter(path: str, nstype: int) -> None:
    """Join the namespace at path (a /proc/PID/ns/X file or a bind mount of one)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(fd, nstype, path)
    finally:
        os.close(fd)


_IN_USERNS: bool | None = None


def in_user_namespace() -> bool:
    """True in any user namespace but the host's (runc's RunningInUserNS): rootless kobako,
    or a runtime started by a rootless engine. Such a process cannot join the host's
    namespaces again once it has left them, and mknod, cgroupfs and rlimits above its
    own are the host's to grant."""
    global _IN_USERNS
    if _IN_USERNS is None:
        try:
            _IN_USERNS = fs.read_file("/proc/self/uid_map").split() != [b"0", b"0", b"4294967295"]
        except OSError:
            _IN_USERNS = False
    return _IN_USERNS
