"""libc loaded once through ctypes; errors become OSError with errno and object."""

from __future__ import annotations

import ctypes
import os

_c_char_p = ctypes.c_char_p
_c_ulong = ctypes.c_ulong
_c_int = ctypes.c_int
_c_long = ctypes.c_long
_c_void_p = ctypes.c_void_p


def _load() -> ctypes.CDLL:
    lib = ctypes.CDLL(None, use_errno=True)
    lib.mount.argtypes = (_c_char_p, _c_char_p, _c_char_p, _c_ulong, _c_char_p)
    lib.umount2.argtypes = (_c_char_p, _c_int)
    lib.unshare.argtypes = (_c_int,)
    lib.setns.argtypes = (_c_int, _c_int)
    lib.sethostname.argtypes = (_c_char_p, ctypes.c_size_t)
    lib.setdomainname.argtypes = (_c_char_p, ctypes.c_size_t)
    lib.prctl.argtypes = (_c_int, _c_ulong, _c_ulong, _c_ulong, _c_ulong)
    lib.capget.argtypes = (_c_void_p, _c_void_p)
    lib.capset.argtypes = (_c_void_p, _c_void_p)
    lib.syscall.restype = _c_long
    return lib


LIBC = _load()


def check(ret: int, op: str, obj: str | None = None) -> int:
    """Raise OSError(errno, "op: strerror", obj) when a libc call returned -1."""
    if ret == -1:
        err = ctypes.get_errno()
        msg = os.strerror(err)
        if err == 38:  # ENOSYS: say it plainly, the kernel is too old or the call is filtered
            msg += " (this kernel does not offer it, or a seccomp filter blocks it)"
        raise OSError(err, f"{op}: {msg}", obj)
    return ret


def errno() -> int:
    return ctypes.get_errno()


def syscall_number(name: str) -> int:
    """Numbers of the syscalls glibc 2.36 has no wrapper for, per architecture."""
    return _SYSCALLS[name][_ARCH]


_ARCH = os.uname().machine
# openat2 (437) and close_range (436) share one number on every architecture.
_SYSCALLS = {
    "pivot_root": {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217},
    "openat2": {"x86_64": 437, "aarch64": 437, "riscv64": 437, "ppc64le": 437, "s390x": 437},
    "bpf": {"x86_64": 321, "aarch64": 280, "riscv64": 280, "ppc64le": 361, "s390x": 351},
    "keyctl": {"x86_64": 250, "aarch64": 219, "riscv64": 219, "ppc64le": 280, "s390x": 280},
    "close_range": {"x86_64": 436, "aarch64": 436, "riscv64": 436, "ppc64le": 436, "s390x": 436},
    # the new mount API shares one number on every architecture listed here
    "open_tree": {"x86_64": 428, "aarch64": 428, "riscv64": 428, "ppc64le": 428, "s390x": 428},
    "move_mount": {"x86_64": 429, "aarch64": 429, "riscv64": 429, "ppc64le": 429, "s390x": 429},
    "mount_setattr": {"x86_64": 442, "aarch64": 442, "riscv64": 442, "ppc64le": 442, "s390x": 442},
    "seccomp": {"x86_64": 317, "aarch64": 277, "riscv64": 277, "ppc64le": 358, "s390x": 348},
}


class Recorder:
    """Stands in for LIBC in unit tests: records each call and returns 0."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def __getattr__(self, name: str):
        def call(*args):
            self.calls.append((name, *[a.decode() if isinstance(a, bytes) else a for a in args]))
            return 0

        return call
