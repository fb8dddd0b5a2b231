"""Volume commands: volume create, ls, inspect, rm, prune (Docker's `local` driver).

The work is the engine's (engine/volumes.py), shared with the Docker API.
"""

from __future__ import annotations

import sys

from kobako.cli.containers import TRACE
from kobako.cli.output import confirmed, formatted, human_size, print_docs, table
from kobako.cli.parser import Command, opt, pairs
from kobako.engine import volumes
from kobako.engine.lifecycle import Engine
from kobako.storage.volumes import DRIVER, VolumeError

LS_HEADERS = {"Driver": "DRIVER", "Name": "VOLUME NAME", "Scope": "SCOPE", "Mountpoint": "MOUNTPOINT",
              "Labels": "LABELS", "Links": "LINKS", "Size": "SIZE"}


def _pairs(items: list[str]) -> dict[str, str]:
    return pairs(items, lambda it: VolumeError(f"invalid argument {it!r}: use KEY=VALUE"))


def create(e: Engine, args) -> int:
    if args.name and args.args:
        raise VolumeError("conflicting options: either specify --name or provide positional arg, not both")
    name = args.name or (args.args[0] if args.args else None)
    vol = volumes.create(e, name, args.driver, _pairs(args.label), _pairs(args.opt))
    print(vol["Name"])
    return 0


def ls(e: Engine, args) -> int:
    from kobako.engine import filters
    vols = volumes.listing(e, filters.from_args(args.filter, volumes.FILTERS))
    if args.quiet:
        for v in vols:
            print(v["Name"])
        return 0
    rows = [{"Name": v["Name"], "Driver": v.get("Driver", DRIVER), "Scope": v.get("Scope", "local"),
             "Mountpoint": v["Mountpoint"],
             "Labels": ",".join(f"{k}={x}" for k, x in sorted((v.get("Labels") or {}).items())),
             "Links": "N/A", "Size": "N/A", "Group": "N/A", "Availability": "N/A", "Status": "N/A"}
            for v in vols]
    if args.format:
        formatted(args.format, rows, LS_HEADERS)
        return 0
    table(["DRIVER", "VOLUME NAME"], [[r["Driver"], r["Name"]] for r in rows])
    return 0


def inspect(e: Engine, args) -> int:
    from kobako.engine.views import volume_doc
    store = volumes.store(e)
    docs, errors = [], []
    for name in args.args:
        try:
            docs.append(volume_doc(store.get(name)))
        except VolumeError as ex:
            errors.append(str(ex))
    return print_docs(docs, args.format, errors)


def rm(e: Engine, args) -> int:
    rc = 0
    for name in args.args:
        try:
            volumes.remove(e, name, force=args.force)
            print(name)
        except (VolumeError, OSError) as ex:  # one message per volume, like docker
            from kobako.errors import describe
            sys.stderr.write(f"Error: {describe(ex)}\n")
            rc = 1
    return rc


def prune(e: Engine, args) -> int:
    if not confirmed(args.force, f"This will remove {'all local' if args.all else 'anonymous local'} volumes "
                     "not used by at least one container."):
        return 0
    from kobako.engine import filters
    removed, freed = volumes.prune(e, filters.from_args(args.filter, volumes.PRUNE_FILTERS), args.all)
    if removed:
        print("Deleted Volumes:\n" + "\n".join(removed) + "\n")
    print(f"Total reclaimed space: {human_size(freed)}")
    return 0


FILTER = opt("-f --filter", "filter", "list", None, "filter output (e.g. dangling=true, label=K=V, name=N)")

COMMANDS = {
    "volume create": (Command("volume create", "[OPTIONS] [VOLUME]", "Create a volume", [
        opt("-d --driver", "driver", "str", DRIVER, 'volume driver name ("local")'),
        opt("--label", "label", "list", None, "set metadata on the volume (KEY=VALUE)"),
        opt("-o --opt", "opt", "list", None, "driver options: type, device, o (as mount(8))"),
        opt("--name", "name", "str", None, "the volume's name (or give it as the argument)"), TRACE],
        max_args=1),
        create),
    "volume ls": (Command("volume ls", "[OPTIONS]", "List volumes", [
        opt("-q --quiet", "quiet", help="only display volume names"),
        opt("--format", "format", "str", None, "format output: table, json or a Go template"),
        FILTER], max_args=0), ls),
    "volume inspect": (Command("volume inspect", "[OPTIONS] VOLUME [VOLUME...]",
                               "Display detailed information on one or more volumes", [
                                   opt("-f --format", "format", "str", None, "format output: a Go template")],
                               min_args=1), inspect),
    "volume rm": (Command("volume rm", "[OPTIONS] VOLUME [VOLUME...]",
                          "Remove one or more volumes (not one a container uses)",
                          [opt("-f --force", "force", help="no error for a volume that does not exist")],
                          min_args=1), rm),
    "volume prune": (Command("volume prune", "[OPTIONS]",
                             "Remove unused anonymous volumes (all unused ones with -a)", [
                                 opt("-a --all", "all", help="all unused volumes, not just anonymous ones"),
                                 opt("-f --force", "force", help="do not prompt for confirmation"),
                                 opt("--filter", "filter", "list", None, "label=K[=V], label!=K[=V]")],
                             max_args=0), prune),
}
