"""The DNS server of user networks (network/dns.py) without root: the wire format, and
what it answers from endpoint states on disk -- who may ask, which names each container
sees, what is forwarded -- plus its process handling that needs no privileges."""

from __future__ import annotations

import json
import os
import socket
import struct
from pathlib import Path

import pytest

from kobako.network import dns, nftables


def query(name: str, qtype: int = dns.A, qid: int = 0x1234, flags: int = 0x0100) -> bytes:
    head = struct.pack("!HHHHHH", qid, flags, 1, 0, 0, 0)
    return head + dns.encode_name(name) + struct.pack("!HH", qtype, 1)


def answers(msg: bytes) -> tuple[int, list[tuple[int, bytes]]]:
    """(rcode, [(type, rdata)]) of a reply whose answers point at the question."""
    qid, flags, qd, an, _, _ = struct.unpack_from("!HHHHHH", msg)
    if not qd:
        return flags & 0xF, []
    i = 12
    while msg[i]:
        i += 1 + msg[i]
    i += 5
    out = []
    for _ in range(an):
        assert msg[i:i + 2] == b"\xc0\x0c"
        rtype, _, _, n = struct.unpack_from("!HHIH", msg, i + 2)
        out.append((rtype, msg[i + 12:i + 12 + n]))
        i += 12 + n
    return flags & 0xF, out


def ep(ip: str, net_id: str = "n1", gw: str = "10.89.0.1", **kw) -> dict:
    return {"id": net_id, "ip": ip, "gateway": gw, "subnet": gw.rsplit(".", 1)[0] + ".0/24", "dns": True,
            "aliases": [], "links": [], **kw}


@pytest.fixture()
def upstream(monkeypatch):
    monkeypatch.setattr(dns, "host_servers", lambda *a, **k: ["192.0.2.53"])


FORWARDED = (dns.NOERROR, [], ["192.0.2.53"])


@pytest.fixture()
def names(tmp_path: Path, upstream):
    d = tmp_path / "endpoints"
    d.mkdir()

    def put(cid: str, name: str, networks: dict, **kw) -> None:
        st = {"id": cid * 64, "name": name, "networks": networks, "route": "x", **kw}
        tmp = d / f".{cid}.tmp"
        tmp.write_text(json.dumps(st))
        os.rename(tmp, d / f"{cid * 64}.json")  # as endpoints.py writes them: a new inode each time

    n = dns.Names(str(d))
    n.put = put  # type: ignore[attr-defined]
    n.drop = lambda cid: os.unlink(d / f"{cid * 64}.json")  # type: ignore[attr-defined]
    return n


def resolve(n: dns.Names, name: str, peer: str = "10.89.0.2", qtype: int = dns.A, local: str = "10.89.0.1"):
    q = dns.parse(query(name, qtype))
    assert isinstance(q, dns.Query)
    return n.resolve(q, local, peer)


def test_parse_and_reply_round_trip():
    q = dns.parse(query("Web.Example", dns.AAAA, qid=77))
    assert isinstance(q, dns.Query)
    assert (q.id, q.name, q.qtype, q.qclass) == (77, "web.example", dns.AAAA, 1)
    out = dns.reply(q, dns.NOERROR, [(dns.A, socket.inet_aton("10.0.0.5"))])
    qid, flags = struct.unpack_from("!HH", out)
    assert qid == 77 and flags & 0x8000 and flags & 0x0100  # a response; RD echoed
    assert answers(out) == (0, [(dns.A, socket.inet_aton("10.0.0.5"))])


def test_malformed_and_unsupported_messages():
    assert dns.parse(b"\x00\x01") is None  # no room for an ID
    assert dns.parse(query("x", flags=0x8000)) is None  # a response: never answered (no loops)
    assert dns.parse(query("x", flags=0x2000)) == dns.NOTIMP  # opcode 4 (NOTIFY)
    assert dns.parse(query("x")[:-3]) == dns.FORMERR  # truncated question
    bad = bytearray(query("x"))
    bad[4:6] = b"\x00\x02"
    assert dns.parse(bytes(bad)) == dns.FORMERR
    assert answers(dns.error(bytes(bad), dns.FORMERR))[0] == dns.FORMERR


def test_too_many_records_for_a_datagram_set_tc():
    q = dns.parse(query("many"))
    assert isinstance(q, dns.Query)
    out = dns.reply(q, 0, [(dns.A, bytes([10, 0, 0, i])) for i in range(100)], limit=512)
    assert len(out) <= 512 and struct.unpack_from("!H", out, 2)[0] & 0x0200


def test_ptr_names():
    assert dns.ptr_address("4.3.2.10.in-addr.arpa") == "10.2.3.4"
    v6 = ".".join(reversed("20010db8000000000000000000000001")) + ".ip6.arpa"
    assert dns.ptr_address(v6) == "2001:db8::1"
    assert dns.ptr_address("example.com") is None


def test_names_aliases_short_ids_and_fqdn(names):
    names.put("a", "me", {"net1": ep("10.89.0.2")})
    names.put("b", "web", {"net1": ep("10.89.0.3", aliases=["www"])})
    for name in ("web", "WWW", "b" * 12, "web.net1"):
        assert resolve(names, name) == (dns.NOERROR, [(dns.A, socket.inet_aton("10.89.0.3"))], None), name
    # a known name without an address of that type: NOERROR, no records (not NXDOMAIN)
    assert resolve(names, "web", qtype=dns.AAAA) == (dns.NOERROR, [], None)
    rc, ans, _ = resolve(names, "3.0.89.10.in-addr.arpa", qtype=dns.PTR)
    assert rc == dns.NOERROR and ans == [(dns.PTR, dns.encode_name("web.net1"))]
    assert resolve(names, "9.0.89.10.in-addr.arpa", qtype=dns.PTR)[0] == dns.NXDOMAIN


def test_links_are_the_querying_containers_own(names):
    names.put("a", "me", {"net1": ep("10.89.0.2", links=["upstream:bar"])})
    names.put("c", "other", {"net1": ep("10.89.0.4")})
    assert resolve(names, "bar") == FORWARDED  # the target is not running yet
    names.put("b", "upstream", {"net1": ep("10.89.0.3")})
    assert resolve(names, "bar") == (dns.NOERROR, [(dns.A, socket.inet_aton("10.89.0.3"))], None)
    assert resolve(names, "bar", peer="10.89.0.4") == FORWARDED  # another container has no such link


def test_other_networks_are_invisible_and_a_disconnect_is_seen_at_once(names):
    names.put("a", "me", {"net1": ep("10.89.0.2")})
    names.put("b", "far", {"net2": ep("10.90.0.2", net_id="n2", gw="10.90.0.1")})
    assert resolve(names, "far") == FORWARDED  # not a name of its networks
    names.put("b", "far", {"net2": ep("10.90.0.2", net_id="n2", gw="10.90.0.1"), "net1": ep("10.89.0.7")})
    assert resolve(names, "far")[1] == [(dns.A, socket.inet_aton("10.89.0.7"))]  # connected: visible
    names.put("b", "far", {"net2": ep("10.90.0.2", net_id="n2", gw="10.90.0.1")})
    assert resolve(names, "far") == FORWARDED  # disconnected: gone at the next query
    names.drop("b")
    assert resolve(names, "far") == FORWARDED


def test_who_may_ask(names):
    names.put("a", "me", {"net1": ep("10.89.0.2")})
    assert resolve(names, "me", peer="10.89.0.99")[0] == dns.REFUSED  # not a container of ours
    assert resolve(names, "me", local="10.90.0.1")[0] == dns.REFUSED  # not its network's gateway
    names.put("d", "default", {"bridge": {**ep("10.89.0.5"), "dns": False}})
    assert resolve(names, "me", peer="10.89.0.5")[0] == dns.REFUSED  # the default bridge has no names


def test_forwarding_goes_to_the_containers_servers_never_to_ourselves(names, monkeypatch):
    monkeypatch.setattr(dns, "host_servers", lambda *a, **k: ["127.0.0.53", "10.89.0.1"])
    names.put("a", "me", {"net1": ep("10.89.0.2")})
    assert resolve(names, "example.org") == (dns.NOERROR, [], ["127.0.0.53"])
    names.put("a", "me", {"net1": ep("10.89.0.2")}, dnsServers=["192.0.2.53"])
    assert resolve(names, "example.org")[2] == ["192.0.2.53"]  # --dns
    names.put("a", "me", {"net1": ep("10.89.0.2", internal=True)}, route=None)
    assert resolve(names, "example.org")[0] == dns.REFUSED  # --internal only: no way out
    assert resolve(names, "me")[0] == dns.NOERROR  # its own network's names still resolve


def test_host_servers_with_and_without_loopback(tmp_path: Path):
    p = tmp_path / "resolv.conf"
    p.write_text("search example\nnameserver 127.0.0.53\nnameserver 192.0.2.1\nnameserver fe80::1%eth0\n")
    assert dns.host_servers(str(p)) == ["127.0.0.53", "192.0.2.1", "fe80::1"]
    assert dns.host_servers(str(p), loopback=False) == ["192.0.2.1", "fe80::1"]


def test_nft_lets_only_the_bridge_reach_its_gateways_port_53():
    els = nftables.network_elements({"bridge": "kb-x", "subnet": "10.89.0.0/24", "internal": False,
                                     "gateway": "10.89.0.1", "dns": True})
    assert ("dns", '"kb-x" . 10.89.0.1') in els and ("dns_gw", "10.89.0.1") in els
    plain = nftables.network_elements({"bridge": "kobako0", "subnet": "10.88.0.0/16", "gateway": "10.88.0.1"})
    assert not [e for e in plain if e[0].startswith("dns")]  # the default bridge: no server
    assert any("dport 53" in r and "drop" in r for r in nftables.RULES["input"])


def test_stop_never_kills_a_process_that_is_not_ours(tmp_path: Path):
    (tmp_path / dns.PIDFILE).write_text(f"{os.getpid()}\n")  # this pytest: not kobako-dns
    (tmp_path / dns.CTL).write_text("")
    assert dns.server_pid(str(tmp_path)) is None
    assert dns.stop(str(tmp_path)) is False  # and we are still alive
    assert not (tmp_path / dns.PIDFILE).exists() and not (tmp_path / dns.CTL).exists()


def test_telling_a_server_that_is_not_there(tmp_path: Path):
    assert dns._tell(str(tmp_path), b"sync", []) is False
