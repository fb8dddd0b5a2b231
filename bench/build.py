#!/usr/bin/python3 -I
"""`kobako build` against `podman build` (buildah) and a private dockerd's `docker build`, in
one run, on the same contexts, as ratios:

  cold    every step runs: `--no-cache`, on a fresh copy of the context made (and synced)
          before each build, so no engine knows anything of its files (the base image is
          present);
  cached  a rebuild with nothing changed (every step a cache hit);
  late    a rebuild after one late file changed (`late.txt`, COPYed by the 8th step: the
          last COPY and RUN run again).

Two contexts: `small`, 2,000 small files in 40 directories (the acceptance check
`build-latency`'s), and `big`, the same plus 20 files of 10 MB of random data (200 MB),
which the Dockerfile COPYs too. The Dockerfile is build-latency's 9 steps (plus `COPY
big/` for the big context). The base image is a busybox-static root filesystem imported
into each engine. Every engine builds with `--network none` (podman's default network
would change the host's firewall; the private dockerd has no bridge).

podman runs with runc and the ulimits this VM needs (ANCHORS.md). docker is Debian's
docker.io 20.10 unpacked and run as a private dockerd (bench/dockerd.py), driven by the
docker CLI with `DOCKER_BUILDKIT=0` (the legacy builder, which kobako's mimics); when it
cannot start, the reason is printed and podman alone is compared. kobako runs with a
private data root. Runs are interleaved (kobako, podman, docker; then reversed), medians.

usage: bench/build.py [-n RUNS] [--n-big RUNS] [--only small|big] [--no-docker]
Run it under the kernel lock: flock /var/tmp/kobako-kernel.lock /usr/bin/python3 bench/build.py
KOBAKO (environment) names the kobako to measure (default: the one on PATH).
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dockerd  # noqa: E402
from engine import rootfs_tar, sh  # noqa: E402

KOBAKO = os.environ.get("KOBAKO") or shutil.which("kobako") or "kobako"
BASE = "kbench/busybox:1"
PODMAN_OPTS = ["--runtime", "runc", "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768"]
GOALS = {"cold": 0.7, "cached": 0.25, "late": 0.5}

DOCKERFILE = """\
FROM {base}
ENV A=1
WORKDIR /app
COPY src/ ./src/
{big}RUN find src -type f | wc -l > count.txt
RUN echo built > /app/marker
LABEL bench=build
COPY late.txt ./
RUN cat late.txt count.txt
CMD ["cat", "/app/late.txt"]
"""


def make_context(d: str, big: bool) -> str:
    ctx = os.path.join(d, "ctx-big" if big else "ctx-small")
    for i in range(2000):
        sub = os.path.join(ctx, "src", f"d{i % 40}")
        os.makedirs(sub, exist_ok=True)
        with open(os.path.join(sub, f"f{i}.txt"), "w") as f:
            f.write(f"file {i}\n" * 20)
    if big:
        os.makedirs(os.path.join(ctx, "big"))
        for i in range(20):
            with open(os.path.join(ctx, "big", f"blob{i:02d}.bin"), "wb") as f:
                for _ in range(10):
                    f.write(os.urandom(1 << 20))
    with open(os.path.join(ctx, "late.txt"), "w") as f:
        f.write("v1\n")
    with open(os.path.join(ctx, "Dockerfile"), "w") as f:
        f.write(DOCKERFILE.format(base=BASE, big="COPY big/ ./big/\n" if big else ""))
    return ctx


def base_tar(d: str) -> str:
    """busybox-static with /etc/passwd, /etc/group and /tmp, as one tar."""
    tar = rootfs_tar(d)
    r = os.path.join(d, "rootfs")
    os.makedirs(os.path.join(r, "etc"))
    os.makedirs(os.path.join(r, "tmp"), mode=0o1777)
    with open(os.path.join(r, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\n")
    with open(os.path.join(r, "etc", "group"), "w") as f:
        f.write("root:x:0:\n")
    sh("tar", "-C", r, "-rf", tar, "./etc", "./tmp")
    return tar


class Engine:
    def __init__(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.name, self.argv, self.env = name, argv, env

    def build(self, ctx: str, tag: str, no_cache: bool = False) -> float:
        argv = self.argv + ["build"] + (PODMAN_OPTS if self.name == "podman" else [])
        argv += ["-q", "--network", "none", "-t", tag] + (["--no-cache"] if no_cache else []) + [ctx]
        t0 = time.monotonic()
        cp = subprocess.run(argv, env=self.env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        dt = time.monotonic() - t0
        if cp.returncode != 0:
            sys.exit(f"{self.name} build failed ({cp.returncode}): {' '.join(argv)}\n{cp.stderr[-2000:]}")
        return dt


def run_case(engines: list[Engine], ctx: str, tag: str, case: str, n: int) -> dict[str, float]:
    """Medians of n interleaved builds of each engine."""
    times: dict[str, list[float]] = {e.name: [] for e in engines}
    late = os.path.join(ctx, "late.txt")
    for i in range(n):
        for e in (engines if i % 2 == 0 else engines[::-1]):
            where = ctx
            if case == "cold":
                where = ctx + ".cold"
                shutil.rmtree(where, ignore_errors=True)
                sh("cp", "-a", ctx, where)
                os.sync()
            elif case == "late":
                with open(late, "w") as f:
                    f.write(f"{time.time_ns()}\n")
            times[e.name].append(e.build(where, tag, no_cache=case == "cold"))
    shutil.rmtree(ctx + ".cold", ignore_errors=True)
    return {k: statistics.median(v) for k, v in times.items()}


def start_docker(d: str, tar: str) -> tuple[subprocess.Popen | None, Engine | None, str]:
    docker = shutil.which("docker")
    if docker is None:
        return None, None, "no docker CLI on PATH"
    try:
        p, sock = dockerd.start(d)
    except SystemExit as ex:  # dockerd.py exits with its reason
        return None, None, f"the private dockerd did not start: {ex}"
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    cli = [docker, "-H", f"unix://{sock}"]
    cp = subprocess.run(cli + ["import", tar, BASE], env=env, capture_output=True, text=True)
    if cp.returncode != 0:
        dockerd.stop(p, d)
        return None, None, f"docker import failed: {cp.stderr.strip()}"
    return p, Engine("docker", cli, env), ""


def podman_images() -> set[str]:
    return set(sh("podman", "images", "-a", "-q", "--no-trunc").stdout.split())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=5, help="runs per case, small context")
    ap.add_argument("--n-big", type=int, default=3, help="runs per case, big context")
    ap.add_argument("--only", choices=("small", "big"))
    ap.add_argument("--no-docker", action="store_true")
    a = ap.parse_args()
    d = tempfile.mkdtemp(prefix="bench-build.", dir="/var/tmp")
    env_k = {**os.environ, "KOBAKO_ROOT": f"{d}/kdata", "KOBAKO_RUN": f"{d}/krun"}
    dp = None
    before = podman_images()
    try:
        tar = base_tar(d)
        engines = [Engine("kobako", [KOBAKO], env_k), Engine("podman", ["podman"])]
        subprocess.run([KOBAKO, "import", tar, BASE], env=env_k, check=True, capture_output=True)
        sh("podman", "import", tar, BASE)
        if a.no_docker:
            why = "--no-docker"
        else:
            dp, de, why = start_docker(d, tar)
            if de is not None:
                engines.append(de)
        if why:
            print(f"docker: not measured ({why})")
        rows = []
        for kind in ("small", "big"):
            if a.only and a.only != kind:
                continue
            t0 = time.monotonic()
            ctx = make_context(d, kind == "big")
            n = a.n if kind == "small" else a.n_big
            tag = f"kbench/build-{kind}:1"
            for e in engines:  # the first build of each: caches filled, base image in place
                e.build(ctx, tag)
            for case in ("cold", "cached", "late"):
                rows.append((kind, case, n, run_case(engines, ctx, tag, case, n)))
                print(f"  {kind} {case}: done at {time.monotonic() - t0:.0f} s", file=sys.stderr)
            shutil.rmtree(ctx)
        names = [e.name for e in engines]
        print("\nbuild times, seconds (medians of N interleaved runs); cold = --no-cache on a fresh copy")
        head = f"{'context':<28} {'case':<7} {'N':>2} " + " ".join(f"{x:>8}" for x in names)
        head += "  kobako/podman" + ("  kobako/docker" if "docker" in names else "") + "  goal (vs podman)"
        print(head)
        for kind, case, n, med in rows:
            what = "2,000 files" if kind == "small" else "2,000 files + 200 MB"
            line = f"{what:<28} {case:<7} {n:>2} " + " ".join(f"{med[x]:8.2f}" for x in names)
            line += f"  {med['kobako'] / med['podman']:13.2f}"
            if "docker" in med:
                line += f"  {med['kobako'] / med['docker']:13.2f}"
            line += f"  <= {GOALS[case]:.2f}"
            print(line)
    finally:
        subprocess.run([KOBAKO, "system", "prune", "-af"], env=env_k, capture_output=True)
        new = podman_images() - before
        if new:
            subprocess.run(["podman", "rmi", "-f", *new], capture_output=True)
        if dp is not None:
            dockerd.stop(dp, d)
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
