"""Docker's credential helpers: programs named docker-credential-<name> on PATH, chosen in
~/.docker/config.json by "credHelpers" (per registry) or "credsStore" (for all).

    docker-credential-<name> get     stdin: server URL   stdout: {"ServerURL", "Username", "Secret"}
    docker-credential-<name> store   stdin: {"ServerURL", "Username", "Secret"}
    docker-credential-<name> erase   stdin: server URL

A helper that does not know the server says "credentials not found" and exits non-zero.
A Username of "<token>" means Secret is an identity token (an OAuth2 refresh token).
Docker Hub's server URL is https://index.docker.io/v1/, every other's its host[:port].
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

from kobako.image.auth import AuthError

PREFIX = "docker-credential-"
HUB_URL = "https://index.docker.io/v1/"
IDENTITY_TOKEN_USER = "<token>"
TIMEOUT = 60  # a helper may ask the user to unlock a keyring


class HelperError(AuthError):
    """A helper that is missing, fails or answers nonsense: an auth failure like any other."""


def server_url(domain: str) -> str:
    return HUB_URL if domain == "docker.io" else domain


def _run(helper: str, action: str, stdin: str, domain: str) -> str | None:
    """The helper's stdout; None when it says it has no credentials for the server."""
    prog = PREFIX + helper
    path = shutil.which(prog)
    if path is None:
        raise HelperError(f"credential helper {prog} for registry {domain} is not installed "
                          "(not found on PATH)")
    try:
        cp = subprocess.run([path, action], input=stdin.encode(), capture_output=True, timeout=TIMEOUT,
                            env=os.environ.copy())
    except subprocess.TimeoutExpired:
        raise HelperError(f"credential helper {prog} for registry {domain} did not answer "
                          f"within {TIMEOUT}s ({action})") from None
    except OSError as e:
        raise HelperError(f"credential helper {prog} for registry {domain} cannot run: "
                          f"{e.strerror or e}") from None
    out = cp.stdout.decode(errors="replace").strip()
    if cp.returncode != 0:
        said = out or cp.stderr.decode(errors="replace").strip()
        if action in ("get", "erase") and "credentials not found" in said.lower():
            return None
        first = said.splitlines()[0][:200] if said else f"exit status {cp.returncode}"
        raise HelperError(f"credential helper {prog} failed for registry {domain} ({action}): {first}")
    return out


def get(helper: str, domain: str) -> tuple[str, str] | None:
    """(username, secret) from the helper; None if it has none for `domain`."""
    out = _run(helper, "get", server_url(domain), domain)
    if out is None:
        return None
    try:
        doc = json.loads(out)
        user, secret = doc.get("Username"), doc.get("Secret")
    except (ValueError, AttributeError):
        user = secret = None
    if not isinstance(user, str) or not isinstance(secret, str):
        raise HelperError(f"credential helper {PREFIX + helper} for registry {domain} gave an "
                          "invalid answer (expected JSON with Username and Secret)")
    return (user, secret) if secret else None


def store(helper: str, domain: str, user: str, secret: str) -> None:
    doc = {"ServerURL": server_url(domain), "Username": user, "Secret": secret}
    _run(helper, "store", json.dumps(doc), domain)


def erase(helper: str, domain: str) -> bool:
    """Forget `domain` in the helper; False if it had nothing."""
    return _run(helper, "erase", server_url(domain), domain) is not None
