"""Docker Swarm with kobako-runtime as every node's runtime: scripts/swarm-test.sh on two
namespace "hosts" (swarm init/join, a replicated service spread over both, scaled, rolling
updated, a node drained; every task's container made by kobako-runtime). The script makes
and removes everything itself; it exits 77 where dockerd or containerd cannot be unpacked
from Debian's packages, and the test skips then."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.root
SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "swarm-test.sh"


def test_a_two_node_swarm_runs_every_task_with_kobako_runtime(busybox_rootfs: Path):
    cp = subprocess.run([str(SCRIPT), "-n", "2"], env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                        "KOBAKO_BUSYBOX_ROOTFS": str(busybox_rootfs)},
                        capture_output=True, text=True, timeout=540)
    if cp.returncode == 77:
        pytest.skip(cp.stdout.strip())
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert "every task run by kobako-runtime" in cp.stdout
