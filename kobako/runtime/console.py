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
