"""linux.seccomp on real containers: the filter holds for the init's program and
for exec'd processes, with and without no_new_privs."""

from __future__ import annotations

import os

import pytest
import support

pytestmark = pytest.mark.root

ARCH = {"x86_64": "SCMP_ARCH_X86_64", "aarch64": "SCMP_ARCH_AARCH64"}.get(os.uname().machine, "")


def _sec(nnp: bool = True, errno: int = 1):
    def edit(cfg):
        cfg["process"]["noNewPrivileges"] = nnp
        cfg["linux"]["seccomp"] = {
            "defaultAction": "SCMP_ACT_ALLOW", "architectures": [ARCH] if ARCH else [],
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno},
                         {"names": ["unshare"], "action": "SCMP_ACT_ERRNO"}]}
    return edit


@pytest.mark.parametrize("nnp", [True, False], ids=["no_new_privs", "without_no_new_privs"])
def test_blocked_syscall_returns_the_errno(runtime, bundle, nnp):
    script = "mkdir /tmp/d 2>&1; unshare -n true 2>&1; grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status"
    cp = runtime("run", "--bundle", bundle(["sh", "-c", script], edit=_sec(nnp)).path, runtime.new_id("sec"))
    assert cp.returncode == 0, cp.stderr
    assert "Operation not permitted" in cp.stdout.splitlines()[0]
    assert "Operation not permitted" in cp.stdout.splitlines()[1]
    assert "Seccomp:\t2" in cp.stdout
    assert f"NoNewPrivs:\t{int(nnp)}" in cp.stdout


def test_errno_ret_is_the_one_configured(runtime, bundle):
    cp = runtime("run", "--bundle", bundle(["sh", "-c", "mkdir /tmp/d 2>&1"], edit=_sec(errno=13)).path,
                 runtime.new_id("sec13"))
    assert "Permission denied" in cp.stdout, cp.stdout + cp.stderr


def test_a_filter_compiled_before_is_loaded_from_the_cache(runtime, bundle):
    # kobako-runtime keeps the compiled BPF under its root; the next container with the same
    # profile loads it with seccomp(2) itself, after pivot_root, where no library is in sight
    b = bundle(["sh", "-c", "mkdir /tmp/d 2>&1; grep ^Seccomp: /proc/self/status"], edit=_sec())
    for n in range(2):
        cp = runtime("run", "--bundle", b.path, runtime.new_id(f"seccache{n}"))
        assert cp.returncode == 0, cp.stderr
        assert "Operation not permitted" in cp.stdout and "Seccomp:\t2" in cp.stdout, cp.stdout + cp.stderr


def test_exec_runs_under_the_containers_filter(runtime, bundle):
    cid, _ = runtime.start_container(bundle(["sleep", "60"], edit=_sec()), "secx")
    cp = runtime("exec", cid, "sh", "-c", "mkdir /tmp/e 2>&1; grep ^Seccomp: /proc/self/status")
    assert "Operation not permitted" in cp.stdout and "Seccomp:\t2" in cp.stdout, cp.stdout + cp.stderr
    runtime.ok("kill", cid, "KILL")


@pytest.mark.parametrize("sec,word", [
    ({"defaultAction": "SCMP_ACT_FOO"}, "SCMP_ACT_FOO"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]},
     "SCMP_ACT_NOTIFY"),
    ({"defaultAction": "SCMP_ACT_ALLOW",
      "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "op": "BAD"}]}]},
     "BAD"),
])
def test_bad_seccomp_fails_cleanly(runtime, bundle, sec, word):
    support.lacks("runc crun", "their wording differs")
    cid = runtime.new_id("badsec")
    b = bundle(["true"], edit={"linux.seccomp": sec})
    support.assert_clean_error(runtime("run", "--bundle", b.path, cid), word)
    assert not (runtime.root / cid).exists()
    assert support.cgroup_dirs(cid) == []
