"""The cgroup v2 device filter: kobako's own eBPF program, loaded with bpf(2) and
attached to a cgroup, really denies what the rules deny. Runs wherever a cgroup2
mount takes BPF_CGROUP_DEVICE programs (the hybrid VM's /sys/fs/cgroup/unified too)."""

from __future__ import annotations

import os
import struct

import pytest

from kobako.runtime.cgroups import devices


def _cgroup2_mount() -> str | None:
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            if parts[parts.index("-") + 1] == "cgroup2":
                return parts[4]
    return None


@pytest.fixture
def cgroup():
    if os.geteuid() != 0:
        pytest.skip("needs root")
    mount = _cgroup2_mount()
    if not mount:
        pytest.skip("no cgroup2 mount")
    d = os.path.join(mount, f"kbt-devfilter-{os.getpid()}")
    os.mkdir(d)
    node = f"/tmp/kbt-devnode-{os.getpid()}"
    os.mknod(node, 0o666 | 0o020000, os.makedev(10, 237))  # loop-control: no default allows it
    yield d, node
    os.unlink(node)
    os.rmdir(d)  # the attached programs go with the cgroup


def _probe(d: str, paths: list[str]) -> list[str]:
    """Open each path from a child placed in the cgroup; 'ok' or the error."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            with open(os.path.join(d, "cgroup.procs"), "w") as f:
                f.write("0")
            out = []
            for p in paths:
                try:
                    os.close(os.open(p, os.O_RDONLY))
                    out.append("ok")
                except OSError as e:
                    out.append(e.strerror)
            os.write(w, "|".join(out).encode())
        finally:
            os._exit(0)
    os.close(w)
    data = os.read(r, 4096).decode()
    os.close(r)
    os.waitpid(pid, 0)
    return data.split("|")


DENY_ALL_ALLOW_ZERO = [{"allow": False, "access": "rwm"},
                       {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "rwm"}]


def test_denied_device_cannot_be_opened_allowed_one_can(cgroup):
    d, node = cgroup
    devices.apply_v2(d, DENY_ALL_ALLOW_ZERO)
    zero, other, null = _probe(d, ["/dev/zero", node, "/dev/null"])
    assert zero == "ok"
    assert other == "Operation not permitted"
    assert null == "ok"  # runc's default devices stay allowed whatever the rules say


def test_new_rules_replace_the_program_not_stack_on_it(cgroup):
    d, node = cgroup
    devices.apply_v2(d, DENY_ALL_ALLOW_ZERO)
    assert len(devices.attached(d)) == 1
    devices.apply_v2(d, [{"allow": False, "access": "rwm"},
                         {"allow": True, "type": "c", "major": 10, "minor": 237, "access": "r"}])
    assert len(devices.attached(d)) == 1
    assert _probe(d, [node]) == ["ok"]


def test_access_bits_are_checked(cgroup):
    d, node = cgroup
    devices.apply_v2(d, [{"allow": False, "access": "rwm"},
                         {"allow": True, "type": "c", "major": 10, "minor": 237, "access": "w"}])
    assert _probe(d, [node]) == ["Operation not permitted"]  # read asked, only write allowed


def test_last_matching_rule_wins(cgroup):
    d, node = cgroup
    devices.apply_v2(d, [{"allow": True, "type": "c", "major": 10, "access": "rwm"},
                         {"allow": False, "type": "c", "major": 10, "minor": 237, "access": "rwm"}])
    assert _probe(d, [node]) == ["Operation not permitted"]


def test_program_shape():
    prog = devices.assemble([{"allow": False, "access": "rwm"}])
    assert len(prog) % 8 == 0
    codes = [prog[i] for i in range(0, len(prog), 8)]
    assert codes[0] == devices.LDX_W and codes[-1] == devices.EXIT
    # the deny-all rule matches everything: nothing after it (the verifier refuses dead code)
    last_mov = struct.unpack("<BBhi", prog[-16:-8])
    assert last_mov[0] == devices.MOV32_K and last_mov[3] == 0
