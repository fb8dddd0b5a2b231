#!/usr/bin/python3 -I
"""The engine against podman (and docker, when its daemon answers), in one run:

1. start latency: `run --rm --network none IMAGE true`, interleaved, medians;
2. resident cost per running container: PSS of every host process that serves the
   containers (kobako's monitor; podman's conmon; docker's containerd-shim), with N
   containers running `sleep`, divided by N.

The image is Debian's busybox-static as one layer, imported into each engine.
podman runs with runc and the ulimits this VM needs (ANCHORS.md); docker is measured only
if `docker info` works (start dockerd with --iptables=false --ip6tables=false
--bridge=none to keep it off the host's firewall).

With --userns, the latency part also runs each engine in a user namespace of its own:
kobako `--userns auto`, podman `--uidmap 0:1200000000:65536` (its `auto` needs a
"containers" entry in /etc/subuid, which this VM does not have).

usage: bench/engine.py [-n RUNS] [--containers N] [--userns]
Never part of the test run's pass/fail.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

KOBAKO = shutil.which("kobako") or "kobako"
PODMAN_RUN = ["podman", "run", "--rm", "--network", "none", "--runtime", "runc",
              "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768"]
IMAGE = "bench/busybox:1"


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    cp = subprocess.run(list(argv), capture_output=True, text=True)
    if check and cp.returncode != 0:
        sys.exit(f"failed: {' '.join(argv)}\n{cp.stderr}")
    return cp


def rootfs_tar(d: str) -> str:
    r = os.path.join(d, "rootfs")
    os.makedirs(os.path.join(r, "bin"))
    shutil.copy2("/bin/busybox", os.path.join(r, "bin", "busybox"))
    for a in sh("/bin/busybox", "--list").stdout.split():
        if a != "busybox":
            os.symlink("busybox", os.path.join(r, "bin", a))
    t = os.path.join(d, "rootfs.tar")
    sh("tar", "-C", r, "-cf", t, ".")
    return t


def docker_ok() -> bool:
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


def pss_of(match: str) -> tuple[int, int]:
    mine = os.readlink("/proc/self/ns/pid")
    total = count = 0
    for p in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{p}/ns/pid") != mine:
                continue
            cmd = open(f"/proc/{p}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
            if match not in cmd.split(" ")[0] and not cmd.startswith(match):
                continue
            total += next(int(x.split()[1]) for x in open(f"/proc/{p}/smaps_rollup") if x.startswith("Pss:"))
            count += 1
        except (OSError, StopIteration):
            continue
    return total, count


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=21)
    ap.add_argument("--containers", type=int, default=20)
    ap.add_argument("--userns", action="store_true", help="also in a user namespace")
    a = ap.parse_args()
    d = tempfile.mkdtemp(prefix="bench-engine.")
    try:
        tar = rootfs_tar(d)
        sh(KOBAKO, "import", tar, IMAGE)
        sh("podman", "import", tar, IMAGE)
        cmds = {"kobako": [KOBAKO, "run", "--rm", "--network", "none", IMAGE, "true"],
                "podman": PODMAN_RUN + [f"localhost/{IMAGE}", "true"]}
        if docker_ok():
            sh("docker", "import", tar, IMAGE)
            cmds["docker"] = ["docker", "run", "--rm", "--network", "none", IMAGE, "true"]
        if a.userns:
            cmds["kobako-userns"] = [KOBAKO, "run", "--rm", "--network", "none", "--userns", "auto",
                                     IMAGE, "true"]
            cmds["podman-userns"] = PODMAN_RUN + ["--uidmap", "0:1200000000:65536", f"localhost/{IMAGE}",
                                                  "true"]
        for argv in cmds.values():  # warm up
            sh(*argv)
        times: dict[str, list[float]] = {k: [] for k in cmds}
        order = list(cmds)
        for i in range(a.n):
            for k in (order if i % 2 == 0 else order[::-1]):
                t0 = time.monotonic()
                sh(*cmds[k])
                times[k].append((time.monotonic() - t0) * 1000)
        pod = statistics.median(times["podman"])
        print(f"start latency, `run --rm --network none {IMAGE} true`, medians of {a.n}:")
        for k, ts in times.items():
            m = statistics.median(ts)
            print(f"  {k:<13} {m:7.1f} ms   {m / pod:5.2f}x podman"
                  + (f", {m / statistics.median(times['podman-userns']):5.2f}x podman-userns"
                     if k == "kobako-userns" else ""))

        n = a.containers
        print(f"\nresident cost per running container ({n} x sleep), PSS:")
        names = [f"bench-mem-{i}" for i in range(n)]
        for name in names:
            sh(KOBAKO, "run", "-d", "--name", name, "--network", "none", IMAGE, "sleep", "600")
            detached = PODMAN_RUN[:2] + ["-d", "--name", name] + PODMAN_RUN[3:]  # without --rm
            sh(*detached, f"localhost/{IMAGE}", "sleep", "600")
        time.sleep(2)
        for label, match in (("kobako (shared monitor)", "kobako-monitor"),
                             ("podman (conmon)", "/usr/bin/conmon")):
            total, count = pss_of(match)
            print(f"  {label:<26} {count:3d} processes, {total / n:8.0f} kB per container")
        for name in names:
            sh(KOBAKO, "rm", "-f", name, check=False)
            sh("podman", "rm", "-f", "-t", "0", name, check=False)
    finally:
        sh(KOBAKO, "rmi", "-f", IMAGE, check=False)
        sh("podman", "rmi", "-f", f"localhost/{IMAGE}", check=False)
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
