"""The Docker Engine API socket (`kobako system service`) driven by real clients: the docker
CLI (Debian's, unpacked by scripts/test.sh; no dockerd anywhere) and docker-py; plus bad
input that must get an error, never a crash."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from engine_support import api_service, http_request

pytestmark = pytest.mark.root
IMG = "kbt/busybox:1"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def api(session_base: Path, busybox_rootfs: Path):
    with api_service(session_base / "api", busybox_rootfs, IMG) as k:
        yield k


def _docker(k, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    exe = shutil.which("docker")
    if exe is None:
        pytest.skip("no docker CLI (scripts/test.sh unpacks Debian's)")
    cp = subprocess.run([exe, *args], env=k.env_docker, capture_output=True, text=True, timeout=timeout)
    if check and cp.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({cp.returncode}):\n{cp.stderr}")
    return cp


def _raw(k, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    return http_request(k.sock, method, path, body, headers)[:2]


def test_docker_cli_run_rm_exit_codes_and_output(api):
    assert _docker(api, "run", "--rm", "--network", "none", IMG, "echo", "via-api").stdout == "via-api\n"
    cp = _docker(api, "run", "--rm", "--network", "none", IMG, "sh", "-c",
                 "echo out; echo err >&2; exit 3", check=False)
    assert (cp.returncode, cp.stdout, cp.stderr) == (3, "out\n", "err\n")
    assert api("ps", "-aq").stdout.split() == []  # --rm: gone, as the kobako CLI sees it
    out = _docker(api, "run", "--rm", "--network", "none", "--add-host", "a.b:1.2.3.4", "--dns", "10.9.9.9",
                  IMG, "cat", "/etc/hosts", "/etc/resolv.conf").stdout
    assert "1.2.3.4\ta.b" in out and "nameserver 10.9.9.9" in out


def test_docker_cli_detached_logs_ps_inspect_rm(api):
    cid = _docker(api, "run", "-d", "--name", "api-d", IMG, "sh", "-c",
                  "echo logged; sleep 30").stdout.strip()
    assert len(cid) == 64
    end = time.monotonic() + 10
    while "logged" not in _docker(api, "logs", cid).stdout and time.monotonic() < end:
        time.sleep(0.1)
    assert "logged" in _docker(api, "logs", cid).stdout
    assert "api-d" in _docker(api, "ps").stdout
    assert "api-d" in api("ps").stdout  # the kobako CLI sees what the API made
    doc = json.loads(_docker(api, "inspect", "api-d").stdout)[0]
    assert doc["State"]["Running"] is True and doc["Name"] == "/api-d"
    assert doc["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]
    cp = _docker(api, "rm", "api-d", check=False)  # running: refused, 409
    assert cp.returncode != 0 and "running" in cp.stderr
    _docker(api, "rm", "-f", "api-d")
    assert "api-d" not in api("ps", "-a").stdout


def test_docker_cli_images_and_missing_objects(api):
    assert "kbt/busybox" in _docker(api, "images").stdout
    cp = _docker(api, "inspect", "kbt-no-such-thing", check=False)
    assert cp.returncode == 1 and "No such object" in cp.stderr
    cp = _docker(api, "rm", "kbt-no-such-thing", check=False)
    assert cp.returncode == 1 and "No such container" in cp.stderr


def test_docker_py(api):
    docker = pytest.importorskip("docker")
    c = docker.DockerClient(base_url=f"unix://{api.sock}")
    assert c.ping() is True
    assert c.version()["ApiVersion"] == "1.41"
    out = c.containers.run(IMG, "echo via-docker-py", remove=True, network_mode="none")
    assert out == b"via-docker-py\n"
    ct = c.containers.run(IMG, ["sh", "-c", "echo a; echo b >&2"], detach=True, network_mode="none")
    assert ct.wait()["StatusCode"] == 0
    assert ct.logs(stdout=True, stderr=False) == b"a\n" and ct.logs(stdout=False, stderr=True) == b"b\n"
    assert ct.id in [x.id for x in c.containers.list(all=True)]
    ct.remove()
    assert [t for i in c.images.list() for t in i.tags] == [IMG]
    with pytest.raises(docker.errors.NotFound):
        c.containers.get("kbt-missing")
    with pytest.raises(docker.errors.ImageNotFound):
        c.containers.create("kbt/not-here:1", "true")
    c.close()


def test_bad_requests_get_errors_and_the_server_keeps_going(api):
    assert _raw(api, "POST", "/v1.41/containers/create", b"{not json",
                {"Content-Type": "application/json"})[0] == 400
    js = {"Content-Type": "application/json"}
    before = api("ps", "-aq").stdout.split()
    body = json.dumps({"Image": IMG, "Cmd": ["true"], "NoSuchField": {"x": 1},
                       "HostConfig": {"Bogus": True, "NetworkMode": "none"}})
    st, out = _raw(api, "POST", "/v1.41/containers/create?name=api-unknown", body.encode(), js)
    assert st == 201, out  # unknown fields are ignored, as dockerd does
    assert _raw(api, "DELETE", "/v1.41/containers/api-unknown")[0] == 204
    bad = json.dumps({"Image": IMG, "HostConfig": {"Memory": 1024, "NetworkMode": "none"}}).encode()
    st, out = _raw(api, "POST", "/v1.41/containers/create", bad, js)
    assert st == 400 and b"minimum memory" in out
    st, out = _raw(api, "POST", "/v1.41/containers/create",
                   json.dumps({"Image": IMG, "HostConfig": {"NetworkMode": "no-such-net"}}).encode(), js)
    assert st == 404
    assert _raw(api, "POST", "/v1.41/containers/create", b"[]", js)[0] == 400
    assert _raw(api, "POST", "/v1.41/containers/create", b"{}", js)[0] == 400
    st, body = _raw(api, "GET", "/v1.41/nothing/here")
    assert st == 404 and json.loads(body)["message"]
    s = socket.socket(socket.AF_UNIX)  # a huge body is refused from its Content-Length
    s.connect(api.sock)
    s.sendall(b"POST /containers/create HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n{" % (1 << 30))
    assert s.recv(100).startswith(b"HTTP/1.1 413")
    s.close()
    # a client that goes away in the middle of a followed log
    loop = "while true; do echo x; sleep 0.1; done"
    cid = api("run", "-d", "--network", "none", IMG, "sh", "-c", loop).stdout.strip()
    s = socket.socket(socket.AF_UNIX)
    s.connect(api.sock)
    s.sendall(f"GET /containers/{cid}/logs?follow=1&stdout=1 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert s.recv(100).startswith(b"HTTP/1.1 200")
    s.close()
    api("rm", "-f", cid)
    # many at once
    with ThreadPoolExecutor(32) as pool:
        codes = list(pool.map(lambda _: _raw(api, "GET", "/_ping")[0], range(200)))
    assert codes == [200] * 200
    assert api("ps", "-aq").stdout.split() == before  # no request above left a container behind


def test_the_socket_is_not_for_everyone(api):
    mode = os.stat(api.sock).st_mode & 0o777
    assert mode & 0o007 == 0, f"socket mode {oct(mode)} lets any user drive the engine"


def test_docker_cli_exec_network_volume_pause_rename(api, tmp_path: Path):
    _docker(api, "network", "create", "api-net")
    _docker(api, "volume", "create", "api-vol")
    try:
        assert "api-net" in _docker(api, "network", "ls").stdout
        assert "api-vol" in _docker(api, "volume", "ls").stdout
        _docker(api, "run", "-d", "--name", "api-x", "--network", "api-net", "--network-alias", "xalias",
                "-v", "api-vol:/data", IMG, "sleep", "60")
        cp = _docker(api, "exec", "api-x", "sh", "-c", "echo in-exec; echo err >&2; exit 4", check=False)
        assert (cp.returncode, cp.stdout, cp.stderr) == (4, "in-exec\n", "err\n")
        _docker(api, "exec", "api-x", "sh", "-c", "echo kept > /data/f")
        _docker(api, "network", "create", "api-net2")
        _docker(api, "network", "connect", "--alias", "late", "api-net2", "api-x")
        out = _docker(api, "run", "--rm", "--network", "api-net2", IMG, "sh", "-c",
                      "ping -c1 -W2 late >/dev/null && echo reached-late").stdout
        assert out == "reached-late\n"
        _docker(api, "network", "disconnect", "api-net2", "api-x")
        out = _docker(api, "run", "--rm", "--network", "api-net", "-v", "api-vol:/data", IMG,
                      "sh", "-c", "cat /data/f; ping -c1 -W2 xalias >/dev/null && echo by-alias").stdout
        assert out.split() == ["kept", "by-alias"]
        assert "sleep" in _docker(api, "top", "api-x").stdout
        _docker(api, "pause", "api-x")
        assert "Paused" in _docker(api, "ps", "--format", "{{.Status}}").stdout
        _docker(api, "unpause", "api-x")
        _docker(api, "rename", "api-x", "api-y")
        assert "api-y" in api("ps").stdout  # the same engine underneath
        cp = _docker(api, "network", "rm", "api-net", check=False)
        assert cp.returncode != 0 and "in use" in cp.stderr
    finally:
        _docker(api, "rm", "-f", "api-x", "api-y", check=False)
        _docker(api, "network", "rm", "api-net", "api-net2", check=False)
        _docker(api, "volume", "rm", "api-vol", check=False)
    assert "api-net" not in _docker(api, "network", "ls").stdout


def test_events_stream(api):
    docker = pytest.importorskip("docker")
    c = docker.DockerClient(base_url=f"unix://{api.sock}")
    since = int(time.time()) - 1
    c.containers.run(IMG, "true", remove=True, network_mode="none", name="api-ev")
    evs = c.events(since=since, until=int(time.time()) + 1, decode=True,
                   filters={"type": "container", "container": "api-ev"})
    actions = [e["Action"] for e in evs]
    assert {"create", "start", "die", "destroy"} <= set(actions), actions
    c.close()


def test_events_until_a_time_already_past(api):
    """`docker events --until T` asked after T: the events logged before T, then the end
    (docker's answer), not an empty stream because the live part is over."""
    docker = pytest.importorskip("docker")
    c = docker.DockerClient(base_url=f"unix://{api.sock}")
    since = int(time.time()) - 1
    c.containers.run(IMG, "true", remove=True, network_mode="none", name="api-past")
    until = int(time.time()) + 1
    while time.time() <= until + 0.2:
        time.sleep(0.1)
    evs = c.events(since=since, until=until, decode=True, filters={"container": "api-past"})
    assert {"create", "start", "die", "destroy"} <= {e["Action"] for e in evs}
    c.close()


def test_docker_compose_two_services_by_name(api, tmp_path: Path):
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("no docker-compose (scripts/test.sh installs Debian's, without dockerd)")
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "index.html").write_text("compose-web\n")
    (tmp_path / "docker-compose.yml").write_text(f"""version: "3"
services:
  web:
    image: {IMG}
    command: httpd -f -p 80 -h /www
    volumes: ["./www:/www:ro"]
  client:
    image: {IMG}
    command: sh -c "for i in 1 2 3 4 5 6 7 8 9; do wget -qO- http://web/ && break; sleep 0.3; done; sleep 60"
    depends_on: [web]
""")

    def compose(*args: str) -> subprocess.CompletedProcess:
        cp = subprocess.run([exe, "-p", "kbtapi", *args], cwd=tmp_path, env=api.env_docker,
                            capture_output=True, text=True, timeout=120)
        assert cp.returncode == 0, cp.stdout + cp.stderr
        return cp

    try:
        compose("up", "-d")
        ps = compose("ps").stdout
        assert "kbtapi_web_1" in ps and "kbtapi_client_1" in ps and ps.count("Up") == 2
        end = time.monotonic() + 15
        while "compose-web" not in compose("logs", "--no-color", "client").stdout and time.monotonic() < end:
            time.sleep(0.3)
        assert "compose-web" in compose("logs", "--no-color", "client").stdout
    finally:
        compose("down", "-v")
    assert "kbtapi" not in api("ps", "-a").stdout
    assert "kbtapi" not in api("network", "ls").stdout


def test_docker_cli_tty_stdin_exec_it_and_archives(api, tmp_path: Path, busybox_rootfs: Path):
    docker = shutil.which("docker")
    if docker is None or shutil.which("script") is None:
        pytest.skip("needs the docker CLI and script(1)")

    def in_pty(cmd: str) -> subprocess.CompletedProcess:  # script(1) gives the CLI a terminal
        return subprocess.run(["script", "-qec", cmd, "/dev/null"], env=api.env_docker,
                              capture_output=True, text=True, timeout=60)
    cp = in_pty(f"stty rows 33 cols 101; {docker} run -it --rm --network none {IMG} "
                "sh -c 'sleep 0.2; tty; stty size; exit 6'")
    assert cp.returncode == 6 and "/dev/pts/0" in cp.stdout and "33 101" in cp.stdout, cp.stdout
    cp = subprocess.run([docker, "run", "-i", "--rm", "--network", "none", IMG, "sh"],
                        input="echo typed-in; exit 7\n", env=api.env_docker, capture_output=True, text=True,
                        timeout=60)
    assert (cp.returncode, cp.stdout) == (7, "typed-in\n")
    cid = _docker(api, "run", "-d", "--network", "none", IMG, "sleep", "60").stdout.strip()
    cp = in_pty(f"{docker} exec -it {cid} sh -c 'tty; exit 8'")
    assert cp.returncode == 8 and "/dev/pts/" in cp.stdout
    _docker(api, "rm", "-f", cid)
    # save | load, and import
    _docker(api, "tag", IMG, "kbt/copy:1")
    _docker(api, "save", "-o", str(tmp_path / "copy.tar"), "kbt/copy:1")
    _docker(api, "rmi", "kbt/copy:1")
    assert "kbt/copy" not in _docker(api, "images").stdout
    assert "Loaded image: kbt/copy:1" in _docker(api, "load", "-i", str(tmp_path / "copy.tar")).stdout
    piped = subprocess.run(f"{docker} save kbt/copy:1 | {docker} load", shell=True, env=api.env_docker,
                           capture_output=True, text=True, timeout=60)  # docker save | docker load
    assert piped.returncode == 0 and "Loaded image: kbt/copy:1" in piped.stdout, piped.stderr
    subprocess.run(["tar", "-C", str(busybox_rootfs), "-cf", str(tmp_path / "rootfs.tar"), "."], check=True)
    _docker(api, "import", str(tmp_path / "rootfs.tar"), "kbt/imported:1")
    out = _docker(api, "run", "--rm", "--network", "none", "kbt/imported:1", "echo", "imported-ok").stdout
    assert out == "imported-ok\n"
    _docker(api, "rmi", "kbt/copy:1", "kbt/imported:1")


def test_docker_cli_cp_stats_diff_export(api, tmp_path: Path):
    cid = _docker(api, "run", "-d", "--network", "none", IMG, "sh", "-c",
                  "echo inside > /tmp/in.txt; mkdir /tmp/d; echo x > /tmp/d/x; sleep 60").stdout.strip()
    try:
        end = time.monotonic() + 10
        while time.monotonic() < end and _docker(api, "exec", cid, "test", "-f", "/tmp/d/x",
                                                 check=False).returncode:
            time.sleep(0.1)
        _docker(api, "cp", f"{cid}:/tmp/in.txt", str(tmp_path / "out.txt"))
        assert (tmp_path / "out.txt").read_text() == "inside\n"
        _docker(api, "cp", f"{cid}:/tmp/d", str(tmp_path / "dcopy"))
        assert (tmp_path / "dcopy" / "x").read_text() == "x\n"
        (tmp_path / "up.txt").write_text("from the host\n")
        _docker(api, "cp", str(tmp_path / "up.txt"), f"{cid}:/tmp/")
        assert _docker(api, "exec", cid, "cat", "/tmp/up.txt").stdout == "from the host\n"
        cp = _docker(api, "cp", f"{cid}:/nope", str(tmp_path / "nope"), check=False)
        assert cp.returncode != 0 and not (tmp_path / "nope").exists()
        diff = _docker(api, "diff", cid).stdout.split("\n")
        assert "A /tmp/in.txt" in diff and "A /tmp/up.txt" in diff
        line = _docker(api, "stats", "--no-stream", "--format", "{{.Name}} {{.MemUsage}} {{.PIDs}}",
                       cid).stdout
        name, *_, pids = line.split()
        assert name and int(pids) >= 1
        _docker(api, "export", "-o", str(tmp_path / "fs.tar"), cid)
        import tarfile
        with tarfile.open(tmp_path / "fs.tar") as t:
            names = t.getnames()
        assert any(n.endswith("bin/busybox") for n in names) and any(n.endswith("tmp/in.txt") for n in names)
    finally:
        _docker(api, "rm", "-f", cid)


def test_docker_cli_push_pull_history_update_and_versions(api):
    import registry_support as rs
    why = rs.available()
    if why:
        pytest.skip(why)
    with rs.Registry() as r:
        ref = f"{r.addr}/kbt/pushed:1"
        _docker(api, "tag", IMG, ref)
        out = _docker(api, "push", ref, timeout=120).stdout
        assert "digest: sha256:" in out
        _docker(api, "rmi", ref)
        _docker(api, "pull", ref, timeout=120)
        assert "kbt/pushed" in _docker(api, "images").stdout
        _docker(api, "rmi", ref)
    hist = _docker(api, "history", IMG).stdout.splitlines()
    assert hist[0].split()[:2] == ["IMAGE", "CREATED"] and len(hist) >= 2
    cid = _docker(api, "run", "-d", "--network", "none", IMG, "sleep", "60").stdout.strip()
    try:
        _docker(api, "update", "--memory", "64m", "--memory-swap", "64m", "--pids-limit", "50", cid)
        doc = json.loads(api("inspect", cid).stdout)[0]
        assert doc["HostConfig"]["Memory"] in (64 << 20, 0)  # inspect shows create's spec
    finally:
        _docker(api, "rm", "-f", cid)
    st, body = _raw(api, "GET", "/v9.99/version")
    assert st == 400 and b"too new" in body
    assert _raw(api, "GET", "/v1.24/version")[0] == 200
    assert _raw(api, "GET", "/images/search?term=x")[0] == 501


def test_other_users_are_refused_and_tcp_needs_a_client_certificate(api, tmp_path: Path):
    # another user cannot even connect: the socket's permissions refuse it
    probe = ("import socket,sys; s=socket.socket(socket.AF_UNIX)\n"
             "try:\n s.connect(sys.argv[1]); print('connected')\nexcept PermissionError: print('refused')")
    cp = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3",
                         "-c", probe, api.sock], capture_output=True, text=True, timeout=30)
    assert cp.stdout.strip() == "refused", cp.stdout + cp.stderr
    # TCP only with TLS and client certificates
    cp = api("system", "service", "--socket", str(tmp_path / "x.sock"), "--tcp", "127.0.0.1:1", check=False)
    assert cp.returncode == 125 and "tlscacert" in cp.stderr
    d = tmp_path
    ssl = ["openssl", "req", "-newkey", "rsa:2048", "-nodes"]
    run = lambda *a: subprocess.run(list(a), cwd=d, check=True, capture_output=True)  # noqa: E731
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca-key.pem", "-out", "ca.pem",
        "-days", "1", "-subj", "/CN=kbt-ca")
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
                      ("client", "extendedKeyUsage=clientAuth\n")):
        (d / f"{name}.ext").write_text(ext)
        run(*ssl, "-keyout", f"{name}-key.pem", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        run("openssl", "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "1", "-extfile", f"{name}.ext")
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    p = subprocess.Popen([sys.executable, "-m", "kobako.cli.main", "system", "service", "--socket",
                          str(d / "t.sock"), "--tcp", f"127.0.0.1:{port}", "--tlscacert", str(d / "ca.pem"),
                          "--tlscert", str(d / "server.pem"), "--tlskey", str(d / "server-key.pem")],
                         env=api.env, cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        import ssl as ssl_mod
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        ctx = ssl_mod.create_default_context(cafile=str(d / "ca.pem"))
        ctx.load_cert_chain(str(d / "client.pem"), str(d / "client-key.pem"))
        c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
        c.request("GET", "/_ping")
        assert c.getresponse().read() == b"OK"
        c.close()
        bare = ssl_mod.create_default_context(cafile=str(d / "ca.pem"))  # no client certificate
        with pytest.raises((ssl_mod.SSLError, ConnectionError, OSError)):
            c = http.client.HTTPSConnection("127.0.0.1", port, context=bare, timeout=10)
            c.request("GET", "/_ping")
            c.getresponse().read()
    finally:
        p.terminate()
        p.wait(timeout=10)


def test_docker_py_containers_images_networks_volumes_exec_streams(api, tmp_path: Path):
    docker = pytest.importorskip("docker")
    c = docker.DockerClient(base_url=f"unix://{api.sock}")
    (tmp_path / "index.html").write_text("py-web\n")
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    net = c.networks.create("api-pynet")
    vol = c.volumes.create("api-pyvol")
    web = c.containers.run(IMG, ["httpd", "-f", "-p", "80", "-h", "/www"], detach=True,
                           name="api-pyweb", ports={"80/tcp": ("127.0.0.1", port)},
                           volumes={str(tmp_path): {"bind": "/www", "mode": "ro"}},
                           labels={"kbt": "yes"}, environment={"A": "1"})
    try:
        web.reload()
        assert web.attrs["State"]["Running"] and web.labels == {"kbt": "yes"}
        body = None
        for _ in range(50):
            try:
                with urllib_get(f"http://127.0.0.1:{port}/") as r:
                    body = r.read()
                break
            except OSError:
                time.sleep(0.1)
        assert body == b"py-web\n"
        code, out = web.exec_run(["sh", "-c", "echo $A; exit 2"])
        assert (code, out) == (2, b"1\n")
        net.connect(web, aliases=["pyalias"])
        out = c.containers.run(IMG, ["sh", "-c", "wget -qO- http://pyalias/"], remove=True,
                               network="api-pynet")
        assert out == b"py-web\n"
        net.disconnect(web)
        assert [x.name for x in c.containers.list(filters={"label": "kbt=yes"})] == ["api-pyweb"]
        # attach: the output of a container started after the attach, as docker-py streams it
        att = c.containers.create(IMG, ["sh", "-c", "sleep 0.3; echo attached-out"], network_mode="none")
        sock_out = att.attach(stream=True, logs=True)
        att.start()
        assert b"".join(sock_out).strip() == b"attached-out"
        att.remove(force=True)
        # logs as a stream, following, while the container prints
        talker = c.containers.run(IMG, ["sh", "-c", "for i in 1 2 3; do echo line$i; sleep 0.2; done"],
                                  detach=True, volumes={"api-pyvol": {"bind": "/v", "mode": "rw"}})
        lines = [x.decode().strip() for x in talker.logs(stream=True, follow=True)]
        assert lines == ["line1", "line2", "line3"]
        assert talker.wait()["StatusCode"] == 0
        talker.remove()
        img = c.images.get(IMG)
        img.tag("kbt/pytag", "1")
        assert "kbt/pytag:1" in c.images.get("kbt/pytag:1").tags
        c.images.remove("kbt/pytag:1")
        assert "api-pyvol" in [v.name for v in c.volumes.list()]
        web.stop(timeout=1)
        web.reload()
        assert web.status == "exited"
    finally:
        web.remove(force=True)
        net.remove()
        vol.remove()
        c.close()
    assert "api-pynet" not in [n.name for n in docker.DockerClient(base_url=f"unix://{api.sock}").networks.list()]


def urllib_get(url: str):
    import urllib.request
    return urllib.request.urlopen(url, timeout=2)


def test_docker_cli_logs_follow_stop_and_events(api):
    t0 = int(time.time()) - 1
    cid = _docker(api, "run", "-d", "--network", "none", "--name", "api-f", "--stop-timeout", "1", IMG,
                  "sh", "-c", "echo first; sleep 30").stdout.strip()
    exe = shutil.which("docker")
    follow = subprocess.Popen([exe, "logs", "-f", cid], env=api.env_docker, stdout=subprocess.PIPE, text=True)
    try:
        assert follow.stdout.readline() == "first\n"
        _docker(api, "stop", "api-f")
        follow.wait(timeout=30)  # the follow ends when the container does
    finally:
        follow.kill()
    ev = _docker(api, "events", "--since", str(t0), "--until", str(int(time.time()) + 1),
                 "--filter", "container=api-f", "--format", "{{.Action}}").stdout.split()
    assert {"create", "start", "die"} <= set(ev), ev
    _docker(api, "rm", "api-f")


def test_quiet_followers_and_waiters_do_not_starve_the_server(api):
    """Followed logs and waits hold no thread: with more of them than the server's thread
    pool has threads, other requests are still answered, and hung-up clients are let go."""
    cid = api("run", "-d", "--network", "none", IMG, "sleep", "60").stdout.strip()
    held = []
    try:
        for i in range(12):
            s = socket.socket(socket.AF_UNIX)
            s.connect(api.sock)
            path = f"/containers/{cid}/logs?follow=1&stdout=1" if i % 2 else f"/containers/{cid}/wait"
            verb = "GET" if i % 2 else "POST"
            s.sendall(f"{verb} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode())
            held.append(s)
        time.sleep(0.5)
        t = time.monotonic()
        st, body = _raw(api, "GET", "/containers/json")
        assert st == 200 and cid in body.decode()
        out = _docker(api, "run", "--rm", "--network", "none", IMG, "echo", "still-served", timeout=30).stdout
        assert out == "still-served\n" and time.monotonic() - t < 30
    finally:
        for s in held:
            s.close()
        api("rm", "-f", cid)
