"""Other engines using kobako-runtime as their OCI runtime (runc's command line): podman
(`--runtime`), and containerd through `ctr run --runc-binary` (its runc v2 shim calls
kobako-runtime as it would call runc). This is how kobako reaches orchestrators: through
containerd, not by growing one.

Each engine runs with private storage outside the session's directory (podman's storage
makes its own mounts there) and is stopped at the end. containerd's binaries are unpacked
from Debian's package by scripts/test.sh (installing it would start a system daemon)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import support
from engine_support import Kobako

pytestmark = pytest.mark.root
RUNTIME = shutil.which("kobako-runtime") or "/usr/local/bin/kobako-runtime"
CONTAINERD = Path("/opt/kobako/test-tools/containerd/usr/bin")


def _scratch(name: str) -> Path:
    d = Path(f"/var/tmp/ext-engines-{os.getpid()}-{name}")
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="module")
def image_tar(session_base: Path, busybox_rootfs: Path) -> Path:
    """The busybox image as a docker-archive, from `kobako save`."""
    k = Kobako(session_base / "ext")
    k("import", str(busybox_rootfs), "kbt/ext:1")
    out = session_base / "ext" / "image.tar"
    k("save", "-o", str(out), "kbt/ext:1")
    return out


def test_podman_runs_containers_with_kobako_runtime(image_tar: Path):
    if not shutil.which("podman"):
        pytest.skip("podman is not installed")
    d = _scratch("podman")
    base = ["podman", "--root", str(d / "root"), "--runroot", str(d / "run"), "--storage-driver", "overlay",
            "--runtime", RUNTIME, "--cgroup-manager", "cgroupfs"]
    # this VM's bounding set lacks CAP_SYS_RESOURCE: podman's default rlimits would fail (ANCHORS.md)
    lim = ["--network", "none", "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768"]

    def pm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        cp = subprocess.run([*base, *args], capture_output=True, text=True, timeout=120)
        assert not check or cp.returncode == 0, f"podman {' '.join(args)}: {cp.stderr}"
        return cp
    try:
        pm("load", "-i", str(image_tar))
        cp = pm("run", "--rm", *lim, "kbt/ext:1", "sh", "-c", "echo via-podman; exit 3", check=False)
        assert (cp.returncode, cp.stdout) == (3, "via-podman\n"), cp.stderr
        cid = pm("run", "-d", *lim, "kbt/ext:1", "sleep", "60").stdout.strip()
        assert pm("exec", cid, "echo", "in-exec").stdout == "in-exec\n"
        assert "sleep" in pm("top", cid).stdout
        pm("pause", cid)
        pm("unpause", cid)
        pm("rm", "-f", "-t", "0", cid)
        assert pm("ps", "-aq").stdout.strip() == ""
    finally:
        subprocess.run([*base, "rm", "-af", "-t", "0"], capture_output=True, timeout=120)
        subprocess.run([*base, "system", "reset", "-f"], capture_output=True, timeout=120)
        support.unmount_and_remove(d)


def test_containerd_runs_containers_with_kobako_runtime(image_tar: Path):
    if not (CONTAINERD / "containerd").exists():
        pytest.skip("containerd's binaries are not unpacked (scripts/test.sh does it)")
    d = _scratch("containerd")
    sock = d / "c.sock"
    (d / "config.toml").write_text(f"""version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
""")
    env = {**os.environ, "PATH": f"{CONTAINERD}:{os.environ['PATH']}"}  # its shim is found on PATH
    had_run_dir = os.path.exists("/run/containerd")  # ctr and the shim put fifos and sockets there
    log = open(d / "containerd.log", "w")
    daemon = subprocess.Popen([str(CONTAINERD / "containerd"), "--config", str(d / "config.toml")], env=env,
                              stdout=log, stderr=subprocess.STDOUT)

    def ctr(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        cp = subprocess.run([str(CONTAINERD / "ctr"), "--address", str(sock), *args], env=env,
                            capture_output=True, text=True, timeout=120)
        assert not check or cp.returncode == 0, f"ctr {' '.join(args)}: {cp.stderr}"
        return cp
    try:
        for _ in range(100):
            if sock.exists():
                break
            time.sleep(0.05)
        ctr("images", "import", str(image_tar))
        img = "docker.io/kbt/ext:1"
        rt = ["--runc-binary", RUNTIME, "--runc-root", str(d / "runc")]  # not the host's /run/containerd
        cp = ctr("run", "--rm", *rt, img, "kbt-c1", "sh", "-c",
                 "echo via-containerd; exit 4", check=False)
        assert (cp.returncode, cp.stdout) == (4, "via-containerd\n"), cp.stderr
        ctr("run", "-d", *rt, img, "kbt-c2", "sleep", "60")
        assert "RUNNING" in ctr("task", "ls").stdout
        cp = ctr("task", "exec", "--exec-id", "e1", "kbt-c2", "sh", "-c", "echo in-exec; exit 5", check=False)
        assert (cp.returncode, cp.stdout) == (5, "in-exec\n")
        ctr("task", "pause", "kbt-c2")
        assert "PAUSED" in ctr("task", "ls").stdout
        ctr("task", "resume", "kbt-c2")
        ctr("task", "kill", "-s", "KILL", "kbt-c2")
        for _ in range(100):
            if "STOPPED" in ctr("task", "ls").stdout:
                break
            time.sleep(0.05)
        ctr("task", "delete", "kbt-c2")
        ctr("containers", "rm", "kbt-c2")
        assert "kbt-c" not in ctr("containers", "ls").stdout
    finally:
        for c in ("kbt-c1", "kbt-c2"):
            ctr("task", "kill", "-s", "KILL", c, check=False)
            ctr("task", "delete", "-f", c, check=False)
            ctr("containers", "rm", c, check=False)
        daemon.terminate()
        daemon.wait(timeout=30)
        log.close()
        support.unmount_and_remove(d)
        if not had_run_dir:
            support.remove_containerd_run_dirs()
