"""Layer snapshots: each image layer unpacked once into its own directory, shared by
every image and container that uses it (the containerd overlay snapshotter's model).

    <data root>/snapshots/<chain id hex>/fs     the layer's files (an overlay lowerdir)
    <data root>/snapshots/<chain id hex>/link   its short name
    <data root>/l/<short>  -> ../snapshots/<chain id hex>/fs

A snapshot is keyed by its chain ID (OCI image spec: the digest of the layer stack up
to it), so one layer stacked on different parents is two snapshots, as it must be
for whiteouts to mean the same thing. Overlay mount options are limited to one page
(4096 bytes); lowerdirs go through the short links (like Docker's overlay2) so ~150
layers fit.

A snapshot is unpacked into snapshots/.tmp-<random>/ and renamed into place only
after syncfs, so a crash leaves a temp directory (removed by `prune_temp`), never a
half-unpacked layer under a real name.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from kobako import errors
from kobako.paths import fsync_dir

_SHORT = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"  # base32, as overlay2's link ids
PAGE = 4096


# ext4 without a journal does not reuse an inode freed in the last 60 s (300 s while its
# inode table block is dirty), and its allocator skips such inodes one by one, from the
# start of the group, for every new file: a layer unpacked where a removed one freed
# thousands takes ~1 ms a file instead of ~25 us (1.2 s -> 2-7 s for Debian's minbase
# here). Snapshots go under a chattr +T directory, so Orlov puts each in a flex group of
# its own at random; `begin` retries one that lands where a layer was freed recently.
_FREED = "snapshots.freed"  # in the data root: "<region> <unix time>" per removed tree
_RECENT_S = 300


def _region(path: str) -> int:
    """The flex group of an inode, for mke2fs's defaults (16 groups of 8192 inodes)."""
    return os.stat(path).st_ino >> 17


class SnapshotError(errors.InvalidArgument):
    pass


class MountSpec:
    """A mount described, not made: the runtime makes it inside the container's namespace.
    `cwd`: the directory relative paths in the options start from (the mount is made there)."""

    def __init__(self, type: str, source: str, options: list[str], cwd: str | None = None) -> None:
        self.type, self.source, self.options, self.cwd = type, source, options, cwd

    def to_json(self) -> dict:
        out = {"type": self.type, "source": self.source, "options": self.options}
        if self.cwd:
            out["cwd"] = self.cwd
        return out


def chain_ids(diff_ids: list[str]) -> list[str]:
    import hashlib
    out: list[str] = []
    for d in diff_ids:
        if not out:
            out.append(d)
        else:
            out.append("sha256:" + hashlib.sha256(f"{out[-1]} {d}".encode()).hexdigest())
    return out


def syncfs(path: str) -> None:
    """One syncfs(2) for a whole unpacked layer: durable without an fsync per file."""
    import ctypes
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.syncfs(fd) != 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e), path)
    finally:
        os.close(fd)


class Flusher:
    """Writes dirty pages back while a pull still unpacks: a thread calls syncfs(2) every
    `period` seconds, so the syncfs that makes each layer durable finds little left to do
    (on this VM it took 0.56 s of a 1.9 s pull when it had all of it)."""

    def __init__(self, path: str, period: float = 0.2) -> None:
        import threading
        self.path, self.period = path, period
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(self.period):
            try:
                syncfs(self.path)
            except OSError:
                return

    def __enter__(self) -> Flusher:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


class Snapshots:
    def __init__(self, root: str) -> None:
        self.root = root
        self.dir = os.path.join(root, "snapshots")
        self.links = os.path.join(root, "l")
        # called with the chain ID of each snapshot this process publishes, while an image
        # operation records its steps (kobako/image/gc.py undo_on_failure)
        self.made: Callable[[str], None] | None = None
        if not os.path.isdir(self.dir):
            try:
                os.makedirs(self.dir, mode=0o700)
                from kobako.linux.fs import mark_topdir
                mark_topdir(self.dir)  # new layers go to fresh block groups (see mark_topdir)
            except FileExistsError:
                pass  # a concurrent command made it
        os.makedirs(self.links, mode=0o700, exist_ok=True)

    def _dir(self, chain_id: str) -> str:
        return os.path.join(self.dir, chain_id.split(":", 1)[1])

    def exists(self, chain_id: str) -> bool:
        return os.path.exists(os.path.join(self._dir(chain_id), "link"))

    def fs(self, chain_id: str) -> str:
        return os.path.join(self._dir(chain_id), "fs")

    def tarsplit(self, chain_id: str) -> str | None:
        """The layer's tar-split (a pulled layer whose blob was not kept), if it has one."""
        from kobako.storage.tarsplit import NAME
        p = os.path.join(self._dir(chain_id), NAME)
        return p if self.exists(chain_id) and os.path.exists(p) else None

    def short(self, chain_id: str) -> str:
        with open(os.path.join(self._dir(chain_id), "link")) as f:
            return f.read().strip()

    def begin(self) -> str:
        """A fresh temp directory to unpack one layer into (its fs/ subdirectory), placed
        away from the inodes a removed layer freed in the last minutes (see _region)."""
        avoid = self._recently_freed()
        for _ in range(8):
            tmp = os.path.join(self.dir, ".tmp-" + os.urandom(8).hex())
            os.mkdir(tmp, 0o755)
            if _region(tmp) not in avoid:
                break
            os.rmdir(tmp)  # Orlov starts at a random group: the next one lands elsewhere
        else:
            os.mkdir(tmp, 0o755)  # eight misses: unpack there all the same
        os.mkdir(os.path.join(tmp, "fs"), 0o755)
        return tmp

    def _remove_tree(self, path: str) -> None:
        """rmtree, noting where the inodes it frees were (`begin` keeps new layers away)."""
        import shutil
        import time
        try:
            region = _region(path)
        except OSError:
            return
        shutil.rmtree(path, ignore_errors=True)
        try:
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
            fd = os.open(os.path.join(self.root, _FREED), flags, 0o600)
            try:
                os.write(fd, f"{region} {int(time.time())}\n".encode())
            finally:
                os.close(fd)
        except OSError:
            pass  # a hint only

    def _recently_freed(self) -> set[int]:
        import time
        path = os.path.join(self.root, _FREED)
        try:
            with open(path) as f:
                lines = f.read().split("\n")
        except OSError:
            return set()
        now = time.time()
        fresh: list[tuple[int, int]] = []
        for ln in lines:
            try:
                region, when = map(int, ln.split())
            except ValueError:
                continue  # the empty last line, or a torn one
            if now - when < _RECENT_S:
                fresh.append((region, when))
        if len(lines) > 64 and len(fresh) < len(lines) // 2:
            tmp = f"{path}.{os.getpid()}"  # trimmed atomically; a line appended meanwhile is lost: a hint
            with open(tmp, "w") as f:
                f.write("".join(f"{r} {w}\n" for r, w in fresh))
            os.replace(tmp, path)
        return {r for r, _ in fresh}

    def commit(self, tmp: str, chain_id: str, diff_id: str, size: int) -> None:
        """Publish an unpacked temp dir as the snapshot for chain_id (after syncfs)."""
        final = self._dir(chain_id)
        if self.exists(chain_id):  # someone else unpacked it meanwhile
            self._remove_tree(tmp)
            return
        short = "".join(_SHORT[b % 32] for b in os.urandom(26))
        with open(os.path.join(tmp, "link"), "w") as f:
            f.write(short)
        with open(os.path.join(tmp, "meta"), "w") as f:
            f.write(f'{{"chainId": "{chain_id}", "diffId": "{diff_id}", "size": {size}}}\n')
        syncfs(tmp)
        from kobako.paths import FileLock
        # Two pulls of images sharing a layer may both get here: the first publishes, the
        # second finds it published (under the lock) and drops its own copy.
        with FileLock(os.path.join(self.root, "snapshots.lock")):
            if self.exists(chain_id):
                self._remove_tree(tmp)
                return
            if os.path.isdir(final):  # a leftover without a link file: never published, replace it
                self._remove_tree(final)
            # the short link first: a crash then leaves a dangling link (swept), never a
            # published snapshot without its link
            os.symlink(f"../snapshots/{os.path.basename(final)}/fs", os.path.join(self.links, short))
            os.rename(tmp, final)
        if self.made is not None:
            self.made(chain_id)  # a step: its undo is registered before the next one
        fsync_dir(self.dir)
        fsync_dir(self.links)

    def abort(self, tmp: str) -> None:
        self._remove_tree(tmp)

    def size(self, chain_id: str) -> int:
        try:
            import json
            with open(os.path.join(self._dir(chain_id), "meta")) as f:
                return int(json.load(f).get("size", 0))
        except (OSError, ValueError):
            return 0

    def remove(self, chain_id: str) -> None:
        d = self._dir(chain_id)
        try:
            short = self.short(chain_id)
            os.unlink(os.path.join(d, "link"))  # unpublished first: exists() is false from here on
            os.unlink(os.path.join(self.links, short))
        except (FileNotFoundError, OSError):
            pass
        self._remove_tree(d)

    def all(self) -> list[str]:
        return ["sha256:" + n for n in os.listdir(self.dir) if not n.startswith(".")]

    def prune_temp(self) -> int:
        """Temp dirs of crashed unpacks, and short links whose snapshot is gone."""
        n = 0
        for name in os.listdir(self.links):
            p = os.path.join(self.links, name)
            if not os.path.exists(p):  # dangling
                try:
                    os.unlink(p)
                    n += 1
                except OSError:
                    pass
        for name in os.listdir(self.dir):
            if name.startswith(".tmp-"):
                self._remove_tree(os.path.join(self.dir, name))
                n += 1
        return n

    def lowerdir(self, chains: list[str]) -> str:
        """The overlay lowerdir option for a layer stack (bottom first in `chains`), relative to
        the data root: 28 bytes a layer ("l/" + 26), as Docker's overlay2 mounts them."""
        return ":".join(f"l/{self.short(c)}" for c in reversed(chains))

    def mount_for(self, chains: list[str], upper: str, work: str, volatile: bool = False) -> MountSpec:
        """The container's root: its upper dir over the image's layers. `volatile` skips the
        sync of the whole upper filesystem that overlay does when it is unmounted (at the
        container's exit: ~1 s on a busy disk); right for a container that is thrown away
        (--rm), whose changes need not survive a power loss."""
        if not chains:
            raise SnapshotError("an image needs at least one layer")
        opts = [f"lowerdir={self.lowerdir(chains)}", f"upperdir={upper}", f"workdir={work}"]
        if volatile:
            opts.append("volatile")
        from kobako.linux.namespaces import in_user_namespace
        if in_user_namespace():  # rootless: user.overlay.* xattrs (layer.overlay_xattr)
            opts.append("userxattr")
        if len(",".join(opts)) >= PAGE:
            raise SnapshotError(f"too many layers ({len(chains)}) for one overlay mount: the options "
                                f"exceed a page (about {(PAGE - 300) // 29} layers fit)")
        return MountSpec("overlay", "overlay", opts, cwd=self.root)
