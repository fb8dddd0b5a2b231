"""kobako-runtime events: cgroup statistics (--stats: once) and OOM kills, as runc's
JSON lines: {"type": "stats"|"oom", "id": ..., "data": {...}}."""

from __future__ import annotations

import sys
import time

from kobako.runtime import jsonfast, state
from kobako.runtime.cgroups import stats
from kobako.runtime.errors import RuntimeFailure


def parse_interval(v: str) -> float:
    """runc takes Go durations: 5s, 500ms, 1m; a bare number is seconds."""
    num, scale = v, 1.0
    for suffix, factor in (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)):
        if v.endswith(suffix):
            num, scale = v[: -len(suffix)], factor
            break
    try:
        secs = float(num) * scale
    except ValueError:
        raise RuntimeFailure(f"--interval {v!r} is not a duration", "use e.g. 5s or 500ms") from None
    if secs <= 0:
        raise RuntimeFailure("--interval must be positive")
    return secs


def run(args, log) -> int:
    c = state.open_existing(args.root, args.id, lock=False)
    if c.status() == "stopped":
        raise RuntimeFailure(f"container {args.id!r} is not running")
    rec = c.data.get("_cgroup") or {}
    if args.stats:
        print(jsonfast.dumps({"type": "stats", "id": args.id, "data": stats.collect(rec)}))
        return 0
    interval = parse_interval(args.interval)
    ooms = stats.oom_kills(rec)
    while c.init_alive():
        now = stats.oom_kills(rec)
        if now > ooms:
            print(jsonfast.dumps({"type": "oom", "id": args.id}))
            ooms = now
        print(jsonfast.dumps({"type": "stats", "id": args.id, "data": stats.collect(rec)}))
        sys.stdout.flush()
        time.sleep(interval)
    return 0
