"""Image commands: pull, push, images, image inspect, tag, rmi, image prune, history,
save, load, import, login, logout."""

from __future__ import annotations

import json
import os
import sys

from kobako.cli.output import Progress, ago, familiar, formatted, human_size, print_docs, table
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
    from kobako.image import manifest as mf
    from kobako.image.pull import pull as do_pull
    ref = reference.parse(args.args[0])
    platform = mf.parse_platform(args.platform) if args.platform else None
    quiet = args.quiet
    bar = Progress(not quiet)
    if not quiet:
        print(f"Pulling {familiar(str(ref))}")
    from kobako.image.gc import undo_on_failure
    try:
        with undo_on_failure(e):
            rec = do_pull(e.images, e.snapshots, ref, platform, insecure=_tls(args), progress=bar)
    finally:
        bar.close()
    from kobako.engine.events import emit
    emit(e.root, "image", "pull", str(ref), {"name": str(ref)})
    if quiet:
        print(rec["id"])
    else:
        print(f"Digest: {rec['manifest']['digest']}\nStatus: downloaded {familiar(str(ref))}\n{rec['id']}")
    return 0


def push(e: Engine, args) -> int:
    from kobako.image.registry import Client, push_image
    src = args.args[0]
    rec = e.images.resolve(src)
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
    rows = []
    in_use = {c.get("image") for c in e.containers.all()}
    for r in e.images.all():
        names = r.get("names") or []
        base = {"ID": r["id"] if args.no_trunc else r["id"].split(":")[1][:12],
                "CreatedSince": ago(r["created"]),
                "CreatedAt": r["created"], "Size": human_size(r.get("size", 0)),
                "Containers": str(sum(1 for c in e.containers.all() if c.get("image") == r["id"]))
                if r["id"] in in_use else "0"}
        digest = r["manifest"]["digest"]
        if not names:
            rows.append({**base, "Repository": "<none>", "Tag": "<none>", "Digest": digest})
        for n in names:
            repo, _, tag = familiar(n).rpartition(":")
            rows.append({**base, "Repository": repo, "Tag": tag, "Digest": digest})
    if args.args:
        want = familiar(str(reference.parse(args.args[0], default_tag=None))).split(":")[0]
        rows = [r for r in rows if r["Repository"] == want]
    return rows


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
                                      "CreatedSince": "CREATED", "Size": "SIZE", "Digest": "DIGEST"})
        return 0
    heads = ["REPOSITORY", "TAG"] + (["DIGEST"] if args.digests else []) + ["IMAGE ID", "CREATED", "SIZE"]
    table(heads, [[r["Repository"], r["Tag"]] + ([r["Digest"]] if args.digests else [])
                  + [r["ID"], r["CreatedSince"], r["Size"]] for r in rows])
    return 0


def inspect_doc(e: Engine, rec: dict) -> dict:
    cfg = json.loads(e.images.content.read(rec["id"]))
    hist = cfg.get("history") or []
    return {
        "Id": rec["id"],
        "RepoTags": [familiar(n) for n in rec.get("names", [])],
        "RepoDigests": [familiar(d) for d in rec.get("repoDigests", [])],
        "Parent": "", "Comment": (hist[-1].get("comment", "") if hist else ""),
        "Created": cfg.get("created", rec.get("created")),
        "Author": cfg.get("author", ""),
        "Config": cfg.get("config") or {},
        "Architecture": cfg.get("architecture", ""), "Variant": cfg.get("variant"), "Os": cfg.get("os", ""),
        "Size": rec.get("size", 0),
        "RootFS": {"Type": "layers", "Layers": rec.get("diffIds", [])},
        "Metadata": {"LastTagTime": rec.get("added", "")},
        "Manifest": rec["manifest"],
    }


def image_inspect(e: Engine, args) -> int:
    docs, errors = [], []
    for name in args.args:
        try:
            docs.append(inspect_doc(e, e.images.resolve(name)))
        except Exception as ex:  # noqa: BLE001 - reported per name, like docker
            errors.append(str(ex))
    return print_docs(docs, args.format, errors)


def tag(e: Engine, args) -> int:
    rec = e.images.resolve(args.args[0])
    ref = reference.parse(args.args[1])
    if ref.digest:
        raise ImageError("refusing to create a tag with a digest reference")
    e.images.tag(rec["id"], str(ref))
    from kobako.engine.events import emit
    emit(e.root, "image", "tag", rec["id"], {"name": str(ref)})
    return 0


def rmi(e: Engine, args) -> int:
    from kobako.image.gc import remove_image
    rc = 0
    for name in args.args:
        try:
            for line in remove_image(e, name, force=args.force):
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


def image_prune(e: Engine, args) -> int:
    from kobako.image.gc import prune_images
    removed, freed = prune_images(e, all_images=args.all)
    for line in removed:
        print(line)
    print(f"Total reclaimed space: {human_size(freed)}")
    return 0


def history_entries(e: Engine, rec: dict) -> list[tuple[dict, int]]:
    """The image's history, newest first, each with the size of the layer it made (0 for an
    empty layer); `history` and the API's /images/{name}/history both print it."""
    cfg = json.loads(e.images.content.read(rec["id"]))
    hist = list(reversed(cfg.get("history") or []))
    sizes = list(reversed([e.snapshots.size(c) for c in rec.get("chainIds", [])]))
    out, li = [], 0
    for h in hist:
        size = 0
        if not h.get("empty_layer"):
            size = sizes[li] if li < len(sizes) else 0
            li += 1
        out.append((h, size))
    return out


def history(e: Engine, args) -> int:
    rec = e.images.resolve(args.args[0])
    rows = []
    for i, (h, size) in enumerate(history_entries(e, rec)):
        ident = rec["id"].split(":")[1][:12] if i == 0 else "<missing>"
        by = h.get("created_by", "")
        if not args.no_trunc and len(by) > 45:
            by = by[:44] + "…"
        rows.append([ident, ago(h.get("created", "")), by, human_size(size), h.get("comment", "")])
    if args.quiet:
        print(rec["id"].split(":")[1][:12])
        return 0
    table(["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"], rows)
    return 0


def _archive_targets(e: Engine, names: list[str]) -> list[tuple[dict, list[str]]]:
    out = []
    for n in names:
        rec = e.images.resolve(n)
        if reference.looks_like_id(n) and not n.count(":") > 1:
            out.append((rec, list(rec.get("names", []))))
        else:
            out.append((rec, [str(reference.parse(n))]))
    return out


def save(e: Engine, args) -> int:
    from kobako.image import archive
    fmt = args.format or "docker-archive"
    if fmt not in ("docker-archive", "oci-archive"):
        raise ImageError(f"unknown --format {fmt!r}: use docker-archive or oci-archive")
    targets = _archive_targets(e, args.args)
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
    if args.input:
        try:
            src = open(args.input, "rb")
        except OSError as ex:
            raise ImageError(f"cannot open {args.input}: {ex.strerror}") from None
    else:
        src = sys.stdin.buffer
    from kobako.image.gc import undo_on_failure
    with src, undo_on_failure(e):
        names = archive.load(e.images, e.snapshots, src)
    for n in names:
        print(f"Loaded image: {familiar(n)}" if not reference.looks_like_id(n) else f"Loaded image ID: {n}")
    return 0


def _arg_list(ch: str, rest: str) -> list[str]:
    """CMD/ENTRYPOINT: a JSON array (exec form) or a string run by /bin/sh -c (shell form)."""
    if rest.startswith("["):
        try:
            v = json.loads(rest)
        except ValueError:
            raise ImageError(f"--change {ch!r}: not a JSON array") from None
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise ImageError(f"--change {ch!r}: expected a JSON array of strings")
        return v
    return ["/bin/sh", "-c", rest]


def parse_changes(changes: list[str], base: dict) -> dict:
    """`-c`/`--change` Dockerfile instructions for import and commit."""
    cfg = dict(base)
    for ch in changes:
        word, _, rest = ch.strip().partition(" ")
        word, rest = word.upper(), rest.strip()

        if word == "CMD":
            cfg["Cmd"] = _arg_list(ch, rest)
        elif word == "ENTRYPOINT":
            cfg["Entrypoint"] = _arg_list(ch, rest)
        elif word == "ENV":
            k, eq, v = rest.partition("=")
            if not eq:
                k, _, v = rest.partition(" ")
            env = [x for x in cfg.get("Env") or [] if not x.startswith(k.strip() + "=")]
            cfg["Env"] = env + [f"{k.strip()}={v.strip()}"]
        elif word == "WORKDIR":
            cfg["WorkingDir"] = rest
        elif word == "USER":
            cfg["User"] = rest
        elif word == "EXPOSE":
            ports = dict(cfg.get("ExposedPorts") or {})
            for p in rest.split():
                ports[p if "/" in p else p + "/tcp"] = {}
            cfg["ExposedPorts"] = ports
        elif word == "LABEL":
            k, _, v = rest.partition("=")
            cfg["Labels"] = {**(cfg.get("Labels") or {}), k.strip(): v.strip().strip('"')}
        elif word == "VOLUME":
            vols = dict(cfg.get("Volumes") or {})
            for v in (json.loads(rest) if rest.startswith("[") else rest.split()):
                vols[v] = {}
            cfg["Volumes"] = vols
        elif word == "STOPSIGNAL":
            cfg["StopSignal"] = rest
        else:
            raise ImageError(f"--change {ch!r}: {word} is not supported (CMD, ENTRYPOINT, ENV, EXPOSE, "
                             "LABEL, STOPSIGNAL, USER, VOLUME, WORKDIR)")
    return cfg


def import_(e: Engine, args) -> int:
    from kobako.image.build import import_source
    from kobako.image.unpack import gc_shield
    src = args.args[0]
    names = [str(reference.parse(args.args[1]))] if len(args.args) > 1 else []
    if src != "-" and not os.path.exists(src):
        raise ImageError(f"cannot import {src}: no such file or directory")
    changes = parse_changes(args.change, {})
    from kobako.image.gc import undo_on_failure
    with undo_on_failure(e), gc_shield(e.root):
        rec = import_source(e.images, e.snapshots, src, names, changes, args.message or "")
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
        TLS], min_args=1, max_args=1), pull),
    "push": (Command("push", "[OPTIONS] NAME[:TAG] [DESTINATION]", "Upload an image to a registry", [
        opt("-q --quiet", "quiet", help="print nothing"), TLS], min_args=1, max_args=2), push),
    "images": (Command("images", "[OPTIONS] [REPOSITORY[:TAG]]", "List images", [
        opt("-a --all", "all", help="show all images (kobako keeps no intermediate images)"),
        opt("-q --quiet", "quiet", help="only show image IDs"),
        opt("--digests", "digests", help="show digests"),
        opt("--no-trunc", "no_trunc", help="do not truncate IDs"), FORMAT], max_args=1), images),
    "image inspect": (Command("image inspect", "[OPTIONS] IMAGE [IMAGE...]",
                              "Display detailed information on one or more images", [
                                  opt("-f --format", "format", "str", None, "Go template")], min_args=1),
                      image_inspect),
    "tag": (Command("tag", "SOURCE_IMAGE[:TAG] TARGET_IMAGE[:TAG]", "Give an image another name",
                    min_args=2, max_args=2), tag),
    "rmi": (Command("rmi", "[OPTIONS] IMAGE [IMAGE...]", "Remove one or more images", [
        opt("-f --force", "force", help="remove even if containers use it / it has several names"),
        opt("--no-prune", "no_prune", help="accepted for docker compatibility")], min_args=1), rmi),
    "image prune": (Command("image prune", "[OPTIONS]", "Remove unused images", [
        opt("-a --all", "all", help="remove all images no container uses, not just untagged ones"),
        opt("-f --force", "force", help="do not prompt for confirmation")], max_args=0), image_prune),
    "history": (Command("history", "[OPTIONS] IMAGE", "Show the history of an image", [
        opt("--no-trunc", "no_trunc", help="do not truncate output"),
        opt("-q --quiet", "quiet", help="only show image IDs"),
        opt("-H --human", "human", help="human-readable sizes and dates (default)")], min_args=1, max_args=1),
                history),
    "save": (Command("save", "[OPTIONS] IMAGE [IMAGE...]", "Save images to a tar archive (stdout by default)",
                     [opt("-o --output", "output", "str", None, "write to a file instead of stdout"),
                      opt("--format", "format", "str", None, "docker-archive (default) or oci-archive")],
                     min_args=1), save),
    "load": (Command("load", "[OPTIONS]", "Load images from a tar archive (docker-archive or OCI)", [
        opt("-i --input", "input", "str", None, "read from a file instead of stdin"),
        opt("-q --quiet", "quiet", help="suppress progress output")], max_args=0), load),
    "import": (Command("import", "[OPTIONS] file|URL|-|DIRECTORY [REPOSITORY[:TAG]]",
                       "Create an image from a tarball or a host directory (such as /)", [
                           opt("-c --change", "change", "list", None, "apply a Dockerfile instruction"),
                           opt("-m --message", "message", "str", None, "commit message"),
                           opt("-q --quiet", "quiet", help="print nothing but the image ID"),
                           opt("--platform", "platform", "str", None, "accepted; the host's is used")],
                       min_args=1, max_args=2), import_),
    "login": (Command("login", "[OPTIONS] [SERVER]", "Log in to a registry", [
        opt("-u --username", "username", "str", None, "username"),
        opt("-p --password", "password", "str", None, "password"),
        opt("--password-stdin", "password_stdin", help="take the password from stdin"), TLS], max_args=1),
              login),
    "logout": (Command("logout", "[SERVER]", "Log out from a registry", max_args=1), logout),
}
