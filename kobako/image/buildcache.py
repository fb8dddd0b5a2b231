"""The build cache: what each build step made, by a key of everything that decides it.

A key is the digest of the parent step's key and the step itself (its instruction with
the build args it saw, and for COPY/ADD the digest of the files it copies); the first key
of a stage is its base image's ID. An entry keeps the step's history entry (its
`created` time too, so an unchanged rebuild makes the very same image ID) and, for a step
that changed files, its layer: the blob and the snapshot, which image GC keeps while the
entry exists. `kobako builder prune` (and `system prune`) drop the entries, then GC frees
what no image uses.
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
