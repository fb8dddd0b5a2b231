#!/usr/bin/python3 -I
"""The Docker API socket: kobako's `system service` against dockerd, in one run.

1. `docker run --rm --network none IMAGE true` through each socket (the same docker CLI),
   interleaved, medians (goal: kobako <= 0.5x dockerd);
2. request rate of `GET /containers/json` with N containers running, on each socket
   (goal: >= dockerd's).

dockerd, containerd and its shim are unpacked from Debian's docker.io and containerd
packages (never installed: their post-install would start system daemons) and run with
their own data roots and sockets, `--iptables=false --ip6tables=false --bridge=none
--ip-forward=false` so they never touch the host's firewall or sysctls, and are stopped
at the end. runc is Debian's.
kobako runs with a private data root. Never part of the test run's pass/fail.

usage: bench/api.py [-n RUNS] [--containers N] [--seconds S]
"""

from __future__ import annotations

import argparse
import http.client
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
IMAGE = "bench/busybox:1"


class Unix(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost")
        self.path_ = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(self.path_)


def rate(sock: str, seconds: float) -> float:
    c = Unix(sock)
    n, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        c.request("GET", "/v1.41/containers/json")
        r = c.getresponse()
        r.read()
        n += 1
    c.close()
    return n / seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=15)
    ap.add_argument("--containers", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=5)
    a = ap.parse_args()
    docker = shutil.which("docker")
    if docker is None:
        sys.exit("no docker CLI (scripts/test.sh unpacks Debian's)")
    d = tempfile.mkdtemp(prefix="bench-api.", dir="/var/tmp")
    procs: list[subprocess.Popen] = []
    env_k = {**os.environ, "KOBAKO_ROOT": f"{d}/kdata", "KOBAKO_RUN": f"{d}/krun"}
    try:
        dp, dsock = dockerd.start(d)
        procs.append(dp)
        ksock = f"{d}/kobako.sock"
        procs.append(subprocess.Popen([KOBAKO, "system", "service", "--socket", ksock], env=env_k,
                                      stdout=subprocess.DEVNULL, stderr=open(f"{d}/kobako.log", "w")))
        dockerd.wait_socket(ksock, procs[-1], "kobako system service")
        tar = rootfs_tar(d)
        socks = {"kobako": ksock, "dockerd": dsock}
        for s in socks.values():
            sh(docker, "-H", f"unix://{s}", "import", tar, IMAGE)
        cmds = {k: [docker, "-H", f"unix://{s}", "run", "--rm", "--network", "none", IMAGE, "true"]
                for k, s in socks.items()}
        for argv in cmds.values():
            sh(*argv)
        times: dict[str, list[float]] = {k: [] for k in cmds}
        for i in range(a.n):
            for k in (list(cmds) if i % 2 == 0 else list(cmds)[::-1]):
                t0 = time.monotonic()
                sh(*cmds[k])
                times[k].append((time.monotonic() - t0) * 1000)
        base = statistics.median(times["dockerd"])
        print(f"1. `docker run --rm --network none {IMAGE} true` through each socket, medians of {a.n}:")
        for k, ts in times.items():
            m = statistics.median(ts)
            print(f"   {k:<8} {m:7.1f} ms   {m / base:5.2f}x dockerd")

        n = a.containers
        for s in socks.values():
            for i in range(n):
                sh(docker, "-H", f"unix://{s}", "run", "-d", "--network", "none", "--name", f"bench-api-{i}",
                   IMAGE, "sleep", "600")
        print(f"\n2. GET /containers/json with {n} containers running, one client, {a.seconds:.0f} s:")
        rates = {k: rate(s, a.seconds) for k, s in socks.items()}
        for k, r in rates.items():
            print(f"   {k:<8} {r:7.1f} requests/s   {r / rates['dockerd']:5.2f}x dockerd")
        for s in socks.values():
            ids = subprocess.run([docker, "-H", f"unix://{s}", "ps", "-aq"], capture_output=True,
                                 text=True).stdout.split()
            if ids:
                sh(docker, "-H", f"unix://{s}", "rm", "-f", *ids, check=False)
    finally:
        for p in procs[1:]:
            p.terminate()
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        subprocess.run([KOBAKO, "system", "prune", "-af"], env=env_k, capture_output=True)
        if procs:
            dockerd.stop(procs[0], d)
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
