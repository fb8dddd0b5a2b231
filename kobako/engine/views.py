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
        "GraphDriver": {"Name": "overlay2", "Data": {"UpperDir": os.path.join(cdir, "upper"),
                                                    "WorkDir": os.path.join(cdir, "work")}},
        "Mounts": _mounts(e, rec), "Config": config, "NetworkSettings": net_settings,
    }


def container_sizes(e, rec: dict) -> dict:
    """SizeRw (the bytes the container's writable layer holds on disk) and SizeRootFs (those
    plus its image's), as dockerd adds them to inspect and ps with size=1."""
    from kobako.paths import dir_size
    rw = dir_size(e.containers.path(rec["id"], "upper"), allocated=True)
    image = e.images.get(rec.get("image", "")) if rec.get("image") else None
    return {"SizeRw": rw, "SizeRootFs": rw + ((image or {}).get("size") or 0)}


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
            prop = next((o for o in m.get("options") or [] if o in ("rprivate", "private", "rslave", "slave",
                                                                     "rshared", "shared")), "rprivate")
            out.append({"Type": "bind", "Source": m["source"], "Destination": dest, "Mode": "", "RW": rw,
                        "Propagation": prop})
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
    from kobako.engine import filters
    filters.check(flt, CONTAINER_FILTERS)
    for k, vals in flt.items():
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


def container_matches(rec: dict, state: str, flt: dict[str, list[str]], order: dict[str, int]) -> bool:
    """dockerd's container filters: different keys AND, values of one key OR (labels: all
    must hold). `order`: each container's place in creation order, by ID and by each
    before/since value (container_list resolves those once)."""
    import re

    def rx(v: str, s: str) -> bool:
        try:
            return s == v or re.search(v, s) is not None
        except re.error:
            return v in s
    for k, vals in flt.items():
        if k == "label":
            from kobako.engine.filters import labels_match
            if not labels_match(rec.get("labels") or {}, vals):
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
                mine, theirs = order.get(rec["id"], 0), order[v]
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
    config = rec.get("config") or {}
    argv = list(config.get("Entrypoint") or []) + list(config.get("Cmd") or []) if "config" in rec else \
        list((rec.get("options") or {}).get("command") or [])
    mode = (rec.get("hostConfig") or {}).get("NetworkMode") or (rec.get("net") or {}).get("mode") or "none"
    return {
        "Id": rec["id"], "Names": ["/" + rec["name"]], "Image": rec.get("imageName", ""),
        "ImageID": rec.get("image", ""), "Command": " ".join(argv), "Created": _epoch(rec.get("created")),
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
    for v in (flt.get("before") or []) + (flt.get("since") or []):
        try:
            order[v] = order.get(e.containers.resolve(v)["id"], 0)
        except NotFound:
            raise InvalidArgument(f"no such container: {v}") from None
    if last >= 0:
        ordered, every = ordered[:last], True
    if not every and not ("status" in flt or "exited" in flt):
        ordered = [(r, s) for r, s in ordered if s in ("running", "paused", "restarting")]
    return [(r, s) for r, s in ordered if not flt or container_matches(r, s, flt, order)]


# -- images -------------------------------------------------------------------------------------

def _epoch(iso: str | None) -> int:
    return int(parse_time(iso or ""))


def image_config(e, rec: dict) -> dict:
    import json
    return json.loads(e.images.content.read(rec["id"]))


def image_doc(e, rec: dict) -> dict:
    """`docker image inspect`: dockerd's ImageInspect."""
    from kobako.image.reference import familiar
    cfg = image_config(e, rec)
    hist = cfg.get("history") or []
    return {
        "Id": rec["id"],
        "RepoTags": [familiar(n) for n in rec.get("names", [])],
        "RepoDigests": [familiar(d) for d in rec.get("repoDigests", [])],
        "Parent": rec.get("parent", ""), "Comment": (hist[-1].get("comment", "") if hist else ""),
        "Created": cfg.get("created", rec.get("created")),
        "Container": cfg.get("container", ""), "ContainerConfig": cfg.get("container_config") or {},
        "DockerVersion": cfg.get("docker_version", ""),
        "Author": cfg.get("author", ""),
        "Config": cfg.get("config") or {},
        **image_platform_fields(cfg, rec),
        "Size": rec.get("size", 0), "VirtualSize": rec.get("size", 0),
        "GraphDriver": {"Name": "overlay2", "Data": None},
        "RootFS": {"Type": "layers", "Layers": rec.get("diffIds", [])},
        "Metadata": {"LastTagTime": rec.get("added", "")},
        "Manifest": rec["manifest"],
    }


def image_platform_fields(cfg: dict, rec: dict) -> dict:
    """ImageInspect's Architecture, Variant (omitted when empty, as dockerd's omitempty) and Os:
    the config's; the variant of the index entry the image was pulled by when its config has none."""
    out = {"Architecture": cfg.get("architecture") or rec.get("architecture", "")}
    variant = cfg.get("variant") or rec.get("variant")
    if variant:
        out["Variant"] = variant
    out["Os"] = cfg.get("os") or rec.get("os", "")
    return out


def image_summary(e, rec: dict, tags: list[str], containers: int) -> dict:
    """One row of GET /images/json; `tags`: the names the filters let through."""
    from kobako.image.reference import familiar
    cfg = {}
    try:
        cfg = (image_config(e, rec).get("config") or {})
    except (OSError, ValueError):
        pass
    return {"Id": rec["id"], "ParentId": rec.get("parent", ""),
            "RepoTags": [familiar(n) for n in tags],
            "RepoDigests": [familiar(d) for d in rec.get("repoDigests", [])],
            "Created": _epoch(rec.get("created")), "Size": rec.get("size", 0),
            "VirtualSize": rec.get("size", 0), "SharedSize": -1, "Labels": cfg.get("Labels") or {},
            "Containers": containers}


def history_rows(e, rec: dict) -> list[tuple[dict, int]]:
    """The image's history, newest first, each with the size of the layer it made (0 for an
    empty layer): `kobako history` and GET /images/{name}/history."""
    hist = list(reversed(image_config(e, rec).get("history") or []))
    sizes = list(reversed([e.snapshots.size(c) for c in rec.get("chainIds", [])]))
    out, li = [], 0
    for h in hist:
        size = 0
        if not h.get("empty_layer"):
            size = sizes[li] if li < len(sizes) else 0
            li += 1
        out.append((h, size))
    return out


def image_history(e, rec: dict) -> list[dict]:
    from kobako.image.reference import familiar
    return [{"Id": rec["id"] if i == 0 else "<missing>", "Created": _epoch(h.get("created")),
             "CreatedBy": h.get("created_by", ""),
             "Tags": [familiar(n) for n in rec.get("names", [])] if i == 0 else None,
             "Size": size, "Comment": h.get("comment", "")}
            for i, (h, size) in enumerate(history_rows(e, rec))]


# -- networks ---------------------------------------------------------------------------------------

def pseudo_network_id(name: str) -> str:
    """host and none have no file of their own; a stable ID, as every dockerd network has one."""
    from kobako.network.networks import sha256_hex
    return sha256_hex(f"kobako predefined network {name}")


def pseudo_network(name: str) -> dict:
    """`host` and `none`: modes, listed and inspected as dockerd's networks of those drivers."""
    return {"Name": name, "Id": pseudo_network_id(name), "Created": "0001-01-01T00:00:00Z", "Scope": "local",
            "Driver": "host" if name == "host" else "null", "EnableIPv6": False,
            "IPAM": {"Driver": "default", "Options": None, "Config": []},
            "Internal": False, "Attachable": False, "Ingress": False, "ConfigFrom": {"Network": ""},
            "ConfigOnly": False, "Containers": {}, "Options": {}, "Labels": {}}


def network_options(net: dict) -> dict:
    """The driver options as the network was created with them (compose compares them);
    the default network shows its bridge, as dockerd's shows docker0."""
    if "createdOptions" in net:
        return dict(net["createdOptions"])
    opts = {"com.docker.network.bridge.name": net["bridge"]}  # networks made before 2026-12
    if net.get("mtu"):
        opts["com.docker.network.driver.mtu"] = str(net["mtu"])
    return opts


def network_doc(e, net: dict, endpoints: list[dict] | None = None) -> dict:
    """`docker network inspect`: dockerd's NetworkResource. `endpoints`: the live endpoint
    states, when the caller has read them already."""
    if endpoints is None:
        from kobako.network.endpoints import Endpoints
        try:
            endpoints = Endpoints(e.root, e.run_dir).all()
        except OSError:
            endpoints = []
    live = {}
    for st in endpoints:
        ep = st["networks"].get(net["name"])  # keyed by the network's name inside (NAME@id12 for a twin)
        if ep and ep.get("id", net["id"]) == net["id"]:
            live[st["id"]] = {"Name": st["name"], "EndpointID": ep["veth"], "MacAddress": ep["mac"],
                              "IPv4Address": f"{ep['ip']}/{ep['prefix']}",
                              "IPv6Address": f"{ep['ip6']}/{ep['prefix6']}" if ep.get("ip6") else ""}
    cfg = {"Subnet": net["subnet"], "Gateway": net["gateway"]}
    if net.get("ipRange"):
        cfg["IPRange"] = net["ipRange"]
    if net.get("auxAddresses"):
        cfg["AuxiliaryAddresses"] = dict(net["auxAddresses"])
    configs = [cfg]
    if net.get("subnet6"):  # the IPv6 pool as it was given, next to the IPv4 one (dockerd's order)
        configs.append({"Subnet": net["subnet6"], "Gateway": net["gateway6"],
                        **({"IPRange": net["ipRange6"]} if net.get("ipRange6") else {})})
    return {"Name": net.get("displayName") or net["name"], "Id": net["id"], "Created": net.get("created", ""),
            "Scope": "local", "Driver": net.get("driver") or "bridge",
            "EnableIPv6": bool(net.get("enableIPv6")),
            "IPAM": {"Driver": "default", "Options": net.get("ipamOptions"), "Config": configs},
            "Internal": bool(net.get("internal")), "Attachable": bool(net.get("attachable")),
            "Ingress": False,
            "ConfigFrom": {"Network": ""}, "ConfigOnly": False, "Containers": live,
            "Options": network_options(net), "Labels": net.get("labels") or {}}


# -- volumes ----------------------------------------------------------------------------------------

def volume_doc(vol: dict) -> dict:
    """`docker volume inspect` (keys in dockerd's order: alphabetical)."""
    from kobako.storage.volumes import DRIVER
    return {"CreatedAt": vol.get("CreatedAt", ""), "Driver": vol.get("Driver", DRIVER),
            "Labels": vol.get("Labels") or {}, "Mountpoint": vol["Mountpoint"], "Name": vol["Name"],
            "Options": vol.get("Options") or {}, "Scope": vol.get("Scope", "local")}


# -- a container's network part ---------------------------------------------------------------------

def endpoint(e, rec: dict) -> dict | None:
    """The container's live network state, if it runs on bridge networks."""
    if (rec.get("net") or {}).get("mode") != "bridge":
        return None
    from kobako.network.endpoints import Endpoints
    return Endpoints(e.root, e.run_dir).state(rec["id"])


def _ipam_config(want: dict) -> dict | None:
    """EndpointIPAMConfig: only what was asked for (dockerd's fields are omitempty)."""
    out = {}
    if want.get("ip"):
        out["IPv4Address"] = want["ip"]
    if want.get("ip6"):
        out["IPv6Address"] = want["ip6"]
    if want.get("linkLocalIps"):
        out["LinkLocalIPs"] = list(want["linkLocalIps"])
    return out or None


def container_settings(e, rec: dict) -> tuple[str, dict]:
    """(HostConfig.NetworkMode, NetworkSettings) of dockerd's container inspect: what each
    network was asked for (IPAMConfig, Links, Aliases, DriverOpts) from the record, what
    it got (addresses, MAC, veth) from the live endpoint while the container runs."""
    net = rec.get("net") or {}
    mode = net.get("mode") or "none"
    if mode == "container":
        mode = "container:" + net.get("container", "")
    elif mode == "bridge":
        names = list(net.get("networks") or {})
        mode = names[0] if names else "none"
    st = endpoint(e, rec) or {}
    live = st.get("networks") or {}
    wanted = dict(net.get("networks") or {}) if net.get("mode") == "bridge" else {}
    if net.get("mode") == "bridge" and "networks" not in net:
        wanted = {"bridge": {}}
    nets, ports = {}, {}
    store = None
    for name in list(wanted) + [n for n in live if n not in wanted]:
        want, ep = wanted.get(name) or {}, live.get(name)
        nid = ep["id"] if ep else ""
        if not nid:
            from kobako.network.networks import NetworkError, NetworkStore
            store = store or NetworkStore(e.root, e.run_dir)
            try:
                nid = store.get(name)["id"]
            except NetworkError:
                nid = ""
        aliases = list((ep or {}).get("aliases") or want.get("aliases") or [])
        if name != "bridge" and rec["id"][:12] not in aliases:  # dockerd (API < 1.45) adds the short ID
            aliases.append(rec["id"][:12])
        nets[name] = {"IPAMConfig": _ipam_config(want), "Links": list(want.get("links") or []) or None,
                      "Aliases": aliases or None,
                      "NetworkID": nid, "EndpointID": ep["veth"] if ep else "",
                      "Gateway": ep["gateway"] if ep else "", "IPAddress": ep["ip"] if ep else "",
                      "IPPrefixLen": ep["prefix"] if ep else 0,
                      "IPv6Gateway": (ep or {}).get("gateway6", "") if (ep or {}).get("ip6") else "",
                      "GlobalIPv6Address": (ep or {}).get("ip6") or "",
                      "GlobalIPv6PrefixLen": (ep or {}).get("prefix6", 0) if (ep or {}).get("ip6") else 0,
                      "MacAddress": ep["mac"] if ep else (want.get("mac") or ""),
                      "DriverOpts": dict(want.get("driverOpts") or {}) or None}
    for p in net.get("ports") or []:
        ports.setdefault(f"{p['containerPort']}/{p['proto']}", None)
    for p in st.get("ports") or []:
        key = f"{p['containerPort']}/{p['proto']}"
        bound = {"HostIp": p.get("hostIp") or "0.0.0.0", "HostPort": str(p["hostPort"])}
        ports[key] = (ports.get(key) or []) + [bound]
    first = nets.get(next(iter(nets), ""), {})
    return mode, {"Bridge": "", "SandboxID": st.get("netns", "").rsplit("/", 1)[-1],
                  "HairpinMode": False, "LinkLocalIPv6Address": "", "LinkLocalIPv6PrefixLen": 0,
                  "SandboxKey": st.get("netns", ""), "Ports": ports, "SecondaryIPAddresses": None,
                  "SecondaryIPv6Addresses": None, "EndpointID": first.get("EndpointID", ""),
                  "Networks": nets, "IPAddress": first.get("IPAddress", ""),
                  "IPPrefixLen": first.get("IPPrefixLen", 0), "Gateway": first.get("Gateway", ""),
                  "GlobalIPv6Address": first.get("GlobalIPv6Address", ""),
                  "GlobalIPv6PrefixLen": first.get("GlobalIPv6PrefixLen", 0),
                  "IPv6Gateway": first.get("IPv6Gateway", ""), "MacAddress": first.get("MacAddress", "")}


def ps_ports(e, rec: dict) -> str:
    """The PORTS column of `ps`: 0.0.0.0:8080->80/tcp, ..."""
    st = endpoint(e, rec)
    if not st:
        return ""
    return ", ".join(f"{p.get('hostIp') or '0.0.0.0'}:{p['hostPort']}->{p['containerPort']}/{p['proto']}"
                     for p in st.get("ports") or [])


# -- the host ---------------------------------------------------------------------------------------

def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _os_release() -> dict[str, str]:
    out = {}
    for line in (_read("/etc/os-release") or "").splitlines():
        k, eq, v = line.partition("=")
        if eq:
            out[k] = v.strip().strip('"')
    return out


def _controllers() -> tuple[str, set[str], dict[str, str]]:
    """(cgroup version, controllers, {controller: its v1 mount point})."""
    from kobako.runtime import cgroups
    v1, v2 = cgroups.mounts()
    points = {c: p for p, cs in v1.items() for c in cs.split(",")}
    ctrls = set(points)
    if v2:
        ctrls |= set((_read(os.path.join(v2, "cgroup.controllers")) or "").split())
    return ("1" if v1 else "2"), ctrls, points


def system_info(e) -> dict:
    """GET /info: every key dockerd 20.10 returns, with what is true of this host and engine."""
    import platform
    import threading
    import time

    from kobako import __version__, config
    from kobako.image import registries
    from kobako.linux.namespaces import in_user_namespace
    recs = e.containers.all()
    states = [e.state(r) for r in recs]
    u = os.uname()
    version, ctrls, points = _controllers()
    mem = points.get("memory", "")

    def v1_has(ctrl: str, name: str) -> bool:
        return bool(points.get(ctrl)) and os.path.exists(os.path.join(points[ctrl], name))

    if version == "1":
        swap = v1_has("memory", "memory.memsw.limit_in_bytes")
        kmem = v1_has("memory", "memory.kmem.limit_in_bytes")
        kmem_tcp = v1_has("memory", "memory.kmem.tcp.limit_in_bytes")
        oom = v1_has("memory", "memory.oom_control")
        cfs = v1_has("cpu", "cpu.cfs_quota_us")
    else:
        swap, kmem, kmem_tcp, oom, cfs = "memory" in ctrls, False, False, False, "cpu" in ctrls
    try:
        mirrors = registries.mirrors("docker.io")
    except Exception:  # noqa: BLE001 - a broken registries file is the pull's error to report
        mirrors = []
    try:
        from kobako.engine.ocispec import find_init
        init = find_init()
    except Exception:  # noqa: BLE001 - no tini installed: --init is refused, info says none
        init = ""
    osr = _os_release()
    now = time.time()
    offset = time.strftime("%z", time.localtime(now))
    return {
        "ID": _engine_id(e), "Containers": len(recs), "ContainersRunning": states.count("running"),
        "ContainersPaused": states.count("paused"),
        "ContainersStopped": len(recs) - states.count("running") - states.count("paused"),
        # overlay2: Docker's name for the multi-lowerdir overlay layout kobako mounts
        "Images": len(e.images.all()), "Driver": "overlay2",
        "DriverStatus": [["Backing Filesystem", _fs_type(e.root)], ["Supports d_type", "true"],
                         ["Native Overlay Diff", "true"], ["userxattr", "false"]],
        "Plugins": {"Volume": ["local"], "Network": ["bridge", "host", "null"], "Authorization": None,
                    "Log": ["json-file", "local"]},  # spec.LOG_DRIVERS but none, as dockerd lists
        "MemoryLimit": bool(mem) or "memory" in ctrls, "SwapLimit": swap, "KernelMemory": kmem,
        "KernelMemoryTCP": kmem_tcp, "CpuCfsPeriod": cfs, "CpuCfsQuota": cfs,
        "CPUShares": "cpu" in ctrls, "CPUSet": "cpuset" in ctrls, "PidsLimit": "pids" in ctrls,
        "IPv4Forwarding": _read("/proc/sys/net/ipv4/ip_forward") == "1",
        "BridgeNfIptables": _read("/proc/sys/net/bridge/bridge-nf-call-iptables") == "1",
        "BridgeNfIp6tables": _read("/proc/sys/net/bridge/bridge-nf-call-ip6tables") == "1",
        "Debug": bool(os.environ.get("KOBAKO_DEBUG")), "NFd": len(os.listdir("/proc/self/fd")),
        "OomKillDisable": oom, "NGoroutines": threading.active_count(),
        "SystemTime": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now))
        + f".{int(now % 1 * 1e9):09d}{offset[:3]}:{offset[3:]}",
        "LoggingDriver": config.get().get("log", "driver") or "json-file", "CgroupDriver": "cgroupfs",
        "CgroupVersion": version,
        "NEventsListener": 0, "KernelVersion": u.release,
        "OperatingSystem": osr.get("PRETTY_NAME", "Linux"), "OSVersion": osr.get("VERSION_ID", ""),
        "OSType": "linux", "Architecture": u.machine, "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": {"AllowNondistributableArtifactsCIDRs": [],
                           "AllowNondistributableArtifactsHostnames": [],
                           "InsecureRegistryCIDRs": ["127.0.0.0/8"],
                           "IndexConfigs": {"docker.io": {"Name": "docker.io", "Mirrors": mirrors,
                                                          "Secure": True, "Official": True}},
                           "Mirrors": mirrors},
        "NCPU": os.cpu_count() or 1, "MemTotal": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
        "GenericResources": None, "DockerRootDir": e.root,
        "HttpProxy": os.environ.get("HTTP_PROXY") or os.environ.get("http_proxy") or "",
        "HttpsProxy": os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy") or "",
        "NoProxy": os.environ.get("NO_PROXY") or os.environ.get("no_proxy") or "",
        "Name": u.nodename, "Labels": [], "ExperimentalBuild": False, "ServerVersion": __version__,
        "ClusterStore": "", "ClusterAdvertise": "",
        "Runtimes": {"kobako-runtime": {"path": "kobako-runtime"}}, "DefaultRuntime": "kobako-runtime",
        "Swarm": {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive", "ControlAvailable": False,
                  "Error": "", "RemoteManagers": None},
        # no daemon holds the containers: they run on while the API service restarts
        "LiveRestoreEnabled": True, "Isolation": "", "InitBinary": init,
        "ContainerdCommit": {"ID": "", "Expected": ""}, "RuncCommit": {"ID": "", "Expected": ""},
        "InitCommit": {"ID": "", "Expected": ""},
        "SecurityOptions": ["name=seccomp,profile=builtin"] + (["name=cgroupns"] if version == "2" else [])
        + (["name=rootless"] if in_user_namespace() else []),
        "Warnings": _info_warnings(swap, cfs, "pids" not in ctrls) or None,
        # kobako's own (podman's info has the like): the configuration files in force, in order
        "ConfigFiles": list(config.get().files),
        "ProductLicense": f"kobako {__version__} on Python {platform.python_version()}",
    }


def _info_warnings(swap: bool, cfs: bool, no_pids: bool) -> list[str]:
    """dockerd's Warnings for what this host's kernel cannot limit or route."""
    out = []
    if not swap:
        out.append("WARNING: No swap limit support")
    if not cfs:
        out.append("WARNING: No cpu cfs quota support")
    if no_pids:
        out.append("WARNING: No pids limit support")
    if _read("/proc/sys/net/ipv4/ip_forward") != "1":
        out.append("WARNING: IPv4 forwarding is disabled")
    return out


def _engine_id(e) -> str:
    """A stable ID for this engine's data root (dockerd keeps one in its engine-id file)."""
    from kobako.network.networks import sha256_hex
    return sha256_hex("kobako engine " + os.path.realpath(e.root))[:48].upper()


def _fs_type(path: str) -> str:
    """The file system under `path`, as /proc/self/mounts names it (the longest prefix)."""
    best, kind = "", "unknown"
    real = os.path.realpath(path)
    for line in (_read("/proc/self/mounts") or "").splitlines():
        f = line.split()
        if len(f) > 2 and (real == f[1] or real.startswith(f[1].rstrip("/") + "/")) and len(f[1]) > len(best):
            best, kind = f[1], f[2]
    return {"ext4": "extfs", "ext3": "extfs", "ext2": "extfs"}.get(kind, kind)
