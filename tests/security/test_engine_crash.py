"""kill -9 of the `kobako` CLI at each step of create, start and rm (KOBAKO_FAULT), then
`kobako rm -f` or `kobako system prune`: nothing may be left — no record or container
directory, no runtime state, no cgroup, no mount."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from engine_support import Kobako

pytestmark = pytest.mark.root
IMG = "kbt/busybox:1"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def k(session_base: Path, busybox_rootfs: Path) -> Kobako:
    kb = Kobako(session_base / "engine-crash")
    kb("import", str(busybox_rootfs), IMG)
    return kb


def _crash(k: Kobako, point: str, *argv: str) -> None:
    # not pipes: a container left running by the crash would hold them open
    p = subprocess.run([sys.executable, "-m", "kobako.cli.main", *argv], env={**k.env, "KOBAKO_FAULT": point},
                       cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
    assert p.returncode == -9, f"the fault at {point} did not fire: {p.returncode}"


def _leftovers(k: Kobako, cid_prefix: str | None) -> list[str]:
    out = []
    cdir = k.data / "containers"
    out += [f"container dir {n}" for n in os.listdir(cdir) if len(n) == 64]
    rt = k.root / "run" / "runtime"
    if rt.exists():
        out += [f"runtime state {n}" for n in os.listdir(rt) if n != ".seccomp"]
    if cid_prefix:
        for line in open("/proc/self/mountinfo"):
            if cid_prefix in line:
                out.append(f"mount {line.split()[4]}")
        found = subprocess.run(["find", "/sys/fs/cgroup", "-maxdepth", "4", "-name", f"{cid_prefix}*"],
                               capture_output=True, text=True).stdout.split()
        out += [f"cgroup {c}" for c in found]
    return out


def _cid(k: Kobako, name: str) -> str | None:
    cp = k("inspect", "--format", "{{.Id}}", name, check=False)
    return cp.stdout.strip() or None


@pytest.mark.parametrize("point", ["engine:record", "engine:dirs", "engine:bundle", "run:before-runtime",
                                   "run:container-running"])
@pytest.mark.parametrize("cleanup", ["rm -f", "system prune"])
def test_kill_9_during_run_then_cleanup_leaves_nothing(k: Kobako, point: str, cleanup: str):
    name = f"crash-{point.replace(':', '-')}"
    _crash(k, point, "run", "--name", name, IMG, "sleep", "30")
    cid = _cid(k, name)
    assert cid is not None, "the record is written first: the crash must be visible"
    if cleanup == "rm -f":
        k("rm", "-f", name)
    else:
        if point == "run:container-running":  # it runs on without its CLI: prune keeps running ones
            k("stop", "-t", "0", name)
        k("system", "prune", "-f")
    assert _leftovers(k, cid[:12]) == []


def test_kill_9_during_rm_then_rm_again(k: Kobako):
    cid = k("run", "-d", "--name", "crash-rm", IMG, "sleep", "30").stdout.strip()
    _crash(k, "rm:runtime-deleted", "rm", "-f", "crash-rm")
    k("rm", "-f", "crash-rm")
    assert _leftovers(k, cid[:12]) == []


def test_an_orphan_directory_is_pruned(k: Kobako):
    orphan = k.data / "containers" / ("ab" * 32)
    (orphan / "upper").mkdir(parents=True)
    k("container", "prune", "-f")
    assert not orphan.exists()


def test_cp_from_a_container_cannot_plant_or_delete_on_the_host(k: Kobako, tmp_path: Path):
    """The container chooses what its files are: names like .wh.x, setuid bits, device nodes.
    None of it may act on the host: no whiteout deletes, no devices, no setuid, no dir replaced."""
    dest = tmp_path / "dest"
    (dest / "d").mkdir(parents=True)
    (dest / "d" / "keep").write_text("host file\n")
    (dest / "d" / "sub").mkdir()
    k("run", "--privileged", "--name", "evilcp", IMG, "sh", "-c",  # privileged: it may mknod
      "mkdir -p /d && echo x > /d/.wh.keep && echo y > /d/sub2 && cp /bin/busybox /d/suid"
      " && chmod 4755 /d/suid && mknod /d/disk b 8 0 && mkdir -p /e && echo z > /e/sub")
    try:
        k("cp", "evilcp:/d", str(dest))
        assert (dest / "d" / "keep").read_text() == "host file\n"  # .wh.keep deleted nothing
        assert (dest / "d" / ".wh.keep").read_text() == "x\n"      # it is just a file here
        assert not (dest / "d" / "disk").exists()                   # no device node on the host
        assert (dest / "d" / "suid").stat().st_mode & 0o6000 == 0   # no setuid on the host
        cp = k("cp", "evilcp:/e/sub", str(dest / "d"), check=False)  # a file over the host's dir d/sub
        assert cp.returncode != 0 and (dest / "d" / "sub").is_dir()
    finally:
        k("rm", "-f", "evilcp")
