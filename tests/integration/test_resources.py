"""linux.resources on a real container, on cgroup v1 (or hybrid) and on pure v2 (the v2
suite runs this file in a VM, tests/v2vm/): limits are written where the container can
see them, enforced, changed and lifted by `update`."""

from __future__ import annotations

import os
import subprocess

import pytest
import support

V1 = os.path.isdir("/sys/fs/cgroup/pids") and os.path.isdir("/sys/fs/cgroup/memory")
V2 = os.path.exists("/sys/fs/cgroup/cgroup.controllers")  # pure v2: one hierarchy, at the root
pytestmark = [pytest.mark.root, pytest.mark.skipif(not (V1 or V2), reason="no pids and memory cgroups here")]


def _limit(cid: str, controller: str, v1_name: str, v2_name: str) -> str:
    """A limit file of the container's own cgroup: v1's controller/kobako/ID/v1_name or
    v2's kobako/ID/v2_name."""
    d = [d for d in support.cgroup_dirs(cid) if V2 or f"/{controller}/" in d][0]
    with open(os.path.join(d, v2_name if V2 else v1_name)) as f:
        return f.read().strip()


def _res(res: dict):
    def edit(cfg):
        cfg["linux"]["resources"] = res
    return edit


def test_limits_are_written_and_visible_inside(runtime, bundle):
    if V2:  # the container's cgroup namespace shows its own cgroup at /sys/fs/cgroup
        files = "memory.max pids.max cpu.max cpu.weight memory.low"
        # cpu.shares 512 is cpu.weight 20 (runc's and crun's conversion); quota/period is cpu.max
        want = [str(64 << 20), "20", "50000", "100000", "20", str(16 << 20)]
    else:
        files = ("memory/memory.limit_in_bytes pids/pids.max cpu/cpu.cfs_quota_us cpu/cpu.shares "
                 "memory/memory.soft_limit_in_bytes")
        want = [str(64 << 20), "20", "50000", "512", str(16 << 20)]
    b = bundle(["sh", "-c", "cd /sys/fs/cgroup && cat " + files],
               edit=_res({"memory": {"limit": 64 << 20, "reservation": 16 << 20}, "pids": {"limit": 20},
                          "cpu": {"quota": 50000, "period": 100000, "shares": 512}}))
    cp = runtime("run", "--bundle", b.path, runtime.new_id("res"))
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.split() == want


def test_pids_limit_stops_a_fork_loop(runtime, bundle):
    # the loop runs in a child shell: when fork fails there, the outer one still counts
    script = ('sh -c "i=0; while [ \\$i -lt 40 ]; do sleep 5 & i=\\$((i+1)); done" 2>/dev/null; '
              'set -- /proc/[0-9]*; echo spawned $#')
    b = bundle(["sh", "-c", script], edit=_res({"pids": {"limit": 12}}))
    cp = runtime("run", "--bundle", b.path, runtime.new_id("pids"))
    assert "spawned" in cp.stdout, cp.stdout + cp.stderr
    assert int(cp.stdout.split()[-1]) <= 12, cp.stdout


def test_memory_limit_kills_a_program_that_allocates_past_it(runtime, bundle):
    script = 'x=$(head -c 200000000 /dev/zero | tr "\\000" a); echo survived ${#x}'
    b = bundle(["sh", "-c", script], edit=_res({"memory": {"limit": 32 << 20, "swap": 32 << 20}}))
    cp = runtime("run", "--bundle", b.path, runtime.new_id("oom"))
    assert cp.returncode != 0 and "survived" not in cp.stdout


def test_device_rules_deny_what_is_not_allowed(runtime, bundle):
    rules = [{"allow": False, "access": "rwm"},
             {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "rwm"}]
    b = bundle(["sh", "-c", "head -c1 /dev/zero | wc -c; cat /tun 2>&1 | head -1"],
               edit=_res({"devices": rules}))
    # 10:237 (loop-control) is in no default allow list
    subprocess.run(["mknod", os.path.join(b.path, "rootfs", "tun"), "c", "10", "237"], check=True)
    cp = runtime("run", "--bundle", b.path, runtime.new_id("dev"))
    lines = cp.stdout.splitlines()
    assert lines[0].strip() == "1", cp.stdout + cp.stderr
    assert "not permitted" in lines[1].lower(), cp.stdout


def _a_disk() -> tuple[int, int]:
    """major, minor of a disk of this machine: io/blkio throttles must name a real one."""
    names = sorted(os.listdir("/sys/block"), key=lambda n: n.startswith(("loop", "zram", "ram")))
    assert names, "this machine has no block device"
    with open(f"/sys/block/{names[0]}/dev") as f:
        major, minor = f.read().split(":")
    return int(major), int(minor)


def test_block_io_throttles_are_written_and_visible_inside(runtime, bundle):
    major, minor = _a_disk()
    dev = f"{major}:{minor}"
    if V2:
        script, want = "cat /sys/fs/cgroup/io.max", [f"{dev} rbps=max wbps=1048576 riops=100 wiops=max"]
    else:
        files = "blkio.throttle.write_bps_device blkio.throttle.read_iops_device"
        script = f"cd /sys/fs/cgroup/blkio && cat {files}"
        want = [f"{dev} 1048576", f"{dev} 100"]
    rate = lambda n: [{"major": major, "minor": minor, "rate": n}]  # noqa: E731
    b = bundle(["sh", "-c", script], edit=_res({"blockIO": {"throttleWriteBpsDevice": rate(1 << 20),
                                                            "throttleReadIOPSDevice": rate(100)}}))
    cp = runtime("run", "--bundle", b.path, runtime.new_id("bio"))
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.splitlines() == want


def test_update_changes_and_lifts_limits_of_a_running_container(runtime, bundle):
    support.lacks("crun", "crun's update flags differ")
    b = bundle(["sleep", "60"], edit=_res({"pids": {"limit": 20}, "memory": {"limit": 64 << 20}}))
    cid, _ = runtime.start_container(b, "upd")
    memory = lambda: _limit(cid, "memory", "memory.limit_in_bytes", "memory.max")  # noqa: E731
    runtime.ok("update", "--pids-limit", "99", "--memory", "128m", cid)
    assert _limit(cid, "pids", "pids.max", "pids.max") == "99"
    assert memory() == str(128 << 20)
    runtime.ok("update", "--pids-limit", "-1", "--memory", "-1", cid)
    assert _limit(cid, "pids", "pids.max", "pids.max") == "max"
    assert (memory() == "max") if V2 else (int(memory()) > 1 << 60)
    runtime.ok("kill", cid, "KILL")


def test_update_refuses_a_memory_limit_too_small(runtime, bundle):
    support.lacks("runc crun", "kobako checks it before writing")
    cid, _ = runtime.start_container(bundle(["sleep", "60"]), "small")
    support.assert_clean_error(runtime("update", "--memory", "1k", cid), "6 MiB")
    runtime.ok("kill", cid, "KILL")


@pytest.mark.parametrize("res,word", [
    ({"memory": {"limit": 4096}}, "memory limit"),
    ({"cpu": {"cpus": "zero"}}, "cpus"),
    ({"devices": [{"allow": True, "type": "x", "access": "rwm"}]}, "device rule"),
    ({"devices": [{"allow": True, "type": "c", "access": "rwx"}]}, "access"),
    ({"unified": {"cgroup.procs": "1"}}, "cgroup.procs"),
])
def test_bad_resources_fail_cleanly(runtime, bundle, res, word):
    support.lacks("runc crun", "kobako validates before any step")
    cid = runtime.new_id("badres")
    cp = runtime("run", "--bundle", bundle(["true"], edit=_res(res)).path, cid)
    support.assert_clean_error(cp, word)
    assert not (runtime.root / cid).exists()
    assert support.cgroup_dirs(cid) == []


def test_cgroups_path_that_escapes_fails_cleanly(runtime, bundle):
    cid = runtime.new_id("esc")
    b = bundle(["true"], edit={"linux.cgroupsPath": "/kobako/../../etc"})
    support.assert_clean_error(runtime("run", "--bundle", b.path, cid))
    assert not (runtime.root / cid).exists()


def test_events_stats_reports_the_cgroup(runtime, bundle):
    import json

    b = bundle(["sleep", "60"], edit=_res({"memory": {"limit": 64 << 20}, "pids": {"limit": 20}}))
    cid, _ = runtime.start_container(b, "ev")
    cp = runtime.ok("events", "--stats", cid)
    ev = json.loads(cp.stdout)
    assert ev["type"] == "stats" and ev["id"] == cid
    assert ev["data"]["memory"]["usage"]["limit"] == 64 << 20
    assert ev["data"]["pids"] == {"current": 1, "limit": 20}
    assert ev["data"]["cpu"]["usage"]["total"] > 0
    runtime.ok("kill", cid, "KILL")


def test_events_reports_an_oom_kill(runtime, bundle):
    import json
    import subprocess as sp
    import time

    support.lacks("runc crun", "the loop below drives kobako's own event stream")
    # the shell itself survives: only the child that allocates is killed
    script = 'sleep 1; (x=$(head -c 200000000 /dev/zero | tr "\\000" a)); sleep 30'
    b = bundle(["sh", "-c", script], edit=_res({"memory": {"limit": 32 << 20, "swap": 32 << 20}}))
    cid, _ = runtime.start_container(b, "evoom")
    proc = sp.Popen(runtime.argv(["events", "--interval", "200ms", cid]), stdout=sp.PIPE, text=True)
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 20 * support.TIME_SCALE
        while time.monotonic() < deadline and "oom" not in seen:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(json.loads(line)["type"])
    finally:
        proc.kill()
        proc.wait()
    runtime.ok("kill", cid, "KILL")
    assert "oom" in seen, seen[-3:]


def test_cpuset_outside_the_machine_fails_cleanly(runtime, bundle):
    cid = runtime.new_id("cpuset")
    b = bundle(["true"], edit=_res({"cpu": {"cpus": f"0-{os.cpu_count() + 63}"}}))
    cp = runtime("run", "--bundle", b.path, cid)
    support.assert_clean_error(cp, "cpuset.cpus")
    assert not (runtime.root / cid).exists()
    assert support.cgroup_dirs(cid) == []
