"""The errors a user can cause, by kind: one hierarchy for every layer (stdlib only, so the
runtime imports it too).

A front end never looks at an error's class name or message to decide what it means: the
kind does. The CLI maps a kind to Docker's exit codes (125 for the engine's own errors,
126/127 when the program cannot start), the API to dockerd's HTTP status with
`{"message": ...}`. Each error carries the one line a person can act on, and an optional
hint (the likely cause or fix) printed after it.
"""

from __future__ import annotations


class KobakoError(Exception):
    """An error with a message for a person. `status` is dockerd's HTTP status for it;
    `exit_code` the CLI's."""

    status = 500
    exit_code = 125

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class InvalidArgument(KobakoError):
    """Bad input: a malformed or impossible value, an unknown option (400)."""
    status = 400


class NotFound(KobakoError):
    """No such container, image, network, volume, exec or file (404)."""
    status = 404


class Conflict(KobakoError):
    """The object is in a state that refuses the request: a name in use, a container that
    is running (or not), an image a container still uses (409)."""
    status = 409


class Forbidden(KobakoError):
    """Refused by rule whatever the state: removing a predefined network (403)."""
    status = 403


class Unavailable(KobakoError):
    """A feature this host or this engine cannot offer now: swarm mode, a missing kernel
    feature or package (503)."""
    status = 503


class NotImplementedYet(KobakoError):
    """A Docker feature kobako does not have (501)."""
    status = 501


class Unauthorized(KobakoError):
    """A registry refused the credentials (401)."""
    status = 401


class CannotStart(KobakoError):
    """The container's program could not be started: 127 when it does not exist, 126 when
    it is not executable (docker's codes); 400 for the API, as dockerd's."""

    status = 400

    def __init__(self, message: str, hint: str | None = None, exit_code: int | None = None) -> None:
        super().__init__(message, hint)
        if exit_code is None:
            low = message.lower()
            exit_code = 127 if ("not found" in low or "no such file" in low) else \
                126 if ("permission denied" in low or "not executable" in low) else 125
        self.exit_code = exit_code


class Internal(KobakoError):
    """A failure that is kobako's, not the user's (500)."""


def describe(e: BaseException) -> str:
    """One line for any error: its message, or errno text and the file for an OSError."""
    if isinstance(e, OSError) and e.strerror:
        what = f" {e.filename}" if e.filename else ""
        if e.errno == 28:
            return f"no space left on device{what}: free space under the data root and retry"
        return f"{e.strerror}{what}"
    msg = str(e)
    return msg[0].lower() + msg[1:] if msg[:1].isupper() and not msg[1:2].isupper() else msg
