"""The API server's pure parts, without a socket: routing (image names with slashes),
Docker's create body as `kobako create` flags, version keys, and error statuses."""

from __future__ import annotations

import pytest

from kobako.api import containers, execs, images, resources, server, system  # noqa: F401 - routes
from kobako.api.server import ApiError, _match, _vkey, classify


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


def test_create_body_becomes_kobako_create_flags():
    body = {"Image": "busybox", "Cmd": ["echo", "hi"], "Entrypoint": ["/bin/sh", "-c"], "Env": ["A=1"],
            "Tty": True, "OpenStdin": True, "Labels": {"k": "v"}, "ExposedPorts": {"80/tcp": {}},
            "HostConfig": {"Binds": ["/h:/c:ro"], "NetworkMode": "default", "AutoRemove": True,
                           "PortBindings": {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}]},
                           "Memory": 64 << 20, "NanoCpus": 500_000_000,
                           "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 2},
                           "ExtraHosts": ["db:10.0.0.2"], "Dns": ["10.9.9.9"], "CapAdd": ["NET_ADMIN"]},
            "NetworkingConfig": {"EndpointsConfig": {"default": {"Aliases": ["x"]}}}}
    argv, auto_remove = containers._argv(body, "web")
    assert auto_remove is True
    assert argv[-4:] == ["busybox", "-c", "echo", "hi"] and argv[argv.index("--entrypoint") + 1] == "/bin/sh"
    pairs = list(zip(argv, argv[1:], strict=False))
    for want in [("--name", "web"), ("-e", "A=1"), ("-l", "k=v"), ("-v", "/h:/c:ro"),
                 ("--network", "bridge"),
                 ("-p", "127.0.0.1:8080:80/tcp"), ("-m", str(64 << 20)), ("--cpus", "0.5"),
                 ("--restart", "on-failure:2"), ("--add-host", "db:10.0.0.2"), ("--dns", "10.9.9.9"),
                 ("--cap-add", "NET_ADMIN"), ("--expose", "80/tcp"), ("--pull", "never")]:
        assert want in pairs, want
    assert "-t" in argv and "-i" in argv
    assert "--network-alias" not in argv  # aliases only on user-defined networks
    with pytest.raises(ApiError) as e:
        containers._argv({"Cmd": ["true"]}, None)
    assert e.value.status == 400


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
