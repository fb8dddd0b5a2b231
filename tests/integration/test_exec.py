"""exec: a further process joins every namespace and the cgroup of a running container."""

from __future__ import annotations

import json
import os

import pytest
import support

pytestmark = pytest.mark.root

NS_SCRIPT = 'for f in /proc/self/ns/*; do echo "${f##*/} $(readlink $f)"; done'


def test_exec_joins_every_namespace(runtime, bundle):
    b = bundle(["sleep", "300"], edit=lambda c: support.add_namespace(c, "cgroup"))
    cid, pid = runtime.start_container(b, "execns")
    cp = runtime.ok("exec", cid, "sh", "-c", NS_SCRIPT)
    inside = dict(x.split(" ", 1) for x in cp.stdout.splitlines())
    assert {"pid", "net", "ipc", "uts", "mnt", "cgroup", "user"} <= set(inside)
    for name, link in inside.items():
        assert link == os.readlink(f"/proc/{pid}/ns/{name}"), f"exec is not in the init's {name} namespace"
    for name in ("pid", "net", "ipc", "uts", "mnt", "cgroup"):
        assert inside[name] != os.readlink(f"/proc/self/ns/{name}")


def test_exec_joins_the_user_namespace(runtime, bundle):
    def edit(cfg):
        support.add_namespace(cfg, "user")
        cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        cfg["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]

    cid, pid = runtime.start_container(bundle(["sleep", "300"], edit=edit), "execuser")
    cp = runtime.ok("exec", cid, "sh", "-c", NS_SCRIPT + "; id -u; cat /proc/self/uid_map")
    lines = cp.stdout.splitlines()
    inside = dict(x.split(" ", 1) for x in lines if x.split(" ", 1)[0] in os.listdir(f"/proc/{pid}/ns"))
    for name, link in inside.items():
        assert link == os.readlink(f"/proc/{pid}/ns/{name}"), name
    assert "0" in lines and "0 100000 65536" in " ".join(lines[-1].split())


def test_exec_sees_the_containers_init_as_pid_1(runtime, running):
    cid, pid, _ = running
    cp = runtime.ok("exec", cid, "sh", "-c", "tr '\\0' ' ' < /proc/1/cmdline; echo; echo $$")
    lines = cp.stdout.splitlines()
    assert lines[0].split() == ["sleep", "300"]
    assert int(lines[1]) > 1


def test_exec_output_and_exit_code(runtime, running):
    cid, _, _ = running
    cp = runtime("exec", cid, "sh", "-c", "echo out; echo err >&2; exit 5")
    assert cp.returncode == 5
    assert cp.stdout == "out\n" and "err" in cp.stderr


def test_exec_program_args_starting_with_dash(runtime, running):
    cid, _, _ = running
    cp = runtime.ok("exec", cid, "echo", "-n", "no newline")
    assert cp.stdout == "no newline"
    cp = runtime.ok("exec", cid, "ls", "-d", "/tmp")
    assert cp.stdout.strip() == "/tmp"


def test_exec_stdin(runtime, running):
    cid, _, _ = running
    cp = runtime.ok("exec", cid, "cat", input="piped in\n")
    assert cp.stdout == "piped in\n"


def test_exec_env_cwd_user(runtime, running):
    cid, _, _ = running
    cp = runtime.ok("exec", "--env", "FOO=bar", "--env", "TWO=2", "--cwd", "/tmp", "--user", "1000:1001",
                    cid, "sh", "-c", 'echo "$FOO $TWO"; pwd; id -u; id -g')
    assert cp.stdout.splitlines() == ["bar 2", "/tmp", "1000", "1001"]


def test_exec_inherits_the_config_env(runtime, bundle):
    b = bundle(["sleep", "300"], edit={"process.env": ["PATH=/bin", "FROMCONFIG=yes"]})
    cid, _ = runtime.start_container(b, "execenv")
    assert runtime.ok("exec", cid, "sh", "-c", "echo $FROMCONFIG").stdout == "yes\n"
    cp = runtime.ok("exec", "--env", "FROMCONFIG=overridden", cid, "sh", "-c", "echo $FROMCONFIG")
    assert cp.stdout == "overridden\n"


def test_exec_gets_the_containers_capabilities(runtime, bundle):
    caps = ["CAP_KILL", "CAP_CHOWN"]
    b = bundle(["sleep", "300"], edit={"process.capabilities": {k: caps for k in ("bounding", "effective",
                                                                                  "permitted")}})
    cid, pid = runtime.start_container(b, "execcaps")
    got = support.cap_lines(runtime.ok("exec", cid, "cat", "/proc/self/status").stdout)
    assert got["CapBnd"] == support.cap_mask(caps)
    assert got["CapEff"] == support.cap_mask(caps)
    assert got["CapPrm"] == support.cap_mask(caps)


def test_exec_process_json(runtime, running, hostdir):
    cid, _, _ = running
    d = hostdir("proc")
    proc = {"terminal": False, "user": {"uid": 1000, "gid": 1000},
            "args": ["sh", "-c", "echo $X; pwd; id -u"], "cwd": "/tmp",
            "env": ["PATH=/bin", "X=from-process-json"],
            "capabilities": {"bounding": [], "effective": [], "permitted": []}}
    (d / "process.json").write_text(json.dumps(proc))
    cp = runtime.ok("exec", "--process", d / "process.json", cid)
    assert cp.stdout.splitlines() == ["from-process-json", "/tmp", "1000"]


def test_exec_bad_process_json_fails_cleanly(runtime, running, hostdir):
    cid, pid, _ = running
    d = hostdir("badproc")
    (d / "process.json").write_text("{not json")
    support.assert_clean_error(runtime("exec", "--process", d / "process.json", cid))
    support.assert_clean_error(runtime("exec", "--process", d / "missing.json", cid))
    assert runtime.status(cid) == "running"


def test_exec_of_a_missing_program_fails_cleanly(runtime, running):
    cid, pid, _ = running
    cp = runtime("exec", cid, "/no/such/program", "arg")
    support.assert_clean_error(cp, "/no/such/program")
    cp = runtime("exec", cid, "nosuchprogram")
    support.assert_clean_error(cp, "nosuchprogram")
    assert runtime.status(cid) == "running"
    support.wait_for(lambda: support.cgroup_pids(cid) == {pid}, what="only the init in the cgroup")


def test_exec_in_an_unknown_container(runtime):
    cid = runtime.new_id("noexec")
    support.assert_clean_error(runtime("exec", cid, "true"), cid)


def test_exec_in_a_stopped_container_fails(runtime, bundle):
    b = bundle(["true"])
    cid = runtime.new_id("execstopped")
    runtime.create(cid, b)
    runtime.ok("start", cid)
    support.wait_for(lambda: runtime.status(cid) == "stopped", what="stopped")
    support.assert_clean_error(runtime("exec", cid, "true"))


def test_exec_detached_with_pid_file(runtime, running, hostdir):
    cid, pid, _ = running
    d = hostdir("execpid")
    runtime.ok("exec", "-d", "--pid-file", d / "exec.pid", cid, "sleep", "300")
    xpid = int((d / "exec.pid").read_text())
    assert support.pid_alive(xpid)
    assert os.readlink(f"/proc/{xpid}/ns/pid") == os.readlink(f"/proc/{pid}/ns/pid")
    assert os.readlink(f"/proc/{xpid}/ns/mnt") == os.readlink(f"/proc/{pid}/ns/mnt")
    assert xpid in json.loads(runtime.ok("ps", "--format", "json", cid).stdout)
    assert xpid in support.cgroup_pids(cid)
    runtime.ok("delete", "--force", cid)
    support.wait_for(lambda: not support.pid_alive(xpid), what="the exec'd process to die with the container")


def test_exec_does_not_see_the_host(runtime, running):
    cid, _, _ = running
    cp = runtime.ok("exec", cid, "sh", "-c", "ls /proc | grep -c '^[0-9]'; hostname; ls /sys/class/net")
    n, host, net = cp.stdout.split()
    assert int(n) <= 4 and host != os.uname().nodename and net == "lo"


def test_exec_gets_the_containers_rlimits_and_no_new_privs(runtime, bundle):
    limits = [{"type": "RLIMIT_NOFILE", "soft": 123, "hard": 456}]
    b = bundle(["sleep", "300"], edit={"process.rlimits": limits, "process.noNewPrivileges": True})
    cid, _ = runtime.start_container(b, "execlim")
    script = "ulimit -n; ulimit -Hn; grep NoNewPrivs /proc/self/status"
    out = runtime.ok("exec", cid, "sh", "-c", script).stdout
    assert out.split() == ["123", "456", "NoNewPrivs:", "1"]


def test_exec_additional_gids(runtime, running):
    cid, _, _ = running
    out = runtime.ok("exec", "--user", "1000:1000", "--additional-gids", "10", "--additional-gids", "20",
                     cid, "grep", "^Groups:", "/proc/self/status").stdout
    assert sorted(out.split()[1:]) == ["10", "20"]
