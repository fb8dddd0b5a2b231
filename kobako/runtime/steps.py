"""The runtime's steps: every kernel object the runtime makes goes through here.

Each step names the primitive used (mount(2), unshare(2), mkdir in a cgroupfs...)
and what it made, and registers its undo *before* the next step runs. On failure
`unwind()` undoes everything in reverse order and returns every error, so one
failure never hides another. The record is kobako's one step record (kobako/steps.py):
with --debug the runtime's log shows the steps, and `kobako run --trace` shows them as
they happen - an explanation of a container, printed by the runtime itself.
"""

from __future__ import annotations

from kobako import steps as record
from kobako.runtime.log import Log

TYPE_CHECKING = False  # typing costs ~9 ms to import; the runtime's budget is ~20
if TYPE_CHECKING:
    from collections.abc import Callable


class Steps(record.Record):
    def __init__(self, log: Log, who: str = "runtime") -> None:
        super().__init__(who)
        self.log = log
        self.who = who
        self.count = 0

    def made(self, primitive: str, what: str, undo: Callable[[], object] | None = None) -> None:
        """Record a step that just succeeded, with the undo that reverses it."""
        self.count += 1
        if self.log.debug_on:
            self.log.debug(f"{self.who} step {self.count}: {primitive}: {what}")
        super().made(None, primitive, what, undo, what)

    def unwind(self, error: BaseException | None = None) -> list[str]:
        return [f"undo {e}" for e in super().unwind(error)]

    def undone(self, what: str, error: Exception | None) -> None:
        if error is None and self.log.debug_on:
            self.log.debug(f"{self.who} undo: {what}")
