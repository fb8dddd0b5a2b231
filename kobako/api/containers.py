"""/containers/...: create (the body checked as the engine's container spec), start,
attach (hijacked, Docker's multiplexed frames from the monitor), wait, logs,
stop/kill/restart, remove, list, inspect."""

from __future__ import annotations

import asyncio
import time

from kobako.api.server import ApiError, Request, blocking, container, engine, route

# attach requests waiting for their container's start (docker run: attach, wait, then start)
_PENDING: dict[str, tuple[asyncio.Future, bool]] = {}


# -- create ----------------------------------------------------------------------------------

@route("POST", "/containers/create")
async def create(req: Request) -> None:
    """Docker's create body becomes the engine's container spec as it is (engine/spec.py
    checks every field); the image must be here already, as with dockerd."""
    from kobako.engine.spec import ContainerSpec
    body = req.json()
    name = req.query.get("name") or None
    spec = ContainerSpec.from_docker(body, name)
    platform = req.query.get("platform") or ""
    warnings: list[str] = []

    def make() -> dict:
        from kobako.image import manifest as mf
        from kobako.image.store import ImageNotFound
        want = mf.parse_platform(platform) if platform else None  # a 400 for one that does not parse
        e = engine()
        try:
            img = e.images.resolve(spec.config["Image"], want)  # a multi-platform image: that platform's
        except ImageNotFound:
            raise ApiError(404, f"No such image: {spec.config['Image']}") from None
        if want is not None or img.get("architecture") not in ("", None, mf.host_platform()["architecture"]):
            from kobako.engine import emulation  # a mismatch is dockerd's 404: the docker CLI then pulls
            warnings.extend(emulation.check_image(e, img, spec.config["Image"], want))
        return e.create_container(spec, img, spec.config["Image"])

    rec = await blocking(make)
    await req.send_json(201, {"Id": rec["id"], "Warnings": warnings})


# -- start, attach, wait -----------------------------------------------------------------------

@route("POST", "/containers/{id}/start")
async def start(req: Request) -> None:
    e, rec = container(req)
    if e.state(rec) in ("running", "paused"):
        await req.send(304)
        return
    pending = _PENDING.pop(rec["id"], None)
    if pending is not None and not pending[0].done():
        fut, stdin = pending
        r, s = await blocking(lambda: e.start(rec, attach=True, stdin=stdin))
        fut.set_result((r, s))
    else:
        await blocking(e.start, rec)
    await req.send(204)


@route("POST", "/containers/{id}/attach")
async def attach(req: Request) -> None:
    """logs=1: what the container logged first; stream=1: then its live stdio (an attach to a
    created container waits for its start, as `docker run` attaches first). With a tty, the
    detach keys typed on stdin end the attachment and leave the container running."""
    from kobako.engine import logs as lg
    from kobako.engine import monitor
    from kobako.engine.stdio import DetachScanner, parse_detach_keys
    e, rec = container(req)
    stdin = req.flag("stdin")
    stream, with_logs = req.flag("stream"), req.flag("logs")
    tty = bool((rec.get("options") or {}).get("tty"))
    keys = parse_detach_keys(req.query.get("detachKeys")) if tty else b""
    want = tuple(s for s in ("stdout", "stderr") if req.flag(s))
    state = e.state(rec)
    fut: asyncio.Future | None = None
    r = s = None
    if not stream:
        pass
    elif state in ("running", "paused"):
        def join():
            s = monitor.connect(e.root, e.run_dir, spawn=False)
            return monitor.request(s, {"op": "attach", "id": rec["id"], "stdin": stdin}, timeout=10), s
        r, s = await blocking(join)
    elif state in ("created", "exited"):
        fut = asyncio.get_running_loop().create_future()
        _PENDING[rec["id"]] = (fut, stdin)
    else:
        raise ApiError(409, f"container {rec['name']} is restarting, wait until the container is running")
    ctype = "application/vnd.docker.raw-stream" if tty else "application/vnd.docker.multiplexed-stream"
    reader, writer, rest = await req.hijack(ctype)
    try:
        if with_logs and want:
            ents = await blocking(lg.select, e.containers.path(rec["id"], ""), rec["id"], want)
            # docker-py reads the hijacked socket underneath http.client's buffer: bytes that
            # arrive together with the 101 would be lost to it, so the log follows a moment later
            await asyncio.sleep(0.02)
            writer.write(b"".join(_log_frame(x, tty) for x in ents))
            await writer.drain()
        if not stream:
            return
        if fut is not None:
            r, s = await fut
        if not r.get("ok"):
            return
        await _relay(s, r.get("_rest", b""), reader, writer, rest if stdin else None, DetachScanner(keys))
    except ConnectionError:
        pass
    finally:
        if fut is not None and _PENDING.get(rec["id"], (None,))[0] is fut:
            _PENDING.pop(rec["id"], None)
        if s is not None:
            s.close()
        writer.close()


async def _relay(s, first: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 stdin_first: bytes | None, scanner) -> None:
    """The monitor's stream (already framed as Docker's) to the client; the client's bytes to
    the container's stdin when it asked for stdin, until it types the detach keys."""
    loop = asyncio.get_running_loop()
    s.setblocking(False)
    if first:
        writer.write(first)
        await writer.drain()

    async def upstream() -> bool:
        data = stdin_first
        while True:
            if data:
                data, hit = scanner.feed(data)
                if data:
                    await loop.sock_sendall(s, data)
                if hit:
                    return True
            data = await reader.read(65536)
            if not data:
                import socket
                try:
                    s.shutdown(socket.SHUT_WR)  # EOF on the container's stdin
                except OSError:
                    pass
                return False

    async def downstream() -> None:
        while True:
            data = await loop.sock_recv(s, 65536)
            if not data:
                return
            writer.write(data)
            await writer.drain()

    down = asyncio.ensure_future(downstream())
    up = asyncio.ensure_future(upstream()) if stdin_first is not None else None
    try:
        while not down.done():
            await asyncio.wait([down] + ([up] if up is not None and not up.done() else []),
                               return_when=asyncio.FIRST_COMPLETED)
            if up is not None and up.done() and not up.cancelled() and up.exception() is None and up.result():
                return  # detached: the container runs on
    finally:
        for t in (down, up):
            if t is not None:
                t.cancel()
        await asyncio.gather(*(t for t in (down, up) if t is not None), return_exceptions=True)


@route("POST", "/containers/{id}/wait")
async def wait(req: Request) -> None:
    """The exit code from the engine's event log (the `die` event), read from where the log
    ended when the request came: `docker run` asks before it starts the container, and an
    AutoRemove container's record is gone by the time anyone could look at it."""
    import json
    import os

    from kobako.engine import events
    e, rec = container(req)
    cond = req.query.get("condition") or "not-running"
    if cond not in ("not-running", "next-exit", "removed"):
        raise ApiError(400, f"invalid condition {cond!r}: not-running, next-exit or removed")
    log = events.path(e.root)
    offset = os.path.getsize(log) if os.path.exists(log) else 0
    await req.stream_start(200, "application/json")
    state = e.state(rec)
    code: int | None = None
    if cond == "not-running" and state not in ("running", "paused", "restarting") \
            and rec.get("status") != "starting" or cond == "removed" and state in ("exited",):
        code = int(rec.get("exitCode", 0))
    buf = b""
    gone = asyncio.ensure_future(req.conn.reader.read(1))  # a client that hangs up ends the wait
    while code is None and not gone.done():
        try:
            size = os.path.getsize(log)
            if size < offset:  # the log was cut in half meanwhile
                offset = 0
            if size > offset:
                with open(log, "rb") as f:
                    f.seek(offset)
                    buf += f.read(size - offset)
                offset = size
        except FileNotFoundError:
            pass
        *lines, buf = buf.split(b"\n")
        for line in lines:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev.get("id") == rec["id"] and ev.get("status") == "die":
                code = int((ev.get("Actor") or {}).get("Attributes", {}).get("exitCode", 0))
            elif ev.get("id") == rec["id"] and ev.get("status") == "destroy" and code is None:
                code = 0  # removed before it ever ran
        if code is None:
            await asyncio.wait([gone], timeout=0.02)
    gone.cancel()
    await asyncio.gather(gone, return_exceptions=True)
    if code is None:  # nobody is listening any more
        await req.stream_end()
        return
    if cond == "removed":
        end = time.monotonic() + 30
        while e.containers.get(rec["id"]) is not None and time.monotonic() < end:
            await asyncio.sleep(0.02)
    await req.chunk(json.dumps({"StatusCode": code, "Error": None}).encode() + b"\n")
    await req.stream_end()


# -- logs ---------------------------------------------------------------------------------------

@route("GET", "/containers/{id}/logs")
async def logs(req: Request) -> None:
    from kobako.engine import logs as lg
    e, rec = container(req)
    tty = bool((rec.get("options") or {}).get("tty"))
    want = tuple(s for s in ("stdout", "stderr") if req.flag(s))
    if not want:
        raise ApiError(400, "Bad parameters: you must choose at least one stream")
    stamps = req.flag("timestamps")
    since = lg.parse_bound(req.query.get("since"), "since")
    until = lg.parse_bound(req.query.get("until"), "until")
    tail = lg.parse_tail(req.query.get("tail"))
    cdir = e.containers.path(rec["id"], "")
    ents = await blocking(lg.select, cdir, rec["id"], want, since, until, tail)
    await req.stream_start(200, "application/vnd.docker.raw-stream" if tty else
                           "application/vnd.docker.multiplexed-stream")
    await req.chunk(b"".join(_log_frame(x, tty, stamps) for x in ents))
    if req.flag("follow") and (until is None or until > time.time()):
        import os

        def keep(ent: dict) -> bool:
            if (ent.get("stream") or "stdout") not in want:
                return False
            t = lg.parse_time(ent.get("time") or "1970-01-01T00:00:00Z")
            return (since is None or t >= since) and (until is None or t <= until)

        path = os.path.join(cdir, f"{rec['id']}-json.log")
        offset = os.path.getsize(path) if os.path.exists(path) else 0

        def alive() -> bool:
            return e.state(e.containers.get(rec["id"]) or rec) in ("running", "paused")
        tailer = lg.Tail(path, offset)  # polled here: a quiet follower holds no thread
        gone = asyncio.ensure_future(req.conn.reader.read(1))  # the client hung up
        try:
            while not gone.done() and (until is None or time.time() <= until):
                got = tailer.poll()
                for ent in got:
                    if keep(ent):
                        await req.chunk(_log_frame(ent, tty, stamps))
                if not got:
                    if not await blocking(alive):
                        for ent in tailer.poll():  # what came with the exit
                            if keep(ent):
                                await req.chunk(_log_frame(ent, tty, stamps))
                        break
                    await asyncio.wait([gone], timeout=0.1)
        finally:
            gone.cancel()
            await asyncio.gather(gone, return_exceptions=True)
    await req.stream_end()


def _log_frame(ent: dict, tty: bool, stamps: bool = False) -> bytes:
    """A log entry as Docker sends it: raw for a tty container, else a multiplexed frame."""
    from kobako.engine.stdio import STDERR, STDOUT, frame
    text = ent.get("log", "")
    if stamps:
        text = f"{ent.get('time', '')} {text}"
    data = text.encode()
    return data if tty else frame(STDERR if ent.get("stream") == "stderr" else STDOUT, data)


# -- the rest of the lifecycle ----------------------------------------------------------------

def _stop_timeout(req: Request) -> float | None:
    t = req.query.get("t")
    if t in (None, ""):
        return None
    try:
        return float(t)
    except ValueError:
        raise ApiError(400, f"invalid stop timeout {t!r}: a number of seconds") from None


@route("POST", "/containers/{id}/stop")
async def stop(req: Request) -> None:
    e, rec = container(req)
    t = _stop_timeout(req)
    if e.state(rec) not in ("running", "paused", "restarting"):
        await req.send(304)
        return
    await blocking(e.stop, rec, t)


@route("POST", "/containers/{id}/kill")
async def kill(req: Request) -> None:
    e, rec = container(req)
    await blocking(e.kill, rec, req.query.get("signal") or "KILL")


@route("POST", "/containers/{id}/restart")
async def restart(req: Request) -> None:
    e, rec = container(req)
    await blocking(e.restart, rec, _stop_timeout(req))


@route("POST", "/containers/{id}/resize")
async def resize(req: Request) -> None:
    from kobako.engine import monitor
    e, rec = container(req)

    def go() -> None:
        try:
            s = monitor.connect(e.root, e.run_dir, spawn=False)
        except OSError:
            return
        try:
            monitor.request(s, {"op": "resize", "id": rec["id"], "rows": int(req.query.get("h", 24)),
                                "cols": int(req.query.get("w", 80))}, timeout=5)
        finally:
            s.close()
    await blocking(go)
    await req.send(200)


@route("DELETE", "/containers/{id}")
async def remove(req: Request) -> None:
    e, rec = container(req)
    if not req.flag("force") and e.state(rec) in ("running", "paused", "restarting"):
        raise ApiError(409, f"You cannot remove a running container {rec['id']}. Stop the container "
                            "before attempting removal or force remove")
    await blocking(lambda: e.remove(rec, force=req.flag("force"), volumes=req.flag("v")))


@route("DELETE", "/containers/{id}/{link}")
async def remove_link(req: Request) -> None:
    """DELETE /containers/NAME/ALIAS?link=1: a legacy link of container NAME goes away."""
    if not req.flag("link"):
        raise ApiError(404, f"No such container: {req.params['id']}/{req.params['link']}")
    e, rec = container(req)
    await blocking(e.remove_link, rec, req.params["link"])


@route("GET", "/containers/{id}/json")
async def inspect(req: Request) -> None:
    from kobako.engine.views import container_json, container_sizes
    e, rec = container(req)
    doc = await blocking(container_json, e, rec)
    if req.query.get("size") in ("1", "true", "True"):  # docker inspect -s
        doc.update(await blocking(container_sizes, e, rec))
    await req.send_json(200, doc)


@route("GET", "/containers/json")
async def ps(req: Request) -> None:
    from kobako.engine import views
    e = engine()
    from kobako.engine import filters
    flt = views.container_filters(filters.from_json(req.query.get("filters"), views.CONTAINER_FILTERS))
    try:
        limit = int(req.query.get("limit") or -1)
    except ValueError:
        raise ApiError(400, "invalid limit: a number") from None

    def states() -> list[tuple[dict, str]]:
        return e.listed()

    def rows() -> list[dict]:
        from kobako.network.endpoints import Endpoints
        eps = Endpoints(e.root, e.run_dir)
        out = []
        for rec, state in views.container_list(e, _cached_states(e, states), flt, req.flag("all"),
                                               limit if limit > 0 else -1):
            st = None
            if state in ("running", "paused") and (rec.get("net") or {}).get("mode") == "bridge":
                st = eps.state(rec["id"])
            out.append(views.container_summary(e, rec, state, st))
        return out

    await req.send_json(200, await blocking(rows))


_PS: dict = {"key": None, "at": 0.0, "states": []}


def _cached_states(e, compute) -> list:
    """Every container's (record, state): recomputed when the event log or the containers
    directory changed, and at least once a second (a change no event reports, such as a
    foreground run killed with -9). Reading each container's runtime state costs ~0.15 ms,
    and list requests come in bursts (compose polls, `docker ps` in a loop)."""
    import os
    import time as t

    from kobako.engine import events
    key = []
    for p in (events.path(e.root), os.path.join(e.root, "containers")):
        try:
            st = os.stat(p)
            key.append((st.st_size, st.st_mtime_ns))
        except FileNotFoundError:
            key.append(None)
    now = t.monotonic()
    if _PS["key"] != key or now - _PS["at"] > 1.0:
        _PS.update(key=key, at=now, states=compute())
    return _PS["states"]


@route("POST", "/containers/{id}/update")
async def update(req: Request) -> None:
    """Limits and restart policy, changed live and kept for the next start (engine/resources.py)."""
    from kobako.engine import resources
    e, rec = container(req)
    await blocking(resources.update, e, rec, req.json())
    await req.send_json(200, {"Warnings": None})
