"""Container commands: run, rm, ps, commit, export, diff. (The monitor-backed ones —
run -d, logs, exec, stop, attach — come with the engine issue.)"""

from __future__ import annotations

import os
import sys

from kobako.cli.output import ago, familiar, formatted, table
from kobako.cli.parser import Command, opt
from kobako.engine import ocispec
from kobako.engine.lifecycle import Engine
from kobako.engine.records import ContainerError
from kobako.image import reference
from kobako.image.store import ImageError, ImageNotFound


def _image_for_run(e: Engine, name: str, pull_policy: str, quiet: bool) -> dict:
    if pull_policy == "always":
        return _pull(e, name, quiet)
    try:
        return e.images.resolve(name)
    except ImageNotFound:
        if pull_policy == "never" or reference.looks_like_id(name):
            raise
        sys.stderr.write(f"Unable to find image '{familiar(str(reference.parse(name)))}' locally\n")
        return _pull(e, name, quiet)


def _pull(e: Engine, name: str, quiet: bool) -> dict:
    from kobako.image.gc import undo_on_failure
    from kobako.image.pull import pull
    with undo_on_failure(e):
        return pull(e.images, e.snapshots, reference.parse(name))


def _volumes(specs: list[str]) -> list[tuple[str, str, bool]]:
    out = []
    for v in specs:
        parts = v.split(":")
        if len(parts) < 2 or len(parts) > 3 or not parts[1].startswith("/"):
            raise ocispec.OptionError(f"invalid volume specification {v!r}: "
                                      "use HOST-PATH:CONTAINER-PATH[:ro]")
        src, dest = parts[0], parts[1]
        mode = parts[2] if len(parts) == 3 else "rw"
        if not src.startswith("/"):
            raise ocispec.OptionError(f"{v!r}: named volumes come with the engine issue; give an absolute "
                                      "host path")
        out.append((src, dest, "ro" in mode.split(",")))
    return out


def run(e: Engine, args) -> int:
    if args.detach:
        raise ContainerError("run -d needs the container monitor, which is not built yet; run in the "
                             "foreground for now")
    if args.network not in ("none", "host", "bridge", "default"):
        raise ContainerError(f"network {args.network!r} is not available yet (none or host)")
    opts = ocispec.RunOptions(
        command=args.args[1:], entrypoint=[args.entrypoint] if args.entrypoint else None,
        env=_env(args), workdir=args.workdir, user=args.user, hostname=args.hostname,
        tty=args.tty and sys.stdin.isatty(), read_only=args.read_only,
        network="host" if args.network == "host" else "none",
        memory=ocispec.parse_size(args.memory) if args.memory else None, binds=_volumes(args.volume))
    img = _image_for_run(e, args.args[0], args.pull or "missing", args.quiet)
    rec = e.create(img, args.args[0], opts, args.name, remove=args.rm)
    return e.run_foreground(rec, remove=args.rm)


def _env(args) -> list[str]:
    env = []
    for f in args.env_file:
        try:
            with open(f) as fh:
                env += [ln.strip() for ln in fh if ln.strip() and not ln.lstrip().startswith("#")]
        except OSError as ex:
            raise ocispec.OptionError(f"cannot read env file {f}: {ex.strerror}") from None
    return env + list(args.env)


def rm(e: Engine, args) -> int:
    rc = 0
    for ref in args.args:
        try:
            rec = e.containers.resolve(ref)
            e.remove(rec, force=args.force)
            print(ref)
        except Exception as ex:  # noqa: BLE001 - one message per container, like docker
            from kobako.cli.main import describe
            sys.stderr.write(f"Error: {describe(ex)}\n")
            rc = 1
    return rc


def _status(e: Engine, rec: dict) -> tuple[str, str]:
    st = e.runtime_state(rec["id"])
    if st in ("running", "paused"):
        return st, "Up" + (" (Paused)" if st == "paused" else "")
    if rec.get("status") == "exited" or st == "stopped":
        return "exited", f"Exited ({rec.get('exitCode', 0)}) {ago(rec.get('finished', ''))}"
    return "created", "Created"


def ps(e: Engine, args) -> int:
    rows = []
    for rec in e.containers.all():
        state, status = _status(e, rec)
        if not args.all and state not in ("running", "paused"):
            continue
        cmd = " ".join((rec.get("options") or {}).get("command") or [])
        rows.append({"ID": rec["id"] if args.no_trunc else rec["id"][:12],
                     "Image": familiar(rec["imageName"]),
                     "Command": f'"{cmd if args.no_trunc or len(cmd) < 20 else cmd[:19] + "…"}"',
                     "CreatedAt": rec["created"], "RunningFor": ago(rec["created"]), "Status": status,
                     "State": state, "Ports": "", "Names": rec["name"]})
    if args.quiet:
        for r in rows:
            print(r["ID"])
        return 0
    if args.format:
        formatted(args.format, rows, {"ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND",
                                      "RunningFor": "CREATED", "Status": "STATUS", "Ports": "PORTS",
                                      "Names": "NAMES"})
        return 0
    table(["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"],
          [[r["ID"], r["Image"], r["Command"], r["RunningFor"], r["Status"], r["Ports"], r["Names"]]
           for r in rows])
    return 0


def commit(e: Engine, args) -> int:
    import json

    from kobako.cli.images import parse_changes
    from kobako.image.build import layer_from_dir, new_image
    from kobako.image.unpack import gc_shield
    rec = e.containers.resolve(args.args[0])
    names = [str(reference.parse(args.args[1]))] if len(args.args) > 1 else []
    base = e.images.get(rec["image"])
    if base is None:
        raise ImageError(f"the image of container {rec['name']} was removed; cannot commit")
    base_cfg = json.loads(e.images.content.read(base["id"])).get("config") or {}
    changes = parse_changes(args.change, base_cfg)
    hist = {"created_by": "kobako commit " + (args.message and f"-m {args.message!r} " or "") + rec["name"]}
    if args.message:
        hist["comment"] = args.message
    extra = {"author": args.author} if args.author else {}
    from kobako.image.gc import undo_on_failure
    with undo_on_failure(e), gc_shield(e.root):
        layer = layer_from_dir(e.images.content, e.containers.path(rec["id"], "upper"), diff=True)
        img = new_image(e.images, e.snapshots, base, [layer], changes, hist, names, extra)
    print(img["id"])
    return 0


def diff(e: Engine, args) -> int:
    from kobako.storage.changes import changes
    rec = e.containers.resolve(args.args[0])
    lowers = [e.snapshots.fs(c) for c in reversed(rec["chainIds"])]
    for kind, path in changes(e.containers.path(rec["id"], "upper"), lowers):
        print(f"{kind} {path}")
    return 0


def export(e: Engine, args) -> int:
    from kobako.storage import layer
    from kobako.storage.mounts import merged_view
    rec = e.containers.resolve(args.args[0])
    if not args.output and sys.stdout.isatty():
        raise ContainerError("refusing to write an archive to a terminal: use -o FILE or redirect stdout")
    mount = e.snapshots.mount_for(rec["chainIds"], e.containers.path(rec["id"], "upper"),
                                  e.containers.path(rec["id"], "work"))
    out = open(args.output + ".kobako-tmp", "wb") if args.output else sys.stdout.buffer
    try:
        merged_view(mount, lambda root: layer.write_tree(root, out))
        if args.output:
            out.close()
            os.replace(args.output + ".kobako-tmp", args.output)
    except BaseException:
        if args.output:
            out.close()
            os.unlink(args.output + ".kobako-tmp")
        raise
    return 0


RUN_OPTS = [
    opt("-d --detach", "detach", help="run in the background (needs the monitor: not built yet)"),
    opt("-i --interactive", "interactive", help="keep stdin open"),
    opt("-t --tty", "tty", help="allocate a pseudo-terminal"),
    opt("--rm", "rm", help="remove the container when it exits"),
    opt("--name", "name", "str", None, "name the container"),
    opt("-e --env", "env", "list", None, "set an environment variable"),
    opt("--env-file", "env_file", "list", None, "read environment variables from a file"),
    opt("-w --workdir", "workdir", "str", None, "working directory inside the container"),
    opt("-u --user", "user", "str", None, "user[:group] or uid[:gid]"),
    opt("--entrypoint", "entrypoint", "str", None, "override the image's entrypoint"),
    opt("-h --hostname", "hostname", "str", None, "container host name"),
    opt("--read-only", "read_only", help="mount the root filesystem read-only"),
    opt("--network --net", "network", "str", "none", "none or host (bridge networking: networking issue)"),
    opt("-m --memory", "memory", "str", None, "memory limit (e.g. 64m)"),
    opt("-v --volume", "volume", "list", None, "bind mount HOST-PATH:CONTAINER-PATH[:ro]"),
    opt("--pull", "pull", "str", None, "missing (default), always or never"),
    opt("-q --quiet", "quiet", help="do not print pull progress"),
]
COMMANDS = {
    "run": (Command("run", "[OPTIONS] IMAGE [COMMAND] [ARG...]",
                    "Create and run a new container from an image", RUN_OPTS, interspersed=False,
                    min_args=1), run),
    "rm": (Command("rm", "[OPTIONS] CONTAINER [CONTAINER...]", "Remove one or more containers", [
        opt("-f --force", "force", help="kill a running container first"),
        opt("-v --volumes", "volumes", help="remove anonymous volumes too")], min_args=1), rm),
    "ps": (Command("ps", "[OPTIONS]", "List containers", [
        opt("-a --all", "all", help="show all containers (default: running ones)"),
        opt("-q --quiet", "quiet", help="only IDs"),
        opt("--no-trunc", "no_trunc", help="do not truncate output"),
        opt("--format", "format", "str", None, "json, table TEMPLATE or a Go template")], max_args=0), ps),
    "commit": (Command("commit", "[OPTIONS] CONTAINER [REPOSITORY[:TAG]]",
                       "Create a new image from a container's changes", [
                           opt("-a --author", "author", "str", None, "author"),
                           opt("-c --change", "change", "list", None, "apply a Dockerfile instruction"),
                           opt("-m --message", "message", "str", None, "commit message"),
                           opt("-p --pause", "pause", "bool", True, "accepted for docker compatibility")],
                       min_args=1, max_args=2), commit),
    "diff": (Command("diff", "CONTAINER", "Show a container's changes to its image's files (A, C, D)",
                     min_args=1, max_args=1), diff),
    "export": (Command("export", "[OPTIONS] CONTAINER", "Write a container's filesystem as a tar archive", [
        opt("-o --output", "output", "str", None, "write to a file instead of stdout")],
                       min_args=1, max_args=1), export),
}
