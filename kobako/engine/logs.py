"""Reading a container's json-file log (written by the monitor): all of it, the last N
lines, since a time, and following it while the container runs."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator


def files(cdir: str, cid: str) -> list[str]:
    """Oldest first: <id>-json.log.2, .1 (or .2.gz, .1.gz when compressed), then the live file."""
    name = f"{cid}-json.log"
    try:
        here = os.listdir(cdir)
    except OSError:
        return []
    rotated = sorted((f for f in here if f.startswith(name + ".") and f[len(name) + 1:].removesuffix(".gz")
                      .isdigit()), key=lambda f: -int(f[len(name) + 1:].removesuffix(".gz")))
    return [os.path.join(cdir, f) for f in rotated + ([name] if name in here else [])]


def parse_since(s: str) -> float:
    """RFC 3339 ('2026-11-23T04:00:00Z'), a Unix time, or a duration back from now ('10m', '1h30m')."""
    s = s.strip()
    try:
        return float(s)
    except ValueError:
        pass
    if s and s[-1] in "smhd" and s[0].isdigit():
        total, num = 0.0, ""
        for ch in s:
            if ch.isdigit() or ch == ".":
                num += ch
            elif ch in "smhd" and num:
                total += float(num) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[ch]
                num = ""
            else:
                raise ValueError(f"invalid duration {s!r}")
        return time.time() - total
    return parse_time(s)


def parse_time(s: str) -> float:
    import calendar
    base = s[:19]
    t = calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S"))
    frac = s[19:].rstrip("Z")
    if frac.startswith("."):
        digits = "".join(ch for ch in frac[1:] if ch.isdigit())
        if digits:
            t += float("0." + digits)
    return t


def parse_tail(s: str | None) -> int | None:
    """--tail / ?tail=: a count of lines, or all (None)."""
    if s in (None, "", "all"):
        return None
    try:
        n = int(s)
    except ValueError:
        from kobako import errors
        raise errors.InvalidArgument(f"invalid tail {s!r}: a number of lines or 'all'") from None
    return max(n, 0)


def parse_bound(s: str | None, what: str) -> float | None:
    """?since= / ?until= / --since / --until: a Unix time (seconds[.nanoseconds]), an RFC 3339
    time or a duration back from now; None when not given (0 means no bound, as dockerd's)."""
    if s in (None, ""):
        return None
    try:
        t = parse_since(s)
    except ValueError:
        from kobako import errors
        raise errors.InvalidArgument(f"invalid {what} {s!r}: a Unix time, an RFC 3339 time or a "
                                     "duration such as 10m") from None
    return t or None


def select(cdir: str, cid: str, streams: tuple[str, ...] = ("stdout", "stderr"), since: float | None = None,
           until: float | None = None, tail: int | None = None) -> list[dict]:
    """The entries of a container's log on `streams`, from `since` to `until` (inclusive),
    the last `tail` of them."""
    out = []
    for ent in entries(cdir, cid):
        if (ent.get("stream") or "stdout") not in streams:
            continue
        if since is not None or until is not None:
            try:
                t = parse_time(ent.get("time") or "")
            except ValueError:
                continue
            if since is not None and t < since or until is not None and t > until:
                continue
        out.append(ent)
    if tail is not None:
        out = out[-tail:] if tail else []
    return out


def entries(cdir: str, cid: str) -> Iterator[dict]:
    for p in files(cdir, cid):
        try:
            if p.endswith(".gz"):
                import gzip
                opener = gzip.open
            else:
                opener = open
            with opener(p, "rb") as f:
                for line in f:
                    try:
                        yield json.loads(line)
                    except ValueError:
                        continue
        except FileNotFoundError:
            continue


class Tail:
    """New lines appended to a json-file log after `offset`, taken without waiting: poll()
    returns what is there now. A rotation (the file got shorter or replaced) starts over at
    the new file's beginning. The API server polls one per followed log from its event loop,
    so a quiet container's follower holds no thread."""

    def __init__(self, path: str, offset: int) -> None:
        self.path, self.offset, self.buf, self.ino = path, offset, b"", None

    def poll(self) -> list[dict]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return []
        if self.ino is not None and (st.st_ino != self.ino or st.st_size < self.offset):
            self.offset, self.buf = 0, b""
        self.ino = st.st_ino
        if st.st_size <= self.offset:
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        self.offset += len(data)
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out


def follow(path: str, offset: int, running) -> Iterator[dict]:
    """New lines appended after `offset` until `running()` is false and the file is drained."""
    tail = Tail(path, offset)
    while True:
        got = tail.poll()
        if got:
            yield from got
            continue
        if not running():
            return
        time.sleep(0.1)
