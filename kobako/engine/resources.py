"""A container's resource limits after create: `docker update`, `kobako update`.

Changes are given in Docker's HostConfig vocabulary (Memory, MemorySwap, CpuShares, ...),
the API's update body as it comes and what the CLI's flags mean. They are checked first,
then applied to the running container's cgroup through the runtime, written into the
bundle's config.json (so the next start has them) and into the record's `hostConfig`
(which inspect shows). A stopped container is updated too: its limits apply at its next
start, as dockerd's do.
"""

from __future__ import annotations

import json
import os

from kobako import errors
from kobako.engine.records import ContainerConflict

MIN_MEMORY = 6 << 20  # dockerd's minimum memory limit
INT_FIELDS = ("Memory", "MemorySwap", "MemoryReservation", "NanoCpus", "CpuShares", "CpuPeriod", "CpuQuota",
              "PidsLimit", "BlkioWeight")
STR_FIELDS = ("CpusetCpus", "CpusetMems")
RESTART_POLICIES = ("", "no", "always", "unless-stopped", "on-failure")


def check(changes: dict) -> dict:
    """The fields of an update body that change something, type- and range-checked (Docker's
    messages). Zero values and absent fields leave a limit as it is; -1 lifts Memory,
    MemorySwap and PidsLimit."""
    out: dict = {}
    for k in INT_FIELDS:
        v = changes.get(k)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int):
            raise errors.InvalidArgument(f"{k} must be an integer, not {json.dumps(v)}")
        if v:
            out[k] = v
    for k in STR_FIELDS:
        v = changes.get(k)
        if v in (None, ""):
            continue
        if not isinstance(v, str):
            raise errors.InvalidArgument(f"{k} must be a string, not {json.dumps(v)}")
        _check_cpuset(k, v)
        out[k] = v
    mem = out.get("Memory")
    if mem is not None and mem != -1 and not MIN_MEMORY <= mem:
        raise errors.InvalidArgument("Minimum memory limit allowed is 6MB")
    swap = out.get("MemorySwap")
    if swap is not None and swap < -1:
        raise errors.InvalidArgument(f"invalid MemorySwap {swap}: -1 (unlimited) or a size in bytes")
    if swap not in (None, -1) and mem not in (None, -1) and swap < mem:
        raise errors.InvalidArgument("Minimum memoryswap limit should be larger than memory limit, "
                                     "see usage")
    res = out.get("MemoryReservation")
    if res is not None and res < MIN_MEMORY:
        raise errors.InvalidArgument("Minimum memory reservation allowed is 6MB")
    for k in ("CpuShares", "CpuPeriod", "NanoCpus"):
        if out.get(k, 0) < 0:
            raise errors.InvalidArgument(f"{k} cannot be negative")
    if out.get("CpuQuota", 0) < -1:
        raise errors.InvalidArgument("CpuQuota: -1 (unlimited) or microseconds per period")
    if "NanoCpus" in out and ("CpuQuota" in out or "CpuPeriod" in out):
        raise errors.InvalidArgument("Conflicting options: Nano CPUs and CPU Period/Quota cannot both be set")
    ncpu = os.cpu_count() or 1
    if out.get("NanoCpus", 0) > ncpu * 10**9:
        raise errors.InvalidArgument(f"Range of CPUs is from 0.01 to {ncpu}.00, as there are only {ncpu} "
                                     "CPUs available")
    if "BlkioWeight" in out and not 10 <= out["BlkioWeight"] <= 1000:
        raise errors.InvalidArgument("Range of blkio weight is from 10 to 1000")
    rp = changes.get("RestartPolicy")
    if rp:
        if not isinstance(rp, dict):
            raise errors.InvalidArgument("RestartPolicy must be an object {Name, MaximumRetryCount}")
        name, n = rp.get("Name") or "", rp.get("MaximumRetryCount") or 0
        if name not in RESTART_POLICIES:
            raise errors.InvalidArgument(f"invalid restart policy {name!r}: no, always, unless-stopped or "
                                         "on-failure")
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise errors.InvalidArgument("MaximumRetryCount must be a non-negative integer")
        if n and name != "on-failure":
            raise errors.InvalidArgument(f"maximum retry count cannot be used with restart policy '{name}'")
        out["RestartPolicy"] = {"Name": name or "no", "MaximumRetryCount": n}
    return out


def _check_cpuset(field: str, v: str) -> None:
    """0-3,5: ranges and numbers; each CPU (or memory node) must exist on this host."""
    have = os.cpu_count() or 1
    if field == "CpusetMems":
        have = len([n for n in os.listdir("/sys/devices/system/node") if n.startswith("node")]) \
            if os.path.isdir("/sys/devices/system/node") else 1
    for part in v.split(","):
        lo, dash, hi = part.partition("-")
        if not lo.isdigit() or dash and not hi.isdigit() or dash and int(hi) < int(lo):
            name = "cpuset cpus" if field == "CpusetCpus" else "cpuset mems"
            raise errors.InvalidArgument(f"Invalid value {v} for {name}")
        if int(hi if dash else lo) >= have:
            what = "CPUs" if field == "CpusetCpus" else "memory nodes"
            raise errors.InvalidArgument(f"Requested {what} are not available - requested {v}, available: "
                                         f"0-{have - 1}")


def update(e, rec: dict, changes: dict) -> None:
    """Apply `changes` (Docker's names, already or not yet checked) to the container."""
    ch = check(changes)
    if not ch:
        return
    if "RestartPolicy" in ch and (rec.get("options") or {}).get("autoRemove") \
            and ch["RestartPolicy"]["Name"] != "no":
        raise errors.InvalidArgument("Restart policy cannot be updated because AutoRemove is enabled for "
                                     "the container")
    st = e.state(rec)
    if st == "restarting":
        raise ContainerConflict(f"Cannot update container {rec['id']}: the container is restarting")
    cfg_path = os.path.join(rec.get("bundle") or e.containers.path(rec["id"], "bundle"), "config.json")
    try:
        with open(cfg_path) as f:
            spec = json.load(f)
    except (OSError, ValueError):
        raise ContainerConflict(f"container {rec['name']} has no bundle to update (it is being removed)") \
            from None
    res = ((spec.setdefault("linux", {})).setdefault("resources", {}))
    mem = res.get("memory") or {}
    hc = dict(ch)  # what inspect shows: Docker's values (0 where a limit was lifted)
    if "Memory" in ch and "MemorySwap" not in ch:
        old_limit, old_swap = mem.get("limit"), mem.get("swap")
        if ch["Memory"] == -1 or old_swap is None:
            ch["MemorySwap"] = -1  # memory+swap may never be below memory: lifted with it
        elif old_swap == old_limit:  # no swap allowed: still none
            ch["MemorySwap"] = hc["MemorySwap"] = ch["Memory"]
        elif ch["Memory"] > old_swap:
            raise errors.InvalidArgument("Memory limit should be smaller than already set memoryswap limit, "
                                         "update the memoryswap at the same time")
    if hc.get("Memory") == -1:
        hc["Memory"] = 0
    if hc.get("PidsLimit", 0) < 0:
        hc["PidsLimit"] = 0
    flags = _runtime_flags(ch)
    if flags and st in ("running", "paused"):
        from kobako.runtime.errors import RuntimeFailure
        try:
            e.runtime(["update", *flags, rec["id"]])
        except RuntimeFailure as ex:
            raise errors.InvalidArgument(f"Cannot update container {rec['id']}: {ex}") from None
    _into_spec(res, ch)
    from kobako.paths import atomic_write
    atomic_write(cfg_path, json.dumps(spec).encode(), durable=False)
    if "NanoCpus" in ch:  # the one CPU limit in force: the other form no longer holds
        hc.update(CpuQuota=0, CpuPeriod=0)
    elif "CpuQuota" in ch or "CpuPeriod" in ch:
        hc["NanoCpus"] = 0
    extra: dict = {"hostConfig": lambda old: {**(old or {}), **hc}}
    if "RestartPolicy" in ch:
        extra["restartPolicy"] = ch["RestartPolicy"]  # what the monitor reads
    e.containers.update(rec["id"], **extra)
    e.event(rec, "update")


def _runtime_flags(ch: dict) -> list[str]:
    flags: list[str] = []
    for key, flag in (("Memory", "--memory"), ("MemorySwap", "--memory-swap"),
                      ("MemoryReservation", "--memory-reservation"), ("CpuShares", "--cpu-shares"),
                      ("CpuQuota", "--cpu-quota"), ("CpuPeriod", "--cpu-period"),
                      ("CpusetCpus", "--cpuset-cpus"), ("CpusetMems", "--cpuset-mems"),
                      ("BlkioWeight", "--blkio-weight")):
        if key in ch:
            flags += [flag, str(ch[key])]
    if "NanoCpus" in ch:
        flags += ["--cpu-period", "100000", "--cpu-quota", str(ch["NanoCpus"] * 100000 // 10**9 or 1000)]
    if "PidsLimit" in ch:
        flags += ["--pids-limit", str(ch["PidsLimit"] if ch["PidsLimit"] > 0 else -1)]
    return flags


def _into_spec(res: dict, ch: dict) -> None:
    """The changes into config.json's linux.resources: -1 (lifted) removes a limit."""
    def put(section: str, key: str, v: object) -> None:
        sec = res.setdefault(section, {})
        if v == -1:
            sec.pop(key, None)
        else:
            sec[key] = v
    for k, (sec, key) in {"Memory": ("memory", "limit"), "MemorySwap": ("memory", "swap"),
                          "MemoryReservation": ("memory", "reservation"), "CpuShares": ("cpu", "shares"),
                          "CpuQuota": ("cpu", "quota"), "CpuPeriod": ("cpu", "period"),
                          "CpusetCpus": ("cpu", "cpus"), "CpusetMems": ("cpu", "mems"),
                          "BlkioWeight": ("blockIO", "weight")}.items():
        if k in ch:
            put(sec, key, ch[k])
    if "NanoCpus" in ch:
        put("cpu", "period", 100000)
        put("cpu", "quota", ch["NanoCpus"] * 100000 // 10**9 or 1000)
    if "PidsLimit" in ch:
        put("pids", "limit", ch["PidsLimit"] if ch["PidsLimit"] > 0 else -1)


def check_running_for_rate(e, rec: dict) -> None:
    if e.state(rec) not in ("running", "paused") or (rec.get("net") or {}).get("mode") != "bridge":
        raise ContainerConflict(f"container {rec['name']} is not running on a bridge network")


def set_net_rate(e, rec: dict, rate: int) -> None:
    """kobako's own limit: the bandwidth of the container's bridge link each way (bits/s, 0 lifts it)."""
    check_running_for_rate(e, rec)
    from kobako.network.endpoints import Endpoints
    Endpoints(e.root, e.run_dir).set_rate(rec["id"], rate)
    e.containers.update(rec["id"], net={**rec["net"], "rate": rate or None})  # kept for restarts
