"""`kobako pull/login/logout` in the networks users have: through an HTTP proxy of the test's
own (CONNECT for https, absolute-URI requests for http), from registries whose certificate
comes from a private CA (trusted through a certs.d directory) or that ask for a client
certificate, and with credentials kept by a docker-credential-* helper.

The registry is reached as registry.test:PORT, a name only the proxy resolves (to
127.0.0.1): a pull that works went through the proxy, as loopback names never are proxied."""

from __future__ import annotations

import base64
import http.server
import json
import os
import select
import socket
import threading
from pathlib import Path

import pytest
import registry_support as rs
from engine_support import Kobako, assert_user_error

pytestmark = [pytest.mark.root, pytest.mark.skipif(rs.available() is not None,
                                                    reason=str(rs.available()))]

NAME = "registry.test"


class Proxy:
    """A threaded HTTP proxy on 127.0.0.1 that maps NAME to 127.0.0.1, asks for Basic
    credentials (407 without), and records what it saw: (method, target) per request."""

    def __init__(self, user: str = "proxyuser", password: str = "proxy pw") -> None:
        self.seen: list[tuple[str, str]] = []
        self.want = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.url = ""
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _allowed(self) -> bool:
                outer.seen.append((self.command, self.path))
                if self.headers.get("Proxy-Authorization") == outer.want:
                    return True
                self.send_response(407)
                self.send_header("Proxy-Authenticate", 'Basic realm="test proxy"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return False

            def do_CONNECT(self) -> None:
                if not self._allowed():
                    return
                host, _, port = self.path.rpartition(":")
                try:
                    up = socket.create_connection((outer.resolve(host), int(port)), timeout=10)
                except OSError:
                    self.send_response(502)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200, "Connection established")
                self.end_headers()
                self.close_connection = True
                socks = [self.connection, up]
                try:
                    while True:
                        ready, _, _ = select.select(socks, [], [], 30)
                        if not ready:
                            return
                        for s in ready:
                            data = s.recv(65536)
                            if not data:
                                return
                            (up if s is self.connection else self.connection).sendall(data)
                except OSError:
                    return
                finally:
                    up.close()

            def _forward(self) -> None:
                import http.client
                import urllib.parse
                if not self._allowed():
                    return
                u = urllib.parse.urlsplit(self.path)
                assert u.scheme == "http", self.path  # an absolute URI, as proxies are sent
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else None
                up = http.client.HTTPConnection(outer.resolve(u.hostname or ""), u.port or 80, timeout=10)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "proxy-authorization"}
                up.request(self.command, (u.path or "/") + ("?" + u.query if u.query else ""), body, headers)
                r = up.getresponse()
                data = r.read()
                self.send_response(r.status, r.reason)
                for k, v in r.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                length = r.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length or str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                up.close()

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        port = self.httpd.server_address[1]
        self.url = f"http://{user}:{password.replace(' ', '%20')}@127.0.0.1:{port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @staticmethod
    def resolve(host: str) -> str:
        return "127.0.0.1" if host == NAME else host

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> rs.CA:
    return rs.CA(str(tmp_path_factory.mktemp("ca")))


@pytest.fixture(scope="module")
def tls_reg(ca):
    with rs.Registry(tls=ca, names=[NAME]) as r:
        rs.upload_image(r, "test/hello", "1")
        yield r


@pytest.fixture
def proxy():
    p = Proxy()
    yield p
    p.close()


@pytest.fixture
def k(tmp_path: Path) -> Kobako:
    k = Kobako(tmp_path / "k")
    for v in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy"):
        k.env.pop(v, None)
    k.env["KOBAKO_CERTS_DIR"] = str(tmp_path / "certs.d")
    k.env["KOBAKO_REGISTRIES"] = str(tmp_path / "registries.json")
    k.env["DOCKER_CONFIG"] = str(tmp_path / "docker")
    return k


def trust(k: Kobako, ca: rs.CA, netloc: str) -> Path:
    d = Path(k.env["KOBAKO_CERTS_DIR"]) / netloc
    d.mkdir(parents=True, exist_ok=True)
    (d / "ca.crt").write_bytes(Path(ca.crt).read_bytes())
    return d


def assert_nothing_left(k: Kobako) -> None:
    assert not k.blobs() and not k.snapshots()
    assert "test/hello" not in k("images").stdout
    tmp = k.data / "tmp"
    assert not tmp.exists() or not os.listdir(tmp)


def test_pull_over_connect_from_a_registry_with_a_private_ca(k: Kobako, tls_reg, ca, proxy: Proxy):
    netloc = f"{NAME}:{tls_reg.port}"
    trust(k, ca, netloc)
    k.env["HTTPS_PROXY"] = proxy.url
    k.env["NO_PROXY"] = "example.com,10.0.0.0/8"  # not this registry: still proxied
    out = k("pull", f"{netloc}/test/hello:1").stdout
    assert f"Downloaded newer image for {netloc}/test/hello:1" in out
    assert f"{netloc}/test/hello" in k("images").stdout
    assert ("CONNECT", netloc) in proxy.seen
    assert all(m == "CONNECT" for m, _ in proxy.seen)  # https never goes as plain requests


def test_an_untrusted_ca_is_one_line_naming_where_the_ca_goes(k: Kobako, tls_reg, proxy: Proxy):
    netloc = f"{NAME}:{tls_reg.port}"
    k.env["HTTPS_PROXY"] = proxy.url
    cp = k("pull", f"{netloc}/test/hello:1", check=False)
    assert_user_error(cp, f"registry {netloc}", "not trusted",
                      str(Path(k.env["KOBAKO_CERTS_DIR"]) / netloc / "ca.crt"))
    assert_nothing_left(k)


def test_a_broken_ca_file_is_one_line(k: Kobako, tls_reg, proxy: Proxy):
    netloc = f"{NAME}:{tls_reg.port}"
    d = Path(k.env["KOBAKO_CERTS_DIR"]) / netloc
    d.mkdir(parents=True)
    (d / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\nnonsense\n-----END CERTIFICATE-----\n")
    k.env["HTTPS_PROXY"] = proxy.url
    cp = k("pull", f"{netloc}/test/hello:1", check=False)
    assert_user_error(cp, f"registry {netloc}", f"{d}/ca.crt cannot be used: not a valid PEM file")
    assert_nothing_left(k)


def test_plain_http_through_the_proxy_as_absolute_uris(k: Kobako, proxy: Proxy):
    with rs.Registry() as reg:
        rs.upload_image(reg, "test/hello", "1")
        netloc = f"{NAME}:{reg.port}"
        k.env["HTTP_PROXY"] = k.env["HTTPS_PROXY"] = proxy.url
        (Path(k.env["KOBAKO_REGISTRIES"])).write_text(json.dumps({"insecure": [netloc]}))
        k("pull", "-q", f"{netloc}/test/hello:1")
    gets = [t for m, t in proxy.seen if m == "GET"]
    assert f"http://{netloc}/v2/test/hello/manifests/1" in gets
    assert any(t.startswith(f"http://{netloc}/v2/test/hello/blobs/sha256:") for t in gets)


def test_an_unreachable_proxy_or_wrong_proxy_password(k: Kobako, tls_reg, ca, proxy: Proxy):
    netloc = f"{NAME}:{tls_reg.port}"
    trust(k, ca, netloc)
    port = rs.free_port()
    k.env["HTTPS_PROXY"] = f"http://127.0.0.1:{port}"
    cp = k("pull", f"{netloc}/test/hello:1", check=False)
    assert_user_error(cp, f"registry {netloc}: proxy http://127.0.0.1:{port}: connection refused")
    assert_nothing_left(k)
    k.env["HTTPS_PROXY"] = proxy.url.replace("proxy%20pw", "wrong")
    cp = k("pull", f"{netloc}/test/hello:1", check=False)
    line = assert_user_error(cp, f"registry {netloc}: proxy http://proxyuser@127.0.0.1:",
                             "407 Proxy Authentication Required")
    assert "wrong" not in line  # the proxy's password is never printed
    assert_nothing_left(k)


def test_a_registry_that_asks_for_a_client_certificate(k: Kobako, ca, tmp_path: Path):
    with rs.Registry(tls=ca, client_ca=ca) as reg:
        rs.upload_image(reg, "test/hello", "1")
        d = trust(k, ca, reg.addr)
        reg_insecure = Path(k.env["KOBAKO_REGISTRIES"])
        reg_insecure.write_text("{}")
        # 127.0.0.1 is plain HTTP unless --tls-verify says otherwise: ask for verified TLS
        cp = k("pull", "--tls-verify=true", f"{reg.addr}/test/hello:1", check=False)
        assert_user_error(cp, f"registry {reg.addr}", "client certificate", f"{d}/client.cert")
        assert_nothing_left(k)
        key, crt = ca.issue("kobako-client", client=True, d=str(tmp_path))
        (d / "client.cert").write_bytes(Path(crt).read_bytes())
        (d / "client.key").write_bytes(Path(key).read_bytes())
        k("pull", "-q", "--tls-verify=true", f"{reg.addr}/test/hello:1")


HELPER = """#!/bin/sh
# docker-credential-testhelper: one login, kept in $HELPER_STORE as "server user secret".
echo "$1" >> "$HELPER_STORE.calls"
input=$(cat)
case "$1" in
get) [ -f "$HELPER_STORE" ] || { echo "credentials not found in native keychain"; exit 1; }
     read -r server user secret < "$HELPER_STORE"
     [ "$server" = "$input" ] || { echo "credentials not found in native keychain"; exit 1; }
     printf '{"ServerURL":"%s","Username":"%s","Secret":"%s"}\\n' "$server" "$user" "$secret" ;;
store) python3 -c 'import json,sys; c = json.loads(sys.argv[1])
print(c["ServerURL"], c["Username"], c["Secret"])' "$input" > "$HELPER_STORE" ;;
erase) rm "$HELPER_STORE" ;;
esac
"""


def test_login_pull_logout_through_a_credential_helper(k: Kobako, tmp_path: Path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "docker-credential-testhelper").write_text(HELPER)
    (bindir / "docker-credential-testhelper").chmod(0o755)
    store = tmp_path / "helper-store"
    k.env["PATH"] = f"{bindir}:{k.env['PATH']}"
    k.env["HELPER_STORE"] = str(store)
    docker = Path(k.env["DOCKER_CONFIG"])
    docker.mkdir()
    with rs.Registry(htpasswd=("alice", "s3cret")) as reg:
        rs.upload_image(reg, "test/hello", "1")
        (docker / "config.json").write_text(json.dumps({"credHelpers": {reg.addr: "testhelper"}}))
        cp = k("pull", f"{reg.addr}/test/hello:1", check=False)  # the helper has nothing yet
        assert_user_error(cp, "unauthorized")
        k("login", "-u", "alice", "--password-stdin", reg.addr, input="s3cret\n")
        assert store.read_text().split() == [reg.addr, "alice", "s3cret"]
        assert not (k.root / "config" / "auth.json").exists()
        k("pull", "-q", f"{reg.addr}/test/hello:1")
        assert "Removing login credentials" in k("logout", reg.addr).stdout
        assert not store.exists()
        (docker / "config.json").write_text(json.dumps({"credsStore": "absent"}))
        cp = k("pull", f"{reg.addr}/test/hello:1", check=False)
        assert_user_error(cp, "credential helper docker-credential-absent", reg.addr, "not installed")
    calls = (tmp_path / "helper-store.calls").read_text().split()
    assert calls[0] == "get" and "store" in calls and calls[-1] == "erase"
