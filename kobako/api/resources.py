"""The container odds and ends beyond create/start/stop (api/containers.py): pause, unpause,
rename, top, prune, archive (docker cp), export, changes, stats."""

from __future__ import annotations

import asyncio
import json
import os

from kobako.api.server import ApiError, Request, blocking, container, engine, route


@route("POST", "/containers/{id}/pause")
async def pause(req: Request) -> None:
    e, rec = container(req)
    if e.state(rec) != "running":
        raise ApiError(409, f"Container {rec['id']} is not running")
    await blocking(e.pause, rec)


@route("POST", "/containers/{id}/unpause")
async def unpause(req: Request) -> None:
    e, rec = container(req)
    if e.state(rec) != "paused":
        raise ApiError(409, f"Container {rec['id']} is not paused")
    await blocking(e.unpause, rec)


@route("POST", "/containers/{id}/rename")
async def rename(req: Request) -> None:
    e, rec = container(req)
    new = req.query.get("name")
    if not new:
        raise ApiError(400, "the new name is required (?name=)")
    from kobako.cli.containers import rename as cli_rename
    from kobako.cli.parser import Args
    await blocking(cli_rename, e, Args({}, [rec["id"], new]))


@route("GET", "/containers/{id}/top")
async def top(req: Request) -> None:
    import subprocess
    import sys

    e, rec = container(req)
    if e.state(rec) not in ("running", "paused"):
        raise ApiError(409, f"Container {rec['id']} is not running")
    argv = [sys.executable, "-m", "kobako.cli.main", "top", rec["id"],
            *(req.query.get("ps_args") or "").split()]
    cp = await blocking(lambda: subprocess.run(argv, capture_output=True, text=True, timeout=30))
    lines = [ln for ln in cp.stdout.splitlines() if ln.strip()]
    if cp.returncode or not lines:
        raise ApiError(500, cp.stderr.strip() or "top failed")
    titles = lines[0].split()
    procs = [ln.split(None, len(titles) - 1) for ln in lines[1:]]
    await req.send_json(200, {"Titles": titles, "Processes": procs})


@route("POST", "/containers/prune")
async def prune(req: Request) -> None:
    e = engine()

    def go() -> list[str]:
        gone = []
        for rec in e.containers.all():
            if e.state(rec) in ("exited", "created"):
                e.remove(rec, force=True)
                gone.append(rec["id"])
        return gone
    await req.send_json(200, {"ContainersDeleted": await blocking(go), "SpaceReclaimed": 0})


# -- archive: docker cp -----------------------------------------------------------------------------

def _cli(*args: str) -> list[str]:
    import sys
    return [sys.executable, "-m", "kobako.cli.main", *args]


def _path_stat(member) -> str:
    """X-Docker-Container-Path-Stat: base64 JSON with Go's FileMode bits, as dockerd sends it."""
    import base64
    import time
    mode = member.mode & 0o7777
    if member.isdir():
        mode |= 1 << 31
    elif member.issym():
        mode |= 1 << 27
    st = {"name": os.path.basename(member.name.rstrip("/")) or "/", "size": member.size, "mode": mode,
          "mtime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(member.mtime)),
          "linkTarget": member.linkname if member.issym() else ""}
    return base64.b64encode(json.dumps(st).encode()).decode()


@route("GET", "/containers/{id}/archive")
async def archive_get(req: Request) -> None:
    """A tar of PATH in the container, through `kobako cp C:PATH -` (its hostile-path rules
    included); the first member's header gives the stat header, sent before the body."""
    import io
    import tarfile

    e, rec = container(req)
    path = req.query.get("path")
    if not path:
        raise ApiError(400, "path is required")
    p = await asyncio.create_subprocess_exec(*_cli("cp", f"{rec['id']}:{path}", "-"),
                                             stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    head = b""
    member = None
    while member is None:
        chunk = await p.stdout.read(65536)
        if not chunk:
            break
        head += chunk
        try:
            with tarfile.open(fileobj=io.BytesIO(head), mode="r|") as t:
                member = t.next()
        except (tarfile.ReadError, EOFError):
            continue
    if member is None:
        err = (await p.stderr.read()).decode().strip().removeprefix("Error: ")
        await p.wait()
        raise ApiError(404, err or f"Could not find the file {path} in container {rec['name']}")
    hs = req._headers([("Content-Type", "application/x-tar"),
                       ("X-Docker-Container-Path-Stat", _path_stat(member))])
    import h11
    req.answered = True
    if req.method == "HEAD":
        p.kill()
        await p.wait()
        await req.conn.write(h11.Response(status_code=200, headers=hs + [("Content-Length", "0")]))
        await req.conn.write(h11.EndOfMessage())
        return
    await req.conn.write(h11.Response(status_code=200, headers=hs))
    await req.chunk(head)
    await req.stream_from(p.stdout)
    await p.wait()


@route("PUT", "/containers/{id}/archive")
async def archive_put(req: Request) -> None:
    """Extract the body (a tar) into the directory PATH of the container."""
    e, rec = container(req)
    path = req.query.get("path")
    if not path:
        raise ApiError(400, "path is required")
    req.body_file.seek(0)
    p = await asyncio.create_subprocess_exec(*_cli("cp", "-", f"{rec['id']}:{path}"),
                                             stdin=req.body_file, stdout=asyncio.subprocess.DEVNULL,
                                             stderr=asyncio.subprocess.PIPE)
    _, err = await p.communicate()
    if p.returncode:
        msg = err.decode().strip().removeprefix("Error: ")
        raise ApiError(404 if "no such" in msg else 400, msg or "copy into the container failed")
    await req.send(200)


@route("GET", "/containers/{id}/export")
async def export(req: Request) -> None:
    e, rec = container(req)
    p = await asyncio.create_subprocess_exec(*_cli("export", rec["id"]), stdout=asyncio.subprocess.PIPE,
                                             stderr=asyncio.subprocess.PIPE)
    await req.stream_start(200, "application/x-tar")
    await req.stream_from(p.stdout)
    await p.wait()


@route("GET", "/containers/{id}/changes")
async def changes(req: Request) -> None:
    e, rec = container(req)
    p = await asyncio.create_subprocess_exec(*_cli("diff", rec["id"]), stdout=asyncio.subprocess.PIPE,
                                             stderr=asyncio.subprocess.PIPE)
    out, err = await p.communicate()
    if p.returncode:
        raise ApiError(500, err.decode().strip())
    kinds = {"C": 0, "A": 1, "D": 2}
    docs = [{"Path": ln[2:], "Kind": kinds.get(ln[:1], 0)}
            for ln in out.decode().splitlines() if ln[1:2] == " "]
    await req.send_json(200, docs)


# -- stats ------------------------------------------------------------------------------------------

def _stats_doc(e, rec: dict, pre: dict | None) -> dict:
    """Docker's stats JSON from the container's cgroup (cpu in ns, memory in bytes)."""
    import time

    from kobako.cli.host import _cgroup_stats
    data = _cgroup_stats(e, rec) or {}
    cpu = (data.get("cpu") or {}).get("usage", {})
    mem = (data.get("memory") or {}).get("usage", {})
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:8]
    hz = os.sysconf("SC_CLK_TCK")
    system_ns = sum(int(x) for x in fields) * 1_000_000_000 // hz
    limit = mem.get("limit", 0)
    if not limit or limit >= 1 << 60:
        limit = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    now = time.time()
    doc = {"read": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e9):09d}Z",
           "name": "/" + rec["name"], "id": rec["id"],
           "pids_stats": {"current": (data.get("pids") or {}).get("current", 0)},
           "cpu_stats": {"cpu_usage": {"total_usage": cpu.get("total", 0),
                                       "usage_in_kernelmode": cpu.get("kernel", 0),
                                       "usage_in_usermode": cpu.get("user", 0)},
                         "system_cpu_usage": system_ns, "online_cpus": os.cpu_count() or 1,
                         "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}},
           "memory_stats": {"usage": mem.get("usage", 0), "max_usage": mem.get("max", 0), "limit": limit,
                            "stats": {}},
           "blkio_stats": {}, "networks": {}}
    if rec.get("pid") and (rec.get("net") or {}).get("mode") not in (None, "host"):
        from kobako.cli.host import net_io
        doc["networks"] = net_io(int(rec["pid"]))
    zero = {"cpu_usage": {"total_usage": 0}, "system_cpu_usage": 0, "online_cpus": os.cpu_count() or 1}
    doc["precpu_stats"] = (pre or {}).get("cpu_stats") or zero
    doc["preread"] = (pre or {}).get("read", "0001-01-01T00:00:00Z")
    return doc


@route("GET", "/containers/{id}/stats")
async def stats(req: Request) -> None:
    e, rec = container(req)
    stream = req.flag("stream", True) and not req.flag("one-shot")
    await req.stream_start(200, "application/json")
    pre = None
    if not stream and not req.flag("one-shot"):  # docker stats --no-stream: a CPU % needs two samples
        pre = await blocking(_stats_doc, e, rec, None)
        await asyncio.sleep(1)
    while True:
        doc = await blocking(_stats_doc, e, rec, pre)
        await req.chunk(json.dumps(doc).encode() + b"\n")
        if not stream or e.state(e.containers.get(rec["id"]) or rec) not in ("running", "paused"):
            break
        pre = doc
        await asyncio.sleep(1)
    await req.stream_end()
