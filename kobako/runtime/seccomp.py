"""seccomp: the OCI spec's `linux.seccomp` section compiled to a BPF filter by libseccomp.

libseccomp (Debian's libseccomp2, `libseccomp.so.2`) is reached through ctypes, as runc
reaches it through cgo. Supported, with runc's semantics:

- defaultAction / defaultErrnoRet, and every syscall action but one: SCMP_ACT_KILL
  (= KILL_THREAD), KILL_PROCESS, KILL_THREAD, TRAP, ERRNO (errnoRet, default EPERM),
  TRACE (errnoRet, default EPERM), ALLOW, LOG;
- architectures SCMP_ARCH_* (the native one is always in the filter; an arch this
  libseccomp does not know is left out, so its syscalls meet the kill of a bad arch);
- argument comparisons SCMP_CMP_NE/LT/LE/EQ/GE/GT/MASKED_EQ (for MASKED_EQ `value` is
  the mask and `valueTwo` the value compared with). Comparisons on different arguments
  are ANDed in one rule; when one argument is named twice, libseccomp cannot AND two
  comparisons on it, so (as runc does) every comparison of that entry becomes its own
  rule and they are ORed;
- flags SECCOMP_FILTER_FLAG_TSYNC, _LOG, _SPEC_ALLOW (and _WAIT_KILLABLE_RECV, accepted
  and ignored: it only concerns notification listeners). With no `flags` key at all,
  SPEC_ALLOW is set where supported, as runc does;
- syscall names this libseccomp does not know are skipped (a newer profile on an older
  host), and a rule whose action equals the default action is skipped (it is a no-op,
  and libseccomp refuses it).

Not supported: SCMP_ACT_NOTIFY and its listenerPath / listenerMetadata (the user
notification fd handed to a listener); validate() refuses the action clearly.

Use: validate() with the rest of config.json (pure Python, no ctypes); prepare() while
the host's libseccomp.so.2 is still reachable, i.e. before pivot_root; Filter.load() as
late as possible. Loading a filter needs no_new_privs or CAP_SYS_ADMIN in the effective
set: libseccomp is told not to set no_new_privs itself (SCMP_FLTATR_CTL_NNP=0), because
whether the process gets it is the spec's `process.noNewPrivileges`, which the runtime
applies. So, like runc's standard init: with noNewPrivileges true, load after it is set,
right before execve; with noNewPrivileges false, load before capabilities are dropped.
"""

from __future__ import annotations

from kobako.runtime.errors import RuntimeFailure

TYPE_CHECKING = False  # typing costs ~9 ms to import: the runtime's start-up is measured
if TYPE_CHECKING:
    from typing import Any

EPERM = 1
MAX_ARGS = 6  # a syscall has at most six arguments

# SECCOMP_RET_* values; ERRNO and TRACE carry errnoRet in the low 16 bits.
ACTIONS = {
    "SCMP_ACT_KILL": 0x00000000,
    "SCMP_ACT_KILL_THREAD": 0x00000000,
    "SCMP_ACT_KILL_PROCESS": 0x80000000,
    "SCMP_ACT_TRAP": 0x00030000,
    "SCMP_ACT_ERRNO": 0x00050000,
    "SCMP_ACT_TRACE": 0x7FF00000,
    "SCMP_ACT_LOG": 0x7FFC0000,
    "SCMP_ACT_ALLOW": 0x7FFF0000,
    "SCMP_ACT_NOTIFY": 0x7FC00000,
}
_WITH_ERRNO = ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE")

# enum scmp_compare
OPERATORS = {
    "SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4,
    "SCMP_CMP_GE": 5, "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7,
}

# OCI name -> libseccomp's name, resolved to its token by seccomp_arch_resolve_name().
ARCHES = {
    "SCMP_ARCH_X86": "x86", "SCMP_ARCH_X86_64": "x86_64", "SCMP_ARCH_X32": "x32",
    "SCMP_ARCH_ARM": "arm", "SCMP_ARCH_AARCH64": "aarch64",
    "SCMP_ARCH_MIPS": "mips", "SCMP_ARCH_MIPS64": "mips64", "SCMP_ARCH_MIPS64N32": "mips64n32",
    "SCMP_ARCH_MIPSEL": "mipsel", "SCMP_ARCH_MIPSEL64": "mipsel64",
    "SCMP_ARCH_MIPSEL64N32": "mipsel64n32",
    "SCMP_ARCH_PPC": "ppc", "SCMP_ARCH_PPC64": "ppc64", "SCMP_ARCH_PPC64LE": "ppc64le",
    "SCMP_ARCH_S390": "s390", "SCMP_ARCH_S390X": "s390x",
    "SCMP_ARCH_PARISC": "parisc", "SCMP_ARCH_PARISC64": "parisc64",
    "SCMP_ARCH_RISCV64": "riscv64", "SCMP_ARCH_LOONGARCH64": "loongarch64",
    "SCMP_ARCH_M68K": "m68k", "SCMP_ARCH_SH": "sh", "SCMP_ARCH_SHEB": "sheb",
}

# enum scmp_filter_attr
ATTR_CTL_NNP = 3
ATTR_CTL_TSYNC = 4
ATTR_CTL_LOG = 6
ATTR_CTL_SSB = 7
ATTR_API_SYSRAWRC = 9

# OCI flag -> libseccomp attribute (None: accepted, nothing to set)
FLAGS: dict[str, int | None] = {
    "SECCOMP_FILTER_FLAG_TSYNC": ATTR_CTL_TSYNC,
    "SECCOMP_FILTER_FLAG_LOG": ATTR_CTL_LOG,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": ATTR_CTL_SSB,
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV": None,  # only for notify listeners
}

_NR_SCMP_ERROR = -1  # seccomp_syscall_resolve_name(): a name this libseccomp does not know
_EEXIST = 17

_NOTIFY = "SCMP_ACT_NOTIFY (listenerPath) is not supported"


# -- validation: pure Python, called with the rest of config.json before any step ---------------


def _bad(msg: str, hint: str | None = None) -> RuntimeFailure:
    return RuntimeFailure(f"invalid config.json: {msg}", hint)


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _uint(v: object, where: str, top: int = 2**64 - 1) -> None:
    if not (_is_int(v) and 0 <= v <= top):
        raise _bad(f"{where} must be a number from 0 to {top}, not {v!r}")


def _list(v: object, where: str) -> list:
    if not isinstance(v, list):
        raise _bad(f"{where} must be an array, not {type(v).__name__}")
    return v


def _action(v: object, where: str) -> None:
    if not isinstance(v, str):
        raise _bad(f"{where} must be a string, not {type(v).__name__}")
    if v not in ACTIONS:
        raise _bad(f"unknown seccomp action {v!r} in {where}", "one of " + ", ".join(ACTIONS))
    if v == "SCMP_ACT_NOTIFY":
        raise RuntimeFailure(f"{where}: {_NOTIFY}", "use SCMP_ACT_ERRNO or SCMP_ACT_TRACE instead")


def validate(sec: dict) -> None:
    """Refuse a malformed or unsupported `linux.seccomp` with one clear message.
    Unknown syscall names are not an error: they are skipped at prepare(), as runc does."""
    w = "linux.seccomp"
    if not isinstance(sec, dict):
        raise _bad(f"{w} must be an object, not {type(sec).__name__}")
    syscalls = _list(sec.get("syscalls") or [], f"{w}.syscalls")
    if sec.get("defaultAction") is None and syscalls:
        raise _bad(f"{w}.defaultAction is required when {w}.syscalls is set")
    if sec.get("defaultAction") or syscalls:  # runc: neither one means no filter at all
        _action(sec.get("defaultAction"), f"{w}.defaultAction")
    if sec.get("defaultErrnoRet") is not None:
        _uint(sec["defaultErrnoRet"], f"{w}.defaultErrnoRet", 0xFFFF)
    for i, a in enumerate(_list(sec.get("architectures") or [], f"{w}.architectures")):
        if not isinstance(a, str) or a not in ARCHES:
            raise _bad(f"unknown seccomp architecture {a!r} in {w}.architectures[{i}]",
                       "one of " + ", ".join(ARCHES))
    for i, f in enumerate(_list(sec.get("flags") or [], f"{w}.flags")):
        if not isinstance(f, str) or f not in FLAGS:
            raise _bad(f"unknown seccomp flag {f!r} in {w}.flags[{i}]", "one of " + ", ".join(FLAGS))
    for k in ("listenerPath", "listenerMetadata"):
        if sec.get(k) is not None and not isinstance(sec[k], str):
            raise _bad(f"{w}.{k} must be a string, not {type(sec[k]).__name__}")
    for i, call in enumerate(syscalls):
        cw = f"{w}.syscalls[{i}]"
        if not isinstance(call, dict):
            raise _bad(f"{cw} must be an object, not {type(call).__name__}")
        names = call.get("names")
        if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            raise _bad(f"{cw}.names must be an array of syscall names, not {names!r}")
        _action(call.get("action"), f"{cw}.action")
        if call.get("errnoRet") is not None:
            _uint(call["errnoRet"], f"{cw}.errnoRet", 0xFFFF)
        for j, arg in enumerate(_list(call.get("args") or [], f"{cw}.args")):
            aw = f"{cw}.args[{j}]"
            if not isinstance(arg, dict):
                raise _bad(f"{aw} must be an object, not {type(arg).__name__}")
            if "index" not in arg or "op" not in arg:
                raise _bad(f"{aw} needs an index and an op")
            _uint(arg["index"], f"{aw}.index", MAX_ARGS - 1)
            if not isinstance(arg["op"], str) or arg["op"] not in OPERATORS:
                raise _bad(f"unknown seccomp operator {arg['op']!r} in {aw}.op",
                           "one of " + ", ".join(OPERATORS))
            for k in ("value", "valueTwo"):
                if arg.get(k) is not None:
                    _uint(arg[k], f"{aw}.{k}")


def action_value(name: str, errno_ret: int | None = None) -> int:
    """The 32-bit SECCOMP_RET_* value of an OCI action name (runc's getAction)."""
    act = ACTIONS[name]
    if name in _WITH_ERRNO:
        act |= (EPERM if errno_ret is None else errno_ret) & 0xFFFF
    return act


# -- libseccomp through ctypes, loaded on first prepare() -----------------------------------------

_LIB: Any = None
_ARG_CMP: Any = None  # struct scmp_arg_cmp, made with the library


def _lib() -> Any:
    global _LIB, _ARG_CMP
    if _LIB is not None:
        return _LIB
    import ctypes

    try:
        lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    except OSError as e:
        raise RuntimeFailure(f"seccomp: cannot load libseccomp.so.2: {e}",
                             "install libseccomp (Debian: apt-get install libseccomp2)") from None

    class ArgCmp(ctypes.Structure):
        _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                    ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]

    vp, u32, i = ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int
    lib.seccomp_init.argtypes, lib.seccomp_init.restype = (u32,), vp
    lib.seccomp_release.argtypes, lib.seccomp_release.restype = (vp,), None
    lib.seccomp_load.argtypes, lib.seccomp_load.restype = (vp,), i
    lib.seccomp_export_bpf.argtypes, lib.seccomp_export_bpf.restype = (vp, i), i
    lib.seccomp_arch_resolve_name.argtypes, lib.seccomp_arch_resolve_name.restype = (ctypes.c_char_p,), u32
    lib.seccomp_arch_add.argtypes, lib.seccomp_arch_add.restype = (vp, u32), i
    lib.seccomp_attr_set.argtypes, lib.seccomp_attr_set.restype = (vp, i, u32), i
    lib.seccomp_syscall_resolve_name.argtypes = (ctypes.c_char_p,)
    lib.seccomp_syscall_resolve_name.restype = i
    lib.seccomp_rule_add_array.argtypes = (vp, u32, i, ctypes.c_uint, ctypes.POINTER(ArgCmp))
    lib.seccomp_rule_add_array.restype = i
    _LIB, _ARG_CMP = lib, ArgCmp
    return lib


def _strerror(rc: int) -> str:
    import os

    return os.strerror(-rc)


class Filter:
    """A libseccomp filter context built by prepare(): load() it, or release() it."""

    def __init__(self, lib: Any, ctx: int | None) -> None:
        self._lib = lib
        self._ctx = ctx
        self.rules = 0  # rules added (one per name, more where an argument is named twice)
        self.unknown: list[str] = []  # syscall names this libseccomp does not know, skipped
        self.arches_skipped: list[str] = []  # architectures this libseccomp does not know

    def load(self) -> None:
        """Install the filter in this process (seccomp(2) through seccomp_load), then free it.
        Every syscall after this one meets the filter, execve included."""
        if self._ctx is None:
            return
        try:
            rc = self._lib.seccomp_load(self._ctx)
        finally:
            self.release()
        if rc < 0:
            hint = None
            if -rc == 13:  # EACCES
                hint = ("without no_new_privs, loading a filter needs CAP_SYS_ADMIN: load it before "
                        "the capabilities are dropped, or after PR_SET_NO_NEW_PRIVS")
            raise RuntimeFailure(f"seccomp: cannot load the filter: {_strerror(rc)}", hint)

    def release(self) -> None:
        if self._ctx is not None:
            self._lib.seccomp_release(self._ctx)
            self._ctx = None


class CachedFilter:
    """A filter compiled by libseccomp on an earlier run, loaded with seccomp(2) directly.

    Compiling a Docker-sized profile (~320 rules x 3 architectures) takes libseccomp and
    the ctypes calls that feed it ~15 ms per container; the BPF it produces depends only on
    the profile, the architecture and the kernel, so kobako keeps it under the runtime's
    root (<root>/.seccomp/<sha256>.bpf, root-only, on /run: gone at reboot, when the kernel
    may change) and loads it raw the next time, with the flags libseccomp would have used."""

    def __init__(self, prog: bytes, flags: int, rules: int) -> None:
        self.prog, self.flags, self.rules = prog, flags, rules
        self.unknown: list[str] = []
        self.arches_skipped: list[str] = []

    def load(self) -> None:
        # (after pivot_root: builtin modules and kobako's, already imported, only)
        import _struct

        from kobako.linux import libc

        keep, address = libc.buffer(self.prog)
        prog = _struct.pack("@HP", len(self.prog) // 8, address)  # struct sock_fprog {len, filter}
        nr = libc.syscall_number("seccomp")
        flags = self.flags
        while True:
            r = libc.LIBC.syscall(nr, 1, flags, prog)  # SECCOMP_SET_MODE_FILTER
            if r == 0:
                return
            err = libc.errno()
            if err == 22 and flags & _SPEC_ALLOW:  # EINVAL: a kernel without SPEC_ALLOW, as libseccomp
                flags &= ~_SPEC_ALLOW
                continue
            hint = None
            if err == 13:
                hint = ("without no_new_privs, loading a filter needs CAP_SYS_ADMIN: load it before "
                        "the capabilities are dropped, or after PR_SET_NO_NEW_PRIVS")
            import os
            raise RuntimeFailure(f"seccomp: cannot load the filter: {os.strerror(err)}", hint)

    def release(self) -> None:
        pass


_SPEC_ALLOW = 4
_FILTER_FLAGS = {"SECCOMP_FILTER_FLAG_TSYNC": 1, "SECCOMP_FILTER_FLAG_LOG": 2,
                 "SECCOMP_FILTER_FLAG_SPEC_ALLOW": _SPEC_ALLOW}


def _flags(sec: dict) -> int:
    flags = sec.get("flags")
    if flags is None:
        return _SPEC_ALLOW  # runc's default, as _build sets ATTR_CTL_SSB
    out = 0
    for f in flags:
        out |= _FILTER_FLAGS.get(f, 0)
    return out


def _cache_path(sec: dict, cache_dir: str) -> str:
    import _sha256
    import os

    from kobako.runtime import jsonfast
    u = os.uname()
    key = _sha256.sha256(f"{u.release}\0{u.machine}\0{jsonfast.dumps(sec)}".encode()).hexdigest()
    return os.path.join(cache_dir, key + ".bpf")


def _read_cached(path: str) -> bytes | None:
    import os
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid() or st.st_mode & 0o022 or st.st_size % 8 or not st.st_size:
            return None  # not ours, or not a BPF program: ignore it, compile afresh
        return os.read(fd, st.st_size + 1)
    finally:
        os.close(fd)


def _write_cache(lib: Any, ctx: int, path: str) -> None:
    """seccomp_export_bpf() into a temp file, renamed into place; any failure: no cache."""
    import os
    d = os.path.dirname(path)
    try:
        os.makedirs(d, mode=0o700, exist_ok=True)
        st = os.lstat(d)
        if st.st_uid != os.geteuid() or st.st_mode & 0o077:
            return
        tmp = f"{path}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            rc = lib.seccomp_export_bpf(ctx, fd)
        finally:
            os.close(fd)
        if rc == 0:
            os.rename(tmp, path)
        else:
            os.unlink(tmp)
    except OSError:
        pass


def prepare(sec: dict, cache_dir: str | None = None) -> Filter | CachedFilter:
    """Build (not load) the filter for `linux.seccomp`. Needs the host's libseccomp.so.2,
    so call it before pivot_root. An empty section gives a filter whose load() does nothing.
    With `cache_dir`, a filter compiled before for the same profile is reused (CachedFilter)."""
    validate(sec)
    syscalls = sec.get("syscalls") or []
    if not sec.get("defaultAction") and not syscalls:  # runc: nothing to filter
        return Filter(None, None)
    path = _cache_path(sec, cache_dir) if cache_dir else None
    if path:
        prog = _read_cached(path)
        if prog is not None:
            return CachedFilter(prog, _flags(sec), sum(len(c.get("names") or []) for c in syscalls))
    lib = _lib()
    default = action_value(sec["defaultAction"], sec.get("defaultErrnoRet"))
    ctx = lib.seccomp_init(default)
    if not ctx:
        raise RuntimeFailure(f"seccomp: cannot create a filter with default action {sec['defaultAction']}",
                             "this kernel or libseccomp may not offer that action")
    f = Filter(lib, ctx)
    try:
        _build(lib, ctx, sec, default, f)
    except BaseException:
        f.release()
        raise
    if path:
        _write_cache(lib, ctx, path)
    return f


def _attr(lib: Any, ctx: int, attr: int, value: int) -> int:
    return lib.seccomp_attr_set(ctx, attr, value)


def _build(lib: Any, ctx: int, sec: dict, default: int, f: Filter) -> None:
    # The runtime decides no_new_privs itself (process.noNewPrivileges); libseccomp must not.
    rc = _attr(lib, ctx, ATTR_CTL_NNP, 0)
    if rc < 0:
        raise RuntimeFailure(f"seccomp: cannot clear the no_new_privs attribute: {_strerror(rc)}")
    # Kernel errnos from seccomp_load instead of a catch-all ECANCELED (libseccomp >= 2.5).
    _attr(lib, ctx, ATTR_API_SYSRAWRC, 1)
    flags = sec.get("flags")
    if flags is None:
        # runc: no flags key at all means SPEC_ALLOW where supported (no forced SSB mitigation).
        _attr(lib, ctx, ATTR_CTL_SSB, 1)
    for flag in flags or []:
        attr = FLAGS[flag]
        if attr is not None and (rc := _attr(lib, ctx, attr, 1)) < 0:
            raise RuntimeFailure(f"seccomp: flag {flag} is not supported here: {_strerror(rc)}",
                                 "this kernel or libseccomp is too old for it")
    for name in sec.get("architectures") or []:
        token = lib.seccomp_arch_resolve_name(ARCHES[name].encode())
        if token == 0:
            f.arches_skipped.append(name)
            continue
        rc = lib.seccomp_arch_add(ctx, token)
        if rc < 0 and -rc != _EEXIST:  # EEXIST: the native arch, already in the filter
            raise RuntimeFailure(f"seccomp: cannot add architecture {name}: {_strerror(rc)}")
    for call in sec.get("syscalls") or []:
        act = action_value(call["action"], call.get("errnoRet"))
        if act == default:
            continue  # redundant, and libseccomp refuses it (EACCES)
        conds = [(a["index"], OPERATORS[a["op"]], a.get("value") or 0, a.get("valueTwo") or 0)
                 for a in call.get("args") or []]
        indexes = [c[0] for c in conds]
        # libseccomp ANDs comparisons on different arguments; two on the same argument
        # cannot be ANDed, so runc turns each comparison into a rule of its own.
        groups = [[c] for c in conds] if len(set(indexes)) < len(indexes) else [conds]
        for name in call["names"]:
            nr = lib.seccomp_syscall_resolve_name(name.encode())
            if nr == _NR_SCMP_ERROR:
                f.unknown.append(name)
                continue
            for group in groups:
                arr = (_ARG_CMP * len(group))(*[_ARG_CMP(*c) for c in group]) if group else None
                rc = lib.seccomp_rule_add_array(ctx, act, nr, len(group), arr)
                if rc < 0:
                    raise RuntimeFailure(
                        f"seccomp: cannot add the rule {call['action']} for syscall {name!r}"
                        f"{_describe(group)}: {_strerror(rc)}")
                f.rules += 1


def _describe(group: list[tuple[int, int, int, int]]) -> str:
    if not group:
        return ""
    ops = {v: k[9:] for k, v in OPERATORS.items()}
    return " when " + " and ".join(
        f"arg{i} {ops[op]} {a:#x}" + (f"/{b:#x}" if op == OPERATORS["SCMP_CMP_MASKED_EQ"] else "")
        for i, op, a, b in group)
