"""Dockerfile instructions applied to an image config without a build: `commit --change`,
`import --change`, and the API's `changes` on /commit and /images/create?fromSrc."""

from __future__ import annotations

import json

from kobako.image.store import ImageError


def _arg_list(ch: str, rest: str) -> list[str]:
    """CMD/ENTRYPOINT: a JSON array (exec form) or a string run by /bin/sh -c (shell form)."""
    if rest.startswith("["):
        try:
            v = json.loads(rest)
        except ValueError:
            raise ImageError(f"--change {ch!r}: not a JSON array") from None
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise ImageError(f"--change {ch!r}: expected a JSON array of strings")
        return v
    return ["/bin/sh", "-c", rest]


def apply(changes: list[str], base: dict) -> dict:
    """The container config `base` (Docker's image Config) with `changes` applied."""
    cfg = dict(base)
    if not isinstance(changes, list) or not all(isinstance(c, str) for c in changes):
        raise ImageError("changes: expected a list of Dockerfile instructions")
    for ch in changes:
        if not ch.strip():
            continue
        word, _, rest = ch.strip().partition(" ")
        word, rest = word.upper(), rest.strip()

        if word == "CMD":
            cfg["Cmd"] = _arg_list(ch, rest)
        elif word == "ENTRYPOINT":
            cfg["Entrypoint"] = _arg_list(ch, rest)
        elif word == "ENV":
            k, eq, v = rest.partition("=")
            if not eq:
                k, _, v = rest.partition(" ")
            env = [x for x in cfg.get("Env") or [] if not x.startswith(k.strip() + "=")]
            cfg["Env"] = env + [f"{k.strip()}={v.strip()}"]
        elif word == "WORKDIR":
            cfg["WorkingDir"] = rest
        elif word == "USER":
            cfg["User"] = rest
        elif word == "EXPOSE":
            ports = dict(cfg.get("ExposedPorts") or {})
            for p in rest.split():
                ports[p if "/" in p else p + "/tcp"] = {}
            cfg["ExposedPorts"] = ports
        elif word == "LABEL":
            k, _, v = rest.partition("=")
            cfg["Labels"] = {**(cfg.get("Labels") or {}), k.strip(): v.strip().strip('"')}
        elif word == "VOLUME":
            vols = dict(cfg.get("Volumes") or {})
            for v in (_arg_list(ch, rest) if rest.startswith("[") else rest.split()):
                vols[v] = {}
            cfg["Volumes"] = vols
        elif word == "STOPSIGNAL":
            cfg["StopSignal"] = rest
        else:
            raise ImageError(f"--change {ch!r}: {word} is not supported (CMD, ENTRYPOINT, ENV, EXPOSE, "
                             "LABEL, STOPSIGNAL, USER, VOLUME, WORKDIR)")
    return cfg
