#!/usr/bin/python3 -I
"""Pull throughput of `kobako pull` against `podman pull` and `skopeo copy`, from Debian's
docker-registry on 127.0.0.1, plus `save`/`load` against podman.

Images:
  single  a Debian bookworm minbase (debootstrap, ~200 MB raw, ~90 MB gzip), one layer,
          imported and pushed by podman so the registry holds what an established engine wrote;
  multi   12 layers (busybox + 11 layers of 4 MB of incompressible data each), built and
          pushed by kobako.
Each tool pulls into an empty store (the image removed and pruned before each run), runs
interleaved (kobako, podman, skopeo; then reversed) so host noise hits all alike; medians
are printed with MB/s of the compressed bytes and the ratio to podman. skopeo copies to a
directory and does not unpack: the transfer + verify floor. With --docker, a private
dockerd (bench/dockerd.py: Debian's docker.io unpacked, own data root, no firewall
changes) pulls, saves and loads too.

usage: bench/pull_throughput.py [-n RUNS] [--only single|multi] [--docker]
Needs: docker-registry, podman, skopeo, debootstrap (first run builds the rootfs), kobako.
Never part of the test run's pass/fail.
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

SCRATCH = os.environ.get("BARS_TMP", "/var/tmp/kobako-bars")
PODMAN = ["podman"]
KOBAKO = [shutil.which("kobako") or "kobako"]
DOCKER: list[str] = []  # the private dockerd's client, with --docker


def sh(*argv: str, check: bool = True, quiet: bool = True) -> subprocess.CompletedProcess:
    cp = subprocess.run(list(argv), capture_output=quiet, text=True)
    if check and cp.returncode != 0:
        sys.exit(f"failed: {' '.join(argv)}\n{cp.stderr}")
    return cp


def minbase_tar() -> str:
    t = os.path.join(SCRATCH, "bookworm-minbase.tar")
    if not os.path.exists(t):
        r = os.path.join(SCRATCH, "bookworm-minbase")
        shutil.rmtree(r, ignore_errors=True)
        print("building a bookworm minbase with debootstrap (minutes, once)...", file=sys.stderr)
        sh("debootstrap", "--variant=minbase", "bookworm", r)
        sh("tar", "--numeric-owner", "-C", r, "-cf", t + ".tmp", ".")
        os.rename(t + ".tmp", t)
        shutil.rmtree(r)
    return t


class Registry:
    def __enter__(self) -> Registry:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        self.dir = tempfile.mkdtemp(prefix="bench-registry.", dir=SCRATCH)
        with open(os.path.join(self.dir, "config.yml"), "w") as f:
            f.write(f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {self.dir}/data\n"
                    f"  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n")
        self.proc = subprocess.Popen(["docker-registry", "serve", os.path.join(self.dir, "config.yml")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addr = f"127.0.0.1:{port}"
        for _ in range(100):
            ok = subprocess.run(["curl", "-fs", f"http://{self.addr}/v2/"], capture_output=True)
            if ok.returncode == 0:
                return self
            time.sleep(0.1)
        sys.exit("docker-registry did not start")

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def timed(argv: list[str], before: list[list[str]]) -> float:
    for b in before:
        subprocess.run(b, capture_output=True)
    t0 = time.monotonic()
    cp = subprocess.run(argv, capture_output=True, text=True)
    dt = time.monotonic() - t0
    if cp.returncode != 0:
        sys.exit(f"failed: {' '.join(argv)}\n{cp.stderr}")
    return dt


def bench_pull(remote: str, n: int, compressed: int, label: str) -> None:
    dirs = tempfile.mkdtemp(prefix="bench-skopeo.", dir=SCRATCH)
    cmds = {
        "kobako": (KOBAKO + ["pull", "-q", remote],
                   [KOBAKO + ["rmi", "-f", remote], KOBAKO + ["image", "prune", "-f"]]),
        "podman": (PODMAN + ["pull", "-q", "--tls-verify=false", remote], [PODMAN + ["rmi", "-f", remote]]),
        "skopeo": (["skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{remote}", f"dir:{dirs}/d"],
                   [["rm", "-rf", f"{dirs}/d"]]),
    }
    if DOCKER:  # 127.0.0.0/8 is an insecure registry for dockerd by default
        cmds["docker"] = (DOCKER + ["pull", "-q", remote], [DOCKER + ["rmi", "-f", remote]])
    times: dict[str, list[float]] = {k: [] for k in cmds}
    order = list(cmds)
    for i in range(n):
        for k in (order if i % 2 == 0 else order[::-1]):
            argv, before = cmds[k]
            times[k].append(timed(argv, before))
    shutil.rmtree(dirs, ignore_errors=True)
    pod = statistics.median(times["podman"])
    print(f"\n{label}: {compressed / 1e6:.0f} MB compressed, medians of {n}")
    for k, ts in times.items():
        m = statistics.median(ts)
        print(f"  {k:<7} {m:6.2f} s  {compressed / m / 1e6:7.1f} MB/s   {m / pod:5.2f}x podman   "
              f"(runs: {', '.join(f'{t:.2f}' for t in ts)})")


def bench_save_load(name: str, n: int) -> None:
    out = tempfile.mkdtemp(prefix="bench-save.", dir=SCRATCH)
    tools = ("kobako", "podman", "docker")
    res: dict[str, list[float]] = {f"{t} {op}": [] for t in tools for op in ("save", "load")}
    for _ in range(n):
        if DOCKER:
            res["docker save"].append(timed(DOCKER + ["save", "-o", f"{out}/d.tar", name],
                                            [["rm", "-f", f"{out}/d.tar"]]))
            res["docker load"].append(timed(DOCKER + ["load", "-q", "-i", f"{out}/d.tar"],
                                            [DOCKER + ["rmi", "-f", name]]))
        res["kobako save"].append(timed(KOBAKO + ["save", "-o", f"{out}/k.tar", name],
                                        [["rm", "-f", f"{out}/k.tar"]]))
        res["podman save"].append(timed(PODMAN + ["save", "-q", "-o", f"{out}/p.tar", name],
                                        [["rm", "-f", f"{out}/p.tar"]]))
        res["kobako load"].append(timed(KOBAKO + ["load", "-i", f"{out}/k.tar"],
                                        [KOBAKO + ["rmi", "-f", name], KOBAKO + ["image", "prune", "-f"]]))
        res["podman load"].append(timed(PODMAN + ["load", "-q", "-i", f"{out}/p.tar"],
                                        [PODMAN + ["rmi", "-f", name]]))
    shutil.rmtree(out, ignore_errors=True)
    print(f"\nsave/load of {name}, medians of {n}")
    for op in ("save", "load"):
        k, p = statistics.median(res[f"kobako {op}"]), statistics.median(res[f"podman {op}"])
        line = f"  {op}: kobako {k:.2f} s, podman {p:.2f} s, ratio {k / p:.2f}"
        if DOCKER:
            d = statistics.median(res[f"docker {op}"])
            line += f"; docker {d:.2f} s, ratio {k / d:.2f}"
        print(line)


def compressed_size(reg: Registry, repo: str, tag: str) -> int:
    """Config + layer bytes the manifest names: what a pull transfers."""
    import json
    accept = ("application/vnd.oci.image.manifest.v1+json, "
              "application/vnd.docker.distribution.manifest.v2+json")
    url = f"http://{reg.addr}/v2/{repo}/manifests/{tag}"
    m = json.loads(sh("curl", "-fs", "-H", f"Accept: {accept}", url).stdout)
    return m["config"]["size"] + sum(layer["size"] for layer in m["layers"])


def multi_layer_image(reg: Registry) -> tuple[str, int]:
    name = f"{reg.addr}/bench/multi:1"
    base = os.path.join(SCRATCH, "bench-multi")
    shutil.rmtree(base, ignore_errors=True)
    os.makedirs(f"{base}/bin")
    shutil.copy2("/bin/busybox", f"{base}/bin/busybox")
    os.symlink("busybox", f"{base}/bin/sh")
    sh(*KOBAKO, "import", base, "bench/multi:0")
    prev = "bench/multi:0"
    for i in range(11):
        sh(*KOBAKO, "run", "--name", f"bench-multi-{i}", prev, "sh", "-c",
           f"mkdir -p /l{i} && head -c 4000000 /dev/urandom > /l{i}/data")
        sh(*KOBAKO, "commit", f"bench-multi-{i}", f"bench/multi:{i + 1}")
        sh(*KOBAKO, "rm", f"bench-multi-{i}")
        prev = f"bench/multi:{i + 1}"
    sh(*KOBAKO, "tag", prev, name)
    sh(*KOBAKO, "push", name)
    size = compressed_size(reg, "bench/multi", "1")
    for i in range(12):
        sh(*KOBAKO, "rmi", "-f", f"bench/multi:{i}", check=False)
    shutil.rmtree(base, ignore_errors=True)
    return name, size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=3)
    ap.add_argument("--only", choices=["single", "multi"])
    ap.add_argument("--docker", action="store_true", help="also a private dockerd (bench/dockerd.py)")
    a = ap.parse_args()
    for tool in ("docker-registry", "podman", "skopeo", "curl"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is not installed")
    os.makedirs(SCRATCH, exist_ok=True)
    if not a.docker:
        return run(a)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import dockerd
    d = tempfile.mkdtemp(prefix="bench-dockerd.", dir=SCRATCH)
    proc, sock = dockerd.start(d)
    DOCKER[:] = [f"{d}/docker.io/usr/bin/docker", "-H", f"unix://{sock}"]
    try:
        run(a)
    finally:
        dockerd.stop(proc, d)
        shutil.rmtree(d, ignore_errors=True)


def run(a: argparse.Namespace) -> None:
    with Registry() as reg:
        if a.only in (None, "single"):
            tar = minbase_tar()
            sh(*PODMAN, "import", tar, "bench/bookworm:1")
            remote = f"{reg.addr}/bench/bookworm:1"
            sh(*PODMAN, "push", "--tls-verify=false", "bench/bookworm:1", f"docker://{remote}")
            sh(*PODMAN, "rmi", "-f", "bench/bookworm:1")
            size = compressed_size(reg, "bench/bookworm", "1")
            print(f"raw rootfs tar: {os.path.getsize(tar) / 1e6:.0f} MB")
            bench_pull(remote, a.n, size, "single layer (Debian bookworm minbase)")
            sh(*KOBAKO, "pull", "-q", remote)
            sh(*PODMAN, "pull", "-q", "--tls-verify=false", remote)
            if DOCKER:
                sh(*DOCKER, "pull", "-q", remote)
            bench_save_load(remote, a.n)
            sh(*KOBAKO, "rmi", "-f", remote, check=False)
            sh(*PODMAN, "rmi", "-f", remote, check=False)
            if DOCKER:
                sh(*DOCKER, "rmi", "-f", remote, check=False)
        if a.only in (None, "multi"):
            name, size = multi_layer_image(reg)
            bench_pull(name, a.n, size, "12 layers (busybox + 11 x 4 MB)")
            sh(*KOBAKO, "rmi", "-f", name, check=False)
            sh(*PODMAN, "rmi", "-f", name, check=False)
            if DOCKER:
                sh(*DOCKER, "rmi", "-f", name, check=False)
        sh(*KOBAKO, "image", "prune", "-f", check=False)


if __name__ == "__main__":
    main()
