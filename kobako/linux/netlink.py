"""rtnetlink: links, addresses and routes, spoken over a NETLINK_ROUTE socket.

The few messages kobako's network layer sends (what `ip link/addr/route` send), built with
struct on the C `_socket` module. Not pyroute2: importing it costs 160-180 ms here (it
brings asyncio and its NDB along), more than the whole start-up budget of a networked
`kobako run`; these messages cost ~30 µs each.

A socket lives in the network namespace it was made in: `Netlink()` made while the
calling thread is inside a container's namespace configures that namespace from then on,
whatever namespace the thread is in later (network/endpoints.py relies on it).
"""

from __future__ import annotations

import _socket
import os
import struct

AF_NETLINK, NETLINK_ROUTE = 16, 0
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE, NLM_F_DUMP = 0x1, 0x4, 0x200, 0x400, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_NEWADDR, RTM_NEWROUTE, RTM_GETROUTE = 16, 17, 18, 20, 24, 26
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_MASTER, IFLA_LINKINFO, IFLA_NET_NS_FD = 1, 3, 4, 10, 18, 28
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFA_ADDRESS, IFA_LOCAL, IFA_BROADCAST = 1, 2, 4
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_TABLE = 1, 4, 5, 15
IFF_UP = 1
AF_INET, AF_INET6 = 2, 10
IFA_F_NODAD = 0x02
# VXLAN (linux/if_link.h) and the bridge's forwarding database (linux/neighbour.h)
IFLA_VXLAN_ID, IFLA_VXLAN_LOCAL, IFLA_VXLAN_LEARNING, IFLA_VXLAN_PORT = 1, 4, 7, 15
RTM_NEWNEIGH, RTM_DELNEIGH, AF_BRIDGE, NDA_DST, NDA_LLADDR = 28, 29, 7, 1, 2
NUD_PERMANENT, NTF_SELF, NLM_F_APPEND = 0x80, 0x02, 0x800

_HDR = struct.Struct("=IHHII")          # nlmsghdr: len, type, flags, seq, pid
_IFINFO = struct.Struct("=BxHiII")       # ifinfomsg: family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBI")        # ifaddrmsg: family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")     # rtmsg: family, dst/src len, tos, table, proto, scope, type, flags
_NDMSG = struct.Struct("=BxxxiHBB")      # ndmsg: family, (pad), ifindex, state, flags, type


def attr(kind: int, data: bytes) -> bytes:
    n = 4 + len(data)
    return struct.pack("=HH", n, kind) + data + b"\0" * (-n & 3)


def attrs(data: bytes, off: int = 0) -> dict[int, bytes]:
    """A message's attributes from `off` on, by type (the last of a type wins)."""
    out: dict[int, bytes] = {}
    while off + 4 <= len(data):
        n, kind = struct.unpack_from("=HH", data, off)
        if n < 4:
            break
        out[kind & 0x3FFF] = data[off + 4:off + n]  # without NLA_F_NESTED / NLA_F_NET_BYTEORDER
        off += (n + 3) & ~3
    return out


def route_of(payload: bytes) -> tuple[str, int, int, int, int] | None:
    """One RTM_NEWROUTE reply -> (destination, prefix length, table, route type, output
    link index or 0); None for a family other than IPv4 and IPv6."""
    family, dst_len, _, _, table, _, _, rtype, _ = _RTMSG.unpack_from(payload)
    if family not in (AF_INET, AF_INET6):
        return None
    a = attrs(payload, _RTMSG.size)
    size = 4 if family == AF_INET else 16
    dst = a.get(RTA_DST, b"\0" * size)
    table = struct.unpack("=I", a[RTA_TABLE])[0] if len(a.get(RTA_TABLE, b"")) == 4 else table
    oif = struct.unpack("=I", a[RTA_OIF])[0] if len(a.get(RTA_OIF, b"")) == 4 else 0
    fam = _socket.AF_INET if family == AF_INET else _socket.AF_INET6
    return _socket.inet_ntop(fam, dst.ljust(size, b"\0")[:size]), dst_len, table, rtype, oif


def vxlan_link(name: str, vni: int, port: int, learning: bool, mtu: int | None = None,
               master: int | None = None, local: str | None = None) -> bytes:
    """RTM_NEWLINK's body for `ip link add NAME type vxlan id VNI dstport PORT [local IP]
    [nolearning] [mtu M] [master BR]`: unicast only (no multicast group); the remote ends are
    FDB entries (fdb_entry)."""
    data = (attr(IFLA_VXLAN_ID, struct.pack("=I", vni)) + attr(IFLA_VXLAN_PORT, struct.pack("!H", port))
            + attr(IFLA_VXLAN_LEARNING, bytes([int(learning)])))
    if local:
        data += attr(IFLA_VXLAN_LOCAL, _ip(local))
    body = attr(IFLA_IFNAME, _str(_ifname(name))) + attr(
        IFLA_LINKINFO, attr(IFLA_INFO_KIND, b"vxlan") + attr(IFLA_INFO_DATA, data))
    if mtu:
        body += attr(IFLA_MTU, struct.pack("=I", mtu))
    if master is not None:
        body += attr(IFLA_MASTER, struct.pack("=I", master))
    return _IFINFO.pack(0, 0, 0, 0, 0) + body


def fdb_entry(index: int, mac: bytes, dst: str) -> bytes:
    """RTM_NEWNEIGH/RTM_DELNEIGH's body for `bridge fdb append MAC dev VXLAN dst IP`: the
    device's own table (NTF_SELF), permanent (never aged out)."""
    return (_NDMSG.pack(AF_BRIDGE, index, NUD_PERMANENT, NTF_SELF, 0) + attr(NDA_LLADDR, mac)
            + attr(NDA_DST, _ip(dst)))


def _str(s: str) -> bytes:
    return s.encode() + b"\0"


def _ip(addr: str) -> bytes:
    if ":" in addr:
        return _socket.inet_pton(_socket.AF_INET6, addr)
    return bytes(int(p) for p in addr.split("."))


def _ifname(name: str) -> str:
    if not name or len(name.encode()) > 15 or "/" in name or name in (".", ".."):
        raise ValueError(f"invalid interface name {name!r}")
    return name


class Netlink:
    """One NETLINK_ROUTE socket; each method is one request, acknowledged before it returns.
    Errors are OSError with the kernel's errno and what was being done."""

    def __init__(self) -> None:
        self.sock = _socket.socket(AF_NETLINK, _socket.SOCK_RAW | _socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, kind: int, flags: int, body: bytes, what: str) -> list[tuple[int, bytes]]:
        """Send one message; the replies before the ACK (for GET), or OSError."""
        self.seq += 1
        msg = _HDR.pack(_HDR.size + len(body), kind, flags | NLM_F_REQUEST | NLM_F_ACK, self.seq, 0) + body
        self.sock.send(msg)
        out: list[tuple[int, bytes]] = []
        while True:
            data = self.sock.recv(65536)
            off = 0
            while off + _HDR.size <= len(data):
                length, mtype, _, seq, _ = _HDR.unpack_from(data, off)
                if length < _HDR.size:
                    raise OSError(0, f"{what}: malformed netlink reply")
                payload = data[off + _HDR.size:off + length]
                off += (length + 3) & ~3
                if seq != self.seq:
                    continue
                if mtype == NLMSG_ERROR:
                    err = -struct.unpack_from("=i", payload)[0]
                    if err:
                        raise OSError(err, f"{what}: {os.strerror(err)}")
                    return out
                if mtype == NLMSG_DONE:
                    return out
                out.append((mtype, payload))

    # -- links ---------------------------------------------------------------------------
    def index(self, name: str) -> int | None:
        """A link's index by name, None when there is none."""
        try:
            (_, payload), *_ = self.request(RTM_GETLINK, 0, _IFINFO.pack(0, 0, 0, 0, 0)
                                            + attr(IFLA_IFNAME, _str(_ifname(name))), f"look up {name}")
        except OSError as e:
            if e.errno in (19, 2):  # ENODEV, ENOENT
                return None
            raise
        return _IFINFO.unpack_from(payload)[2]

    def _link_attr(self, index: int, kind: int) -> bytes:
        """One attribute of the link `index` (b"" when there is no such link or attribute)."""
        try:
            (_, payload), *_ = self.request(RTM_GETLINK, 0, _IFINFO.pack(0, 0, index, 0, 0),
                                            f"look up link {index}")
        except (OSError, ValueError):
            return b""
        return attrs(payload, _IFINFO.size).get(kind, b"")

    def name(self, index: int) -> str | None:
        """A link's name by index, None when there is none."""
        return self._link_attr(index, IFLA_IFNAME).rstrip(b"\0").decode(errors="replace") or None

    def add_bridge(self, name: str, mtu: int | None = None, mac: bytes | None = None) -> None:
        """`mac`: fixed, else the bridge takes the lowest MAC of its ports and changes it as
        they come and go, leaving stale ARP entries for its address in the containers."""
        attrs = attr(IFLA_IFNAME, _str(_ifname(name))) + attr(IFLA_LINKINFO, attr(IFLA_INFO_KIND, b"bridge"))
        if mtu:
            attrs += attr(IFLA_MTU, struct.pack("=I", mtu))
        if mac:
            attrs += attr(IFLA_ADDRESS, mac)
        self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, _IFINFO.pack(0, 0, 0, 0, 0) + attrs,
                     f"create bridge {name}")

    def add_veth(self, name: str, peer: str, peer_netns_fd: int, master: int | None = None,
                 mtu: int | None = None, peer_mac: bytes | None = None) -> None:
        """A veth pair: `name` here (enslaved to `master`), `peer` made directly inside the
        namespace of `peer_netns_fd` -- one message, nothing to move afterwards."""
        peer_attrs = (attr(IFLA_IFNAME, _str(_ifname(peer)))
                      + attr(IFLA_NET_NS_FD, struct.pack("=I", peer_netns_fd)))
        if peer_mac:
            peer_attrs += attr(IFLA_ADDRESS, peer_mac)
        if mtu:
            peer_attrs += attr(IFLA_MTU, struct.pack("=I", mtu))
        info = attr(IFLA_INFO_KIND, b"veth") + attr(
            IFLA_INFO_DATA, attr(VETH_INFO_PEER, _IFINFO.pack(0, 0, 0, 0, 0) + peer_attrs))
        attrs = attr(IFLA_IFNAME, _str(_ifname(name))) + attr(IFLA_LINKINFO, info)
        if master is not None:
            attrs += attr(IFLA_MASTER, struct.pack("=I", master))
        if mtu:
            attrs += attr(IFLA_MTU, struct.pack("=I", mtu))
        self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, _IFINFO.pack(0, 0, 0, IFF_UP, IFF_UP) + attrs,
                     f"create veth pair {name}/{peer}")

    def add_vxlan(self, name: str, vni: int, port: int, learning: bool, mtu: int | None = None,
                  master: int | None = None) -> None:
        self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL,
                     vxlan_link(name, vni, port, learning, mtu, master),
                     f"create vxlan device {name} (VNI {vni})")

    def fdb_append(self, index: int, mac: bytes, dst: str, what: str) -> None:
        """One more remote end for `mac` (all zeros: where broadcasts and unknown unicast go;
        several entries of it replicate each frame to every one of them)."""
        try:
            self.request(RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_APPEND, fdb_entry(index, mac, dst),
                         f"add FDB entry {dst} to {what}")
        except OSError as e:
            if e.errno != 17:  # EEXIST: that remote is there already
                raise

    def fdb_delete(self, index: int, mac: bytes, dst: str, what: str) -> None:
        try:
            self.request(RTM_DELNEIGH, 0, fdb_entry(index, mac, dst), f"delete FDB entry {dst} from {what}")
        except OSError as e:
            if e.errno != 2:  # ENOENT: gone already
                raise

    def mtu(self, index: int) -> int | None:
        """A link's MTU, None when there is no such link."""
        raw = self._link_attr(index, IFLA_MTU)
        return struct.unpack("=I", raw)[0] if len(raw) == 4 else None

    def set_up(self, index: int, what: str) -> None:
        self.request(RTM_NEWLINK, 0, _IFINFO.pack(0, 0, index, IFF_UP, IFF_UP), f"bring up {what}")

    def delete(self, name: str) -> bool:
        """Delete a link by name; False when it was already gone."""
        try:
            self.request(RTM_DELLINK, 0, _IFINFO.pack(0, 0, 0, 0, 0) + attr(IFLA_IFNAME, _str(_ifname(name))),
                         f"delete link {name}")
        except OSError as e:
            if e.errno in (19, 2):
                return False
            raise
        return True

    # -- addresses and routes -------------------------------------------------------------------
    def add_address(self, index: int, ip: str, prefix: int, what: str) -> None:
        if ":" in ip:  # IPv6: usable at once (no duplicate address detection, as Docker's bridge)
            a = _ip(ip)
            body = _IFADDR.pack(AF_INET6, prefix, IFA_F_NODAD, 0, index) + attr(IFA_ADDRESS, a)
            self.request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body, f"add address {ip}/{prefix} to {what}")
            return
        a = _ip(ip)
        bcast = (int.from_bytes(a, "big") | ((1 << (32 - prefix)) - 1)).to_bytes(4, "big")
        body = (_IFADDR.pack(AF_INET, prefix, 0, 0, index) + attr(IFA_LOCAL, a) + attr(IFA_ADDRESS, a)
                + attr(IFA_BROADCAST, bcast))
        self.request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body, f"add address {ip}/{prefix} to {what}")

    def routes(self, family: int = AF_INET) -> list[tuple[str, int, int, int, int]]:
        """Every route of `family` in every table (`ip route show table all`), as route_of()
        gives them."""
        got = self.request(RTM_GETROUTE, NLM_F_DUMP, _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0),
                           "list routes")
        return [r for kind, payload in got if kind == RTM_NEWROUTE and (r := route_of(payload)) is not None]

    def route_to(self, ip: str) -> tuple[str, int, int, int, int]:
        """The route the kernel would take to `ip` (`ip route get IP`), as route_of() gives
        it; OSError (ENETUNREACH, EHOSTUNREACH...) when there is none."""
        fam = AF_INET6 if ":" in ip else AF_INET
        body = _RTMSG.pack(fam, 128 if fam == AF_INET6 else 32, 0, 0, 0, 0, 0, 0, 0) + attr(RTA_DST, _ip(ip))
        for kind, payload in self.request(RTM_GETROUTE, 0, body, f"find the route to {ip}"):
            if kind == RTM_NEWROUTE and (r := route_of(payload)) is not None:
                return r
        raise OSError(101, f"find the route to {ip}: no route")

    def add_default_route(self, gateway: str, index: int) -> None:
        fam = AF_INET6 if ":" in gateway else AF_INET
        body = (_RTMSG.pack(fam, 0, 0, 0, 254, 3, 0, 1, 0)  # main table, boot proto, universe, unicast
                + attr(RTA_GATEWAY, _ip(gateway)) + attr(RTA_OIF, struct.pack("=I", index)))
        self.request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, body, f"add default route via {gateway}")
