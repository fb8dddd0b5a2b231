"""kill -9 of the CLI at every step of `run`, the steps enumerated from the step record
itself (kobako/steps.py), not from a list kept here: a traced run prints each step's fault
point (`[engine:record]`, `[network:veth]`, `[init:pivot_root]`...); each one is then armed
in turn (KOBAKO_FAULT), the CLI dies by SIGKILL right after that step, and `rm -f` (or
`system prune` alone, every other time) must leave no mount, network namespace, veth,
cgroup, nft table or element, runtime state, container directory or process, with the
image and the named volume intact."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from engine_support import Kobako

pytestmark = pytest.mark.root
IMG = "kbt/busybox:1"
REPO = Path(__file__).resolve().parents[2]
ARGV = ["run", "--name", "kstep", "-p", "127.0.0.1::80", "-v", "kstep-vol:/data", "-m", "64m", IMG,
        "sh", "-c", "echo ran >> /data/log"]
POINT = re.compile(r"\[([a-z]+:[a-z0-9_#-]+)\](?:  \([0-9.]+ ms\))?$")


@pytest.fixture(scope="module")
def k(session_base: Path, busybox_rootfs: Path) -> Kobako:
    kb = Kobako(session_base / "kill-every-step")
    kb("import", str(busybox_rootfs), IMG)
    kb("volume", "create", "kstep-vol")
    return kb


def _links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    return {ln.split(":")[1].strip().split("@")[0] for ln in out.splitlines()}


def _netns() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {ln.split()[0] for ln in out.splitlines() if ln.strip()}


def _table(k: Kobako) -> str:
    sys.path.insert(0, str(REPO))
    from kobako.network.networks import table_name
    return table_name(str(k.root / "run"))


def _left(k: Kobako, links: set[str], netns: set[str]) -> list[str]:
    """Every kind of object a run makes, as the kernel and the store show it."""
    out = [f"container dir {n[:12]}" for n in os.listdir(k.data / "containers") if len(n) == 64]
    rt = k.root / "run" / "runtime"
    if rt.exists():
        out += [f"runtime state {n[:12]}" for n in os.listdir(rt) if not n.startswith(".")]
    root = str(k.root)
    out += [f"mount {ln.split()[4]}" for ln in open("/proc/self/mountinfo") if root in ln]
    out += [f"netns {n}" for n in _netns() - netns]
    out += [f"link {n}" for n in _links() - links if n.startswith("kb")]
    cg = subprocess.run(["find", "/sys/fs/cgroup", "-maxdepth", "3", "-path", "*/kobako/*"],
                        capture_output=True, text=True).stdout.split()
    out += [f"cgroup {c}" for c in cg if any(c.endswith(n) for n in _ids_seen)]
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    if f"table inet {_table(k)}" in tables.splitlines():
        out.append(f"nft table {_table(k)}")
    for pid in os.listdir("/proc"):  # a process whose root is a container's root filesystem
        if pid.isdigit():
            try:
                if os.readlink(f"/proc/{pid}/root").startswith(str(k.data)):
                    out.append(f"process {pid}")
            except OSError:
                pass
    return out


_ids_seen: set[str] = set()


def _settled(k: Kobako, links: set[str], netns: set[str]) -> list[str]:
    """What is left once the engine's background reaper has had its moment (an idle bridge
    and its firewall table go a little after the last container leaves)."""
    end = time.monotonic() + 8
    while (left := _left(k, links, netns)) and time.monotonic() < end:
        time.sleep(0.2)
    return left


def test_kill_9_at_every_step_of_run_leaves_nothing(k: Kobako):
    links, netns = _links(), _netns()
    cp = k("run", "--trace", *ARGV[1:])
    points = list(dict.fromkeys(m.group(1) for ln in cp.stderr.splitlines() if (m := POINT.search(ln))))
    layers = {p.split(":")[0] for p in points}
    assert {"engine", "network", "runtime", "init"} <= layers, cp.stderr[-2000:]
    assert len(points) > 30, points
    _ids_seen.add(k("inspect", "--format", "{{.Id}}", "kstep").stdout.strip())
    k("rm", "-f", "kstep")
    assert _settled(k, links, netns) == []
    problems = []
    for i, point in enumerate(points):
        p = subprocess.run([sys.executable, "-m", "kobako.cli.main", *ARGV], cwd=REPO,
                           env={**k.env, "KOBAKO_FAULT": point}, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True, timeout=60)
        if p.returncode != -9:
            problems.append(f"{point}: the fault did not fire (exit {p.returncode}: {p.stderr[-300:]})")
        cid = k("inspect", "--format", "{{.Id}}", "kstep", check=False).stdout.strip()
        if cid:
            _ids_seen.add(cid)
        if i % 2 == 0:
            k("rm", "-f", "kstep", check=False)
        k("system", "prune", "-f")
        left = _settled(k, links, netns)
        if left:
            problems.append(f"{point}: left {left}")
    assert problems == [], "\n".join(problems)
    k("image", "inspect", IMG)
    out = k("run", "--rm", "-v", "kstep-vol:/data", IMG, "cat", "/data/log").stdout
    assert out.startswith("ran\n"), out  # the volume kept what the runs wrote
