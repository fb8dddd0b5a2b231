"""`--trace`: the step record shown as it happens, for a foreground run, a detached start
(the monitor traces on the command's stderr, handed over with the request), a failed run's
undo, and never into the container itself."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from engine_support import Kobako

pytestmark = pytest.mark.root
IMG = "kbt/busybox:1"
LINE = re.compile(r"^\[ *[0-9.]+ ms\] (\w+) +(.+)$")


@pytest.fixture(scope="module")
def k(session_base: Path, busybox_rootfs: Path) -> Kobako:
    kb = Kobako(session_base / "trace")
    kb("import", str(busybox_rootfs), IMG)
    yield kb
    kb.clean()


def _layers(stderr: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for ln in stderr.splitlines():
        m = LINE.match(ln)
        if m:
            out.setdefault(m.group(1), []).append(m.group(2))
    return out


def test_a_foreground_run_shows_every_layer_and_its_undo(k: Kobako):
    cp = k("run", "--rm", "--trace", "-p", "127.0.0.1::80", "-m", "64m", IMG, "echo", "out")
    assert cp.stdout == "out\n"  # the trace is on stderr only
    got = _layers(cp.stderr)
    assert {"engine", "network", "runtime", "init"} <= set(got), cp.stderr[-1500:]
    text = cp.stderr
    for what in ("[engine:record]", "[network:veth]", "[network:nft]", "CLONE_NEWPID", "pivot_root(2)",
                 "seccomp(2)", "capset(2)", "execve(2)", "undo: rmdir(2) in cgroupfs",
                 "undo: umount2(2)", "undo: nft -f (delete element)", "undo: rm -r"):
        assert what in text, what


def test_a_failed_run_shows_the_undo_of_what_it_made(k: Kobako):
    cp = k("run", "--rm", "--trace", IMG, "/no/such/program", check=False)
    assert cp.returncode == 127
    assert "[runtime:mkdir]" in cp.stderr
    assert re.search(r"runtime +undo +state directory", cp.stderr), cp.stderr[-1500:]
    assert "undo: rm -r" in cp.stderr


def test_a_detached_start_is_traced_by_the_monitor_on_our_stderr(k: Kobako):
    cid = k("run", "-d", "--trace", "--name", "trd", IMG, "sh", "-c", "ls /proc/self/fd; sleep 30")
    got = _layers(cid.stderr)
    assert "engine" in got and "network" in got and "init" in got, cid.stderr[-1500:]
    k("stop", "-t", "0", "trd")
    cp = k("start", "--trace", "trd")
    assert cp.stdout.strip() == "trd"
    got = _layers(cp.stderr)
    assert "network" in got and "runtime" in got and "init" in got, cp.stderr[-1500:]
    assert "execve(2)" in cp.stderr and "[network:veth]" in cp.stderr
    # the container's program never holds the trace's file: only stdin, stdout, stderr (and ls's own)
    fds = k("logs", "trd").stdout.split()
    assert set(fds) <= {"0", "1", "2", "3"}, fds
    k("rm", "-f", "trd")
