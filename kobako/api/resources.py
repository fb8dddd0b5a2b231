"""The container odds and ends beyond create/start/stop (api/containers.py): pause, unpause,
rename, top, prune, archive (docker cp), export, changes, stats; each a call of the engine."""

from __future__ import annotations

import asyncio
import json
import os

from kobako.api.server import ApiError, Request, blocking, container, engine, route


@route("POST", "/containers/{id}/pause")
async def pause(req: Request) -> None:
    e, rec = container(req)
    await blocking(e.pause, rec)


@route("POST", "/containers/{id}/unpause")
async def unpause(req: Request) -> None:
    e, rec = container(req)
    await blocking(e.unpause, rec)


@route("POST", "/containers/{id}/rename")
async def rename(req: Request) -> None:
    e, rec = container(req)
    new = req.query.get("name")
    if not new:
        raise ApiError(400, "Neither old nor new names may be empty")
    await blocking(e.rename, rec, new)


@route("GET", "/containers/{id}/top")
async def top(req: Request) -> None:
    import shlex

    from kobako.engine.processes import top as processes
    e, rec = container(req)
    try:
        ps_args = shlex.split(req.query.get("ps_args") or "")
    except ValueError:
        raise ApiError(400, "ps_args: unbalanced quotes") from None
    titles, rows = await blocking(processes, e, rec, ps_args)
    await req.send_json(200, {"Titles": titles, "Processes": rows})


@route("POST", "/containers/prune")
async def prune(req: Request) -> None:
    e = engine()
    try:
        flt = json.loads(req.query.get("filters") or "{}")
    except ValueError:
        raise ApiError(400, "invalid filters: not JSON") from None
    if not isinstance(flt, dict):
        raise ApiError(400, "invalid filters: a JSON object of lists")
    # {"label": ["a=b"]} or the older {"label": {"a=b": true}}
    pairs = {k: list(v) if isinstance(v, (list, dict)) else [str(v)] for k, v in flt.items()}
    gone, space = await blocking(e.prune, pairs)
    await req.send_json(200, {"ContainersDeleted": gone or None, "SpaceReclaimed": space})


# -- archive: docker cp -----------------------------------------------------------------------------

@route("GET", "/containers/{id}/archive")
async def archive_get(req: Request) -> None:
    """A tar of PATH in the container (running or not, its volumes included), with PATH's
    stat in a header first (HEAD: the header only)."""
    import base64

    from kobako.engine import copy
    e, rec = container(req)
    path = req.query.get("path")
    if not path:
        raise ApiError(400, "Bad parameter: path cannot be empty")
    st = await blocking(copy.stat, e, rec, path)
    hs = req._headers([("Content-Type", "application/x-tar"),
                       ("X-Docker-Container-Path-Stat", base64.b64encode(json.dumps(st).encode()).decode())])
    import h11
    req.answered = True
    if req.method == "HEAD":
        await req.conn.write(h11.Response(status_code=200, headers=hs + [("Content-Length", "0")]))
        await req.conn.write(h11.EndOfMessage())
        return
    await req.conn.write(h11.Response(status_code=200, headers=hs))
    await _stream_engine_output(req, lambda out: copy.from_container(e, rec, path, "-", out=out))


async def _stream_engine_output(req: Request, produce) -> None:
    """Run produce(out) in the thread pool, `out` a pipe whose other end is streamed to the
    client as it comes; the response ends when produce returns (an error midway: the stream
    just ends, as dockerd's does once the headers are sent)."""
    loop = asyncio.get_running_loop()
    r, w = os.pipe2(os.O_CLOEXEC)
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(r, "rb", 0))

    def run() -> None:
        with os.fdopen(w, "wb") as out:
            produce(out)

    job = loop.run_in_executor(None, run)
    try:
        await req.stream_from(reader)
    finally:
        try:
            await job
        except Exception as ex:  # noqa: BLE001 - the headers are sent: it can only be logged
            import sys
            sys.stderr.write(f"{req.method} /{'/'.join(req.parts)}: {type(ex).__name__}: {ex}\n")


@route("PUT", "/containers/{id}/archive")
async def archive_put(req: Request) -> None:
    """Extract the body (a tar) into the directory PATH of the container."""
    from kobako.engine import copy
    e, rec = container(req)
    path = req.query.get("path")
    if not path:
        raise ApiError(400, "Bad parameter: path cannot be empty")
    req.body_file.seek(0)
    await blocking(lambda: copy.to_container(e, rec, "", path, tar_in=req.body_file,
                                             archive=req.flag("copyUIDGID")))
    await req.send(200)


@route("GET", "/containers/{id}/export")
async def export(req: Request) -> None:
    from kobako.engine.changes import export as export_tar
    e, rec = container(req)
    await req.stream_start(200, "application/x-tar")
    await _stream_engine_output(req, lambda out: export_tar(e, rec, out))


@route("GET", "/containers/{id}/changes")
async def changes(req: Request) -> None:
    from kobako.engine.changes import KINDS
    from kobako.engine.changes import changes as container_changes
    e, rec = container(req)
    found = await blocking(container_changes, e, rec)
    await req.send_json(200, [{"Path": path, "Kind": KINDS[kind]} for kind, path in found] or None)


# -- stats ------------------------------------------------------------------------------------------

@route("GET", "/containers/{id}/stats")
async def stats(req: Request) -> None:

    from kobako.engine.stats import sample
    e, rec = container(req)
    stream = req.flag("stream", True) and not req.flag("one-shot")
    await req.stream_start(200, "application/json")
    pre = None
    if not stream and not req.flag("one-shot"):  # docker stats --no-stream: a CPU % needs two samples
        pre = await blocking(sample, e, rec, None)
        await asyncio.sleep(1)
    while True:
        doc = await blocking(sample, e, rec, pre)
        await req.chunk(json.dumps(doc).encode() + b"\n")
        if not stream or e.state(e.containers.get(rec["id"]) or rec) not in ("running", "paused"):
            break
        pre = doc
        await asyncio.sleep(1)
    await req.stream_end()
