#!/usr/bin/python3 -I
"""Rootless start latency: an ordinary user's `kobako run --rm` against the same user's
`podman run --rm`, interleaved in one run, medians and their ratio.

Two cases: `--network none`, and the default network (kobako: the user's bridge behind
slirp4netns; podman 4: slirp4netns per container). The image is Debian's busybox-static as
one layer, imported by the user into each engine. podman runs with runc and the ulimits
this VM needs (ANCHORS.md). The timing loop runs as the user (runuser starts it once), so
no runuser or login cost is in the figures.

Run as root: it uses the user named by --user (default kbrootless), making it (useradd,
with a subordinate range) if it does not exist, and sets /dev/net/tun to 0666 as udev does.

usage: bench/rootless.py [-n RUNS] [--user NAME]
Never part of the test run's pass/fail.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import subprocess
import sys

LOOP = r"""
import os, statistics, subprocess, sys, time
n = int(sys.argv[1])
cases = {
    "none": (["kobako", "run", "--rm", "--network", "none", "bench/rl:1", "true"],
             PODMAN + ["--network", "none", "bench/rl:1", "true"]),
    "default network": (["kobako", "run", "--rm", "bench/rl:1", "true"],
                        PODMAN + ["bench/rl:1", "true"]),
}
for name, (k, p) in cases.items():
    for argv in (k, p):  # warm: the user's namespaces, slirp4netns, page cache
        subprocess.run(argv, check=True, capture_output=True)
    tk, tp = [], []
    for _ in range(n):
        for argv, out in ((k, tk), (p, tp)):
            t = time.perf_counter()
            subprocess.run(argv, check=True, capture_output=True)
            out.append(time.perf_counter() - t)
    mk, mp = statistics.median(tk), statistics.median(tp)
    print(f"{name:16} kobako {mk * 1000:7.1f} ms   podman {mp * 1000:7.1f} ms   ratio {mk / mp:.2f}")
"""
PODMAN = ["podman", "run", "--rm", "--runtime", "runc", "--ulimit", "nofile=20000:20000",
          "--ulimit", "nproc=32768:32768"]


def as_user(user: pwd.struct_passwd, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
    env = ["env", "-i", f"HOME={user.pw_dir}", f"USER={user.pw_name}", "PATH=/usr/local/bin:/usr/bin:/bin",
           f"XDG_RUNTIME_DIR=/run/user/{user.pw_uid}"]
    cp = subprocess.run(["runuser", "-u", user.pw_name, "--", *env, *argv], capture_output=True, text=True,
                        cwd="/")
    if check and cp.returncode != 0:
        sys.exit(f"failed as {user.pw_name}: {' '.join(argv)}\n{cp.stderr}")
    return cp


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=20)
    ap.add_argument("--user", default="kbrootless")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (it runs the engines as --user through runuser)")
    for tool in ("kobako", "podman", "runuser", "slirp4netns", "newuidmap"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is not installed")
    try:
        user = pwd.getpwnam(a.user)
    except KeyError:
        subprocess.run(["useradd", "-m", "-s", "/bin/sh", a.user], check=True)
        user = pwd.getpwnam(a.user)
    for path in ("/etc/subuid", "/etc/subgid"):
        with open(path) as f:
            if not any(ln.startswith(f"{a.user}:") for ln in f):
                sys.exit(f"{a.user} has no range in {path}")
    os.chmod("/dev/net/tun", 0o666)
    run = f"/run/user/{user.pw_uid}"
    os.makedirs(run, exist_ok=True)
    os.chown(run, user.pw_uid, user.pw_gid)
    os.chmod(run, 0o700)
    tar = os.path.join(user.pw_dir, "bench-rootfs.tar")
    root = os.path.join(user.pw_dir, "bench-rootfs")
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(os.path.join(root, "bin"))
    shutil.copy2("/bin/busybox", os.path.join(root, "bin", "busybox"))
    for ap_ in subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True).stdout.split():
        if ap_ != "busybox":
            os.symlink("busybox", os.path.join(root, "bin", ap_))
    subprocess.run(["tar", "-C", root, "-cf", tar, "."], check=True)
    shutil.rmtree(root)
    os.chown(tar, user.pw_uid, user.pw_gid)
    as_user(user, "kobako", "import", tar, "bench/rl:1")
    as_user(user, "podman", "import", tar, "bench/rl:1")
    print(f"rootless run --rm as {a.user}, {a.n} runs each, interleaved; medians")
    out = as_user(user, sys.executable, "-I", "-c", f"PODMAN = {PODMAN!r}\n" + LOOP, str(a.n))
    sys.stdout.write(out.stdout)
    as_user(user, "kobako", "rmi", "bench/rl:1", check=False)
    as_user(user, "podman", "rmi", "bench/rl:1", check=False)
    os.unlink(tar)


if __name__ == "__main__":
    main()
