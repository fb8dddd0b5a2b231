"""Run options + the image's config -> an OCI runtime spec (config.json).

Defaults follow Docker's: its 14 default capabilities, masked and read-only /proc
paths, a private network namespace, PATH when the image sets none, the image's
Entrypoint/Cmd/Env/WorkingDir/User unless the options override them.
"""

from __future__ import annotations

import os

from kobako.runtime import spec as rtspec

DOCKER_CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
               "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
               "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"]
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class OptionError(Exception):
    pass


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
        self.tty, self.read_only, self.network, self.memory = tty, read_only, network, memory
        self.binds: list[tuple[str, str, bool]] = []  # (host path, destination, read-only)
        self.volumes: list[tuple[str | None, str, bool]] = []  # (volume name, None: anonymous; ...)
        self.tmpfs: list[tuple[str, str]] = []  # (destination, options)


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
    out: dict[str, str] = {}
    for e in list(image_env) + list(extra):
        k, eq, v = e.partition("=")
        if not eq:  # -e NAME: take it from the caller's environment, as docker does
            if k in os.environ:
                out[k] = f"{k}={os.environ[k]}"
            continue
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
    env = merge_env(image_cfg.get("Env") or [], opts.env)
    if opts.tty and not any(e.startswith("TERM=") for e in env):
        env.append("TERM=xterm")
    proc["env"] = env
    proc["cwd"] = opts.workdir or image_cfg.get("WorkingDir") or "/"
    uid, gid, groups = user
    proc["user"] = {"uid": uid, "gid": gid}
    if groups:
        proc["user"]["additionalGids"] = groups
    proc["capabilities"] = {k: list(DOCKER_CAPS) for k in ("bounding", "effective", "permitted")}
    if uid != 0:
        proc["capabilities"]["effective"] = []
        proc["capabilities"]["permitted"] = []
    proc["noNewPrivileges"] = False  # Docker's default; --security-opt no-new-privileges sets it
    # Docker's 1048576 open files, capped at what we hold: raising a hard limit needs
    # CAP_SYS_RESOURCE, which some hosts (this VM among them) do not grant even to root.
    import resource
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nofile = 1048576 if hard == resource.RLIM_INFINITY else min(1048576, hard)
    proc["rlimits"] = [{"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile}]
    cfg["hostname"] = opts.hostname or cid[:12]
    cfg["root"] = {"path": "rootfs", "readonly": opts.read_only}
    linux = cfg["linux"]
    linux["resources"] = {"devices": [{"allow": False, "access": "rwm"}]}
    if opts.memory:
        linux["resources"]["memory"] = {"limit": opts.memory, "swap": opts.memory}
    if opts.network == "host":
        linux["namespaces"] = [n for n in linux["namespaces"] if n["type"] != "network"]
        cfg["mounts"] = [m for m in cfg["mounts"] if m["destination"] != "/sys"] + [
            {"destination": "/sys", "type": "bind", "source": "/sys", "options": ["rbind", "ro", "nosuid"]}]
    for host, dest, ro in opts.binds:
        cfg["mounts"].append({"destination": dest, "type": "bind", "source": host,
                              "options": ["rbind", "ro" if ro else "rw"]})
    for dest, o in opts.tmpfs:
        extra = [x for x in o.split(",") if x] or ["mode=1777"]
        cfg["mounts"].append({"destination": dest, "type": "tmpfs", "source": "tmpfs",
                              "options": ["nosuid", "nodev"] + extra})
    if root_mount:
        cfg["annotations"] = {"org.kobako.rootfs.mount": _dumps(root_mount)}
    return cfg


def _dumps(o: object) -> str:
    from kobako.runtime import jsonfast
    return jsonfast.dumps(o)
