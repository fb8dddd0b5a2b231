"""What the engine does with networks for both front ends: create (with dockerd's checks),
list with filters, connect and disconnect a container (live while it runs, in its record
always), remove, prune.

A container's wish for each network is kept in its record, rec["net"]["networks"][name]:
    {"ip", "aliases", "links", "driverOpts", "mac", "linkLocalIps"}
(network/endpoints.py makes what it asks for at each start; engine/views.py shows it).
"""

from __future__ import annotations

from kobako.network.networks import DEFAULT, MODES, NetworkError, NetworkStore


class NetworkConflict(NetworkError):
    status = 409


class NetworkForbidden(NetworkError):
    status = 403


def store(e) -> NetworkStore:
    return NetworkStore(e.root, e.run_dir)


def _endpoints(e):
    from kobako.network.endpoints import Endpoints
    return Endpoints(e.root, e.run_dir)


def users(e, name: str) -> list[dict]:
    """Container records that are connected to network `name` (running or not)."""
    return [r for r in e.containers.all()
            if name in ((r.get("net") or {}).get("networks") or {})
            or (name == DEFAULT and (r.get("net") or {}).get("mode") == "bridge"
                and "networks" not in (r.get("net") or {}))]


# -- create ---------------------------------------------------------------------------------------

def create(e, name: str, driver: str | None = None, subnet: str | None = None, gateway: str | None = None,
           ip_range: str | None = None, aux: dict | None = None, internal: bool = False,
           attachable: bool = False, options: dict | None = None, labels: dict | None = None,
           ipam_driver: str | None = None, ipam_options: dict | None = None, ipv6: bool = False,
           check_duplicate: bool = True, subnet6: str | None = None, gateway6: str | None = None,
           ip_range6: str | None = None) -> dict:
    """A bridge network, as `docker network create` makes one, or a vxlan one (a bridge that
    spans hosts: network/overlay.py). dockerd's refusals: a
    predefined name (403), another driver (host/null: 403 as dockerd; unknown: 404 plugin
    not found), a name in use with check_duplicate (409). Without it dockerd 20.10 makes a
    second network of that name (the name is then ambiguous; its ID is not): so does this.
    IPv6: `ipv6` (EnableIPv6) needs an IPv6 subnet (kobako has no default IPv6 pools); an
    IPv6 pool without it is kept, as dockerd keeps it, and gives no addresses."""
    if not isinstance(name, str) or not name.strip():
        raise NetworkError("network name is required")
    driver = driver or "bridge"
    if name in MODES or name == DEFAULT:
        raise NetworkForbidden(f"network {name} is a predefined network and cannot be created")
    if driver in ("host", "null"):
        raise NetworkForbidden(f"only one instance of \"{driver}\" network is allowed")
    if driver not in ("bridge", "vxlan"):
        from kobako import errors

        class DriverNotFound(errors.NotFound, NetworkError):
            pass
        raise DriverNotFound(f"plugin \"{driver}\" not found: kobako's networks use the bridge or the vxlan "
                             "driver")
    if ipam_driver not in (None, "", "default"):
        raise NetworkError(f"IPAM driver {ipam_driver!r} is not supported (default)")
    if ipv6 and not subnet6:
        raise NetworkError("an IPv6 network (--ipv6, EnableIPv6) needs an IPv6 subnet, e.g. "
                           "--subnet 2001:db8::/64: kobako has no default IPv6 pool")
    if not subnet6 and (gateway6 or ip_range6):
        raise NetworkError("an IPv6 gateway or ip range needs an IPv6 subnet")
    st = store(e)
    taken = any((n.get("displayName") or n["name"]) == name for n in st.all())
    if taken and check_duplicate:
        raise NetworkConflict(f"network with name {name} already exists")
    for what, d in (("options", options), ("labels", labels), ("IPAM options", ipam_options),
                    ("auxiliary addresses", aux)):
        if d is not None and not (isinstance(d, dict) and all(isinstance(k, str) and isinstance(v, str)
                                                               for k, v in d.items())):
            raise NetworkError(f"invalid {what}: expected an object of strings")
    v6 = {"subnet": subnet6, "gateway": gateway6, "ipRange": ip_range6, "enabled": ipv6} if subnet6 else None
    return st.create(name, subnet, gateway, ip_range, internal=internal, options=options or {},
                     labels=labels or {}, aux=aux or {}, attachable=attachable, ipam_options=ipam_options,
                     duplicate=taken, v6=v6, driver=driver)


# -- finding and listing -------------------------------------------------------------------------

def find(e, ref: str) -> dict | str:
    """A network by name, ID or ID prefix; `host`/`none` (by name or ID) as their names."""
    from kobako.engine.views import pseudo_network_id
    for m in MODES:
        if ref == m or (len(ref) >= 3 and pseudo_network_id(m).startswith(ref)):
            return m
    return store(e).get(ref)


def inspect(e, ref: str) -> dict:
    from kobako.engine import views
    net = find(e, ref)
    return views.pseudo_network(net) if isinstance(net, str) else views.network_doc(e, net)


FILTERS = ("driver", "id", "label", "name", "scope", "type", "dangling")


def listing(e, flt: dict[str, list[str]]) -> list[dict]:
    """`docker network ls` / GET /networks with dockerd's filters: name and id match a part
    (id: a prefix), label KEY or KEY=VALUE, driver, scope, type (builtin or custom), dangling."""
    from kobako.engine import filters, views
    st = store(e)
    st.get(DEFAULT)  # always listed, as docker's
    try:
        eps = _endpoints(e).all()
    except OSError:
        eps = []
    docs = [views.network_doc(e, n, eps) for n in st.all()] + [views.pseudo_network(m) for m in MODES]
    dangling = filters.boolean(flt, "dangling")
    used = None
    if dangling is not None:
        used = {n for r in e.containers.all() for n in ((r.get("net") or {}).get("networks") or {})}
        used |= {DEFAULT, *MODES}  # predefined networks are never dangling
    for t in flt.get("type", []):
        if t not in ("builtin", "custom"):
            raise filters.FilterError(f"invalid filter: 'type'='{t}' (builtin or custom)")
    out = []
    for d in docs:
        builtin = d["Name"] in (DEFAULT, *MODES)
        if flt.get("name") and not any(v in d["Name"] for v in flt["name"]):
            continue
        if flt.get("id") and not any(d["Id"].startswith(v) for v in flt["id"]):
            continue
        if flt.get("driver") and d["Driver"] not in flt["driver"]:
            continue
        if flt.get("scope") and d["Scope"] not in flt["scope"]:
            continue
        if flt.get("type") and ("builtin" if builtin else "custom") not in flt["type"]:
            continue
        if flt.get("label") and not filters.labels_match(d["Labels"], flt["label"]):
            continue
        if used is not None and (d["Name"] not in used) != dangling:
            continue
        out.append(d)
    return out


def update(e, ref: str, options: dict[str, str]) -> dict:
    """`network update`: a vxlan network's peers (the one setting that may change while
    containers use it)."""
    if set(options) != {"peers"}:
        extra = sorted(set(options) - {"peers"})
        raise NetworkError("network update changes only a vxlan network's peers (--opt peers=IP[,IP...])"
                           + (f", not {extra[0]!r}" if extra else ""))
    net = find(e, ref)
    if isinstance(net, str):
        raise NetworkForbidden(f"network {net} is a predefined network and cannot be updated")
    return _endpoints(e).set_peers(net["name"], options["peers"])


# -- removing -------------------------------------------------------------------------------------

def remove(e, ref: str) -> dict:
    net = find(e, ref)
    if isinstance(net, str) or net["name"] == DEFAULT:
        name = net if isinstance(net, str) else DEFAULT
        raise NetworkForbidden(f"network {name} is a predefined network and cannot be removed")
    inuse = [r["name"] for r in users(e, net["name"])]
    if inuse:
        raise NetworkConflict(f"network {net['name']} is in use by container{'s' * (len(inuse) > 1)} "
                              f"{', '.join(sorted(inuse))}; remove or disconnect them first")
    store(e).remove(net["name"], [])
    _endpoints(e).reap_idle()  # its bridge, if a container's exit left it lingering
    return net


def prune(e, flt: dict[str, list[str]] | None = None) -> list[str]:
    """User networks no container uses (docker's `network prune`); label and until filters."""
    from kobako.engine import filters
    from kobako.engine.logs import parse_time
    flt = flt or {}
    until = filters.until(flt)
    gone = []
    st = store(e)
    for net in st.all():
        if net["name"] == DEFAULT or users(e, net["name"]):
            continue
        if not filters.labels_pass(net.get("labels") or {}, flt):
            continue
        if until is not None and not parse_time(net.get("created", "")) < until:
            continue
        try:
            st.remove(net["name"], [])
            gone.append(net.get("displayName") or net["name"])
        except NetworkError:
            pass  # taken meanwhile
    if gone:
        _endpoints(e).reap_idle()
    return gone


# -- connect / disconnect ------------------------------------------------------------------------

def endpoint_config(ip: str | None = None, aliases: list | None = None, links: list | None = None,
                    driver_opts: dict | None = None, mac: str | None = None,
                    link_local_ips: list | None = None, ip6: str | None = None) -> dict:
    """A container's wish for one network, checked: what the record keeps."""
    def strings(v, what: str) -> list[str]:
        if v is None:
            return []
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise NetworkError(f"invalid {what}: expected a list of strings")
        return list(v)

    out: dict = {"ip": ip or None, "aliases": strings(aliases, "aliases")}
    if ip is not None and not isinstance(ip, str):
        raise NetworkError("invalid IPv4Address: expected a string")
    if ip6:
        import ipaddress
        try:
            out["ip6"] = str(ipaddress.IPv6Address(ip6))
        except (ValueError, TypeError):
            raise NetworkError(f"invalid IPv6 address {ip6!r}") from None
    lk = strings(links, "links")
    for x in lk:
        if not x.split(":")[0]:
            raise NetworkError(f"invalid link {x!r}: use NAME or NAME:ALIAS")
    if lk:
        out["links"] = [x if ":" in x else f"{x}:{x}" for x in lk]
    if driver_opts:
        if not isinstance(driver_opts, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                        for k, v in driver_opts.items()):
            raise NetworkError("invalid DriverOpts: expected an object of strings")
        out["driverOpts"] = dict(driver_opts)
    if mac:
        out["mac"] = check_mac(mac)
    ll = strings(link_local_ips, "LinkLocalIPs")
    for a in ll:
        p = a.split(".")
        if len(p) != 4 or not all(x.isdigit() and int(x) < 256 for x in p) or p[:2] != ["169", "254"]:
            raise NetworkError(f"invalid link-local IP {a!r}: an IPv4 address in 169.254.0.0/16")
    if ll:
        out["linkLocalIps"] = ll
    return out


def check_mac(mac: str) -> str:
    if not isinstance(mac, str):
        raise NetworkError("invalid MAC address: expected a string")
    m = mac.lower()
    parts = m.split(":")
    if len(parts) != 6 or not all(len(x) == 2 and set(x) <= set("0123456789abcdef") for x in parts) \
            or int(parts[0], 16) & 1:
        raise NetworkError(f"invalid MAC address {mac!r}: a unicast MAC like 02:42:ac:11:00:02")
    return m


def check_addresses(net: dict, want: dict) -> None:
    """The addresses a container asks for on `net` (its IPv4Address, IPv6Address): inside the
    network's pools. An IPv6 one needs an IPv6 pool (dockerd: user specified IP address is
    supported only when connecting to networks with user configured subnets)."""
    from kobako.network.ipam import IPAMError, Pool, Pool6
    try:
        if want.get("ip"):
            Pool.of(net).check(want["ip"])
        if want.get("ip6"):
            pool6 = Pool6.of(net)
            if pool6 is None:
                raise NetworkError(f"user specified IPv6 address {want['ip6']} is supported only on networks "
                                   f"with a user configured IPv6 subnet: network {net['name']} has none")
            pool6.check(want["ip6"])
    except IPAMError as ex:
        raise NetworkError(str(ex)) from None


def connect(e, ref: str, container: str, want: dict | None = None) -> None:
    """Join a container to a network: live if it runs, in its record always (it joins at
    each start). `want`: endpoint_config()."""
    want = want or endpoint_config()
    net = find(e, ref)
    rec = e.containers.resolve(container)
    cur = rec.get("net") or {}
    if isinstance(net, str):
        raise NetworkForbidden(f"container cannot be connected to network {net}: host and none are modes "
                               "(--network), chosen when the container is created")
    if cur.get("mode") != "bridge":
        raise NetworkConflict(f"container {rec['name']} uses --network {cur.get('mode') or 'none'}: "
                              "it cannot join a bridge network")
    nets = dict(cur.get("networks") if "networks" in cur else {DEFAULT: {}})
    if net["name"] in nets:
        raise NetworkForbidden(f"container {rec['name']} is already connected to network {net['name']}")
    if net["name"] == DEFAULT and (want.get("ip") or want.get("ip6") or want.get("aliases")):
        raise NetworkError("user specified IP address and network-scoped aliases are supported on "
                           "user-defined networks only")
    check_addresses(net, want)
    if e.state(rec) in ("running", "paused"):
        _endpoints(e).connect(rec, net["name"], want)
    nets[net["name"]] = want
    e.containers.update(rec["id"], net={**cur, "networks": nets})


def disconnect(e, ref: str, container: str, force: bool = False) -> None:
    net = find(e, ref)
    rec = e.containers.resolve(container)
    cur = rec.get("net") or {}
    name = net if isinstance(net, str) else net["name"]
    nets = dict(cur.get("networks") if "networks" in cur else ({DEFAULT: {}} if cur.get("mode") == "bridge"
                                                                 else {}))
    if name not in nets:
        raise NetworkForbidden(f"container {rec['name']} is not connected to network {name}")
    if e.state(rec) in ("running", "paused"):
        try:
            _endpoints(e).disconnect(rec, name)
        except NetworkError:
            if not force:
                raise
    del nets[name]
    # the last network gone: the container keeps its own namespace with only lo (docker's none)
    e.containers.update(rec["id"], net={**cur, "networks": nets, **({} if nets else {"ports": []})})
