"""Commands about containers' resources and the host: stats, update, port, version,
system info, system restore."""

from __future__ import annotations

import os
import sys
import time

from kobako import __version__
from kobako.cli.output import binary_size, formatted, human_size, table
from kobako.cli.parser import Command, opt
from kobako.engine import ocispec
from kobako.engine.lifecycle import Engine
from kobako.engine.records import ContainerError


def _stats_row(doc: dict) -> dict:
    """docker stats' columns from a sample (engine/stats.py)."""
    from kobako.engine.stats import cpu_percent
    mem = doc["memory_stats"]
    usage, limit = mem.get("usage", 0), mem.get("limit", 0)
    row = {"ID": doc["id"][:12], "Name": doc["name"].lstrip("/"), "CPUPerc": f"{cpu_percent(doc):.2f}%",
           "MemUsage": f"{binary_size(usage)} / {binary_size(limit)}",
           "MemPerc": f"{(usage / limit * 100) if limit else 0:.2f}%",
           "PIDs": str(doc["pids_stats"].get("current", 0)), "NetIO": "-- / --", "BlockIO": "-- / --"}
    nets = doc.get("networks") or {}
    if nets:
        rx, tx = sum(n["rx_bytes"] for n in nets.values()), sum(n["tx_bytes"] for n in nets.values())
        row["NetIO"] = f"{human_size(rx)} / {human_size(tx)}"
    io = (doc.get("blkio_stats") or {}).get("io_service_bytes_recursive")
    if io is not None:  # docker's sums: every device, ops read and write (any case)
        rd = sum(x["value"] for x in io if x["op"].lower() == "read")
        wr = sum(x["value"] for x in io if x["op"].lower() == "write")
        row["BlockIO"] = f"{human_size(rd)} / {human_size(wr)}"
    return row


STATS_HEADERS = {"ID": "CONTAINER ID", "Name": "NAME", "CPUPerc": "CPU %", "MemUsage": "MEM USAGE / LIMIT",
                 "MemPerc": "MEM %", "NetIO": "NET I/O", "BlockIO": "BLOCK I/O", "PIDs": "PIDS"}


def stats(e: Engine, args) -> int:
    from kobako.engine.stats import sample
    recs = [e.containers.resolve(r) for r in args.args] if args.args else \
        [r for r in e.containers.all() if args.all or e.state(r) == "running"]
    heads = ["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "NET I/O", "BLOCK I/O", "PIDS"]
    prev: dict[str, dict] = {r["id"]: sample(e, r) for r in recs}  # a first sample: CPU % needs two
    while True:
        time.sleep(0.5 if args.no_stream else 1.0)
        rows = []
        for r in recs:
            prev[r["id"]] = sample(e, r, prev[r["id"]])
            row = _stats_row(prev[r["id"]])
            if e.state(e.containers.get(r["id"]) or r) not in ("running", "paused"):
                # a stopped container (stats -a): zeros, as docker shows it, not the host's memory
                row.update(CPUPerc="0.00%", MemUsage="0B / 0B", MemPerc="0.00%", PIDs="0",
                           NetIO="0B / 0B", BlockIO="0B / 0B")
            rows.append(row)
        if args.format:
            formatted(args.format, rows, STATS_HEADERS)
        else:
            if not args.no_stream and sys.stdout.isatty():
                sys.stdout.write("\x1b[2J\x1b[H")
            table(heads, [[x["ID"], x["Name"], x["CPUPerc"], x["MemUsage"], x["MemPerc"], x["NetIO"],
                           x["BlockIO"], x["PIDs"]] for x in rows])
        sys.stdout.flush()
        if args.no_stream:
            return 0


def update(e: Engine, args) -> int:
    """Limits of containers, changed live (and lifted with -1); a stopped one gets them at its
    next start."""
    from kobako.engine import resources
    size = ocispec.parse_size

    def sz(v: str | None) -> int | None:
        return None if v is None else -1 if v == "-1" else size(v)
    changes: dict = {"Memory": sz(args.memory), "MemorySwap": sz(args.memory_swap),
                     "MemoryReservation": sz(args.memory_reservation), "CpuShares": args.cpu_shares,
                     "CpusetCpus": args.cpuset_cpus, "PidsLimit": args.pids_limit,
                     "BlkioWeight": args.blkio_weight, "CpuQuota": args.cpu_quota,
                     "CpuPeriod": args.cpu_period}
    if args.cpus:
        try:
            cpus = float(args.cpus)
        except ValueError:
            raise ocispec.OptionError(f"invalid --cpus {args.cpus!r}: a number like 1.5") from None
        if cpus > 0:
            changes["NanoCpus"] = int(cpus * 10**9)
        else:  # 0 lifts the limit
            changes.update(CpuQuota=-1, CpuPeriod=100000)
    if args.restart:
        from kobako.cli.containers import _restart_policy
        changes["RestartPolicy"] = _restart_policy(args.restart)
    rate = None
    if args.net_rate:
        from kobako.cli.containers import _rate
        rate = 0 if args.net_rate == "-1" else _rate(args.net_rate)
    changes = resources.check(changes)
    if not changes and rate is None:
        raise ocispec.OptionError("update needs at least one flag to change")
    from kobako.cli.containers import _each

    def one(rec: dict) -> None:
        if rate is not None:
            resources.check_running_for_rate(e, rec)
        resources.update(e, rec, changes)
        if rate is not None:
            resources.set_net_rate(e, rec, rate)

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
    if args.format:
        formatted(args.format, [_version_doc()])
        return 0
    print(f"Client:\n Version:    {__version__}\n Python:     {sys.version.split()[0]}\n"
          f"\nEngine (daemonless):\n Version:    {__version__}\n OCI spec:   {SPEC_VERSION}\n"
          f" Runtime:    kobako-runtime (in-process)\n OS/Arch:    linux/{os.uname().machine}")
    return 0


def _version_doc() -> dict:
    """`docker version`'s document (Client and Server), for --format: '{{.Server.Version}}',
    '{{json .}}'. The server is this same program (no daemon); GoVersion names the Python
    that runs it."""
    import platform

    from kobako.api import API_VERSION, MIN_API_VERSION
    u = os.uname()
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(u.machine, u.machine)
    lang = f"python{platform.python_version()}"
    client = {"Platform": {"Name": "kobako"}, "Version": __version__, "ApiVersion": API_VERSION,
              "DefaultAPIVersion": API_VERSION, "GitCommit": "", "GoVersion": lang, "Os": "linux",
              "Arch": arch, "BuildTime": "", "Context": "default"}
    details = {"ApiVersion": API_VERSION, "Arch": arch, "BuildTime": "", "Experimental": "false",
               "GitCommit": "", "GoVersion": lang, "KernelVersion": u.release,
               "MinAPIVersion": MIN_API_VERSION, "Os": "linux"}
    server = {"Platform": {"Name": "kobako"},
              "Components": [{"Name": "Engine", "Version": __version__, "Details": details}],
              "Version": __version__, "ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION,
              "GitCommit": "", "GoVersion": lang, "Os": "linux", "Arch": arch, "KernelVersion": u.release,
              "BuildTime": ""}
    return {"Client": client, "Server": server}


def info(e: Engine, args) -> int:
    from kobako.engine.views import system_info
    doc = system_info(e)
    if args.format:  # docker's: the server's document with ClientInfo beside it
        formatted(args.format, [{**doc, "ClientInfo": _client_info(doc)}])
        return 0
    sys.stdout.write(info_text(doc, _client_info(doc)))
    return 0


def _client_info(doc: dict) -> dict:
    return {"Debug": bool(doc.get("Debug")), "Version": __version__, "Context": "default",
            "Plugins": [], "Warnings": None}


def info_text(doc: dict, client: dict) -> str:
    """`docker info`'s layout (cli/command/system/info.go) for the GET /info document."""
    out = ["Client:", f" Version:    {client['Version']}", f" Context:    {client['Context']}",
           f" Debug Mode: {str(client['Debug']).lower()}", "", "Server:"]

    def line(label: str, value: object) -> None:
        out.append(f" {label}: {value}")

    def items(label: str, values: list | None) -> None:
        if values:
            out.append(f" {label}:")
            out.extend(f"  {v}" for v in values)

    line("Containers", doc["Containers"])
    out += [f"  Running: {doc['ContainersRunning']}", f"  Paused: {doc['ContainersPaused']}",
            f"  Stopped: {doc['ContainersStopped']}"]
    line("Images", doc["Images"])
    line("Server Version", doc["ServerVersion"])
    line("Storage Driver", doc["Driver"])
    out.extend(f"  {k}: {v}" for k, v in doc.get("DriverStatus") or [])
    line("Logging Driver", doc["LoggingDriver"])
    line("Cgroup Driver", doc["CgroupDriver"])
    line("Cgroup Version", doc["CgroupVersion"])
    out.append(" Plugins:")
    for kind in ("Volume", "Network", "Authorization", "Log"):
        if (doc.get("Plugins") or {}).get(kind):
            out.append(f"  {kind}: {' '.join(doc['Plugins'][kind])}")
    line("Swarm", doc["Swarm"]["LocalNodeState"])
    line("Runtimes", " ".join(sorted(doc.get("Runtimes") or {})))
    line("Default Runtime", doc["DefaultRuntime"])
    line("Init Binary", doc.get("InitBinary") or "")
    out.append(" Security Options:")
    for opt_ in doc.get("SecurityOptions") or []:
        fields = dict(f.split("=", 1) for f in opt_.split(",") if "=" in f)
        out.append(f"  {fields.get('name', opt_)}")
        out.extend(f"   {k.capitalize()}: {v}" for k, v in fields.items() if k != "name")
    line("Kernel Version", doc["KernelVersion"])
    line("Operating System", doc["OperatingSystem"])
    line("OSType", doc["OSType"])
    line("Architecture", doc["Architecture"])
    line("CPUs", doc["NCPU"])
    line("Total Memory", binary_size(doc["MemTotal"]))
    line("Name", doc["Name"])
    line("ID", doc["ID"])
    line("Docker Root Dir", doc["DockerRootDir"])
    if doc.get("ConfigFiles"):  # kobako's own: the configuration files in force, in order
        items("Config Files", doc["ConfigFiles"])
    else:
        line("Config Files", "none")
    line("Debug Mode", str(bool(doc.get("Debug"))).lower())
    for label, key in (("HTTP Proxy", "HttpProxy"), ("HTTPS Proxy", "HttpsProxy"), ("No Proxy", "NoProxy")):
        if doc.get(key):
            line(label, doc[key])
    line("Experimental", str(bool(doc.get("ExperimentalBuild"))).lower())
    reg = doc.get("RegistryConfig") or {}
    items("Insecure Registries", list((reg.get("IndexConfigs") and [
        n for n, c in reg["IndexConfigs"].items() if not c.get("Secure")]) or []) + list(
        reg.get("InsecureRegistryCIDRs") or []))
    items("Registry Mirrors", reg.get("Mirrors"))
    line("Live Restore Enabled", str(bool(doc.get("LiveRestoreEnabled"))).lower())
    text = "\n".join(out) + "\n"
    warnings = doc.get("Warnings") or []
    return text + ("\n" + "\n".join(warnings) + "\n" if warnings else "")


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
    from kobako.engine import filters
    flt = filters.from_args(args.filter, ev.FILTERS)

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
            if ev.matches(x, flt, since, until):
                show(x)
    offset = os.path.getsize(p) if os.path.exists(p) else 0
    if until is not None and until <= time.time():
        return 0
    try:
        for x in logs.follow(p, offset, lambda: until is None or time.time() < until):
            if "Type" in x and ev.matches(x, flt):
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
        opt("-a --all", "all", help="all containers (default: running ones); stopped ones show zeros"),
        opt("--format", "format", "str", None, "json, table TEMPLATE or a Go template")]), stats),
    "system service": (Command("system service", "[OPTIONS]",
                               "Serve the Docker Engine API on a unix socket (docker CLI, docker-py)", [
                                   opt("--socket", "socket", "str", None,
                                       "the socket's path (default /run/kobako/docker.sock; rootless: "
                                       "$XDG_RUNTIME_DIR/kobako/docker.sock)"),
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
    "port": (Command("port", "CONTAINER [PRIVATE_PORT[/PROTO]]", "List a container's published ports",
                     min_args=1, max_args=2), port),
    "version": (Command("version", "[OPTIONS]", "Show the version", [
        opt("-f --format", "format", "str", None, "Go template: {{.Client.Version}}, {{json .}}")],
        max_args=0), version),
    "system info": (Command("system info", "[OPTIONS]", "Information about the host and kobako", [
        opt("-f --format", "format", "str", None, "Go template")], max_args=0), info),
    "system restore": (Command("system restore", "",
                               "Start containers whose restart policy is always or unless-stopped "
                               "(run it at boot)", max_args=0), restore),
}
