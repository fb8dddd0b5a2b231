"""Credentials (auth.py), registry configuration (registries.py) and the registry client's
small parsers and endpoint choice: no network, no root."""

from __future__ import annotations

import base64
import json
import os
import stat

import pytest

from kobako.image import auth, registries
from kobako.image.registry import (
    DOCKER_HUB,
    Client,
    RegistryError,
    error_text,
    next_link,
    parse_challenge,
    pick_challenge,
)


@pytest.fixture(autouse=True)
def private_config(tmp_path, monkeypatch):
    """Point every config file at the test's own directory (never the user's real ones)."""
    monkeypatch.setenv("KOBAKO_CONFIG", str(tmp_path / "kobako"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    monkeypatch.setenv("KOBAKO_REGISTRIES", str(tmp_path / "registries.json"))
    return tmp_path


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


# -- auth.json ---------------------------------------------------------------------------------


def test_path_follows_env_and_home(tmp_path, monkeypatch):
    assert auth.path() == str(tmp_path / "kobako" / "auth.json")
    monkeypatch.delenv("KOBAKO_CONFIG")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert auth.path() == str(tmp_path / "home" / ".config" / "kobako" / "auth.json")


def test_store_writes_docker_format_0600_in_0700_dir(tmp_path):
    auth.store("127.0.0.1:5000", "alice", "s3cret:with:colons")
    p = auth.path()
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(p)).st_mode) == 0o700
    with open(p) as f:
        doc = json.load(f)
    assert doc == {"auths": {"127.0.0.1:5000": {"auth": b64("alice:s3cret:with:colons")}}}
    assert auth.get("127.0.0.1:5000") == ("alice", "s3cret:with:colons")
    assert auth.get("127.0.0.1:5001") is None


def test_store_tightens_an_existing_loose_file_and_keeps_other_keys(tmp_path):
    p = auth.path()
    os.makedirs(os.path.dirname(p))
    with open(p, "w") as f:
        json.dump({"auths": {"other:1": {"auth": b64("o:p")}}, "credsStore": "x"}, f)
    os.chmod(p, 0o644)
    auth.store("myreg:5000", "bob", "pw")
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
    with open(p) as f:
        doc = json.load(f)
    assert doc["credsStore"] == "x"
    assert set(doc["auths"]) == {"other:1", "myreg:5000"}


def test_store_get_remove_and_normalised_keys():
    auth.store("https://index.docker.io/v1/", "carol", "pw1")
    for name in ("docker.io", "index.docker.io", "registry-1.docker.io", "https://index.docker.io/v1/"):
        assert auth.get(name) == ("carol", "pw1"), name
    auth.store("docker.io", "carol", "pw2")  # replaces, does not duplicate
    with open(auth.path()) as f:
        assert json.load(f)["auths"] == {"docker.io": {"auth": b64("carol:pw2")}}
    assert auth.remove("index.docker.io") is True
    assert auth.get("docker.io") is None
    assert auth.remove("docker.io") is False


def test_remove_without_a_file_is_false():
    assert auth.remove("127.0.0.1:5000") is False
    assert not os.path.exists(auth.path())


def test_docker_config_fallback_read_only(tmp_path):
    d = tmp_path / "docker"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"auths": {
        "https://index.docker.io/v1/": {"auth": b64("dora:hub")},
        "myreg:5000": {"username": "u", "password": "p"},
        "broken:1": {"auth": "!!!not base64"},
    }}))
    assert auth.get("docker.io") == ("dora", "hub")
    assert auth.get("myreg:5000") == ("u", "p")
    assert auth.get("broken:1") is None
    auth.store("docker.io", "mine", "pw")  # kobako's own file wins
    assert auth.get("docker.io") == ("mine", "pw")
    assert auth.remove("myreg:5000") is False  # never written
    assert "myreg:5000" in json.loads((d / "config.json").read_text())["auths"]


def test_malformed_docker_config_is_skipped(tmp_path):
    d = tmp_path / "docker"
    d.mkdir()
    (d / "config.json").write_text("{not json")
    assert auth.get("docker.io") is None


def test_malformed_kobako_file_is_an_error_naming_it():
    p = auth.path()
    os.makedirs(os.path.dirname(p))
    with open(p, "w") as f:
        f.write("[1, 2")
    with pytest.raises(auth.AuthError, match=p):
        auth.get("docker.io")
    with pytest.raises(auth.AuthError, match=p):
        auth.store("docker.io", "a", "b")
    with pytest.raises(RegistryError, match=p):
        Client("docker.io")


def test_store_rejects_bad_user_names():
    with pytest.raises(auth.AuthError):
        auth.store("docker.io", "a:b", "pw")
    with pytest.raises(auth.AuthError):
        auth.store("docker.io", "", "pw")


# -- WWW-Authenticate and other headers -----------------------------------------------------------------


def test_parse_bearer_challenge_with_commas_in_quotes():
    h = ('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
         'scope="repository:library/busybox:pull,push"')
    assert parse_challenge(h) == ("bearer", {"realm": "https://auth.docker.io/token",
                                             "service": "registry.docker.io",
                                             "scope": "repository:library/busybox:pull,push"})


def test_parse_challenge_variants():
    assert parse_challenge('Basic realm="Registry Realm"') == ("basic", {"realm": "Registry Realm"})
    assert parse_challenge("BASIC realm=plain , charset=UTF-8") == ("basic", {"realm": "plain",
                                                                            "charset": "UTF-8"})
    assert parse_challenge('Bearer realm="a\\"b", error="insufficient_scope"') == (
        "bearer", {"realm": 'a"b', "error": "insufficient_scope"})
    assert parse_challenge('Bearer  Realm = "http://127.0.0.1:9/t" ,, service="s"') == (
        "bearer", {"realm": "http://127.0.0.1:9/t", "service": "s"})
    assert parse_challenge("Negotiate") == ("negotiate", {})
    assert parse_challenge("Bearer abc123==")[0] == "bearer"  # a token68: nothing kobako uses
    assert parse_challenge("") == ("", {})


def test_pick_challenge_prefers_bearer():
    assert pick_challenge(['Basic realm="x"', 'Bearer realm="y"'])[0] == "bearer"
    assert pick_challenge(["Negotiate", 'Basic realm="x"'])[0] == "basic"
    assert pick_challenge([]) == ("", {})


def test_error_text_and_next_link():
    body = json.dumps({"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown", "detail": {}},
                                  {"code": "X", "message": "manifest unknown"}]}).encode()
    assert error_text(body) == "manifest unknown"
    assert error_text(b"<html>oops</html>") == ""
    assert error_text(b'{"errors": "no"}') == ""
    assert next_link('</v2/a/tags/list?last=b&n=2>; rel="next"') == "/v2/a/tags/list?last=b&n=2"
    assert next_link(None) is None
    assert next_link('<http://x/>; rel="prev"') is None


# -- registries.json ------------------------------------------------------------------------------------


def write_config(tmp_path, doc) -> None:
    (tmp_path / "registries.json").write_text(doc if isinstance(doc, str) else json.dumps(doc))


def test_defaults_without_a_file():
    assert registries.load() == {"insecure": [], "mirrors": {}, "blocked": [], "search": []}
    for d in ("localhost", "localhost:5000", "127.0.0.1:5000", "127.9.8.7", "[::1]:5000", "::1"):
        assert registries.is_insecure(d), d
    for d in ("docker.io", "quay.io", "10.0.0.1:5000", "example.com:443"):
        assert not registries.is_insecure(d), d
    assert registries.mirrors("docker.io") == []


def test_config_insecure_entries(tmp_path):
    write_config(tmp_path, {"insecure": ["myreg:5000", "bare.example", "10.0.0.0/8", "https://Sec.Example:8443/"]})
    assert registries.is_insecure("myreg:5000")
    assert not registries.is_insecure("myreg:5001")
    assert registries.is_insecure("bare.example:1234")
    assert registries.is_insecure("10.20.30.40:5000")
    assert not registries.is_insecure("11.0.0.1:5000")
    assert registries.is_insecure("sec.example:8443")


def test_config_mirrors_keyed_by_normalised_name(tmp_path):
    write_config(tmp_path, {"mirrors": {"index.docker.io": ["http://127.0.0.1:5001"],
                                        "docker.io": ["https://mirror.example"]}})
    assert registries.mirrors("docker.io") == ["http://127.0.0.1:5001", "https://mirror.example"]
    assert registries.mirrors("registry-1.docker.io") == registries.mirrors("docker.io")
    assert registries.mirrors("quay.io") == []


@pytest.mark.parametrize("doc", [
    "{nope",
    "[]",
    {"insecure": "myreg:5000"},
    {"insecure": [5000]},
    {"insecure": ["300.0.0.0/8"]},
    {"mirrors": ["http://x"]},
    {"mirrors": {"docker.io": "http://x"}},
    {"mirrors": {"docker.io": ["ftp://x"]}},
])
def test_malformed_config_is_a_registry_error_naming_the_file(tmp_path, doc):
    write_config(tmp_path, doc)
    with pytest.raises(RegistryError, match=str(tmp_path / "registries.json")):
        registries.load()
    with pytest.raises(RegistryError, match="registries config"):
        Client("quay.io")


def test_normalize():
    assert registries.normalize("https://index.docker.io/v1/") == "docker.io"
    assert registries.normalize("MyReg:5000") == "myreg:5000"
    assert registries.split_host("[::1]:5000") == ("::1", "5000")
    assert registries.split_host("host:5000") == ("host", "5000")
    assert registries.split_host("::1") == ("::1", None)


# -- which endpoint a Client talks to (nothing is sent) ---------------------------------------------------


def test_client_endpoints(tmp_path):
    write_config(tmp_path, {"insecure": ["myreg:5000"], "mirrors": {"docker.io": ["127.0.0.1:5001"]}})
    hub = Client("docker.io", credentials=("a", "b"))
    assert (hub.registry.scheme, hub.registry.netloc, hub.registry.verify) == ("https", DOCKER_HUB, True)
    assert [(m.scheme, m.netloc) for m in hub.mirrors] == [("http", "127.0.0.1:5001")]
    assert Client("index.docker.io").domain == "docker.io"
    local = Client("127.0.0.1:5000")
    assert (local.registry.scheme, local.registry.fallback) == ("http", False)
    assert Client("localhost:5000").registry.scheme == "http"
    mine = Client("myreg:5000")
    assert (mine.registry.scheme, mine.registry.verify, mine.registry.fallback) == ("https", False, True)
    assert Client("quay.io").registry.verify is True
    forced = Client("quay.io", insecure=True)
    assert (forced.registry.verify, forced.registry.fallback) == (False, True)
    strict = Client("127.0.0.1:5000", insecure=False)
    assert (strict.registry.scheme, strict.registry.verify) == ("https", True)


def test_client_reads_credentials_from_auth_file():
    auth.store("127.0.0.1:5000", "alice", "pw")
    assert Client("127.0.0.1:5000").registry.credentials == ("alice", "pw")
    assert Client("127.0.0.1:5000", credentials=("x", "y")).registry.credentials == ("x", "y")
    assert Client("127.0.0.1:5001").registry.credentials is None


