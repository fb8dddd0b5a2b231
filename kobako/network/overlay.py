"""VXLAN overlay networks: one layer-2 network over several hosts' IP network.

`kobako network create --driver vxlan --subnet S --ip-range R --opt peers=IP,... NAME`, run
on each host with the same subnet and VNI, makes what `ip` and `bridge` would:

    ip link add kv-<id12> type vxlan id VNI dstport 4789 [learning]   (master: the bridge)
    bridge fdb append 00:00:00:00:00:00 dev kv-<id12> dst PEER        (one per peer)

The VXLAN device is a port of the network's bridge, so the containers' veths, the bridge
and the other hosts' bridges are one Ethernet segment. Broadcasts and frames for unknown
MACs go to every peer (head-end replication: the all-zero FDB entries); the device learns
which host each remote MAC sits behind from what arrives, so unicast then goes to that
host alone. It is made and removed with the bridge (network/endpoints.py): while a
container of this host is on the network.

Choices, each the same on every host without the hosts talking to each other:
- VNI: --opt vni=N, else derived from the subnet (default_vni), which every host gives
  alike; a host refuses a VNI that another of its networks uses.
- MTU: 50 bytes below the underlay's (the link of the route to the peers), for the outer
  Ethernet, IP, UDP and VXLAN headers; --opt mtu=M sets it (1280 at least, at most the
  underlay's less 50). The containers' eth0, the bridge and the device all use it.
- Gateway: each host's bridge has an address of its own, the first of its --ip-range (or
  --gateway inside it): the containers' default route stays on their host (outbound NAT as
  on a bridge network; --internal has none), and no two hosts answer ARP for one address.
"""

from __future__ import annotations

from kobako.network.networks import NetworkError

PORT = 4789                      # IANA's VXLAN port (the kernel's default is Linux's old 8472)
OVERHEAD = 50                    # outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8
MIN_MTU = 1280                   # IPv6's minimum link MTU: what the containers must get at least
OPTIONS = ("peers", "vni", "port")
ZERO_MAC = b"\0" * 6


def default_vni(subnet: str) -> int:
    """The VNI every host derives alike from the overlay's subnet: 24 bits of
    sha256("kobako-vxlan " + subnet), 0 and 2^24-1 avoided. `network inspect` shows it."""
    import _sha256
    h = int(_sha256.sha256(("kobako-vxlan " + subnet).encode()).hexdigest()[:6], 16)
    return min(max(h, 1), (1 << 24) - 2)


def device_name(network_id: str) -> str:
    return "kv-" + network_id[:12]


def _number(value: str, what: str, lo: int, hi: int) -> int:
    if not str(value).isdigit() or not lo <= int(value) <= hi:
        raise NetworkError(f"invalid {what} {value!r}: a number from {lo} to {hi}")
    return int(value)


def parse_peers(value: str) -> list[str]:
    """`peers=IP[,IP...]`: IPv4 unicast addresses, each once."""
    import ipaddress
    peers: list[str] = []
    for p in (x.strip() for x in str(value).split(",")):
        if not p:
            continue
        try:
            a = ipaddress.IPv4Address(p)
        except ValueError:
            raise NetworkError(f"invalid peer {p!r}: an IPv4 address of another host") from None
        if a.is_multicast or a.is_unspecified or a.is_loopback or int(a) == 0xFFFFFFFF:
            raise NetworkError(f"invalid peer {p}: a unicast address of another host")
        if str(a) not in peers:
            peers.append(str(a))
    if not peers:
        raise NetworkError("a vxlan network needs its peers: --opt peers=IP[,IP...] (the other hosts' "
                           "addresses)")
    return peers


def settings(options: dict, subnet: str | None, ip_range: str | None, gateway: str | None,
             mtu: int | None, others: list[dict], nl=None) -> tuple[dict, str | None, int]:
    """Check a vxlan network's options (popped from `options`) against the host (routes to
    the peers) and this host's other networks: ({"vni", "peers", "port"}, the gateway, the
    MTU). Raises NetworkError, having made nothing."""
    import ipaddress

    from kobako.linux.namespaces import in_user_namespace
    if in_user_namespace():
        raise NetworkError("vxlan networks need root: rootless containers reach the outside through "
                           "slirp4netns, which carries no VXLAN")
    if subnet is None:
        raise NetworkError("a vxlan network needs --subnet: every host gives the same one")
    peers = parse_peers(options.pop("peers", ""))
    vni = _number(options.pop("vni"), "VNI", 1, (1 << 24) - 1) if "vni" in options else default_vni(subnet)
    port = _number(options.pop("port"), "VXLAN port", 1, 65535) if "port" in options else PORT
    try:
        net = ipaddress.IPv4Network(subnet, strict=False)
    except ValueError:
        net = None  # IPAM words it
    if net is not None:
        for p in peers:
            if ipaddress.IPv4Address(p) in net:
                raise NetworkError(f"peer {p} is inside the overlay's subnet {subnet}: peers are the hosts' "
                                   "addresses on the network that carries the overlay")
    if ip_range is not None and net is not None:
        try:
            rng = ipaddress.IPv4Network(ip_range, strict=False)
        except ValueError:
            rng = None
        if rng is not None:
            if not rng.subnet_of(net):
                raise NetworkError(f"ip range {ip_range} is not inside subnet {subnet}")
            if gateway is None:  # this host's own gateway: the first address of its range
                gateway = str(rng.network_address + (rng.num_addresses > 2))
            elif ipaddress.IPv4Address(gateway) not in rng:
                raise NetworkError(f"gateway {gateway} is outside --ip-range {ip_range}: on a vxlan network "
                                   "each host's bridge has its own gateway, inside its own range")
    for o in others:
        ov = o.get("vxlan") or {}
        if ov.get("vni") == vni:
            raise NetworkError(f"VNI {vni} is already used by network {o.get('displayName') or o['name']} "
                               "on this host: give another with --opt vni=N")
    underlay = _underlay_mtu(peers, nl)
    if mtu is None:
        mtu = underlay - OVERHEAD
    if mtu < MIN_MTU:
        raise NetworkError(f"MTU {mtu} is too small for a vxlan network: at least {MIN_MTU} "
                           f"(the underlay's {underlay} less {OVERHEAD} bytes of VXLAN headers)")
    if mtu > underlay - OVERHEAD:
        raise NetworkError(f"MTU {mtu} is too large for a vxlan network: the underlay's MTU is {underlay}, "
                           f"{OVERHEAD} bytes go to the VXLAN headers (at most {underlay - OVERHEAD})")
    return {"vni": vni, "peers": peers, "port": port}, gateway, mtu


def _underlay_mtu(peers: list[str], nl=None) -> int:
    """The smallest MTU of the links the routes to the peers take; NetworkError for a peer
    with no route or one that is this host's own address."""
    from kobako.linux import netlink
    own = nl is None
    nl = nl or netlink.Netlink()
    try:
        mtus = []
        for p in peers:
            try:
                _, _, _, rtype, oif = nl.route_to(p)
            except OSError as e:
                raise NetworkError(f"peer {p} is unreachable: this host has no route to it "
                                   f"({e.strerror or e})") from None
            if rtype == 2:  # RTN_LOCAL
                raise NetworkError(f"peer {p} is an address of this host: peers are the other hosts")
            if rtype != 1:  # unreachable, blackhole, prohibit
                raise NetworkError(f"peer {p} is unreachable: the host's route to it rejects traffic")
            mtus.append(nl.mtu(oif) or 1500)
        return min(mtus)
    finally:
        if own:
            nl.close()


def check_peers(net: dict, value: str, nl=None) -> list[str]:
    """New peers for vxlan network `net` (network update), checked as at create."""
    import ipaddress
    peers = parse_peers(value)
    for p in peers:
        if ipaddress.IPv4Address(p) in ipaddress.IPv4Network(net["subnet"]):
            raise NetworkError(f"peer {p} is inside the overlay's subnet {net['subnet']}")
    underlay = _underlay_mtu(peers, nl)
    if net.get("mtu") and net["mtu"] > underlay - OVERHEAD:
        raise NetworkError(f"the network's MTU {net['mtu']} is too large for the underlay to these peers "
                           f"(MTU {underlay}, less {OVERHEAD}): re-create the network")
    return peers


def make(nl, ov: dict, name: str, bridge: int, mtu: int | None) -> None:
    """The VXLAN device on `bridge`, up, with an all-zero FDB entry per peer."""
    nl.add_vxlan(name, ov["vni"], ov.get("port", PORT), learning=True, mtu=mtu, master=bridge)
    idx = nl.index(name)
    assert idx is not None
    for p in ov["peers"]:
        nl.fdb_append(idx, ZERO_MAC, p, name)
    nl.set_up(idx, f"vxlan device {name}")


def set_peers(nl, name: str, old: list[str], new: list[str]) -> None:
    """A live device's peers as `new` (network update)."""
    idx = nl.index(name)
    if idx is None:
        return  # not made now: the next container's start makes it with the new list
    for p in new:
        if p not in old:
            nl.fdb_append(idx, ZERO_MAC, p, name)
    for p in old:
        if p not in new:
            nl.fdb_delete(idx, ZERO_MAC, p, name)
