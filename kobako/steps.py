"""The step record of every layer: steps, their undos, the trace people see, fault points.

At the bottom of the tree (stdlib only, and only what the runtime's start-up path loads
anyway): the engine, storage, network and runtime all record through it.

- A step that makes a kernel object or a file is recorded when it is made, with the undo
  that reverses it, before the next step runs (`Record.made`). On failure `unwind()`
  undoes everything in reverse order, runs every undo even when some fail, and attaches
  their errors to the error being raised, so one failure never hides another.
- The same record is shown to people: `trace_to(fd)` (`kobako run --trace`) prints each
  step as it happens — the layer, the primitive (system call or tool), the object, the
  time since the previous step — and each undo. Forked children (the runtime's init)
  inherit the sink, so their steps show too.
- Every step is a fault point named `<layer>:<step>`. When the engine arms one (tests set
  KOBAKO_FAULT; `arm_from_environment` is its one reader, called by kobako's CLI), the
  process that armed it is killed with SIGKILL right after that step, to prove a later
  command leaves nothing behind. `kobako-runtime`'s command line
  never arms one: a runtime called by another engine has no test hooks.
"""

from __future__ import annotations

import os
import time

TYPE_CHECKING = False  # typing costs ~9 ms to import, more than the runtime can spare
if TYPE_CHECKING:
    from collections.abc import Callable

_trace_fd = -1
_t0 = time.perf_counter()
_fault: str | None = None
_fault_pid = 0
_fault_w = _fault_back = -1  # the pipes to the watcher, once armed


# -- the trace ---------------------------------------------------------------------------------

def trace_to(fd: int) -> None:
    """Print every step from now on to `fd` (a copy of stderr; -1 stops)."""
    global _trace_fd, _t0
    _trace_fd = fd
    _t0 = time.perf_counter()


def tracing() -> bool:
    return _trace_fd >= 0


def trace_fd() -> int:
    """The trace's sink (-1: none), for a process that does steps on our behalf (the
    monitor starting a container for `start --trace`)."""
    return _trace_fd


def show(layer: str, primitive: str, what: str, took: float | None = None) -> None:
    """One trace line: time since the trace began, layer, primitive, object, duration."""
    if _trace_fd < 0:
        return
    now = (time.perf_counter() - _t0) * 1000
    dur = f"  ({took * 1000:.2f} ms)" if took is not None else ""
    line = f"[{now:8.1f} ms] {layer:<8} {primitive:<34} {what}{dur}\n"
    try:
        os.write(_trace_fd, line.encode(errors="replace"))
    except OSError:
        pass


# -- fault points ------------------------------------------------------------------------------

def arm(point: str | None) -> None:
    """Kill this process (SIGKILL) right after the step named `point` (None: disarm)."""
    global _fault, _fault_pid, _fault_w, _fault_back
    _fault, _fault_pid = point or None, os.getpid()
    if _fault is None:
        return
    # A forked child (the runtime's init) may be PID 1 of a new PID namespace, from which
    # this process cannot be signalled at all: a watcher in our namespace does it on a byte
    # from the child, and lets the child go on (to end itself) once it has.
    r, w = os.pipe()
    back_r, back_w = os.pipe()
    if os.fork() == 0:
        os.close(w)
        os.close(back_r)
        try:
            if os.read(r, 1):
                os.kill(_fault_pid, 9)
        finally:
            os._exit(0)
    os.close(r)
    os.close(back_w)
    _fault_w, _fault_back = w, back_r


def arm_from_environment() -> None:
    """KOBAKO_FAULT=<layer>:<step>, read here only. kobako's front ends call this; the
    runtime's own entry point never does."""
    if os.environ.get("KOBAKO_FAULT"):
        arm(os.environ["KOBAKO_FAULT"])


def armed(point: str) -> bool:
    return _fault is not None and _fault == point


def fault(point: str) -> None:
    """A named fault point: when armed for it, SIGKILL the process that armed it. A forked
    child then ends itself too (SIGKILL from inside does not end a PID namespace's init)."""
    if _fault is None or _fault != point:
        return
    if os.getpid() == _fault_pid:
        os.kill(_fault_pid, 9)
    os.write(_fault_w, b"k")
    os.read(_fault_back, 1)  # until the watcher has killed the CLI
    os._exit(137)


def slug(primitive: str) -> str:
    """A step's name from its primitive: `mount(2) MS_BIND` -> `mount-ms_bind`."""
    out, dash = [], False
    for ch in primitive.lower().replace("(2)", ""):
        if ch.isalnum() or ch == "_":
            out.append(ch)
            dash = False
        elif not dash and out:
            out.append("-")
            dash = True
    return "".join(out).strip("-")


# -- the record --------------------------------------------------------------------------------

class Record:
    """The steps one operation of one layer made, and how to undo them."""

    def __init__(self, layer: str) -> None:
        self.layer = layer
        self.undos: list[tuple[str, Callable[[], object]]] = []
        self.diagnoses: list[Callable[[], str | None]] = []
        self.names: dict[str, int] = {}
        self._mark = time.perf_counter()

    def point(self, name: str) -> str:
        """The fault point's name of a step: `<layer>:<name>`, numbered when a name repeats
        (`mount#2`), so each step of a run has its own."""
        n = self.names.get(name, 0) + 1
        self.names[name] = n
        return f"{self.layer}:{name}" + (f"#{n}" if n > 1 else "")

    def made(self, name: str | None, primitive: str, what: str, undo: Callable[[], object] | None = None,
             undo_what: str | None = None) -> None:
        """A step that just succeeded, with the undo that reverses it (registered now,
        before the next step). `name` None: the step is named after its primitive
        (`mount(2) MS_BIND` -> `mount-ms_bind`)."""
        if undo is not None:
            self.undos.append((undo_what or f"undo {what}", undo))
        if _trace_fd < 0 and _fault is None:  # (the runtime's start-up path: nothing more to do)
            return
        now = time.perf_counter()
        took, self._mark = now - self._mark, now
        point = self.point(name or slug(primitive))
        if _trace_fd >= 0:
            show(self.layer, primitive, f"{what}  [{point}]", took)
        if _fault is not None:
            fault(point)

    def diagnose(self, why: Callable[[], str | None]) -> None:
        """Register a question to ask before unwinding, while what was made still exists
        (the cgroup's OOM count, say): it returns the likely cause of a failure, or None."""
        self.diagnoses.append(why)

    def why(self) -> str | None:
        """The first cause a diagnosis finds (a diagnosis that fails itself is no answer)."""
        for d in self.diagnoses:
            try:
                reason = d()
            except Exception:  # noqa: BLE001 - a question about a half-made object
                continue
            if reason:
                return reason
        return None

    def unwind(self, error: BaseException | None = None) -> list[str]:
        """Diagnose, then undo everything, newest first; every undo runs even when some fail.
        The cause found becomes the error's hint (kobako's errors carry one) when it has
        none; the undos' errors are returned and attached to `error` as notes."""
        if error is not None and self.diagnoses:
            reason = self.why()
            if reason and getattr(error, "hint", False) is None:
                error.hint = reason  # type: ignore[attr-defined]
            elif reason:
                error.add_note(reason)
        errs: list[str] = []
        while self.undos:
            what, undo = self.undos.pop()
            t = time.perf_counter()
            try:
                undo()
            except Exception as e:  # collect them all, report them all
                errs.append(f"{what}: {e}")
                show(self.layer, "undo FAILED", f"{what}: {e}")
                self.undone(what, e)
                continue
            show(self.layer, "undo", what, time.perf_counter() - t)
            self.undone(what, None)
        if error is not None:
            for e in errs:
                error.add_note(f"while undoing: {e}")
        return errs

    def undone(self, what: str, error: Exception | None) -> None:
        """(A hook: the runtime logs each undo with --debug.)"""

    def forget(self) -> None:
        """What was made now belongs to its owner (a container's state): removing the owner
        undoes it, not this record."""
        self.undos.clear()
