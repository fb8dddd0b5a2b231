"""The container's terminal: a pty from the container's own devpts, whose master
goes to the caller over --console-socket (SCM_RIGHTS), as runc does."""

from __future__ import annotations

import fcntl
import os
import socket

from kobako.linux import mount

TIOCSCTTY = 0x540E


def connect(path: str) -> int:
    """Connect in the runtime's mount namespace; the init inherits the fd."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
    except OSError as e:
        s.close()
        from kobako.runtime.errors import RuntimeFailure

        raise RuntimeFailure(f"cannot connect to console socket {path}: {e.strerror}") from None
    return s.detach()


def setup(sock_fd: int, steps) -> None:
    """Open a pty inside the container, send the master, make the slave our stdio.
    Runs after pivot_root: everything it uses is imported at the top."""
    master, slave = os.openpty()
    name = os.ttyname(slave)
    steps.made("openpty(3) /dev/ptmx", f"pty {name}")
    s = socket.socket(fileno=sock_fd)
    try:
        socket.send_fds(s, [name.encode()], [master])
    finally:
        s.close()
    os.close(master)
    steps.made("sendmsg(2) SCM_RIGHTS", "pty master sent over the console socket")
    try:  # /dev/console in the container is the pty too
        if not os.path.exists("/dev/console"):
            os.close(os.open("/dev/console", os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600))
        mount.mount(name, "/dev/console", None, mount.MS_BIND)
    except OSError:
        pass
    os.setsid()
    fcntl.ioctl(slave, TIOCSCTTY, 0)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    if slave > 2:
        os.close(slave)


def receive_master(sock) -> int:
    """Our end of the console socketpair: the pty master the init sent."""
    _, fds, _, _ = socket.recv_fds(sock, 4096, 1)
    sock.close()
    if not fds:
        from kobako.runtime.errors import RuntimeFailure

        raise RuntimeFailure("the container's init sent no pty")
    return fds[0]


# In-process callers (kobako's engine) may set this to see the container's pty output too:
# a foreground `kobako run -t` logs it in json-file format, as a detached container's is.
OUTPUT_TEE = None


def proxy(master: int, pid: int, wait) -> int:
    """`run` in a terminal: copy our stdin to the pty and the pty to our stdout until
    the container's side closes, with our terminal in raw mode meanwhile."""
    import select
    import termios
    import threading
    import tty

    saved = None
    if os.isatty(0):
        saved = termios.tcgetattr(0)
        tty.setraw(0)
        try:
            fcntl.ioctl(master, termios.TIOCSWINSZ, fcntl.ioctl(0, termios.TIOCGWINSZ, b"\0" * 8))
        except OSError:
            pass
    if saved is not None:  # a resized terminal resizes the container's pty
        import _signal

        def resize(signum, frame):
            try:
                fcntl.ioctl(master, termios.TIOCSWINSZ, fcntl.ioctl(0, termios.TIOCGWINSZ, b"\0" * 8))
            except OSError:
                pass

        _signal.signal(_signal.SIGWINCH, resize)
    code: list[int] = []
    waiter = threading.Thread(target=lambda: code.append(wait(pid)), daemon=True)
    waiter.start()
    try:
        fds = [master, 0]
        while master in fds:
            for fd in select.select(fds, [], [], 0.2)[0]:
                try:
                    data = os.read(fd, 65536)
                except OSError:  # EIO: every slave fd is closed
                    data = b""
                if fd == master:
                    if not data:
                        fds.remove(master)
                    else:
                        os.write(1, data)
                        if OUTPUT_TEE is not None:
                            try:
                                OUTPUT_TEE(data)
                            except OSError:  # a full disk stops the log, not the session
                                pass
                elif data:
                    os.write(master, data)
                else:
                    fds.remove(0)  # our stdin ended; keep reading the container's output
            if not waiter.is_alive() and master in fds and not select.select([master], [], [], 0)[0]:
                break
    finally:
        if saved is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)
        os.close(master)
    waiter.join()
    return code[0] if code else 1
