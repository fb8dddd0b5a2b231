"""kobako/steps.py: undo order, every undo run, the diagnosis before unwinding, fault-point
names, the trace line."""

from __future__ import annotations

import os

import pytest

from kobako import steps
from kobako.errors import InvalidArgument
from kobako.runtime.container import _oom_during_create


def test_unwind_runs_every_undo_newest_first_and_attaches_their_errors():
    done = []
    r = steps.Record("engine")
    r.made("a", "mkdir(2)", "a", lambda: done.append("a"))
    r.made("b", "mkdir(2)", "b", lambda: (_ for _ in ()).throw(OSError("busy")))
    r.made("c", "mkdir(2)", "c", lambda: done.append("c"))
    err = RuntimeError("step d failed")
    errs = r.unwind(err)
    assert done == ["c", "a"]  # b's failure did not stop a's undo
    assert errs == ["undo b: busy"]
    assert err.__notes__ == ["while undoing: undo b: busy"]
    assert r.unwind() == []  # nothing twice


def test_forget_hands_the_objects_to_their_owner():
    r = steps.Record("engine")
    r.made("a", "mkdir(2)", "a", lambda: pytest.fail("undone after forget"))
    r.forget()
    assert r.unwind(RuntimeError("later")) == []


def test_the_diagnosis_is_asked_first_and_becomes_the_hint():
    seen = []
    r = steps.Record("runtime")
    r.made("cg", "mkdir(2)", "cgroup", lambda: seen.append("undone"))
    r.diagnose(lambda: (_ for _ in ()).throw(OSError("gone")))  # a failing question is no answer
    r.diagnose(lambda: "the memory limit is too small" if not seen else None)
    err = InvalidArgument("the init exited during create")
    r.unwind(err)
    assert err.hint == "the memory limit is too small"
    assert str(err) == "the init exited during create (the memory limit is too small)"
    plain = ValueError("x")
    r2 = steps.Record("runtime")
    r2.diagnose(lambda: "why")
    r2.unwind(plain)
    assert plain.__notes__ == ["why"]


def test_a_repeated_step_name_is_numbered():
    r = steps.Record("init")
    assert [r.point("mount"), r.point("mount"), r.point("pivot_root")] == \
        ["init:mount", "init:mount#2", "init:pivot_root"]


def test_trace_lines_go_to_the_sink_only_when_tracing():
    rfd, wfd = os.pipe()
    try:
        r = steps.Record("network")
        r.made("veth", "netlink RTM_NEWLINK veth", "veth pair kb-1 <-> eth0")  # not tracing: nothing
        steps.trace_to(wfd)
        r.made("address", "netlink RTM_NEWADDR", "10.88.0.2/16 on eth0")
        steps.show("network", "undo: umount2(2)", "netns unmounted")
    finally:
        steps.trace_to(-1)
        os.close(wfd)
    out = os.read(rfd, 65536).decode()
    os.close(rfd)
    lines = out.splitlines()
    assert len(lines) == 2
    assert "network" in lines[0] and "RTM_NEWADDR" in lines[0] and "[network:address]" in lines[0]
    assert "undo: umount2(2)" in lines[1]


def test_the_oom_diagnosis_reads_the_cgroup(tmp_path):
    leaf = tmp_path / "memory"
    leaf.mkdir()
    (leaf / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 0\n")
    rec = {"layout": "hybrid", "leaves": [{"v": 1, "ctrls": "memory", "dir": str(leaf)}]}
    assert _oom_during_create(rec, {"memory": {"limit": 6 << 20}}) is None
    (leaf / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 1\n")
    why = _oom_during_create(rec, {"memory": {"limit": 6 << 20}})
    assert why is not None and "memory limit (6291456 bytes) is too small" in why


def test_the_bottom_module_imports_nothing_of_kobako():
    import ast
    tree = ast.parse(open(steps.__file__).read())
    mods = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    mods += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not [m for m in mods if m.startswith("kobako")], mods
