"""The engine's container model through both front ends: what a create body or run's flags
ask for is applied and comes back in inspect (the Docker API and the CLI render the same
view), healthchecks run, log drivers write what they should, legacy links, group-add; bad
input is refused with dockerd's status and nothing is made."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from engine_support import api_json, api_service, assert_user_error

pytestmark = pytest.mark.root
IMG = "kbt/busybox:1"


@pytest.fixture(scope="module")
def k(session_base: Path, busybox_rootfs: Path):
    with api_service(session_base / "model", busybox_rootfs, IMG) as k:
        yield k


def call(k, method: str, path: str, body: object = None) -> tuple[int, object]:
    return api_json(k, method, path, body)


def create(k, body: dict, name: str | None = None) -> str:
    st, out = call(k, "POST", "/containers/create" + (f"?name={name}" if name else ""), body)
    assert st == 201, out
    return out["Id"]


def wait_until(fn, timeout: float = 15.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = fn()
        if got:
            return got
        time.sleep(0.2)
    return fn()


def test_create_body_round_trips_through_inspect(k):
    body = {"Image": IMG, "Cmd": ["true"], "Env": ["Foo", "A=1"], "StopTimeout": 25, "StopSignal": "SIGUSR1",
            "Healthcheck": {"Test": ["CMD-SHELL", "true"], "Interval": 10**9},
            "HostConfig": {"NetworkMode": "none", "PidMode": "host", "UTSMode": "host",
                           "CgroupnsMode": "private", "Init": True, "Isolation": "default",
                           "Runtime": "runc", "GroupAdd": ["1000"],
                           "DeviceCgroupRules": ["c 7:128 rwm"], "MemorySwappiness": 0, "Memory": 64 << 20,
                           "MemorySwap": 128 << 20, "CpuShares": 512, "CpusetCpus": "0", "OomScoreAdj": 10,
                           "Tmpfs": {"/run": "size=1m"}, "ShmSize": 1 << 20, "VolumeDriver": "foo",
                           "LogConfig": {"Type": "json-file", "Config": {"max-file": "100"}},
                           "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 3}}}
    cid = create(k, body, "model-rt")
    st, doc = call(k, "GET", f"/containers/{cid}/json")
    assert st == 200
    h, c = doc["HostConfig"], doc["Config"]
    for key in ("PidMode", "UTSMode", "CgroupnsMode", "Init", "Isolation", "Runtime", "GroupAdd",
                "DeviceCgroupRules", "MemorySwappiness", "Memory", "MemorySwap", "CpuShares", "CpusetCpus",
                "OomScoreAdj", "Tmpfs", "ShmSize", "VolumeDriver", "LogConfig", "RestartPolicy"):
        assert h[key] == body["HostConfig"][key], key
    assert "Foo" in c["Env"] and "A=1" in c["Env"]
    assert c["StopTimeout"] == 25 and c["StopSignal"] == "SIGUSR1"
    assert c["Healthcheck"]["Test"] == ["CMD-SHELL", "true"]
    assert doc["State"]["Health"]["Status"] == "starting"
    assert set(doc) >= {"Id", "Created", "Path", "Args", "State", "Image", "Name", "HostConfig", "Config",
                        "Mounts", "NetworkSettings", "LogPath", "GraphDriver", "RestartCount"}
    cli = json.loads(k("inspect", "model-rt").stdout)[0]  # the CLI renders the same view
    assert cli["HostConfig"] == h and cli["Config"] == c
    k("rm", "-f", "model-rt")


def test_cli_flags_reach_the_same_fields(k):
    k("create", "--name", "model-cli", "--network", "none", "--group-add", "1000", "--init",
      "--stop-timeout", "7", "--memory-swappiness", "0", "--log-opt", "max-size=1m",
      "--health-cmd", "true", "--health-interval", "2s", "--device-cgroup-rule", "c 7:128 rwm", IMG, "true")
    doc = json.loads(k("inspect", "model-cli").stdout)[0]
    h = doc["HostConfig"]
    assert h["GroupAdd"] == ["1000"] and h["Init"] is True and h["MemorySwappiness"] == 0
    assert h["LogConfig"] == {"Type": "json-file", "Config": {"max-size": "1m"}}
    assert h["DeviceCgroupRules"] == ["c 7:128 rwm"] and doc["Config"]["StopTimeout"] == 7
    assert doc["Config"]["Healthcheck"]["Interval"] == 2 * 10**9
    k("rm", "model-cli")


def test_group_add_and_env_without_value_reach_the_process(k):
    cid = create(k, {"Image": IMG, "Cmd": ["sh", "-c", "id -G; env"], "Env": ["Foo", "Bar=2"],
                     "HostConfig": {"NetworkMode": "none", "GroupAdd": ["1000", "1001"]}})
    assert call(k, "POST", f"/containers/{cid}/start")[0] == 204
    assert call(k, "POST", f"/containers/{cid}/wait")[1]["StatusCode"] == 0
    out = k("logs", cid).stdout
    assert {"1000", "1001"} <= set(out.splitlines()[0].split()) and "Bar=2" in out
    k("rm", cid)


def test_healthchecks_pass_fail_show_in_ps_and_events(k):
    k("run", "-d", "--name", "model-ok", "--network", "none", "--health-cmd", "echo fine",
      "--health-interval", "500ms", "--health-retries", "1", IMG, "sleep", "60")
    k("run", "-d", "--name", "model-bad", "--network", "none", "--health-cmd", "echo sick; exit 1",
      "--health-interval", "500ms", "--health-retries", "2", IMG, "sleep", "60")
    k("run", "-d", "--name", "model-slow", "--network", "none", "--health-cmd", "sleep 5",
      "--health-interval", "500ms", "--health-timeout", "300ms", "--health-retries", "1", IMG, "sleep", "60")

    def health(name):
        return json.loads(k("inspect", name).stdout)[0]["State"]["Health"]
    assert wait_until(lambda: health("model-ok")["Status"] == "healthy")
    assert wait_until(lambda: health("model-bad")["Status"] == "unhealthy")
    assert wait_until(lambda: health("model-slow")["Status"] == "unhealthy")
    ok, bad, slow = health("model-ok"), health("model-bad"), health("model-slow")
    assert ok["Log"][-1]["Output"] == "fine\n" and ok["Log"][-1]["ExitCode"] == 0
    assert bad["FailingStreak"] >= 2 and bad["Log"][-1]["Output"] == "sick\n"
    assert slow["Log"][-1]["ExitCode"] == -1 and "exceeded timeout" in slow["Log"][-1]["Output"]
    ps = k("ps", "--format", "{{.Names}} {{.Status}}").stdout
    assert "model-ok Up" in ps and "(healthy)" in ps and "(unhealthy)" in ps
    filtered = k("ps", "-q", "-f", "health=unhealthy").stdout.split()
    assert len(filtered) == 2
    ev = k("events", "--since", "1m", "--until", "0s", "--filter", "container=model-ok").stdout
    assert "health_status: healthy" in ev
    k("rm", "-f", "model-ok", "model-bad", "model-slow")
    assert not [p for p in os.listdir(k.root / "run") if p.startswith("health-")]  # no probe left behind


def test_log_drivers(k):
    cid = create(k, {"Image": IMG, "Cmd": ["echo", "quiet"], "HostConfig": {
        "NetworkMode": "none", "LogConfig": {"Type": "none"}}})
    call(k, "POST", f"/containers/{cid}/start")
    call(k, "POST", f"/containers/{cid}/wait")
    assert not list((k.data / "containers" / cid).glob("*-json.log*"))
    k("run", "-d", "--name", "model-rot", "--network", "none", "--log-opt", "max-size=2k", "--log-opt",
      "max-file=3", "--log-opt", "compress=true", IMG, "sh", "-c", "seq 1 2000; sleep 30")
    d = k.data / "containers" / json.loads(k("inspect", "model-rot").stdout)[0]["Id"]
    assert wait_until(lambda: len(list(d.glob("*-json.log.*.gz"))) == 2)
    lines = k("logs", "model-rot").stdout.split()
    assert lines[-1] == "2000" and lines == [str(n) for n in range(int(lines[0]), 2001)]
    k("rm", "-f", "model-rot", cid)


def test_links_give_variables_and_hosts_and_can_be_removed(k):
    k("run", "-d", "--name", "model-db", "-e", "FOO=1", "--expose", "5432", IMG, "sleep", "60")
    out = k("run", "--rm", "--link", "model-db:db", IMG, "sh", "-c", "env; cat /etc/hosts").stdout
    assert "DB_NAME=/" in out and "DB_ENV_FOO=1" in out and "DB_PORT_5432_TCP_PORT=5432" in out
    ip = json.loads(k("inspect", "model-db").stdout)[0]["NetworkSettings"]["IPAddress"]
    assert any(line.split()[:2] == [ip, "db"] for line in out.splitlines())
    cid = create(k, {"Image": IMG, "Cmd": ["true"], "HostConfig": {"Links": ["model-db:db"]}}, "model-app")
    assert call(k, "DELETE", "/containers/model-app/db?link=1")[0] == 204
    assert call(k, "GET", f"/containers/{cid}/json")[1]["HostConfig"]["Links"] is None
    assert call(k, "DELETE", "/containers/model-app/db?link=1")[0] == 404
    assert_user_error(k("run", "--rm", "--link", "model-nope:x", IMG, "true", check=False), "model-nope")
    k("rm", "-f", "model-db", "model-app")


@pytest.mark.parametrize("body, status, words", [
    ({"Image": IMG, "HostConfig": {"Memory": "lots"}}, 400, "HostConfig.Memory"),
    ({"Image": IMG, "HostConfig": {"LogConfig": {"Type": "syslog-ng"}}}, 400, "log driver"),
    ({"Image": IMG, "HostConfig": {"CapAdd": ["CAP_NOPE"]}}, 400, "unknown capability"),
    ({"Image": IMG, "HostConfig": {"Links": ["model-missing:x"]}}, 400, "model-missing"),
    ({"Image": IMG, "HostConfig": {"Runtime": "kata"}}, 400, "runtime"),
    ({"Image": IMG, "HostConfig": {"Binds": ["v1:/v"], "VolumeDriver": "nfs-plugin"}}, 404, "plugin"),
    ({"Image": IMG, "HostConfig": {"NetworkMode": "model-no-net"}}, 404, "model-no-net"),
    ({"Image": IMG, "Healthcheck": {"Test": ["CMD"]}}, 400, "Healthcheck"),
    ({"Image": "kbt/not-here:1"}, 404, "No such image"),
])
def test_bad_create_bodies_make_nothing(k, body, status, words):
    before = (sorted(os.listdir(k.data / "containers")), k("volume", "ls", "-q").stdout)
    st, out = call(k, "POST", "/containers/create?name=model-bad-body", {"Cmd": ["true"], **body})
    assert st == status and words in out["message"], out
    assert (sorted(os.listdir(k.data / "containers")), k("volume", "ls", "-q").stdout) == before


def test_health_command_on_an_image_without_a_shell_is_unhealthy(k, tmp_path):
    rootfs = tmp_path / "noshell"
    (rootfs / "bin").mkdir(parents=True)
    import shutil
    busybox = shutil.which("busybox") or "/bin/busybox"
    subprocess.run(["cp", busybox, str(rootfs / "bin" / "sleep")], check=True)
    k("import", str(rootfs), "kbt/noshell:1")
    k("run", "-d", "--name", "model-noshell", "--network", "none", "--health-cmd", "true",
      "--health-interval", "300ms", "--health-retries", "1", "kbt/noshell:1", "/bin/sleep", "60")
    state = wait_until(lambda: json.loads(k("inspect", "model-noshell").stdout)[0]["State"]["Health"]
                       if json.loads(k("inspect", "model-noshell").stdout)[0]["State"]["Health"]["Status"]
                       == "unhealthy" else None)
    assert state and state["Log"][-1]["ExitCode"] != 0 and "sh" in state["Log"][-1]["Output"]
    k("rm", "-f", "model-noshell")
    k("rmi", "kbt/noshell:1")


def test_ipc_none_has_no_dev_shm(k):
    count = ["sh", "-c", "grep -c ' /dev/shm ' /proc/mounts"]
    got = k("run", "--rm", "--network", "none", "--ipc", "none", IMG, *count, check=False).stdout
    assert got.strip() == "0"
    assert k("run", "--rm", "--network", "none", IMG, *count).stdout.strip() == "1"


def test_compose_waits_for_a_healthy_service(k, tmp_path: Path):
    import shutil
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("no docker-compose (scripts/test.sh installs Debian's, without dockerd)")
    (tmp_path / "docker-compose.yml").write_text(f"""version: "2.1"
services:
  db:
    image: {IMG}
    command: sh -c "sleep 2; touch /ready; sleep 60"
    healthcheck:
      test: ["CMD", "test", "-e", "/ready"]
      interval: 500ms
      retries: 20
  app:
    image: {IMG}
    command: sleep 60
    depends_on:
      db:
        condition: service_healthy
""")
    env = {**k.env, "DOCKER_HOST": f"unix://{k.sock}"}

    def compose(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([exe, "-p", "kbtmodel", *args], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=120)
    try:
        cp = compose("up", "-d")
        assert cp.returncode == 0, cp.stdout + cp.stderr
        db = json.loads(k("inspect", "kbtmodel_db_1").stdout)[0]
        app = json.loads(k("inspect", "kbtmodel_app_1").stdout)[0]
        assert db["State"]["Health"]["Status"] == "healthy"
        healthy_at = min(x["End"] for x in db["State"]["Health"]["Log"] if x["ExitCode"] == 0)
        assert app["State"]["StartedAt"] > healthy_at  # compose waited for it
    finally:
        compose("down", "-v")
    assert "kbtmodel" not in k("ps", "-a").stdout


def test_bind_propagation_and_network_aliases_in_inspect(k, tmp_path: Path):
    k("network", "create", "model-net")
    try:
        cid = create(k, {"Image": IMG, "Cmd": ["sleep", "30"], "Volumes": {"/m": {}}, "HostConfig": {
            "NetworkMode": "model-net", "Binds": [f"{tmp_path}:/m:rw,rshared"]}, "NetworkingConfig": {
            "EndpointsConfig": {"model-net": {"Aliases": ["hello"], "DriverOpts": {"k": "v"}}}}})
        assert call(k, "POST", f"/containers/{cid}/start")[0] == 204
        doc = call(k, "GET", f"/containers/{cid}/json")[1]
        (mount,) = [m for m in doc["Mounts"] if m["Destination"] == "/m"]
        assert (mount["Type"], mount["Propagation"], mount["RW"]) == ("bind", "rshared", True)
        ep = doc["NetworkSettings"]["Networks"]["model-net"]
        assert ep["Aliases"] == ["hello", cid[:12]] and ep["DriverOpts"] == {"k": "v"}
        k("rm", "-f", cid)
    finally:
        k("network", "rm", "model-net", check=False)



def test_a_program_that_cannot_start_is_reported_to_an_attached_start(k):
    """docker run attaches, then starts: the start's failure reaches the client as dockerd's
    error (the monitor used to drop the attaching connection first)."""
    import shutil
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker CLI (scripts/test.sh unpacks Debian's)")
    cp = subprocess.run([docker, "run", "--rm", "--network", "none", IMG, "/kbt-no-such-program"],
                        env=k.env_docker, capture_output=True, text=True, timeout=60)
    assert cp.returncode == 127 and "kbt-no-such-program" in cp.stderr, (cp.returncode, cp.stderr)
    assert "closed the connection" not in cp.stderr
    assert k("ps", "-aq").stdout.split() == []  # --rm: nothing left
