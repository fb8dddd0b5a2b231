"""Rootless kobako: an ordinary user's engine, in a user namespace of the user's own.

A user with a subordinate id range (/etc/subuid, /etc/subgid: what Debian's `useradd`
writes) gets one long-lived user namespace in which the user's own uid is root and the
range is ids 1..N, made by the setuid helpers `newuidmap`/`newgidmap` (package uidmap).
A small "pause" process keeps that namespace, and a mount namespace made inside it, alive
between commands (podman's pause process is the model); every kobako command the user
runs joins both before it does anything else, so all of them see one mapping and one set
of mounts:

    host                       the user's namespace           a container
    uid 1001 (the user)   ->   0 (root)                  ->   0
    uid 3000000000..+65535 ->  1..65536                   ->  1..65536

Containers live in that namespace (no namespace of their own unless --userns asks): root
inside is the user outside, and a file the container's root writes into a bind-mounted
home directory is the user's. Layers are unpacked inside it, so their owners land in the
range; overlay mounts are made inside it (kernel >= 5.11) with user.* xattrs.

The store is the user's: $XDG_DATA_HOME/kobako (~/.local/share/kobako) and
$XDG_RUNTIME_DIR/kobako, decided before joining (inside, the user is uid 0 and would get
root's paths) and passed on in KOBAKO_ROOT / KOBAKO_RUN. Root's store is never touched:
root's files are not even writable from inside (unmapped ids are nobody).
"""

from __future__ import annotations

import os
import pwd

from kobako import paths
from kobako.errors import Unavailable
from kobako.linux.fs import read_all

PAUSE_NAME = "kobako-pause"
SUBID_NEED = 65536  # what podman and docker ask for: ids 0..65535 of an image map


class RootlessError(Unavailable):
    """The host is not set up for this user's rootless containers; the hint says how."""


def subids(path: str, user: str, uid: int) -> list[tuple[int, int]]:
    """The user's (start, count) ranges in /etc/subuid or /etc/subgid (by name or by uid)."""
    ranges = []
    try:
        with open(path) as f:
            for line in f:
                parts = line.strip().split(":")
                if len(parts) != 3 or parts[0] not in (user, str(uid)):
                    continue
                try:
                    start, count = int(parts[1]), int(parts[2])
                except ValueError:
                    continue
                if count > 0:
                    ranges.append((start, count))
    except FileNotFoundError:
        pass
    return ranges


def id_map_args(own: int, ranges: list[tuple[int, int]]) -> list[str]:
    """newuidmap's arguments after the pid: the user's own id as 0, then each range from 1."""
    args, inside = ["0", str(own), "1"], 1
    for start, count in ranges:
        args += [str(inside), str(start), str(count)]
        inside += count
    return args


HELPER_DIRS = ("/usr/bin", "/usr/sbin", "/bin", "/sbin", "/usr/local/bin")


def check_helper(name: str, dirs: tuple[str, ...] = HELPER_DIRS) -> str:
    """The path of newuidmap/newgidmap, or RootlessError saying how to get a usable one."""
    for d in dirs:
        p = os.path.join(d, name)
        if os.path.exists(p):
            st = os.stat(p)
            if st.st_uid != 0 or not st.st_mode & 0o4000:
                raise RootlessError(f"{p} is not setuid root: rootless kobako needs it to map the "
                                    "user's subordinate ids",
                                    hint=f"reinstall it (apt-get install --reinstall uidmap) or "
                                         f"chmod u+s {p}")
            return p
    raise RootlessError(f"{name} not found: rootless kobako maps the user's subordinate ids with it",
                        hint="install it: apt-get install uidmap (as root)")


def _ranges(user: str, uid: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    uids, gids = subids("/etc/subuid", user, uid), subids("/etc/subgid", user, uid)
    for ranges, path, kind in ((uids, "/etc/subuid", "uids"), (gids, "/etc/subgid", "gids")):
        if sum(c for _, c in ranges) < SUBID_NEED:
            have = f"only {sum(c for _, c in ranges)} ids" if ranges else "no range"
            from kobako.engine import hostcheck  # (only on this failure)
            taken = []
            for p in ("/etc/subuid", "/etc/subgid"):
                try:
                    with open(p) as f:
                        taken += [(first, n) for _, first, n in hostcheck.parse_subids(f.read())]
                except OSError:
                    pass
            first = hostcheck.free_range(taken, SUBID_NEED)
            raise RootlessError(
                f"user {user} has {have} in {path}: rootless containers need {SUBID_NEED} subordinate {kind}",
                hint=f"as root: usermod --add-subuids {first}-{first + SUBID_NEED - 1} --add-subgids "
                     f"{first}-{first + SUBID_NEED - 1} {user} (a range no other user has)")
    return uids, gids


def _pause_pid(pidfile: str, uid: int) -> int | None:
    """The pid of this user's pause process, if the pid file names one that is alive."""
    try:
        with open(pidfile) as f:
            pid = int(f.read().strip() or 0)
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if f.read().split(b"\0")[0] != PAUSE_NAME.encode():
                return None  # the pid was reused by something else
        if os.stat(f"/proc/{pid}").st_uid != uid:
            return None
        return pid
    except (OSError, ValueError):
        return None


def _become_pause() -> None:
    """This (forked, session-leading) process becomes the pause process: nothing of the
    command's open, then `sleep infinity` named kobako-pause, ~1 MB resident."""
    os.chdir("/")
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.closerange(3, 1 << 16)
    os.execv("/bin/sleep", [PAUSE_NAME, "infinity"])


def _start_pause(pidfile: str, user: str, uid: int, gid: int) -> int:
    """Make the user namespace (mapped by newuidmap/newgidmap) and its mount namespace, held
    by a pause process that outlives this command; return its pid."""
    uids, gids = _ranges(user, uid)
    newuidmap, newgidmap = check_helper("newuidmap"), check_helper("newgidmap")
    from kobako.linux import namespaces as ns

    to_parent_r, to_parent_w = os.pipe()
    to_child_r, to_child_w = os.pipe()
    first = os.fork()
    if first == 0:  # the pause process's parent: only there to let it be re-parented to init
        try:
            os.close(to_parent_r)
            os.close(to_child_w)
            os.setsid()
            if os.fork():
                os._exit(0)
            ns.unshare(ns.CLONE_NEWUSER)
            os.write(to_parent_w, f"{os.getpid()}\n".encode())
            if os.read(to_child_r, 1) != b"m":  # the maps are written
                os._exit(1)
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
            # made from a less privileged user namespace, its mounts are slaves of the
            # host's: host mounts still show up, the user's never leak out
            ns.unshare(ns.CLONE_NEWNS)
            os.write(to_parent_w, b"ok\n")
            _become_pause()
        except BaseException as e:
            try:
                os.write(to_parent_w, f"error {e}\n".encode())
            except OSError:
                pass
        os._exit(1)
    os.close(to_parent_w)
    os.close(to_child_r)
    os.waitpid(first, 0)
    got = b""
    while b"\n" not in got:
        chunk = os.read(to_parent_r, 256)
        if not chunk:
            break
        got += chunk
    try:
        pid = int(got.split(b"\n")[0])
    except ValueError:
        os.close(to_parent_r)
        os.close(to_child_w)
        raise RootlessError(f"cannot make a user namespace: {got.decode(errors='replace').strip()}",
                            hint="see `kobako system check`: user namespaces may be disabled "
                                 "(sysctl user.max_user_namespaces, kernel.unprivileged_userns_clone)")
    import subprocess

    try:
        for tool, own, ranges in ((newuidmap, uid, uids), (newgidmap, gid, gids)):
            r = subprocess.run([tool, str(pid), *id_map_args(own, ranges)], capture_output=True, text=True)
            if r.returncode:
                raise RootlessError(f"{os.path.basename(tool)} failed for user {user}: "
                                    f"{r.stderr.strip() or r.stdout.strip()}",
                                    hint="check the user's ranges in /etc/subuid and /etc/subgid "
                                         "and that the helper is setuid root")
        os.write(to_child_w, b"m")
        rest = read_all(to_parent_r).decode(errors="replace")
    except BaseException:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
        raise
    finally:
        os.close(to_child_w)
        os.close(to_parent_r)
    if not rest.startswith("ok"):
        raise RootlessError(f"cannot set up the user namespace: {rest.strip()}")
    paths.atomic_write(pidfile, f"{pid}\n".encode(), mode=0o600, durable=False)
    return pid


def host_ids() -> tuple[int, int] | None:
    """The user's own uid and gid on the host, in a rootless process (None for root)."""
    v = os.environ.get("KOBAKO_ROOTLESS_IDS", "")
    uid, _, gid = v.partition(":")
    return (int(uid), int(gid)) if uid.isdigit() and gid.isdigit() else None


def namespace_extents(kind: str) -> list[tuple[int, int]]:
    """(first id, count) of each line of the user's namespace's map (kind "u" or "g"), in the
    namespace's own ids: the user's own id at 0, then each subordinate range."""
    with open(f"/proc/self/{kind}id_map") as f:
        return sorted((int(x[0]), int(x[2])) for x in (line.split() for line in f) if x)


def _monitor_pid(run: str, uid: int) -> int | None:
    """The user's running monitor (it holds the user's containers), if one answers on its
    socket: a process in the user's namespaces even when the pause process is gone."""
    import json
    import socket
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        s.connect(os.path.join(run, "monitor.sock"))
        s.sendall(b'{"op": "ping"}\n')
        pid = int(json.loads(s.makefile().readline())["pid"])
        if os.stat(f"/proc/{pid}").st_uid != uid or \
                os.stat(f"/proc/{pid}/ns/user").st_ino == os.stat("/proc/self/ns/user").st_ino:
            return None
        return pid
    except (OSError, ValueError, KeyError, TypeError):
        return None
    finally:
        s.close()


def _respawn_pause(pidfile: str) -> int:
    """A new pause process in the namespaces this process has just joined (the monitor's): the
    containers still running there stay within reach of the user's next commands."""
    r, w = os.pipe()
    first = os.fork()
    if first == 0:
        try:
            os.close(r)
            os.setsid()
            pid = os.fork()
            if pid:
                os.write(w, f"{pid}\n".encode())
                os._exit(0)
            _become_pause()
        finally:
            os._exit(1)
    os.close(w)
    got = read_all(r)
    os.close(r)
    os.waitpid(first, 0)
    pid = int(got.split()[0])
    paths.atomic_write(pidfile, f"{pid}\n".encode(), mode=0o600, durable=False)
    return pid


def _join(pid: int) -> None:
    from kobako.linux import namespaces as ns
    userfd = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    mntfd = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    try:
        ns.setns(userfd, ns.CLONE_NEWUSER, "the user's kobako namespace")
        ns.setns(mntfd, ns.CLONE_NEWNS, "the user's kobako mount namespace")
    finally:
        os.close(userfd)
        os.close(mntfd)


def enter() -> None:
    """Join the calling user's namespace (made first if need be); no-op for root and for a
    process already inside. Must run before anything starts a thread (setns on a user
    namespace requires a single-threaded caller)."""
    if os.geteuid() == 0:
        return
    uid, gid = os.getuid(), os.getgid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    # paths are decided now: once inside, the user is uid 0 and would get root's
    data, run = paths.data_root(), paths.run_root()
    os.environ["KOBAKO_ROOT"], os.environ["KOBAKO_RUN"] = data, run
    os.environ["KOBAKO_ROOTLESS_IDS"] = f"{uid}:{gid}"  # for --userns keep-id
    pidfile = os.path.join(run, "pause.pid")
    if _pause_pid(pidfile, uid) is None:  # a host not set up for it: refused before anything is made
        _ranges(user, uid)
        check_helper("newuidmap")
        check_helper("newgidmap")
    os.makedirs(run, mode=0o700, exist_ok=True)
    cwd = os.getcwd()
    with paths.FileLock(os.path.join(run, "pause.lock")):
        pid = _pause_pid(pidfile, uid)
        if pid is not None:
            _join(pid)
        else:
            monitor = _monitor_pid(run, uid)
            if monitor is not None:  # the pause process was killed: its namespaces live on
                _join(monitor)
                _respawn_pause(pidfile)
            else:
                _join(_start_pause(pidfile, user, uid, gid))
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    try:
        os.chdir(cwd)  # joining a mount namespace moves the cwd to its root
    except OSError:
        os.chdir("/")
