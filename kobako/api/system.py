"""/_ping, /version, /info, /events."""

from __future__ import annotations

import os
import platform

from kobako import __version__
from kobako.api.server import API_VERSION, MIN_API_VERSION, Request, blocking, engine, route


@route("GET", "/_ping")
async def ping(req: Request) -> None:
    await req.send(200, b"OK")


@route("POST", "/_ping")  # an old client's probe
async def ping_post(req: Request) -> None:
    await req.send(200, b"OK")


@route("GET", "/version")
async def version(req: Request) -> None:
    u = os.uname()
    await req.send_json(200, {
        "Platform": {"Name": "kobako"}, "Version": __version__, "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION, "GitCommit": "", "GoVersion": f"python{platform.python_version()}",
        "Os": "linux", "Arch": {"x86_64": "amd64", "aarch64": "arm64"}.get(u.machine, u.machine),
        "KernelVersion": u.release, "BuildTime": "",
        "Components": [{"Name": "Engine", "Version": __version__, "Details": {"ApiVersion": API_VERSION}}]})


@route("GET", "/info")
async def info(req: Request) -> None:
    e = engine()

    def facts() -> dict:
        recs = e.containers.all()
        states = [e.state(r) for r in recs]
        u = os.uname()
        return {"ID": "kobako", "Containers": len(recs), "ContainersRunning": states.count("running"),
                "ContainersPaused": states.count("paused"),
                "ContainersStopped": len(recs) - states.count("running") - states.count("paused"),
                "Images": len(e.images.all()), "Driver": "overlay", "DockerRootDir": e.root,
                "OperatingSystem": "kobako", "OSType": "linux", "Architecture": u.machine,
                "KernelVersion": u.release, "NCPU": os.cpu_count() or 1,
                "MemTotal": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
                "Name": u.nodename, "ServerVersion": __version__, "CgroupDriver": "cgroupfs",
                "DefaultRuntime": "kobako-runtime",
                "Runtimes": {"kobako-runtime": {"path": "kobako-runtime"}},
                "Swarm": {"LocalNodeState": "inactive"}, "SecurityOptions": ["name=seccomp,profile=default"],
                "LoggingDriver": "json-file",
                "Plugins": {"Volume": ["local"], "Network": ["bridge", "host", "null"], "Log": ["json-file"]}}
    await req.send_json(200, await blocking(facts))
