"""The container monitor: one small process that holds the stdio of every detached
container, writes their logs, records exit codes and applies restart policies. One is
shared by all containers of one data root, where podman starts a conmon per container
(a Python process costs ~8 MB; shared by ten containers that is under 1 MB each,
conmon's ballpark; docs/engine.md measures it).

It is started on demand by the first `kobako run -d`/`start` (a fresh interpreter with
nothing but this module and the runtime's JSON helper imported) and exits by itself
when no container runs and no client is connected. It is not a daemon the user
manages: commands that do not start containers never need it, and killing it leaves
the containers running (their exit codes are then lost, as with a killed conmon). Each
record it starts names it as the owner (PID and start time): once such a container's
init has ended, the next command that looks at it finds the owner gone and records the
exit itself (exit code 255, unknown, and why in State.Error), tearing down what it left.

It is every container's parent: it forks a child that runs `kobako-runtime run
--detach` in-process with the container's stdout/stderr as its own; the runtime child
exits once the program runs, and the container's init is reparented to the monitor,
a child subreaper, which then reaps it and learns its exit status.

Protocol: one JSON object per line over <run root>/monitor.sock.
    {"op": "start", "id": ID}   -> {"ok": true, "pid": N} | {"ok": false, "error": "..."}
    {"op": "wait", "id": ID}    -> {"ok": true, "exitCode": N} once the container exits
    {"op": "ping"}              -> {"ok": true, "pid": monitor pid}
    {"op": "attach", "id": ID, "stdin": bool}
                                -> {"ok": true, "tty": bool}, then the connection carries the
       container's output (raw for a tty; else Docker's multiplexed frames: 1 byte stream,
       3 zero bytes, 4 bytes big-endian length, data) and takes its stdin; it is closed
       when the container exits.
    {"op": "resize", "id": ID, "rows": N, "cols": N}
"""

from __future__ import annotations

import array
import os
import signal
import socket
import sys
import time

from kobako.engine import stdio
from kobako.engine.jsonlog import JsonLog, now_iso
from kobako.runtime import jsonfast

SOCK = "monitor.sock"


# -- records (the same files the CLI reads; the same per-container lock) ----------------------

def _lock(path: str) -> int:
    import fcntl
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)  # no O_CREAT: never recreate a removed container
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def update_record(cdir: str, **changes: object) -> dict | None:
    """Read-modify-write container.json under its lock; None if the container is gone. A
    change may be a function of the old value (a nested merge, done under the same lock)."""
    try:
        fd = _lock(os.path.join(cdir, "lock"))
    except FileNotFoundError:
        if not os.path.exists(os.path.join(cdir, "container.json")):
            return None  # removed (or being removed): nothing to update
        os.close(os.open(os.path.join(cdir, "lock"), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
        fd = _lock(os.path.join(cdir, "lock"))  # a record made before locks were created with it
    try:
        try:
            with open(os.path.join(cdir, "container.json"), "rb") as f:
                rec = jsonfast.loads(f.read())
        except (FileNotFoundError, ValueError):
            return None
        for k, v in changes.items():  # a callable computes the new value from the old one
            rec[k] = v(rec.get(k)) if callable(v) else v
        tmp = os.path.join(cdir, f".container.json.{os.getpid()}.tmp")
        try:
            with open(tmp, "w") as f:
                f.write(jsonfast.dumps(rec))
            os.rename(tmp, os.path.join(cdir, "container.json"))
        except OSError:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        return rec
    finally:
        os.close(fd)


# -- the monitor -------------------------------------------------------------------------------

class Box:
    """One running container as the monitor sees it."""

    def __init__(self, cid: str, cdir: str, rec: dict) -> None:
        self.cid, self.cdir = cid, cdir
        self.pid = 0
        self.fds: dict[int, str] = {}
        self.log = JsonLog.of_container(cdir, {**rec, "id": cid})
        self.waiters: list[socket.socket] = []
        self.attached: dict[socket.socket, bool] = {}  # connection -> takes stdin
        self.console: tuple[socket.socket, str] | None = None
        self.stdin_w = -1   # the container's stdin (-i without -t): we hold the write end
        self.master = -1    # the pty master (-t)
        self.tty = bool((rec.get("options") or {}).get("tty"))
        self.stdin_buf = bytearray()  # what attach clients sent that the container has not read yet
        self.early_conns: dict[socket.socket, bool] = {}  # start -a clients, until the start is reported
        self.early = bytearray()  # output for them meanwhile
        self.stdin_eof = False
        self.restarts = int(rec.get("restartCount", 0))
        self.stopping = False
        self.gen = 0  # the PID of the runtime child that started it: its network's generation
        self.size: tuple[int, int] | None = None  # a resize that came before the pty did
        self.health: dict | None = None  # its healthcheck (engine/health.py), while it runs
        self.probe = None  # the check in flight (health.Probe)
        self.next_probe = 0.0
        self.started_at = 0.0


class Monitor:
    def __init__(self, data_root: str, run_root: str) -> None:
        import selectors
        self.data = data_root
        self.run = run_root
        self.rt_root = os.path.join(run_root, "runtime")
        self.sel = selectors.DefaultSelector()
        self.boxes: dict[str, Box] = {}
        self.by_pid: dict[int, Box] = {}
        self.helpers: dict[int, tuple[str, object]] = {}  # pid -> (what, context)
        self.clients: dict[socket.socket, bytes] = {}
        self.trace_fds: dict[socket.socket, int] = {}  # start --trace: the client's stderr
        self.pending: list[tuple[float, str]] = []  # restarts due: (when, id)
        self.early_exits: dict[int, int] = {}  # init PID -> exit code, reaped before started()
        self.idle_since = time.monotonic()
        from kobako.runtime.state import start_time
        # what each record it starts names as its owner (engine/records.py): a command that finds
        # this process gone settles the containers it ran
        self.owner = {"pid": os.getpid(), "start": start_time(os.getpid()), "by": "monitor"}

    def cdir(self, cid: str) -> str:
        return os.path.join(self.data, "containers", cid)

    # -- main loop ---------------------------------------------------------------------
    def serve(self, listener: socket.socket) -> None:
        import selectors
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(w)
        signal.signal(signal.SIGCHLD, lambda *a: None)
        signal.signal(signal.SIGTERM, lambda *a: None)  # containers outlive a stray SIGTERM
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        self.sel.register(listener, selectors.EVENT_READ, ("listen", None))
        self.sel.register(r, selectors.EVENT_READ, ("signal", None))
        while True:
            timeout = 1.0
            if self.pending:
                timeout = max(0.0, min(p[0] for p in self.pending) - time.monotonic())
            due = [b.probe.deadline if b.probe else b.next_probe for b in self.boxes.values() if b.health]
            if due:
                timeout = min(timeout, max(0.0, min(due) - time.monotonic()))
            for key, _ in self.sel.select(timeout):
                kind, ctx = key.data
                # The monitor holds every detached container's stdio: one failing event (a full
                # disk, a bad request, a vanished directory) must never take the others down.
                try:
                    if kind == "listen":
                        self.accept(listener)
                    elif kind == "signal":
                        try:
                            while os.read(r, 512):
                                pass
                        except BlockingIOError:
                            pass
                        self.reap()
                    elif kind == "client":
                        self.client_read(key.fileobj)
                    elif kind == "stdio":
                        self.stdio(key.fd, ctx)
                    elif kind == "stdin":
                        self.flush_stdin(ctx)
                except Exception as e:  # noqa: BLE001 - logged, the loop goes on
                    self.complain(f"{kind}: {type(e).__name__}: {e}")
            for step in (self.reap, self.due_restarts, self.due_probes):
                try:
                    step()
                except Exception as e:  # noqa: BLE001
                    self.complain(f"{step.__name__}: {type(e).__name__}: {e}")
            if self.boxes or self.clients or self.helpers or self.pending:
                self.idle_since = time.monotonic()
            elif time.monotonic() - self.idle_since > 2.0:
                return  # nothing to watch: go away (the next start brings a new monitor)

    def complain(self, msg: str) -> None:
        """The monitor's own trouble, in <run root>/monitor.log (its stderr is /dev/null)."""
        try:
            fd = os.open(os.path.join(self.run, "monitor.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT |
                         os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, f"{now_iso()} {msg}\n".encode())
            finally:
                os.close(fd)
        except OSError:
            pass

    def accept(self, listener: socket.socket) -> None:
        import selectors
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        conn.setblocking(False)
        self.clients[conn] = b""
        self.sel.register(conn, selectors.EVENT_READ, ("client", None))

    @staticmethod
    def close_fd(fd: int) -> None:
        if fd >= 0:
            os.close(fd)

    def drop(self, conn: socket.socket) -> None:
        self.close_fd(self.trace_fds.pop(conn, -1))
        if conn in self.clients:
            try:
                self.sel.unregister(conn)
            except (KeyError, ValueError):
                pass  # a half-closed attach client: already not read from
            del self.clients[conn]
            for b in self.boxes.values():
                if conn in b.waiters:
                    b.waiters.remove(conn)
                b.attached.pop(conn, None)
            conn.close()

    def reply(self, conn: socket.socket, obj: dict) -> None:
        try:
            conn.setblocking(True)
            conn.settimeout(2)
            conn.sendall((jsonfast.dumps(obj) + "\n").encode())
            conn.setblocking(False)
        except OSError:
            self.drop(conn)

    def client_read(self, conn: socket.socket) -> None:
        try:  # recvmsg: a start request may carry the client's trace fd (start --trace)
            data, anc, _, _ = conn.recvmsg(65536, socket.CMSG_SPACE(4), socket.MSG_CMSG_CLOEXEC)
        except BlockingIOError:
            return
        except OSError:
            data, anc = b"", []
        for level, kind, raw in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                for fd in array.array("i", raw[:len(raw) - len(raw) % 4]):
                    self.close_fd(self.trace_fds.pop(conn, -1))
                    self.trace_fds[conn] = fd
        for b in self.boxes.values():  # an attached client: what it sends is the container's stdin
            if conn in b.attached:
                if not data:  # its stdin ended (shutdown SHUT_WR): EOF for the container, output goes on
                    self.sel.unregister(conn)
                    if b.attached[conn] and not b.tty:
                        b.stdin_eof = True
                        self.flush_stdin(b)
                    return
                if b.attached[conn]:
                    if b.tty:
                        if b.master >= 0:
                            try:
                                os.write(b.master, data)  # keystrokes: small
                            except OSError:
                                pass
                    elif b.stdin_w >= 0:
                        b.stdin_buf += data
                        self.flush_stdin(b)
                return
        if not data:
            self.drop(conn)
            return
        buf = self.clients[conn] + data
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            try:
                req = jsonfast.loads(line)
            except ValueError:
                req = None
            if not isinstance(req, dict):
                self.reply(conn, {"ok": False, "error": "bad request"})
                continue
            self.handle(conn, req)
        if conn in self.clients:
            self.clients[conn] = buf

    def handle(self, conn: socket.socket, req: dict) -> None:
        op = req.get("op")
        cid = str(req.get("id") or "")
        if op == "ping":
            self.reply(conn, {"ok": True, "pid": os.getpid()})
        elif op == "start":
            trace = self.trace_fds.pop(conn, -1)
            try:
                err = self.start(cid, conn, attach=bool(req.get("attach")), stdin=bool(req.get("stdin")),
                                 trace=trace)
            finally:
                self.close_fd(trace)
            if err:
                self.reply(conn, {"ok": False, "error": err})
        elif op == "wait":
            b = self.boxes.get(cid)
            if b is None:  # not ours (a foreground run, or one a former monitor started)
                self.reply(conn, {"ok": False, "unknown": True})
            else:
                b.waiters.append(conn)
        elif op == "attach":
            b = self.boxes.get(cid)
            if b is None or not b.pid:
                self.reply(conn, {"ok": False, "error": f"container {cid[:12]} is not running"})
                return
            self.reply(conn, {"ok": True, "tty": b.tty})
            b.attached[conn] = bool(req.get("stdin"))
        elif op == "resize":
            b = self.boxes.get(cid)
            try:
                rows, cols = int(req.get("rows", 24)), int(req.get("cols", 80))
            except (TypeError, ValueError):
                rows = cols = -1
            if not (0 < rows < 65536 and 0 < cols < 65536):
                self.reply(conn, {"ok": False, "error": "rows and cols must be 1..65535"})
            elif b is not None and b.master >= 0:
                _winsize(b.master, rows, cols)
                self.reply(conn, {"ok": True})
            elif b is not None and b.tty:  # docker run -it resizes right after the start: keep it
                b.size = (rows, cols)
                self.reply(conn, {"ok": True})
            else:
                self.reply(conn, {"ok": False, "error": "no terminal to resize"})
        elif op == "stopping":  # `stop`/`kill` by the user: no restart (Docker's rule)
            b = self.boxes.get(cid)
            if b:
                b.stopping = True
            if any(p[1] == cid for p in self.pending):  # exited, its restart due: not any more
                self.pending = [p for p in self.pending if p[1] != cid]
                update_record(self.cdir(cid), status="exited")
            self.reply(conn, {"ok": True})
        else:
            self.reply(conn, {"ok": False, "error": f"unknown op {op!r}"})

    def event(self, rec: dict, cid: str, action: str, **attrs: str) -> None:
        from kobako.engine.events import emit
        emit(self.data, "container", action, cid,
             {"name": rec.get("name", ""), "image": rec.get("imageName", ""), **attrs})

    def record(self, cid: str) -> dict | None:
        try:
            with open(os.path.join(self.cdir(cid), "container.json"), "rb") as f:
                return jsonfast.loads(f.read())
        except (OSError, ValueError):
            return None

    # -- starting a container -------------------------------------------------------------
    def start(self, cid: str, conn: socket.socket | None, attach: bool = False,
              stdin: bool = False, trace: int = -1) -> str | None:
        import selectors
        if cid in self.boxes:
            return f"container {cid[:12]} is already running"
        rec = update_record(self.cdir(cid), owner=self.owner)  # before anything is made
        if rec is None:
            return f"no such container: {cid}"
        err = self.refresh_joins(rec)
        if err:
            return err
        box = Box(cid, self.cdir(cid), rec)
        if attach and conn is not None:  # this connection becomes the stream once started
            box.early_conns[conn] = stdin
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        rep_r, rep_w = os.pipe2(os.O_CLOEXEC)
        in_r = -1
        if (rec.get("options") or {}).get("interactive") and not box.tty:
            in_r, box.stdin_w = os.pipe2(os.O_CLOEXEC)
            os.set_blocking(box.stdin_w, False)
        console = None
        if box.tty:  # the runtime sends the pty master here (runc's --console-socket)
            console = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            cpath = os.path.join(self.run, f"console-{cid[:12]}-{os.getpid()}.sock")
            try:
                os.unlink(cpath)
            except FileNotFoundError:
                pass
            console.bind(cpath)
            console.listen(1)
        pid = os.fork()
        if pid == 0:  # the runtime, in-process; its stdio becomes the container's
            try:
                os.close(out_r)
                os.close(err_r)
                os.close(rep_r)
                signal.set_wakeup_fd(-1)
                null = os.open("/dev/null", os.O_RDONLY)
                os.dup2(in_r if in_r >= 0 else null, 0)
                os.dup2(out_w, 1)
                os.dup2(err_w, 2)
                if trace >= 0:  # start --trace: this start's steps, on the client's stderr
                    from kobako import steps
                    steps.trace_to(trace)
                if _attach_network(self.data, self.run, rec, rep_w):
                    _run_runtime(self.rt_root, rec["bundle"], cid, rep_w, cpath if console else None)
            finally:
                os._exit(0)
        os.close(out_w)
        os.close(err_w)
        os.close(rep_w)
        if in_r >= 0:
            os.close(in_r)
        if console is not None:
            box.console = (console, cpath)
        for fd, stream in ((out_r, "stdout"), (err_r, "stderr")):
            os.set_blocking(fd, False)
            box.fds[fd] = stream
            self.sel.register(fd, selectors.EVENT_READ, ("stdio", box))
        self.boxes[cid] = box
        box.gen = pid
        self.helpers[pid] = ("runtime", (box, rep_r, conn))
        return None

    def started(self, box: Box, rep_r: int, conn: socket.socket | None, status: int) -> None:
        """The runtime child is done: read its report, then the container runs (or not)."""
        msg = b""
        while True:
            try:
                chunk = os.read(rep_r, 65536)
            except OSError:
                break
            if not chunk:
                break
            msg += chunk
        os.close(rep_r)
        text = msg.decode(errors="replace")
        if box.console is not None:
            self.take_console(box)
        if text.startswith("OK "):
            box.pid = int(text.split()[1])
            self.by_pid[box.pid] = box
            from kobako.engine import health
            box.health = health.settings(self.record(box.cid) or {})
            more: dict = {}
            if box.health:  # Docker's first check comes one Interval after the start
                box.started_at = time.monotonic()
                box.next_probe = box.started_at + box.health["Interval"] / health.SECOND
                more["health"] = health.starting()
            rec = update_record(box.cdir, status="running", pid=box.pid, started=now_iso(),
                                restartCount=box.restarts, **more) or {}
            self.event(rec, box.cid, "start")
            if conn is not None:
                self.reply(conn, {"ok": True, "pid": box.pid, "tty": box.tty})
            for c, stdin in box.early_conns.items():  # start -a: the output so far, then live
                try:
                    c.setblocking(True)
                    c.settimeout(1)
                    c.sendall(bytes(box.early))
                    c.setblocking(False)
                    box.attached[c] = stdin
                except OSError:
                    self.drop(c)
            box.early_conns.clear()
            box.early.clear()
            if box.pid in self.early_exits:  # a short program, already reaped: finish it now
                self.by_pid.pop(box.pid, None)
                self.drain(box)
                self.finish(box, self.early_exits.pop(box.pid))
        else:
            err = text.removeprefix("ERR ").strip() or f"the runtime failed (status {status})"
            if conn is not None:  # before finish(), which drops an attaching start's connection
                box.early_conns.pop(conn, None)
                self.reply(conn, {"ok": False, "error": err})
            self.finish(box, 125 if "not found" not in err else 127, error=err)

    def refresh_joins(self, rec: dict) -> str | None:
        """--pid/--ipc container:NAME: point config.json at that container's namespace as it is
        now (its init's PID changes when it restarts); None, or why it cannot start."""
        joins = rec.get("joinNamespaces") or {}
        if not joins:
            return None
        from kobako.linux.namespaces import TYPES
        path = os.path.join(rec["bundle"], "config.json")
        try:
            with open(path, "rb") as f:
                cfg = jsonfast.loads(f.read())
            from kobako.runtime.state import start_time
            for ns, other in joins.items():
                with open(os.path.join(self.rt_root, other, "state.json"), "rb") as f:
                    st = jsonfast.loads(f.read())
                pid = int(st["pid"])
                if start_time(pid) != st.get("_start_time"):  # gone, and the PID maybe reused
                    raise ProcessLookupError(pid)
                for n in cfg["linux"]["namespaces"]:
                    if n["type"] == ns:
                        n["path"] = f"/proc/{pid}/ns/{TYPES[ns][1]}"  # "network" is ns/net there
            tmp = path + ".tmp"
            with open(tmp, "w") as f:
                f.write(jsonfast.dumps(cfg))
            os.rename(tmp, path)
        except (OSError, ValueError, KeyError):
            return (f"the container whose namespaces this one joins ({', '.join(joins.values())[:12]}) "
                    "is not running")
        return None

    def take_console(self, box: Box) -> None:
        """The pty master the runtime's child sent (it has exited: its connection waits queued)."""
        import selectors
        sock, path = box.console  # type: ignore[misc]
        box.console = None
        try:
            sock.setblocking(False)
            conn, _ = sock.accept()
            conn.setblocking(True)
            conn.settimeout(2)
            _, fds, _, _ = socket.recv_fds(conn, 4096, 1)
            conn.close()
            if fds:
                box.master = fds[0]
                if box.size:
                    _winsize(box.master, *box.size)
                os.set_blocking(box.master, False)
                box.fds[box.master] = "stdout"
                self.sel.register(box.master, selectors.EVENT_READ, ("stdio", box))
        except OSError:
            pass
        finally:
            sock.close()
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    # -- exits ---------------------------------------------------------------------------------
    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            code = os.waitstatus_to_exitcode(status)
            code = 128 - code if code < 0 else code
            helper = self.helpers.pop(pid, None)
            if helper is not None:
                what, ctx = helper
                if what == "runtime":
                    box, rep_r, conn = ctx  # type: ignore[misc]
                    self.started(box, rep_r, conn, code)
                elif what == "health":
                    self.probed(ctx, code)  # type: ignore[arg-type]
                continue
            box = self.by_pid.pop(pid, None)
            if box is not None:
                self.drain(box)
                self.finish(box, code)
            else:  # an init reaped before its runtime child's report: started() takes it up
                self.early_exits[pid] = code

    def flush_stdin(self, box: Box) -> None:
        """Write what is pending into the container's stdin pipe without ever blocking: the rest
        waits for the pipe to be writable (a writer event), so nothing is dropped."""
        import selectors
        fd = box.stdin_w
        if fd < 0:
            return
        while box.stdin_buf:
            try:
                n = os.write(fd, box.stdin_buf)
            except BlockingIOError:
                break
            except OSError:  # the container closed its stdin
                box.stdin_buf.clear()
                break
            del box.stdin_buf[:n]
        registered = fd in self.sel.get_map()
        if box.stdin_buf and not registered:
            self.sel.register(fd, selectors.EVENT_WRITE, ("stdin", box))
        elif not box.stdin_buf:
            if registered:
                self.sel.unregister(fd)
            if box.stdin_eof:
                os.close(fd)
                box.stdin_w = -1

    def fan_out(self, box: Box, stream: str, data: bytes) -> None:
        if not box.attached and not box.early_conns:
            return
        if box.tty:
            frame = data
        else:
            frame = stdio.frame(stdio.STDOUT if stream == "stdout" else stdio.STDERR, data)
        if box.early_conns and len(box.early) < 1 << 20:
            box.early += frame
        for conn in list(box.attached):
            try:
                conn.setblocking(True)
                conn.settimeout(1)  # a stalled client is dropped, it never stalls the others
                conn.sendall(frame)
                conn.setblocking(False)
            except OSError:
                self.drop(conn)

    def drain(self, box: Box) -> None:
        for fd, stream in list(box.fds.items()):
            while True:
                try:
                    data = os.read(fd, 65536)
                except (BlockingIOError, OSError):
                    break
                if not data:
                    break
                box.log.write(stream, data)
                self.fan_out(box, stream, data)

    def finish(self, box: Box, code: int, error: str | None = None) -> None:
        box.health = None
        if box.probe is not None:  # its helper is reaped later; its result is not wanted
            box.probe.kill()
            box.probe.close()
            box.probe = None
        for fd in list(box.fds):
            self.sel.unregister(fd)
            os.close(fd)
        box.fds.clear()
        if box.master >= 0 and box.master not in box.fds:
            box.master = -1
        if box.stdin_w >= 0:
            if box.stdin_w in self.sel.get_map():
                self.sel.unregister(box.stdin_w)
            os.close(box.stdin_w)
            box.stdin_w = -1
        if box.console is not None:
            self.take_console(box)
            if box.master >= 0:
                os.close(box.master)
                box.master = -1
        box.log.close()
        self.boxes.pop(box.cid, None)
        oom = False
        rec = self.record(box.cid) or {}
        changes: dict = {"status": "exited", "exitCode": code, "finished": now_iso(), "pid": 0}
        if error:
            changes["error"] = error
        rec = update_record(box.cdir, **changes) or rec
        self.event(rec, box.cid, "die", exitCode=str(code))
        for conn in box.waiters:
            self.reply(conn, {"ok": True, "exitCode": code, "oom": oom})
        box.waiters.clear()
        # the attach streams end last: their clients ask for the exit code as they see the end
        for conn in list(box.attached) + list(box.early_conns):
            box.early_conns.pop(conn, None)
            box.attached.pop(conn, None)
            self.drop(conn)
        self.cleanup(box.cid, rec, code, box)

    def cleanup(self, cid: str, rec: dict, code: int, box: Box) -> None:
        """Runtime state away (a helper child: the runtime stays out of this process);
        then restart, remove (--rm) or leave the exited container as it is."""
        policy = (rec.get("restartPolicy") or {})
        name, limit = policy.get("Name", "no"), int(policy.get("MaximumRetryCount", 0) or 0)
        again = not box.stopping and rec.get("error") is None and (
            name == "always" or name == "unless-stopped" or
            (name == "on-failure" and code != 0 and (limit == 0 or box.restarts < limit)))
        remove = bool((rec.get("options") or {}).get("autoRemove")) and not again
        if remove:
            self.event(rec, cid, "destroy")
        anon = [v["name"] for v in rec.get("volumes") or [] if v.get("anonymous")] if remove else []
        pid = os.fork()
        if pid == 0:
            try:
                signal.set_wakeup_fd(-1)
                _delete_runtime(self.rt_root, cid, self.data if remove else None, anon)
                if not again:  # a restart keeps it: the next start replaces it
                    _detach_network(self.data, self.run, cid, box.gen)
            finally:
                os._exit(0)
        self.helpers[pid] = ("cleanup", None)
        if again:
            delay = min(0.1 * (2 ** box.restarts), 60.0)  # Docker's back-off: 100 ms, doubling
            update_record(box.cdir, restartCount=box.restarts + 1, status="restarting")
            self.pending.append((time.monotonic() + delay, cid))

    def due_probes(self) -> None:
        """Start the checks that are due; end the ones that overran their Timeout."""
        from kobako.engine import health
        now = time.monotonic()
        for box in list(self.boxes.values()):
            if not box.health or not box.pid:
                continue
            if box.probe is not None:
                box.probe.read()  # a chatty check must not block on a full pipe
                if now >= box.probe.deadline and not box.probe.timed_out:
                    box.probe.kill()
            elif now >= box.next_probe:
                box.probe = health.spawn(self.rt_root, box.cid, box.health["Test"], self.run,
                                         box.health["Timeout"] / health.SECOND, now_iso())
                self.helpers[box.probe.pid] = ("health", box)

    def probed(self, box: Box, code: int) -> None:
        """A check ended: its result into State.Health; an event when the status changes."""
        from kobako.engine import health
        probe, box.probe = box.probe, None
        if probe is None or not box.health:
            return  # the container ended meanwhile
        output = probe.close()
        if probe.timed_out:
            code = -1
            output = f"Health check exceeded timeout ({box.health['Timeout'] / health.SECOND:g}s)"
        now, end, seen = time.monotonic(), now_iso(), {}

        def step(before: dict | None) -> dict:  # under the record's lock: one read, one write
            seen["before"] = before or health.starting()
            seen["after"] = health.result(seen["before"], box.health, box.started_at, probe.start, end,
                                          code, output, now)
            return seen["after"]
        rec = update_record(box.cdir, health=step)
        if rec is not None and seen["after"]["Status"] != seen["before"].get("Status"):
            self.event(rec, box.cid, f"health_status: {seen['after']['Status']}")
        box.next_probe = now + box.health["Interval"] / health.SECOND

    def due_restarts(self) -> None:
        now = time.monotonic()
        for item in [p for p in self.pending if p[0] <= now]:
            self.pending.remove(item)
            rec = self.record(item[1])
            if rec is None or rec.get("status") != "restarting":
                continue  # removed or stopped meanwhile
            if self.helpers and any(h[0] == "cleanup" for h in self.helpers.values()):
                self.pending.append((now + 0.05, item[1]))  # let the old runtime state go first
                continue
            self.start(item[1], None)

    def stdio(self, fd: int, box: Box) -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            stream = box.fds.get(fd, "stdout")
            box.log.write(stream, data)
            self.fan_out(box, stream, data)
        else:
            self.sel.unregister(fd)
            os.close(fd)
            box.fds.pop(fd, None)
            if fd == box.master:  # the number may be reused: never write stdin to it again
                box.master = -1


def _winsize(fd: int, rows: int, cols: int) -> None:
    import fcntl
    import struct
    import termios
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _run_runtime(rt_root: str, bundle: str, cid: str, report: int, console: str | None = None) -> None:
    """In the forked child: `kobako-runtime --root R run --detach --keep --bundle B ID`."""
    from kobako.runtime import main as rt
    from kobako.runtime.commands import run as rt_run
    from kobako.runtime.errors import RuntimeFailure
    from kobako.runtime.log import Log

    log = Log(os.path.join(os.path.dirname(bundle), "runtime.log"), "json")
    try:
        argv = ["--root", rt_root, "run", "--detach", "--keep", "--bundle", bundle]
        _, args = rt.parse(argv + (["--console-socket", console] if console else []) + [cid])
        rt_run.run(args, log)
        from kobako.runtime import state
        c = state.Container(rt_root, cid)
        c.load()
        os.write(report, f"OK {c.data['pid']}".encode())
    except RuntimeFailure as e:
        from kobako.engine import hostcheck
        hostcheck.hint_start_failure(e)  # the host lacks something: its check says what
        os.write(report, f"ERR {e}".encode())
    except OSError as e:
        from kobako.runtime.errors import describe_oserror
        os.write(report, f"ERR {describe_oserror(e)}".encode())
    except BaseException as e:  # noqa: BLE001 - reported to the CLI, never a traceback
        os.write(report, f"ERR internal error: {type(e).__name__}: {e}".encode())


def _attach_network(data: str, run: str, rec: dict, report: int) -> bool:
    """In the runtime child, before the runtime: the container's network (its netns path is
    in config.json). False, with the reason reported, when it cannot be made."""
    if (rec.get("net") or {}).get("mode") != "bridge":
        return True
    from kobako.network.endpoints import Endpoints
    try:
        Endpoints(data, run).attach(rec, os.getpid())
        return True
    except Exception as e:  # noqa: BLE001 - reported to the CLI as one line
        from kobako.errors import describe
        from kobako.network.networks import NetworkError
        if isinstance(e, NetworkError):  # no nftables, the default subnet taken...: the host says which
            from kobako.engine import hostcheck
            hostcheck.hint(e, "network")
        os.write(report, f"ERR {describe(e)}".encode())
        return False


def _detach_network(data: str, run: str, cid: str, gen: int) -> None:
    try:
        from kobako.network.endpoints import Endpoints
        Endpoints(data, run).detach(cid, gen or None, sync=False)
    except Exception:  # noqa: BLE001 - a sweep (system prune, the next start) finishes it
        pass


def _delete_runtime(rt_root: str, cid: str, remove_from: str | None,
                    volumes: list[str] | None = None) -> None:
    from kobako.runtime import main as rt
    from kobako.runtime.commands import delete
    from kobako.runtime.log import Log

    try:
        _, args = rt.parse(["--root", rt_root, "delete", "--force", cid])
        delete.run(args, Log(None))
    except BaseException:  # noqa: BLE001 - already gone is fine
        pass
    if remove_from:  # --rm: the whole container goes with its exit, and its anonymous volumes
        import shutil
        shutil.rmtree(os.path.join(remove_from, "containers", cid), ignore_errors=True)
        if volumes:
            from kobako.storage.volumes import VolumeError, VolumeStore
            vs = VolumeStore(remove_from)
            for name in volumes:
                try:
                    vs.remove(name, [])
                except VolumeError:
                    pass


# -- starting the monitor, and talking to it ---------------------------------------------------

def serve() -> None:
    """Entry of the monitor process: `python -IS -c ... serve()` with KOBAKO_ROOT/KOBAKO_RUN set."""
    import fcntl
    data, run = os.environ["KOBAKO_ROOT"], os.environ["KOBAKO_RUN"]
    os.makedirs(run, mode=0o700, exist_ok=True)
    lock = os.open(os.path.join(run, "monitor.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    # A monitor that is going away (idle) still holds the lock for a moment: wait a little.
    # One that is serving keeps it: then its socket answers, and nobody would have spawned us.
    for _ in range(40):
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            time.sleep(0.05)
    else:
        return  # another monitor serves this run root
    from kobako.linux import prctl
    prctl.set_child_subreaper()
    try:
        prctl.set_name("kobako-monitor")
    except (AttributeError, OSError):
        pass
    path = os.path.join(run, SOCK)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    listener.bind(path)
    os.chmod(path, 0o600)
    listener.listen(64)
    listener.setblocking(False)
    try:
        Monitor(data, run).serve(listener)
    finally:
        try:
            os.unlink(path)  # first the socket, then the lock: a new monitor can start cleanly
        except FileNotFoundError:
            pass
        listener.close()
        os.close(lock)


def connect(data_root: str, run_root: str, spawn: bool = True) -> socket.socket:
    """A connection to this run root's monitor, starting one if none answers."""
    path = os.path.join(run_root, SOCK)
    end = spawned = 0.0
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            s.connect(path)
            return s
        except (FileNotFoundError, ConnectionRefusedError):
            s.close()
            if not spawn:
                raise
        now = time.monotonic()
        if end and now > end:
            raise OSError(f"cannot reach the container monitor at {path}")
        # Refused: no monitor, or a killed one's socket is still there (the new one replaces
        # it), or one is going away idle (the new one waits for its lock): connect again until
        # the new one listens, and spawn another if that one gave up
        if now - spawned > 2.5:
            _spawn(data_root, run_root)
            spawned = time.monotonic()
            end = end or spawned + 5
        time.sleep(0.005)


def _spawn(data_root: str, run_root: str) -> None:
    """A fresh interpreter (not a fork of the CLI: it would keep everything the CLI
    imported), detached into its own session, stdio on /dev/null."""
    os.makedirs(run_root, mode=0o700, exist_ok=True)
    pkg = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    code = f"import sys; sys.path.insert(0, {pkg!r}); from kobako.engine.monitor import serve; serve()"
    env = {"KOBAKO_ROOT": data_root, "KOBAKO_RUN": run_root, "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            null = os.open("/dev/null", os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            os.closerange(3, 1024)
            os.chdir("/")
            # argv[0] names it in ps; Python then finds its standard library by its built-in prefix
            os.execve(sys.executable, ["kobako-monitor", "-I", "-S", "-c", code], env)
        finally:
            os._exit(127)
    os.waitpid(pid, 0)


def request(sock: socket.socket, obj: dict, timeout: float | None = 30.0, fd: int = -1) -> dict:
    """One request, one reply line. Bytes that came after the reply (an attach stream's first
    frames) are kept in the reply under "_rest". `fd` goes with the request (SCM_RIGHTS)."""
    sock.settimeout(timeout)
    data = (jsonfast.dumps(obj) + "\n").encode()
    if fd >= 0:
        sent = sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])
        data = data[sent:]
    sock.sendall(data)
    buf = b""
    while b"\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise OSError("the container monitor closed the connection")
        buf += chunk
    line, rest = buf.split(b"\n", 1)
    reply = jsonfast.loads(line)
    if rest:
        reply["_rest"] = rest
    return reply
