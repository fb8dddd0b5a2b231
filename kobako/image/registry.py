"""A client for the OCI distribution spec (the registry HTTP API), standard library only.

    GET  /v2/                                  ping, and where auth is negotiated
    GET  /v2/<repo>/manifests/<tag|digest>     manifests and indexes
    GET  /v2/<repo>/blobs/<digest>             layers and configs (often a redirect to a CDN)
    POST /v2/<repo>/blobs/uploads/ + PUT       uploads (PATCH for chunks; ?mount= for cross-repo)
    PUT  /v2/<repo>/manifests/<tag>            publish an image

Auth follows Docker's flow: a request is tried, a 401 names the scheme in
WWW-Authenticate; Basic means "send the password", Bearer means "get a token from
this realm for this scope" (anonymously if we have no credentials). Tokens are cached
per scope. Credentials only ever go to the registry's own host, never to a redirect.

Each thread keeps one connection alive per host; a stream that is still open holds
its connection, so the thread opens another for its next request. Pulls try the
configured mirrors first (registries.py) and fall back to the registry itself.

Every connection (to the registry, a mirror, a token server or a redirect's host) goes
through the proxy the environment names for it (proxy.py) and trusts, besides the
system's CAs, those in the host's certs.d directory, which may also hold a client
certificate (certs.py).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import socket
import ssl
import threading
import time
import urllib.parse
import weakref
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, BinaryIO

from kobako import errors
from kobako.image import auth, certs, manifest, registries
from kobako.image import proxy as proxies

if TYPE_CHECKING:
    from kobako.image.store import ImageStore

DOCKER_HUB = "registry-1.docker.io"
USER_AGENT = "kobako/0.1"
MAX_MANIFEST = 4 << 20   # the distribution spec's own limit for manifests
MAX_SMALL = 1 << 20      # error bodies, token answers, pages of tag lists
MONOLITHIC_MAX = 16 << 20  # blobs up to this size go up in one PUT
CHUNK = 8 << 20          # PATCH size for bigger blobs
READ_SIZE = 1 << 20
RESUMES = 5              # consecutive re-requests of a broken blob download
BACKOFF = 0.5            # seconds before the first re-request; doubles each time
MAX_REDIRECTS = 5
REDIRECTS = (301, 302, 303, 307, 308)
IDENTITY_TOKEN_USER = "<token>"  # a credential helper's user name for an identity token
STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


class RegistryError(errors.KobakoError):
    """One line a user can act on; `status` is the HTTP status, None for network failures."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.http_status = status


class NotFound(RegistryError, errors.NotFound):
    status = 404


class Unauthorized(RegistryError, errors.Unauthorized):
    status = 401


class ProxyFailure(OSError):
    """Connecting through a proxy failed before the registry was reached."""

    def __init__(self, proxy: proxies.Proxy, cause: OSError) -> None:
        super().__init__(str(cause))
        self.proxy = proxy
        self.cause = cause


# -- small parsers ---------------------------------------------------------------------


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """'Bearer realm="https://a/token",scope="repository:x:pull,push"' -> ('bearer', {...}).
    Values may be quoted (with backslash escapes, commas inside) or bare tokens."""
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    i, n = 0, len(rest)
    while i < n:
        while i < n and rest[i] in " \t,":
            i += 1
        j = i
        while j < n and rest[j] not in "=, \t":
            j += 1
        key = rest[i:j].lower()
        i = j
        while i < n and rest[i] in " \t":
            i += 1
        if i >= n or rest[i] != "=":
            continue  # a bare token (token68 or a flag): nothing we use
        i += 1
        while i < n and rest[i] in " \t":
            i += 1
        if i < n and rest[i] == '"':
            i += 1
            value = []
            while i < n and rest[i] != '"':
                if rest[i] == "\\" and i + 1 < n:
                    i += 1
                value.append(rest[i])
                i += 1
            i += 1
            val = "".join(value)
        else:
            j = i
            while j < n and rest[j] != ",":
                j += 1
            val, i = rest[i:j].strip(), j
        if key:
            params[key] = val
    return scheme.lower(), params


def pick_challenge(headers: list[str]) -> tuple[str, dict[str, str]]:
    """Bearer if offered (it works anonymously), else Basic, else the first one."""
    parsed = [parse_challenge(h) for h in headers if h.strip()]
    for want in ("bearer", "basic"):
        for scheme, params in parsed:
            if scheme == want:
                return scheme, params
    return parsed[0] if parsed else ("", {})


def error_text(body: bytes) -> str:
    """The registry's {"errors": [{"code", "message", "detail"}]} as one short string."""
    try:
        errs = json.loads(body).get("errors")
    except (ValueError, UnicodeDecodeError, AttributeError):
        return ""
    out = []
    for e in errs if isinstance(errs, list) else []:
        if isinstance(e, dict):
            msg = str(e.get("message") or e.get("code") or "").strip()
            if msg and msg not in out:
                out.append(msg[:200])
    return "; ".join(out)


def next_link(header: str | None) -> str | None:
    """'</v2/x/tags/list?last=a&n=100>; rel="next"' -> the URL (pagination of tag lists)."""
    for part in (header or "").split(","):
        url, _, params = part.partition(";")
        url = url.strip()
        if url.startswith("<") and url.endswith(">") and "next" in params:
            return url[1:-1]
    return None


def _pull(repo: str) -> tuple[str, ...]:
    return (f"repository:{repo}:pull",)


def _push(repo: str) -> tuple[str, ...]:
    return (f"repository:{repo}:pull,push",)


def _covered(scope: str, scopes: list[str]) -> bool:
    """Is 'repository:a:pull' already asked for by one of `scopes` (say 'repository:a:pull,push')?"""
    res, _, actions = scope.rpartition(":")
    for s in scopes:
        r, _, acts = s.rpartition(":")
        if r == res and set(actions.split(",")) <= set(acts.split(",")):
            return True
    return False


def _with_param(url: str, key: str, value: str) -> str:
    return url + ("&" if "?" in url else "?") + urllib.parse.urlencode({key: value})


def _network_error(name: str, e: BaseException, timeout: float, netloc: str = "") -> RegistryError:
    if isinstance(e, ProxyFailure):
        cause = e.cause
        text = str(cause)
        if text.startswith("Tunnel connection failed: "):
            why = f"refused the tunnel: {text.removeprefix('Tunnel connection failed: ')}"
        elif isinstance(cause, ConnectionRefusedError):
            why = "connection refused"
        elif isinstance(cause, socket.gaierror):
            why = f"cannot resolve the proxy's host name ({cause.strerror})"
        elif isinstance(cause, TimeoutError):
            why = f"no answer within {timeout:g}s"
        else:
            why = cause.strerror or text or type(cause).__name__
        return RegistryError(f"registry {name}: proxy {e.proxy.display}: {why}")
    if isinstance(e, http.client.RemoteDisconnected):
        return RegistryError(f"registry {name} closed the connection without answering")
    if isinstance(e, http.client.HTTPException):
        return RegistryError(f"registry {name} sent an invalid answer ({type(e).__name__})")
    if isinstance(e, ConnectionRefusedError):
        msg = "connection refused (is the registry running?)"
    elif isinstance(e, socket.gaierror):
        msg = f"cannot resolve the host name ({e.strerror})"
    elif isinstance(e, TimeoutError):
        msg = f"no answer within {timeout:g}s (is the registry reachable?)"
    elif isinstance(e, ssl.SSLCertVerificationError) and e.verify_code == 62:  # hostname mismatch
        msg = (f"TLS certificate is not valid for this host name ({e.verify_message}); to use it anyway, "
               f"list the registry in [registries] insecure of {registries.config_file()}")
    elif isinstance(e, ssl.SSLCertVerificationError):
        msg = (f"TLS certificate not trusted ({e.verify_message}); if the registry uses a private CA, put "
               f"the CA's certificate in {certs.ca_hint(netloc or name)}, or list the registry in "
               f"[registries] insecure of {registries.config_file()}")
    elif isinstance(e, ssl.SSLError) and (e.reason or "") in CLIENT_CERT_ALERTS:
        msg = _client_cert_problem(netloc or name, e.reason)
    elif isinstance(e, ssl.SSLError):
        msg = (f"TLS handshake failed ({e.reason or e}); if the registry speaks plain HTTP, list it "
               f"in [registries] insecure of {registries.config_file()}")
    elif isinstance(e, ConnectionError):
        msg = f"connection lost ({e.strerror or str(e) or type(e).__name__})"
    else:
        msg = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return RegistryError(f"registry {name}: {msg}")


# What a server answers about our client certificate (our own checks of its certificate
# fail with SSLCertVerificationError instead).
CLIENT_CERT_ALERTS = ("SSLV3_ALERT_BAD_CERTIFICATE", "TLSV13_ALERT_CERTIFICATE_REQUIRED",
                      "TLSV1_ALERT_UNKNOWN_CA", "SSLV3_ALERT_CERTIFICATE_UNKNOWN")


def _client_cert_problem(netloc: str, reason: str) -> str:
    try:
        client = certs.material(netloc)[1]
    except certs.CertsError:
        client = None
    if client:
        return f"the registry did not accept the TLS client certificate {client[0]} ({reason})"
    where = os.path.dirname(certs.ca_hint(netloc))
    return (f"the registry asks for a TLS client certificate ({reason}); put it in {where}/client.cert "
            f"and its key in {where}/client.key")


# -- endpoints and connections -------------------------------------------------------------


class _Endpoint:
    """One server: the registry itself or a mirror, with its own scheme and auth state."""

    def __init__(self, name: str, login: str, scheme: str, netloc: str, prefix: str, verify: bool,
                 fallback: bool, credentials: tuple[str, str] | None) -> None:
        self.name = name            # for messages
        self.login = login          # what `kobako login` needs
        self.scheme = scheme
        self.netloc = netloc
        self.prefix = prefix        # a mirror's path prefix ("" for registries)
        self.verify = verify        # check the TLS certificate
        self.fallback = fallback    # may still drop to plain HTTP if the TLS handshake fails
        self.credentials = credentials
        self.basic = False          # the server asked for Basic: send it up front from now on
        self.tokens: dict[tuple[str, ...], str] = {}
        self.auth_scheme = ""
        self.dead = False           # a mirror that failed at the network level is skipped
        self.lock = threading.Lock()


class _Pool(dict):
    """A thread's idle connections by (scheme, netloc, verify); a dict subclass so it can be weakly held."""


class Client:
    def __init__(self, domain: str, insecure: bool | None = None,
                 credentials: tuple[str, str] | None = None, timeout: float = 30.0) -> None:
        self.domain = registries.normalize(domain)
        if registries.is_blocked(self.domain):
            raise RegistryError(f"registry {self.domain} is blocked in [registries] blocked of "
                                f"{registries.config_file()}")
        self.timeout = timeout
        host = DOCKER_HUB if self.domain == "docker.io" else self.domain
        if insecure is None and registries.is_loopback(registries.split_host(self.domain)[0]):
            scheme, verify, fallback = "http", False, False  # a registry on this machine: plain HTTP
        elif insecure or (insecure is None and registries.is_insecure(self.domain)):
            scheme, verify, fallback = "https", False, True  # like --tls-verify=false
        else:
            scheme, verify, fallback = "https", True, False
        if credentials is None:
            try:
                credentials = auth.get(self.domain)
            except auth.AuthError as e:
                raise RegistryError(str(e)) from None
        self.registry = _Endpoint(self.domain, self.domain, scheme, host, "", verify, fallback, credentials)
        self.mirrors = [self._mirror(u) for u in registries.mirrors(self.domain)]
        self._local = threading.local()
        self._pools: weakref.WeakValueDictionary[int, _Pool] = weakref.WeakValueDictionary()
        self._lock = threading.Lock()
        self._contexts: dict[tuple[str, bool], ssl.SSLContext] = {}
        self._proxies: dict[tuple[str, str], proxies.Proxy | None] = {}

    def _mirror(self, url: str) -> _Endpoint:
        if "://" not in url:
            url = ("http://" if registries.is_insecure(url.split("/", 1)[0]) else "https://") + url
        u = urllib.parse.urlsplit(url)
        try:
            creds = auth.get(u.netloc)
        except auth.AuthError as e:
            raise RegistryError(str(e)) from None
        verify = u.scheme == "https" and not registries.is_insecure(u.netloc)
        return _Endpoint(f"{u.netloc} (mirror of {self.domain})", u.netloc, u.scheme, u.netloc,
                         u.path.rstrip("/"), verify, False, creds)

    # -- connections ------------------------------------------------------------------------

    def _pool(self) -> _Pool:
        pool = getattr(self._local, "pool", None)
        if pool is None:
            pool = self._local.pool = _Pool()
            with self._lock:
                self._pools[id(pool)] = pool
        return pool

    def _context(self, netloc: str, verify: bool) -> ssl.SSLContext:
        """The TLS context for one host: the system's CAs plus its certs.d material."""
        ctx = self._contexts.get((netloc, verify))
        if ctx is None:
            try:
                ctx = certs.context(netloc, verify)
            except certs.CertsError as e:
                raise RegistryError(f"registry {netloc}: {e}") from None
            self._contexts[(netloc, verify)] = ctx
        return ctx

    def _proxy(self, scheme: str, netloc: str) -> proxies.Proxy | None:
        if (scheme, netloc) not in self._proxies:
            try:
                self._proxies[(scheme, netloc)] = proxies.for_url(scheme, netloc)
            except proxies.ProxyConfigError as e:
                raise RegistryError(f"registry {netloc}: {e}") from None
        return self._proxies[(scheme, netloc)]

    def _checkout(self, key: tuple[str, str, bool]) -> tuple[http.client.HTTPConnection, bool]:
        conn = self._pool().pop(key, None)
        if conn is not None:
            return conn, True
        scheme, netloc, verify = key
        proxy = self._proxy(scheme, netloc)
        host, port = (proxy.host, proxy.port) if proxy else (netloc, None)
        if scheme == "https":
            conn = http.client.HTTPSConnection(host, port, timeout=self.timeout,
                                               context=self._context(netloc, verify))
            if proxy:  # CONNECT through the proxy, then TLS with the registry itself
                conn.set_tunnel(netloc, headers=proxy.headers())
        else:
            conn = http.client.HTTPConnection(host, port, timeout=self.timeout)
        conn.kobako_key = key  # type: ignore[attr-defined]
        conn.kobako_proxy = proxy  # type: ignore[attr-defined]
        return conn, False

    def _checkin(self, conn: http.client.HTTPConnection) -> None:
        pool = self._pool()
        key = conn.kobako_key  # type: ignore[attr-defined]
        if key in pool:
            conn.close()
        else:
            pool[key] = conn

    def close(self) -> None:
        """Close every idle connection of every thread; the next request opens a new one."""
        with self._lock:
            pools = list(self._pools.values())
        for pool in pools:
            for key in list(pool):
                conn = pool.pop(key, None)
                if conn is not None:
                    conn.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one request ----------------------------------------------------------------------------

    def _raw(self, scheme: str, netloc: str, verify: bool, method: str, target: str, headers: dict,
             body: bytes | None) -> tuple[http.client.HTTPResponse, http.client.HTTPConnection]:
        """One exchange on this thread's kept-alive connection to netloc. A kept-alive
        connection the server has meanwhile closed is retried once on a fresh one."""
        key = (scheme, netloc, verify)
        while True:
            conn, reused = self._checkout(key)
            proxy: proxies.Proxy | None = conn.kobako_proxy  # type: ignore[attr-defined]
            try:
                if conn.sock is None:
                    try:  # TCP (and CONNECT) and TLS handshake: errors here are connection errors
                        conn.connect()
                    except ssl.SSLError:
                        raise  # the registry's TLS, past the proxy
                    except OSError as e:
                        if proxy:
                            raise ProxyFailure(proxy, e) from None
                        raise
                if proxy and scheme == "http":  # to the proxy as an absolute-URI request
                    conn.request(method, f"http://{netloc}{target}", body=body,
                                 headers={**headers, **proxy.headers()})
                    return conn.getresponse(), conn
                conn.request(method, target, body=body, headers=headers)
                return conn.getresponse(), conn
            except STALE:
                conn.close()
                if not reused:
                    raise
            except BaseException:
                conn.close()
                raise

    def _exchange(self, ep: _Endpoint, netloc: str, scheme: str, method: str, target: str, headers: dict,
                  body: bytes | None) -> tuple[http.client.HTTPResponse, http.client.HTTPConnection]:
        """`_raw` with errors as RegistryError and, for an insecure registry, the drop to plain HTTP."""
        own = netloc == ep.netloc
        if own:
            scheme = ep.scheme  # the endpoint decides, whatever a Location header says
        try:
            resp, conn = self._raw(scheme, netloc, ep.verify, method, target, headers, body)
        except ssl.SSLError as e:
            if not (own and ep.fallback and not isinstance(e, ssl.SSLCertVerificationError)):
                raise _network_error(ep.name, e, self.timeout, netloc) from None
            with ep.lock:
                ep.scheme, ep.fallback = "http", False
            return self._exchange(ep, netloc, "http", method, target, headers, body)
        except (OSError, http.client.HTTPException) as e:
            if own and ep is not self.registry:
                ep.dead = True
            raise _network_error(ep.name, e, self.timeout, netloc) from None
        if own and ep.fallback:
            ep.fallback = False  # TLS worked: stay on it
        return resp, conn

    def _authorization(self, ep: _Endpoint, scope: tuple[str, ...]) -> str | None:
        if ep.basic and ep.credentials:
            return "Basic " + base64.b64encode(":".join(ep.credentials).encode()).decode()
        token = ep.tokens.get(scope)
        return "Bearer " + token if token else None

    def _do(self, ep: _Endpoint, method: str, target: str, scope: tuple[str, ...] = (),
            headers: dict | None = None,
            body: bytes | None = None) -> tuple[http.client.HTTPResponse, http.client.HTTPConnection]:
        """Send `method target` (a path on `ep`, or an absolute URL from a Location header),
        answering one auth challenge and following redirects. The caller reads the response."""
        if "://" in target:
            u = urllib.parse.urlsplit(target)
            scheme, netloc, target = u.scheme, u.netloc, (u.path or "/") + ("?" + u.query if u.query else "")
        else:
            scheme, netloc = ep.scheme, ep.netloc
        base = {"User-Agent": USER_AGENT, **(headers or {})}
        authed = False
        redirects = 0
        while True:
            own = netloc == ep.netloc  # credentials never go to another host (a CDN, say)
            h = dict(base)
            a = self._authorization(ep, scope) if own else None
            if a:
                h["Authorization"] = a
            resp, conn = self._exchange(ep, netloc, scheme, method, target, h, body)
            if resp.status == 401 and own and not authed:
                challenges = resp.msg.get_all("WWW-Authenticate") or []
                self._body(ep, resp, conn)
                self._authenticate(ep, scope, challenges)
                authed = True
                continue
            loc = resp.getheader("Location")
            if resp.status in REDIRECTS and loc and redirects < MAX_REDIRECTS:
                self._body(ep, resp, conn)
                here = f"{ep.scheme if own else scheme}://{netloc}{target}"
                u = urllib.parse.urlsplit(urllib.parse.urljoin(here, loc))
                if u.scheme not in ("http", "https"):
                    raise RegistryError(f"registry {ep.name} redirected to an unsupported URL {loc!r}")
                scheme, netloc = u.scheme, u.netloc
                target = (u.path or "/") + ("?" + u.query if u.query else "")
                redirects += 1
                if resp.status == 303:
                    method, body = "GET", None
                continue
            return resp, conn

    def _body(self, ep: _Endpoint, resp: http.client.HTTPResponse, conn: http.client.HTTPConnection,
              limit: int = MAX_SMALL, what: str = "answer") -> bytes:
        """Read a whole (small) body and give the connection back for the next request."""
        parts: list[bytes] = []
        total = 0
        try:
            while True:
                b = resp.read(min(READ_SIZE, limit + 1 - total))
                if not b:
                    break
                parts.append(b)
                total += len(b)
                if total > limit:
                    conn.close()
                    raise RegistryError(f"registry {ep.name}: {what} is larger than "
                                        f"{limit / (1 << 20):g} MiB; refusing it")
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise _network_error(ep.name, e, self.timeout) from None
        if resp.isclosed() and not resp.will_close:
            self._checkin(conn)
        else:
            conn.close()
        return b"".join(parts)

    # -- auth ---------------------------------------------------------------------------------------

    def _authenticate(self, ep: _Endpoint, scope: tuple[str, ...], challenges: list[str]) -> None:
        scheme, params = pick_challenge(challenges)
        ep.auth_scheme = scheme
        if scheme == "basic":
            if not ep.credentials:
                raise self._unauthorized(ep, scope, b"")
            ep.basic = True
        elif scheme == "bearer":
            realm = params.get("realm", "")
            scopes = list(scope)
            for extra in params.get("scope", "").split():
                if not _covered(extra, scopes):
                    scopes.append(extra)
            ep.tokens[scope] = self._token(ep, realm, params.get("service"), scopes)
        else:
            raise RegistryError(f"registry {ep.name} asks for unsupported authentication "
                                f"{scheme or '(no WWW-Authenticate header)'!r}", 401)

    def _token(self, ep: _Endpoint, realm: str, service: str | None, scopes: list[str]) -> str:
        u = urllib.parse.urlsplit(realm)
        if u.scheme not in ("http", "https") or not u.netloc:
            raise RegistryError(f"registry {ep.name} named an invalid token realm {realm!r}", 401)
        query = [("service", service)] if service else []
        headers = {"User-Agent": USER_AGENT}
        method, form = "GET", None
        if ep.credentials and ep.credentials[0] == IDENTITY_TOKEN_USER:
            # an identity token (from a credential helper) is an OAuth2 refresh token: POSTed
            method = "POST"
            form = urllib.parse.urlencode(query + [
                ("scope", " ".join(scopes)), ("grant_type", "refresh_token"),
                ("refresh_token", ep.credentials[1]), ("client_id", "kobako")]).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            target = (u.path or "/") + ("?" + u.query if u.query else "")
        else:
            query += [("scope", s) for s in scopes]
            if ep.credentials:
                query.append(("account", ep.credentials[0]))
                headers["Authorization"] = "Basic " + base64.b64encode(
                    ":".join(ep.credentials).encode()).decode()
            encoded = urllib.parse.urlencode(query)
            target = (u.path or "/") + "?" + "&".join(x for x in (u.query, encoded) if x)
        # The token server is trusted as far as the registry is: same TLS checks.
        verify = ep.verify and not registries.is_insecure(u.netloc)
        name = f"{ep.name} (token server {u.netloc})"
        try:
            resp, conn = self._raw(u.scheme, u.netloc, verify, method, target, headers, form)
        except (OSError, http.client.HTTPException) as e:
            raise _network_error(name, e, self.timeout, u.netloc) from None
        tep = _Endpoint(name, ep.login, u.scheme, u.netloc, "", verify, False, None)
        body = self._body(tep, resp, conn)
        if resp.status in (401, 403):
            raise self._unauthorized(ep, scopes, body, token_server=True)
        if resp.status != 200:
            raise RegistryError(f"registry {name} answered {resp.status} {resp.reason}", resp.status)
        try:
            doc = json.loads(body)
            token = doc.get("token") or doc.get("access_token")
        except (ValueError, UnicodeDecodeError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise RegistryError(f"registry {name} sent an invalid answer (no token)")
        return token

    def _unauthorized(self, ep: _Endpoint, scope: tuple[str, ...] | list[str], body: bytes,
                      token_server: bool = False, status: int = 401) -> Unauthorized:
        hint = f"(kobako login {ep.login})"
        detail = error_text(body)
        if not ep.credentials:
            why = "authentication required"
        elif token_server or ep.auth_scheme == "basic":
            why = f"incorrect username or password for user {ep.credentials[0]!r}"
        else:
            repos = ", ".join(s.split(":")[1] for s in scope if s.count(":") == 2) or "the registry"
            why = f"user {ep.credentials[0]!r} may not access {repos}"
        if status == 403:
            why = "denied: " + (detail or "requested access to the resource is denied")
        elif detail and detail != "authentication required":
            why += f" ({detail})"
        return Unauthorized(f"registry {ep.name}: unauthorized: {why} {hint}", status)

    def _status_error(self, ep: _Endpoint, resp: http.client.HTTPResponse, body: bytes, what: str,
                      scope: tuple[str, ...] = ()) -> RegistryError:
        s = resp.status
        detail = error_text(body)
        if s in (401, 403):
            return self._unauthorized(ep, scope, body, status=s)
        if s == 404:
            return NotFound(f"registry {ep.name}: {what} not found", 404)
        if s == 429:
            return RegistryError(f"registry {ep.name}: too many requests (rate limited; log in or retry "
                                 "later)", 429)
        if s >= 500:
            return RegistryError(f"registry {ep.name} answered {s} {resp.reason}"
                                 + (f": {detail}" if detail else "")
                                 + " (a server-side problem; retry later)", s)
        return RegistryError(f"registry {ep.name}: {what}: {detail or resp.reason} (HTTP {s})", s)

    # -- reading ----------------------------------------------------------------------------------

    def _pull_endpoints(self) -> list[_Endpoint]:
        return [m for m in self.mirrors if not m.dead] + [self.registry]

    def ping(self) -> None:
        """GET /v2/: checks the registry is there and that the credentials (if any) work."""
        ep = self.registry
        resp, conn = self._do(ep, "GET", "/v2/")
        body = self._body(ep, resp, conn)
        if resp.status == 200:
            return
        if resp.status == 404:
            raise RegistryError(f"registry {ep.name}: /v2/ not found: not an OCI distribution registry", 404)
        raise self._status_error(ep, resp, body, "/v2/")

    def get_manifest(self, repo: str, locator: str) -> tuple[bytes, str, str]:
        """(body, media type, digest) of a manifest or index, verified against its digest."""
        eps = self._pull_endpoints()
        for ep in eps[:-1]:
            try:
                return self._get_manifest(ep, repo, locator)
            except RegistryError:
                continue  # the mirror lacks it or failed: the next one, then the registry
        return self._get_manifest(eps[-1], repo, locator)

    def _get_manifest(self, ep: _Endpoint, repo: str, locator: str) -> tuple[bytes, str, str]:
        pinned = ":" in locator  # tags cannot hold ':', digests always do
        ref = f"{repo}@{locator}" if pinned else f"{repo}:{locator}"
        resp, conn = self._do(ep, "GET", f"{ep.prefix}/v2/{repo}/manifests/{locator}", _pull(repo),
                              {"Accept": manifest.ACCEPT})
        if resp.status != 200:
            body = self._body(ep, resp, conn)
            raise self._status_error(ep, resp, body, f"manifest unknown: {ref}", _pull(repo))
        length = resp.getheader("Content-Length")
        if length and length.isdigit() and int(length) > MAX_MANIFEST:
            conn.close()
            raise RegistryError(f"registry {ep.name}: manifest {ref} is larger than 4 MiB; refusing it")
        body = self._body(ep, resp, conn, MAX_MANIFEST, f"manifest {ref}")
        media_type = (resp.getheader("Content-Type") or "").split(";")[0].strip()
        want = locator if pinned else resp.getheader("Docker-Content-Digest")
        algo = (want or "sha256:").split(":", 1)[0]
        if algo not in ("sha256", "sha512"):
            raise RegistryError(f"registry {ep.name}: manifest {ref}: unsupported digest algorithm {algo!r}")
        got = f"{algo}:{hashlib.new(algo, body).hexdigest()}"
        if want and got != want:
            raise RegistryError(f"registry {ep.name}: manifest {ref} does not match its digest {want} "
                                f"(content hashes to {got}); refusing it")
        return body, media_type, got

    def open_blob(self, repo: str, digest: str, size: int | None = None) -> BlobStream:
        """A stream of the blob's bytes (not verified here: the content store's writer does that)."""
        eps = self._pull_endpoints()
        for ep in eps[:-1]:
            try:
                return BlobStream(self, ep, repo, digest, size)
            except RegistryError:
                continue
        return BlobStream(self, eps[-1], repo, digest, size)

    def _head_blob(self, repo: str, digest: str, scope: tuple[str, ...]) -> int | None:
        ep = self.registry
        resp, conn = self._do(ep, "HEAD", f"/v2/{repo}/blobs/{digest}", scope)
        body = self._body(ep, resp, conn)
        if resp.status == 404:
            return None
        if resp.status != 200:
            raise self._status_error(ep, resp, body, f"blob {repo}@{digest}", scope)
        length = resp.getheader("Content-Length") or ""
        if not length.isdigit():
            raise RegistryError(f"registry {ep.name} sent an invalid answer (no size for blob {digest})")
        return int(length)

    def blob_size(self, repo: str, digest: str) -> int | None:
        """The blob's size by HEAD on the registry; None if it does not have it."""
        return self._head_blob(repo, digest, _pull(repo))

    def tags(self, repo: str) -> list[str]:
        ep = self.registry
        out: list[str] = []
        target: str | None = f"/v2/{repo}/tags/list"
        while target:
            resp, conn = self._do(ep, "GET", target, _pull(repo))
            body = self._body(ep, resp, conn)
            if resp.status != 200:
                raise self._status_error(ep, resp, body, f"repository unknown: {repo}", _pull(repo))
            try:
                tags = json.loads(body).get("tags") or []
            except (ValueError, UnicodeDecodeError, AttributeError):
                tags = None
            if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
                raise RegistryError(f"registry {ep.name} sent an invalid answer (tag list of {repo})")
            out.extend(tags)
            link = next_link(resp.getheader("Link"))
            target = urllib.parse.urljoin(target, link) if link else None
        return out

    # -- writing -------------------------------------------------------------------------------------

    def _location(self, ep: _Endpoint, resp: http.client.HTTPResponse, base: str) -> str:
        loc = resp.getheader("Location")
        if not loc:
            raise RegistryError(f"registry {ep.name} sent an invalid answer (upload without a Location)")
        return urllib.parse.urljoin(base, loc)  # relative or absolute, both are allowed

    def push_blob(self, repo: str, digest: str, size: int, opener: Callable[[], BinaryIO],
                  mount_from: str | None = None) -> bool:
        """Upload a blob unless the registry has it already (then False). `opener` gives a fresh
        file object with its bytes; monolithic up to 16 MiB, PATCH chunks above."""
        ep = self.registry
        outcome, where, scope = self._begin_upload(repo, digest, mount_from)
        if outcome != "session":
            return outcome == "mounted"  # mounted from the other repository: nothing to send
        assert where is not None
        with opener() as f:
            if size <= MONOLITHIC_MAX:
                self._put_blob(ep, repo, where, digest, _read_exact(f, size, digest), scope)
                return True
            offset = 0
            while offset < size:
                chunk = _read_exact(f, min(CHUNK, size - offset), digest)
                resp, conn = self._do(ep, "PATCH", where, scope, {
                    "Content-Type": "application/octet-stream",
                    "Content-Range": f"{offset}-{offset + len(chunk) - 1}"}, chunk)
                body = self._body(ep, resp, conn)
                if resp.status != 202:
                    raise self._status_error(ep, resp, body, f"upload of {digest} to {repo}", scope)
                where = self._location(ep, resp, where)
                offset += len(chunk)
            self._put_blob(ep, repo, where, digest, b"", scope)
        return True

    def has_or_mounts(self, repo: str, digest: str, mount_from: str | None = None) -> bool:
        """True if the registry has the blob in `repo`, or mounts it there from `mount_from`
        (for a layer this engine can only rebuild under a new digest: pushed as it was
        pulled where the registry allows)."""
        outcome, where, scope = self._begin_upload(repo, digest, mount_from, only_to_mount=True)
        if where is not None:  # an upload session instead of a mount: cancel it
            try:
                self._body(self.registry, *self._do(self.registry, "DELETE", where, scope))
            except (RegistryError, OSError):
                pass  # the registry expires unused sessions itself
        return outcome in ("present", "mounted")

    def _begin_upload(self, repo: str, digest: str, mount_from: str | None,
                      only_to_mount: bool = False) -> tuple[str, str | None, tuple[str, ...]]:
        """HEAD the blob in `repo`, then POST an upload, asking to mount it from `mount_from`
        where one is named (with only_to_mount, no POST without one). Returns the outcome
        ("present", "mounted", "session" or "absent"), the session's location, the scope."""
        ep = self.registry
        if mount_from == repo:
            mount_from = None
        scope = _push(repo) + ((f"repository:{mount_from}:pull",) if mount_from else ())
        if self._head_blob(repo, digest, scope) is not None:
            return "present", None, scope
        if only_to_mount and not mount_from:
            return "absent", None, scope
        start = f"/v2/{repo}/blobs/uploads/"
        if mount_from:
            start += "?" + urllib.parse.urlencode({"mount": digest, "from": mount_from})
        resp, conn = self._do(ep, "POST", start, scope, {"Content-Length": "0"}, b"")
        body = self._body(ep, resp, conn)
        if resp.status == 201 and mount_from:
            return "mounted", None, scope
        if resp.status != 202:
            raise self._status_error(ep, resp, body, f"upload to {repo}", scope)
        return "session", self._location(ep, resp, start), scope

    def _put_blob(self, ep: _Endpoint, repo: str, where: str, digest: str, data: bytes,
                  scope: tuple[str, ...]) -> None:
        resp, conn = self._do(ep, "PUT", _with_param(where, "digest", digest), scope,
                              {"Content-Type": "application/octet-stream"}, data)
        body = self._body(ep, resp, conn)
        if resp.status not in (201, 204):
            raise self._status_error(ep, resp, body, f"upload of {digest} to {repo}", scope)

    def put_manifest(self, repo: str, locator: str, body: bytes, media_type: str) -> str:
        """Publish a manifest under a tag (or its digest); returns its digest."""
        ep = self.registry
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        resp, conn = self._do(ep, "PUT", f"/v2/{repo}/manifests/{locator}", _push(repo),
                              {"Content-Type": media_type}, body)
        answer = self._body(ep, resp, conn)
        if resp.status not in (200, 201):
            raise self._status_error(ep, resp, answer, f"manifest {repo}:{locator}", _push(repo))
        said = resp.getheader("Docker-Content-Digest")
        if said and said.startswith("sha256:") and said != digest:
            raise RegistryError(f"registry {ep.name} stored manifest {repo}:{locator} as {said}, "
                                f"expected {digest}")
        return digest


def _read_exact(f: BinaryIO, n: int, digest: str) -> bytes:
    parts = []
    left = n
    while left:
        b = f.read(left)
        if not b:
            raise RegistryError(f"cannot upload blob {digest}: the local data is shorter than the "
                                f"{n} bytes expected")
        parts.append(b)
        left -= len(b)
    return b"".join(parts)


# -- streaming blobs with resumption ----------------------------------------------------------------


class BlobStream:
    """A blob's bytes as they arrive. A broken connection is resumed with a Range request
    (up to RESUMES consecutive times, with back-off); never more than `size` bytes."""

    def __init__(self, client: Client, ep: _Endpoint, repo: str, digest: str, size: int | None) -> None:
        self.client = client
        self.ep = ep
        self.repo = repo
        self.digest = digest
        self.size = size
        self.received = 0
        self.failures = 0
        self.resumes = 0
        self.resp: http.client.HTTPResponse | None = None
        self.conn: http.client.HTTPConnection | None = None
        self.closed = False
        self._open()  # the first request: a missing blob fails here, as NotFound

    def _open(self) -> None:
        c, ep = self.client, self.ep
        headers = {"Range": f"bytes={self.received}-"} if self.received else {}
        resp, conn = c._do(ep, "GET", f"{ep.prefix}/v2/{self.repo}/blobs/{self.digest}", _pull(self.repo),
                           headers)
        skip = 0
        if resp.status == 206 and self.received:
            start = (resp.getheader("Content-Range") or "").removeprefix("bytes ").split("-", 1)[0]
            if not start.isdigit() or int(start) > self.received:
                conn.close()
                raise RegistryError(f"registry {ep.name} sent an invalid answer (range {start!r} "
                                    f"for blob {self.digest})")
            skip = self.received - int(start)
        elif resp.status == 200:
            skip = self.received  # the server ignored Range: drop what we already have
        else:
            body = c._body(ep, resp, conn)
            what = f"blob unknown: {self.repo}@{self.digest}"
            raise c._status_error(ep, resp, body, what, _pull(self.repo))
        self.resp, self.conn = resp, conn
        while skip:
            b = resp.read(min(skip, READ_SIZE))
            if not b:
                raise ConnectionError("the answer ended early")
            skip -= len(b)

    def read(self, n: int = READ_SIZE) -> bytes:
        """Up to n bytes (at least 1 unless the blob is done); n < 0 reads the rest."""
        if self.closed:
            raise ValueError("read from a closed BlobStream")
        if n is None or n < 0:
            return b"".join(iter(lambda: self.read(READ_SIZE), b""))
        if self.size is not None:
            n = min(n, self.size - self.received)
            if n <= 0:
                self._finish()
                return b""
        if n == 0:
            return b""
        while True:
            try:
                if self.resp is None:
                    self._open()
                    self.resumes += 1
                assert self.resp is not None
                data = self.resp.read(n)
                if not data:
                    if self.size is not None and self.received < self.size:
                        raise ConnectionError("the answer ended early")
                    self._finish()
                    return b""
                self.received += len(data)
                self.failures = 0
                return data
            except http.client.IncompleteRead as e:
                self._drop()
                if e.partial:
                    data = e.partial[:n]
                    self.received += len(data)
                    return data
                err: BaseException = e
            except RegistryError as e:
                if e.http_status is not None and e.http_status < 500:
                    raise
                err = e
            except (OSError, http.client.HTTPException) as e:
                err = e
            self._drop()
            self.failures += 1
            if self.failures > RESUMES:
                why = str(err) if isinstance(err, RegistryError) else str(
                    _network_error(self.ep.name, err, self.client.timeout))
                raise RegistryError(f"download of blob {self.digest} failed at byte {self.received} after "
                                    f"{RESUMES} retries: {why}")
            time.sleep(BACKOFF * 2 ** (self.failures - 1))

    def _finish(self) -> None:
        """At the end: give the connection back if the answer was read to its end."""
        if self.conn is not None and self.resp is not None and self.resp.isclosed() \
                and not self.resp.will_close:
            self.client._checkin(self.conn)
            self.conn = self.resp = None
        self._drop()

    def _drop(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.conn = self.resp = None

    def close(self) -> None:
        if not self.closed:
            self._drop()
            self.closed = True

    def __enter__(self) -> BlobStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- pushing a whole image -------------------------------------------------------------------------


class _Counting:
    """A file wrapper reporting bytes read to a progress callback."""

    def __init__(self, f: BinaryIO, digest: str, size: int,
                 progress: Callable[[str, int, int], None]) -> None:
        self.f, self.digest, self.size, self.progress, self.done = f, digest, size, progress, 0

    def read(self, n: int = -1) -> bytes:
        b = self.f.read(n)
        self.done += len(b)
        self.progress(self.digest, self.done, self.size)
        return b

    def __enter__(self) -> _Counting:
        return self

    def __exit__(self, *exc: object) -> None:
        self.f.close()


def push_image(client: Client, repo: str, tag: str, store: ImageStore, rec: dict,
               progress: Callable[[str, int, int], None] | None = None, mount_from: str | None = None) -> str:
    """Upload an image's config and layers (up to 4 at once), then its manifest under `tag`.
    `progress(digest, bytes_done, size)` is called from the upload threads."""
    from kobako.image.unpack import gc_shield
    with gc_shield(store.root):  # layers rebuilt for the push are blobs no record names yet
        return _push_image(client, repo, tag, store, rec, progress, mount_from)


def _push_image(client: Client, repo: str, tag: str, store: ImageStore, rec: dict,
                progress: Callable[[str, int, int], None] | None, mount_from: str | None) -> str:
    from kobako.image import layerdata
    from kobako.image.content import ContentError

    content = store.content
    blobs: dict[str, int] = {}
    try:
        blobs[rec["id"]] = content.size(rec["id"])
    except OSError:
        raise RegistryError(f"cannot push {repo}:{tag}: its config blob {rec['id']} is missing from "
                            "the content store") from None
    try:
        body = content.read(rec["manifest"]["digest"])
        # pulled layers keep no blob: the registry has them already, or mounts them, or
        # they are rebuilt from their snapshots and gzipped anew (a new manifest names them)
        layers, changed = layerdata.ready_layers(
            content, layerdata.snapshots_of(content), rec,
            keep=lambda d: client.has_or_mounts(repo, d.digest, mount_from))
        if changed:
            body = layerdata.with_layers(body, layers)
    except (ContentError, layerdata.LayerDataError) as e:
        raise RegistryError(f"cannot push {repo}:{tag}: {e}") from None
    for d in layers:
        blobs[d.digest] = d.size

    def upload(digest: str, size: int) -> None:
        def opener() -> BinaryIO:
            f = content.open(digest)
            return _Counting(f, digest, size, progress) if progress else f  # type: ignore[return-value]
        # a layer pulled from another repository of this registry: ask it to mount, not upload
        client.push_blob(repo, digest, size, opener, mount_from=mount_from if digest != rec["id"] else None)
        if progress:
            progress(digest, size, size)

    with ThreadPoolExecutor(max_workers=min(4, len(blobs)), thread_name_prefix="kobako-push") as pool:
        futures = [pool.submit(upload, d, s) for d, s in blobs.items()]
        _, pending = wait(futures, return_when=FIRST_EXCEPTION)
        for f in pending:
            f.cancel()
        for f in futures:
            if f.done() and not f.cancelled() and f.exception():
                raise f.exception()  # type: ignore[misc]
    client.close()  # the upload threads' connections
    return client.put_manifest(repo, tag, body, rec["manifest"]["mediaType"])
