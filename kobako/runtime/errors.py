"""The one error type a user sees: a message a person can act on, no traceback."""

from __future__ import annotations

from kobako.errors import KobakoError


class RuntimeFailure(KobakoError):
    """What failed, on which object, and (when known) the likely cause."""

    def __init__(self, msg: str, hint: str | None = None, code: int = 1) -> None:
        super().__init__(msg, hint)
        self.code = code


def describe_oserror(e: OSError) -> str:
    """OSError -> 'op: strerror: object', the way runc and crun phrase them."""
    msg = e.strerror or str(e)
    return f"{msg}: {e.filename}" if e.filename else msg


def describe(e: BaseException) -> str:
    """Any failure as the one line a child process reports to its parent."""
    return describe_oserror(e) if isinstance(e, OSError) else str(e)
