#!/usr/bin/python3 -I
"""What emulation costs: `run --rm --network none IMAGE true` of an arm64 image (run through
qemu-user-static's binfmt handler) against the same of an amd64 one, interleaved, medians
and their ratio; the same with podman (runc, this VM's ulimits) when it is installed.

The images are Debian's busybox-static, amd64 (the host's /bin/busybox) and arm64 (its
arm64 package, fetched once with a private apt state into /var/tmp/kobako-test-arm64, as
the integration tests do), each one layer in a docker-archive loaded into each engine.
kobako runs on a private data root; podman's images are removed at the end. The arm64
handler is registered by kobako's first run when none is (and left, as systemd-binfmt's).

usage: bench/foreign_arch.py [-n RUNS]
KOBAKO (environment) names the kobako to measure (default: the one on PATH).
Never part of the test run's pass/fail.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

KOBAKO = os.environ.get("KOBAKO") or shutil.which("kobako") or "kobako"
PODMAN = ["podman", "run", "--rm", "--network", "none", "--runtime", "runc",
          "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768"]
CACHE = "/var/tmp/kobako-test-arm64"
IMAGES = {"amd64": "localhost/kbench/amd64:1", "arm64": "localhost/kbench/arm64:1"}


def sh(*argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    cp = subprocess.run(list(argv), capture_output=True, text=True, env=env)
    if cp.returncode != 0:
        sys.exit(f"failed: {' '.join(argv)}\n{cp.stderr}")
    return cp


def arm64_busybox() -> str:
    bb = os.path.join(CACHE, "busybox")
    if os.path.exists(bb):
        return bb
    shutil.rmtree(CACHE, ignore_errors=True)
    for d in ("lists/partial", "cache/archives/partial", "x"):
        os.makedirs(os.path.join(CACHE, d))
    opts = ["-o", f"Dir::State::Lists={CACHE}/lists", "-o", f"Dir::Cache={CACHE}/cache",
            "-o", "APT::Architectures=arm64"]
    sh("apt-get", "-qq", *opts, "update")
    subprocess.run(["apt-get", "-qq", *opts, "download", "busybox-static:arm64"], cwd=CACHE, check=True,
                   capture_output=True)
    sh("dpkg-deb", "-x", glob.glob(f"{CACHE}/busybox-static_*_arm64.deb")[0], f"{CACHE}/x")
    shutil.copy2(f"{CACHE}/x/bin/busybox", bb)
    return bb


def archive(busybox: str, arch: str, tag: str, path: str) -> None:
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as t:
        t.add(busybox, arcname="bin/busybox")
        for a in ("sh", "true"):
            i = tarfile.TarInfo(f"bin/{a}")
            i.type, i.linkname = tarfile.SYMTYPE, "busybox"
            t.addfile(i)
    data = layer.getvalue()
    diff = "sha256:" + hashlib.sha256(data).hexdigest()
    cfg = json.dumps({"architecture": arch, "os": "linux", "config": {"Cmd": ["/bin/sh"]},
                      "rootfs": {"type": "layers", "diff_ids": [diff]}}).encode()
    cid = hashlib.sha256(cfg).hexdigest()
    man = json.dumps([{"Config": cid + ".json", "RepoTags": [tag], "Layers": ["layer.tar"]}]).encode()
    with tarfile.open(path, "w") as t:
        for name, blob in (("layer.tar", data), (cid + ".json", cfg), ("manifest.json", man)):
            i = tarfile.TarInfo(name)
            i.size = len(blob)
            t.addfile(i, io.BytesIO(blob))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=21)
    a = ap.parse_args()
    if not os.path.exists("/usr/lib/binfmt.d/qemu-aarch64.conf"):
        sys.exit("qemu-user-static is not installed: apt-get install qemu-user-static")
    d = tempfile.mkdtemp(prefix="bench-arch.")
    env = {**os.environ, "KOBAKO_ROOT": f"{d}/kdata", "KOBAKO_RUN": f"{d}/krun"}
    podman = shutil.which("podman") is not None
    try:
        for arch, bb in (("amd64", "/bin/busybox"), ("arm64", arm64_busybox())):
            tar = f"{d}/{arch}.tar"
            archive(bb, arch, IMAGES[arch], tar)
            sh(KOBAKO, "load", "-i", tar, env=env)
            if podman:
                sh("podman", "load", "-q", "-i", tar)
        cmds = {f"kobako {arch}": ([KOBAKO, "run", "--rm", "--network", "none", img, "true"], env)
                for arch, img in IMAGES.items()}
        if podman:
            cmds.update({f"podman {arch}": (PODMAN + [img, "true"], None) for arch, img in IMAGES.items()})
        for argv, e in cmds.values():  # warm up (and the first arm64 run registers the handler)
            sh(*argv, env=e)
        times: dict[str, list[float]] = {k: [] for k in cmds}
        order = list(cmds)
        for i in range(a.n):
            for k in (order if i % 2 == 0 else order[::-1]):
                t0 = time.monotonic()
                sh(*cmds[k][0], env=cmds[k][1])
                times[k].append((time.monotonic() - t0) * 1000)
        med = {k: statistics.median(ts) for k, ts in times.items()}
        print(f"`run --rm --network none IMAGE true`, medians of {a.n}:")
        for k, m in med.items():
            print(f"  {k:<13} {m:7.1f} ms")
        for engine in ("kobako", "podman") if podman else ("kobako",):
            print(f"  {engine}: arm64 / amd64 = {med[f'{engine} arm64'] / med[f'{engine} amd64']:.2f}")
        if podman:
            for arch in IMAGES:
                print(f"  {arch}: kobako / podman = {med[f'kobako {arch}'] / med[f'podman {arch}']:.2f}")
    finally:
        subprocess.run([KOBAKO, "system", "prune", "-af"], env=env, capture_output=True)
        if podman:
            subprocess.run(["podman", "rmi", "-f", *IMAGES.values()], capture_output=True)
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
