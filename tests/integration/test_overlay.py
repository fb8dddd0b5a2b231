"""VXLAN overlay networks across two "hosts" made here: each a network + mount namespace
with its own kobako data root, joined by an underlay veth 192.168.234.1/24 <-> .2, as
../shared/acceptance/multi-host makes them. The machine's own interfaces are not touched:
everything lives in the two namespaces and goes with them."""

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

pytestmark = pytest.mark.root
IMG = "kbt/busybox:1"
REPO = Path(__file__).resolve().parents[2]
UNDERLAY = {"a": "192.168.234.1", "b": "192.168.234.2"}


class Host(Kobako):
    """kobako run inside one namespace host (nsenter into the sleeper that holds it)."""

    def __init__(self, root: Path, pid: int) -> None:
        super().__init__(root)
        self.pid = pid

    def __call__(self, *args: str, check: bool = True, timeout: float = 120,
                 **kw) -> subprocess.CompletedProcess:
        cp = subprocess.run(["nsenter", "-t", str(self.pid), "-m", "-n", f"--wd={REPO}", sys.executable, "-m",
                             "kobako.cli.main", *args], env=self.env, capture_output=True, text=True,
                            timeout=timeout, cwd=REPO)
        if check and cp.returncode != 0:
            raise AssertionError(f"kobako {' '.join(args)} failed ({cp.returncode}):\n{cp.stderr}")
        return cp

    def sh(self, *argv: str) -> str:
        return subprocess.run(["nsenter", "-t", str(self.pid), "-n", *argv], capture_output=True, text=True,
                              timeout=30).stdout

    def links(self) -> set[str]:
        return {ln.split(":")[1].strip().split("@")[0] for ln in self.sh("ip", "-o", "link").splitlines()}


@pytest.fixture(scope="module")
def hosts(session_base: Path, busybox_rootfs: Path):
    tag = f"{os.getpid() % 100000}"
    ns = {h: f"kbt-ovl{h}{tag}" for h in "ab"}
    made: dict[str, Host] = {}
    sleepers = []
    try:
        for h in "ab":
            subprocess.run(["ip", "netns", "add", ns[h]], check=True)
        subprocess.run(["ip", "link", "add", "kbto0", "netns", ns["a"], "type", "veth", "peer", "name",
                        "kbto1", "netns", ns["b"]], check=True)
        for h, dev in (("a", "kbto0"), ("b", "kbto1")):
            subprocess.run(["ip", "-n", ns[h], "addr", "add", UNDERLAY[h] + "/24", "dev", dev], check=True)
            subprocess.run(["ip", "-n", ns[h], "link", "set", "lo", "up"], check=True)
            subprocess.run(["ip", "-n", ns[h], "link", "set", dev, "up"], check=True)
            root = session_base / f"ovl-{h}"
            (root / "cg").mkdir(parents=True, exist_ok=True)
            p = subprocess.Popen(
                ["nsenter", f"--net=/run/netns/{ns[h]}", "unshare", "--mount", "--propagation", "slave", "sh",
                 "-c", 'mount --rbind /sys/fs/cgroup "$0"; mount -t sysfs sysfs /sys; '
                       'mount --rbind "$0" /sys/fs/cgroup; umount -l "$0"; mount --make-rshared /; '
                       'exec sleep 100000', str(root / "cg")])
            sleepers.append(p)
            made[h] = Host(root, p.pid)
        time.sleep(0.5)
        for k in made.values():
            k("import", str(busybox_rootfs), IMG)
        yield made
    finally:
        for k in made.values():
            k.clean()
        for p in sleepers:
            p.kill()
            p.wait()
        for h in "ab":
            subprocess.run(["ip", "netns", "del", ns[h]], capture_output=True)


def _ip(k: Host, name: str, net: str) -> str:
    doc = json.loads(k("inspect", name).stdout)[0]
    return doc["NetworkSettings"]["Networks"][net]["IPAddress"]


def _fetch(k: Host, net: str, url: str, tries: int = 20) -> subprocess.CompletedProcess:
    for _ in range(tries):
        cp = k("run", "--rm", "--network", net, IMG, "sh", "-c", f"wget -q -O - {url} | wc -c", check=False)
        if cp.returncode == 0 and cp.stdout.strip() not in ("", "0"):
            return cp
        time.sleep(0.5)
    return cp


def test_overlay_across_two_hosts(hosts, tmp_path: Path):
    a, b = hosts["a"], hosts["b"]
    a("network", "create", "--driver", "vxlan", "--subnet", "10.235.0.0/16", "--ip-range", "10.235.1.0/24",
      "--opt", f"peers={UNDERLAY['b']}", "ovl")
    b("network", "create", "--driver", "vxlan", "--subnet", "10.235.0.0/16", "--ip-range", "10.235.2.0/24",
      "--opt", f"peers={UNDERLAY['a']}", "ovl")
    doc = json.loads(a("network", "inspect", "ovl").stdout)[0]
    assert doc["Driver"] == "vxlan" and doc["Options"]["peers"] == UNDERLAY["b"]
    assert doc["IPAM"]["Config"][0]["Gateway"] == "10.235.1.1"
    vni = doc["Options"]["vni"]
    assert json.loads(b("network", "inspect", "ovl").stdout)[0]["Options"]["vni"] == vni  # derived alike
    assert "vxlan" in a("network", "ls", "--filter", "name=ovl").stdout
    assert not any(n.startswith("kv-") for n in a.links())  # made with the first container
    # 300 kB: full-size TCP segments, which a container MTU too large for the overlay would lose
    serve = "mkdir -p /www; echo kobako-net >/www/index.html; dd if=/dev/zero of=/www/big bs=1k count=300 " \
            "2>/dev/null; exec httpd -f -p 80 -h /www"
    a("run", "-d", "--name", "web", "--network", "ovl", IMG, "sh", "-c", serve)
    b("run", "-d", "--name", "peer", "--network", "ovl", IMG, "sh", "-c", serve)
    ipa, ipb = _ip(a, "web", "ovl"), _ip(b, "peer", "ovl")
    assert ipa.startswith("10.235.1.") and ipb.startswith("10.235.2.")
    dev = next(n for n in a.links() if n.startswith("kv-"))
    assert f"vxlan id {vni} " in a.sh("ip", "-d", "link", "show", dev) and "dstport 4789" in a.sh(
        "ip", "-d", "link", "show", dev)
    assert f"00:00:00:00:00:00 dst {UNDERLAY['b']}" in a.sh("bridge", "fdb", "show", "dev", dev)
    assert _fetch(b, "ovl", f"http://{ipa}/big").stdout.strip() == str(300 * 1024)
    got = a("exec", "web", "sh", "-c", f"wget -q -O - http://{ipb}/index.html; cat /sys/class/net/eth0/mtu")
    assert got.stdout.split() == ["kobako-net", "1450"]
    # a 1450-byte datagram with DF set leaves host b for the overlay; one byte more is refused
    probe = ("import socket,sys; s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); "
             "s.setsockopt(socket.IPPROTO_IP,10,2); "  # IP_MTU_DISCOVER = IP_PMTUDISC_DO
             "n=int(sys.argv[1]); s.sendto(b'x'*n,(sys.argv[2],9))")
    send = ["nsenter", "-t", str(b.pid), "-n", sys.executable, "-c", probe]
    assert subprocess.run([*send, "1422", ipa], capture_output=True).returncode == 0
    assert b"Message too long" in subprocess.run([*send, "1423", ipa], capture_output=True).stderr

    # another VNI is another network: its containers reach nothing of ovl
    b("network", "create", "--driver", "vxlan", "--subnet", "10.236.0.0/16", "--opt",
      f"peers={UNDERLAY['a']}", "ovl2")
    b("run", "-d", "--name", "iso", "--network", "ovl2", IMG, "sh", "-c",
      f"timeout 3 wget -q -O - http://{ipa}/index.html; exit $?")  # not exec'd: PID 1 ignores TERM
    assert b("wait", "iso", timeout=30).stdout.strip() not in ("", "0")

    # peers later: the live device's flood list follows
    a("network", "update", "--opt", f"peers={UNDERLAY['b']},192.168.234.7", "ovl")
    fdb = a.sh("bridge", "fdb", "show", "dev", dev)
    assert "dst 192.168.234.7" in fdb and f"dst {UNDERLAY['b']}" in fdb
    a("network", "update", "--opt", "peers=192.168.234.7", "ovl")
    assert f"00:00:00:00:00:00 dst {UNDERLAY['b']}" not in a.sh("bridge", "fdb", "show", "dev", dev)
    a("network", "update", "--opt", f"peers={UNDERLAY['b']}", "ovl")

    # the device goes with the bridge when the host's last container leaves
    a("rm", "-f", "web")
    a("network", "rm", "ovl")
    assert not any(n.startswith(("kv-", "kb-")) for n in a.links())


def test_bad_input_at_create_makes_nothing(hosts):
    a = hosts["a"]
    a("network", "create", "--driver", "vxlan", "--subnet", "10.237.0.0/16", "--opt",
      f"peers={UNDERLAY['b']}", "--opt", "vni=4242", "first")
    before = a("network", "ls", "-q").stdout
    common = ["network", "create", "--driver", "vxlan"]
    for args, words in [
        (["--subnet", "10.238.0.0/16", "--opt", "peers=nope"], "invalid peer 'nope'"),
        (["--subnet", "10.238.0.0/16", "--opt", "peers=203.0.113.9"], "peer 203.0.113.9 is unreachable"),
        (["--subnet", "10.238.0.0/16", "--opt", f"peers={UNDERLAY['a']}"], "an address of this host"),
        (["--subnet", "10.238.0.0/16"], "needs its peers"),
        (["--subnet", "10.237.128.0/17", "--opt", f"peers={UNDERLAY['b']}"], "overlaps network first"),
        (["--subnet", "10.238.0.0/16", "--opt", f"peers={UNDERLAY['b']}", "--opt", "vni=4242"],
         "VNI 4242 is already used by network first"),
        (["--subnet", "10.238.0.0/16", "--opt", f"peers={UNDERLAY['b']}", "--opt", "mtu=1000"], "too small"),
        (["--subnet", "10.238.0.0/16", "--opt", f"peers={UNDERLAY['b']}", "--opt", "mtu=1500"], "too large"),
        (["--subnet", "10.238.0.0/16", "--ip-range", "10.9.0.0/24", "--opt", f"peers={UNDERLAY['b']}"],
         "not inside subnet"),
    ]:
        cp = a(*common, *args, "second", check=False)
        assert cp.returncode != 0 and words in cp.stderr, (args, cp.stderr)
        assert len(cp.stderr.strip().splitlines()) == 1
        assert a("network", "ls", "-q").stdout == before
    a("network", "rm", "first")


def test_kill_9_while_attaching_then_prune_leaves_nothing(hosts):
    a = hosts["a"]
    links = a.links()
    a("network", "create", "--driver", "vxlan", "--subnet", "10.239.0.0/16", "--opt",
      f"peers={UNDERLAY['b']}", "k9")
    p = subprocess.run(["nsenter", "-t", str(a.pid), "-m", "-n", f"--wd={REPO}", sys.executable, "-m",
                        "kobako.cli.main", "run", "--name", "k9", "--network", "k9", IMG, "true"],
                       env={**a.env, "KOBAKO_FAULT": "net:made"}, cwd=REPO, capture_output=True, timeout=60)
    assert p.returncode == -signal.SIGKILL
    assert any(n.startswith("kv-") for n in a.links()), "the fault came before the vxlan device was made"
    a("system", "prune", "-f")
    assert a.links() == links
