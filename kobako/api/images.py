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
    """One row per image; `filter` (API < 1.25) is a reference pattern; only_ids is the
    client's business (docker-py asks for Id only), dockerd sends whole rows."""
    from kobako.engine import filters
    from kobako.engine import images as engine_images
    e = engine()
    flt = filters.from_json(req.query.get("filters"), engine_images.FILTERS)
    if req.query.get("filter"):
        flt.setdefault("reference", []).append(req.query["filter"])
    await req.send_json(200, await blocking(engine_images.summaries, e, flt))


@route("GET", "/images/{name*}/json")
async def inspect(req: Request) -> None:
    from kobako.engine.views import image_doc
    e = engine()
    rec = _img(e, req.params["name"])
    await req.send_json(200, await blocking(image_doc, e, rec))


@route("DELETE", "/images/{name*}")
async def remove(req: Request) -> None:
    from kobako.image.gc import remove_image
    e = engine()
    _img(e, req.params["name"])
    lines = await blocking(lambda: remove_image(e, req.params["name"], force=req.flag("force"),
                                                          prune=not req.flag("noprune")))
    out = []
    for ln in lines or []:
        k, _, v = str(ln).partition(": ")
        out.append({"Untagged" if k == "Untagged" else "Deleted": v})
    await req.send_json(200, out)


@route("POST", "/images/{name*}/tag")
async def tag(req: Request) -> None:
    e = engine()
    rec = _img(e, req.params["name"])
    repo = req.query.get("repo")
    if not repo:
        raise ApiError(400, "repo is required")
    target = f"{repo}:{req.query['tag']}" if req.query.get("tag") else repo
    from kobako.engine.images import tag as engine_tag
    await blocking(engine_tag, e, rec["id"], target)
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
    changes = req.query_all.get("changes") or []  # repeated: changes=USER x&changes=CMD ["y"]
    want = _platform_query(req)
    e = engine()

    def go() -> dict:
        from kobako.image.build import import_source
        from kobako.image.changes import apply
        from kobako.image.gc import undo_on_failure
        from kobako.image.unpack import gc_shield
        req.body_file.seek(0)
        path = f"/proc/self/fd/{req.body_file.fileno()}"
        cfg = apply(changes, {})
        with undo_on_failure(e), gc_shield(e.root):
            return import_source(e.images, e.snapshots, path, names, cfg, req.query.get("message") or "",
                                 want)
    await req.stream_start(200, "application/json")
    try:
        rec = await blocking(go)
        await req.chunk(json.dumps({"status": rec["id"]}).encode() + b"\r\n")
    except Exception as ex:  # noqa: BLE001 - in the stream, as dockerd
        from kobako.errors import describe
        msg = describe(ex)
        await req.chunk(json.dumps({"errorDetail": {"message": msg}, "error": msg}).encode())
    await req.stream_end()


def _platform_query(req: Request) -> dict | None:
    """The `platform` query parameter, normalised: "os/arch[/variant]" (pull and import, as
    dockerd 20.10 takes it) or a JSON-encoded OCI platform (load, API 1.48). A bad one is a 400,
    before any stream starts."""
    from kobako.image import manifest as mf
    raw = req.query.get("platform") or ""
    if not raw:
        return None
    if raw.lstrip().startswith("{"):
        try:
            doc = json.loads(raw)
        except ValueError:
            raise ApiError(400, f"invalid platform {raw!r}: not valid JSON") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("architecture"), str):
            raise ApiError(400, f"invalid platform {raw!r}: expected an object with os and architecture")
        raw = "/".join(str(doc[k]) for k in ("os", "architecture", "variant") if doc.get(k)) or raw
    return mf.parse_platform(raw)


@route("POST", "/images/load")
async def load(req: Request) -> None:
    """dockerd answers 200 and reports a bad archive in the stream ({"error": ...}): docker-py
    raises ImageLoadError from it. quiet=1: no progress lines, the same result lines."""
    e = engine()
    want = _platform_query(req)

    def go() -> list[str]:
        from kobako.image import archive
        from kobako.image.gc import undo_on_failure
        if req.body_file is None:
            raise ApiError(400, "no archive in the body")
        req.body_file.seek(0)
        with undo_on_failure(e):
            return archive.load(e.images, e.snapshots, req.body_file, platform=want)
    from kobako.image.reference import familiar, looks_like_id
    await req.stream_start(200, "application/json")
    try:
        names = await blocking(go)
        lines = [f"Loaded image ID: {n}\n" if looks_like_id(n) else f"Loaded image: {familiar(n)}\n"
                 for n in names]
        await req.chunk(b"".join(json.dumps({"stream": ln}).encode() + b"\r\n" for ln in lines))
    except Exception as ex:  # noqa: BLE001 - in the stream, as dockerd
        from kobako.errors import describe
        msg = describe(ex)
        await req.chunk(json.dumps({"errorDetail": {"message": msg}, "error": msg}).encode() + b"\r\n")
    await req.stream_end()


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

    from kobako.engine.images import archive_targets
    from kobako.image import archive
    e = engine()
    if not names:
        raise ApiError(400, "no image names (?names=)")
    targets = await blocking(archive_targets, e, names)
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
    platform = req.query.get("platform") or None
    if platform:  # refused before the stream starts: a 400, as dockerd
        from kobako.image import manifest as mf
        platform = mf.platform_string(_platform_query(req) or {})
    from kobako.image import reference
    reference.parse(name)
    ref = reference.parse(name)
    started = False

    async def send(msg: dict) -> None:
        """The stream starts with the first layer's news: an error before it (no such image, no
        manifest for the platform) is the reply's status, as dockerd sends one before it flushes."""
        nonlocal started
        if not started:
            started = True
            await req.stream_start(200, "application/json")
            await send({"status": f"Pulling from {ref.path}", "id": ref.locator})
        await req.chunk(json.dumps(msg).encode() + b"\r\n")

    creds = registry_auth(req)
    import asyncio
    loop = asyncio.get_running_loop()
    msgs: asyncio.Queue = asyncio.Queue()
    pulling: set[str] = set()  # layers fetched by this pull (their bytes are reported)

    def status(digest: str, text: str) -> None:  # dockerd's per-layer messages, from the threads
        short = digest.split(":")[-1][:12]
        if text == "Pulling fs layer":
            pulling.add(short)
        loop.call_soon_threadsafe(msgs.put_nowait, {"status": text, "progressDetail": {}, "id": short})

    def progress(digest: str, done: int, total: int | None) -> None:
        short = digest.split(":")[-1][:12]
        if short in pulling:
            loop.call_soon_threadsafe(msgs.put_nowait, {"status": "Downloading", "id": short,
                                                        "progressDetail": {"current": done, "total": total}})

    eng = engine()
    try:
        before = eng.images.resolve(str(ref))["id"]
    except Exception:  # noqa: BLE001 - not there yet
        before = None

    def go() -> dict:
        from kobako.engine.images import pull as engine_pull
        return engine_pull(eng, name, platform, credentials=creds, status=status, progress=progress)
    try:
        job = asyncio.ensure_future(blocking(go))
        while not (job.done() and msgs.empty()):
            getter = asyncio.ensure_future(msgs.get())
            await asyncio.wait({job, getter}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                await send(getter.result())
            else:
                getter.cancel()
        rec = job.result()
        await send({"status": f"Digest: {rec['manifest']['digest']}"})
        news = "Downloaded newer image" if pulling or before != rec["id"] else "Image is up to date"
        await send({"status": f"Status: {news} for {reference.familiar(name)}"})
    except Exception as e:  # noqa: BLE001 - once started, a pull error travels in the stream, as dockerd's
        if not started:
            raise
        from kobako.errors import describe
        msg = describe(e)
        await req.chunk(json.dumps({"errorDetail": {"message": msg}, "error": msg}).encode() + b"\r\n")
    await req.stream_end()


@route("GET", "/images/{name*}/history")
async def history(req: Request) -> None:
    e = engine()
    rec = _img(e, req.params["name"])

    from kobako.engine.views import image_history
    await req.send_json(200, await blocking(image_history, e, rec))


def registry_auth(req: Request) -> tuple[str, str] | None:
    """Credentials from X-Registry-Auth (base64 JSON), if the client sent some; else None
    (the stored logins)."""
    import base64
    hdr = req.headers.get("x-registry-auth")
    if not hdr:
        return None
    try:
        a = json.loads(base64.urlsafe_b64decode(hdr + "=" * (-len(hdr) % 4)))
    except ValueError:
        raise ApiError(400, "X-Registry-Auth is not base64 JSON") from None
    if isinstance(a, dict) and a.get("username"):
        return (a["username"], a.get("password", ""))
    return None


@route("POST", "/images/{name*}/push")
async def push(req: Request) -> None:
    """Push with dockerd's JSON lines; credentials from X-Registry-Auth or the stored logins."""
    from kobako.image import reference
    e = engine()
    name = req.params["name"] + (f":{req.query['tag']}" if req.query.get("tag") else "")
    from kobako.engine.images import push_source
    from kobako.image.store import ImageNotFound
    try:
        rec = push_source(e, name)
    except ImageNotFound:
        raise ApiError(404, f"No such image: {name}") from None
    creds = registry_auth(req)
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
    from kobako.engine import filters
    from kobako.engine import images as engine_images
    e = engine()
    flt = filters.from_json(req.query.get("filters"), engine_images.PRUNE_FILTERS)
    entries, freed = await blocking(engine_images.prune, e, flt)
    await req.send_json(200, {"ImagesDeleted": entries or None, "SpaceReclaimed": freed})


@route("POST", "/commit")
async def commit(req: Request) -> None:
    """docker commit: ?container=&repo=&tag=&comment=&author=&pause=&changes= (repeated), and
    a container Config as the body whose set fields go over the container's."""
    from kobako.engine.images import commit as engine_commit
    if not req.query.get("container"):
        raise ApiError(400, "container is required")
    body = req.json()
    e = engine()
    q = req.query
    img = await blocking(lambda: engine_commit(
        e, q["container"], q.get("repo") or None, q.get("tag") or None, req.query_all.get("changes") or [],
        q.get("comment") or "", q.get("author") or "", pause=req.flag("pause", True), config=body))
    await req.send_json(201, {"Id": img["id"]})


@route("GET", "/distribution/{name*}/json")
async def distribution(req: Request) -> None:
    from kobako.engine.images import distribution as engine_distribution
    creds = registry_auth(req)
    await req.send_json(200, await blocking(engine_distribution, req.params["name"], creds))


def _json_param(req: Request, name: str, kind: type) -> object:
    v = req.query.get(name)
    if not v:
        return kind()
    try:
        out = json.loads(v)
    except ValueError:
        raise ApiError(400, f"invalid {name}: not JSON") from None
    if out is None:
        return kind()
    if not isinstance(out, kind):
        raise ApiError(400, f"invalid {name}: expected a JSON {'object' if kind is dict else 'list'}")
    return out


def _int_param(req: Request, name: str) -> int:
    v = req.query.get(name) or "0"
    try:
        return int(v)
    except ValueError:
        raise ApiError(400, f"invalid {name} {v!r}: a number") from None


def registry_config(req: Request) -> dict[str, dict]:
    """X-Registry-Config (docker build sends every login it has: base64url JSON
    {"registry": {"username": ..., "password": ...} or {"auth": ...}}). One that does not
    decode is ignored, as dockerd ignores it: the pulls then use the stored logins."""
    import base64
    hdr = req.headers.get("x-registry-config")
    if not hdr:
        return {}
    try:
        doc = json.loads(base64.urlsafe_b64decode(hdr + "=" * (-len(hdr) % 4)))
    except ValueError:  # bad base64 (binascii.Error), bad UTF-8 or bad JSON
        return {}
    if not isinstance(doc, dict):
        return {}
    return {k: v for k, v in doc.items() if isinstance(k, str) and isinstance(v, dict)}


def build_options(req: Request):
    """dockerd's /build query parameters as the engine's build options."""
    from kobako.engine.build import Options
    if req.query.get("remote"):
        raise ApiError(400, "a remote build context (remote=) is not supported: send the context as the body")
    if req.query.get("isolation") not in (None, "", "default"):
        raise ApiError(400, f"invalid isolation {req.query['isolation']!r}: only 'default' on Linux")
    args = _json_param(req, "buildargs", dict)
    labels = _json_param(req, "labels", dict)
    ulimits = _json_param(req, "ulimits", list)
    cache_from = _json_param(req, "cachefrom", list) if req.query.get("cachefrom") else None
    hosts: list[str] = []
    for h in req.query_all.get("extrahosts") or []:
        hosts += [x for x in h.split(",") if x]
    limits = {k: _int_param(req, q) for k, q in (("Memory", "memory"), ("MemorySwap", "memswap"),
                                                 ("CpuShares", "cpushares"), ("CpuPeriod", "cpuperiod"),
                                                 ("CpuQuota", "cpuquota")) if req.query.get(q)}
    if req.query.get("cpusetcpus"):
        limits["CpusetCpus"] = req.query["cpusetcpus"]
    net = req.query.get("networkmode") or "default"
    return Options(tags=[t for t in req.query_all.get("t") or [] if t],
                   # the first value, as dockerd's FormValue (docker-py sends the file's text after it)
                   dockerfile=(req.query_all.get("dockerfile") or [""])[0] or "Dockerfile",
                   build_args={str(k): (None if v is None else str(v)) for k, v in args.items()},
                   target=req.query.get("target") or None, no_cache=req.flag("nocache"),
                   pull=req.flag("pull"),
                   labels={str(k): str(v) for k, v in labels.items()}, network=net, extra_hosts=hosts,
                   shm_size=_int_param(req, "shmsize"), ulimits=ulimits, limits=limits, cache_from=cache_from,
                   platform=req.query.get("platform") or None, squash=req.flag("squash"),
                   # dockerd: rm is true when absent or empty; forcerm implies it
                   rm=req.query.get("rm") in (None, "") or req.flag("rm"), force_rm=req.flag("forcerm"),
                   auth_configs=registry_config(req))


@route("POST", "/build")
async def build(req: Request) -> None:
    """docker build (the legacy builder): the context tar is the body (spooled to a file by
    the server); progress, RUN output, the image ID (aux) and any error travel as dockerd's
    JSON lines."""
    import asyncio
    import shutil

    from kobako.engine import build as b
    opts = build_options(req)
    if opts.platform:  # one that does not parse, several, another OS: a 400 before the stream, as dockerd
        b.target_platform(opts.platform)
    quiet = req.flag("q")
    e = engine()
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()

    def put(obj: dict | None) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, obj)

    class Out(b.Output):
        def stream(self, text: str) -> None:
            if not quiet:
                put({"stream": text})

        def stderr(self, text: str) -> None:
            if not quiet:
                put({"stream": f"\x1b[91m{text}\x1b[0m"})

        def aux(self, image_id: str) -> None:
            put({"aux": {"ID": image_id}})
            if quiet:
                put({"stream": image_id + "\n"})

    def go() -> None:
        tmp = None
        try:
            if req.body_file is not None:
                req.body_file.seek(0)
                tmp = b.unpack_context(e, req.body_file)
            tree = b.context_dir(tmp)
            try:
                text = b.read_dockerfile(tree, opts.dockerfile)
                b.build(e, tree, text, opts, Out())
            finally:
                tree.close()
        except Exception as ex:  # noqa: BLE001 - in the stream, as dockerd
            from kobako.errors import describe
            msg = describe(ex) if not isinstance(ex, b.StepFailed) else str(ex)
            detail: dict = {"message": msg}
            if isinstance(ex, b.StepFailed):
                detail["code"] = ex.code
            put({"errorDetail": detail, "error": msg})
        finally:
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)
            put(None)

    await req.stream_start(200, "application/json")
    job = loop.run_in_executor(None, go)
    while (obj := await queue.get()) is not None:
        await req.chunk(json.dumps(obj).encode() + b"\r\n")
    await job
    await req.stream_end()


@route("POST", "/build/prune")
async def build_prune(req: Request) -> None:
    from kobako.engine.build import prune
    freed = await blocking(prune, engine())
    await req.send_json(200, {"CachesDeleted": None, "SpaceReclaimed": freed})
