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


def _build_request(target: str, headers: list[tuple[str, str]] | None = None) -> server.Request:
    import h11
    return server.Request(None, h11.Request(method="POST", target=target,  # type: ignore[arg-type]
                                            headers=[("Host", "x"), *(headers or [])]), b"")


def test_build_rm_forcerm_and_registry_config():
    import base64
    import json

    from kobako.image import auth

    def opts(target: str, headers: list[tuple[str, str]] | None = None):
        return images.build_options(_build_request(target, headers))
    # dockerd's rm: true when absent or empty; forcerm always removes
    assert (opts("/build").rm, opts("/build").force_rm) == (True, False)
    assert opts("/build?rm=").rm and not opts("/build?rm=0").rm and not opts("/build?rm=false").rm
    assert opts("/build?rm=0&forcerm=1").force_rm
    cfg = {"https://index.docker.io/v1/": {"username": "hub", "password": "h"},
           "127.0.0.1:5000": {"auth": base64.b64encode(b"alice:s3cret").decode()}}
    hdr = base64.urlsafe_b64encode(json.dumps(cfg).encode()).decode().rstrip("=")
    got = opts("/build", [("X-Registry-Config", hdr)]).auth_configs
    assert auth.find(got, "127.0.0.1:5000") == ("alice", "s3cret")
    assert auth.find(got, "docker.io") == ("hub", "h")
    assert auth.find(got, "other:5000") is None
    # one that does not decode is ignored, as dockerd ignores it
    for bad in ("%%%not-base64", base64.b64encode(b"{not json").decode(), base64.b64encode(b"[1]").decode()):
        assert opts("/build", [("X-Registry-Config", bad)]).auth_configs == {}
