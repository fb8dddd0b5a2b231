"""The container's armour holds: what a Docker-like seccomp profile blocks is refused,
a capability that was dropped really is gone, and the runtime's own interpreter is not
writable from inside."""

from __future__ import annotations

import pytest
import support

pytestmark = pytest.mark.root

BLOCKED = ["unshare", "mount", "umount2", "keyctl", "add_key", "request_key", "ptrace", "personality",
           "setns", "pivot_root", "bpf", "perf_event_open", "kexec_load", "init_module", "reboot"]


def _docker_like(cfg):
    """Default ALLOW with Docker's blocked calls as ERRNO (EPERM): the shape that matters here."""
    cfg["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW",
                               "syscalls": [{"names": BLOCKED, "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}
    support.add_caps("CAP_SYS_ADMIN")(cfg)  # so only seccomp can be what refuses them


def test_blocked_syscalls_return_eperm_even_with_cap_sys_admin(runtime, bundle):
    script = ("unshare -n true 2>&1 | tail -1; mount -t tmpfs t /mnt 2>&1 | tail -1; "
              "grep ^Seccomp: /proc/self/status")
    b = bundle(["sh", "-c", script], edit=_docker_like)
    cp = runtime("run", "--bundle", b.path, runtime.new_id("arm"))
    lines = cp.stdout.splitlines()
    assert "Operation not permitted" in lines[0], cp.stdout + cp.stderr
    assert "Operation not permitted" in lines[1] or "denied" in lines[1].lower(), cp.stdout
    assert lines[2] == "Seccomp:\t2"


def test_without_seccomp_cap_sys_admin_can_unshare(runtime, bundle):
    """The control for the test above: the refusal came from the filter."""
    b = bundle(["sh", "-c", "unshare -n true && echo unshared"], edit=support.add_caps("CAP_SYS_ADMIN"))
    cp = runtime("run", "--bundle", b.path, runtime.new_id("ctl"))
    assert "unshared" in cp.stdout, cp.stdout + cp.stderr


def test_dropped_cap_chown_really_fails(runtime, bundle):
    # the default spec keeps only AUDIT_WRITE, KILL, NET_BIND_SERVICE: no CAP_CHOWN
    b = bundle(["sh", "-c", "touch /tmp/f; chown 1:1 /tmp/f 2>&1; echo rc=$?"])
    cp = runtime("run", "--bundle", b.path, runtime.new_id("chown"))
    assert "rc=1" in cp.stdout and "not permitted" in cp.stdout.lower(), cp.stdout + cp.stderr


def test_granted_cap_chown_works(runtime, bundle):
    b = bundle(["sh", "-c", "touch /tmp/f; chown 1:1 /tmp/f && stat -c %u /tmp/f"],
               edit=support.add_caps("CAP_CHOWN"))
    cp = runtime("run", "--bundle", b.path, runtime.new_id("chown2"))
    assert cp.stdout.strip() == "1", cp.stdout + cp.stderr


def test_raw_socket_needs_cap_net_raw(runtime, bundle):
    # busybox ping opens a raw ICMP socket (no ping group range set in a fresh netns)
    script = "ping -c1 -W1 127.0.0.1 >/dev/null 2>&1; echo rc=$?"
    without = runtime("run", "--bundle", bundle(["sh", "-c", script]).path, runtime.new_id("raw"))
    with_cap = runtime("run", "--bundle", bundle(["sh", "-c", "ip link set lo up 2>/dev/null; " + script],
                                                 edit=support.add_caps("CAP_NET_RAW", "CAP_NET_ADMIN")).path,
                       runtime.new_id("raw2"))
    assert "rc=0" not in without.stdout, without.stdout
    assert "rc=0" in with_cap.stdout, with_cap.stdout + with_cap.stderr


def test_the_runtimes_interpreter_is_not_reachable_for_writing(runtime, bundle):
    """CVE-2019-5736 class: every process inside runs the container's own binary, and
    the host's python is nowhere in the container's view."""
    script = "for p in /proc/[0-9]*; do readlink $p/exe; done | sort -u; test -e /usr/bin/python3; echo py=$?"
    cp = runtime("run", "--bundle", bundle(["sh", "-c", script]).path, runtime.new_id("exe"))
    lines = cp.stdout.split()
    assert set(lines[:-1]) == {"/bin/busybox"}, cp.stdout + cp.stderr
    assert lines[-1] == "py=1"
