#!/usr/bin/python3 -I
"""kobako's networking against podman's (netavark) and docker's bridge, in one run:

1. start latency: `run --rm IMAGE true` on each engine's default bridge network,
   interleaved, medians, as ratios to podman (goal: kobako <= 0.25x);
2. throughput into a container through a published port (DNAT) against straight to the
   container's address, both from the host (goal: >= 0.9x);
3. 100 containers on one bridge: the start time of the 100th against the first ones.

kobako runs with a private data root (its own bridge and nft table, removed at the end).
podman runs with runc and the ulimits this VM needs (ANCHORS.md); docker through a private
dockerd (bench/dockerd.py) whose default network is a bridge this benchmark makes, with
dockerd's iptables management off. Never part of the test run's pass/fail.

usage: bench/network.py [-n RUNS] [--containers N] [--megabytes MB]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dockerd  # noqa: E402
from engine import rootfs_tar, sh  # noqa: E402

KOBAKO = shutil.which("kobako") or "kobako"
PODMAN_RUN = ["podman", "run", "--rm", "--runtime", "runc",
              "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768"]
IMAGE = "bench/busybox:1"


def kobako(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return sh(KOBAKO, *argv, check=check)


def latency(n: int, docker_sock: str | None) -> None:
    cmds = {"kobako": [KOBAKO, "run", "--rm", IMAGE, "true"],
            "podman": PODMAN_RUN + [f"localhost/{IMAGE}", "true"]}
    if docker_sock:
        cmds["docker"] = ["docker", "-H", f"unix://{docker_sock}", "run", "--rm", IMAGE, "true"]
    for argv in cmds.values():
        sh(*argv)
    times: dict[str, list[float]] = {k: [] for k in cmds}
    order = list(cmds)
    for i in range(n):
        for k in (order if i % 2 == 0 else order[::-1]):
            t0 = time.monotonic()
            sh(*cmds[k])
            times[k].append((time.monotonic() - t0) * 1000)
    pod = statistics.median(times["podman"])
    print(f"1. start latency, `run --rm {IMAGE} true` on the default bridge, medians of {n}:")
    for k, ts in times.items():
        m = statistics.median(ts)
        print(f"   {k:<7} {m:7.1f} ms   {m / pod:5.2f}x podman")
    if "docker" not in times:
        print("   docker  not measured (no docker CLI)")
    else:
        print("   (docker: a private dockerd on a bridge of the benchmark's, without its iptables rules)")


def _send(addr: tuple[str, int], total: int) -> float:
    """Seconds to push `total` bytes to addr (the server reads and discards)."""
    buf = b"\0" * (1 << 20)
    for _ in range(50):
        try:
            s = socket.create_connection(addr, timeout=5)
            break
        except OSError:
            time.sleep(0.1)
    else:
        sys.exit(f"cannot connect to {addr}")
    t0 = time.monotonic()
    sent = 0
    while sent < total:
        s.sendall(buf)
        sent += len(buf)
    s.shutdown(socket.SHUT_WR)
    s.recv(1)  # the server closes once it has read everything
    s.close()
    return time.monotonic() - t0


def throughput(mb: int) -> None:
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    hp = port.getsockname()[1]
    port.close()
    name = "bench-sink"
    # a sink: reads everything, then closes (busybox nc -l exits at EOF)
    kobako("run", "-d", "--name", name, "-p", f"127.0.0.1:{hp}:5000", IMAGE,
           "sh", "-c", "while true; do nc -l -p 5000 > /dev/null; done")
    try:
        import json
        ip = json.loads(kobako("inspect", name).stdout)[0]["NetworkSettings"]["IPAddress"]
        total = mb << 20
        _send(("127.0.0.1", hp), 64 << 20)  # warm-up
        res: dict[str, list[float]] = {"published": [], "direct": []}
        for _ in range(3):
            res["published"].append(total / _send(("127.0.0.1", hp), total) / 1e6)
            res["direct"].append(total / _send((ip, 5000), total) / 1e6)
        pub, direct = statistics.median(res["published"]), statistics.median(res["direct"])
        print(f"\n2. throughput host -> container, {mb} MB, medians of 3:")
        print(f"   through 127.0.0.1:{hp} (DNAT)   {pub:8.0f} MB/s")
        print(f"   straight to {ip}:5000     {direct:8.0f} MB/s")
        print(f"   published / direct             {pub / direct:8.2f}x")
    finally:
        kobako("rm", "-f", name, check=False)


def many(n: int) -> None:
    names = [f"bench-many-{i}" for i in range(n)]
    times = []
    try:
        for name in names:
            t0 = time.monotonic()
            kobako("run", "-d", "--name", name, IMAGE, "sleep", "3600")
            times.append((time.monotonic() - t0) * 1000)
        first = statistics.median(times[:10])
        last = statistics.median(times[-10:])
        print(f"\n3. {n} containers on one bridge, `run -d` each:")
        print(f"   1st {times[0]:6.1f} ms; median of the first 10 {first:6.1f} ms, "
              f"of the last 10 {last:6.1f} ms; {n}th {times[-1]:6.1f} ms")
        print(f"   last 10 / first 10: {last / first:.2f}x")
    finally:
        for name in names:
            kobako("rm", "-f", name, check=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=15)
    ap.add_argument("--containers", type=int, default=100)
    ap.add_argument("--megabytes", type=int, default=1024)
    a = ap.parse_args()
    d = tempfile.mkdtemp(prefix="bench-net.")
    os.environ["KOBAKO_ROOT"], os.environ["KOBAKO_RUN"] = f"{d}/data", f"{d}/run"
    holder = "bench-net-holder"
    dproc, dsock, bridge = None, None, "kbtdock0"
    try:
        tar = rootfs_tar(d)
        kobako("import", tar, IMAGE)
        sh("podman", "import", tar, IMAGE)
        if shutil.which("docker"):
            # dockerd on a bridge the benchmark makes (and removes): its default network without
            # its iptables rules, so the host's firewall is never touched
            sh("ip", "link", "add", bridge, "type", "bridge")
            sh("ip", "addr", "add", "10.223.0.1/24", "dev", bridge)
            sh("ip", "link", "set", bridge, "up")
            dproc, dsock = dockerd.start(f"{d}/docker", bridge)
            sh("docker", "-H", f"unix://{dsock}", "import", tar, IMAGE)
        # podman's bridge takes 10.88.0.0/16 too: keep it up while kobako's default network
        # is made, so kobako picks a subnet that does not overlap it
        sh(*[x for x in PODMAN_RUN if x != "--rm"], "-d", "--name", holder, f"localhost/{IMAGE}",
           "sleep", "60")
        kobako("run", "--rm", IMAGE, "true")
        sh("podman", "rm", "-f", "-t", "0", holder, check=False)
        latency(a.n, dsock)
        throughput(a.megabytes)
        many(a.containers)
    finally:
        if dproc is not None:
            dockerd.stop(dproc, f"{d}/docker")
        sh("ip", "link", "del", bridge, check=False)
        sh("podman", "rm", "-f", "-t", "0", holder, check=False)
        kobako("system", "prune", "-af", check=False)
        sh("podman", "rmi", "-f", f"localhost/{IMAGE}", check=False)
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
