"""Docker-shaped views of the engine's objects: what `inspect` and the list endpoints
return, with dockerd's field names and zero values. Both front ends render from here."""

from __future__ import annotations

import os
import time as _time

from kobako.errors import InvalidArgument, NotFound

ZERO_TIME = "0001-01-01T00:00:00Z"


def parse_time(iso: str) -> float:
    hit = _PARSED.get(iso)
    if hit is None:
        hit = _parse_time(iso)
        if len(_PARSED) < 4096:
            _PARSED[iso] = hit
    return hit


_PARSED: dict[str, float] = {}  # strptime is ~30 µs; `ps` and the API parse the same stamps again and again


def _parse_time(iso: str) -> float:
    import calendar
    try:
        base = iso[:19]
        return calendar.timegm(_time.strptime(base, "%Y-%m-%dT%H:%M:%S"))
    except (ValueError, TypeError):
        return 0.0


def ago(iso: str) -> str:
    """'5 minutes ago', as docker ps says it."""
    t = parse_time(iso)
    if not t:
        return "N/A"
    d = max(0, _time.time() - t)
    for n, unit in ((31536000, "year"), (2592000, "month"), (604800, "week"), (86400, "day"),
                    (3600, "hour"), (60, "minute")):
        if d >= n:
            k = int(d // n)
            return f"{k} {unit}{'s' if k > 1 else ''} ago"
    return "Less than a second ago" if d < 1 else f"{int(d)} seconds ago"


# -- containers ---------------------------------------------------------------------------------

def container_json(e, rec: dict) -> dict:
    """Docker's ContainerJSON (GET /containers/{id}/json, `kobako inspect`) from the record's
    spec: Config and HostConfig as the container was created (and updated), State from the
    engine, NetworkSettings from the network layer."""
    st = e.state(rec)
    config, host = _spec_of(e, rec)
    argv = list(config.get("Entrypoint") or []) + list(config.get("Cmd") or [])
    from kobako.cli.networks import container_settings
    net_mode, net_settings = container_settings(e, rec)
    given = host.get("NetworkMode")
    mode = given if given not in (None, "", "default") else "default" if net_mode == "bridge" else net_mode
    host = {**host, "NetworkMode": mode, **_userns(rec)}
    if "RestartPolicy" in host and not host["RestartPolicy"].get("Name"):
        host["RestartPolicy"] = {"Name": "no", "MaximumRetryCount": 0}
    state = {"Status": st, "Running": st in ("running", "paused"), "Paused": st == "paused",
             "Restarting": st == "restarting", "OOMKilled": bool(rec.get("oomKilled")), "Dead": False,
             "Pid": rec.get("pid", 0) if st in ("running", "paused") else 0,
             "ExitCode": rec.get("exitCode", 0), "Error": rec.get("error") or "",
             "StartedAt": rec.get("started", ZERO_TIME), "FinishedAt": rec.get("finished", ZERO_TIME)}
    hc = config.get("Healthcheck") or {}
    if hc.get("Test") and hc["Test"][0] != "NONE":
        h = rec.get("health") or {}
        state["Health"] = {"Status": h.get("Status", "starting"), "FailingStreak": h.get("FailingStreak", 0),
                           "Log": h.get("Log") or []}
    cdir = e.containers.path(rec["id"])
    return {
        "Id": rec["id"], "Created": rec.get("created"), "Path": argv[0] if argv else "", "Args": argv[1:],
        "State": state, "Image": rec.get("image"),
        "ResolvConfPath": os.path.join(cdir, "resolv.conf"), "HostnamePath": os.path.join(cdir, "hostname"),
        "HostsPath": os.path.join(cdir, "hosts"), "LogPath": os.path.join(cdir, f"{rec['id']}-json.log"),
        "Name": "/" + rec["name"], "RestartCount": rec.get("restartCount", 0), "Driver": "overlay",
        "Platform": "linux", "MountLabel": "", "ProcessLabel": "", "AppArmorProfile": "",
        "ExecIDs": None, "HostConfig": host,
        "GraphDriver": {"Name": "overlay", "Data": {"UpperDir": os.path.join(cdir, "upper"),
                                                    "WorkDir": os.path.join(cdir, "work")}},
        "Mounts": _mounts(e, rec), "Config": config, "NetworkSettings": net_settings,
    }


def _spec_of(e, rec: dict) -> tuple[dict, dict]:
    """The record's Config and HostConfig with every field dockerd shows; a record made before
    the spec existed gets what its config.json says."""
    from kobako.engine import spec as specs
    config = {k: specs._copy(z) for k, (_, z) in specs.CONFIG.items()}
    host = {k: specs._copy(z) for k, (_, z) in specs.HOST.items()}
    config.update(rec.get("config") or {})
    host.update(rec.get("hostConfig") or {})
    if "config" not in rec:
        import json
        try:
            with open(os.path.join(rec.get("bundle", ""), "config.json")) as f:
                oci = json.load(f)
        except (OSError, ValueError):
            oci = {}
        proc = oci.get("process") or {}
        config.update(Hostname=oci.get("hostname", ""), Env=proc.get("env") or [], Cmd=proc.get("args") or [],
                      Image=rec.get("imageName", ""), WorkingDir=proc.get("cwd", "/"),
                      Tty=bool(proc.get("terminal")), Labels=rec.get("labels") or {},
                      StopSignal=rec.get("stopSignal") or "")
        host.update(RestartPolicy=rec.get("restartPolicy") or {"Name": "no", "MaximumRetryCount": 0},
                    AutoRemove=bool((rec.get("options") or {}).get("autoRemove")))
    if not host.get("LogConfig"):
        host["LogConfig"] = {"Type": "json-file", "Config": {}}
    if not host.get("RestartPolicy"):
        host["RestartPolicy"] = {"Name": "no", "MaximumRetryCount": 0}
    return config, host


def _userns(rec: dict) -> dict:
    """HostConfig.UsernsMode as Docker names it ("" = the host's), and Podman's IDMappings."""
    u = rec.get("userns")
    if not u:
        return {"UsernsMode": (rec.get("hostConfig") or {}).get("UsernsMode") or ""}
    mode = u["mode"]
    if mode == "container":
        mode = "container:" + (rec.get("joinNamespaces") or {}).get("user", "")
    fmt = [f"{m['containerID']}:{m['hostID']}:{m['size']}" for m in u["uidMappings"]]
    return {"UsernsMode": mode, "IDMappings": {
        "UidMap": fmt, "GidMap": [f"{m['containerID']}:{m['hostID']}:{m['size']}" for m in u["gidMappings"]]}}


def _mounts(e, rec: dict) -> list[dict]:
    """Docker's Mounts: binds and volumes, from config.json and the record's volumes."""
    import json
    try:
        with open(os.path.join(rec.get("bundle", ""), "config.json")) as f:
            mounts = json.load(f).get("mounts") or []
    except (OSError, ValueError):
        mounts = []
    vols = {v["destination"]: v for v in rec.get("volumes") or []}
    cdir = e.containers.path(rec["id"])
    out = []
    for m in mounts:
        dest, rw = m.get("destination", ""), "ro" not in (m.get("options") or [])
        if m.get("type") != "bind" or dest in ("/sys", "/dev") or m.get("source", "").startswith(cdir + "/"):
            continue
        if dest in vols:
            out.append({"Type": "volume", "Name": vols[dest]["name"], "Source": m["source"],
                        "Destination": dest, "Driver": "local", "Mode": "", "RW": rw, "Propagation": ""})
        elif dest != "/sbin/docker-init":
            out.append({"Type": "bind", "Source": m["source"], "Destination": dest, "Mode": "", "RW": rw,
                        "Propagation": "rprivate"})
    return out


STATES = ("created", "restarting", "running", "removing", "paused", "exited", "dead")
CONTAINER_FILTERS = ("id", "name", "label", "exited", "status", "ancestor", "before", "since", "volume",
                     "network", "publish", "expose", "health", "isolation", "is-task")


def container_status(rec: dict, st: str) -> str:
    """docker ps's STATUS column for a container in state `st`."""
    if st in ("running", "paused"):
        up = ago(rec.get("started", "")).replace(" ago", "")
        health = (rec.get("health") or {}).get("Status")
        health = {"starting": " (health: starting)", "healthy": " (healthy)",
                  "unhealthy": " (unhealthy)"}.get(health or "", "") if st == "running" else ""
        return f"Up {up}" + (" (Paused)" if st == "paused" else health)
    if st == "restarting":
        return f"Restarting ({rec.get('exitCode', 0)}) {ago(rec.get('finished', ''))}"
    if st == "exited":
        return f"Exited ({rec.get('exitCode', 0)}) {ago(rec.get('finished', ''))}"
    return "Created"


def container_filters(flt: dict[str, list[str]]) -> dict[str, list[str]]:
    """Check a container list's filters as dockerd does: known keys, known values."""
    for k, vals in flt.items():
        if k not in CONTAINER_FILTERS:
            raise InvalidArgument(f"invalid filter '{k}'")
        for v in vals:
            if k == "status" and v not in STATES:
                raise InvalidArgument(f"invalid filter 'status={v}'",
                                      "created, restarting, running, removing, paused, exited or dead")
            if k == "health" and v not in ("starting", "healthy", "unhealthy", "none"):
                raise InvalidArgument(f"unrecognized filter value for health: {v}")
            if k == "exited" and not v.lstrip("-").isdigit():
                raise InvalidArgument(f"invalid filter 'exited={v}': an exit code")
            if k == "is-task" and v not in ("true", "false"):
                raise InvalidArgument(f"invalid filter 'is-task={v}': true or false")
    return flt


def container_matches(e, rec: dict, state: str, flt: dict[str, list[str]], order: dict[str, int]) -> bool:
    """dockerd's container filters: different keys AND, values of one key OR (labels: all
    must hold). `order`: each container's place in creation order, for before/since."""
    import re

    def rx(v: str, s: str) -> bool:
        try:
            return s == v or re.search(v, s) is not None
        except re.error:
            return v in s
    for k, vals in flt.items():
        if k == "label":
            labels = rec.get("labels") or {}
            if not all(lk in labels and (not eq or labels[lk] == lv)
                       for lk, eq, lv in (v.partition("=") for v in vals)):
                return False
            continue
        ok = False
        for v in vals:
            if k == "id":
                ok = rx(v, rec["id"])
            elif k == "name":
                ok = rx(v, "/" + rec["name"])
            elif k == "status":
                ok = state == v
            elif k == "exited":
                ok = state == "exited" and int(v) == int(rec.get("exitCode", 0))
            elif k == "ancestor":
                name = rec.get("imageName") or ""
                ok = v in (name, rec.get("image"), name.rsplit(":", 1)[0] if ":" in name.rsplit("/", 1)[-1]
                           else name) or (rec.get("image") or "").removeprefix("sha256:").startswith(
                               v.removeprefix("sha256:")) and len(v) >= 4
            elif k in ("before", "since"):
                try:
                    other = e.containers.resolve(v)
                except NotFound:
                    raise InvalidArgument(f"no such container: {v}") from None
                mine, theirs = order.get(rec["id"], 0), order.get(other["id"], 0)
                ok = mine < theirs if k == "before" else mine > theirs
            elif k == "volume":
                ok = any(v in (m.get("name"), m.get("destination")) for m in rec.get("volumes") or []) or \
                    any(b.split(":")[0] == v or b.split(":")[1:2] == [v]
                        for b in (rec.get("hostConfig") or {}).get("Binds") or [])
            elif k == "network":
                nets = (rec.get("net") or {}).get("networks") or {}
                mode = (rec.get("hostConfig") or {}).get("NetworkMode") or ""
                ok = v in nets or v == mode or (v == "bridge" and mode in ("default", "bridge"))
            elif k in ("publish", "expose"):
                port, _, proto = v.partition("/")
                keys = ((rec.get("hostConfig") or {}).get("PortBindings") or {}) if k == "publish" else \
                    ((rec.get("config") or {}).get("ExposedPorts") or {})
                ok = f"{port}/{proto or 'tcp'}" in keys
            elif k == "health":
                ok = ((rec.get("health") or {}).get("Status") or "none") == v
            elif k == "isolation":
                ok = v in ("default", "")
            elif k == "is-task":
                ok = v == "false"
            if ok:
                break
        if not ok:
            return False
    return True


def container_summary(e, rec: dict, state: str, endpoint: dict | None) -> dict:
    """One row of GET /containers/json, as dockerd writes it."""
    import calendar
    import time
    config = rec.get("config") or {}
    argv = list(config.get("Entrypoint") or []) + list(config.get("Cmd") or []) if "config" in rec else \
        list((rec.get("options") or {}).get("command") or [])
    try:
        created = calendar.timegm(time.strptime(rec.get("created", "")[:19], "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        created = 0
    mode = (rec.get("hostConfig") or {}).get("NetworkMode") or (rec.get("net") or {}).get("mode") or "none"
    return {
        "Id": rec["id"], "Names": ["/" + rec["name"]], "Image": rec.get("imageName", ""),
        "ImageID": rec.get("image", ""), "Command": " ".join(argv), "Created": created,
        "State": state, "Status": container_status(rec, state),
        "Ports": [{"IP": p.get("hostIp") or "0.0.0.0", "PrivatePort": p["containerPort"],
                   "PublicPort": p["hostPort"], "Type": p["proto"]}
                  for p in (endpoint or {}).get("ports") or []],
        "Labels": rec.get("labels") or {}, "SizeRw": None, "SizeRootFs": None,
        "HostConfig": {"NetworkMode": mode},
        "NetworkSettings": {"Networks": {n: {"IPAddress": ep["ip"], "Gateway": ep["gateway"],
                                             "NetworkID": ep["id"], "MacAddress": ep["mac"]}
                                         for n, ep in ((endpoint or {}).get("networks") or {}).items()}},
        "Mounts": _mounts(e, rec)}


def container_list(e, states: list[tuple[dict, str]], flt: dict[str, list[str]], every: bool = False,
                   last: int = -1) -> list[tuple[dict, str]]:
    """The containers a list shows, newest first (docker ps): running ones unless `every`
    (or a status/exited filter asks for others), matching every filter; `last` N newest of
    all states (ps -n; -1: no limit)."""
    container_filters(flt)
    ordered = sorted(states, key=lambda x: (x[0].get("created", ""), x[0]["id"]), reverse=True)
    order = {rec["id"]: len(ordered) - i for i, (rec, _) in enumerate(ordered)}
    if last >= 0:
        ordered, every = ordered[:last], True
    if not every and not ("status" in flt or "exited" in flt):
        ordered = [(r, s) for r, s in ordered if s in ("running", "paused", "restarting")]
    return [(r, s) for r, s in ordered if not flt or container_matches(e, r, s, flt, order)]


def parse_filters(raw: str | None) -> dict[str, list[str]]:
    """The API's `filters` query: {"key": ["v", ...]} or the old {"key": {"v": true}}."""
    import json
    if not raw:
        return {}
    try:
        got = json.loads(raw)
    except ValueError:
        raise InvalidArgument("invalid filters: not JSON") from None
    if not isinstance(got, dict):
        raise InvalidArgument("invalid filters: expected a JSON object")
    out: dict[str, list[str]] = {}
    for k, v in got.items():
        if isinstance(v, dict):
            out[k] = [x for x, on in v.items() if on]
        elif isinstance(v, list) and all(isinstance(x, str) for x in v):
            out[k] = list(v)
        elif isinstance(v, str):
            out[k] = [v]
        else:
            raise InvalidArgument(f"invalid filters: the values of '{k}' must be strings")
    return out
