"""kill -9 at awkward moments: `delete --force` must still remove everything."""

from __future__ import annotations

import os
import signal

import pytest
import support

pytestmark = pytest.mark.root


def _pid_written(path) -> bool:
    """The hook's `echo $$ > file` has written its line (the file exists empty a moment first)."""
    return path.exists() and path.read_text().endswith("\n")


def _gone(runtime, cid: str, pids) -> None:
    assert not (runtime.root / cid).exists(), "state dir left behind"
    support.wait_for(lambda: not any(support.pid_alive(p) for p in pids), what=f"processes {pids} to die")
    assert support.cgroup_dirs(cid) == [], f"cgroup left behind: {support.cgroup_dirs(cid)}"
    cp = runtime("state", cid)
    assert cp.returncode != 0 and "Traceback" not in cp.stderr


def test_runtime_killed_midway_through_create(runtime, bundle, hostdir, kill_later):
    d = hostdir("midway")
    hook = support.write_script(d / "slow.sh", f"echo $$ > {d}/hook.pid\nexec sleep 30\n")
    b = bundle(["sh", "-c", "echo PROGRAM-RAN > /w/ran"])
    b.add_bind(d, "/w")
    b.add_hook("createRuntime", str(hook))
    cid = runtime.new_id("midway")
    p = runtime.popen("create", "--bundle", b.path, cid)
    support.wait_for(lambda: _pid_written(d / "hook.pid") or p.poll() is not None, what="the hook to start")
    assert p.poll() is None, open(p.err_path).read()
    hook_pid = int((d / "hook.pid").read_text())
    kill_later.append(hook_pid)
    support.wait_for(lambda: bool(support.cgroup_pids(cid)), what="the init in its cgroup")
    init_pids = support.cgroup_pids(cid)
    if runtime.is_kobako:
        assert runtime.status(cid) == "creating"
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert (runtime.root / cid).exists(), "nothing recorded before the kill"
    if runtime.is_kobako:  # a hook must not outlive the runtime that ran it
        support.wait_for(lambda: not support.pid_alive(hook_pid), what="the orphaned hook to die")
        assert runtime.status(cid) in ("creating", "stopped")
    cp = runtime("delete", "--force", cid)
    assert cp.returncode == 0, cp.stderr
    _gone(runtime, cid, init_pids)
    assert not (d / "ran").exists()


def test_runtime_killed_midway_then_plain_delete(runtime, bundle, hostdir, kill_later):
    """A plain delete after a crashed create: it cleans up, or refuses in one clean line."""
    d = hostdir("midway2")
    hook = support.write_script(d / "slow.sh", f"echo $$ > {d}/hook.pid\nexec sleep 30\n")
    b = bundle(["true"])
    b.add_hook("createRuntime", str(hook))
    cid = runtime.new_id("midway")
    p = runtime.popen("create", "--bundle", b.path, cid)
    support.wait_for(lambda: _pid_written(d / "hook.pid") or p.poll() is not None, what="the hook to start")
    kill_later.append(int((d / "hook.pid").read_text()))
    support.wait_for(lambda: bool(support.cgroup_pids(cid)), what="the init in its cgroup")
    init_pids = support.cgroup_pids(cid)
    p.send_signal(signal.SIGKILL)
    p.wait()
    cp = runtime("delete", cid)
    assert "Traceback" not in cp.stderr
    if cp.returncode != 0:  # refusing while an orphaned init lives is fine; --force must not refuse
        support.assert_clean_error(cp)
        cp = runtime("delete", "--force", cid)
        assert cp.returncode == 0, cp.stderr
    _gone(runtime, cid, init_pids)


def test_init_killed_then_delete(runtime, bundle, hostdir):
    d = hostdir("init9")
    b = bundle(["sh", "-c", "sleep 300 & touch /w/started; wait"])
    b.add_bind(d, "/w")
    cid, pid = runtime.start_container(b, "init9")
    support.wait_for(lambda: (d / "started").exists() and len(support.cgroup_pids(cid)) >= 2, what="start")
    all_pids = support.cgroup_pids(cid)
    os.kill(pid, signal.SIGKILL)
    support.wait_for(lambda: runtime.status(cid) == "stopped", what="stopped")
    cp = runtime("delete", cid)
    assert cp.returncode == 0, cp.stderr
    _gone(runtime, cid, all_pids)


def test_runtime_killed_during_run(runtime, bundle, hostdir):
    d = hostdir("run9")
    b = bundle(["sh", "-c", "touch /w/started; sleep 300"])
    b.add_bind(d, "/w")
    cid = runtime.new_id("run9")
    p = runtime.popen("run", "--bundle", b.path, cid)
    support.wait_for(lambda: (d / "started").exists() or p.poll() is not None, what="start")
    assert p.poll() is None, open(p.err_path).read()
    pids = support.cgroup_pids(cid)
    assert pids
    p.send_signal(signal.SIGKILL)
    p.wait()
    cp = runtime("delete", "--force", cid)
    assert cp.returncode == 0, cp.stderr
    _gone(runtime, cid, pids)


def test_concurrent_deletes(runtime, bundle):
    cid, pid = runtime.start_container(bundle(["sleep", "300"]), "race")
    procs = [runtime.popen("delete", "--force", cid) for _ in range(4)]
    codes = [p.wait(timeout=60) for p in procs]
    errs = [open(p.err_path).read() for p in procs]
    assert 0 in codes, errs
    assert not any("Traceback" in e for e in errs), errs
    _gone(runtime, cid, [pid])
