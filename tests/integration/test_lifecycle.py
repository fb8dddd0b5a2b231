"""create / start / state / kill / delete, list, --pid-file, ps, pause / resume."""

from __future__ import annotations

import json
import os
import signal

import pytest
import support

pytestmark = pytest.mark.root

# PID 1 of a pid namespace ignores signals it has no handler for: the program traps TERM
WAITER = ("trap 'echo TERM >> /w/signals; exit 0' TERM; trap 'echo USR1 >> /w/signals' USR1; "
          "touch /w/started; while :; do sleep 0.05; done")


def lifecycle_bundle(bundle, hostdir, program=WAITER):
    d = hostdir("life")
    b = bundle(["sh", "-c", program])
    b.add_bind(d, "/w")
    return b, d


def test_create_start_state_kill_delete(runtime, bundle, hostdir):
    b, d = lifecycle_bundle(bundle, hostdir)
    cid = runtime.new_id("life")
    runtime.create(cid, b)

    st = runtime.state(cid)
    assert st["status"] == "created"
    assert st["id"] == cid
    assert os.path.realpath(st["bundle"]) == os.path.realpath(b.path)
    assert st["pid"] > 0 and support.pid_alive(st["pid"])
    assert st.get("created")
    assert not (d / "started").exists(), "the program ran before start"
    pid = st["pid"]
    assert support.proc_status(pid, "NSpid").split()[-1] == "1"

    runtime.ok("start", cid)
    support.wait_for(lambda: (d / "started").exists(), what="the program to start")
    st = runtime.state(cid)
    assert st["status"] == "running" and st["pid"] == pid

    runtime.ok("kill", cid, "TERM")
    support.wait_for(lambda: not support.pid_alive(pid), what="the init to exit")
    assert (d / "signals").read_text().split() == ["TERM"]
    assert runtime.status(cid) == "stopped"

    assert support.cgroup_dirs(cid), "the cgroup went away before delete"
    runtime.ok("delete", cid)
    assert not (runtime.root / cid).exists()
    assert support.cgroup_dirs(cid) == []
    if runtime.is_kobako:
        assert not os.path.exists(f"/sys/fs/cgroup/pids/kobako/{cid}")
    cp = runtime("state", cid)
    support.assert_clean_error(cp, cid)


def test_start_twice_fails(runtime, bundle, hostdir):
    b, d = lifecycle_bundle(bundle, hostdir)
    cid = runtime.new_id("twice")
    runtime.create(cid, b)
    runtime.ok("start", cid)
    support.wait_for(lambda: (d / "started").exists(), what="the program to start")
    support.assert_clean_error(runtime("start", cid))
    assert runtime.status(cid) == "running"


def test_stopped_after_the_program_exits(runtime, bundle, hostdir):
    b, d = lifecycle_bundle(bundle, hostdir, "touch /w/started; exit 3")
    cid = runtime.new_id("exit")
    runtime.create(cid, b)
    runtime.ok("start", cid)
    support.wait_for(lambda: runtime.status(cid) == "stopped", what="stopped")
    assert (d / "started").exists()
    runtime.ok("delete", cid)
    assert support.cgroup_dirs(cid) == []


def test_default_kill_signal_is_term(runtime, bundle, hostdir):
    b, d = lifecycle_bundle(bundle, hostdir)
    cid, pid = runtime.start_container(b, "killdef")
    support.wait_for(lambda: (d / "started").exists(), what="start")
    runtime.ok("kill", cid)
    support.wait_for(lambda: not support.pid_alive(pid), what="exit on TERM")
    assert (d / "signals").read_text().split() == ["TERM"]


@pytest.mark.parametrize("form", ["SIGUSR1", "USR1", str(int(signal.SIGUSR1))])
def test_kill_signal_forms_reach_the_program(runtime, bundle, hostdir, form):
    b, d = lifecycle_bundle(bundle, hostdir)
    cid, pid = runtime.start_container(b, "killusr")
    support.wait_for(lambda: (d / "started").exists(), what="start")
    runtime.ok("kill", cid, form)
    support.wait_for(lambda: (d / "signals").exists(), what="USR1 to arrive")
    assert (d / "signals").read_text().split() == ["USR1"]
    assert support.pid_alive(pid)


@pytest.mark.parametrize("form", ["KILL", "9", "SIGKILL"])
def test_kill_with_sigkill(runtime, bundle, hostdir, form):
    b, d = lifecycle_bundle(bundle, hostdir)
    cid, pid = runtime.start_container(b, "kill9")
    support.wait_for(lambda: (d / "started").exists(), what="start")
    runtime.ok("kill", cid, form)
    support.wait_for(lambda: not support.pid_alive(pid), what="SIGKILL")
    assert runtime.status(cid) == "stopped"
    assert not (d / "signals").exists()
    runtime.ok("delete", cid)
    assert support.cgroup_dirs(cid) == []


def test_kill_unknown_signal(runtime, running):
    cid, pid, _ = running
    support.assert_clean_error(runtime("kill", cid, "SIGNOPE"))
    assert support.pid_alive(pid)


def test_kill_all(runtime, bundle, hostdir):
    b, d = lifecycle_bundle(bundle, hostdir, "sleep 300 & sleep 300 & touch /w/started; wait")
    cid, pid = runtime.start_container(b, "killall")
    support.wait_for(lambda: (d / "started").exists() and len(support.cgroup_pids(cid)) >= 3,
                     what="three processes")
    procs = support.cgroup_pids(cid)
    runtime.ok("kill", "--all", cid, "KILL")
    support.wait_for(lambda: not any(support.pid_alive(p) for p in procs), what="every process to die")


def test_run_kills_what_is_left_in_a_cgroup_without_its_own_pid_namespace(runtime, bundle, hostdir):
    # with the host's pid namespace, the init's exit ends nothing else: the delete of `run`
    # finds the cgroup busy, kills what is in it and removes it
    d = hostdir("leftover")

    def host_pid(cfg):
        cfg["linux"]["namespaces"] = [n for n in cfg["linux"]["namespaces"] if n["type"] != "pid"]
    b = bundle(["sh", "-c", "sleep 300 & echo $! > /w/pid"], edit=host_pid)
    b.add_bind(d, "/w")
    cid = runtime.new_id("leftover")
    cp = runtime("run", "--bundle", b.path, cid)
    assert cp.returncode == 0, cp.stderr
    pid = int((d / "pid").read_text())
    support.wait_for(lambda: not support.pid_alive(pid), what="the sleep left behind to die")
    assert support.cgroup_dirs(cid) == []
    assert not (runtime.root / cid).exists()


def test_kill_a_stopped_container_fails(runtime, bundle, hostdir):
    b, d = lifecycle_bundle(bundle, hostdir, "true")
    cid = runtime.new_id("killstopped")
    runtime.create(cid, b)
    runtime.ok("start", cid)
    support.wait_for(lambda: runtime.status(cid) == "stopped", what="stopped")
    support.assert_clean_error(runtime("kill", cid, "KILL"))


def test_delete_a_running_container_needs_force(runtime, running):
    cid, pid, _ = running
    support.assert_clean_error(runtime("delete", cid))
    assert runtime.status(cid) == "running" and support.pid_alive(pid)
    runtime.ok("delete", "--force", cid)
    support.wait_for(lambda: not support.pid_alive(pid), what="the init to die")
    assert not (runtime.root / cid).exists()
    assert support.cgroup_dirs(cid) == []


def test_delete_a_created_container(runtime, bundle, hostdir):
    b, d = lifecycle_bundle(bundle, hostdir)
    cid = runtime.new_id("delcreated")
    runtime.create(cid, b)
    pid = runtime.state(cid)["pid"]
    runtime.ok("delete", cid)
    support.wait_for(lambda: not support.pid_alive(pid), what="the init to die")
    assert not (d / "started").exists()
    assert not (runtime.root / cid).exists()
    assert support.cgroup_dirs(cid) == []


def test_delete_force_of_unknown_container_succeeds(runtime):
    cp = runtime("delete", "--force", runtime.new_id("nothere"))
    assert cp.returncode == 0, cp.stderr


def test_delete_of_unknown_container_fails(runtime):
    cid = runtime.new_id("nothere")
    support.assert_clean_error(runtime("delete", cid), cid)


def test_pid_file(runtime, bundle, hostdir):
    b, d = lifecycle_bundle(bundle, hostdir)
    cid = runtime.new_id("pidfile")
    runtime.create(cid, b, "--pid-file", d / "init.pid")
    pid = int((d / "init.pid").read_text())
    assert pid == runtime.state(cid)["pid"]
    assert support.proc_status(pid, "NSpid").split()[-1] == "1"
    assert os.readlink(f"/proc/{pid}/ns/pid") != os.readlink("/proc/self/ns/pid")


def test_list(runtime, bundle, hostdir):
    b, d = lifecycle_bundle(bundle, hostdir)
    a = runtime.new_id("lista")
    runtime.create(a, b)
    c, cpid = runtime.start_container(lifecycle_bundle(bundle, hostdir)[0], "listb")
    table = runtime.ok("list").stdout.splitlines()
    assert table[0].split() == ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
    rows = {x.split()[0]: x.split() for x in table[1:]}
    assert set(rows) == {a, c}
    assert rows[a][2] == "created" and rows[c][2] == "running"
    assert rows[c][1] == str(cpid)
    data = json.loads(runtime.ok("list", "--format", "json").stdout)
    assert isinstance(data, list)
    by_id = {x["id"]: x for x in data}
    assert set(by_id) == {a, c}
    assert by_id[a]["status"] == "created" and by_id[c]["status"] == "running"
    assert by_id[c]["pid"] == cpid and by_id[a]["pid"] == runtime.state(a)["pid"]
    quiet = runtime.ok("list", "-q").stdout.split()
    assert sorted(quiet) == sorted([a, c])


def test_list_of_an_empty_root(runtime):
    data = json.loads(runtime.ok("list", "--format", "json").stdout or "null")
    assert data in ([], None)  # runc prints null for none


def test_ps(runtime, bundle, hostdir):
    b, d = lifecycle_bundle(bundle, hostdir, "sleep 300 & touch /w/started; wait")
    cid, pid = runtime.start_container(b, "ps")
    support.wait_for(lambda: (d / "started").exists() and len(support.cgroup_pids(cid)) >= 2, what="child")
    pids = json.loads(runtime.ok("ps", "--format", "json", cid).stdout)
    assert pid in pids
    assert set(pids) == support.cgroup_pids(cid)
    table = runtime.ok("ps", cid).stdout.splitlines()
    assert "PID" in table[0].split()
    col = table[0].split().index("PID")
    assert {int(x.split()[col]) for x in table[1:]} == set(pids)


def test_pause_and_resume(runtime, bundle, hostdir):
    ticker = "touch /w/started; while :; do date +%s%N > /w/tick; sleep 0.02; done"
    b, d = lifecycle_bundle(bundle, hostdir, ticker)
    cid, pid = runtime.start_container(b, "pause")
    support.wait_for(lambda: (d / "tick").exists(), what="ticks")
    runtime.ok("pause", cid)
    assert runtime.status(cid) == "paused"
    assert support.proc_status(pid, "State").startswith(("D", "S"))
    support.assert_clean_error(runtime("pause", cid))  # already paused
    runtime.ok("resume", cid)
    assert runtime.status(cid) == "running"
    before = (d / "tick").read_text()
    support.wait_for(lambda: (d / "tick").read_text() != before, what="ticks after resume")
    support.assert_clean_error(runtime("resume", cid))  # not paused


def test_delete_force_of_a_paused_container(runtime, running):
    cid, pid, _ = running
    runtime.ok("pause", cid)
    runtime.ok("delete", "--force", cid)
    support.wait_for(lambda: not support.pid_alive(pid), what="the init to die")
    assert not (runtime.root / cid).exists()
    assert support.cgroup_dirs(cid) == []


def test_state_of_unknown_container(runtime):
    cid = runtime.new_id("unknown")
    support.assert_clean_error(runtime("state", cid), cid)


def test_two_containers_from_one_bundle(runtime, bundle, hostdir):
    b, d = lifecycle_bundle(bundle, hostdir, "sleep 300")
    a, apid = runtime.start_container(b, "twin")
    c, cpid = runtime.start_container(b, "twin")
    assert apid != cpid
    assert os.readlink(f"/proc/{apid}/ns/pid") != os.readlink(f"/proc/{cpid}/ns/pid")
    runtime.ok("delete", "--force", a)
    assert runtime.status(c) == "running"


def test_run_detached(runtime, bundle, hostdir):
    b, d = lifecycle_bundle(bundle, hostdir)
    cid = runtime.new_id("rund")
    cp = runtime("run", "--detach", "--bundle", b.path, cid)
    assert cp.returncode == 0, cp.stderr
    support.wait_for(lambda: (d / "started").exists(), what="the program to start")
    st = runtime.state(cid)
    assert st["status"] == "running" and support.pid_alive(st["pid"])
    runtime.ok("kill", cid, "KILL")
    support.wait_for(lambda: runtime.status(cid) == "stopped", what="stopped")
    runtime.ok("delete", cid)
    assert support.cgroup_dirs(cid) == []


def test_annotations_appear_in_the_state(runtime, bundle):
    b = bundle(["sleep", "300"], edit={"annotations": {"org.example.key": "value", "other": ""}})
    cid = runtime.new_id("annot")
    runtime.create(cid, b)
    assert runtime.state(cid)["annotations"] == {"org.example.key": "value", "other": ""}


def test_exec_in_a_paused_container(runtime, running):
    cid, _, _ = running
    runtime.ok("pause", cid)
    try:
        support.assert_clean_error(runtime("exec", cid, "true", timeout=30))
    finally:
        runtime.ok("resume", cid)
    assert runtime.ok("exec", cid, "echo", "after").stdout == "after\n"


def test_kill_a_created_container(runtime, bundle, hostdir):
    b, d = lifecycle_bundle(bundle, hostdir)
    cid = runtime.new_id("killcreated")
    runtime.create(cid, b)
    pid = runtime.state(cid)["pid"]
    assert pid in support.cgroup_pids(cid), "the init is not in its cgroup after create"
    runtime.ok("kill", cid, "KILL")
    support.wait_for(lambda: not support.pid_alive(pid), what="the init to die")
    assert runtime.status(cid) == "stopped"
    assert not (d / "started").exists()
    runtime.ok("delete", cid)
    assert support.cgroup_dirs(cid) == []


def test_concurrent_creates_of_one_id(runtime, bundle):
    b = bundle(["sleep", "300"])
    cid = runtime.new_id("race")
    procs = [runtime.popen("create", "--bundle", b.path, cid) for _ in range(4)]
    codes = [p.wait(timeout=60) for p in procs]
    errs = [open(p.err_path).read() for p in procs]
    assert codes.count(0) == 1, f"exit codes {codes}: {errs}"
    assert not any("Traceback" in e for e in errs), errs
    st = runtime.state(cid)
    assert st["status"] == "created" and support.cgroup_pids(cid) == {st["pid"]}
    runtime.ok("delete", cid)
    assert support.cgroup_dirs(cid) == []


def test_default_bundle_is_the_working_directory(runtime, bundle):
    b = bundle(["echo", "from-cwd-bundle"])
    cp = runtime("run", runtime.new_id("cwdbundle"), cwd=b.path)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == "from-cwd-bundle\n"


def test_relative_bundle_path(runtime, bundle):
    b = bundle(["sleep", "300"])
    cid = runtime.new_id("relbundle")
    runtime.ok("create", "--bundle", b.path.name, cid, cwd=b.path.parent)
    assert os.path.realpath(runtime.state(cid)["bundle"]) == os.path.realpath(b.path)


def test_run_forwards_signals_to_the_container(runtime, bundle, hostdir):
    b, d = lifecycle_bundle(bundle, hostdir)
    cid = runtime.new_id("fwd")
    p = runtime.popen("run", "--bundle", b.path, cid)
    support.wait_for(lambda: (d / "started").exists() or p.poll() is not None, what="start")
    assert p.poll() is None, open(p.err_path).read()
    p.send_signal(signal.SIGUSR1)
    support.wait_for(lambda: (d / "signals").exists(), what="USR1 to be forwarded")
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=30) == 0  # the program's TERM trap exits 0
    assert (d / "signals").read_text().split() == ["USR1", "TERM"]
    assert not (runtime.root / cid).exists()
    assert support.cgroup_dirs(cid) == []


def test_large_output_is_complete(runtime, bundle):
    cp = runtime("run", "--bundle", bundle(["seq", "1", "300000"]).path, runtime.new_id("bigout"))
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == "".join(f"{i}\n" for i in range(1, 300001))


@pytest.mark.parametrize("code", [1, 42, 255])
def test_exit_codes(runtime, bundle, code):
    cp = runtime("run", "--bundle", bundle(["sh", "-c", f"exit {code}"]).path, runtime.new_id("code"))
    assert cp.returncode == code


def test_long_id(runtime, bundle):
    """200 characters: it works, or fails in one clean line with nothing left."""
    cid = support.SESSION.tag + "-" + "l" * 190
    runtime.ids.append(cid)
    b = bundle(["sleep", "300"])
    cp = runtime("create", "--bundle", b.path, cid)
    if cp.returncode != 0:
        support.assert_clean_error(cp)
        assert not (runtime.root / cid).exists()
        assert support.cgroup_dirs(cid) == []
        return
    runtime.ok("start", cid)
    assert runtime.status(cid) == "running"
    runtime.ok("delete", "--force", cid)
    assert support.cgroup_dirs(cid) == []


def test_id_too_long_for_a_file_name(runtime, bundle):
    cid = support.SESSION.tag + "-" + "x" * 300
    runtime.ids.append(cid)
    cp = runtime("create", "--bundle", bundle(["true"]).path, cid)
    support.assert_clean_error(cp)
    assert os.listdir(runtime.root) == []
    assert support.cgroup_dirs(cid) == []
