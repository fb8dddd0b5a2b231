"""`kobako attach` and `start -ai`: a terminal (or pipes) joined to a detached container
through the monitor, which holds its stdio. Ctrl-P Ctrl-Q detaches and leaves it running."""

from __future__ import annotations

import contextlib
import os
import select
import sys

from kobako.engine.lifecycle import Engine
from kobako.engine.records import ContainerConflict, ContainerError
from kobako.engine.stdio import DetachScanner, parse_detach_keys


def cmd(e: Engine, args) -> int:
    rec = e.containers.resolve(args.args[0])
    if e.state(rec) != "running":
        raise ContainerConflict(f"cannot attach to container {rec['name']}: it is not running")
    return attach(e, rec, stdin=not args.no_stdin, keys=parse_detach_keys(args.detach_keys),
                  sig_proxy=args.sig_proxy)


def attach_started(e: Engine, rec: dict, stdin: bool, sig_proxy: bool = True) -> int:
    """start -a[i]: the start request's own connection becomes the stream, so no output is
    missed, however short the program."""
    r, s = e.start(rec, attach=True, stdin=stdin)
    return attach(e, rec, stdin=stdin, keys=parse_detach_keys(None), conn=(r, s), sig_proxy=sig_proxy)


# what docker's ForwardAllSignals passes on; job control and terminal signals stay ours
PROXIED = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGALRM")
ENDING = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT")  # these end docker's CLI when not passed on


def _proxy_signals(e: Engine, rec: dict, forward: bool = True) -> dict:
    """--sig-proxy (docker's default): a signal this process gets goes to the container's
    init instead; without it the ones that do not end docker's CLI are ignored, as docker's
    CLI ignores them. Returns the handlers it replaced."""
    import signal

    def send(signum, frame) -> None:
        from kobako.errors import KobakoError
        try:
            e.kill(rec, str(int(signum)), user_stop=False)
        except KobakoError:
            pass  # it exited meanwhile: its end ends the attach too

    return {s: signal.signal(getattr(signal, s), send if forward else signal.SIG_IGN)
            for s in PROXIED if forward or s not in ENDING}


@contextlib.contextmanager
def signals_proxied(e: Engine, rec: dict, on: bool):
    """While in the block: --sig-proxy `on` or off (see _proxy_signals)."""
    replaced = _proxy_signals(e, rec, on)
    try:
        yield
    finally:
        import signal
        for name, old in replaced.items():
            signal.signal(getattr(signal, name), old)


def attach(e: Engine, rec: dict, stdin: bool, keys: bytes, conn=None, sig_proxy: bool = False) -> int:
    from kobako.engine import monitor
    if conn is not None:
        r, s = conn
    else:
        s = monitor.connect(e.root, e.run_dir, spawn=False)
        r = monitor.request(s, {"op": "attach", "id": rec["id"], "stdin": stdin}, timeout=10)
    if not r.get("ok"):
        s.close()
        raise ContainerError(r.get("error") or "cannot attach")
    tty = bool(r.get("tty"))
    first = r.get("_rest", b"")  # output that came with the reply
    s.settimeout(None)
    term = sys.stdin.isatty() and tty
    saved = None
    if term:
        import termios
        import tty as ttymod
        saved = termios.tcgetattr(0)
        ttymod.setraw(0)
        _resize(e, rec)
    detached = False
    # with a tty, ^C reaches it as a byte; docker proxies signals only without one
    replaced = _proxy_signals(e, rec, sig_proxy and not tty)
    try:
        try:
            detached = _relay(s, stdin, tty, keys if term else b"", first)
        except (ConnectionResetError, BrokenPipeError):
            pass  # the container ended while we were still sending it input
    finally:
        import signal
        for name, old in replaced.items():
            signal.signal(getattr(signal, name), old)
        if saved is not None:
            import termios
            termios.tcsetattr(0, termios.TCSADRAIN, saved)
        s.close()
    if detached:
        sys.stderr.write("\nread escape sequence\n")
        return 0
    return e.wait(e.containers.get(rec["id"]) or rec)


def _resize(e: Engine, rec: dict) -> None:
    from kobako.engine import monitor
    try:
        size = os.get_terminal_size(0)
        s = monitor.connect(e.root, e.run_dir, spawn=False)
        try:
            monitor.request(s, {"op": "resize", "id": rec["id"], "rows": size.lines, "cols": size.columns},
                            timeout=5)
        finally:
            s.close()
    except OSError:
        pass


def _frames(buf: bytes) -> bytes:
    """Write out every whole frame (8-byte header: stream, 0, 0, 0, big-endian length); return
    the incomplete rest."""
    from kobako.engine.stdio import STDERR, split_frames
    frames, rest = split_frames(buf)
    for stream, data in frames:
        out = sys.stdout.buffer if stream != STDERR else sys.stderr.buffer
        out.write(data)
        out.flush()
    return rest


def _relay(s, stdin: bool, tty: bool, keys: bytes, first: bytes = b"") -> bool:
    """Copy until the monitor closes the stream; True if the user detached."""
    fds = [s.fileno()] + ([0] if stdin else [])
    buf = b""
    if first and tty:
        sys.stdout.buffer.write(first)
        sys.stdout.buffer.flush()
    elif first:
        buf = _frames(first)
    scanner = DetachScanner(keys)
    out = sys.stdout.buffer
    while True:
        ready, _, _ = select.select(fds, [], [])
        if s.fileno() in ready:
            data = s.recv(65536)
            if not data:
                return False
            if tty:
                out.write(data)
                out.flush()
            else:
                buf = _frames(buf + data)
        if 0 in ready:
            data = os.read(0, 4096)
            if not data:
                fds.remove(0)  # our stdin ended: the container's does too; its output goes on
                if not tty:
                    import socket
                    s.shutdown(socket.SHUT_WR)
                continue
            data, detached = scanner.feed(data)
            if data:
                s.sendall(data)
            if detached:
                return True
