"""/volumes/...: the engine's volume calls (engine/volumes.py), as `kobako volume` makes them;
documents from engine/views.py."""

from __future__ import annotations

from kobako.api.server import ApiError, Request, blocking, engine, route


@route("GET", "/volumes")
async def volumes(req: Request) -> None:
    from kobako.engine import filters
    from kobako.engine import volumes as vols
    from kobako.engine.views import volume_doc
    e = engine()
    flt = filters.from_json(req.query.get("filters"), vols.FILTERS)
    docs = await blocking(lambda: [volume_doc(v) for v in vols.listing(e, flt)])
    await req.send_json(200, {"Volumes": docs, "Warnings": None})


@route("POST", "/volumes/create")
async def volume_create(req: Request) -> None:
    from kobako.engine import volumes as vols
    from kobako.engine.views import volume_doc
    body = req.json()
    for k in ("Name", "Driver"):
        if body.get(k) is not None and not isinstance(body[k], str):
            raise ApiError(400, f"invalid {k}: expected a string")
    e = engine()
    vol = await blocking(lambda: vols.create(e, body.get("Name") or None, body.get("Driver") or None,
                                             body.get("Labels"), body.get("DriverOpts")))
    await req.send_json(201, volume_doc(vol))


@route("GET", "/volumes/{name}")
async def volume_inspect(req: Request) -> None:
    from kobako.engine import volumes as vols
    from kobako.engine.views import volume_doc
    e = engine()
    await req.send_json(200, volume_doc(await blocking(vols.store(e).get, req.params["name"])))


@route("DELETE", "/volumes/{name}")
async def volume_rm(req: Request) -> None:
    from kobako.engine import volumes as vols
    e = engine()
    name = req.params["name"]
    if not req.flag("force"):
        await blocking(vols.store(e).get, name)  # 404 before anything else, as dockerd
    await blocking(lambda: vols.remove(e, name, force=req.flag("force")))


@route("POST", "/volumes/prune")
async def volume_prune(req: Request) -> None:
    """dockerd 20.10 (API 1.41) prunes every unused volume, named or not; newer ones only
    anonymous volumes unless the `all` filter says so. kobako speaks 1.41."""
    from kobako.engine import filters
    from kobako.engine import volumes as vols
    e = engine()
    flt = filters.from_json(req.query.get("filters"), vols.PRUNE_FILTERS)
    every = req.version is None or tuple(int(x) for x in req.version.split(".")) < (1, 42)
    removed, freed = await blocking(lambda: vols.prune(e, flt, all_volumes=every))
    await req.send_json(200, {"VolumesDeleted": removed or None, "SpaceReclaimed": freed})
