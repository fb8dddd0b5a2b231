"""VXLAN overlay networks without a kernel: the netlink messages (what `ip link add type
vxlan` and `bridge fdb append` send) and the checks of `network create --driver vxlan`."""

from __future__ import annotations

import struct

import pytest

from kobako.linux import netlink
from kobako.network import overlay
from kobako.network.networks import NetworkError, NetworkStore


def test_vxlan_link_message():
    body = netlink.vxlan_link("kv-abc", 4097, 4789, learning=True, mtu=1450, master=7)
    a = netlink.attrs(body, 16)
    assert a[netlink.IFLA_IFNAME] == b"kv-abc\0"
    assert struct.unpack("=I", a[netlink.IFLA_MTU])[0] == 1450
    assert struct.unpack("=I", a[netlink.IFLA_MASTER])[0] == 7
    info = netlink.attrs(a[netlink.IFLA_LINKINFO])
    assert info[netlink.IFLA_INFO_KIND] == b"vxlan"
    data = netlink.attrs(info[netlink.IFLA_INFO_DATA])
    assert struct.unpack("=I", data[netlink.IFLA_VXLAN_ID])[0] == 4097
    assert data[netlink.IFLA_VXLAN_PORT] == b"\x12\xb5"  # 4789 in network byte order
    assert data[netlink.IFLA_VXLAN_LEARNING] == b"\x01"
    assert netlink.IFLA_VXLAN_LOCAL not in data


def test_fdb_entry_message():
    body = netlink.fdb_entry(9, overlay.ZERO_MAC, "192.168.233.2")
    family, index, state, flags, _ = struct.unpack_from("=BxxxiHBB", body)
    assert (family, index, state, flags) == (7, 9, 0x80, 0x02)  # AF_BRIDGE, NUD_PERMANENT, NTF_SELF
    a = netlink.attrs(body, 12)
    assert a[netlink.NDA_LLADDR] == b"\0" * 6 and a[netlink.NDA_DST] == bytes([192, 168, 233, 2])


def test_default_vni_is_derived_from_the_subnet_alike_everywhere():
    v = overlay.default_vni("10.233.0.0/16")
    assert v == overlay.default_vni("10.233.0.0/16") and 1 <= v < (1 << 24) - 1
    assert v != overlay.default_vni("10.234.0.0/16")


@pytest.mark.parametrize("value, words", [("", "needs its peers"), ("nope", "invalid peer 'nope'"),
                                          ("10.0.0.1,300.1.1.1", "invalid peer '300.1.1.1'"),
                                          ("224.0.0.5", "unicast"), ("127.0.0.1", "unicast"),
                                          ("0.0.0.0", "unicast")])
def test_bad_peers(value, words):
    with pytest.raises(NetworkError, match=words):
        overlay.parse_peers(value)


def test_peers_deduplicated_in_order():
    assert overlay.parse_peers("10.0.0.2, 10.0.0.1,10.0.0.2") == ["10.0.0.2", "10.0.0.1"]


class FakeNetlink:
    """Routes: `routes` maps a peer to (route type, link index); others unreachable."""

    def __init__(self, routes: dict[str, tuple[int, int]], mtus: dict[int, int] | None = None) -> None:
        self.routes, self.mtus = routes, mtus or {}

    def route_to(self, ip):
        if ip not in self.routes:
            raise OSError(101, "Network is unreachable")
        rtype, oif = self.routes[ip]
        return ip, 32, 254, rtype, oif

    def mtu(self, index):
        return self.mtus.get(index, 1500)


NL = FakeNetlink({"192.168.233.2": (1, 3), "192.168.240.9": (1, 4), "192.168.233.1": (2, 1),
                  "192.168.250.1": (7, 0)}, {4: 9000})


def _settings(opts, subnet="10.233.0.0/16", ip_range="10.233.1.0/24", gateway=None, mtu=None, others=(),
              nl=NL):
    return overlay.settings(dict(opts), subnet, ip_range, gateway, mtu, list(others), nl)


def test_settings_defaults():
    ov, gw, mtu = _settings({"peers": "192.168.233.2"})
    assert ov == {"vni": overlay.default_vni("10.233.0.0/16"), "peers": ["192.168.233.2"], "port": 4789}
    assert gw == "10.233.1.1" and mtu == 1450  # the host's own gateway, first of its range; 1500 - 50
    assert _settings({"peers": "192.168.233.2"}, ip_range="10.233.0.0/24")[1] == "10.233.0.1"
    assert _settings({"peers": "192.168.233.2"}, ip_range=None)[1] is None  # IPAM's: the subnet's first
    # the smallest underlay wins; a jumbo underlay alone allows more
    assert _settings({"peers": "192.168.233.2,192.168.240.9"})[2] == 1450
    assert _settings({"peers": "192.168.240.9"}, mtu=8950)[2] == 8950
    ov, _, _ = _settings({"peers": "192.168.233.2", "vni": "42", "port": "8472"})
    assert (ov["vni"], ov["port"]) == (42, 8472)


@pytest.mark.parametrize("opts, kw, words", [
    ({"peers": "192.168.99.1"}, {}, "peer 192.168.99.1 is unreachable: this host has no route"),
    ({"peers": "192.168.250.1"}, {}, "route to it rejects"),
    ({"peers": "192.168.233.1"}, {}, "an address of this host"),
    ({"peers": "10.233.5.5"}, {}, "inside the overlay's subnet"),
    ({"peers": "192.168.233.2"}, {"mtu": 1200}, "MTU 1200 is too small"),
    ({"peers": "192.168.233.2"}, {"mtu": 1451}, "MTU 1451 is too large.*at most 1450"),
    ({"peers": "192.168.233.2"}, {"ip_range": "10.99.0.0/24"}, "not inside subnet"),
    ({"peers": "192.168.233.2"}, {"gateway": "10.233.2.1"}, "outside --ip-range"),
    ({"peers": "192.168.233.2"}, {"subnet": None, "ip_range": None}, "needs --subnet"),
    ({"peers": "192.168.233.2", "vni": "0"}, {}, "invalid VNI"),
    ({"peers": "192.168.233.2", "vni": "16777216"}, {}, "invalid VNI"),
    ({"peers": "192.168.233.2", "port": "x"}, {}, "invalid VXLAN port"),
    ({}, {}, "needs its peers"),
])
def test_settings_refusals(opts, kw, words):
    with pytest.raises(NetworkError, match=words):
        _settings(opts, **kw)


def test_a_vni_used_by_another_network_of_this_host():
    other = {"name": "ovl", "vxlan": {"vni": 42}}
    with pytest.raises(NetworkError, match="VNI 42 is already used by network ovl"):
        _settings({"peers": "192.168.233.2", "vni": "42"}, others=[other])


def test_store_keeps_a_vxlan_network_and_refuses_clashes(tmp_path, monkeypatch):
    monkeypatch.setattr(overlay, "_underlay_mtu", lambda peers, nl=None: 1500)
    monkeypatch.setattr("kobako.network.ipam._host_routes", lambda family=4: [])
    st = NetworkStore(str(tmp_path / "data"), str(tmp_path / "run"))
    net = st.create("ovl", "10.233.0.0/16", ip_range="10.233.1.0/24", options={"peers": "192.168.233.2"},
                    driver="vxlan")
    assert net["driver"] == "vxlan" and net["gateway"] == "10.233.1.1" and net["mtu"] == 1450
    assert net["vxlan"]["device"] == "kv-" + net["id"][:12]
    vni = str(overlay.default_vni("10.233.0.0/16"))
    assert net["createdOptions"] == {"peers": "192.168.233.2", "vni": vni}
    assert st.ipam.allocate("ovl", "c1").startswith("10.233.1.")  # inside this host's range only
    before = {n["name"] for n in st.all()}
    for kw, words in [({"subnet": "10.233.128.0/17"}, "overlaps network ovl"),
                      ({"subnet": "10.240.0.0/16", "options": {"peers": "192.168.233.2",
                                                              "vni": str(net["vxlan"]["vni"])}},
                       "already used by network ovl"),
                      ({"subnet": "10.241.0.0/16", "options": {"peers": "192.168.233.2", "bogus": "1"}},
                       "unknown network option 'bogus'")]:
        kw.setdefault("options", {"peers": "192.168.233.2"})
        with pytest.raises(NetworkError, match=words):
            st.create("ovl2", driver="vxlan", **kw)
        assert {n["name"] for n in st.all()} == before  # nothing made
    rec, old = st.set_peers("ovl", "192.168.233.2,192.168.233.3")
    assert old == ["192.168.233.2"] and st.get("ovl")["vxlan"]["peers"] == ["192.168.233.2", "192.168.233.3"]
    assert rec["createdOptions"]["peers"] == "192.168.233.2,192.168.233.3"
    st.create("plain", "10.250.0.0/24")
    with pytest.raises(NetworkError, match="not a vxlan network"):
        st.set_peers("plain", "192.168.233.2")
