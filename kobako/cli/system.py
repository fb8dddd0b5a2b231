"""kobako system df / prune / info."""

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


COMMANDS = {
    "system df": (Command("system df", "", "Show disk usage of images, containers and volumes", [
        opt("-v --verbose", "verbose", help="show details")], max_args=0), df),
    "system prune": (Command("system prune", "[OPTIONS]",
                             "Remove stopped containers, unused images and unreferenced blobs", [
                                 opt("-a --all", "all", help="also images with names that no container uses"),
                                 opt("-f --force", "force", help="do not prompt for confirmation"),
                                 opt("--volumes", "volumes", help="prune volumes too")], max_args=0), prune),
}
