"""/containers/{id}/exec and /exec/{id}/...: `docker exec`, through the kobako CLI's own
`exec` run as a child process with pipes (or a pty for -t, which the CLI then proxies
through the runtime's console socket) -- one implementation of exec, not two."""

from __future__ import annotations

import asyncio
import os
import sys

from kobako.api.server import ApiError, Request, container, route

_EXECS: dict[str, dict] = {}  # exec ID -> its config and, once run, pid/exit code (as dockerd: in memory)


@route("POST", "/containers/{id}/exec")
async def create(req: Request) -> None:
    e, rec = container(req)
    if e.state(rec) != "running":
        raise ApiError(409, f"Container {rec['id']} is not running")
    body = req.json()
    cmd = body.get("Cmd")
    if not cmd or not isinstance(cmd, list):
        raise ApiError(400, "No exec command specified")
    xid = os.urandom(32).hex()
    _EXECS[xid] = {"container": rec["id"], "cmd": [str(c) for c in cmd], "env": body.get("Env") or [],
                   "user": body.get("User") or "", "workdir": body.get("WorkingDir") or "",
                   "tty": bool(body.get("Tty")), "stdin": bool(body.get("AttachStdin")),
                   "privileged": bool(body.get("Privileged")), "running": False, "exit": None, "pid": 0,
                   "master": -1}
    await req.send_json(201, {"Id": xid})


def _get(xid: str) -> dict:
    x = _EXECS.get(xid)
    if x is None:
        raise ApiError(404, f"No such exec instance: {xid}")
    return x


def _argv(x: dict) -> list[str]:
    a = [sys.executable, "-m", "kobako.cli.main", "exec"]
    for env in x["env"]:
        a += ["-e", env]
    if x["workdir"]:
        a += ["-w", x["workdir"]]
    if x["user"]:
        a += ["-u", x["user"]]
    if x["privileged"]:
        a += ["--privileged"]
    if x["tty"]:
        a += ["-t"]
    if x["stdin"]:
        a += ["-i"]
    return a + [x["container"], *x["cmd"]]


@route("POST", "/exec/{id}/start")
async def start(req: Request) -> None:
    x = _get(req.params["id"])
    if x["running"] or x["exit"] is not None:
        raise ApiError(409, "exec instance already started")
    body = req.json()
    x["running"] = True
    cwd = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "PYTHONPATH": cwd}
    if body.get("Detach"):
        p = await asyncio.create_subprocess_exec(*_argv(x), stdin=asyncio.subprocess.DEVNULL,
                                                 stdout=asyncio.subprocess.DEVNULL,
                                                 stderr=asyncio.subprocess.DEVNULL, env=env)
        x["pid"] = p.pid
        asyncio.ensure_future(_reap(x, p))
        await req.send(200)
        return
    ctype = "application/vnd.docker.raw-stream" if x["tty"] else "application/vnd.docker.multiplexed-stream"
    if x["tty"]:
        import pty
        master, slave = pty.openpty()
        p = await asyncio.create_subprocess_exec(*_argv(x), stdin=slave, stdout=slave, stderr=slave, env=env,
                                                 start_new_session=True)
        os.close(slave)
        x["pid"], x["master"] = p.pid, master
        reader, writer, rest = await req.hijack(ctype)
        await _pty_relay(master, reader, writer, rest if x["stdin"] else None)
    else:
        p = await asyncio.create_subprocess_exec(
            *_argv(x), stdin=asyncio.subprocess.PIPE if x["stdin"] else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
        x["pid"] = p.pid
        reader, writer, rest = await req.hijack(ctype)
        await _pipe_relay(p, reader, writer, rest if x["stdin"] else None)
    await _reap(x, p)
    writer.close()


async def _reap(x: dict, p: asyncio.subprocess.Process) -> None:
    x["exit"] = await p.wait()
    x["running"] = False
    if x["master"] >= 0:
        os.close(x["master"])
        x["master"] = -1


async def _pipe_relay(p, reader, writer, first: bytes | None) -> None:
    async def pump(stream, kind: int) -> None:
        while True:
            data = await stream.read(65536)
            if not data:
                return
            writer.write(bytes([kind, 0, 0, 0]) + len(data).to_bytes(4, "big") + data)
            await writer.drain()

    async def feed() -> None:
        if first:
            p.stdin.write(first)
        while True:
            data = await reader.read(65536)
            if not data:
                break
            p.stdin.write(data)
            await p.stdin.drain()
        p.stdin.close()

    up = asyncio.ensure_future(feed()) if first is not None else None
    try:
        await asyncio.gather(pump(p.stdout, 1), pump(p.stderr, 2))
    except ConnectionError:
        pass
    finally:
        if up is not None:
            up.cancel()


async def _pty_relay(master: int, reader, writer, first: bytes | None) -> None:
    loop = asyncio.get_running_loop()
    os.set_blocking(master, False)
    q: asyncio.Queue = asyncio.Queue()

    def readable() -> None:
        try:
            q.put_nowait(os.read(master, 65536))
        except OSError:
            q.put_nowait(b"")

    loop.add_reader(master, readable)

    async def feed() -> None:
        if first:
            os.write(master, first)
        while True:
            data = await reader.read(65536)
            if not data:
                return
            os.write(master, data)

    up = asyncio.ensure_future(feed()) if first is not None else None
    try:
        while True:
            data = await q.get()
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        loop.remove_reader(master)
        if up is not None:
            up.cancel()


@route("GET", "/exec/{id}/json")
async def inspect(req: Request) -> None:
    x = _get(req.params["id"])
    await req.send_json(200, {"ID": req.params["id"], "Running": x["running"], "ExitCode": x["exit"],
                              "ContainerID": x["container"], "Pid": x["pid"], "OpenStdin": x["stdin"],
                              "ProcessConfig": {"entrypoint": x["cmd"][0], "arguments": x["cmd"][1:],
                                                "tty": x["tty"], "user": x["user"]}})


@route("POST", "/exec/{id}/resize")
async def resize(req: Request) -> None:
    import fcntl
    import struct
    import termios
    x = _get(req.params["id"])
    if x["master"] >= 0:
        fcntl.ioctl(x["master"], termios.TIOCSWINSZ,
                    struct.pack("HHHH", int(req.query.get("h", 24)), int(req.query.get("w", 80)), 0, 0))
    await req.send(201)
