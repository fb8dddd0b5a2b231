"""Names by DNS on user networks (network/dns.py), on a real kernel through the CLI: busybox
`nslookup` (which reads no /etc/hosts) finds container names, aliases and link aliases on
its own networks only, sees a disconnect at once, gets other names from the upstream
server -- one this test runs in a namespace it made, never the internet --, and the
server comes back after a kill -9 and is gone with the last container."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from engine_support import Kobako

pytestmark = pytest.mark.root
IMG = "kbt/busybox:1"


@pytest.fixture(scope="module")
def k(session_base: Path, busybox_rootfs: Path) -> Kobako:
    kb = Kobako(session_base / "dns")
    kb.env["KOBAKO_NET_LINGER"] = "0.2"
    kb("import", str(busybox_rootfs), IMG)
    yield kb
    kb.clean()


def netdir(k: Kobako) -> Path:
    return k.root / "run" / "network"


def servers(k: Kobako) -> list[int]:
    """kobako-dns processes of this run root."""
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                argv = Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv[0] == b"kobako-dns" and os.fsencode(str(netdir(k))) in argv:
                out.append(int(p))
    return out


def lookup(k: Kobako, ctr: str, name: str) -> tuple[int, str]:
    cp = k("exec", ctr, "nslookup", name, check=False)
    return cp.returncode, cp.stdout + cp.stderr


def wait_gone(k: Kobako) -> None:
    end = time.monotonic() + 10
    while time.monotonic() < end and (servers(k) or (netdir(k) / "dns.pid").exists()):
        time.sleep(0.1)


def test_names_aliases_links_and_other_networks(k: Kobako):
    k("network", "create", "dn-a")
    k("network", "create", "dn-b")
    try:
        k("run", "-d", "--name", "dn-me", "--network", "dn-a", IMG, "sleep", "300")
        k("network", "disconnect", "dn-a", "dn-me")
        k("network", "connect", "--link", "dn-up:bar", "dn-a", "dn-me")  # as docker-py's test does
        k("run", "-d", "--name", "dn-up", "--network", "dn-a", "--network-alias", "webalias", IMG,
          "sleep", "300")
        k("run", "-d", "--name", "dn-far", "--network", "dn-b", IMG, "sleep", "300")
        assert "nameserver" in k("exec", "dn-me", "cat", "/etc/resolv.conf").stdout
        up_ip = k("inspect", "-f", "{{.NetworkSettings.IPAddress}}", "dn-up").stdout.strip()
        for name in ("dn-up", "webalias", "bar", "dn-up.dn-a"):
            rc, out = lookup(k, "dn-me", name)
            assert rc == 0 and up_ip in out, (name, out)
        # a link alias is the linking container's own
        rc, out = lookup(k, "dn-up", "bar")
        assert up_ip not in out
        # names of another network are not visible
        far_ip = k("inspect", "-f", "{{.NetworkSettings.IPAddress}}", "dn-far").stdout.strip()
        rc, out = lookup(k, "dn-me", "dn-far")
        assert rc != 0 and far_ip not in out, out
        # a disconnect makes the name go away at once; a connect brings it
        k("network", "disconnect", "dn-a", "dn-up")
        rc, out = lookup(k, "dn-me", "webalias")
        assert rc != 0, out
        k("network", "connect", "dn-b", "dn-me")
        rc, out = lookup(k, "dn-me", "dn-far")
        assert rc == 0, out
    finally:
        k("rm", "-f", "dn-me", "dn-up", "dn-far")
        k("network", "rm", "dn-a", "dn-b")
    wait_gone(k)
    assert servers(k) == [] and not (netdir(k) / "dns.sock").exists()  # nothing left


UPSTREAM = r"""
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 53))
print("ready", flush=True)
while True:
    q, peer = s.recvfrom(512)
    i = 12
    while q[i]:
        i += 1 + q[i]
    qend = i + 5
    a = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + bytes([203, 0, 113, 7])
    ok = struct.unpack_from("!H", q, qend - 4)[0] == 1
    s.sendto(q[:2] + struct.pack("!HHHHH", 0x8180, 1, int(ok), 0, 0) + q[12:qend] + (a if ok else b""), peer)
"""


@pytest.fixture()
def upstream():
    """A DNS server in a namespace of this test's own: every A query gets 203.0.113.7."""
    ns, host_if = f"kbt-dnsup{os.getpid() % 10000}", f"kbtdu{os.getpid() % 10000}"
    run = lambda *a: subprocess.run(a, check=True, capture_output=True)  # noqa: E731
    run("ip", "netns", "add", ns)
    proc = None
    try:
        run("ip", "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", ns)
        run("ip", "addr", "add", "198.51.100.1/30", "dev", host_if)
        run("ip", "link", "set", host_if, "up")
        run("ip", "-n", ns, "addr", "add", "198.51.100.2/30", "dev", "eth0")
        run("ip", "-n", ns, "link", "set", "eth0", "up")
        run("ip", "-n", ns, "link", "set", "lo", "up")
        proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", UPSTREAM, "198.51.100.2"],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield "198.51.100.2"
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_other_names_are_forwarded_and_a_killed_server_comes_back(k: Kobako, upstream: str):
    k("network", "create", "dn-c")
    try:
        k("run", "-d", "--name", "dn-c1", "--network", "dn-c", "--dns", upstream, IMG, "sleep", "300")
        rc, out = lookup(k, "dn-c1", "outside.example")
        assert rc == 0 and "203.0.113.7" in out, out
        (pid,) = servers(k)
        assert int((netdir(k) / "dns.pid").read_text()) == pid
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
        assert lookup(k, "dn-c1", "dn-c1")[0] != 0  # nobody answers now
        k("system", "prune", "-f")  # the sweep finds it dead and starts it again
        (pid2,) = servers(k)
        assert pid2 != pid
        rc, out = lookup(k, "dn-c1", "dn-c1")
        assert rc == 0, out
        # a kill -9 is also mended by the next container start on a user network
        os.kill(pid2, signal.SIGKILL)
        time.sleep(0.2)
        out = k("run", "--rm", "--network", "dn-c", IMG, "nslookup", "dn-c1").stdout
        assert "Address" in out.split("Name:")[-1]
    finally:
        k("rm", "-f", "dn-c1")
        k("network", "rm", "dn-c")
    wait_gone(k)
    assert servers(k) == []


def test_default_bridge_keeps_the_hosts_servers_and_no_server_runs(k: Kobako):
    out = k("run", "--rm", IMG, "cat", "/etc/resolv.conf").stdout
    assert "kobako" not in out
    assert servers(k) == []
