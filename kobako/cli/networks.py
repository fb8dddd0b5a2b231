"""Network commands: network create, ls, inspect, rm, prune, connect, disconnect, reload.

The work is the engine's (engine/networks.py), shared with the Docker API; this module
turns flags into its calls and its documents into tables.
"""

from __future__ import annotations

import sys

from kobako import errors
from kobako.cli.output import confirmed, formatted, print_docs, table
from kobako.cli.parser import Command, opt, pairs
from kobako.engine import networks
from kobako.engine.lifecycle import Engine
from kobako.network.networks import NetworkError

LS_HEADERS = {"ID": "NETWORK ID", "Name": "NAME", "Driver": "DRIVER", "Scope": "SCOPE", "IPv6": "IPV6",
              "Internal": "INTERNAL", "Labels": "LABELS", "CreatedAt": "CREATED AT"}


def _pairs(items: list[str], what: str) -> dict[str, str]:
    return pairs(items, lambda it: NetworkError(f"invalid {what} {it!r}: use KEY=VALUE"))


def _by_family(values: list[str], flag: str) -> tuple[str | None, str | None]:
    """--subnet/--gateway/--ip-range given once per address family: (IPv4, IPv6)."""
    v4 = [v for v in values if ":" not in v]
    v6 = [v for v in values if ":" in v]
    if len(v4) > 1 or len(v6) > 1:
        raise NetworkError(f"one {flag} per address family (one IPv4, one IPv6)")
    return (v4 or [None])[0], (v6 or [None])[0]


def create(e: Engine, args) -> int:
    subnet, subnet6 = _by_family(args.subnet, "--subnet")
    gateway, gateway6 = _by_family(args.gateway, "--gateway")
    ip_range, ip_range6 = _by_family(args.ip_range, "--ip-range")
    net = networks.create(e, args.args[0], args.driver, subnet, gateway, ip_range,
                          aux=_pairs(args.aux_address, "auxiliary address"),
                          internal=args.internal, attachable=args.attachable,
                          options=_pairs(args.opt, "option"), labels=_pairs(args.label, "label"),
                          ipam_driver=args.ipam_driver, ipv6=args.ipv6, subnet6=subnet6, gateway6=gateway6,
                          ip_range6=ip_range6)
    print(net["id"])
    return 0


def port_lines(e: Engine, rec: dict) -> list[str]:
    from kobako.engine.views import endpoint
    from kobako.network.ports import describe
    return [describe(p) for p in (endpoint(e, rec) or {}).get("ports") or []]


def ls(e: Engine, args) -> int:
    from kobako.engine import filters
    docs = networks.listing(e, filters.from_args(args.filter, networks.FILTERS))
    rows = [{"ID": d["Id"] if args.no_trunc else d["Id"][:12], "Name": d["Name"], "Driver": d["Driver"],
             "Scope": d["Scope"], "Labels": ",".join(f"{k}={v}" for k, v in d["Labels"].items()),
             "Internal": str(d["Internal"]).lower(), "IPv6": str(d["EnableIPv6"]).lower(),
             "CreatedAt": d["Created"]} for d in docs]
    rows.sort(key=lambda r: r["Name"])
    if args.quiet:
        for r in rows:
            print(r["ID"])
        return 0
    if args.format:
        formatted(args.format, rows, LS_HEADERS)
        return 0
    table(["NETWORK ID", "NAME", "DRIVER", "SCOPE"],
          [[r["ID"], r["Name"], r["Driver"], r["Scope"]] for r in rows])
    return 0


def inspect(e: Engine, args) -> int:
    docs, errors = [], []
    for name in args.args:
        try:
            docs.append(networks.inspect(e, name))
        except NetworkError as ex:
            errors.append(str(ex))
    return print_docs(docs, args.format, errors)


def rm(e: Engine, args) -> int:
    rc = 0
    for name in args.args:
        try:
            networks.remove(e, name)
            print(name)
        except errors.NotFound as ex:
            if args.force:  # docker's -f: a network that is not there is no error
                continue
            sys.stderr.write(f"Error: {ex}\n")
            rc = 1
        except NetworkError as ex:
            sys.stderr.write(f"Error: {ex}\n")
            rc = 1
    return rc


def prune(e: Engine, args) -> int:
    if not confirmed(args.force, "This will remove all custom networks not used by at least one container."):
        return 0
    from kobako.engine import filters
    e.sweep_networks()
    gone = networks.prune(e, filters.from_args(args.filter, ("label", "label!", "until")))
    if gone:
        print("Deleted Networks:\n" + "\n".join(gone))
    return 0


def connect(e: Engine, args) -> int:
    want = networks.endpoint_config(args.ip, list(args.alias), list(args.link),
                                    _pairs(args.driver_opt, "option"), args.mac_address,
                                    list(args.link_local_ip), args.ip6)
    networks.connect(e, args.args[0], args.args[1], want)
    return 0


def disconnect(e: Engine, args) -> int:
    networks.disconnect(e, args.args[0], args.args[1], force=args.force)
    return 0


def update(e: Engine, args) -> int:
    networks.update(e, args.args[0], _pairs(args.opt, "option"))
    return 0


def reload(e: Engine, args) -> int:
    from kobako.network.endpoints import Endpoints
    Endpoints(e.root, e.run_dir).reload()
    return 0


COMMANDS = {
    "network create": (Command("network create", "[OPTIONS] NETWORK",
                               "Create a network (bridge, or vxlan across hosts)", [
        opt("-d --driver", "driver", "str", None, "bridge, or vxlan (an overlay across hosts: "
            "--opt peers=IP[,IP...])"),
        opt("--attachable", "attachable", help="mark it Attachable (inspect); every container may join "
            "any kobako network"),
        opt("--aux-address", "aux_address", "list", None, "NAME=IP: an address container allocation skips"),
        opt("--ipam-driver", "ipam_driver", "str", None, "default (the only one)"),
        opt("--ipv6", "ipv6", help="IPv6 too (dual stack): give an IPv6 --subnet as well"),
        opt("--subnet", "subnet", "list", None, "subnet in CIDR form, e.g. 10.89.0.0/24 (and an IPv6 one)"),
        opt("--gateway", "gateway", "list", None, "gateway address (default: the subnet's first)"),
        opt("--ip-range", "ip_range", "list", None, "allocate container addresses from this sub-range"),
        opt("--internal", "internal", help="no route out of the network (no NAT, no forwarding)"),
        opt("-o --opt", "opt", "list", None,
            "com.docker.network.bridge.name=NAME, com.docker.network.driver.mtu=N; vxlan: peers=IP[,IP...], "
            "vni=N, port=N, mtu=N"),
        opt("--label", "label", "list", None, "set a label KEY=VALUE")], min_args=1, max_args=1), create),
    "network ls": (Command("network ls", "[OPTIONS]", "List networks", [
        opt("-q --quiet", "quiet", help="only IDs"),
        opt("-f --filter", "filter", "list", None, "name=, id=, label=, driver=, type=, scope=, dangling="),
        opt("--format", "format", "str", None, "json, table or a Go template"),
        opt("--no-trunc", "no_trunc", help="full IDs")], max_args=0), ls),
    "network inspect": (Command("network inspect", "[OPTIONS] NETWORK [NETWORK...]",
                                "Show networks in detail", [
        opt("-f --format", "format", "str", None, "a Go template")], min_args=1), inspect),
    "network rm": (Command("network rm", "[OPTIONS] NETWORK [NETWORK...]",
                           "Remove networks no container uses", [
        opt("-f --force", "force", help="do not error if a network does not exist")], min_args=1), rm),
    "network prune": (Command("network prune", "[OPTIONS]", "Remove every network no container uses", [
        opt("-f --force", "force", help="do not prompt for confirmation"),
        opt("--filter", "filter", "list", None, "label=K[=V], label!=K[=V], until=TIME")], max_args=0),
        prune),
    "network connect": (Command("network connect", "[OPTIONS] NETWORK CONTAINER",
                                "Connect a container to a network (live, if it runs)", [
                                    opt("--ip", "ip", "str", None, "IPv4 address"),
                                    opt("--ip6", "ip6", "str", None, "IPv6 address"),
                                    opt("--alias", "alias", "list", None, "another name on the network"),
                                    opt("--link", "link", "list", None, "NAME[:ALIAS]: recorded (inspect)"),
                                    opt("--link-local-ip", "link_local_ip", "list", None,
                                        "another address in 169.254.0.0/16"),
                                    opt("--driver-opt", "driver_opt", "list", None, "KEY=VALUE, recorded"),
                                    opt("--mac-address", "mac_address", "str", None, "the interface's MAC")],
                                min_args=2, max_args=2), connect),
    "network disconnect": (Command("network disconnect", "[OPTIONS] NETWORK CONTAINER",
                                   "Disconnect a container from a network (live, if it runs)", [
                                       opt("-f --force", "force",
                                           help="forget the network even if its link is gone")],
                                   min_args=2, max_args=2),
                           disconnect),
    "network update": (Command("network update", "--opt peers=IP[,IP...] NETWORK",
                               "Change a vxlan network's peers (live, if it is up)", [
                                   opt("-o --opt", "opt", "list", None, "peers=IP[,IP...]: the other hosts")],
                               min_args=1, max_args=1), update),
    "network reload": (Command("network reload", "", "Re-apply kobako's nftables table from its state "
                               "(after a firewall restart or a flush)", [], max_args=0), reload),
}
