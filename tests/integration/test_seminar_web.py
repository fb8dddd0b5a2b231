"""The seminar's example end to end (seed 001): a Debian container with Python runs
`python3 -m http.server 8000 --directory /myweb`, a host folder is mounted at /myweb and
host port 8888 is published to 8000: a file written on the host is served on
127.0.0.1:8888.

The image is a Debian bookworm minbase with python3-minimal (and libpython3.11-stdlib:
python3-minimal alone has no `http` package), built locally with
debootstrap from Debian's mirror the first time and kept in /var/tmp/kbt-cache (so the
suite needs no registry and, after the first run, no network)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from engine_support import Kobako

pytestmark = pytest.mark.root
CACHE = Path("/var/tmp/kbt-cache")  # not "kobako": the leak check watches such mounts
IMG = "kbt/debian-python:bookworm"


def _image_tar() -> Path:
    tar = CACHE / "bookworm-python3.tar"
    if tar.exists():
        return tar
    if not shutil.which("debootstrap"):
        pytest.skip("debootstrap is not installed (scripts/test.sh installs it)")
    CACHE.mkdir(parents=True, exist_ok=True)
    root = CACHE / f"bookworm-python.{os.getpid()}"
    argv = ["debootstrap", "--variant=minbase", "--include=python3-minimal,libpython3.11-stdlib", "bookworm",
            str(root), "http://deb.debian.org/debian"]
    cp = subprocess.run(argv, capture_output=True, text=True, timeout=1200)
    if cp.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"debootstrap failed:\n{cp.stdout[-2000:]}{cp.stderr[-2000:]}")
    tmp = tar.with_suffix(f".{os.getpid()}")
    subprocess.run(["tar", "-C", str(root), "-cf", str(tmp), "."], check=True)
    tmp.rename(tar)
    shutil.rmtree(root, ignore_errors=True)
    return tar


def _port(preferred: int) -> int:
    s = socket.socket()
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", preferred))
        return preferred
    except OSError:
        s.bind(("127.0.0.1", 0))  # 8888 is taken on this host: any free port shows the same
        return s.getsockname()[1]
    finally:
        s.close()


def test_python_http_server_serves_a_host_folder_on_a_published_port(session_base: Path, tmp_path: Path):
    k = Kobako(session_base / "seminar")
    k("import", str(_image_tar()), IMG)
    web = tmp_path / "myweb"
    web.mkdir()
    port = _port(8888)
    k("run", "-d", "--name", "seminar-web", "-p", f"{port}:8000", "-v", f"{web}:/myweb", IMG,
      "python3", "-m", "http.server", "8000", "--directory", "/myweb")
    try:
        (web / "hello.html").write_text("written on the host\n")  # after the container started
        end, body = time.monotonic() + 20, None
        while time.monotonic() < end and body is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/hello.html", timeout=2) as r:
                    body = r.read().decode()
            except OSError:
                time.sleep(0.2)
        assert body == "written on the host\n", k("logs", "seminar-web").stderr
        assert "GET /hello.html" in k("logs", "seminar-web").stderr  # http.server logs to stderr
    finally:
        k("rm", "-f", "seminar-web")
        k("rmi", IMG, check=False)
