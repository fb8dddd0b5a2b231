"""Registry configuration: which registries may be reached without TLS checks, which
mirrors to try first for pulls, which are blocked, and where short names are looked up.

The [registries] section of the configuration file (kobako/config.py):

    [registries]
    insecure = ["myreg:5000", "10.0.0.0/8"]
    mirrors = { "docker.io" = ["http://127.0.0.1:5001", "https://mirror.example"] }
    blocked = ["evil.example.com"]
    search = ["quay.io"]

The older JSON file is still read when present, and its entries are added after the
TOML's: `$KOBAKO_REGISTRIES` if set, else /etc/kobako/registries.json:

    {"insecure": ["myreg:5000", "10.0.0.0/8"],
     "mirrors": {"docker.io": ["http://127.0.0.1:5001", "https://mirror.example"]}}

An insecure entry is a host:port, a bare host (any port) or a CIDR range, as in
Docker's daemon.json. Loopback (localhost, 127.0.0.0/8, ::1) is always insecure:
a registry on this machine is reached over plain HTTP, as Docker and podman do.
A missing file means defaults; a malformed one is an error naming the file.
"""

from __future__ import annotations

import ipaddress
import json
import os

DEFAULT_PATH = "/etc/kobako/registries.json"
# Names people use for Docker Hub; the config and the auth file key it as docker.io.
DOCKER_HUB_ALIASES = ("index.docker.io", "registry-1.docker.io", "registry.hub.docker.com",
                      "registry.docker.io")


def path() -> str:
    return os.environ.get("KOBAKO_REGISTRIES") or DEFAULT_PATH


def normalize(domain: str) -> str:
    """'https://index.docker.io/v1/' -> 'docker.io'; 'MyReg:5000/' -> 'myreg:5000'."""
    d = domain.strip()
    for scheme in ("https://", "http://"):
        if d.lower().startswith(scheme):
            d = d[len(scheme):]
    d = d.split("/", 1)[0].lower()
    return "docker.io" if d in DOCKER_HUB_ALIASES else d


def split_host(domain: str) -> tuple[str, str | None]:
    """'host:5000' -> ('host', '5000'); '[::1]:5000' -> ('::1', '5000'); '::1' -> ('::1', None)."""
    if domain.startswith("["):
        host, _, rest = domain[1:].partition("]")
        return host, rest[1:] if rest.startswith(":") else None
    if domain.count(":") == 1:
        host, port = domain.split(":")
        return host, port
    return domain, None


def _bad(where: str, msg: str) -> Exception:
    # Imported here: registry.py imports this module at its top.
    from kobako.image.registry import RegistryError
    return RegistryError(f"{where}: {msg}")


def config_file() -> str:
    """The file a user should edit to change the registry settings (named in hints)."""
    from kobako import config
    files = config.get().files
    return files[-1] if files else (os.environ.get("KOBAKO_CONFIG_FILE") or config.SYSTEM_FILE)


def load() -> dict:
    """{"insecure": [str], "mirrors": {domain: [url]}, "blocked": [domain], "search": [domain]}:
    the configuration file's [registries], then the JSON file's entries; defaults when neither
    says anything."""
    from kobako import config
    cfg = config.get()
    where = cfg.origins.get("registries.insecure") or cfg.origins.get("registries.mirrors") or "configuration"
    out = _checked(cfg.get("registries", "insecure") or [], cfg.get("registries", "mirrors") or {},
                   lambda m: _bad(f"{where}: [registries]", m))
    out["blocked"] = [normalize(d) for d in cfg.get("registries", "blocked") or []]
    out["search"] = [normalize(d) for d in cfg.get("registries", "search") or []]
    old = _load_json()
    if old is not None:
        out["insecure"] += old["insecure"]
        for k, v in old["mirrors"].items():
            out["mirrors"].setdefault(k, []).extend(v)
    return out


def _load_json() -> dict | None:
    """The older registries.json, checked; None when it does not exist."""
    p = path()
    where = f"registries config {p}"
    try:
        with open(p, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise _bad(where, f"cannot read it: {e.strerror or e}") from None
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise _bad(where, f"not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise _bad(where, "expected a JSON object with \"insecure\" and \"mirrors\"")
    insecure = doc.get("insecure", [])
    if not isinstance(insecure, list) or not all(isinstance(x, str) and x for x in insecure):
        raise _bad(where, "\"insecure\" must be a list of registry hosts, e.g. [\"myreg:5000\"]")
    mirrors = doc.get("mirrors", {})
    if not isinstance(mirrors, dict):
        raise _bad(where, "\"mirrors\" must map a registry to a list of URLs, "
                   "e.g. {\"docker.io\": [\"http://127.0.0.1:5001\"]}")
    return _checked(insecure, mirrors, lambda m: _bad(where, m))


def _checked(insecure: list, mirrors: dict, bad) -> dict:
    """The insecure entries and mirrors normalized, each checked (`bad(msg)` makes the error)."""
    out: dict[str, list[str]] = {}
    for k, v in mirrors.items():
        if not isinstance(v, list) or not all(isinstance(u, str) and u for u in v):
            raise bad(f"mirrors for {k!r} must be a list of URLs")
        for u in v:
            if "://" in u and not u.startswith(("http://", "https://")):
                raise bad(f"mirror {u!r} for {k!r}: only http:// and https:// URLs are supported")
        out.setdefault(normalize(k), []).extend(v)
    entries = []
    for x in insecure:
        if "/" in x and "://" not in x:  # a CIDR range
            try:
                ipaddress.ip_network(x.strip(), strict=False)
            except ValueError:
                raise bad(f"insecure entry {x!r} is neither a host[:port] nor a CIDR range") from None
            entries.append(x.strip())
        else:
            entries.append(normalize(x))
    return {"insecure": entries, "mirrors": out}


def is_blocked(domain: str) -> bool:
    """Is `domain` listed under [registries] blocked (no request may go to it)?"""
    domain = normalize(domain)
    blocked = load()["blocked"]
    return bool(blocked) and (domain in blocked or split_host(domain)[0] in blocked)


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_insecure(domain: str) -> bool:
    """May `domain` be reached over plain HTTP or with an unverified certificate?"""
    domain = normalize(domain)
    host, _ = split_host(domain)
    if is_loopback(host):
        return True
    for entry in load()["insecure"]:
        if entry == domain or entry == host:
            return True
        if "/" in entry:  # a CIDR range, checked by load()
            try:
                if ipaddress.ip_address(host) in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:  # host is a name, not an address
                continue
    return False


def mirrors(domain: str) -> list[str]:
    """Mirror base URLs to try, in order, before `domain` itself (for pulls only)."""
    return list(load()["mirrors"].get(normalize(domain), []))
