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
    if args.verbose:
        verbose_df(e, u["Build Cache"]["size"])
        return 0
    table(["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"], rows)
    return 0


def verbose_df(e: Engine, cache_size: int) -> None:
    """`system df -v`, docker's sections: each image with the bytes it shares with other
    images and those only it holds, each container's writable layer, each volume with the
    containers that use it, the build cache."""
    from kobako.engine import images as engine_images
    from kobako.engine.views import ago, container_status
    from kobako.image.buildcache import BuildCache
    from kobako.image.reference import familiar
    from kobako.paths import dir_size
    from kobako.storage.volumes import VolumeStore
    recs = e.containers.all()
    listing = engine_images.listing(e, {})
    holders: dict[str, int] = {}  # chain ID -> how many images have that layer
    for r, _ in listing:
        for c in set(r.get("chainIds", [])):
            holders[c] = holders.get(c, 0) + 1
    rows = []
    for r, names in listing:
        chains = set(r.get("chainIds", []))
        size = sum(e.snapshots.size(c) for c in chains)
        shared = sum(e.snapshots.size(c) for c in chains if holders[c] > 1)
        users = sum(1 for c in recs if c.get("image") == r["id"])
        cells = [ago(r["created"]), human_size(size), human_size(shared), human_size(size - shared),
                 str(users)]
        short = r["id"].split(":")[1][:12]
        for n in names or ["<none>:<none>"]:
            repo, _, tag = (familiar(n) if names else n).rpartition(":")
            rows.append([repo, tag, short] + cells)
    print("Images space usage:\n")
    table(["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE", "SHARED SIZE", "UNIQUE SIZE", "CONTAINERS"],
          rows)
    vs = VolumeStore(e.root)
    rows = []
    for c in recs:
        argv = list((c.get("options") or {}).get("command") or [])
        cmd = " ".join(argv)
        rows.append([c["id"][:12], c.get("imageName", ""), f'"{cmd[:19] + "…" if len(cmd) > 20 else cmd}"',
                     str(len(vs.in_use([c]))),
                     human_size(dir_size(e.containers.path(c["id"], "upper"), allocated=True)),
                     ago(c["created"]) if c.get("created") else "", container_status(c, e.state(c)),
                     c["name"]])
    print("\nContainers space usage:\n")
    table(["CONTAINER ID", "IMAGE", "COMMAND", "LOCAL VOLUMES", "SIZE", "CREATED", "STATUS", "NAMES"], rows)
    rows = []
    for v in vs.list():
        links = sum(1 for c in recs if v["Name"] in vs.in_use([c]))
        rows.append([v["Name"], str(links), human_size(dir_size(vs.mountpoint(v["Name"]), allocated=True))])
    print("\nLocal Volumes space usage:\n")
    table(["VOLUME NAME", "LINKS", "SIZE"], rows)
    rows = []
    for key, ce in BuildCache(e.root).all():
        size = e.snapshots.size(ce["chainId"]) if ce.get("chainId") else 0
        last = ce.get("lastUsed")
        # shared: an image holds the same layer, so clearing the cache frees nothing of it
        rows.append([key[:12], "regular", human_size(size), "", ago_epoch(last) if last else "", "",
                     str(ce.get("chainId") in holders).lower()])
    print(f"\nBuild cache usage: {human_size(cache_size)}\n")
    table(["CACHE ID", "CACHE TYPE", "SIZE", "CREATED", "LAST USED", "USAGE", "SHARED"], rows)


def ago_epoch(t: float) -> str:
    import time

    from kobako.engine.views import ago
    return ago(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)))


def prune(e: Engine, args) -> int:
    from kobako.cli.output import confirmed
    what = ["all stopped containers", "all networks not used by at least one container"]
    if args.volumes:
        what.append("all anonymous volumes not used by at least one container")
    what += ["all images without at least one container associated to them" if args.all
             else "all dangling images", "all build cache"]
    if not confirmed(args.force, "This will remove:\n" + "".join(f"  - {w}\n" for w in what)):
        return 0
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
    "system df": (Command("system df", "[OPTIONS]", "Show disk usage of images, containers and volumes", [
        opt("-v --verbose", "verbose", help="each image, container, volume and build cache entry")],
                          max_args=0), df),
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
