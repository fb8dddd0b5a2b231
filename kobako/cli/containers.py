"""Container commands: run, create, start, stop, kill, restart, pause, wait, logs, exec,
top, rename, rm, ps, commit, export, diff, cp and the rest of `kobako container`."""

from __future__ import annotations

import os
import sys

from kobako.cli.output import ago, confirmed, familiar, formatted, print_docs, table
from kobako.cli.parser import Command, opt
from kobako.engine import ocispec
from kobako.engine.lifecycle import Engine
from kobako.engine.records import ContainerError
from kobako.image import reference
from kobako.image.store import ImageNotFound


def _image_for_run(e: Engine, name: str, pull_policy: str, quiet: bool, platform: str | None = None) -> dict:
    if pull_policy not in ("missing", "always", "never"):
        raise ocispec.OptionError(f"invalid --pull {pull_policy!r}: missing, always or never")
    from kobako.image import manifest as mf
    want = mf.parse_platform(platform) if platform else None  # a bad one before anything is fetched
    if want is not None and want != mf.normalize(mf.host_platform()):
        from kobako.engine import emulation
        emulation.check_requested(want)  # no QEMU for it: say so before a pull
    if pull_policy == "always":
        img = _pull(e, name, quiet, want)
    else:
        try:
            img = e.images.resolve(name, want)  # a multi-platform image: that platform's
        except ImageNotFound:
            if pull_policy == "never" or reference.looks_like_id(name):
                raise
            sys.stderr.write(f"Unable to find image '{familiar(str(reference.parse(name)))}' locally\n")
            img = _pull(e, name, quiet, want)
    if want is not None or img.get("architecture") not in ("", None, mf.host_platform()["architecture"]):
        from kobako.engine import emulation
        for w in emulation.check_image(e, img, name, want):
            sys.stderr.write(f"WARNING: {w}\n")
    return img


def _pull(e: Engine, name: str, quiet: bool, platform: dict | None = None) -> dict:
    from kobako.engine.images import search
    from kobako.image.gc import undo_on_failure
    from kobako.image.pull import pull

    def attempt(ref: reference.Reference) -> dict:
        with undo_on_failure(e):
            return pull(e.images, e.snapshots, ref, platform)
    return search(name, attempt, lambda ref: sys.stderr.write(f"Trying to pull {ref}...\n"))[1]


def _mount(m: str) -> dict:
    """--mount type=bind|volume|tmpfs,source=..,target=..[,readonly][,tmpfs-size=..] as a Mounts entry."""
    kv = dict((p.split("=", 1) + [""])[:2] for p in m.split(",") if p)
    out: dict = {"Type": kv.get("type", "volume"),
                 "Target": kv.get("target") or kv.get("destination") or kv.get("dst") or "",
                 "Source": kv.get("source") or kv.get("src") or "",
                 "ReadOnly": "readonly" in kv or kv.get("ro") in ("", "true", "1")}
    if kv.get("tmpfs-size"):
        out["TmpfsOptions"] = {"SizeBytes": ocispec.parse_size(kv["tmpfs-size"])}
    return out


def _ports(specs: list[str]) -> tuple[dict, dict]:
    """-p [IP:][HOST:]CTR[/PROTO] as Docker's PortBindings and ExposedPorts."""
    if not specs:
        return {}, {}
    from kobako.network import ports
    bindings: dict[str, list[dict]] = {}
    for spec in specs:
        for p in ports.parse(spec):  # validates; ranges come out one port each
            key = f"{p['containerPort']}/{p['proto']}"
            hp = (f"{p['hostRange'][0]}-{p['hostRange'][1]}" if p.get("hostRange")
                  else str(p["hostPort"]) if p["hostPort"] else "")
            bindings.setdefault(key, []).append({"HostIp": p["hostIp"], "HostPort": hp})
    return bindings, {k: {} for k in bindings}


def _body(args) -> tuple[dict, dict]:
    """run/create's flags as Docker's create body (what the docker CLI sends dockerd), and
    kobako's own additions; the engine's spec checks both (engine/spec.py)."""
    size = ocispec.parse_size
    ep = [args.entrypoint] if args.entrypoint is not None else None
    tty = bool(args.tty) and (sys.stdin.isatty() or bool(args.detach))  # -d: the monitor holds the pty
    cfg: dict = {"Image": args.args[0], "Cmd": args.args[1:] or None, "Entrypoint": ep, "Env": _env(args),
                 "WorkingDir": args.workdir or "", "User": args.user or "", "Hostname": args.hostname or "",
                 "Domainname": args.domainname or "",
                 "Tty": tty, "OpenStdin": bool(args.interactive), "StdinOnce": bool(args.interactive),
                 "AttachStdin": bool(args.interactive), "AttachStdout": not args.detach,
                 "AttachStderr": not args.detach, "StopSignal": args.stop_signal or "",
                 "StopTimeout": args.stop_timeout, "MacAddress": args.mac_address or "",
                 "Labels": dict(lb.partition("=")[::2] for lb in args.label)}
    bindings, exposed = _ports(args.publish)
    exposed.update({(x if "/" in x else x + "/tcp"): {} for x in args.expose})
    volumes = {v: {} for v in args.volume if v.startswith("/") and ":" not in v}
    if exposed:
        cfg["ExposedPorts"] = exposed
    if volumes:
        cfg["Volumes"] = volumes
    if args.health_cmd or args.health_interval or args.health_timeout or args.health_retries is not None \
            or args.health_start_period or args.no_healthcheck:
        cfg["Healthcheck"] = _healthcheck(args)
    net = args.network or "default"
    host: dict = {
        "Binds": [v for v in args.volume if v not in volumes] or None,
        "Mounts": [_mount(m) for m in args.mount],
        "Tmpfs": {dest: o for dest, _, o in (t.partition(":") for t in args.tmpfs)} or None,
        "VolumesFrom": list(args.volumes_from) or None, "NetworkMode": net, "PortBindings": bindings,
        "PublishAllPorts": bool(args.publish_all), "AutoRemove": bool(args.rm),
        "Privileged": bool(args.privileged), "ReadonlyRootfs": bool(args.read_only), "Init": bool(args.init),
        "CapAdd": list(args.cap_add) or None, "CapDrop": list(args.cap_drop) or None,
        "SecurityOpt": list(args.security_opt) or None, "PidMode": args.pid or "", "IpcMode": args.ipc or "",
        "UTSMode": args.uts or "", "CgroupnsMode": args.cgroupns or "", "UsernsMode": args.userns or "",
        "ExtraHosts": list(args.add_host) or None, "Dns": list(args.dns), "DnsSearch": list(args.dns_search),
        "DnsOptions": list(args.dns_option), "GroupAdd": list(args.group_add) or None,
        "Links": list(args.link) or None, "Sysctls": dict(_pair(s, "--sysctl") for s in args.sysctl) or None,
        "Ulimits": [_ulimit(u) for u in args.ulimit] or None,
        "Memory": size(args.memory) if args.memory else 0,
        "MemoryReservation": size(args.memory_reservation) if args.memory_reservation else 0,
        "MemorySwap": (-1 if args.memory_swap == "-1" else size(args.memory_swap)) if args.memory_swap else 0,
        "MemorySwappiness": args.memory_swappiness, "OomKillDisable": bool(args.oom_kill_disable),
        "OomScoreAdj": args.oom_score_adj or 0,
        "NanoCpus": _nano_cpus(args.cpus) if args.cpus else 0, "CpuShares": args.cpu_shares or 0,
        "CpusetCpus": args.cpuset_cpus or "", "CpusetMems": args.cpuset_mems or "",
        "CpuPeriod": args.cpu_period or 0, "CpuQuota": args.cpu_quota or 0,
        "PidsLimit": args.pids_limit, "BlkioWeight": args.blkio_weight or 0,
        "ShmSize": size(args.shm_size) if args.shm_size else 0,
        "Devices": [_device(d) for d in args.device],
        "DeviceCgroupRules": list(args.device_cgroup_rule) or None,
        "RestartPolicy": _restart_policy(args.restart) if args.restart else None,
        "LogConfig": {"Type": args.log_driver or "json-file",
                      "Config": dict(_pair(o, "--log-opt") for o in args.log_opt)},
        "Runtime": args.runtime or "", "Isolation": args.isolation or "",
    }
    for field, flag in (("BlkioDeviceReadBps", args.device_read_bps),
                        ("BlkioDeviceWriteBps", args.device_write_bps),
                        ("BlkioDeviceReadIOps", args.device_read_iops),
                        ("BlkioDeviceWriteIOps", args.device_write_iops)):
        host[field] = [{"Path": p, "Rate": r} for p, _, r in (x.rpartition(":") for x in flag)] or None
    endpoint: dict = {}
    if args.ip or args.ip6 or args.network_alias:
        ipam = {k: v for k, v in (("IPv4Address", args.ip), ("IPv6Address", args.ip6)) if v}
        endpoint = {"IPAMConfig": ipam or None, "Aliases": list(args.network_alias) or None}
    body = {**cfg, "HostConfig": host,
            "NetworkingConfig": {"EndpointsConfig": {net: endpoint}} if endpoint else {}}
    extra: dict = {}
    if args.net_rate:
        extra["NetRate"] = _rate(args.net_rate)
    if args.uidmap or args.gidmap:
        extra["UidMap"], extra["GidMap"] = list(args.uidmap), list(args.gidmap)
    return body, extra


def _pair(s: str, flag: str) -> tuple[str, str]:
    k, eq, v = s.partition("=")
    if not eq or not k:
        raise ocispec.OptionError(f"invalid {flag} {s!r}: use NAME=VALUE")
    return k, v


def _ulimit(s: str) -> dict:
    name, soft, hard = ocispec.parse_ulimit(s)
    return {"Name": name, "Soft": soft, "Hard": hard}


def _device(s: str) -> dict:
    host, ctr, perms = ocispec.parse_device(s)
    return {"PathOnHost": host, "PathInContainer": ctr, "CgroupPermissions": perms}


def _nano_cpus(s: str) -> int:
    try:
        v = float(s)
    except ValueError:
        raise ocispec.OptionError(f"invalid --cpus {s!r}: a number like 1.5") from None
    if v <= 0:
        raise ocispec.OptionError(f"invalid --cpus {s}: between 0.01 and {os.cpu_count()}")
    return int(v * 1e9)


def _duration(s: str | None, flag: str) -> int:
    """A --health-* duration (30s, 1m30s, 500ms) in nanoseconds; 0 when not given."""
    if not s:
        return 0
    from kobako.engine.health import duration_ns
    try:
        return duration_ns(s)
    except ValueError as e:
        raise ocispec.OptionError(f"invalid {flag} {s!r}: {e}") from None


def _healthcheck(args) -> dict:
    if args.no_healthcheck:
        if args.health_cmd:
            raise ocispec.OptionError("--no-healthcheck conflicts with --health-* options")
        return {"Test": ["NONE"]}
    return {"Test": ["CMD-SHELL", args.health_cmd] if args.health_cmd else None,
            "Interval": _duration(args.health_interval, "--health-interval"),
            "Timeout": _duration(args.health_timeout, "--health-timeout"),
            "StartPeriod": _duration(args.health_start_period, "--health-start-period"),
            "Retries": args.health_retries or 0}


def _rate(s: str) -> int:
    """--net-rate 10mbit / 1MB (bytes) / 500kbit -> bits per second."""
    t = s.strip().lower()
    for suf, m in (("gbit", 10**9), ("mbit", 10**6), ("kbit", 10**3), ("bit", 1), ("gb", 8 << 30),
                      ("mb", 8 << 20), ("kb", 8 << 10), ("g", 8 << 30), ("m", 8 << 20), ("k", 8 << 10),
                      ("b", 8)):
        if t.endswith(suf):
            num, mult = t[:-len(suf)], m
            break
    else:
        num, mult = t, 8
    try:
        v = int(float(num) * mult)
    except ValueError:
        v = 0
    if v < 8000:
        raise ocispec.OptionError(f"invalid --net-rate {s!r}: a rate like 10mbit, 500kbit or 2mb "
                                  "(bytes/s), at least 1kb")
    return v


def _create(e: Engine, args, starting: bool = False) -> dict:
    from kobako.engine.spec import ContainerSpec
    body, extra = _body(args)
    spec = ContainerSpec.from_docker(body, args.name, extra)
    if spec.host["AutoRemove"] and spec.host["RestartPolicy"]["Name"] not in ("", "no"):
        raise ocispec.OptionError("conflicting options: --restart and --rm")
    img = _image_for_run(e, args.args[0], args.pull or "missing", args.quiet, args.platform)
    return e.create_container(spec, img, args.args[0], starting=starting)


def _restart_policy(s: str) -> dict:
    name, _, n = s.partition(":")
    if name not in ("no", "always", "unless-stopped", "on-failure"):
        raise ocispec.OptionError(f"invalid restart policy {s!r}: "
                                  "no, always, unless-stopped or on-failure[:N]")
    if n and (name != "on-failure" or not n.isdigit()):
        raise ocispec.OptionError(f"invalid restart policy {s!r}: only on-failure takes a retry count")
    return {"Name": name, "MaximumRetryCount": int(n or 0)}


def run(e: Engine, args) -> int:
    rec = _create(e, args, starting=not args.detach)
    if args.detach:
        try:
            e.start(rec)
        except BaseException:
            if args.rm:
                e.remove(e.containers.get(rec["id"]) or rec, force=True)
            raise
        print(rec["id"])
        return 0
    return e.run_foreground(rec, remove=args.rm, sig_proxy=args.sig_proxy)


def create(e: Engine, args) -> int:
    rec = _create(e, args)
    print(rec["id"])
    return 0


def start(e: Engine, args) -> int:
    rc = 0
    for ref in args.args:
        rec = e.containers.resolve(ref)
        if args.attach and len(args.args) == 1:
            from kobako.cli import attach
            if args.interactive or (rec.get("options") or {}).get("tty"):
                return attach.attach_started(e, rec, stdin=bool(args.interactive), sig_proxy=args.sig_proxy)
            size = _log_size(e, rec)
            e.start(rec)
            with attach.signals_proxied(e, rec, args.sig_proxy):
                return _follow_until_exit(e, rec, size)
        try:
            e.start(rec)
            print(ref)
        except Exception as ex:  # noqa: BLE001 - per container, like docker
            from kobako.errors import describe
            sys.stderr.write(f"Error: {describe(ex)}\n")
            rc = 1
    return rc


def _log_size(e: Engine, rec: dict) -> int:
    try:
        return os.path.getsize(e.containers.path(rec["id"], f"{rec['id']}-json.log"))
    except OSError:
        return 0


def _follow_until_exit(e: Engine, rec: dict, offset: int) -> int:
    from kobako.engine import logs
    path = e.containers.path(rec["id"], f"{rec['id']}-json.log")
    for ent in logs.follow(path, offset, lambda: e.state(e.containers.get(rec["id"]) or rec) == "running"):
        out = sys.stdout if ent.get("stream") != "stderr" else sys.stderr
        out.write(ent.get("log", ""))
        out.flush()
    return e.wait(e.containers.get(rec["id"]) or rec)


def _each(e: Engine, refs: list[str], fn) -> int:
    rc = 0
    for ref in refs:
        try:
            fn(e.containers.resolve(ref))
            print(ref)
        except Exception as ex:  # noqa: BLE001 - per container, like docker
            from kobako.errors import describe
            sys.stderr.write(f"Error: {describe(ex)}\n")
            rc = 1
    return rc


def stop(e: Engine, args) -> int:
    return _each(e, args.args, lambda rec: e.stop(rec, args.time))


def kill(e: Engine, args) -> int:
    return _each(e, args.args, lambda rec: e.kill(rec, args.signal or "KILL"))


def restart(e: Engine, args) -> int:
    return _each(e, args.args, lambda rec: e.restart(rec, args.time))


def pause(e: Engine, args) -> int:
    return _each(e, args.args, e.pause)


def unpause(e: Engine, args) -> int:
    return _each(e, args.args, e.unpause)


def wait(e: Engine, args) -> int:
    rc = 0
    for ref in args.args:
        print(e.wait(e.containers.resolve(ref)))
    return rc


def logs(e: Engine, args) -> int:
    import time

    from kobako.engine import logs as lg
    rec = e.containers.resolve(args.args[0])
    cdir = e.containers.path(rec["id"])
    since = lg.parse_bound(args.since, "--since")
    until = lg.parse_bound(args.until, "--until")
    ents = lg.select(cdir, rec["id"], since=since, until=until, tail=lg.parse_tail(args.tail))

    def emit(x: dict) -> None:
        out = sys.stdout if x.get("stream") != "stderr" else sys.stderr
        out.write((x.get("time", "") + " " if args.timestamps else "") + (details(x) if args.details else "")
                  + x.get("log", ""))
        out.flush()

    for x in ents:
        emit(x)
    if args.follow and (until is None or until > time.time()):
        path = os.path.join(cdir, f"{rec['id']}-json.log")
        size = os.path.getsize(path) if os.path.exists(path) else 0
        running = ("running", "restarting", "paused")
        for x in lg.follow(path, size, lambda: e.state(e.containers.get(rec["id"]) or rec) in running
                           and (until is None or time.time() <= until)):
            if until is None or lg.parse_time(x.get("time") or "") <= until:
                emit(x)
    return 0


def details(entry: dict) -> str:
    """`logs --details`: the entry's extra attributes as docker writes them before the line,
    k=v pairs (query-escaped, sorted by key) joined by commas, then a space, also when
    there are none."""
    attrs = entry.get("attrs") or {}
    if not attrs:
        return " "
    from urllib.parse import quote_plus
    return ",".join(f"{quote_plus(k)}={quote_plus(str(v))}" for k, v in sorted(attrs.items())) + " "


def exec_(e: Engine, args) -> int:
    from kobako.engine import execs
    rec = e.containers.resolve(args.args[0])
    execs.check_running(e, rec)
    if len(args.args) < 2:
        raise ocispec.OptionError("exec needs a command to run")
    env = [v if "=" in v else f"{v}={os.environ.get(v, '')}" for v in args.env]  # -e NAME: ours
    cfg = execs.ExecConfig(args.args[1:], env, args.user or "", args.workdir or "",
                           tty=args.tty and sys.stdin.isatty() and not args.detach,
                           stdin=bool(args.interactive), privileged=bool(args.privileged))
    return execs.run_here(e, rec, cfg, detach=bool(args.detach))


def top(e: Engine, args) -> int:
    from kobako.engine.processes import top as processes
    titles, rows = processes(e, e.containers.resolve(args.args[0]), args.args[1:])
    table(titles, rows)
    return 0


def rename(e: Engine, args) -> int:
    e.rename(e.containers.resolve(args.args[0]), args.args[1])
    return 0


def inspect(e: Engine, args) -> int:
    kind = args.type or ""
    if kind not in ("", "container", "image"):
        raise ocispec.OptionError(f'"{kind}" is not a valid value for --type: use container or image')
    docs, errors = [], []
    for ref in args.args:
        if kind == "image":
            try:
                from kobako.engine.views import image_doc
                docs.append(image_doc(e, e.images.resolve(ref)))
            except Exception:  # noqa: BLE001 - reported per name, like docker
                errors.append(f"no such image: {ref}")
            continue
        try:
            rec = e.containers.resolve(ref)
        except Exception:  # noqa: BLE001 - docker falls back to images
            if kind == "container":
                errors.append(f"no such container: {ref}")
                continue
            try:
                from kobako.engine.views import image_doc
                docs.append(image_doc(e, e.images.resolve(ref)))
                continue
            except Exception:  # noqa: BLE001
                errors.append(f"no such object: {ref}")
                continue
        from kobako.engine.views import container_json, container_sizes
        doc = container_json(e, rec)
        if args.size:
            doc.update(container_sizes(e, rec))
        docs.append(doc)
    return print_docs(docs, args.format, errors)


def _ps_ports(e: Engine, rec: dict, state: str) -> str:
    if state not in ("running", "paused") or (rec.get("net") or {}).get("mode") != "bridge":
        return ""
    from kobako.engine.views import ps_ports
    return ps_ports(e, rec)


def _env(args) -> list[str]:
    env = []
    for f in args.env_file:
        try:
            with open(f) as fh:
                env += [ln.strip() for ln in fh if ln.strip() and not ln.lstrip().startswith("#")]
        except OSError as ex:
            raise ocispec.OptionError(f"cannot read env file {f}: {ex.strerror}") from None
    out = []
    for x in env + list(args.env):  # NAME alone: its value here, as the docker CLI sends it
        if "=" in x:
            out.append(x)
        elif x in os.environ:
            out.append(f"{x}={os.environ[x]}")
    return out


def rm(e: Engine, args) -> int:
    return _each(e, args.args, lambda rec: e.remove(rec, force=args.force, volumes=args.volumes))


def ps(e: Engine, args) -> int:
    from kobako.engine import filters
    from kobako.engine.views import CONTAINER_FILTERS, container_list, container_status
    rows = []
    last = 1 if args.latest else args.last if args.last is not None else -1
    states = e.listed()
    flt = filters.from_args(args.filter, CONTAINER_FILTERS)
    for rec, state in container_list(e, states, flt, bool(args.all), last):
        status = container_status(rec, state)
        cmd = " ".join((rec.get("options") or {}).get("command") or [])
        rows.append({"ID": rec["id"] if args.no_trunc else rec["id"][:12],
                     "Image": familiar(rec["imageName"]),
                     "Command": f'"{cmd if args.no_trunc or len(cmd) < 20 else cmd[:19] + "…"}"',
                     "CreatedAt": rec["created"], "RunningFor": ago(rec["created"]), "Status": status,
                     "State": state, "Ports": _ps_ports(e, rec, state), "Names": rec["name"],
                     "Labels": ",".join(f"{k}={v}" for k, v in (rec.get("labels") or {}).items()),
                     "Label": lambda k, r=rec: (r.get("labels") or {}).get(k, ""),  # docker's {{.Label "k"}}
                     "Size": _size(e, rec) if args.size else ""})
    if args.quiet:
        for r in rows:
            print(r["ID"])
        return 0
    if args.format:
        formatted(args.format, rows, {"ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND",
                                      "RunningFor": "CREATED", "Status": "STATUS", "Ports": "PORTS",
                                      "Names": "NAMES"})
        return 0
    heads = ["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"]
    table(heads + (["SIZE"] if args.size else []),
          [[r["ID"], r["Image"], r["Command"], r["RunningFor"], r["Status"], r["Ports"], r["Names"]]
           + ([r["Size"]] if args.size else []) for r in rows])
    return 0


def _size(e: Engine, rec: dict) -> str:
    from kobako.cli.output import human_size
    from kobako.paths import dir_size
    return human_size(dir_size(e.containers.path(rec["id"], "upper"), allocated=True))


def container_prune(e: Engine, args) -> int:
    if not confirmed(args.force, "This will remove all stopped containers."):
        return 0
    from kobako.cli.output import human_size
    flt: dict[str, list[str]] = {}
    for f in args.filter:
        k, eq, v = f.partition("=")
        if not eq:
            raise ocispec.OptionError(f"invalid filter {f!r}: until=TIME or label=KEY[=VALUE]")
        flt.setdefault(k, []).append(v)
    removed, freed = e.prune(flt)
    if removed:
        print("Deleted Containers:\n" + "\n".join(removed) + "\n")
    print(f"Total reclaimed space: {human_size(freed)}")
    return 0


def commit(e: Engine, args) -> int:
    from kobako.engine.images import commit as engine_commit
    repo, tag = None, None
    if len(args.args) > 1:
        ref = reference.parse(args.args[1])
        repo, tag = ref.name, ref.tag
    img = engine_commit(e, args.args[0], repo, tag, args.change, args.message or "", args.author or "",
                        pause=bool(args.pause))
    print(img["id"])
    return 0


def diff(e: Engine, args) -> int:
    from kobako.engine.changes import changes
    for kind, path in changes(e, e.containers.resolve(args.args[0])):
        print(f"{kind} {path}")
    return 0


def export(e: Engine, args) -> int:
    from kobako.engine.changes import export as export_tar
    rec = e.containers.resolve(args.args[0])
    if not args.output and sys.stdout.isatty():
        raise ContainerError("refusing to write an archive to a terminal: use -o FILE or redirect stdout")
    if not args.output:
        export_tar(e, rec, sys.stdout.buffer)
        return 0
    tmp = args.output + ".kobako-tmp"
    try:
        with open(tmp, "wb") as out:
            export_tar(e, rec, out)
        os.replace(tmp, args.output)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return 0


def cp(e: Engine, args) -> int:
    from kobako.engine import copy
    src, dest = args.args

    def split(s: str) -> tuple[str | None, str]:
        if ":" in s and not s.startswith(("/", ".")):
            c, _, p = s.partition(":")
            return c, p or "/"
        return None, s

    (sc, sp), (dc, dp) = split(src), split(dest)
    if (sc is None) == (dc is None):
        raise ocispec.OptionError("copying between containers or within the host is not supported: "
                                  "use CONTAINER:PATH on exactly one side")
    if sc is not None:
        if dp == "-" and sys.stdout.isatty():
            raise ocispec.OptionError("refusing to write a tar stream to a terminal: redirect stdout")
        copy.from_container(e, e.containers.resolve(sc), sp, dp, follow=args.follow)
    elif sp == "-":  # a tar stream on stdin, extracted into the directory DEST
        copy.to_container(e, e.containers.resolve(dc), sp, dp, tar_in=sys.stdin.buffer,
                          archive=args.archive)
    else:
        copy.to_container(e, e.containers.resolve(dc), sp, dp, follow=args.follow,
                          archive=args.archive)
    return 0


def attach(e: Engine, args) -> int:
    from kobako.cli.attach import cmd
    return cmd(e, args)


TRACE = opt("--trace", "trace", help="print each primitive step (system call, tool, object, time) to stderr")
RUN_OPTS = [
    opt("-d --detach", "detach", help="run in the background, under the monitor"),
    opt("-i --interactive", "interactive", help="keep stdin open"),
    opt("-t --tty", "tty", help="allocate a pseudo-terminal"),
    opt("--rm", "rm", help="remove the container when it exits"),
    opt("--name", "name", "str", None, "name the container"),
    opt("-e --env", "env", "list", None, "set an environment variable"),
    opt("--env-file", "env_file", "list", None, "read environment variables from a file"),
    opt("-w --workdir", "workdir", "str", None, "working directory inside the container"),
    opt("-u --user", "user", "str", None, "user[:group] or uid[:gid]"),
    opt("--entrypoint", "entrypoint", "str", None, "override the image's entrypoint"),
    opt("-h --hostname", "hostname", "str", None, "container host name"),
    opt("--domainname", "domainname", "str", None, "container NIS domain name"),
    opt("--read-only", "read_only", help="mount the root filesystem read-only"),
    opt("--network --net", "network", "str", None,
        "bridge (default), host, none, container:NAME or a network's name"),
    opt("-p --publish", "publish", "list", None, "publish a port: [IP:][HOST-PORT:]CTR-PORT[/tcp|udp]"),
    opt("-P --publish-all", "publish_all", help="publish every exposed port on a free host port"),
    opt("--expose", "expose", "list", None, "expose a port (or range) for -P"),
    opt("--ip", "ip", "str", None, "the container's IPv4 address on a user network"),
    opt("--ip6", "ip6", "str", None, "the container's IPv6 address on a user network with IPv6"),
    opt("--network-alias", "network_alias", "list", None, "another name on the user network"),
    opt("--net-rate", "net_rate", "str", None, "bandwidth limit each way, e.g. 10mbit or 1mb (bytes/s)"),
    opt("--add-host", "add_host", "list", None, "an /etc/hosts line NAME:IP (IP may be host-gateway)"),
    opt("--mac-address", "mac_address", "str", None, "the MAC address of the container's eth0"),
    opt("--dns", "dns", "list", None, "a DNS server for the container's resolv.conf"),
    opt("--dns-search", "dns_search", "list", None, "a DNS search domain"),
    opt("--dns-option", "dns_option", "list", None, "a resolv.conf option (ndots:2 ...)"),
    opt("-m --memory", "memory", "str", None, "memory limit (e.g. 64m)"),
    opt("-v --volume", "volume", "list", None, "HOST-PATH:CTR-PATH[:ro], NAME:CTR-PATH[:ro] or CTR-PATH"),
    opt("--mount", "mount", "list", None, "type=bind|volume|tmpfs,source=..,target=..[,readonly]"),
    opt("--tmpfs", "tmpfs", "list", None, "a tmpfs at PATH[:OPTIONS]"),
    opt("--volumes-from", "volumes_from", "list", None, "the volumes of another container[:ro|rw]"),
    opt("--pull", "pull", "str", None, "missing (default), always or never"),
    opt("-q --quiet", "quiet", help="do not print pull progress"),
    opt("--restart", "restart", "str", None, "no, always, unless-stopped or on-failure[:N]"),
    opt("--stop-signal", "stop_signal", "str", None, "signal that stops the container (default TERM)"),
    opt("--stop-timeout", "stop_timeout", "int", None, "seconds to wait before killing on stop"),
    opt("-l --label", "label", "list", None, "set a label KEY=VALUE"),
    opt("--privileged", "privileged", help="all capabilities and devices, nothing masked"),
    opt("--init", "init", help="run tini as PID 1: it reaps zombies and forwards signals"),
    opt("--cap-add", "cap_add", "list", None, "add a capability (or ALL)"),
    opt("--cap-drop", "cap_drop", "list", None, "drop a capability (or ALL)"),
    opt("--security-opt", "security_opt", "list", None, "no-new-privileges, seccomp=PROFILE|unconfined"),
    opt("--pid", "pid", "str", None, "host: share the host's PID namespace"),
    opt("--ipc", "ipc", "str", None, "host: share the host's IPC namespace"),
    opt("--uts", "uts", "str", None, "host: share the host's hostname"),
    opt("--cgroupns", "cgroupns", "str", None, "host or private"),
    opt("--ulimit", "ulimit", "list", None, "NAME=SOFT[:HARD], e.g. nofile=1024:2048"),
    opt("--sysctl", "sysctl", "list", None, "a namespaced sysctl NAME=VALUE"),
    opt("--shm-size", "shm_size", "str", None, "size of /dev/shm (default 64m)"),
    opt("--cpus", "cpus", "str", None, "number of CPUs (CFS quota), e.g. 1.5"),
    opt("-c --cpu-shares", "cpu_shares", "int", None, "CPU shares (relative weight)"),
    opt("--cpuset-cpus", "cpuset_cpus", "str", None, "CPUs to run on (0-3, 0,1)"),
    opt("--pids-limit", "pids_limit", "int", None, "maximum number of processes"),
    opt("--memory-reservation", "memory_reservation", "str", None, "memory soft limit"),
    opt("--memory-swap", "memory_swap", "str", None, "memory + swap limit (-1: unlimited swap)"),
    opt("--blkio-weight", "blkio_weight", "int", None, "block IO weight, 10 to 1000"),
    opt("--device", "device", "list", None, "a host device: /dev/X[:/dev/Y][:rwm]"),
    opt("--device-read-bps", "device_read_bps", "list", None, "read rate limit /dev/X:RATE (e.g. 1mb)"),
    opt("--device-write-bps", "device_write_bps", "list", None, "write rate limit /dev/X:RATE"),
    opt("--device-read-iops", "device_read_iops", "list", None, "read IO/s limit /dev/X:N"),
    opt("--device-write-iops", "device_write_iops", "list", None, "write IO/s limit /dev/X:N"),
    opt("--userns", "userns", "str", None, "host, auto[:size=N], private, container:NAME; keep-id rootless"),
    opt("--uidmap", "uidmap", "list", None, "map container uids CTR:HOST:SIZE (a user namespace)"),
    opt("--gidmap", "gidmap", "list", None, "map container gids CTR:HOST:SIZE"),
    opt("--log-driver", "log_driver", "str", None, "json-file (default), local or none"),
    opt("--log-opt", "log_opt", "list", None, "log driver options: max-size=10m, max-file=3, compress=true"),
    opt("--group-add", "group_add", "list", None, "an additional group (name or GID) of the process"),
    opt("--link", "link", "list", None, "a legacy link to a running container NAME[:ALIAS]"),
    opt("--memory-swappiness", "memory_swappiness", "int", None, "0 to 100: how eagerly to swap"),
    opt("--oom-kill-disable", "oom_kill_disable", help="do not OOM-kill the container (cgroup v1)"),
    opt("--oom-score-adj", "oom_score_adj", "int", None, "the OOM score adjustment, -1000 to 1000"),
    opt("--cpuset-mems", "cpuset_mems", "str", None, "memory nodes to use (0-3, 0,1)"),
    opt("--cpu-period", "cpu_period", "int", None, "CFS period in microseconds"),
    opt("--cpu-quota", "cpu_quota", "int", None, "CFS quota in microseconds"),
    opt("--device-cgroup-rule", "device_cgroup_rule", "list", None, "a device rule, e.g. 'c 7:128 rwm'"),
    opt("--runtime", "runtime", "str", None,
        "runc, kobako, kobako-runtime or io.containerd.runc.v2 (all kobako's own runtime)"),
    opt("--isolation", "isolation", "str", None, "default (the only one on Linux)"),
    opt("--health-cmd", "health_cmd", "str", None, "a command (run by the shell) that checks health"),
    opt("--health-interval", "health_interval", "str", None, "time between checks (default 30s)"),
    opt("--health-timeout", "health_timeout", "str", None, "time a check may take (default 30s)"),
    opt("--health-retries", "health_retries", "int", None, "failures in a row that mean unhealthy"),
    opt("--health-start-period", "health_start_period", "str", None, "grace time before failures count"),
    opt("--no-healthcheck", "no_healthcheck", help="disable the image's HEALTHCHECK"),
    opt("--platform", "platform", "str", None, "os/arch[/variant] of the image to pull and run"),
    TRACE,
]
SIG_PROXY = opt("--sig-proxy", "sig_proxy", "bool", True,
                "pass the signals this command gets to the container (default true; not with a tty)")
STOP_T = opt("-t --time", "time", "int", None, "seconds to wait before killing it (default 10)")
COMMANDS = {
    "run": (Command("run", "[OPTIONS] IMAGE [COMMAND] [ARG...]",
                    "Create and run a new container from an image", [*RUN_OPTS, SIG_PROXY],
                    interspersed=False, min_args=1), run),
    "create": (Command("create", "[OPTIONS] IMAGE [COMMAND] [ARG...]", "Create a new container",
                       RUN_OPTS, interspersed=False, min_args=1), create),
    "start": (Command("start", "[OPTIONS] CONTAINER [CONTAINER...]", "Start one or more containers", [
        opt("-a --attach", "attach", help="print the container's output until it exits"),
        opt("-i --interactive", "interactive", help="attach the container's stdin"), SIG_PROXY, TRACE],
                      min_args=1),
              start),
    "attach": (Command("attach", "[OPTIONS] CONTAINER",
                       "Attach to a running container's stdio (detach with ctrl-p ctrl-q)", [
                           opt("--no-stdin", "no_stdin", help="do not attach stdin"),
                           opt("--detach-keys", "detach_keys", "str", None, "default ctrl-p,ctrl-q"),
                           SIG_PROXY],
                       min_args=1, max_args=1), attach),
    "stop": (Command("stop", "[OPTIONS] CONTAINER [CONTAINER...]",
                     "Stop containers: the stop signal, then SIGKILL after a grace period", [STOP_T],
                     min_args=1), stop),
    "kill": (Command("kill", "[OPTIONS] CONTAINER [CONTAINER...]", "Send a signal (default KILL)", [
        opt("-s --signal", "signal", "str", None, "signal to send")], min_args=1), kill),
    "restart": (Command("restart", "[OPTIONS] CONTAINER [CONTAINER...]", "Restart containers", [STOP_T],
                        min_args=1), restart),
    "pause": (Command("pause", "CONTAINER [CONTAINER...]", "Freeze every process of containers",
                      min_args=1), pause),
    "unpause": (Command("unpause", "CONTAINER [CONTAINER...]", "Thaw paused containers", min_args=1),
                unpause),
    "wait": (Command("wait", "CONTAINER [CONTAINER...]", "Wait for containers to exit; print exit codes",
                     min_args=1), wait),
    "logs": (Command("logs", "[OPTIONS] CONTAINER", "Show a container's output (json-file log)", [
        opt("-f --follow", "follow", help="keep printing new output while it runs"),
        opt("-n --tail", "tail", "str", None, "only the last N lines"),
        opt("-t --timestamps", "timestamps", help="prefix each line with its time"),
        opt("--since", "since", "str", None, "since a time (RFC 3339) or a duration back (10m)"),
        opt("--until", "until", "str", None, "until a time or a duration back"),
        opt("--details", "details", help="show the attributes stored with each line (docker's)")],
                     min_args=1, max_args=1), logs),
    "exec": (Command("exec", "[OPTIONS] CONTAINER COMMAND [ARG...]", "Run a command in a running container", [
        opt("-d --detach", "detach", help="run in the background"),
        opt("-i --interactive", "interactive", help="keep stdin open"),
        opt("-t --tty", "tty", help="allocate a pseudo-terminal"),
        opt("-e --env", "env", "list", None, "set an environment variable"),
        opt("-u --user", "user", "str", None, "user[:group] or uid[:gid]"),
        opt("-w --workdir", "workdir", "str", None, "working directory"),
        opt("--privileged", "privileged", help="extra capabilities")], interspersed=False, min_args=2),
             exec_),
    "top": (Command("top", "CONTAINER [ps OPTIONS]", "Show a container's processes", interspersed=False,
                    min_args=1), top),
    "cp": (Command("cp", "[OPTIONS] CONTAINER:SRC_PATH DEST_PATH | SRC_PATH CONTAINER:DEST_PATH",
                   "Copy files between a container (running or not) and the host", [
                       opt("-a --archive", "archive",
                           help="into the container: owned by its user (default: they keep their owners)"),
                       opt("-L --follow-link", "follow", help="always follow a symlink in SRC_PATH")],
                   min_args=2, max_args=2), cp),
    "rename": (Command("rename", "CONTAINER NEW_NAME", "Rename a container", min_args=2, max_args=2), rename),
    "inspect": (Command("inspect", "[OPTIONS] NAME|ID [NAME|ID...]",
                        "Detailed information on containers (or images)", [
                            opt("-f --format", "format", "str", None, "Go template"),
                            opt("-s --size", "size", help="add SizeRw and SizeRootFs (containers)"),
                            opt("--type", "type", "str", None, "container or image")], min_args=1), inspect),
    "rm": (Command("rm", "[OPTIONS] CONTAINER [CONTAINER...]", "Remove one or more containers", [
        opt("-f --force", "force", help="kill a running container first"),
        opt("-v --volumes", "volumes", help="remove anonymous volumes too"), TRACE], min_args=1), rm),
    "ps": (Command("ps", "[OPTIONS]", "List containers", [
        opt("-a --all", "all", help="show all containers (default: running ones)"),
        opt("-q --quiet", "quiet", help="only IDs"),
        opt("--no-trunc", "no_trunc", help="do not truncate output"),
        opt("-f --filter", "filter", "list", None, "id, name, label, status, exited, ancestor, before, "
            "since, volume, network, publish, expose, health (docker's)"),
        opt("-n --last", "last", "int", None, "the N most recently created containers (all states)"),
        opt("-l --latest", "latest", help="the most recently created container (all states)"),
        opt("-s --size", "size", help="show the size of each container's changes"),
        opt("--format", "format", "str", None, "json, table TEMPLATE or a Go template")], max_args=0), ps),
    "container prune": (Command("container prune", "[OPTIONS]", "Remove all stopped containers", [
        opt("-f --force", "force", help="do not prompt for confirmation"),
        opt("--filter", "filter", "list", None, "until=TIME, label=KEY[=VALUE], label!=KEY[=VALUE]")],
                                max_args=0), container_prune),
    "commit": (Command("commit", "[OPTIONS] CONTAINER [REPOSITORY[:TAG]]",
                       "Create a new image from a container's changes", [
                           opt("-a --author", "author", "str", None, "author"),
                           opt("-c --change", "change", "list", None, "apply a Dockerfile instruction"),
                           opt("-m --message", "message", "str", None, "commit message"),
                           opt("-p --pause", "pause", "bool", True,
                               "freeze it while committing (default true; --pause=false: do not)"),
                           TRACE], min_args=1, max_args=2), commit),
    "diff": (Command("diff", "CONTAINER", "Show a container's changes to its image's files (A, C, D)",
                     min_args=1, max_args=1), diff),
    "export": (Command("export", "[OPTIONS] CONTAINER", "Write a container's filesystem as a tar archive", [
        opt("-o --output", "output", "str", None, "write to a file instead of stdout")],
                       min_args=1, max_args=1), export),
}
