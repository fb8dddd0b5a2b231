"""IP address management for kobako's bridge networks (what CNI's host-local plugin and
netavark's IPAM do).

    <data root>/networks/ipam/<network>.json   {"name", "subnet", "gateway", "ipRange",
                                                "auxAddresses", "allocated": {ip: owner}}
    (<network>: the name as a file name, file_name() below)
    <data root>/networks/ipam/.lock            one flock around every change, for all networks

A network made without a subnet gets the first free one of a list of address pools
(AddressPool, DEFAULT_POOLS: dockerd's default-address-pools shape), avoiding the other
networks and every route of the host (pick_subnet); once written, a network's subnet never
changes.

One lock for all networks: creating a network must see every other network's subnet, and
allocations are a few microseconds of work, so finer locks would buy nothing. Files are
replaced atomically, so readers (get, owners, networks) need no lock. Network names never
start with '.', so they cannot collide with the lock or with atomic_write's temp files.

Addresses are handled as integers with a small parser of our own rather than `ipaddress`
(~1.6 ms to import, and allocate() is on the path of `kobako run`). A network may also
have an IPv6 pool (dockerd's second IPAM config): "subnet6", "gateway6", "ipRange6",
"allocated6", and "enableIPv6" (containers get IPv6 addresses only then, as in dockerd
20.10). IPv6 is parsed by `ipaddress`, imported only for networks that have a pool of it.
"""

from __future__ import annotations

import os

from kobako import errors
from kobako.paths import FileLock, atomic_write
from kobako.runtime import jsonfast  # `json` imports re: too slow for `kobako run`

_ALL = 0xFFFFFFFF
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
_DIGITS = frozenset("0123456789")


class IPAMError(errors.InvalidArgument):
    """A user-facing error: the message is one line that says what is wrong."""


# -- addresses as integers ----------------------------------------------------------------


def _ip(s: str, what: str = "address") -> int:
    """Dotted quad -> int. Strict: no leading zeros (inet_aton would read them as octal)."""
    if ":" in s:
        raise IPAMError(f"invalid {what} {s}: an IPv4 address is expected here (IPv6 goes in the IPv6 pool)")
    parts = s.split(".")
    if len(parts) != 4 or not all(p and len(p) <= 3 and set(p) <= _DIGITS and (p == "0" or p[0] != "0")
                                  and int(p) <= 255 for p in parts):
        raise IPAMError(f"invalid {what} {s}: expected an IPv4 address like 10.88.0.1")
    a, b, c, d = (int(p) for p in parts)
    return a << 24 | b << 16 | c << 8 | d


def _str(n: int) -> str:
    return f"{n >> 24 & 255}.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"


def _mask(prefix: int) -> int:
    return (_ALL << (32 - prefix)) & _ALL


def _cidr(s: str, what: str = "subnet", strict: bool = True) -> tuple[int, int]:
    """'10.88.0.0/16' -> (network int, prefix). strict: the prefix is required and host bits
    must be zero (user input); otherwise a bare address is a /32 and host bits are dropped."""
    if ":" in s:
        raise IPAMError(f"invalid {what} {s}: an IPv4 CIDR is expected here (IPv6 goes in the IPv6 pool)")
    addr, slash, plen = s.partition("/")
    if not slash:
        if strict:
            raise IPAMError(f"invalid {what} {s}: expected a CIDR like 10.89.0.0/16")
        plen = "32"
    if not plen or not set(plen) <= _DIGITS or len(plen) > 2 or int(plen) > 32:
        raise IPAMError(f"invalid {what} {s}: the prefix length must be 0 to 32")
    net, prefix = _ip(addr, what), int(plen)
    if net & ~_mask(prefix) & _ALL:
        if strict:
            fixed = f"{_str(net & _mask(prefix))}/{prefix}"
            raise IPAMError(f"invalid {what} {s}: host bits set, did you mean {fixed}?")
        net &= _mask(prefix)
    return net, prefix


def overlaps(a: str, b: str) -> bool:
    """Whether two CIDRs share an address (a bare address counts as a /32; host bits are ignored)."""
    (na, pa), (nb, pb) = _cidr(a, "CIDR", strict=False), _cidr(b, "CIDR", strict=False)
    m = _mask(min(pa, pb))  # two prefixes overlap iff they agree on the shorter one
    return na & m == nb & m


def _route_table(family: int) -> list[tuple[str, int]]:
    """This network namespace's routes, in every routing table (a VPN's own table too, and
    the local table's host addresses), read over rtnetlink: (CIDR, output link index or 0).
    Left out: default routes (everything overlaps them) and, for IPv6, the link-local,
    multicast and loopback ones every interface has."""
    from kobako.linux import netlink
    fam = netlink.AF_INET if family == 4 else netlink.AF_INET6
    try:
        with netlink.Netlink() as nl:
            got = nl.routes(fam)
    except OSError as e:
        raise IPAMError(f"cannot read the host's routes: {e.strerror or e}") from None
    out: list[tuple[str, int]] = []
    for dst, plen, _table, _type, oif in got:
        if plen == 0:
            continue
        if family == 4:
            out.append((f"{_str(_ip(dst) & _mask(plen))}/{plen}", oif))
            continue
        import ipaddress
        net = ipaddress.IPv6Network((dst, plen), strict=False)
        if not (net.is_link_local or net.is_multicast or net.is_loopback):
            out.append((str(net), oif))
    return out


def host_routes(family: int = 4) -> list[str]:
    """The host's routes of `family` (4 or 6) as CIDRs, each once: what a new subnet must
    avoid (_route_table says which)."""
    return list(dict.fromkeys(cidr for cidr, _ in _route_table(family)))


def route_overlapping(subnet: str, routes: list[str] | None = None) -> str | None:
    """The first route that shares an address with `subnet`, or None. Without `routes`, the
    host's, named with their interface ("10.88.0.0/16 dev podman0"): that tells the user
    whose route it is."""
    if routes is not None:
        return next((r for r in routes if r.split("/")[-1] != "0" and overlaps(subnet, r)), None)
    for cidr, oif in _route_table(4):
        if overlaps(subnet, cidr):
            from kobako.linux import netlink
            with netlink.Netlink() as nl:
                dev = nl.name(oif) if oif else None
            return f"{cidr} dev {dev}" if dev else cidr
    return None


_host_routes = host_routes  # IPAM.create's parameter of the same name shadows it


# -- where subnets come from -------------------------------------------------------------------


class AddressPool:
    """A range that subnets are cut from, as one entry of dockerd's `default-address-pools`
    ({"base": "172.17.0.0/12", "size": 16}): `base` split into subnets of prefix length
    `size`, taken in address order."""

    __slots__ = ("base", "size", "net", "prefix")

    def __init__(self, base: str, size: int) -> None:
        self.net, self.prefix = _cidr(base, "address pool")
        self.base, self.size = base, size
        if not isinstance(size, int) or not max(self.prefix, 8) <= size <= 30:
            raise IPAMError(f"invalid address pool {base} size {size}: the size must be a prefix length "
                            f"from {max(self.prefix, 8)} (the pool's own) to 30")

    def __repr__(self) -> str:
        return f"AddressPool({self.base!r}, {self.size})"

    def describe(self) -> str:
        return f"{self.base} as /{self.size}s" if self.size != self.prefix else self.base


# kobako's pool. 10.88.0.0/16 comes first: it is where the default network `bridge` has
# always been, so an existing store keeps it and a new one gets it when it is free. Then the
# rest of 10.88-255 in /16s (podman's range: its default network is 10.88/16, its new
# networks take /24s from 10.89 on, so a live podman network's route sends kobako past
# it), then Docker's own defaults: 172.17-31 in /16s and 192.168/16 in /20s.
DEFAULT_POOLS: tuple[AddressPool, ...] = (
    AddressPool("10.88.0.0/13", 16), AddressPool("10.96.0.0/11", 16), AddressPool("10.128.0.0/9", 16),
    AddressPool("172.17.0.0/16", 16), AddressPool("172.18.0.0/15", 16), AddressPool("172.20.0.0/14", 16),
    AddressPool("172.24.0.0/13", 16), AddressPool("192.168.0.0/16", 20),
)


def configured_pools() -> tuple[AddressPool, ...]:
    """The configuration file's [network] default_address_pools, else DEFAULT_POOLS. A pool
    there that is not one (a bad CIDR, a size out of range) is the file's error."""
    from kobako import config
    cfg = config.get()
    given = cfg.get("network", "default_address_pools")
    if not given:
        return DEFAULT_POOLS
    try:
        return tuple(AddressPool(p["base"], p["size"]) for p in given)
    except IPAMError as e:
        raise cfg.error("network", "default_address_pools", str(e)) from None


def pick_subnet(pools: tuple[AddressPool, ...] | list[AddressPool], networks: list[dict],
                routes: list[str]) -> str:
    """The first subnet of `pools`, in their order, that shares no address with another
    network's subnet nor with a host route (a route that covers the candidate and one
    inside it both count; default routes do not). A blocker wider than a candidate is
    stepped over whole rather than one candidate at a time."""
    blocked: list[tuple[int, int]] = []
    for cidr in [n["subnet"] for n in networks] + [r for r in routes if r.split("/")[-1] != "0"]:
        net, prefix = _cidr(cidr, "CIDR", strict=False)
        blocked.append((net, net | (~_mask(prefix) & _ALL)))
    for pool in pools:
        step = 1 << (32 - pool.size)
        end = pool.net | (~_mask(pool.prefix) & _ALL)
        cand = pool.net
        while cand <= end:
            last = cand + step - 1
            hit = max((hi for lo, hi in blocked if lo <= last and cand <= hi), default=None)
            if hit is None:
                return f"{_str(cand)}/{pool.size}"
            cand = max(cand + step, (hit + step) & _mask(pool.size))  # the first one past the blocker
    where = ", ".join(p.describe() for p in pools) or "no address pool"
    raise IPAMError(f"no free subnet left in the address pools ({where}): every one overlaps a host route "
                    "or another network; give one with --subnet")


# -- one network's addresses --------------------------------------------------------------


class Pool:
    """One network's addresses: its subnet, gateway, and the range that automatic allocation
    draws from (the whole subnet without ip_range). Validates on construction."""

    subnet: str
    gateway: str
    ip_range: str | None
    __slots__ = ("subnet", "gateway", "ip_range", "net", "bcast", "gw", "lo", "hi")

    def __init__(self, subnet: str, gateway: str | None = None, ip_range: str | None = None) -> None:
        net, prefix = _cidr(subnet)
        if not 8 <= prefix <= 30:  # /31 and /32 leave no room for a gateway and a container
            raise IPAMError(f"invalid subnet {subnet}: the prefix length must be between /8 and /30")
        self.subnet, self.net, self.bcast = subnet, net, net | (~_mask(prefix) & _ALL)
        self.gw = net + 1 if gateway is None else _ip(gateway, "gateway")
        self.gateway = _str(self.gw)
        if not net <= self.gw <= self.bcast:
            raise IPAMError(f"gateway {self.gateway} is outside subnet {subnet}")
        if self.gw in (net, self.bcast):
            kind = "network" if self.gw == net else "broadcast"
            raise IPAMError(f"gateway {self.gateway} is the {kind} address of subnet {subnet}")
        self.ip_range = ip_range
        self.lo, self.hi = net + 1, self.bcast - 1
        if ip_range is not None:
            rnet, rprefix = _cidr(ip_range, "ip range")
            if rprefix < prefix or rnet & _mask(prefix) != net:
                raise IPAMError(f"ip range {ip_range} is not inside subnet {subnet}")
            self.lo = max(self.lo, rnet)
            self.hi = min(self.hi, rnet | (~_mask(rprefix) & _ALL))
            if self.hi - self.lo + 1 - (self.lo <= self.gw <= self.hi) <= 0:
                raise IPAMError(f"ip range {ip_range} holds no usable address besides the gateway")

    @classmethod
    def of(cls, rec: dict) -> Pool:
        return cls(rec["subnet"], rec["gateway"], rec.get("ipRange"))

    def first_free(self, used: set[int]) -> int | None:
        """The lowest address in the range that is neither the gateway nor used."""
        for a in range(self.lo, self.hi + 1):
            if a != self.gw and a not in used:
                return a
        return None

    def check(self, ip: str) -> int:
        """An address asked for explicitly: anywhere in the subnet, as Docker allows (ip_range
        only bounds automatic allocation; users keep the rest for fixed addresses)."""
        a = _ip(ip)
        if not self.net <= a <= self.bcast:
            raise IPAMError(f"address {ip} is outside subnet {self.subnet}")
        if a == self.net:
            raise IPAMError(f"address {ip} is the network address of subnet {self.subnet}")
        if a == self.bcast:
            raise IPAMError(f"address {ip} is the broadcast address of subnet {self.subnet}")
        if a == self.gw:
            raise IPAMError(f"address {ip} is the gateway of subnet {self.subnet}")
        return a


class Pool6:
    """A network's IPv6 pool, as Pool for IPv4. Host bits in the subnet are dropped, as
    dockerd does (docker-py's tests give 2001:389::1/64); `cidr` is the clean form."""

    __slots__ = ("subnet", "cidr", "prefix", "gateway", "ip_range", "net", "last", "gw", "lo", "hi")

    def __init__(self, subnet: str, gateway: str | None = None, ip_range: str | None = None) -> None:
        import ipaddress
        try:
            net = ipaddress.IPv6Network(subnet, strict=False)
        except ValueError:
            raise IPAMError(f"invalid IPv6 subnet {subnet}: expected a CIDR like 2001:db8::/64") from None
        if net.prefixlen > 126:  # room for a gateway and a container
            raise IPAMError(f"invalid IPv6 subnet {subnet}: the prefix length must be at most /126")
        self.subnet, self.cidr, self.prefix = subnet, str(net), net.prefixlen
        self.net, self.last = int(net.network_address), int(net.broadcast_address)
        self.gw = self.net + 1 if gateway is None else self._addr(gateway, "gateway")
        self.gateway = self.str(self.gw)
        if not self.net < self.gw <= self.last:
            raise IPAMError(f"gateway {gateway} is outside IPv6 subnet {subnet}")
        self.ip_range = ip_range
        self.lo, self.hi = self.net + 1, self.last
        if ip_range is not None:
            try:
                r = ipaddress.IPv6Network(ip_range, strict=False)
            except ValueError:
                raise IPAMError(f"invalid IPv6 ip range {ip_range}") from None
            if not r.subnet_of(net):
                raise IPAMError(f"ip range {ip_range} is not inside subnet {subnet}")
            self.lo, self.hi = max(self.lo, int(r.network_address)), int(r.broadcast_address)

    @staticmethod
    def _addr(s: str, what: str = "address") -> int:
        import ipaddress
        try:
            return int(ipaddress.IPv6Address(s))
        except ValueError:
            raise IPAMError(f"invalid IPv6 {what} {s}") from None

    @staticmethod
    def str(n: int) -> str:
        import ipaddress
        return str(ipaddress.IPv6Address(n))

    @classmethod
    def of(cls, rec: dict) -> Pool6 | None:
        return cls(rec["subnet6"], rec.get("gateway6"), rec.get("ipRange6")) if rec.get("subnet6") else None

    def first_free(self, used: set[int]) -> int | None:
        a = self.lo
        while a <= self.hi:  # `used` is small: at most len(used) + 2 steps
            if a != self.gw and a not in used:
                return a
            a += 1
        return None

    def check(self, ip: str) -> int:
        a = self._addr(ip)
        if not self.net <= a <= self.last:
            raise IPAMError(f"address {ip} is outside subnet {self.subnet}")
        if a == self.net:
            raise IPAMError(f"address {ip} is the subnet-router anycast address of {self.subnet}")
        if a == self.gw:
            raise IPAMError(f"address {ip} is the gateway of subnet {self.subnet}")
        return a

    def overlaps(self, cidr: str) -> bool:
        import ipaddress
        return ipaddress.IPv6Network(self.cidr).overlaps(ipaddress.IPv6Network(cidr, strict=False))


def _short(owner: str) -> str:
    return owner[:12] if len(owner) == 64 else owner  # container ids as `docker ps` shows them


# -- the store ------------------------------------------------------------------------------


def file_name(network: str) -> str:
    """A network's name as a file name. dockerd takes any name that is not blank ("test 01"
    too): letters, digits, '_', '.' and '-' stay as they are (so a name of those reads as
    itself on disk), every other byte becomes %XX, and so does a leading '.', which keeps
    out '.', '..', the lock and atomic_write's temp files."""
    if not isinstance(network, str) or not network.strip():
        raise IPAMError("invalid network name: it must not be blank")
    out = []
    for i, ch in enumerate(network):
        if ch in _NAME_CHARS and not (i == 0 and ch == "."):
            out.append(ch)
        else:
            out.append("".join(f"%{b:02X}" for b in ch.encode()))
    name = "".join(out)
    if len(name) > 200:
        raise IPAMError(f"invalid network name {network[:32]!r}...: too long")
    return name


# -- the store ------------------------------------------------------------------------------


class IPAM:
    """`pools`: where a network created without a subnet gets one (pick_subnet)."""

    def __init__(self, root: str, pools: tuple[AddressPool, ...] | None = None) -> None:
        self.pools = configured_pools() if pools is None else pools
        self.dir = os.path.join(root, "networks", "ipam")
        os.makedirs(self.dir, mode=0o700, exist_ok=True)

    def _locked(self) -> FileLock:
        return FileLock(os.path.join(self.dir, ".lock"))

    def path(self, network: str) -> str:
        """Where a network's state (its subnet, kept once chosen, and its allocations) lives."""
        return os.path.join(self.dir, file_name(network) + ".json")

    def _read(self, network: str) -> dict:
        path = self.path(network)
        rec = self._read_file(path, network)
        if rec is None:
            raise IPAMError(f"no such network: {network}")
        return rec

    @staticmethod
    def _read_file(path: str, network: str) -> dict | None:
        try:
            with open(path, "rb") as f:
                rec = jsonfast.loads(f.read())
        except FileNotFoundError:
            return None  # removed meanwhile
        except ValueError:
            rec = None
        if not isinstance(rec, dict) or not isinstance(rec.get("allocated"), dict) or "subnet" not in rec:
            raise IPAMError(f"network {network}: state file {path} is corrupt")
        return rec

    def _write(self, rec: dict) -> None:
        # Sorted by address so a human reading the file sees the pool in order. Not fsynced, as
        # the container records are not: an allocation only matters while its container exists.
        rec["allocated"] = dict(sorted(rec["allocated"].items(), key=lambda kv: _ip(kv[0])))
        atomic_write(self.path(rec["name"]), jsonfast.dumps(rec).encode(), 0o600, durable=False)

    # -- networks --------------------------------------------------------------------------

    def create(self, network: str, subnet: str | None = None, gateway: str | None = None,
               ip_range: str | None = None, host_routes: list[str] | None = None,
               extra: dict | None = None, aux: dict | None = None, v6: dict | None = None) -> dict:
        """A network's pool; `extra` (the network's other settings) is kept in the same file.
        `aux`: auxiliary addresses (name -> address in the subnet) that allocation skips.
        `v6`: {"subnet", "gateway", "ipRange", "enabled"}, the IPv6 pool."""
        pool6 = Pool6(v6["subnet"], v6.get("gateway"), v6.get("ipRange")) if v6 and v6.get("subnet") else None
        path = self.path(network)
        if subnet is None and (gateway is not None or ip_range is not None or aux):
            raise IPAMError("a gateway, ip range or auxiliary address needs an explicit subnet")
        pool = Pool(subnet, gateway, ip_range) if subnet is not None else None  # validate before locking
        for k, a in (aux or {}).items():
            assert pool is not None
            n = _ip(a, "auxiliary address")
            if not pool.net <= n <= pool.bcast:
                raise IPAMError(f"auxiliary address ({k}:{a}) must belong to the master pool: {subnet}")
        routes = _host_routes() if host_routes is None else host_routes
        with self._locked():
            if os.path.exists(path):
                raise IPAMError(f"network {network} already exists")
            others = self.networks()
            if pool is None:
                pool = Pool(pick_subnet(self.pools, others, routes))
            else:
                self._check_free(pool.subnet, others, routes)
            rec = {**(extra or {}), "name": network, "subnet": pool.subnet, "gateway": pool.gateway,
                   "ipRange": pool.ip_range, "allocated": {}}
            if pool6 is not None:
                self._check_free6(pool6, others, _host_routes(6) if host_routes is None else [])
                rec.update(subnet6=pool6.subnet, gateway6=pool6.gateway, ipRange6=pool6.ip_range,
                           allocated6={})
            if v6:
                rec["enableIPv6"] = bool(v6.get("enabled"))
            if aux:
                rec["auxAddresses"] = dict(aux)
            self._write(rec)
        return rec

    @staticmethod
    def _check_free(subnet: str, others: list[dict], routes: list[str]) -> None:
        for o in others:
            if overlaps(subnet, o["subnet"]):
                raise IPAMError(f"subnet {subnet} overlaps network {o['name']} ({o['subnet']})")
        for r in routes:
            if r.split("/")[-1] != "0" and overlaps(subnet, r):
                raise IPAMError(f"subnet {subnet} overlaps the host route {r}")

    @staticmethod
    def _check_free6(pool: Pool6, others: list[dict], routes: list[str]) -> None:
        for o in others:
            if o.get("subnet6") and pool.overlaps(o["subnet6"]):
                raise IPAMError(f"IPv6 subnet {pool.subnet} overlaps network {o['name']} ({o['subnet6']})")
        for r in routes:
            if pool.overlaps(r):
                raise IPAMError(f"IPv6 subnet {pool.subnet} overlaps the host route {r}")

    def get(self, network: str) -> dict:
        return self._read(network)

    def networks(self) -> list[dict]:
        out = []
        for f in sorted(os.listdir(self.dir)):
            if f.endswith(".json") and not f.startswith("."):
                rec = self._read_file(os.path.join(self.dir, f), f[:-5])
                if rec is not None:
                    out.append(rec)
        return sorted(out, key=lambda r: r["name"])

    def remove(self, network: str) -> None:
        with self._locked():
            rec = self._read(network)
            if rec["allocated"]:
                held = ", ".join(f"{_short(o)} ({ip})" for ip, o in rec["allocated"].items())
                n = len(rec["allocated"])
                raise IPAMError(f"network {network} is in use by {n} container{'s' * (n > 1)}: {held}")
            os.unlink(self.path(network))

    # -- addresses ---------------------------------------------------------------------------

    def allocate(self, network: str, owner: str, ip: str | None = None) -> str:
        if not owner:
            raise IPAMError("an address needs an owner")
        with self._locked():
            rec = self._read(network)
            pool, alloc = Pool.of(rec), rec["allocated"]
            for have, o in alloc.items():
                if o == owner:
                    raise IPAMError(f"container {_short(owner)} already has address {have} "
                                    f"on network {network}")
            if ip is not None:
                a = pool.check(ip)
                got = alloc.get(_str(a))
                if got is not None:
                    raise IPAMError(f"address {_str(a)} is already in use by container {_short(got)}")
            else:
                aux = {_ip(a) for a in (rec.get("auxAddresses") or {}).values()}
                free = pool.first_free({_ip(k) for k in alloc} | aux)
                if free is None:
                    where = pool.ip_range or pool.subnet
                    raise IPAMError(f"network {network} has no free address left in {where}")
                a = free
            alloc[_str(a)] = owner
            self._write(rec)
        return _str(a)

    def allocate6(self, network: str, owner: str, ip: str | None = None) -> str | None:
        """An IPv6 address, if the network has IPv6 enabled (else None: dockerd 20.10 gives
        none, even to a container that asked for one)."""
        with self._locked():
            rec = self._read(network)
            pool = Pool6.of(rec) if rec.get("enableIPv6") else None
            if pool is None:
                return None
            alloc = rec.setdefault("allocated6", {})
            if ip is not None:
                a = pool.check(ip)
                got = alloc.get(Pool6.str(a))
                if got is not None:
                    raise IPAMError(f"address {Pool6.str(a)} is already in use by container {_short(got)}")
            else:
                free = pool.first_free({pool._addr(k) for k in alloc})
                if free is None:
                    raise IPAMError(f"network {network} has no free IPv6 address left in "
                                    f"{pool.ip_range or pool.subnet}")
                a = free
            alloc[Pool6.str(a)] = owner
            self._write(rec)
        return Pool6.str(a)

    def release(self, network: str, owner: str) -> str | None:
        """Both of the owner's addresses go back; the IPv4 one is returned."""
        with self._locked():
            rec = self._read(network)
            out, changed = None, False
            for key in ("allocated", "allocated6"):
                alloc = rec.get(key) or {}
                for ip, o in list(alloc.items()):
                    if o == owner:
                        del alloc[ip]
                        changed = True
                        if key == "allocated":
                            out = ip
            if changed:
                self._write(rec)
        return out

    def owners(self, network: str) -> dict[str, str]:
        return {o: ip for ip, o in self._read(network)["allocated"].items()}

