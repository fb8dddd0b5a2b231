"""The API server's pure parts, without a socket: routing (image names with slashes),
Docker's create body as `kobako create` flags, version keys, and error statuses."""

from __future__ import annotations

from kobako.api import containers, execs, images, resources, server, system  # noqa: F401 - routes
from kobako.api.server import _match, _vkey, classify


def _name(method: str, path: str) -> tuple[str, dict] | None:
    hit = _match(method, path.strip("/").split("/"))
    return (hit[0].__name__, hit[1]) if hit else None


def test_routes_take_image_names_with_slashes_and_tags():
    assert _name("GET", "/images/json") == ("ls", {})
    assert _name("GET", "/images/127.0.0.1:5000/team/app:1.2/json") == \
        ("inspect", {"name": "127.0.0.1:5000/team/app:1.2"})
    assert _name("DELETE", "/images/busybox") == ("remove", {"name": "busybox"})
    assert _name("POST", "/images/a/b/push") == ("push", {"name": "a/b"})
    assert _name("POST", "/containers/abc/start") == ("start", {"id": "abc"})
    assert _name("GET", "/containers/abc/nope") is None


def test_versions_and_error_statuses():
    assert _vkey("1.41") > _vkey("1.24") and _vkey("1.9") < _vkey("1.24") and _vkey("x") == (0,)
    from kobako.engine.ocispec import OptionError
    from kobako.engine.records import ContainerConflict, ContainerNotFound
    from kobako.network.networks import NetworkNotFound
    assert classify(ContainerNotFound("no such container: x"))[0] == 404
    assert classify(NetworkNotFound("network n not found"))[0] == 404
    assert classify(ContainerConflict("cannot remove container c: it is running; stop it first"))[0] == 409
    assert classify(OptionError("minimum memory limit allowed is 6MB"))[0] == 400
    status, msg = classify(KeyError("boom"))
    assert status == 500 and "KeyError" in msg
