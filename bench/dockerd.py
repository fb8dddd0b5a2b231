"""A private dockerd for the benchmarks: Debian's docker.io and containerd packages unpacked
(never installed: their post-install would start system daemons), run with their own data
roots and socket, `--iptables=false --ip6tables=false --ip-forward=false --ip-masq=false`
so they never touch the host's firewall or sysctls, and stopped afterwards."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from engine import sh


def unpack(pkg: str, d: str) -> str:
    """The package's files under d/<pkg>, without installing it; returns its usr/."""
    out = os.path.join(d, pkg)
    debs = os.path.join(d, "debs")
    os.makedirs(debs, exist_ok=True)
    if subprocess.run(["apt-get", "download", pkg], cwd=debs, capture_output=True).returncode:
        sys.exit(f"apt-get download {pkg} failed (no network to Debian's mirror?)")
    deb = next(os.path.join(debs, f) for f in os.listdir(debs) if f.startswith(pkg + "_"))
    sh("dpkg-deb", "-x", deb, out)
    return os.path.join(out, "usr")


def wait_socket(path: str, proc: subprocess.Popen, what: str) -> None:
    for _ in range(200):
        if os.path.exists(path):
            return
        if proc.poll() is not None:
            sys.exit(f"{what} exited: status {proc.returncode}")
        time.sleep(0.05)
    sys.exit(f"{what} did not open {path}")


def start(d: str, bridge: str = "none") -> tuple[subprocess.Popen, str]:
    """dockerd on d/dockerd.sock; `bridge`: an existing bridge for its default network, or none."""
    dock = unpack("docker.io", d)
    ctrd = unpack("containerd", d)
    path = f"{dock}/bin:{dock}/sbin:{ctrd}/bin:{os.environ['PATH']}"
    sock = f"{d}/dockerd.sock"
    p = subprocess.Popen(
        [f"{dock}/sbin/dockerd", "--iptables=false", "--ip6tables=false", "--ip-forward=false",
         "--ip-masq=false", "--bridge", bridge, "--data-root", f"{d}/ddata", "--exec-root", f"{d}/dexec",
         "--pidfile", f"{d}/dockerd.pid", "-H", f"unix://{sock}"], env={**os.environ, "PATH": path},
        stdout=subprocess.DEVNULL, stderr=open(f"{d}/dockerd.log", "w"))
    wait_socket(sock, p, "dockerd")
    return p, sock


def stop(p: subprocess.Popen, d: str) -> None:
    p.terminate()
    try:
        p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
    for m in reversed(open("/proc/self/mountinfo").read().splitlines()):
        target = m.split()[4]
        if target.startswith(d):
            subprocess.run(["umount", "-l", target], capture_output=True)
