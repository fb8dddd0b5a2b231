"""kobako-runtime update: change (or lift) a running container's limits, with runc's
flags or a linux.resources JSON (-r)."""

from __future__ import annotations

import sys

from kobako.runtime import jsonfast, spec, state
from kobako.runtime.cgroups import manager_for
from kobako.runtime.errors import RuntimeFailure

UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(flag: str, value: str) -> int:
    """512m, 1g, 1048576, -1 (no limit) -> bytes."""
    v = value.strip().lower()
    if v in ("-1", "max"):
        return -1
    v = v.removesuffix("b")
    num, unit = (v[:-1], v[-1]) if v and v[-1] in "kmgt" else (v, "")
    try:
        n = float(num)
    except ValueError:
        raise RuntimeFailure(f"--{flag} {value!r} is not a size", "use a number with k, m or g") from None
    return int(n * UNITS[unit])


def resources_from(args) -> dict:
    if args.resources:
        try:
            raw = sys.stdin.buffer.read() if args.resources == "-" else open(args.resources, "rb").read()
            res = jsonfast.loads(raw)
        except (OSError, ValueError) as e:
            raise RuntimeFailure(f"cannot read resources from {args.resources}: {e}") from None
        return res
    res: dict = {}
    mem = {k: parse_size(flag, getattr(args, attr)) for k, flag, attr in (
        ("limit", "memory", "memory"), ("reservation", "memory-reservation", "memory_reservation"),
        ("swap", "memory-swap", "memory_swap")) if getattr(args, attr) is not None}
    if mem:
        res["memory"] = mem
    cpu = {k: getattr(args, attr) for k, attr in (
        ("quota", "cpu_quota"), ("period", "cpu_period"), ("shares", "cpu_shares"),
        ("realtimePeriod", "cpu_rt_period"), ("realtimeRuntime", "cpu_rt_runtime"),
        ("cpus", "cpuset_cpus"), ("mems", "cpuset_mems")) if getattr(args, attr) is not None}
    if cpu:
        res["cpu"] = cpu
    if args.pids_limit is not None:
        res["pids"] = {"limit": args.pids_limit}
    if args.blkio_weight is not None:
        res["blockIO"] = {"weight": args.blkio_weight}
    return res


def run(args, log) -> int:
    c = state.open_existing(args.root, args.id)
    st = c.status()
    if st not in ("created", "running", "paused"):
        raise RuntimeFailure(f"cannot update container {args.id!r}: it is {st}")
    res = resources_from(args)
    if not res:
        raise RuntimeFailure("update: nothing to change", "give a flag such as --memory or -r FILE")
    try:
        spec.validate_resources(res)
    except RuntimeFailure as e:  # the same checks as create, worded for update
        raise RuntimeFailure(str(e.args[0]).replace("invalid config.json: ", "update: "), e.hint) from None
    manager_for(c.data).apply(res)
    return 0
