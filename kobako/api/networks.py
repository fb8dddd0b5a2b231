"""/networks/...: Docker JSON in, the engine's network calls (engine/networks.py), dockerd's
documents out (engine/views.py) -- the same calls `kobako network` makes."""

from __future__ import annotations

from kobako.api.server import ApiError, Request, blocking, engine, route


def _typed(body: dict, key: str, kind: type, what: str):
    v = body.get(key)
    if v is not None and not isinstance(v, kind):
        raise ApiError(400, f"invalid {key}: expected {what}")
    return v


def endpoint_settings(ep: object) -> dict:
    """A Docker EndpointSettings object (create's NetworkingConfig.EndpointsConfig[net], connect's
    EndpointConfig) as the engine's endpoint wish: IPAMConfig (IPv4Address, IPv6Address,
    LinkLocalIPs), Aliases, Links, DriverOpts, MacAddress."""
    from kobako.engine.networks import endpoint_config
    if ep is None:
        ep = {}
    if not isinstance(ep, dict):
        raise ApiError(400, "invalid EndpointConfig: expected an object")
    ipam = _typed(ep, "IPAMConfig", dict, "an object") or {}
    return endpoint_config(_typed(ipam, "IPv4Address", str, "a string") or None, ep.get("Aliases"),
                           ep.get("Links"), ep.get("DriverOpts"), _typed(ep, "MacAddress", str, "a string"),
                           ipam.get("LinkLocalIPs"), _typed(ipam, "IPv6Address", str, "a string") or None)


@route("GET", "/networks")
async def networks(req: Request) -> None:
    from kobako.engine import filters
    from kobako.engine import networks as nets
    e = engine()
    flt = filters.from_json(req.query.get("filters"), nets.FILTERS)
    await req.send_json(200, await blocking(nets.listing, e, flt))


@route("GET", "/networks/{id}")
async def network_inspect(req: Request) -> None:
    from kobako.engine import networks as nets
    scope = req.query.get("scope")
    if scope not in (None, "", "local", "global", "swarm"):
        raise ApiError(400, f"invalid scope {scope!r}: local, global or swarm")
    doc = await blocking(nets.inspect, engine(), req.params["id"])
    if scope and scope != doc["Scope"]:  # dockerd: a network of another scope is not found
        raise ApiError(404, f"network {req.params['id']} not found")
    await req.send_json(200, doc)


@route("POST", "/networks/create")
async def network_create(req: Request) -> None:
    from kobako.engine import networks as nets
    body = req.json()
    name = _typed(body, "Name", str, "a string")
    ipam = _typed(body, "IPAM", dict, "an object") or {}
    configs = _typed(ipam, "Config", list, "a list") or []
    cfg, cfg6 = {}, {}  # one pool of each family, as dockerd's bridge driver takes
    for c in configs:
        if not isinstance(c, dict):
            raise ApiError(400, "invalid IPAM Config: expected a list of objects")
        for k in ("Subnet", "Gateway", "IPRange"):
            _typed(c, k, str, "a string")
        six = ":" in (c.get("Subnet") or c.get("Gateway") or c.get("IPRange") or "")
        if cfg6 if six else cfg:
            raise ApiError(400, f"one IPAM config per address family: a second IPv{6 if six else 4} one")
        if six:
            cfg6 = c
        else:
            cfg = c
    for k in ("Internal", "Attachable", "EnableIPv6", "Ingress", "CheckDuplicate", "ConfigOnly"):
        _typed(body, k, bool, "true or false")
    if body.get("Ingress") or body.get("ConfigOnly") or (body.get("ConfigFrom") or {}).get("Network"):
        raise ApiError(503, "ingress and config-only networks need swarm mode, which kobako does not run")
    if body.get("Scope") not in (None, "", "local"):
        raise ApiError(400, f"invalid scope {body['Scope']!r}: kobako's networks are local")
    e = engine()
    n = await blocking(lambda: nets.create(
        e, name or "", body.get("Driver") or None, cfg.get("Subnet") or None, cfg.get("Gateway") or None,
        cfg.get("IPRange") or None, aux=cfg.get("AuxiliaryAddresses"), internal=bool(body.get("Internal")),
        attachable=bool(body.get("Attachable")), options=body.get("Options"), labels=body.get("Labels"),
        ipam_driver=ipam.get("Driver"), ipam_options=ipam.get("Options"), ipv6=bool(body.get("EnableIPv6")),
        check_duplicate=bool(body.get("CheckDuplicate")),  # absent: false, as dockerd 20.10 reads it
        subnet6=cfg6.get("Subnet") or None, gateway6=cfg6.get("Gateway") or None,
        ip_range6=cfg6.get("IPRange") or None))
    await req.send_json(201, {"Id": n["id"], "Warning": ""})


@route("DELETE", "/networks/{id}")
async def network_rm(req: Request) -> None:
    from kobako.engine import networks as nets
    await blocking(nets.remove, engine(), req.params["id"])


def _container_of(req: Request) -> tuple[dict, str]:
    """A connect/disconnect body and the container it names."""
    body = req.json()
    container = _typed(body, "Container", str, "a string")
    if not container:
        raise ApiError(400, "Container is required")
    return body, container


@route("POST", "/networks/{id}/connect")
async def network_connect(req: Request) -> None:
    from kobako.engine import networks as nets
    body, container = _container_of(req)
    want = endpoint_settings(body.get("EndpointConfig"))
    await blocking(nets.connect, engine(), req.params["id"], container, want)
    await req.send(200)


@route("POST", "/networks/{id}/disconnect")
async def network_disconnect(req: Request) -> None:
    from kobako.engine import networks as nets
    body, container = _container_of(req)
    force = bool(_typed(body, "Force", bool, "true or false"))
    await blocking(nets.disconnect, engine(), req.params["id"], container, force)
    await req.send(200)


@route("POST", "/networks/prune")
async def network_prune(req: Request) -> None:
    from kobako.engine import filters
    from kobako.engine import networks as nets
    e = engine()
    flt = filters.from_json(req.query.get("filters"), ("label", "label!", "until"))
    await req.send_json(200, {"NetworksDeleted": await blocking(nets.prune, e, flt) or None})
