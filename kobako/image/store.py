"""Image records: what the engine knows as "an image".

One JSON file per image under <data root>/images/<id hex>.json, written atomically,
changed under one flock (images/lock) so concurrent CLI calls are safe. The image ID
is the digest of its config blob, as in Docker. A name (repo:tag) belongs to at most
one image: tagging moves it.

A multi-platform index kept whole (`pull --all-platforms`, `load` of a named index) is an
index record under images/indexes/<index digest hex>.json: its names and repo digests, and
for each platform the manifest and the image record (by ID) that holds it. The images it
holds carry no name of their own; a name belongs to one image or one index, and resolving
it through an index gives the image of the platform asked for (the host's by default).
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

    @property
    def index_dir(self) -> str:
        return os.path.join(self.dir, "indexes")

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

    # -- index records

    def _index_path(self, index_id: str) -> str:
        return os.path.join(self.index_dir, index_id.split(":", 1)[1] + ".json")

    def indexes(self) -> list[dict]:
        try:
            names = os.listdir(self.index_dir)
        except FileNotFoundError:
            return []
        out = []
        for name in names:
            if name.endswith(".json"):
                try:
                    with open(os.path.join(self.index_dir, name), "rb") as f:
                        out.append(jsonfast.loads(f.read()))
                except (FileNotFoundError, ValueError):
                    continue
        out.sort(key=lambda r: r.get("added") or "", reverse=True)
        return out

    def get_index(self, index_id: str) -> dict | None:
        try:
            with open(self._index_path(index_id), "rb") as f:
                return jsonfast.loads(f.read())
        except (FileNotFoundError, ValueError, IndexError):
            return None

    def save_index(self, rec: dict) -> None:
        os.makedirs(self.index_dir, mode=0o700, exist_ok=True)
        atomic_write(self._index_path(rec["id"]), jsonfast.dumps(rec).encode())

    def delete_index(self, index_id: str) -> None:
        try:
            os.unlink(self._index_path(index_id))
        except (FileNotFoundError, IndexError):
            pass

    def holders(self, image_id: str) -> list[dict]:
        """The index records that hold an image."""
        return [x for x in self.indexes() if any(m.get("image") == image_id for m in x.get("manifests", []))]

    def resolve_index(self, name: str) -> dict | None:
        """The index record a name (or name@index digest) names, if one does."""
        if reference.looks_like_id(name):
            return None
        try:
            ref = reference.parse(name)
        except reference.InvalidReference:
            return None
        for x in self.indexes():
            if ref.digest:
                pinned = f"{ref.name}@{ref.digest}" in x.get("repoDigests", [])
                same_repo = any(n.startswith(ref.name + ":") for n in x["names"])
                if pinned or (ref.digest == x["id"] and same_repo):
                    return x
            elif str(ref) in x.get("names", []):
                return x
        return None

    def pick(self, index: dict, want: dict | None = None) -> dict:
        """An index record's image for the platform `want` (normalised), else the host's, else
        (an index without the host's platform, run without --platform) its first image."""
        from kobako.image import manifest as mf
        entries = index.get("manifests", [])
        desc = mf.Index(mf.OCI_INDEX, [mf.Descriptor(mf.OCI_MANIFEST, m["digest"], 0, m.get("platform"))
                                       for m in entries])
        try:
            d = mf.select(desc, want)
        except mf.NoMatchingManifest:
            if want is not None or not entries:
                raise
            d = desc.manifests[0]
        image_id = next(m["image"] for m in entries if m["digest"] == d.digest)
        rec = self.get(image_id)
        if rec is None:
            raise ImageNotFound(f"image {image_id} of index {index['id']} is missing from the store")
        return rec

    def add_index(self, rec: dict, names: list[str], repo_digests: list[str] | None = None) -> dict:
        """Store (or update) an index record and move `names` onto it."""
        with self.locked():
            old = self.get_index(rec["id"])
            rec = {**rec, "names": list(old.get("names", [])) if old else [],
                   "repoDigests": list(old.get("repoDigests", [])) if old else []}
            self._take_names(names, rec["id"])
            rec["names"] += [n for n in names if n not in rec["names"]]
            rec["repoDigests"] += [d for d in repo_digests or [] if d not in rec["repoDigests"]]
            self.save_index(rec)
        if not old and self.made is not None:
            self.made(rec["id"], rec["names"])
        return rec

    def tag_index(self, index_id: str, name: str) -> None:
        self._tag(self.get_index, self.save_index, index_id, name)

    def untag_index(self, index_id: str, name: str) -> dict:
        return self._untag(self.get_index, self.save_index, index_id, name)

    # -- names

    def resolve(self, name: str, platform: dict | None = None) -> dict:
        """An image by name (normalised), name@digest, full or short ID. A name an index
        record holds gives its image for `platform` (normalised; the host's by default)."""
        try:
            return self._resolve(name)
        except ImageNotFound:
            index = self.resolve_index(name)
            if index is None:
                raise
            return self.pick(index, platform)

    def _resolve(self, name: str) -> dict:
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
        for x in self.indexes():
            if x["id"] == owner:
                continue
            kept = [n for n in x.get("names", []) if n not in names]
            if kept == x.get("names", []):
                continue
            if kept:
                x["names"] = kept
                self.save_index(x)
            else:  # reached only by its names: its images are left untagged, as a moved tag leaves one
                self.delete_index(x["id"])

    def tag(self, image_id: str, name: str) -> None:
        self._tag(self.get, self.save, image_id, name)

    def untag(self, image_id: str, name: str) -> dict:
        return self._untag(self.get, self.save, image_id, name)

    # image records and index records are named the same way; each kind is read and written
    # by its own get/save
    def _tag(self, get, save, rec_id: str, name: str) -> None:
        with self.locked():
            rec = get(rec_id)
            if rec is None:
                raise ImageNotFound(f"no such image: {rec_id}")
            self._take_names([name], rec_id)
            if name not in rec["names"]:
                rec["names"].append(name)
            save(rec)

    def _untag(self, get, save, rec_id: str, name: str) -> dict:
        with self.locked():
            rec = get(rec_id)
            if rec is None:
                raise ImageNotFound(f"no such image: {rec_id}")
            rec["names"] = [n for n in rec["names"] if n != name]
            repo = name.rsplit(":", 1)[0]
            if not any(n.rsplit(":", 1)[0] == repo for n in rec["names"]):
                rec["repoDigests"] = [d for d in rec.get("repoDigests", []) if not d.startswith(repo + "@")]
            save(rec)
            return rec
