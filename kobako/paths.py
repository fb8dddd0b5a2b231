"""Where kobako keeps things: the data root (images, layers, containers, volumes) and
the run root (state that dies with a reboot). Root uses /var/lib/kobako and
/run/kobako; KOBAKO_ROOT / KOBAKO_RUN override both (tests use private roots)."""

from __future__ import annotations

import os


def data_root() -> str:
    env = os.environ.get("KOBAKO_ROOT")
    if env:
        return env
    if os.geteuid() == 0:
        return "/var/lib/kobako"
    base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return os.path.join(base, "kobako")


def run_root() -> str:
    env = os.environ.get("KOBAKO_RUN")
    if env:
        return env
    if os.geteuid() == 0:
        return "/run/kobako"
    base = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/kobako-{os.geteuid()}"
    return os.path.join(base, "kobako")


def atomic_write(path: str, data: bytes, mode: int = 0o644, durable: bool = True) -> None:
    """Write temp + fsync + rename (+ fsync of the directory): readers see the old file or
    the whole new one, never half of it, also after a power loss."""
    d = os.path.dirname(path)
    tmp = os.path.join(d, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    if durable:
        fsync_dir(d)


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
