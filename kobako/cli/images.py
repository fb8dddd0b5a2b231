"""Image commands: pull, push, images, image inspect, tag, rmi, image prune, history,
save, load, import, login, logout."""

from __future__ import annotations

import os
import sys

from kobako.cli.containers import TRACE
from kobako.cli.output import Progress, ago, confirmed, familiar, formatted, human_size, print_docs, table
from kobako.cli.parser import Command, opt
from kobako.engine.lifecycle import Engine
from kobako.image import reference
from kobako.image.store import ImageError


def _tls(args) -> bool | None:
    v = args.tls_verify
    if v is None:
        return None
    return v.lower() in ("false", "0", "no")


TLS = opt("--tls-verify", "tls_verify", "str", None, "false: allow plain HTTP and unverified TLS")


def pull(e: Engine, args) -> int:
    from kobako.cli.output import PullView
    from kobako.engine.images import search
    from kobako.image import manifest as mf
    from kobako.image.pull import pull as do_pull
    reference.parse(args.args[0])  # a bad name before anything else
    platform = mf.parse_platform(args.platform) if args.platform else None
    if platform and args.all_platforms:
        raise ImageError("--all-platforms and --platform cannot be used together")
    view = PullView(sys.stdout, not args.quiet)
    from kobako.image.gc import undo_on_failure
    before: str | None = None

    def attempt(ref: reference.Reference) -> dict:
        nonlocal before
        view.line_before(f"{ref.locator}: Pulling from {ref.path}")
        before = _image_id(e, str(ref))
        with undo_on_failure(e):
            return do_pull(e.images, e.snapshots, ref, platform, insecure=_tls(args), progress=view.progress,
                           status=view.status, all_platforms=args.all_platforms)
    try:
        ref, rec = search(args.args[0], attempt, lambda ref: sys.stderr.write(f"Trying to pull {ref}...\n"))
    finally:
        view.close()
    from kobako.engine.events import emit
    emit(e.root, "image", "pull", str(ref), {"name": str(ref)})
    if "manifests" in rec:  # --all-platforms of an index: its record
        view.line(f"Digest: {rec['id']} ({len(rec['manifests'])} platforms: "
                  f"{', '.join(mf.platform_string(m['platform']) for m in rec['manifests'])})")
    else:
        view.line(f"Digest: {rec['manifest']['digest']}")
    news = "Downloaded newer image" if view.fetched or before != rec["id"] else "Image is up to date"
    view.line(f"Status: {news} for {familiar(str(ref))}")
    print(str(ref))  # docker's last line, and all that -q prints
    return 0


def _image_id(e: Engine, name: str) -> str | None:
    """The ID NAME names now, if any (to tell a pull that changed nothing): an index
    record's for a name an index holds."""
    from kobako.errors import NotFound
    index = e.images.resolve_index(name)
    if index is not None:
        return index["id"]
    try:
        return e.images.resolve(name)["id"]
    except NotFound:
        return None


def push(e: Engine, args) -> int:
    from kobako.engine.images import push_source
    from kobako.image.registry import Client, push_image
    src = args.args[0]
    rec = push_source(e, src)
    dest = args.args[1] if len(args.args) > 1 else src
    ref = reference.parse(dest)
    if ref.digest:
        raise ImageError("cannot push to a digest: name a tag")
    client = Client(ref.domain, insecure=_tls(args))
    if not args.quiet:
        print(f"The push refers to repository [{ref.name}]")
    mount_from = None  # the same layers already in another repository of this registry
    for d in rec.get("repoDigests", []):
        other = reference.parse(d)
        if other.domain == ref.domain and other.path != ref.path:
            mount_from = other.path
            break
    bar = Progress(not args.quiet)
    try:
        digest = push_image(client, ref.path, ref.tag or "latest", e.images, rec, progress=bar,
                            mount_from=mount_from)
    finally:
        bar.close()
    e.images.add({"id": rec["id"]}, [], [f"{ref.name}@{digest}"])
    if not args.quiet:
        print(f"{ref.tag}: digest: {digest} size: {rec['manifest']['size']}")
    return 0


def _image_rows(e: Engine, args) -> list[dict]:
    from kobako.engine import filters
    from kobako.engine import images as engine_images
    flt = filters.from_args(args.filter, engine_images.CLI_FILTERS)
    if args.args:  # docker images REPO[:TAG]: a reference filter
        flt.setdefault("reference", []).append(args.args[0])
    rows = []
    counts: dict[str, int] = {}
    for c in e.containers.all():
        counts[c.get("image", "")] = counts.get(c.get("image", ""), 0) + 1
    # docker hides intermediate images (untagged, another image's parent) unless -a
    parents = set() if args.all else {r.get("parent") for r in e.images.all()}
    for r, names in engine_images.listing(e, flt):
        if not names and r["id"] in parents:
            continue
        base = {"ID": r["id"] if args.no_trunc else r["id"].split(":")[1][:12],
                "CreatedSince": ago(r["created"]),
                "CreatedAt": r["created"], "Size": human_size(r.get("size", 0)),
                "Containers": str(counts.get(r["id"], 0)), **_platform_fields(r)}
        digest = r.get("listDigest") or r["manifest"]["digest"]  # a multi-platform image: its index's
        if not names:
            rows.append({**base, "Repository": "<none>", "Tag": "<none>", "Digest": digest})
        for n in names:
            repo, _, tag = familiar(n).rpartition(":")
            rows.append({**base, "Repository": repo, "Tag": tag, "Digest": digest})
    return rows


def _platform_fields(rec: dict) -> dict:
    """--format's {{.Platform}} (os/arch[/variant]), {{.Os}}, {{.Architecture}}, {{.Variant}}."""
    from kobako.engine.images import platform_of
    from kobako.image.manifest import platform_string
    p = platform_of(rec)
    return {"Platform": platform_string(p), "Os": p["os"], "Architecture": p["architecture"],
            "Variant": p.get("variant", "")}


def images(e: Engine, args) -> int:
    rows = _image_rows(e, args)
    if args.quiet:
        seen = []
        for r in rows:
            if r["ID"] not in seen:
                seen.append(r["ID"])
        print("\n".join(seen)) if seen else None
        return 0
    if args.format:
        formatted(args.format, rows, {"Repository": "REPOSITORY", "Tag": "TAG", "ID": "IMAGE ID",
                                      "CreatedSince": "CREATED", "Size": "SIZE", "Digest": "DIGEST",
                                      "Platform": "PLATFORM", "Os": "OS", "Architecture": "ARCHITECTURE",
                                      "Variant": "VARIANT"})
        return 0
    heads = ["REPOSITORY", "TAG"] + (["DIGEST"] if args.digests else []) + ["IMAGE ID", "CREATED", "SIZE"]
    table(heads, [[r["Repository"], r["Tag"]] + ([r["Digest"]] if args.digests else [])
                  + [r["ID"], r["CreatedSince"], r["Size"]] for r in rows])
    return 0


def image_inspect(e: Engine, args) -> int:
    from kobako.engine.views import image_doc
    from kobako.image import manifest as mf
    want = mf.parse_platform(args.platform) if args.platform else None
    docs, errors = [], []
    for name in args.args:
        try:
            docs.append(image_doc(e, e.images.resolve(name, want)))
        except Exception as ex:  # noqa: BLE001 - reported per name, like docker
            errors.append(str(ex))
    return print_docs(docs, args.format, errors)


def tag(e: Engine, args) -> int:
    from kobako.engine.images import tag as engine_tag
    engine_tag(e, args.args[0], args.args[1])
    return 0


def rmi(e: Engine, args) -> int:
    from kobako.image.gc import remove_image
    rc = 0
    for name in args.args:
        try:
            for line in remove_image(e, name, force=args.force, prune=not args.no_prune):
                print(line)
                if line.startswith(("Untagged: ", "Deleted: ")):
                    from kobako.engine.events import emit
                    kind, _, what = line.partition(": ")
                    emit(e.root, "image", "untag" if kind == "Untagged" else "delete", what, {"name": what})
        except Exception as ex:  # noqa: BLE001 - one message per image, like docker
            from kobako.errors import describe
            sys.stderr.write(f"Error: {describe(ex)}\n")
            rc = 1
    return rc


def prune_lines(entries: list[dict]) -> list[str]:
    """dockerd's ImagesDeleted as the docker CLI prints it."""
    lines = [f"{k.lower()}: {v}" for d in entries for k, v in d.items()]
    return ["Deleted Images:"] + lines if lines else []


def image_prune(e: Engine, args) -> int:
    if not confirmed(args.force, "This will remove all images without at least one container associated "
                     "to them." if args.all else "This will remove all dangling images."):
        return 0
    from kobako.engine import filters
    from kobako.engine import images as engine_images
    flt = filters.from_args(args.filter, engine_images.PRUNE_FILTERS)
    entries, freed = engine_images.prune(e, flt, all_images=args.all)
    for line in prune_lines(entries):
        print(line)
    print(f"Total reclaimed space: {human_size(freed)}")
    return 0


def history(e: Engine, args) -> int:
    rec = e.images.resolve(args.args[0])
    rows = []
    from kobako.engine.views import history_rows
    for i, (h, size) in enumerate(history_rows(e, rec)):
        ident = rec["id"].split(":")[1][:12] if i == 0 else "<missing>"
        by = h.get("created_by", "")
        if not args.no_trunc and len(by) > 45:
            by = by[:44] + "…"
        created = h.get("created", "")
        if args.human:
            rows.append([ident, ago(created), by, human_size(size), h.get("comment", "")])
        else:  # -H=false: docker's RFC 3339 time and size in bytes
            rows.append([ident, created.split(".")[0].removesuffix("Z") + "Z" if created else "", by,
                         str(size), h.get("comment", "")])
    if args.quiet:
        print(rec["id"].split(":")[1][:12])
        return 0
    table(["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"], rows)
    return 0


def save(e: Engine, args) -> int:
    from kobako.image import archive
    fmt = args.format or "docker-archive"
    if fmt not in ("docker-archive", "oci-archive"):
        raise ImageError(f"unknown --format {fmt!r}: use docker-archive or oci-archive")
    from kobako.engine.images import archive_targets
    targets = archive_targets(e, args.args)
    if args.output:
        tmp = args.output + ".kobako-tmp"
        try:
            with open(tmp, "wb") as f:
                archive.save(e.images, targets, f, fmt)
            os.replace(tmp, args.output)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
    else:
        if sys.stdout.isatty():
            raise ImageError("refusing to write an archive to a terminal: use -o FILE or redirect stdout")
        archive.save(e.images, targets, sys.stdout.buffer, fmt)
    return 0


def load(e: Engine, args) -> int:
    from kobako.image import archive
    from kobako.image import manifest as mf
    want = mf.parse_platform(args.platform) if args.platform else None  # before anything is read
    if args.input:
        try:
            src = open(args.input, "rb")
        except OSError as ex:
            raise ImageError(f"cannot open {args.input}: {ex.strerror}") from None
    else:
        src = sys.stdin.buffer
    from kobako.image.gc import undo_on_failure
    with src, undo_on_failure(e):
        names = archive.load(e.images, e.snapshots, src, platform=want)
    for n in names:
        print(f"Loaded image: {familiar(n)}" if not reference.looks_like_id(n) else f"Loaded image ID: {n}")
    return 0


def import_(e: Engine, args) -> int:
    from kobako.image.build import import_source
    from kobako.image.unpack import gc_shield
    src = args.args[0]
    names = [str(reference.parse(args.args[1]))] if len(args.args) > 1 else []
    from kobako.image import manifest as mf
    platform = mf.parse_platform(args.platform) if args.platform else None
    if src != "-" and not os.path.exists(src):
        raise ImageError(f"cannot import {src}: no such file or directory")
    from kobako.image.changes import apply
    changes = apply(args.change, {})
    from kobako.image.gc import undo_on_failure
    with undo_on_failure(e), gc_shield(e.root):
        rec = import_source(e.images, e.snapshots, src, names, changes, args.message or "", platform)
    print(rec["id"])
    return 0


def login(e: Engine, args) -> int:
    from kobako.image import auth
    from kobako.image.registry import Client
    server = args.args[0] if args.args else "docker.io"
    server = server.removeprefix("https://").removeprefix("http://").rstrip("/")
    if server in ("index.docker.io/v1", "index.docker.io"):
        server = "docker.io"
    user = args.username
    if not user:
        sys.stderr.write("Username: ")
        user = sys.stdin.readline().strip()
    if args.password_stdin:
        password = sys.stdin.read().rstrip("\n")
    elif args.password is not None:
        password = args.password
    else:
        import getpass
        password = getpass.getpass("Password: ")
    if not user or not password:
        raise ImageError("login needs a username and a password")
    Client(server, insecure=_tls(args), credentials=(user, password)).ping()
    auth.store(server, user, password)
    print("Login Succeeded")
    return 0


def logout(e: Engine, args) -> int:
    from kobako.image import auth
    server = args.args[0] if args.args else "docker.io"
    server = server.removeprefix("https://").removeprefix("http://").rstrip("/")
    if auth.remove(server):
        print(f"Removing login credentials for {server}")
    else:
        print(f"Not logged in to {server}")
    return 0


FORMAT = opt("--format", "format", "str", None, "format output: json, table TEMPLATE or a Go template")
COMMANDS = {
    "pull": (Command("pull", "[OPTIONS] NAME[:TAG|@DIGEST]", "Download an image from a registry", [
        opt("-q --quiet", "quiet", help="print only the image ID"),
        opt("--platform", "platform", "str", None, "os/arch[/variant] to pull (default: this host's)"),
        opt("--all-platforms", "all_platforms",
            help="every platform of a multi-platform image, kept as one (run/create --platform picks)"),
        TLS, TRACE], min_args=1, max_args=1), pull),
    "push": (Command("push", "[OPTIONS] NAME[:TAG] [DESTINATION]", "Upload an image to a registry", [
        opt("-q --quiet", "quiet", help="print nothing"), TLS], min_args=1, max_args=2), push),
    "images": (Command("images", "[OPTIONS] [REPOSITORY[:TAG]]", "List images", [
        opt("-a --all", "all", help="show intermediate images too (untagged parents of others)"),
        opt("-q --quiet", "quiet", help="only show image IDs"),
        opt("--digests", "digests", help="show digests"),
        opt("-f --filter", "filter", "list", None,
            "reference=, dangling=, before=, since=, label=, platform=os/arch[/variant]"),
        opt("--no-trunc", "no_trunc", help="do not truncate IDs"), FORMAT], max_args=1), images),
    "image inspect": (Command("image inspect", "[OPTIONS] IMAGE [IMAGE...]",
                              "Display detailed information on one or more images", [
                                  opt("-f --format", "format", "str", None, "Go template"),
                                  opt("--platform", "platform", "str", None,
                                      "os/arch[/variant]: that platform's image of a multi-platform one")],
                              min_args=1),
                      image_inspect),
    "tag": (Command("tag", "SOURCE_IMAGE[:TAG] TARGET_IMAGE[:TAG]", "Give an image another name",
                    min_args=2, max_args=2), tag),
    "rmi": (Command("rmi", "[OPTIONS] IMAGE [IMAGE...]", "Remove one or more images", [
        opt("-f --force", "force", help="remove even if containers use it / it has several names"),
        opt("--no-prune", "no_prune", help="keep the untagged parents (commit/build bases)")],
        min_args=1), rmi),
    "image prune": (Command("image prune", "[OPTIONS]", "Remove unused images", [
        opt("-a --all", "all", help="remove all images no container uses, not just untagged ones"),
        opt("-f --force", "force", help="do not prompt for confirmation"),
        opt("--filter", "filter", "list", None, "label=K[=V], label!=K[=V], until=TIME")], max_args=0),
                    image_prune),
    "history": (Command("history", "[OPTIONS] IMAGE", "Show the history of an image", [
        opt("--no-trunc", "no_trunc", help="do not truncate output"),
        opt("-q --quiet", "quiet", help="only show image IDs"),
        opt("-H --human", "human", "bool", True,
            "human-readable sizes and dates (default true; -H=false: bytes and RFC 3339)")],
        min_args=1, max_args=1),
                history),
    "save": (Command("save", "[OPTIONS] IMAGE [IMAGE...]", "Save images to a tar archive (stdout by default)",
                     [opt("-o --output", "output", "str", None, "write to a file instead of stdout"),
                      opt("--format", "format", "str", None, "docker-archive (default) or oci-archive")],
                     min_args=1), save),
    "load": (Command("load", "[OPTIONS]", "Load images from a tar archive (docker-archive or OCI)", [
        opt("-i --input", "input", "str", None, "read from a file instead of stdin"),
        opt("-q --quiet", "quiet", help="suppress progress output (kobako load shows none)"),
        opt("--platform", "platform", "str", None,
            "os/arch[/variant]: only that platform's image of a multi-platform archive"), TRACE],
        max_args=0), load),
    "import": (Command("import", "[OPTIONS] file|URL|-|DIRECTORY [REPOSITORY[:TAG]]",
                       "Create an image from a tarball or a host directory (such as /)", [
                           opt("-c --change", "change", "list", None, "apply a Dockerfile instruction"),
                           opt("-m --message", "message", "str", None, "commit message"),
                           opt("-q --quiet", "quiet", help="print nothing but the image ID"),
                           opt("--platform", "platform", "str", None,
                               "os/arch[/variant] the image is recorded for (default: this host's)"),
                           TRACE], min_args=1, max_args=2), import_),
    "login": (Command("login", "[OPTIONS] [SERVER]", "Log in to a registry", [
        opt("-u --username", "username", "str", None, "username"),
        opt("-p --password", "password", "str", None, "password"),
        opt("--password-stdin", "password_stdin", help="take the password from stdin"), TLS], max_args=1),
              login),
    "logout": (Command("logout", "[SERVER]", "Log out from a registry", max_args=1), logout),
}
