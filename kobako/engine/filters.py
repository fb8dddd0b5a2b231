"""List filters as dockerd takes them: `?filters={"name": ["x"], "label": ["k=v"]}` on the
API (the older `{"name": {"x": true}}` shape too), `--filter name=x` on the CLI. One parser,
so a bad filter gets the same answer from both front ends: 400 / exit 125 with dockerd's
words, and nothing listed or removed."""

from __future__ import annotations

from kobako import errors


class FilterError(errors.InvalidArgument):
    pass


Filters = dict[str, list[str]]


def from_json(text: str | None, allowed: tuple[str, ...]) -> Filters:
    """The API's `filters` query parameter."""
    if not text:
        return {}
    import json
    try:
        raw = json.loads(text)
    except ValueError as e:
        raise FilterError(f"invalid filter: {e}") from None
    if not isinstance(raw, dict):
        raise FilterError("invalid filter: expected a JSON object of filter names to lists of values")
    out: Filters = {}
    for k, v in raw.items():
        if isinstance(v, dict):  # API < 1.22: {"dangling": {"true": true}}
            vals = [x for x, on in v.items() if on]
        elif isinstance(v, list) and all(isinstance(x, str) for x in v):
            vals = list(v)
        elif isinstance(v, str):
            vals = [v]
        else:
            raise FilterError(f"invalid filter '{k}': values must be a list of strings")
        out[k] = vals
    check(out, allowed)
    return out


def from_args(items: list[str], allowed: tuple[str, ...]) -> Filters:
    """The CLI's repeated `--filter KEY=VALUE`."""
    out: Filters = {}
    for it in items:
        k, eq, v = it.partition("=")
        if not eq:
            raise FilterError(f"bad format of filter (expected name=value): {it}")
        out.setdefault(k, []).append(v)
    check(out, allowed)
    return out


def check(flt: Filters, allowed: tuple[str, ...]) -> None:
    for k in flt:
        if k not in allowed:
            raise FilterError(f"invalid filter '{k}' (this list takes {', '.join(allowed)})")


def boolean(flt: Filters, key: str) -> bool | None:
    """A true/false filter (dangling): None when absent."""
    vals = flt.get(key)
    if not vals:
        return None
    v = vals[-1].lower()
    if v not in ("true", "false", "1", "0"):
        raise FilterError(f"invalid filter '{key}={vals[-1]}': use true or false")
    return v in ("true", "1")


def labels_match(labels: dict, wanted: list[str]) -> bool:
    """`label=KEY` or `label=KEY=VALUE`: every one must hold (dockerd's MatchKVList)."""
    for spec in wanted:
        k, eq, v = spec.partition("=")
        if k not in labels or (eq and labels[k] != v):
            return False
    return True


def labels_pass(labels: dict, flt: Filters) -> bool:
    """A prune's `label` (every one holds) and `label!` (none holds) filters."""
    return labels_match(labels, flt.get("label") or []) and \
        not any(labels_match(labels, [x]) for x in flt.get("label!") or [])


def until(flt: Filters) -> float | None:
    """A prune's `until` filter (a timestamp, or a duration back from now) as a Unix time."""
    if not flt.get("until"):
        return None
    from kobako.engine.logs import parse_since
    v = flt["until"][-1]
    try:
        return parse_since(v)
    except ValueError:
        raise FilterError(f"invalid filter 'until={v}': a timestamp or a duration like 10m") from None


def path_match(pattern: str, name: str) -> bool:
    """Go's path.Match, which dockerd's `reference` filter uses: `*` and `?` do not cross '/'."""
    import re
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = pattern.find("]", i + 1)
            if j < 0:
                raise FilterError(f"invalid reference filter {pattern!r}: syntax error in pattern")
            body = pattern[i + 1:j]
            out.append("[" + ("^" + body[1:] if body.startswith("^") else body) + "]")
            i = j
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return re.fullmatch("".join(out), name) is not None
