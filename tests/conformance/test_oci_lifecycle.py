"""OCI runtime-spec conformance: the lifecycle and the operations (runtime.md).

One test per MUST that can be checked from outside the runtime. Each docstring names
the spec section first. Where the spec is silent, runc's behaviour is the reference.
"""

from __future__ import annotations

import os
import re

import oci_support
import pytest
import support

pytestmark = pytest.mark.root

# PID 1 of a pid namespace ignores signals it has no handler for: the program traps TERM
WAITER = "trap 'exit 0' TERM; touch /w/started; while :; do sleep 0.05; done"


def life(bundle, hostdir, program=WAITER):
    d = hostdir("oci")
    b = bundle(["sh", "-c", program])
    b.add_bind(d, "/w")
    return b, d


def created(runtime, bundle, hostdir, program=WAITER, tag="c"):
    b, d = life(bundle, hostdir, program)
    cid = runtime.new_id(tag)
    runtime.create(cid, b)
    return cid, b, d


def started(runtime, bundle, hostdir, program=WAITER, tag="s"):
    cid, b, d = created(runtime, bundle, hostdir, program, tag)
    runtime.ok("start", cid)
    support.wait_for(lambda: (d / "started").exists(), what="the program to start")
    return cid, b, d


def stopped(runtime, bundle, hostdir, tag="x"):
    cid, b, d = created(runtime, bundle, hostdir, "touch /w/started", tag)
    runtime.ok("start", cid)
    support.wait_for(lambda: runtime.status(cid) == "stopped", what="stopped")
    return cid, b, d


# -- create -----------------------------------------------------------------------------------


def test_create_does_not_run_the_program(runtime, bundle, hostdir):
    """runtime.md#lifecycle step 2-4 / #create: create MUST NOT run the user-specified
    program; the container is left `created` with a live init."""
    cid, b, d = created(runtime, bundle, hostdir)
    st = runtime.state(cid)
    assert st["status"] == "created"
    assert support.pid_alive(st["pid"])
    assert not (d / "started").exists(), "the program ran before start"


def test_create_duplicate_id_fails(runtime, bundle, hostdir):
    """runtime.md#create: if the ID is not unique the runtime MUST generate an error
    and a new container MUST NOT be created (the first one is untouched)."""
    cid, b, d = created(runtime, bundle, hostdir)
    pid = runtime.state(cid)["pid"]
    b2, _ = life(bundle, hostdir)
    support.assert_clean_error(runtime("create", "--bundle", b2.path, cid))
    st = runtime.state(cid)
    assert st["status"] == "created" and st["pid"] == pid
    assert os.path.realpath(st["bundle"]) == os.path.realpath(b.path)


def test_create_with_an_unusable_config_fails_and_leaves_nothing(runtime, bundle):
    """runtime.md#create: if the runtime cannot create the container as specified in
    config.json it MUST generate an error and a new container MUST NOT be created."""
    b = bundle(["/bin/true"], edit={"root.path": "no-such-rootfs"})
    cid = runtime.new_id("badcfg")
    support.assert_clean_error(runtime("create", "--bundle", b.path, cid))
    support.assert_clean_error(runtime("state", cid))
    assert oci_support.cgroup_dirs(cid) == []


def test_config_changes_after_create_have_no_effect(runtime, bundle, hostdir):
    """runtime.md#create: any change made to config.json after create MUST NOT affect
    the container (start runs the program that was configured at create)."""
    cid, b, d = created(runtime, bundle, hostdir, "touch /w/original")
    b.config["process"]["args"] = ["sh", "-c", "touch /w/changed"]
    b.write()
    runtime.ok("start", cid)
    support.wait_for(lambda: runtime.status(cid) == "stopped", what="stopped")
    assert (d / "original").exists()
    assert not (d / "changed").exists()


def test_pid_file_names_the_init(runtime, bundle, hostdir):
    """runc reference (runtime.md is silent): create --pid-file F writes the host pid of
    the container's init, the same pid that state reports."""
    b, d = life(bundle, hostdir)
    cid = runtime.new_id("pidfile")
    runtime.create(cid, b, "--pid-file", d / "init.pid")
    pid = int((d / "init.pid").read_text().strip())
    assert pid == runtime.state(cid)["pid"]
    assert support.proc_status(pid, "NSpid").split()[-1] == "1"


# -- start ------------------------------------------------------------------------------------


def test_start_runs_the_program(runtime, bundle, hostdir):
    """runtime.md#start / #lifecycle step 8: start MUST run the user-specified program;
    the status becomes `running` with the same pid."""
    cid, b, d = created(runtime, bundle, hostdir)
    pid = runtime.state(cid)["pid"]
    runtime.ok("start", cid)
    support.wait_for(lambda: (d / "started").exists(), what="the program to start")
    st = runtime.state(cid)
    assert st["status"] == "running" and st["pid"] == pid


def test_start_of_a_running_container_fails(runtime, bundle, hostdir):
    """runtime.md#start: start of a container that is not `created` MUST have no effect
    and MUST generate an error (here: running)."""
    cid, b, d = started(runtime, bundle, hostdir)
    pid = runtime.state(cid)["pid"]
    support.assert_clean_error(runtime("start", cid))
    st = runtime.state(cid)
    assert st["status"] == "running" and st["pid"] == pid and support.pid_alive(pid)


def test_start_of_a_stopped_container_fails(runtime, bundle, hostdir):
    """runtime.md#start: start of a container that is not `created` MUST generate an
    error (here: stopped)."""
    cid, b, d = stopped(runtime, bundle, hostdir)
    (d / "started").unlink()
    support.assert_clean_error(runtime("start", cid))
    assert runtime.status(cid) == "stopped"
    assert not (d / "started").exists()


def test_start_of_an_unknown_container_fails(runtime):
    """runtime.md#start: start MUST generate an error if not given the ID of an
    existing container."""
    support.assert_clean_error(runtime("start", runtime.new_id("nothere")))


# -- state ------------------------------------------------------------------------------------


def test_state_fields(runtime, bundle, hostdir):
    """runtime.md#state: the state MUST include ociVersion, id, status, pid (on Linux,
    while created or running) and bundle (an absolute path)."""
    cid, b, d = created(runtime, bundle, hostdir)
    st = runtime.state(cid)
    assert re.match(r"^\d+\.\d+\.\d+", st["ociVersion"]), st["ociVersion"]
    assert st["id"] == cid
    assert st["status"] == "created"
    assert isinstance(st["pid"], int) and st["pid"] > 0
    assert os.path.isabs(st["bundle"])
    assert os.path.realpath(st["bundle"]) == os.path.realpath(b.path)


def test_state_annotations(runtime, bundle, hostdir):
    """runtime.md#state: annotations, when the config has them, MUST be the list of
    annotations associated with the container."""
    b, d = life(bundle, hostdir)
    b.edit(lambda c: c.__setitem__("annotations", {"org.example.k": "v1"}))
    cid = runtime.new_id("ann")
    runtime.create(cid, b)
    assert runtime.state(cid).get("annotations", {}).get("org.example.k") == "v1"


def test_state_status_values_through_the_lifecycle(runtime, bundle, hostdir):
    """runtime.md#state + #lifecycle steps 2-7: status goes created -> running ->
    stopped when the program exits."""
    cid, b, d = created(runtime, bundle, hostdir,
                        "touch /w/started; while [ ! -e /w/go ]; do sleep 0.05; done")
    assert runtime.status(cid) == "created"
    runtime.ok("start", cid)
    support.wait_for(lambda: (d / "started").exists(), what="start")
    assert runtime.status(cid) == "running"
    (d / "go").touch()
    support.wait_for(lambda: runtime.status(cid) == "stopped", what="stopped")


def test_state_of_an_unknown_container_fails(runtime):
    """runtime.md#query-state: state MUST generate an error if not given the ID of an
    existing container."""
    support.assert_clean_error(runtime("state", runtime.new_id("nothere")))


# -- kill -------------------------------------------------------------------------------------


def test_kill_sends_the_signal(runtime, bundle, hostdir):
    """runtime.md#kill: kill MUST send the given signal to the container process."""
    cid, b, d = started(runtime, bundle, hostdir,
                        "trap 'touch /w/usr1' USR1; touch /w/started; while :; do sleep 0.05; done")
    runtime.ok("kill", cid, "USR1")
    support.wait_for(lambda: (d / "usr1").exists(), what="USR1 to arrive")
    assert runtime.status(cid) == "running"


def test_kill_of_a_created_container(runtime, bundle, hostdir):
    """runtime.md#kill: a `created` container may be signalled (only containers neither
    created nor running are an error); SIGKILL leaves it stopped, the program never ran."""
    cid, b, d = created(runtime, bundle, hostdir)
    pid = runtime.state(cid)["pid"]
    runtime.ok("kill", cid, "KILL")
    support.wait_for(lambda: not support.pid_alive(pid), what="the init to die")
    assert runtime.status(cid) == "stopped"
    assert not (d / "started").exists()


def test_kill_of_a_stopped_container_fails(runtime, bundle, hostdir):
    """runtime.md#kill: signalling a container that is neither created nor running MUST
    have no effect and MUST generate an error."""
    cid, b, d = stopped(runtime, bundle, hostdir)
    support.assert_clean_error(runtime("kill", cid, "KILL"))
    assert runtime.status(cid) == "stopped"


def test_kill_of_an_unknown_container_fails(runtime):
    """runtime.md#kill: kill MUST generate an error if not given the ID of an existing
    container."""
    support.assert_clean_error(runtime("kill", runtime.new_id("nothere"), "KILL"))


# -- delete -----------------------------------------------------------------------------------


def test_delete_of_a_running_container_fails(runtime, bundle, hostdir):
    """runtime.md#delete: deleting a container that is not stopped MUST have no effect
    and MUST generate an error (without --force)."""
    cid, b, d = started(runtime, bundle, hostdir)
    pid = runtime.state(cid)["pid"]
    support.assert_clean_error(runtime("delete", cid))
    assert runtime.status(cid) == "running" and support.pid_alive(pid)


def test_delete_removes_the_container(runtime, bundle, hostdir):
    """runtime.md#delete / #lifecycle step 12: delete MUST delete the resources created
    at create; afterwards the id is unknown (state errors) and the cgroup is gone."""
    cid, b, d = stopped(runtime, bundle, hostdir)
    runtime.ok("delete", cid)
    support.assert_clean_error(runtime("state", cid))
    assert oci_support.cgroup_dirs(cid) == []


def test_delete_frees_the_id(runtime, bundle, hostdir):
    """runtime.md#delete + #create: once deleted, the id is no longer in use; a new
    create with it succeeds."""
    cid, b, d = stopped(runtime, bundle, hostdir)
    runtime.ok("delete", cid)
    runtime.create(cid, b)
    assert runtime.status(cid) == "created"


def test_delete_of_an_unknown_container_fails(runtime):
    """runtime.md#delete: delete MUST generate an error if not given the ID of an
    existing container."""
    support.assert_clean_error(runtime("delete", runtime.new_id("nothere")))


def test_program_exit_stops_the_container(runtime, bundle, hostdir):
    """runtime.md#lifecycle step 10-11: when the container process exits, the status is
    `stopped` (and the state has no live pid)."""
    cid, b, d = stopped(runtime, bundle, hostdir)
    st = runtime.state(cid)
    assert st["status"] == "stopped"
    assert not st.get("pid") or not support.pid_alive(st["pid"])

