"""Fixtures shared by every test: a busybox root filesystem, OCI bundles, a runtime
caller that cleans up after itself, and a session-wide check that nothing kobako
made (mounts, cgroups, netns, links, state) outlives the suite.

The runtime under test is `kobako-runtime` unless KOBAKO_TEST_RUNTIME names another
(KOBAKO_TEST_RUNTIME=runc runs the same integration tests against runc).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import support

# -- markers ---------------------------------------------------------------------------


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("root") and os.geteuid() != 0:
        pytest.skip("needs root (namespaces, mounts, cgroups)")


# -- the session's scratch space and leak check ------------------------------------------


@pytest.fixture(scope="session")
def session_base() -> Path:
    """A short scratch directory (unix socket paths must stay under 108 bytes).
    Not pytest's tmp_path: its later clean-up is an rm -rf that must never meet a
    leaked bind mount."""
    base = Path(tempfile.mkdtemp(prefix=f"kbt{os.getpid()}.", dir="/tmp"))
    base.chmod(0o755)  # a user namespace's root (host uid 100000) must reach the bundles
    support.SESSION.base = str(base)
    yield base
    if any(str(base) in line for line in support.mountinfo_lines()):
        return  # leaked mount under base: never rm -rf across it (the leak check reports it)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def no_leaks_check(session_base: Path):
    """Snapshot kobako-named kernel objects now; at the end, fail if new ones remain."""
    before = support.snapshot()
    yield
    # a cgroup rmdir racing the last exit is the runtime's job, not ours; an idle bridge goes
    # KOBAKO_NET_LINGER (2 s) after its last container's exit, in a background process
    for _ in range(40):
        time.sleep(0.2)
        after = support.snapshot()
        leaked, foreign = support.compare(before, after)
        if not leaked:
            break
    leaked += support.SESSION.leftover_state()
    for line in foreign:
        print(f"\nnote: new kobako-named object not made by this session: {line}")
    if leaked:
        pytest.fail("objects leaked by the suite:\n  " + "\n  ".join(leaked), pytrace=False)


# -- root filesystem and bundles ------------------------------------------------------------


@pytest.fixture(scope="session")
def busybox_rootfs(session_base: Path) -> Path:
    """A busybox root filesystem, built once: bin/busybox, a symlink per applet,
    the usual empty directories and an /etc/passwd and /etc/group with root."""
    bb = shutil.which("busybox") or "/bin/busybox"
    if not os.path.exists(bb):
        pytest.skip("busybox-static is not installed")
    r = session_base / "rootfs"
    for d in ("bin", "proc", "dev", "sys", "tmp", "etc", "root"):
        (r / d).mkdir(parents=True, exist_ok=True)
    (r / "tmp").chmod(0o1777)
    shutil.copy2(bb, r / "bin" / "busybox")
    applets = subprocess.run([bb, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for a in applets:
        p = r / "bin" / a
        if not p.exists() and not p.is_symlink():
            p.symlink_to("busybox")
    (r / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (r / "etc" / "group").write_text("root:x:0:\n")
    return r


@pytest.fixture
def bundle(busybox_rootfs: Path, session_base: Path, request):
    """Factory: bundle(args, edit=callable_or_dict) -> support.Bundle.

    The bundle is a copy of the busybox root plus the runtime's own `spec`, with
    terminal off, root writable and args set; `edit` then changes the config: a
    callable gets the dict, a dict maps dotted keys ("process.cwd") to values."""
    made: list[Path] = []

    def make(args: list[str] | None = None, edit=None) -> support.Bundle:
        d = Path(tempfile.mkdtemp(prefix="b", dir=session_base))
        d.chmod(0o755)
        made.append(d)
        subprocess.run(["cp", "-a", str(busybox_rootfs), str(d / "rootfs")], check=True)
        p = subprocess.run([support.runtime_binary(), "spec"], cwd=d, capture_output=True, text=True,
                           timeout=30)
        assert p.returncode == 0, f"`spec` failed: {p.stderr}"
        b = support.Bundle(d)
        cfg = b.config
        cfg["process"]["terminal"] = False
        cfg["root"]["readonly"] = False
        if args is not None:
            cfg["process"]["args"] = list(args)
        if callable(edit):
            edit(cfg)
        elif edit:
            for k, v in edit.items():
                support.set_dotted(cfg, k, v)
        b.write()
        return b

    yield make
    for d in made:
        if not any(str(d) in line for line in support.mountinfo_lines()):
            shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def hostdir(session_base: Path):
    """Factory: a fresh scratch directory on the host (under the session base)."""

    def make(prefix: str = "h") -> Path:
        return Path(tempfile.mkdtemp(prefix=prefix, dir=session_base))

    return make


# -- the runtime ----------------------------------------------------------------------------


class Runtime:
    """Calls `<runtime> --root <own state dir> ...`; stdout/stderr go to files, not
    pipes, because a created container's init inherits them and would hold a pipe
    open until it exits."""

    def __init__(self, base: Path) -> None:
        self.binary = support.runtime_binary()
        self.is_kobako = support.is_kobako()
        self.root = Path(tempfile.mkdtemp(prefix="r", dir=base))
        self.base = base
        self.ids: list[str] = []
        self.procs: list[subprocess.Popen] = []
        self.n = 0
        support.SESSION.roots.append(str(self.root))

    def new_id(self, tag: str = "") -> str:
        cid = support.SESSION.new_id(tag)
        self.ids.append(cid)
        return cid

    def _files(self):
        self.n += 1
        return (open(self.root.parent / f"{self.root.name}.{self.n}.out", "w+"),
                open(self.root.parent / f"{self.root.name}.{self.n}.err", "w+"))

    def argv(self, args, global_args=()) -> list[str]:
        return [self.binary, "--root", str(self.root), *global_args, *[str(a) for a in args]]

    def __call__(self, *args, global_args=(), timeout: float = 60, input: str | None = None,
                 open_fds: dict[int, str | Path] | None = None, env=None, cwd=None,
                 fail_on_timeout: bool = True) -> subprocess.CompletedProcess:
        """open_fds {N: path}: the runtime starts with path open read-only as fd N
        (opened by a shell in between, so the test process's own fds are untouched)."""
        out, err = self._files()
        argv = self.argv(args, global_args)
        if open_fds:
            redirs = " ".join(f'{n}<"${i + 1}"' for i, n in enumerate(open_fds))
            k = len(open_fds)
            argv = ["/bin/sh", "-c", f'exec {redirs}; shift {k}; exec "$@"', "sh",
                    *[str(x) for x in open_fds.values()], *argv]
        with out, err:
            p = subprocess.Popen(argv, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                                 stdout=out, stderr=err, env=env, cwd=cwd, text=True)
            try:
                p.communicate(input, timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                out.seek(0)
                err.seek(0)
                if not fail_on_timeout:
                    return subprocess.CompletedProcess(argv, None, out.read(), "timed out")
                pytest.fail(f"{' '.join(argv)} did not finish in {timeout}s\nstdout: {out.read()[-2000:]}"
                            f"\nstderr: {err.read()[-2000:]}", pytrace=False)
            out.seek(0)
            err.seek(0)
            cp = subprocess.CompletedProcess(argv, p.returncode, out.read(), err.read())
        cp.out_path = out.name
        return cp

    def ok(self, *args, **kw) -> subprocess.CompletedProcess:
        cp = self(*args, **kw)
        assert cp.returncode == 0, (f"{' '.join(cp.args)} exited {cp.returncode}\n"
                                    f"stdout: {cp.stdout[-3000:]}\nstderr: {cp.stderr[-3000:]}")
        return cp

    def popen(self, *args, global_args=(), **kw) -> subprocess.Popen:
        out, err = self._files()
        p = subprocess.Popen(self.argv(args, global_args), stdin=subprocess.DEVNULL, stdout=out,
                             stderr=err, **kw)
        p.out_path, p.err_path = out.name, err.name
        out.close()
        err.close()
        self.procs.append(p)
        return p

    def state(self, cid: str) -> dict:
        return json.loads(self.ok("state", cid, timeout=20).stdout)

    def status(self, cid: str) -> str:
        return self.state(cid)["status"]

    def create(self, cid: str, b: support.Bundle, *extra, **kw) -> subprocess.CompletedProcess:
        return self.ok("create", "--bundle", b.path, *extra, cid, **kw)

    def start_container(self, b: support.Bundle, tag: str = "", *create_args) -> tuple[str, int]:
        """create + start; returns (id, host pid of the init)."""
        cid = self.new_id(tag)
        self.create(cid, b, *create_args)
        self.ok("start", cid)
        return cid, self.state(cid)["pid"]

    def cleanup(self) -> list[str]:
        problems = []
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for cid in self.ids:
            if not self._exists(cid):
                continue
            cp = self("delete", "--force", cid, timeout=40, fail_on_timeout=False)
            if self._exists(cid):
                # the runtime could not delete it: end its processes (ours) so the
                # machine stays clean, and report
                support.kill_container_procs(cid)
                self("delete", "--force", cid, timeout=40, fail_on_timeout=False)
                problems.append(f"delete --force {cid} left it behind: {cp.stderr.strip()}")
        for cid in self.ids:
            if support.cgroup_dirs(cid):
                support.kill_container_procs(cid)
                problems.append(f"cgroup of {cid} left behind: {support.cgroup_dirs(cid)}")
                support.remove_cgroup_dirs(cid)
        return problems

    def _exists(self, cid: str) -> bool:
        try:
            return (self.root / cid).exists()
        except OSError:  # a name too long to exist
            return False


@pytest.fixture
def runtime(session_base: Path):
    binary = support.runtime_binary()
    if not shutil.which(binary):
        pytest.fail(f"runtime {binary!r} is not on PATH (run scripts/install.sh)", pytrace=False)
    rt = Runtime(session_base)
    yield rt
    problems = rt.cleanup()
    if problems:
        pytest.fail("teardown: " + "; ".join(problems), pytrace=False)


@pytest.fixture
def running(runtime: Runtime, bundle):
    """A started container running `sleep 300`: (id, init host pid, bundle)."""
    b = bundle(["sleep", "300"])
    cid, pid = runtime.start_container(b, "run")
    return cid, pid, b


@pytest.fixture
def kill_later():
    """PIDs a test started outside the runtime (hook helpers): killed at teardown."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
