"""linux.resources -> cgroup v1 files, one hierarchy per controller (runc's fs/)."""

from __future__ import annotations

import os

from kobako.runtime.errors import RuntimeFailure

# Always allowed, whatever the rules say: runc's default set (and Docker's). A
# container without /dev/null or a pty is not one anybody can use.
DEFAULT_ALLOW = ["c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm", "c 5:0 rwm",
                 "c 5:1 rwm", "c 5:2 rwm", "c 136:* rwm", "c 10:200 rwm"]


def write(d: str, name: str, value: object) -> None:
    # Without O_CREAT: cgroupfs answers a create of a file it lacks with EACCES, which
    # would hide the real reason (this kernel has no such file) behind "Permission denied".
    try:
        fd = os.open(os.path.join(d, name), os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
        try:
            os.write(fd, str(value).encode())
        finally:
            os.close(fd)
    except FileNotFoundError:
        raise RuntimeFailure(f"this kernel's cgroup has no {name}",
                             "drop that setting from linux.resources") from None
    except OSError as e:
        raise RuntimeFailure(f"cannot set {name} to {value} in {d}: {e.strerror}",
                             _hint(name, e.errno)) from None


def _hint(name: str, err: int) -> str | None:
    if name.startswith("memory") and err in (16, 22):
        return "a memory limit must be above what the container already uses, and memory+swap >= memory"
    if name.startswith("cpuset") and err in (22, 28, 13):
        return "those CPUs or memory nodes do not exist on this machine (or not in the parent cgroup)"
    return None


def device_rule(r: dict) -> tuple[bool, str]:
    """An OCI device rule -> (allow?, 'type major:minor access') as devices.allow takes it."""
    typ = r.get("type") or "a"
    major = "*" if r.get("major") in (None, -1) else r["major"]
    minor = "*" if r.get("minor") in (None, -1) else r["minor"]
    access = r.get("access") or "rwm"
    if typ == "a":
        return bool(r.get("allow")), "a"
    return bool(r.get("allow")), f"{typ} {major}:{minor} {access}"


def apply(ctrls: set[str], d: str, res: dict) -> None:
    """Write every resource this hierarchy's controllers take."""
    mem = res.get("memory") or {}
    if "memory" in ctrls and mem:
        if mem.get("useHierarchy") is not None:
            write(d, "memory.use_hierarchy", int(bool(mem["useHierarchy"])))
        _memory_limits(d, mem.get("limit"), mem.get("swap"))
        if mem.get("reservation") is not None:
            write(d, "memory.soft_limit_in_bytes", mem["reservation"])
        if mem.get("kernelTCP") is not None:
            write(d, "memory.kmem.tcp.limit_in_bytes", mem["kernelTCP"])
        if mem.get("swappiness") is not None:
            write(d, "memory.swappiness", mem["swappiness"])
        if mem.get("disableOOMKiller"):
            write(d, "memory.oom_control", 1)
    cpu = res.get("cpu") or {}
    if "cpu" in ctrls and cpu:
        if cpu.get("shares"):
            write(d, "cpu.shares", cpu["shares"])
        if cpu.get("period"):
            write(d, "cpu.cfs_period_us", cpu["period"])
        if cpu.get("quota") is not None and cpu["quota"] != 0:
            write(d, "cpu.cfs_quota_us", cpu["quota"])
        if cpu.get("realtimePeriod"):
            write(d, "cpu.rt_period_us", cpu["realtimePeriod"])
        if cpu.get("realtimeRuntime"):
            write(d, "cpu.rt_runtime_us", cpu["realtimeRuntime"])
        if cpu.get("idle") is not None and os.path.exists(os.path.join(d, "cpu.idle")):
            write(d, "cpu.idle", cpu["idle"])
    if "cpuset" in ctrls and cpu:
        if cpu.get("cpus"):
            write(d, "cpuset.cpus", cpu["cpus"])
        if cpu.get("mems"):
            write(d, "cpuset.mems", cpu["mems"])
    pids = res.get("pids") or {}
    if "pids" in ctrls and "limit" in pids:
        write(d, "pids.max", "max" if pids["limit"] <= 0 else pids["limit"])
    bio = res.get("blockIO") or {}
    if "blkio" in ctrls and bio:
        has_cfq = os.path.exists(os.path.join(d, "blkio.weight"))
        weight_file = "blkio.weight" if has_cfq else "blkio.bfq.weight"  # cfq is gone since 5.0
        if bio.get("weight"):
            write(d, weight_file, bio["weight"])
        for wd in bio.get("weightDevice") or []:
            if wd.get("weight"):
                write(d, weight_file + "_device", f"{wd['major']}:{wd['minor']} {wd['weight']}")
        for key, name in (("throttleReadBpsDevice", "read_bps_device"),
                          ("throttleWriteBpsDevice", "write_bps_device"),
                          ("throttleReadIOPSDevice", "read_iops_device"),
                          ("throttleWriteIOPSDevice", "write_iops_device")):
            for t in bio.get(key) or []:
                write(d, "blkio.throttle." + name, f"{t['major']}:{t['minor']} {t['rate']}")
    for h in res.get("hugepageLimits") or []:
        if "hugetlb" in ctrls:
            write(d, f"hugetlb.{h['pageSize']}.limit_in_bytes", h["limit"])
    net = res.get("network") or {}
    if "net_cls" in ctrls and net.get("classID") is not None:
        write(d, "net_cls.classid", net["classID"])
    if "net_prio" in ctrls:
        for p in net.get("priorities") or []:
            write(d, "net_prio.ifpriomap", f"{p['name']} {p['priority']}")
    if "devices" in ctrls and res.get("devices") is not None:
        apply_devices(d, res["devices"])


def apply_devices(d: str, rules: list[dict]) -> None:
    """Deny everything, then replay the rules in order, then the defaults on top."""
    write(d, "devices.deny", "a")
    for r in rules:
        allow, rule = device_rule(r)
        if rule == "a":
            write(d, "devices.allow" if allow else "devices.deny", "a")
        else:
            write(d, "devices.allow" if allow else "devices.deny", rule)
    for rule in DEFAULT_ALLOW:
        write(d, "devices.allow", rule)


def _memory_limits(d: str, limit: int | None, swap: int | None) -> None:
    """memsw (memory+swap) may never be below memory: if raising both, memsw goes
    first, if lowering, memory does; trying one order and then the other does both."""
    order = [(n, v) for n, v in (("memory.limit_in_bytes", limit), ("memory.memsw.limit_in_bytes", swap))
             if v is not None and os.path.exists(os.path.join(d, n))]
    try:
        for name, v in order:
            write(d, name, v)
    except RuntimeFailure:
        for name, v in reversed(order):
            write(d, name, v)
