"""Commands about containers' resources and the host: stats, update, port, version,
system info, system restore."""

from __future__ import annotations

import os
import sys
import time

from kobako import __version__
from kobako.cli.output import formatted, human_size, table
from kobako.cli.parser import Command, opt
from kobako.engine import ocispec
from kobako.engine.lifecycle import Engine
from kobako.engine.records import ContainerConflict, ContainerError


def _cgroup_stats(e: Engine, rec: dict) -> dict | None:
    from kobako.runtime import state
    from kobako.runtime.cgroups import stats
    c = state.Container(e.runtime_root, rec["id"])
    try:
        c.load()
    except Exception:  # noqa: BLE001 - not running: no stats
        return None
    return stats.collect(c.data.get("_cgroup") or {})


def net_io(pid: int) -> dict[str, dict[str, int]]:
    """Per-interface counters of a process's network namespace (/proc/PID/net/dev), lo left out."""
    out: dict[str, dict[str, int]] = {}
    try:
        with open(f"/proc/{pid}/net/dev") as f:
            lines = f.read().splitlines()[2:]
    except OSError:
        return out
    for line in lines:
        name, _, rest = line.partition(":")
        v = rest.split()
        if name.strip() == "lo" or len(v) < 16:
            continue
        out[name.strip()] = {"rx_bytes": int(v[0]), "rx_packets": int(v[1]), "rx_errors": int(v[2]),
                             "rx_dropped": int(v[3]), "tx_bytes": int(v[8]), "tx_packets": int(v[9]),
                             "tx_errors": int(v[10]), "tx_dropped": int(v[11])}
    return out


def _stats_row(e: Engine, rec: dict, prev: dict | None, dt: float) -> tuple[dict, dict | None]:
    data = _cgroup_stats(e, rec) or {}
    cpu_ns = (data.get("cpu") or {}).get("usage", {}).get("total", 0)
    pct = 0.0
    if prev is not None and dt > 0:
        pct = max(0.0, (cpu_ns - prev.get("cpu_ns", 0)) / (dt * 1e9) * 100)
    mem = (data.get("memory") or {}).get("usage", {})
    usage, limit = mem.get("usage", 0), mem.get("limit", 0)
    if not limit or limit >= 1 << 60:
        try:
            limit = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError):
            limit = 0
    pids = (data.get("pids") or {}).get("current", 0)
    row = {"ID": rec["id"][:12], "Name": rec["name"], "CPUPerc": f"{pct:.2f}%",
           "MemUsage": f"{human_size(usage)} / {human_size(limit)}",
           "MemPerc": f"{(usage / limit * 100) if limit else 0:.2f}%", "PIDs": str(pids),
           "NetIO": "-- / --", "BlockIO": "-- / --"}
    if rec.get("pid") and (rec.get("net") or {}).get("mode") not in (None, "host"):
        nets = net_io(int(rec["pid"]))
        if nets:
            rx, tx = sum(n["rx_bytes"] for n in nets.values()), sum(n["tx_bytes"] for n in nets.values())
            row["NetIO"] = f"{human_size(rx)} / {human_size(tx)}"
    return row, {"cpu_ns": cpu_ns}


def stats(e: Engine, args) -> int:
    recs = [e.containers.resolve(r) for r in args.args] if args.args else \
        [r for r in e.containers.all() if e.state(r) == "running"]
    prev: dict[str, dict | None] = {r["id"]: None for r in recs}
    heads = ["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "NET I/O", "BLOCK I/O", "PIDS"]
    t0 = time.monotonic()
    for r in recs:  # a first sample, so CPU % has a baseline
        _, prev[r["id"]] = _stats_row(e, r, None, 0)
    while True:
        time.sleep(0.5 if args.no_stream else 1.0)
        dt = time.monotonic() - t0
        t0 = time.monotonic()
        rows = []
        for r in recs:
            row, prev[r["id"]] = _stats_row(e, r, prev[r["id"]], dt)
            rows.append(row)
        if args.format:
            formatted(args.format, rows)
        else:
            if not args.no_stream and sys.stdout.isatty():
                sys.stdout.write("\x1b[2J\x1b[H")
            table(heads, [[x["ID"], x["Name"], x["CPUPerc"], x["MemUsage"], x["MemPerc"], x["NetIO"],
                           x["BlockIO"], x["PIDs"]] for x in rows])
        sys.stdout.flush()
        if args.no_stream:
            return 0


def update(e: Engine, args) -> int:
    """Limits of running containers, changed live (and lifted with -1), through the runtime."""
    argv: list[str] = []
    size = ocispec.parse_size
    if args.memory:
        argv += ["--memory", str(-1 if args.memory == "-1" else size(args.memory))]
    if args.memory_swap:
        argv += ["--memory-swap", str(-1 if args.memory_swap == "-1" else size(args.memory_swap))]
    elif args.memory:  # as `run -m`: memory+swap follows memory (the runtime orders the two writes)
        argv += ["--memory-swap", argv[argv.index("--memory") + 1]]
    if args.memory_reservation:
        argv += ["--memory-reservation", str(size(args.memory_reservation))]
    if args.cpus:
        try:
            cpus = float(args.cpus)
        except ValueError:
            raise ocispec.OptionError(f"invalid --cpus {args.cpus!r}") from None
        argv += ["--cpu-period", "100000", "--cpu-quota", str(int(cpus * 100000) if cpus > 0 else -1)]
    for flag, val in (("--cpu-shares", args.cpu_shares), ("--cpuset-cpus", args.cpuset_cpus),
                      ("--pids-limit", args.pids_limit), ("--blkio-weight", args.blkio_weight),
                      ("--cpu-quota", args.cpu_quota), ("--cpu-period", args.cpu_period)):
        if val is not None:
            argv += [flag, str(val)]
    rate = None
    if args.net_rate:
        from kobako.cli.containers import _rate
        rate = 0 if args.net_rate == "-1" else _rate(args.net_rate)
    if not argv and not args.restart and rate is None:
        raise ocispec.OptionError("update needs at least one flag to change")
    from kobako.cli.containers import _each, _restart_policy

    def one(rec: dict) -> None:
        if args.restart:
            e.containers.update(rec["id"], restartPolicy=_restart_policy(args.restart))
        if argv:
            if e.state(rec) not in ("running", "paused"):
                raise ContainerConflict(f"container {rec['name']} is not running")
            e.runtime(["update", *argv, rec["id"]])
        if rate is not None:
            if e.state(rec) not in ("running", "paused") or (rec.get("net") or {}).get("mode") != "bridge":
                raise ContainerError(f"container {rec['name']} is not running on a bridge network")
            from kobako.network.endpoints import Endpoints
            Endpoints(e.root, e.run_dir).set_rate(rec["id"], rate)
            e.containers.update(rec["id"], net={**rec["net"], "rate": rate or None})  # kept for restarts

    return _each(e, args.args, one)


def port(e: Engine, args) -> int:
    from kobako.cli.networks import port_lines
    rec = e.containers.resolve(args.args[0])
    lines = port_lines(e, rec)
    if len(args.args) > 1:  # `port C 80[/tcp]`: that one only
        want = args.args[1] if "/" in args.args[1] else args.args[1] + "/tcp"
        lines = [ln.split(" -> ")[1] for ln in lines if ln.split(" -> ")[0] == want]
        if not lines:
            raise ContainerError(f"no public port '{want}' published for {rec['name']}")
    for ln in lines:
        print(ln)
    return 0


def service(e: Engine, args) -> int:
    """`kobako system service`: the Docker Engine API on a unix socket, until SIGTERM."""
    from kobako.api import server
    tls = (args.tlscacert, args.tlscert, args.tlskey)
    if args.tcp and not all(tls):
        raise ocispec.OptionError("--tcp needs --tlscacert, --tlscert and --tlskey: the API is root's power, "
                                  "kobako serves it over TCP only to clients with a certificate")
    if args.tcp and (":" not in args.tcp or not args.tcp.rpartition(":")[2].isdigit()):
        raise ocispec.OptionError(f"invalid --tcp {args.tcp!r}: HOST:PORT")
    for f in tls if args.tcp else ():
        if not os.path.isfile(f):
            raise ocispec.OptionError(f"no such file: {f}")
    server.serve(args.socket or server.default_socket(e.run_dir), args.tcp, tls if args.tcp else None)
    return 0


def version(e: Engine, args) -> int:
    from kobako.runtime.main import SPEC_VERSION
    print(f"Client:\n Version:    {__version__}\n Python:     {sys.version.split()[0]}\n"
          f"\nEngine (daemonless):\n Version:    {__version__}\n OCI spec:   {SPEC_VERSION}\n"
          f" Runtime:    kobako-runtime (in-process)\n OS/Arch:    linux/{os.uname().machine}")
    return 0


def info(e: Engine, args) -> int:
    from kobako.runtime import cgroups
    recs = e.containers.all()
    states = [e.state(r) for r in recs]
    v1, _ = cgroups.mounts()
    layout = "v1" if v1 else "v2"
    u = os.uname()
    doc = {
        "Containers": len(recs), "ContainersRunning": states.count("running"),
        "ContainersPaused": states.count("paused"), "ContainersStopped": states.count("exited"),
        "Images": len(e.images.all()), "Driver": "overlay", "DockerRootDir": e.root,
        "CgroupDriver": "cgroupfs", "CgroupVersion": "2" if layout == "v2" else "1",
        "KernelVersion": u.release, "OperatingSystem": _os_name(), "OSType": "linux",
        "Architecture": u.machine, "NCPU": os.cpu_count(),
        "MemTotal": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
        "Name": u.nodename, "ServerVersion": __version__, "DefaultRuntime": "kobako-runtime",
        "SecurityOptions": ["name=seccomp,profile=builtin"],
    }
    if args.format:
        formatted(args.format, [doc])
        return 0
    for k, v in doc.items():
        print(f" {k}: {v}")
    return 0


def _os_name() -> str:
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "Linux"


def restore(e: Engine, args) -> int:
    """After a reboot: start again every container whose policy says so (`always`, and
    `unless-stopped` unless the user stopped it). Meant for a boot-time unit."""
    n = 0
    for rec in e.containers.all():
        pol = (rec.get("restartPolicy") or {}).get("Name", "no")
        if pol not in ("always", "unless-stopped") or e.state(rec) in ("running", "paused"):
            continue
        if pol == "unless-stopped" and rec.get("stoppedByUser"):
            continue
        try:
            e.start(rec)
            print(rec["name"])
            n += 1
        except Exception as ex:  # noqa: BLE001 - the others still start
            from kobako.errors import describe
            sys.stderr.write(f"Error: {rec['name']}: {describe(ex)}\n")
    return 0


def events(e: Engine, args) -> int:
    """Past events from --since, then new ones as they come (until --until or Ctrl-C)."""
    import json

    from kobako.engine import events as ev
    from kobako.engine import logs
    since = logs.parse_since(args.since) if args.since else None
    until = logs.parse_since(args.until) if args.until else None
    flt: dict[str, list[str]] = {}
    for f in args.filter:
        k, eq, v = f.partition("=")
        if not eq or k not in ("type", "event", "container", "image", "label"):
            raise ocispec.OptionError(f"invalid filter {f!r}: type=, event=, container=, image=")
        flt.setdefault(k, []).append(v)

    def wanted(x: dict) -> bool:
        attrs = (x.get("Actor") or {}).get("Attributes") or {}
        checks = {"type": x.get("Type"), "event": x.get("Action"), "image": attrs.get("image")}
        for k, vals in flt.items():
            if k == "container":
                aid = (x.get("Actor") or {}).get("ID", "")
                if x.get("Type") != "container" or not any(v == attrs.get("name") or aid.startswith(v)
                                                             for v in vals):
                    return False
            elif k in checks and checks[k] not in vals:
                return False
        return True

    def show(x: dict) -> None:
        if args.format:
            formatted(args.format, [x])
        else:
            attrs = (x.get("Actor") or {}).get("Attributes") or {}
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(x["time"]))
            extra = ", ".join(f"{k}={v}" for k, v in sorted(attrs.items()))
            print(f"{stamp}.{x['timeNano'] % 1_000_000_000:09d} {x['Type']} {x['Action']} "
                  f"{(x.get('Actor') or {}).get('ID', '')} ({extra})")
        sys.stdout.flush()

    p = ev.path(e.root)
    offset = 0
    if since is not None:
        for line in open(p, "rb") if os.path.exists(p) else []:
            try:
                x = json.loads(line)
            except ValueError:
                continue
            if x["timeNano"] / 1e9 >= since and (until is None or x["timeNano"] / 1e9 <= until) and wanted(x):
                show(x)
    offset = os.path.getsize(p) if os.path.exists(p) else 0
    if until is not None and until <= time.time():
        return 0
    try:
        for x in logs.follow(p, offset, lambda: until is None or time.time() < until):
            if "Type" in x and wanted(x):
                show(x)
    except KeyboardInterrupt:
        pass
    return 0


EVENT_OPTS = [
    opt("--since", "since", "str", None, "show events since a time (RFC 3339) or a duration back"),
    opt("--until", "until", "str", None, "stop at a time or a duration back"),
    opt("-f --filter", "filter", "list", None, "type=, event=, container=, image="),
    opt("--format", "format", "str", None, "json or a Go template"),
]
LIMITS = [
    opt("-m --memory", "memory", "str", None, "memory limit (-1 lifts it)"),
    opt("--memory-swap", "memory_swap", "str", None, "memory + swap limit (-1: unlimited)"),
    opt("--memory-reservation", "memory_reservation", "str", None, "memory soft limit"),
    opt("--net-rate", "net_rate", "str", None, "network bandwidth each way, e.g. 10mbit (-1 lifts it)"),
    opt("--cpus", "cpus", "str", None, "number of CPUs (0 lifts the limit)"),
    opt("--cpu-quota", "cpu_quota", "int", None, "CFS quota in microseconds (-1 lifts it)"),
    opt("--cpu-period", "cpu_period", "int", None, "CFS period in microseconds"),
    opt("-c --cpu-shares", "cpu_shares", "int", None, "CPU shares"),
    opt("--cpuset-cpus", "cpuset_cpus", "str", None, "CPUs to run on"),
    opt("--pids-limit", "pids_limit", "int", None, "process limit (-1 lifts it)"),
    opt("--blkio-weight", "blkio_weight", "int", None, "block IO weight, 10 to 1000"),
    opt("--restart", "restart", "str", None, "a new restart policy"),
]
COMMANDS = {
    "stats": (Command("stats", "[OPTIONS] [CONTAINER...]", "Live resource usage of containers", [
        opt("--no-stream", "no_stream", help="print one sample and exit"),
        opt("-a --all", "all", help="accepted"),
        opt("--format", "format", "str", None, "json, table TEMPLATE or a Go template")]), stats),
    "system service": (Command("system service", "[OPTIONS]",
                               "Serve the Docker Engine API on a unix socket (docker CLI, docker-py)", [
                                   opt("--socket", "socket", "str", None,
                                       "the socket's path (default /run/kobako/docker.sock)"),
                                   opt("--tcp", "tcp", "str", None, "also listen on HOST:PORT (TLS only)"),
                                   opt("--tlscacert", "tlscacert", "str", None,
                                       "CA that signs client certificates"),
                                   opt("--tlscert", "tlscert", "str", None, "the server's certificate"),
                                   opt("--tlskey", "tlskey", "str", None, "the server's key")],
                               max_args=0), service),
    "update": (Command("update", "[OPTIONS] CONTAINER [CONTAINER...]",
                       "Change the limits of running containers, or lift them", LIMITS, min_args=1), update),
    "events": (Command("events", "[OPTIONS]", "Container and image events, past (--since) and live",
                       EVENT_OPTS, max_args=0), events),
    "system events": (Command("system events", "[OPTIONS]", "Same as kobako events", EVENT_OPTS,
                              max_args=0), events),
    "port": (Command("port", "CONTAINER", "List a container's published ports", min_args=1, max_args=2),
             port),
    "version": (Command("version", "", "Show the version", [
        opt("-f --format", "format", "str", None, "accepted")], max_args=0), version),
    "system info": (Command("system info", "", "Information about the host and kobako", [
        opt("-f --format", "format", "str", None, "Go template")], max_args=0), info),
    "system restore": (Command("system restore", "",
                               "Start containers whose restart policy is always or unless-stopped "
                               "(run it at boot)", max_args=0), restore),
}
