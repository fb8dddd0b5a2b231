"""--sig-proxy for a foreground `run` and `start -a`: a signal sent to the kobako process
reaches the container's process (its trap runs) by default, and with --sig-proxy=false it
does not: USR1 is ignored, as docker's CLI ignores it, and the container runs to its end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from engine_support import Kobako

pytestmark = pytest.mark.root
IMG = "kbt/busybox:1"
REPO = Path(__file__).resolve().parents[2]
# ready once the trap is set; without the signal it ends by itself after `sleep`
SCRIPT = 'trap "echo got-usr1; exit 3" USR1; echo ready; sleep {n} & wait $!; echo no-signal'


@pytest.fixture(scope="module")
def k(session_base: Path, busybox_rootfs: Path) -> Kobako:
    kb = Kobako(session_base / "sigproxy")
    kb("import", str(busybox_rootfs), IMG)
    yield kb
    kb.clean()


def _signalled(k: Kobako, args: list[str], sig: int = signal.SIGUSR1) -> tuple[int, str]:
    """Start kobako ARGS, wait for the container's "ready", send `sig` to the kobako
    process, and return its exit status and output."""
    p = subprocess.Popen([sys.executable, "-m", "kobako.cli.main", *args], env=k.env, cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        first = p.stdout.readline()
        assert first == "ready\n", first + p.stdout.read()
        os.kill(p.pid, sig)
        rest = p.stdout.read()
        return p.wait(timeout=60), first + rest
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_run_passes_usr1_to_the_container(k: Kobako):
    rc, out = _signalled(k, ["run", "--rm", "--network", "none", IMG, "sh", "-c", SCRIPT.format(n=60)])
    assert (rc, out) == (3, "ready\ngot-usr1\n")


def test_run_with_sig_proxy_false_keeps_it_from_the_container(k: Kobako):
    rc, out = _signalled(k, ["run", "--rm", "--network", "none", "--sig-proxy=false", IMG, "sh", "-c",
                             SCRIPT.format(n=2)])
    assert (rc, out) == (0, "ready\nno-signal\n")


def test_run_with_sig_proxy_false_ends_with_sigint_and_leaves_nothing(k: Kobako):
    rc, out = _signalled(k, ["run", "--rm", "--network", "none", "--sig-proxy=false", "--name", "sp-int", IMG,
                             "sh", "-c", SCRIPT.format(n=60)], signal.SIGINT)
    assert rc == 130 and "got-usr1" not in out and "no-signal" not in out
    assert "sp-int" not in k("ps", "-a", "--format", "{{.Names}}").stdout


@pytest.mark.parametrize("proxy", [True, False])
def test_start_attach(k: Kobako, proxy: bool):
    script = SCRIPT.format(n=60 if proxy else 2)
    cid = k("create", "--network", "none", IMG, "sh", "-c", script).stdout.strip()
    try:
        rc, out = _signalled(k, ["start", "-a", *([] if proxy else ["--sig-proxy=false"]), cid])
        assert (rc, out) == ((3, "ready\ngot-usr1\n") if proxy else (0, "ready\nno-signal\n"))
    finally:
        k("rm", "-f", cid)
