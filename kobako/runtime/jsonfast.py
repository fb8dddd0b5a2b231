"""JSON through the C accelerator `_json` alone.

`import json` costs ~12 ms here because json.decoder imports `re` (and with it
enum, functools, collections). The runtime's hot path (run, create, start,
delete) reads config.json and writes state, and its whole budget is ~20 ms, so
it talks to `_json` directly. Error paths may import `json` for its messages.
"""

from __future__ import annotations

import _json

_WS = " \t\n\r"


class _Ctx:
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    memo: dict = {}

    @staticmethod
    def parse_constant(name: str) -> float:
        return float(name.replace("Infinity", "inf"))


_scan = _json.make_scanner(_Ctx())
_encode = _json.make_encoder(None, None, _json.encode_basestring_ascii, None, ":", ",",
                             False, False, True)


def loads(s: str | bytes):
    if isinstance(s, bytes):
        s = s.decode("utf-8-sig" if s[:3] == b"\xef\xbb\xbf" else "utf-8")
    i, n = 0, len(s)
    while i < n and s[i] in _WS:
        i += 1
    try:
        obj, end = _scan(s, i)
    except StopIteration as e:
        raise ValueError(f"invalid JSON at character {e.value}") from None
    except SystemError:  # the C scanner's error path wants json.decoder, never imported here
        raise ValueError("invalid JSON") from None
    while end < n and s[end] in _WS:
        end += 1
    if end != n:
        raise ValueError(f"invalid JSON: extra data at character {end}")
    return obj


def dumps(obj) -> str:
    return "".join(_encode(obj, 0))


def dumps_pretty(obj) -> str:
    import json

    return json.dumps(obj, indent=2)
