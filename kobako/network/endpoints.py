"""A container's place on its networks: the named network namespace, one veth pair per
network, addresses, routes, published ports -- made when it starts, gone when it stops.

What `ip`, `brctl` and `nft` would do by hand, in order:

    1. the container's network namespace, bind-mounted at /run/netns/kobako-<id12> so that
       `ip netns` lists it; config.json joins it by that path (the runtime makes none)
    2. per network: its bridge, made by the first container that needs it (address = the
       network's gateway), and a veth pair: kb-<hash> on the bridge, ethN made directly
       inside the namespace (one netlink message)
    3. inside: lo and ethN up, the address from IPAM, the default route via the gateway
    4. published ports and masquerading: kobako's nft table, rewritten from state
    5. user networks: every container's /etc/hosts lists its peers by name and alias, and
       the DNS server (network/dns.py) answers for them on the network's gateway, which
       the container's resolv.conf names

Everything is written into <run root>/network/endpoints/<container id>.json *before* it is
made, so teardown -- at exit, at rm, or in a sweep after kill -9 -- finds it all. Teardown
tolerates every piece being gone already. One lock (<run root>/network/lock) orders all
of it; the last container on a bridge takes the bridge with it.

Names resolve two ways on user networks: through /etc/hosts, rewritten in place (the file
is bind-mounted, so the container sees each change) on every connect and disconnect, for
programs that use the C library's resolver; and through DNS, for every other client: the
server of network/dns.py reads the same endpoint states at each query. Other names go to
the host's upstream servers (through that server on user networks; on the default bridge
the container asks them itself, so without loopback entries).
"""

from __future__ import annotations

import os

from kobako import steps
from kobako.linux import netlink
from kobako.network import nftables
from kobako.network.networks import (
    DEFAULT,
    NetworkError,
    NetworkStore,
    netns_dir,
    netns_path,
    sha256_hex,
    table_name,
)
from kobako.paths import FileLock
from kobako.runtime import jsonfast

CLONE_NEWNET = 0x40000000
_HOSTS_MARK = "# kobako: containers on the same networks\n"
# what a bridge's record keeps
_BRIDGE_KEYS = ("bridge", "subnet", "internal", "gateway", "dns", "subnet6", "gateway6", "vxlan")


def _veth(cid: str, nid: str, gen: int) -> str:
    """Unique per start too: the previous start's veth may still be on its way out (the
    kernel removes it with the namespace, in the background)."""
    return "kb-" + sha256_hex(f"{cid}{nid}{gen}")[:12]


def _mac(ip: str) -> bytes:
    return bytes([0x02, 0x42, *(int(p) for p in ip.split("."))])  # docker's 02:42:<ip>


def _endpoint(net: dict, cid: str, gen: int, ifname: str, ip: str, want: dict,
              ip6: str | None = None) -> dict:
    """One network's part of the state: what is made, and what inspect shows. `want`: the
    container's wish for this network (engine/networks.py endpoint_config). `dns`: a user
    network, whose names the DNS server answers (the default bridge has none, as Docker's);
    `links`: NAME:ALIAS that only this container resolves there. With `ip6` (a network with
    IPv6 enabled), its IPv6 side too."""
    v6 = {}
    if ip6:
        from kobako.network.ipam import Pool6
        pool6 = Pool6.of(net)
        assert pool6 is not None
        v6 = {"ip6": ip6, "prefix6": pool6.prefix, "gateway6": pool6.gateway, "subnet6": pool6.cidr}
    return {**v6, "id": net["id"], "ip": ip, "prefix": int(net["subnet"].split("/")[1]),
            "gateway": net["gateway"],
            "subnet": net["subnet"], "bridge": net["bridge"], "veth": _veth(cid, net["id"], gen),
            "ifname": ifname,
            "internal": bool(net.get("internal")), "mtu": net.get("mtu"),
            "aliases": list(want.get("aliases") or []),
            "mac": want.get("mac") or ":".join(f"{b:02x}" for b in _mac(ip)),
            "linkLocal": list(want.get("linkLocalIps") or []),
            "dns": net["name"] != DEFAULT, "links": list(want.get("links") or []),
            **({"vxlan": net["vxlan"]} if net.get("vxlan") else {})}


def _sysctl(path: str, value: str) -> None:
    with open("/proc/sys/" + path, "w") as f:
        f.write(value)


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


_BUSY = object()
# what these return when the user has no endpoint and no bridge (so `ps` never needs slirp4netns)
_IDLE: dict[str, object] = {"detach": False, "sweep": [], "reap_idle": None, "reload": None,
                            "restore_table": False}


def _in_user_netns(method):
    """Rootless: the method runs in a child that entered the user's network namespace, where
    the user's bridges, veths and nft table live (rootlessns.py); root runs it in place."""
    def wrapper(self, *args, **kw):
        from kobako.linux.namespaces import in_user_namespace
        if self._inside or not in_user_namespace():
            return method(self, *args, **kw)
        idle = _IDLE.get(method.__name__, _BUSY)
        if idle is not _BUSY and not (self.state(args[0]) if method.__name__ == "detach" else
                                      self.all() or self._bridge_records()):
            return idle  # nothing of the user's network to look at: its namespace is not needed
        from kobako.network import rootlessns
        nspath, restarted = rootlessns.ensure(self.run_root)

        def inside():
            self._inside = True
            if restarted:  # a new slirp4netns: the host forwards of running containers again
                with self.locked():
                    for st in self.all():
                        self._forward_ports(st)
            return method(self, *args, **kw)
        return rootlessns.call_inside(nspath, inside)
    wrapper.__doc__ = method.__doc__
    return wrapper


class Endpoints:
    def __init__(self, root: str, run_root: str) -> None:
        self.run_root = run_root
        self._inside = False  # rootless: this process is in the user's network namespace
        self.store = NetworkStore(root, run_root)
        self.netdir = os.path.join(run_root, "network")
        self.dir = os.path.join(run_root, "network", "endpoints")
        self.bridges = os.path.join(run_root, "network", "bridges")  # <name>.json: each bridge made
        self.table = table_name(run_root)
        self._new_bridges: list[dict] = []
        # what this object makes, as the step record shows it (the state file is the undo)
        self.steps = steps.Record("network")
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        os.makedirs(self.bridges, mode=0o700, exist_ok=True)

    def locked(self) -> FileLock:
        return FileLock(os.path.join(os.path.dirname(self.dir), "lock"))

    # -- state ------------------------------------------------------------------------------
    def _path(self, cid: str) -> str:
        return os.path.join(self.dir, cid + ".json")

    def state(self, cid: str) -> dict | None:
        try:
            with open(self._path(cid), "rb") as f:
                return jsonfast.loads(f.read())
        except (OSError, ValueError):
            return None

    def _save(self, st: dict) -> None:
        from kobako.paths import atomic_write
        atomic_write(self._path(st["id"]), jsonfast.dumps(st).encode(), 0o600, durable=False)

    def all(self) -> list[dict]:
        out = []
        for n in os.listdir(self.dir):
            if n.endswith(".json") and not n.startswith("."):
                st = self.state(n[:-5])
                if st is not None:
                    out.append(st)
        return out

    # -- attach -----------------------------------------------------------------------------
    @_in_user_netns
    def attach(self, rec: dict, gen: int | None = None) -> dict | None:
        """Make the container's network as its record asks (rec["net"]); its state, or None
        for modes that need nothing (host, none, container:X). Raises NetworkError or PortError
        with nothing left behind."""
        net = rec.get("net") or {}
        if net.get("mode") != "bridge":
            return None
        cid = rec["id"]
        with self.locked():
            old = self.state(cid)
            if old is not None:  # a previous run's (a restart, or a crash): start clean
                self._teardown(old, sync=True)
            st = {"id": cid, "name": rec.get("name", ""), "gen": gen or os.getpid(), "netns": netns_path(cid),
                  "hosts": net.get("hostsFile"), "resolv": net.get("resolvFile"),
                  "dnsServers": list(net.get("dns") or []), "hostname": net.get("hostname", ""),
                  "networks": {}, "order": [], "ports": [], "rate": net.get("rate")}
            # the state is written before anything is made: _teardown undoes from it, also
            # in a later command after a crash, so the record's steps carry no undo of their own
            try:
                self._plan(st, net)
                self._save(st)  # recorded before anything is made
                self.steps.made("state", "write", f"endpoint state {self._path(cid)}: "
                                + ", ".join(f"{n} {ep['ip']}" for n, ep in st["networks"].items()))
                self._make(st)
                steps.fault("net:made")
                self._fw_add(st, self._new_bridges)
                if self._inside:
                    self._forward_ports(st)
                self._save(st)  # with what making it learnt (the route's network)
                self._update_hosts(st, set(st["networks"]))
                if st.get("hosts"):
                    self.steps.made("hosts", "write", f"/etc/hosts of the container {st['hosts']}")
                self._names(st)
                if st.get("rate"):
                    self._limit_rate(st)
            except BaseException:
                self._teardown(st, sync=True)
                self._reap_idle()
                raise
        return st

    def _plan(self, st: dict, net: dict) -> None:
        from kobako.network import ports
        nets = net["networks"] if "networks" in net else {DEFAULT: {}}
        for i, (name, want) in enumerate(nets.items()):
            n = self.store.get(name)
            self.store.ipam.release(n["name"], st["id"])  # a leftover of a crash
            ip, ip6 = self._allocate(n, st["id"], want or {})
            st["order"].append(n["name"])
            st["networks"][n["name"]] = _endpoint(n, st["id"], st["gen"], f"eth{i}", ip, want or {}, ip6)
            if i == 0 and net.get("mac") and not (want or {}).get("mac"):  # --mac-address: the first one's
                st["networks"][n["name"]]["mac"] = net["mac"]
        wanted = net.get("ports") or []
        if wanted and st["order"]:
            others = [p for ep in self.all() if ep["id"] != st["id"] for p in ep.get("ports") or []]
            first = st["order"][0]
            st["ports"] = [{**p, "network": first} for p in ports.assign(wanted, others)]

    def _allocate(self, n: dict, cid: str, want: dict) -> tuple[str, str | None]:
        """The container's addresses on network n: IPv4, and IPv6 where the network has it
        enabled (both or neither)."""
        from kobako.network.ipam import IPAMError
        try:
            ip = self.store.ipam.allocate(n["name"], cid, want.get("ip"))
            try:
                return ip, self.store.ipam.allocate6(n["name"], cid, want.get("ip6")) if n.get("enableIPv6") \
                    else None
            except IPAMError:
                self.store.ipam.release(n["name"], cid)
                raise
        except IPAMError as e:
            raise NetworkError(f"network {n['name']}: {e}") from None

    def _make(self, st: dict) -> None:
        nl_in = self._make_netns(st["netns"])
        self.steps.made("netns", "unshare(2) CLONE_NEWNET, mount(2) MS_BIND",
                        f"network namespace bound at {st['netns']} (`ip netns` lists it)")
        self._new_bridges = []
        try:
            nl_in.set_up(nl_in.index("lo") or 1, "lo")
            self.steps.made("lo", "netlink RTM_NEWLINK IFF_UP", "lo up in the container's namespace")
            with netlink.Netlink() as nl:
                for name in st["order"]:
                    self._link(st, name, nl, nl_in)
        finally:
            nl_in.close()

    def _link(self, st: dict, name: str, nl: netlink.Netlink, nl_in: netlink.Netlink) -> None:
        """One network's veth pair, address and (for the first network with a way out) the
        default route."""
        ep = st["networks"][name]
        br = self._ensure_bridge(nl, ep, bool(st["ports"]), name)
        fd = os.open(st["netns"], os.O_RDONLY | os.O_CLOEXEC)
        try:
            nl.add_veth(ep["veth"], ep["ifname"], fd, master=br, mtu=ep["mtu"],
                        peer_mac=bytes.fromhex(ep["mac"].replace(":", "")))
        finally:
            os.close(fd)
        rec = self.steps
        rec.made("veth", "netlink RTM_NEWLINK veth",
                 f"veth pair {ep['veth']} (host, on bridge {ep['bridge']}) <-> {ep['ifname']} (container, "
                 f"mac {ep['mac']})")
        idx = nl_in.index(ep["ifname"])
        assert idx is not None
        nl_in.add_address(idx, ep["ip"], ep["prefix"], ep["ifname"])
        rec.made("address", "netlink RTM_NEWADDR", f"{ep['ip']}/{ep['prefix']} on {ep['ifname']}"
                 + (f", {ep['ip6']}/{ep['prefix6']}" if ep.get("ip6") else ""))
        for ll in ep.get("linkLocal") or []:  # LinkLocalIPs: more addresses on the same link
            nl_in.add_address(idx, ll, 16, ep["ifname"])
        if ep.get("ip6"):
            nl_in.add_address(idx, ep["ip6"], ep["prefix6"], ep["ifname"])
        nl_in.set_up(idx, ep["ifname"])
        if not ep["internal"] and not st.get("route"):
            nl_in.add_default_route(ep["gateway"], idx)
            rec.made("route", "netlink RTM_NEWROUTE", f"default via {ep['gateway']} dev {ep['ifname']}")
            st["route"] = name
            self._forwarding_on()
        if ep.get("ip6") and not ep["internal"] and not st.get("route6"):
            nl_in.add_default_route(ep["gateway6"], idx)
            st["route6"] = name

    @staticmethod
    def _netlink_in(path: str) -> netlink.Netlink:
        """A netlink socket inside the namespace bound at `path`."""
        from kobako.linux import namespaces
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            namespaces.enter(path, CLONE_NEWNET)
            try:
                return netlink.Netlink()
            finally:
                namespaces.setns(home, CLONE_NEWNET, "the host's network namespace")
        finally:
            os.close(home)

    # -- connect / disconnect on a running container --------------------------------------------
    @_in_user_netns
    def connect(self, rec: dict, name: str, want: dict | None = None) -> dict:
        """Join a running container to network `name`; `want`: {"ip", "aliases", "mac", ...}."""
        want = want or {}
        cid = rec["id"]
        with self.locked():
            st = self.state(cid)
            if st is None:
                raise NetworkError(f"container {rec.get('name', cid[:12])} has no network namespace of "
                                   "kobako's to connect (it uses --network host, none or container:)")
            n = self.store.get(name)
            if n["name"] in st["networks"]:
                raise NetworkError(f"container {st['name']} is already connected to network {n['name']}")
            addr, addr6 = self._allocate(n, cid, want)
            used = {ep["ifname"] for ep in st["networks"].values()}
            ifname = next(f"eth{i}" for i in range(64) if f"eth{i}" not in used)
            st["order"].append(n["name"])
            gen = st["gen"] + len(st["order"])
            st["networks"][n["name"]] = _endpoint(n, cid, gen, ifname, addr, want, addr6)
            self._save(st)
            self._new_bridges = []
            try:
                with netlink.Netlink() as nl, self._netlink_in(st["netns"]) as nl_in:
                    self._link(st, n["name"], nl, nl_in)
                self._save(st)
                self._fw_add(None, self._new_bridges)
                self._update_hosts(st, {n["name"]})
                self._names(st)
            except BaseException:
                self._drop_link(st, n["name"])
                raise
        return st

    def set_peers(self, name: str, value: str) -> dict:
        """`network update --opt peers=`: the vxlan network's record, and its device's FDB if
        it is up now (a container of this host is on it); the network as it is now."""
        from kobako.network import overlay
        with self.locked():  # no bridge is made or reaped meanwhile
            net, old = self.store.set_peers(name, value)
            with netlink.Netlink() as nl:
                overlay.set_peers(nl, net["vxlan"]["device"], old, net["vxlan"]["peers"])
        return net

    @_in_user_netns
    def disconnect(self, rec: dict, name: str) -> None:
        with self.locked():
            st = self.state(rec["id"])
            n = self.store.get(name)
            if st is None or n["name"] not in st["networks"]:
                raise NetworkError(f"container {rec.get('name')} is not connected to network {n['name']}")
            self._drop_link(st, n["name"])

    def _drop_link(self, st: dict, name: str) -> None:
        from kobako.network.ipam import IPAMError
        ep = st["networks"].pop(name)
        st["order"].remove(name)
        with netlink.Netlink() as nl:
            nl.delete(ep["veth"])
        dropped = [p for p in st["ports"] if p.get("network") == name]
        st["ports"] = [p for p in st["ports"] if p.get("network") != name]
        for key in ("route", "route6"):
            if st.get(key) == name:
                st.pop(key)  # the kernel dropped the route with the link
        self._save(st)
        self._fw_delete(nftables.port_elements(dropped, {name: ep["ip"]}))
        try:
            self.store.ipam.release(name, st["id"])
        except IPAMError:
            pass
        self._reap_idle()
        peers = [o for o in self.all() if o["id"] != st["id"]]
        for o in peers:
            if name in o["networks"]:
                self._write_hosts(o, peers + [st])
        self._write_hosts(st, peers)
        self._write_resolv(st)

    def _make_netns(self, path: str) -> netlink.Netlink:
        """A new network namespace bound at `path` (what `ip netns add` does), and a netlink
        socket inside it. The calling thread enters it only for the two calls that need to."""
        from kobako.linux import mount, namespaces
        where = netns_dir()
        os.makedirs(where, mode=0o755, exist_ok=True)
        try:  # as iproute2: /run/netns shared, so an unmount here reaches every mount namespace
            mount.mount(None, where, None, mount.MS_SHARED | mount.MS_REC)
        except OSError:
            mount.mount(where, where, None, mount.MS_BIND | mount.MS_REC)
            mount.mount(None, where, None, mount.MS_SHARED | mount.MS_REC)
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444))
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            namespaces.unshare(CLONE_NEWNET)
            try:
                nl = netlink.Netlink()
                mount.mount("/proc/thread-self/ns/net", path, None, mount.MS_BIND)
            finally:
                namespaces.setns(home, CLONE_NEWNET, "the host's network namespace")
        finally:
            os.close(home)
        return nl

    def _ensure_bridge(self, nl: netlink.Netlink, ep: dict, publishing: bool, network: str) -> int:
        br = ep["bridge"]
        idx = nl.index(br)
        if idx is None:
            self._check_routes(ep, network)
            self._new_bridges.append(ep)
            self._bridge_record({k: ep.get(k) for k in _BRIDGE_KEYS})
            # a MAC of its own (02:42:<gateway>, beside the containers' 02:42:<ip>): one taken
            # from its ports would change when a port goes, and the containers' ARP entries
            # for the gateway would point nowhere
            nl.add_bridge(br, ep["mtu"], _mac(ep["gateway"]))
            self.steps.made("bridge", "netlink RTM_NEWLINK bridge",
                            f"bridge {br}, gateway {ep['gateway']}/{ep['prefix']}")
            idx = nl.index(br)
            assert idx is not None
            nl.add_address(idx, ep["gateway"], ep["prefix"], f"bridge {br}")
            if ep.get("vxlan"):
                self._make_vxlan(nl, ep, idx)
            nl.set_up(idx, f"bridge {br}")
            # containers on the bridge reach each other and the host without these; hairpin
            # (a container to a port published on the host) and 127.0.0.1 -> container need them
            _sysctl(f"net/ipv4/conf/{br}/forwarding", "1")
            _sysctl(f"net/ipv4/conf/{br}/route_localnet", "1")
            if ep.get("gateway6"):
                self._bridge_ipv6(nl, idx, br, ep)
        return idx

    def _make_vxlan(self, nl: netlink.Netlink, ep: dict, bridge: int) -> None:
        """A vxlan network's device, a port of its bridge (network/overlay.py)."""
        from kobako.network import overlay
        ov = ep["vxlan"]
        # one left by a crash between the bridge's removal and its own (_reap_idle) would
        # make the kernel refuse this one
        nl.delete(ov["device"])
        try:
            overlay.make(nl, ov, ov["device"], bridge, ep["mtu"])
        except OSError as e:
            why = " (another VXLAN device of this host has that VNI?)" if e.errno == 17 else ""
            raise NetworkError(f"cannot make the vxlan device {ov['device']} (VNI {ov['vni']}, UDP port "
                               f"{ov.get('port', overlay.PORT)}): {e.strerror or e}{why}") from None
        self.steps.made("vxlan", "netlink RTM_NEWLINK vxlan, RTM_NEWNEIGH AF_BRIDGE",
                        f"vxlan device {ov['device']} (VNI {ov['vni']}) on bridge {ep['bridge']}, "
                        f"flooding to {', '.join(ov['peers'])}")

    def _check_routes(self, ep: dict, network: str) -> None:
        """A network keeps the subnet it was given (the default network's too, so its addresses
        stay put): a route that came up on the host since then is a collision to report with
        its fix, never a reason to move the network."""
        from kobako.network.ipam import IPAMError, route_overlapping
        try:
            r = route_overlapping(ep["subnet"])
        except IPAMError as e:
            raise NetworkError(f"network {network}: {e}") from None
        if r is None:
            return
        if network == DEFAULT:
            state = self.store.ipam.path(DEFAULT)
            fix = (f"remove that route (the network or interface that made it), or, while no container "
                   f"runs on {DEFAULT}, delete {state} and the next run picks a free subnet for it")
        else:
            fix = (f"remove that route (the network or interface that made it), or recreate {network} "
                   f"(network rm, network create) to pick a free subnet")
        raise NetworkError(f"network {network}: its subnet {ep['subnet']} overlaps the host's route {r} "
                           f"(another network, perhaps of another engine or kobako data root): {fix}")

    @staticmethod
    def _bridge_ipv6(nl: netlink.Netlink, idx: int, br: str, ep: dict) -> None:
        """A dual-stack bridge: IPv6 on, its gateway address, and forwarding of what comes in
        on it. Only this bridge's own settings change (they go with it): the host's global
        IPv6 forwarding stays as it is, since turning it on makes every interface ignore
        router advertisements. force_forwarding (Linux 6.17) forwards what the containers
        send; the replies need the host to forward IPv6 on its uplink (docs/networking.md)."""
        conf = f"/proc/sys/net/ipv6/conf/{br}"
        if not os.path.isdir(conf):
            raise NetworkError(f"network with IPv6 on bridge {br}: IPv6 is disabled on this host "
                               "(ipv6.disable=1 on the kernel command line?)")
        _sysctl(f"net/ipv6/conf/{br}/disable_ipv6", "0")
        _sysctl(f"net/ipv6/conf/{br}/accept_ra", "0")  # a gateway takes no routes from its containers
        if os.path.exists(f"{conf}/force_forwarding"):
            _sysctl(f"net/ipv6/conf/{br}/force_forwarding", "1")
        nl.add_address(idx, ep["gateway6"], ep["prefix6"], f"bridge {br}")

    def _bridge_record(self, rec: dict) -> None:
        """Recorded before the bridge is made: _reap_idle and the DNS server find it."""
        from kobako.paths import atomic_write
        atomic_write(os.path.join(self.bridges, rec["bridge"] + ".json"), jsonfast.dumps(rec).encode(), 0o600,
                     durable=False)

    def _bridge_records(self) -> list[dict]:
        out = []
        for n in sorted(os.listdir(self.bridges)):
            if n.endswith(".json") and not n.startswith("."):
                try:
                    with open(os.path.join(self.bridges, n), "rb") as f:
                        out.append(jsonfast.loads(f.read()))
                except (OSError, ValueError):
                    out.append({"bridge": n[:-5], "subnet": None})
        return out

    # -- names by DNS ---------------------------------------------------------------------------
    def _names(self, st: dict) -> None:
        """Under the lock, once st's links are made: the DNS server answers on the gateways
        of st's user networks (a bridge just made hands its sockets over; a server that is
        not running starts), and st's resolv.conf names the first one it answers on."""
        if any(ep.get("dns") for ep in st["networks"].values()):
            from kobako.network import dns
            recs = {r["bridge"]: r for r in self._bridge_records() if r.get("dns") and r.get("gateway")}
            new = [ep["gateway"] for ep in self._new_bridges if ep.get("dns")]
            tried, served = dns.ensure(self.netdir, new, [r["gateway"] for r in recs.values()])
            for r in recs.values():
                if r["gateway"] in tried and r.get("served") != (r["gateway"] in served):
                    self._bridge_record({**r, "served": r["gateway"] in served})
        self._write_resolv(st)

    def _write_resolv(self, st: dict) -> None:
        """The nameserver lines of the container's resolv.conf, in place (bind-mounted): the
        gateway of its first user network the DNS server answers on, else the servers it
        asks itself (--dns, or the host's without loopback entries); search and options
        stay as they are."""
        path = st.get("resolv")
        if not path:
            return
        from kobako.network import dns
        served = {r["bridge"] for r in self._bridge_records() if r.get("served")}
        gw = next((st["networks"][n]["gateway"] for n in st["order"]
                   if st["networks"][n].get("dns") and st["networks"][n]["bridge"] in served), None)
        ups = st.get("dnsServers") or dns.host_servers(loopback=False)
        head = [f"nameserver {gw}\n", f"# kobako: the network's DNS server forwards other names to "
                f"{' '.join(st.get('dnsServers') or dns.host_servers()) or 'nobody'}\n"] if gw else \
            [f"nameserver {u}\n" for u in ups]
        try:
            with open(path, "r+") as f:
                text = f.read()
                rest = [ln for ln in text.splitlines(True)
                        if not ln.startswith(("nameserver", "# kobako:"))]
                new = "".join(head + rest)
                if new != text:
                    f.seek(0)
                    f.write(new)
                    f.truncate()
        except FileNotFoundError:
            pass

    def _forwarding_on(self) -> None:
        """Outbound NAT needs the host to route; remember when kobako was the one to turn it on."""
        with open("/proc/sys/net/ipv4/ip_forward") as f:
            if f.read().strip() == "1":
                return
        with open(os.path.join(os.path.dirname(self.dir), "ip_forward.was"), "w") as f:
            f.write("0\n")
        _sysctl("net/ipv4/ip_forward", "1")

    def _forwarding_restore(self) -> None:
        mark = os.path.join(os.path.dirname(self.dir), "ip_forward.was")
        if not os.path.exists(mark):
            return
        if any(not ep["internal"] for st in self.all() for ep in st["networks"].values()):
            return
        _sysctl("net/ipv4/ip_forward", "0")
        os.unlink(mark)

    @_in_user_netns
    def set_rate(self, cid: str, rate: int) -> None:
        """`kobako update --net-rate`: change the limit live; 0 lifts it."""
        with self.locked():
            st = self.state(cid)
            if st is None:
                raise NetworkError(f"container {cid[:12]} has no network of kobako's running")
            st["rate"] = rate or None
            self._save(st)
            if rate:
                self._limit_rate(st)
            else:
                import subprocess
                for ep in st["networks"].values():
                    for argv in (["tc", "qdisc", "del", "dev", ep["veth"], "root"],
                                 ["tc", "-n", os.path.basename(st["netns"]), "qdisc", "del", "dev",
                                  ep["ifname"], "root"]):
                        subprocess.run(argv, capture_output=True)  # none there already: fine

    def _limit_rate(self, st: dict) -> None:
        """--net-rate: a token bucket on both ends of each veth (tc), so the limit holds in both
        directions."""
        import subprocess
        rate = st["rate"]
        burst = max(int(rate) // 8 // 10, 16 * 1024)  # 100 ms worth, at least 16 KiB
        for ep in st["networks"].values():
            for argv in (["tc", "qdisc", "replace", "dev", ep["veth"]],
                         ["tc", "-n", os.path.basename(st["netns"]), "qdisc", "replace", "dev",
                          ep["ifname"]]):
                r = subprocess.run(argv + ["root", "tbf", "rate", f"{rate}bit", "burst", str(burst),
                                           "latency", "50ms"], capture_output=True, text=True)
                if r.returncode:
                    raise NetworkError(f"cannot limit the network rate of {ep['veth']}: "
                                       f"{(r.stderr or 'tc failed').strip()}")

    # -- detach -----------------------------------------------------------------------------
    @_in_user_netns
    def detach(self, cid: str, gen: int | None = None, sync: bool = True) -> bool:
        """Tear the container's network down. With `gen`, only if it is still that start's (a
        late cleanup never takes down a newer start's network). `sync=False` (a container's
        exit): a bridge left idle goes a moment later, in a background process, so a run
        right after reuses it -- deleting a bridge costs ~55 ms of RCU waits. False when
        nothing was there."""
        with self.locked():
            st = self.state(cid)
            if st is None or (gen is not None and st.get("gen") != gen):
                return False
            self._teardown(st, sync)
            if sync:
                self._reap_idle()
        if not sync:
            self._reap_later()
        return True

    def _teardown(self, st: dict, sync: bool) -> None:
        """Undo everything `st` records; every piece may be gone already. Without `sync` the
        veth is left to the kernel, which removes it with the namespace (asynchronously:
        deleting it here would wait ~20 ms for RCU)."""
        from kobako.linux import mount
        from kobako.network.ipam import IPAMError
        if sync:
            with netlink.Netlink() as nl:
                for ep in st["networks"].values():
                    nl.delete(ep["veth"])  # its peer inside goes with it
                    steps.show("network", "undo: netlink RTM_DELLINK", f"veth pair {ep['veth']} deleted")
        try:
            mount.umount2(st["netns"], mount.MNT_DETACH)
            steps.show("network", "undo: umount2(2) MNT_DETACH", f"network namespace {st['netns']} unmounted"
                       + ("" if sync else " (the kernel removes its veth pair with it)"))
        except OSError:
            pass
        try:
            os.unlink(st["netns"])
        except FileNotFoundError:
            pass
        if st.get("forwards"):  # rootless: slirp4netns's host forwards first
            from kobako.network import rootlessns
            for fid in st["forwards"]:
                rootlessns.remove_forward(self.run_root, fid)
            st["forwards"] = []
        # the DNAT entries go before the address is released: nobody else may get its traffic
        gone = nftables.port_elements(st.get("ports") or [], {k: v["ip"] for k, v in st["networks"].items()})
        self._fw_delete(gone)
        if gone:
            steps.show("network", "undo: nft -f (delete element)",
                       f"table inet {self.table}: " + ", ".join(f"{s} {{{e}}}" for s, e in gone))
        for name in st["networks"]:
            try:
                self.store.ipam.release(name, st["id"])
            except IPAMError:
                pass  # the network was removed meanwhile
        try:
            os.unlink(self._path(st["id"]))
        except FileNotFoundError:
            pass
        self._update_hosts(st, set(st["networks"]), leaving=True)

    def _reap_idle(self) -> None:
        """Under the lock: bridges no endpoint uses go, with their firewall entries; with no
        bridge left, the table goes too, and ip_forward returns to what it was. Works from
        the bridge records, so a bridge outlives neither its network nor a crash."""
        used = {ep["bridge"] for st in self.all() for ep in st["networks"].values()}
        gone, left, named = [], 0, False
        with netlink.Netlink() as nl:
            for rec in self._bridge_records():
                if rec["bridge"] in used:
                    left += 1
                    named = named or bool(rec.get("dns"))
                    continue
                nl.delete(rec["bridge"])
                if rec.get("vxlan"):  # a bridge's ports stay when it goes
                    nl.delete(rec["vxlan"]["device"])
                os.unlink(os.path.join(self.bridges, rec["bridge"] + ".json"))
                if rec.get("subnet"):
                    gone.append(rec)
        if gone or not named:
            from kobako.network import dns
            if named:
                dns.sync(self.netdir)  # it closes the sockets of the gateways that went
            else:
                dns.stop(self.netdir)  # no user network has a running container
        if not left:
            try:
                if nftables.exists(self.table):
                    nftables.remove(self.table)
            except nftables.NftError:
                pass
        elif gone:
            self._fw_delete([e for n in gone for e in nftables.network_elements(n)])
        self._forwarding_restore()

    @_in_user_netns
    def reap_idle(self) -> None:
        with self.locked():
            self._reap_idle()

    def _reap_later(self) -> None:
        """A detached process that waits a moment, then reaps idle bridges (podman's conmon
        starts `podman container cleanup` after an exit in the same spirit)."""
        linger = float(os.environ.get("KOBAKO_NET_LINGER", "2"))
        pid = os.fork()
        if pid:
            os.waitpid(pid, 0)
            return
        try:
            os.setsid()
            if os.fork():
                os._exit(0)
            null = os.open("/dev/null", os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            # nothing of the parent's: a monitor's client connections must see their EOF now,
            # not when this process ends
            os.closerange(3, 1 << 16)
            import time
            time.sleep(linger)
            with self.locked():
                self._reap_idle()
        finally:
            os._exit(0)

    def _forward_ports(self, st: dict) -> None:
        """Rootless: each published port is a slirp4netns host forward too (the host's address
        to the namespace's; the table DNATs it on), its id kept in the state for teardown."""
        from kobako.network import rootlessns
        st["forwards"] = []
        for p in st.get("ports") or []:
            st["forwards"].append(rootlessns.add_forward(self.run_root, p["proto"], p.get("hostIp"),
                                                         int(p["hostPort"])))
            self._save(st)  # recorded as made: a failure later removes it
            self.steps.made("port", "slirp4netns add_hostfwd",
                            f"host {p.get('hostIp') or '0.0.0.0'}:{p['hostPort']}/{p['proto']} -> "
                            f"{rootlessns.GUEST_ADDR}:{p['hostPort']} in the user's network namespace")

    # -- the firewall ------------------------------------------------------------------------------
    def _fw_add(self, st: dict | None, new_bridges: list[dict]) -> None:
        elems = [e for ep in new_bridges for e in nftables.network_elements(ep)]
        if st is not None:
            elems += nftables.port_elements(st["ports"], {k: v["ip"] for k, v in st["networks"].items()})
        if not elems:
            return
        try:
            nftables.add(self.table, elems)
            how = "nft -f (one batch: add element)"
        except nftables.NftError:
            self._full()  # the table is not there (first use, a reboot, a flush): all of it
            how = "nft -f (the whole table, from state)"
        self.steps.made(
            "nft", how, f"table inet {self.table}: " + ", ".join(f"{s} {{{e}}}" for s, e in elems))

    def _fw_delete(self, elems: list[tuple[str, str]]) -> None:
        if not elems:
            return
        try:
            nftables.delete(self.table, elems)
        except nftables.NftError:
            try:
                self._full()  # some were missing (someone flushed): rebuild from state
            except NetworkError:
                pass

    def _full(self) -> None:
        eps = self.all()
        live: dict[str, dict] = {}
        for st in eps:
            for ep in st["networks"].values():
                live[ep["bridge"]] = {k: ep.get(k) for k in _BRIDGE_KEYS}
        try:
            if live:
                nftables.full(self.table, list(live.values()), eps)
            elif nftables.exists(self.table):
                nftables.remove(self.table)
        except nftables.NftError as e:
            raise NetworkError(str(e)) from None

    @_in_user_netns
    def reload(self) -> None:
        """Re-apply the table whole (after a firewall restart or someone's flush)."""
        with self.locked():
            self._full()

    @_in_user_netns
    def restore_table(self) -> bool:
        """The table again, whole, if it is missing while endpoints need it (someone's `nft
        flush ruleset`, nftables.service or firewalld reloaded): True when it was re-applied.
        The check is one netlink query; the lock and the rebuild only follow a flush."""
        if nftables.present(self.table):
            return False
        with self.locked():
            if nftables.present(self.table) or not self.all():
                return False
            self._full()
            return True

    # -- /etc/hosts ---------------------------------------------------------------------------
    def _update_hosts(self, st: dict, nets: set[str], leaving: bool = False) -> None:
        """Rewrite the peers' section of /etc/hosts for every container that shares a user
        network with `st` (and st's own, unless it is leaving)."""
        user = {n for n in nets if n != DEFAULT}
        if not user:  # the default bridge has no names: only st's own line, no peer to read
            if not leaving:
                self._write_hosts(st, [st])
            return
        eps = [o for o in self.all() if o["id"] != st["id"]]
        if not leaving:
            eps.append(st)
        for o in eps:
            if not user & set(o["networks"]) and o["id"] != st["id"]:
                continue
            self._write_hosts(o, eps)

    @staticmethod
    def _write_hosts(me: dict, eps: list[dict]) -> None:
        path = me.get("hosts")
        if not path:
            return
        lines = []
        for name in me["order"]:
            ep = me["networks"][name]
            names = [me["hostname"]] if me.get("hostname") else []
            if me["name"] not in names:
                names.append(me["name"])
            lines.append(f"{ep['ip']}\t{' '.join(names)}\n")
        for o in eps:
            if o["id"] == me["id"]:
                continue
            for name, ep in o["networks"].items():
                if name == DEFAULT or name not in me["networks"]:
                    continue  # the default bridge has no names, as Docker's
                names = [o["name"], *ep.get("aliases", []), o["id"][:12]]
                if o.get("hostname") and o["hostname"] not in names:
                    names.append(o["hostname"])
                lines.append(f"{ep['ip']}\t{' '.join(names)}\n")
        try:
            with open(path, "r+") as f:  # in place: the container has this inode bind-mounted
                text = f.read()
                base = text.split(_HOSTS_MARK)[0]
                base = "".join(ln for ln in base.splitlines(True) if not ln.startswith("127.0.1.1\t"))
                f.seek(0)
                f.write(base + _HOSTS_MARK + "".join(lines))
                f.truncate()
        except FileNotFoundError:
            pass

    # -- crash recovery ---------------------------------------------------------------------------
    @_in_user_netns
    def sweep(self, running: set[str]) -> list[str]:
        """Tear down what containers that are not running left (a kill -9 of the command that
        was starting or stopping them), and idle bridges. `running`: IDs the runtime runs."""
        gone = []
        with self.locked():
            for st in self.all():
                if st["id"] in running or _alive(int(st.get("gen") or 0)):
                    continue
                self._teardown(st, sync=True)
                gone.append(st["id"])
            # addresses whose holder has no endpoint any more (a reboot emptied the run root)
            owners = {st["id"] for st in self.all()}
            for net in self.store.all():
                for owner in list(net["allocated"].values()):
                    if owner not in owners:
                        self.store.ipam.release(net["name"], owner)
            self._reap_idle()
            live = [r["gateway"] for r in self._bridge_records() if r.get("dns") and r.get("gateway")]
            if live:  # a kill -9'd DNS server is started again for the networks still live
                from kobako.network import dns
                tried, served = dns.ensure(self.netdir, [], live)
                for r in self._bridge_records():
                    if r.get("gateway") in tried:
                        self._bridge_record({**r, "served": r["gateway"] in served})
        return gone
