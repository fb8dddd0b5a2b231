"""The registry client against a real registry (docker-registry on 127.0.0.1, see
tests/registry_support.py) and against small misbehaving HTTP servers run in a thread:
garbage, 500s, dropped connections, wrong digests, redirects. No internet, no root."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import socket
import threading
from collections.abc import Callable

import pytest
import registry_support as rs

from kobako.image import auth, registry
from kobako.image.manifest import OCI_MANIFEST
from kobako.image.registry import Client, NotFound, RegistryError, Unauthorized, push_image

pytestmark = pytest.mark.skipif(rs.available() is not None, reason=rs.available() or "")


@pytest.fixture(autouse=True)
def private_config(tmp_path, monkeypatch):
    """No real auth or registries files: each test starts from defaults."""
    monkeypatch.setenv("KOBAKO_CONFIG", str(tmp_path / "kobako"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    monkeypatch.setenv("KOBAKO_REGISTRIES", str(tmp_path / "registries.json"))
    monkeypatch.setattr(registry, "BACKOFF", 0.01)


@pytest.fixture(scope="module")
def reg():
    with rs.Registry() as r:
        yield r


@pytest.fixture(scope="module")
def image(reg):
    return rs.upload_image(reg, "test/hello", "1")


def spy(client: Client) -> list[tuple[str, str]]:
    """Record (method, target) of every request the client makes."""
    calls: list[tuple[str, str]] = []
    real = client._do

    def do(ep, method, target, *a, **kw):
        calls.append((method, target))
        return real(ep, method, target, *a, **kw)

    client._do = do  # type: ignore[method-assign]
    return calls


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def never() -> None:
    raise AssertionError("the blob should not have been read")


# -- anonymous round trip -------------------------------------------------------------------------


def test_round_trip(reg):
    c = Client(reg.addr)
    c.ping()
    config = json.dumps({"rootfs": {"type": "layers", "diff_ids": []}}).encode()
    layer = os.urandom(100_000)
    for blob in (config, layer):
        assert c.push_blob("rt/app", sha(blob), len(blob), lambda b=blob: _bytes_io(b)) is True
    man = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                      "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                 "digest": sha(config), "size": len(config)},
                      "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                  "digest": sha(layer), "size": len(layer)}]}).encode()
    assert c.put_manifest("rt/app", "v1", man, OCI_MANIFEST) == sha(man)
    c.put_manifest("rt/app", "v2", man, OCI_MANIFEST)

    body, mt, digest = c.get_manifest("rt/app", "v1")
    assert (body, mt, digest) == (man, OCI_MANIFEST, sha(man))
    assert c.get_manifest("rt/app", sha(man)) == (man, OCI_MANIFEST, sha(man))
    with c.open_blob("rt/app", sha(layer), len(layer)) as s:
        got = b"".join(iter(lambda: s.read(7000), b""))
    assert got == layer
    assert c.blob_size("rt/app", sha(layer)) == len(layer)
    assert c.blob_size("rt/app", sha(b"nothing")) is None
    assert sorted(c.tags("rt/app")) == ["v1", "v2"]


def test_pull_what_the_helper_uploaded(reg, image):
    c = Client(reg.addr)
    body, mt, digest = c.get_manifest("test/hello", "1")
    assert (body, digest) == (image["manifest"], image["manifest_digest"])
    assert c.open_blob("test/hello", image["config_digest"]).read(-1) == image["config"]


def test_push_skips_a_blob_the_registry_has(reg, image):
    c = Client(reg.addr)
    calls = spy(c)
    assert c.push_blob("test/hello", image["layer_digest"], len(image["layer"]), never) is False
    assert [m for m, _ in calls] == ["HEAD"]


def test_chunked_upload_of_a_big_blob(reg):
    big = os.urandom(registry.MONOLITHIC_MAX + 12345)
    c = Client(reg.addr)
    calls = spy(c)
    assert c.push_blob("big/blob", sha(big), len(big), lambda: _bytes_io(big)) is True
    methods = [m for m, _ in calls]
    assert methods.count("PATCH") == -(-len(big) // registry.CHUNK) and methods[-1] == "PUT"
    s = c.open_blob("big/blob", sha(big), len(big))
    h, n = hashlib.sha256(), 0
    while b := s.read(1 << 20):
        h.update(b)
        n += len(b)
    assert n == len(big) and "sha256:" + h.hexdigest() == sha(big)


def test_cross_repo_mount(reg):
    blob = os.urandom(5000)
    c = Client(reg.addr)
    c.push_blob("mount/src", sha(blob), len(blob), lambda: _bytes_io(blob))
    calls = spy(c)
    assert c.push_blob("mount/dst", sha(blob), len(blob), never, mount_from="mount/src") is True
    assert [m for m, _ in calls] == ["HEAD", "POST"]
    assert "mount=" in calls[1][1] and "from=mount%2Fsrc" in calls[1][1]
    assert c.blob_size("mount/dst", sha(blob)) == len(blob)


def test_mount_falls_back_to_upload_when_the_source_lacks_it(reg):
    blob = os.urandom(3000)
    c = Client(reg.addr)
    assert c.push_blob("mount/dst2", sha(blob), len(blob), lambda: _bytes_io(blob), mount_from="mount/none")
    assert c.open_blob("mount/dst2", sha(blob)).read(-1) == blob


def test_push_image_from_the_store(reg, tmp_path):
    from kobako.image.store import ImageStore

    store = ImageStore(str(tmp_path / "root"))
    config = json.dumps({"rootfs": {"type": "layers", "diff_ids": []}}).encode()
    layers = [os.urandom(20_000 + i) for i in range(5)]
    for b in [config, *layers]:
        store.content.put(b, sha(b))
    descs = [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha(b), "size": len(b)}
             for b in layers]
    man = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                      "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                 "digest": sha(config), "size": len(config)}, "layers": descs}).encode()
    store.content.put(man, sha(man))
    rec = {"id": sha(config), "manifest": {"digest": sha(man), "mediaType": OCI_MANIFEST, "size": len(man)},
           "layers": descs, "names": [], "repoDigests": []}
    seen: dict[str, int] = {}
    lock = threading.Lock()

    def progress(digest: str, done: int, total: int) -> None:
        with lock:
            seen[digest] = max(seen.get(digest, 0), done)

    c = Client(reg.addr)
    assert push_image(c, "pushed/img", "t1", store, rec, progress) == sha(man)
    assert seen == {sha(b): len(b) for b in [config, *layers]}
    assert c.get_manifest("pushed/img", "t1")[2] == sha(man)
    assert c.open_blob("pushed/img", sha(layers[3])).read(-1) == layers[3]
    assert push_image(c, "pushed/img", "t2", store, rec) == sha(man)  # all blobs exist: manifest only

    store.content.delete(sha(layers[0]))
    # the registry has the layer: pushed as it is, from nothing local (HEAD)
    assert push_image(c, "pushed/img", "t3", store, rec) == sha(man)
    with pytest.raises(RegistryError, match="missing from the content store"):
        push_image(c, "pushed/elsewhere", "t1", store, rec)


# -- errors ---------------------------------------------------------------------------------------------


def test_missing_manifest_and_blob_are_not_found(reg, image):
    c = Client(reg.addr)
    with pytest.raises(NotFound) as e:
        c.get_manifest("test/hello", "nope")
    assert e.value.http_status == 404
    assert str(e.value) == f"registry {reg.addr}: manifest unknown: test/hello:nope not found"
    with pytest.raises(NotFound, match="not found"):
        c.get_manifest("no/such-repo", "latest")
    with pytest.raises(NotFound, match="blob unknown"):
        c.open_blob("test/hello", sha(b"absent"))
    with pytest.raises(NotFound):
        c.tags("no/such-repo")


def test_registry_down():
    addr = f"127.0.0.1:{rs.free_port()}"
    with pytest.raises(RegistryError) as e:
        Client(addr).get_manifest("a/b", "latest")
    msg = str(e.value)
    assert addr in msg and "connection refused (is the registry running?)" in msg
    assert e.value.http_status is None and "Traceback" not in msg and "\n" not in msg


# -- basic auth --------------------------------------------------------------------------------------------


def test_basic_auth():
    with rs.Registry(htpasswd=("alice", "secret")) as r:
        image = rs.upload_image(r)
        with pytest.raises(Unauthorized) as e:
            Client(r.addr, credentials=("alice", "wrong")).ping()
        msg = str(e.value)
        assert msg.startswith(f"registry {r.addr}: unauthorized: incorrect username or password")
        assert msg.endswith(f"(kobako login {r.addr})")
        with pytest.raises(Unauthorized, match="authentication required"):
            Client(r.addr).get_manifest("test/hello", "1")

        good = Client(r.addr, credentials=("alice", "secret"))
        good.ping()
        assert good.get_manifest("test/hello", "1")[2] == image["manifest_digest"]
        blob = os.urandom(1000)
        assert good.push_blob("test/other", sha(blob), len(blob), lambda: _bytes_io(blob))

        auth.store(r.addr, "alice", "secret")  # from the auth file, as after `kobako login`
        assert Client(r.addr).open_blob("test/other", sha(blob)).read(-1) == blob


# -- bearer tokens -------------------------------------------------------------------------------------------


def test_bearer_token_flow():
    with rs.Registry(token=True, users={"bob": "pw"}) as r:
        image = rs.upload_image(r)
        ts = r.token_server
        c = Client(r.addr, credentials=("bob", "pw"))
        c.ping()
        assert c.get_manifest("test/hello", "1")[2] == image["manifest_digest"]
        assert c.open_blob("test/hello", image["layer_digest"]).read(-1) == image["layer"]
        assert c.open_blob("test/hello", image["config_digest"]).read(-1) == image["config"]
        pulls = [q for q in ts.requests if q["scope"] == ["repository:test/hello:pull"]]
        assert len(pulls) == 1  # the token is cached per scope
        assert pulls[0]["service"] == "kobako-test-registry" and pulls[0]["account"] == "bob"
        assert pulls[0]["user"] == "bob"

        blob = os.urandom(2000)
        assert c.push_blob("test/pushed", sha(blob), len(blob), lambda: _bytes_io(blob))
        assert ["repository:test/pushed:pull,push"] in [q["scope"] for q in ts.requests]

        with pytest.raises(Unauthorized) as e:
            Client(r.addr, credentials=("bob", "nope")).get_manifest("test/hello", "1")
        assert "incorrect username or password" in str(e.value) and f"kobako login {r.addr}" in str(e.value)
        with pytest.raises(Unauthorized, match="authentication required"):
            Client(r.addr).get_manifest("test/hello", "1")


def test_an_identity_token_is_exchanged_at_the_token_server():
    with rs.Registry(token=True, users={"bob": "pw"}) as r:
        image = rs.upload_image(r)
        ts = r.token_server
        ts.refresh_tokens["identity-123"] = "bob"
        c = Client(r.addr, credentials=(registry.IDENTITY_TOKEN_USER, "identity-123"))
        assert c.get_manifest("test/hello", "1")[2] == image["manifest_digest"]
        asked = ts.requests[-1]
        assert asked["oauth"] and asked["user"] == "bob" and asked["scope"] == ["repository:test/hello:pull"]
        expired = Client(r.addr, credentials=(registry.IDENTITY_TOKEN_USER, "expired"))
        with pytest.raises(Unauthorized, match="incorrect username or password"):
            expired.get_manifest("test/hello", "1")


def test_bearer_anonymous_pull_and_access_token_field():
    with rs.Registry(token=True, users={"bob": "pw"}, anonymous_pull=True, access_token_only=True) as r:
        image = rs.upload_image(r)
        anon = Client(r.addr)
        anon.ping()
        assert anon.get_manifest("test/hello", "1")[2] == image["manifest_digest"]
        assert r.token_server.requests[-1]["user"] is None
        blob = b"anonymous may not push"
        with pytest.raises(Unauthorized, match="authentication required"):
            anon.push_blob("test/hello", sha(blob), len(blob), lambda: _bytes_io(blob))


# -- TLS -----------------------------------------------------------------------------------------------------


def test_insecure_falls_back_to_plain_http(reg, image):
    c = Client(reg.addr, insecure=True)
    assert c.get_manifest("test/hello", "1")[2] == image["manifest_digest"]
    assert c.registry.scheme == "http"


def test_tls_registry_with_a_self_signed_certificate():
    with rs.Registry(tls=True) as r:
        image = rs.upload_image(r)
        c = Client(r.addr, insecure=True)
        assert c.get_manifest("test/hello", "1")[2] == image["manifest_digest"]
        assert c.registry.scheme == "https"
        with pytest.raises(RegistryError, match="certificate not trusted") as e:
            Client(r.addr, insecure=False).ping()
        assert r.addr in str(e.value)


# -- mirrors -------------------------------------------------------------------------------------------------


def test_mirrors_first_then_the_registry(reg, tmp_path):
    with rs.Registry() as mirror:
        only_mirror = rs.upload_image(mirror, "test/hello", "mirrored", files={"m": b"mirror"})
        only_reg = rs.upload_image(reg, "test/hello", "upstream", files={"u": b"upstream"})
        (tmp_path / "registries.json").write_text(json.dumps({"mirrors": {reg.addr: [mirror.url]}}))
        c = Client(reg.addr)
        assert c.get_manifest("test/hello", "mirrored")[2] == only_mirror["manifest_digest"]
        assert c.open_blob("test/hello", only_mirror["layer_digest"]).read(-1) == only_mirror["layer"]
        assert c.get_manifest("test/hello", "upstream")[2] == only_reg["manifest_digest"]
        assert c.open_blob("test/hello", only_reg["layer_digest"]).read(-1) == only_reg["layer"]


def test_a_dead_mirror_is_skipped(reg, image, tmp_path):
    dead = f"http://127.0.0.1:{rs.free_port()}"
    (tmp_path / "registries.json").write_text(json.dumps({"mirrors": {reg.addr: [dead]}}))
    c = Client(reg.addr)
    assert c.get_manifest("test/hello", "1")[2] == image["manifest_digest"]
    assert c.mirrors[0].dead
    assert c.open_blob("test/hello", image["layer_digest"]).read(-1) == image["layer"]


# -- misbehaving servers -------------------------------------------------------------------------------------


class FakeServer:
    """An HTTP/1.1 server in a thread; `handle(h)` answers each request, `requests` records
    (method, path, headers)."""

    def __init__(self, handle: Callable[[http.server.BaseHTTPRequestHandler], None]) -> None:
        self.requests: list[tuple[str, str, dict]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                outer.requests.append((self.command, self.path, dict(self.headers)))
                handle(self)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = _any

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.addr = f"127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def __enter__(self) -> FakeServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def reply(h, status: int, body: bytes = b"", headers: dict | None = None) -> None:
    h.send_response(status)
    for k, v in (headers or {}).items():
        h.send_header(k, v)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    if h.command != "HEAD":
        h.wfile.write(body)


def ranged(data: bytes, cut: int | None, honour_range: bool = True, cuts: int = 1):
    """A blob server: answers `data`; the first `cuts` full (non-Range) answers are cut off
    after `cut` bytes."""
    left = [cuts]

    def handle(h) -> None:
        rng = h.headers.get("Range")
        if rng and honour_range:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            reply(h, 206, data[start:], {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"})
            return
        if cut is None or left[0] <= 0:
            reply(h, 200, data)
            return
        left[0] -= 1
        h.send_response(200)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data[:cut])
        h.wfile.flush()
        h.connection.shutdown(socket.SHUT_RDWR)
        h.close_connection = True
    return handle


def test_garbage_answer():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    addr = f"127.0.0.1:{srv.getsockname()[1]}"

    def serve() -> None:
        for _ in range(2):
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            conn.recv(65536)
            conn.sendall(b"SSH-2.0-OpenSSH_9.2 this is not http\r\n\r\n")
            conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        with pytest.raises(RegistryError) as e:
            Client(addr).get_manifest("a/b", "latest")
        assert str(e.value).startswith(f"registry {addr} sent an invalid answer")
    finally:
        srv.close()


def test_server_error_500():
    answer = b'{"errors":[{"code":"UNKNOWN","message":"disk on fire"}]}'
    with FakeServer(lambda h: reply(h, 500, answer)) as s:
        with pytest.raises(RegistryError) as e:
            Client(s.addr).get_manifest("a/b", "latest")
    assert e.value.http_status == 500
    assert str(e.value).startswith(f"registry {s.addr} answered 500 Internal Server Error: disk on fire")


def test_invalid_json_where_json_is_due():
    with FakeServer(lambda h: reply(h, 200, b"<html>hello</html>", {"Content-Type": "text/html"})) as s:
        with pytest.raises(RegistryError, match="sent an invalid answer"):
            Client(s.addr).tags("a/b")


@pytest.mark.parametrize("honour_range", [True, False])
def test_blob_download_resumes_after_a_dropped_connection(honour_range):
    data = os.urandom(3 << 20)
    with FakeServer(ranged(data, cut=1_000_000, honour_range=honour_range)) as s:
        stream = Client(s.addr).open_blob("a/b", sha(data), len(data))
        got = stream.read(-1)
    assert got == data
    ranges = [r[2].get("Range") for r in s.requests]
    assert ranges[0] is None and ranges[1].startswith("bytes=") and ranges[1].endswith("-")
    assert 0 < int(ranges[1][6:-1]) <= 1_000_000
    assert stream.resumes == 1 and len(s.requests) == 2


def test_blob_download_gives_up_after_retries():
    data = os.urandom(200_000)
    with FakeServer(ranged(data, cut=1000, honour_range=False, cuts=100)) as s:
        stream = Client(s.addr).open_blob("a/b", sha(data), len(data))
        with pytest.raises(RegistryError, match=f"failed at byte 1000 after {registry.RESUMES} retries") as e:
            stream.read(-1)
    assert s.addr in str(e.value)
    assert len(s.requests) == 1 + registry.RESUMES


def test_blob_never_longer_than_its_size():
    data = os.urandom(5000)
    with FakeServer(ranged(data, cut=None)) as s:
        assert Client(s.addr).open_blob("a/b", sha(data[:1234]), 1234).read(-1) == data[:1234]


def test_manifest_digest_mismatch():
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST}).encode()
    wrong = sha(b"something else")
    with FakeServer(lambda h: reply(h, 200, body, {"Content-Type": OCI_MANIFEST,
                                                   "Docker-Content-Digest": wrong})) as s:
        c = Client(s.addr)
        with pytest.raises(RegistryError, match="does not match its digest"):
            c.get_manifest("a/b", wrong)
        with pytest.raises(RegistryError, match="does not match its digest"):
            c.get_manifest("a/b", "latest")


def test_manifest_too_large():
    big = b" " * (registry.MAX_MANIFEST + 1)
    with FakeServer(lambda h: reply(h, 200, big, {"Content-Type": OCI_MANIFEST})) as s:
        with pytest.raises(RegistryError, match="larger than 4 MiB"):
            Client(s.addr).get_manifest("a/b", "latest")


def test_redirect_to_another_host_without_credentials():
    data = os.urandom(10_000)
    with FakeServer(ranged(data, cut=None)) as cdn:
        def handle(h) -> None:
            if not h.headers.get("Authorization"):
                reply(h, 401, b"", {"WWW-Authenticate": 'Basic realm="test"'})
            else:
                reply(h, 307, b"", {"Location": f"http://{cdn.addr}/blobs/x?sig=1"})
        with FakeServer(handle) as s:
            got = Client(s.addr, credentials=("u", "p")).open_blob("a/b", sha(data), len(data)).read(-1)
    assert got == data
    assert cdn.requests[0][1] == "/blobs/x?sig=1"
    assert "Authorization" not in cdn.requests[0][2]
    assert s.requests[-1][2]["Authorization"].startswith("Basic ")


def test_upload_with_relative_locations():
    blob = os.urandom(3000)

    def handle(h) -> None:
        if h.command == "HEAD":
            reply(h, 404)
        elif h.command == "POST":
            reply(h, 202, b"", {"Location": "abc?state=1"})  # relative to the POST's URL
        else:
            h.rfile.read(int(h.headers["Content-Length"]))
            reply(h, 201)
    with FakeServer(handle) as s:
        assert Client(s.addr).push_blob("a/b", sha(blob), len(blob), lambda: _bytes_io(blob))
    put = s.requests[-1]
    digest = sha(blob).replace(":", "%3A")
    assert put[0] == "PUT" and put[1] == f"/v2/a/b/blobs/uploads/abc?state=1&digest={digest}"


def test_tag_list_pagination():
    def handle(h) -> None:
        if "last=" in h.path:
            reply(h, 200, json.dumps({"name": "a/b", "tags": ["c"]}).encode())
        else:
            reply(h, 200, json.dumps({"name": "a/b", "tags": ["a", "b"]}).encode(),
                  {"Link": '</v2/a/b/tags/list?last=b&n=2>; rel="next"'})
    with FakeServer(handle) as s:
        assert Client(s.addr).tags("a/b") == ["a", "b", "c"]


def _bytes_io(b: bytes):
    import io
    return io.BytesIO(b)
