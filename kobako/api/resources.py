"""/networks/... and /volumes/...: the same stores and checks as `kobako network` and
`kobako volume`; and the container odds and ends (top, pause, unpause, rename, events,
prune) that need nothing more than the engine's own calls."""

from __future__ import annotations

import asyncio
import json
import os

from kobako.api.server import ApiError, Request, blocking, engine, route


def _net(e, name: str) -> dict:
    from kobako.network.networks import NetworkError, NetworkStore
    try:
        return NetworkStore(e.root, e.run_dir).get(name)
    except NetworkError:
        raise ApiError(404, f"network {name} not found") from None


# -- networks -----------------------------------------------------------------------------------

@route("GET", "/networks")
async def networks(req: Request) -> None:
    from kobako.cli.networks import MODES, _pseudo, doc
    from kobako.network.networks import DEFAULT, NetworkStore
    e = engine()

    def docs() -> list[dict]:
        store = NetworkStore(e.root, e.run_dir)
        store.get(DEFAULT)
        return [doc(e, n) for n in store.all()] + [_pseudo(m) for m in MODES]
    out = await blocking(docs)
    flt = json.loads(req.query.get("filters") or "{}")
    for name in flt.get("name") or []:
        out = [d for d in out if name in d["Name"]]
    for label in flt.get("label") or []:
        k, _, v = label.partition("=")
        out = [d for d in out if k in d["Labels"] and (not v or d["Labels"][k] == v)]
    await req.send_json(200, out)


@route("GET", "/networks/{id}")
async def network_inspect(req: Request) -> None:
    from kobako.cli.networks import MODES, _pseudo, doc
    e = engine()
    name = req.params["id"]
    await req.send_json(200, _pseudo(name) if name in MODES else await blocking(doc, e, _net(e, name)))


@route("POST", "/networks/create")
async def network_create(req: Request) -> None:
    from kobako.network.networks import NetworkError, NetworkStore
    body = req.json()
    if not body.get("Name"):
        raise ApiError(400, "network name is required")
    if body.get("Driver") not in (None, "", "bridge"):
        raise ApiError(400, f"network driver {body['Driver']!r} is not supported (bridge)")
    cfg = ((body.get("IPAM") or {}).get("Config") or [{}])[0] or {}
    e = engine()
    try:
        n = await blocking(lambda: NetworkStore(e.root, e.run_dir).create(
            body["Name"], cfg.get("Subnet"), cfg.get("Gateway"), cfg.get("IPRange"),
            internal=bool(body.get("Internal")), options=body.get("Options") or {},
            labels=body.get("Labels") or {}))
    except NetworkError as ex:
        raise ApiError(409 if "exists" in str(ex) else 400, str(ex)) from None
    await req.send_json(201, {"Id": n["id"], "Warning": ""})


@route("DELETE", "/networks/{id}")
async def network_rm(req: Request) -> None:
    from kobako.cli.networks import users
    from kobako.network.networks import NetworkError, NetworkStore
    e = engine()
    n = _net(e, req.params["id"])

    def go() -> None:
        NetworkStore(e.root, e.run_dir).remove(n["name"], [r["name"] for r in users(e, n["name"])])
        from kobako.network.endpoints import Endpoints
        Endpoints(e.root, e.run_dir).reap_idle()
    try:
        await blocking(go)
    except NetworkError as ex:
        raise ApiError(409 if "in use" in str(ex) else 403, str(ex)) from None


@route("POST", "/networks/{id}/connect")
async def network_connect(req: Request) -> None:
    from kobako.cli import networks as cli
    from kobako.cli.parser import Args
    body = req.json()
    ep = body.get("EndpointConfig") or {}
    ip = ((ep.get("IPAMConfig") or {}).get("IPv4Address")) or None
    e = engine()
    n = _net(e, req.params["id"])
    args = Args({"ip": ip, "alias": list(ep.get("Aliases") or [])}, [n["name"], body.get("Container", "")])
    await blocking(cli.connect, e, args)
    await req.send(200)


@route("POST", "/networks/{id}/disconnect")
async def network_disconnect(req: Request) -> None:
    from kobako.cli import networks as cli
    from kobako.cli.parser import Args
    body = req.json()
    e = engine()
    n = _net(e, req.params["id"])
    args = Args({"force": bool(body.get("Force"))}, [n["name"], body.get("Container", "")])
    await blocking(cli.disconnect, e, args)
    await req.send(200)


@route("POST", "/networks/prune")
async def network_prune(req: Request) -> None:
    from kobako.cli.networks import prune_networks
    e = engine()
    await req.send_json(200, {"NetworksDeleted": await blocking(prune_networks, e)})


# -- volumes ------------------------------------------------------------------------------------

def _vols(e):
    from kobako.storage.volumes import VolumeStore
    return VolumeStore(e.root)


@route("GET", "/volumes")
async def volumes(req: Request) -> None:
    from kobako.cli.volumes import inspect_doc
    e = engine()
    vols = await blocking(lambda: [inspect_doc(v) for v in _vols(e).list()])
    await req.send_json(200, {"Volumes": vols, "Warnings": []})


@route("POST", "/volumes/create")
async def volume_create(req: Request) -> None:
    from kobako.cli.volumes import inspect_doc
    body = req.json()
    if body.get("Driver") not in (None, "", "local"):
        raise ApiError(400, f"volume driver {body['Driver']!r} is not supported (local)")
    e = engine()
    vol = await blocking(lambda: _vols(e).create(body.get("Name") or None, body.get("Labels") or {},
                                                 body.get("DriverOpts") or {}))
    await req.send_json(201, inspect_doc(vol))


@route("GET", "/volumes/{name}")
async def volume_inspect(req: Request) -> None:
    from kobako.cli.volumes import inspect_doc
    from kobako.storage.volumes import VolumeError
    e = engine()
    try:
        await req.send_json(200, inspect_doc(await blocking(_vols(e).get, req.params["name"])))
    except VolumeError as ex:
        raise ApiError(404, str(ex)) from None


@route("DELETE", "/volumes/{name}")
async def volume_rm(req: Request) -> None:
    from kobako.storage.volumes import VolumeError, VolumeStore
    e = engine()
    name = req.params["name"]
    store = _vols(e)
    try:
        await blocking(store.get, name)
    except VolumeError as ex:
        raise ApiError(404, str(ex)) from None
    try:
        users = VolumeStore.users(e.containers.all(), name)
        await blocking(lambda: store.remove(name, users, force=req.flag("force")))
    except VolumeError as ex:
        raise ApiError(409, str(ex)) from None


@route("POST", "/volumes/prune")
async def volume_prune(req: Request) -> None:
    from kobako.storage.volumes import VolumeStore
    e = engine()
    removed, freed = await blocking(lambda: _vols(e).prune(VolumeStore.in_use(e.containers.all())))
    await req.send_json(200, {"VolumesDeleted": removed, "SpaceReclaimed": freed})


# -- containers: the rest -------------------------------------------------------------------------

@route("POST", "/containers/{id}/pause")
async def pause(req: Request) -> None:
    from kobako.api.containers import _rec
    e = engine()
    rec = _rec(e, req.params["id"])
    if e.state(rec) != "running":
        raise ApiError(409, f"Container {rec['id']} is not running")
    await blocking(e.pause, rec)


@route("POST", "/containers/{id}/unpause")
async def unpause(req: Request) -> None:
    from kobako.api.containers import _rec
    e = engine()
    rec = _rec(e, req.params["id"])
    if e.state(rec) != "paused":
        raise ApiError(409, f"Container {rec['id']} is not paused")
    await blocking(e.unpause, rec)


@route("POST", "/containers/{id}/rename")
async def rename(req: Request) -> None:
    from kobako.api.containers import _rec
    e = engine()
    rec = _rec(e, req.params["id"])
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

    from kobako.api.containers import _rec
    e = engine()
    rec = _rec(e, req.params["id"])
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


@route("GET", "/events")
async def events(req: Request) -> None:
    """The engine's event log as a stream: past events from `since`, then live until `until`
    or the client goes."""
    import time

    from kobako.engine import events as ev
    from kobako.engine.logs import parse_since
    e = engine()
    try:
        since = parse_since(req.query["since"]) if req.query.get("since") else None
        until = parse_since(req.query["until"]) if req.query.get("until") else None
        flt = json.loads(req.query.get("filters") or "{}")
    except ValueError as ex:
        raise ApiError(400, f"invalid events query: {ex}") from None
    path = ev.path(e.root)
    await req.stream_start(200, "application/json")
    offset = 0 if since is not None else (os.path.getsize(path) if os.path.exists(path) else 0)
    buf = b""

    def wanted(x: dict) -> bool:
        if since is not None and x.get("time", 0) < since or until is not None and x.get("time", 0) > until:
            return False
        for k, vals in flt.items():
            got = {"type": x.get("Type"), "event": x.get("Action"), "container": x.get("id"),
                   "image": x.get("from")}.get(k)
            if k == "container":
                name = (x.get("Actor") or {}).get("Attributes", {}).get("name")
                if not any(v in (got, name) or (got or "").startswith(v) for v in vals):
                    return False
            elif got is not None and got not in vals:
                return False
        return True

    gone = asyncio.ensure_future(req.conn.reader.read(1))  # completes when the client hangs up
    while (until is None or time.time() <= until) and not gone.done():
        if os.path.exists(path) and os.path.getsize(path) > offset:
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read()
            offset += len(data)
            buf += data
            *lines, buf = buf.split(b"\n")
            for line in lines:
                try:
                    x = json.loads(line)
                except ValueError:
                    continue
                if wanted(x):
                    await req.chunk(line + b"\n")
        await asyncio.wait([gone], timeout=0.1)
    gone.cancel()
    await asyncio.gather(gone, return_exceptions=True)  # its read must end before the next request's
    await req.stream_end()


@route("POST", "/build")
async def build(req: Request) -> None:
    raise ApiError(501, "kobako does not build images from a Dockerfile yet (import, commit and load work)")
