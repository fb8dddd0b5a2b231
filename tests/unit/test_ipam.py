"""kobako.network.ipam: subnet picking around host routes and other networks, gateway and
range validation, allocation order and reuse, explicit addresses, exhaustion, persistence,
removal while in use, the addressing cases of issue 7's "Bad input" list, concurrent
allocation from threads and forked processes, and /proc/net/route parsing. No root, no
kernel objects: the data root is tmp_path and host routes are passed in."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from kobako import errors
from kobako.network.ipam import (
    DEFAULT_POOLS,
    IPAM,
    AddressPool,
    IPAMError,
    Pool,
    file_name,
    host_routes,
    overlaps,
    pick_subnet,
    route_overlapping,
)

CID = "abc123" + "0" * 58  # a 64-hex container id; messages show its first 12 characters


@pytest.fixture
def ipam(tmp_path: Path) -> IPAM:
    return IPAM(str(tmp_path))


def state(tmp_path: Path, name: str) -> dict:
    return json.loads((tmp_path / "networks" / "ipam" / f"{name}.json").read_text())


# -- subnets -------------------------------------------------------------------------------


def test_default_subnet_and_gateway(ipam: IPAM, tmp_path: Path):
    rec = ipam.create("bridge", host_routes=[])
    assert rec == {"name": "bridge", "subnet": "10.88.0.0/16", "gateway": "10.88.0.1", "ipRange": None,
                   "allocated": {}}
    assert state(tmp_path, "bridge") == rec
    assert ipam.get("bridge") == rec


def test_default_subnet_skips_host_routes_and_networks(ipam: IPAM):
    ipam.create("a", host_routes=[])
    # 10.89.0.0/24 sits inside 10.89/16 and 10.90.3.4/32 inside 10.90/16; the default route is ignored.
    routes = ["0.0.0.0/0", "10.89.0.0/24", "10.90.3.4/32", "192.168.2.0/24"]
    assert ipam.create("b", host_routes=routes)["subnet"] == "10.91.0.0/16"
    assert ipam.create("c", host_routes=routes)["subnet"] == "10.92.0.0/16"
    # A host route covering all of 10/8 sends the pick to Docker's 172.17-31 range.
    assert ipam.create("d", host_routes=["10.0.0.0/8"])["subnet"] == "172.17.0.0/16"
    # ... then to Docker's 192.168/16 in /20s; a route inside one /20 moves the pick to the next.
    assert ipam.create("e", host_routes=["10.0.0.0/8", "172.16.0.0/12"])["subnet"] == "192.168.0.0/20"
    assert ipam.create("f", host_routes=["10.0.0.0/8", "172.16.0.0/12", "192.168.16.0/23"])["subnet"] == \
        "192.168.32.0/20"


def test_no_free_subnet_left(ipam: IPAM):
    with pytest.raises(IPAMError, match="no free subnet left") as ei:
        ipam.create("x", host_routes=["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"])
    assert isinstance(ei.value, errors.InvalidArgument)
    assert "10.88.0.0/13 as /16s" in str(ei.value) and "192.168.0.0/16 as /20s" in str(ei.value)
    assert "--subnet" in str(ei.value)
    assert ipam.networks() == []


def test_default_routes_come_from_the_host(ipam: IPAM):
    rec = ipam.create("auto")  # reads this host's routes over rtnetlink
    assert not any(overlaps(rec["subnet"], r) for r in host_routes())


# -- the pool allocator ---------------------------------------------------------------------


def test_kobakos_pool_starts_at_the_default_networks_subnet():
    assert pick_subnet(DEFAULT_POOLS, [], []) == "10.88.0.0/16"
    # the candidates, in order: 10.88-255 /16, 172.17-31 /16, 192.168 /20
    got, nets = [], []
    while True:
        try:
            got.append(pick_subnet(DEFAULT_POOLS, nets, []))
        except IPAMError:
            break
        nets.append({"name": str(len(nets)), "subnet": got[-1]})
    assert got == ([f"10.{b}.0.0/16" for b in range(88, 256)] + [f"172.{b}.0.0/16" for b in range(17, 32)]
                   + [f"192.168.{c}.0/20" for c in range(0, 256, 16)])


@pytest.mark.parametrize("routes, nets, want", [
    (["10.88.0.0/16"], [], "10.89.0.0/16"),                    # the candidate itself
    (["10.0.0.0/8"], [], "172.17.0.0/16"),                     # a route covering the candidate
    (["10.88.0.0/15"], [], "10.90.0.0/16"),                    # one covering two candidates
    (["10.88.4.0/24"], [], "10.89.0.0/16"),                    # a route inside the candidate
    (["10.88.0.5/32"], [], "10.89.0.0/16"),                    # a host address (the local table)
    (["0.0.0.0/0", "192.0.2.0/24"], [], "10.88.0.0/16"),       # the default route and others: no matter
    ([], [{"name": "a", "subnet": "10.88.0.0/24"}], "10.89.0.0/16"),   # another network inside it
    ([], [{"name": "a", "subnet": "10.0.0.0/8"}], "172.17.0.0/16"),    # another network covering it
    (["10.88.0.0/16"], [{"name": "a", "subnet": "10.89.0.0/16"}], "10.90.0.0/16"),
])
def test_pick_subnet_overlap_rules(routes: list, nets: list, want: str):
    assert pick_subnet(DEFAULT_POOLS, nets, routes) == want


def test_pick_subnet_pools_are_a_parameter(tmp_path: Path):
    pools = (AddressPool("10.200.0.0/16", 24), AddressPool("192.168.100.0/24", 28))
    assert pick_subnet(pools, [], []) == "10.200.0.0/24"
    assert pick_subnet(pools, [], ["10.200.0.0/23"]) == "10.200.2.0/24"
    # a wide blocker is stepped over whole: 10.200.0-127 taken leaves 10.200.128.0/24 first
    assert pick_subnet(pools, [], ["10.200.0.0/17"]) == "10.200.128.0/24"
    assert pick_subnet(pools, [], ["10.200.0.0/16"]) == "192.168.100.0/28"
    assert pick_subnet(pools, [], ["10.200.0.0/16", "192.168.100.0/26", "192.168.100.64/28"]) == \
        "192.168.100.80/28"
    with pytest.raises(IPAMError) as ei:
        pick_subnet(pools, [{"name": "x", "subnet": "192.168.100.0/24"}], ["10.0.0.0/8"])
    assert str(ei.value).startswith("no free subnet left in the address pools "
                                    "(10.200.0.0/16 as /24s, 192.168.100.0/24 as /28s)")
    # the store takes them too: every network without a subnet comes from them
    ipam = IPAM(str(tmp_path), pools)
    assert [ipam.create(n, host_routes=["10.200.1.0/24"])["subnet"] for n in ("a", "b")] == \
        ["10.200.0.0/24", "10.200.2.0/24"]


@pytest.mark.parametrize("base, size, msg", [
    ("10.0.0.1/16", 24, "host bits set"),
    ("10.0.0.0/16", 8, "size must be a prefix length from 16"),
    ("10.0.0.0/16", 31, "to 30"),
    ("10.0.0.0", 24, "expected a CIDR"),
])
def test_bad_address_pools(base: str, size: int, msg: str):
    with pytest.raises(IPAMError, match=msg):
        AddressPool(base, size)


def test_route_overlapping():
    assert route_overlapping("10.88.0.0/16", ["0.0.0.0/0", "192.0.2.0/24"]) is None
    assert route_overlapping("10.88.0.0/16", ["0.0.0.0/0", "10.0.0.0/8"]) == "10.0.0.0/8"
    assert route_overlapping("10.88.0.0/16", ["10.88.3.0/24"]) == "10.88.3.0/24"


def test_explicit_subnet_gateway_and_range(ipam: IPAM):
    rec = ipam.create("n", subnet="10.100.0.0/24", gateway="10.100.0.254", ip_range="10.100.0.128/25",
                      host_routes=[])
    assert (rec["subnet"], rec["gateway"], rec["ipRange"]) == \
        ("10.100.0.0/24", "10.100.0.254", "10.100.0.128/25")


@pytest.mark.parametrize("kw, msg", [
    ({"subnet": "10.0.0.1/24"}, "invalid subnet 10.0.0.1/24: host bits set, did you mean 10.0.0.0/24?"),
    ({"subnet": "fd00::/64"}, "invalid subnet fd00::/64: an IPv4 CIDR is expected here"),
    ({"subnet": "10.0.0.0"}, "expected a CIDR"),
    ({"subnet": "10.0.0.0/33"}, "prefix length must be 0 to 32"),
    ({"subnet": "10.0.0.0/7"}, "between /8 and /30"),
    ({"subnet": "10.0.0.0/31"}, "between /8 and /30"),
    ({"subnet": "10.0.256.0/24"}, "expected an IPv4 address"),
    ({"subnet": "10.0.01.0/24"}, "expected an IPv4 address"),
    ({"subnet": "ten/8"}, "expected an IPv4 address"),
    ({"subnet": "10.0.0.0/24", "gateway": "10.0.1.1"}, "gateway 10.0.1.1 is outside subnet 10.0.0.0/24"),
    ({"subnet": "10.0.0.0/24", "gateway": "10.0.0.0"}, "gateway 10.0.0.0 is the network address"),
    ({"subnet": "10.0.0.0/24", "gateway": "10.0.0.255"}, "gateway 10.0.0.255 is the broadcast address"),
    ({"subnet": "10.0.0.0/24", "gateway": "fe80::1"}, "invalid gateway fe80::1: an IPv4 address is expected"),
    ({"subnet": "10.0.0.0/24", "ip_range": "10.0.1.0/25"}, "ip range 10.0.1.0/25 is not inside subnet"),
    ({"subnet": "10.0.0.0/24", "ip_range": "10.0.0.0/23"}, "ip range 10.0.0.0/23 is not inside subnet"),
    ({"subnet": "10.0.0.0/24", "ip_range": "10.0.0.1/25"}, "invalid ip range 10.0.0.1/25: host bits set"),
    ({"subnet": "10.0.0.0/24", "ip_range": "10.0.0.1/32"}, "no usable address besides the gateway"),
    ({"subnet": "10.0.0.0/24", "ip_range": "10.0.0.255/32"}, "no usable address"),
    ({"gateway": "10.0.0.1"}, "needs an explicit subnet"),
    ({"ip_range": "10.0.0.0/25"}, "needs an explicit subnet"),
])
def test_bad_create_input(ipam: IPAM, kw: dict, msg: str):
    with pytest.raises(IPAMError, match=msg.replace("?", r"\?").replace(".", r"\.")):
        ipam.create("bad", host_routes=[], **kw)
    assert ipam.networks() == []  # nothing half-made


def test_overlapping_subnet_names_the_network(ipam: IPAM):
    ipam.create("front", subnet="10.50.0.0/16", host_routes=[])
    with pytest.raises(IPAMError, match=r"subnet 10\.50\.8\.0/24 overlaps network front \(10\.50\.0\.0/16\)"):
        ipam.create("back", subnet="10.50.8.0/24", host_routes=[])
    with pytest.raises(IPAMError, match="overlaps network front"):
        ipam.create("back", subnet="10.0.0.0/8", host_routes=[])
    assert [n["name"] for n in ipam.networks()] == ["front"]


def test_overlapping_host_route_names_the_route(ipam: IPAM):
    route = r"^subnet 192\.168\.1\.0/24 overlaps the host route 192\.168\.0\.0/16$"
    with pytest.raises(IPAMError, match=route):
        ipam.create("lan", subnet="192.168.1.0/24", host_routes=["0.0.0.0/0", "192.168.0.0/16"])
    ipam.create("lan", subnet="192.169.1.0/24", host_routes=["0.0.0.0/0", "192.168.0.0/16"])


def test_existing_name_and_bad_names(ipam: IPAM):
    ipam.create("n", host_routes=[])
    with pytest.raises(IPAMError, match="network n already exists"):
        ipam.create("n", subnet="10.200.0.0/16", host_routes=[])
    for bad in ("", "   ", "x" * 201):
        with pytest.raises(IPAMError, match="invalid network name"):
            ipam.create(bad, host_routes=[])


def test_any_name_dockerd_takes_stays_inside_the_store(ipam: IPAM):
    """dockerd takes any name that is not blank ("test 01" too); on disk each is one file
    in the store, never a path out of it nor the lock."""
    import os
    odd = ["test 01", ".lock", "..", "../x", "a/b", "-x", "%41", "ünï"]
    for i, n in enumerate(odd):
        ipam.create(n, subnet=f"10.{100 + i}.0.0/16", host_routes=[])
    assert sorted(os.listdir(ipam.dir)) == sorted([".lock"] + [f"{file_name(n)}.json" for n in odd])
    assert all("/" not in f and not f.startswith(".") for f in map(file_name, odd))
    assert len(set(map(file_name, odd + ["A"]))) == len(odd) + 1  # "%41" is not "A"
    assert {x["name"] for x in ipam.networks()} == set(odd)
    assert ipam.allocate("test 01", CID) == "10.100.0.2"
    ipam.release("test 01", CID)
    ipam.remove("../x")
    assert "../x" not in {x["name"] for x in ipam.networks()}


def test_auxiliary_addresses_are_skipped(ipam: IPAM):
    ipam.create("aux", subnet="10.9.0.0/24", aux={"a": "10.9.0.2", "b": "10.9.0.3"}, host_routes=[])
    assert ipam.allocate("aux", CID) == "10.9.0.4"
    assert ipam.get("aux")["auxAddresses"] == {"a": "10.9.0.2", "b": "10.9.0.3"}
    with pytest.raises(IPAMError, match="must belong to the master pool"):
        ipam.create("aux2", subnet="10.10.0.0/24", aux={"a": "10.9.0.2"}, host_routes=[])


def test_unknown_network(ipam: IPAM):
    for call in (lambda: ipam.get("nope"), lambda: ipam.allocate("nope", CID),
                 lambda: ipam.release("nope", CID), lambda: ipam.owners("nope"), lambda: ipam.remove("nope")):
        with pytest.raises(IPAMError, match="^no such network: nope$"):
            call()


def test_networks_lists_sorted(ipam: IPAM):
    for n in ("zeta", "alpha", "mid"):
        ipam.create(n, host_routes=[])
    assert [(n["name"], n["subnet"]) for n in ipam.networks()] == [
        ("alpha", "10.89.0.0/16"), ("mid", "10.90.0.0/16"), ("zeta", "10.88.0.0/16")]


# -- addresses -------------------------------------------------------------------------------


def test_allocation_order_release_and_reuse(ipam: IPAM, tmp_path: Path):
    ipam.create("n", subnet="10.1.0.0/24", host_routes=[])
    got = [ipam.allocate("n", f"c{i}") for i in range(4)]
    assert got == ["10.1.0.2", "10.1.0.3", "10.1.0.4", "10.1.0.5"]  # .0 network, .1 gateway
    assert ipam.release("n", "c1") == "10.1.0.3"
    assert ipam.release("n", "c2") == "10.1.0.4"
    assert ipam.release("n", "c2") is None  # no longer holds one
    assert ipam.release("n", "stranger") is None
    assert ipam.allocate("n", "d1") == "10.1.0.3"  # lowest free first
    assert ipam.allocate("n", "d2") == "10.1.0.4"
    assert ipam.allocate("n", "d3") == "10.1.0.6"
    assert ipam.owners("n") == {"c0": "10.1.0.2", "d1": "10.1.0.3", "d2": "10.1.0.4", "c3": "10.1.0.5",
                                "d3": "10.1.0.6"}
    assert list(state(tmp_path, "n")["allocated"]) == [f"10.1.0.{i}" for i in range(2, 7)]  # kept in order


def test_gateway_elsewhere_is_skipped(ipam: IPAM):
    ipam.create("n", subnet="10.2.0.0/29", gateway="10.2.0.3", host_routes=[])
    assert [ipam.allocate("n", f"c{i}") for i in range(5)] == [
        "10.2.0.1", "10.2.0.2", "10.2.0.4", "10.2.0.5", "10.2.0.6"]
    with pytest.raises(IPAMError, match="no free address"):
        ipam.allocate("n", "c5")


def test_explicit_addresses(ipam: IPAM):
    ipam.create("n", subnet="10.88.0.0/24", host_routes=[])
    assert ipam.allocate("n", CID, ip="10.88.0.5") == "10.88.0.5"
    taken = r"^address 10\.88\.0\.5 is already in use by container abc123000000$"
    with pytest.raises(IPAMError, match=taken):
        ipam.allocate("n", "other", ip="10.88.0.5")
    for ip, msg in [("10.88.1.5", "outside subnet 10.88.0.0/24"), ("10.88.0.0", "is the network address"),
                    ("10.88.0.255", "is the broadcast address"), ("10.88.0.1", "is the gateway"),
                    ("10.88.0.300", "invalid address"), ("fd00::5", "IPv6")]:
        with pytest.raises(IPAMError, match=msg):
            ipam.allocate("n", "other", ip=ip)
    assert ipam.allocate("n", "next") == "10.88.0.2"  # automatic allocation goes around it
    assert ipam.allocate("n", "c3", ip="10.88.0.254") == "10.88.0.254"
    assert ipam.owners("n") == {CID: "10.88.0.5", "next": "10.88.0.2", "c3": "10.88.0.254"}


def test_same_owner_twice(ipam: IPAM):
    ipam.create("n", subnet="10.3.0.0/24", host_routes=[])
    ipam.allocate("n", CID)
    twice = r"^container abc123000000 already has address 10\.3\.0\.2 on network n$"
    for ip in (None, "10.3.0.9"):
        with pytest.raises(IPAMError, match=twice):
            ipam.allocate("n", CID, ip=ip)
    with pytest.raises(IPAMError, match="needs an owner"):
        ipam.allocate("n", "")
    assert ipam.owners("n") == {CID: "10.3.0.2"}


def test_ip_range_limits_allocation(ipam: IPAM):
    ipam.create("n", subnet="10.4.0.0/24", ip_range="10.4.0.128/30", host_routes=[])
    assert [ipam.allocate("n", f"c{i}") for i in range(4)] == ["10.4.0.128", "10.4.0.129", "10.4.0.130",
                                                               "10.4.0.131"]
    with pytest.raises(IPAMError, match=r"network n has no free address left in 10\.4\.0\.128/30"):
        ipam.allocate("n", "c4")
    # As with Docker, a fixed address may lie outside the range (the range only bounds automatic picks).
    assert ipam.allocate("n", "fixed", ip="10.4.0.10") == "10.4.0.10"


def test_ip_range_at_the_edges_skips_network_and_broadcast(ipam: IPAM):
    ipam.create("n", subnet="10.5.0.0/24", gateway="10.5.0.100", ip_range="10.5.0.0/30", host_routes=[])
    assert [ipam.allocate("n", f"c{i}") for i in range(3)] == ["10.5.0.1", "10.5.0.2", "10.5.0.3"]
    with pytest.raises(IPAMError, match="no free address"):
        ipam.allocate("n", "c3")
    ipam.create("m", subnet="10.6.0.0/24", ip_range="10.6.0.252/30", host_routes=[])
    assert [ipam.allocate("m", f"c{i}") for i in range(3)] == ["10.6.0.252", "10.6.0.253", "10.6.0.254"]
    with pytest.raises(IPAMError, match="no free address"):
        ipam.allocate("m", "c3")


def test_exhaustion_of_a_slash_30(ipam: IPAM):
    ipam.create("tiny", subnet="10.7.0.0/30", host_routes=[])
    assert ipam.allocate("tiny", "only") == "10.7.0.2"  # .0 network, .1 gateway, .3 broadcast
    with pytest.raises(IPAMError, match=r"^network tiny has no free address left in 10\.7\.0\.0/30$"):
        ipam.allocate("tiny", "second")
    ipam.release("tiny", "only")
    assert ipam.allocate("tiny", "second") == "10.7.0.2"


def test_persistence_across_instances(tmp_path: Path):
    a = IPAM(str(tmp_path))
    a.create("n", subnet="10.8.0.0/24", host_routes=[])
    a.allocate("n", "c0")
    b = IPAM(str(tmp_path))
    assert b.owners("n") == {"c0": "10.8.0.2"}
    assert b.allocate("n", "c1") == "10.8.0.3"
    assert IPAM(str(tmp_path)).get("n")["allocated"] == {"10.8.0.2": "c0", "10.8.0.3": "c1"}
    with pytest.raises(IPAMError, match="overlaps network n"):
        IPAM(str(tmp_path)).create("m", subnet="10.8.0.0/25", host_routes=[])


def test_remove_refuses_while_in_use(ipam: IPAM, tmp_path: Path):
    ipam.create("n", subnet="10.9.0.0/24", host_routes=[])
    ipam.allocate("n", CID)
    ipam.allocate("n", "web")
    in_use = r"^network n is in use by 2 containers: abc123000000 \(10\.9\.0\.2\), web \(10\.9\.0\.3\)$"
    with pytest.raises(IPAMError, match=in_use):
        ipam.remove("n")
    ipam.release("n", CID)
    with pytest.raises(IPAMError, match=r"in use by 1 container: web"):
        ipam.remove("n")
    ipam.release("n", "web")
    ipam.remove("n")
    assert ipam.networks() == []
    assert sorted(os.listdir(tmp_path / "networks" / "ipam")) == [".lock"]  # no temp files left behind
    ipam.create("n2", subnet="10.9.0.0/24", host_routes=[])  # its subnet is free again


def test_corrupt_state_is_a_clear_error(ipam: IPAM, tmp_path: Path):
    (tmp_path / "networks" / "ipam" / "broken.json").write_text("{not json")
    with pytest.raises(IPAMError, match="state file .*broken.json is corrupt"):
        ipam.get("broken")


# -- concurrency -------------------------------------------------------------------------------


def test_concurrent_allocations_from_threads(ipam: IPAM, tmp_path: Path):
    ipam.create("n", subnet="10.10.0.0/24", host_routes=[])
    got: list[str] = []
    start = threading.Barrier(8)

    def worker(i: int) -> None:
        mine = IPAM(str(tmp_path))  # each thread with its own instance, as separate CLI calls would be
        start.wait()
        got.append(mine.allocate("n", f"t{i}"))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got, key=lambda s: int(s.rsplit(".", 1)[1])) == [f"10.10.0.{i}" for i in range(2, 10)]
    assert sorted(ipam.owners("n")) == sorted(f"t{i}" for i in range(8))
    assert sorted(ipam.owners("n").values()) == sorted(got)
    assert len(state(tmp_path, "n")["allocated"]) == 8


def _child(root: str, i: int, start, out) -> None:
    start.wait()
    out.put((f"p{i}", IPAM(root).allocate("n", f"p{i}")))


def test_concurrent_allocations_from_processes(tmp_path: Path):
    IPAM(str(tmp_path)).create("n", subnet="10.11.0.0/24", host_routes=[])
    ctx = multiprocessing.get_context("fork")
    start, out = ctx.Barrier(8), ctx.Queue()
    procs = [ctx.Process(target=_child, args=(str(tmp_path), i, start, out)) for i in range(8)]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=30) for _ in procs)
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert len(set(results.values())) == 8
    assert set(results.values()) == {f"10.11.0.{i}" for i in range(2, 10)}
    assert IPAM(str(tmp_path)).owners("n") == results  # the file agrees with what each process was given
    assert sorted(os.listdir(tmp_path / "networks" / "ipam")) == [".lock", "n.json"]


# -- helpers -------------------------------------------------------------------------------------


def _ip_route_show() -> list[str]:
    """`ip -4 route show table all`, as CIDRs (iproute2 prints a /32 as a bare address)."""
    kinds = {"unicast", "local", "broadcast", "multicast", "anycast", "blackhole", "unreachable", "prohibit",
             "throw", "nat"}
    out = []
    for line in subprocess.run(["ip", "-4", "route", "show", "table", "all"], capture_output=True, text=True,
                               check=True).stdout.splitlines():
        words = line.split()
        dst = words[1] if words[0] in kinds else words[0]
        if dst != "default":
            out.append(dst if "/" in dst else dst + "/32")
    return out


@pytest.mark.skipif(not shutil.which("ip"), reason="iproute2 is not installed")
def test_host_routes_agree_with_iproute2():
    got = host_routes()
    assert got and "0.0.0.0/0" not in got and len(got) == len(set(got))
    assert set(got) == set(_ip_route_show())
    for r in host_routes(6):
        assert ":" in r and not r.startswith(("fe80:", "ff")) and r != "::1/128"


def test_route_overlapping_names_the_hosts_interface():
    """Without a list, the host's routes (the first that overlaps), named with its interface."""
    from kobako.network import ipam as ipam_mod
    table = ipam_mod._route_table(4)
    by_index = {int((d / "ifindex").read_text()): d.name for d in Path("/sys/class/net").iterdir()}
    cidr = next(c for c, i in table if i in by_index)
    first, oif = next((c, i) for c, i in table if overlaps(c, cidr))
    assert route_overlapping(cidr) == (f"{first} dev {by_index[oif]}" if oif else first)
    if not any(overlaps(c, "198.51.100.0/24") for c, _ in table):
        assert route_overlapping("198.51.100.0/24") is None


def test_overlaps():
    assert overlaps("10.0.0.0/8", "10.1.2.0/24")
    assert overlaps("10.1.2.0/24", "10.0.0.0/8")
    assert overlaps("10.1.2.3", "10.1.2.0/24")
    assert overlaps("10.1.2.3/24", "10.1.2.200/24")  # host bits ignored
    assert not overlaps("10.1.2.0/24", "10.1.3.0/24")
    assert not overlaps("172.17.0.0/16", "172.18.0.0/16")
    assert overlaps("0.0.0.0/0", "1.2.3.4/32")
    with pytest.raises(IPAMError):
        overlaps("10.0.0.0/40", "10.0.0.0/8")


def test_pool():
    p = Pool("10.12.0.0/16")
    assert (p.subnet, p.gateway, p.ip_range) == ("10.12.0.0/16", "10.12.0.1", None)
    assert p.first_free(set()) == (10 << 24 | 12 << 16 | 2)
    assert Pool("10.12.0.0/16", ip_range="10.12.5.0/24").first_free(set()) == (10 << 24 | 12 << 16 | 5 << 8)


# -- IPv6 pools ------------------------------------------------------------------------------

def test_ipv6_pool_beside_the_ipv4_one(ipam: IPAM):
    # as docker-py gives it: host bits set, a range, a gateway inside the range
    rec = ipam.create("v6", host_routes=[], v6={"subnet": "2001:389::1/64", "ipRange": "2001:389::/96",
                                                "gateway": "2001:389::ffff", "enabled": True})
    assert (rec["subnet6"], rec["gateway6"], rec["enableIPv6"]) == ("2001:389::1/64", "2001:389::ffff", True)
    assert ipam.allocate6("v6", "c1") == "2001:389::1"
    assert ipam.allocate6("v6", "c2", "2001:389::f00d") == "2001:389::f00d"
    with pytest.raises(IPAMError, match="already in use"):
        ipam.allocate6("v6", "c3", "2001:389::f00d")
    with pytest.raises(IPAMError, match="gateway"):
        ipam.allocate6("v6", "c3", "2001:389::ffff")
    with pytest.raises(IPAMError, match="outside"):
        ipam.allocate6("v6", "c3", "2001:390::1")
    ipam.allocate("v6", "c1")
    ipam.release("v6", "c1")  # both of its addresses go back
    assert ipam.allocate6("v6", "c4") == "2001:389::1"


def test_ipv6_pool_without_enable_ipv6_gives_no_addresses(ipam: IPAM):
    ipam.create("v6off", host_routes=[], v6={"subnet": "2001:389::/64", "enabled": False})
    assert ipam.allocate6("v6off", "c1", "2001:389::5") is None  # dockerd 20.10: kept, not assigned


@pytest.mark.parametrize("v6,msg", [
    ({"subnet": "2001:db8::/127"}, "at most /126"), ({"subnet": "10.0.0.0/8"}, "invalid IPv6 subnet"),
    ({"subnet": "2001:db8::/64", "gateway": "2001:db9::1"}, "outside"),
    ({"subnet": "2001:db8::/64", "ipRange": "2001:db9::/96"}, "not inside"),
])
def test_bad_ipv6_pools(ipam: IPAM, v6: dict, msg: str):
    with pytest.raises(IPAMError, match=msg):
        ipam.create("bad", host_routes=[], v6=v6)
    assert ipam.networks() == []


def test_overlapping_ipv6_subnets_are_refused(ipam: IPAM):
    ipam.create("a", host_routes=[], v6={"subnet": "2001:db8::/64", "enabled": True})
    with pytest.raises(IPAMError, match="IPv6 subnet 2001:db8::/56 overlaps network a"):
        ipam.create("b", host_routes=[], v6={"subnet": "2001:db8::/56", "enabled": True})
    ipam.create("c", host_routes=[], v6={"subnet": "2001:db8:1::/64", "enabled": True})
