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
    from kobako.cli.images import tag as cli_tag
    from kobako.cli.parser import Args
    await blocking(cli_tag, e, Args({}, [rec["id"], target]))  # the CLI's checks, names and event
    await req.send(201)


async def _import(req: Request) -> None:
    """docker import: the tarball came as the body (spooled to a file by the server)."""
    if req.query.get("fromSrc") != "-" or req.body_file is None:
        raise ApiError(400, "import from a URL is not supported: send the tarball as the body (fromSrc=-)")
    names = []
    if req.query.get("repo"):
        from kobako.image import reference
        tag = req.query.get("tag")
        names = [str(reference.parse(f"{req.query['repo']}:{tag}" if tag else req.query["repo"]))]
    changes = req.query.get("changes")
    e = engine()

    def go() -> dict:
        from kobako.cli.images import parse_changes
        from kobako.image.build import import_source
        from kobako.image.gc import undo_on_failure
        from kobako.image.unpack import gc_shield
        req.body_file.seek(0)
        path = f"/proc/self/fd/{req.body_file.fileno()}"
        cfg = parse_changes([changes] if changes else [], {})
        with undo_on_failure(e), gc_shield(e.root):
            return import_source(e.images, e.snapshots, path, names, cfg, req.query.get("message") or "")
    await req.stream_start(200, "application/json")
    try:
        rec = await blocking(go)
        await req.chunk(json.dumps({"status": rec["id"]}).encode() + b"\r\n")
    except Exception as ex:  # noqa: BLE001 - in the stream, as dockerd
        from kobako.errors import describe
        msg = describe(ex)
        await req.chunk(json.dumps({"errorDetail": {"message": msg}, "error": msg}).encode())
    await req.stream_end()


@route("POST", "/images/load")
async def load(req: Request) -> None:
    e = engine()

    def go() -> list[str]:
        from kobako.image import archive
        from kobako.image.gc import undo_on_failure
        req.body_file.seek(0)
        with undo_on_failure(e):
            return archive.load(e.images, e.snapshots, req.body_file)
    from kobako.image.reference import familiar, looks_like_id
    names = await blocking(go)
    lines = [f"Loaded image ID: {n}\n" if looks_like_id(n) else f"Loaded image: {familiar(n)}\n"
             for n in names]
    out = b"".join(json.dumps({"stream": ln}).encode() + b"\r\n" for ln in lines)
    await req.send(200, out, "application/json")


@route("GET", "/images/get")
async def save(req: Request) -> None:
    """docker save: the archive streams out as it is written (a pipe between a thread and us)."""
    await _save(req, req.query_all.get("names") or [])


@route("GET", "/images/{name*}/get")
async def save_one(req: Request) -> None:
    await _save(req, [req.params["name"]])


async def _save(req: Request, names: list[str]) -> None:
    import asyncio
    import os

    from kobako.cli.images import _archive_targets
    from kobako.image import archive
    e = engine()
    if not names:
        raise ApiError(400, "no image names (?names=)")
    targets = await blocking(_archive_targets, e, names)
    r, w = os.pipe()

    def write() -> None:
        with open(w, "wb") as f:
            archive.save(e.images, targets, f)
    await req.stream_start(200, "application/x-tar")
    job = asyncio.get_running_loop().run_in_executor(None, write)
    with open(r, "rb", buffering=0) as f:
        while True:
            data = await blocking(f.read, 1 << 20)
            if not data:
                break
            await req.chunk(data)
    await job
    await req.stream_end()


@route("POST", "/images/create")
async def pull(req: Request) -> None:
    if req.query.get("fromSrc"):
        await _import(req)
        return
    name = req.query.get("fromImage")
    if not name:
        raise ApiError(400, "fromImage or fromSrc is required")
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
        from kobako.errors import describe
        msg = describe(e)
        await req.chunk(json.dumps({"errorDetail": {"message": msg}, "error": msg}).encode() + b"\r\n")
    await req.stream_end()


@route("GET", "/images/{name*}/history")
async def history(req: Request) -> None:
    e = engine()
    rec = _img(e, req.params["name"])

    def rows() -> list[dict]:
        from kobako.cli.images import history_entries
        from kobako.engine.logs import parse_time
        out = []
        for i, (h, size) in enumerate(history_entries(e, rec)):
            try:
                created = int(parse_time(h.get("created") or ""))
            except (ValueError, TypeError):
                created = 0
            out.append({"Id": rec["id"] if i == 0 else "<missing>", "Created": created,
                        "CreatedBy": h.get("created_by", ""),
                        "Tags": rec.get("names", []) if i == 0 else None,
                        "Size": size, "Comment": h.get("comment", "")})
        return out
    await req.send_json(200, await blocking(rows))


@route("POST", "/images/{name*}/push")
async def push(req: Request) -> None:
    """Push with dockerd's JSON lines; credentials from X-Registry-Auth (base64 JSON) or the
    stored logins."""
    import base64

    from kobako.image import reference
    e = engine()
    name = req.params["name"] + (f":{req.query['tag']}" if req.query.get("tag") else "")
    rec = _img(e, name)
    creds = None
    hdr = req.headers.get("x-registry-auth")
    if hdr:
        try:
            a = json.loads(base64.urlsafe_b64decode(hdr + "=" * (-len(hdr) % 4)))
            if a.get("username"):
                creds = (a["username"], a.get("password", ""))
        except ValueError:
            raise ApiError(400, "X-Registry-Auth is not base64 JSON") from None
    ref = reference.parse(name)
    await req.stream_start(200, "application/json")
    await req.chunk(json.dumps({"status": f"The push refers to repository [{ref.name}]"}).encode() + b"\r\n")

    def go() -> str:
        from kobako.image.registry import Client, push_image
        client = Client(ref.domain, credentials=creds) if creds else Client(ref.domain)
        digest = push_image(client, ref.path, ref.tag or "latest", e.images, rec)
        e.images.add({"id": rec["id"]}, [], [f"{ref.name}@{digest}"])
        return digest
    try:
        digest = await blocking(go)
        size = rec["manifest"]["size"]
        done = {"status": f"{ref.tag or 'latest'}: digest: {digest} size: {size}"}
        aux = {"progressDetail": {}, "aux": {"Tag": ref.tag or "latest", "Digest": digest, "Size": size}}
        await req.chunk(json.dumps(done).encode() + b"\r\n" + json.dumps(aux).encode() + b"\r\n")
    except Exception as ex:  # noqa: BLE001 - in the stream, as dockerd
        from kobako.errors import describe
        msg = describe(ex)
        await req.chunk(json.dumps({"errorDetail": {"message": msg}, "error": msg}).encode() + b"\r\n")
    await req.stream_end()


@route("GET", "/images/search")
async def search(req: Request) -> None:
    raise ApiError(501, "image search is not supported: kobako talks to registries by name only")


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


@route("POST", "/build")
async def build(req: Request) -> None:
    raise ApiError(501, "kobako does not build images from a Dockerfile yet (import, commit and load work)")
