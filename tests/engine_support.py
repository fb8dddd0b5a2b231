"""Calling the `kobako` CLI from tests with a private data root and run root, so tests
never touch /var/lib/kobako, and checking its errors the way a user meets them."""

from __future__ import annotations

import os
import subprocess
import sys
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

    @property
    def data(self) -> Path:
        return self.root / "data"

    def blobs(self) -> set[str]:
        d = self.data / "blobs" / "sha256"
        return set(os.listdir(d)) if d.exists() else set()

    def snapshots(self) -> set[str]:
        d = self.data / "snapshots"
        return {n for n in os.listdir(d)} if d.exists() else set()


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
