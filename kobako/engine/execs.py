"""Exec sessions: a further program in a running container (`docker exec`), for both front
ends.

The CLI runs the runtime in-process, the program on the CLI's own stdio (or a pty the CLI
proxies, for -t). The API server cannot lend its stdio: it spawns the runtime
(`kobako-runtime exec`, as containerd's shim runs `runc exec`) with pipes, or a pty whose
master comes back over a console socket. That runtime waits for the program, so its exit
status is the program's; its pid file, written once the program was exec'd, tells a program
that exited 1 from one that never started.
"""

from __future__ import annotations

import os
import sys

from kobako import errors
from kobako.engine.records import ContainerConflict


class ExecConfig:
    """What to run: the meaning of Docker's exec create body and of `kobako exec`'s flags.
    `env` entries are NAME=VALUE (a front end fills in values it takes from elsewhere)."""

    def __init__(self, cmd: list[str], env: list[str] | None = None, user: str = "", workdir: str = "",
                 tty: bool = False, stdin: bool = False, privileged: bool = False,
                 detach_keys: str | None = None) -> None:
        if not cmd or not all(isinstance(c, str) for c in cmd):
            raise errors.InvalidArgument("No exec command specified")
        if workdir and not workdir.startswith("/"):
            raise errors.InvalidArgument(f"the working directory {workdir!r} is not an absolute path")
        for v in env or []:
            if not isinstance(v, str) or not v.partition("=")[0]:
                raise errors.InvalidArgument(f"invalid environment variable {v!r}: NAME=VALUE")
        if detach_keys:
            from kobako.engine.stdio import parse_detach_keys
            parse_detach_keys(detach_keys)  # refused now, not when the client types them
        self.cmd, self.env, self.user, self.workdir = list(cmd), list(env or []), user, workdir
        self.tty, self.stdin, self.privileged, self.detach_keys = tty, stdin, privileged, detach_keys


def check_running(e, rec: dict) -> None:
    st = e.state(rec)
    if st == "paused":
        raise ContainerConflict(f"Container {rec['id']} is paused, unpause the container before exec")
    if st != "running":
        raise ContainerConflict(f"Container {rec['id']} is not running")


def runtime_flags(e, rec: dict, cfg: ExecConfig) -> list[str]:
    """`kobako-runtime exec` flags for cfg (the user looked up in the container's image)."""
    flags: list[str] = []
    for env in cfg.env:
        flags += ["--env", env]
    if cfg.workdir:
        flags += ["--cwd", cfg.workdir]
    if cfg.user:
        uid, gid, _ = e.resolve_user(rec["chainIds"], cfg.user)
        flags += ["--user", f"{uid}:{gid}"]
    if cfg.privileged:
        flags += ["--cap", "CAP_SYS_ADMIN"]
    return flags


# -- the CLI: the program on our own stdio ------------------------------------------------------

def run_here(e, rec: dict, cfg: ExecConfig, detach: bool = False) -> int:
    """The program on this process's stdio; its exit code (0 at once with `detach`)."""
    check_running(e, rec)
    flags = ["exec", *runtime_flags(e, rec, cfg)] + (["--detach"] if detach else [])
    from kobako.engine.lifecycle import StartError
    from kobako.runtime.errors import RuntimeFailure
    try:
        if cfg.tty and not detach:
            return _tty_here(e, rec, flags, cfg.cmd)
        return e.runtime(flags + [rec["id"], *cfg.cmd])
    except RuntimeFailure as ex:  # the program did not start: 127 not found, 126 not executable
        raise StartError(str(ex)) from None


def _tty_here(e, rec: dict, flags: list[str], cmd: list[str]) -> int:
    """exec -t: the runtime sends the pty master to our console socket; we proxy it."""
    import shutil
    import socket
    import tempfile

    from kobako.runtime import console
    from kobako.runtime.commands.run import forward_signals, reap
    d = tempfile.mkdtemp(prefix="kobako-exec-", dir=e.run_dir if os.path.isdir(e.run_dir) else None)
    path = os.path.join(d, "console.sock")
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        lsock.bind(path)
        lsock.listen(1)
        pidfile = os.path.join(d, "pid")
        e.runtime(flags + ["--tty", "--detach", "--console-socket", path, "--pid-file", pidfile,
                           rec["id"], *cmd])
        conn, _ = lsock.accept()
        master = console.receive_master(conn)
        with open(pidfile) as f:
            pid = int(f.read())
        forward_signals(pid)
        return console.proxy(master, pid, reap)
    finally:
        lsock.close()
        shutil.rmtree(d, ignore_errors=True)


# -- the API: the program on pipes or a pty it relays --------------------------------------------

class Process:
    """A spawned exec. `outputs` are (fd, stream) pairs to read until EOF (one, the pty master,
    for a tty: its stdout and stderr are one stream); `stdin` is the fd to write the client's
    input to, or -1. wait() gives the exit code; a program that never started gets dockerd's
    126 and its reason in `error`."""

    def __init__(self, proc, workdir: str, stdin: int, outputs: list[tuple[int, int]], master: int) -> None:
        self.proc, self.workdir = proc, workdir
        self.stdin, self.outputs, self.master = stdin, outputs, master
        self.pid = 0
        self.error = ""

    def started(self) -> int:
        """The program's PID once the runtime wrote it (0 until then, or if it never starts)."""
        if not self.pid:
            try:
                with open(os.path.join(self.workdir, "pid")) as f:
                    self.pid = int(f.read() or 0)
            except (OSError, ValueError):
                pass
        return self.pid

    def wait(self) -> int:
        import shutil
        code = self.proc.wait()
        if not self.started():
            self.error = _last_error(os.path.join(self.workdir, "runtime.log")) or "the exec did not start"
            code = 126  # dockerd's exit code for an exec that could not start, whatever the cause
        shutil.rmtree(self.workdir, ignore_errors=True)
        return code

    def resize(self, rows: int, cols: int) -> None:
        if self.master < 0:
            return
        if not (0 < rows < 65536 and 0 < cols < 65536):
            raise errors.InvalidArgument("height and width must be 1..65535")
        import fcntl
        import struct
        import termios
        try:
            fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        except OSError:
            pass  # the program has gone: nothing to resize

    def close(self) -> None:
        """Our ends of its stdio (after wait(); a detached client's session keeps them till then)."""
        for fd in {self.stdin, self.master, *(fd for fd, _ in self.outputs)}:
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.stdin = self.master = -1
        self.outputs = []


def spawn(e, rec: dict, cfg: ExecConfig, attach: bool = True) -> Process:
    """Start cfg's program in the container under its own runtime process. Without `attach`
    (a detached exec) its stdio is /dev/null."""
    import subprocess
    import tempfile
    check_running(e, rec)
    flags = runtime_flags(e, rec, cfg)
    os.makedirs(e.run_dir, mode=0o700, exist_ok=True)
    d = tempfile.mkdtemp(prefix="exec-", dir=e.run_dir)
    pkg = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    code = f"import sys; sys.path.insert(0, {pkg!r}); from kobako.runtime.main import entry; entry()"
    # --log: the runtime's own error (a program that cannot start) apart from the program's stderr
    argv = [sys.executable, "-I", "-S", "-c", code, "--root", e.runtime_root, "--log",
            os.path.join(d, "runtime.log"), "--log-format", "json", "exec", *flags,
            "--pid-file", os.path.join(d, "pid")]
    tty = cfg.tty and attach
    lsock = None
    pipes: list[int] = []
    try:
        if tty:
            import socket
            lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            lsock.bind(os.path.join(d, "console.sock"))
            lsock.listen(1)
            argv += ["--tty", "--console-socket", os.path.join(d, "console.sock")]
            stdio: tuple = (subprocess.DEVNULL, subprocess.DEVNULL)
        elif attach:
            out_r, out_w = os.pipe2(os.O_CLOEXEC)
            err_r, err_w = os.pipe2(os.O_CLOEXEC)
            pipes += [out_r, out_w, err_r, err_w]
            stdio = (out_w, err_w)
        else:
            stdio = (subprocess.DEVNULL, subprocess.DEVNULL)
        in_r = in_w = -1
        if attach and cfg.stdin and not tty:
            in_r, in_w = os.pipe2(os.O_CLOEXEC)
            pipes += [in_r, in_w]
        proc = subprocess.Popen(argv + [rec["id"], *cfg.cmd], stdin=in_r if in_r >= 0 else subprocess.DEVNULL,
                                stdout=stdio[0], stderr=stdio[1], start_new_session=True)
        if not tty and attach:
            for fd in (out_w, err_w) + ((in_r,) if in_r >= 0 else ()):
                os.close(fd)
                pipes.remove(fd)
            return Process(proc, d, in_w, [(out_r, 1), (err_r, 2)], -1)
        if not tty:
            return Process(proc, d, -1, [], -1)
        master = _receive_master(lsock, proc)
        if master < 0:  # the runtime failed before the pty: wait() gives its reason
            return Process(proc, d, -1, [], -1)
        return Process(proc, d, master if cfg.stdin else -1, [(master, 1)], master)
    except BaseException:
        for fd in pipes:
            os.close(fd)
        import shutil
        shutil.rmtree(d, ignore_errors=True)
        raise
    finally:
        if lsock is not None:
            lsock.close()


def _last_error(log: str) -> str:
    from kobako.runtime import jsonfast
    msg = ""
    try:
        with open(log, "rb") as f:
            for line in f:
                try:
                    ent = jsonfast.loads(line)
                except ValueError:
                    continue
                if ent.get("level") == "error":
                    msg = str(ent.get("msg") or "")
    except OSError:
        pass
    return msg


def _receive_master(lsock, proc) -> int:
    """The pty master the runtime's program sends over the console socket; -1 if the runtime
    exits first (it could not start the program)."""
    from kobako.runtime import console
    lsock.settimeout(0.1)
    while True:
        try:
            conn, _ = lsock.accept()
            break
        except TimeoutError:
            if proc.poll() is not None:
                return -1
    conn.settimeout(30)
    return console.receive_master(conn)
