"""Container records: one directory per container under <data root>/containers/<id>/

    container.json   the record (name, image, options, state), written atomically
    upper/, work/    the container's overlay upper and work dirs (its changes)
    bundle/          the OCI bundle handed to the runtime (config.json, rootfs/)

Names are unique; `names.lock` serialises the name check and the directory creation.

A record that says the container is starting, running or restarting also says who runs
it, its `owner`: the `kobako run` process of a foreground container, the monitor of a
detached one (engine/monitor.py), by PID and start time (a PID alone may be reused). When
that process is gone and the container's init has ended too, nobody will ever record the
exit: the next command that looks at the container settles it (Engine.state).
"""

from __future__ import annotations

import os

from kobako import errors
from kobako.paths import FileLock, atomic_write, rmtree  # noqa: F401 - FileLock re-exported
from kobako.runtime import jsonfast  # `json` imports re: too slow for `kobako run`


class ContainerNotFound(errors.NotFound):
    pass


class ContainerError(errors.InvalidArgument):
    """Bad input about a container (400); its conflicts raise ContainerConflict (409)."""


class ContainerConflict(errors.Conflict, ContainerError):
    """The container's state or name refuses the request (409)."""


_LEFT = ("brave", "calm", "eager", "gentle", "happy", "jolly", "keen", "lucid", "merry", "nimble",
         "proud", "quiet", "swift", "tidy", "vivid", "witty", "zen", "bold", "cool", "fond")
_RIGHT = ("fox", "owl", "crane", "otter", "lynx", "heron", "koi", "tanuki", "kitsune", "panda",
          "finch", "hare", "mole", "newt", "seal", "wren", "yak", "ibis", "gecko", "badger")


OWNED = ("starting", "running", "restarting")  # the statuses someone must be alive to end


def this_process(by: str) -> dict:
    """The owner entry for the calling process: `by` is "run" (a foreground run), "start" (a
    command handing a start to the monitor) or "monitor"."""
    from kobako.runtime.state import start_time
    pid = os.getpid()
    return {"pid": pid, "start": start_time(pid), "by": by}


def owner_gone(rec: dict, ran: bool = True) -> str | None:
    """Why the process that runs the container is gone (State.Error's words), or None while
    it lives -- or when the record names no owner (made by an older kobako: left as it is).
    `ran`: the runtime made the container (its state is there) before the owner died."""
    owner = rec.get("owner")
    if not owner:
        return None
    from kobako.runtime.state import start_time
    pid = int(owner.get("pid") or 0)
    if pid > 0 and start_time(pid) == owner.get("start"):
        return None
    by = owner.get("by")
    if by == "start":
        return f"the kobako command that was starting it (pid {pid}) was killed before the monitor took it"
    who = "kobako run" if by == "run" else "the container monitor"
    if not ran:
        return f"{who} (pid {pid}) was killed while it was starting the container"
    return f"{who} (pid {pid}), which ran it, was killed: its exit code is unknown"


def random_name() -> str:
    r = os.urandom(4)
    return f"{_LEFT[r[0] % len(_LEFT)]}_{_RIGHT[r[1] % len(_RIGHT)]}_{int.from_bytes(r[2:], 'big') % 1000}"


def valid_name(name: str) -> bool:
    ok = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
    return bool(name) and name[0].isalnum() and set(name) <= ok and len(name) <= 128


class ContainerStore:
    def __init__(self, root: str) -> None:
        self.dir = os.path.join(root, "containers")
        if not os.path.isdir(self.dir):
            try:
                os.makedirs(self.dir, mode=0o700)
                from kobako.linux.fs import mark_topdir
                mark_topdir(self.dir)  # each container's upper dir in a fresh block group
            except FileExistsError:
                pass  # a concurrent command made it

    def path(self, cid: str, *rest: str) -> str:
        return os.path.join(self.dir, cid, *rest)

    def names_locked(self) -> FileLock:
        return FileLock(os.path.join(self.dir, "names.lock"))

    def ids(self) -> list[str]:
        return [n for n in os.listdir(self.dir) if len(n) == 64]

    def get(self, cid: str) -> dict | None:
        try:
            with open(self.path(cid, "container.json"), "rb") as f:
                return jsonfast.loads(f.read())
        except (FileNotFoundError, NotADirectoryError, ValueError):
            return None

    def all(self) -> list[dict]:
        out = [r for r in (self.get(c) for c in self.ids()) if r]
        out.sort(key=lambda r: r.get("created", ""), reverse=True)
        return out

    def save(self, rec: dict) -> None:
        atomic_write(self.path(rec["id"], "container.json"), jsonfast.dumps(rec).encode(),
                     durable=False)

    def update(self, cid: str, **changes: object) -> dict:
        """Read-modify-write under the container's lock (the monitor writes the same file)."""
        from kobako.engine.monitor import update_record
        rec = update_record(self.path(cid), **changes)
        if rec is None:
            raise ContainerNotFound(f"no such container: {cid}")
        return rec

    def create(self, rec: dict, name: str | None) -> dict:
        """Reserve an ID and a name and write the first record."""
        with self.names_locked():
            taken = {r["name"]: r["id"] for r in self.all()}
            if name:
                if not valid_name(name):
                    raise ContainerError(f"invalid container name {name!r}: "
                                         "use letters, digits, '_', '.', '-'")
                if name in taken:
                    raise ContainerConflict(f'the container name "{name}" is already in use by container '
                                         f'{taken[name][:12]}', )
            else:
                name = random_name()
                while name in taken:
                    name = random_name()
            cid = os.urandom(32).hex()
            os.makedirs(self.path(cid), mode=0o700)
            os.close(os.open(self.path(cid, "lock"), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
            rec = {**rec, "id": cid, "name": name}
            self.save(rec)
            return rec

    def resolve(self, ref: str) -> dict:
        """A container by name, full ID or unique ID prefix."""
        recs = self.all()
        for r in recs:
            if r["name"] == ref or r["name"] == ref.lstrip("/") or r["id"] == ref:
                return r
        hits = [r for r in recs if len(ref) >= 3 and r["id"].startswith(ref)]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise ContainerError(f"container ID {ref!r} is ambiguous")
        raise ContainerNotFound(f"no such container: {ref}")

    def remove_dir(self, cid: str) -> None:
        """Renamed away first (atomic): the monitor, finishing the same container at the same
        moment, then finds no directory to write into, rather than half of one."""
        trash = os.path.join(self.dir, f".trash-{cid}-{os.urandom(4).hex()}")
        try:
            os.rename(self.path(cid), trash)
        except FileNotFoundError:
            return
        rmtree(trash)

    def sweep_trash(self) -> None:
        for n in os.listdir(self.dir):
            if n.startswith(".trash-"):
                rmtree(os.path.join(self.dir, n))
