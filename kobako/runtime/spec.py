"""config.json: load it, validate all of it before any step, and write defaults.

Validation happens up front so a bad bundle fails with one clear message before
a single kernel object exists (DESIGN: validate all, then apply).
"""

from __future__ import annotations

import os

from kobako.runtime import jsonfast
from kobako.runtime.errors import RuntimeFailure

NAMESPACES = ("pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time")
RLIMITS = {
    "RLIMIT_CPU": 0, "RLIMIT_FSIZE": 1, "RLIMIT_DATA": 2, "RLIMIT_STACK": 3, "RLIMIT_CORE": 4,
    "RLIMIT_RSS": 5, "RLIMIT_NPROC": 6, "RLIMIT_NOFILE": 7, "RLIMIT_MEMLOCK": 8, "RLIMIT_AS": 9,
    "RLIMIT_LOCKS": 10, "RLIMIT_SIGPENDING": 11, "RLIMIT_MSGQUEUE": 12, "RLIMIT_NICE": 13,
    "RLIMIT_RTPRIO": 14, "RLIMIT_RTTIME": 15,
}
HOOK_KINDS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")
ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+-.")


def check_id(cid: str) -> None:
    """runc's rule: ^[\\w+-\\.]+$, and not '.' or '..' (it names a directory)."""
    if not cid or not set(cid) <= ID_CHARS or cid in (".", "..") or len(cid) > 1024:
        raise RuntimeFailure(f"invalid container id {cid!r}",
                             "use letters, digits, '_', '+', '-' and '.' only")


def load(bundle: str) -> dict:
    bundle = os.path.abspath(bundle)
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise RuntimeFailure(f"no config.json in bundle {bundle}",
                             "create one with `kobako-runtime spec`") from None
    except OSError as e:
        raise RuntimeFailure(f"cannot read {path}: {e.strerror}") from None
    try:
        cfg = jsonfast.loads(raw)
    except (ValueError, UnicodeDecodeError):
        import json

        try:
            json.loads(raw)
            msg = "not valid JSON"
        except ValueError as e:
            msg = str(e)
        raise RuntimeFailure(f"malformed config.json in {bundle}: {msg}") from None
    if not isinstance(cfg, dict):
        raise RuntimeFailure(f"malformed config.json in {bundle}: the top level is not an object")
    validate(cfg, bundle)
    cfg["_bundle"] = bundle
    cfg["_raw"] = raw
    return cfg


def _bad(msg: str, hint: str | None = None) -> RuntimeFailure:
    return RuntimeFailure(f"invalid config.json: {msg}", hint)


def _type(v: object, t: type | tuple, where: str) -> None:
    if not isinstance(v, t) or (t is int and isinstance(v, bool)):
        name = t.__name__ if isinstance(t, type) else " or ".join(x.__name__ for x in t)
        raise _bad(f"{where} must be {_article(name)}, not {type(v).__name__}")


def _article(name: str) -> str:
    return {"dict": "an object", "list": "an array", "str": "a string", "int": "a number",
            "bool": "a boolean"}.get(name, name)


def check_version(v: object) -> None:
    """ociVersion is SemVer 2.0.0 of a 1.x spec (crun refuses others too; runc accepts a
    missing one, and so do we: it means the spec this runtime implements)."""
    if v is None:
        return
    core, _, _ = str(v).partition("+")
    core, dash, pre = core.partition("-")
    parts = core.split(".")
    ok = isinstance(v, str) and len(parts) == 3 and all(p.isdigit() and (p == "0" or p[0] != "0")
                                                         for p in parts)
    if dash:
        ok = ok and all(x and all(c.isalnum() or c == "-" for c in x) for x in pre.split("."))
    if not ok:
        raise _bad(f"ociVersion {v!r} is not a version (SemVer, e.g. \"1.0.2\")")
    if parts[0] != "1":
        raise _bad(f"ociVersion {v} is not supported: this runtime implements the 1.x spec")


def validate(cfg: dict, bundle: str) -> None:
    check_version(cfg.get("ociVersion"))
    root = cfg.get("root")
    if not isinstance(root, dict) or not isinstance(root.get("path"), str) or not root["path"]:
        raise _bad("root.path is missing", "point it at the bundle's root filesystem, e.g. \"rootfs\"")
    rootfs = os.path.join(bundle, root["path"])
    if not os.path.isdir(rootfs):
        raise RuntimeFailure(f"root filesystem {rootfs} does not exist or is not a directory",
                             "unpack an image there or fix root.path")
    proc = cfg.get("process")
    if proc is not None:
        validate_process(proc, "process")
    linux = cfg.get("linux") or {}
    _type(linux, dict, "linux")
    seen = {}
    for ns in linux.get("namespaces") or []:
        _type(ns, dict, "linux.namespaces[]")
        t = ns.get("type")
        if t not in NAMESPACES:
            raise _bad(f"unknown namespace type {t!r}", f"known types: {', '.join(NAMESPACES)}")
        if t in seen:
            raise _bad(f"namespace {t!r} is listed twice")
        seen[t] = ns
        p = ns.get("path")
        if p and not os.path.exists(p):
            raise _bad(f"namespace path {p} of {t} does not exist")
    if "user" in seen and not seen["user"].get("path"):
        if not linux.get("uidMappings") or not linux.get("gidMappings"):
            raise _bad("a new user namespace needs linux.uidMappings and linux.gidMappings")
    for key in ("uidMappings", "gidMappings"):
        for m in linux.get(key) or []:
            for f in ("containerID", "hostID", "size"):
                _type(m.get(f), int, f"linux.{key}[].{f}")
        if linux.get(key) and "user" not in seen:
            raise _bad(f"linux.{key} is set but there is no user namespace")
    for key in ("hostname", "domainname"):
        v = cfg.get(key)
        if v is not None:
            _type(v, str, key)
            if len(v.encode()) > 64 or "\0" in v:
                raise _bad(f"{key} {v[:70]!r} is longer than 64 bytes or contains a NUL byte")
    if cfg.get("hostname") and "uts" not in seen:
        raise _bad("hostname is set but there is no new uts namespace",
                   "add {\"type\": \"uts\"} to linux.namespaces")
    validate_sysctls(linux.get("sysctl") or {}, seen)
    if linux.get("timeOffsets") and "time" not in seen:
        raise _bad("linux.timeOffsets is set but there is no time namespace")
    for k in linux.get("timeOffsets") or {}:
        if k not in ("monotonic", "boottime"):
            raise _bad(f"unknown clock {k!r} in linux.timeOffsets", "use monotonic or boottime")
    for m in cfg.get("mounts") or []:
        _type(m, dict, "mounts[]")
        d = m.get("destination")
        if not isinstance(d, str) or not d.startswith("/"):
            raise _bad(f"mount destination {d!r} must be an absolute path")
        _type(m.get("options") or [], list, f"mounts[{d}].options")
    for d in linux.get("devices") or []:
        if d.get("type") not in ("c", "b", "u", "p"):
            raise _bad(f"device {d.get('path')!r} has unknown type {d.get('type')!r}")
        if not str(d.get("path", "")).startswith("/dev/"):
            raise _bad(f"device path {d.get('path')!r} must be under /dev")
    validate_resources(linux.get("resources"))
    if linux.get("seccomp"):
        from kobako.runtime import seccomp

        seccomp.validate(linux["seccomp"])
    if linux.get("cgroupsPath") is not None:
        _type(linux["cgroupsPath"], str, "linux.cgroupsPath")
        from kobako.runtime.cgroups import resolve_path

        resolve_path(linux["cgroupsPath"], "x")  # refuses '..' and systemd's slice form
    prop = linux.get("rootfsPropagation")
    if prop and prop not in ("private", "rprivate", "slave", "rslave", "shared", "rshared",
                             "unbindable", "runbindable"):
        raise _bad(f"unknown rootfsPropagation {prop!r}")
    hooks = cfg.get("hooks") or {}
    _type(hooks, dict, "hooks")
    for kind, lst in hooks.items():
        if kind not in HOOK_KINDS:
            raise _bad(f"unknown hook kind {kind!r}", f"known kinds: {', '.join(HOOK_KINDS)}")
        for h in lst or []:
            if not isinstance(h, dict) or not str(h.get("path", "")).startswith("/"):
                raise _bad(f"{kind} hook path {h.get('path') if isinstance(h, dict) else h!r} "
                           "must be absolute")


# Sysctls the ipc namespace isolates (runc's list); fs.mqueue.* too
IPC_SYSCTLS = ("kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
               "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced")


def validate_sysctls(sysctls: dict, seen: dict[str, dict]) -> None:
    """runc's rule: a sysctl is written only where a namespace of the container's own isolates
    it. /proc/sys is the host's for every other key (kernel.panic, vm.*, fs.file-max), so
    writing one there would change the whole machine."""
    _type(sysctls, dict, "linux.sysctl")
    for key in sysctls:
        if not isinstance(key, str) or not all(p and "/" not in p and "\0" not in p for p in key.split(".")):
            raise _bad(f"invalid sysctl name {key!r}")
        if key in IPC_SYSCTLS or key.startswith("fs.mqueue."):
            if "ipc" in seen and not _host_ns(seen["ipc"], "ipc"):
                continue
            raise _bad(f"sysctl {key!r} is not allowed in the host's ipc namespace")
        if key.startswith("net."):
            if "network" in seen and not _host_ns(seen["network"], "net"):
                continue
            raise _bad(f"sysctl {key!r} is not allowed in the host's network namespace")
        if key == "kernel.domainname" and "uts" in seen:
            continue
        if key == "kernel.hostname":
            raise _bad("sysctl 'kernel.hostname' conflicts with the OCI \"hostname\" field", "set hostname")
        raise _bad(f"sysctl {key!r} is not in a separate kernel namespace",
                   "only namespaced sysctls (net.*, kernel.msg*/shm*/sem, fs.mqueue.*, kernel.domainname) "
                   "can be set for a container")


def _host_ns(ns: dict, kind: str) -> bool:
    """A namespace entry with a path that is the host's own (`--network host` by path)."""
    p = ns.get("path")
    if not p:
        return False
    try:
        a, b = os.stat(p), os.stat(f"/proc/self/ns/{kind}")
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def validate_resources(res: dict | None) -> None:
    """linux.resources: shapes and values, before any cgroup exists."""
    if res is None:
        return
    _type(res, dict, "linux.resources")
    for key in ("memory", "cpu", "pids", "blockIO", "network", "unified"):
        if res.get(key) is not None:
            _type(res[key], dict, f"linux.resources.{key}")
    for k, v in (res.get("memory") or {}).items():
        if k in ("limit", "reservation", "swap", "kernel", "kernelTCP", "swappiness"):
            _type(v, int, f"linux.resources.memory.{k}")
    lim = (res.get("memory") or {}).get("limit")
    if lim is not None and 0 <= lim < 6 * 2**20:
        raise _bad(f"memory limit {lim} is below the 6 MiB a container needs to start",
                   "give at least 6291456 bytes")
    cpu = res.get("cpu") or {}
    for k in ("shares", "quota", "period", "realtimeRuntime", "realtimePeriod"):
        if cpu.get(k) is not None:
            _type(cpu[k], int, f"linux.resources.cpu.{k}")
    for k in ("cpus", "mems"):
        if cpu.get(k) is not None:
            _type(cpu[k], str, f"linux.resources.cpu.{k}")
            if cpu[k] and not set(cpu[k]) <= set("0123456789,-"):
                raise _bad(f"linux.resources.cpu.{k} {cpu[k]!r} is not a list like 0-2,4")
    pids = res.get("pids") or {}
    if "limit" in pids:
        _type(pids["limit"], int, "linux.resources.pids.limit")
    for r in res.get("devices") or []:
        _type(r, dict, "linux.resources.devices[]")
        if r.get("type", "a") not in ("a", "c", "b"):
            raise _bad(f"device rule type {r.get('type')!r} is not a, c or b")
        if not set(r.get("access") or "rwm") <= set("rwm"):
            raise _bad(f"device rule access {r.get('access')!r} is not made of r, w and m")
        for k in ("major", "minor"):
            if r.get(k) is not None:
                _type(r[k], int, f"linux.resources.devices[].{k}")
    if res.get("unified"):
        from kobako.runtime.cgroups.v2 import validate_unified

        validate_unified(res["unified"])


def validate_process(proc: dict, where: str) -> None:
    _type(proc, dict, where)
    args = proc.get("args")
    if not args or not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise _bad(f"{where}.args must be a non-empty list of strings")
    _no_nul(args, f"{where}.args")
    cwd = proc.get("cwd", "/")
    if not isinstance(cwd, str) or not cwd.startswith("/"):
        raise _bad(f"{where}.cwd {cwd!r} must be an absolute path")
    _no_nul([cwd], f"{where}.cwd")
    env = proc.get("env") or []
    _type(env, list, f"{where}.env")
    if not all(isinstance(e, str) for e in env):
        raise _bad(f"{where}.env must be a list of strings")
    _no_nul(env, f"{where}.env")
    user = proc.get("user") or {}
    _type(user, dict, f"{where}.user")
    for f in ("uid", "gid"):
        if f in user:
            _id(user[f], f"{where}.user.{f}")
    if "umask" in user:
        _type(user["umask"], int, f"{where}.user.umask")
    for g in user.get("additionalGids") or []:
        _id(g, f"{where}.user.additionalGids[]")
    for r in proc.get("rlimits") or []:
        if r.get("type") not in RLIMITS:
            raise _bad(f"unknown rlimit {r.get('type')!r}")
        for f in ("soft", "hard"):
            _type(r.get(f), int, f"{where}.rlimits[{r['type']}].{f}")
            if not 0 <= r[f] < 2**64:
                raise _bad(f"{where}.rlimits[{r['type']}].{f} {r[f]} is out of range")
        if r["soft"] > r["hard"]:
            raise _bad(f"{where}.rlimits[{r['type']}]: soft limit {r['soft']} "
                       f"is above hard limit {r['hard']}")
    from kobako.linux import capabilities

    caps = proc.get("capabilities") or {}
    _type(caps, dict, f"{where}.capabilities")
    for kind, names in caps.items():
        if kind not in ("bounding", "effective", "permitted", "inheritable", "ambient"):
            raise _bad(f"unknown capability set {where}.capabilities.{kind}")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise _bad(f"{where}.capabilities.{kind} must be an array of capability names")
        try:
            capabilities.to_mask(names)
        except ValueError as e:
            raise _bad(f"{where}.capabilities.{kind}: {e}") from None


def _no_nul(values: list[str], where: str) -> None:
    if any("\0" in v for v in values):
        raise _bad(f"{where} contains a NUL byte")


def _id(v: object, where: str) -> None:
    """A uid or gid: 0 .. 2**32-2 ((uid_t)-1 means "unchanged" to the kernel)."""
    _type(v, int, where)
    if not 0 <= v < 2**32 - 1:
        raise _bad(f"{where} {v} is out of range (0 to 4294967294)")


def default(rootless: bool = False) -> dict:
    """The config `kobako-runtime spec` writes: runc's defaults, so both accept it."""
    caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    cfg: dict = {
        "ociVersion": "1.0.2",  # what runc 1.1 writes: crun 1.8 refuses versions it does not know
        "process": {
            "terminal": True, "user": {"uid": 0, "gid": 0}, "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {k: list(caps) for k in ("bounding", "effective", "permitted")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "kobako",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
        ],
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount", "cgroup")],
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                            "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                            "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
                            "/sys/devices/virtual/powercap"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
        },
    }
    if rootless:
        uid, gid = os.getuid(), os.getgid()
        linux = cfg["linux"]
        del linux["resources"]
        linux["namespaces"] = [{"type": t} for t in ("pid", "ipc", "uts", "mount", "cgroup", "user")]
        linux["uidMappings"] = [{"containerID": 0, "hostID": uid, "size": 1}]
        linux["gidMappings"] = [{"containerID": 0, "hostID": gid, "size": 1}]
        mounts = [m for m in cfg["mounts"] if m["destination"] not in ("/sys", "/sys/fs/cgroup")]
        for m in mounts:
            if m["destination"] == "/dev/pts":
                m["options"] = [o for o in m["options"] if o != "gid=5"]
        mounts.append({"destination": "/sys", "type": "none", "source": "/sys",
                       "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]})
        cfg["mounts"] = mounts
    return cfg
