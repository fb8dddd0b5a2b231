"""Rootless networking: the user's own network namespace, and slirp4netns as its way out.

An ordinary user cannot make a bridge, a veth or an nft rule in the host's network
namespace. So rootless kobako keeps one network namespace of the user's own (made in the
user's namespace, engine/rootless.py) and builds everything root would build on the host
*inside* it -- bridges, veth pairs, kobako's nft table, the DNS server of user networks --
with the same code (endpoints.py). Containers on one network reach each other and resolve
each other's names as they do for root.

Its way out is slirp4netns (package slirp4netns), a user-mode TCP/IP stack attached to a
tap device in the namespace (tap0, 10.0.2.100/24, gateway 10.0.2.2, DNS 10.0.2.3):
containers' traffic is masqueraded onto tap0 by kobako's table as it would be onto eth0,
and slirp4netns sends it from the host's sockets as the user. A published port
(`-p 127.0.0.1:8080:80`) is a slirp4netns host forward (the host's 127.0.0.1:8080 ->
10.0.2.100:8080), which kobako's table DNATs to the container as for root.

    host                    the user's network namespace                 a container
    127.0.0.1:8080 --slirp4netns--> tap0 10.0.2.100:8080 --DNAT--> kobako0 --> eth0 10.88.0.2:80

One process can never come back to the host's network namespace once it has entered the
user's (the host's belongs to the host's user namespace), so network changes are made by a
child that enters it (`call_inside`) and hands its result back.
"""

from __future__ import annotations

import os

from kobako.errors import KobakoError, Unavailable
from kobako.linux import namespaces
from kobako.network.networks import netns_dir
from kobako.paths import FileLock

TAP = "tap0"
GUEST_ADDR = "10.0.2.100"  # slirp4netns --configure's address of tap0
SLIRP_DNS = "10.0.2.3"


def _paths(run_root: str) -> tuple[str, str, str, str]:
    d = os.path.join(run_root, "network")
    return (os.path.join(netns_dir(), "kobako-user"), os.path.join(d, "slirp4netns.pid"),
            os.path.join(d, "slirp4netns.sock"), os.path.join(d, "slirp4netns.log"))


def _is_nsfs(path: str) -> bool:
    try:
        return os.stat(path).st_dev != os.stat(os.path.dirname(path)).st_dev
    except OSError:
        return False


def _slirp_alive(pidfile: str) -> bool:
    try:
        with open(pidfile) as f:
            pid = int(f.read().strip() or 0)
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return os.path.basename(f.read().split(b"\0")[0]) == b"slirp4netns"
    except (OSError, ValueError):
        return False


def uplink_alive(run_root: str) -> bool:
    """Whether the user's slirp4netns runs (one pid file read and one /proc read)."""
    return _slirp_alive(_paths(run_root)[1])


def _make_netns(path: str) -> None:
    """A new network namespace bound at path, made by a child (which then exits)."""
    from kobako.linux import mount
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    if not os.path.exists(path):
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o444))
    pid = os.fork()
    if pid == 0:
        try:
            namespaces.unshare(namespaces.CLONE_NEWNET)
            mount.mount("/proc/self/ns/net", path, None, mount.MS_BIND)
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    if status:
        raise Unavailable(f"cannot make the user's network namespace at {path}",
                          hint="see `kobako system check`")


def _start_slirp(nspath: str, pidfile: str, sock: str, log: str) -> None:
    import shutil
    import subprocess
    exe = shutil.which("slirp4netns", path="/usr/bin:/bin:/usr/local/bin")
    if exe is None:
        raise Unavailable("slirp4netns not found: rootless containers reach the network through it",
                          hint="as root: apt-get install slirp4netns; or run with --network none")
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
        os.close(fd)
    except OSError as e:
        raise Unavailable(f"cannot open /dev/net/tun: {e.strerror}: rootless networking needs a tap device",
                          hint="as root: chmod 0666 /dev/net/tun (what udev gives it on a stock host); "
                               "or run with --network none") from None
    try:
        os.unlink(sock)
    except FileNotFoundError:
        pass
    r, w = os.pipe()
    with open(log, "ab") as out:
        p = subprocess.Popen(
            [exe, "--configure", "--mtu=65520", "--disable-host-loopback", f"--api-socket={sock}",
             f"--ready-fd={w}", "--netns-type=path", nspath, TAP],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out, pass_fds=(w,), start_new_session=True)
    os.close(w)
    try:
        ready = os.read(r, 1)
    finally:
        os.close(r)
    if ready != b"1":
        p.kill()
        p.wait()
        tail = ""
        try:
            with open(log, "rb") as f:
                tail = f.read()[-300:].decode(errors="replace").strip().splitlines()[-1]
        except (OSError, IndexError):
            pass
        raise Unavailable(f"slirp4netns failed to start: {tail or 'no reason given'}", hint=f"its log: {log}")
    from kobako.paths import atomic_write
    atomic_write(pidfile, f"{p.pid}\n".encode(), 0o600, durable=False)


def ensure(run_root: str) -> tuple[str, bool]:
    """The user's network namespace, with slirp4netns attached; (its path, whether slirp4netns
    was (re)started -- its host forwards are then gone and must be added again)."""
    nspath, pidfile, sock, log = _paths(run_root)
    os.makedirs(os.path.dirname(pidfile), mode=0o700, exist_ok=True)
    with FileLock(os.path.join(os.path.dirname(pidfile), "slirp4netns.lock")):
        if _is_nsfs(nspath) and _slirp_alive(pidfile):
            return nspath, False
        if not _is_nsfs(nspath):
            _make_netns(nspath)
        _start_slirp(nspath, pidfile, sock, log)
        return nspath, True


def call_inside(nspath: str, fn, *args, sysfs: bool = False):
    """fn(*args) in a child that entered the network namespace bound at nspath (ensure's);
    its result (JSON) or its exception comes back through a pipe (not pickle: importing it
    costs ~10 ms of every rootless run). With sysfs, the child also mounts a /sys of its own
    that shows that namespace's links (/sys/class/net)."""
    from kobako.runtime import jsonfast
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            namespaces.enter(nspath, namespaces.CLONE_NEWNET)
            if sysfs:
                from kobako.linux import mount
                namespaces.unshare(namespaces.CLONE_NEWNS)
                mount.mount(None, "/", None, mount.MS_REC | mount.MS_SLAVE)
                mount.mount("sysfs", "/sys", "sysfs", 0)
            try:
                out: dict = {"ok": fn(*args)}
            except BaseException as e:  # noqa: BLE001 -- handed to the parent
                out = {"err": _error_out(e)}
            try:
                data = jsonfast.dumps(out).encode()
            except (TypeError, ValueError) as e:
                data = jsonfast.dumps({"err": _error_out(e)}).encode()
            view = memoryview(data)
            while view:
                view = view[os.write(w, view):]
        finally:
            os._exit(0)
    os.close(w)
    from kobako.linux.fs import read_all
    try:
        data = read_all(r)
    finally:
        os.close(r)
    os.waitpid(pid, 0)
    if not data:
        raise KobakoError("the network step in the user's network namespace died")
    out = jsonfast.loads(data.decode())
    if "err" in out:
        raise _error_in(out["err"])
    return out["ok"]


def _error_out(e: BaseException) -> dict:
    if isinstance(e, KobakoError):
        return {"module": type(e).__module__, "class": type(e).__qualname__, "message": e.message,
                "hint": e.hint}
    if isinstance(e, OSError):
        return {"errno": e.errno, "message": e.strerror or str(e), "filename": e.filename}
    return {"message": f"{type(e).__name__}: {e}"}


def _error_in(d: dict) -> BaseException:
    """The child's exception again: a KobakoError of its own class (each takes a message and a
    hint), an OSError with its errno, else a KobakoError with what it said."""
    if "errno" in d:
        return OSError(d["errno"], d["message"], d.get("filename"))
    if "class" in d:
        import importlib
        try:
            cls = getattr(importlib.import_module(d["module"]), d["class"])
            if isinstance(cls, type) and issubclass(cls, KobakoError):
                return cls(d["message"], d.get("hint"))
        except (ImportError, AttributeError, TypeError):
            pass
    return KobakoError(d["message"], d.get("hint"))


def _api(run_root: str, request: dict) -> dict:
    import socket

    from kobako.runtime import jsonfast
    _, _, sock, _ = _paths(run_root)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(sock)
        s.sendall(jsonfast.dumps(request).encode())
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    finally:
        s.close()
    return jsonfast.loads(data.decode() or "{}")


def add_forward(run_root: str, proto: str, host_ip: str | None, host_port: int) -> int:
    """A slirp4netns host forward: host_ip:host_port on the host to the namespace's tap0 on the
    same port (kobako's table takes it on from there). Returns its id."""
    from kobako.network.ports import PortError
    addr = host_ip or "0.0.0.0"
    resp = _api(run_root, {"execute": "add_hostfwd", "arguments": {
        "proto": proto, "host_addr": addr, "host_port": host_port,
        "guest_addr": GUEST_ADDR, "guest_port": host_port}})
    if "error" in resp:
        why = (resp["error"] or {}).get("desc", "") if isinstance(resp["error"], dict) else str(resp["error"])
        hint = None
        start = _unprivileged_port_start()
        if host_port < start:
            hint = (f"ports below {start} (net.ipv4.ip_unprivileged_port_start) are root's: publish on a "
                    f"higher port, or as root: sysctl net.ipv4.ip_unprivileged_port_start={host_port}")
        raise PortError(f"cannot publish {addr}:{host_port}/{proto} for a rootless container: "
                        f"{why or 'refused'} (in use, or not the user's to bind)", hint=hint)
    return int(resp["return"]["id"])


def remove_forward(run_root: str, fwd_id: int) -> None:
    try:
        _api(run_root, {"execute": "remove_hostfwd", "arguments": {"id": fwd_id}})
    except (OSError, ValueError):
        pass  # slirp4netns is gone, and its forwards with it


def _unprivileged_port_start() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 1024
