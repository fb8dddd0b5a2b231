"""Networking on a real kernel through the `kobako` CLI: the default bridge, user networks
with names, isolation, published ports (TCP, UDP, 127.0.0.1, the bridge address, hairpin),
--internal, live connect/disconnect, `ip netns`, bandwidth limits, bad input, and kill -9.

Traffic goes only to loopback and to addresses inside namespaces these tests made. The
session-wide leak check (conftest.py) fails if a kb-* link, netns or kobako nft table
outlives the suite."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from engine_support import Kobako, assert_user_error
from support import free_port, wait_for

pytestmark = pytest.mark.root
IMG = "kbt/busybox:1"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def k(session_base: Path, busybox_rootfs: Path) -> Kobako:
    kb = Kobako(session_base / "net")
    kb("import", str(busybox_rootfs), IMG)
    yield kb
    kb.clean()


@pytest.fixture()
def www(tmp_path: Path) -> Path:
    d = tmp_path / "www"
    d.mkdir()
    (d / "index.html").write_text("kobako-net\n")
    return d



def _get(url: str, timeout: float = 10) -> str:
    """Fetch, retrying while the server in the container comes up."""
    end = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.read().decode()
        except urllib.error.HTTPError as e:
            return f"HTTP {e.code}"
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.1)


def _inspect(k: Kobako, name: str) -> dict:
    return json.loads(k("inspect", name).stdout)[0]


def _ip(k: Kobako, name: str, net: str) -> str:
    return _inspect(k, name)["NetworkSettings"]["Networks"][net]["IPAddress"]


def _links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    return {ln.split(":")[1].strip().split("@")[0] for ln in out.splitlines()}


def _netns() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {ln.split()[0] for ln in out.splitlines() if ln.strip()}


def _httpd(k: Kobako, name: str, www: Path, *args: str) -> None:
    k("run", "-d", "--name", name, "-v", f"{www}:/www:ro", *args, IMG,
      "httpd", "-f", "-p", "80", "-h", "/www")


def test_default_bridge_container_to_gateway_and_to_container(k: Kobako, www: Path):
    _httpd(k, "nb-web", www)
    try:
        doc = _inspect(k, "nb-web")
        net = doc["NetworkSettings"]["Networks"]["bridge"]
        assert doc["HostConfig"]["NetworkMode"] == "default"  # dockerd 20.10 (API 1.41) keeps "default"
        assert net["IPAddress"] and net["Gateway"] and net["MacAddress"].startswith("02:42:")
        ns = doc["NetworkSettings"]["SandboxKey"]
        assert os.path.basename(ns) in _netns()  # `ip netns` lists the running container
        out = k("run", "--rm", IMG, "sh", "-c",
                f"ping -c1 -W2 {net['Gateway']} >/dev/null && echo gw-ok; wget -qO- http://{net['IPAddress']}/")
        assert out.stdout.split() == ["gw-ok", "kobako-net"]
        # the host reaches the container's own address too (it is on the bridge)
        assert _get(f"http://{net['IPAddress']}/") == "kobako-net\n"
        netio = k("stats", "--no-stream", "--format", "{{.NetIO}}", "nb-web").stdout.strip()
        assert netio != "-- / --" and "/" in netio  # counters of the container's eth0
    finally:
        k("rm", "-f", "nb-web")
    assert os.path.basename(ns) not in _netns()  # the netns link goes with the container


def test_user_networks_names_aliases_and_isolation(k: Kobako, www: Path):
    k("network", "create", "nb-a")
    k("network", "create", "nb-b")
    try:
        _httpd(k, "nb-srv", www, "--network", "nb-a", "--network-alias", "webalias")
        for host in ("nb-srv", "webalias"):
            out = k("run", "--rm", "--network", "nb-a", IMG, "wget", "-qO-", f"http://{host}/")
            assert out.stdout == "kobako-net\n", host
        ip = _ip(k, "nb-srv", "nb-a")
        # busybox 1.35's `wget -T` crashes (Debian's build): `timeout` bounds it instead, under
        # sh (a lone command sh would exec: wget as PID 1 ignores timeout's SIGTERM)
        probe = ("sh", "-c", f"timeout 3 wget -qO- http://{ip}/; exit $?")
        assert k("run", "--rm", "--network", "nb-a", IMG, *probe).stdout == "kobako-net\n"
        other = k("run", "--rm", "--network", "nb-b", IMG, *probe, check=False)
        assert other.returncode not in (0, 139) and "kobako-net" not in other.stdout, \
            "a container on another network reached nb-srv"
        assert "nb-srv" not in k("run", "--rm", "--network", "nb-b", IMG, "cat", "/etc/hosts").stdout
        # `network rm` refuses while a container uses it
        assert_user_error(k("network", "rm", "nb-a", check=False), "in use", "nb-srv", code=1)
    finally:
        k("rm", "-f", "nb-srv")
        k("network", "rm", "nb-a", "nb-b")
    assert "nb-a" not in k("network", "ls").stdout


def test_publish_tcp_on_loopback_bridge_address_and_hairpin(k: Kobako, www: Path):
    p1, p2 = free_port(), free_port()
    _httpd(k, "nb-pub", www, "-p", f"127.0.0.1:{p1}:80", "-p", f"{p2}:80")
    try:
        assert _get(f"http://127.0.0.1:{p1}/") == "kobako-net\n"
        gw = _inspect(k, "nb-pub")["NetworkSettings"]["Networks"]["bridge"]["Gateway"]
        assert _get(f"http://{gw}:{p2}/") == "kobako-net\n"  # the host's own bridge address
        assert _get(f"http://127.0.0.1:{p2}/") == "kobako-net\n"  # 0.0.0.0 includes loopback
        # hairpin: another container, through the host's published port
        out = k("run", "--rm", IMG, "sh", "-c", f"timeout 5 wget -qO- http://{gw}:{p2}/; exit $?")
        assert out.stdout == "kobako-net\n"
        lines = sorted(k("port", "nb-pub").stdout.splitlines())
        assert lines == sorted([f"80/tcp -> 127.0.0.1:{p1}", f"80/tcp -> 0.0.0.0:{p2}"])
        assert k("port", "nb-pub", "80").stdout.split()[0] in (f"127.0.0.1:{p1}", f"0.0.0.0:{p2}")
        ps = k("ps", "--format", "{{.Ports}}", "--filter", "name=nb-pub").stdout
        assert f"127.0.0.1:{p1}->80/tcp" in ps
        ports = _inspect(k, "nb-pub")["NetworkSettings"]["Ports"]["80/tcp"]
        assert {"HostIp": "127.0.0.1", "HostPort": str(p1)} in ports
    finally:
        k("rm", "-f", "nb-pub")
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{p1}/", timeout=1)  # the DNAT went with it


def test_publish_udp(k: Kobako):
    port = free_port()
    # busybox-static has no UDP server: the host's python3 (its /usr bind-mounted) echoes
    echo = ("import socket;s=socket.socket(2,2);s.bind(('',9999));"
            "[s.sendto(*s.recvfrom(99)) for _ in iter(int,1)]")
    k("run", "-d", "--name", "nb-udp", "-p", f"127.0.0.1:{port}:9999/udp", "-v", "/usr:/usr:ro",
      "-v", "/lib:/lib:ro", "-v", "/lib64:/lib64:ro", IMG, "/usr/bin/python3", "-c", echo)
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(0.3)
        got = b""
        end = time.monotonic() + 10
        while time.monotonic() < end and not got:
            s.sendto(b"udp-hello\n", ("127.0.0.1", port))
            try:
                got = s.recv(100)
            except TimeoutError:
                pass
        s.close()
        assert got == b"udp-hello\n"
        assert k("port", "nb-udp").stdout.strip() == f"9999/udp -> 127.0.0.1:{port}"
    finally:
        k("rm", "-f", "nb-udp")


def test_random_host_port_and_publish_all(k: Kobako, www: Path):
    _httpd(k, "nb-rand", www, "-p", "80", "-P", "--expose", "8080")
    try:
        lines = k("port", "nb-rand").stdout.splitlines()
        ports = {ln.split(" -> ")[0]: int(ln.rsplit(":", 1)[1]) for ln in lines}
        assert set(ports) == {"80/tcp", "8080/tcp"} and all(p > 0 for p in ports.values())
        assert _get(f"http://127.0.0.1:{ports['80/tcp']}/") == "kobako-net\n"
    finally:
        k("rm", "-f", "nb-rand")


def test_internal_network_has_no_way_out(k: Kobako):
    k("network", "create", "--internal", "--subnet", "10.231.0.0/24", "nb-int")
    try:
        out = k("run", "--rm", "--network", "nb-int", IMG, "ip", "route").stdout
        assert "default" not in out and "10.231.0.0/24" in out
        doc = json.loads(k("network", "inspect", "nb-int").stdout)[0]
        assert doc["Internal"] is True and doc["IPAM"]["Config"][0]["Subnet"] == "10.231.0.0/24"
    finally:
        k("network", "rm", "nb-int")


def test_connect_and_disconnect_a_running_container(k: Kobako, www: Path):
    k("network", "create", "nb-c1")
    k("network", "create", "nb-c2")
    try:
        _httpd(k, "nb-live", www, "--network", "nb-c1")
        k("network", "connect", "--alias", "later", "nb-c2", "nb-live")
        ip2 = _ip(k, "nb-live", "nb-c2")
        assert ip2 in k("exec", "nb-live", "ip", "-4", "addr").stdout
        out = k("run", "--rm", "--network", "nb-c2", IMG, "wget", "-qO-", "http://later/")
        assert out.stdout == "kobako-net\n"
        assert_user_error(k("network", "connect", "nb-c2", "nb-live", check=False), "already connected")
        k("network", "disconnect", "nb-c2", "nb-live")
        assert ip2 not in k("exec", "nb-live", "ip", "-4", "addr").stdout
        assert "nb-c2" not in _inspect(k, "nb-live")["NetworkSettings"]["Networks"]
        k("network", "rm", "nb-c2")  # no longer in use
    finally:
        k("rm", "-f", "nb-live")
        k("network", "rm", "nb-c1")
        k("network", "rm", "nb-c2", check=False)


def test_container_network_mode_shares_the_namespace(k: Kobako, www: Path):
    _httpd(k, "nb-owner", www)
    try:
        out = k("run", "--rm", "--network", "container:nb-owner", IMG, "wget", "-qO-", "http://127.0.0.1/")
        assert out.stdout == "kobako-net\n"
        # a detached joiner of a container without kobako's netns (--network none): its namespace
        # is found by the owner's PID at each start
        k("run", "-d", "--name", "nb-none", "--network", "none", IMG, "sleep", "60")
        k("run", "-d", "--name", "nb-join", "--network", "container:nb-none", IMG, "sleep", "60")
        own = k("exec", "nb-none", "readlink", "/proc/self/ns/net").stdout
        assert k("exec", "nb-join", "readlink", "/proc/self/ns/net").stdout == own
    finally:
        k("rm", "-f", "nb-owner", "nb-join", "nb-none")


def test_fixed_ip_and_bad_input(k: Kobako):
    k("network", "create", "--subnet", "10.232.0.0/24", "--gateway", "10.232.0.1", "nb-fix")
    try:
        k("run", "-d", "--name", "nb-fixed", "--network", "nb-fix", "--ip", "10.232.0.50", IMG, "sleep", "60")
        assert _ip(k, "nb-fixed", "nb-fix") == "10.232.0.50"
        links = _links()
        cases = [
            (("network", "create", "--subnet", "10.232.0.0/16", "nb-x"), ["overlaps"]),
            (("network", "create", "--subnet", "10.233.0.0/24", "--gateway", "10.234.0.1", "nb-x"),
             ["outside"]),
            (("network", "create", "nb-fix"), ["already exists"]),
            (("run", "--rm", "--network", "nb-fix", "--ip", "10.232.0.50", IMG, "true"), ["in use"]),
            (("run", "--rm", "--network", "nb-nope", IMG, "true"), ["not found"]),
            (("run", "--rm", "-p", "70000:80", IMG, "true"), ["65535"]),
            (("run", "--rm", "-p", "http", IMG, "true"), ["invalid port"]),
            (("run", "--rm", "--ip", "10.88.9.9", IMG, "true"), ["user-defined"]),
            (("network", "connect", "nb-fix", "nb-fixed"), ["already connected"]),
            (("network", "rm", "bridge"), ["predefined"]),
        ]
        for argv, words in cases:
            cp = k(*argv, check=False)
            assert_user_error(cp, *words, code=1 if argv[:2] == ("network", "rm") else 125)
        assert _links() == links, "a failed command left links behind"
        assert "nb-x" not in k("network", "ls").stdout
    finally:
        k("rm", "-f", "nb-fixed")
        k("network", "rm", "nb-fix")


def test_busy_port_is_a_clear_error_and_leaves_nothing(k: Kobako, www: Path):
    holder = socket.socket()
    holder.bind(("0.0.0.0", 0))
    holder.listen(1)
    busy = holder.getsockname()[1]
    links, netns = _links(), _netns()
    try:
        assert_user_error(k("run", "--rm", "-p", f"{busy}:80", IMG, "true", check=False), "already in use")
        # a second container on a port kobako already publishes
        p = free_port()
        _httpd(k, "nb-first", www, "-p", f"{p}:80")
        cp = k("run", "-d", "--name", "nb-second", "-p", f"{p}:80", IMG, "sleep", "5", check=False)
        assert_user_error(cp, "already allocated")
        k("rm", "-f", "nb-second", check=False)
        k("rm", "-f", "nb-first")
    finally:
        holder.close()
    # a bridge made for these containers goes KOBAKO_NET_LINGER (2 s) after the last one
    end = time.monotonic() + 8
    while {x for x in _links() if x.startswith("kb-")} - links and time.monotonic() < end:
        time.sleep(0.2)
    assert {x for x in _netns() if x.startswith("kobako-")} <= netns
    assert {x for x in _links() if x.startswith("kb-")} <= links


def test_bandwidth_limit_holds(k: Kobako, tmp_path: Path):
    d = tmp_path / "big"
    d.mkdir()
    (d / "blob").write_bytes(os.urandom(1 << 20))  # 1 MiB
    port = free_port()
    rate = 4_000_000  # bits per second: 1 MiB takes ~2.1 s
    k("run", "-d", "--name", "nb-slow", "--net-rate", "4mbit", "-p", f"127.0.0.1:{port}:80",
      "-v", f"{d}:/www:ro", IMG, "httpd", "-f", "-p", "80", "-h", "/www")
    try:
        _get(f"http://127.0.0.1:{port}/", timeout=10)  # up (a 404 page is an answer too)
        t = time.monotonic()
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/blob", timeout=30).read()
        took = time.monotonic() - t
        assert len(body) == 1 << 20
        measured = len(body) * 8 / took
        assert measured < rate * 1.5, f"{measured / 1e6:.1f} Mbit/s through a 4 Mbit/s limit"
        k("update", "--net-rate", "-1", "nb-slow")  # lifted live
        t = time.monotonic()
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/blob", timeout=30).read()
        lifted = len(body) * 8 / (time.monotonic() - t)
        assert lifted > rate * 3, f"still {lifted / 1e6:.1f} Mbit/s after the limit was lifted"
    finally:
        k("rm", "-f", "nb-slow")


def test_kill_9_while_attaching_then_prune_leaves_nothing(k: Kobako):
    links, netns = _links(), _netns()
    env = {**k.env, "KOBAKO_FAULT": "net:made"}
    argv = [sys.executable, "-m", "kobako.cli.main", "run", "--name", "nb-k9", "-p", "80", IMG, "true"]
    p = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert p.returncode == -signal.SIGKILL
    assert any(x.startswith("kobako-") for x in _netns() - netns), "the fault came before the netns was made"
    k("system", "prune", "-f")  # alone: it removes the dead container and what it left
    assert {x for x in _netns() - netns if x.startswith("kobako-")} == set()
    assert {x for x in _links() - links if x.startswith("kb-")} == set()
    st = k.root / "run" / "network" / "endpoints"
    assert not [n for n in os.listdir(st) if n.endswith(".json") and "nb-k9" in (st / n).read_text()]


def test_kill_9_of_a_foreground_run_then_rm_f_leaves_no_network(k: Kobako):
    netns = _netns()
    argv = [sys.executable, "-m", "kobako.cli.main", "run", "--name", "nb-orphan", IMG, "sleep", "60"]
    p = subprocess.Popen(argv, env=k.env, cwd=REPO)
    end = time.monotonic() + 15
    while time.monotonic() < end and "nb-orphan" not in k("ps").stdout:
        time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    k("rm", "-f", "nb-orphan")
    assert {x for x in _netns() - netns if x.startswith("kobako-")} == set()


def test_add_host_dns_and_their_bad_input(k: Kobako):
    out = k("run", "--rm", "--add-host", "db.local:10.1.2.3", "--add-host", "gw:host-gateway",
            "--dns", "10.9.9.9", "--dns-search", "corp.example", "--dns-option", "ndots:2", IMG,
            "sh", "-c", "cat /etc/hosts /etc/resolv.conf").stdout
    gw = json.loads(k("network", "inspect", "bridge").stdout)[0]["IPAM"]["Config"][0]["Gateway"]
    assert "10.1.2.3\tdb.local" in out and f"{gw}\tgw" in out
    assert "nameserver 10.9.9.9" in out and "search corp.example" in out and "options ndots:2" in out
    assert out.count("nameserver") == 1  # --dns replaces the host's servers
    out = k("run", "--rm", "--mac-address", "02:42:de:ad:be:ef", IMG,
            "cat", "/sys/class/net/eth0/address").stdout
    assert out == "02:42:de:ad:be:ef\n"
    k("network", "create", "--internal", "nb-intpub")
    try:
        assert_user_error(k("run", "--rm", "--network", "nb-intpub", "-p", "80", IMG, "true", check=False),
                          "internal")
    finally:
        k("network", "rm", "nb-intpub")
    for argv, words in [(("--mac-address", "01:00:5e:00:00:01"), ["unicast"]),
                        (("--add-host", "nohost"), ["NAME:IP"]),
                        (("--add-host", "x:not-an-ip"), ["not an IP"]), (("--dns", "8.8.8"), ["--dns"])]:
        assert_user_error(k("run", "--rm", *argv, IMG, "true", check=False), *words)


def test_ipv6_dual_stack_network(k: Kobako):
    fwd_before = Path("/proc/sys/net/ipv6/conf/all/forwarding").read_text()
    k("network", "create", "--ipv6", "--subnet", "2001:db8:77::/64", "--subnet", "10.177.0.0/24", "nb-v6")
    k("network", "create", "--ipv6", "--subnet", "2001:db8:78::/64", "nb-v6b")
    try:
        net = json.loads(k("network", "inspect", "nb-v6").stdout)[0]
        assert net["EnableIPv6"] is True
        assert [c["Subnet"] for c in net["IPAM"]["Config"]] == ["10.177.0.0/24", "2001:db8:77::/64"]
        # an overlapping IPv6 subnet is refused, with nothing made
        bad = k("network", "create", "--ipv6", "--subnet", "2001:db8:77::/56", "nb-v6c", check=False)
        assert_user_error(bad, "overlaps", "nb-v6")
        k("run", "-d", "--name", "nb-v6s", "--network", "nb-v6", "--ip6", "2001:db8:77::99", IMG,
          "sleep", "300")
        k("run", "-d", "--name", "nb-v6far", "--network", "nb-v6b", IMG, "sleep", "300")
        doc = _inspect(k, "nb-v6s")["NetworkSettings"]
        assert doc["GlobalIPv6Address"] == "2001:db8:77::99" and doc["GlobalIPv6PrefixLen"] == 64
        assert doc["IPv6Gateway"] == "2001:db8:77::1" and doc["IPAddress"].startswith("10.177.0.")
        out = k("run", "--rm", "--network", "nb-v6", IMG, "sh", "-c",
                "ip -6 route | grep -q 'default via 2001:db8:77::1' && echo route;"
                "ping6 -c1 -W2 2001:db8:77::99 >/dev/null && echo peer;"
                "ping6 -c1 -W2 2001:db8:77::1 >/dev/null && echo gateway;"
                "ping6 -c1 -W1 2001:db8:78::2 >/dev/null && echo OTHER-NETWORK; true").stdout.split()
        assert out == ["route", "peer", "gateway"]  # other networks stay apart over IPv6 too
        table = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout
        assert "ip6 saddr @outbound6" in table and "2001:db8:77::/64" in table
    finally:
        k("rm", "-f", "nb-v6s", "nb-v6far")
        k("network", "rm", "nb-v6", "nb-v6b")
    # only the bridges' own settings changed, and they went with the bridges
    assert Path("/proc/sys/net/ipv6/conf/all/forwarding").read_text() == fwd_before
    assert "2001:db8:77" not in subprocess.run(["ip", "-6", "addr"], capture_output=True, text=True).stdout


def test_the_bridge_keeps_its_mac_when_a_port_goes(k: Kobako):
    """A bridge without a MAC of its own takes its lowest port's and changes it when that port
    goes: the other containers' ARP entries for the gateway then point nowhere."""
    k("network", "create", "--subnet", "10.178.0.0/24", "nb-mac")
    try:
        k("run", "-d", "--name", "nb-mac1", "--network", "nb-mac", IMG, "sleep", "300")
        br = json.loads(k("network", "inspect", "nb-mac").stdout)[0]["Options"].get(
            "com.docker.network.bridge.name") or next(
            p.name for p in Path("/sys/class/net").iterdir()
            if (p / "address").read_text().strip() == "02:42:0a:b2:00:01")
        mac = Path(f"/sys/class/net/{br}/address").read_text().strip()
        assert mac == "02:42:0a:b2:00:01"  # 02:42:<gateway>
        for _ in range(3):
            k("run", "--rm", "--network", "nb-mac", IMG, "true")
            k("exec", "nb-mac1", "ping", "-c1", "-W2", "10.178.0.1")  # its ARP entry still holds
        assert Path(f"/sys/class/net/{br}/address").read_text().strip() == mac
    finally:
        k("rm", "-f", "nb-mac1")
        k("network", "rm", "nb-mac")


def test_default_network_subnet_comes_from_the_pool_and_stays(session_base: Path, busybox_rootfs: Path):
    """In a network namespace of this test's own (never on the host), with a private data and
    run root: podman's 10.88.0.0/16 is taken there and a route sits inside 10.89/16, so the
    default network comes up on 10.90.0.0/16; it keeps that subnet after those routes go;
    a route that later covers it is refused with the route and the fix named."""
    ns = f"kbt-pool-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    kb = Kobako(session_base / "pool")
    kb.env["KOBAKO_NET_LINGER"] = "0"  # idle bridges go at once: the test waits for them below
    inside = ["nsenter", f"--net=/run/netns/{ns}"]

    def kobako(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
        cp = subprocess.run([*inside, sys.executable, "-m", "kobako.cli.main", *argv], env=kb.env, cwd=REPO,
                            capture_output=True, text=True, timeout=60)
        assert not check or cp.returncode == 0, f"kobako {' '.join(argv)}: {cp.stderr}"
        return cp

    def ip(*argv: str) -> str:
        return subprocess.run([*inside, "ip", *argv], check=True, capture_output=True, text=True).stdout

    def eth0() -> str:
        out = kobako("run", "--rm", IMG, "ip", "-4", "-o", "addr", "show", "eth0").stdout.split()
        return out[out.index("inet") + 1]

    def link(name: str, cidr: str) -> None:
        """An interface with an address, so its subnet's route (no dummy module here: a veth pair)."""
        ip("link", "add", name, "type", "veth", "peer", "name", name + "p")
        ip("addr", "add", cidr, "dev", name)
        ip("link", "set", name + "p", "up")
        ip("link", "set", name, "up")

    def no_bridge() -> None:  # the idle bridge's reaper has run
        wait_for(lambda: ip("-o", "link", "show", "type", "bridge") == "", 10, "the idle bridge to go")

    netns_before = _netns()
    try:
        ip("link", "set", "lo", "up")
        link("kbt-podman0", "10.88.0.1/16")  # as podman's default network makes it
        ip("route", "add", "10.89.7.0/24", "dev", "kbt-podman0")
        kobako("import", str(busybox_rootfs), IMG)
        assert eth0() == "10.90.0.2/16"
        subnet = json.loads(kobako("network", "inspect", "bridge").stdout)[0]["IPAM"]["Config"][0]["Subnet"]
        assert subnet == "10.90.0.0/16"
        no_bridge()
        ip("link", "del", "kbt-podman0")  # 10.88 is free now: the default network stays where it is
        assert eth0() == "10.90.0.2/16"
        no_bridge()
        link("kbt-other0", "10.90.0.1/16")
        cp = kobako("run", "--rm", "--name", "pool-late", IMG, "true", check=False)
        assert_user_error(cp, "network bridge", "overlaps the host's route 10.90.0.0/16 dev kbt-other0",
                          str(kb.data / "networks" / "ipam" / "bridge.json"))
        assert kobako("ps", "-aq").stdout == ""  # nothing left of it
        assert ip("-o", "link", "show", "type", "bridge") == ""
        assert " kb-" not in ip("-o", "link", "show", "type", "veth")
        assert {x for x in _netns() - netns_before if x.startswith("kobako-")} == set()
        state = kb.data / "networks" / "ipam" / "bridge.json"
        assert json.loads(state.read_text())["subnet"] == "10.90.0.0/16"  # still kept
    finally:
        for cid in kobako("ps", "-aq", check=False).stdout.split():
            kobako("rm", "-f", cid, check=False)
        kobako("system", "prune", "-f", check=False)
        subprocess.run(["ip", "netns", "del", ns])
