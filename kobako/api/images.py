"""/images/...: list, inspect, remove, tag, and create (= pull, with Docker's JSON progress
lines)."""

from __future__ import annotations

import json

from kobako.api.server import ApiError, Request, blocking, engine, route


def _img(e, ref: str) -> dict:
    from kobako.image.store import ImageNotFound
    try:
        return e.images.resolve(ref)
    except ImageNotFound:
        raise ApiError(404, f"No such image: {ref}") from None


@route("GET", "/images/json")
async def ls(req: Request) -> None:
    from kobako.image.reference import familiar
    e = engine()

    def rows() -> list[dict]:
        out = []
        for rec in e.images.all():
            from kobako.engine.logs import parse_time
            try:
                created = int(parse_time(rec.get("created") or ""))
            except (ValueError, TypeError):
                created = 0
            out.append({"Id": rec["id"], "ParentId": "",
                        "RepoTags": [familiar(n) for n in rec.get("names", [])],
                        "RepoDigests": [familiar(d) for d in rec.get("repoDigests", [])], "Created": created,
                        "Size": rec.get("size", 0), "VirtualSize": rec.get("size", 0), "SharedSize": -1,
                        "Labels": {}, "Containers": -1})
        return out
    await req.send_json(200, await blocking(rows))


@route("GET", "/images/{name*}/json")
async def inspect(req: Request) -> None:
    from kobako.cli.images import inspect_doc
    e = engine()
    rec = _img(e, req.params["name"])
    await req.send_json(200, await blocking(inspect_doc, e, rec))


@route("DELETE", "/images/{name*}")
async def remove(req: Request) -> None:
    from kobako.image.gc import remove_image
    e = engine()
    _img(e, req.params["name"])
    lines = await blocking(lambda: remove_image(e, req.params["name"], force=req.flag("force")))
    out = []
    for ln in lines or []:
        k, _, v = str(ln).partition(": ")
        out.append({"Untagged" if k.lower().startswith("untag") else "Deleted": v or ln})
    await req.send_json(200, out)


@route("POST", "/images/{name*}/tag")
async def tag(req: Request) -> None:
    e = engine()
    rec = _img(e, req.params["name"])
    repo = req.query.get("repo")
    if not repo:
        raise ApiError(400, "repo is required")
    target = f"{repo}:{req.query['tag']}" if req.query.get("tag") else repo
    await blocking(lambda: e.images.tag(rec["id"], target))
    await req.send(201)


@route("POST", "/images/create")
async def pull(req: Request) -> None:
    name = req.query.get("fromImage")
    if not name:
        raise ApiError(400, "fromImage is required (importing with fromSrc is not supported yet)")
    tag = req.query.get("tag")
    if tag:
        name = f"{name}@{tag}" if tag.startswith("sha256:") else f"{name}:{tag}"
    await req.stream_start(200, "application/json")
    await req.chunk(json.dumps({"status": f"Pulling from {name}"}).encode() + b"\r\n")

    def go() -> dict:
        from kobako.cli.containers import _pull
        return _pull(engine(), name, True, req.query.get("platform") or None)
    try:
        rec = await blocking(go)
        await req.chunk(json.dumps({"status": f"Digest: {rec.get('digest', rec['id'])}"}).encode() + b"\r\n")
        done = {"status": f"Status: Downloaded newer image for {name}"}
        await req.chunk(json.dumps(done).encode() + b"\r\n")
    except Exception as e:  # noqa: BLE001 - a pull error travels in the stream, as dockerd sends it
        from kobako.cli.main import describe
        msg = describe(e)
        await req.chunk(json.dumps({"errorDetail": {"message": msg}, "error": msg}).encode() + b"\r\n")
    await req.stream_end()
