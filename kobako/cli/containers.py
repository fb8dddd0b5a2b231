"""Container commands: run, rm, ps, commit, export, diff. (The monitor-backed ones —
run -d, logs, exec, stop, attach — come with the engine issue.)"""

from __future__ import annotations

import os
import sys

from kobako.cli.output import ago, familiar, formatted, print_docs, table
from kobako.cli.parser import Command, opt
from kobako.engine import ocispec
from kobako.engine.lifecycle import Engine
from kobako.engine.records import ContainerError
from kobako.image import reference
from kobako.image.store import ImageError, ImageNotFound


def _image_for_run(e: Engine, name: str, pull_policy: str, quiet: bool, platform: str | None = None) -> dict:
    if pull_policy not in ("missing", "always", "never"):
        raise ocispec.OptionError(f"invalid --pull {pull_policy!r}: missing, always or never")
    if pull_policy == "always":
        img = _pull(e, name, quiet, platform)
    else:
        try:
            img = e.images.resolve(name)
        except ImageNotFound:
            if pull_policy == "never" or reference.looks_like_id(name):
                raise
            sys.stderr.write(f"Unable to find image '{familiar(str(reference.parse(name)))}' locally\n")
            img = _pull(e, name, quiet, platform)
    from kobako.image import manifest as mf
    host = mf.host_platform()["architecture"]
    arch = img.get("architecture") or host
    if arch != host:  # no emulation (binfmt) here: say so rather than fail with ENOEXEC
        raise ocispec.OptionError(f"image {familiar(name)} is for {img.get('os', 'linux')}/{arch}; "
                                  f"this host runs {host}")
    return img


def _pull(e: Engine, name: str, quiet: bool, platform: str | None = None) -> dict:
    from kobako.image import manifest as mf
    from kobako.image.gc import undo_on_failure
    from kobako.image.pull import pull
    with undo_on_failure(e):
        plat = mf.parse_platform(platform) if platform else None
        return pull(e.images, e.snapshots, reference.parse(name), plat)


def _volumes(specs: list[str], mounts: list[str], opts: ocispec.RunOptions) -> None:
    """-v HOST:CTR[:ro], -v NAME:CTR[:ro], -v CTR (anonymous) and --mount type=bind|volume|tmpfs,..."""
    for v in specs:
        parts = v.split(":")
        if len(parts) == 1 and v.startswith("/"):
            opts.volumes.append((None, v, False))
            continue
        if len(parts) < 2 or len(parts) > 3 or not parts[1].startswith("/"):
            raise ocispec.OptionError(f"invalid volume specification {v!r}: "
                                      "use HOST-PATH:CONTAINER-PATH[:ro] or NAME:CONTAINER-PATH[:ro]")
        src, dest = parts[0], parts[1]
        flags = (parts[2] if len(parts) == 3 else "rw").split(",")
        bad = [f for f in flags if f not in ("ro", "rw", "z", "Z", "idmap")]
        if bad:
            raise ocispec.OptionError(f"invalid volume specification {v!r}: unknown option {bad[0]!r} "
                                      "(ro, rw or idmap)")
        ro = "ro" in flags
        if "idmap" in flags:  # seen through the container's user namespace (named volumes always are)
            opts.idmapped.add(dest)
        if src.startswith("/"):
            opts.binds.append((src, dest, ro))
        else:
            opts.volumes.append((src, dest, ro))
    for m in mounts:
        kv = dict((p.split("=", 1) + [""])[:2] for p in m.split(",") if p)
        typ = kv.get("type", "volume")
        dest = kv.get("target") or kv.get("destination") or kv.get("dst") or ""
        src = kv.get("source") or kv.get("src") or ""
        ro = "readonly" in kv or kv.get("ro") in ("", "true", "1")
        if not dest.startswith("/"):
            raise ocispec.OptionError(f"--mount {m!r}: target must be an absolute path")
        if typ == "bind":
            if not src.startswith("/") or not os.path.exists(src):
                raise ocispec.OptionError(f"--mount {m!r}: bind source path does not exist: {src}")
            opts.binds.append((src, dest, ro))
        elif typ == "volume":
            opts.volumes.append((src or None, dest, ro))
        elif typ == "tmpfs":
            size = kv.get("tmpfs-size")
            opts.tmpfs.append((dest, f"size={size}" if size else ""))
        else:
            raise ocispec.OptionError(f"--mount {m!r}: type must be bind, volume or tmpfs")


def _options(e: Engine, args) -> ocispec.RunOptions:
    net = args.network or "bridge"
    mode = net if net in ("none", "host") else "container" if net.startswith("container:") else "bridge"
    opts = ocispec.RunOptions(
        command=args.args[1:], entrypoint=[args.entrypoint] if args.entrypoint else None,
        env=_env(args), workdir=args.workdir, user=args.user, hostname=args.hostname,
        tty=args.tty and sys.stdin.isatty(), read_only=args.read_only, network=mode,
        memory=ocispec.parse_size(args.memory) if args.memory else None)
    if mode == "bridge":
        opts.net = _bridge_options(e, "bridge" if net == "default" else net, args)
    elif any((args.publish, args.publish_all, args.ip, args.network_alias, args.net_rate, args.mac_address)):
        raise ocispec.OptionError(f"-p, -P, --ip, --network-alias, --net-rate and --mac-address need a "
                                  f"bridge network, not --network {net}")
    elif mode == "container":
        other = e.containers.resolve(net.split(":", 1)[1])
        if e.state(other) != "running":
            raise ocispec.OptionError(f"--network {net}: container {other['name']} is not running")
        if (other.get("net") or {}).get("mode") == "bridge":
            from kobako.network.networks import netns_path
            opts.join_ns["network"] = netns_path(other["id"])  # stable while it runs
        else:
            from kobako.engine.copy import _runtime_pid
            opts.join_ns["network"] = f"/proc/{_runtime_pid(e, other)}/ns/net"
            opts.join_ids["network"] = other["id"]
        opts.net = {"mode": "container", "container": other["id"]}
    _dns_options(e, opts, args)
    return opts


def _dns_options(e: Engine, opts: ocispec.RunOptions, args) -> None:
    """--add-host NAME:IP (IP may be host-gateway), --dns IP, --dns-search D, --dns-option O."""
    if args.add_host or args.dns:  # not on the start-up path of a plain run
        from kobako.network.ipam import IPAMError, _ip
    for spec in args.add_host:
        name, sep, ip = spec.partition("=") if "=" in spec else spec.partition(":")
        if not sep or not name or not ip:
            raise ocispec.OptionError(f"invalid --add-host {spec!r}: NAME:IP (or NAME:host-gateway)")
        if ip == "host-gateway":  # the host, as the container reaches it
            if opts.net.get("mode") == "bridge":
                from kobako.network.networks import NetworkStore
                first = next(iter(opts.net["networks"]))
                ip = NetworkStore(e.root, e.run_dir).get(first)["gateway"]
            else:
                ip = "127.0.0.1"
        elif ":" not in ip:
            try:
                _ip(ip)
            except IPAMError:
                raise ocispec.OptionError(f"invalid --add-host {spec!r}: {ip} is not an IP address") from None
        opts.extra_hosts.append((name, ip))
    for d in args.dns:
        if ":" not in d:
            try:
                _ip(d)
            except IPAMError:
                raise ocispec.OptionError(f"invalid --dns {d!r}: an IP address") from None
        opts.dns.append(d)
    opts.dns_search = list(args.dns_search)
    opts.dns_options = list(args.dns_option)


def _bridge_options(e: Engine, name: str, args) -> dict:
    """--network NAME, -p, -P, --expose, --ip, --network-alias, --net-rate: checked now, made
    at each start by network/endpoints.py."""
    from kobako.network import ports
    from kobako.network.networks import DEFAULT, NetworkStore
    net = NetworkStore(e.root, e.run_dir).get(name)
    if net["name"] == DEFAULT and (args.ip or args.network_alias):
        raise ocispec.OptionError("--ip and --network-alias work on user-defined networks only, "
                                  "not on the default bridge")
    if args.ip:
        from kobako.network.ipam import Pool
        Pool.of(net).check(args.ip)
    published = [p for spec in args.publish for p in ports.parse(spec)]
    if (published or args.publish_all) and net.get("internal"):
        raise ocispec.OptionError(f"network {net['name']} is internal: nothing on it can be published "
                                  "(no traffic crosses its bridge)")
    for x in args.expose:
        ports.exposed({}, [x])  # validates
    out: dict = {"mode": "bridge", "ports": published,
                 "networks": {net["name"]: {"ip": args.ip, "aliases": list(args.network_alias)}}}
    if args.publish_all:
        out["publishAll"], out["expose"] = True, list(args.expose)
    if args.net_rate:
        out["rate"] = _rate(args.net_rate)
    if args.mac_address:
        mac = args.mac_address.lower()
        parts = mac.split(":")
        if len(parts) != 6 or not all(len(x) == 2 and set(x) <= set("0123456789abcdef") for x in parts) \
                or int(parts[0], 16) & 1:
            raise ocispec.OptionError(f"invalid --mac-address {args.mac_address!r}: a unicast MAC like "
                                      "02:42:ac:11:00:02")
        out["mac"] = mac
    return out


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


def _security_and_limits(opts: ocispec.RunOptions, args, e: Engine) -> ocispec.RunOptions:
    size = ocispec.parse_size
    opts.privileged = bool(args.privileged)
    opts.cap_add, opts.cap_drop = list(args.cap_add), list(args.cap_drop)
    for so in args.security_opt:
        k, eq, v = so.partition("=") if "=" in so else so.partition(":")
        if k == "no-new-privileges":
            opts.no_new_privileges = v in ("", "true", "1")
        elif k == "seccomp":
            if v != "unconfined" and not os.path.isfile(v):
                raise ocispec.OptionError(f"--security-opt seccomp={v}: no such profile file")
            opts.seccomp = v
        elif k in ("label", "apparmor"):
            continue  # no SELinux/AppArmor here: accepted and ignored, as docker on such a host
        else:
            raise ocispec.OptionError(f"invalid --security-opt {so!r}")
    for flag in ("pid", "ipc", "uts", "cgroupns"):
        v = getattr(args, flag)
        if v in (None, "", "private"):
            continue
        if v.startswith("container:") and flag in ("pid", "ipc"):
            other = e.containers.resolve(v.split(":", 1)[1])
            if e.state(other) != "running":
                raise ocispec.OptionError(f"--{flag} {v}: container {other['name']} is not running")
            from kobako.engine.copy import _runtime_pid
            opts.join_ns[flag] = f"/proc/{_runtime_pid(e, other)}/ns/{flag}"
            opts.join_ids[flag] = other["id"]  # re-resolved at each start: PIDs change
            continue
        if v != "host":
            raise ocispec.OptionError(f"--{flag} {v!r}: host, private" + (" or container:NAME" if flag in
                                      ("pid", "ipc") else ""))
        opts.host_ns.add("cgroup" if flag == "cgroupns" else flag)
    for flag, key, iops in (("device_read_bps", "throttleReadBpsDevice", False),
                            ("device_write_bps", "throttleWriteBpsDevice", False),
                            ("device_read_iops", "throttleReadIOPSDevice", True),
                            ("device_write_iops", "throttleWriteIOPSDevice", True)):
        for spec in getattr(args, flag):
            opts.throttle.setdefault(key, []).append(ocispec.parse_throttle(spec, iops))
    if args.userns not in (None, "", "host") or args.uidmap or args.gidmap:
        _userns(e, args, opts)
    opts.ulimits = [ocispec.parse_ulimit(u) for u in args.ulimit]
    for sc in args.sysctl:
        k, eq, v = sc.partition("=")
        if not eq or not k:
            raise ocispec.OptionError(f"invalid --sysctl {sc!r}: use NAME=VALUE")
        opts.sysctls[k] = v
    if args.shm_size:
        opts.shm_size = size(args.shm_size)
    if args.cpus:
        try:
            opts.cpus = float(args.cpus)
        except ValueError:
            raise ocispec.OptionError(f"invalid --cpus {args.cpus!r}: a number like 1.5") from None
        if opts.cpus <= 0 or opts.cpus > (os.cpu_count() or 1):
            raise ocispec.OptionError(f"invalid --cpus {args.cpus}: between 0.01 and {os.cpu_count()}")
    opts.cpu_shares = args.cpu_shares
    opts.cpuset_cpus = args.cpuset_cpus
    if args.pids_limit is not None and args.pids_limit > 0:
        opts.pids_limit = args.pids_limit
    if args.memory_reservation:
        opts.memory_reservation = size(args.memory_reservation)
    if args.memory_swap:
        opts.memory_swap = -1 if args.memory_swap == "-1" else size(args.memory_swap)
    if args.blkio_weight is not None:
        if not 10 <= args.blkio_weight <= 1000:
            raise ocispec.OptionError("--blkio-weight must be between 10 and 1000")
        opts.blkio_weight = args.blkio_weight
    opts.devices = [ocispec.parse_device(d) for d in args.device]
    if args.init:
        opts.init = ocispec.find_init()
    if opts.memory is not None and opts.memory < 6 << 20:
        raise ocispec.OptionError("minimum memory limit allowed is 6MB")
    return opts


def _volumes_from(e: Engine, specs: list[str], opts: ocispec.RunOptions) -> None:
    """--volumes-from C[:ro|rw]: the named and anonymous volumes and binds of another container."""
    import json
    for spec in specs:
        ref, _, mode = spec.partition(":")
        if mode not in ("", "ro", "rw"):
            raise ocispec.OptionError(f"invalid --volumes-from {spec!r}: CONTAINER[:ro|rw]")
        rec = e.containers.resolve(ref)
        for v in rec.get("volumes") or []:
            ro = mode == "ro" or (not mode and bool(v.get("readOnly")))
            opts.volumes.append((v["name"], v["destination"], ro))
        try:
            with open(os.path.join(rec["bundle"], "config.json")) as f:
                mounts = json.load(f).get("mounts") or []
        except (OSError, KeyError, ValueError):
            mounts = []
        vols = {v["destination"] for v in rec.get("volumes") or []}
        etc = ("/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/sbin/docker-init", "/sys", "/dev")
        for m in mounts:
            if m.get("type") == "bind" and m["destination"] not in vols and m["destination"] not in etc:
                ro = mode == "ro" or (not mode and "ro" in (m.get("options") or []))
                opts.binds.append((m["source"], m["destination"], ro))
                if "idmap" in (m.get("options") or []):
                    opts.idmapped.add(m["destination"])


def _userns(e: Engine, args, opts: ocispec.RunOptions) -> None:
    """--userns auto|private|container:NAME, --uidmap, --gidmap (engine/userns.py)."""
    from kobako.engine import userns
    req = userns.parse(args.userns, args.uidmap, args.gidmap)
    if req is None:
        return
    for flag in ("pid", "ipc"):
        if flag in opts.host_ns:
            raise ocispec.OptionError(f"--{flag} host cannot be used with --userns "
                                      f"{args.userns or 'private'}: the host's {flag.upper()} "
                                      "namespace belongs to the host's root")
    pid_of = opts.join_ids.get("pid")
    if pid_of and not (req.join and e.containers.resolve(req.join)["id"] == pid_of):
        raise ocispec.OptionError("--pid container:NAME with a user namespace needs --userns "
                                  "container:NAME too: a PID namespace is joined from the user "
                                  "namespace that owns it")
    if req.join:
        other = e.containers.resolve(req.join)
        theirs = other.get("userns")
        if not theirs:
            raise ocispec.OptionError(f"--userns container:{req.join}: that container has no user "
                                      "namespace of its own (it runs with --userns host)")
        if e.state(other) != "running":
            raise ocispec.OptionError(f"--userns container:{req.join}: container {other['name']} "
                                      "is not running")
        from kobako.engine.copy import _runtime_pid
        req.uid_maps, req.gid_maps = theirs["uidMappings"], theirs["gidMappings"]
        opts.join_ns["user"] = f"/proc/{_runtime_pid(e, other)}/ns/user"
        opts.join_ids["user"] = other["id"]
    opts.userns = req


def _storage(opts: ocispec.RunOptions, args, e: Engine | None = None) -> ocispec.RunOptions:
    if args.volumes_from and e is not None:
        _volumes_from(e, args.volumes_from, opts)
    _volumes(args.volume, args.mount, opts)
    for t in args.tmpfs:
        dest, _, o = t.partition(":")
        if not dest.startswith("/"):
            raise ocispec.OptionError(f"--tmpfs {t!r}: the path must be absolute")
        opts.tmpfs.append((dest, o))
    return opts


def _create(e: Engine, args, remove: bool, starting: bool = False) -> dict:
    opts = _storage(_security_and_limits(_options(e, args), args, e), args, e)
    if args.detach and args.tty:
        opts.tty = True  # the monitor holds the pty; `kobako attach` reaches it
    extra: dict = {}  # validated before anything is made
    if opts.join_ids:
        extra["joinNamespaces"] = dict(opts.join_ids)
    if args.interactive or opts.tty:
        extra["options"] = {"interactive": bool(args.interactive), "tty": opts.tty}
    if args.restart:
        extra["restartPolicy"] = _restart_policy(args.restart)
    if args.stop_signal:
        extra["stopSignal"] = args.stop_signal
    if args.stop_timeout is not None:
        extra["stopTimeout"] = args.stop_timeout
    if args.label:
        extra["labels"] = dict(lb.partition("=")[::2] for lb in args.label)
    if args.log_opt:
        lo = {}
        for o in args.log_opt:
            k, eq, v = o.partition("=")
            if k == "max-size" and eq:
                lo[k] = ocispec.parse_size(v)
            elif k == "max-file" and v.isdigit() and int(v) >= 1:
                lo[k] = int(v)
            else:
                raise ocispec.OptionError(f"invalid --log-opt {o!r}: max-size=SIZE or max-file=N")
        extra["logOptions"] = lo
    img = _image_for_run(e, args.args[0], args.pull or "missing", args.quiet, args.platform)
    rec = e.create(img, args.args[0], opts, args.name, remove=remove, starting=starting and not extra)
    if "options" in extra:
        extra["options"] = {**(rec.get("options") or {}), **extra["options"]}
    if extra:
        rec = e.containers.update(rec["id"], **extra)
    return rec


def _restart_policy(s: str) -> dict:
    name, _, n = s.partition(":")
    if name not in ("no", "always", "unless-stopped", "on-failure"):
        raise ocispec.OptionError(f"invalid restart policy {s!r}: "
                                  "no, always, unless-stopped or on-failure[:N]")
    if n and (name != "on-failure" or not n.isdigit()):
        raise ocispec.OptionError(f"invalid restart policy {s!r}: only on-failure takes a retry count")
    return {"Name": name, "MaximumRetryCount": int(n or 0)}


def run(e: Engine, args) -> int:
    if args.rm and args.restart and args.restart != "no":
        raise ocispec.OptionError("conflicting options: --restart and --rm")
    rec = _create(e, args, remove=args.rm, starting=not args.detach)
    if args.detach:
        try:
            e.start(rec)
        except BaseException:
            if args.rm:
                e.remove(e.containers.get(rec["id"]) or rec, force=True)
            raise
        print(rec["id"])
        return 0
    return e.run_foreground(rec, remove=args.rm)


def create(e: Engine, args) -> int:
    rec = _create(e, args, remove=args.rm)
    print(rec["id"])
    return 0


def start(e: Engine, args) -> int:
    rc = 0
    for ref in args.args:
        rec = e.containers.resolve(ref)
        if args.attach and len(args.args) == 1:
            if args.interactive or (rec.get("options") or {}).get("tty"):
                from kobako.cli.attach import attach_started
                return attach_started(e, rec, stdin=bool(args.interactive))
            size = _log_size(e, rec)
            e.start(rec)
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
        out.write((x.get("time", "") + " " if args.timestamps else "") + x.get("log", ""))
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
    docs, errors = [], []
    for ref in args.args:
        try:
            rec = e.containers.resolve(ref)
        except Exception:  # noqa: BLE001 - docker falls back to images
            try:
                from kobako.cli.images import inspect_doc
                docs.append(inspect_doc(e, e.images.resolve(ref)))
                continue
            except Exception:  # noqa: BLE001
                errors.append(f"no such object: {ref}")
                continue
        docs.append(inspect_container(e, rec))
    return print_docs(docs, args.format, errors)


def inspect_container(e: Engine, rec: dict) -> dict:
    import json
    st = e.state(rec)
    try:
        with open(os.path.join(rec.get("bundle", ""), "config.json")) as f:
            spec = json.load(f)
    except (OSError, ValueError):
        spec = {}
    proc = spec.get("process") or {}
    argv = proc.get("args") or []
    memory = ((spec.get("linux") or {}).get("resources") or {}).get("memory", {}).get("limit", 0)
    binds = [m for m in spec.get("mounts") or [] if m.get("type") == "bind" and m["destination"] != "/sys"]
    from kobako.cli.networks import container_settings
    net_mode, net_settings = container_settings(e, rec)
    return {
        "Id": rec["id"], "Created": rec.get("created"), "Path": argv[0] if argv else "", "Args": argv[1:],
        "State": {"Status": st, "Running": st in ("running", "paused"), "Paused": st == "paused",
                  "Restarting": st == "restarting", "OOMKilled": False, "Dead": False,
                  "Pid": rec.get("pid", 0) if st in ("running", "paused") else 0,
                  "ExitCode": rec.get("exitCode", 0), "Error": rec.get("error") or "",
                  "StartedAt": rec.get("started", "0001-01-01T00:00:00Z"),
                  "FinishedAt": rec.get("finished", "0001-01-01T00:00:00Z")},
        "Image": rec.get("image"), "Name": "/" + rec["name"], "RestartCount": rec.get("restartCount", 0),
        "Driver": "overlay", "Platform": "linux",
        "LogPath": e.containers.path(rec["id"], f"{rec['id']}-json.log"),
        "HostConfig": {"RestartPolicy": rec.get("restartPolicy") or {"Name": "no", "MaximumRetryCount": 0},
                       "AutoRemove": bool((rec.get("options") or {}).get("autoRemove")),
                       "NetworkMode": net_mode, **_userns_inspect(rec),
                       "Memory": memory, "Binds": [f"{m['source']}:{m['destination']}" for m in binds]},
        "Config": {"Hostname": spec.get("hostname", ""), "Env": proc.get("env") or [], "Cmd": argv,
                   "Image": rec.get("imageName"), "WorkingDir": proc.get("cwd", "/"),
                   "Tty": bool(proc.get("terminal")), "Labels": rec.get("labels") or {},
                   "StopSignal": rec.get("stopSignal") or "SIGTERM"},
        "Mounts": [{"Type": "bind", "Source": m["source"], "Destination": m["destination"],
                    "RW": "ro" not in (m.get("options") or [])} for m in binds],
        "GraphDriver": {"Name": "overlay", "Data": {"UpperDir": e.containers.path(rec["id"], "upper"),
                                                    "WorkDir": e.containers.path(rec["id"], "work")}},
        "NetworkSettings": net_settings,
    }


def _userns_inspect(rec: dict) -> dict:
    """HostConfig.UsernsMode as Docker names it ("" = the host's), and Podman's IDMappings."""
    u = rec.get("userns")
    if not u:
        return {"UsernsMode": ""}
    mode = u["mode"]
    if mode == "container":
        mode = "container:" + (rec.get("joinNamespaces") or {}).get("user", "")
    fmt = [f"{m['containerID']}:{m['hostID']}:{m['size']}" for m in u["uidMappings"]]
    return {"UsernsMode": mode, "IDMappings": {
        "UidMap": fmt, "GidMap": [f"{m['containerID']}:{m['hostID']}:{m['size']}" for m in u["gidMappings"]]}}


def _ps_ports(e: Engine, rec: dict, state: str) -> str:
    if state not in ("running", "paused") or (rec.get("net") or {}).get("mode") != "bridge":
        return ""
    from kobako.cli.networks import ps_ports
    return ps_ports(e, rec)


def _env(args) -> list[str]:
    env = []
    for f in args.env_file:
        try:
            with open(f) as fh:
                env += [ln.strip() for ln in fh if ln.strip() and not ln.lstrip().startswith("#")]
        except OSError as ex:
            raise ocispec.OptionError(f"cannot read env file {f}: {ex.strerror}") from None
    return env + list(args.env)


def rm(e: Engine, args) -> int:
    return _each(e, args.args, lambda rec: e.remove(rec, force=args.force, volumes=args.volumes))


def _status(e: Engine, rec: dict) -> tuple[str, str]:
    st = e.state(rec)
    return st, status_text(rec, st)


def status_text(rec: dict, st: str) -> str:
    """docker ps's STATUS column for a container in state `st`."""
    if st in ("running", "paused"):
        up = ago(rec.get("started", "")).replace(" ago", "")
        return f"Up {up}" + (" (Paused)" if st == "paused" else "")
    if st == "restarting":
        return f"Restarting ({rec.get('exitCode', 0)}) {ago(rec.get('finished', ''))}"
    if st == "exited":
        return f"Exited ({rec.get('exitCode', 0)}) {ago(rec.get('finished', ''))}"
    return "Created"


def _filters(specs: list[str]) -> list[tuple[str, str]]:
    out = []
    for f in specs:
        k, eq, v = f.partition("=")
        if not eq or k not in ("status", "name", "id", "label", "ancestor", "exited"):
            raise ocispec.OptionError(f"invalid filter {f!r}: "
                                      "status=, name=, id=, label=, ancestor= or exited=")
        out.append((k, v))
    return out


def _matches(rec: dict, state: str, flt: list[tuple[str, str]]) -> bool:
    by: dict[str, list[bool]] = {}
    for k, v in flt:  # docker: different keys AND, the same key ORs -- except labels: all must hold
        if k == "status":
            ok = state == v
        elif k == "name":
            ok = v in rec["name"]
        elif k == "id":
            ok = rec["id"].startswith(v)
        elif k == "label":
            lk, eq, lv = v.partition("=")
            labels = rec.get("labels") or {}
            ok = lk in labels and (not eq or labels[lk] == lv)
        elif k == "ancestor":
            ok = v in (rec.get("imageName"), rec.get("image"), familiar(rec.get("imageName") or "")) or \
                (rec.get("image") or "").removeprefix("sha256:").startswith(v)
        else:  # exited=CODE
            ok = state == "exited" and str(rec.get("exitCode", 0)) == v
        by.setdefault(k, []).append(ok)
    return all(all(v) if k == "label" else any(v) for k, v in by.items())


def ps(e: Engine, args) -> int:
    rows = []
    flt = _filters(args.filter)
    for rec in e.containers.all():
        state, status = _status(e, rec)
        if not args.all and state not in ("running", "paused", "restarting") and not \
                any(k in ("status", "exited") for k, _ in flt):
            continue
        if flt and not _matches(rec, state, flt):
            continue
        cmd = " ".join((rec.get("options") or {}).get("command") or [])
        rows.append({"ID": rec["id"] if args.no_trunc else rec["id"][:12],
                     "Image": familiar(rec["imageName"]),
                     "Command": f'"{cmd if args.no_trunc or len(cmd) < 20 else cmd[:19] + "…"}"',
                     "CreatedAt": rec["created"], "RunningFor": ago(rec["created"]), "Status": status,
                     "State": state, "Ports": _ps_ports(e, rec, state), "Names": rec["name"],
                     "Labels": ",".join(f"{k}={v}" for k, v in (rec.get("labels") or {}).items()),
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
    import json

    from kobako.cli.images import parse_changes
    from kobako.image.build import layer_from_dir, new_image
    from kobako.image.unpack import gc_shield
    rec = e.containers.resolve(args.args[0])
    names = [str(reference.parse(args.args[1]))] if len(args.args) > 1 else []
    base = e.images.get(rec["image"])
    if base is None:
        raise ImageError(f"the image of container {rec['name']} was removed; cannot commit")
    base_cfg = json.loads(e.images.content.read(base["id"])).get("config") or {}
    changes = parse_changes(args.change, base_cfg)
    hist = {"created_by": "kobako commit " + (args.message and f"-m {args.message!r} " or "") + rec["name"]}
    if args.message:
        hist["comment"] = args.message
    extra = {"author": args.author} if args.author else {}
    from kobako.image.gc import undo_on_failure
    with undo_on_failure(e), gc_shield(e.root):
        layer = layer_from_dir(e.images.content, e.containers.path(rec["id"], "upper"), diff=True)
        img = new_image(e.images, e.snapshots, base, [layer], changes, hist, names, extra)
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
        copy.from_container(e, e.containers.resolve(sc), sp, dp)
    elif sp == "-":  # a tar stream on stdin, extracted into the directory DEST
        copy.to_container(e, e.containers.resolve(dc), sp, dp, tar_in=sys.stdin.buffer)
    else:
        copy.to_container(e, e.containers.resolve(dc), sp, dp)
    return 0


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
    opt("--read-only", "read_only", help="mount the root filesystem read-only"),
    opt("--network --net", "network", "str", None,
        "bridge (default), host, none, container:NAME or a network's name"),
    opt("-p --publish", "publish", "list", None, "publish a port: [IP:][HOST-PORT:]CTR-PORT[/tcp|udp]"),
    opt("-P --publish-all", "publish_all", help="publish every exposed port on a free host port"),
    opt("--expose", "expose", "list", None, "expose a port (or range) for -P"),
    opt("--ip", "ip", "str", None, "the container's IPv4 address on a user network"),
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
    opt("--userns", "userns", "str", None, "host, auto[:size=N], private or container:NAME"),
    opt("--uidmap", "uidmap", "list", None, "map container uids CTR:HOST:SIZE (a user namespace)"),
    opt("--gidmap", "gidmap", "list", None, "map container gids CTR:HOST:SIZE"),
    opt("--log-opt", "log_opt", "list", None, "json-file options: max-size=10m, max-file=3"),
    opt("--platform", "platform", "str", None, "os/arch[/variant] of the image to pull and run"),
]
STOP_T = opt("-t --time", "time", "int", None, "seconds to wait before killing it (default 10)")
COMMANDS = {
    "run": (Command("run", "[OPTIONS] IMAGE [COMMAND] [ARG...]",
                    "Create and run a new container from an image", RUN_OPTS, interspersed=False,
                    min_args=1), run),
    "create": (Command("create", "[OPTIONS] IMAGE [COMMAND] [ARG...]", "Create a new container",
                       RUN_OPTS, interspersed=False, min_args=1), create),
    "start": (Command("start", "[OPTIONS] CONTAINER [CONTAINER...]", "Start one or more containers", [
        opt("-a --attach", "attach", help="print the container's output until it exits"),
        opt("-i --interactive", "interactive", help="attach the container's stdin")], min_args=1),
              start),
    "attach": (Command("attach", "[OPTIONS] CONTAINER",
                       "Attach to a running container's stdio (detach with ctrl-p ctrl-q)", [
                           opt("--no-stdin", "no_stdin", help="do not attach stdin"),
                           opt("--detach-keys", "detach_keys", "str", None, "default ctrl-p,ctrl-q"),
                           opt("--sig-proxy", "sig_proxy", "bool", True, "accepted")],
                       min_args=1, max_args=1), lambda e, a: __import__("kobako.cli.attach",
                                                                        fromlist=["cmd"]).cmd(e, a)),
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
        opt("--details", "details", help="accepted")], min_args=1, max_args=1), logs),
    "exec": (Command("exec", "[OPTIONS] CONTAINER COMMAND [ARG...]", "Run a command in a running container", [
        opt("-d --detach", "detach", help="run in the background"),
        opt("-i --interactive", "interactive", help="keep stdin open"),
        opt("-t --tty", "tty", help="allocate a pseudo-terminal"),
        opt("-e --env", "env", "list", None, "set an environment variable"),
        opt("-u --user", "user", "str", None, "user[:group] or uid[:gid]"),
        opt("-w --workdir", "workdir", "str", None, "working directory"),
        opt("--privileged", "privileged", help="extra capabilities")], interspersed=False, min_args=1),
             exec_),
    "top": (Command("top", "CONTAINER [ps OPTIONS]", "Show a container's processes", interspersed=False,
                    min_args=1), top),
    "cp": (Command("cp", "CONTAINER:SRC_PATH DEST_PATH | SRC_PATH CONTAINER:DEST_PATH",
                   "Copy files between a container (running or not) and the host", [
                       opt("-a --archive", "archive", help="accepted: owners and modes are kept"),
                       opt("-L --follow-link", "follow", help="accepted")], min_args=2, max_args=2), cp),
    "rename": (Command("rename", "CONTAINER NEW_NAME", "Rename a container", min_args=2, max_args=2), rename),
    "inspect": (Command("inspect", "[OPTIONS] NAME|ID [NAME|ID...]",
                        "Detailed information on containers (or images)", [
                            opt("-f --format", "format", "str", None, "Go template"),
                            opt("-s --size", "size", help="accepted"),
                            opt("--type", "type", "str", None, "container or image")], min_args=1), inspect),
    "rm": (Command("rm", "[OPTIONS] CONTAINER [CONTAINER...]", "Remove one or more containers", [
        opt("-f --force", "force", help="kill a running container first"),
        opt("-v --volumes", "volumes", help="remove anonymous volumes too")], min_args=1), rm),
    "ps": (Command("ps", "[OPTIONS]", "List containers", [
        opt("-a --all", "all", help="show all containers (default: running ones)"),
        opt("-q --quiet", "quiet", help="only IDs"),
        opt("--no-trunc", "no_trunc", help="do not truncate output"),
        opt("-f --filter", "filter", "list", None, "status=, name=, id=, label=, ancestor=, exited="),
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
                           opt("-p --pause", "pause", "bool", True, "accepted for docker compatibility")],
                       min_args=1, max_args=2), commit),
    "diff": (Command("diff", "CONTAINER", "Show a container's changes to its image's files (A, C, D)",
                     min_args=1, max_args=1), diff),
    "export": (Command("export", "[OPTIONS] CONTAINER", "Write a container's filesystem as a tar archive", [
        opt("-o --output", "output", "str", None, "write to a file instead of stdout")],
                       min_args=1, max_args=1), export),
}
