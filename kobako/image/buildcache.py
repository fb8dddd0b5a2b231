"""The build cache: what each build step made, by a key of everything that decides it.

A key is the digest of the parent step's key and the step itself (its instruction with
the build args it saw, and for COPY/ADD the digest of the files it copies); the first key
of a stage is its base image's ID. An entry keeps the step's history entry (its
`created` time too, so an unchanged rebuild makes the very same image ID) and, for a step
that changed files, its layer: the blob and the snapshot, which image GC keeps while the
entry exists. `kobako builder prune` (and `system prune`) drop the entries, then GC frees
what no image uses.

The directories of `RUN --mount=type=cache` (CacheMounts) are build cache too: kept across
builds, removed by the same prunes, counted by `system df`.
"""

from __future__ import annotations

import hashlib
import json
import os
import time


def key(parent: str, *parts: str) -> str:
    h = hashlib.sha256(parent.encode())
    for p in parts:
        h.update(b"\0" + p.encode())
    return h.hexdigest()


def digests_dir(root: str) -> str:
    """Where the content digests of directory contexts' files are remembered between builds
    (image/context.py DigestCache); cleared with the cache."""
    return os.path.join(root, "builder", "digests")


class BuildCache:
    def __init__(self, root: str) -> None:
        self.dir = os.path.join(root, "builder", "cache")
        self.digests = digests_dir(root)

    def _path(self, k: str) -> str:
        return os.path.join(self.dir, k + ".json")

    def get(self, k: str) -> dict | None:
        try:
            with open(self._path(k)) as f:
                entry = json.load(f)
        except (OSError, ValueError):
            return None
        return entry if isinstance(entry, dict) and isinstance(entry.get("history"), dict) else None

    def put(self, k: str, entry: dict) -> None:
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        tmp = f"{self._path(k)}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump({**entry, "lastUsed": int(time.time())}, f)
        os.replace(tmp, self._path(k))

    def touch(self, k: str) -> None:
        try:
            os.utime(self._path(k))
        except OSError:
            pass

    def all(self) -> list[tuple[str, dict]]:
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        out = []
        for n in names:
            if n.endswith(".json"):
                e = self.get(n[:-5])
                if e is not None:
                    out.append((n[:-5], e))
        return out

    def references(self) -> tuple[set[str], set[str]]:
        """The blobs and snapshots (chain IDs) the entries hold."""
        blobs: set[str] = set()
        chains: set[str] = set()
        for _, e in self.all():
            if e.get("layer"):
                blobs.add(e["layer"]["digest"])
            if e.get("chainId"):
                chains.add(e["chainId"])
        return blobs, chains

    def size(self, sizes) -> tuple[int, int]:
        """(entries, bytes of their layers) for `system df`; `sizes(entry)` gives one's bytes."""
        entries = self.all()
        return len(entries), sum(sizes(e) for _, e in entries if e.get("layer"))

    def clear(self, older_than: float | None = None) -> int:
        """Drop entries (all, or those unused since `older_than`, epoch seconds); how many."""
        n = 0
        for k, _ in self.all():
            p = self._path(k)
            try:
                if older_than is not None and os.stat(p).st_mtime >= older_than:
                    continue
                os.unlink(p)
                n += 1
            except FileNotFoundError:
                pass
        for name in os.listdir(self.dir) if os.path.isdir(self.dir) else []:
            if name.endswith(".tmp"):  # a writer killed midway
                try:
                    os.unlink(os.path.join(self.dir, name))
                except FileNotFoundError:
                    pass
        for name in os.listdir(self.digests) if os.path.isdir(self.digests) else []:
            p = os.path.join(self.digests, name)
            try:
                if older_than is None or os.stat(p).st_mtime < older_than:
                    os.unlink(p)
            except FileNotFoundError:
                pass
        return n


class CacheMounts:
    """RUN --mount=type=cache directories: `builder/mounts/<sha256 of id>/<n>/`, kept from
    build to build, never part of a layer or a key. A step holds a flock on the directory it
    uses for as long as it runs: shared (LOCK_SH on instance 0), locked (LOCK_EX on it: one
    step at a time), private (LOCK_EX without waiting on 0, 1, 2...: the first free one, made
    if need be). A prune removes only the directories it can lock, so never one in use."""

    def __init__(self, root: str) -> None:
        self.dir = os.path.join(root, "builder", "mounts")

    def acquire(self, cache_id: str, sharing: str, mode: int = 0o755, uid: int = 0,
                gid: int = 0) -> tuple[str, int]:
        """(the directory, the fd whose flock holds it: close it when the step is done)."""
        import fcntl
        base = os.path.join(self.dir, hashlib.sha256(cache_id.encode()).hexdigest())
        os.makedirs(base, mode=0o700, exist_ok=True)
        id_file = os.path.join(base, "id")
        if not os.path.exists(id_file):  # for a person looking in the directory
            with open(f"{id_file}.{os.getpid()}.tmp", "w") as f:
                f.write(cache_id)
            os.replace(f"{id_file}.{os.getpid()}.tmp", id_file)
        n = 0
        while True:
            path = os.path.join(base, str(n))
            try:
                fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except FileNotFoundError:
                try:
                    os.mkdir(path, 0o700)
                    if (uid, gid) != (os.geteuid(), os.getegid()):
                        os.chown(path, uid, gid)
                    os.chmod(path, mode)
                except FileExistsError:
                    pass
                continue
            op = fcntl.LOCK_SH if sharing == "shared" else fcntl.LOCK_EX
            try:
                fcntl.flock(fd, op | (fcntl.LOCK_NB if sharing == "private" else 0))
            except BlockingIOError:
                os.close(fd)
                n += 1
                continue
            if os.fstat(fd).st_nlink == 0:  # pruned while we waited: make it again
                os.close(fd)
                continue
            return path, fd

    def _instances(self) -> list[str]:
        out = []
        for h in sorted(os.listdir(self.dir)) if os.path.isdir(self.dir) else []:
            base = os.path.join(self.dir, h)
            if os.path.isdir(base):
                out += [os.path.join(base, n) for n in sorted(os.listdir(base)) if n.isdigit()]
        return out

    def size(self) -> tuple[int, int]:
        """(directories, bytes in them) for `system df`."""
        from kobako.paths import dir_size
        paths = self._instances()
        return len(paths), sum(dir_size(p, allocated=True) for p in paths)

    def clear(self) -> int:
        """Remove every cache mount no step is using; bytes freed."""
        import fcntl
        import shutil

        from kobako.paths import dir_size
        freed = 0
        for p in self._instances():
            try:
                fd = os.open(p, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            try:
                freed += dir_size(p, allocated=True)
                shutil.rmtree(p, ignore_errors=True)  # a waiter sees st_nlink 0 and makes a new one
            finally:
                os.close(fd)
        return freed  # (the directories that name an id stay: removing one races a step making it)
