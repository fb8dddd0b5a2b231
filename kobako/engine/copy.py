"""`kobako cp`: files between a container and the host, in both directions.

The container side is always resolved inside the container: a forked child enters the
running container's mount namespace (setns), where "/" is the container's root, or, for
a stopped container, mounts its overlay in a private mount namespace of its own
(storage/mounts.py). What crosses between the two sides is a tar stream through a pipe,
and whichever side receives it extracts it with the layer extractor (storage/layer.py),
which keeps every entry inside its destination: a symlink in the container cannot make
`cp` write to the host, nor a crafted host tree escape the container's path.
"""

from __future__ import annotations

import os
import tarfile
from stat import S_ISLNK

from kobako import errors
from kobako.storage import layer


class CopyError(errors.NotFound):
    pass


def _in_container(e, rec: dict, fn, alongside, volumes: bool = True) -> None:
    """Run fn(root) in a child that sees the container's filesystem at `root`, and
    alongside() here meanwhile (the other end of the pipe). A stopped container's volumes
    and bind mounts are mounted on its files too, unless `volumes` is false (export)."""
    # what the child uses, imported here: a fork of the (threaded) API server must not
    # take an import lock another thread may hold
    from kobako.linux import fs, namespaces  # noqa: F401
    from kobako.storage import mounts  # noqa: F401
    st = e.state(rec)
    if st in ("running", "paused"):
        _in_namespace(_runtime_pid(e, rec), fn, alongside)
    else:
        from kobako.storage.mounts import merged_view
        mount = e.snapshots.mount_for(rec["chainIds"], e.containers.path(rec["id"], "upper"),
                                      e.containers.path(rec["id"], "work"))
        merged_view(mount, fn, alongside, binds_of(rec) if volumes else None)


def binds_of(rec: dict) -> list[tuple[str, str, bool]]:
    """The container's bind mounts (its volumes among them, and /etc/hosts and friends) as its
    bundle gives them: (host path, destination, read-only)."""
    import json
    try:
        with open(os.path.join(rec.get("bundle") or "", "config.json")) as f:
            mounts = json.load(f).get("mounts") or []
    except (OSError, ValueError):
        return []
    return [(m["source"], m["destination"], "ro" in (m.get("options") or []))
            for m in mounts if m.get("type") == "bind" and m.get("source") and m.get("destination")
            and not m["destination"].startswith(("/proc", "/sys", "/dev"))]


def _runtime_pid(e, rec: dict) -> int:
    from kobako.runtime import state
    c = state.Container(e.runtime_root, rec["id"])
    c.load()
    return int(c.data["pid"])


def _in_namespace(pid: int, fn, alongside) -> None:
    from kobako.linux import namespaces
    from kobako.storage.mounts import in_child
    fd = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    ufd = -1
    if os.stat(f"/proc/{pid}/ns/user").st_ino != os.stat("/proc/self/ns/user").st_ino:
        ufd = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)

    def body() -> None:
        if ufd >= 0:  # --userns: as the container's root, whose files land with the container's ids
            namespaces.setns(ufd, namespaces.CLONE_NEWUSER, "the container's user namespace")
            os.setgroups([])
            os.setresgid(0, 0, 0)  # setns keeps our ids: become its root
            os.setresuid(0, 0, 0)
        namespaces.setns(fd, namespaces.TYPES["mount"][0], "the container's mount namespace")
        os.chdir("/")
        fn("/")

    try:
        err = in_child(body, alongside)
    finally:
        os.close(fd)
        if ufd >= 0:
            os.close(ufd)
    if err:
        raise CopyError(err)


def _split(path: str) -> tuple[str, str]:
    path = "/" + path.strip("/")
    return os.path.dirname(path), os.path.basename(path) or "."


def stat(e, rec: dict, path: str) -> dict:
    """PATH in the container as dockerd's X-Docker-Container-Path-Stat describes it: name,
    size, mode (Go's FileMode bits: 1<<31 a directory, 1<<27 a symlink), mtime, linkTarget."""
    import json
    import time
    parent_dir, name = _split(path)
    r, w = os.pipe()

    def look(root: str) -> None:
        os.close(r)
        from kobako.linux import fs
        try:
            pfd = fs.open_in_root(os.open(root, os.O_RDONLY | os.O_DIRECTORY), parent_dir,
                                  os.O_RDONLY | os.O_DIRECTORY)
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            raise CopyError(f"Could not find the file {path} in container {rec['name']}") from None
        import stat as stmod
        mode = stmod.S_IMODE(st.st_mode)
        link = ""
        if stmod.S_ISDIR(st.st_mode):
            mode |= 1 << 31
        elif stmod.S_ISLNK(st.st_mode):
            mode |= 1 << 27
            link = os.readlink(name, dir_fd=pfd)
        doc = {"name": name if path.strip("/") else "/", "size": st.st_size, "mode": mode,
               "mtime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(st.st_mtime)), "linkTarget": link}
        os.write(w, json.dumps(doc).encode())
        os.close(w)

    out = bytearray()

    def read() -> None:
        os.close(w)
        while chunk := os.read(r, 65536):
            out.extend(chunk)
        os.close(r)

    _in_container(e, rec, look, read)
    return json.loads(out)


def _follow(rootfd: int, parent_dir: str, name: str) -> tuple[str, str]:
    """SRC's final symlinks followed inside the container root (docker cp -L): the
    directory and name of what the link points to; a dangling or looping link is an error."""
    from kobako.linux import fs
    for _ in range(40):  # the kernel's own limit on nested links (ELOOP)
        pfd = fs.open_in_root(rootfd, parent_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            if not S_ISLNK(os.stat(name, dir_fd=pfd, follow_symlinks=False).st_mode):
                return parent_dir, name
            target = os.readlink(name, dir_fd=pfd)
        except FileNotFoundError:  # a dangling link: the caller's stat names SRC as missing
            return parent_dir, name
        finally:
            os.close(pfd)
        # '..' above '/' stays at '/', as in the kernel; open_in_root keeps the rest inside
        parent_dir, name = _split(os.path.normpath(os.path.join(parent_dir, target)))
    raise CopyError("too many levels of symbolic links")


def from_container(e, rec: dict, src: str, dest: str, out=None, follow: bool = False) -> None:
    """container:SRC -> host DEST (a file to a file or into a directory; a directory into DEST).
    DEST "-": a tar stream of SRC to `out` (a binary file; stdout by default). `follow`
    (-L): a symlink SRC is copied as the file it points to, under the link's name. The
    files are ours (the user running the copy), as the docker CLI extracts them (-a or not)."""
    r, w = os.pipe()
    parent_dir, name = _split(src)
    arcname = name
    to_stdout = dest == "-"
    if to_stdout:  # a tar stream of SRC, as docker cp CONTAINER:SRC -
        target_dir, rename = "", None
    elif os.path.isdir(dest):
        target_dir, rename = dest, None
    else:
        if not os.path.isdir(os.path.dirname(os.path.abspath(dest)) or "."):
            raise CopyError(f"destination directory {os.path.dirname(dest)} does not exist")
        target_dir, rename = os.path.dirname(os.path.abspath(dest)), os.path.basename(dest)

    def produce(root: str) -> None:
        os.close(r)
        # resolve SRC inside the container root, never through a symlink to the host
        from kobako.linux import fs
        rootfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        src_dir, src_name = parent_dir, name
        try:
            if follow:
                src_dir, src_name = _follow(rootfd, src_dir, src_name)
            pfd = fs.open_in_root(rootfd, src_dir, os.O_RDONLY | os.O_DIRECTORY)
        except (FileNotFoundError, NotADirectoryError):
            raise CopyError(f"no such directory in the container: {src_dir}") from None
        try:
            os.stat(src_name, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            raise CopyError(f"no such file or directory in the container: {src}") from None
        except NotADirectoryError:
            raise CopyError(f"not a directory in the container: {src_dir}") from None
        os.fchdir(pfd)  # relative names from here: /proc/self is not ours in the container's /proc
        with os.fdopen(w, "wb") as out, tarfile.open(fileobj=out, mode="w|",
                                                      format=tarfile.PAX_FORMAT) as t:
            t.add(src_name, arcname=rename or arcname, recursive=True)

    err: list[BaseException] = []

    def consume() -> None:
        os.close(w)  # ours; the child holds its own until it is done
        try:
            with os.fdopen(r, "rb") as f:
                if to_stdout:
                    import shutil
                    import sys
                    sink = out if out is not None else sys.stdout.buffer
                    shutil.copyfileobj(f, sink, 1 << 20)
                    sink.flush()
                    return
                layer.extract(f, target_dir, layer.COPY_OUT, owner=(os.geteuid(), os.getegid()))
        except BaseException as ex:  # noqa: BLE001 - reported after the child's own error
            err.append(ex)

    _in_container(e, rec, produce, consume)
    if err:
        raise CopyError(f"copy from the container failed: {err[0]}")


def to_container(e, rec: dict, src: str, dest: str, tar_in=None, follow: bool = False,
                 archive: bool = False) -> None:
    """host SRC -> container:DEST (into DEST if it is a directory there, else as DEST). With
    `tar_in` (docker cp - C:DEST, the API's PUT archive) SRC is ignored: that tar stream is
    extracted into the directory DEST. `follow` (-L): a symlink SRC is copied as the file it
    points to, under the link's name. The files keep the owners the tar names (a host file's
    own), as dockerd does; with `archive` (docker's -a, the API's copyUIDGID) they belong to
    the container's user (its Config.User, root when none), as dockerd's tarCopyOptions."""
    if tar_in is None and not os.path.lexists(src):
        raise CopyError(f"no such file or directory: {src}")
    owner = None
    if archive:
        uid, gid, _ = e.resolve_user(rec["chainIds"], (rec.get("config") or {}).get("User") or "")
        owner = (uid, gid)
    if follow and tar_in is None and not os.path.exists(src):
        raise CopyError(f"{src} is a symbolic link to nothing (dangling)")
    r, w = os.pipe()
    parent_dir, name = _split(dest)

    def consume(root: str) -> None:
        os.close(w)
        from kobako.linux import fs
        rootfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            dfd = fs.open_in_root(rootfd, os.path.join(parent_dir, name), os.O_RDONLY | os.O_DIRECTORY)
            arc = None
        except (FileNotFoundError, NotADirectoryError):
            if tar_in is not None:
                raise CopyError(f"no such directory in the container: {dest}") from None
            try:
                dfd = fs.open_in_root(rootfd, parent_dir, os.O_RDONLY | os.O_DIRECTORY)
            except (FileNotFoundError, NotADirectoryError):
                raise CopyError(f"no such directory in the container: {parent_dir}") from None
            arc = name
        os.fchdir(dfd)  # extract into ".": /proc/self is not ours in the container's /proc
        with os.fdopen(r, "rb") as f:
            layer.extract(f, ".", layer.COPY_IN, top=arc, owner=owner)

    def produce() -> None:
        os.close(r)
        try:
            if tar_in is not None:
                import shutil
                with os.fdopen(w, "wb") as out:
                    shutil.copyfileobj(tar_in, out, 1 << 20)
                return
            with os.fdopen(w, "wb") as out, tarfile.open(fileobj=out, mode="w|",
                                                          format=tarfile.PAX_FORMAT) as t:
                t.add(os.path.realpath(src) if follow else src,
                      arcname=os.path.basename(os.path.normpath(src)), recursive=True)
        except BrokenPipeError:
            pass  # the container side failed; its error is reported

    _in_container(e, rec, consume, produce)
