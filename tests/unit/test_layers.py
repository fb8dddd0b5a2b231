"""The layers of DESIGN.md, checked on the source: every import (lazy ones inside functions
included) points down the stack, never up, and no front end reaches into the other."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "kobako"

# Higher numbers sit higher; a module may import its own layer and anything lower.
RANK = {"errors": 0, "config": 0, "paths": 0, "steps": 0, "linux": 1, "runtime": 2, "storage": 3,
        "network": 3, "image": 4, "engine": 5, "api": 6, "cli": 7}
# The CLI starts the API service (`kobako system service`); the API never uses the CLI.
# image uses storage (layers are unpacked into snapshots); network and storage never meet.
FORBIDDEN = {("network", "storage"), ("storage", "network"), ("network", "image"), ("storage", "image")}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "kobako":
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path, root: Path = PKG) -> list[tuple[int, str]]:
    """(line, module) of every import in a file under the package `root`."""
    tree = ast.parse(path.read_text(), str(path))
    pkg = ".".join(path.relative_to(root.parent).with_suffix("").parts[:-1])
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod == "kobako":  # `from kobako import errors, paths`
                out += [(node.lineno, f"kobako.{a.name}") for a in node.names]
            else:
                out.append((node.lineno, mod))
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "__import__" and node.args \
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            out.append((node.lineno, node.args[0].value))
    return out


def test_imports_point_down_the_layers():
    bad = []
    for path in sorted(PKG.rglob("*.py")):
        me = _layer(".".join(path.relative_to(PKG.parent).with_suffix("").parts))
        if me not in RANK:
            continue
        for line, mod in _imports(path):
            other = _layer(mod)
            if other is None or other == me or other not in RANK:
                continue
            if RANK[other] > RANK[me] or (me, other) in FORBIDDEN:
                bad.append(f"{path.relative_to(PKG.parent)}:{line}: {me} imports {mod}")
    assert not bad, "imports that point up the layers:\n" + "\n".join(bad)


def test_the_check_sees_lazy_and_relative_imports(tmp_path):
    f = tmp_path / "kobako" / "engine" / "x.py"
    f.parent.mkdir(parents=True)
    f.write_text("def f():\n    from kobako.cli import main\n    __import__('kobako.api.server')\n"
                 "from ..cli import parser\nfrom kobako import errors\n")
    mods = sorted(m for _, m in _imports(f, tmp_path / "kobako"))
    assert mods == ["kobako.api.server", "kobako.cli", "kobako.cli", "kobako.errors"]


def test_every_error_class_is_a_kind():
    """No error class of kobako's stands outside kobako/errors.py's kinds, and none shadows a
    builtin name: the front ends map kinds, never class names."""
    import builtins
    bad = []
    for path in sorted(PKG.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ClassDef):
                continue
            bases = [getattr(b, "id", getattr(b, "attr", "")) for b in node.bases]
            if node.name in dir(builtins):
                bad.append(f"{path.relative_to(PKG.parent)}: {node.name} shadows a builtin")
            if "Exception" in bases and path.name != "errors.py" and not node.name.startswith("_"):
                bad.append(f"{path.relative_to(PKG.parent)}: {node.name} derives from Exception, not a kind")
    assert not bad, "\n".join(bad)
