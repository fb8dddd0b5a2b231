"""Network commands: network create, ls, inspect, rm, prune, connect, disconnect, reload.

Which containers use a network is read from their records (rec["net"]["networks"]), so a
stopped container still holds its networks, and `rm` refuses them until it is removed or
disconnected. Live state (addresses, veths) comes from network/endpoints.py.
"""

from __future__ import annotations

import sys

from kobako.cli.output import formatted, print_docs, table
from kobako.cli.parser import Command, opt, pairs
from kobako.engine.lifecycle import Engine
from kobako.network.networks import DEFAULT, MODES, NetworkError, NetworkStore

LS_HEADERS = {"ID": "NETWORK ID", "Name": "NAME", "Driver": "DRIVER", "Scope": "SCOPE"}


def _store(e: Engine) -> NetworkStore:
    return NetworkStore(e.root, e.run_dir)


def _pairs(items: list[str], what: str) -> dict[str, str]:
    return pairs(items, lambda it: NetworkError(f"invalid {what} {it!r}: use KEY=VALUE"))


def users(e: Engine, name: str) -> list[dict]:
    """Container records that are connected to network `name` (running or not)."""
    return [r for r in e.containers.all()
            if name in ((r.get("net") or {}).get("networks") or {})
            or (name == DEFAULT and (r.get("net") or {}).get("mode") == "bridge"
                and not (r.get("net") or {}).get("networks"))]


def _endpoints(e: Engine):
    from kobako.network.endpoints import Endpoints
    return Endpoints(e.root, e.run_dir)


def create(e: Engine, args) -> int:
    if args.driver not in (None, "bridge"):
        raise NetworkError(f"network driver {args.driver!r} is not supported (bridge)")
    if len(args.subnet) > 1 or len(args.gateway) > 1 or len(args.ip_range) > 1:
        raise NetworkError("one --subnet (IPv4) per network for now")
    net = _store(e).create(args.args[0], (args.subnet or [None])[0], (args.gateway or [None])[0],
                           (args.ip_range or [None])[0], internal=args.internal,
                           options=_pairs(args.opt, "option"), labels=_pairs(args.label, "label"))
    print(net["id"])
    return 0


def doc(e: Engine, net: dict) -> dict:
    """Docker's network inspect document."""
    live = {}
    try:
        eps = _endpoints(e).all()
    except OSError:
        eps = []
    for st in eps:
        ep = st["networks"].get(net["name"])
        if ep:
            live[st["id"]] = {"Name": st["name"], "EndpointID": ep["veth"], "MacAddress": ep["mac"],
                              "IPv4Address": f"{ep['ip']}/{ep['prefix']}", "IPv6Address": ""}
    opts = {"com.docker.network.bridge.name": net["bridge"]}
    if net.get("mtu"):
        opts["com.docker.network.driver.mtu"] = str(net["mtu"])
    cfg = {"Subnet": net["subnet"], "Gateway": net["gateway"]}
    if net.get("ipRange"):
        cfg["IPRange"] = net["ipRange"]
    return {"Name": net["name"], "Id": net["id"], "Created": net.get("created", ""), "Scope": "local",
            "Driver": "bridge", "EnableIPv6": False,
            "IPAM": {"Driver": "default", "Options": {}, "Config": [cfg]},
            "Internal": bool(net.get("internal")), "Attachable": False, "Ingress": False,
            "ConfigFrom": {"Network": ""}, "ConfigOnly": False, "Containers": live, "Options": opts,
            "Labels": net.get("labels") or {}}


def endpoint(e: Engine, rec: dict) -> dict | None:
    """The container's live network state, if it runs on bridge networks."""
    if (rec.get("net") or {}).get("mode") != "bridge":
        return None
    return _endpoints(e).state(rec["id"])


def container_settings(e: Engine, rec: dict) -> tuple[str, dict]:
    """(HostConfig.NetworkMode, NetworkSettings) of docker's container inspect."""
    net = rec.get("net") or {}
    mode = net.get("mode") or "none"
    if mode == "container":
        mode = "container:" + net.get("container", "")
    elif mode == "bridge":
        names = list(net.get("networks") or {})
        mode = names[0] if names else "none"
    st = endpoint(e, rec) or {}
    nets, ports = {}, {}
    for name, ep in (st.get("networks") or {}).items():
        nets[name] = {"IPAMConfig": None, "Links": None, "Aliases": ep.get("aliases") or None,
                      "NetworkID": ep["id"], "EndpointID": ep["veth"], "Gateway": ep["gateway"],
                      "IPAddress": ep["ip"], "IPPrefixLen": ep["prefix"], "IPv6Gateway": "",
                      "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0, "MacAddress": ep["mac"]}
    if not nets:
        for name in (net.get("networks") or {}):
            nets[name] = {"NetworkID": "", "EndpointID": "", "Gateway": "", "IPAddress": "", "IPPrefixLen": 0,
                          "MacAddress": "", "Aliases": (net["networks"][name] or {}).get("aliases") or None}
    for p in net.get("ports") or []:
        ports.setdefault(f"{p['containerPort']}/{p['proto']}", None)
    for p in st.get("ports") or []:
        key = f"{p['containerPort']}/{p['proto']}"
        bound = {"HostIp": p.get("hostIp") or "0.0.0.0", "HostPort": str(p["hostPort"])}
        ports[key] = (ports.get(key) or []) + [bound]
    first = nets.get(next(iter(nets), ""), {})
    return mode, {"Bridge": "", "SandboxID": st.get("netns", "").rsplit("/", 1)[-1],
                  "SandboxKey": st.get("netns", ""), "Ports": ports, "Networks": nets,
                  "IPAddress": first.get("IPAddress", ""), "IPPrefixLen": first.get("IPPrefixLen", 0),
                  "Gateway": first.get("Gateway", ""), "MacAddress": first.get("MacAddress", "")}


def port_lines(e: Engine, rec: dict) -> list[str]:
    from kobako.network.ports import describe
    return [describe(p) for p in (endpoint(e, rec) or {}).get("ports") or []]


def ps_ports(e: Engine, rec: dict) -> str:
    st = endpoint(e, rec)
    if not st:
        return ""
    return ", ".join(f"{p.get('hostIp') or '0.0.0.0'}:{p['hostPort']}->{p['containerPort']}/{p['proto']}"
                     for p in st.get("ports") or [])


def _pseudo(name: str) -> dict:
    return {"Name": name, "Id": "", "Driver": "host" if name == "host" else "null", "Scope": "local",
            "Internal": False, "Containers": {}, "Options": {}, "Labels": {}, "IPAM": {"Config": []}}


def ls(e: Engine, args) -> int:
    store = _store(e)
    store.get(DEFAULT)  # always listed, as docker's
    rows = [{"ID": n["id"][:12] if not args.no_trunc else n["id"], "Name": n["name"], "Driver": "bridge",
             "Scope": "local", "Labels": ",".join(f"{k}={v}" for k, v in (n.get("labels") or {}).items()),
             "Internal": str(bool(n.get("internal"))).lower()} for n in store.all()]
    rows += [{"ID": "", "Name": m, "Driver": "host" if m == "host" else "null", "Scope": "local",
              "Labels": "", "Internal": "false"} for m in MODES]
    for f in args.filter:
        k, _, v = f.partition("=")
        if k not in ("name", "driver", "id", "label"):
            raise NetworkError(f"invalid filter '{k}' (name, driver, id, label)")
        key = {"name": "Name", "driver": "Driver", "id": "ID", "label": "Labels"}[k]
        rows = [r for r in rows if v in r[key]]
    rows.sort(key=lambda r: r["Name"])
    if args.quiet:
        for r in rows:
            if r["ID"]:
                print(r["ID"])
        return 0
    if args.format:
        formatted(args.format, rows, LS_HEADERS)
        return 0
    table(["NETWORK ID", "NAME", "DRIVER", "SCOPE"],
          [[r["ID"], r["Name"], r["Driver"], r["Scope"]] for r in rows])
    return 0


def inspect(e: Engine, args) -> int:
    store, docs, errors = _store(e), [], []
    for name in args.args:
        if name in MODES:
            docs.append(_pseudo(name))
            continue
        try:
            docs.append(doc(e, store.get(name)))
        except NetworkError as ex:
            errors.append(str(ex))
    return print_docs(docs, args.format, errors)


def rm(e: Engine, args) -> int:
    rc = 0
    store = _store(e)
    for name in args.args:
        try:
            if name in MODES:
                raise NetworkError(f"network {name} is a predefined network and cannot be removed")
            net = store.get(name)
            store.remove(net["name"], [r["name"] for r in users(e, net["name"])])
            _endpoints(e).reap_idle()  # its bridge, if a container's exit left it lingering
            print(name)
        except NetworkError as ex:
            sys.stderr.write(f"Error: {ex}\n")
            rc = 1
    return rc


def prune_networks(e: Engine) -> list[str]:
    """User networks no container uses (docker's `network prune`)."""
    gone = []
    store = _store(e)
    for net in store.all():
        if net["name"] == DEFAULT or users(e, net["name"]):
            continue
        try:
            store.remove(net["name"], [])
            gone.append(net["name"])
        except NetworkError:
            pass  # taken meanwhile
    if gone:
        _endpoints(e).reap_idle()
    return gone


def prune(e: Engine, args) -> int:
    e.sweep_networks()
    gone = prune_networks(e)
    if gone:
        print("Deleted Networks:\n" + "\n".join(gone))
    return 0


def _network_and_container(e: Engine, args) -> tuple[dict, dict, dict]:
    """`network connect|disconnect NETWORK CONTAINER`: the network, the container, its net record."""
    net = _store(e).get(args.args[0])
    rec = e.containers.resolve(args.args[1])
    return net, rec, rec.get("net") or {}


def connect(e: Engine, args) -> int:
    net, rec, cur = _network_and_container(e, args)
    if cur.get("mode") != "bridge":
        raise NetworkError(f"container {rec['name']} uses --network {cur.get('mode') or 'none'}: "
                           "it cannot join a bridge network")
    nets = dict(cur.get("networks") or {DEFAULT: {}})
    if net["name"] in nets:
        raise NetworkError(f"container {rec['name']} is already connected to network {net['name']}")
    if net["name"] == DEFAULT and (args.ip or args.alias):
        raise NetworkError("--ip and --alias work on user-defined networks only")
    if args.ip:
        from kobako.network.ipam import IPAMError, Pool
        try:
            Pool.of(net).check(args.ip)
        except IPAMError as ex:
            raise NetworkError(str(ex)) from None
    if e.state(rec) in ("running", "paused"):
        _endpoints(e).connect(rec, net["name"], args.ip, list(args.alias))
    nets[net["name"]] = {"ip": args.ip, "aliases": list(args.alias)}
    e.containers.update(rec["id"], net={**cur, "networks": nets})
    return 0


def disconnect(e: Engine, args) -> int:
    net, rec, cur = _network_and_container(e, args)
    nets = dict(cur.get("networks") or ({DEFAULT: {}} if cur.get("mode") == "bridge" else {}))
    if net["name"] not in nets:
        raise NetworkError(f"container {rec['name']} is not connected to network {net['name']}")
    if e.state(rec) in ("running", "paused"):
        _endpoints(e).disconnect(rec, net["name"])
    del nets[net["name"]]
    # the last network gone: the container keeps its own namespace with only lo (docker's none)
    e.containers.update(rec["id"], net={**cur, "networks": nets, **({} if nets else {"ports": []})})
    return 0


def reload(e: Engine, args) -> int:
    _endpoints(e).reload()
    return 0


COMMANDS = {
    "network create": (Command("network create", "[OPTIONS] NETWORK", "Create a bridge network", [
        opt("-d --driver", "driver", "str", None, "bridge (the only driver)"),
        opt("--subnet", "subnet", "list", None, "subnet in CIDR form, e.g. 10.89.0.0/24"),
        opt("--gateway", "gateway", "list", None, "gateway address (default: the subnet's first)"),
        opt("--ip-range", "ip_range", "list", None, "allocate container addresses from this sub-range"),
        opt("--internal", "internal", help="no route out of the network (no NAT, no forwarding)"),
        opt("-o --opt", "opt", "list", None,
            "com.docker.network.bridge.name=NAME, com.docker.network.driver.mtu=N"),
        opt("--label", "label", "list", None, "set a label KEY=VALUE")], min_args=1, max_args=1), create),
    "network ls": (Command("network ls", "[OPTIONS]", "List networks", [
        opt("-q --quiet", "quiet", help="only IDs"),
        opt("-f --filter", "filter", "list", None, "name=, driver=, id=, label="),
        opt("--format", "format", "str", None, "json, table or a Go template"),
        opt("--no-trunc", "no_trunc", help="full IDs")], max_args=0), ls),
    "network inspect": (Command("network inspect", "[OPTIONS] NETWORK [NETWORK...]",
                                "Show networks in detail", [
        opt("-f --format", "format", "str", None, "a Go template")], min_args=1), inspect),
    "network rm": (Command("network rm", "NETWORK [NETWORK...]", "Remove networks no container uses", [
        opt("-f --force", "force", help="accepted")], min_args=1), rm),
    "network prune": (Command("network prune", "[OPTIONS]", "Remove every network no container uses", [
        opt("-f --force", "force", help="do not prompt for confirmation")], max_args=0), prune),
    "network connect": (Command("network connect", "[OPTIONS] NETWORK CONTAINER",
                                "Connect a container to a network (live, if it runs)", [
                                    opt("--ip", "ip", "str", None, "IPv4 address"),
                                    opt("--alias", "alias", "list", None, "another name on the network")],
                                min_args=2, max_args=2), connect),
    "network disconnect": (Command("network disconnect", "[OPTIONS] NETWORK CONTAINER",
                                   "Disconnect a container from a network (live, if it runs)", [
                                       opt("-f --force", "force", help="accepted")], min_args=2, max_args=2),
                           disconnect),
    "network reload": (Command("network reload", "", "Re-apply kobako's nftables table from its state "
                               "(after a firewall restart or a flush)", [], max_args=0), reload),
}
