"""The container's side of create: what runs in the forked child until execve.

Order (runc's, in one process): join or unshare the namespaces, set the
hostname, build the root (rootfs.py), let the parent run createRuntime hooks,
run createContainer hooks, pivot_root, terminal, sysctl/masks/read-only, check
the program exists, report READY, wait for `start`, run startContainer hooks,
become the configured user with the configured capabilities, execve.
Any failure is sent to the parent as one line; the child never returns.
"""

from __future__ import annotations

import os

from kobako.linux import keyring, prctl, uts
from kobako.linux import namespaces as ns
from kobako.runtime import hooks, jsonfast, process
from kobako.runtime.errors import RuntimeFailure, describe
from kobako.runtime.rootfs import Rootfs  # (imported before the fork: see container._plan_cgroup)
from kobako.runtime.steps import Steps
from kobako.runtime.sync import Channel, die

# Namespaces the init makes itself (pid, time and user are made before its fork;
# cgroup once the parent has placed the init in its cgroup).
LATE = ("ipc", "uts", "network", "mount")


class InitContext:
    def __init__(self, cid: str, cfg: dict, chan: Channel, log, gate_fd: int, console_fd: int,
                 no_pivot: bool, no_new_keyring: bool, preserve_fds: int) -> None:
        self.id = cid
        self.new_keyring = not no_new_keyring
        self.cfg = cfg
        self.chan = chan
        self.log = log
        self.gate_fd = gate_fd  # listening exec.sock (create) or -1 (run: the channel is the gate)
        self.console_fd = console_fd
        self.cgroup: dict | None = None  # the cgroup record, sent with GO
        self.cgroup_joined = False  # the user-namespace path joins before unshare(CLONE_NEWUSER)
        self.no_pivot = no_pivot
        self.preserve_fds = preserve_fds
        linux = cfg.get("linux") or {}
        self.namespaces = {n["type"]: n.get("path") for n in linux.get("namespaces") or []}
        self.userns = "user" in self.namespaces
        self.prejoined: set[str] = set()  # joined by path before a new user namespace was made
        self.root_premounted = False  # the idmapped root, mounted before the user namespace (idmap.py)
        self.root_tree = -1  # rootless: the root, mounted outside the container and detached (open_tree)
        self.path = ""  # the resolved program, set once the root is in place
        self.seccomp = None  # the prepared filter (libseccomp is out of sight after pivot_root)
        self.state_json = ""  # the OCI state, sent with GO once we are in the cgroup


def main(ctx: InitContext) -> None:
    """Entry of the forked init. Never returns."""
    steps = Steps(ctx.log, "init")
    report = ctx.chan.wfd  # where a failure goes: the parent, or `start` once it waits
    try:
        _setup(ctx, steps)
        report = _wait_for_start(ctx)
        if hooks.has(ctx.cfg.get("hooks"), "startContainer"):
            hooks.run(ctx.cfg["hooks"], "startContainer",
                      ctx.state_json.replace('"creating"', '"running"'), ctx.log)
        proc = ctx.cfg["process"]
        process.set_rlimits(proc, steps)
        process.become(proc, steps, not ctx.userns or process.setgroups_allowed(), ctx.seccomp)
        process.enter_cwd(proc)
        process.execute(ctx.path, proc, ctx.preserve_fds, ctx.seccomp)
    except (RuntimeFailure, OSError) as e:
        die(report, describe(e))
    except BaseException as e:  # never fall back into the parent's code
        die(report, f"internal error in init: {type(e).__name__}: {e}")
    os._exit(1)


def _placed(ctx: InitContext, steps: Steps) -> dict | None:
    """Wait until the parent has put us in the container's cgroup (GO), then make
    the cgroup namespace, whose root is the cgroup we are in at that moment.
    The parent's cgroup.procs write costs an RCU grace period (~5-10 ms on v1);
    everything before this point runs in parallel with it."""
    if ctx.state_json:
        return ctx.cgroup
    kind, msg = ctx.chan.recv()
    if kind != "GO":
        os._exit(1)
    go = jsonfast.loads(msg)
    ctx.state_json, ctx.cgroup = go["state"], go["cgroup"]
    if not ctx.cgroup_joined:
        from kobako.runtime.cgroups import Manager

        Manager(ctx.cgroup).join_self()
        steps.made("write tasks (v1) / cgroup.procs (v2)", f"joined cgroup {ctx.cgroup['path']}")
    if "cgroup" in ctx.namespaces:
        path = ctx.namespaces["cgroup"]
        if path:
            ns.enter(path, ns.CLONE_NEWCGROUP)
            steps.made("setns(2)", f"joined cgroup namespace {path}")
        else:
            ns.unshare(ns.CLONE_NEWCGROUP)
            steps.made("unshare(2)", "new namespace CLONE_NEWCGROUP")
    return ctx.cgroup


def _setup(ctx: InitContext, steps: Steps) -> None:
    cfg = ctx.cfg
    # 1. namespaces: join the ones given by path, unshare the rest
    flags = 0
    for t in LATE:
        if t not in ctx.namespaces or t in ctx.prejoined:
            continue
        flag = ns.TYPES[t][0]
        path = ctx.namespaces[t]
        if path:
            ns.enter(path, flag)
            steps.made("setns(2)", f"joined {t} namespace {path}")
        else:
            flags |= flag
    if flags:
        ns.unshare(flags)
        steps.made("unshare(2)", f"new namespaces {ns.flag_names(flags)}")
    if ctx.new_keyring:
        try:
            keyring.join_session_keyring(ctx.id)
            steps.made("keyctl(2) JOIN_SESSION_KEYRING", f"session keyring {ctx.id}")
        except OSError as e:  # no keyrings in this kernel, or a user namespace refuses it
            if e.errno not in (1, 13, 38):
                raise
    if cfg.get("hostname"):
        uts.sethostname(cfg["hostname"])
        steps.made("sethostname(2)", cfg["hostname"])
    if cfg.get("domainname"):
        uts.setdomainname(cfg["domainname"])
        steps.made("setdomainname(2)", cfg["domainname"])
    # 2. the root filesystem, mounts and devices
    os.umask(0)
    # (a rootless runtime is in a user namespace already: no mknod there either)
    root = Rootfs(cfg, steps, ctx.userns or ns.in_user_namespace(),
                  "cgroup" in ctx.namespaces and not ctx.namespaces["cgroup"],
                  placed=lambda: _placed(ctx, steps))
    root.premounted = ctx.root_premounted
    root.tree_fd = ctx.root_tree
    if "mount" in ctx.namespaces:
        root.prepare()
    _placed(ctx, steps)
    h = cfg.get("hooks")
    if hooks.has(h, "prestart", "createRuntime"):
        ctx.chan.send("HOOKS")
        kind, msg = ctx.chan.recv()
        if kind != "OK":
            os._exit(1)
    if hooks.has(h, "createContainer"):
        hooks.run(h, "createContainer", ctx.state_json, ctx.log)
    # After pivot_root the host's Python library is out of sight: import now.
    if ctx.console_fd >= 0:
        from kobako.runtime import console
    if ctx.gate_fd >= 0:
        import socket  # noqa: F401
    if hooks.has(h, "startContainer"):
        import subprocess  # noqa: F401
    if (cfg.get("linux") or {}).get("seccomp") and ctx.seccomp is None:  # (userns: made by the parent)
        from kobako.runtime import seccomp

        ctx.seccomp = seccomp.prepare(cfg["linux"]["seccomp"], cfg.get("_seccomp_cache"))
        steps.made("libseccomp", f"filter of {ctx.seccomp.rules} rules compiled")
    if "mount" in ctx.namespaces:
        root.pivot(ctx.no_pivot)
    else:
        os.chroot(root.path)
        os.chdir("/")
    # 3. terminal, then the last changes to the root
    if ctx.console_fd >= 0:
        console.setup(ctx.console_fd, steps)
    if "mount" in ctx.namespaces:
        root.finish()
    process.check_cwd(cfg["process"])
    ctx.path = process.find_program(cfg["process"])
    # Until execve, nothing in the container (a `kobako exec` of the same uid) may ptrace us
    # or open our /proc fds: the channel and log (runc's CVE-2016-9962 class).
    prctl.set_dumpable(False)
    ctx.chan.send("READY")


def _wait_for_start(ctx: InitContext) -> int:
    """Block until `start` (create); `run` starts at once. Returns the fd to report to."""
    if ctx.gate_fd < 0:
        return ctx.chan.wfd
    import socket

    ctx.chan.close()
    s = socket.socket(fileno=ctx.gate_fd)
    conn, _ = s.accept()
    s.close()
    conn.recv(1)
    return conn.detach()  # close-on-exec: `start` reads EOF once execve succeeded
