"""The parent's side of a container's life: create, start, run, kill, delete.

create: validate -> state dir -> cgroup -> fork the init (into new pid/time/user
namespaces) -> place it in the cgroup -> GO -> createRuntime hooks on request ->
READY -> state "created". Every step is in a Steps record; any failure unwinds
it all: the init is killed (its mount namespace and mounts die with it), the
cgroup and the state directory are removed.
"""

from __future__ import annotations

import os

from kobako.linux import fs, prctl
from kobako.linux import namespaces as ns
from kobako.runtime import jsonfast, spec, state
from kobako.runtime.errors import RuntimeFailure, describe
from kobako.runtime.steps import Steps
from kobako.runtime.sync import Channel


def oci_state(c: state.Container, status: str) -> str:
    d = c.public(status)
    d["pid"] = c.data.get("pid", 0)
    return jsonfast.dumps(d)


def create(args, log, for_run: bool = False) -> tuple[state.Container, Channel | None]:
    """Validate, claim the id, fork the init, then (while the init builds its
    namespaces and mounts) make the cgroup, which the init joins on GO."""
    spec.check_id(args.id)
    cfg = spec.load(args.bundle)
    if os.geteuid() == 0:  # compiled filters are kept root-only under the state root
        cfg["_seccomp_cache"] = os.path.join(args.root, ".seccomp")
    proc = cfg.get("process")
    if not proc:
        raise RuntimeFailure("config.json has no process to run")
    if proc.get("terminal") and not args.console_socket and not for_run:
        raise RuntimeFailure("process.terminal is true but no --console-socket was given",
                             "pass --console-socket or set process.terminal to false")
    linux = cfg.get("linux") or {}
    steps = Steps(log)
    c = state.Container(args.root, args.id)
    c.make_dir()
    steps.made("mkdir(2)", f"state directory {c.dir}", c.remove_dir)
    chan = None
    try:
        console_fd = gate_fd = -1
        if args.console_socket:
            from kobako.runtime import console

            console_fd = console.connect(args.console_socket)
        elif proc.get("terminal"):  # `run` in a terminal: we are the console socket (runc too)
            import socket

            ours, console_fd = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            c.console = ours
            console_fd = console_fd.detach()
        if not for_run:
            gate_fd = _listen(os.path.join(c.dir, "exec.sock"))
        chan, child = Channel.pair()
        from kobako.runtime.init import InitContext

        ctx = InitContext(args.id, cfg, child, log, gate_fd, console_fd, args.no_pivot,
                          args.no_new_keyring, args.preserve_fds)
        c.data = {
            "ociVersion": cfg.get("ociVersion", "1.0.2"), "id": args.id, "status": "creating", "pid": 0,
            "bundle": cfg["_bundle"], "rootfs": os.path.join(cfg["_bundle"], cfg["root"]["path"]),
            "created": state.now_rfc3339(), "annotations": cfg.get("annotations") or {},
            "_namespaces": [n["type"] for n in linux.get("namespaces") or [] if not n.get("path")],
        }
        c.cfg = cfg
        pid = spawn(ctx, chan, c, steps)
        for fd in (console_fd, gate_fd):
            if fd >= 0:
                os.close(fd)
        child.close()
        if proc.get("oomScoreAdj") is not None:
            fs.write_file(f"/proc/{pid}/oom_score_adj", str(proc["oomScoreAdj"]))
        go = jsonfast.dumps({"state": oci_state(c, "creating"), "cgroup": c.data["_cgroup"]})
        try:
            chan.send("GO", go)
        except BrokenPipeError:  # the init failed early: its ERR line is waiting for us
            pass
        # (after GO: the init waits for nothing else, while this file is only read by `exec`)
        fs.write_file(os.path.join(c.dir, "config.json"), cfg.pop("_raw"), os.O_CREAT | os.O_EXCL)
        while True:
            kind, msg = chan.recv()
            if kind == "READY":
                break
            if kind == "HOOKS":
                from kobako.runtime import hooks

                st = oci_state(c, "creating")
                hooks.run(cfg.get("hooks"), "prestart", st, log)
                hooks.run(cfg.get("hooks"), "createRuntime", st, log)
                chan.send("OK")
            elif kind == "ERR":
                raise RuntimeFailure(msg)
            else:
                raise RuntimeFailure("the container's init exited during create")
        c.data["status"] = "created"
        c.save()
        if args.pid_file:
            write_pid_file(args.pid_file, pid)
        steps.made("state", f"container {args.id} created, init pid {pid}")
        steps.forget()
        c.unlock()
        if not for_run:
            chan.close()
            return c, None
        return c, chan
    except BaseException as exc:
        for e in steps.unwind(exc):
            log.error(e)
        if chan is not None:
            chan.close()
        raise


def spawn(ctx, chan: Channel, c: state.Container, steps: Steps) -> int:
    """Fork the init into its new pid (and time, and user) namespaces and make its
    cgroup, which the init joins itself on GO; return the init's host PID.

    unshare(CLONE_NEWPID) and CLONE_NEWTIME take effect for children only, so
    the parent enters them for its next fork and then returns to its own. With a
    new user namespace an intermediate child is needed, because the pid namespace
    must be owned by the new user namespace (or /proc cannot be mounted).
    The init builds its namespaces and mounts while the parent makes the cgroup.
    """
    cg = _plan_cgroup(c)
    if ctx.userns:
        _make_cgroup(c, cg, steps)
        return _spawn_via_userns(ctx, chan, c, cg, steps)
    if ns.in_user_namespace() and ("pid" in ctx.namespaces or "time" in ctx.namespaces):
        # rootless: once this process leaves its pid namespace it cannot join it again
        # (the host's belongs to the host's user namespace), so a child enters it instead
        return _spawn_via_mid(ctx, chan, c, cg, steps)
    restore = _enter_for_children(ctx.namespaces, ctx.cfg.get("linux") or {}, steps)
    try:
        pid = os.fork()
        if pid == 0:
            chan.close()  # the parent's ends
            for fd, _ in restore:
                os.close(fd)
            c.close_lock()  # flock belongs to the open file: the init must not hold it
            init_main(ctx)
    finally:
        for fd, flag in restore:
            ns.setns(fd, flag, "the runtime's own namespace")
            os.close(fd)
    steps.made("fork(2)", f"init pid {pid}", lambda: _kill_and_reap(pid))
    _record_init(c, pid)
    _make_cgroup(c, cg, steps)  # the init joins it itself on GO (Manager.join_self)
    return pid


def _spawn_via_mid(ctx, chan: Channel, c: state.Container, cg, steps: Steps) -> int:
    prctl.set_child_subreaper()  # the init, grandchild, becomes our child when mid exits
    mid = os.fork()
    if mid == 0:
        try:
            chan.close()
            c.close_lock()
            _premount_root(ctx, c)
            _enter_for_children(ctx.namespaces, ctx.cfg.get("linux") or {}, Steps(ctx.log, "init"))
            pid = os.fork()
            if pid == 0:
                init_main(ctx)
            ctx.chan.send("PID", str(pid))
            os._exit(0)
        except BaseException as e:
            ctx.chan.fail(f"cannot set up the container's root or pid namespace: {describe(e)}")
    steps.made("fork(2)", f"intermediate pid {mid} for the pid namespace", lambda: _kill_and_reap(mid))
    pid = _init_from_mid(chan, mid, c, steps)
    _make_cgroup(c, cg, steps)  # the init joins it itself on GO (Manager.join_self)
    return pid


def _init_from_mid(chan: Channel, mid: int, c: state.Container, steps: Steps) -> int:
    """The init's pid, as the intermediate child that forked it sends it before exiting."""
    kind, msg = chan.recv()
    if kind != "PID":
        raise RuntimeFailure(msg or "the intermediate process exited")
    os.waitpid(mid, 0)
    pid = int(msg)
    steps.made("fork(2)", f"init pid {pid} (PID 1 of its namespace)", lambda: _kill_and_reap(pid))
    _record_init(c, pid)
    return pid


def _premount_root(ctx, c: state.Container) -> None:
    """Rootless: the engine's overlay root is mounted here, outside the container's pid
    namespace, so that where the kernel refuses it a fuse-overlayfs daemon can serve it from
    outside the container (idmap.detached_root); the init attaches the detached mount."""
    from kobako.runtime.rootfs import ROOT_MOUNT_ANNOTATION
    raw = (ctx.cfg.get("annotations") or {}).get(ROOT_MOUNT_ANNOTATION)
    if not raw or "mount" not in ctx.namespaces:
        return
    from kobako.runtime import idmap
    try:
        desc = jsonfast.loads(raw)
    except ValueError:
        return  # the init says so
    ctx.root_tree = idmap.detached_root(desc, os.path.join(c.dir, "rootfs.mnt"))


def _record_init(c: state.Container, pid: int) -> None:
    c.data["pid"] = pid
    c.data["_start_time"] = state.start_time(pid)


def _plan_cgroup(c: state.Container):
    """Where the container's cgroup goes (Manager.plan), decided before the init is forked,
    with the modules that making it needs: an import after fork pays a copy-on-write fault
    for every page it touches, in both processes (about twice its cost, here)."""
    from kobako.runtime.cgroups import Manager

    linux = (c.cfg or {}).get("linux") or {}
    cg = Manager.plan(linux.get("cgroupsPath"), c.id, linux.get("resources"))
    if ns.in_user_namespace() and not cg.writable():
        # rootless without a delegated cgroup: run without one (as runc and crun do), but
        # never drop a limit the container asked for
        limits = sorted(k for k, v in (linux.get("resources") or {}).items() if v and k != "devices")
        if limits:
            why = "cgroup v1 cannot be delegated to a user" if cg.rec["layout"] != "v2" else \
                "no cgroup v2 subtree is delegated to this user"
            raise RuntimeFailure(
                f"a rootless container's limits (linux.resources.{', '.join(limits)}) need a cgroup of "
                f"its own, and {why}",
                "pure cgroup v2 with a subtree delegated to the user (systemd: Delegate=yes for "
                "user@.service); `kobako system check` says what this host lacks, docs/rootless.md how")
        return Manager({"layout": "none", "path": "", "leaves": [], "dirs": []})
    cg.load_writers(linux.get("resources"))
    return cg


def _make_cgroup(c: state.Container, cg, steps: Steps) -> None:
    linux = (c.cfg or {}).get("linux") or {}
    c.data["_cgroup"] = cg.rec
    if cg.rec["layout"] == "none":
        steps.made("no cgroup", "rootless and no cgroup delegated to this user: none made")
        return

    def undo() -> None:
        errors = cg.remove()
        if errors:
            raise RuntimeFailure("; ".join(errors))

    # registered before the mkdirs: a failure halfway removes the ones made
    steps.made("mkdir(2) in cgroupfs", f"cgroup {cg.rec['path']} ({cg.rec['layout']})", undo)
    steps.diagnose(lambda: _oom_during_create(cg.rec, linux.get("resources")))
    cg.create(record=c.save)
    if linux.get("resources"):
        cg.apply(linux["resources"])
        steps.made("write cgroupfs", f"linux.resources applied to {cg.rec['path']}")


def _oom_during_create(rec: dict, res: dict | None) -> str | None:
    """Why an init died before its program ran: the cgroup's OOM killer, if it acted."""
    from kobako.runtime.cgroups import stats
    if stats.oom_kills(rec) <= 0:
        return None
    limit = ((res or {}).get("memory") or {}).get("limit")
    return ("the OOM killer ended the container's init while it was being set up: the memory limit"
            + (f" ({limit} bytes)" if limit else "") + " is too small for it")


def _enter_for_children(nss: dict, linux: dict, steps: Steps) -> list[tuple[int, int]]:
    restore = []
    for t in ("pid", "time"):
        if t not in nss:
            continue
        flag, name = ns.TYPES[t]
        restore.append((os.open(f"/proc/self/ns/{name}", os.O_RDONLY | os.O_CLOEXEC), flag))
        if nss[t]:
            ns.enter(nss[t], flag)
            steps.made("setns(2)", f"{t} namespace {nss[t]} for the init")
        else:
            ns.unshare(flag)
            steps.made("unshare(2)", f"new {t} namespace ({ns.flag_names(flag)}) for the init")
            if t == "time":
                _write_time_offsets("/proc/self/timens_offsets", linux.get("timeOffsets") or {})
    return restore


def _write_time_offsets(path: str, offsets: dict) -> None:
    ids = {"monotonic": 1, "boottime": 7}  # CLOCK_MONOTONIC, CLOCK_BOOTTIME
    lines = "".join(f"{ids[k]} {v.get('secs', 0)} {v.get('nanosecs', 0)}\n" for k, v in offsets.items())
    if lines:
        with open(path, "w") as f:
            f.write(lines)


def _spawn_via_userns(ctx, chan: Channel, c: state.Container, cg, steps: Steps) -> int:
    linux = ctx.cfg.get("linux") or {}
    from kobako.runtime import idmap
    idmapped = idmap.wanted(ctx.cfg)
    prctl.set_child_subreaper()  # the init, grandchild, becomes our child when mid exits
    mid = os.fork()
    if mid == 0:
        try:
            chan.close()
            c.close_lock()
            # join the cgroup while still the host's root: in the new user
            # namespace the cgroupfs files are no longer ours to write
            cg.join_self()
            ctx.cgroup_joined = True
            ch = ctx.chan
            upath = ctx.namespaces["user"]
            if linux.get("seccomp"):  # while the host's root: its compiled-filter cache is root's
                from kobako.runtime import seccomp
                ctx.seccomp = seccomp.prepare(linux["seccomp"], ctx.cfg.get("_seccomp_cache"))
            # namespaces given by path may belong to the host's user namespace: join them while
            # still its root (runc's nsexec does the same), the init then skips them
            for t in ("network", "ipc", "uts"):
                if ctx.namespaces.get(t):
                    ns.enter(ctx.namespaces[t], ns.TYPES[t][0])
                    ctx.prejoined.add(t)
            if idmapped:
                # idmapped layers and volumes, mounted while we are still the host's root;
                # the user namespace is made first, with its maps, to map them through (idmap.py)
                if upath:
                    ufd = os.open(upath, os.O_RDONLY | os.O_CLOEXEC)
                else:
                    ufd = idmap.make_userns(linux.get("uidMappings") or [], linux.get("gidMappings") or [])
                ctx.root_premounted = idmap.setup(ctx.cfg, os.path.join(c.dir, "idmap"), ufd)
                ns.setns(ufd, ns.CLONE_NEWUSER, upath or "the container's user namespace")
                os.close(ufd)
            else:
                if os.geteuid() == 0:  # bind sources staged while we may reach them (idmap.setup)
                    idmap.setup(ctx.cfg, os.path.join(c.dir, "idmap"), None)
                if upath:
                    ns.enter(upath, ns.CLONE_NEWUSER)
                else:
                    ns.unshare(ns.CLONE_NEWUSER)
                    ch.send("MAP")
            if ch.recv()[0] != "OK":
                os._exit(1)
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
            # a credential change clears "dumpable", which hands /proc/self to the
            # host's root: restore it so we can write timens_offsets and the like
            prctl.set_dumpable(True)
            _enter_for_children(ctx.namespaces, linux, Steps(ctx.log, "init"))
            pid = os.fork()
            if pid == 0:
                init_main(ctx)
            ch.send("PID", str(pid))
            os._exit(0)
        except BaseException as e:
            ctx.chan.fail(f"cannot set up the user namespace: {describe(e)}")
    steps.made("fork(2)", f"intermediate pid {mid} for the user namespace", lambda: _kill_and_reap(mid))
    if not ctx.namespaces["user"] and not idmapped:
        kind, msg = chan.recv()
        if kind != "MAP":
            raise RuntimeFailure(msg or "the intermediate process exited")
        write_id_maps(mid, linux)
        steps.made("write uid_map/gid_map", f"user namespace of pid {mid}: "
                   f"{linux.get('uidMappings')} {linux.get('gidMappings')}")
    try:
        chan.send("OK")
    except BrokenPipeError:  # the intermediate failed: its ERR line is waiting
        pass
    pid = _init_from_mid(chan, mid, c, steps)
    c.save()
    return pid


def init_main(ctx) -> None:
    from kobako.runtime import init

    init.main(ctx)
    os._exit(1)


def write_id_maps(pid: int, linux: dict) -> None:
    def fmt(ms: list[dict]) -> str:
        return "".join(f"{m['containerID']} {m['hostID']} {m['size']}\n" for m in ms)

    try:
        with open(f"/proc/{pid}/uid_map", "w") as f:
            f.write(fmt(linux["uidMappings"]))
        with open(f"/proc/{pid}/gid_map", "w") as f:
            f.write(fmt(linux["gidMappings"]))
    except OSError as e:
        raise RuntimeFailure(f"cannot write the user namespace's id maps: {e.strerror}",
                             "mappings must not overlap and need root (or newuidmap) for other ids") from None


class _UnixAddress:
    """A socket path usable however deep it lies: sun_path holds 107 bytes, and a caller's
    --root can be longer than that leaves room for (dockerd's is <exec-root>/runtime-runc/moby,
    and its ids are 64 characters). A longer path is reached through an O_PATH descriptor of
    its directory, /proc/self/fd/N/NAME, (runc's exec.fifo is a FIFO, which has no such limit)."""

    def __init__(self, path: str) -> None:
        self.path, self.fd = path, -1

    def __enter__(self) -> str:
        if len(os.fsencode(self.path)) < 108:
            return self.path
        self.fd = os.open(os.path.dirname(self.path), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        return f"/proc/self/fd/{self.fd}/{os.path.basename(self.path)}"

    def __exit__(self, *exc: object) -> None:
        if self.fd >= 0:
            os.close(self.fd)


def _listen(path: str) -> int:
    import socket

    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with _UnixAddress(path) as address:
        s.bind(address)
    s.listen(1)
    return s.detach()


def write_pid_file(path: str, pid: int) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(str(pid))
    os.rename(tmp, path)


def _kill_and_reap(pid: int) -> None:
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        return
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        _wait_gone(pid)


def _wait_gone(pid: int, timeout: float = 10.0) -> None:
    """Wait for a process that is not our child to disappear."""
    import select

    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return
    try:
        p = select.poll()
        p.register(fd, select.POLLIN)
        p.poll(int(timeout * 1000))
    finally:
        os.close(fd)


# -- start / kill / delete ------------------------------------------------------------
def start(root: str, cid: str, log) -> None:
    c = state.open_existing(root, cid)
    st = c.status()
    if st != "created":
        raise RuntimeFailure(f"cannot start container {cid!r}: it is {st}, not created")
    import socket

    sock = os.path.join(c.dir, "exec.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with _UnixAddress(sock) as address:
            s.connect(address)
        s.sendall(b"S")
        reply = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            reply += chunk
    except OSError as e:
        raise RuntimeFailure(f"cannot start container {cid!r}: its init is not waiting",
                             e.strerror) from None
    finally:
        s.close()
        try:
            os.unlink(sock)
        except FileNotFoundError:
            pass
    if reply.startswith(b"ERR "):
        raise RuntimeFailure(reply[4:].decode().strip())
    cfg = c.config()
    from kobako.runtime import hooks

    if hooks.has(cfg.get("hooks"), "poststart"):
        hooks.run_logged(cfg["hooks"], "poststart", oci_state(c, "running"), log)


def signal_number(sig: str | None) -> int:
    if not sig:
        return 15
    s = sig.upper()
    if s.isdigit():
        if not 0 < int(s) <= 64:
            raise RuntimeFailure(f"unknown signal {sig!r}", "signal numbers run from 1 to 64")
        return int(s)
    import _signal

    name = s if s.startswith("SIG") else "SIG" + s
    # _signal also holds SIG_DFL, SIG_IGN, SIG_BLOCK...: no real signal name has a '_'
    num = getattr(_signal, name, None) if "_" not in name else None
    if not isinstance(num, int):
        raise RuntimeFailure(f"unknown signal {sig!r}")
    return num


def kill(root: str, cid: str, sig: str | None, all_procs: bool) -> None:
    signum = signal_number(sig)
    c = state.open_existing(root, cid)
    st = c.status()
    if st == "stopped":
        raise RuntimeFailure(f"container {cid!r} is not running")
    if all_procs:
        from kobako.runtime.cgroups import manager_for

        for p in manager_for(c.data).pids():
            try:
                os.kill(p, signum)
            except ProcessLookupError:
                pass
    else:
        os.kill(c.data["pid"], signum)


def delete(root: str, cid: str, force: bool, log) -> None:
    spec.check_id(cid)
    c = state.Container(root, cid)
    c.lock()
    if not os.path.exists(os.path.join(c.dir, "state.json")):
        # a create killed before its first state write: nothing was made but the dir
        c.remove_dir()
        c.unlock()
        return
    c.load()
    st = c.status()
    if st not in ("stopped", "created") and not force:
        raise RuntimeFailure(f"cannot delete container {cid!r}: it is {st}",
                             "stop it first or use delete --force")
    destroy(c, log)


def destroy(c: state.Container, log, cfg: dict | None = None) -> None:
    """Kill whatever is left, remove the cgroup and the state; run poststop hooks."""
    from kobako import steps as record
    from kobako.runtime import hooks
    from kobako.runtime.cgroups import manager_for

    cg = manager_for(c.data)
    if c.init_alive():
        if cg.frozen():
            try:
                cg.freeze(False)
            except RuntimeFailure:
                pass
        _kill_and_reap(c.data["pid"])
        record.show("runtime", "undo: kill(2) SIGKILL, waitpid(2)", f"init pid {c.data['pid']}")
    errors = cg.remove()  # kills what is left in the cgroup first (a shared pid namespace)
    record.show("runtime", "undo: rmdir(2) in cgroupfs", f"cgroup {cg.rec.get('path')} removed"
                + (f" ({'; '.join(errors)})" if errors else ""))
    if cfg is None:
        try:
            cfg = c.config()
        except (OSError, ValueError):
            cfg = {}
    if hooks.has(cfg.get("hooks"), "poststop"):
        hooks.run_logged(cfg["hooks"], "poststop", oci_state(c, "stopped"), log)
    c.remove_dir()
    record.show("runtime", "undo: rm -r", f"state directory {c.dir} removed")
    c.unlock()
    if errors:
        raise RuntimeFailure("; ".join(errors))

