"""Runtime logging: stderr for people, --log FILE (text or json) for the caller.

containerd and podman read the last JSON `error` line of --log when a call fails,
so errors always go there; debug lines (the step trace) only with --debug.
"""

from __future__ import annotations

import os
import time

from kobako.runtime import jsonfast

_T0 = time.perf_counter()


class Log:
    def __init__(self, path: str | None = None, fmt: str = "text", debug: bool = False) -> None:
        self.debug_on = debug
        self.fmt = fmt
        self.fd = -1
        if path:
            try:
                self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError:
                self.fd = -1

    def _write(self, level: str, msg: str) -> None:
        if self.fd >= 0:
            t = time.time()
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e9):09d}Z"
            if self.fmt == "json":
                line = jsonfast.dumps({"level": level, "msg": msg, "time": stamp})
            else:
                line = f'time="{stamp}" level={level} msg={jsonfast.dumps(msg)}'
            try:
                os.write(self.fd, (line + "\n").encode())
            except OSError:
                pass
        # Without --log, errors go to stderr; with it, runc writes there too only
        # for errors, which callers relay. Debug goes to stderr when no file is set.
        if level == "error" or (self.fd < 0 and level in ("debug", "warning")):
            try:
                os.write(2, f"kobako-runtime: {'' if level == 'error' else level + ': '}{msg}\n".encode())
            except OSError:
                pass

    def error(self, msg: str) -> None:
        self._write("error", msg)

    def warning(self, msg: str) -> None:
        self._write("warning", msg)

    def debug(self, msg: str) -> None:
        if self.debug_on:
            self._write("debug", f"+{(time.perf_counter() - _T0) * 1000:.1f}ms {msg}")


NULL = Log()
