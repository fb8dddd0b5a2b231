"""libc through `_ctypes` (ctypes' C half); errors become OSError with errno and object.

The `ctypes` package itself costs ~3 ms to import here (its Python half defines every C
type, imports struct and types), a tenth of what `kobako-runtime run` may spend in all. The
runtime calls a handful of libc functions: they are declared below with the four C types
they take. Structs passed by pointer are plain bytes (fs.openat2, capabilities.capset);
code off the start-up path (seccomp, bpf) may still use ctypes, and pass its objects here.
"""

from __future__ import annotations

import _ctypes
import os
import sys


class _Int(_ctypes._SimpleCData):
    _type_ = "i"


class _Long(_ctypes._SimpleCData):
    _type_ = "l"


class _ULong(_ctypes._SimpleCData):
    _type_ = "L"


class _CharP(_ctypes._SimpleCData):
    _type_ = "z"


class _VoidP(_ctypes._SimpleCData):
    _type_ = "P"


class _Char(_ctypes._SimpleCData):
    _type_ = "c"


class _Function(_ctypes.CFuncPtr):
    _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO  # errno saved per call
    _restype_ = _Int


# name -> (argument types (None: unchecked, as for varargs), result type)
_SIGNATURES: dict[str, tuple[tuple | None, type]] = {
    "mount": ((_CharP, _CharP, _CharP, _ULong, _CharP), _Int),
    "umount2": ((_CharP, _Int), _Int),
    "unshare": ((_Int,), _Int),
    "setns": ((_Int, _Int), _Int),
    "sethostname": ((_CharP, _ULong), _Int),
    "setdomainname": ((_CharP, _ULong), _Int),
    "prctl": ((_Int, _ULong, _ULong, _ULong, _ULong), _Int),
    "capget": ((_VoidP, _VoidP), _Int),
    "capset": ((_VoidP, _VoidP), _Int),
    "prlimit": ((_Int, _Int, _VoidP, _VoidP), _Int),
    "renameat2": ((_Int, _CharP, _Int, _CharP, _Int), _Int),
    "syscall": (None, _Long),  # (number, ...): ints, bytes (a pointer to them) and None
}


class _Libc:
    """The libc this process runs on (dlopen(NULL)), one attribute per function above."""

    def __init__(self) -> None:
        self._handle = _ctypes.dlopen(None, 0)  # (read by CFuncPtr to look the names up)
        for name, (argtypes, restype) in _SIGNATURES.items():
            f = _Function((name, self))
            if argtypes is not None:
                f.argtypes = argtypes
            f.restype = restype
            setattr(self, name, f)


LIBC = _Libc()


def check(ret: int, op: str, obj: str | None = None) -> int:
    """Raise OSError(errno, "op: strerror", obj) when a libc call returned -1."""
    if ret == -1:
        err = _ctypes.get_errno()
        msg = os.strerror(err)
        if err == 38:  # ENOSYS: say it plainly, the kernel is too old or the call is filtered
            msg += " (this kernel does not offer it, or a seccomp filter blocks it)"
        raise OSError(err, f"{op}: {msg}", obj)
    return ret


def errno() -> int:
    return _ctypes.get_errno()


def u32(*values: int) -> bytes:
    """Native-endian 32-bit fields, as a C struct of them lays them out."""
    return b"".join((v & 0xFFFFFFFF).to_bytes(4, _BYTEORDER) for v in values)


def u64(*values: int) -> bytes:
    """Native-endian 64-bit fields, as a C struct of them lays them out."""
    return b"".join((v & 0xFFFFFFFFFFFFFFFF).to_bytes(8, _BYTEORDER) for v in values)


def buffer(data: bytes) -> tuple[object, int]:
    """A C array holding a copy of data, and its address, for a struct that points to memory
    (seccomp's sock_fprog). The address is valid while the first value is referenced."""
    array = type("_Bytes", (_ctypes.Array,), {"_type_": _Char, "_length_": len(data)})
    buf = array.from_buffer_copy(data)
    return buf, _ctypes.addressof(buf)


def syscall_number(name: str) -> int:
    """Numbers of the syscalls glibc 2.36 has no wrapper for, per architecture."""
    return _SYSCALLS[name][_ARCH]


_BYTEORDER = sys.byteorder
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
            # strings as str; a struct (bytes with a NUL inside, which no C string has) as bytes
            self.calls.append((name, *[a.decode() if isinstance(a, bytes) and b"\0" not in a else a
                                       for a in args]))
            return 0

        return call
