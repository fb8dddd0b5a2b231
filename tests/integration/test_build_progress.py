"""`kobako build`'s progress on a terminal (a pseudo-terminal here): the live view with its
step lines, output window and cursor movements, a failed step's output left on screen; and
piped, the legacy builder's plain lines without an escape sequence. Also the context digest
cache in a real build: a file changed with its size and mtime kept still invalidates."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from engine_support import Kobako, import_tarred
from engine_support import build_context as ctx

pytestmark = pytest.mark.root
IMG = "kbt/busybox:1"
REPO = Path(__file__).resolve().parent.parent.parent


@pytest.fixture(scope="module")
def k(session_base: Path, busybox_rootfs: Path) -> Kobako:
    kb = Kobako(session_base / "engine-build-progress")
    tar = session_base / "busybox-rootfs-build-progress.tar"
    import_tarred(kb, busybox_rootfs, tar, IMG)
    yield kb
    kb.clean()


def on_terminal(k: Kobako, *args: str, timeout: float = 120) -> tuple[int, str]:
    """`kobako ARGS` with stdout and stderr on a pseudo-terminal of 100 columns; its exit
    code and everything it wrote."""
    master, slave = pty.openpty()
    import fcntl
    import struct
    import termios
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
    p = subprocess.Popen([sys.executable, "-m", "kobako.cli.main", *args], env={**k.env, "TERM": "xterm"},
                         stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, cwd=REPO)
    os.close(slave)
    out = b""
    end = time.monotonic() + timeout
    try:
        while time.monotonic() < end:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the last writer closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            elif p.poll() is not None:
                break
        code = p.wait(timeout=max(1.0, end - time.monotonic()))
    finally:
        os.close(master)
        if p.poll() is None:
            p.kill()
            p.wait()
    return code, out.decode(errors="replace")


DOCKERFILE = f"""FROM {IMG}
ENV A=1
COPY data.txt /data.txt
RUN for i in 1 2 3 4 5 6 7 8 9 10; do echo line-$i; done; sleep 0.5; echo done-running
CMD ["cat", "/data.txt"]
"""


def test_the_live_view_on_a_terminal(k: Kobako, tmp_path: Path):
    d = ctx(tmp_path, DOCKERFILE, {"data.txt": "hello\n"})
    code, out = on_terminal(k, "build", "--no-cache", "-t", "kbt/progress:1", str(d))
    assert code == 0, out
    assert "\x1b[" in out and "A\x1b[J" in out  # cursor up, erase below: redrawn in place
    for line in (" => [1/5] FROM " + IMG, " => [2/5] ENV A=1", " => [3/5] COPY data.txt /data.txt",
                 " => [4/5] RUN for i in", " => [5/5] CMD"):
        assert line in out, out
    assert " => => # line-10" in out  # the running step's window
    assert "Step 1/5" not in out  # not the plain lines
    assert "Successfully built " in out and "Successfully tagged kbt/progress:1" in out
    assert " => writing image sha256:" in out
    assert k("run", "--rm", "--network", "none", "kbt/progress:1").stdout == "hello\n"
    # the cached rebuild says so
    code, out = on_terminal(k, "build", "--progress", "tty", "-t", "kbt/progress:1", str(d))
    assert code == 0, out
    assert " => CACHED [4/5] RUN for i in" in out


def test_a_failed_step_keeps_its_output_on_screen(k: Kobako, tmp_path: Path):
    lines = "; ".join(f"echo out-{i}" for i in range(12))
    d = ctx(tmp_path, f"FROM {IMG}\nRUN {lines}; echo to-stderr >&2; exit 3\n")
    code, out = on_terminal(k, "build", "--progress", "auto", str(d))
    assert code == 1, out
    assert " => ERROR [2/2] RUN echo out-0" in out
    tail = out[out.index(" => ERROR [2/2]"):]
    for i in range(12):  # the whole tail, not only the window's last lines
        assert f"out-{i}\x1b[K" in tail, tail
    assert "to-stderr" in tail
    assert "returned a non-zero code: 3" in tail  # the error under it


def test_piped_output_is_the_plain_lines(k: Kobako, tmp_path: Path):
    d = ctx(tmp_path, DOCKERFILE, {"data.txt": "hello\n"})
    for progress in ("auto", "plain"):
        cp = k("build", "--progress", progress, "-t", "kbt/progress:2", str(d))
        assert "\x1b" not in cp.stdout + cp.stderr
        assert "Step 4/5 : RUN for i in" in cp.stdout
        assert "Successfully tagged kbt/progress:2" in cp.stdout
    cp = k("build", "--progress", "quiet", "-t", "kbt/progress:2", str(d))
    assert cp.stdout.strip().startswith("sha256:") and "\n" not in cp.stdout.strip()


def test_a_changed_file_with_size_and_mtime_kept_is_rebuilt(k: Kobako, tmp_path: Path):
    d = ctx(tmp_path, f"FROM {IMG}\nCOPY data.txt /data.txt\n", {"data.txt": "aaaa\n"})
    f = d / "data.txt"
    old = os.stat(f)
    os.utime(f, ns=(old.st_atime_ns, old.st_mtime_ns - 10 * 10**9))  # mtime well before the build
    time.sleep(2.1)  # ctime too: older than the racily-clean margin, so the digest is remembered
    k("build", "-q", "-t", "kbt/digest:1", str(d))
    k("build", "-q", "-t", "kbt/digest:1", str(d))
    (cache,) = os.listdir(k.data / "builder" / "digests")
    assert "data.txt" in json.loads((k.data / "builder" / "digests" / cache).read_text())["files"]
    st = os.stat(f)
    f.write_text("bbbb\n")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(f).st_size == st.st_size and os.stat(f).st_mtime_ns == st.st_mtime_ns
    cp = k("build", "-t", "kbt/digest:1", str(d))
    assert "Using cache" not in cp.stdout.split("Step 2/2")[1]
    assert k("run", "--rm", "--network", "none", "kbt/digest:1", "cat", "/data.txt").stdout == "bbbb\n"
    k("builder", "prune", "-f")
    assert os.listdir(k.data / "builder" / "digests") == []
