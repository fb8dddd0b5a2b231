"""tests/v2vm/suite.txt, the list the cgroup v2 VM runs, names tests that exist: a renamed
or moved test would otherwise drop out of the v2 suite (or break it) only in CI."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIST = ROOT / "tests" / "v2vm" / "suite.txt"


def _entries() -> list[str]:
    out = []
    for line in LIST.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(line)
    return out


def _test_functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")}


def test_every_entry_names_an_existing_test_file_and_function():
    entries = _entries()
    assert entries, "the v2 suite lists no tests"
    missing = []
    for e in entries:
        file, _, name = e.partition("::")
        path = ROOT / file
        if not (path.is_file() and path.name.startswith("test_") and path.suffix == ".py"):
            missing.append(f"{e}: no test file {file}")
        elif name and name.split("[")[0] not in _test_functions(path):
            missing.append(f"{e}: {file} has no {name.split('[')[0]}")
    assert not missing, "tests/v2vm/suite.txt:\n  " + "\n  ".join(missing)


def test_no_entry_is_listed_twice_or_inside_a_listed_file():
    entries = _entries()
    files = {e for e in entries if "::" not in e}
    assert len(entries) == len(set(entries))
    assert [e for e in entries if e.split("::")[0] in files and "::" in e] == []
