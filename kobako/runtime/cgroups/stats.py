"""cgroup statistics shaped like runc's `events --stats` (libcontainer's types.Stats),
read from v1 or v2 files, and the OOM-kill counter that `events` watches."""

from __future__ import annotations

import os


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _int(path: str) -> int:
    s = _read(path).strip()
    if s == "max":
        return 2**64 - 1
    try:
        return int(s)
    except ValueError:
        return 0


def _kv(path: str) -> dict[str, int]:
    out = {}
    for line in _read(path).splitlines():
        k, _, v = line.partition(" ")
        try:
            out[k] = int(v)
        except ValueError:
            pass
    return out


def collect(rec: dict) -> dict:
    data: dict = {"cpu": {"usage": {}, "throttling": {}}, "memory": {"usage": {}, "raw": {}},
                  "pids": {}, "blkio": {}, "hugetlb": {}}
    for leaf in rec.get("leaves") or []:
        d, ctrls = leaf["dir"], set(leaf["ctrls"].split(","))
        if leaf["v"] == 1:
            if "cpuacct" in ctrls:
                st = _kv(os.path.join(d, "cpuacct.stat"))
                tick = 10_000_000  # USER_HZ 100 -> ns
                data["cpu"]["usage"].update({
                    "total": _int(os.path.join(d, "cpuacct.usage")),
                    "percpu": [int(x) for x in _read(os.path.join(d, "cpuacct.usage_percpu")).split()],
                    "kernel": st.get("system", 0) * tick, "user": st.get("user", 0) * tick})
            if "cpu" in ctrls:
                t = _kv(os.path.join(d, "cpu.stat"))
                data["cpu"]["throttling"] = {"periods": t.get("nr_periods", 0),
                                             "throttled_periods": t.get("nr_throttled", 0),
                                             "throttled_time": t.get("throttled_time", 0)}
            if "memory" in ctrls:
                data["memory"]["usage"] = {
                    "usage": _int(os.path.join(d, "memory.usage_in_bytes")),
                    "max": _int(os.path.join(d, "memory.max_usage_in_bytes")),
                    "limit": _int(os.path.join(d, "memory.limit_in_bytes")),
                    "failcnt": _int(os.path.join(d, "memory.failcnt"))}
                data["memory"]["raw"] = _kv(os.path.join(d, "memory.stat"))
            if "pids" in ctrls:
                data["pids"] = {"current": _int(os.path.join(d, "pids.current")),
                                "limit": _int(os.path.join(d, "pids.max"))}
        elif rec.get("layout") == "v2":
            cs = _kv(os.path.join(d, "cpu.stat"))
            data["cpu"]["usage"] = {"total": cs.get("usage_usec", 0) * 1000,
                                    "kernel": cs.get("system_usec", 0) * 1000,
                                    "user": cs.get("user_usec", 0) * 1000}
            data["cpu"]["throttling"] = {"periods": cs.get("nr_periods", 0),
                                         "throttled_periods": cs.get("nr_throttled", 0),
                                         "throttled_time": cs.get("throttled_usec", 0) * 1000}
            data["memory"]["usage"] = {"usage": _int(os.path.join(d, "memory.current")),
                                       "max": _int(os.path.join(d, "memory.peak")),
                                       "limit": _int(os.path.join(d, "memory.max")),
                                       "failcnt": _kv(os.path.join(d, "memory.events")).get("max", 0)}
            data["memory"]["raw"] = _kv(os.path.join(d, "memory.stat"))
            data["pids"] = {"current": _int(os.path.join(d, "pids.current")),
                            "limit": _int(os.path.join(d, "pids.max"))}
    return data


def oom_kills(rec: dict) -> int:
    """How many processes the kernel's OOM killer ended in this cgroup so far."""
    for leaf in rec.get("leaves") or []:
        if leaf["v"] == 1 and "memory" in leaf["ctrls"].split(","):
            return _kv(os.path.join(leaf["dir"], "memory.oom_control")).get("oom_kill", 0)
        if leaf["v"] == 2 and rec.get("layout") == "v2":
            return _kv(os.path.join(leaf["dir"], "memory.events")).get("oom_kill", 0)
    return 0
