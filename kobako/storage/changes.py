"""What a container changed, read from its overlay upper dir (`kobako diff`):
A added, C changed (also a directory something changed in), D deleted (a whiteout)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator

OPAQUE = ("trusted.overlay.opaque", "user.overlay.opaque")


def is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def is_opaque(path: str) -> bool:
    for name in OPAQUE:
        try:
            if os.getxattr(path, name, follow_symlinks=False) == b"y":
                return True
        except OSError:
            pass
    return False


def changes(upper: str, lowers: list[str] | None = None) -> Iterator[tuple[str, str]]:
    """(kind, path) sorted by path; with `lowers` (top first) an entry also in a lower layer is C."""
    def in_lower(rel: str) -> bool:
        return any(os.path.lexists(os.path.join(lo, rel)) for lo in lowers or [])

    out: list[tuple[str, str]] = []
    for dirpath, dirs, files in os.walk(upper):
        rel_dir = os.path.relpath(dirpath, upper)
        for name in sorted(dirs + files):
            p = os.path.join(dirpath, name)
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            st = os.lstat(p)
            if is_whiteout(st):
                out.append(("D", "/" + rel))
            elif lowers is None:
                out.append(("C" if stat.S_ISDIR(st.st_mode) else "A", "/" + rel))
            else:
                out.append(("C" if in_lower(rel) else "A", "/" + rel))
    out.sort(key=lambda x: x[1])
    yield from out
