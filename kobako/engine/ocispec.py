"""Run options + the image's config -> an OCI runtime spec (config.json).

Defaults follow Docker's: its 14 default capabilities, masked and read-only /proc
paths, a private network namespace, PATH when the image sets none, the image's
Entrypoint/Cmd/Env/WorkingDir/User unless the options override them.
"""

from __future__ import annotations

import os

from kobako import errors
from kobako.linux import capabilities
from kobako.runtime import spec as rtspec

DOCKER_CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
               "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
               "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"]
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class OptionError(errors.InvalidArgument):
    pass


INIT_PATH = "/sbin/docker-init"  # where Docker puts it: some images' entrypoints look for it
INIT_CANDIDATES = ("/usr/bin/tini-static", "/usr/bin/docker-init", "/usr/libexec/docker/docker-init")


def find_init() -> str:
    for p in INIT_CANDIDATES:
        if os.access(p, os.X_OK):
            return p
    raise OptionError("--init needs a static init for the container: apt-get install tini "
                      "(kobako uses /usr/bin/tini-static)")


class RunOptions:
    """What `kobako run`/`create` asked for, before it becomes a config.json."""

    def __init__(self, command: list[str] | None = None, entrypoint: list[str] | None = None,
                 env: list[str] | None = None, workdir: str | None = None, user: str | None = None,
                 hostname: str | None = None, tty: bool = False, read_only: bool = False,
                 network: str = "none", memory: int | None = None) -> None:
        self.command = command or []
        self.entrypoint = entrypoint
        self.env = env or []
        self.workdir, self.user, self.hostname = workdir, user, hostname
        self.domainname: str | None = None  # --domainname: the UTS namespace's NIS domain name
        self.tty, self.read_only, self.network, self.memory = tty, read_only, network, memory
        self.binds: list[tuple[str, str, bool]] = []  # (host path, destination, read-only)
        self.volumes: list[tuple[str | None, str, bool]] = []  # (volume name, None: anonymous; ...)
        self.tmpfs: list[tuple[str, str]] = []  # (destination, options)
        # security
        self.privileged = False
        self.cap_add: list[str] = []
        self.cap_drop: list[str] = []
        self.default_caps: list[str] | None = None  # the configuration's set; None: Docker's
        self.no_new_privileges = False
        self.seccomp: str | None = None  # None: the runtime's default for the engine; "unconfined"; a file
        self.host_ns: set[str] = set()  # pid, ipc, uts, cgroup shared with the host
        self.join_ns: dict[str, str] = {}  # namespace type -> /proc/PID/ns/... of another container
        self.join_ids: dict[str, str] = {}  # namespace type -> that container's ID
        self.throttle: dict[str, list[tuple[int, int, int]]] = {}  # OCI blockIO key -> (major, minor, rate)
        # limits
        self.ulimits: list[tuple[str, int, int]] = []
        self.sysctls: dict[str, str] = {}
        self.shm_size: int | None = None
        self.cpus: float | None = None
        self.cpu_shares: int | None = None
        self.cpuset_cpus: str | None = None
        self.pids_limit: int | None = None
        self.memory_reservation: int | None = None
        self.memory_swap: int | None = None
        self.blkio_weight: int | None = None
        self.devices: list[tuple[str, str, str]] = []  # (host path, container path, rwm)
        self.etc_files: dict[str, str] = {}  # /etc/hosts etc.: container path -> host file
        # networking (network/endpoints.py): {"mode": bridge|host|none|container, "networks":
        # {name: {"ip", "aliases"}}, "ports": [...], "publishAll", "expose", "rate"}
        self.net: dict = {"mode": network}
        self.extra_hosts: list[tuple[str, str]] = []  # --add-host NAME:IP
        self.dns: list[str] = []
        self.dns_search: list[str] = []
        self.dns_options: list[str] = []
        self.init: str | None = None  # --init: a static init binary on the host (tini-static)
        self.userns = None  # engine/userns.Userns: --userns, --uidmap, --gidmap
        self.idmapped: set[str] = set()  # bind destinations mounted idmapped (-v SRC:DST:idmap)
        self.group_add: list[str] = []  # --group-add: names (the image's /etc/group) or numbers
        self.device_rules: list[tuple[str, int, int, str]] = []  # --device-cgroup-rule (type, ma, mi, rwm)
        self.masked_paths: list[str] | None = None  # None: Docker's defaults
        self.readonly_paths: list[str] | None = None
        self.cpu_period: int | None = None
        self.cpu_quota: int | None = None
        self.cpuset_mems: str | None = None
        self.memory_swappiness: int | None = None
        self.oom_kill_disable = False
        self.oom_score_adj: int | None = None
        self.links: list[dict] = []  # --link: {"id", "name", "alias"} of running containers
        self.link_env: list[str] = []  # the variables --link gives (engine/lifecycle.py fills them)
        self.ipc_none = False  # --ipc none: an IPC namespace of its own and no /dev/shm
        self.propagation: dict[str, str] = {}  # bind destination -> rshared, rslave ... (default rprivate)
        self.mounts: list[dict] = []  # OCI mounts taken as they are, last (a build's RUN --mount)


ALL_CAPS = capabilities.NAMES  # in bit order: host_caps() indexes it by the CapBnd mask
RLIMITS = {"core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile", "nproc", "rss",
           "rtprio", "rttime", "sigpending", "stack", "as"}


def cap_name(c: str) -> str:
    n = c.strip().upper()
    n = n if n.startswith("CAP_") else "CAP_" + n
    if n != "CAP_ALL" and n not in ALL_CAPS:
        raise OptionError(f"unknown capability {c!r}")
    return n


def host_caps() -> list[str]:
    """The capabilities this process may hand on (its bounding set; ALL_CAPS is in bit order).
    'All' means these: a VM may withhold some (this one has no CAP_SYS_RESOURCE)."""
    try:
        with open("/proc/self/status") as f:
            mask = next(int(ln.split()[1], 16) for ln in f if ln.startswith("CapBnd:"))
    except (OSError, StopIteration, ValueError):
        return list(ALL_CAPS)
    return [c for i, c in enumerate(ALL_CAPS) if mask >> i & 1]


def capabilities(opts: RunOptions) -> list[str]:
    """Docker's rules: the default set (the configuration's, or Docker's; all with --privileged),
    --cap-drop then --cap-add; ALL works."""
    everything = host_caps()
    caps = list(everything) if opts.privileged else list(
        DOCKER_CAPS if opts.default_caps is None else opts.default_caps)
    drops = [cap_name(c) for c in opts.cap_drop]
    adds = [cap_name(c) for c in opts.cap_add]
    if "CAP_ALL" in drops:
        caps = []
    caps = [c for c in caps if c not in drops]
    if "CAP_ALL" in adds:
        caps = list(everything)
    for c in adds:
        if c != "CAP_ALL" and c not in caps:
            caps.append(c)
    return caps


def parse_ulimit(s: str) -> tuple[str, int, int]:
    name, eq, val = s.partition("=")
    if not eq or name not in RLIMITS:
        raise OptionError(f"invalid ulimit {s!r}: use NAME=SOFT[:HARD] with NAME one of "
                          f"{', '.join(sorted(RLIMITS))}")
    soft, _, hard = val.partition(":")
    try:
        lo, hi = int(soft), int(hard or soft)
    except ValueError:
        raise OptionError(f"invalid ulimit {s!r}: values are numbers") from None
    if lo > hi:
        raise OptionError(f"invalid ulimit {s!r}: soft limit above hard limit")
    return name, lo, hi


def parse_throttle(s: str, iops: bool) -> tuple[int, int, int]:
    """--device-read-bps /dev/sda:1mb (bytes/s) or --device-read-iops /dev/sda:100 -> (major, minor, rate)."""
    path, sep, rate = s.rpartition(":")
    if not sep or not path.startswith("/"):
        raise OptionError(f"invalid device throttle {s!r}: use /dev/DEVICE:RATE")
    try:
        st = os.stat(path)
    except OSError:
        raise OptionError(f"device {path} does not exist on this host") from None
    import stat as st_mod
    if not st_mod.S_ISBLK(st.st_mode):
        raise OptionError(f"{path} is not a block device")
    try:
        value = int(rate) if iops else parse_size(rate)
    except ValueError:
        raise OptionError(f"invalid rate in {s!r}") from None
    return os.major(st.st_rdev), os.minor(st.st_rdev), value


def parse_device(s: str) -> tuple[str, str, str]:
    parts = s.split(":")
    host = parts[0]
    ctr = parts[1] if len(parts) > 1 and parts[1].startswith("/") else host
    perms = parts[-1] if len(parts) > 1 and not parts[-1].startswith("/") else "rwm"
    if not host.startswith("/") or not set(perms) <= set("rwm") or len(parts) > 3:
        raise OptionError(f"invalid device {s!r}: use /dev/HOST[:/dev/CTR][:rwm]")
    if not os.path.exists(host):
        raise OptionError(f"device {host} does not exist on this host")
    return host, ctr, perms


def load_seccomp(path: str) -> dict:
    """--security-opt seccomp=FILE: an OCI linux.seccomp object, or Docker's profile format
    (its `syscalls` entries carry names/action/args the same way; includes/excludes by
    capability or architecture are not evaluated: such entries apply as written)."""
    import json
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        raise OptionError(f"cannot read seccomp profile {path}: {e}") from None
    if not isinstance(doc, dict) or "defaultAction" not in doc:
        raise OptionError(f"seccomp profile {path} has no defaultAction")
    out = {k: doc[k] for k in ("defaultAction", "defaultErrnoRet", "architectures", "flags", "listenerPath")
           if k in doc}
    if "archMap" in doc and "architectures" not in doc:
        out["architectures"] = [a["architecture"] for a in doc["archMap"] if "architecture" in a]
    out["syscalls"] = [{k: v for k, v in s.items() if k in ("names", "action", "errnoRet", "args")}
                       for s in doc.get("syscalls") or [] if isinstance(s, dict)]
    return out


def parse_size(s: str) -> int:
    """Docker's sizes: 512, 512k, 64m, 1g (binary units)."""
    t = s.strip().lower().removesuffix("b")
    mult = 1
    if t and t[-1] in "kmgt":
        mult = 1024 ** ("kmgt".index(t[-1]) + 1)
        t = t[:-1]
    try:
        v = float(t)
    except ValueError:
        raise OptionError(f"invalid size {s!r}: use a number with an optional unit (b, k, m, g)") from None
    if v < 0:
        raise OptionError(f"invalid size {s!r}")
    return int(v * mult)


def command_of(image_cfg: dict, opts: RunOptions) -> list[str]:
    ep = opts.entrypoint if opts.entrypoint is not None else (image_cfg.get("Entrypoint") or [])
    cmd = opts.command or ([] if opts.entrypoint is not None else (image_cfg.get("Cmd") or []))
    args = list(ep) + list(cmd)
    if not args:
        raise OptionError("no command specified: the image has no Cmd or Entrypoint; "
                          "give one after the image")
    return args


def merge_env(image_env: list[str], extra: list[str]) -> list[str]:
    """The image's variables, then the container's by name. An entry without '=' has no value
    to give (the CLI takes `-e NAME` from its own environment before it gets here)."""
    out: dict[str, str] = {}
    for e in list(image_env) + list(extra):
        k, eq, v = e.partition("=")
        if eq:
            out[k] = e
    if "PATH" not in out:
        out = {"PATH": DEFAULT_PATH, **out}
    return list(out.values())


def build(image_cfg: dict, opts: RunOptions, cid: str, user: tuple[int, int, list[int]],
          root_mount: dict | None) -> dict:
    cfg = rtspec.default()
    proc = cfg["process"]
    proc["terminal"] = opts.tty
    proc["args"] = command_of(image_cfg, opts)
    if opts.init:  # Docker's --init: tini as PID 1 reaps zombies and forwards signals
        proc["args"] = [INIT_PATH, "--"] + proc["args"]
    env = merge_env(image_cfg.get("Env") or [], opts.link_env + opts.env)
    if opts.tty and not any(e.startswith("TERM=") for e in env):
        env.append("TERM=xterm")
    proc["env"] = env
    proc["cwd"] = opts.workdir or image_cfg.get("WorkingDir") or "/"
    uid, gid, groups = user
    proc["user"] = {"uid": uid, "gid": gid}
    if groups:
        proc["user"]["additionalGids"] = groups
    caps = capabilities(opts)
    proc["capabilities"] = {k: list(caps) for k in ("bounding", "effective", "permitted")}
    if uid != 0:
        proc["capabilities"]["effective"] = []
        proc["capabilities"]["permitted"] = []
    proc["noNewPrivileges"] = opts.no_new_privileges  # Docker's default: off
    # Docker's 1048576 open files, capped at what we hold: raising a hard limit needs
    # CAP_SYS_RESOURCE, which some hosts (this VM among them) do not grant even to root.
    import resource
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nofile = 1048576 if hard == resource.RLIM_INFINITY else min(1048576, hard)
    proc["rlimits"] = [{"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile}]
    for name, soft, hard in opts.ulimits:
        proc["rlimits"] = [r for r in proc["rlimits"] if r["type"] != f"RLIMIT_{name.upper()}"]
        proc["rlimits"].append({"type": f"RLIMIT_{name.upper()}", "hard": hard, "soft": soft})
    # Docker: --network host keeps the host's hostname (in a UTS namespace of its own)
    cfg["hostname"] = opts.hostname or (os.uname().nodename if opts.network == "host" else cid[:12])
    if opts.domainname:
        cfg["domainname"] = opts.domainname
    cfg["root"] = {"path": "rootfs", "readonly": opts.read_only}
    linux = cfg["linux"]
    res: dict = {"devices": [{"allow": False, "access": "rwm"}]}
    linux["resources"] = res
    if opts.memory or opts.memory_reservation or opts.memory_swap or opts.memory_swappiness is not None \
            or opts.oom_kill_disable:
        mem: dict = {}
        if opts.memory:
            mem["limit"] = opts.memory
            # Docker: swap = memory unless --memory-swap says otherwise (-1: unlimited)
            mem["swap"] = opts.memory_swap if opts.memory_swap else opts.memory
        if opts.memory_reservation:
            mem["reservation"] = opts.memory_reservation
        if opts.memory_swappiness is not None:
            mem["swappiness"] = opts.memory_swappiness
        if opts.oom_kill_disable:
            mem["disableOOMKiller"] = True
        res["memory"] = mem
    cpu: dict = {}
    if opts.cpus:
        cpu["period"], cpu["quota"] = 100000, int(opts.cpus * 100000)
    if opts.cpu_period:
        cpu["period"] = opts.cpu_period
    if opts.cpu_quota:
        cpu["quota"] = opts.cpu_quota
    if opts.cpu_shares:
        cpu["shares"] = opts.cpu_shares
    if opts.cpuset_cpus:
        cpu["cpus"] = opts.cpuset_cpus
    if opts.cpuset_mems:
        cpu["mems"] = opts.cpuset_mems
    if cpu:
        res["cpu"] = cpu
    if opts.pids_limit:
        res["pids"] = {"limit": opts.pids_limit}
    if opts.blkio_weight:
        res["blockIO"] = {"weight": opts.blkio_weight}
    if opts.sysctls:
        linux["sysctl"] = dict(opts.sysctls)
    for host, ctr, perms in opts.devices:
        st = os.stat(host)
        import stat as st_mod
        kind = "c" if st_mod.S_ISCHR(st.st_mode) else "b" if st_mod.S_ISBLK(st.st_mode) else None
        if kind is None:
            raise OptionError(f"{host} is not a device")
        major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
        linux.setdefault("devices", []).append({"path": ctr, "type": kind, "major": major, "minor": minor,
                                                "fileMode": st.st_mode & 0o777, "uid": 0, "gid": 0})
        res["devices"].append({"allow": True, "type": kind, "major": major, "minor": minor, "access": perms})
    for kind, major, minor, access in opts.device_rules:  # --device-cgroup-rule
        rule: dict = {"allow": True, "access": access}
        if kind != "a":
            rule["type"] = kind
        if major >= 0:
            rule["major"] = major
        if minor >= 0:
            rule["minor"] = minor
        res["devices"].append(rule)
    if opts.oom_score_adj is not None:
        proc["oomScoreAdj"] = opts.oom_score_adj
    if opts.masked_paths is not None:
        linux["maskedPaths"] = list(opts.masked_paths)
    if opts.readonly_paths is not None:
        linux["readonlyPaths"] = list(opts.readonly_paths)
    gone = {"pid": "pid", "ipc": "ipc", "uts": "uts", "cgroup": "cgroup"}
    for ns in opts.host_ns:
        linux["namespaces"] = [n for n in linux["namespaces"] if n["type"] != gone[ns]]
    for ns, path in opts.join_ns.items():  # --pid/--ipc/--network container:NAME
        linux["namespaces"] = [n for n in linux["namespaces"] if n["type"] != ns]
        linux["namespaces"].append({"type": ns, "path": path})
    for key, devs in opts.throttle.items():
        bio = res.setdefault("blockIO", {})
        bio[key] = [{"major": ma, "minor": mi, "rate": rate} for ma, mi, rate in devs]
    if "uts" in opts.host_ns:
        cfg.pop("hostname", None)
    if opts.ipc_none:
        cfg["mounts"] = [m for m in cfg["mounts"] if m["destination"] != "/dev/shm"]
    if opts.shm_size:
        for m in cfg["mounts"]:
            if m["destination"] == "/dev/shm":
                m["options"] = [o for o in m["options"] if not o.startswith("size=")]
                m["options"].append(f"size={opts.shm_size}")
    if opts.seccomp is None and not opts.privileged:
        from kobako.engine.seccomp_default import profile
        linux["seccomp"] = profile(caps)
    elif opts.seccomp and opts.seccomp != "unconfined":
        linux["seccomp"] = load_seccomp(opts.seccomp)
    if opts.privileged:  # Docker's --privileged: every capability, every device, nothing masked
        linux.pop("maskedPaths", None)
        linux.pop("readonlyPaths", None)
        res["devices"] = [{"allow": True, "access": "rwm"}]
        cfg["mounts"] = [m for m in cfg["mounts"] if m["destination"] not in ("/dev", "/sys")] + [
            {"destination": "/dev", "type": "bind", "source": "/dev", "options": ["rbind", "rw"]},
            {"destination": "/sys", "type": "bind", "source": "/sys", "options": ["rbind", "rw"]}]
    if opts.network == "bridge":  # the engine makes and configures it before the runtime runs
        from kobako.network.networks import netns_path
        for n in linux["namespaces"]:
            if n["type"] == "network":
                n["path"] = netns_path(cid)
    if opts.network == "host":
        linux["namespaces"] = [n for n in linux["namespaces"] if n["type"] != "network"]
        cfg["mounts"] = [m for m in cfg["mounts"] if m["destination"] != "/sys"] + [
            {"destination": "/sys", "type": "bind", "source": "/sys", "options": ["rbind", "ro", "nosuid"]}]
    for host, dest, ro in opts.binds:
        cfg["mounts"].append({"destination": dest, "type": "bind", "source": host,
                              "options": ["rbind", "ro" if ro else "rw"]
                              + ([opts.propagation[dest]] if dest in opts.propagation else [])
                              + (["idmap"] if opts.userns and dest in opts.idmapped else [])})
    if opts.init:
        cfg["mounts"].append({"destination": INIT_PATH, "type": "bind", "source": opts.init,
                              "options": ["bind", "ro"]})
    for dest, host in opts.etc_files.items():
        cfg["mounts"].append({"destination": dest, "type": "bind", "source": host,
                              "options": ["rbind", "rw"]})
    for dest, o in opts.tmpfs:
        extra = [x for x in o.split(",") if x] or ["mode=1777"]
        cfg["mounts"].append({"destination": dest, "type": "tmpfs", "source": "tmpfs",
                              "options": ["nosuid", "nodev"] + extra})
    cfg["mounts"] += opts.mounts
    if opts.userns is not None:
        _user_namespace(cfg, opts, root_mount)
    if root_mount:
        cfg["annotations"] = {"org.kobako.rootfs.mount": _dumps(root_mount)}
    return cfg


def _user_namespace(cfg: dict, opts: RunOptions, root_mount: dict | None) -> None:
    """--userns: a user namespace with the container's range; the layers, the upper dir and
    named volumes are seen through idmapped mounts (runtime/idmap.py), nothing is chowned."""
    linux = cfg["linux"]
    req = opts.userns
    path = opts.join_ns.get("user")
    linux["namespaces"] = [n for n in linux["namespaces"] if n["type"] != "user"]
    linux["namespaces"].append({"type": "user", "path": path} if path else {"type": "user"})
    if not path:
        linux["uidMappings"], linux["gidMappings"] = req.uid_maps, req.gid_maps
    if root_mount is not None:
        root_mount["idmap"] = {"uidMappings": req.uid_maps, "gidMappings": req.gid_maps}
    # mqueue needs an IPC namespace of the container's own user namespace, which it has unless shared
    if "ipc" in opts.join_ns:
        cfg["mounts"] = [m for m in cfg["mounts"] if m.get("type") != "mqueue"]


def _dumps(o: object) -> str:
    from kobako.runtime import jsonfast
    return jsonfast.dumps(o)
