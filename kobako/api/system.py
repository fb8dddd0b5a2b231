"""/_ping, /version, /info, /events, /system/df, /auth."""

from __future__ import annotations

import asyncio
import json
import os
import platform

from kobako import __version__
from kobako.api.server import API_VERSION, MIN_API_VERSION, ApiError, Request, blocking, engine, route


@route("GET", "/_ping")
async def ping(req: Request) -> None:
    await req.send(200, b"OK")


@route("POST", "/_ping")  # an old client's probe
async def ping_post(req: Request) -> None:
    await req.send(200, b"OK")


@route("GET", "/version")
async def version(req: Request) -> None:
    u = os.uname()
    await req.send_json(200, {
        "Platform": {"Name": "kobako"}, "Version": __version__, "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION, "GitCommit": "", "GoVersion": f"python{platform.python_version()}",
        "Os": "linux", "Arch": {"x86_64": "amd64", "aarch64": "arm64"}.get(u.machine, u.machine),
        "KernelVersion": u.release, "BuildTime": "",
        "Components": [{"Name": "Engine", "Version": __version__, "Details": {"ApiVersion": API_VERSION}}]})


@route("GET", "/info")
async def info(req: Request) -> None:
    from kobako.engine.views import system_info
    await req.send_json(200, await blocking(system_info, engine()))


@route("GET", "/events")
async def events(req: Request) -> None:
    """The engine's event log as a stream: past events from `since`, then live until `until`
    or the client goes."""
    import time

    from kobako.engine import events as ev
    from kobako.engine import filters
    from kobako.engine.logs import parse_since
    e = engine()
    try:
        since = parse_since(req.query["since"]) if req.query.get("since") else None
        until = parse_since(req.query["until"]) if req.query.get("until") else None
    except ValueError as ex:
        raise ApiError(400, f"invalid events query: {ex}") from None
    flt = filters.from_json(req.query.get("filters"), ev.FILTERS)
    path = ev.path(e.root)
    await req.stream_start(200, "application/json")
    offset = 0 if since is not None else (os.path.getsize(path) if os.path.exists(path) else 0)
    buf = b""

    gone = asyncio.ensure_future(req.conn.reader.read(1))  # completes when the client hangs up
    while True:  # one pass at least: an `until` already past still gets what was logged before it
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
                if ev.matches(x, flt, since, until):
                    await req.chunk(line + b"\n")
        if (until is not None and time.time() > until) or gone.done():
            break
        await asyncio.wait([gone], timeout=0.1)
    gone.cancel()
    await asyncio.gather(gone, return_exceptions=True)  # its read must end before the next request's
    await req.stream_end()


@route("GET", "/system/df")
async def system_df(req: Request) -> None:
    """docker system df: images, containers and volumes with their sizes."""
    e = engine()

    def df() -> dict:
        from kobako.engine.views import volume_doc
        from kobako.image.reference import familiar
        from kobako.paths import dir_size
        from kobako.storage.volumes import VolumeStore
        recs = e.containers.all()
        imgs = []
        layers = 0
        for r in e.images.all():
            size = sum(e.snapshots.size(c) for c in r.get("chainIds", []))
            layers += size
            imgs.append({"Id": r["id"], "RepoTags": [familiar(n) for n in r.get("names", [])], "Size": size,
                         "SharedSize": -1, "VirtualSize": size, "Created": 0, "Labels": {},
                         "Containers": sum(1 for c in recs if c.get("image") == r["id"]), "ParentId": "",
                         "RepoDigests": []})
        conts = [{"Id": c["id"], "Names": ["/" + c["name"]], "Image": c.get("imageName", ""),
                  "ImageID": c.get("image", ""),
                  "Command": " ".join((c.get("options") or {}).get("command") or []),
                  "Created": 0, "State": e.state(c), "Status": e.state(c), "Labels": c.get("labels") or {},
                  "SizeRw": dir_size(e.containers.path(c["id"], "upper"), allocated=True), "SizeRootFs": 0,
                  "Mounts": []} for c in recs]
        vs = VolumeStore(e.root)
        users = vs.in_use(recs)
        vols = [{**volume_doc(v), "UsageData": {
            "Size": dir_size(vs.mountpoint(v["Name"]), allocated=True),
            "RefCount": 1 if v["Name"] in users else 0}} for v in vs.list()]
        return {"LayersSize": layers, "Images": imgs, "Containers": conts, "Volumes": vols, "BuildCache": []}
    await req.send_json(200, await blocking(df))


@route("POST", "/auth")
async def auth(req: Request) -> None:
    body = req.json()
    server = (body.get("serveraddress") or "docker.io").removeprefix("https://").removeprefix("http://")
    server = server.rstrip("/")
    if server in ("index.docker.io/v1", "index.docker.io"):
        server = "docker.io"

    def login() -> None:
        from kobako.image import auth as a
        from kobako.image.registry import Client
        user, password = body.get("username", ""), body.get("password", "")
        Client(server, credentials=(user, password)).ping()
        a.store(server, user, password)
    try:
        await blocking(login)
    except Exception as ex:  # noqa: BLE001 - dockerd answers 401 with the registry's words
        from kobako.errors import describe
        raise ApiError(401, describe(ex)) from None
    await req.send_json(200, {"Status": "Login Succeeded", "IdentityToken": ""})
