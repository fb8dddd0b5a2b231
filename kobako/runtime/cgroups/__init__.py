"""The container's cgroup on pure v2, v1, and the hybrid layout (v1 controllers
plus a cgroup2 mount holding no controllers, as on the development VM).

Every directory is recorded in the container's state *before* it is made, so
`delete` (also after kill -9 of the runtime) removes exactly what kobako made and
nothing else. Resource limits are written by v1.py and v2.py.
"""

from __future__ import annotations

import os

from kobako.linux import fs
from kobako.runtime.errors import RuntimeFailure

ROOT = "/sys/fs/cgroup"


def mounts(mountinfo: str = "/proc/self/mountinfo") -> tuple[dict[str, str], str | None]:
    """{v1 hierarchy mount point: comma list of controllers}, cgroup2 mount point.
    (`mountinfo`: another file of that format; `kobako system check`'s tests pass a fake.)"""
    v1: dict[str, str] = {}
    v2 = None
    with open(mountinfo, "rb") as f:
        for line in f:
            if b"cgroup" not in line:
                continue
            fields = line.split()
            sep = fields.index(b"-")
            fstype, opts = fields[sep + 1], fields[sep + 3].decode()
            point = fields[4].decode()
            if not point.startswith(ROOT):
                continue
            if fstype == b"cgroup2":
                v2 = point
            elif fstype == b"cgroup":
                ctrls = [o for o in opts.split(",") if o not in ("rw", "ro", "relatime", "nosuid",
                                                                   "nodev", "noexec", "clone_children")]
                v1[point] = ",".join(ctrls)
    return v1, v2


def own_cgroup(controller: str | None) -> str:
    """This process's cgroup in the hierarchy of controller (None: the v2 one)."""
    for line in fs.read_file("/proc/self/cgroup").decode().splitlines():
        _, ctrls, path = line.split(":", 2)
        if (controller is None and ctrls == "") or (controller and controller in ctrls.split(",")):
            return path
    return "/"


def delegated_root(v2: str) -> str | None:
    """Rootless, pure v2: the topmost cgroup above this process's own that this user may
    write -- the subtree delegated to it (systemd's user@UID.service with Delegate=yes, or
    one an administrator made and chowned) -- or None."""
    own = own_cgroup(None)
    found = None
    p = own
    while p not in ("", "/"):
        d = os.path.join(v2, p.lstrip("/"))
        try:
            writable = os.stat(d).st_uid == os.geteuid() and os.access(d, os.W_OK) and \
                os.access(os.path.join(d, "cgroup.procs"), os.W_OK)
        except OSError:
            writable = False
        if not writable:
            break
        found = p
        p = os.path.dirname(p)
    return found


def resolve_path(cgroups_path: str | None, cid: str, base: str = "") -> str:
    """linux.cgroupsPath -> path inside each hierarchy. Default: <base>/kobako/<id> (base: a
    rootless runtime's delegated subtree)."""
    p = cgroups_path or f"{base}/kobako/{cid}"
    if ":" in p and not p.startswith("/"):
        raise RuntimeFailure(f"cgroupsPath {p!r} is in systemd's slice:prefix:name form",
                             "kobako-runtime manages cgroupfs directly; pass a path like /kobako/ID")
    parts = [x for x in p.split("/") if x]
    if ".." in parts:
        raise RuntimeFailure(f"cgroupsPath {p!r} must not contain '..'")
    return "/" + "/".join(parts)


def _check_controllers(v1: dict[str, str], v2: str | None, res: dict) -> None:
    """Limits no hierarchy here can apply are refused before any cgroup is made (runc and
    crun refuse them too): skipping one would run the container without a limit it asked for."""
    net = res.get("network") or {}
    wants = [(c, f) for c, wanted, f in (
        ("hugetlb", res.get("hugepageLimits"), "linux.resources.hugepageLimits"),
        ("net_cls", net.get("classID") is not None, "linux.resources.network.classID"),
        ("net_prio", net.get("priorities"), "linux.resources.network.priorities")) if wanted]
    if not wants:  # the common case reads nothing more
        return
    have = {c for ctrls in v1.values() for c in ctrls.split(",")}
    if v2:
        try:
            with open(os.path.join(v2, "cgroup.controllers")) as f:
                have.update(f.read().split())
        except OSError:
            pass
    for ctrl, field in wants:
        if ctrl not in have:
            hint = "cgroup v2 has no such controller" if ctrl.startswith("net_") and not v1 else \
                f"mount the {ctrl} controller, or drop {field}"
            raise RuntimeFailure(f"{field} is set but this host has no {ctrl} cgroup controller", hint)


class Manager:
    """One container's cgroup across every hierarchy it lives in."""

    def __init__(self, rec: dict, init: int = 0) -> None:
        self.rec = rec  # {"layout", "path", "dirs": [...made by us...], "leaves": [...], "relative"}
        self.init = init  # the container's init (for a container without a cgroup)

    @classmethod
    def plan(cls, cgroups_path: str | None, cid: str, resources: dict | None = None) -> Manager:
        v1, v2 = mounts()
        kind = ("hybrid" if v2 else "v1") if v1 else "v2"
        if not v1 and not v2:
            raise RuntimeFailure("no cgroup filesystem is mounted under /sys/fs/cgroup")
        _check_controllers(v1, v2, resources or {})
        deleg = ""
        if not cgroups_path and kind == "v2" and v2:
            from kobako.linux.namespaces import in_user_namespace
            if in_user_namespace():  # rootless: inside the subtree delegated to the user, if any
                deleg = delegated_root(v2) or ""
        path = resolve_path(cgroups_path, cid, deleg)
        relative = bool(cgroups_path) and not cgroups_path.startswith("/")
        leaves = []
        for point, ctrls in sorted(v1.items()):
            base = own_cgroup(ctrls.split(",")[0]) if relative else "/"
            leaves.append({"dir": os.path.join(point, (base + path).lstrip("/")).rstrip("/"),
                           "v": 1, "ctrls": ctrls, "mount": point})
        # On a hybrid host the controllers live on v1; the cgroup2 mount is joined only
        # when the config asks for what only it offers (hugetlb here, raw v2 files):
        # a cgroup.procs write there costs an RCU grace period on every start.
        if v2 and (not v1 or any((resources or {}).get(k) for k in ("hugepageLimits", "unified"))):
            base = own_cgroup(None) if relative else "/"
            leaves.append({"dir": os.path.join(v2, (base + path).lstrip("/")).rstrip("/"),
                           "v": 2, "ctrls": "", "mount": v2})
        rec = {"layout": kind, "path": path, "leaves": leaves, "dirs": []}
        if deleg and v2:  # the delegated subtree passes its controllers down to kobako's level
            rec["delegated"] = os.path.join(v2, deleg.lstrip("/"))
        if not cgroups_path:  # /kobako is kobako's own parent: the last one out removes it
            rec["shared"] = [os.path.dirname(x["dir"]) for x in leaves]
        return cls(rec)

    def writable(self) -> bool:
        """Whether this process may make every leaf: the nearest existing level of each is
        writable (a rootless runtime without a delegated subtree may not)."""
        for leaf in self.rec["leaves"]:
            p = leaf["dir"]
            while not os.path.isdir(p):
                p = os.path.dirname(p)
            if not os.access(p, os.W_OK):
                return False
        return True

    # -- making and removing -----------------------------------------------------
    def create(self, record) -> None:
        """mkdir each missing level. Every directory is listed in rec["dirs"] and
        `record()` persists that list *before* the first mkdir, so a crash midway
        still leaves a state that names everything `delete` has to remove."""
        todo = []
        for leaf in self.rec["leaves"]:
            missing = []
            p = leaf["dir"]
            while not os.path.isdir(p):
                missing.append(p)
                p = os.path.dirname(p)
            todo.append((leaf, list(reversed(missing))))
            self.rec["dirs"] += missing
        record()
        if self.rec.get("delegated"):
            _enable_controllers(self.rec["delegated"])
        for leaf, missing in todo:
            for m in missing:
                for attempt in range(10):
                    try:  # (parents first: a plain mkdir, unless a delete removed one meanwhile)
                        os.mkdir(m) if attempt == 0 else os.makedirs(m, exist_ok=True)
                        break
                    except FileExistsError:
                        break
                    except FileNotFoundError:  # a concurrent delete removed the shared parent
                        continue
                    except OSError as e:
                        raise RuntimeFailure(f"cannot create cgroup {m}: {e.strerror}") from None
                if "cpuset" in leaf["ctrls"].split(","):
                    _inherit_cpuset(m)
                if leaf["v"] == 2 and m != leaf["dir"]:
                    _enable_controllers(m)

    def load_writers(self, res: dict | None) -> None:
        """Import now the modules apply() will write `res` with (the runtime calls this before
        it forks the init: after the fork, an import costs copy-on-write faults)."""
        if not res:
            return
        kinds = {leaf["v"] for leaf in self.rec["leaves"]}
        if 1 in kinds:
            from kobako.runtime.cgroups import v1  # noqa: F401
        if 2 in kinds:
            from kobako.runtime.cgroups import v2  # noqa: F401
            if self.rec["layout"] == "v2" and res.get("devices") is not None:
                from kobako.runtime.cgroups import devices  # noqa: F401

    def apply(self, res: dict | None) -> None:
        """Write linux.resources into every hierarchy (v1.py / v2.py say how); on v2
        the device rules become a BPF program (devices.py)."""
        if not res:
            return
        for leaf in self.rec["leaves"]:
            if leaf["v"] == 1:
                from kobako.runtime.cgroups import v1

                v1.apply(set(leaf["ctrls"].split(",")), leaf["dir"], res)
                continue
            from kobako.runtime.cgroups import v2

            if self.rec["layout"] == "v2":
                v2.apply(leaf["dir"], res)
                # rootless: a BPF device program is the host's root's to attach, and needless:
                # the container can neither mknod nor open a node the user could not
                if res.get("devices") is not None and not _rootless():
                    from kobako.runtime.cgroups import devices

                    devices.apply_v2(leaf["dir"], res["devices"])
            else:  # hybrid: the cgroup2 mount holds only what v1 lacks
                v2.apply(leaf["dir"], {k: res[k] for k in ("hugepageLimits", "unified") if k in res})

    def join_self(self) -> None:
        """Move the calling (single-threaded) process into every leaf.

        On v1 this writes "0" to `tasks`: moving one thread, the caller itself, the
        kernel skips the global cgroup_threadgroup_rwsem, whose write side waits for
        an RCU grace period (5-20 ms here) - the cost of writing a PID to
        cgroup.procs, which runc pays on every start. v2 has only cgroup.procs."""
        for leaf in self.rec["leaves"]:
            name = "tasks" if leaf["v"] == 1 else "cgroup.procs"
            try:
                fs.write_file(os.path.join(leaf["dir"], name), b"0", os.O_CREAT | os.O_TRUNC)
            except OSError as e:
                raise RuntimeFailure(f"cannot join cgroup {leaf['dir']}: {e.strerror}") from None

    def kill_all(self) -> None:
        """SIGKILL whatever is left in the container's own cgroup (never a parent's)."""
        for pid in self.pids():
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass

    def pids(self) -> list[int]:
        if self.rec.get("layout") == "none":
            return _pidns_members(self.init)
        out: set[int] = set()
        for leaf in self.rec["leaves"]:
            try:
                out.update(int(x) for x in fs.read_file(os.path.join(leaf["dir"], "cgroup.procs")).split())
            except OSError:
                pass
        return sorted(out)

    def remove(self) -> list[str]:
        """rmdir what we made, deepest first; returns errors, never raises. What is left
        inside is killed when a leaf is found busy: after the init of a pid namespace nothing
        is, and asking first would read every hierarchy's cgroup.procs on every delete."""
        leaves = {x["dir"] for x in self.rec["leaves"]}
        killed = False
        errors = []
        for d in sorted(set(self.rec["dirs"]), key=len, reverse=True):
            tries = 200 if d in leaves else 1
            for i in range(tries):
                try:
                    os.rmdir(d)
                except FileNotFoundError:
                    pass
                except OSError as e:
                    if d not in leaves:
                        pass  # a parent such as /kobako that other containers share
                    elif e.errno == 16 and i < tries - 1:  # EBUSY: processes left, or exiting ones
                        if not killed:  # (a container without its own pid namespace, say)
                            self.kill_all()
                            killed = True
                        else:
                            import time

                            time.sleep(0.005)
                        continue
                    else:
                        errors.append(f"rmdir {d}: {e.strerror}")
                break
        for d in self.rec.get("shared") or ():
            if d in self.rec["dirs"]:
                continue  # made by us, and tried above
            try:
                os.rmdir(d)
            except OSError:
                pass  # another container still lives there
        return errors

    # -- freezer -----------------------------------------------------------------
    def has_freezer(self) -> bool:
        return self._freezer() is not None

    def _freezer(self) -> tuple[int, str] | None:
        for leaf in self.rec["leaves"]:
            if leaf["v"] == 1 and "freezer" in leaf["ctrls"].split(","):
                return 1, leaf["dir"]
        for leaf in self.rec["leaves"]:
            if leaf["v"] == 2 and os.path.exists(os.path.join(leaf["dir"], "cgroup.freeze")):
                return 2, leaf["dir"]
        return None

    def frozen(self) -> bool:
        fz = self._freezer()
        if fz is None:
            return False
        try:
            if fz[0] == 1:
                with open(os.path.join(fz[1], "freezer.state")) as f:
                    return f.read().strip() == "FROZEN"
            with open(os.path.join(fz[1], "cgroup.freeze")) as f:
                return f.read().strip() == "1"
        except OSError:
            return False

    def freeze(self, on: bool) -> None:
        import time

        fz = self._freezer()
        if fz is None:
            if self.rec.get("layout") == "none":
                raise RuntimeFailure("this rootless container has no cgroup, so nothing can freeze it",
                                     "pause needs a cgroup v2 subtree delegated to the user "
                                     "(kobako's docs/rootless.md says how)")
            raise RuntimeFailure("this container's cgroup has no freezer",
                                 "pause needs the v1 freezer controller or cgroup v2")
        v, d = fz
        if v == 1:
            want = "FROZEN" if on else "THAWED"
            for _ in range(1000):
                with open(os.path.join(d, "freezer.state"), "w") as f:
                    f.write(want)
                with open(os.path.join(d, "freezer.state")) as f:
                    if f.read().strip() == want:
                        return
                time.sleep(0.001)
            raise RuntimeFailure(f"cgroup {d} did not reach {want}")
        with open(os.path.join(d, "cgroup.freeze"), "w") as f:
            f.write("1" if on else "0")
        for _ in range(1000):
            with open(os.path.join(d, "cgroup.events")) as f:
                if f"frozen {int(on)}" in f.read():
                    return
            time.sleep(0.001)
        raise RuntimeFailure(f"cgroup {d} did not {'freeze' if on else 'thaw'}")


def _rootless() -> bool:
    from kobako.linux.namespaces import in_user_namespace
    return in_user_namespace()


def _inherit_cpuset(d: str) -> None:
    """A v1 cpuset cgroup starts empty and refuses tasks: copy the parent's sets. A parent
    that is itself still empty (a concurrent create made the shared kobako/ level and has not
    filled it yet) is filled first, from the nearest ancestor that has sets."""
    for f in ("cpuset.cpus", "cpuset.mems"):
        chain = []  # d, then each empty ancestor, until one has a value
        p = d
        val = ""
        while p.startswith(ROOT) and p != ROOT:
            try:
                val = fs.read_file(os.path.join(p, f)).decode().strip()
            except OSError:
                break
            if val:
                break
            chain.append(p)
            p = os.path.dirname(p)
        if not val:
            continue
        for q in reversed(chain):
            try:
                fs.write_file(os.path.join(q, f), val, os.O_CREAT | os.O_TRUNC)
            except OSError:
                break


def _enable_controllers(d: str) -> None:
    """On v2, a level we made passes every controller it has down to its children."""
    ctrls: list[str] = []
    try:
        with open(os.path.join(d, "cgroup.controllers")) as f:
            ctrls = f.read().split()
        if ctrls:
            with open(os.path.join(d, "cgroup.subtree_control"), "w") as f:
                f.write(" ".join("+" + c for c in ctrls))
    except OSError:
        # one at a time: the write is all or nothing, and one controller may be refused
        # (a delegated subtree need not offer them all)
        for c in ctrls:
            try:
                with open(os.path.join(d, "cgroup.subtree_control"), "w") as f:
                    f.write("+" + c)
            except OSError:
                pass


def manager_for(state: dict) -> Manager:
    return Manager(state.get("_cgroup") or {"leaves": [], "dirs": []}, int(state.get("pid") or 0))


def _pidns_members(init: int) -> list[int]:
    """A container without a cgroup (rootless, none delegated): the processes of its init's pid
    namespace, found by that namespace's inode in /proc. Never more than the init when that
    namespace is the caller's own (--pid host)."""
    try:
        want = os.stat(f"/proc/{init}/ns/pid").st_ino if init > 0 else None
    except OSError:
        return []
    if want is None:
        return []
    if want == os.stat("/proc/self/ns/pid").st_ino:
        return [init]
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.stat(f"/proc/{name}/ns/pid").st_ino == want:
                    out.append(int(name))
            except OSError:
                pass  # gone, or not ours to look at
    return sorted(out)
