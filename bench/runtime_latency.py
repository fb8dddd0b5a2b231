#!/usr/bin/python3 -I
"""Start latency of `kobako-runtime run` against `runc run` and `crun run`.

One busybox bundle running /bin/true (config from `kobako-runtime spec`, terminal
off), each runtime invoked N times, interleaved (A B C, C B A, ...) so that noise
on a shared host hits all alike. Prints medians, ratios to runc, and peak RSS of
the runtime process (ru_maxrss from wait4).

crun 1.8 refuses this VM's hybrid cgroup layout, so the whole measurement runs in
a private mount namespace with /sys/fs/cgroup/unified unmounted (the three
runtimes see the same layout); `--host-layout` measures kobako and runc without it.

With --limits the config also carries a Docker-like default seccomp profile (default
ERRNO, every syscall of this architecture allowed but the ones Docker's profile
blocks) plus memory and pids limits: the runtime-limits issue's benchmark.

usage: bench/runtime_latency.py [-n RUNS] [--host-layout] [--limits] [--goal 0.6]
Needs: runc, crun, and GNU time (Debian packages runc crun time) for peak RSS.
Never part of the test run's pass/fail.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

# What Docker's default profile refuses (moby profiles/seccomp/default.json, x86_64).
DOCKER_BLOCKED = {
    "acct", "add_key", "bpf", "clock_adjtime", "clock_settime", "create_module", "delete_module",
    "finit_module", "get_kernel_syms", "get_mempolicy", "init_module", "ioperm", "iopl", "kcmp",
    "kexec_file_load", "kexec_load", "keyctl", "lookup_dcookie", "mbind", "mount", "mount_setattr",
    "move_mount", "move_pages", "name_to_handle_at", "nfsservctl", "open_by_handle_at", "open_tree",
    "fsopen", "fsconfig", "fsmount", "fspick", "perf_event_open", "personality", "pivot_root",
    "process_vm_readv", "process_vm_writev", "ptrace", "query_module", "quotactl", "quotactl_fd",
    "reboot", "request_key", "set_mempolicy", "setns", "settimeofday", "stime", "swapon", "swapoff",
    "sysfs", "_sysctl", "umount", "umount2", "unshare", "uselib", "userfaultfd", "ustat", "vm86",
    "vm86old",
}


def docker_like_profile() -> dict:
    """Default ERRNO; allow every syscall libseccomp knows for this arch but the blocked."""
    import ctypes

    lib = ctypes.CDLL("libseccomp.so.2")
    lib.seccomp_syscall_resolve_num_arch.restype = ctypes.c_void_p
    names = set()
    for nr in range(0, 512):
        p = lib.seccomp_syscall_resolve_num_arch(0, nr)  # 0: the native architecture
        if p:
            names.add(ctypes.string_at(p).decode())
            ctypes.CDLL(None).free(ctypes.c_void_p(p))
    allowed = sorted(names - DOCKER_BLOCKED)
    arch = {"x86_64": "SCMP_ARCH_X86_64", "aarch64": "SCMP_ARCH_AARCH64"}[os.uname().machine]
    return {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1, "architectures": [arch],
            "syscalls": [{"names": allowed, "action": "SCMP_ACT_ALLOW"}]}


def build_bundle(tmp: str, limits: bool = False) -> str:
    b = os.path.join(tmp, "bundle")
    r = os.path.join(b, "rootfs")
    for d in ("bin", "proc", "dev", "sys", "tmp", "etc", "root"):
        os.makedirs(os.path.join(r, d))
    shutil.copy("/bin/busybox", os.path.join(r, "bin/busybox"))
    for a in subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True).stdout.split():
        p = os.path.join(r, "bin", a)
        if not os.path.exists(p):
            os.symlink("busybox", p)
    subprocess.run(["kobako-runtime", "spec"], cwd=b, check=True)
    with open(os.path.join(b, "config.json")) as f:
        c = json.load(f)
    c["process"]["terminal"] = False
    c["process"]["args"] = ["/bin/true"]
    if limits:
        c["linux"]["seccomp"] = docker_like_profile()
        res = c["linux"].setdefault("resources", {})
        res.update({"memory": {"limit": 256 << 20}, "pids": {"limit": 512}})
    with open(os.path.join(b, "config.json"), "w") as f:
        json.dump(c, f)
    return b


def run_once(argv: list[str]) -> float:
    t0 = time.perf_counter()
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({p.returncode}): {p.stderr.decode(errors='replace')[-300:]}")
    return dt


def peak_rss_kb(argv: list[str]) -> int | None:
    """GNU time's %M: max RSS of the runtime and the children it waited for.
    (wait4 from this Python would count the forked copy of this interpreter.)"""
    if not os.path.exists("/usr/bin/time"):
        return None
    p = subprocess.run(["/usr/bin/time", "-f", "%M", *argv], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        return int(p.stderr.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None


def main() -> int:
    args = sys.argv[1:]
    n = int(args[args.index("-n") + 1]) if "-n" in args else 31
    goal = float(args[args.index("--goal") + 1]) if "--goal" in args else 0.6
    host_layout = "--host-layout" in args
    limits = "--limits" in args
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    if not host_layout and os.environ.get("KOBAKO_BENCH_INNER") != "1":
        # re-exec in a private mount namespace without the hybrid cgroup2 mount, for crun
        cmd = ("umount /sys/fs/cgroup/unified 2>/dev/null; "
               f"KOBAKO_BENCH_INNER=1 exec /usr/bin/python3 -I {os.path.abspath(__file__)} " + " ".join(args))
        return subprocess.call(["unshare", "-m", "--propagation", "private", "sh", "-c", cmd])
    runtimes = {"kobako-runtime": shutil.which("kobako-runtime"), "runc": shutil.which("runc")}
    if not host_layout and shutil.which("crun"):
        runtimes["crun"] = shutil.which("crun")
    missing = [k for k, v in runtimes.items() if not v]
    if missing:
        raise SystemExit(f"not installed: {', '.join(missing)} (apt-get install runc crun)")
    tmp = tempfile.mkdtemp(prefix="kobako-bench-")
    try:
        bundle = build_bundle(tmp, limits)
        names = list(runtimes)
        times: dict[str, list[float]] = {k: [] for k in names}
        rss: dict[str, int | None] = {}
        seq = 0
        for r in range(n + 2):
            order = names if r % 2 == 0 else list(reversed(names))
            for k in order:
                seq += 1
                argv = [runtimes[k], "--root", os.path.join(tmp, "state-" + k), "run",
                        "--bundle", bundle, f"bench-{os.getpid()}-{seq}"]
                dt = run_once(argv)
                if r >= 2:  # two warm-up rounds
                    times[k].append(dt)
        for k in names:
            rss[k] = peak_rss_kb([runtimes[k], "--root", os.path.join(tmp, "state-" + k), "run",
                                  "--bundle", bundle, f"bench-{os.getpid()}-rss"])
        base = statistics.median(times["runc"])
        layout = "host cgroup layout" if host_layout else "cgroup2 mount hidden (crun needs it)"
        what = ", Docker-like seccomp profile + memory and pids limits" if limits else ""
        print(f"run of /bin/true, busybox bundle{what}, {n} interleaved runs each, {layout}")
        print(f"{'runtime':<16}{'median ms':>10}{'x runc':>8}{'peak RSS MB':>13}")
        for k in names:
            med = statistics.median(times[k])
            mb = f"{rss[k] / 1024:.1f}" if rss[k] else "n/a"
            print(f"{k:<16}{med * 1000:>10.1f}{med / base:>8.2f}{mb:>13}")
        ratio = statistics.median(times["kobako-runtime"]) / base
        verdict = "met" if ratio <= goal else "not met"
        print(f"kobako-runtime / runc = {ratio:.2f} (goal <= {goal:.2f}: {verdict})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
