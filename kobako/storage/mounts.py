"""Looking at a container's merged filesystem from the host (export, cp of a stopped
container) without leaving a mount behind: the overlay is mounted in a child process's
private mount namespace, which the kernel tears down when the child exits, even if it
is killed."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable

from kobako import errors
from kobako.storage.snapshots import MountSpec


def in_child(body: Callable[[], None], alongside: Callable[[], None] | None = None) -> str | None:
    """body() in a forked child (which may enter or make mount namespaces: they go with it),
    alongside() here meanwhile (after the fork: no thread of ours is copied into the child).
    Returns None, or the one line that says why body() failed; an error of a kind
    (kobako/errors.py: not found, invalid argument...) is raised here as that kind."""
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
            status = e.status if isinstance(e, errors.KobakoError) else 0
            os.write(w, f"{status}\n{text}".encode()[:4000])
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
    kind, _, text = msg.decode(errors="replace").partition("\n")
    cls = _KINDS.get(int(kind) if kind.isdigit() else 0)
    if cls is not None:
        raise cls(text)
    return text or "failed"


_KINDS = {400: errors.InvalidArgument, 403: errors.Forbidden, 404: errors.NotFound, 409: errors.Conflict}


def merged_view(mount: MountSpec, fn: Callable[[str], None],
                alongside: Callable[[], None] | None = None,
                binds: list[tuple[str, str, bool]] | None = None) -> None:
    """fn(root) in a child that sees the mount at `root`, in a mount namespace of its own;
    with `binds` ((host path, destination, read-only)), those on top at their destinations
    (a stopped container's volumes, as `docker cp` sees them). A destination is resolved
    inside the view, so a symlink in the container cannot send a bind elsewhere; one that
    does not exist (a container never started) is left out."""
    from kobako.linux import fs, namespaces
    from kobako.linux import mount as m

    def body() -> None:
        namespaces.unshare(namespaces.TYPES["mount"][0])
        m.mount(None, "/", None, m.MS_SLAVE | m.MS_REC)
        target = tempfile.mkdtemp(prefix="kobako-view-")
        try:
            if mount.cwd:  # relative lowerdirs (see Snapshots.lowerdir)
                os.chdir(mount.cwd)
            m.mount(mount.source, target, mount.type, 0, ",".join(mount.options))
            if binds:
                root = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                try:
                    for src, dest, ro in binds:
                        _bind_in(root, src, dest, ro)
                finally:
                    os.close(root)
            fn(target)
        finally:
            try:
                m.umount2(target, 2)  # MNT_DETACH
            except OSError:
                pass
            os.rmdir(target)

    def _bind_in(root: int, src: str, dest: str, ro: bool) -> None:
        try:
            fd = fs.open_in_root(root, dest)
        except FileNotFoundError:
            if not os.path.isdir(src) or not _mkdirs_in(root, dest):
                return
            fd = fs.open_in_root(root, dest)
        except NotADirectoryError:
            return
        try:
            if os.path.isdir(src) != os.path.isdir(fs.proc_fd(fd)):
                return  # a file over a directory (or the other way): the container never had it
            m.mount(src, fs.proc_fd(fd), None, m.MS_BIND | m.MS_REC)
        finally:
            os.close(fd)
        if ro:  # opened again: the walk now ends on the bind, not on what it covers
            fd = fs.open_in_root(root, dest)
            try:
                m.mount(None, fs.proc_fd(fd), None, m.MS_BIND | m.MS_REMOUNT | m.MS_RDONLY)
            finally:
                os.close(fd)

    err = in_child(body, alongside)
    if err:
        raise OSError(f"cannot read the container's filesystem: {err}")


def _mkdirs_in(root: int, path: str) -> bool:
    """mkdir -p PATH under the directory fd `root`, every step resolved inside it (the
    mountpoint of a volume the runtime would make at the container's first start)."""
    from kobako.linux import fs
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        return False
    for i in range(len(parts)):
        try:
            fd = fs.open_in_root(root, "/".join(parts[:i]) or ".", os.O_RDONLY | os.O_DIRECTORY)
        except (FileNotFoundError, NotADirectoryError):
            return False
        try:
            os.mkdir(parts[i], 0o755, dir_fd=fd)
        except FileExistsError:
            pass
        finally:
            os.close(fd)
    return True
