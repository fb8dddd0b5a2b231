"""Healthchecks, as Docker runs them: the monitor execs the test in the container every
Interval, with a Timeout; Retries failures in a row (not counted during StartPeriod) make it
unhealthy, one success healthy. The last 5 results are kept in the record (State.Health).

The probe is `kobako-runtime exec` run in a child of the monitor, with the container's own
user, environment and working directory; the monitor kills it (and what it started in the
container) when it overruns its Timeout.
"""

from __future__ import annotations

import os
import signal
import time

SECOND = 1_000_000_000
DEFAULTS = {"Interval": 30 * SECOND, "Timeout": 30 * SECOND, "StartPeriod": 0, "Retries": 3}
LOG_KEEP = 5        # Docker keeps the last 5 results
OUTPUT_MAX = 4096   # and 4 KiB of each result's output


def duration_ns(text: str) -> int:
    """Go's durations, as Docker's --health-* flags and HEALTHCHECK take them (30s, 1m30s,
    500ms, 1.5h), in nanoseconds; ValueError says what is wrong."""
    import re
    units = {"ns": 1, "us": 1000, "µs": 1000, "ms": 10**6, "s": SECOND, "m": 60 * SECOND, "h": 3600 * SECOND}
    parts = re.findall(r"([0-9]*\.?[0-9]+)(ns|us|µs|ms|s|m|h)", text)
    if not parts or "".join(a + b for a, b in parts) != text:
        if re.fullmatch(r"[0-9]*\.?[0-9]+", text):
            raise ValueError("missing unit in duration (s, m, h, ms)")
        raise ValueError("a duration like 30s, 1m30s or 500ms")
    return int(sum(float(a) * units[b] for a, b in parts))


def settings(rec: dict) -> dict | None:
    """The container's healthcheck with Docker's defaults filled in; None when it has none
    (no HEALTHCHECK, or NONE)."""
    hc = (rec.get("config") or {}).get("Healthcheck") or {}
    test = hc.get("Test") or []
    if not test or test[0] == "NONE":
        return None
    return {"Test": test, **{k: hc.get(k) or v for k, v in DEFAULTS.items()}}


def command(test: list[str]) -> list[str]:
    """CMD-SHELL runs through /bin/sh -c, CMD as it is (Docker's forms)."""
    if test[0] == "CMD-SHELL":
        return ["/bin/sh", "-c", " ".join(test[1:])]
    return list(test[1:]) if test[0] == "CMD" else list(test)


def starting() -> dict:
    return {"Status": "starting", "FailingStreak": 0, "Log": []}


def result(health: dict, hc: dict, started_at: float, start: str, end: str, code: int, output: str,
           now: float) -> dict:
    """The health after one probe. `code`: 0 healthy, anything else a failure (-1: it timed
    out or could not run). Failures inside StartPeriod do not count until one succeeds."""
    log = (list(health.get("Log") or []) + [{"Start": start, "End": end, "ExitCode": code,
                                             "Output": output}])[-LOG_KEEP:]
    status, streak = health.get("Status", "starting"), int(health.get("FailingStreak", 0))
    if code == 0:
        status, streak = "healthy", 0
    elif status == "starting" and now - started_at < hc["StartPeriod"] / SECOND:
        pass  # the grace period: a failure is logged, not counted
    else:
        streak += 1
        if streak >= hc["Retries"]:
            status = "unhealthy"
    return {"Status": status, "FailingStreak": streak, "Log": log}


class Probe:
    """One check in flight: the child running it, its output pipe, its deadline."""

    def __init__(self, pid: int, out: int, pidfile: str, start: str, deadline: float) -> None:
        self.pid, self.out, self.pidfile, self.start, self.deadline = pid, out, pidfile, start, deadline
        self.output = bytearray()
        self.timed_out = False

    def read(self) -> None:
        """Take what the check wrote so far (never blocking); keep the first 4 KiB."""
        while True:
            try:
                data = os.read(self.out, 65536)
            except (BlockingIOError, OSError):
                return
            if not data:
                return
            if len(self.output) < OUTPUT_MAX:
                self.output += data[:OUTPUT_MAX - len(self.output)]

    def kill(self) -> None:
        """Overran its Timeout: the process in the container, then the runtime's child."""
        self.timed_out = True
        try:
            with open(self.pidfile) as f:
                os.kill(int(f.read().strip()), signal.SIGKILL)
        except (OSError, ValueError):
            pass
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def close(self) -> str:
        self.read()
        os.close(self.out)
        try:
            os.unlink(self.pidfile)
        except OSError:
            pass
        return self.output.decode(errors="replace")


def spawn(rt_root: str, cid: str, test: list[str], run_dir: str, timeout_s: float, start: str) -> Probe:
    """Fork a child that runs the check with `kobako-runtime exec` in-process."""
    r, w = os.pipe2(os.O_CLOEXEC)
    pidfile = os.path.join(run_dir, f"health-{cid[:12]}-{os.getpid()}.pid")
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            null = os.open("/dev/null", os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(w, 1)
            os.dup2(w, 2)
            code = _exec(rt_root, cid, command(test), pidfile)
        finally:
            os._exit(code)
    os.close(w)
    os.set_blocking(r, False)
    return Probe(pid, r, pidfile, start, time.monotonic() + timeout_s)


def _exec(rt_root: str, cid: str, argv: list[str], pidfile: str) -> int:
    from kobako.runtime import main as rt
    from kobako.runtime.commands import exec as rt_exec
    from kobako.runtime.errors import RuntimeFailure
    from kobako.runtime.log import Log
    try:
        _, args = rt.parse(["--root", rt_root, "exec", "--pid-file", pidfile, cid, *argv])
        return int(rt_exec.run(args, Log(None)) or 0)
    except RuntimeFailure as e:  # the check could not run: Docker counts that as a failure
        os.write(2, f"{e}\n".encode())
        return 126 if "permission" in str(e).lower() else 127 if "not found" in str(e) else 1
    except BaseException as e:  # noqa: BLE001 - written into the health log, never a traceback
        os.write(2, f"{type(e).__name__}: {e}\n".encode())
        return 1
