"""Image records: what the engine knows as "an image".

One JSON file per image under <data root>/images/<id hex>.json, written atomically,
changed under one flock (images/lock) so concurrent CLI calls are safe. The image ID
is the digest of its config blob, as in Docker. A name (repo:tag) belongs to at most
one image: tagging moves it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from kobako import errors
from kobako.image import reference
from kobako.image.content import ContentStore
from kobako.paths import atomic_write
from kobako.runtime import jsonfast  # `json` imports re: too slow for `kobako run`


class ImageNotFound(errors.NotFound):
    pass


class ImageError(errors.InvalidArgument):
    pass


def now_iso() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e9):09d}Z"


class ImageStore:
    def __init__(self, root: str) -> None:
        self.root = root
        self.dir = os.path.join(root, "images")
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        self.content = ContentStore(root)
        # called with (image ID, names) for each record new to the store, while an image
        # operation records its steps (gc.undo_on_failure)
        self.made: Callable[[str, list[str]], None] | None = None

    def locked(self):
        from kobako.paths import FileLock
        return FileLock(os.path.join(self.dir, "lock"))

    def _path(self, image_id: str) -> str:
        return os.path.join(self.dir, image_id.split(":", 1)[1] + ".json")

    def all(self) -> list[dict]:
        out = []
        for name in os.listdir(self.dir):
            if name.endswith(".json"):
                try:
                    with open(os.path.join(self.dir, name), "rb") as f:
                        out.append(jsonfast.loads(f.read()))
                except (FileNotFoundError, ValueError):
                    continue
        out.sort(key=lambda r: r.get("created") or "", reverse=True)
        return out

    def get(self, image_id: str) -> dict | None:
        try:
            with open(self._path(image_id), "rb") as f:
                return jsonfast.loads(f.read())
        except (FileNotFoundError, ValueError, IndexError):
            return None

    def save(self, rec: dict) -> None:
        atomic_write(self._path(rec["id"]), jsonfast.dumps(rec).encode())

    def delete_record(self, image_id: str) -> None:
        try:
            os.unlink(self._path(image_id))
        except FileNotFoundError:
            pass

    def resolve(self, name: str) -> dict:
        """An image by name (normalised), name@digest, full or short ID."""
        recs = self.all()
        if reference.looks_like_id(name):
            h = name.removeprefix("sha256:")
            hits = [r for r in recs if r["id"].split(":", 1)[1].startswith(h)]
            if len(hits) == 1:
                return hits[0]
            if len(hits) > 1:
                raise ImageError(f"image ID {name!r} is ambiguous: {len(hits)} images start with it")
        try:
            refs = reference.candidates(name)
        except reference.InvalidReference:
            if reference.looks_like_id(name):
                raise ImageNotFound(f"no such image: {name}") from None
            raise
        for ref in refs:  # a short name: the first registry of the search list with it here wins
            if ref.digest:
                want = f"{ref.name}@{ref.digest}"
                for r in recs:
                    if want in r.get("repoDigests", []) or (ref.digest == r.get("manifest", {}).get("digest")
                                                            and any(n.startswith(ref.name + ":")
                                                                    for n in r.get("names", []))):
                        return r
                continue
            s = str(ref)
            for r in recs:
                if s in r.get("names", []):
                    return r
        raise ImageNotFound(f"no such image: {name if refs[0].digest else refs[0]}")

    def add(self, rec: dict, names: list[str], repo_digests: list[str] | None = None) -> dict:
        """Store (or update) an image record and move `names` onto it."""
        with self.locked():
            old = self.get(rec["id"])
            if old:
                rec = {**old, **{k: v for k, v in rec.items() if k not in ("names", "repoDigests")}}
                rec["names"] = old.get("names", [])
                rec["repoDigests"] = old.get("repoDigests", [])
            else:
                rec.setdefault("names", [])
                rec.setdefault("repoDigests", [])
            self._take_names(names, rec["id"])
            for n in names:
                if n not in rec["names"]:
                    rec["names"].append(n)
            for d in repo_digests or []:
                if d not in rec["repoDigests"]:
                    rec["repoDigests"].append(d)
            self.save(rec)
        if not old and self.made is not None:
            self.made(rec["id"], rec["names"])  # a step: its undo is registered before the next one
        return rec

    def _take_names(self, names: list[str], owner: str) -> None:
        for r in self.all():
            if r["id"] == owner:
                continue
            kept = [n for n in r.get("names", []) if n not in names]
            if kept != r.get("names", []):
                r["names"] = kept
                self.save(r)

    def tag(self, image_id: str, name: str) -> None:
        with self.locked():
            rec = self.get(image_id)
            if rec is None:
                raise ImageNotFound(f"no such image: {image_id}")
            self._take_names([name], image_id)
            if name not in rec["names"]:
                rec["names"].append(name)
            self.save(rec)

    def untag(self, image_id: str, name: str) -> dict:
        with self.locked():
            rec = self.get(image_id)
            if rec is None:
                raise ImageNotFound(f"no such image: {image_id}")
            rec["names"] = [n for n in rec["names"] if n != name]
            repo = name.rsplit(":", 1)[0]
            if not any(n.rsplit(":", 1)[0] == repo for n in rec["names"]):
                rec["repoDigests"] = [d for d in rec.get("repoDigests", []) if not d.startswith(repo + "@")]
            self.save(rec)
            return rec
