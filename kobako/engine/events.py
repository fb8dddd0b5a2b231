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


FILTERS = ("type", "event", "container", "image", "label", "network", "volume", "scope")


def matches(x: dict, flt: dict[str, list[str]], since: float | None = None,
            until: float | None = None) -> bool:
    """An event as `docker events --filter` and /events?filters= select them: different keys
    AND, the values of one key OR; `event=health_status` takes every health_status: ..."""
    t = x.get("timeNano", x.get("time", 0) * 1_000_000_000) / 1e9
    if (since is not None and t < since) or (until is not None and t > until):
        return False
    actor = x.get("Actor") or {}
    attrs = actor.get("Attributes") or {}
    aid = actor.get("ID", "")
    for k, vals in flt.items():
        if k == "type":
            ok = x.get("Type") in vals
        elif k == "event":
            action = x.get("Action", "")
            ok = any(action == v or action.startswith(v + ":") for v in vals)
        elif k in ("container", "network", "volume"):
            ok = x.get("Type") == k and any(v in (attrs.get("name"), aid) or
                                            (len(v) >= 3 and aid.startswith(v)) for v in vals)
        elif k == "image":
            ok = any(v in (attrs.get("image"), aid, attrs.get("name")) for v in vals)
        elif k == "label":
            from kobako.engine.filters import labels_match
            ok = labels_match(attrs, vals)
        else:  # scope: every event of kobako's is local
            ok = "local" in vals
        if not ok:
            return False
    return True
