"""kobako system df / prune / check."""

from __future__ import annotations

from kobako.cli.output import human_size, table
from kobako.cli.parser import Command, opt
from kobako.engine.lifecycle import Engine


def df(e: Engine, args) -> int:
    from kobako.image.gc import disk_usage
    u = disk_usage(e)
    rows = []
    for kind in ("Images", "Containers", "Local Volumes", "Build Cache"):
        d = u[kind]
        pct = f" ({100 * d['reclaimable'] // d['size']}%)" if d["size"] else ""
        rows.append([kind, str(d["total"]), str(d["active"]), human_size(d["size"]),
                     human_size(d["reclaimable"]) + pct])
    table(["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"], rows)
    return 0


def prune(e: Engine, args) -> int:
    from kobako.engine import images, networks
    from kobako.image.gc import collect
    removed = e.remove_orphans()
    for rec in e.containers.all():
        if e.runtime_state(rec["id"]) in ("running", "paused", "created"):
            continue
        e.remove(rec, force=True)
        removed.append(rec["id"])
    if removed:
        print("Deleted Containers:\n" + "\n".join(removed) + "\n")
    nets = networks.prune(e)
    if nets:
        print("Deleted Networks:\n" + "\n".join(nets) + "\n")
    from kobako.cli.images import prune_lines
    entries, freed = images.prune(e, {}, all_images=args.all)
    for line in prune_lines(entries):
        print(line)
    from kobako.image.buildcache import BuildCache, CacheMounts
    BuildCache(e.root).clear()  # the build cache goes too, as docker's system prune
    freed += CacheMounts(e.root).clear() + collect(e, wait=True)
    if args.volumes:
        from kobako.storage.volumes import VolumeStore
        vs = VolumeStore(e.root)
        names, vfreed = vs.prune(vs.in_use(e.containers.all()))
        if names:
            print("Deleted Volumes:\n" + "\n".join(names) + "\n")
        freed += vfreed
    print(f"Total reclaimed space: {human_size(freed)}")
    return 0


def check(e: Engine | None, args) -> int:
    """The host preflight (engine/hostcheck.py): one line per check, the fix under each that
    is not ok; exit 1 when a default `kobako run` cannot work here, else 0 (warnings too)."""
    import sys

    from kobako.engine import hostcheck
    if args.format not in (None, "json"):
        from kobako.errors import InvalidArgument
        raise InvalidArgument(f"unknown --format {args.format!r}: json, or none for text")
    results = hostcheck.run_checks()
    failed = [r for r in results if r.status == hostcheck.FAIL]
    if args.format == "json":
        import json
        sys.stdout.write(json.dumps([r.as_json() for r in results], indent=2) + "\n")
        return 1 if failed else 0
    sys.stdout.write(render_check(results))
    return 1 if failed else 0


def render_check(results: list) -> str:
    width = max(len(r.name) for r in results)
    lines = []
    for r in results:
        lines.append(f"{r.status:<5} {r.name:<{width}}  {r.detail}")
        if r.status != "ok" and r.fix:
            lines.append(f"{'':<5} {'':<{width}}  fix: {r.fix}")
    failed = sum(r.status == "FAIL" for r in results)
    warned = sum(r.status == "warn" for r in results)
    if failed:
        lines.append(f"\n{failed} problem(s) stop a default `kobako run` here (FAIL above); "
                     f"{warned} warning(s) concern some features only.")
    else:
        more = f"; {warned} warning(s) concern some features only." if warned else "."
        lines.append("\nkobako can run here" + more)
    return "\n".join(lines) + "\n"


COMMANDS = {
    "system df": (Command("system df", "", "Show disk usage of images, containers and volumes", [
        opt("-v --verbose", "verbose", help="show details")], max_args=0), df),
    "system prune": (Command("system prune", "[OPTIONS]",
                             "Remove stopped containers, unused images and unreferenced blobs", [
                                 opt("-a --all", "all", help="also images with names that no container uses"),
                                 opt("-f --force", "force", help="do not prompt for confirmation"),
                                 opt("--volumes", "volumes", help="prune volumes too")], max_args=0), prune),
    "system check": (Command("system check", "[OPTIONS]",
                             "Check this host for what kobako needs, and say how to fix what is missing", [
                                 opt("--format", "format", "str", None,
                                     "json: a list of {name, status, detail, fix}, for scripts")],
                             max_args=0), check),
}
