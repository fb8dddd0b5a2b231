"""/containers/{id}/exec and /exec/{id}/...: `docker exec`. The engine spawns the program
(engine/execs.py); this module keeps the exec instances (in memory, as dockerd does) and
relays the hijacked connection to the program's stdio."""

from __future__ import annotations

import asyncio
import os

from kobako.api.server import ApiError, Request, blocking, container, engine, route

_EXECS: dict[str, dict] = {}  # exec ID -> its config and, once run, pid/exit code (as dockerd: in memory)


@route("POST", "/containers/{id}/exec")
async def create(req: Request) -> None:
    from kobako.engine import execs
    e, rec = container(req)
    body = req.json()
    cmd = body.get("Cmd")
    if isinstance(cmd, str):
        cmd = [cmd]
    if not cmd or not isinstance(cmd, list):
        raise ApiError(400, "No exec command specified")
    env = body.get("Env") or []
    if not isinstance(env, list):
        raise ApiError(400, "Env must be a list of NAME=VALUE strings")
    # Go decodes JSON keys case-insensitively: docker-py sends detachKeys
    keys = body.get("DetachKeys") or body.get("detachKeys") or None
    cfg = execs.ExecConfig([str(c) for c in cmd], [str(v) for v in env], str(body.get("User") or ""),
                           str(body.get("WorkingDir") or ""), bool(body.get("Tty")),
                           bool(body.get("AttachStdin")), bool(body.get("Privileged")), keys)
    execs.check_running(e, rec)
    xid = os.urandom(32).hex()
    _EXECS[xid] = {"container": rec["id"], "cfg": cfg, "running": False, "exit": None, "proc": None}
    await req.send_json(201, {"Id": xid})


def _get(xid: str) -> dict:
    x = _EXECS.get(xid)
    if x is None:
        raise ApiError(404, f"No such exec instance: {xid}")
    return x


@route("POST", "/exec/{id}/start")
async def start(req: Request) -> None:
    from kobako.engine import execs
    from kobako.engine.stdio import DetachScanner, frame, parse_detach_keys
    x = _get(req.params["id"])
    if x["running"] or x["exit"] is not None:
        raise ApiError(409, f"Exec command {req.params['id']} is already running" if x["running"] else
                       f"Exec command {req.params['id']} has already run")
    body = req.json()
    cfg: execs.ExecConfig = x["cfg"]
    e = engine()
    rec = e.containers.get(x["container"])
    if rec is None:
        raise ApiError(404, f"No such container: {x['container']}")
    detach = bool(body.get("Detach"))
    x["running"] = True
    try:
        proc = await blocking(execs.spawn, e, rec, cfg, not detach)
    except BaseException:
        x["running"] = False
        raise
    x["proc"] = proc
    if detach:
        asyncio.ensure_future(_reap(x))
        await req.send(200)
        return
    # dockerd frames the output by the START request's Tty, not the exec's: with a pty the
    # program's stdout and stderr are one stream either way (frames of stream 1 unless raw)
    raw = bool(body.get("Tty"))
    ctype = "application/vnd.docker.raw-stream" if raw else "application/vnd.docker.multiplexed-stream"
    reader, writer, rest = await req.hijack(ctype)
    scanner = DetachScanner(parse_detach_keys(cfg.detach_keys) if cfg.tty else b"")
    detached = await _relay(proc, reader, writer, rest, raw, scanner)
    if detached:  # the program goes on; its output is read (and dropped) until it ends
        writer.close()
        asyncio.ensure_future(_drain_then_reap(x))
        return
    had_stdio = bool(proc.outputs)
    await _reap(x)
    if proc.error and not had_stdio:  # it never got a pty: dockerd writes why into the stream
        # (on pipes the runtime's own stderr, the program's, has said it already)
        msg = proc.error.encode() + b"\r\n"
        writer.write(msg if raw else frame(1, msg))
    try:
        await writer.drain()
    except ConnectionError:
        pass
    writer.close()


async def _reap(x: dict) -> None:
    proc = x["proc"]
    x["exit"] = await blocking(proc.wait)
    x["running"] = False
    proc.close()


async def _drain_then_reap(x: dict) -> None:
    proc = x["proc"]
    await _read_all(proc, None)
    await _reap(x)


async def _read_all(proc, sink) -> None:
    """Read every output fd of proc until EOF, handing (stream, data) to sink (None drops)."""
    loop = asyncio.get_running_loop()
    q: asyncio.Queue = asyncio.Queue()
    live = dict(proc.outputs)

    def readable(fd: int) -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:  # EIO: a pty whose every slave is closed
            data = b""
        if not data:
            loop.remove_reader(fd)
        q.put_nowait((fd, data))

    for fd in live:
        os.set_blocking(fd, False)
        loop.add_reader(fd, readable, fd)
    try:
        while live:
            fd, data = await q.get()
            if not data:
                live.pop(fd, None)
                continue
            if sink is not None:
                await sink(live[fd], data)
    finally:
        for fd in live:
            loop.remove_reader(fd)


async def _relay(proc, reader, writer, first: bytes, raw: bool, scanner) -> bool:
    """The program's output to the client (raw, or Docker's frames); the client's bytes to its
    stdin. True if the client typed the detach keys."""
    from kobako.engine.stdio import frame

    async def out(stream: int, data: bytes) -> None:
        writer.write(data if raw else frame(stream, data))
        await writer.drain()

    async def feed() -> bool:
        data = first
        while True:
            if data:
                data, hit = scanner.feed(data)
                if data and proc.stdin >= 0:
                    await _write_all(proc.stdin, data)
                if hit:
                    return True
            data = await reader.read(65536)
            if not data:
                break
        if proc.stdin >= 0 and proc.stdin != proc.master:  # EOF for a pipe; a pty has no EOF to give
            os.close(proc.stdin)
            proc.stdin = -1
        return False

    up = asyncio.ensure_future(feed())
    down = asyncio.ensure_future(_read_all(proc, out))
    await asyncio.wait([up, down], return_when=asyncio.FIRST_COMPLETED)
    detached = up.done() and not up.cancelled() and up.exception() is None and up.result()
    if not detached and not down.done():  # the client's input ended: its output goes on
        await asyncio.wait([down])
    for t in (up, down):
        t.cancel()
    await asyncio.gather(up, down, return_exceptions=True)
    return bool(detached)


async def _write_all(fd: int, data: bytes) -> None:
    loop = asyncio.get_running_loop()
    os.set_blocking(fd, False)
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
            view = view[n:]
        except BlockingIOError:
            fut = loop.create_future()
            loop.add_writer(fd, lambda f=fut: f.done() or f.set_result(None))
            try:
                await fut
            finally:
                loop.remove_writer(fd)
        except OSError:  # the program closed its stdin
            return


@route("GET", "/exec/{id}/json")
async def inspect(req: Request) -> None:
    x = _get(req.params["id"])
    cfg = x["cfg"]
    proc = x["proc"]
    pid = proc.started() if proc is not None else 0
    await req.send_json(200, {
        "ID": req.params["id"], "Running": x["running"], "ExitCode": x["exit"], "ContainerID": x["container"],
        "Pid": pid, "OpenStdin": cfg.stdin, "OpenStdout": True, "OpenStderr": True, "CanRemove": False,
        "DetachKeys": cfg.detach_keys or "",
        "ProcessConfig": {"entrypoint": cfg.cmd[0], "arguments": cfg.cmd[1:], "tty": cfg.tty,
                          "privileged": cfg.privileged, "user": cfg.user}})


@route("POST", "/exec/{id}/resize")
async def resize(req: Request) -> None:
    x = _get(req.params["id"])
    try:
        rows, cols = int(req.query.get("h", 24)), int(req.query.get("w", 80))
    except ValueError:
        raise ApiError(400, "h and w must be numbers") from None
    if x["proc"] is not None:
        x["proc"].resize(rows, cols)
    await req.send(201)
