"""The network layer's pure parts, without root: -p parsing, port assignment, the nft
elements and table text, network options, and netlink attribute encoding."""

from __future__ import annotations

import json
import socket
import struct
from pathlib import Path

import pytest

from kobako.linux import netlink
from kobako.network import nftables, ports
from kobako.network.networks import NetworkError, NetworkStore, netns_path, table_name


@pytest.mark.parametrize("spec,want", [
    ("80", [("tcp", "", 0, 80)]),
    ("8080:80", [("tcp", "", 8080, 80)]),
    ("127.0.0.1:8080:80/udp", [("udp", "127.0.0.1", 8080, 80)]),
    ("127.0.0.1::80", [("tcp", "127.0.0.1", 0, 80)]),
    ("8000-8001:80-81", [("tcp", "", 8000, 80), ("tcp", "", 8001, 81)]),
    ("53/udp", [("udp", "", 0, 53)]),
])
def test_publish_specs_as_docker_reads_them(spec: str, want: list):
    got = [(p["proto"], p["hostIp"], p["hostPort"], p["containerPort"]) for p in ports.parse(spec)]
    assert got == want


def test_a_host_range_for_one_port_takes_a_free_one():
    (p,) = ports.parse("9000-9005:80")
    assert p["hostPort"] == 0 and p["hostRange"] == [9000, 9005]


@pytest.mark.parametrize("spec,words", [
    ("0:80", "1 to 65535"), ("70000:80", "1 to 65535"), ("80/icmp", "tcp, udp or sctp"),
    ("http", "invalid port"), ("8000-7000:80", "range"), ("1-3:1-2", "differ in length"),
    ("300.1.1.1:80:80", "IPv4"), ("[::1]:80:80", "IPv6"),
])
def test_bad_publish_specs(spec: str, words: str):
    with pytest.raises(ports.PortError, match=words):
        ports.parse(spec)


def test_exposed_ports_for_publish_all():
    cfg = {"ExposedPorts": {"80/tcp": {}, "53/udp": {}}}
    got = {(p["containerPort"], p["proto"]) for p in ports.exposed(cfg, ["8080", "80/tcp"])}
    assert got == {(80, "tcp"), (53, "udp"), (8080, "tcp")}


def test_assign_refuses_a_port_another_container_publishes():
    others = [{"proto": "tcp", "hostIp": "", "hostPort": 18080, "containerPort": 80}]
    with pytest.raises(ports.PortError, match="already allocated"):
        ports.assign([{"proto": "tcp", "hostIp": "127.0.0.1", "hostPort": 18080, "containerPort": 80}],
                     others)
    # the same number over UDP is another port
    got = ports.assign([{"proto": "udp", "hostIp": "", "hostPort": 18080, "containerPort": 80}], others)
    assert got[0]["hostPort"] == 18080


def test_assign_refuses_a_port_a_host_program_holds():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    try:
        busy = s.getsockname()[1]
        with pytest.raises(ports.PortError, match="already in use"):
            ports.assign([{"proto": "tcp", "hostIp": "127.0.0.1", "hostPort": busy, "containerPort": 80}], [])
    finally:
        s.close()


def test_assign_picks_distinct_free_ports():
    want = [{"proto": "tcp", "hostIp": "", "hostPort": 0, "containerPort": c} for c in (80, 81, 82)]
    got = ports.assign(want, [])
    assert len({p["hostPort"] for p in got}) == 3 and all(p["hostPort"] > 0 for p in got)
    assert ports.describe(got[0]) == f"80/tcp -> 0.0.0.0:{got[0]['hostPort']}"


def test_nft_elements_for_networks_and_ports():
    net = {"bridge": "kobako0", "subnet": "10.88.0.0/16", "internal": False}
    assert nftables.network_elements(net) == [
        ("bridges", '"kobako0"'), ("same", '"kobako0" . "kobako0"'), ("subnets", "10.88.0.0/16"),
        ("outbound", "10.88.0.0/16")]
    internal = nftables.network_elements({**net, "internal": True})
    assert ("internal", '"kobako0"') in internal and not [e for e in internal if e[0] == "outbound"]
    ps = [{"network": "bridge", "proto": "tcp", "hostIp": "", "hostPort": 8080, "containerPort": 80},
          {"network": "bridge", "proto": "udp", "hostIp": "127.0.0.1", "hostPort": 53, "containerPort": 5353},
          {"network": "gone", "proto": "tcp", "hostIp": "", "hostPort": 1, "containerPort": 1}]
    assert nftables.port_elements(ps, {"bridge": "10.88.0.2"}) == [
        ("dnat_any", "tcp . 8080 : 10.88.0.2 . 80"), ("dnat_ip", "127.0.0.1 . udp . 53 : 10.88.0.2 . 5353")]
    # deleting a map element names only its key
    assert nftables._elements("delete", "t", [("dnat_any", "tcp . 8080 : 10.88.0.2 . 80")]) == \
        "delete element inet t dnat_any { tcp . 8080 }\n"


def test_full_table_text_is_one_batch_of_kobakos_own_table(monkeypatch):
    batches = []
    monkeypatch.setattr(nftables, "run", lambda text: batches.append(text) or "")
    nftables.full("kobako_test", [{"bridge": "kb-1", "subnet": "10.9.0.0/24", "internal": False}],
                  [{"networks": {"n": {"ip": "10.9.0.2"}},
                    "ports": [{"network": "n", "proto": "tcp", "hostIp": "", "hostPort": 80,
                               "containerPort": 80}]}])
    (text,) = batches
    lines = text.splitlines()
    assert all(f"{ln} ".split(" inet ")[1].startswith("kobako_test ") for ln in lines)  # never another table
    assert "flush ruleset" not in text
    assert "add element inet kobako_test dnat_any { tcp . 80 : 10.9.0.2 . 80 }" in lines
    assert any("masquerade" in ln for ln in lines) and any("drop" in ln for ln in lines)


def test_table_and_netns_names():
    assert table_name("/run/kobako") == "kobako"
    other = table_name("/tmp/x/run")
    assert other.startswith("kobako_") and len(other) == len("kobako_") + 8
    assert netns_path("ab" * 32) == "/run/netns/kobako-" + "ab" * 6


def test_network_create_validation(tmp_path: Path):
    store = NetworkStore(str(tmp_path / "data"), str(tmp_path / "run"))
    for args, words in [((("host",), {}), "predefined"), ((("bridge",), {}), "predefined"),
                        ((("n1",), {"options": {"mtu": "12"}}), "MTU"),
                        ((("n1",), {"options": {"bogus": "1"}}), "unknown network option"),
                        ((("n1",), {"options": {"com.docker.network.bridge.name": "x" * 16}}), "bridge name"),
                        ((("n1",), {"subnet": "10.5.0.0/16", "gateway": "10.6.0.1"}), "outside")]:
        with pytest.raises(NetworkError, match=words):
            store.create(*args[0], **args[1])
    n = store.create("n1", subnet="10.5.0.0/16", options={"com.docker.network.driver.mtu": "1400"})
    assert n["mtu"] == 1400 and n["bridge"].startswith("kb-") and len(n["bridge"]) == 15
    assert store.get(n["id"][:6])["name"] == "n1"  # by ID prefix
    with pytest.raises(NetworkError, match="overlaps"):
        store.create("n2", subnet="10.5.1.0/24")
    with pytest.raises(NetworkError, match="not found"):
        store.get("nope")
    assert store.get("bridge")["name"] == "bridge"  # the default network, made on first use
    with pytest.raises(NetworkError, match="in use by container web"):
        store.remove("n1", ["web"])
    store.remove("n1", [])
    assert [x["name"] for x in store.all()] == ["bridge"]


def test_netlink_attributes_are_aligned():
    a = netlink.attr(netlink.IFLA_IFNAME, b"eth0\0")
    assert len(a) == 12 and struct.unpack_from("=HH", a) == (9, netlink.IFLA_IFNAME) and a[9:] == b"\0\0\0"
    with pytest.raises(ValueError):
        netlink._ifname("a" * 16)
    with pytest.raises(ValueError):
        netlink._ifname("a/b")


def test_netlink_route_replies_are_parsed():
    body = netlink._RTMSG.pack(netlink.AF_INET, 16, 0, 0, 254, 2, 0, 1, 0)
    msg = body + netlink.attr(netlink.RTA_DST, bytes([10, 88, 0, 0])) + netlink.attr(netlink.RTA_OIF,
                                                                                     struct.pack("=I", 7))
    assert netlink.route_of(msg) == ("10.88.0.0", 16, 254, 1, 7)
    # a table above 255 comes in RTA_TABLE (the header's byte says 252, RT_TABLE_COMPAT); no RTA_DST: 0.0.0.0
    big = netlink._RTMSG.pack(netlink.AF_INET, 0, 0, 0, 252, 2, 0, 1, 0) + netlink.attr(
        netlink.RTA_TABLE, struct.pack("=I", 51820))
    assert netlink.route_of(big) == ("0.0.0.0", 0, 51820, 1, 0)
    v6 = netlink._RTMSG.pack(netlink.AF_INET6, 64, 0, 0, 254, 2, 0, 1, 0) + netlink.attr(
        netlink.RTA_DST, bytes.fromhex("fd000000000000000000000000000000"))
    assert netlink.route_of(v6) == ("fd00::", 64, 254, 1, 0)
    assert netlink.route_of(netlink._RTMSG.pack(7, 0, 0, 0, 0, 0, 0, 0, 0)) is None  # another family


def _routes(monkeypatch, routes: list[tuple[str, int]]) -> None:
    """The host's routes as the network layer reads them (ipam._route_table), replaced."""
    from kobako.network import ipam
    monkeypatch.setattr(ipam, "_route_table", lambda family: routes if family == 4 else [])


def test_default_network_takes_the_pool_first_and_keeps_its_subnet(tmp_path: Path, monkeypatch):
    """The default network is made before any user network picks a subnet, so it gets the
    first free one; once chosen it stays, whatever routes come or go."""
    # podman's default network, and a route inside the next candidate
    _routes(monkeypatch, [("10.88.0.0/16", 0), ("10.89.3.0/24", 0)])
    store = NetworkStore(str(tmp_path / "data"), str(tmp_path / "run"))
    assert store.create("first")["subnet"] == "10.91.0.0/16"  # the default network took 10.90 before it
    assert store.get("bridge")["subnet"] == "10.90.0.0/16"
    state = json.loads((tmp_path / "data" / "networks" / "ipam" / "bridge.json").read_text())
    assert state["subnet"] == "10.90.0.0/16"  # recorded in the network's state
    _routes(monkeypatch, [])  # 10.88 is free again: the default network stays where it is
    again = NetworkStore(str(tmp_path / "data"), str(tmp_path / "run"))
    assert again.get("bridge")["subnet"] == "10.90.0.0/16"
    assert again.create("second")["subnet"] == "10.88.0.0/16"  # a new network gets the first free one


def test_default_network_route_collision_says_how_to_fix_it(tmp_path: Path, monkeypatch):
    from kobako.network.endpoints import Endpoints
    _routes(monkeypatch, [])
    eps = Endpoints(str(tmp_path / "data"), str(tmp_path / "run"))
    net = eps.store.get("bridge")
    user = eps.store.create("u1")
    _routes(monkeypatch, [("10.0.0.0/8", 0)])  # a route that came up later and covers both
    with pytest.raises(NetworkError) as ei:
        eps._check_routes({"subnet": net["subnet"]}, "bridge")
    msg = str(ei.value)
    assert msg.startswith("network bridge: its subnet 10.88.0.0/16 overlaps the host's route 10.0.0.0/8")
    assert str(tmp_path / "data" / "networks" / "ipam" / "bridge.json") in msg and "remove that route" in msg
    with pytest.raises(NetworkError, match=r"network u1: its subnet 10\.89\.0\.0/16 .* recreate u1"):
        eps._check_routes({"subnet": user["subnet"]}, "u1")
    _routes(monkeypatch, [("192.0.2.0/24", 0)])
    eps._check_routes({"subnet": net["subnet"]}, "bridge")  # no collision: nothing to say
