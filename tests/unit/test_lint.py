"""ruff over the code and the tests: clean, with the rules in pyproject.toml."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _ruff() -> str | None:
    beside = Path(sys.executable).parent / "ruff"
    if beside.exists():
        return str(beside)
    return shutil.which("ruff")


def test_ruff_is_clean():
    ruff = _ruff()
    if ruff is None:
        pytest.skip("ruff is not installed (pip install -e '.[test]')")
    p = subprocess.run([ruff, "check", "--no-cache", "kobako", "tests"], cwd=REPO, capture_output=True,
                       text=True, env={**os.environ, "NO_COLOR": "1"})
    assert p.returncode == 0, f"ruff check kobako tests:\n{p.stdout[-6000:]}{p.stderr[-2000:]}"


def test_test_modules_have_distinct_names():
    """pytest imports test modules by basename (rootdir-relative, no packages): two files of
    one name in different directories stop the whole run at collection."""
    seen: dict[str, Path] = {}
    dup = []
    for p in sorted((REPO / "tests").rglob("test_*.py")):
        if p.name in seen:
            dup.append(f"{seen[p.name].relative_to(REPO)} and {p.relative_to(REPO)}")
        seen.setdefault(p.name, p)
    assert dup == []
