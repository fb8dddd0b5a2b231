"""The configuration file: engine defaults in TOML (docs/configuration.md lists every key).

Files, later ones overriding earlier ones key by key:

    /etc/kobako/kobako.toml                                   the system's
    $XDG_CONFIG_HOME/kobako/kobako.toml (~/.config/...)       a user's own (not read by root)

or only the file that KOBAKO_CONFIG_FILE names. Environment variables (KOBAKO_ROOT,
KOBAKO_RUN, HTTPS_PROXY, ...) override the files, global flags (--root) override those,
and a command's own flags (--dns, --ulimit, --log-driver) override everything.

Start-up cost is a measured goal: with no file this costs a stat per candidate; with one,
the parsed, checked result is cached as JSON in the run root (keyed by each file's path,
device, inode, size and mtime), so `tomllib` (~30 ms: re, datetime, typing) is imported
only when a file changed. Unknown keys are warned about when the cache is (re)built, so
once, not on every command. A malformed file is an error naming the file, the line and
the key, raised before anything is made.
"""

from __future__ import annotations

import _json
import os
import sys

from kobako import errors, paths

SYSTEM_FILE = "/etc/kobako/kobako.toml"
CACHE_NAME = "config-cache.json"
_CACHE_VERSION = 1

# section -> key -> kind (checked by _check below); the docs list each with its meaning
SCHEMA: dict[str, dict[str, str]] = {
    "storage": {"root": "path", "run_root": "path"},
    "network": {"default_address_pools": "pools"},
    "dns": {"servers": "strings", "search": "strings", "options": "strings"},
    "log": {"driver": "string", "options": "string map"},
    "containers": {"default_ulimits": "ulimits", "default_capabilities": "strings",
                   "seccomp_profile": "string"},
    "registries": {"insecure": "strings", "mirrors": "mirrors", "blocked": "strings", "search": "strings"},
    "proxy": {"http_proxy": "string", "https_proxy": "string", "no_proxy": "string"},
}
EXPECTED = {
    "path": "expected an absolute path (a string starting with /)",
    "string": "expected a string",
    "strings": "expected a list of strings",
    "string map": "expected a table of strings",
    "pools": "expected a list of {base, size} tables",
    "ulimits": 'expected a list of "NAME=SOFT[:HARD]" strings',
    "mirrors": 'expected a table of registry = ["URL", ...]',
}
PROXY_VARS = {"http_proxy": ("HTTP_PROXY", "http_proxy"), "https_proxy": ("HTTPS_PROXY", "https_proxy"),
              "no_proxy": ("NO_PROXY", "no_proxy")}


class ConfigError(errors.InvalidArgument):
    """A configuration file that cannot be used: unreadable, not TOML, or a key of the wrong type."""


class Config:
    """The merged settings (`section -> key -> value`, only what the files set) and the files
    they came from, in order."""

    __slots__ = ("values", "files", "origins")

    def __init__(self, values: dict[str, dict], files: list[str],
                 origins: dict[str, str] | None = None) -> None:
        self.values, self.files = values, files
        self.origins = origins or {}  # "section.key" -> the file whose value is in force

    def get(self, section: str, key: str, default=None):
        return self.values.get(section, {}).get(key, default)

    def error(self, section: str, key: str, problem: str) -> ConfigError:
        """A value that passed the type check but not its consumer's (a capability that does not
        exist, a profile file that is missing), named as the file's error."""
        where = self.origins.get(f"{section}.{key}") or "configuration"
        return ConfigError(f"{where}: [{section}] {key}: {problem}")


_loaded: Config | None = None


def get() -> Config:
    """The configuration of this process, read once (the CLI reads it before anything else)."""
    global _loaded
    if _loaded is None:
        _loaded = load(candidates())
    return _loaded


def reset() -> None:
    """Forget what was read (tests; a long-lived process that wants a changed file)."""
    global _loaded
    _loaded = None


def user_file() -> str:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return os.path.join(base, "kobako", "kobako.toml")


def candidates() -> list[str]:
    """The files to read, in order. Root reads only the system file (as podman and dockerd
    do); a user (also inside their rootless namespace, where they are uid 0) reads their own
    after it."""
    one = os.environ.get("KOBAKO_CONFIG_FILE")
    if one:
        return [os.path.abspath(os.path.expanduser(one))]
    return [SYSTEM_FILE, user_file()] if _is_user() else [SYSTEM_FILE]


def _is_user() -> bool:
    return os.geteuid() != 0 or bool(os.environ.get("KOBAKO_ROOTLESS_IDS"))


def load(files: list[str]) -> Config:
    """Read `files` (those that exist), through the cache when it matches them."""
    named = bool(os.environ.get("KOBAKO_CONFIG_FILE"))
    present: list[list] = []
    for p in files:
        try:
            st = os.stat(p)
        except FileNotFoundError:
            if named:
                raise ConfigError(f"{p}: no such file (named by KOBAKO_CONFIG_FILE)") from None
            continue
        except OSError as e:
            raise ConfigError(f"{p}: cannot read it: {e.strerror or e}") from None
        present.append([p, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns])
    if not present:
        return Config({}, [])
    cache = os.path.join(paths.builtin_run_root(), CACHE_NAME)
    hit = _read_cache(cache, present)
    if hit is not None:
        return hit
    cfg = parse_files([p[0] for p in present])
    _write_cache(cache, present, cfg)
    return cfg


def parse_files(files: list[str]) -> Config:
    """Parse and check each file, warn about unknown keys, merge key by key (a later file's
    value replaces an earlier one's whole: lists are not concatenated)."""
    import tomllib  # only here: ~30 ms of imports that a cache hit never pays

    merged: dict[str, dict] = {}
    origins: dict[str, str] = {}
    for p in files:
        try:
            with open(p, "rb") as f:
                text = f.read()
        except OSError as e:
            raise ConfigError(f"{p}: cannot read it: {e.strerror or e}") from None
        try:
            doc = tomllib.loads(text.decode("utf-8"))
        except UnicodeDecodeError:
            raise ConfigError(f"{p}: not UTF-8 text") from None
        except tomllib.TOMLDecodeError as e:
            # tomllib's message ends in "(at line L, column C)": say the line first, and show it
            msg = str(e)
            line = _line_of(msg)
            shown = text.decode("utf-8").splitlines()[line - 1].strip() if line else ""
            where = f"{p}:{line}" if line else p
            raise ConfigError(f"{where}: not valid TOML: {msg}" + (f": {shown}" if shown else "")) from None
        for section, table in doc.items():
            if section == "storage" and p == SYSTEM_FILE and _is_user():
                continue  # the system's store is root's: a user's stays under XDG unless their file says
            if section not in SCHEMA:
                warn(f'{p}: unknown section "{section}" (ignored)')
                continue
            if not isinstance(table, dict):
                raise ConfigError(f"{_at(p, text, section, None)}: [{section}] must be a table")
            for key, value in table.items():
                kind = SCHEMA[section].get(key)
                if kind is None:
                    warn(f'{p}: unknown key "{section}.{key}" (ignored)')
                    continue
                problem = _check(kind, value)
                if problem is not None:
                    raise ConfigError(f"{_at(p, text, section, key)}: [{section}] {key}: {problem}")
                merged.setdefault(section, {})[key] = value
                origins[f"{section}.{key}"] = p
    return Config(merged, list(files), origins)


def _line_of(msg: str) -> int:
    i = msg.rfind("(at line ")
    if i < 0:
        return 0
    digits = msg[i + 9:].split(",", 1)[0]
    return int(digits) if digits.isdigit() else 0


def _at(path: str, text: bytes, section: str, key: str | None) -> str:
    """`path:LINE` of the key's (or the section's) line, when a plain scan finds it."""
    current = ""
    for n, raw in enumerate(text.decode("utf-8").splitlines(), 1):
        ln = raw.strip()
        if ln.startswith("[") and not ln.startswith("[["):
            current = ln.strip("[] ").split("]", 1)[0].strip()
            if key is None and current == section:
                return f"{path}:{n}"
            continue
        if key is not None and current == section and ln.split("=", 1)[0].strip().strip('"') == key:
            return f"{path}:{n}"
        if key is not None and current == "" and ln.split("=", 1)[0].strip() == f"{section}.{key}":
            return f"{path}:{n}"
    return path


def _check(kind: str, v: object) -> str | None:
    """None when `v` is of `kind`, else what was expected."""
    ok: bool
    if kind == "path":
        ok = isinstance(v, str) and v.startswith("/")
    elif kind == "string":
        ok = isinstance(v, str)
    elif kind == "strings":
        ok = isinstance(v, list) and all(isinstance(x, str) and x for x in v)
    elif kind == "string map":
        ok = isinstance(v, dict) and all(isinstance(x, str) for x in v.values())
    elif kind == "pools":
        ok = isinstance(v, list) and all(isinstance(x, dict) and set(x) == {"base", "size"}
                                         and isinstance(x["base"], str) and isinstance(x["size"], int)
                                         for x in v)
    elif kind == "ulimits":
        ok = isinstance(v, list) and all(isinstance(x, str) and _ulimit_ok(x) for x in v)
    elif kind == "mirrors":
        ok = isinstance(v, dict) and all(isinstance(u, list) and all(isinstance(x, str) and x for x in u)
                                         for u in v.values())
    else:
        raise AssertionError(kind)
    return None if ok else EXPECTED[kind]


def _ulimit_ok(s: str) -> bool:
    name, eq, val = s.partition("=")
    soft, _, hard = val.partition(":")
    return bool(eq and name) and soft.lstrip("-").isdigit() and (not hard or hard.lstrip("-").isdigit())


def warn(msg: str) -> None:
    sys.stderr.write(f"kobako: warning: {msg}\n")


# -- the cache -------------------------------------------------------------------------------------
# Read with the C accelerator `_json` alone: `import json` costs ~12 ms (it imports re);
# kobako/runtime/jsonfast.py explains. Written with `json` (a miss pays for tomllib anyway).

class _Ctx:
    strict = True
    object_hook = object_pairs_hook = None
    parse_float, parse_int = float, int
    memo: dict = {}

    @staticmethod
    def parse_constant(name: str) -> float:
        return float(name)


def _read_cache(cache: str, present: list[list]) -> Config | None:
    try:
        with open(cache, encoding="utf-8") as f:
            doc, _ = _json.make_scanner(_Ctx())(f.read(), 0)
    except (OSError, ValueError, StopIteration, SystemError):
        return None
    if not isinstance(doc, dict) or doc.get("version") != _CACHE_VERSION or doc.get("files") != present:
        return None
    return Config(doc["values"], [p[0] for p in present], doc["origins"])


def _write_cache(cache: str, present: list[list], cfg: Config) -> None:
    import json

    try:
        os.makedirs(os.path.dirname(cache), mode=0o700, exist_ok=True)
        doc = {"version": _CACHE_VERSION, "files": present, "values": cfg.values, "origins": cfg.origins}
        paths.atomic_write(cache, json.dumps(doc).encode(), 0o600, durable=False)
    except OSError:
        pass  # a run root we cannot write (read-only, someone else's): parse each time


# -- applying what needs applying at start-up ------------------------------------------------------

def apply_proxy(cfg: Config) -> None:
    """[proxy] into the environment, for variables not set already (the environment wins).
    Every registry request reads HTTP(S)_PROXY/NO_PROXY from there."""
    for key, names in PROXY_VARS.items():
        value = cfg.get("proxy", key)
        if value and not any(n in os.environ for n in names):
            os.environ[names[0]] = value
