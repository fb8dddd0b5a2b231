"""A container's complete description: the meaning of Docker's Config + HostConfig +
NetworkingConfig, typed and validated once, here.

Both front ends build one: the API from the create body as it comes, the CLI from its flags
(turned into the same Docker fields, as the docker CLI does). Every field dockerd 20.10
accepts is either applied or refused with a message; none is dropped. The container record
stores the spec whole (`config`, `hostConfig`, `networkingConfig`, `kobako`), `inspect`
renders it back (engine/views.py), and `plan()` turns it into the engine's run options
(engine/ocispec.py makes config.json from those).

Kept off the start-up path of `kobako run`: no dataclasses (they import `inspect` and `re`,
~8 ms here); the types are checked from the tables below.
"""

from __future__ import annotations

import os

from kobako.engine import ocispec
from kobako.errors import InvalidArgument, NotFound

# Field kinds. "strslice": a string or a list of strings (Docker's strslice, Cmd/Entrypoint).
_S, _I, _B, _L, _M, _O, _SS, _A = "string", "integer", "boolean", "list of strings", \
    "map of strings", "object", "strslice", "list"

# Config (ContainerConfig): field -> (kind, the zero value dockerd shows in inspect)
CONFIG: dict[str, tuple[str, object]] = {
    "Hostname": (_S, ""), "Domainname": (_S, ""), "User": (_S, ""),
    "AttachStdin": (_B, False), "AttachStdout": (_B, False), "AttachStderr": (_B, False),
    "ExposedPorts": (_O, None), "Tty": (_B, False), "OpenStdin": (_B, False), "StdinOnce": (_B, False),
    "Env": (_L, None), "Cmd": (_SS, None), "Healthcheck": (_O, None), "ArgsEscaped": (_B, False),
    "Image": (_S, ""), "Volumes": (_O, None), "WorkingDir": (_S, ""), "Entrypoint": (_SS, None),
    "NetworkDisabled": (_B, False), "MacAddress": (_S, ""), "OnBuild": (_L, None), "Labels": (_M, {}),
    "StopSignal": (_S, ""), "StopTimeout": (_I, None), "Shell": (_L, None),
}

# HostConfig: field -> (kind, zero value in inspect)
HOST: dict[str, tuple[str, object]] = {
    "Binds": (_L, None), "ContainerIDFile": (_S, ""), "LogConfig": (_O, None), "NetworkMode": (_S, "default"),
    "PortBindings": (_O, {}), "RestartPolicy": (_O, None), "AutoRemove": (_B, False),
    "VolumeDriver": (_S, ""), "VolumesFrom": (_L, None), "CapAdd": (_L, None), "CapDrop": (_L, None),
    "CgroupnsMode": (_S, ""), "Dns": (_L, []), "DnsOptions": (_L, []), "DnsSearch": (_L, []),
    "ExtraHosts": (_L, None), "GroupAdd": (_L, None), "IpcMode": (_S, "private"), "Cgroup": (_S, ""),
    "Links": (_L, None), "OomScoreAdj": (_I, 0), "PidMode": (_S, ""), "Privileged": (_B, False),
    "PublishAllPorts": (_B, False), "ReadonlyRootfs": (_B, False), "SecurityOpt": (_L, None),
    "StorageOpt": (_M, None), "Tmpfs": (_M, None), "UTSMode": (_S, ""), "UsernsMode": (_S, ""),
    "ShmSize": (_I, 64 << 20), "Sysctls": (_M, None), "Runtime": (_S, "runc"), "ConsoleSize": (_A, [0, 0]),
    "Isolation": (_S, ""), "CpuShares": (_I, 0), "Memory": (_I, 0), "NanoCpus": (_I, 0),
    "CgroupParent": (_S, ""), "BlkioWeight": (_I, 0), "BlkioWeightDevice": (_A, []),
    "BlkioDeviceReadBps": (_A, None), "BlkioDeviceWriteBps": (_A, None),
    "BlkioDeviceReadIOps": (_A, None), "BlkioDeviceWriteIOps": (_A, None),
    "CpuPeriod": (_I, 0), "CpuQuota": (_I, 0), "CpuRealtimePeriod": (_I, 0), "CpuRealtimeRuntime": (_I, 0),
    "CpusetCpus": (_S, ""), "CpusetMems": (_S, ""), "Devices": (_A, []), "DeviceCgroupRules": (_L, None),
    "DeviceRequests": (_A, None), "KernelMemory": (_I, 0), "KernelMemoryTCP": (_I, 0),
    "MemoryReservation": (_I, 0), "MemorySwap": (_I, 0), "MemorySwappiness": (_I, None),
    "OomKillDisable": (_B, False), "PidsLimit": (_I, None), "Ulimits": (_A, None), "CpuCount": (_I, 0),
    "CpuPercent": (_I, 0), "IOMaximumIOps": (_I, 0), "IOMaximumBandwidth": (_I, 0), "Mounts": (_A, None),
    "MaskedPaths": (_L, None), "ReadonlyPaths": (_L, None), "Init": (_B, None),
}

ENDPOINT: dict[str, tuple[str, object]] = {
    "IPAMConfig": (_O, None), "Links": (_L, None), "Aliases": (_L, None), "NetworkID": (_S, ""),
    "EndpointID": (_S, ""), "Gateway": (_S, ""), "IPAddress": (_S, ""), "IPPrefixLen": (_I, 0),
    "IPv6Gateway": (_S, ""), "GlobalIPv6Address": (_S, ""), "GlobalIPv6PrefixLen": (_I, 0),
    "MacAddress": (_S, ""), "DriverOpts": (_M, None),
}

LOG_DRIVERS = {"json-file": ("max-size", "max-file", "compress", "labels", "env", "env-regex", "tag"),
               "local": ("max-size", "max-file", "compress"),
               "none": ()}
RUNTIMES = ("runc", "kobako", "kobako-runtime", "io.containerd.runc.v2")  # all mean kobako's own


def _log_config(driver: str, opts: dict) -> tuple[str, dict]:
    """The configuration's [log] driver when the container names none, and its options under
    the container's own when the driver is the configured one (dockerd's daemon log-opts)."""
    from kobako import config
    cfg = config.get()
    default = cfg.get("log", "driver") or "json-file"
    if default not in LOG_DRIVERS:
        raise cfg.error("log", "driver", f"no log driver named '{default}' (one of {', '.join(LOG_DRIVERS)})")
    driver = driver or default
    if driver == default:
        given = cfg.get("log", "options") or {}
        for k in given:
            if k not in LOG_DRIVERS[default]:
                raise cfg.error("log", "options", f"unknown log opt '{k}' for {default} log driver")
        opts = {**given, **opts}
    return driver, opts


def _kind_ok(kind: str, v: object) -> bool:
    if kind == _S:
        return isinstance(v, str)
    if kind == _I:
        return isinstance(v, int) and not isinstance(v, bool)
    if kind == _B:
        return isinstance(v, bool)
    if kind == _L:
        return isinstance(v, list) and all(isinstance(x, str) for x in v)
    if kind == _M:
        return isinstance(v, dict) and all(isinstance(x, str) for x in v.values())
    if kind == _O:
        return isinstance(v, dict)
    if kind == _SS:
        return isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v))
    return isinstance(v, list)


def _check(section: str, table: dict[str, tuple[str, object]], given: dict) -> dict:
    """Type-check the fields of one section; fill in dockerd's zero values. Unknown fields are
    ignored, as dockerd's JSON decoding ignores them."""
    if not isinstance(given, dict):
        raise InvalidArgument(f"invalid {section}: expected an object")
    out: dict = {}
    for k, (kind, zero) in table.items():
        v = given.get(k)
        if v is None:
            out[k] = _copy(zero)
            continue
        if not _kind_ok(kind, v):
            article = "an" if kind[0] in "aeiou" else "a"
            raise InvalidArgument(f"invalid {section}.{k}: expected {article} {kind}, got {_json_type(v)}")
        out[k] = [v] if kind == _SS and isinstance(v, str) else v
    return out


def _copy(v: object) -> object:
    return list(v) if isinstance(v, list) else dict(v) if isinstance(v, dict) else v


def _json_type(v: object) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list",
            dict: "an object"}.get(type(v), type(v).__name__)


class ContainerSpec:
    """Docker's create body, checked: `config` (Config), `host` (HostConfig), `endpoints`
    (NetworkingConfig.EndpointsConfig), `name`, and kobako's own additions in `extra`
    (--net-rate, --uidmap/--gidmap: Podman's, not Docker's)."""

    __slots__ = ("config", "host", "endpoints", "name", "extra")

    def __init__(self, config: dict, host: dict, endpoints: dict, name: str | None = None,
                 extra: dict | None = None) -> None:
        self.config, self.host, self.endpoints, self.name = config, host, endpoints, name
        self.extra = extra or {}

    @classmethod
    def from_docker(cls, body: dict, name: str | None = None, extra: dict | None = None) -> ContainerSpec:
        """A create body (Config with HostConfig and NetworkingConfig inside), as the API gets it."""
        if not isinstance(body, dict):
            raise InvalidArgument("invalid create body: expected a JSON object")
        config = _check("Config", CONFIG, body)
        hc, net = body.get("HostConfig"), body.get("NetworkingConfig")
        host = _check("HostConfig", HOST, {} if hc is None else hc)
        net = {} if net is None else net
        if not isinstance(net, dict):
            raise InvalidArgument("invalid NetworkingConfig: expected an object")
        eps = net.get("EndpointsConfig") or {}
        if not isinstance(eps, dict):
            raise InvalidArgument("invalid NetworkingConfig.EndpointsConfig: expected an object")
        endpoints = {k: _check(f"EndpointsConfig.{k}", ENDPOINT, v or {}) for k, v in eps.items()}
        if not config["Image"]:
            raise InvalidArgument("config is missing the Image")
        spec = cls(config, host, endpoints, name, extra)
        spec.validate()
        return spec

    def record(self) -> dict:
        return {"config": self.config, "hostConfig": self.host,
                "networkingConfig": {"EndpointsConfig": self.endpoints}, **({"kobako": self.extra}
                                                                          if self.extra else {})}

    # -- rules that need no engine state ---------------------------------------------------------
    def validate(self) -> None:
        c, h = self.config, self.host
        if h["Isolation"] not in ("", "default"):
            raise InvalidArgument(f"invalid isolation {h['Isolation']!r}: only 'default' on Linux")
        if h["Runtime"] not in ("",) + RUNTIMES:
            raise InvalidArgument(f"unknown runtime specified {h['Runtime']}",
                                  "kobako runs every container with its own runtime (runc's interface)")
        for k in ("CpuRealtimePeriod", "CpuRealtimeRuntime"):
            if h[k]:
                raise InvalidArgument(f"{k} is not supported: this kernel's cgroups have no real-time "
                                      "CPU scheduler (CONFIG_RT_GROUP_SCHED)")
        for k in ("CpuCount", "CpuPercent", "IOMaximumIOps", "IOMaximumBandwidth"):
            if h[k]:
                raise InvalidArgument(f"invalid HostConfig.{k}: Windows only, not supported on Linux")
        if h["KernelMemory"] or h["KernelMemoryTCP"]:
            raise InvalidArgument("kernel memory limits are not supported: the kernel removed them (5.16)")
        if h["DeviceRequests"]:
            raise InvalidArgument("could not select device driver \"\" with capabilities: [[gpu]]",
                                  "kobako has no GPU device drivers")
        if h["StorageOpt"]:
            raise InvalidArgument("--storage-opt is not supported: kobako's overlay snapshots have no "
                                  "per-container quota")
        if h["CgroupParent"]:
            raise InvalidArgument("--cgroup-parent is not supported: kobako places every container under "
                                  "its own cgroup")
        if h["Cgroup"]:
            raise InvalidArgument("HostConfig.Cgroup (joining another container's cgroup) is not supported")
        lc = h["LogConfig"] or {}
        opts = lc.get("Config") or {}
        if not isinstance(opts, dict) or not all(isinstance(v, str) for v in opts.values()):
            raise InvalidArgument("invalid HostConfig.LogConfig.Config: expected a map of strings")
        driver, opts = _log_config(lc.get("Type") or "", opts)
        if driver not in LOG_DRIVERS:
            raise InvalidArgument(f"logger: no log driver named '{driver}' is registered")
        for k, v in opts.items():
            if k not in LOG_DRIVERS[driver]:
                raise InvalidArgument(f"unknown log opt '{k}' for {driver} log driver")
            if k == "max-size":
                ocispec.parse_size(v)
            elif k == "max-file" and not (v.isdigit() and int(v) >= 1):
                raise InvalidArgument(f"invalid value for max-file: {v!r}: a number of files, at least 1")
            elif k == "compress" and v not in ("true", "false", "1", "0"):
                raise InvalidArgument(f"invalid value for compress: {v!r}: true or false")
        h["LogConfig"] = {"Type": driver, "Config": dict(opts)}
        rp = h["RestartPolicy"] or {}
        name = rp.get("Name") or "no"
        n = rp.get("MaximumRetryCount") or 0
        if name not in ("no", "always", "unless-stopped", "on-failure") or not isinstance(n, int):
            raise InvalidArgument(f"invalid restart policy {name!r}: no, always, unless-stopped or "
                                  "on-failure")
        if n and name != "on-failure":
            raise InvalidArgument(f"maximum retry count cannot be used with restart policy '{name}'")
        if n < 0:
            raise InvalidArgument("maximum retry count cannot be negative")
        h["RestartPolicy"] = {"Name": "" if name == "no" and not rp else name, "MaximumRetryCount": n}
        if h["AutoRemove"] and name not in ("no", ""):
            raise InvalidArgument("can't create 'AutoRemove' container with restart policy")
        if h["Memory"] and h["Memory"] < 6 << 20:
            raise InvalidArgument("minimum memory limit allowed is 6MB")
        if h["MemorySwap"] > 0 and h["Memory"] and h["MemorySwap"] < h["Memory"]:
            raise InvalidArgument("minimum memoryswap limit should be larger than memory limit, see usage")
        if h["MemorySwap"] > 0 and not h["Memory"]:
            raise InvalidArgument("you should always set the memory limit when using memoryswap limit, "
                                  "see usage")
        sw = h["MemorySwappiness"]
        if sw is not None and sw != -1 and not 0 <= sw <= 100:
            raise InvalidArgument(f"invalid value: {sw}, valid memory swappiness range is 0-100")
        if h["BlkioWeight"] and not 10 <= h["BlkioWeight"] <= 1000:
            raise InvalidArgument("range of blkio weight is from 10 to 1000")
        if h["OomScoreAdj"] and not -1000 <= h["OomScoreAdj"] <= 1000:
            raise InvalidArgument(f"invalid value {h['OomScoreAdj']}, range for oom score adj is "
                                  "[-1000, 1000]")
        if h["NanoCpus"] and (h["CpuPeriod"] or h["CpuQuota"]):
            raise InvalidArgument("conflicting options: Nano CPUs and CPU Period cannot both be set")
        if h["NanoCpus"] < 0 or h["NanoCpus"] > (os.cpu_count() or 1) * 10**9:
            raise InvalidArgument(f"range of CPUs is from 0.01 to {os.cpu_count()}.00, as there are only "
                                  f"{os.cpu_count()} CPUs available")
        if h["CpuPeriod"] and not 1000 <= h["CpuPeriod"] <= 1000000:
            raise InvalidArgument("CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s "
                                  "(i.e. 1000000)")
        if h["CpuQuota"] and h["CpuQuota"] < 1000:
            raise InvalidArgument("CPU cfs quota can not be less than 1ms (i.e. 1000)")
        if h["ShmSize"] < 0:
            raise InvalidArgument("SHM size can not be less than 0")
        for rule in h["DeviceCgroupRules"] or []:
            device_rule(rule)
        for path in (h["Tmpfs"] or {}):
            if not path.startswith("/"):
                raise InvalidArgument(f"invalid tmpfs mount {path!r}: the path must be absolute")
        for g in h["GroupAdd"] or []:
            if not g:
                raise InvalidArgument("invalid HostConfig.GroupAdd: an empty group")
        if c["StopTimeout"] is not None and c["StopTimeout"] < -1:
            raise InvalidArgument(f"invalid stop timeout {c['StopTimeout']}: seconds, or -1 to wait forever")
        if c["StopSignal"]:
            signal_number(c["StopSignal"])
        if c["Healthcheck"]:
            check_healthcheck(c["Healthcheck"])
        if h["PidMode"] not in ("", "host") and not h["PidMode"].startswith("container:"):
            raise InvalidArgument(f"invalid PID mode {h['PidMode']!r}: host or container:NAME")
        if h["IpcMode"] not in ("", "private", "shareable", "host", "none") \
                and not h["IpcMode"].startswith("container:"):
            raise InvalidArgument(f"invalid IPC mode {h['IpcMode']!r}: private, shareable, host, none or "
                                  "container:NAME")
        if h["UTSMode"] not in ("", "host"):
            raise InvalidArgument(f"invalid UTS mode {h['UTSMode']!r}: host")
        if h["CgroupnsMode"] not in ("", "host", "private"):
            raise InvalidArgument(f"invalid cgroup namespace mode {h['CgroupnsMode']!r}: host or private")
        if h["UTSMode"] == "host" and (c["Hostname"] or c["Domainname"]):
            raise InvalidArgument("conflicting options: hostname and the UTS mode")
        for env in c["Env"] or []:
            if not env or env.startswith("="):
                raise InvalidArgument(f"invalid environment variable: {env!r}")
        if len(self.endpoints) > 1:
            raise InvalidArgument("Container cannot be connected to network endpoints: "
                                  + ", ".join(self.endpoints))


def signal_number(s: str) -> int:
    import signal
    t = s.upper()
    if t.isdigit():
        n = int(t)
    else:
        n = getattr(signal, t if t.startswith("SIG") else "SIG" + t, 0)
        n = int(n) if isinstance(n, signal.Signals) else 0
    if not 0 < n < 65:
        raise InvalidArgument(f"invalid signal: {s}")
    return n


def device_rule(rule: str) -> tuple[str, int, int, str]:
    """A --device-cgroup-rule 'c 7:128 rwm' -> (type, major, minor, access); -1 is '*'."""
    parts = rule.split()
    if len(parts) != 3 or parts[0] not in ("a", "b", "c") or ":" not in parts[1] \
            or not parts[2] or set(parts[2]) - set("rwm"):
        raise InvalidArgument(f"invalid device cgroup rule {rule!r}: TYPE MAJOR:MINOR ACCESS, "
                              "e.g. 'c 7:128 rwm' ('*' for any number)")
    ma, _, mi = parts[1].partition(":")
    try:
        major = -1 if ma == "*" else int(ma)
        minor = -1 if mi == "*" else int(mi)
    except ValueError:
        raise InvalidArgument(f"invalid device cgroup rule {rule!r}: numbers or '*'") from None
    return parts[0], major, minor, parts[2]


def check_healthcheck(hc: dict) -> None:
    test = hc.get("Test")
    if test is not None and (not isinstance(test, list) or not all(isinstance(x, str) for x in test)):
        raise InvalidArgument("invalid Healthcheck.Test: expected a list of strings")
    if test and test[0] not in ("NONE", "CMD", "CMD-SHELL", ""):
        raise InvalidArgument(f"invalid Healthcheck.Test: the first entry is NONE, CMD or CMD-SHELL, "
                              f"not {test[0]!r}")
    if test and test[0] in ("CMD", "CMD-SHELL") and len(test) < 2:
        raise InvalidArgument("invalid Healthcheck.Test: no command after " + test[0])
    for k in ("Interval", "Timeout", "StartPeriod"):
        v = hc.get(k) or 0
        if not isinstance(v, int) or isinstance(v, bool):
            raise InvalidArgument(f"invalid Healthcheck.{k}: nanoseconds as an integer")
        if v and v < 1_000_000:
            raise InvalidArgument(f"Interval, Timeout and StartPeriod in Healthcheck cannot be less than "
                                  f"1ms (Healthcheck.{k} is {v} ns)")
    r = hc.get("Retries") or 0
    if not isinstance(r, int) or isinstance(r, bool) or r < 0:
        raise InvalidArgument("Retries in Healthcheck cannot be negative")


# -- the effective config: the image's defaults under the container's own --------------------------

def merge_image(config: dict, img_cfg: dict) -> None:
    """What dockerd does at create: fields the container leaves empty come from the image
    (User, Env merged by name, Cmd unless Entrypoint is given, WorkingDir, ExposedPorts,
    Volumes, Labels, StopSignal, Healthcheck, OnBuild, Shell)."""
    if not config["User"]:
        config["User"] = img_cfg.get("User") or ""
    env = list(img_cfg.get("Env") or [])
    names = {e.partition("=")[0] for e in config["Env"] or []}
    config["Env"] = [e for e in env if e.partition("=")[0] not in names] + list(config["Env"] or [])
    if not any(e.startswith("PATH=") for e in config["Env"]):
        config["Env"].insert(0, ocispec.DEFAULT_PATH)
    if config["Entrypoint"] is None:
        config["Entrypoint"] = img_cfg.get("Entrypoint")
        if not config["Cmd"]:
            config["Cmd"] = img_cfg.get("Cmd")
    if not config["WorkingDir"]:
        config["WorkingDir"] = img_cfg.get("WorkingDir") or ""
    for k in ("ExposedPorts", "Volumes"):
        if img_cfg.get(k):
            config[k] = {**img_cfg[k], **(config[k] or {})}
    config["Labels"] = {**(img_cfg.get("Labels") or {}), **(config["Labels"] or {})}
    for k in ("StopSignal", "Shell", "OnBuild"):
        if not config[k] and img_cfg.get(k):
            config[k] = img_cfg[k]
    hc, ihc = config["Healthcheck"], img_cfg.get("Healthcheck")
    if ihc:
        if not hc:
            config["Healthcheck"] = dict(ihc)
        elif not hc.get("Test"):  # --health-interval alone: the image's test with new timings
            config["Healthcheck"] = {**ihc, **{k: v for k, v in hc.items() if v}}


# -- the spec as the engine's run options ----------------------------------------------------------

def plan(e, spec: ContainerSpec) -> ocispec.RunOptions:
    """The run options of a container: the spec's fields checked against the engine's state
    (networks, other containers, volumes) and turned into what ocispec.build needs. Nothing
    is made here."""
    c, h = spec.config, spec.host
    mode = h["NetworkMode"] or "default"
    if c["NetworkDisabled"]:
        mode = "none"
    net = "bridge" if mode in ("default", "bridge") else mode
    kind = net if net in ("none", "host") else "container" if net.startswith("container:") else "bridge"
    opts = ocispec.RunOptions(
        command=list(c["Cmd"] or []), entrypoint=list(c["Entrypoint"]) if c["Entrypoint"] is not None
        else None, env=[x for x in c["Env"] or [] if "=" in x], workdir=c["WorkingDir"] or None,
        user=c["User"] or None, hostname=c["Hostname"] or None, tty=c["Tty"],
        read_only=h["ReadonlyRootfs"], network=kind, memory=h["Memory"] or None)
    opts.domainname = c["Domainname"] or None
    # the endpoint settings of the network it joins (dockerd ignores ones for other networks)
    ep = spec.endpoints.get(mode) or (spec.endpoints.get("bridge") if mode in ("default", "bridge") else None)
    if kind == "bridge":
        opts.net = _bridge(e, "bridge" if net == "default" else net, spec, ep)
    elif h["PortBindings"] or h["PublishAllPorts"] or c["MacAddress"] or spec.extra.get("NetRate") or (
            ep and ((ep["IPAMConfig"] or {}).get("IPv4Address") or ep["Aliases"])):
        raise InvalidArgument(f"-p, -P, --ip, --network-alias, --net-rate and --mac-address need a "
                              f"bridge network, not --network {net}")
    elif kind == "container":
        other = e.containers.resolve(net.split(":", 1)[1])
        if e.state(other) != "running":
            raise InvalidArgument(f"--network {net}: container {other['name']} is not running")
        if (other.get("net") or {}).get("mode") == "bridge":
            from kobako.network.networks import netns_path
            opts.join_ns["network"] = netns_path(other["id"])  # stable while it runs
        else:
            from kobako.engine.copy import _runtime_pid
            opts.join_ns["network"] = f"/proc/{_runtime_pid(e, other)}/ns/net"
            opts.join_ids["network"] = other["id"]
        opts.net = {"mode": "container", "container": other["id"]}
    _dns(e, opts, h)
    _security(e, opts, spec)
    _limits(opts, h)
    _storage(e, opts, spec)
    if h["Links"]:
        opts.links = links(e, h["Links"], kind)
    return opts


def _bridge(e, name: str, spec: ContainerSpec, ep: dict | None) -> dict:
    """The network, ports, address, aliases and rate: checked now, made at each start by
    network/endpoints.py."""
    from kobako.network import ports
    from kobako.network.networks import DEFAULT, NetworkStore
    h, c = spec.host, spec.config
    net = NetworkStore(e.root, e.run_dir).get(name)
    want: dict = {"ip": None, "aliases": []}
    if ep:  # (not on the start-up path of a plain run)
        ipam = ep.get("IPAMConfig") or {}
        if not isinstance(ipam, dict):
            raise InvalidArgument("invalid EndpointsConfig.IPAMConfig: expected an object")
        from kobako.engine.networks import endpoint_config
        want = endpoint_config(ipam.get("IPv4Address") or None, ep.get("Aliases"), ep.get("Links"),
                               ep.get("DriverOpts"), ep.get("MacAddress") or None, ipam.get("LinkLocalIPs"),
                               ipam.get("IPv6Address") or None)
    ip, aliases = want["ip"], want["aliases"]
    if net["name"] == DEFAULT and (ip or aliases or want.get("ip6")):
        raise InvalidArgument("--ip, --ip6 and --network-alias work on user-defined networks only, "
                              "not on the default bridge")
    if ip or want.get("ip6"):
        from kobako.engine.networks import check_addresses
        check_addresses(net, want)
    published = []
    for cport, binds in (h["PortBindings"] or {}).items():
        if not isinstance(binds, list | type(None)):
            raise InvalidArgument(f"invalid HostConfig.PortBindings[{cport!r}]: expected a list")
        for b in binds or [{}]:
            hip, hp = (b or {}).get("HostIp") or "", (b or {}).get("HostPort") or ""
            published += ports.parse(f"{hip + ':' if hip else ''}{hp + ':' if hp or hip else ''}{cport}")
    if (published or h["PublishAllPorts"]) and net.get("internal"):
        raise InvalidArgument(f"network {net['name']} is internal: nothing on it can be published "
                              "(no traffic crosses its bridge)")
    exposed = list(c["ExposedPorts"] or {})
    ports.exposed({}, exposed)  # validates
    out: dict = {"mode": "bridge", "ports": published, "networks": {net["name"]: want}}
    if h["PublishAllPorts"]:
        out["publishAll"], out["expose"] = True, exposed
    if spec.extra.get("NetRate"):
        out["rate"] = spec.extra["NetRate"]
    mac = ((ep or {}).get("MacAddress") or c["MacAddress"] or "").lower()
    if mac:
        parts = mac.split(":")
        if len(parts) != 6 or not all(len(x) == 2 and set(x) <= set("0123456789abcdef") for x in parts) \
                or int(parts[0], 16) & 1:
            raise InvalidArgument(f"invalid MAC address {mac!r}: a unicast MAC like 02:42:ac:11:00:02")
        out["mac"] = mac
    return out


def _dns(e, opts: ocispec.RunOptions, h: dict) -> None:
    """ExtraHosts NAME:IP (IP may be host-gateway), Dns, DnsSearch, DnsOptions."""
    if h["ExtraHosts"] or h["Dns"]:  # not on the start-up path of a plain run
        from kobako.network.ipam import IPAMError, _ip
    for spec in h["ExtraHosts"] or []:
        name, sep, ip = spec.partition("=") if "=" in spec else spec.partition(":")
        if not sep or not name or not ip:
            raise InvalidArgument(f"invalid --add-host {spec!r}: NAME:IP (or NAME:host-gateway)")
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
                raise InvalidArgument(f"invalid --add-host {spec!r}: {ip} is not an IP address") from None
        opts.extra_hosts.append((name, ip))
    for d in h["Dns"] or []:
        if ":" not in d:
            try:
                _ip(d)
            except IPAMError:
                raise InvalidArgument(f"invalid --dns {d!r}: an IP address") from None
        opts.dns.append(d)
    opts.dns_search = list(h["DnsSearch"] or [])
    opts.dns_options = list(h["DnsOptions"] or [])
    # the configuration's [dns], each where the container sets nothing (as dockerd's --dns)
    from kobako import config
    cfg = config.get()
    if not opts.dns and cfg.get("dns", "servers"):
        from kobako.network.ipam import IPAMError, _ip
        for d in cfg.get("dns", "servers"):
            if ":" not in d:
                try:
                    _ip(d)
                except IPAMError:
                    raise cfg.error("dns", "servers", f"{d!r} is not an IP address") from None
        opts.dns = list(cfg.get("dns", "servers"))
    opts.dns_search = opts.dns_search or list(cfg.get("dns", "search") or [])
    opts.dns_options = opts.dns_options or list(cfg.get("dns", "options") or [])


def _security(e, opts: ocispec.RunOptions, spec: ContainerSpec) -> None:
    h = spec.host
    opts.privileged = h["Privileged"]
    opts.cap_add, opts.cap_drop = list(h["CapAdd"] or []), list(h["CapDrop"] or [])
    for c in opts.cap_add + opts.cap_drop:
        ocispec.cap_name(c)  # an unknown capability is refused now, not at start
    from kobako import config
    cfg = config.get()
    caps = cfg.get("containers", "default_capabilities")
    if caps is not None:
        try:
            opts.default_caps = [ocispec.cap_name(c) for c in caps]
        except ocispec.OptionError as e:
            raise cfg.error("containers", "default_capabilities", e.message) from None
    profile = cfg.get("containers", "seccomp_profile")
    if profile and not opts.privileged:  # --privileged runs without a filter, as docker's
        if profile != "unconfined" and not os.path.isfile(profile):
            raise cfg.error("containers", "seccomp_profile", f"{profile}: no such profile file "
                            "(a JSON seccomp profile, or \"unconfined\")")
        opts.seccomp = profile
    for so in h["SecurityOpt"] or []:
        k, eq, v = so.partition("=") if "=" in so else so.partition(":")
        if k == "no-new-privileges":
            opts.no_new_privileges = v in ("", "true", "1")
        elif k == "seccomp":
            if v != "unconfined" and not os.path.isfile(v):
                raise InvalidArgument(f"--security-opt seccomp={v}: no such profile file")
            opts.seccomp = v
        elif k in ("label", "apparmor"):
            continue  # no SELinux/AppArmor here: accepted and ignored, as docker on such a host
        else:
            raise InvalidArgument(f"invalid --security-opt {so!r}")
    modes = {"pid": h["PidMode"], "ipc": h["IpcMode"], "uts": h["UTSMode"], "cgroupns": h["CgroupnsMode"]}
    opts.ipc_none = h["IpcMode"] == "none"
    for flag, v in modes.items():
        if v in ("", "private", "shareable", "none"):  # every private IPC namespace can be joined
            continue
        if v.startswith("container:") and flag in ("pid", "ipc"):
            other = e.containers.resolve(v.split(":", 1)[1])
            if e.state(other) != "running":
                raise InvalidArgument(f"--{flag} {v}: container {other['name']} is not running")
            from kobako.engine.copy import _runtime_pid
            opts.join_ns[flag] = f"/proc/{_runtime_pid(e, other)}/ns/{flag}"
            opts.join_ids[flag] = other["id"]  # re-resolved at each start: PIDs change
            continue
        opts.host_ns.add("cgroup" if flag == "cgroupns" else flag)
    userns, uidmap, gidmap = h["UsernsMode"], spec.extra.get("UidMap") or [], spec.extra.get("GidMap") or []
    if userns not in ("", "host") or uidmap or gidmap:
        _userns(e, opts, userns, uidmap, gidmap)
    for g in h["GroupAdd"] or []:
        opts.group_add.append(g)
    opts.device_rules = [device_rule(r) for r in h["DeviceCgroupRules"] or []]
    if h["MaskedPaths"] is not None:
        opts.masked_paths = list(h["MaskedPaths"])
    if h["ReadonlyPaths"] is not None:
        opts.readonly_paths = list(h["ReadonlyPaths"])
    if h["Init"]:
        opts.init = ocispec.find_init()


def _userns(e, opts: ocispec.RunOptions, mode: str, uidmap: list[str], gidmap: list[str]) -> None:
    """UsernsMode auto|private|container:NAME, --uidmap, --gidmap (engine/userns.py)."""
    from kobako.engine import userns
    req = userns.parse(mode or None, uidmap, gidmap)
    if req is None:
        return
    for flag in ("pid", "ipc"):
        if flag in opts.host_ns:
            raise InvalidArgument(f"--{flag} host cannot be used with --userns {mode or 'private'}: the "
                                  f"host's {flag.upper()} namespace belongs to the host's root")
    pid_of = opts.join_ids.get("pid")
    if pid_of and not (req.join and e.containers.resolve(req.join)["id"] == pid_of):
        raise InvalidArgument("--pid container:NAME with a user namespace needs --userns container:NAME "
                              "too: a PID namespace is joined from the user namespace that owns it")
    if req.join:
        other = e.containers.resolve(req.join)
        theirs = other.get("userns")
        if not theirs:
            raise InvalidArgument(f"--userns container:{req.join}: that container has no user namespace "
                                  "of its own (it runs with --userns host)")
        if e.state(other) != "running":
            raise InvalidArgument(f"--userns container:{req.join}: container {other['name']} is not running")
        from kobako.engine.copy import _runtime_pid
        req.uid_maps, req.gid_maps = theirs["uidMappings"], theirs["gidMappings"]
        opts.join_ns["user"] = f"/proc/{_runtime_pid(e, other)}/ns/user"
        opts.join_ids["user"] = other["id"]
    opts.userns = req


def _limits(opts: ocispec.RunOptions, h: dict) -> None:
    from kobako import config
    cfg = config.get()
    for u in cfg.get("containers", "default_ulimits") or []:  # first: the container's own replace them
        try:
            opts.ulimits.append(ocispec.parse_ulimit(u))
        except ocispec.OptionError as e:
            raise cfg.error("containers", "default_ulimits", e.message) from None
    for u in h["Ulimits"] or []:
        if not isinstance(u, dict):
            raise InvalidArgument("invalid HostConfig.Ulimits: objects with Name, Soft and Hard")
        opts.ulimits.append(ocispec.parse_ulimit(f"{u.get('Name')}={u.get('Soft')}:{u.get('Hard')}"))
    opts.sysctls = dict(h["Sysctls"] or {})
    opts.shm_size = h["ShmSize"] if h["ShmSize"] != 64 << 20 else None
    if h["NanoCpus"]:
        opts.cpus = h["NanoCpus"] / 1e9
    opts.cpu_period, opts.cpu_quota = h["CpuPeriod"] or None, h["CpuQuota"] or None
    opts.cpu_shares = h["CpuShares"] or None
    opts.cpuset_cpus = h["CpusetCpus"] or None
    opts.cpuset_mems = h["CpusetMems"] or None
    if h["PidsLimit"] is not None and h["PidsLimit"] > 0:
        opts.pids_limit = h["PidsLimit"]
    opts.memory_reservation = h["MemoryReservation"] or None
    opts.memory_swap = h["MemorySwap"] or None
    if h["MemorySwappiness"] is not None and h["MemorySwappiness"] >= 0:
        opts.memory_swappiness = h["MemorySwappiness"]
    opts.oom_kill_disable = h["OomKillDisable"]
    opts.oom_score_adj = h["OomScoreAdj"] or None
    opts.blkio_weight = h["BlkioWeight"] or None
    for key, field, iops in (("throttleReadBpsDevice", "BlkioDeviceReadBps", False),
                             ("throttleWriteBpsDevice", "BlkioDeviceWriteBps", False),
                             ("throttleReadIOPSDevice", "BlkioDeviceReadIOps", True),
                             ("throttleWriteIOPSDevice", "BlkioDeviceWriteIOps", True)):
        for d in h[field] or []:
            if not isinstance(d, dict):
                raise InvalidArgument(f"invalid HostConfig.{field}: objects with Path and Rate")
            opts.throttle.setdefault(key, []).append(
                ocispec.parse_throttle(f"{d.get('Path')}:{d.get('Rate')}", iops))
    if h["BlkioWeightDevice"]:
        raise InvalidArgument("--blkio-weight-device is not supported: the kernel's BFQ weights per device "
                              "are not wired up in kobako")
    for d in h["Devices"] or []:
        if not isinstance(d, dict):
            raise InvalidArgument("invalid HostConfig.Devices: objects with PathOnHost, PathInContainer and "
                                  "CgroupPermissions")
        host = d.get("PathOnHost") or ""
        spec = ":".join(x for x in (host, d.get("PathInContainer") or host,
                                    d.get("CgroupPermissions") or "rwm"))
        opts.devices.append(ocispec.parse_device(spec))


def _storage(e, opts: ocispec.RunOptions, spec: ContainerSpec) -> None:
    h, c = spec.host, spec.config
    if h["VolumesFrom"]:
        _volumes_from(e, h["VolumesFrom"], opts)
    for b in h["Binds"] or []:
        bind(b, opts)
    for m in h["Mounts"] or []:
        mount(m, opts)
    for dest in (c["Volumes"] or {}):  # anonymous volumes (VOLUME in the image, -v /path)
        if not dest.startswith("/"):
            raise InvalidArgument(f"invalid volume {dest!r}: the path must be absolute")
        if not any(d == dest for _, d, _ in opts.volumes + opts.binds) and \
                not any(d == dest for d, _ in opts.tmpfs):
            opts.volumes.append((None, dest, False))
    for dest, o in (h["Tmpfs"] or {}).items():
        opts.tmpfs.append((dest, o))
    if h["VolumeDriver"] not in ("", "local") and opts.volumes:
        raise NotFound(f"error looking up volume plugin {h['VolumeDriver']}: plugin "
                       f"\"{h['VolumeDriver']}\" not found", "kobako has the local volume driver only")


def bind(v: str, opts: ocispec.RunOptions) -> None:
    """A Binds entry: HOST:CTR[:OPTS] or NAME:CTR[:OPTS] (ro, rw, idmap, z, Z)."""
    parts = v.split(":")
    if len(parts) < 2 or len(parts) > 3 or not parts[1].startswith("/"):
        raise InvalidArgument(f"invalid volume specification {v!r}: "
                              "use HOST-PATH:CONTAINER-PATH[:ro] or NAME:CONTAINER-PATH[:ro]")
    src, dest = parts[0], parts[1]
    flags = (parts[2] if len(parts) == 3 else "rw").split(",")
    bad = [f for f in flags if f not in ("ro", "rw", "z", "Z", "idmap", "nocopy", "consistent",
                                         "cached", "delegated", "rprivate", "private", "rslave", "slave",
                                         "rshared", "shared")]
    if bad:
        raise InvalidArgument(f"invalid volume specification {v!r}: unknown option {bad[0]!r} "
                              "(ro, rw or idmap)")
    ro = "ro" in flags
    prop = [f for f in flags if f in ("rprivate", "private", "rslave", "slave", "rshared", "shared")]
    if prop:
        opts.propagation[dest] = prop[-1]
    if "idmap" in flags:  # seen through the container's user namespace (named volumes always are)
        opts.idmapped.add(dest)
    if src.startswith("/"):
        opts.binds.append((src, dest, ro))
    else:
        opts.volumes.append((src, dest, ro))


def mount(m: dict, opts: ocispec.RunOptions) -> None:
    """A Mounts entry: {Type: bind|volume|tmpfs, Source, Target, ReadOnly, TmpfsOptions...}."""
    if not isinstance(m, dict):
        raise InvalidArgument("invalid HostConfig.Mounts: objects with Type, Source and Target")
    typ, dest, src = m.get("Type") or "volume", m.get("Target") or "", m.get("Source") or ""
    ro = bool(m.get("ReadOnly"))
    if not isinstance(dest, str) or not dest.startswith("/"):
        raise InvalidArgument(f"invalid mount config for type {typ!r}: the target must be an absolute path")
    if typ == "bind":
        prop = (m.get("BindOptions") or {}).get("Propagation")
        if prop:
            if prop not in ("rprivate", "private", "rslave", "slave", "rshared", "shared"):
                raise InvalidArgument(f"invalid mount config: invalid propagation mode {prop!r}")
            opts.propagation[dest] = prop
        if not src.startswith("/") or not os.path.exists(src):
            raise InvalidArgument(f"invalid mount config for type \"bind\": bind source path does not "
                                  f"exist: {src}")
        opts.binds.append((src, dest, ro))
    elif typ == "volume":
        drv = ((m.get("VolumeOptions") or {}).get("DriverConfig") or {}).get("Name")
        if drv not in (None, "", "local"):
            raise NotFound(f"error looking up volume plugin {drv}: plugin \"{drv}\" not found")
        opts.volumes.append((src or None, dest, ro))
    elif typ == "tmpfs":
        if src:
            raise InvalidArgument("invalid mount config for type \"tmpfs\": source must not be specified")
        t = m.get("TmpfsOptions") or {}
        o = [f"size={t['SizeBytes']}"] if t.get("SizeBytes") else []
        if t.get("Mode"):
            o.append(f"mode={t['Mode']:o}")
        opts.tmpfs.append((dest, ",".join(o)))
    else:
        raise InvalidArgument(f"invalid mount config: mount type unknown: {typ!r} (bind, volume or tmpfs)")


def _volumes_from(e, specs: list[str], opts: ocispec.RunOptions) -> None:
    """VolumesFrom C[:ro|rw]: the named and anonymous volumes and binds of another container."""
    import json
    for spec in specs:
        ref, _, mode = spec.partition(":")
        if mode not in ("", "ro", "rw"):
            raise InvalidArgument(f"invalid --volumes-from {spec!r}: CONTAINER[:ro|rw]")
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


def links(e, specs: list[str], kind: str) -> list[dict]:
    """Legacy links NAME[:ALIAS]: the other container must run; its address, exposed ports and
    environment become variables and an /etc/hosts line of this one (Docker's --link)."""
    if kind == "host":
        raise InvalidArgument("conflicting options: host type networking can't be used with links. "
                              "This would result in undefined behavior")
    out = []
    for s in specs:
        ref, _, alias = s.partition(":")
        ref = ref.lstrip("/")
        alias = (alias or ref).rsplit("/", 1)[-1]
        try:
            other = e.containers.resolve(ref)
        except NotFound:
            raise InvalidArgument(f"could not get container for {ref}") from None
        if e.state(other) != "running":
            raise InvalidArgument(f"cannot link to a non running container: /{other['name']} AS /{alias}")
        out.append({"id": other["id"], "name": other["name"], "alias": alias})
    return out
