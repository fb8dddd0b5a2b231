"""Volume commands: volume create, ls, inspect, rm, prune (Docker's `local` driver).

Which containers use a volume is read from the container records ("volumes": [{"name", ...}]),
so a stopped container still holds its volumes, as in docker.
"""

from __future__ import annotations

import sys

from kobako.cli.output import formatted, human_size, print_docs, table
from kobako.cli.parser import Command, opt, pairs
from kobako.engine.lifecycle import Engine
from kobako.storage.volumes import DRIVER, VolumeError, VolumeStore

LS_HEADERS = {"Driver": "DRIVER", "Name": "VOLUME NAME", "Scope": "SCOPE", "Mountpoint": "MOUNTPOINT",
              "Labels": "LABELS", "Links": "LINKS", "Size": "SIZE"}


def _store(e: Engine) -> VolumeStore:
    return VolumeStore(e.root)


def _pairs(items: list[str]) -> dict[str, str]:
    return pairs(items, lambda it: VolumeError(f"invalid argument {it!r}: use KEY=VALUE"))


def _filters(items: list[str], allowed: tuple[str, ...]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for it in items:
        k, eq, v = it.partition("=")
        if not eq:
            raise VolumeError(f"bad format of filter {it!r} (expected name=value)")
        if k not in allowed:
            raise VolumeError(f"invalid filter '{k}' (this command takes {', '.join(allowed)})")
        out.setdefault(k, []).append(v)
    return out


def _label_match(vol: dict, wanted: list[str], negate: bool = False) -> bool:
    labels = vol.get("Labels") or {}

    def one(spec: str) -> bool:
        k, eq, v = spec.partition("=")
        return k in labels and (not eq or labels[k] == v)

    if negate:
        return not any(one(s) for s in wanted)
    return all(one(s) for s in wanted)


def _bool_filter(key: str, vals: list[str]) -> bool:
    v = vals[-1].lower()
    if v not in ("true", "false", "1", "0"):
        raise VolumeError(f"invalid filter '{key}={vals[-1]}': use true or false")
    return v in ("true", "1")


def inspect_doc(vol: dict) -> dict:
    """The shape of `docker volume inspect` (keys in docker's order: alphabetical)."""
    return {"CreatedAt": vol.get("CreatedAt", ""), "Driver": vol.get("Driver", DRIVER),
            "Labels": vol.get("Labels") or {}, "Mountpoint": vol["Mountpoint"], "Name": vol["Name"],
            "Options": vol.get("Options") or {}, "Scope": vol.get("Scope", "local")}


def create(e: Engine, args) -> int:
    if args.name and args.args:
        raise VolumeError("conflicting options: either specify --name or provide positional arg, not both")
    name = args.name or (args.args[0] if args.args else None)
    if args.driver != DRIVER:
        what = f"create {name}" if name else "create"
        raise VolumeError(f'{what}: error looking up volume plugin {args.driver}: plugin "{args.driver}" '
                          'not found (kobako has the "local" driver only)')
    vol = _store(e).create(name, _pairs(args.label), _pairs(args.opt))
    print(vol["Name"])
    return 0


def ls(e: Engine, args) -> int:
    flt = _filters(args.filter, ("dangling", "driver", "label", "name"))
    vols = _store(e).list()
    if "dangling" in flt:
        used = VolumeStore.in_use(e.containers.all())
        want = _bool_filter("dangling", flt["dangling"])
        vols = [v for v in vols if (v["Name"] not in used) == want]
    if "driver" in flt:
        vols = [v for v in vols if v.get("Driver", DRIVER) in flt["driver"]]
    if "name" in flt:
        vols = [v for v in vols if any(s in v["Name"] for s in flt["name"])]
    if "label" in flt:
        vols = [v for v in vols if _label_match(v, flt["label"])]
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
    store = _store(e)
    docs, errors = [], []
    for name in args.args:
        try:
            docs.append(inspect_doc(store.get(name)))
        except VolumeError as ex:
            errors.append(str(ex))
    return print_docs(docs, args.format, errors)


def rm(e: Engine, args) -> int:
    store = _store(e)
    records = e.containers.all()
    rc = 0
    for name in args.args:
        try:
            store.remove(name, VolumeStore.users(records, name), force=args.force)
            print(name)
        except (VolumeError, OSError) as ex:  # one message per volume, like docker
            from kobako.errors import describe
            sys.stderr.write(f"Error: {describe(ex)}\n")
            rc = 1
    return rc


def prune(e: Engine, args) -> int:
    flt = _filters(args.filter, ("all", "label", "label!"))
    everything = args.all or ("all" in flt and _bool_filter("all", flt["all"]))

    def match(vol: dict) -> bool:
        return ((not flt.get("label") or _label_match(vol, flt["label"]))
                and (not flt.get("label!") or _label_match(vol, flt["label!"], negate=True)))

    removed, freed = _store(e).prune(VolumeStore.in_use(e.containers.all()), all_volumes=everything,
                                     match=match)
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
        opt("--name", "name", "str", None, "the volume's name (or give it as the argument)")], max_args=1),
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
