"""cgroups: path rules, and Manager.create/remove/freeze against a fake tree."""

from __future__ import annotations

import os

import pytest

from kobako.runtime import cgroups
from kobako.runtime.cgroups import Manager, resolve_path
from kobako.runtime.errors import RuntimeFailure


@pytest.mark.parametrize("given,cid,want", [
    (None, "abc", "/kobako/abc"),
    ("", "abc", "/kobako/abc"),
    ("/a/b", "x", "/a/b"),
    ("/a/b/", "x", "/a/b"),
    ("a//b", "x", "/a/b"),
    ("//a///b//", "x", "/a/b"),
    ("relative/path", "x", "/relative/path"),
    ("/a/b.c-d_e", "x", "/a/b.c-d_e"),
])
def test_resolve_path(given, cid, want):
    assert resolve_path(given, cid) == want


@pytest.mark.parametrize("bad", ["/a/../b", "..", "../x", "/a/..", "a/../../etc"])
def test_resolve_path_refuses_dotdot(bad):
    with pytest.raises(RuntimeFailure, match=r"\.\."):
        resolve_path(bad, "x")


@pytest.mark.parametrize("bad", ["system.slice:kobako:abc", "user.slice:x:y"])
def test_resolve_path_refuses_systemd_form(bad):
    with pytest.raises(RuntimeFailure, match="systemd"):
        resolve_path(bad, "x")


def test_resolve_path_colon_in_absolute_path_is_a_path():
    assert resolve_path("/a:b", "x") == "/a:b"


def _manager(tmp_path, hier=("pids", "memory"), path="/kobako/c1", v2=False):
    leaves = []
    for h in hier:
        (tmp_path / h).mkdir(exist_ok=True)
        leaves.append({"dir": str(tmp_path / h) + path, "v": 1, "ctrls": h, "mount": str(tmp_path / h)})
    if v2:
        (tmp_path / "unified").mkdir(exist_ok=True)
        leaves.append({"dir": str(tmp_path / "unified") + path, "v": 2, "ctrls": "",
                       "mount": str(tmp_path / "unified")})
    return Manager({"layout": "hybrid" if v2 else "v1", "path": path, "leaves": leaves, "dirs": []})


def test_create_records_every_dir_before_making_it(tmp_path):
    mgr = _manager(tmp_path)
    seen = []

    def record():
        seen.append(list(mgr.rec["dirs"]))
        assert not any(os.path.exists(d) for d in mgr.rec["dirs"]), "made before it was recorded"

    mgr.create(record)
    assert len(seen) == 1
    want = {str(tmp_path / h / p) for h in ("pids", "memory") for p in ("kobako", "kobako/c1")}
    assert set(seen[0]) == want
    assert all(os.path.isdir(d) for d in want)


def test_create_only_records_what_it_makes(tmp_path):
    (tmp_path / "pids" / "kobako").mkdir(parents=True)
    mgr = _manager(tmp_path, hier=("pids",))
    mgr.create(lambda: None)
    assert mgr.rec["dirs"] == [str(tmp_path / "pids" / "kobako" / "c1")]


def test_remove_deepest_first_and_empty_parents(tmp_path):
    mgr = _manager(tmp_path, v2=True)
    mgr.create(lambda: None)
    assert mgr.remove() == []
    for h in ("pids", "memory", "unified"):
        assert not (tmp_path / h / "kobako").exists()
        assert (tmp_path / h).is_dir()  # never above what it made


def test_remove_leaves_a_shared_parent_without_error(tmp_path):
    mgr = _manager(tmp_path)
    mgr.create(lambda: None)
    (tmp_path / "pids" / "kobako" / "other").mkdir()
    assert mgr.remove() == []
    assert not (tmp_path / "pids" / "kobako" / "c1").exists()
    assert (tmp_path / "pids" / "kobako" / "other").is_dir()


def test_remove_reports_a_leaf_it_cannot_remove(tmp_path):
    mgr = _manager(tmp_path, hier=("pids", "memory"))
    mgr.create(lambda: None)
    (tmp_path / "pids" / "kobako" / "c1" / "stuck").write_text("x")  # ENOTEMPTY, as a busy cgroup
    errors = mgr.remove()
    assert len(errors) == 1 and "c1" in errors[0]
    assert not (tmp_path / "memory" / "kobako").exists()  # the others are still removed


def test_remove_twice_is_harmless(tmp_path):
    mgr = _manager(tmp_path)
    mgr.create(lambda: None)
    assert mgr.remove() == []
    assert mgr.remove() == []


def test_remove_never_touches_unrecorded_dirs(tmp_path):
    (tmp_path / "pids" / "kobako" / "c1").mkdir(parents=True)
    mgr = _manager(tmp_path, hier=("pids",))
    mgr.create(lambda: None)  # everything existed: nothing is ours
    assert mgr.rec["dirs"] == []
    assert mgr.remove() == []
    assert (tmp_path / "pids" / "kobako" / "c1").is_dir()


def test_pids_merges_every_hierarchy(tmp_path):
    mgr = _manager(tmp_path)
    mgr.create(lambda: None)
    (tmp_path / "pids" / "kobako" / "c1" / "cgroup.procs").write_text("10\n11\n")
    (tmp_path / "memory" / "kobako" / "c1" / "cgroup.procs").write_text("11\n12\n")
    assert mgr.pids() == [10, 11, 12]


def test_join_self_writes_0_to_tasks_on_v1_and_cgroup_procs_on_v2(tmp_path):
    """v1: "0" in `tasks` moves only the calling thread, which skips the kernel's global
    threadgroup lock (an RCU grace period per start); v2 has only cgroup.procs."""
    mgr = _manager(tmp_path, v2=True)
    mgr.create(lambda: None)
    mgr.join_self()
    for h in ("pids", "memory"):
        assert (tmp_path / h / "kobako" / "c1" / "tasks").read_text() == "0"
        assert not (tmp_path / h / "kobako" / "c1" / "cgroup.procs").exists()
    assert (tmp_path / "unified" / "kobako" / "c1" / "cgroup.procs").read_text() == "0"


def test_join_self_of_a_missing_cgroup_is_a_clear_error(tmp_path):
    mgr = _manager(tmp_path)
    with pytest.raises(RuntimeFailure, match="cannot join cgroup .*kobako/c1"):
        mgr.join_self()


def test_v1_freezer(tmp_path):
    mgr = _manager(tmp_path, hier=("freezer",))
    mgr.create(lambda: None)
    state = tmp_path / "freezer" / "kobako" / "c1" / "freezer.state"
    state.write_text("THAWED\n")
    assert not mgr.frozen()
    mgr.freeze(True)
    assert state.read_text() == "FROZEN" and mgr.frozen()
    mgr.freeze(False)
    assert state.read_text() == "THAWED" and not mgr.frozen()


def test_v2_freeze_waits_for_the_event(tmp_path):
    mgr = _manager(tmp_path, hier=(), v2=True)
    mgr.create(lambda: None)
    leaf = tmp_path / "unified" / "kobako" / "c1"
    (leaf / "cgroup.freeze").write_text("0\n")
    (leaf / "cgroup.events").write_text("populated 1\nfrozen 1\n")
    mgr.freeze(True)
    assert (leaf / "cgroup.freeze").read_text() == "1" and mgr.frozen()


def test_no_freezer_is_a_clear_error(tmp_path):
    mgr = _manager(tmp_path, hier=("pids",))
    mgr.create(lambda: None)
    assert not mgr.frozen()
    with pytest.raises(RuntimeFailure, match="freezer"):
        mgr.freeze(True)


def test_manager_for_state_without_cgroup():
    mgr = cgroups.manager_for({})
    assert mgr.pids() == [] and mgr.remove() == [] and not mgr.frozen()


def test_plan_on_this_host_puts_every_leaf_under_its_mount():
    v1, v2 = cgroups.mounts()
    if not v1 and not v2:
        pytest.skip("no cgroup filesystem here")
    mgr = Manager.plan(None, "unit-c1")
    assert mgr.rec["path"] == "/kobako/unit-c1"
    assert mgr.rec["leaves"], "no hierarchy found"
    for leaf in mgr.rec["leaves"]:
        assert leaf["dir"] == leaf["mount"] + "/kobako/unit-c1"
        assert leaf["dir"].startswith(cgroups.ROOT)
    assert mgr.rec["dirs"] == []


def test_cpuset_inherits_through_an_empty_shared_parent(tmp_path, monkeypatch):
    """A concurrent create made kobako/ and has not filled its cpuset yet: the container's
    level must still get the machine's sets (an empty cpuset refuses tasks with ENOSPC)."""
    from kobako.runtime import cgroups
    root = tmp_path / "cg"
    monkeypatch.setattr(cgroups, "ROOT", str(root))
    top, shared, leaf = root / "cpuset", root / "cpuset" / "kobako", root / "cpuset" / "kobako" / "c1"
    for d in (top, shared, leaf):
        d.mkdir(parents=True, exist_ok=True)
    (top / "cpuset.cpus").write_text("0-1\n")
    (top / "cpuset.mems").write_text("0\n")
    for d in (shared, leaf):
        (d / "cpuset.cpus").write_text("\n")
        (d / "cpuset.mems").write_text("\n")
    cgroups._inherit_cpuset(str(leaf))
    for d in (shared, leaf):
        assert (d / "cpuset.cpus").read_text() == "0-1"
        assert (d / "cpuset.mems").read_text() == "0"


def test_write_of_a_file_the_kernel_lacks_says_so_and_creates_nothing(tmp_path):
    """cgroupfs answers O_CREAT of a missing file with EACCES; without O_CREAT the error is
    ENOENT, which becomes "this kernel's cgroup has no ...". (A plain directory shows the
    difference: the old open(..., "w") made the file.)"""
    from kobako.runtime.cgroups.v1 import write
    with pytest.raises(RuntimeFailure, match="has no hugetlb.1GB.limit_in_bytes"):
        write(str(tmp_path), "hugetlb.1GB.limit_in_bytes", 1)
    assert not os.listdir(tmp_path)
    (tmp_path / "pids.max").write_text("max")
    write(str(tmp_path), "pids.max", 10)
    assert (tmp_path / "pids.max").read_text() == "10"


@pytest.mark.parametrize("res,field", [
    ({"hugepageLimits": [{"pageSize": "2MB", "limit": 1 << 21}]}, "hugepageLimits"),
    ({"network": {"classID": 0x100001}}, "network.classID"),
    ({"network": {"priorities": [{"name": "eth0", "priority": 5}]}}, "network.priorities"),
])
def test_limits_no_controller_can_apply_are_refused(tmp_path, res, field):
    v1 = {"/sys/fs/cgroup/memory": "memory", "/sys/fs/cgroup/cpu,cpuacct": "cpu,cpuacct"}
    (tmp_path / "cgroup.controllers").write_text("memory pids\n")
    with pytest.raises(RuntimeFailure, match=f"{field} is set but this host has no"):
        cgroups._check_controllers(v1, str(tmp_path), res)
    with pytest.raises(RuntimeFailure, match="no such controller" if "network" in field else "mount the"):
        cgroups._check_controllers({}, str(tmp_path), res)


def test_limits_a_controller_can_apply_pass(tmp_path):
    (tmp_path / "cgroup.controllers").write_text("memory hugetlb\n")
    cgroups._check_controllers({"/x/net_cls,net_prio": "net_cls,net_prio"}, str(tmp_path), {
        "hugepageLimits": [{"pageSize": "2MB", "limit": 1 << 21}],
        "network": {"classID": 1, "priorities": [{"name": "eth0", "priority": 5}]}})
    cgroups._check_controllers({}, None, {"memory": {"limit": 1 << 20}})  # nothing asked: nothing read
