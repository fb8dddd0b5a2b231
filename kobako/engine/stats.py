"""A container's resource usage (`docker stats`): one sample in Docker's stats JSON, from
its cgroup (cpu in ns, memory in bytes, pids) and its network namespace's counters. CPU %
needs two samples: the caller keeps the previous one."""

from __future__ import annotations

import os
import time


def cgroup_sample(e, rec: dict) -> dict | None:
    """The runtime's cgroup statistics; None when the container is not running."""
    from kobako.runtime import state
    from kobako.runtime.cgroups import stats
    c = state.Container(e.runtime_root, rec["id"])
    try:
        c.load()
    except Exception:  # noqa: BLE001 - not running: no stats
        return None
    return stats.collect(c.data.get("_cgroup") or {}, int(c.data.get("pid") or 0))


def net_io(pid: int) -> dict[str, dict[str, int]]:
    """Per-interface counters of a process's network namespace (/proc/PID/net/dev), lo left out."""
    out: dict[str, dict[str, int]] = {}
    try:
        with open(f"/proc/{pid}/net/dev") as f:
            lines = f.read().splitlines()[2:]
    except OSError:
        return out
    for line in lines:
        name, _, rest = line.partition(":")
        v = rest.split()
        if name.strip() == "lo" or len(v) < 16:
            continue
        out[name.strip()] = {"rx_bytes": int(v[0]), "rx_packets": int(v[1]), "rx_errors": int(v[2]),
                             "rx_dropped": int(v[3]), "tx_bytes": int(v[8]), "tx_packets": int(v[9]),
                             "tx_errors": int(v[10]), "tx_dropped": int(v[11])}
    return out


def host_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def sample(e, rec: dict, pre: dict | None = None) -> dict:
    """Docker's stats JSON now; `pre`, the previous sample (or None), gives precpu_stats."""
    data = cgroup_sample(e, rec) or {}
    cpu = (data.get("cpu") or {}).get("usage", {})
    mem = (data.get("memory") or {}).get("usage", {})
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:8]
    system_ns = sum(int(x) for x in fields) * 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    limit = mem.get("limit", 0)
    if not limit or limit >= 1 << 60:
        limit = host_memory()
    now = time.time()
    doc = {"read": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e9):09d}Z",
           "name": "/" + rec["name"], "id": rec["id"],
           "pids_stats": {"current": (data.get("pids") or {}).get("current", 0)},
           "cpu_stats": {"cpu_usage": {"total_usage": cpu.get("total", 0),
                                       "usage_in_kernelmode": cpu.get("kernel", 0),
                                       "usage_in_usermode": cpu.get("user", 0)},
                         "system_cpu_usage": system_ns, "online_cpus": os.cpu_count() or 1,
                         "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}},
           "memory_stats": {"usage": mem.get("usage", 0), "max_usage": mem.get("max", 0), "limit": limit,
                            "stats": {}},
           "blkio_stats": {"io_service_bytes_recursive":
                           (data.get("blkio") or {}).get("ioServiceBytesRecursive") if data else None},
           "networks": {}}
    pid = rec.get("pid") or 0
    if data and pid and (rec.get("net") or {}).get("mode") not in (None, "host"):
        doc["networks"] = net_io(int(pid))
    zero = {"cpu_usage": {"total_usage": 0}, "system_cpu_usage": 0, "online_cpus": os.cpu_count() or 1}
    doc["precpu_stats"] = (pre or {}).get("cpu_stats") or zero
    doc["preread"] = (pre or {}).get("read", "0001-01-01T00:00:00Z")
    return doc


def cpu_percent(doc: dict) -> float:
    """docker stats' CPU %: the container's share of the host's CPU time between two samples,
    times the number of CPUs."""
    cur, pre = doc["cpu_stats"], doc["precpu_stats"]
    dc = cur["cpu_usage"]["total_usage"] - pre["cpu_usage"]["total_usage"]
    ds = cur["system_cpu_usage"] - pre["system_cpu_usage"]
    if dc <= 0 or ds <= 0 or not pre["system_cpu_usage"]:
        return 0.0
    return dc / ds * cur.get("online_cpus", 1) * 100.0
