"""Registry credentials, stored the way Docker's config.json stores them:

    {"auths": {"127.0.0.1:5000": {"auth": base64("user:password")}}}

kobako's own file is `$KOBAKO_CONFIG/auth.json`, else ~/.config/kobako/auth.json,
written atomically with mode 0600 in a 0700 directory (it holds passwords in the
clear, as Docker's does). Lookups fall back to ~/.docker/config.json (or
$DOCKER_CONFIG/config.json), read-only, so a `docker login` already done works too.
Keys are normalised: 'https://index.docker.io/v1/' and 'docker.io' are the same.

Docker's config may name credential helpers (credhelper.py): "credHelpers" per registry,
else "credsStore" for all. For such a registry, lookups ask the helper (after kobako's own
file), and `kobako login`/`logout` store and erase through it, as the docker CLI does.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import json
import os
from collections.abc import Callable

from kobako import errors
from kobako.image.registries import normalize
from kobako.paths import atomic_write


class AuthError(errors.InvalidArgument):
    pass


def path() -> str:
    env = os.environ.get("KOBAKO_CONFIG")
    if env:
        return os.path.join(env, "auth.json")
    return os.path.join(os.path.expanduser("~"), ".config", "kobako", "auth.json")


def docker_path() -> str:
    env = os.environ.get("DOCKER_CONFIG")
    return os.path.join(env or os.path.join(os.path.expanduser("~"), ".docker"), "config.json")


def _read(p: str, strict: bool) -> dict:
    """The whole file; {} if absent. A broken kobako file is an error; a broken Docker one is skipped."""
    try:
        with open(p, "rb") as f:
            doc = json.loads(f.read())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, UnicodeDecodeError) as e:
        if strict:
            raise AuthError(f"auth file {p} is unreadable or not valid JSON ({e}); "
                            "fix or remove it and log in again") from None
        return {}
    auths = doc.get("auths", {}) if isinstance(doc, dict) else None
    if not isinstance(auths, dict):
        if strict:
            raise AuthError(f"auth file {p} is not of the form {{\"auths\": {{...}}}}; fix or remove it")
        return {}
    return doc


def _load(p: str, strict: bool) -> dict:
    """The file's "auths" map."""
    return _read(p, strict).get("auths", {})


def _decode(entry: object) -> tuple[str, str] | None:
    if not isinstance(entry, dict):
        return None
    if isinstance(entry.get("username"), str) and isinstance(entry.get("password"), str):
        return entry["username"], entry["password"]
    raw = entry.get("auth")
    if not isinstance(raw, str) or not raw:
        return None
    try:
        user, sep, password = base64.b64decode(raw, validate=False).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep and user else None


def find(auths: dict, domain: str) -> tuple[str, str] | None:
    """(user, password) for `domain` in an "auths"-shaped map (a config file's, or the
    X-Registry-Config a build request carries), keys normalised; None if none fits."""
    want = normalize(domain)
    for key, entry in auths.items():
        if isinstance(key, str) and normalize(key) == want:
            creds = _decode(entry)
            if creds:
                return creds
    return None


def helper(domain: str) -> str | None:
    """The credential helper Docker's config names for `domain`: credHelpers, else credsStore."""
    doc = _read(docker_path(), strict=False)
    want = normalize(domain)
    helpers = doc.get("credHelpers")
    if isinstance(helpers, dict):
        for key, name in helpers.items():
            if isinstance(key, str) and normalize(key) == want and isinstance(name, str) and name:
                return name
    store = doc.get("credsStore")
    return store if isinstance(store, str) and store else None


def get(domain: str) -> tuple[str, str] | None:
    """(user, password) for `domain`: kobako's file, else the credential helper Docker's config
    names for it, else that config's "auths"; None if none has it. A user of "<token>" means
    the password is an identity token."""
    found = find(_load(path(), strict=True), domain)
    if found:
        return found
    name = helper(domain)
    if name:
        from kobako.image import credhelper
        found = credhelper.get(name, domain)  # its HelperError is an AuthError
        if found:
            return found
    return find(_load(docker_path(), strict=False), domain)


def _update(change: Callable[[dict], bool]) -> bool:
    """Apply `change(auths) -> bool` to kobako's file under a lock; rewrite it if it changed."""
    p = path()
    d = os.path.dirname(p)
    os.makedirs(d, mode=0o700, exist_ok=True)
    fd = os.open(p + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        doc = _read(p, strict=True)
        auths = doc.setdefault("auths", {})
        if not change(auths):
            return False
        atomic_write(p, json.dumps(doc, indent=1).encode() + b"\n", mode=0o600)
        os.chmod(p, 0o600)  # also when an older file had looser permissions
        return True
    finally:
        os.close(fd)


def store(domain: str, user: str, password: str) -> None:
    """Remember the login: in the credential helper Docker's config names for `domain`, else
    in kobako's file."""
    if not user or ":" in user:
        raise AuthError("a registry user name must be non-empty and must not contain ':'")
    key = normalize(domain)
    name = helper(key)
    if name:
        from kobako.image import credhelper
        credhelper.store(name, key, user, password)
        _forget(key)  # an older login in kobako's file would shadow the helper's
        return
    token = base64.b64encode(f"{user}:{password}".encode()).decode()

    def change(auths: dict) -> bool:
        for k in [k for k in auths if normalize(k) == key]:
            del auths[k]
        auths[key] = {"auth": token}
        return True

    _update(change)


def remove(domain: str) -> bool:
    """Forget `domain` in kobako's file and in its credential helper (Docker's config is never
    written); False if neither had it."""
    key = normalize(domain)
    erased = False
    name = helper(key)
    if name:
        from kobako.image import credhelper
        erased = credhelper.erase(name, key)
    return _forget(key) or erased


def _forget(key: str) -> bool:
    if not os.path.exists(path()):
        return False

    def change(auths: dict) -> bool:
        hits = [k for k in auths if normalize(k) == key]
        for k in hits:
            del auths[k]
        return bool(hits)

    return _update(change)
