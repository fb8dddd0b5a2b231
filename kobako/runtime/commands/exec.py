"""kobako-runtime exec: a further process inside a running container.

The parent forks a child that opens every namespace of the container's init,
joins them (user first, mount last), and forks again so the process lands in
the container's pid (and time) namespace; the child is placed in the
container's cgroup first. The process gets the container's capabilities,
rlimits and no_new_privs unless --process says otherwise.
"""

from __future__ import annotations

import os

from kobako.linux import namespaces as ns
from kobako.linux import prctl
from kobako.runtime import jsonfast, process, seccomp, spec, state
from kobako.runtime.cgroups import manager_for
from kobako.runtime.errors import RuntimeFailure, describe
from kobako.runtime.steps import Steps
from kobako.runtime.sync import Channel

ORDER = ("user", "ipc", "uts", "network", "cgroup", "pid", "time", "mount")
# The host's root joins the user namespace late: a namespace the host's user namespace owns
# (an engine-made netns) would refuse it once it is the container's root.
ROOT_ORDER = ("ipc", "uts", "network", "cgroup", "pid", "time", "user", "mount")


def build_process(args, cfg: dict) -> dict:
    if args.process:
        try:
            with open(args.process, "rb") as f:
                proc = jsonfast.loads(f.read())
        except (OSError, ValueError) as e:
            raise RuntimeFailure(f"cannot read process file {args.process}: {e}") from None
        spec.validate_process(proc, "process.json")
        return proc
    if not args.args:
        raise RuntimeFailure("exec needs a program to run (or --process FILE)")
    proc = dict(cfg.get("process") or {})
    proc["args"] = list(args.args)
    proc["terminal"] = bool(args.tty)
    env = list(proc.get("env") or [])
    for e in args.env or []:
        k = e.partition("=")[0]
        env = [x for x in env if x.partition("=")[0] != k] + [e]
    proc["env"] = env
    if args.cwd:
        proc["cwd"] = args.cwd
    if args.user:
        u, _, g = args.user.partition(":")
        try:
            proc["user"] = {"uid": int(u), "gid": int(g or 0)}
        except ValueError:
            raise RuntimeFailure(f"--user {args.user!r}: give numeric uid[:gid]") from None
    if args.additional_gids:
        proc.setdefault("user", {})["additionalGids"] = [int(x) for x in args.additional_gids]
    if args.cap:
        caps = dict(proc.get("capabilities") or {})
        for k in ("bounding", "effective", "permitted", "ambient"):
            caps[k] = list(dict.fromkeys(list(caps.get(k) or []) + list(args.cap)))
        proc["capabilities"] = caps
    if args.no_new_privs:
        proc["noNewPrivileges"] = True
    spec.validate_process(proc, "process")
    return proc


def run(args, log) -> int:
    c = state.open_existing(args.root, args.id, lock=False)
    st = c.status()
    if st not in ("running", "created") and not (st == "paused" and args.ignore_paused):
        raise RuntimeFailure(f"cannot exec in container {args.id!r}: it is {st}")
    cfg = c.config()
    proc = build_process(args, cfg)
    if proc.get("terminal") and not args.console_socket:
        raise RuntimeFailure("exec --tty needs --console-socket to send the pty to")
    init_pid = c.data["pid"]
    # Open the init's namespaces now: /proc/PID means something else once inside.
    fds = []
    for t in ROOT_ORDER if os.geteuid() == 0 else ORDER:
        flag, name = ns.TYPES[t]
        p = f"/proc/{init_pid}/ns/{name}"
        try:
            if os.stat(p).st_ino == os.stat(f"/proc/self/ns/{name}").st_ino:
                continue  # shared with the host: nothing to join
        except FileNotFoundError:
            continue
        fds.append((os.open(p, os.O_RDONLY | os.O_CLOEXEC), flag, t))
    console_fd = -1
    if args.console_socket:
        # imported here, used after setns(mnt) where the host's library is out of sight
        from kobako.runtime import console

        console_fd = console.connect(args.console_socket)
    prctl.set_child_subreaper()
    parent, child = Channel.pair()
    mid = os.fork()
    if mid == 0:
        parent.close()
        sec = (cfg.get("linux") or {}).get("seccomp")
        cache = os.path.join(args.root, ".seccomp") if os.geteuid() == 0 else None
        _middle(child, manager_for(c.data), sec, fds, proc, console_fd, args.preserve_fds, log, cache)
    child.close()
    for fd, _, _ in fds:
        os.close(fd)
    if console_fd >= 0:
        os.close(console_fd)
    try:
        kind, msg = parent.recv()
        os.waitpid(mid, 0)
        if kind != "PID":
            raise RuntimeFailure(msg or "exec failed before the process started")
        pid = int(msg)
        kind, msg = parent.recv()  # EOF: the program was exec'd
        if kind == "ERR":
            os.waitpid(pid, 0)
            raise RuntimeFailure(msg)
    finally:
        parent.close()
    if args.pid_file:
        from kobako.runtime.container import write_pid_file

        write_pid_file(args.pid_file, pid)
    if args.detach:
        return 0
    from kobako.runtime.commands.run import wait

    return wait(pid)


def _middle(chan: Channel, cg, sec: dict | None, fds: list, proc: dict, console_fd: int,
            preserve_fds: int, log, cache: str | None = None) -> None:
    """In the forked helper: join the cgroup and the namespaces, fork the process,
    report its PID."""
    try:
        steps = Steps(log, "exec")
        # the container's filter, compiled while the host's libseccomp is reachable
        filt = seccomp.prepare(sec, cache) if sec else None
        cg.join_self()  # before the user namespace: the cgroupfs is the host's
        steps.made("write tasks (v1) / cgroup.procs (v2)", "joined the container's cgroup")
        userns = False
        for fd, flag, t in fds:
            ns.setns(fd, flag, f"{t} namespace of the container")
            steps.made("setns(2)", f"joined the container's {t} namespace")
            userns |= t == "user"
        prctl.set_dumpable(False)  # nothing in the container may open our /proc entries
        pid = os.fork()
        if pid == 0:
            _process(chan, proc, console_fd, preserve_fds, steps, userns, filt)
        chan.send("PID", str(pid))
        os._exit(0)
    except BaseException as e:
        chan.fail(describe(e))


def _process(chan: Channel, proc: dict, console_fd: int, preserve_fds: int, steps, userns: bool,
             filt) -> None:
    try:
        if console_fd >= 0:
            from kobako.runtime import console  # already loaded by run()

            console.setup(console_fd, steps)
        path = process.find_program(proc)
        process.set_rlimits(proc, steps)
        process.become(proc, steps, not userns or process.setgroups_allowed(), filt)
        process.enter_cwd(proc)
        process.execute(path, proc, preserve_fds, filt)
    except BaseException as e:
        chan.fail(describe(e), 127)
    os._exit(127)
