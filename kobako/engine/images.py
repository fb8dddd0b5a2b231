"""What the engine does with images for both front ends: list with dockerd's filters, tag,
pull, commit a container, prune, and ask a registry what it serves (distribution). The
stores and formats are kobako/image's; this module knows containers too (commit, prune
and the listing's counts need them)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from kobako import errors
from kobako.image import reference
from kobako.image.store import ImageError

T = TypeVar("T")
FILTERS = ("before", "dangling", "label", "reference", "since")
# `kobako images` takes one more: platform=os/arch[/variant] (podman and docker have no
# filter on the platform; GET /images/json keeps dockerd's list and refuses it as dockerd does)
CLI_FILTERS = FILTERS + ("platform",)


def platform_of(rec: dict) -> dict:
    """An image record's platform, normalised (its variant: the config's, else the index
    entry's it was pulled by; records written before variants were kept have none)."""
    from kobako.image import manifest as mf
    return mf.normalize({"os": rec.get("os") or "linux", "architecture": rec.get("architecture") or "",
                         "variant": rec.get("variant") or ""})


def _created(rec: dict) -> float:
    from kobako.engine.logs import parse_time
    try:
        return parse_time(rec.get("created") or "")
    except (ValueError, TypeError):
        return 0.0


def _labels(e, rec: dict) -> dict:
    from kobako.engine.views import image_config
    try:
        return (image_config(e, rec).get("config") or {}).get("Labels") or {}
    except (OSError, ValueError):
        return {}


def listing(e, flt: dict[str, list[str]]) -> list[tuple[dict, list[str]]]:
    """(image record, the names to show) for each image the filters let through, newest
    first: reference (Go path patterns on the familiar name, with or without the tag),
    dangling, before / since (an image by name or ID), label KEY[=VALUE], platform
    os/arch[/variant] (any of those given; a variant matches when either side names none)."""
    from kobako.engine import filters
    from kobako.image import manifest as mf
    dangling = filters.boolean(flt, "dangling")
    platforms = [mf.parse_platform(p) for p in flt.get("platform") or []]
    bounds = {}
    for k in ("before", "since"):
        for v in flt.get(k) or []:
            bounds[k] = _created(e.images.resolve(v))
    out = []
    held = {m.get("image") for x in e.images.indexes() for m in x.get("manifests", [])}
    for rec in [*e.images.all(), *_index_rows(e, platforms)]:
        names = list(rec.get("names") or [])
        if not names and rec["id"] in held:
            continue  # listed under its index's names
        if dangling is not None and (not names) != dangling:
            continue
        if "before" in bounds and not _created(rec) < bounds["before"]:
            continue
        if "since" in bounds and not _created(rec) > bounds["since"]:
            continue
        if flt.get("reference"):
            names = [n for n in names if any(_ref_match(p, n) for p in flt["reference"])]
            if not names:
                continue
        if flt.get("label") and not filters.labels_match(_labels(e, rec), flt["label"]):
            continue
        if platforms and not any(mf.platform_matches(platform_of(rec), p) for p in platforms):
            continue
        out.append((rec, names))
    return out


def _index_rows(e, platforms: list[dict]) -> list[dict]:
    """What each index record lists as: its image for the host's platform (else its first)
    under the index's names and repo digests -- or, with a platform filter, one row for each
    of its images of those platforms. `listDigest`: the index's digest (the DIGEST column)."""
    from kobako import errors
    out = []
    for x in e.images.indexes():
        try:
            if platforms:
                want = {m["image"] for m in x.get("manifests", []) for p in platforms
                        if _entry_matches(m, p)}
                picked = [r for i in want if (r := e.images.get(i)) is not None]
            else:
                picked = [e.images.pick(x)]
        except errors.NotFound:
            continue
        out += [{**r, "names": list(x.get("names", [])), "repoDigests": list(x.get("repoDigests", [])),
                 "listDigest": x["id"]} for r in picked]
    return out


def _entry_matches(entry: dict, want: dict) -> bool:
    from kobako.image import manifest as mf
    return mf.platform_matches(mf.normalize(entry.get("platform") or {}), want)


def _ref_match(pattern: str, name: str) -> bool:
    """dockerd's reference.FamiliarMatch: the pattern against the familiar name with its tag,
    then without."""
    from kobako.engine.filters import path_match
    fam = reference.familiar(name)  # records hold repo:tag names
    return path_match(pattern, fam) or path_match(pattern, fam.rsplit(":", 1)[0])


def summaries(e, flt: dict[str, list[str]]) -> list[dict]:
    """GET /images/json: one row per image (not per tag), as dockerd's."""
    from kobako.engine.views import image_summary
    counts: dict[str, int] = {}
    for c in e.containers.all():
        counts[c.get("image", "")] = counts.get(c.get("image", ""), 0) + 1
    return [image_summary(e, rec, names, counts.get(rec["id"], 0)) for rec, names in listing(e, flt)]


def tag(e, source: str, target: str) -> str:
    """Give the image `source` names another name; returns the full name. A name a
    multi-platform index holds: the index gets the new name, every platform with it."""
    index = e.images.resolve_index(source)
    rec = index or e.images.resolve(source)
    ref = reference.parse(target)
    if ref.digest:
        raise ImageError("refusing to create a tag with a digest reference")
    if index is not None:
        e.images.tag_index(index["id"], str(ref))
    else:
        e.images.tag(rec["id"], str(ref))
    from kobako.engine.events import emit
    emit(e.root, "image", "tag", rec["id"], {"name": str(ref)})
    return str(ref)


def push_source(e, name: str) -> dict:
    """The image `push NAME` sends. A name a multi-platform index holds is refused: pushing
    every platform and the index is not done (the registry would get one platform under a
    name that stood for several)."""
    index = e.images.resolve_index(name)
    if index is not None and e.images.get(index["id"]) is None:
        raise errors.NotImplementedYet(
            f"{reference.familiar(str(reference.parse(name)))} is a multi-platform image (pulled with "
            "--all-platforms): pushing it whole is not supported; `kobako pull --platform os/arch` "
            "one platform under another name and push that")
    return e.images.resolve(name)


def archive_targets(e, names: list[str]) -> list[tuple[dict, list[str]]]:
    """What `save` writes for each name: the image, and the names it goes under (all of its
    names when it was given by ID, as docker does)."""
    out = []
    for n in names:
        index = e.images.resolve_index(n)
        if index is not None:  # the whole index, every platform (archive.save writes it as one)
            out.append((index, [str(reference.parse(n))]))
            continue
        rec = e.images.resolve(n)
        if reference.looks_like_id(n) and not n.count(":") > 1:
            out.append((rec, list(rec.get("names", []))))
        else:
            out.append((rec, [str(reference.parse(n))]))
    return out


def search(name: str, attempt: Callable[[reference.Reference], T],
           trying: Callable[[reference.Reference], None] | None = None) -> tuple[reference.Reference, T]:
    """Pull-side short-name resolution, as podman's unqualified-search-registries: `attempt`
    (a pull) with each reference `name` stands for (reference.candidates), in the order of
    the search list; the first that succeeds wins. A registry error (not found, unauthorized,
    blocked, unreachable) moves on to the next registry, and when none has it the error names
    each registry tried and why. Other errors (a platform the image lacks, a full disk) stop
    the search: the name was found. `trying(ref)` is called before each attempt when there
    are several."""
    refs = reference.candidates(name)
    if len(refs) == 1:
        return refs[0], attempt(refs[0])
    from kobako.image.registry import RegistryError
    failures: list[RegistryError] = []
    for ref in refs:
        if trying:
            trying(ref)
        try:
            return ref, attempt(ref)
        except RegistryError as ex:
            failures.append(ex)
    raise _not_in_search_list(name, refs, failures)


def _not_in_search_list(name: str, refs: list[reference.Reference], failures: list) -> errors.KobakoError:
    """One error for a short name no registry of the search list gave: not found (404) when
    each said not found or unauthorized, unavailable (503) when one could not be asked."""
    kind: type[errors.KobakoError] = errors.NotFound
    if any(not isinstance(f, (errors.NotFound, errors.Unauthorized)) for f in failures):
        kind = errors.Unavailable
    tried = ", ".join(r.domain for r in refs)
    return kind(f"{name}: no registry of the search list ({tried}) gave the image:"
                + "".join(f"\n  * {errors.describe(f)}" for f in failures))


def pull(e, name: str, platform: str | None = None,
         credentials: tuple[str, str] | Callable[[reference.Reference], tuple[str, str] | None] | None = None,
         status=None, progress=None) -> dict:
    """Pull `name` for `platform` (os/arch[/variant]; the host's by default), with
    `credentials` (user, password) for its registry if given, else the stored logins.
    A short name is tried with each registry of the search list (`search`); credentials
    given for it are the docker client's, meant for docker.io, and used only there, unless
    `credentials` is a function of the candidate reference.
    `status(layer digest, text)` and `progress(layer digest, done, total)`: docker's
    per-layer messages (image/unpack.ensure_layers), from the download threads."""
    from kobako.image import manifest as mf
    from kobako.image.gc import undo_on_failure
    from kobako.image.pull import pull as do_pull
    plat = mf.parse_platform(platform) if platform else None  # checked before anything is fetched
    short = reference.is_short(name.partition("@")[0])

    def attempt(ref: reference.Reference) -> dict:
        creds = credentials(ref) if callable(credentials) else credentials
        if short and not callable(credentials) and ref.domain != reference.DEFAULT_DOMAIN:
            creds = None
        with undo_on_failure(e):
            return do_pull(e.images, e.snapshots, ref, plat, credentials=creds, status=status,
                           progress=progress)
    ref, rec = search(name, attempt)
    from kobako.engine.events import emit
    emit(e.root, "image", "pull", str(ref), {"name": str(ref)})
    return rec


# -- commit ---------------------------------------------------------------------------------------

def _container_config(e, rec: dict, base_cfg: dict) -> dict:
    """The container's config in Docker's shape (dockerd commits container.Config): the
    image's, with what the container was created with over it."""
    cfg = dict(base_cfg)
    opts = rec.get("options") or {}
    if opts.get("command"):
        cfg["Cmd"] = list(opts["command"])
    if opts.get("entrypoint") is not None:
        ep = opts["entrypoint"]
        cfg["Entrypoint"] = ([ep] if isinstance(ep, str) else list(ep)) or None
    if opts.get("tty") is not None:
        cfg["Tty"] = bool(opts["tty"])
    if rec.get("labels"):
        cfg["Labels"] = {**(cfg.get("Labels") or {}), **rec["labels"]}
    cfg["Image"] = rec.get("imageName") or rec.get("image", "")
    return cfg


def commit(e, container: str, repo: str | None = None, tag: str | None = None,
           changes: list[str] | None = None, comment: str = "", author: str = "", pause: bool = True,
           config: dict | None = None) -> dict:
    """A new image from a container's filesystem changes on its image (dockerd's commit):
    the container's config, then `config` (fields given), then `changes` (Dockerfile
    instructions); the image's parent is the container's image."""
    import json

    from kobako.image import changes as ch
    from kobako.image.build import layer_from_dir, new_image
    from kobako.image.gc import undo_on_failure
    from kobako.image.unpack import gc_shield
    rec = e.containers.resolve(container)
    names = []
    if repo:
        names = [str(reference.parse(f"{repo}:{tag}" if tag else repo))]
    elif tag:
        raise ImageError("a tag needs a repository name")
    if names and reference.parse(names[0]).digest:
        raise ImageError("refusing to create a tag with a digest reference")
    base = e.images.get(rec["image"])
    if base is None:
        raise ImageError(f"the image of container {rec['name']} was removed; cannot commit")
    cont_cfg = _container_config(e, rec, json.loads(e.images.content.read(base["id"])).get("config") or {})
    _check_config(config or {})
    new_cfg = dict(cont_cfg)
    for k, v in (config or {}).items():
        if v not in (None, "", [], {}):
            new_cfg[k] = v
    new_cfg = ch.apply(list(changes or []), new_cfg)
    new_cfg.pop("Image", None)
    hist = {"created_by": "kobako commit " + (comment and f"-m {comment!r} " or "") + rec["name"]}
    if comment:
        hist["comment"] = comment
    extra = {"container": rec["id"], "container_config": cont_cfg, **({"author": author} if author else {})}
    # a container without a freezer (rootless, no cgroup delegated) is committed running,
    # as `commit --pause=false` would
    paused = pause and e.state(rec) == "running" and e.freezable(rec)
    if paused:
        try:
            e.pause(rec)
        except errors.Conflict:  # it exited meanwhile: nothing left to hold still
            paused = False
    try:
        with undo_on_failure(e), gc_shield(e.root):
            layer = layer_from_dir(e.images.content, e.containers.path(rec["id"], "upper"), diff=True)
            img = new_image(e.images, e.snapshots, base, [layer], new_cfg, hist, names, extra)
    finally:
        if paused:
            try:
                e.unpause(rec)
            except errors.Conflict:
                pass  # it was killed while frozen: nothing to thaw
    img = e.images.add({"id": img["id"], "parent": base["id"]}, [])
    from kobako.engine.events import emit
    emit(e.root, "container", "commit", rec["id"], {"comment": comment, "imageID": img["id"],
                                                    "name": rec["name"]})
    return img


_CONFIG_TYPES = {"Cmd": list, "Entrypoint": list, "Env": list, "Labels": dict, "ExposedPorts": dict,
                 "Volumes": dict, "User": str, "WorkingDir": str, "StopSignal": str, "OnBuild": list,
                 "Healthcheck": dict, "Shell": list}


def _check_config(config: dict) -> None:
    """The fields of a commit's Config an image keeps, with their JSON types."""
    if not isinstance(config, dict):
        raise ImageError("invalid config: expected an object")
    for k, kind in _CONFIG_TYPES.items():
        v = config.get(k)
        if v is None:
            continue
        if k in ("Cmd", "Entrypoint") and isinstance(v, str):
            config[k] = [v]
            continue
        if not isinstance(v, kind) or (kind is list and not all(isinstance(x, str) for x in v)):
            what = {list: "a list of strings", dict: "an object", str: "a string"}[kind]
            raise ImageError(f"invalid config {k}: expected {what}")


# -- prune ---------------------------------------------------------------------------------------

PRUNE_FILTERS = ("dangling", "label", "label!", "until")


def prune(e, flt: dict[str, list[str]], all_images: bool = False) -> tuple[list[dict], int]:
    """Images no container uses: untagged ones, or every one with all_images / dangling=false;
    label, label! and until narrow it. Returns dockerd's ImagesDeleted entries ({"Untagged":
    name} for each name, then {"Deleted": id}) and the bytes freed."""
    from kobako.engine import filters
    from kobako.image import gc
    dangling = filters.boolean(flt, "dangling")
    every = all_images or dangling is False
    until = filters.until(flt)

    def match(rec: dict) -> bool:
        if until is not None and _created(rec) >= until:
            return False
        return filters.labels_pass(_labels(e, rec) if flt.get("label") or flt.get("label!") else {}, flt)

    return gc.prune_images(e, all_images=every, match=match)


# -- what a registry serves ------------------------------------------------------------------

def distribution(name: str, credentials: tuple[str, str] | None = None) -> dict:
    """GET /distribution/{name}/json: the descriptor of what the registry (through the
    configured mirrors, as a pull) serves for `name`, and the platforms it holds."""
    from kobako.image import manifest as mf
    from kobako.image.registry import Client
    ref = reference.parse(name)
    client = Client(ref.domain, credentials=credentials) if credentials else Client(ref.domain)
    body, mtype, digest = client.get_manifest(ref.path, ref.locator)
    doc = mf.parse(body, mtype, what=f"manifest of {ref}")
    keys = ("architecture", "os", "os.version", "os.features", "variant")
    if isinstance(doc, mf.Index):
        platforms = [{k: d.platform[k] for k in keys if d.platform.get(k)}
                     for d in doc.manifests if d.platform]
    else:
        s = client.open_blob(ref.path, doc.config.digest, doc.config.size)
        try:
            cfg = mf.loads(b"".join(iter(lambda: s.read(1 << 20), b"")), "image config")
        finally:
            s.close()
        platforms = [{k: cfg[k] for k in keys if cfg.get(k)}]
    return {"Descriptor": {"mediaType": doc.media_type or mtype, "digest": digest, "size": len(body)},
            "Platforms": platforms}
