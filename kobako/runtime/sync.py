"""The parent/child channel: two pipes carrying one-line messages "KIND payload".

Both ends are close-on-exec, so when the container's program is exec'd the
parent reads EOF: that is how `run` learns the exec happened.
"""

from __future__ import annotations

import os


class Channel:
    def __init__(self, rfd: int, wfd: int) -> None:
        self.rfd, self.wfd = rfd, wfd
        self.buf = b""

    @staticmethod
    def pair() -> tuple[Channel, Channel]:
        """(parent end, child end)."""
        r1, w1 = os.pipe()  # parent -> child
        r2, w2 = os.pipe()  # child -> parent
        return Channel(r2, w1), Channel(r1, w2)

    def send(self, kind: str, payload: str = "") -> None:
        data = f"{kind} {payload}\n".encode()
        while data:
            data = data[os.write(self.wfd, data):]

    def recv(self) -> tuple[str, str]:
        """Next message; ("EOF", "") once the other side is gone."""
        while b"\n" not in self.buf:
            chunk = os.read(self.rfd, 65536)
            if not chunk:
                return "EOF", ""
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        kind, _, payload = line.decode().partition(" ")
        return kind, payload

    def fail(self, msg: str, code: int = 1) -> None:
        """A forked child's last word: send ERR and exit, whatever the pipe does."""
        die(self.wfd, msg, code)

    def close(self) -> None:
        for fd in (self.rfd, self.wfd):
            try:
                os.close(fd)
            except OSError:
                pass


def die(fd: int, msg: str, code: int = 1) -> None:
    """Write "ERR msg" to fd (a channel or the socket `start` waits on) and _exit: a
    child forked from the runtime must never fall back into the parent's code."""
    try:
        os.write(fd, f"ERR {msg}\n".encode())
    except OSError:
        pass
    os._exit(code)
