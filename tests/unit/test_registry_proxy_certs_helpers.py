"""Registry access in real networks, without a network: NO_PROXY matching and proxy choice
(proxy.py), certs.d lookup (certs.py), and the docker-credential-* protocol through a fake
helper of the test's own on PATH (credhelper.py, auth.py)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from kobako.image import auth, certs, credhelper, proxy
from kobako.image.registry import Client, RegistryError


@pytest.fixture(autouse=True)
def private_env(tmp_path, monkeypatch):
    for v in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setenv("KOBAKO_CONFIG", str(tmp_path / "kobako"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    monkeypatch.setenv("KOBAKO_REGISTRIES", str(tmp_path / "registries.json"))
    monkeypatch.setenv("KOBAKO_CERTS_DIR", str(tmp_path / "certs.d"))
    return tmp_path


# -- NO_PROXY, as Go's httpproxy reads it ------------------------------------------------------


@pytest.mark.parametrize("host,port,no_proxy,direct", [
    ("localhost", 5000, "", True),             # loopback is never proxied
    ("127.0.0.1", 5000, "", True),
    ("127.1.2.3", 80, "", True),
    ("::1", 443, "", True),
    ("registry.test", 5000, "", False),
    ("anything.example", 443, "*", True),
    ("example.com", 443, "example.com", True),  # a domain: itself and its subdomains
    ("reg.example.com", 443, "example.com", True),
    ("badexample.com", 443, "example.com", False),
    ("example.com", 443, ".example.com", False),  # a leading dot: subdomains only
    ("reg.example.com", 443, ".example.com", True),
    ("reg.example.com", 443, "*.example.com", True),
    ("example.com", 443, "*.example.com", False),
    ("reg.example.com", 5000, "example.com:5000", True),  # with a port: that port only
    ("reg.example.com", 443, "example.com:5000", False),
    ("10.1.2.3", 443, "10.0.0.0/8", True),      # CIDR ranges match addresses
    ("11.1.2.3", 443, "10.0.0.0/8", False),
    ("ten.example", 443, "10.0.0.0/8", False),  # names are not resolved
    ("10.1.2.3", 443, "10.1.2.3", True),
    ("10.1.2.3", 443, "10.1.2.3:5000", False),
    ("10.1.2.3", 5000, "10.1.2.3:5000", True),
    ("fd00::5", 443, "fd00::/8", True),
    ("fd00::5", 443, "fd00::5", True),
    ("fd00::5", 5000, "[fd00::5]:5000", True),
    ("REG.Example.COM", 443, " foo.org , EXAMPLE.com ", True),  # case and spaces do not matter
    ("reg.example.com", 443, "foo.org,,bar.org", False),
])
def test_no_proxy_matching(host, port, no_proxy, direct):
    assert proxy.bypassed(host, port, no_proxy) is direct


def test_the_proxy_by_scheme_and_the_upper_case_variable_first(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://upper:3128")
    monkeypatch.setenv("https_proxy", "http://lower:3128")
    monkeypatch.setenv("http_proxy", "plain:8080")
    p = proxy.for_url("https", "registry.test:5000")
    assert (p.host, p.port, p.authorization) == ("upper", 3128, None)
    p = proxy.for_url("http", "registry.test:5000")
    assert (p.host, p.port, p.display) == ("plain", 8080, "http://plain:8080")
    assert proxy.for_url("https", "127.0.0.1:5000") is None
    monkeypatch.setenv("no_proxy", "registry.test")
    assert proxy.for_url("https", "registry.test:5000") is None
    assert proxy.for_url("http", "other.test") is not None


def test_proxy_credentials_become_basic_auth_and_stay_out_of_messages(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://al%40ice:p%3Ass@proxy.corp:3128")
    p = proxy.for_url("https", "registry.test")
    assert p.headers() == {"Proxy-Authorization": "Basic YWxAaWNlOnA6c3M="}  # al@ice:p:ss
    assert p.display == "http://al@ice@proxy.corp:3128" and "p:ss" not in p.display


@pytest.mark.parametrize("url,words", [
    ("socks5://proxy:1080", "only http:// proxies"),
    ("https://proxy:3128", "only http:// proxies"),
    ("http://proxy:port", "invalid port"),
    ("socks5://user:secret@proxy:1080", "HTTPS_PROXY=socks5://user@proxy:1080: only http://"),
])
def test_a_bad_proxy_url_is_one_line_naming_the_variable(monkeypatch, url, words):
    monkeypatch.setenv("HTTPS_PROXY", url)
    with pytest.raises(proxy.ProxyConfigError, match=words) as e:
        proxy.for_url("https", "registry.test")
    assert "HTTPS_PROXY" in str(e.value) and "secret" not in str(e.value)
    c = Client("registry.test:5000", credentials=("u", "p"))
    with pytest.raises(RegistryError, match="registry registry.test:5000: HTTPS_PROXY"):
        c.ping()


def test_an_unreachable_proxy_names_the_registry_and_the_proxy(monkeypatch):
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    port = s.getsockname()[1]
    try:
        monkeypatch.setenv("HTTPS_PROXY", f"http://user:secret@127.0.0.1:{port}")
        with pytest.raises(RegistryError) as e:
            Client("registry.test:5000", credentials=("u", "p")).ping()
    finally:
        s.close()
    assert str(e.value) == (f"registry registry.test:5000: proxy http://user@127.0.0.1:{port}: "
                            "connection refused")


# -- certs.d ---------------------------------------------------------------------------------------


def test_certs_dirs_default_and_override(monkeypatch, tmp_path):
    monkeypatch.setenv("KOBAKO_CERTS_DIR", f"{tmp_path}/a:{tmp_path}/b")
    assert certs.dirs() == [f"{tmp_path}/a", f"{tmp_path}/b"]
    assert certs.ca_hint("reg:5000") == f"{tmp_path}/a/reg:5000/ca.crt"
    monkeypatch.delenv("KOBAKO_CERTS_DIR")
    if os.geteuid() == 0:
        assert certs.dirs() == ["/etc/docker/certs.d", "/etc/containers/certs.d"]
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    assert certs.dirs() == [f"{tmp_path}/cfg/containers/certs.d", f"{tmp_path}/cfg/docker/certs.d",
                            "/etc/docker/certs.d", "/etc/containers/certs.d"]


def test_certs_material_of_one_host(tmp_path):
    d = tmp_path / "certs.d" / "reg.test:5000"
    d.mkdir(parents=True)
    for n in ("ca.crt", "other.crt", "client.cert", "client.key", "README"):
        (d / n).write_text("x")
    (tmp_path / "certs.d" / "reg.test").mkdir()  # another port's directory is not this one's
    (tmp_path / "certs.d" / "reg.test" / "ca.crt").write_text("x")
    cas, client = certs.material("reg.test:5000")
    assert cas == [str(d / "ca.crt"), str(d / "other.crt")]
    assert client == (str(d / "client.cert"), str(d / "client.key"))
    assert certs.material("nothing.test") == ([], None)


def test_a_client_certificate_without_its_key_and_a_broken_ca(tmp_path):
    d = tmp_path / "certs.d" / "reg.test"
    d.mkdir(parents=True)
    (d / "client.cert").write_text("x")
    with pytest.raises(certs.CertsError, match="has no key .*client.key"):
        certs.material("reg.test")
    (d / "client.cert").unlink()
    (d / "ca.crt").write_text("not a certificate\n")
    with pytest.raises(RegistryError, match=r"^registry reg.test: CA certificate .*ca.crt cannot be used"):
        Client("reg.test", credentials=("u", "p")).ping()


# -- credential helpers ------------------------------------------------------------------------------

HELPER = r"""#!/bin/sh
# A docker-credential-* helper keeping its store in $FAKE_STORE (one JSON object).
echo "$@" >> "$FAKE_STORE.calls"
store="$FAKE_STORE"
[ -f "$store" ] || echo '{}' > "$store"
input=$(cat)
case "$1" in
get) exec python3 -c 'import json,sys
d = json.load(open(sys.argv[1])); u = sys.argv[2]
if u not in d: print("credentials not found in native keychain"); sys.exit(1)
print(json.dumps({"ServerURL": u, "Username": d[u][0], "Secret": d[u][1]}))' "$store" "$input" ;;
store) exec python3 -c 'import json,sys
d = json.load(open(sys.argv[1])); c = json.loads(sys.argv[2])
d[c["ServerURL"]] = [c["Username"], c["Secret"]]; json.dump(d, open(sys.argv[1], "w"))' "$store" "$input" ;;
erase) exec python3 -c 'import json,sys
d = json.load(open(sys.argv[1])); u = sys.argv[2]
if u not in d: print("credentials not found in native keychain"); sys.exit(1)
del d[u]; json.dump(d, open(sys.argv[1], "w"))' "$store" "$input" ;;
*) echo "unknown action $1" >&2; exit 2 ;;
esac
"""


@pytest.fixture
def helper(tmp_path, monkeypatch):
    """A fake helper `docker-credential-fake` on PATH; returns its store's path."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    prog = bindir / "docker-credential-fake"
    prog.write_text(HELPER)
    prog.chmod(0o755)
    (bindir / "docker-credential-broken").write_text("#!/bin/sh\necho 'keyring is locked' >&2\nexit 3\n")
    (bindir / "docker-credential-broken").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    store = tmp_path / "helper-store.json"
    monkeypatch.setenv("FAKE_STORE", str(store))
    return store


def docker_config(tmp_path, doc: dict) -> None:
    d = tmp_path / "docker"
    d.mkdir(exist_ok=True)
    (d / "config.json").write_text(json.dumps(doc))


def test_the_helper_protocol(helper):
    helper.write_text(json.dumps({"reg.test:5000": ["alice", "s3cret"],
                                  "https://index.docker.io/v1/": ["<token>", "refresh-me"]}))
    assert credhelper.get("fake", "reg.test:5000") == ("alice", "s3cret")
    assert credhelper.get("fake", "docker.io") == ("<token>", "refresh-me")  # Hub's server URL
    assert credhelper.get("fake", "other.test") is None
    credhelper.store("fake", "other.test", "bob", "pw")
    assert json.loads(helper.read_text())["other.test"] == ["bob", "pw"]
    assert credhelper.erase("fake", "other.test") is True
    assert credhelper.erase("fake", "other.test") is False
    calls = (helper.parent / (helper.name + ".calls")).read_text().split()
    assert calls == ["get", "get", "get", "store", "erase", "erase"]


def test_credhelpers_win_over_credsstore_and_auths(helper, tmp_path):
    helper.write_text(json.dumps({"reg.test:5000": ["alice", "from-helper"]}))
    docker_config(tmp_path, {"credsStore": "broken", "credHelpers": {"https://reg.test:5000": "fake"},
                             "auths": {"reg.test:5000": {"auth": "Ym9iOmZyb20tZmlsZQ=="}}})
    assert auth.helper("reg.test:5000") == "fake"
    assert auth.helper("else.test") == "broken"
    assert auth.get("reg.test:5000") == ("alice", "from-helper")


def test_a_helper_without_the_credentials_falls_back_to_auths(helper, tmp_path):
    docker_config(tmp_path, {"credsStore": "fake", "auths": {"reg.test": {"auth": "Ym9iOmZyb20tZmlsZQ=="}}})
    assert auth.get("reg.test") == ("bob", "from-file")
    assert auth.get("none.test") is None


def test_login_and_logout_go_through_the_helper(helper, tmp_path):
    docker_config(tmp_path, {"credHelpers": {"reg.test": "fake"}})
    auth.store("reg.test", "alice", "pw")
    assert json.loads(helper.read_text()) == {"reg.test": ["alice", "pw"]}
    assert not (tmp_path / "kobako" / "auth.json").exists()  # the password is only in the helper
    auth.store("plain.test", "carol", "pw2")  # no helper for this one: kobako's file
    assert "plain.test" in (tmp_path / "kobako" / "auth.json").read_text()
    assert auth.get("reg.test") == ("alice", "pw")
    assert auth.remove("reg.test") is True
    assert json.loads(helper.read_text()) == {}
    assert auth.remove("reg.test") is False


@pytest.mark.parametrize("name,words", [
    ("missing", "credential helper docker-credential-missing for registry reg.test is not installed "
                "(not found on PATH)"),
    ("broken", "credential helper docker-credential-broken failed for registry reg.test (get): "
               "keyring is locked"),
])
def test_a_missing_or_failing_helper_is_one_line(helper, tmp_path, name, words):
    docker_config(tmp_path, {"credsStore": name})
    with pytest.raises(auth.AuthError) as e:
        auth.get("reg.test")
    assert str(e.value) == words
    with pytest.raises(RegistryError, match="docker-credential-" + name):
        Client("reg.test")


def test_a_helper_answer_that_is_not_json(helper, tmp_path, monkeypatch):
    prog = tmp_path / "bin" / "docker-credential-fake"
    prog.write_text("#!/bin/sh\necho hello\n")
    with pytest.raises(credhelper.HelperError, match="invalid answer"):
        credhelper.get("fake", "reg.test")
    assert subprocess.run([str(prog), "get"], capture_output=True).returncode == 0
