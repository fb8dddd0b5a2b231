"""A real registry for tests: Debian's docker-registry (CNCF distribution 2.8) on a free
127.0.0.1 port, storage in a temp dir, no internet needed.

    with Registry() as reg:                              # anonymous, plain HTTP
        info = upload_image(reg, "test/hello", "1")      # something to pull
    with Registry(htpasswd=("alice", "secret")) as reg:  # Basic auth
    with Registry(token=True, users={"bob": "pw"}) as reg:   # Bearer tokens from a token server
    with Registry(tls=True) as reg:                      # HTTPS with a self-signed certificate
    with Registry(tls=CA(d), names=["registry.test"]) as reg:   # HTTPS, a certificate from a private CA
    with Registry(tls=ca, client_ca=ca) as reg:          # ... that also asks for a client certificate

The token server runs in a thread of the test process on another 127.0.0.1 port and
signs RS256 JWTs with `openssl dgst -sign`; the registry trusts its self-signed
certificate through `rootcertbundle`, and the token carries it in its `x5c` header.
Needs: docker-registry and openssl (apt). htpasswd files are made with Python's
`crypt` (bcrypt through libxcrypt), so apache2-utils is not needed.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import http.client
import http.server
import io
import json
import os
import shutil
import signal
import ssl
import subprocess
import tarfile
import tempfile
import threading
import time
import urllib.parse
import uuid
import warnings

from support import free_port  # (its callers also take it from here: rs.free_port)

REGISTRY_BIN = "/usr/bin/docker-registry"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def available() -> str | None:
    """None if a registry can be started here, else why not (for pytest.skip)."""
    if not os.access(REGISTRY_BIN, os.X_OK):
        return "docker-registry is not installed (apt-get install docker-registry)"
    if not shutil.which("openssl"):
        return "openssl is not installed"
    return None


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_cert(d: str, name: str, cn: str = "127.0.0.1") -> tuple[str, str]:
    """A self-signed RSA certificate (also valid for IP 127.0.0.1): (key path, cert path)."""
    key, crt = os.path.join(d, name + ".key"), os.path.join(d, name + ".crt")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", crt,
                    "-days", "2", "-subj", f"/CN={cn}", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return key, crt


class CA:
    """A private certificate authority made with openssl in `d`; `crt` is what a client trusts."""

    def __init__(self, d: str, name: str = "kobako test CA") -> None:
        self.dir = d
        self.key, self.crt = os.path.join(d, "ca.key"), os.path.join(d, "ca.crt")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", self.key,
                        "-out", self.crt, "-days", "2", "-subj", f"/CN={name}",
                        "-addext", "basicConstraints=critical,CA:TRUE",
                        "-addext", "keyUsage=critical,keyCertSign,cRLSign"], check=True, capture_output=True)

    def issue(self, name: str, sans: list[str] | None = None, client: bool = False,
              d: str | None = None) -> tuple[str, str]:
        """A certificate signed by this CA: (key path, cert path); `sans` are host names and
        addresses, `client` makes it a client certificate."""
        d = d or self.dir
        key, csr, crt = (os.path.join(d, name + ext) for ext in (".key", ".csr", ".crt"))
        subprocess.run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
                        "-subj", f"/CN={name}"], check=True, capture_output=True)
        ext = os.path.join(d, name + ".ext")
        with open(ext, "w") as f:
            f.write(f"extendedKeyUsage={'clientAuth' if client else 'serverAuth'}\n")
            if sans:
                alt = ",".join(("IP:" if s.replace(".", "").isdigit() or ":" in s else "DNS:") + s
                               for s in sans)
                f.write(f"subjectAltName={alt}\n")
        subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA", self.crt, "-CAkey", self.key,
                        "-CAcreateserial", "-days", "2", "-out", crt, "-extfile", ext],
                       check=True, capture_output=True)
        return key, crt


def bcrypt_line(user: str, password: str) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # crypt leaves the stdlib in 3.13
        import crypt
    return f"{user}:{crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))}\n"


# -- the token server ------------------------------------------------------------------------


class TokenServer:
    """Issues registry tokens: users (name -> password) get what they ask for; anonymous
    callers get pull access if `anonymous_pull`, else nothing. `requests` records each
    query (dicts of service, scope list, account, user) for assertions. `refresh_tokens`
    (token -> user) are the identity tokens an OAuth2 POST (grant_type=refresh_token) may use."""

    def __init__(self, d: str, service: str, users: dict[str, str], anonymous_pull: bool = False,
                 access_token_only: bool = False) -> None:
        self.service = service
        self.issuer = "kobako-test-issuer"
        self.users = users
        self.anonymous_pull = anonymous_pull
        self.access_token_only = access_token_only
        self.key, self.cert = make_cert(d, "token", "kobako-test-token")
        with open(self.cert) as f:
            pem = f.read()
        self.x5c = "".join(line for line in pem.splitlines() if not line.startswith("-----"))
        self.requests: list[dict] = []
        self.refresh_tokens: dict[str, str] = {}
        self.port = free_port()
        self.realm = f"http://127.0.0.1:{self.port}/token"
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer._serve(self)

            def do_POST(self) -> None:
                outer._serve_oauth(self)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def _serve(self, h: http.server.BaseHTTPRequestHandler) -> None:
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(h.path).query)
        user = None
        a = h.headers.get("Authorization", "")
        if a.startswith("Basic "):
            name, _, pw = base64.b64decode(a[6:]).decode().partition(":")
            if self.users.get(name) != pw or not pw:
                body = json.dumps({"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]})
                h.send_response(401)
                h.send_header("Content-Type", "application/json")
                h.send_header("Content-Length", str(len(body)))
                h.end_headers()
                h.wfile.write(body.encode())
                return
            user = name
        scopes = q.get("scope", [])
        self.requests.append({"service": q.get("service", [None])[0], "scope": scopes,
                              "account": q.get("account", [None])[0], "user": user})
        token = self.issue(scopes, user)
        doc = {"access_token": token} if self.access_token_only else {"token": token, "access_token": token}
        doc["expires_in"] = 300
        body = json.dumps(doc).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def _serve_oauth(self, h: http.server.BaseHTTPRequestHandler) -> None:
        n = int(h.headers.get("Content-Length") or 0)
        form = urllib.parse.parse_qs(h.rfile.read(n).decode())
        user = self.refresh_tokens.get(form.get("refresh_token", [""])[0])
        if form.get("grant_type") != ["refresh_token"] or user is None:
            h.send_response(401)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        scopes = form.get("scope", [""])[0].split()
        self.requests.append({"service": form.get("service", [None])[0], "scope": scopes,
                              "account": None, "user": user, "oauth": True})
        body = json.dumps({"access_token": self.issue(scopes, user), "expires_in": 300}).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def issue(self, scopes: list[str], user: str | None) -> str:
        """A signed JWT granting `scopes` (space-separated lists allowed) to `user`."""
        access = []
        for s in " ".join(scopes).split():
            typ, _, rest = s.partition(":")
            name, _, actions = rest.rpartition(":")
            acts = actions.split(",") if user else [a for a in actions.split(",")
                                                    if a == "pull" and self.anonymous_pull]
            if acts:
                access.append({"type": typ, "name": name, "actions": acts})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        claims = {"iss": self.issuer, "sub": user or "", "aud": self.service, "exp": now + 300,
                  "nbf": now - 10, "iat": now, "jti": uuid.uuid4().hex, "access": access}
        signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", self.key], input=signing_input.encode(),
                             capture_output=True, check=True).stdout
        return signing_input + "." + b64url(sig)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# -- the registry --------------------------------------------------------------------------------


class Registry:
    def __init__(self, htpasswd: tuple[str, str] | None = None, token: bool = False,
                 users: dict[str, str] | None = None, anonymous_pull: bool = False, tls: bool | CA = False,
                 access_token_only: bool = False, names: list[str] | None = None,
                 client_ca: CA | None = None) -> None:
        why = available()
        if why:
            raise RuntimeError(why)
        self.htpasswd = htpasswd
        self.token = token
        self.users = dict(users or {})
        if htpasswd:
            self.users.setdefault(*htpasswd)
        self.anonymous_pull = anonymous_pull
        self.tls = tls
        self.access_token_only = access_token_only
        self.names = names or []          # host names the CA-signed certificate is for
        self.client_ca = client_ca        # TLS client certificates must come from this CA
        self.client_cert: tuple[str, str] | None = None  # (cert, key) the helpers below present
        self.dir = ""
        self.proc: subprocess.Popen | None = None
        self.token_server: TokenServer | None = None
        self.port = 0

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.addr}"

    @property
    def credentials(self) -> tuple[str, str] | None:
        return self.htpasswd or (next(iter(self.users.items())) if self.users else None)

    def __enter__(self) -> Registry:
        self.dir = tempfile.mkdtemp(prefix="kobako-registry.")
        try:
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _start(self) -> None:
        self.port = free_port()
        cfg = [
            "version: 0.1",
            "log: {level: error, accesslog: {disabled: true}}",
            f"storage: {{filesystem: {{rootdirectory: {self.dir}/data}}, delete: {{enabled: true}}}}",
            "http:",
            f"  addr: {self.addr}",
            f"  secret: {uuid.uuid4().hex}",
        ]
        if isinstance(self.tls, CA):
            key, crt = self.tls.issue("server", [*self.names, "127.0.0.1"], d=self.dir)
            cfg += ["  tls:", f"    certificate: {crt}", f"    key: {key}"]
        elif self.tls:
            key, crt = make_cert(self.dir, "server")
            cfg += ["  tls:", f"    certificate: {crt}", f"    key: {key}"]
        if self.client_ca:
            cfg += ["    clientcas:", f"      - {self.client_ca.crt}"]
            key, crt = self.client_ca.issue("registry-helper", client=True, d=self.dir)
            self.client_cert = (crt, key)
        if self.htpasswd:
            with open(os.path.join(self.dir, "htpasswd"), "w") as f:
                f.write(bcrypt_line(*self.htpasswd))
            cfg += ["auth:", f"  htpasswd: {{realm: kobako-test, path: {self.dir}/htpasswd}}"]
        elif self.token:
            self.token_server = TokenServer(self.dir, "kobako-test-registry", self.users, self.anonymous_pull,
                                            self.access_token_only)
            ts = self.token_server
            cfg += ["auth:", "  token:", f"    realm: {ts.realm}", f"    service: {ts.service}",
                    f"    issuer: {ts.issuer}", f"    rootcertbundle: {ts.cert}"]
        path = os.path.join(self.dir, "config.yml")
        with open(path, "w") as f:
            f.write("\n".join(cfg) + "\n")
        log = open(os.path.join(self.dir, "log"), "wb")
        self.proc = subprocess.Popen([REGISTRY_BIN, "serve", path], stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        deadline = time.monotonic() + 15
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited with {self.proc.returncode}: "
                                   f"{self.log()[-2000:]}")
            try:
                status, _, _ = self.request("GET", "/v2/", auth=False)
                if status in (200, 401):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"docker-registry did not answer on {self.addr}: {self.log()[-2000:]}")
            time.sleep(0.05)

    def log(self) -> str:
        try:
            with open(os.path.join(self.dir, "log"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.token_server:
            self.token_server.close()
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- plain HTTP calls, independent of the client under test -----------------------------------

    def _auth_header(self, scope: str) -> dict:
        if self.htpasswd:
            return {"Authorization": "Basic " + base64.b64encode(":".join(self.htpasswd).encode()).decode()}
        if self.token_server:
            user = next(iter(self.users), None)
            return {"Authorization": "Bearer " + self.token_server.issue([scope], user)}
        return {}

    def request(self, method: str, target: str, body: bytes | None = None, headers: dict | None = None,
                auth: bool = True, scope: str = "") -> tuple[int, dict, bytes]:
        """One request straight to the registry: (status, headers lowercased, body)."""
        if self.tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            if self.client_cert:
                ctx.load_cert_chain(*self.client_cert)
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(self.addr, timeout=10, context=ctx)
        else:
            conn = http.client.HTTPConnection(self.addr, timeout=10)
        try:
            h = dict(headers or {})
            if auth:
                h.update(self._auth_header(scope))
            conn.request(method, target, body=body, headers=h)
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            conn.close()

    def put_blob(self, repo: str, data: bytes) -> str:
        digest = sha256(data)
        scope = f"repository:{repo}:pull,push"
        status, h, body = self.request("POST", f"/v2/{repo}/blobs/uploads/", b"", scope=scope)
        assert status == 202, (status, body)
        loc = urllib.parse.urlsplit(urllib.parse.urljoin(self.url + "/", h["location"]))
        query = "&".join(x for x in (loc.query, urllib.parse.urlencode({"digest": digest})) if x)
        target = loc.path + "?" + query
        status, _, body = self.request("PUT", target, data, {"Content-Type": "application/octet-stream"},
                                       scope=scope)
        assert status == 201, (status, body)
        return digest

    def put_manifest(self, repo: str, ref: str, body: bytes, media_type: str = OCI_MANIFEST) -> str:
        status, _, answer = self.request("PUT", f"/v2/{repo}/manifests/{ref}", body,
                                         {"Content-Type": media_type}, scope=f"repository:{repo}:pull,push")
        assert status == 201, (status, answer)
        return sha256(body)


def make_layer(files: dict[str, bytes]) -> bytes:
    """A reproducible gzip'd tar of regular files (mode 0644, mtime 0)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime = len(data), 0o644, 0
            tar.addfile(ti, io.BytesIO(data))
    return raw.getvalue()


def upload_image(reg: Registry, repo: str = "test/hello", tag: str = "1",
                 files: dict[str, bytes] | None = None, cmd: list[str] | None = None) -> dict:
    """Push a one-layer OCI image with plain HTTP calls. Returns its parts:
    manifest, manifest_digest, config, config_digest, layer, layer_digest, diff_id."""
    tar = make_layer(files if files is not None else {"hello.txt": b"hello from kobako\n"})
    layer = gzip.compress(tar, mtime=0)
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": cmd or ["/bin/sh"], "Env": ["PATH=/usr/bin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [sha256(tar)]},
        "history": [{"created_by": "tests/registry_support.py"}],
    }, separators=(",", ":")).encode()
    config_digest = reg.put_blob(repo, config)
    layer_digest = reg.put_blob(repo, layer)
    man = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": layer_digest, "size": len(layer)}],
    }, separators=(",", ":")).encode()
    digest = reg.put_manifest(repo, tag, man)
    return {"manifest": man, "manifest_digest": digest, "config": config, "config_digest": config_digest,
            "layer": layer, "layer_digest": layer_digest, "diff_id": sha256(tar)}


def upload_arm_v7(reg: Registry, repo: str, tag: str, files: dict[str, bytes]) -> dict:
    """An arm/v7 image whose config says `arm` and names no variant (as many do)."""
    arm = upload_image(reg, repo, tag, files=files)
    cfg = json.dumps({**json.loads(arm["config"]), "architecture": "arm"}).encode()
    man = json.loads(arm["manifest"])
    man["config"] = {**man["config"], "digest": reg.put_blob(repo, cfg), "size": len(cfg)}
    body = json.dumps(man).encode()
    return {**arm, "manifest": body, "manifest_digest": reg.put_manifest(repo, tag, body), "config": cfg}


def upload_index(reg: Registry, repo: str, tag: str, amd: dict, arm: dict) -> str:
    """A multi-platform OCI index of an arm/v7 and an amd64 image (upload_image's parts,
    `manifest` and `manifest_digest`, each); returns its digest."""
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": arm["manifest_digest"], "size": len(arm["manifest"]),
         "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
        {"mediaType": OCI_MANIFEST, "digest": amd["manifest_digest"], "size": len(amd["manifest"]),
         "platform": {"os": "linux", "architecture": "amd64"}},
    ]}).encode()
    return reg.put_manifest(repo, tag, index, OCI_INDEX)
