"""kobako's one nftables table: fixed rules over sets and maps that state fills.

    table inet kobako                         (kobako_<hash> for a non-default run root)
      set bridges, internal      kobako's live bridge devices; those of --internal networks
      set same                   bridge . bridge: traffic that stays on its own network
      set subnets, outbound      live subnets; those that may leave the host (masquerade)
      set subnets6, outbound6    the same for the IPv6 subnets of dual-stack networks
      set dns, dns_gw            user bridge . its gateway; the gateways: the DNS server's
                                 port 53 (network/dns.py) only from the gateway's own bridge
      map dnat_any, dnat_ip      published ports: proto . port (or hostIP . proto . port)
                                 -> container IP . port
      chain prerouting/output    nat: `fib daddr type local` -> publish (from outside, and
                                 from the host itself, 127.0.0.1 included)
      chain publish              dnat through the two maps (no userland proxy)
      chain postrouting          masquerade out of bridge networks; the source of hairpin and
                                 127.0.0.1 -> container traffic becomes the bridge's address
      chain forward              isolation between kobako networks; --internal stays inside
      chain input                port 53 of a user network's gateway: its containers only

Why sets and maps rather than a rule per port or per network: adding an element costs
~0.2 ms, while removing any rule or element, or re-adding a chain, makes the kernel wait
for an RCU grace period (8-24 ms here). So a container start only ever *adds*; what a
container's exit removes is its own map entries; a bridge's entries go with the bridge.
`full()` rebuilds the whole table from state in one batch (after a reboot, or someone's
`nft flush ruleset`: `kobako network reload`). Nothing here touches another table.
libnftables (what `nft` is built on) is called in-process through ctypes.
"""

from __future__ import annotations

import ctypes

from kobako import errors

_lib: ctypes.CDLL | None = None

SETS = (("bridges", "set", "type ifname;"), ("internal", "set", "type ifname;"),
        ("same", "set", "type ifname . ifname;"),
        ("subnets", "set", "type ipv4_addr; flags interval;"),
        ("outbound", "set", "type ipv4_addr; flags interval;"),
        ("subnets6", "set", "type ipv6_addr; flags interval;"),
        ("outbound6", "set", "type ipv6_addr; flags interval;"),
        ("dns", "set", "type ifname . ipv4_addr;"), ("dns_gw", "set", "type ipv4_addr;"),
        ("dnat_any", "map", "type inet_proto . inet_service : ipv4_addr . inet_service;"),
        ("dnat_ip", "map", "type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service;"))
BASE = (("prerouting", "nat hook prerouting priority -100"), ("output", "nat hook output priority -100"),
        ("postrouting", "nat hook postrouting priority 100"), ("forward", "filter hook forward priority 0"),
        ("input", "filter hook input priority 0"))
RULES = {
    "prerouting": ["fib daddr type local jump publish"],
    "output": ["fib daddr type local jump publish"],
    "publish": ["dnat ip to ip daddr . meta l4proto . th dport map @dnat_ip",
                "dnat ip to meta l4proto . th dport map @dnat_any"],
    "postrouting": ["oifname @bridges ct status dnat ip saddr 127.0.0.0/8 masquerade",
                    "oifname @bridges ct status dnat ip saddr @subnets masquerade",
                    "ip saddr @outbound oifname != @bridges masquerade",
                    "ip6 saddr @outbound6 oifname != @bridges masquerade"],
    "forward": ["ct status dnat accept",  # a published port is reachable from every network
                "iifname @bridges oifname @bridges iifname . oifname != @same drop",
                "iifname @internal iifname . oifname != @same drop",
                "oifname @internal iifname . oifname != @same drop"],
    # the DNS server answers a network's containers on its gateway; nobody else reaches it
    # there (another network, the outside: the host accepts any of its addresses anywhere)
    "input": ["meta l4proto { tcp, udp } th dport 53 iifname . ip daddr @dns accept",
              "meta l4proto { tcp, udp } th dport 53 ip daddr @dns_gw drop"],
}


class NftError(errors.Internal):
    pass


def _load() -> ctypes.CDLL:
    global _lib
    if _lib is None:
        try:
            lib = ctypes.CDLL("libnftables.so.1", use_errno=True)
        except OSError:
            raise NftError("libnftables.so.1 is missing: install Debian's nftables package") from None
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        _lib = lib
    return _lib


def run(text: str) -> str:
    """One batch through libnftables (all or nothing); its output, or NftError with nft's words."""
    lib = _load()
    ctx = lib.nft_ctx_new(0)
    if not ctx:
        raise NftError("nftables: cannot make a context")
    try:
        lib.nft_ctx_buffer_output(ctx)
        lib.nft_ctx_buffer_error(ctx)
        if lib.nft_run_cmd_from_buffer(ctx, text.encode()) != 0:
            err = (lib.nft_ctx_get_error_buffer(ctx) or b"").decode(errors="replace").strip()
            first = err.splitlines()[0] if err else "unknown error"
            raise NftError(f"nftables refused kobako's rules: {first}")
        return (lib.nft_ctx_get_output_buffer(ctx) or b"").decode(errors="replace")
    finally:
        lib.nft_ctx_free(ctx)


# -- elements ----------------------------------------------------------------------------------

def network_elements(net: dict) -> list[tuple[str, str]]:
    """(set, element) for a live network {"bridge", "subnet", "internal", "gateway", "dns"}
    (dns: a user network, whose gateway the DNS server listens on)."""
    br = '"' + net["bridge"] + '"'  # interface names are [A-Za-z0-9_.-], made by kobako
    out = [("bridges", br), ("same", f"{br} . {br}"), ("subnets", net["subnet"])]
    out.append(("internal", br) if net.get("internal") else ("outbound", net["subnet"]))
    if net.get("subnet6"):  # a dual-stack network (its clean CIDR: the endpoint's)
        out.append(("subnets6", net["subnet6"]))
        if not net.get("internal"):
            out.append(("outbound6", net["subnet6"]))
    if net.get("dns") and net.get("gateway"):
        out += [("dns", f"{br} . {net['gateway']}"), ("dns_gw", net["gateway"])]
    return out


def port_elements(ports: list[dict], ip_of: dict[str, str]) -> list[tuple[str, str]]:
    """(map, "key : value") for published ports; ip_of: network name -> the container's IP."""
    from kobako.linux.namespaces import in_user_namespace
    # rootless: slirp4netns binds the host's address and brings everything to tap0's
    by_address = not in_user_namespace()
    out = []
    for p in ports:
        ip = ip_of.get(p.get("network", ""))
        if ip is None:
            continue
        key = f"{p['proto']} . {p['hostPort']}"
        if by_address and p.get("hostIp") not in (None, "", "0.0.0.0"):
            out.append(("dnat_ip", f"{p['hostIp']} . {key} : {ip} . {p['containerPort']}"))
        else:
            out.append(("dnat_any", f"{key} : {ip} . {p['containerPort']}"))
    return out


def _elements(verb: str, table: str, elems: list[tuple[str, str]]) -> str:
    if verb == "delete":  # maps are deleted by key
        elems = [(s, e.split(" : ")[0]) for s, e in elems]
    return "".join(f"{verb} element inet {table} {s} {{ {e} }}\n" for s, e in elems)


def add(table: str, elems: list[tuple[str, str]]) -> None:
    """Add elements; NftError if the table is not there (then: full())."""
    if elems:
        run(_elements("add", table, elems))


def delete(table: str, elems: list[tuple[str, str]]) -> None:
    if elems:
        run(_elements("delete", table, elems))


def full(table: str, networks: list[dict], endpoints: list[dict]) -> None:
    """The whole table from state, in one batch: made if missing, every chain and set
    emptied and refilled. networks: the live ones; endpoints: the running containers'
    state ({"networks": {name: {"ip", ...}}, "ports": [...]})."""
    t = f"inet {table}"
    lines = [f"add table {t}"]
    lines += [f"add {kind} {t} {name} {{ {spec} }}" for name, kind, spec in SETS]
    lines += [f"add chain {t} {name} {{ type {hook}; policy accept; }}" for name, hook in BASE]
    lines.append(f"add chain {t} publish")
    lines += [f"flush {kind} {t} {name}" for name, kind, _ in SETS]
    for chain, rules in RULES.items():
        lines.append(f"flush chain {t} {chain}")
        lines += [f"add rule {t} {chain} {r}" for r in rules]
    elems = [e for n in networks for e in network_elements(n)]
    for ep in endpoints:
        elems += port_elements(ep.get("ports") or [], {k: v["ip"] for k, v in ep["networks"].items()})
    run("\n".join(lines) + "\n" + _elements("add", table, elems))


def remove(table: str) -> None:
    # "add" first: deleting a table that is not there is an error, adding an empty one is not
    run(f"add table inet {table}\ndelete table inet {table}\n")


def exists(table: str) -> bool:
    return f"table inet {table}\n" in run("list tables\n") + "\n"


def present(table: str) -> bool:
    """Whether `inet <table>` exists, asked of the kernel directly: one nfnetlink
    NFT_MSG_GETTABLE request, ~0.05 ms, where libnftables' `list tables` costs ~3 ms and
    spawning `nft` ~5 ms. Cheap enough for every kobako command to check (lifecycle.py)."""
    import _socket
    import struct
    name = table.encode() + b"\0"
    attr = struct.pack("=HH", 4 + len(name), 1) + name  # NFTA_TABLE_NAME
    attr += b"\0" * (-len(attr) % 4)
    body = struct.pack("=BBH", 1, 0, 0) + attr  # nfgenmsg: NFPROTO_INET, version 0
    # NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETTABLE, NLM_F_REQUEST
    msg = struct.pack("=IHHII", 16 + len(body), (10 << 8) | 1, 1, 1, 0) + body
    s = _socket.socket(_socket.AF_NETLINK, _socket.SOCK_RAW | _socket.SOCK_CLOEXEC, 12)  # NETLINK_NETFILTER
    try:
        s.sendto(msg, (0, 0))
        reply = s.recv(65536)
    finally:
        s.close()
    if struct.unpack_from("=H", reply, 4)[0] != 2:  # not NLMSG_ERROR: the table itself
        return True
    err = -struct.unpack_from("=i", reply, 16)[0]
    if err == 2:  # ENOENT
        return False
    if err:
        raise OSError(err, f"nftables: cannot look up table inet {table}")
    return True
