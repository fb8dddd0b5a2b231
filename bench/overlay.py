#!/usr/bin/python3 -I
"""What a VXLAN overlay costs: TCP throughput and ping latency between containers on two
namespace "hosts" joined by an overlay network, against two containers on one host's plain
bridge network, interleaved, medians and their ratios.

Each host is a network + mount namespace made here (its own kobako data root and run dir),
the two joined by a veth underlay 192.168.235.1/24 <-> .2 (nothing else: the machine's own
interfaces are never used). On host A: a server container on the overlay and one on a bridge
network; the overlay's client runs on host B, the bridge's on host A. Throughput: iperf3
(Debian's package, the host's binary and libraries mounted read-only into the busybox
containers), one TCP stream for a few seconds; latency: the average of busybox `ping -c 20`.

usage: bench/overlay.py [-n ROUNDS] [-t SECONDS]
KOBAKO (environment) names the kobako to measure (default: the one on PATH).
Never part of the test run's pass/fail.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

KOBAKO = os.environ.get("KOBAKO") or shutil.which("kobako") or "kobako"
IMG = "kbench/ovl:1"
UNDERLAY = {"a": "192.168.235.1", "b": "192.168.235.2"}
NS = {"a": "kbbench-ovla", "b": "kbbench-ovlb"}


class Host:
    def __init__(self, name: str, work: str) -> None:
        self.name, self.work = name, work
        self.root = os.path.join(work, name)
        os.makedirs(os.path.join(self.root, "cg"), exist_ok=True)
        # a mount namespace of its own (sysfs of its netns, the machine's cgroups), held by a sleeper
        self.sleeper = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{NS[name]}", "unshare", "--mount", "--propagation", "slave", "sh",
             "-c", 'mount --rbind /sys/fs/cgroup "$0"; mount -t sysfs sysfs /sys; '
                   'mount --rbind "$0" /sys/fs/cgroup; umount -l "$0"; mount --make-rshared /; '
                   'exec sleep 100000', os.path.join(self.root, "cg")])
        self.env = {**os.environ, "KOBAKO_ROOT": os.path.join(self.root, "data"),
                    "KOBAKO_RUN": os.path.join(self.root, "run")}

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cp = subprocess.run(["nsenter", "-t", str(self.sleeper.pid), "-m", "-n", KOBAKO, *args], env=self.env,
                            capture_output=True, text=True, timeout=300)
        if check and cp.returncode != 0:
            sys.exit(f"host {self.name}: kobako {' '.join(args)} failed:\n{cp.stderr}")
        return cp

    def ip(self, container: str, net: str) -> str:
        fmt = f"{{{{.NetworkSettings.Networks.{net}.IPAddress}}}}"
        return self("inspect", "-f", fmt, container).stdout.strip()

    def close(self) -> None:
        ids = self("ps", "-aq", check=False).stdout.split()
        if ids:
            self("rm", "-f", *ids, check=False)
        for net in ("ovl", "lbr"):
            self("network", "rm", net, check=False)
        self("system", "prune", "-af", check=False)
        self.sleeper.kill()
        self.sleeper.wait()


# the host's iperf3 (Debian's package) and its libraries, read-only in the busybox containers
HOST_BINARIES = ["-v", "/usr:/usr:ro", "-v", "/usr/lib:/lib:ro", "-v", "/usr/lib64:/lib64:ro"]


def throughput(h: Host, net: str, ip: str, secs: int) -> float:
    """MiB/s that iperf3 received over one TCP stream in `secs` seconds."""
    cp = h("run", "--rm", "--network", net, *HOST_BINARIES, IMG, "/usr/bin/iperf3", "-c", ip, "-t", str(secs),
           "--json")
    return json.loads(cp.stdout)["end"]["sum_received"]["bits_per_second"] / 8 / (1 << 20)


def latency(h: Host, net: str, ip: str) -> float:
    """Average ping round trip in ms over 20 pings."""
    cp = h("run", "--rm", "--network", net, IMG, "ping", "-c", "20", "-i", "0.05", ip)
    m = re.search(r"round-trip min/avg/max = [\d.]+/([\d.]+)/", cp.stdout)
    if not m:
        sys.exit(f"no ping summary in: {cp.stdout}{cp.stderr}")
    return float(m.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=5, help="rounds (default 5)")
    ap.add_argument("-t", dest="secs", type=int, default=3, help="seconds per iperf3 run (default 3)")
    opt = ap.parse_args()
    if os.geteuid():
        sys.exit("run as root (it makes network namespaces)")
    if not os.path.exists("/usr/bin/iperf3"):
        sys.exit("needs Debian's iperf3 (apt-get install iperf3)")
    work = tempfile.mkdtemp(prefix="kbbench-ovl.", dir="/var/tmp")
    hosts: dict[str, Host] = {}
    try:
        for h in "ab":
            subprocess.run(["ip", "netns", "add", NS[h]], check=True)
        subprocess.run(["ip", "link", "add", "kbbo0", "netns", NS["a"], "type", "veth", "peer", "name",
                        "kbbo1", "netns", NS["b"]], check=True)
        for h, dev in (("a", "kbbo0"), ("b", "kbbo1")):
            subprocess.run(["ip", "-n", NS[h], "addr", "add", UNDERLAY[h] + "/24", "dev", dev], check=True)
            for d in ("lo", dev):
                subprocess.run(["ip", "-n", NS[h], "link", "set", d, "up"], check=True)
            hosts[h] = Host(h, work)
        time.sleep(0.5)
        rootfs = "/var/lib/kobako/bundles/busybox/rootfs"
        a, b = hosts["a"], hosts["b"]
        for h, rng, peer in ((a, "10.235.1.0/24", UNDERLAY["b"]), (b, "10.235.2.0/24", UNDERLAY["a"])):
            h("import", rootfs, IMG)
            h("network", "create", "--driver", "vxlan", "--subnet", "10.235.0.0/16", "--ip-range", rng,
              "--opt", f"peers={peer}", "ovl")
        a("network", "create", "--subnet", "10.236.0.0/24", "lbr")
        serve = [*HOST_BINARIES, IMG, "/usr/bin/iperf3", "-s"]
        a("run", "-d", "--name", "srv-ovl", "--network", "ovl", *serve)
        a("run", "-d", "--name", "srv-br", "--network", "lbr", *serve)
        ip_ovl, ip_br = a.ip("srv-ovl", "ovl"), a.ip("srv-br", "lbr")
        latency(b, "ovl", ip_ovl)  # warm-up: ARP across the overlay, the page cache
        res: dict[str, list[float]] = {"ovl_tp": [], "br_tp": [], "ovl_lat": [], "br_lat": []}
        for _ in range(opt.n):
            res["ovl_tp"].append(throughput(b, "ovl", ip_ovl, opt.secs))
            res["br_tp"].append(throughput(a, "lbr", ip_br, opt.secs))
            res["ovl_lat"].append(latency(b, "ovl", ip_ovl))
            res["br_lat"].append(latency(a, "lbr", ip_br))
        med = {k: statistics.median(v) for k, v in res.items()}
        print(f"throughput: overlay (host b -> host a) {med['ovl_tp']:.0f} MiB/s, bridge (one host) "
              f"{med['br_tp']:.0f} MiB/s; ratio overlay/bridge {med['ovl_tp'] / med['br_tp']:.2f}")
        print(f"latency:    overlay {med['ovl_lat']:.3f} ms, bridge {med['br_lat']:.3f} ms; "
              f"ratio overlay/bridge {med['ovl_lat'] / med['br_lat']:.2f}")
        print(f"(medians of {opt.n} interleaved rounds, iperf3 for {opt.secs} s, 20 pings per latency)")
    finally:
        for h in hosts.values():
            h.close()
        for ns in NS.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
