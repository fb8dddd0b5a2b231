"""No user action after a crash: a container whose `kobako run` or monitor was killed with
kill -9 shows as exited (exit code 255, the reason in State.Error) at the next `ps` once
its init has ended, and that `ps` has torn down what it left -- network namespace, veth,
nft element, address, cgroup, runtime state -- without `rm`; a --rm one is gone. While
the init still runs, the container shows as running and nothing stops it. A table that
someone's `nft flush ruleset` removed comes back at the next command (checked inside a
network namespace of this test's own: the host's ruleset is never flushed)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from engine_support import Kobako
from support import cgroup_dirs, wait_for

pytestmark = pytest.mark.root
IMG = "kbt/busybox:1"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def k(session_base: Path, busybox_rootfs: Path):
    kb = Kobako(session_base / "owner-gone")
    kb("import", str(busybox_rootfs), IMG)
    kb("network", "create", "ognet")
    yield kb
    kb.clean()


def _table(k: Kobako) -> str:
    sys.path.insert(0, str(REPO))
    from kobako.network.networks import table_name
    return table_name(str(k.root / "run"))


def _record(k: Kobako, cid: str) -> dict:
    return json.loads((k.data / "containers" / cid / "container.json").read_text())


def _init_pid(k: Kobako, cid: str) -> int:
    return json.loads((k.root / "run" / "runtime" / cid / "state.json").read_text())["pid"]


def _foreground(k: Kobako, *argv: str, env: dict | None = None) -> subprocess.Popen:
    # not pipes: the container, left running by the kill, would hold them open
    return subprocess.Popen([sys.executable, "-m", "kobako.cli.main", "run", *argv], cwd=REPO,
                            env=env or k.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def _running(k: Kobako, name: str) -> str:
    """Wait until `name` runs (its runtime state names its init); its ID."""
    def up() -> bool:
        cid = k("inspect", "--format", "{{.Id}}", name, check=False).stdout.strip()
        return bool(cid) and (k.root / "run" / "runtime" / cid / "state.json").exists() and \
            k("inspect", "--format", "{{.State.Status}}", name).stdout.strip() == "running"
    wait_for(up, 30, f"{name} running")
    return k("inspect", "--format", "{{.Id}}", name).stdout.strip()


def _gone(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def _kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: _gone(pid), 10, f"pid {pid} gone")


def _objects(k: Kobako, cid: str, veths: list[str], port: int | None) -> list[str]:
    """What of the container the kernel and the run root still hold."""
    out = []
    if os.path.exists(f"/run/netns/kobako-{cid[:12]}"):
        out.append("netns")
    if (k.root / "run" / "network" / "endpoints" / f"{cid}.json").exists():
        out.append("endpoint state")
    if (k.root / "run" / "runtime" / cid).exists():
        out.append("runtime state")
    out += [f"cgroup {d}" for d in cgroup_dirs(cid)]
    for v in veths:
        if subprocess.run(["ip", "link", "show", v], capture_output=True).returncode == 0:
            out.append(f"veth {v}")
    if port is not None:
        nft = subprocess.run(["nft", "list", "table", "inet", _table(k)], capture_output=True,
                             text=True).stdout
        if f" {port} : " in nft:
            out.append(f"nft element for port {port}")
    return out


def _veths(k: Kobako, cid: str) -> list[str]:
    st = json.loads((k.root / "run" / "network" / "endpoints" / f"{cid}.json").read_text())
    return [ep["veth"] for ep in st["networks"].values()]


def _ps(k: Kobako) -> dict[str, str]:
    out = k("ps", "-a", "--format", "{{.Names}}\t{{.Status}}").stdout
    return dict(line.split("\t", 1) for line in out.splitlines())


def test_run_killed_the_container_runs_on_then_ps_settles_its_exit(k: Kobako):
    p = _foreground(k, "--name", "og-fg", "--network", "ognet", "-p", "18461:80", IMG, "sleep", "300")
    cid = _running(k, "og-fg")
    veths = _veths(k, cid)
    _kill(p.pid)
    p.wait()
    assert _ps(k)["og-fg"].startswith("Up"), "a container whose CLI died is not stopped"
    assert _objects(k, cid, veths, 18461) != []
    _kill(_init_pid(k, cid))
    assert _ps(k)["og-fg"].startswith("Exited (255)")
    assert _objects(k, cid, veths, 18461) == [], "the next ps tears down what the container left"
    state = json.loads(k("inspect", "--format", "{{json .State}}", "og-fg").stdout)
    assert state["Status"] == "exited" and state["ExitCode"] == 255 and not state["Running"]
    assert f"kobako run (pid {p.pid})" in state["Error"] and "killed" in state["Error"]
    assert state["FinishedAt"] != "0001-01-01T00:00:00Z"
    k("rm", "og-fg")  # no -f needed: it is exited


def test_run_killed_while_creating_shows_exited_at_the_next_ps(k: Kobako):
    env = {**k.env, "KOBAKO_FAULT": "network:nft"}
    p = _foreground(k, "--name", "og-mid", "--network", "ognet", "-p", "18462:80", IMG, "true", env=env)
    assert p.wait(60) == -9
    cid = _record_id(k, "og-mid")
    veths = [json.loads(f.read_text())["networks"]["ognet"]["veth"]
             for f in (k.root / "run" / "network" / "endpoints").glob(f"{cid}.json")]
    assert veths, "the fault fired after the network was made"
    assert _ps(k)["og-mid"].startswith("Exited (255)")
    assert _objects(k, cid, veths, 18462) == []
    err = k("inspect", "--format", "{{.State.Error}}", "og-mid").stdout
    assert "killed while it was starting the container" in err
    k("rm", "og-mid")


def _record_id(k: Kobako, name: str) -> str:
    for d in (k.data / "containers").iterdir():
        if len(d.name) == 64 and (d / "container.json").exists() and _record(k, d.name)["name"] == name:
            return d.name
    raise AssertionError(f"no record named {name}")


def test_monitor_killed_ps_settles_its_containers_and_rm_ones_go(k: Kobako):
    cid = k("run", "-d", "--name", "og-d", "--network", "ognet", "-p", "18463:80", IMG,
            "sleep", "300").stdout.strip()
    rm_id = k("run", "-d", "--rm", "--name", "og-drm", IMG, "sleep", "300").stdout.strip()
    veths = _veths(k, cid)
    owner = _record(k, cid)["owner"]
    assert owner["by"] == "monitor" and _record(k, rm_id)["owner"]["pid"] == owner["pid"]
    _kill(owner["pid"])
    ps = _ps(k)
    assert ps["og-d"].startswith("Up") and ps["og-drm"].startswith("Up")
    _kill(_init_pid(k, cid))
    _kill(_init_pid(k, rm_id))
    ps = _ps(k)
    assert ps["og-d"].startswith("Exited (255)")
    assert "og-drm" not in ps and not (k.data / "containers" / rm_id).exists(), "--rm: removed by the next ps"
    assert _objects(k, cid, veths, 18463) == []
    assert _objects(k, rm_id, [], None) == []
    err = k("inspect", "--format", "{{.State.Error}}", "og-d").stdout
    assert f"the container monitor (pid {owner['pid']})" in err
    # a killed monitor's socket is left behind: the next start must not trip over it
    k("start", "og-d")
    assert _ps(k)["og-d"].startswith("Up")
    k("rm", "-f", "og-d")


def test_foreground_rm_container_goes_with_the_next_command(k: Kobako):
    p = _foreground(k, "--rm", "--name", "og-rm", IMG, "sleep", "300")
    cid = _running(k, "og-rm")
    _kill(p.pid)
    p.wait()
    _kill(_init_pid(k, cid))
    assert "og-rm" not in _ps(k)
    assert not (k.data / "containers" / cid).exists()
    assert _objects(k, cid, [], None) == []


def test_a_port_held_by_a_dead_owner_is_taken_back_by_the_next_run(k: Kobako):
    p = _foreground(k, "--name", "og-port", "--network", "ognet", "-p", "18464:80", IMG, "sleep", "300")
    cid = _running(k, "og-port")
    _kill(p.pid)
    p.wait()
    _kill(_init_pid(k, cid))
    # no ps in between: the run that needs the port settles the container that held it
    cp = k("run", "--rm", "--network", "ognet", "-p", "18464:80", IMG, "echo", "took it")
    assert cp.stdout.strip() == "took it"
    assert k("inspect", "--format", "{{.State.ExitCode}}", "og-port").stdout.strip() == "255"
    k("rm", "og-port")


def test_flushed_table_comes_back_at_the_next_command(session_base: Path, busybox_rootfs: Path):
    """In a network namespace of this test's own, with a private data and run root: a
    published port answers, `nft flush ruleset` there breaks it, `kobako ps` mends it."""
    ns = f"kbt-fw-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    kb = Kobako(session_base / "fw-flush")
    inside = ["nsenter", f"--net=/run/netns/{ns}"]

    def kobako(*argv: str) -> subprocess.CompletedProcess:
        cp = subprocess.run([*inside, sys.executable, "-m", "kobako.cli.main", *argv], env=kb.env, cwd=REPO,
                            capture_output=True, text=True, timeout=60)
        assert cp.returncode == 0, f"kobako {' '.join(argv)}: {cp.stderr}"
        return cp

    def get() -> str:
        return subprocess.run([*inside, "timeout", "5", "busybox", "wget", "-q", "-O-",
                               "http://127.0.0.1:18465/i"], capture_output=True, text=True).stdout

    try:
        subprocess.run([*inside, "ip", "link", "set", "lo", "up"], check=True)
        kobako("import", str(busybox_rootfs), IMG)
        kobako("run", "-d", "--name", "web", "-p", "127.0.0.1:18465:80", IMG,
               "sh", "-c", "echo hello > /i; exec httpd -f -p 80 -h /")
        wait_for(lambda: get() == "hello\n", 10, "the published port")
        subprocess.run([*inside, "nft", "flush", "ruleset"], check=True)  # only in our namespace
        assert get() == ""
        kobako("ps")
        assert get() == "hello\n"
        tables = subprocess.run([*inside, "nft", "list", "tables"], capture_output=True, text=True).stdout
        assert "kobako_" in tables
    finally:
        subprocess.run([*inside, sys.executable, "-m", "kobako.cli.main", "rm", "-f", "web"], env=kb.env,
                       cwd=REPO, capture_output=True)
        time.sleep(0.1)
        subprocess.run(["ip", "netns", "del", ns])
