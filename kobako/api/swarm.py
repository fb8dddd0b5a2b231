"""What a dockerd outside a swarm answers: /swarm, /services, /nodes, /tasks, /secrets,
/configs; and /plugins (kobako has none and installs none).

dockerd's words (daemon/cluster/errors.go, cluster.go errNoManager): every call that needs a
manager is 503 "This node is not a swarm manager. Use "docker swarm init" ..."; leaving
a swarm one is not in is 503 "This node is not part of a swarm". kobako cannot init or
join one: that is refused as a feature it does not have (501)."""

from __future__ import annotations

from kobako import errors
from kobako.api.server import ApiError, Request, route

NOT_MANAGER = ('This node is not a swarm manager. Use "docker swarm init" or "docker swarm join" to '
               'connect this node to swarm and try again.')
NO_SWARM = "This node is not part of a swarm"


class NoSuchPlugin(errors.NotFound):
    pass


async def _not_manager(req: Request) -> None:
    # dockerd's exact words, capital and all (an engine error's message would be lower-cased)
    raise ApiError(errors.Unavailable.status, NOT_MANAGER)


# every swarm-manager route of dockerd's API 1.41
for _method, _path in [
    ("GET", "/swarm"), ("GET", "/swarm/unlockkey"), ("POST", "/swarm/update"), ("POST", "/swarm/unlock"),
    ("GET", "/services"), ("POST", "/services/create"), ("GET", "/services/{id}"),
    ("DELETE", "/services/{id}"), ("POST", "/services/{id}/update"), ("GET", "/services/{id}/logs"),
    ("GET", "/nodes"), ("GET", "/nodes/{id}"), ("DELETE", "/nodes/{id}"), ("POST", "/nodes/{id}/update"),
    ("GET", "/tasks"), ("GET", "/tasks/{id}"), ("GET", "/tasks/{id}/logs"),
    ("GET", "/secrets"), ("POST", "/secrets/create"), ("GET", "/secrets/{id}"), ("DELETE", "/secrets/{id}"),
    ("POST", "/secrets/{id}/update"),
    ("GET", "/configs"), ("POST", "/configs/create"), ("GET", "/configs/{id}"), ("DELETE", "/configs/{id}"),
    ("POST", "/configs/{id}/update"),
]:
    route(_method, _path)(_not_manager)


@route("POST", "/swarm/leave")
async def swarm_leave(req: Request) -> None:
    raise ApiError(errors.Unavailable.status, NO_SWARM)


@route("POST", "/swarm/init")
async def swarm_init(req: Request) -> None:
    raise errors.NotImplementedYet("kobako does not run swarm mode: it cannot init a swarm")


@route("POST", "/swarm/join")
async def swarm_join(req: Request) -> None:
    raise errors.NotImplementedYet("kobako does not run swarm mode: it cannot join a swarm")


# -- plugins --------------------------------------------------------------------------------------

@route("GET", "/plugins")
async def plugins(req: Request) -> None:
    from kobako.engine import filters
    filters.from_json(req.query.get("filters"), ("capability", "enable"))  # dockerd's filters, checked
    await req.send_json(200, [])


async def _no_install(req: Request) -> None:
    raise errors.NotImplementedYet("kobako has no plugin system: its volumes use the local driver and "
                                   "its networks the bridge driver")


for _method, _path in [("GET", "/plugins/privileges"), ("POST", "/plugins/pull"),
                       ("POST", "/plugins/create")]:
    route(_method, _path)(_no_install)


async def _no_such_plugin(req: Request) -> None:
    name = req.params["name"]
    if ":" not in name.rsplit("/", 1)[-1]:
        name += ":latest"
    raise NoSuchPlugin(f'plugin "{name}" not found')


for _method, _path in [("GET", "/plugins/{name*}/json"), ("DELETE", "/plugins/{name*}"),
                       ("POST", "/plugins/{name*}/enable"), ("POST", "/plugins/{name*}/disable"),
                       ("POST", "/plugins/{name*}/upgrade"), ("POST", "/plugins/{name*}/push"),
                       ("POST", "/plugins/{name*}/set")]:
    route(_method, _path)(_no_such_plugin)
