"""OCI runtime-spec conformance: Linux-specific config (config-linux.md, runtime-linux.md).

Namespaces, maskedPaths/readonlyPaths, sysctl, devices, seccomp and one cgroup
resource (pids.limit). Where the spec is silent, runc's behaviour is the reference.
"""

from __future__ import annotations

import os

import oci_support
import pytest
import support

pytestmark = pytest.mark.root


def run(runtime, bundle, script, edit=None, tag="l"):
    return oci_support.run_sh(runtime, bundle, script, edit, tag)


def drop_ns(typ):
    def edit(cfg):
        cfg["linux"]["namespaces"] = [n for n in cfg["linux"]["namespaces"] if n["type"] != typ]
    return edit


# -- namespaces -------------------------------------------------------------------------------


@pytest.mark.parametrize("typ,link", [("pid", "pid"), ("network", "net"), ("ipc", "ipc"), ("uts", "uts"),
                                      ("mount", "mnt")])
def test_listed_namespace_is_new(runtime, bundle, typ, link):
    """config-linux.md#namespaces: for each listed namespace without a path the runtime
    MUST create a new namespace of that type."""
    out = run(runtime, bundle, f"readlink /proc/self/ns/{link}")
    assert out.strip() != os.readlink(f"/proc/self/ns/{link}")


def test_unlisted_namespace_is_inherited(runtime, bundle):
    """config-linux.md#namespaces: a type not in the namespaces array MUST be inherited
    from the runtime (here: network)."""
    out = run(runtime, bundle, "readlink /proc/self/ns/net", edit=drop_ns("network"))
    assert out.strip() == os.readlink("/proc/self/ns/net")


def test_namespace_path_is_joined(runtime, bundle):
    """config-linux.md#namespaces: with a path the runtime MUST place the container
    process in that namespace (here: another container's network namespace)."""
    first = bundle(["sleep", "300"])
    cid, pid = runtime.start_container(first, "nsowner")
    want = os.readlink(f"/proc/{pid}/ns/net")

    def edit(cfg):
        for n in cfg["linux"]["namespaces"]:
            if n["type"] == "network":
                n["path"] = f"/proc/{pid}/ns/net"
    assert run(runtime, bundle, "readlink /proc/self/ns/net", edit=edit).strip() == want


def test_pid_namespace_init_is_pid_1(runtime, bundle):
    """runtime-linux.md / config-linux.md#namespaces: in a new pid namespace the
    container process is its pid 1."""
    assert run(runtime, bundle, "echo $$").strip() == "1"


# -- masked and read-only paths -----------------------------------------------------------------


def test_masked_paths(runtime, bundle):
    """config-linux.md#masked-paths: the runtime MUST mask the listed paths so that they
    cannot be read (a file reads empty, a directory lists empty)."""
    out = run(runtime, bundle, "wc -c < /proc/version; ls /sys/firmware | wc -l",
              edit={"linux.maskedPaths": ["/proc/version", "/sys/firmware"]})
    assert out.split() == ["0", "0"]


def test_readonly_paths(runtime, bundle):
    """config-linux.md#readonly-paths: the runtime MUST make the listed paths read-only."""
    out = run(runtime, bundle, "echo 1 > /proc/sys/kernel/ns_last_pid 2>/dev/null && echo rw || echo ro; "
              "grep ' /proc/sys ' /proc/self/mounts",
              edit={"linux.readonlyPaths": ["/proc/sys"]})
    lines = out.splitlines()
    assert lines[0] == "ro"
    assert "ro" in lines[-1].split()[3].split(",")


# -- sysctl -------------------------------------------------------------------------------------


def test_sysctl(runtime, bundle):
    """config-linux.md#sysctl: the runtime MUST set the listed kernel parameters in the
    container's namespaces."""
    out = run(runtime, bundle, "cat /proc/sys/net/ipv4/ip_unprivileged_port_start /proc/sys/kernel/msgmax",
              edit={"linux.sysctl": {"net.ipv4.ip_unprivileged_port_start": "99", "kernel.msgmax": "12345"}})
    assert out.split() == ["99", "12345"]
    with open("/proc/sys/kernel/msgmax") as f:
        assert f.read().strip() != "12345", "the sysctl leaked to the host"


# -- devices ------------------------------------------------------------------------------------

DEFAULT_DEVICES = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8), "urandom": (1, 9),
                   "tty": (5, 0)}


def test_default_devices(runtime, bundle):
    """config-linux.md#default-devices: the runtime MUST supply /dev/null, zero, full,
    random, urandom, tty (char devices with their standard numbers, usable by anyone)
    and /dev/ptmx."""
    script = ("for d in null zero full random urandom tty; do stat -c '%n %F %t %T %a' /dev/$d; done; "
              "[ -e /dev/ptmx ] && echo ptmx")
    lines = run(runtime, bundle, script).splitlines()
    seen = {}
    for line in lines[:-1]:
        name, rest = line.split(" ", 1)
        kind, major, minor, mode = rest.rsplit(" ", 3)
        seen[os.path.basename(name)] = (kind, int(major, 16), int(minor, 16), int(mode, 8))
    for name, (major, minor) in DEFAULT_DEVICES.items():
        kind, ma, mi, mode = seen[name]
        assert kind == "character special file", (name, kind)
        assert (ma, mi) == (major, minor), name
        assert mode & 0o666 == 0o666, f"/dev/{name} mode {mode:o}"
    assert lines[-1] == "ptmx"


def test_default_dev_symlinks(runtime, bundle):
    """runtime-linux.md#dev-symbolic-links: /dev/fd, /dev/stdin, /dev/stdout and
    /dev/stderr MUST be links to /proc/self/fd, fd/0, fd/1 and fd/2."""
    out = run(runtime, bundle, "for l in fd stdin stdout stderr; do readlink /dev/$l; done")
    assert out.split() == ["/proc/self/fd", "/proc/self/fd/0", "/proc/self/fd/1", "/proc/self/fd/2"]


def test_default_devices_work(runtime, bundle):
    """config-linux.md#default-devices: the default devices are usable (null swallows,
    zero reads zeros) — the device cgroup allows them."""
    out = run(runtime, bundle, "echo x > /dev/null && head -c 3 /dev/zero | od -An -tx1")
    assert out.split() == ["00", "00", "00"]


def test_linux_devices_are_created(runtime, bundle):
    """config-linux.md#devices: each entry of linux.devices MUST be made available in the
    container with its type, major:minor, fileMode, uid and gid."""
    def edit(cfg):
        cfg["linux"]["devices"] = [{"path": "/dev/kbtest", "type": "c", "major": 1, "minor": 5,
                                    "fileMode": 0o620, "uid": 12, "gid": 34}]
        cfg["linux"]["resources"].setdefault("devices", []).append(
            {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "rwm"})
    out = run(runtime, bundle, "stat -c '%F %t %T %a %u %g' /dev/kbtest", edit=edit)
    assert out.strip() == "character special file 1 5 620 12 34"


# -- seccomp ------------------------------------------------------------------------------------


def test_seccomp_errno_rule(runtime, bundle):
    """config-linux.md#seccomp: the runtime MUST apply the filter: a syscall matched by a
    SCMP_ACT_ERRNO rule fails with errnoRet, others are allowed by the default action."""
    seccomp = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
               "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}
    out = run(runtime, bundle, "mkdir /tmp/d 2>&1; touch /tmp/f && echo touched",
              edit={"linux.seccomp": seccomp})
    assert "Permission denied" in out  # errno 13 = EACCES
    assert "touched" in out


def test_seccomp_blocking_getcwd_still_starts(runtime, bundle):
    """config-linux.md#seccomp: a filter loaded before the process starts (no
    noNewPrivileges: loaded while the runtime still holds CAP_SYS_ADMIN) that blocks
    getcwd must not stop the start; the program sees the blocked call fail."""
    seccomp = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
               "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}
    out = run(runtime, bundle, "cd /etc; echo started",
              edit={"linux.seccomp": seccomp, "process.noNewPrivileges": False, "process.cwd": "/tmp"})
    assert "started" in out


# -- cgroups ------------------------------------------------------------------------------------


def cgroup_file(pid: int, controller: str, name: str) -> str:
    with open(f"/proc/{pid}/cgroup") as f:
        lines = [x.rstrip("\n").split(":", 2) for x in f]
    for _, ctrls, path in lines:
        if controller in ctrls.split(","):
            return os.path.join(support.CGROUP_ROOT, controller, path.lstrip("/"), name)
    for _, ctrls, path in lines:
        if ctrls == "" and os.path.exists(os.path.join(support.CGROUP_ROOT, "cgroup.controllers")):
            return os.path.join(support.CGROUP_ROOT, path.lstrip("/"), name)
    raise AssertionError(f"no {controller} cgroup for pid {pid}")


def test_pids_limit(runtime, bundle):
    """config-linux.md#pids: linux.resources.pids.limit MUST be the container cgroup's
    pids.max (and so caps the number of tasks)."""
    b = bundle(["sleep", "300"], edit={"linux.resources.pids": {"limit": 7}})
    cid, pid = runtime.start_container(b, "pids")
    assert open(cgroup_file(pid, "pids", "pids.max")).read().strip() == "7"


def test_cgroups_path(runtime, bundle):
    """config-linux.md#cgroups-path: with cgroupsPath set the runtime MUST place the
    container in that cgroup (relative to the cgroup root)."""
    tag = support.SESSION.tag
    cid = runtime.new_id("cgpath")
    b = bundle(["sleep", "300"], edit={"linux.cgroupsPath": f"/{cid}"})
    runtime.create(cid, b)
    pid = runtime.state(cid)["pid"]
    path = cgroup_file(pid, "pids", "")
    assert path.rstrip("/").endswith(f"/{cid}") and tag in cid
