"""/networks/...: the same stores and checks as `kobako network`."""

from __future__ import annotations

import json

from kobako.api.server import ApiError, Request, blocking, engine, route


def _net(e, name: str) -> dict:
    from kobako.network.networks import NetworkError, NetworkStore
    try:
        return NetworkStore(e.root, e.run_dir).get(name)
    except NetworkError:
        raise ApiError(404, f"network {name} not found") from None


# -- networks -----------------------------------------------------------------------------------

@route("GET", "/networks")
async def networks(req: Request) -> None:
    from kobako.cli.networks import MODES, _pseudo, doc
    from kobako.network.networks import DEFAULT, NetworkStore
    e = engine()

    def docs() -> list[dict]:
        store = NetworkStore(e.root, e.run_dir)
        store.get(DEFAULT)
        return [doc(e, n) for n in store.all()] + [_pseudo(m) for m in MODES]
    out = await blocking(docs)
    flt = json.loads(req.query.get("filters") or "{}")
    for name in flt.get("name") or []:
        out = [d for d in out if name in d["Name"]]
    for label in flt.get("label") or []:
        k, _, v = label.partition("=")
        out = [d for d in out if k in d["Labels"] and (not v or d["Labels"][k] == v)]
    await req.send_json(200, out)


@route("GET", "/networks/{id}")
async def network_inspect(req: Request) -> None:
    from kobako.cli.networks import MODES, _pseudo, doc
    e = engine()
    name = req.params["id"]
    await req.send_json(200, _pseudo(name) if name in MODES else await blocking(doc, e, _net(e, name)))


@route("POST", "/networks/create")
async def network_create(req: Request) -> None:
    from kobako.network.networks import NetworkError, NetworkStore
    body = req.json()
    if not body.get("Name"):
        raise ApiError(400, "network name is required")
    if body.get("Driver") not in (None, "", "bridge"):
        raise ApiError(400, f"network driver {body['Driver']!r} is not supported (bridge)")
    cfg = ((body.get("IPAM") or {}).get("Config") or [{}])[0] or {}
    e = engine()
    try:
        n = await blocking(lambda: NetworkStore(e.root, e.run_dir).create(
            body["Name"], cfg.get("Subnet"), cfg.get("Gateway"), cfg.get("IPRange"),
            internal=bool(body.get("Internal")), options=body.get("Options") or {},
            labels=body.get("Labels") or {}))
    except NetworkError as ex:
        raise ApiError(409 if "exists" in str(ex) else 400, str(ex)) from None
    await req.send_json(201, {"Id": n["id"], "Warning": ""})


@route("DELETE", "/networks/{id}")
async def network_rm(req: Request) -> None:
    from kobako.cli.networks import users
    from kobako.network.networks import NetworkError, NetworkStore
    e = engine()
    n = _net(e, req.params["id"])

    def go() -> None:
        NetworkStore(e.root, e.run_dir).remove(n["name"], [r["name"] for r in users(e, n["name"])])
        from kobako.network.endpoints import Endpoints
        Endpoints(e.root, e.run_dir).reap_idle()
    try:
        await blocking(go)
    except NetworkError as ex:
        raise ApiError(409 if "in use" in str(ex) else 403, str(ex)) from None


@route("POST", "/networks/{id}/connect")
async def network_connect(req: Request) -> None:
    from kobako.cli import networks as cli
    from kobako.cli.parser import Args
    body = req.json()
    ep = body.get("EndpointConfig") or {}
    ip = ((ep.get("IPAMConfig") or {}).get("IPv4Address")) or None
    e = engine()
    n = _net(e, req.params["id"])
    args = Args({"ip": ip, "alias": list(ep.get("Aliases") or [])}, [n["name"], body.get("Container", "")])
    await blocking(cli.connect, e, args)
    await req.send(200)


@route("POST", "/networks/{id}/disconnect")
async def network_disconnect(req: Request) -> None:
    from kobako.cli import networks as cli
    from kobako.cli.parser import Args
    body = req.json()
    e = engine()
    n = _net(e, req.params["id"])
    args = Args({"force": bool(body.get("Force"))}, [n["name"], body.get("Container", "")])
    await blocking(cli.disconnect, e, args)
    await req.send(200)


@route("POST", "/networks/prune")
async def network_prune(req: Request) -> None:
    from kobako.cli.networks import prune_networks
    e = engine()
    await req.send_json(200, {"NetworksDeleted": await blocking(prune_networks, e)})
