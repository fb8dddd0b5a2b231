"""The one error type a user sees: a message a person can act on, no traceback."""

from __future__ import annotations


class RuntimeFailure(Exception):
    """What failed, on which object, and (when known) the likely cause."""

    def __init__(self, msg: str, hint: str | None = None, code: int = 1) -> None:
        super().__init__(msg)
        self.hint = hint
        self.code = code

    def __str__(self) -> str:
        s = self.args[0]
        return f"{s} ({self.hint})" if self.hint else s


def describe_oserror(e: OSError) -> str:
    """OSError -> 'op: strerror: object', the way runc and crun phrase them."""
    msg = e.strerror or str(e)
    return f"{msg}: {e.filename}" if e.filename else msg


def describe(e: BaseException) -> str:
    """Any failure as the one line a child process reports to its parent."""
    return describe_oserror(e) if isinstance(e, OSError) else str(e)
