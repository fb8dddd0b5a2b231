"""Container state under --root: one directory per container, JSON written atomically,
guarded by flock so concurrent calls (create/kill/delete/state) are safe.

<root>/<id>/state.json   what `state` prints, plus the runtime's own fields (_*)
<root>/<id>/config.json  the bundle's config as it was at create (exec reuses it)
<root>/<id>/exec.sock    exists while the init waits for `start` (runc's exec.fifo)
<root>/<id>/lock         flock target

The status is derived, never stored alone: created while exec.sock exists and the
init lives, running while it lives, paused when its cgroup is frozen, else stopped.
The init's start time (from /proc/PID/stat) guards against PID reuse.
"""

from __future__ import annotations

import fcntl
import os
import time

from kobako.linux import fs
from kobako.runtime import jsonfast
from kobako.runtime.errors import RuntimeFailure


def start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (clock ticks since boot), None if the PID is gone."""
    try:
        data = fs.read_file(f"/proc/{pid}/stat")
    except OSError:
        return None
    rest = data[data.rindex(b")") + 2:].split()
    if rest[0] in (b"Z", b"X"):  # a zombie has run its course
        return None
    return int(rest[19])


LOCK_WAIT_TRIES = 3000  # x 10 ms


# Lock fds this process holds. A one-shot kobako-runtime exits and the kernel drops them;
# the engine calls the runtime in-process, many times, and releases them after each call.
HELD: set[int] = set()


def release_all() -> None:
    for fd in list(HELD):
        HELD.discard(fd)
        try:
            os.close(fd)
        except OSError:
            pass


class Container:
    def __init__(self, root: str, cid: str) -> None:
        self.root = root
        self.id = cid
        self.dir = os.path.join(root, cid)
        self.data: dict = {}
        self.cfg: dict | None = None  # the validated config, when this process loaded it
        self.console = None  # `run` with a terminal: our end of the console socket
        self._lockfd = -1

    # -- locking ---------------------------------------------------------------
    def lock(self) -> None:
        try:
            self._lockfd = os.open(os.path.join(self.dir, "lock"),
                                   os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:
            raise RuntimeFailure(f"container {self.id!r} does not exist") from None
        # Another call holds the lock while it works (create holds it until "created").
        # Wait for it, but not forever: a wedged holder gets a clear message.
        for _ in range(LOCK_WAIT_TRIES):
            try:
                fcntl.flock(self._lockfd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                HELD.add(self._lockfd)
                break
            except BlockingIOError:
                time.sleep(0.01)
        else:
            os.close(self._lockfd)
            self._lockfd = -1
            raise RuntimeFailure(f"container {self.id!r} is busy: another kobako-runtime call holds its lock",
                                 "try again, or find that process")
        if not os.path.exists(os.path.join(self.dir, "state.json")) and not os.path.isdir(self.dir):
            raise RuntimeFailure(f"container {self.id!r} does not exist")

    def close_lock(self) -> None:
        """In a forked child: drop our copy of the lock fd without unlocking the parent."""
        if self._lockfd >= 0:
            HELD.discard(self._lockfd)
            os.close(self._lockfd)
            self._lockfd = -1

    def unlock(self) -> None:
        if self._lockfd >= 0:
            HELD.discard(self._lockfd)
            os.close(self._lockfd)
            self._lockfd = -1

    # -- creation / removal ----------------------------------------------------
    def make_dir(self) -> None:
        """mkdir is the atomic claim of the id: a second create gets EEXIST."""
        os.makedirs(self.root, mode=0o711, exist_ok=True)
        try:
            os.mkdir(self.dir, 0o711)
        except FileExistsError:
            raise RuntimeFailure(f"container {self.id!r} already exists",
                                 "delete it first or choose another id") from None
        self.lock()

    def remove_dir(self) -> None:
        # A second deleter (the engine's rm racing its monitor's cleanup) may re-create the lock
        # file between our listing and the rmdir: list again, a few times.
        for attempt in range(5):
            for name in os.listdir(self.dir) if os.path.isdir(self.dir) else ():
                try:
                    os.unlink(os.path.join(self.dir, name))
                except IsADirectoryError:  # idmap/: an empty mount point on the host (idmap.py)
                    try:
                        os.rmdir(os.path.join(self.dir, name))
                    except OSError:
                        import shutil  # (~10 ms of imports: not on the common path)

                        shutil.rmtree(os.path.join(self.dir, name), ignore_errors=True)
                except FileNotFoundError:
                    pass
            try:
                os.rmdir(self.dir)
                return
            except FileNotFoundError:
                return
            except OSError as e:
                if e.errno != 39 or attempt == 4:  # ENOTEMPTY
                    raise

    # -- data ------------------------------------------------------------------
    def load(self) -> dict:
        try:
            with open(os.path.join(self.dir, "state.json"), "rb") as f:
                self.data = jsonfast.loads(f.read())
        except FileNotFoundError:
            raise RuntimeFailure(f"container {self.id!r} does not exist") from None
        except ValueError:
            raise RuntimeFailure(f"state of container {self.id!r} is damaged",
                                 "remove it with `delete --force`") from None
        return self.data

    def save(self) -> None:
        tmp = os.path.join(self.dir, ".state.json.tmp")
        path = os.path.join(self.dir, "state.json")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, jsonfast.dumps(self.data).encode())
        finally:
            os.close(fd)
        # Replaced atomically either way. ext4's rename() over an existing file starts the
        # writeback of the new one (auto_da_alloc), and the unlink of `delete` right after a
        # short container then waits for that write (0.3-0.7 ms here): swapping the names and
        # unlinking the old content writes nothing.
        if fs.exchange(tmp, path):
            os.unlink(tmp)
        else:
            os.rename(tmp, path)

    def config(self) -> dict:
        with open(os.path.join(self.dir, "config.json"), "rb") as f:
            return jsonfast.loads(f.read())

    # -- derived status ----------------------------------------------------------
    def init_alive(self) -> bool:
        pid = self.data.get("pid") or 0
        return pid > 0 and start_time(pid) == self.data.get("_start_time")

    def status(self) -> str:
        if self.data.get("status") == "creating":
            return "creating" if self.init_alive() else "stopped"
        if not self.init_alive():
            return "stopped"
        if os.path.exists(os.path.join(self.dir, "exec.sock")):
            return "created"
        from kobako.runtime.cgroups import manager_for

        if manager_for(self.data).frozen():
            return "paused"
        return "running"

    def public(self, st: str | None = None) -> dict:
        """The state the OCI spec (and runc) print; `st`: the status, when the caller knows it."""
        st = st or self.status()
        out = {
            "ociVersion": self.data.get("ociVersion", "1.2.0"),
            "id": self.id,
            "pid": self.data.get("pid", 0) if st != "stopped" else 0,
            "status": st,
            "bundle": self.data.get("bundle", ""),
            "rootfs": self.data.get("rootfs", ""),
            "created": self.data.get("created", ""),
            "owner": "",
        }
        if self.data.get("annotations"):
            out["annotations"] = self.data["annotations"]
        return out


def now_rfc3339() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e9):09d}Z"


def ids(root: str) -> list[str]:
    try:
        return sorted(n for n in os.listdir(root) if os.path.isfile(os.path.join(root, n, "state.json")))
    except FileNotFoundError:
        return []


def open_existing(root: str, cid: str, lock: bool = True) -> Container:
    from kobako.runtime.spec import check_id

    check_id(cid)
    c = Container(root, cid)
    if lock:
        c.lock()
    c.load()
    return c
