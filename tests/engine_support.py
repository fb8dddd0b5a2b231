"""Calling the `kobako` CLI from tests with a private data root and run root, so tests
never touch /var/lib/kobako, and checking its errors the way a user meets them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class Kobako:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "KOBAKO_ROOT": str(root / "data"), "KOBAKO_RUN": str(root / "run"),
                    "KOBAKO_CONFIG": str(root / "config")}

    def __call__(self, *args: str, input: bytes | str | None = None, check: bool = True,
                 timeout: float = 120, text: bool = True) -> subprocess.CompletedProcess:
        cp = subprocess.run([sys.executable, "-m", "kobako.cli.main", *args], env=self.env,
                            input=input, capture_output=True, text=text, timeout=timeout,
                            cwd=Path(__file__).resolve().parent.parent)
        if check and cp.returncode != 0:
            raise AssertionError(f"kobako {' '.join(args)} failed ({cp.returncode}):\n{cp.stderr}")
        return cp

    def clean(self) -> None:
        """What a module's tests left: containers, user networks, then a system prune."""
        for cid in self("ps", "-aq", check=False).stdout.split():
            self("rm", "-f", cid, check=False)
        for n in self("network", "ls", "-q", check=False).stdout.split():
            self("network", "rm", n, check=False)
        self("system", "prune", "-f", check=False)

    @property
    def data(self) -> Path:
        return self.root / "data"

    def blobs(self) -> set[str]:
        d = self.data / "blobs" / "sha256"
        return set(os.listdir(d)) if d.exists() else set()

    def snapshots(self) -> set[str]:
        d = self.data / "snapshots"
        return {n for n in os.listdir(d)} if d.exists() else set()


def build_context(tmp_path: Path, dockerfile: str, files: dict[str, str] | None = None) -> Path:
    """A build context at tmp_path/ctx: the Dockerfile and `files` (names may have directories)."""
    d = tmp_path / "ctx"
    d.mkdir(parents=True, exist_ok=True)
    (d / "Dockerfile").write_text(dockerfile)
    for name, text in (files or {}).items():
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_text(text)
    return d


def import_tarred(k: Kobako, rootfs: Path, tar: Path, name: str) -> None:
    """A root filesystem tarred to `tar`, then imported from it as image `name`."""
    subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tar), "."], check=True)
    k("import", str(tar), name)


def assert_user_error(cp: subprocess.CompletedProcess, *words: str, code: int = 125) -> str:
    """One line on stderr starting with 'Error:', exit 125, no traceback."""
    out = (cp.stderr or "") + (cp.stdout or "")
    assert cp.returncode == code, f"expected exit {code}, got {cp.returncode}:\n{out}"
    assert "Traceback" not in out, f"a traceback reached the user:\n{out}"
    assert "internal error" not in out, f"a bug surfaced as an internal error:\n{out}"
    lines = [x for x in cp.stderr.splitlines() if x.strip() and not x.startswith("Unable to find image")]
    assert len(lines) == 1 and lines[0].startswith("Error:"), f"expected one 'Error:' line, got:\n{cp.stderr}"
    for w in words:
        assert w.lower() in lines[0].lower(), f"error does not mention {w!r}: {lines[0]!r}"
    return lines[0]


@contextmanager
def api_service(base: Path, image_rootfs: Path, image: str) -> Iterator[Kobako]:
    """`kobako system service` over a private data root under `base`, with `image` imported
    from a root filesystem: yields the Kobako caller with `.sock` and `.env_docker` set. At
    the end every container, volume and user network it left goes, the service stops, and
    its log must hold no traceback."""
    k = Kobako(base)
    k("import", str(image_rootfs), image)
    k.sock = str(base / "docker.sock")
    k.env_docker = {**os.environ, "DOCKER_HOST": f"unix://{k.sock}"}
    logf = base / "service.log"
    with open(logf, "w") as log:
        argv = [sys.executable, "-m", "kobako.cli.main", "system", "service", "--socket", k.sock]
        p = subprocess.Popen(argv, env=k.env, cwd=Path(__file__).resolve().parent.parent, stdout=log,
                             stderr=subprocess.STDOUT)
        try:
            for _ in range(200):
                if os.path.exists(k.sock):
                    break
                time.sleep(0.05)
            assert os.path.exists(k.sock), logf.read_text()
            yield k
        finally:
            for cid in k("ps", "-aq", check=False).stdout.split():
                k("rm", "-f", cid, check=False)
            for v in k("volume", "ls", "-q", check=False).stdout.split():
                k("volume", "rm", "-f", v, check=False)
            for n in k("network", "ls", "-q", "--filter", "type=custom", check=False).stdout.split():
                k("network", "rm", n, check=False)
            p.terminate()
            p.wait(timeout=10)
    assert not os.path.exists(k.sock), "the service left its socket behind"
    assert "Traceback" not in logf.read_text(), logf.read_text()


def http_request(sock: str, method: str, path: str, body: bytes | None = None,
                 headers: dict | None = None) -> tuple[int, bytes, dict]:
    """One HTTP request on a unix socket: (status, body, headers)."""
    import http.client
    import socket
    c = http.client.HTTPConnection("localhost")
    c.sock = socket.socket(socket.AF_UNIX)
    c.sock.connect(sock)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, r.read(), dict(r.getheaders())
    finally:
        c.close()


def api_json(k: Kobako, method: str, path: str, body: object = None,
             raw: bytes | None = None) -> tuple[int, object]:
    """A Docker API call under /v1.41 with a JSON body (or raw bytes): (status, the answer
    parsed as JSON when it is one document, else the bytes)."""
    import json
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    status, out, _ = http_request(k.sock, method, "/v1.41" + path, data,
                                  {"Content-Type": "application/json"} if data is not None else {})
    try:
        return status, json.loads(out) if out.strip() and b"\n{" not in out.strip() else (out or None)
    except ValueError:
        return status, out
