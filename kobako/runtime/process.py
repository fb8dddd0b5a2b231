"""The container's process, last steps before execve: rlimits, user and groups,
all five capability sets, no_new_privs, cwd, and no fd of the runtime left open.
Shared by the init (create/run) and by exec."""

from __future__ import annotations

import _signal  # built in: still importable after pivot_root
import os

from kobako import steps as record  # (imported here: after pivot_root nothing can be)
from kobako.linux import capabilities, fs, libc, prctl
from kobako.runtime.errors import RuntimeFailure
from kobako.runtime.spec import RLIMITS

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def find_program(proc: dict) -> str:
    """Resolve args[0] inside the (already entered) root, as execvp would."""
    prog = proc["args"][0]
    if "/" in prog:
        candidates = [prog if prog.startswith("/") else os.path.join(proc.get("cwd") or "/", prog)]
    else:
        path = next((e[5:] for e in proc.get("env") or [] if e.startswith("PATH=")), DEFAULT_PATH)
        candidates = [os.path.join(d or ".", prog) for d in path.split(":")]
    for c in candidates:
        try:
            st = os.stat(c)
        except OSError:
            continue
        if not (st.st_mode & 0o170000 == 0o100000):
            continue
        if os.access(c, os.X_OK):
            return c
        raise RuntimeFailure(f"exec: {prog!r}: permission denied", f"{c} is not executable")
    if "/" in prog:
        # runc's words: the docker CLI looks for "no such file or directory" to exit 127
        raise RuntimeFailure(f"exec: {prog!r}: stat {prog}: no such file or directory")
    raise RuntimeFailure(f"exec: {prog!r}: executable file not found in $PATH")


def setgroups_allowed() -> bool:
    """False in a user namespace whose /proc/PID/setgroups says deny."""
    try:
        with open("/proc/self/setgroups") as f:
            return f.read().strip() == "allow"
    except OSError:
        return True


def set_rlimits(proc: dict, steps) -> None:
    if not proc.get("rlimits"):
        return
    for r in proc["rlimits"]:
        # prlimit(2) through libc: the `resource` module is one more shared library to load
        # (values were checked to be 0 <= soft <= hard < 2**64 with the config)
        limits = libc.u64(r["soft"], r["hard"])  # struct rlimit
        if libc.LIBC.prlimit(0, RLIMITS[r["type"]], limits, None) == -1:
            raise RuntimeFailure(f"cannot set {r['type']} to {r['soft']}:{r['hard']}: "
                                 f"{os.strerror(libc.errno())}",
                                 "a hard limit above the runtime's own needs CAP_SYS_RESOURCE")
        steps.made("setrlimit(2)", f"{r['type']} soft={r['soft']} hard={r['hard']}")


def become(proc: dict, steps, setgroups_allowed: bool = True, filt=None) -> None:
    """Drop to the configured user with exactly the configured capabilities.

    A seccomp filter (`filt`) needs no_new_privs or CAP_SYS_ADMIN to load: without
    noNewPrivileges it is loaded here, while we still hold every capability (runc's
    order); with it, `execute` loads it right before execve."""
    if filt is not None and not proc.get("noNewPrivileges"):
        filt.load()
        steps.made("seccomp(2) SECCOMP_SET_MODE_FILTER", f"filter of {filt.rules} rules loaded")
    caps = proc.get("capabilities") or {}
    top = capabilities.last_cap()
    masks = {k: capabilities.to_mask(caps.get(k), top) for k in
             ("bounding", "effective", "permitted", "inheritable", "ambient")}
    if "capabilities" in proc:
        # a set left out is empty, as in runc: containerd omits `bounding` when a pod drops ALL
        capabilities.drop_bounding(masks["bounding"], top)
        steps.made("prctl(2) PR_CAPBSET_DROP",
                   "capability bounding set: " + (" ".join(caps.get("bounding") or []) or "empty"))
    user = proc.get("user") or {}
    uid, gid = user.get("uid", 0), user.get("gid", 0)
    prctl.set_keepcaps(True)
    extra = user.get("additionalGids") or []
    if setgroups_allowed:
        os.setgroups(extra)
    elif extra:
        raise RuntimeFailure("additionalGids needs setgroups, which this user namespace denies")
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    prctl.set_keepcaps(False)
    steps.made("setresuid(2)/setresgid(2)", f"uid={uid} gid={gid} groups={extra}")
    capabilities.capset(masks["effective"], masks["permitted"], masks["inheritable"])
    steps.made("capset(2)", "capabilities: effective, permitted, inheritable sets")
    refused = capabilities.raise_ambient(masks["ambient"])
    if refused:  # runc only warns too: ambient needs each cap in permitted and inheritable
        steps.log.debug(f"ambient capabilities not raised (not inheritable): {' '.join(refused)}")
    if "umask" in user:
        os.umask(user["umask"])
    else:
        os.umask(0o022)
    if proc.get("noNewPrivileges"):
        prctl.set_no_new_privs()
        steps.made("prctl(2) PR_SET_NO_NEW_PRIVS", "no_new_privs set")


def check_cwd(proc: dict) -> None:
    """At create, inside the new root: a missing cwd is made (as runc and Docker do);
    one that is not a directory fails create, not start."""
    cwd = proc.get("cwd") or "/"
    try:
        os.makedirs(cwd, 0o755, exist_ok=True)
    except FileExistsError:
        raise RuntimeFailure(f"working directory {cwd} is not a directory") from None
    except OSError as e:
        raise RuntimeFailure(f"cannot create working directory {cwd}: {e.strerror}") from None


def enter_cwd(proc: dict) -> None:
    cwd = proc.get("cwd") or "/"
    try:
        os.chdir(cwd)
    except OSError as e:
        raise RuntimeFailure(f"cannot enter working directory {cwd}: {e.strerror}") from None
    # CVE-2024-21626: a cwd reached through a leaked host fd reads "(unreachable)"
    # (glibc's getcwd fails with ENOENT there)
    try:
        here = os.getcwd()
    except FileNotFoundError:
        here = "(unreachable)"
    except OSError:  # getcwd itself refused (a seccomp filter may block it): judge by inode
        here = cwd if _same_file(".", cwd) else "(unreachable)"
    if not here.startswith("/"):
        raise RuntimeFailure(f"working directory {cwd} is outside the container's root")


def _same_file(a: str, b: str) -> bool:
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def reset_signals() -> None:
    """Python ignores SIGPIPE and SIGXFSZ, and ignored signals survive execve: a
    container would start with `yes | head` spinning forever. Give the program
    default dispositions and an empty signal mask, as runc does."""
    for sig in range(1, _signal.NSIG):
        if sig in (_signal.SIGKILL, _signal.SIGSTOP):
            continue
        try:
            if _signal.getsignal(sig) is _signal.SIG_IGN:
                _signal.signal(sig, _signal.SIG_DFL)
        except (OSError, ValueError):
            pass  # signals the kernel or libc reserve (32, 33)
    _signal.pthread_sigmask(_signal.SIG_SETMASK, [])


def execute(path: str, proc: dict, preserve_fds: int = 0, filt=None) -> None:
    """Close every fd but stdio (and preserved ones) on exec, load the seccomp filter
    (when no_new_privs allows it this late), then execve."""
    reset_signals()
    fs.cloexec_from(3 + preserve_fds)
    if filt is not None and proc.get("noNewPrivileges"):
        filt.load()  # from here on, only execve itself must pass the filter
    env = proc.get("env") or []
    envd = {}
    for e in env:
        k, _, v = e.partition("=")
        envd[k] = v
    if "HOME" not in envd:
        envd["HOME"] = "/root" if (proc.get("user") or {}).get("uid", 0) == 0 else "/"
    record.show("init", "execve(2)", f"{path} {proc['args'][1:]} (the container's program; PID 1)")
    try:
        os.execve(path, proc["args"], envd)
    except OSError as e:
        raise RuntimeFailure(f"exec {proc['args'][0]!r}: {e.strerror}") from None
