"""kobako-runtime run: create + start, then wait (forwarding signals) and delete."""

from __future__ import annotations

import os

from kobako.linux import prctl
from kobako.runtime import container, hooks
from kobako.runtime.errors import RuntimeFailure

FORWARDED = (1, 2, 3, 10, 12, 15, 28)  # HUP INT QUIT USR1 USR2 TERM WINCH
ENDING = (1, 2, 3, 15)  # HUP INT QUIT TERM
# False: nothing is passed on (the engine's `kobako run --sig-proxy=false`, run in this process).
# Then the signals that end docker's CLI end this command, and the container it holds with it;
# the others are ignored, as docker's CLI ignores them.
PROXY = True


def run(args, log) -> int:
    prctl.set_child_subreaper()
    c, chan = container.create(args, log, for_run=True)
    pid = c.data["pid"]
    try:
        kind, msg = chan.recv()  # EOF: execve succeeded (the channel is close-on-exec)
        chan.close()
        if kind == "ERR":
            raise RuntimeFailure(msg)
        cfg = c.cfg
        if hooks.has(cfg.get("hooks"), "poststart"):
            hooks.run_logged(cfg["hooks"], "poststart", container.oci_state(c, "running"), log)
        if c.console is not None:
            from kobako.runtime import console

            master = console.receive_master(c.console)
            if args.detach:
                raise RuntimeFailure("run -d with process.terminal needs --console-socket",
                                     "nobody would hold the pty")
            forward_signals(pid)
            code = console.proxy(master, pid, reap)
        elif args.detach:
            return 0
        else:
            code = wait(pid)
        log.debug(f"init {pid} exited with status {code}")
    except BaseException:
        c.lock()
        container.destroy(c, log, c.cfg)
        raise
    if not args.keep:
        c.lock()
        container.destroy(c, log, c.cfg)
        log.debug(f"container {args.id} deleted")
    return code


def forward_signals(pid: int) -> None:
    """Pass on the signals a foreground runc passes on (main thread only); with PROXY
    false, none (see PROXY)."""
    import _signal

    def forward(signum, frame):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    def end(signum, frame):
        raise KeyboardInterrupt  # run() then destroys the container; the command exits 130

    for s in FORWARDED:
        _signal.signal(s, forward if PROXY else end if s in ENDING else _signal.SIG_IGN)


def reap(pid: int) -> int:
    """Wait for the init; its exit status the way a shell reports it."""
    _, status = os.waitpid(pid, 0)
    while True:  # reap anything else reparented to us as subreaper
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                break
        except ChildProcessError:
            break
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def wait(pid: int) -> int:
    forward_signals(pid)
    return reap(pid)
