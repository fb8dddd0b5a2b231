"""The engine's event log: what `kobako events` (and the Docker API's /events) reports.

Daemonless, so there is no one to ask: every command that changes something appends one
JSON line to <data root>/events.log (O_APPEND: concurrent writers do not interleave
lines this small), in Docker's shape. The file is cut in half when it passes 4 MB.
"""

from __future__ import annotations

import os
import time

from kobako.runtime import jsonfast

MAX = 4 << 20


def path(root: str) -> str:
    return os.path.join(root, "events.log")


def emit(root: str, typ: str, action: str, actor_id: str, attrs: dict | None = None) -> None:
    t = time.time_ns()
    ev = {"Type": typ, "Action": action, "Actor": {"ID": actor_id, "Attributes": attrs or {}},
          "scope": "local", "time": t // 1_000_000_000, "timeNano": t}
    if typ == "container":  # the older fields docker still sends
        ev.update(status=action, id=actor_id)
        if attrs and "image" in attrs:
            ev["from"] = attrs["image"]
    line = (jsonfast.dumps(ev) + "\n").encode()
    p = path(root)
    try:
        fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        return  # events are a report, never a reason to fail the command
    try:
        os.write(fd, line)
        if os.fstat(fd).st_size > MAX:
            _trim(p)
    except OSError:
        pass
    finally:
        os.close(fd)


def _trim(p: str) -> None:
    """Keep the newer half (rewritten atomically; a writer racing this may lose one line)."""
    try:
        with open(p, "rb") as f:
            data = f.read()
        keep = data[len(data) // 2:]
        keep = keep[keep.find(b"\n") + 1:]
        tmp = f"{p}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(keep)
        os.rename(tmp, p)
    except OSError:
        pass
