"""The Docker Engine API on a unix socket: `kobako system service`.

One asyncio loop serves every connection (h11 parses HTTP/1.1); work that blocks -- the
engine's file locks, the monitor, the in-process runtime -- runs in a thread pool, so a
slow client or a long `wait` never holds up the others. Streams (logs, wait, attach)
are written as they come. The engine is the same as the CLI's: a container made by
`docker run` through this socket is one `kobako ps` lists, and the other way round.

Routes live in api/containers.py, api/images.py and api/system.py; each handler takes a
Request and answers through it (json(), empty(), stream..., hijack()).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs, unquote, urlsplit

import h11

from kobako.api import API_VERSION, MIN_API_VERSION  # noqa: F401 - re-exported for the routes
from kobako.errors import KobakoError

MAX_BODY = 16 << 20  # a create or update body is a few kB; more is an error, not a buffer


class ApiError(KobakoError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


Handler = Callable[["Request"], Awaitable[None]]
ROUTES: list[tuple[str, list[str], Handler]] = []  # (method, path parts with {x}, handler)


def route(method: str, path: str) -> Callable[[Handler], Handler]:
    def deco(fn: Handler) -> Handler:
        ROUTES.append((method, path.strip("/").split("/"), fn))
        return fn
    return deco


def _match(method: str, parts: list[str]) -> tuple[Handler, dict[str, str]] | None:
    for m, pat, fn in ROUTES:
        if m != method:
            continue
        star = next((i for i, p in enumerate(pat) if p.endswith("*}")), None)
        if star is not None:  # {name*}: an image name, slashes and all (/images/a/b:1/json)
            tail = len(pat) - star - 1
            if len(parts) < len(pat):
                continue
            middle = "/".join(parts[star:len(parts) - tail])
            parts2 = parts[:star] + [middle] + parts[len(parts) - tail:]
            pat2 = pat[:star] + ["{" + pat[star][1:-2] + "}"] + pat[star + 1:]
            hit = _match_exact(pat2, parts2)
        elif len(pat) != len(parts):
            continue
        else:
            hit = _match_exact(pat, parts)
        if hit is not None:
            return fn, hit
    return None


def _match_exact(pat: list[str], parts: list[str]) -> dict[str, str] | None:
    if len(pat) != len(parts):
        return None
    params = {}
    for p, v in zip(pat, parts, strict=True):
        if p.startswith("{"):
            params[p[1:-1]] = v
        elif p != v:
            return None
    return params


_RT_LOCK = threading.Lock()


async def blocking(fn: Callable, *args: object) -> object:
    """Run engine work in the thread pool."""
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def engine():
    from kobako.engine.lifecycle import Engine
    return Engine()


def container(req: Request) -> tuple:
    """(engine, record) of the container a /containers/{id}/... request names, or a 404."""
    from kobako.engine.records import ContainerNotFound
    e = engine()
    try:
        return e, e.containers.resolve(req.params["id"])
    except ContainerNotFound:
        raise ApiError(404, f"No such container: {req.params['id']}") from None


class Request:
    def __init__(self, conn: Connection, req: h11.Request, body: bytes) -> None:
        self.conn = conn
        self.method = req.method.decode()
        target = urlsplit(req.target.decode())
        parts = [unquote(p) for p in target.path.strip("/").split("/")]
        self.version = None
        if parts and parts[0].startswith("v") and parts[0][1:].replace(".", "").isdigit():
            self.version = parts[0][1:]  # /v1.41/containers/json
            parts = parts[1:]
        self.parts = parts
        self.query = {k: v[-1] for k, v in parse_qs(target.query, keep_blank_values=True).items()}
        self.query_all = parse_qs(target.query, keep_blank_values=True)  # repeated keys (names=a&names=b)
        self.headers = {k.decode().lower(): v.decode() for k, v in req.headers}
        self.body = body
        self.params: dict[str, str] = {}
        self.answered = False
        self.body_file = None  # the spooled body of an upload (image import/load)

    def flag(self, name: str, default: bool = False) -> bool:
        v = self.query.get(name)
        if v is None:
            return default
        return v.lower() not in ("0", "false", "no", "")

    def json(self) -> dict:
        if not self.body:
            return {}
        try:
            obj = json.loads(self.body)
        except ValueError as e:
            raise ApiError(400, f"malformed JSON body: {e}") from None
        if not isinstance(obj, dict):
            raise ApiError(400, "the body must be a JSON object")
        return obj

    # -- answers -----------------------------------------------------------------------------
    def _headers(self, extra: list[tuple[str, str]]) -> list[tuple[str, str]]:
        return [("Api-Version", API_VERSION), ("Docker-Experimental", "false"), ("Ostype", "linux"),
                ("Server", "kobako"), *extra]

    async def send_json(self, status: int, obj: object) -> None:
        data = json.dumps(obj).encode() + b"\n"
        await self.send(status, data, "application/json")

    async def send(self, status: int, data: bytes = b"", ctype: str = "text/plain; charset=utf-8") -> None:
        self.answered = True
        hs = self._headers([("Content-Length", str(len(data)))] + ([("Content-Type", ctype)] if data else []))
        await self.conn.write(h11.Response(status_code=status, headers=hs))
        if data and self.method != "HEAD":
            await self.conn.write(h11.Data(data=data))
        await self.conn.write(h11.EndOfMessage())

    async def stream_start(self, status: int, ctype: str) -> None:
        self.answered = True
        hs = self._headers([("Content-Type", ctype)])
        await self.conn.write(h11.Response(status_code=status, headers=hs))

    async def chunk(self, data: bytes) -> None:
        if data:
            await self.conn.write(h11.Data(data=data))

    async def stream_end(self) -> None:
        await self.conn.write(h11.EndOfMessage())

    async def stream_from(self, reader: asyncio.StreamReader) -> None:
        """Send what reader gives, in chunks, until its end; then end the response."""
        while chunk := await reader.read(1 << 20):
            await self.chunk(chunk)
        await self.stream_end()

    async def hijack(self, ctype: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
        """Docker's attach/exec start: answer 101 (or 200 without an Upgrade header) and hand
        over the raw connection."""
        self.answered = True
        upgrade = "upgrade" in self.headers.get("connection", "").lower()
        c = self.conn
        if upgrade:
            await c.write(h11.InformationalResponse(status_code=101, headers=self._headers(
                [("Content-Type", ctype), ("Connection", "Upgrade"), ("Upgrade", "tcp")])))
            rest = c.h11.trailing_data[0]
        else:  # dockerd answers 200 and then streams raw on the same connection
            c.writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: " + ctype.encode() + b"\r\n\r\n")
            await c.writer.drain()
            rest = b""
        c.hijacked = True
        return c.reader, c.writer, rest


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=64 << 10)
        self.hijacked = False

    async def write(self, event: object) -> None:
        data = self.h11.send(event)
        if data:
            self.writer.write(data)
            await self.writer.drain()

    async def next_event(self) -> object:
        while True:
            ev = self.h11.next_event()
            if ev is h11.NEED_DATA:
                data = await self.reader.read(65536)
                self.h11.receive_data(data)  # b"" is EOF
                continue
            return ev

    async def serve(self) -> None:
        try:
            while not self.hijacked:
                ev = await self.next_event()
                if isinstance(ev, h11.ConnectionClosed) or ev is h11.PAUSED:
                    break
                if not isinstance(ev, h11.Request):
                    break
                path = urlsplit(ev.target.decode()).path
                # tarballs (images, archives, build contexts): to a file
                spool = path.endswith(("/images/create", "/images/load", "/archive", "/build"))
                for k, v in ev.headers:
                    if k == b"content-length" and int(v) > MAX_BODY and not spool:  # refused unread
                        raise ApiError(413, f"request body larger than {MAX_BODY >> 20} MiB")
                body = bytearray()
                file = None
                if spool:
                    import tempfile

                    from kobako.paths import data_root
                    tmp = os.path.join(data_root(), "tmp")  # on disk, not /run's tmpfs: layers are big
                    os.makedirs(tmp, mode=0o700, exist_ok=True)
                    file = tempfile.TemporaryFile(dir=tmp)
                while True:
                    part = await self.next_event()
                    if isinstance(part, h11.Data):
                        if file is not None:
                            await blocking(file.write, part.data)
                            continue
                        body += part.data
                        if len(body) > MAX_BODY:
                            raise ApiError(413, f"request body larger than {MAX_BODY >> 20} MiB")
                    elif isinstance(part, h11.EndOfMessage):
                        break
                    else:
                        return
                req = Request(self, ev, bytes(body))
                req.body_file = file
                try:
                    await self.handle(req)
                finally:
                    if file is not None:
                        file.close()
                if self.hijacked or self.h11.our_state is h11.MUST_CLOSE:
                    break
                try:
                    self.h11.start_next_cycle()
                except h11.LocalProtocolError:
                    break
        except (h11.RemoteProtocolError, ApiError) as e:
            try:
                status = e.status if isinstance(e, ApiError) else 400
                msg = json.dumps({"message": str(e)}).encode()
                if self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    await self.write(h11.Response(status_code=status, headers=[
                        ("Content-Type", "application/json"), ("Content-Length", str(len(msg))),
                        ("Connection", "close")]))
                    await self.write(h11.Data(data=msg))
                    await self.write(h11.EndOfMessage())
            except Exception:  # noqa: BLE001 - the client is gone or broken: nothing to tell it
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception as e:  # noqa: BLE001 - one connection's bug never takes the service down
            import traceback
            traceback.print_exc(file=sys.stderr)
            sys.stderr.write(f"connection dropped: {type(e).__name__}: {e}\n")
        finally:
            try:
                self.writer.close()
            except Exception:  # noqa: BLE001
                pass

    async def handle(self, req: Request) -> None:
        hit = _match(req.method if req.method != "HEAD" else "GET", req.parts)
        try:
            if req.version and _vkey(req.version) > _vkey(API_VERSION):  # as dockerd: newer is refused
                raise ApiError(400, f"client version {req.version} is too new. Maximum supported API version "
                                    f"is {API_VERSION}")
            if req.version and _vkey(req.version) < _vkey(MIN_API_VERSION):
                raise ApiError(400, f"client version {req.version} is too old. Minimum supported API version "
                                    f"is {MIN_API_VERSION}, please upgrade your client to a newer version")
            if hit is None:
                raise ApiError(404, "page not found")
            fn, req.params = hit
            await fn(req)
            if not req.answered:
                await req.send(204)
        except ApiError as e:
            await self._error(req, e.status, str(e))
        except (ConnectionError, asyncio.CancelledError):
            raise  # the client went away: serve() ends the connection quietly
        except Exception as e:  # noqa: BLE001 - an engine error becomes dockerd's {"message"}
            status, msg = classify(e)
            if status == 500:
                import traceback
                traceback.print_exc(file=sys.stderr)
            await self._error(req, status, msg)

    async def _error(self, req: Request, status: int, msg: str) -> None:
        # the operator's view of what clients were refused (a missing route, a bad body)
        sys.stderr.write(f"{req.method} /{'/'.join(req.parts)} -> {status} {msg}\n")
        sys.stderr.flush()
        if req.answered:  # mid-stream: all we can do is end it
            if not self.hijacked and self.h11.our_state is h11.SEND_BODY:
                await self.write(h11.EndOfMessage())
            return
        await req.send_json(status, {"message": msg})


def _vkey(v: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in v.split("."))
    except ValueError:
        return (0,)


def classify(e: BaseException) -> tuple[int, str]:
    """dockerd's status for an engine error, from its kind (kobako/errors.py)."""
    from kobako.errors import describe
    if isinstance(e, KobakoError):
        return e.status, describe(e)
    if isinstance(e, OSError) and e.strerror:
        return 500, describe(e)
    return 500, f"{type(e).__name__}: {e}"


async def _client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await Connection(reader, writer).serve()


def default_socket(run_root: str) -> str:
    return os.path.join(run_root, "docker.sock")


def serve(path: str, tcp: str | None = None, tls: tuple[str, str, str] | None = None) -> None:
    """Serve until SIGINT/SIGTERM; the socket file is 0660, group `kobako` if it exists.
    `tcp` ("HOST:PORT") adds a TCP listener, and only with `tls` (CA, cert, key): every
    client must present a certificate the CA signed (dockerd's --tlsverify)."""
    import signal

    from kobako.api import (  # noqa: F401 - they register routes
        containers,
        execs,
        images,
        networks,
        resources,
        swarm,
        system,
        volumes,
    )
    from kobako.engine import lifecycle
    lifecycle.RUNTIME_LOCK = _RT_LOCK  # the in-process runtime keeps per-process state

    activated = os.environ.get("LISTEN_PID") == str(os.getpid()) and os.environ.get("LISTEN_FDS", "0") != "0"

    async def main() -> None:
        if activated:  # systemd socket activation (contrib/kobako.socket): the listener is fd 3
            import socket
            srv = await asyncio.start_unix_server(_client, sock=socket.socket(fileno=3), limit=1 << 20)
        else:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            old = os.umask(0o117)
            try:
                srv = await asyncio.start_unix_server(_client, path, limit=1 << 20)
            finally:
                os.umask(old)
            try:
                import grp
                os.chown(path, 0, grp.getgrnam("kobako").gr_gid)
            except (KeyError, PermissionError):
                pass
        tcp_srv = None
        if tcp:
            import ssl
            ca, cert, key = tls  # type: ignore[misc]
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=ca)
            ctx.load_cert_chain(cert, key)
            ctx.verify_mode = ssl.CERT_REQUIRED  # a client without a certificate the CA signed: refused
            host, _, port = tcp.rpartition(":")
            tcp_srv = await asyncio.start_server(_client, host.strip("[]") or "127.0.0.1", int(port), ssl=ctx,
                                                 limit=1 << 20)
            sys.stderr.write(f"kobako: and on tcp://{tcp} (TLS, client certificates required)\n")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        where = "the socket systemd passed" if activated else f"unix://{path}"
        sys.stderr.write(f"kobako: serving the Docker Engine API (v{API_VERSION}) on {where}\n")
        sys.stderr.flush()
        async with srv:
            await stop.wait()
        if tcp_srv is not None:
            tcp_srv.close()
        if not activated:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    asyncio.run(main())
