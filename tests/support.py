"""Helpers for the tests (imported as `support`; conftest.py holds the fixtures)."""

from __future__ import annotations

import array
import json
import os
import re
import select
import shutil
import socket
import subprocess
import time
from pathlib import Path

CGROUP_ROOT = "/sys/fs/cgroup"
# Waits for events are upper bounds, never measurements: on a slow machine (the cgroup v2
# suite's emulated VM, tests/v2vm/suite.sh) KOBAKO_TEST_TIME_SCALE stretches them.
TIME_SCALE = float(os.environ.get("KOBAKO_TEST_TIME_SCALE") or 1)


# -- which runtime ----------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def runtime_binary() -> str:
    return os.environ.get("KOBAKO_TEST_RUNTIME") or "kobako-runtime"


def runtime_name() -> str:
    return os.path.basename(runtime_binary())


def is_kobako() -> bool:
    return "kobako" in os.path.basename(runtime_binary())


def lacks(runtimes: str, reason: str):
    """Skip a test of a feature the named other runtimes (space-separated) lack.
    Never skips for kobako-runtime: there a missing feature is a failure."""
    import pytest

    name = os.path.basename(runtime_binary())
    if not is_kobako() and name in runtimes.split():
        pytest.skip(f"{name} lacks this: {reason}")


def add_caps(*caps):
    """A config edit adding caps to the bounding, effective and permitted sets."""
    def edit(cfg):
        for k in ("bounding", "effective", "permitted"):
            cfg["process"]["capabilities"][k] = list(cfg["process"]["capabilities"].get(k) or []) + list(caps)
    return edit


# -- the session's record ------------------------------------------------------------------


class _Session:
    def __init__(self) -> None:
        self.tag = f"kt{os.getpid()}"
        self.base = ""
        self.roots: list[str] = []
        self.count = 0

    def new_id(self, tag: str = "") -> str:
        self.count += 1
        return f"{self.tag}-{tag + '-' if tag else ''}{self.count}"

    def leftover_state(self) -> list[str]:
        out = []
        for r in self.roots:
            try:
                names = os.listdir(r)
            except FileNotFoundError:
                continue
            # .seccomp: the runtime's cache of compiled filters, kept on purpose
            out += [f"state dir {r}/{n}" for n in names
                    if os.path.isdir(os.path.join(r, n)) and n != ".seccomp"]
        return out


SESSION = _Session()


# -- bundles --------------------------------------------------------------------------------


class Bundle:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.rootfs = self.path / "rootfs"
        self.config = json.loads((self.path / "config.json").read_text())

    def write(self) -> None:
        (self.path / "config.json").write_text(json.dumps(self.config, indent=1))

    def edit(self, fn) -> Bundle:
        fn(self.config)
        self.write()
        return self

    def add_bind(self, source: str | Path, destination: str, options=("rbind", "rw")) -> Bundle:
        self.config.setdefault("mounts", []).append(
            {"destination": destination, "type": "bind", "source": str(source), "options": list(options)})
        self.write()
        return self

    def add_hook(self, kind: str, path: str, args=None, env=None, timeout=None) -> Bundle:
        h = {"path": path}
        if args is not None:
            h["args"] = list(args)
        if env is not None:
            h["env"] = list(env)
        if timeout is not None:
            h["timeout"] = timeout
        self.config.setdefault("hooks", {}).setdefault(kind, []).append(h)
        self.write()
        return self

    def __str__(self) -> str:
        return str(self.path)

    def __fspath__(self) -> str:
        return str(self.path)


def set_dotted(cfg: dict, key: str, value) -> None:
    parts = key.split(".")
    d = cfg
    for p in parts[:-1]:
        d = d.setdefault(p, {})
    d[parts[-1]] = value


def namespaces(cfg: dict) -> list[dict]:
    return cfg.setdefault("linux", {}).setdefault("namespaces", [])


def add_namespace(cfg: dict, typ: str) -> None:
    if not any(n["type"] == typ for n in namespaces(cfg)):
        namespaces(cfg).append({"type": typ})


def write_script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


# -- assertions -------------------------------------------------------------------------------


def assert_clean_error(cp: subprocess.CompletedProcess, *words: str) -> str:
    """A user error: non-zero exit, no traceback, one line naming the runtime.
    Returns that line. (Against another runtime only the first two are checked.)"""
    assert cp.returncode != 0, f"expected a failure, got exit 0\nstdout: {cp.stdout}\nstderr: {cp.stderr}"
    assert "Traceback" not in cp.stderr + cp.stdout, f"a traceback reached the user:\n{cp.stderr}"
    lines = [x for x in cp.stderr.splitlines() if x.strip()]
    assert lines, "the failure printed nothing on stderr"
    if not is_kobako():
        return lines[-1]
    assert len(lines) == 1, "expected one error line, got:\n" + cp.stderr
    assert lines[0].startswith("kobako-runtime:"), f"error line does not name the runtime: {lines[0]!r}"
    assert "internal error" not in lines[0], f"a bug surfaced as an internal error: {lines[0]!r}"
    low = lines[0].lower()
    for w in words:
        assert w.lower() in low, f"error line does not mention {w!r}: {lines[0]!r}"
    return lines[0]


def wait_for(pred, timeout: float = 10.0, what: str = "condition") -> None:
    """Poll until pred() is true (for events, not to measure time)."""
    end = time.monotonic() + timeout * TIME_SCALE
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def pid_alive(pid: int) -> bool:
    """True while pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return data[data.rindex(")") + 2] not in "ZX"


def proc_status(pid: int | str, field: str) -> str:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return line.split(":", 1)[1].strip()
    raise KeyError(field)


# -- capabilities ---------------------------------------------------------------------------------

# A copy of linux/capability.h's numbering on purpose, not kobako.linux.capabilities.NAMES:
# the tests' oracle must not share a mistake with the code it checks.
CAPS = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
]


def cap_mask(names) -> int:
    return sum(1 << CAPS.index(n) for n in set(names))


def cap_lines(text: str) -> dict[str, int]:
    """CapInh/CapPrm/CapEff/CapBnd/CapAmb lines of /proc/PID/status -> masks."""
    return {k: int(v, 16) for k, v in re.findall(r"^(Cap\w+):\s*([0-9a-f]+)$", text, re.M)}


# -- host objects: mounts, cgroups, netns, links ------------------------------------------------------


def mountinfo_lines() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return f.read().splitlines()


def unmount_and_remove(d: Path) -> None:
    """What a test's private daemon left under `d`: every mount there (deepest first, lazily),
    then the directory."""
    for line in reversed(mountinfo_lines()):
        target = line.split()[4]
        if target.startswith(str(d)):
            subprocess.run(["umount", "-l", target], capture_output=True)
    shutil.rmtree(d, ignore_errors=True)


def remove_containerd_run_dirs() -> None:
    """/run/containerd (fifo/, s/), which a private containerd's ctr and shim make whatever its
    state dir: removed only if empty, so nothing of anyone else's goes (call it only when the
    test found no /run/containerd before it began)."""
    for sub in ("/run/containerd/fifo", "/run/containerd/s", "/run/containerd"):
        try:
            os.rmdir(sub)
        except OSError:
            pass


def is_mountpoint(path: str | Path) -> bool:
    p = os.path.realpath(path)
    return any(line.split()[4] == p for line in mountinfo_lines())


def cgroup_walk(maxdepth: int = 5):
    base_depth = CGROUP_ROOT.rstrip("/").count("/")
    for dirpath, dirnames, _ in os.walk(CGROUP_ROOT):
        depth = dirpath.count("/") - base_depth
        if depth >= maxdepth:
            dirnames[:] = []
        yield dirpath


def cgroup_dirs(name: str) -> list[str]:
    """Cgroup directories named exactly name (the container id), in any hierarchy."""
    return [d for d in cgroup_walk() if os.path.basename(d) == name]


def cgroup_pids(name: str) -> set[int]:
    out: set[int] = set()
    for d in cgroup_dirs(name):
        try:
            with open(os.path.join(d, "cgroup.procs")) as f:
                out.update(int(x) for x in f.read().split())
        except OSError:
            pass
    return out


def kill_container_procs(cid: str) -> None:
    """SIGKILL what is left in the container's cgroups (processes the test made)."""
    for d in cgroup_dirs(cid):
        fz = os.path.join(d, "freezer.state")
        if os.path.exists(fz):
            try:
                Path(fz).write_text("THAWED")
            except OSError:
                pass
    for pid in cgroup_pids(cid):
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass


def remove_cgroup_dirs(cid: str) -> None:
    for d in sorted(cgroup_dirs(cid), key=len, reverse=True):
        for _ in range(100):
            try:
                os.rmdir(d)
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.02)


def _run(argv: list[str]) -> str:
    if not shutil.which(argv[0]):
        return ""
    return subprocess.run(argv, capture_output=True, text=True).stdout


def snapshot() -> dict[str, set[str]]:
    tag, base = SESSION.tag, SESSION.base
    mounts = set()
    for line in mountinfo_lines():
        f = line.split()
        sep = f.index("-")
        source, target = f[sep + 2], f[4]
        if any(s and (s in source or s in target) for s in ("kobako", base, tag)):
            mounts.add(f"{source} on {target}")
    links = {x.split("@")[0] for x in re.findall(r"^\d+:\s+(\S+?):", _run(["ip", "-o", "link", "show"]), re.M)
             if x.startswith(("kb", "kobako", "veth"))}
    netns = {x.split()[0] for x in _run(["ip", "netns", "list"]).splitlines() if x.strip()}
    cgroups = {d for d in cgroup_walk() if "kobako" in d[len(CGROUP_ROOT):] or tag in d}
    tables = {x for x in _run(["nft", "list", "tables"]).splitlines() if "kobako" in x}
    return {"mount": mounts, "link": links, "netns": netns, "cgroup": cgroups, "nft": tables}


def compare(before: dict, after: dict) -> tuple[list[str], list[str]]:
    """(leaked by this session, new but not attributable to it)."""
    leaked, foreign = [], []
    for kind in after:
        for obj in sorted(after[kind] - before[kind]):
            ours = SESSION.tag in obj or (SESSION.base and SESSION.base in obj) or kind != "cgroup"
            (leaked if ours else foreign).append(f"{kind}: {obj}")
    return leaked, foreign


# -- the console socket ---------------------------------------------------------------------------


class ConsoleSocket:
    """Listens on a unix socket for the pty master a runtime sends (SCM_RIGHTS)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(1)
        self.master = -1

    def receive(self, timeout: float = 20) -> int:
        """Accept the runtime's connection and take the master fd it sends."""
        self.sock.settimeout(timeout)
        conn, _ = self.sock.accept()
        with conn:
            conn.settimeout(timeout)
            fds = array.array("i")
            msg, anc, _, _ = conn.recvmsg(1024, socket.CMSG_SPACE(4 * fds.itemsize))
            for level, typ, data in anc:
                if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
                    fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
        assert len(fds) == 1, f"expected one fd over the console socket, got {list(fds)}"
        self.master = fds[0]
        return self.master

    def read_until(self, needle: bytes, timeout: float = 20) -> bytes:
        out = b""
        end = time.monotonic() + timeout
        while needle not in out and time.monotonic() < end:
            r, _, _ = select.select([self.master], [], [], 0.2)
            if not r:
                continue
            try:
                chunk = os.read(self.master, 4096)
            except OSError:  # EIO: the slave side is closed
                break
            if not chunk:
                break
            out += chunk
        return out

    def close(self) -> None:
        if self.master >= 0:
            os.close(self.master)
            self.master = -1
        self.sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
