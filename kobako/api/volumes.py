"""/volumes/...: the same store and checks as `kobako volume`."""

from __future__ import annotations

from kobako.api.server import ApiError, Request, blocking, engine, route


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
