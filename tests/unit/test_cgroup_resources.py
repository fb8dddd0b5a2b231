"""linux.resources -> cgroup files, against a fake tree (no root needed)."""

from __future__ import annotations

import pytest

from kobako.runtime.cgroups import Manager, v1, v2
from kobako.runtime.errors import RuntimeFailure


def cgroupfs(d, *names: str) -> None:
    """The files a kernel's cgroup directory has: writes never create one (v1.write opens
    without O_CREAT, as cgroupfs needs)."""
    d.mkdir(exist_ok=True)
    for n in names:
        (d / n).touch()


def test_v2_conversions(tmp_path):
    cgroupfs(tmp_path, "cpu.max", "cpu.weight", "cpuset.cpus", "memory.max", "memory.low", "pids.max",
             "io.weight", "io.max")
    (tmp_path / "memory.swap.max").write_text("max")
    v2.apply(str(tmp_path), {
        "cpu": {"shares": 1024, "quota": 50000, "period": 100000, "cpus": "0-1"},
        "memory": {"limit": 64 << 20, "swap": 96 << 20, "reservation": 32 << 20},
        "pids": {"limit": 0},
        "blockIO": {"weight": 500, "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}]},
    })
    assert (tmp_path / "cpu.max").read_text() == "50000 100000"
    assert (tmp_path / "cpu.weight").read_text() == str(v2.shares_to_weight(1024)) == "39"
    assert (tmp_path / "cpuset.cpus").read_text() == "0-1"
    assert (tmp_path / "memory.max").read_text() == str(64 << 20)
    assert (tmp_path / "memory.swap.max").read_text() == str(32 << 20)  # OCI swap is memory+swap
    assert (tmp_path / "memory.low").read_text() == str(32 << 20)
    assert (tmp_path / "pids.max").read_text() == "max"
    assert (tmp_path / "io.weight").read_text() == str(v2.blkio_to_io_weight(500))
    assert (tmp_path / "io.max").read_text() == "8:0 rbps=1048576"


def test_v2_quota_lifted_is_max(tmp_path):
    cgroupfs(tmp_path, "cpu.max")
    v2.apply(str(tmp_path), {"cpu": {"quota": -1, "period": 100000}})
    assert (tmp_path / "cpu.max").read_text() == "max 100000"


def test_v2_swap_below_memory_is_refused(tmp_path):
    cgroupfs(tmp_path, "memory.max", "memory.swap.max")
    with pytest.raises(RuntimeFailure, match="below the memory limit"):
        v2.apply(str(tmp_path), {"memory": {"limit": 64 << 20, "swap": 32 << 20}})


@pytest.mark.parametrize("name", ["cgroup.procs", "../memory.max", "cgroup.subtree_control", "foo"])
def test_unified_refuses_files_that_are_not_a_controllers(name):
    with pytest.raises(RuntimeFailure):
        v2.validate_unified({name: "1"})


def test_v1_writes_only_what_each_hierarchy_takes(tmp_path):
    mem, pids = tmp_path / "memory", tmp_path / "pids"
    cgroupfs(mem)
    cgroupfs(pids, "pids.max")
    (mem / "memory.limit_in_bytes").write_text("0")  # the memory pair is written only where present
    res = {"memory": {"limit": 64 << 20}, "pids": {"limit": 7}}
    v1.apply({"memory"}, str(mem), res)
    v1.apply({"pids"}, str(pids), res)
    assert (mem / "memory.limit_in_bytes").read_text() == str(64 << 20)
    assert not (mem / "pids.max").exists()
    assert (pids / "pids.max").read_text() == "7"


def test_v1_device_rules_deny_all_replay_then_defaults(tmp_path):
    writes = []
    rules = [{"allow": False, "access": "rwm"},
             {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "rw"}]
    orig = v1.write
    try:
        v1.write = lambda d, name, value: writes.append((name, value))
        v1.apply_devices(str(tmp_path), rules)
    finally:
        v1.write = orig
    assert writes[0] == ("devices.deny", "a")
    assert writes[1] == ("devices.deny", "a")
    assert writes[2] == ("devices.allow", "c 1:5 rw")
    assert ("devices.allow", "c 1:3 rwm") in writes[3:]  # /dev/null always works, as in runc


def test_device_rule_wildcards():
    rule = {"allow": True, "type": "c", "major": 136, "access": "rwm"}
    assert v1.device_rule(rule) == (True, "c 136:* rwm")
    assert v1.device_rule({"allow": False}) == (False, "a")


def test_hybrid_applies_only_hugetlb_and_unified_to_cgroup2(tmp_path):
    cgroupfs(tmp_path / "pids", "pids.max")
    cgroupfs(tmp_path / "unified", "memory.high")
    m = Manager({"layout": "hybrid", "path": "/x", "dirs": [], "leaves": [
        {"dir": str(tmp_path / "pids"), "v": 1, "ctrls": "pids", "mount": str(tmp_path / "pids")},
        {"dir": str(tmp_path / "unified"), "v": 2, "ctrls": "", "mount": str(tmp_path / "unified")}]})
    m.apply({"pids": {"limit": 5}, "unified": {"memory.high": "100"}})
    assert (tmp_path / "pids" / "pids.max").read_text() == "5"
    assert not (tmp_path / "unified" / "pids.max").exists()
    assert (tmp_path / "unified" / "memory.high").read_text() == "100"
