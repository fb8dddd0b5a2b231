"""linux.resources -> cgroup v2 files in the one unified hierarchy (runc's fs2/),
with the OCI spec's v1-shaped values converted as runc and crun convert them."""

from __future__ import annotations

import os

from kobako.runtime.cgroups.v1 import write
from kobako.runtime.errors import RuntimeFailure

# Raw v2 files `linux.resources.unified` may set: a controller's own files only.
UNIFIED_PREFIXES = ("cpu.", "cpuset.", "memory.", "io.", "pids.", "hugetlb.", "rdma.", "misc.")


def shares_to_weight(shares: int) -> int:
    """cpu.shares 2..262144 -> cpu.weight 1..10000 (the formula runc and crun use)."""
    return 1 + ((shares - 2) * 9999) // 262142


def blkio_to_io_weight(weight: int) -> int:
    """blkio.weight 10..1000 -> io.weight 1..10000."""
    return 1 + (weight - 10) * 9999 // 990


def apply(d: str, res: dict) -> None:
    cpu = res.get("cpu") or {}
    if cpu.get("shares"):
        write(d, "cpu.weight", shares_to_weight(cpu["shares"]))
    if cpu.get("quota") is not None or cpu.get("period"):
        quota = cpu.get("quota")
        period = cpu.get("period") or 100000
        write(d, "cpu.max", f"{'max' if quota is None or quota <= 0 else quota} {period}")
    if cpu.get("idle") is not None:
        write(d, "cpu.idle", cpu["idle"])
    if cpu.get("cpus"):
        write(d, "cpuset.cpus", cpu["cpus"])
    if cpu.get("mems"):
        write(d, "cpuset.mems", cpu["mems"])
    mem = res.get("memory") or {}
    if mem.get("limit") is not None:
        write(d, "memory.max", "max" if mem["limit"] == -1 else mem["limit"])
    if mem.get("swap") is not None:
        # OCI's swap is memory+swap (v1's memsw); v2's memory.swap.max is swap alone
        swap, limit = mem["swap"], mem.get("limit")
        if swap == -1 or limit in (None, -1):
            value: object = "max"
        elif swap < limit:
            raise RuntimeFailure(f"memory+swap limit {swap} is below the memory limit {limit}")
        else:
            value = swap - limit
        if os.path.exists(os.path.join(d, "memory.swap.max")):
            write(d, "memory.swap.max", value)
    if mem.get("reservation") is not None:
        write(d, "memory.low", mem["reservation"])
    pids = res.get("pids") or {}
    if "limit" in pids:
        write(d, "pids.max", "max" if pids["limit"] <= 0 else pids["limit"])
    bio = res.get("blockIO") or {}
    if bio.get("weight"):
        write(d, "io.weight", blkio_to_io_weight(bio["weight"]))
    for wd in bio.get("weightDevice") or []:
        if wd.get("weight"):
            write(d, "io.weight", f"{wd['major']}:{wd['minor']} {blkio_to_io_weight(wd['weight'])}")
    for key, name in (("throttleReadBpsDevice", "rbps"), ("throttleWriteBpsDevice", "wbps"),
                      ("throttleReadIOPSDevice", "riops"), ("throttleWriteIOPSDevice", "wiops")):
        for t in bio.get(key) or []:
            write(d, "io.max", f"{t['major']}:{t['minor']} {name}={t['rate'] or 'max'}")
    for h in res.get("hugepageLimits") or []:
        write(d, f"hugetlb.{h['pageSize']}.max", h["limit"])
    for name, value in (res.get("unified") or {}).items():
        write(d, name, value)


def validate_unified(unified: dict) -> None:
    """Only a controller's own files, never a path or cgroup.* (that would move or
    reconfigure the cgroup itself)."""
    for name in unified:
        if "/" in name or not name.startswith(UNIFIED_PREFIXES):
            raise RuntimeFailure(f"invalid config.json: linux.resources.unified may not set {name!r}",
                                 "only files of the cpu, cpuset, memory, io, pids, hugetlb controllers")
