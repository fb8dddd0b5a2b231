"""Container operations after create, through the Docker API socket as dockerd answers them:
kill, stop, attach (logs, detach keys), exec (exit codes, tty framing, detach keys), logs
until, archive on volumes, prune, update, top, rename -- and the same operations through
the kobako CLI, which calls the same engine."""

from __future__ import annotations

import json
import socket
import struct
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from engine_support import api_service, http_request

pytestmark = pytest.mark.root
IMG = "kbt/busybox:1"


@pytest.fixture(scope="module")
def api(session_base: Path, busybox_rootfs: Path):
    with api_service(session_base / "api-ops", busybox_rootfs, IMG) as k:
        yield k


@pytest.fixture
def dc(api):
    docker = pytest.importorskip("docker")
    c = docker.APIClient(base_url=f"unix://{api.sock}", version="1.41")
    yield c
    c.close()


def _raw(k, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    return http_request(k.sock, method, path, body, headers)


def _run(dc, cmd, **kw) -> str:
    cid = dc.create_container(IMG, cmd, **kw)["Id"]
    dc.start(cid)
    return cid


def _frames(data: bytes) -> list[tuple[int, bytes]]:
    out = []
    while data:
        stream, n = data[0], struct.unpack(">I", data[4:8])[0]
        out.append((stream, data[8:8 + n]))
        data = data[8 + n:]
    return out


def _read_until(sock, want: bytes, timeout: float = 10) -> bytes:
    sock.settimeout(timeout)
    buf = b""
    while want not in buf:
        chunk = sock.recv(65536)
        assert chunk, f"closed before {want!r} came: {buf!r}"
        buf += chunk
    return buf


def _read_until_closed(sock, timeout: float = 10) -> bytes:
    sock.settimeout(timeout)
    buf = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        buf += chunk
    return buf


# -- kill and stop ----------------------------------------------------------------------------

def test_kill_waits_for_the_exit_and_refuses_a_stopped_container(api, dc):
    cid = _run(dc, ["sleep", "300"], host_config=dc.create_host_config(network_mode="none"))
    dc.kill(cid)
    st = dc.inspect_container(cid)["State"]  # right away: dockerd's kill waits for the exit
    assert (st["Running"], st["ExitCode"]) == (False, 137)
    status, body, _ = _raw(api, "POST", f"/containers/{cid}/kill")
    assert status == 409 and b"is not running" in body
    cp = api("kill", cid, check=False)
    assert cp.returncode != 0 and "not running" in cp.stderr
    dc.remove_container(cid)  # not running: removable at once


def test_kill_with_a_bad_signal_is_refused_and_the_container_runs_on(api, dc):
    cid = _run(dc, ["sleep", "300"], host_config=dc.create_host_config(network_mode="none"))
    try:
        status, body, _ = _raw(api, "POST", f"/containers/{cid}/kill?signal=SIGNOPE")
        assert status == 400 and json.loads(body)["message"].lower() == "invalid signal: signope"
        assert dc.inspect_container(cid)["State"]["Running"] is True
        dc.kill(cid, "SIGUSR1")  # a signal by name, with SIG: sleep as PID 1 ignores it
        assert dc.inspect_container(cid)["State"]["Running"] is True
    finally:
        dc.remove_container(cid, force=True)


def test_stop_returns_once_the_record_says_exited(api, dc):
    cid = _run(dc, ["sh", "-c", "trap 'exit 3' TERM; while :; do sleep 0.1; done"],
               host_config=dc.create_host_config(network_mode="none"))
    time.sleep(0.3)
    dc.stop(cid, timeout=5)
    assert cid not in [c["Id"] for c in dc.containers()]
    st = dc.inspect_container(cid)["State"]
    assert (st["Status"], st["ExitCode"]) == ("exited", 3)
    dc.remove_container(cid)


# -- attach -----------------------------------------------------------------------------------

def test_attach_with_logs_and_no_stream_returns_an_exited_containers_output(api, dc):
    cid = _run(dc, ["sh", "-c", "echo out; echo err >&2"],
               host_config=dc.create_host_config(network_mode="none"))
    dc.wait(cid)
    status, body, hs = _raw(api, "POST", f"/containers/{cid}/attach?logs=1&stream=0&stdout=1&stderr=1")
    assert status == 200 and sorted(_frames(body)) == [(1, b"out\n"), (2, b"err\n")]
    assert dc.attach(cid, stream=False, logs=True) == b"out\nerr\n"
    dc.remove_container(cid)


@pytest.mark.parametrize("keys, typed", [(None, b"\x10\x11"), ("ctrl-x", b"\x18")])
def test_attach_detach_keys_leave_the_container_running(api, dc, keys, typed):
    cid = _run(dc, "cat", stdin_open=True, tty=True, host_config=dc.create_host_config(network_mode="none"))
    try:
        params = {"stdin": True, "stream": True} | ({"detachKeys": keys} if keys else {})
        sock = dc.attach_socket(cid, params)
        raw = getattr(sock, "_sock", sock)
        raw.sendall(b"hello\n")
        _read_until(raw, b"hello\r\nhello\r\n")  # the pty's echo, then cat's copy
        raw.sendall(typed)
        assert _read_until_closed(raw) == b""  # closed by the server; cat runs on
        sock.close()
        assert dc.inspect_container(cid)["State"]["Running"] is True
    finally:
        dc.remove_container(cid, force=True)


def test_attach_with_bad_detach_keys_is_refused(api, dc):
    cid = _run(dc, "cat", stdin_open=True, tty=True, host_config=dc.create_host_config(network_mode="none"))
    try:
        status, body, _ = _raw(api, "POST",
                               f"/containers/{cid}/attach?stream=1&stdin=1&detachKeys=ctrl-%C3%A9")
        assert status == 400 and b"detach keys" in body
    finally:
        dc.remove_container(cid, force=True)


# -- exec -------------------------------------------------------------------------------------

@pytest.fixture
def sleeper(dc):
    cid = _run(dc, "cat", stdin_open=True, host_config=dc.create_host_config(network_mode="none"))
    yield cid
    dc.remove_container(cid, force=True)


def test_exec_that_cannot_start_exits_126_as_dockerds(dc, sleeper):
    for cmd in (["no-such-program"], ["/etc/passwd"]):
        x = dc.exec_create(sleeper, cmd)["Id"]
        out = dc.exec_start(x)
        info = dc.exec_inspect(x)
        assert (info["Running"], info["ExitCode"]) == (False, 126), out
        assert out  # the reason, in the stream
    x = dc.exec_create(sleeper, ["sh", "-c", "exit 7"])["Id"]
    dc.exec_start(x)
    assert dc.exec_inspect(x)["ExitCode"] == 7


def test_a_tty_exec_is_one_stream_framed_by_the_start_requests_tty(dc, sleeper):
    cmd = ["sh", "-c", "echo out; sleep 0.2; echo err >&2"]
    x = dc.exec_create(sleeper, cmd, tty=True)["Id"]
    assert dc.exec_start(x, demux=True) == (b"out\r\nerr\r\n", None)  # frames, stream 1 only
    x = dc.exec_create(sleeper, cmd, tty=True)["Id"]
    assert dc.exec_start(x, tty=True) == b"out\r\nerr\r\n"  # raw
    x = dc.exec_create(sleeper, cmd)["Id"]
    assert dc.exec_start(x, demux=True) == (b"out\n", b"err\n")


def test_exec_stdin_and_detach_keys(dc, sleeper):
    x = dc.exec_create(sleeper, "cat", stdin=True)["Id"]
    sock = dc.exec_start(x, socket=True)
    raw = getattr(sock, "_sock", sock)
    raw.sendall(b"piped\n")
    raw.shutdown(socket.SHUT_WR)
    assert _frames(_read_until_closed(raw)) == [(1, b"piped\n")]
    sock.close()
    for keys, typed in ((None, b"\x10\x11"), ("ctrl-x", b"\x18")):
        x = dc.exec_create(sleeper, "cat", stdin=True, tty=True, detach_keys=keys)["Id"]
        sock = dc.exec_start(x, tty=True, socket=True)
        raw = getattr(sock, "_sock", sock)
        raw.sendall(b"abc\n")
        _read_until(raw, b"abc")
        raw.sendall(typed)
        _read_until_closed(raw)
        sock.close()
        assert dc.exec_inspect(x)["Running"] is True  # detached: the program goes on


def test_exec_bad_input_and_a_stopped_container(api, dc, sleeper):
    status, body, _ = _raw(api, "POST", f"/containers/{sleeper}/exec", json.dumps({"Cmd": []}).encode(),
                           {"Content-Type": "application/json"})
    assert status == 400
    status, body, _ = _raw(api, "POST", f"/containers/{sleeper}/exec",
                           json.dumps({"Cmd": ["true"], "DetachKeys": "ctrl-!!"}).encode(),
                           {"Content-Type": "application/json"})
    assert status == 400 and b"detach keys" in body
    cid = dc.create_container(IMG, "true")["Id"]
    status, body, _ = _raw(api, "POST", f"/containers/{cid}/exec", json.dumps({"Cmd": ["true"]}).encode(),
                           {"Content-Type": "application/json"})
    assert status == 409 and b"is not running" in body
    dc.remove_container(cid)


# -- logs -------------------------------------------------------------------------------------

def test_logs_until(api, dc):
    cid = _run(dc, ["echo", "dated"], host_config=dc.create_host_config(network_mode="none"))
    dc.wait(cid)
    assert dc.logs(cid, until=1) == b""
    assert dc.logs(cid, until=int(time.time()) + 5) == b"dated\n"
    status, _, _ = _raw(api, "GET", f"/containers/{cid}/logs?stdout=1&until=soon")
    assert status == 400
    assert api("logs", "--until", "1", cid).stdout == ""
    soon = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 5))
    assert api("logs", "--until", soon, cid).stdout == "dated\n"
    dc.remove_container(cid)


# -- archive on volumes -------------------------------------------------------------------------

def test_archive_reaches_a_named_volume_of_a_stopped_and_a_running_container(api, dc):
    import io
    import tarfile
    hc = dc.create_host_config(binds=["kbt-ops-vol:/vol1"], network_mode="none")
    cid = dc.create_container(IMG, ["sh", "-c", "cat /vol1/in.txt; echo made > /vol1/out.txt"],
                              host_config=hc)["Id"]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        info = tarfile.TarInfo("in.txt")
        info.size = 3
        t.addfile(info, io.BytesIO(b"in\n"))
    assert dc.put_archive(cid, "/vol1", buf.getvalue())  # created, never started
    dc.start(cid)
    dc.wait(cid)
    assert dc.logs(cid) == b"in\n"
    strm, st = dc.get_archive(cid, "/vol1/out.txt")  # exited
    data = b"".join(strm)
    assert st["name"] == "out.txt" and st["size"] == 5
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        assert t.extractfile("out.txt").read() == b"made\n"
    status, _, hs = _raw(api, "HEAD", f"/containers/{cid}/archive?path=/vol1")
    assert status == 200 and json.loads(__import__("base64").b64decode(
        hs["X-Docker-Container-Path-Stat"]))["mode"] & (1 << 31)
    status, body, _ = _raw(api, "GET", f"/containers/{cid}/archive?path=/vol1/none")
    assert status == 404 and b"/vol1/none" in body
    dc.remove_container(cid)
    cid = _run(dc, ["sleep", "300"], host_config=hc)
    try:
        strm, st = dc.get_archive(cid, "/vol1/in.txt")  # running: its own mount namespace
        assert st["size"] == 3 and b"in\n" in b"".join(strm)
    finally:
        dc.remove_container(cid, force=True)
    dc.remove_volume("kbt-ops-vol")


# -- prune, update, top, rename ------------------------------------------------------------------

def test_prune_removes_what_is_not_running_and_reports_the_space(api, dc):
    done = _run(dc, ["sh", "-c", "echo hello > /data.txt"],
                host_config=dc.create_host_config(network_mode="none"))
    created = dc.create_container(IMG, "true", labels={"keep": "1"})["Id"]
    up = _run(dc, ["sleep", "300"], host_config=dc.create_host_config(network_mode="none"))
    try:
        dc.wait(done)
        status, body, _ = _raw(api, "POST", "/containers/prune?filters=" + quote(json.dumps({"nope": ["x"]})))
        assert status == 400
        rep = dc.prune_containers(filters={"label!": "keep"})
        assert done in rep["ContainersDeleted"] and up not in rep["ContainersDeleted"]
        assert created not in rep["ContainersDeleted"] and rep["SpaceReclaimed"] > 0
        assert created in dc.prune_containers()["ContainersDeleted"]
        assert dc.inspect_container(up)["State"]["Running"] is True
    finally:
        dc.remove_container(up, force=True)


def test_update_applies_limits_live_and_keeps_them_for_the_next_start(api, dc):
    hc = dc.create_host_config(mem_limit=400 << 20, memswap_limit=800 << 20, network_mode="none")
    cid = _run(dc, ["sleep", "300"], host_config=hc)
    try:
        dc.update_container(cid, mem_limit=300 << 20, cpu_shares=512,
                            restart_policy={"Name": "on-failure", "MaximumRetryCount": 2})
        rec = json.loads((api.data / "containers" / cid / "container.json").read_text())
        assert rec["hostConfig"]["Memory"] == 300 << 20 and rec["hostConfig"]["CpuShares"] == 512
        assert rec["restartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 2}
        spec = json.loads((api.data / "containers" / cid / "bundle" / "config.json").read_text())
        assert spec["linux"]["resources"]["memory"]["limit"] == 300 << 20
        # the container's own memory cgroup: v1's memory hierarchy, or v2's one
        limit = "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max"
        out = dc.exec_start(dc.exec_create(cid, ["sh", "-c", limit])["Id"])
        assert int(out) == 300 << 20, out
        for bad in ({"Memory": 1024}, {"CpusetCpus": "0-4096"}, {"Memory": "1g"},
                    {"RestartPolicy": {"Name": "sometimes"}}, {"NanoCpus": 10**9, "CpuQuota": 5000}):
            status, body, _ = _raw(api, "POST", f"/containers/{cid}/update", json.dumps(bad).encode(),
                                   {"Content-Type": "application/json"})
            assert status == 400, (bad, body)
        rec2 = json.loads((api.data / "containers" / cid / "container.json").read_text())
        assert rec2["hostConfig"] == rec["hostConfig"]  # nothing changed by the refused ones
    finally:
        dc.remove_container(cid, force=True)


def test_top_through_the_engine(api, dc, sleeper):
    top = dc.top(sleeper, ps_args="-o pid,args")
    assert top["Titles"] == ["PID", "COMMAND"]
    assert [p[1] for p in top["Processes"]] == ["cat"]
    status, _, _ = _raw(api, "GET", f"/containers/{sleeper}/top?ps_args=-o%20args")  # no PID column
    assert status == 400
    cid = dc.create_container(IMG, "true")["Id"]
    status, _, _ = _raw(api, "GET", f"/containers/{cid}/top")
    assert status == 409
    dc.remove_container(cid)


def test_rename_conflicts_and_bad_names(api, dc):
    a = dc.create_container(IMG, "true", name="kbt-ops-a")["Id"]
    b = dc.create_container(IMG, "true", name="kbt-ops-b")["Id"]
    try:
        for name, code in (("kbt-ops-b", 409), ("kbt-ops-a", 400), ("bad name", 400)):
            status, _, _ = _raw(api, "POST", f"/containers/{a}/rename?name={name.replace(' ', '%20')}")
            assert status == code, name
        dc.rename(a, "kbt-ops-c")
        assert dc.inspect_container(a)["Name"] == "/kbt-ops-c"
    finally:
        dc.remove_container(a)
        dc.remove_container(b)
