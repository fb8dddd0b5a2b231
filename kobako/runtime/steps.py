"""The step/undo record: every kernel object the runtime makes goes through here.

Each step names the primitive used (mount(2), unshare(2), mkdir in a cgroupfs...)
and what it made, and registers its undo *before* the next step runs. On failure
`unwind()` undoes everything in reverse order and returns every error, so one
failure never hides another. With --debug the log shows the steps: the seminar's
explanation of a container, printed by the runtime itself.
"""

from __future__ import annotations

from kobako.runtime.log import Log

TYPE_CHECKING = False  # typing costs ~9 ms to import; the runtime's budget is ~20
if TYPE_CHECKING:
    from collections.abc import Callable


class Steps:
    def __init__(self, log: Log, who: str = "runtime") -> None:
        self.log = log
        self.who = who
        self.undos: list[tuple[str, Callable[[], object]]] = []
        self.count = 0

    def made(self, primitive: str, what: str, undo: Callable[[], object] | None = None) -> None:
        """Record a step that just succeeded, with the undo that reverses it."""
        self.count += 1
        if self.log.debug_on:
            self.log.debug(f"{self.who} step {self.count}: {primitive}: {what}")
        if undo is not None:
            self.undos.append((what, undo))

    def unwind(self) -> list[str]:
        errors = []
        while self.undos:
            what, undo = self.undos.pop()
            try:
                undo()
                if self.log.debug_on:
                    self.log.debug(f"{self.who} undo: {what}")
            except Exception as e:  # collect them all, report them all
                errors.append(f"undo {what}: {e}")
        return errors

    def forget(self) -> None:
        """The object now belongs to the container: `delete` undoes it, not us."""
        self.undos.clear()
