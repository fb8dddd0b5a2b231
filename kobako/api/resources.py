"""/networks/... and /volumes/...: the same stores and checks as `kobako network` and
`kobako volume`; and the container odds and ends (top, pause, unpause, rename, events,
prune) that need nothing more than the engine's own calls."""

from __future__ import annotations

import asyncio
import json
import os

from kobako.api.server import ApiError, Request, blocking, container, engine, route


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
                if wanted(x):
                    await req.chunk(line + b"\n")
        if (until is not None and time.time() > until) or gone.done():
            break
        await asyncio.wait([gone], timeout=0.1)
    gone.cancel()
    await asyncio.gather(gone, return_exceptions=True)  # its read must end before the next request's
    await req.stream_end()


@route("POST", "/build")
async def build(req: Request) -> None:
    raise ApiError(501, "kobako does not build images from a Dockerfile yet (import, commit and load work)")


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


@route("GET", "/system/df")
async def system_df(req: Request) -> None:
    """docker system df: images, containers and volumes with their sizes."""
    e = engine()

    def df() -> dict:
        from kobako.cli.volumes import inspect_doc
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
        vols = [{**inspect_doc(v), "UsageData": {
            "Size": dir_size(vs.mountpoint(v["Name"]), allocated=True),
            "RefCount": 1 if v["Name"] in users else 0}} for v in vs.list()]
        return {"LayersSize": layers, "Images": imgs, "Containers": conts, "Volumes": vols, "BuildCache": []}
    await req.send_json(200, await blocking(df))


@route("POST", "/images/prune")
async def images_prune(req: Request) -> None:
    from kobako.image.gc import prune_images
    e = engine()
    flt = json.loads(req.query.get("filters") or "{}")
    dangling = (flt.get("dangling") or ["true"])
    every = isinstance(dangling, list) and dangling[0] in ("false", "0")
    lines, freed = await blocking(lambda: prune_images(e, all_images=every))
    ids = [ln.rsplit(" ", 1)[-1] for ln in lines]
    await req.send_json(200, {"ImagesDeleted": [{"Deleted": i} for i in ids], "SpaceReclaimed": freed})


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
        from kobako.cli.main import describe
        raise ApiError(401, describe(ex)) from None
    await req.send_json(200, {"Status": "Login Succeeded", "IdentityToken": ""})
