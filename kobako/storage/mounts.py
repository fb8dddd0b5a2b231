"""Looking at a container's merged filesystem from the host (export, cp of a stopped
container) without leaving a mount behind: the overlay is mounted in a child process's
private mount namespace, which the kernel tears down when the child exits, even if it
is killed."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable

from kobako.storage.snapshots import MountSpec


def in_child(body: Callable[[], None], alongside: Callable[[], None] | None = None) -> str | None:
    """body() in a forked child (which may enter or make mount namespaces: they go with it),
    alongside() here meanwhile (after the fork: no thread of ours is copied into the child).
    Returns None, or the one line that says why body() failed."""
    import sys
    sys.stdout.flush()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        code = 1
        try:
            body()
            sys.stdout.flush()
            code = 0
        except BaseException as e:  # reported to the parent, which raises it
            text = str(e)
            if isinstance(e, OSError) and e.strerror:
                text = e.strerror + (f": {e.filename}" if e.filename else "")
            os.write(w, text.encode()[:4000])
        finally:
            os._exit(code)
    os.close(w)
    if alongside is not None:
        alongside()
    msg = b""
    while chunk := os.read(r, 4096):
        msg += chunk
    os.close(r)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) == 0:
        return None
    return msg.decode(errors="replace") or "failed"


def merged_view(mount: MountSpec, fn: Callable[[str], None],
                alongside: Callable[[], None] | None = None) -> None:
    """fn(root) in a child that sees the mount at `root`, in a mount namespace of its own."""
    from kobako.linux import mount as m
    from kobako.linux import namespaces

    def body() -> None:
        namespaces.unshare(namespaces.TYPES["mount"][0])
        m.mount(None, "/", None, m.MS_SLAVE | m.MS_REC)
        target = tempfile.mkdtemp(prefix="kobako-view-")
        try:
            if mount.cwd:  # relative lowerdirs (see Snapshots.lowerdir)
                os.chdir(mount.cwd)
            m.mount(mount.source, target, mount.type, 0, ",".join(mount.options))
            fn(target)
        finally:
            try:
                m.umount2(target, 2)  # MNT_DETACH
            except OSError:
                pass
            os.rmdir(target)

    err = in_child(body, alongside)
    if err:
        raise OSError(f"cannot read the container's filesystem: {err}")
