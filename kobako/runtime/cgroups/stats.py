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


def collect(rec: dict, init: int = 0) -> dict:
    """rec: the container's cgroup record; init: its init's pid, for a container that has
    no cgroup (rootless, none delegated): then the figures are summed over the processes of
    its pid namespace (cpu time, resident memory, count), with no limits to show."""
    data: dict = {"cpu": {"usage": {}, "throttling": {}}, "memory": {"usage": {}, "raw": {}},
                  "pids": {}, "blkio": {}, "hugetlb": {}}
    if rec.get("layout") == "none":
        return _from_processes(data, init)
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
            if "blkio" in ctrls:
                data["blkio"] = {"ioServiceBytesRecursive": _blkio_v1(d)}
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
            data["blkio"] = {"ioServiceBytesRecursive": _io_v2(d)}
    return data


def _blkio_v1(d: str) -> list[dict]:
    """Bytes read and written per device (runc's ioServiceBytesRecursive): v1's throttle
    counters, which count every I/O (the CFQ ones only under that scheduler)."""
    text = _read(os.path.join(d, "blkio.throttle.io_service_bytes_recursive")) or \
        _read(os.path.join(d, "blkio.throttle.io_service_bytes"))
    out = []
    for line in text.splitlines():
        f = line.split()
        if len(f) == 3 and ":" in f[0] and f[2].isdigit():
            major, _, minor = f[0].partition(":")
            out.append({"major": int(major), "minor": int(minor), "op": f[1], "value": int(f[2])})
    return out


def _io_v2(d: str) -> list[dict]:
    """The same from v2's io.stat (`MAJ:MIN rbytes=N wbytes=N ...`)."""
    out = []
    for line in _read(os.path.join(d, "io.stat")).splitlines():
        f = line.split()
        if not f or ":" not in f[0]:
            continue
        major, _, minor = f[0].partition(":")
        kv = dict(x.split("=", 1) for x in f[1:] if "=" in x)
        for key, op in (("rbytes", "read"), ("wbytes", "write")):
            if kv.get(key, "").isdigit():
                out.append({"major": int(major), "minor": int(minor), "op": op, "value": int(kv[key])})
    return out


def _from_processes(data: dict, init: int) -> dict:
    from kobako.runtime.cgroups import _pidns_members
    tick = 1_000_000_000 // (os.sysconf("SC_CLK_TCK") or 100)
    page = os.sysconf("SC_PAGE_SIZE")
    user = system = rss = 0
    pids = _pidns_members(init)
    for pid in pids:
        stat = _read(f"/proc/{pid}/stat")
        fields = stat[stat.rfind(")") + 2:].split()  # after the command name, which may hold spaces
        if len(fields) > 12:
            user += int(fields[11])
            system += int(fields[12])
        statm = _read(f"/proc/{pid}/statm").split()
        if len(statm) > 1:
            rss += int(statm[1]) * page
    data["cpu"]["usage"] = {"total": (user + system) * tick, "user": user * tick, "kernel": system * tick}
    data["memory"]["usage"] = {"usage": rss, "max": 0, "limit": 0, "failcnt": 0}
    data["pids"] = {"current": len(pids), "limit": 0}
    return data


def oom_kills(rec: dict) -> int:
    """How many processes the kernel's OOM killer ended in this cgroup so far."""
    for leaf in rec.get("leaves") or []:
        if leaf["v"] == 1 and "memory" in leaf["ctrls"].split(","):
            return _kv(os.path.join(leaf["dir"], "memory.oom_control")).get("oom_kill", 0)
        if leaf["v"] == 2 and rec.get("layout") == "v2":
            return _kv(os.path.join(leaf["dir"], "memory.events")).get("oom_kill", 0)
    return 0
