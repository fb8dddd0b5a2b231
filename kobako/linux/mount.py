"""mount(2), umount2(2), pivot_root(2) and the mount flags the OCI spec names."""

from __future__ import annotations

import os

from kobako.linux import libc

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_SYNCHRONOUS = 0x10
MS_REMOUNT = 0x20
MS_MANDLOCK = 0x40
MS_DIRSYNC = 0x80
MS_NOSYMFOLLOW = 0x100
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_REC = 0x4000
MS_SILENT = 0x8000
MS_UNBINDABLE = 0x20000
MS_PRIVATE = 0x40000
MS_SLAVE = 0x80000
MS_SHARED = 0x100000
MS_RELATIME = 0x200000
MS_STRICTATIME = 0x1000000
MS_LAZYTIME = 0x2000000
MNT_DETACH = 0x2

# OCI mount options: name -> (clear?, flag). Options not listed here are passed as data.
FLAGS: dict[str, tuple[bool, int]] = {
    "ro": (False, MS_RDONLY), "rw": (True, MS_RDONLY),
    "nosuid": (False, MS_NOSUID), "suid": (True, MS_NOSUID),
    "nodev": (False, MS_NODEV), "dev": (True, MS_NODEV),
    "noexec": (False, MS_NOEXEC), "exec": (True, MS_NOEXEC),
    "sync": (False, MS_SYNCHRONOUS), "async": (True, MS_SYNCHRONOUS),
    "dirsync": (False, MS_DIRSYNC), "remount": (False, MS_REMOUNT),
    "mand": (False, MS_MANDLOCK), "nomand": (True, MS_MANDLOCK),
    "atime": (True, MS_NOATIME), "noatime": (False, MS_NOATIME),
    "diratime": (True, MS_NODIRATIME), "nodiratime": (False, MS_NODIRATIME),
    "relatime": (False, MS_RELATIME), "norelatime": (True, MS_RELATIME),
    "strictatime": (False, MS_STRICTATIME), "nostrictatime": (True, MS_STRICTATIME),
    "lazytime": (False, MS_LAZYTIME), "nolazytime": (True, MS_LAZYTIME),
    "nosymfollow": (False, MS_NOSYMFOLLOW), "symfollow": (True, MS_NOSYMFOLLOW),
    "bind": (False, MS_BIND), "rbind": (False, MS_BIND | MS_REC),
}
PROPAGATION = {
    "private": MS_PRIVATE, "rprivate": MS_PRIVATE | MS_REC,
    "shared": MS_SHARED, "rshared": MS_SHARED | MS_REC,
    "slave": MS_SLAVE, "rslave": MS_SLAVE | MS_REC,
    "unbindable": MS_UNBINDABLE, "runbindable": MS_UNBINDABLE | MS_REC,
}


def _b(s: str | None) -> bytes | None:
    return None if s is None else s.encode()


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0,
          data: str | None = None) -> None:
    r = libc.LIBC.mount(_b(source), target.encode(), _b(fstype), flags, _b(data))
    what = "bind" if flags & MS_BIND else (fstype or "remount")
    libc.check(r, f"mount {what} {source or ''} flags={flags:#x}{' ' + data if data else ''}", target)


def umount2(target: str, flags: int = 0) -> None:
    libc.check(libc.LIBC.umount2(target.encode(), flags), "umount2", target)


def pivot_root(new_root: str, put_old: str) -> None:
    r = libc.LIBC.syscall(libc.syscall_number("pivot_root"), new_root.encode(), put_old.encode())
    libc.check(r, "pivot_root", new_root)


# The new mount API (Linux 5.2+; idmapped mounts 5.12+, as overlay layers 5.19+).
OPEN_TREE_CLONE = 0x1
OPEN_TREE_CLOEXEC = 0o2000000
AT_RECURSIVE = 0x8000
AT_EMPTY_PATH = 0x1000
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
MOUNT_ATTR_IDMAP = 0x100000


def open_tree(path: str, recursive: bool = False) -> int:
    """A detached copy of the mount at path (OPEN_TREE_CLONE), as an fd."""
    flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | (AT_RECURSIVE if recursive else 0)
    return libc.check(libc.LIBC.syscall(libc.syscall_number("open_tree"), -100, os.fsencode(path), flags),
                      "open_tree", path)


def set_attrs(tree_fd: int, attrs: int, userns_fd: int | None, what: str, recursive: bool = False) -> None:
    """mount_setattr(2) on a detached mount: MOUNT_ATTR_* attrs, and with userns_fd
    MOUNT_ATTR_IDMAP: a file owned by id N on disk is then seen as owned by whatever N maps
    to in that user namespace."""
    import ctypes
    import struct
    if userns_fd is not None:
        attrs |= MOUNT_ATTR_IDMAP
    # struct mount_attr (version 0): attr_set, attr_clr, propagation, userns_fd
    attr = ctypes.create_string_buffer(struct.pack("QQQQ", attrs, 0, 0, userns_fd or 0), 32)
    r = libc.LIBC.syscall(libc.syscall_number("mount_setattr"), tree_fd, b"",
                          AT_EMPTY_PATH | (AT_RECURSIVE if recursive else 0), attr, 32)
    libc.check(r, "mount_setattr", what)


def move_mount(tree_fd: int, target: str) -> None:
    """Attach a detached mount (from open_tree) at target."""
    r = libc.LIBC.syscall(libc.syscall_number("move_mount"), tree_fd, b"", -100, target.encode(),
                          MOVE_MOUNT_F_EMPTY_PATH)
    libc.check(r, "move_mount", target)


def parse_options(options: list[str]) -> tuple[int, int, list[str]]:
    """OCI mount options -> (flags, propagation flags, data options)."""
    flags = prop = 0
    data: list[str] = []
    for opt in options:
        f = FLAGS.get(opt)
        if f is not None:
            clear, bit = f
            flags = flags & ~bit if clear else flags | bit
        elif opt in PROPAGATION:
            prop |= PROPAGATION[opt]
        elif opt != "defaults":
            data.append(opt)
    return flags, prop, data
