"""seccomp: validation of `linux.seccomp` (pure Python), and filters built by libseccomp and
loaded into a forked child (under no_new_privs, so no root is needed) whose syscalls the
parent then reads back through a pipe."""

from __future__ import annotations

import ctypes
import errno
import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from kobako.linux import capabilities, prctl
from kobako.runtime import seccomp
from kobako.runtime.errors import RuntimeFailure

REPO = Path(__file__).resolve().parents[2]


def _have_libseccomp() -> bool:
    try:
        ctypes.CDLL("libseccomp.so.2")
    except OSError:
        return False
    return os.path.exists("/proc/sys/kernel/seccomp/actions_avail")


needs_libseccomp = pytest.mark.skipif(not _have_libseccomp(),
                                      reason="libseccomp.so.2 or kernel seccomp filters missing")


def _profile(*syscalls: dict, default: str = "SCMP_ACT_ALLOW", **extra) -> dict:
    return {"defaultAction": default, "syscalls": list(syscalls), **extra}


def _rule(names: list[str], action: str = "SCMP_ACT_ERRNO", **extra) -> dict:
    return {"names": names, "action": action, **extra}


# -- validate ---------------------------------------------------------------------------------


def test_validate_accepts_a_full_profile_and_an_empty_one():
    seccomp.validate({})
    seccomp.validate({"defaultAction": "", "syscalls": []})
    seccomp.validate(_profile(
        _rule(["mkdir", "no_such_syscall_at_all"], errnoRet=13),
        _rule(["personality"], "SCMP_ACT_ALLOW",
              args=[{"index": 0, "value": 0xFFFFFFFF, "op": "SCMP_CMP_EQ"},
                    {"index": 0, "value": 8, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]),
        _rule([], "SCMP_ACT_LOG"),
        default="SCMP_ACT_ERRNO", defaultErrnoRet=38,
        architectures=["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64"],
        flags=["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"]))


@pytest.mark.parametrize("sec, message", [
    (_profile(default="SCMP_ACT_FOO"),
     "invalid config.json: unknown seccomp action 'SCMP_ACT_FOO' in linux.seccomp.defaultAction"),
    (_profile(_rule(["mkdir"], "SCMP_ACT_BAR")),
     "unknown seccomp action 'SCMP_ACT_BAR' in linux.seccomp.syscalls[0].action"),
    (_profile(_rule(["mkdir"], args=[{"index": 0, "value": 1, "op": "SCMP_CMP_LIKE"}])),
     "unknown seccomp operator 'SCMP_CMP_LIKE' in linux.seccomp.syscalls[0].args[0].op"),
    (_profile(architectures=["SCMP_ARCH_Z80"]),
     "unknown seccomp architecture 'SCMP_ARCH_Z80' in linux.seccomp.architectures[0]"),
    (_profile(architectures=[["SCMP_ARCH_X86_64"]]), "unknown seccomp architecture ['SCMP_ARCH_X86_64']"),
    (_profile(_rule(["mkdir"], args=[{"index": 0, "op": {}}])), "unknown seccomp operator {}"),
    (_profile(flags=["SECCOMP_FILTER_FLAG_FAST"]),
     "unknown seccomp flag 'SECCOMP_FILTER_FLAG_FAST' in linux.seccomp.flags[0]"),
    (_profile({"names": "mkdir", "action": "SCMP_ACT_ERRNO"}),
     "linux.seccomp.syscalls[0].names must be an array of syscall names, not 'mkdir'"),
    (_profile({"names": ["mkdir", 83], "action": "SCMP_ACT_ERRNO"}),
     "linux.seccomp.syscalls[0].names must be an array of syscall names"),
    (_profile({"action": "SCMP_ACT_ERRNO"}), "linux.seccomp.syscalls[0].names must be an array"),
    (_profile(_rule(["mkdir"], errnoRet="EPERM")),
     "linux.seccomp.syscalls[0].errnoRet must be a number from 0 to 65535, not 'EPERM'"),
    (_profile(_rule(["mkdir"], errnoRet=True)), "linux.seccomp.syscalls[0].errnoRet must be a number"),
    (_profile(_rule(["mkdir"], errnoRet=-1)), "linux.seccomp.syscalls[0].errnoRet must be a number"),
    (_profile(defaultErrnoRet="x"), "linux.seccomp.defaultErrnoRet must be a number"),
    (_profile(_rule(["mkdir"], args=[{"value": 1, "op": "SCMP_CMP_EQ"}])),
     "linux.seccomp.syscalls[0].args[0] needs an index and an op"),
    (_profile(_rule(["mkdir"], args=[{"index": 0, "value": 1}])),
     "linux.seccomp.syscalls[0].args[0] needs an index and an op"),
    (_profile(_rule(["mkdir"], args=[{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}])),
     "linux.seccomp.syscalls[0].args[0].index must be a number from 0 to 5"),
    (_profile(_rule(["mkdir"], args=[{"index": 0, "value": -1, "op": "SCMP_CMP_EQ"}])),
     "linux.seccomp.syscalls[0].args[0].value must be a number from 0 to 18446744073709551615"),
    (_profile(_rule(["mkdir"], args={"index": 0})), "linux.seccomp.syscalls[0].args must be an array"),
    (_profile("mkdir"), "linux.seccomp.syscalls[0] must be an object"),
    (_profile(architectures="SCMP_ARCH_X86_64"), "linux.seccomp.architectures must be an array"),
    ({"syscalls": [_rule(["mkdir"])]}, "linux.seccomp.defaultAction is required"),
    ([], "linux.seccomp must be an object"),
])
def test_validate_refuses_with_one_clear_message(sec, message):
    with pytest.raises(RuntimeFailure) as e:
        seccomp.validate(sec)
    assert str(e.value).startswith("invalid config.json: ")
    assert message in str(e.value)


def test_validate_lists_the_known_names_in_the_hint():
    with pytest.raises(RuntimeFailure) as e:
        seccomp.validate(_profile(default="SCMP_ACT_FOO"))
    assert "SCMP_ACT_KILL_PROCESS" in e.value.hint


@pytest.mark.parametrize("sec", [
    _profile(_rule(["mkdir"], "SCMP_ACT_NOTIFY"), listenerPath="/run/listener.sock"),
    _profile(default="SCMP_ACT_NOTIFY"),
])
def test_notify_is_refused_clearly(sec):
    with pytest.raises(RuntimeFailure, match=r"SCMP_ACT_NOTIFY \(listenerPath\) is not supported"):
        seccomp.validate(sec)


def test_validate_does_not_import_ctypes():
    code = ("import sys; from kobako.runtime import seccomp; "
            "seccomp.validate({'defaultAction': 'SCMP_ACT_ALLOW', 'syscalls': "
            "[{'names': ['mkdir'], 'action': 'SCMP_ACT_ERRNO'}]}); print('ctypes' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_action_values():
    assert seccomp.action_value("SCMP_ACT_KILL") == seccomp.action_value("SCMP_ACT_KILL_THREAD") == 0
    assert seccomp.action_value("SCMP_ACT_KILL_PROCESS") == 0x80000000
    assert seccomp.action_value("SCMP_ACT_ERRNO") == 0x00050001  # EPERM by default, as runc
    assert seccomp.action_value("SCMP_ACT_ERRNO", 13) == 0x0005000D
    assert seccomp.action_value("SCMP_ACT_TRACE") == 0x7FF00001
    assert seccomp.action_value("SCMP_ACT_ALLOW", 13) == 0x7FFF0000  # errnoRet only for ERRNO/TRACE
    assert seccomp.action_value("SCMP_ACT_LOG") == 0x7FFC0000


# -- prepare (builds, loads nothing) ----------------------------------------------------------


def test_empty_section_gives_a_filter_that_loads_nothing():
    f = seccomp.prepare({})
    f.load()  # no libseccomp call: this process keeps no filter
    f.release()


@needs_libseccomp
def test_prepare_counts_rules_and_skips_unknown_names_and_default_actions():
    f = seccomp.prepare(_profile(
        _rule(["mkdir", "no_such_syscall_at_all", "mkdirat"]),
        _rule(["getpid"], "SCMP_ACT_ALLOW"),  # same as the default: skipped
        _rule(["personality"], args=[{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"},
                                     {"index": 0, "value": 9, "op": "SCMP_CMP_EQ"}]),
        _rule(["lseek"], args=[{"index": 1, "value": 7, "op": "SCMP_CMP_EQ"},
                               {"index": 2, "value": 0, "op": "SCMP_CMP_EQ"}]),
        architectures=["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_AARCH64", "SCMP_ARCH_LOONGARCH64"]))
    try:
        # mkdir + mkdirat, personality twice (same index: two rules), lseek once (ANDed)
        assert f.rules == 5
        assert f.unknown == ["no_such_syscall_at_all"]
    finally:
        f.release()
        f.release()  # twice is harmless


class _FailingRuleAdd:
    """The real library, but every rule add fails as libseccomp does: a negative errno."""

    def __init__(self, lib) -> None:
        self._lib = lib
        self.released = 0

    def seccomp_rule_add_array(self, *args) -> int:
        return -errno.EINVAL

    def seccomp_release(self, ctx) -> None:
        self.released += 1
        self._lib.seccomp_release(ctx)

    def __getattr__(self, name):
        return getattr(self._lib, name)


@needs_libseccomp
def test_a_libseccomp_error_names_the_rule_and_frees_the_context(monkeypatch):
    fake = _FailingRuleAdd(seccomp._lib())
    monkeypatch.setattr(seccomp, "_LIB", fake)
    sec = _profile(_rule(["personality"], args=[{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]))
    with pytest.raises(RuntimeFailure) as e:
        seccomp.prepare(sec)
    assert str(e.value) == ("seccomp: cannot add the rule SCMP_ACT_ERRNO for syscall 'personality' "
                            "when arg0 EQ 0x8: Invalid argument")
    assert fake.released == 1


def test_a_missing_libseccomp_is_a_clear_error(monkeypatch):
    def no_library(name, *a, **kw):
        raise OSError(f"{name}: cannot open shared object file: No such file or directory")

    monkeypatch.setattr(seccomp, "_LIB", None)
    monkeypatch.setattr(ctypes, "CDLL", no_library)
    with pytest.raises(RuntimeFailure, match="cannot load libseccomp.so.2") as e:
        seccomp.prepare(_profile(_rule(["mkdir"])))
    assert "libseccomp2" in e.value.hint


# -- load, in a forked child ------------------------------------------------------------------


def _in_child(body) -> tuple[dict, int]:
    """Run body() in a forked child; return what it reported (JSON) and its wait status.
    The child sets no_new_privs first, so loading a filter needs no privilege."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        os.close(r)
        try:
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # SIGSYS would dump core
            out = body()
        except BaseException as e:
            out = {"exception": type(e).__name__, "message": str(e)}
        try:
            os.write(w, json.dumps(out).encode())
        finally:
            os._exit(0)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    return (json.loads(b"".join(chunks)) if chunks else {}), status


def _errno_of(fn, *args) -> int:
    try:
        fn(*args)
    except OSError as e:
        return e.errno
    return 0


def _load(sec: dict, nnp: bool = True) -> None:
    if nnp:
        prctl.set_no_new_privs()
    seccomp.prepare(sec).load()


@needs_libseccomp
def test_errno_rule_with_default_eperm(tmp_path):
    def body():
        _load(_profile(_rule(["mkdir", "mkdirat"])))
        return {"mkdir": _errno_of(os.mkdir, str(tmp_path / "d")), "pid": os.getpid()}

    out, status = _in_child(body)
    assert out.get("mkdir") == errno.EPERM, out
    assert out["pid"] > 0 and os.WIFEXITED(status)
    assert not (tmp_path / "d").exists()


@needs_libseccomp
def test_errno_ret_13_gives_eacces_and_unknown_names_are_skipped(tmp_path):
    def body():
        _load(_profile(_rule(["no_such_syscall_at_all", "mkdir", "mkdirat"], errnoRet=13)))
        return {"mkdir": _errno_of(os.mkdir, str(tmp_path / "d"))}

    out, _ = _in_child(body)
    assert out.get("mkdir") == errno.EACCES, out


def _personality(persona: int) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.personality.argtypes = (ctypes.c_ulong,)
    if libc.personality(persona) == -1:
        raise OSError(ctypes.get_errno(), "personality")
    return 0


@needs_libseccomp
def test_argument_comparison_filters_only_that_value():
    def body():
        _load(_profile(_rule(["personality"], args=[{"index": 0, "value": 0xFFFFFFFF, "op": "SCMP_CMP_EQ"}])))
        return {"query": _errno_of(_personality, 0xFFFFFFFF), "set": _errno_of(_personality, 0)}

    out, _ = _in_child(body)
    assert out == {"query": errno.EPERM, "set": 0}


@needs_libseccomp
def test_same_index_twice_becomes_two_rules_ored():
    def body():
        _load(_profile(_rule(["personality"], args=[
            {"index": 0, "value": 0x0008, "op": "SCMP_CMP_EQ"},
            {"index": 0, "value": 0x20008, "op": "SCMP_CMP_EQ"}])))
        return {"a": _errno_of(_personality, 0x0008), "b": _errno_of(_personality, 0x20008),
                "other": _errno_of(_personality, 0xFFFFFFFF)}

    out, _ = _in_child(body)
    assert out == {"a": errno.EPERM, "b": errno.EPERM, "other": 0}


@needs_libseccomp
def test_different_indexes_are_anded_and_masked_eq(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"0123456789")

    def body():
        _load(_profile(
            _rule(["lseek"], args=[{"index": 1, "value": 7, "op": "SCMP_CMP_EQ"},
                                   {"index": 2, "value": os.SEEK_SET, "op": "SCMP_CMP_EQ"}]),
            # (whence & 0xff) == SEEK_END
            _rule(["lseek"], errnoRet=13, args=[{"index": 2, "value": 0xFF, "valueTwo": os.SEEK_END,
                                                 "op": "SCMP_CMP_MASKED_EQ"}])))
        fd = os.open(p, os.O_RDONLY)
        return {"both": _errno_of(os.lseek, fd, 7, os.SEEK_SET),
                "offset_only": _errno_of(os.lseek, fd, 7, os.SEEK_CUR),
                "whence_only": _errno_of(os.lseek, fd, 3, os.SEEK_SET),
                "end": _errno_of(os.lseek, fd, 0, os.SEEK_END)}

    out, _ = _in_child(body)
    assert out == {"both": errno.EPERM, "offset_only": 0, "whence_only": 0, "end": errno.EACCES}


# What a forked Python child needs between load() and _exit(): report through a pipe, allocate.
_PYTHON_MINIMUM = ["read", "write", "close", "exit", "exit_group", "brk", "mmap", "munmap", "mremap",
                   "madvise", "mprotect", "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "getpid",
                   "gettid", "futex", "fstat", "newfstatat", "statx", "lseek", "getrandom",
                   "clock_gettime", "sigaltstack"]


@needs_libseccomp
def test_default_errno_with_an_allow_list(tmp_path):
    def body():
        _load(_profile(_rule(_PYTHON_MINIMUM, "SCMP_ACT_ALLOW"), default="SCMP_ACT_ERRNO",
                       defaultErrnoRet=errno.ENOSYS))
        return {"mkdir": _errno_of(os.mkdir, str(tmp_path / "d")), "pid": os.getpid() > 0}

    out, _ = _in_child(body)
    assert out == {"mkdir": errno.ENOSYS, "pid": True}


@needs_libseccomp
@pytest.mark.parametrize("action", ["SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL", "SCMP_ACT_TRAP"])
def test_kill_and_trap_end_the_child_with_sigsys(action):
    def body():
        _load(_profile(_rule(["getppid"], action)))
        os.getppid()
        return {"survived": True}

    out, status = _in_child(body)
    assert out == {}
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS


@needs_libseccomp
def test_flags_and_architectures_load(tmp_path):
    def body():
        _load(_profile(_rule(["mkdir", "mkdirat"]), flags=[
            "SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
            "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"],
            architectures=["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32",
                           "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]))
        return {"mkdir": _errno_of(os.mkdir, str(tmp_path / "d"))}

    out, _ = _in_child(body)
    assert out == {"mkdir": errno.EPERM}


@needs_libseccomp
def test_without_no_new_privs_or_cap_sys_admin_load_says_what_to_do():
    def body():
        capabilities.capset(0, 0, 0)  # no effective CAP_SYS_ADMIN, as after the runtime drops caps
        _load(_profile(_rule(["mkdir"])), nnp=False)
        return {"loaded": True}

    out, _ = _in_child(body)
    assert out.get("exception") == "RuntimeFailure", out
    assert "cannot load the filter: Permission denied" in out["message"]
    assert "CAP_SYS_ADMIN" in out["message"]


@needs_libseccomp
@pytest.mark.skipif(os.geteuid() != 0, reason="needs CAP_SYS_ADMIN")
def test_without_no_new_privs_cap_sys_admin_loads(tmp_path):
    def body():
        _load(_profile(_rule(["mkdir", "mkdirat"])), nnp=False)
        nnp = prctl.prctl(prctl.PR_GET_NO_NEW_PRIVS)
        return {"mkdir": _errno_of(os.mkdir, str(tmp_path / "d")), "nnp": nnp}

    out, _ = _in_child(body)
    assert out == {"mkdir": errno.EPERM, "nnp": 0}  # libseccomp did not set no_new_privs
