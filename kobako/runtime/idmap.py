"""Idmapped mounts: how a container in a user namespace sees image layers and
volumes that are stored with the host's ids.

A layer on disk keeps the ids its tar gave it (root is 0). With `--userns` the
container's root is, say, host uid 100000; an idmapped mount (mount_setattr(2)
MOUNT_ATTR_IDMAP) shows the layer's uid 0 as 100000, so the container's root owns
its files. No layer is copied or chowned, and containers with different ranges share
the same snapshots.

The overlay's upper dir is idmapped too, so what the container writes is stored
unshifted: commit, diff, export and cp read it as they read any container's. Overlay
makes its own work files as the mounter (the host's root), so the upper's mapping
has one more entry, host uid/gid 0 -> the first id past the container's range: the
kernel needs an on-disk id for them. The container cannot use it, because its own
user namespace does not map the host's root.

It is all done by the runtime while it is still the host's root, in a private mount
namespace that the container's mount namespace is then copied from: nothing is
mounted on the host, and everything goes with the container's last process.

Two ways in: the engine's root mount annotation with "idmap" (rootfs.py), and a
bind mount with the "idmap" option (as crun and podman spell it), mapped with the
container's own user namespace.
"""

from __future__ import annotations

import os
import stat

from kobako import steps
from kobako.linux import mount as m
from kobako.linux import namespaces as ns
from kobako.runtime import jsonfast
from kobako.runtime.errors import RuntimeFailure
from kobako.runtime.rootfs import ROOT_MOUNT_ANNOTATION, STAGED, STAGED_ROOT, Rootfs

HINT = "idmapped mounts need Linux 5.12+ and a filesystem that supports them (overlay layers: 5.19+)"


def _root_desc(cfg: dict) -> dict | None:
    raw = (cfg.get("annotations") or {}).get(ROOT_MOUNT_ANNOTATION)
    if not raw:
        return None
    try:
        d = jsonfast.loads(raw)
    except ValueError:
        return None
    return d if isinstance(d, dict) and d.get("idmap") else None


def _idmapped_binds(cfg: dict) -> list[dict]:
    return [mnt for mnt in cfg.get("mounts") or [] if "idmap" in (mnt.get("options") or [])]


def wanted(cfg: dict) -> bool:
    """Does this config ask for idmapped mounts (and so for the runtime's own user namespace)?"""
    return _root_desc(cfg) is not None or bool(_idmapped_binds(cfg))


def maps_of(cfg: dict) -> tuple[list[dict], list[dict]]:
    """The mapping the root's layers are seen through: the annotation's (the engine's, for a
    container that joins another's user namespace by path), else linux.uid/gidMappings."""
    d = _root_desc(cfg) or {}
    idm = d.get("idmap")
    if isinstance(idm, dict) and idm.get("uidMappings"):
        return idm["uidMappings"], idm.get("gidMappings") or idm["uidMappings"]
    linux = cfg.get("linux") or {}
    return linux.get("uidMappings") or [], linux.get("gidMappings") or []


def with_host_root(maps: list[dict]) -> list[dict]:
    """maps plus host id 0 at the first id past the range, unless 0 is mapped already."""
    if any(x["hostID"] <= 0 < x["hostID"] + x["size"] for x in maps):
        return maps
    past = max((x["containerID"] + x["size"] for x in maps), default=0)
    return maps + [{"containerID": past, "hostID": 0, "size": 1}]


def _fmt(maps: list[dict]) -> str:
    return "".join(f"{x['containerID']} {x['hostID']} {x['size']}\n" for x in maps)


def make_userns(uid_maps: list[dict], gid_maps: list[dict]) -> int:
    """An fd of a new user namespace with these mappings: a child makes it and waits
    while we (the host's root) write its maps and open it; then the child exits."""
    r, w = os.pipe()
    r2, w2 = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.close(w2)
            ns.unshare(ns.CLONE_NEWUSER)
            os.write(w, b"+")
            os.read(r2, 1)
        finally:
            os._exit(0)
    os.close(w)
    os.close(r2)
    try:
        if os.read(r, 1) != b"+":
            raise RuntimeFailure("cannot make a user namespace for an idmapped mount")
        try:
            with open(f"/proc/{pid}/uid_map", "w") as f:
                f.write(_fmt(uid_maps))
            with open(f"/proc/{pid}/gid_map", "w") as f:
                f.write(_fmt(gid_maps))
        except OSError as e:
            raise RuntimeFailure(f"cannot write the id maps of an idmapped mount: {e.strerror}",
                                 "mappings must not overlap") from None
        return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(r)
        os.close(w2)
        os.waitpid(pid, 0)


def _tree(src: str, attrs: int, userns_fd: int | None, recursive: bool = False) -> int:
    """A detached copy of the mount at src (an fd) with MOUNT_ATTR_* attrs set, idmapped
    through userns_fd when given."""
    try:
        fd = m.open_tree(src, recursive)
        try:
            if attrs or userns_fd is not None:
                m.set_attrs(fd, attrs, userns_fd, src, recursive)
        except BaseException:
            os.close(fd)
            raise
        return fd
    except OSError as e:
        raise RuntimeFailure(f"cannot make {'an idmapped' if userns_fd is not None else 'a'} mount of "
                             f"{src}: {e.strerror}", HINT if userns_fd is not None else None) from None


def _attach(src: str, target: str, attrs: int, userns_fd: int | None, recursive: bool = False) -> None:
    fd = _tree(src, attrs, userns_fd, recursive)
    try:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            os.mkdir(target, 0o700)
        else:
            os.close(os.open(target, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600))
        m.move_mount(fd, target)
    finally:
        os.close(fd)


_ATTRS = {"ro": m.MOUNT_ATTR_RDONLY, "nosuid": m.MOUNT_ATTR_NOSUID, "nodev": m.MOUNT_ATTR_NODEV,
          "noexec": m.MOUNT_ATTR_NOEXEC}


def setup(cfg: dict, stage: str, userns_fd: int | None) -> bool:
    """While still the host's root, before the container's user namespace is entered, in a
    new private mount namespace (host-owned) that the init's is then copied from:

    - each bind mount's source is attached on a tmpfs at `stage`, with its ro/nosuid/nodev/
      noexec already set: the copy into the container's less privileged namespace locks
      them (a container with CAP_SYS_ADMIN in its user namespace cannot remount a read-only
      volume read-write), and the container's root never has to reach the source itself
      (a 0700 directory of the host's root), as with runc 1.2. With the `idmap` option the
      copy is idmapped through userns_fd. The init binds it from there: it is forked with
      `stage` as its working directory, the one path it can reach it by (0711, unlistable);
    - an idmapped root is mounted over idmapped, read-only layers staged there too.

    userns_fd: the container's user namespace (None: nothing to idmap). Returns whether
    the root is mounted."""
    binds = []
    for mnt in cfg.get("mounts") or []:
        src = mnt.get("source") or ""
        if Rootfs._is_bind(mnt):
            src = src if src.startswith("/") else os.path.join(cfg["_bundle"], src)
            if os.path.exists(src):  # else the init says so, as without a user namespace
                binds.append((mnt, src))
    desc = _root_desc(cfg) if userns_fd is not None else None
    if not binds and desc is None:
        return False
    # the init is forked with the stage as its cwd (below): keep the bundle's absolute
    cfg["_bundle"] = os.path.abspath(cfg["_bundle"])
    # (every mount here is in a private mount namespace of this child: it goes with the
    # namespace, so the record's steps need no undo of their own)
    rec = steps.Record("idmap")
    rootless = ns.in_user_namespace()
    fuse_root = _fuse_root(cfg, desc, stage, rec) if desc is not None and rootless else None
    ns.unshare(ns.TYPES["mount"][0])
    m.mount(None, "/", None, m.MS_SLAVE | m.MS_REC)
    os.makedirs(stage, 0o700, exist_ok=True)
    m.mount("tmpfs", stage, "tmpfs", m.MS_NOSUID | m.MS_NODEV | m.MS_NOEXEC, "mode=711")
    rec.made("stage", "unshare(2) CLONE_NEWNS, mount(2) tmpfs",
             f"stage {stage} (0711) in a private mount namespace of the host's root")
    if fuse_root is not None:
        root = os.path.join(stage, STAGED_ROOT)
        os.mkdir(root, 0o755)
        m.move_mount(fuse_root, root)
        os.close(fuse_root)
    elif desc is not None:
        _mount_root(cfg, desc, stage, userns_fd, rec)
    for i, (mnt, src) in enumerate(binds):
        opts = mnt.get("options") or []
        attrs = 0
        for o in opts:
            attrs |= _ATTRS.get(o, 0)
        # (rootless: only the host's root may idmap the filesystems a user's files are on)
        mapped = userns_fd if "idmap" in opts and not rootless else None
        _attach(src, os.path.join(stage, f"b{i}"), attrs, mapped, recursive="rbind" in opts)
        idm = mapped is not None
        rec.made("bind", "open_tree(2), mount_setattr(2)" + (" MOUNT_ATTR_IDMAP" if idm else ""),
                 f"{src} staged at {stage}/b{i} for {mnt['destination']}"
                 + (" (idmapped into the container's user namespace)" if idm else ""))
        mnt[STAGED] = f"b{i}"
        mnt["options"] = [o for o in opts if o != "idmap"]
    os.chdir(stage)  # the init's cwd: after its unshare(CLONE_NEWNS), the copy of this tmpfs
    from kobako.steps import fault
    fault("userns:idmapped")  # (a child of the CLI: the fault kills the CLI, then the child)
    return desc is not None


def _fuse_root(cfg: dict, desc: dict, stage: str, rec: steps.Record) -> int:
    """Rootless: the kernel lets only the host's root idmap the filesystem the user's layers
    are on, so the root is a fuse-overlayfs mount that shifts owners itself (its uidmapping=
    and gidmapping= are the container's maps). Returns the detached mount's fd (detached_root)."""
    uid_maps, gid_maps = maps_of(cfg)
    fd = detached_root(desc, stage + ".fuse", (uid_maps, gid_maps))
    rec.made("root", "fuse-overlayfs, open_tree(2)",
             "the container's root: fuse-overlayfs over the layers, owners shifted by the container's "
             "maps (uidmapping/gidmapping), held only by the container")
    return fd


def detached_root(desc: dict, target: str, maps: tuple[list[dict], list[dict]] | None = None) -> int:
    """A rootless container's root, mounted here (in the user's mount namespace), taken as a
    detached copy and lazily unmounted at once: the container's mount namespace then holds the
    only reference, and everything goes with the container's last process. The kernel's
    overlay when it takes the mount (and no owner shifting is asked for); else fuse-overlayfs
    (a kernel older than 5.11, or a store on a filesystem without user.* xattrs), whose daemon
    ends when the mount's last reference does. Returns the fd (open_tree(2))."""
    opts = list(desc.get("options") or [])
    kv = {o.split("=", 1)[0]: o.split("=", 1)[1] for o in opts if "=" in o}
    cwd = desc.get("cwd") or "/"
    lowers = [os.path.join(cwd, x) for x in kv.get("lowerdir", "").split(":") if x]
    if desc.get("type") != "overlay" or not lowers:
        raise RuntimeFailure("the root filesystem must be an overlay with lowerdir=")
    os.makedirs(target, 0o700, exist_ok=True)
    try:
        kernel_err = None
        if maps is None:
            try:
                os.chdir(cwd)  # short relative lowerdirs: the options are limited to one page
                m.mount("overlay", target, "overlay", 0, ",".join(opts))
            except OSError as e:
                kernel_err = e
            finally:
                os.chdir("/")
        if maps is not None or kernel_err is not None:
            _fuse_overlay(lowers, kv, cwd, target, maps, kernel_err)
        try:
            fd = m.open_tree(target)
        finally:
            m.umount2(target, m.MNT_DETACH)
    finally:
        os.rmdir(target)
    return fd


def _fuse_overlay(lowers: list[str], kv: dict, cwd: str, target: str,
                  maps: tuple[list[dict], list[dict]] | None, kernel_err: OSError | None) -> None:
    import shutil
    import subprocess
    why = f"the kernel's overlay refused it ({kernel_err.strerror})" if kernel_err else \
        "a rootless container with a user namespace of its own"
    exe = shutil.which("fuse-overlayfs", path="/usr/bin:/bin:/usr/local/bin")
    if exe is None:
        raise RuntimeFailure(f"cannot mount the root filesystem: {why}, and fuse-overlayfs is not installed",
                             "as root: apt-get install fuse-overlayfs (with /dev/fuse mode 0666); kernel "
                             "overlay mounts in a user namespace need Linux 5.11+ and user.* xattrs "
                             "on the store's filesystem")

    if not os.path.exists("/dev/fuse"):
        raise RuntimeFailure(f"cannot mount the root filesystem: {why}, and this kernel offers no /dev/fuse "
                             "for fuse-overlayfs", "as root: modprobe fuse (udev then makes /dev/fuse)")

    def mapping(ms: list[dict]) -> str:
        return ":".join(f"{x['containerID']}:{x['hostID']}:{x['size']}" for x in ms)
    fopts = [f"lowerdir={':'.join(lowers)}"]
    if kv.get("upperdir"):
        fopts += [f"upperdir={os.path.join(cwd, kv['upperdir'])}",
                  f"workdir={os.path.join(cwd, kv['workdir'])}"]
    if maps is not None:
        fopts += [f"uidmapping={mapping(maps[0])}", f"gidmapping={mapping(maps[1])}"]
    r = subprocess.run([exe, "-o", ",".join(fopts), target], capture_output=True, text=True,
                       stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        lines = [ln for ln in r.stderr.splitlines() if "lazytime" not in ln]
        raise RuntimeFailure(f"cannot mount the root filesystem ({why}) with fuse-overlayfs: "
                             f"{lines[-1] if lines else r.returncode}",
                             "/dev/fuse must be readable and writable by the user (mode 0666)")


def _mount_root(cfg: dict, desc: dict, stage: str, userns_fd: int, rec: steps.Record) -> None:
    opts = list(desc.get("options") or [])
    kv = {o.split("=", 1)[0]: o.split("=", 1)[1] for o in opts if "=" in o}
    lowers = [x for x in kv.get("lowerdir", "").split(":") if x]
    upper, work = kv.get("upperdir"), kv.get("workdir")
    if desc.get("type") != "overlay" or not lowers:
        raise RuntimeFailure("an idmapped root must be an overlay with lowerdir=")
    cwd = desc.get("cwd") or "/"
    staged = []
    for i, low in enumerate(lowers):
        _attach(os.path.join(cwd, low), os.path.join(stage, f"l{i}"), m.MOUNT_ATTR_RDONLY, userns_fd)
        rec.made("layer", "open_tree(2), mount_setattr(2) MOUNT_ATTR_IDMAP|RDONLY",
                 f"layer {os.path.join(cwd, low)} idmapped, read-only, at {stage}/l{i}")
        staged.append(f"l{i}")
    rest = [o for o in opts if o.split("=", 1)[0] not in ("lowerdir", "upperdir", "workdir")]
    new = ["lowerdir=" + ":".join(staged)]
    if upper:
        if not work or os.path.dirname(upper.rstrip("/")) != os.path.dirname(work.rstrip("/")):
            raise RuntimeFailure("an idmapped root needs its upperdir and workdir in one directory")
        uid_maps, gid_maps = maps_of(cfg)
        ext = make_userns(with_host_root(uid_maps), with_host_root(gid_maps))
        try:
            _attach(os.path.join(cwd, os.path.dirname(upper.rstrip("/"))), os.path.join(stage, "u"), 0, ext)
        finally:
            os.close(ext)
        rec.made("upper", "open_tree(2), mount_setattr(2) MOUNT_ATTR_IDMAP",
                 f"upper and work directories {os.path.join(cwd, os.path.dirname(upper.rstrip('/')))} "
                 f"idmapped at {stage}/u")
        new += [f"upperdir=u/{os.path.basename(upper.rstrip('/'))}",
                f"workdir=u/{os.path.basename(work.rstrip('/'))}"]
    # on the stage, not on the bundle's rootfs: the container's root reaches it through the
    # init's cwd and never has to traverse the host's directories to the bundle
    root = os.path.join(stage, STAGED_ROOT)
    os.mkdir(root, 0o755)
    os.chdir(stage)  # short relative paths: the options are limited to one page
    try:
        m.mount("overlay", root, "overlay", 0, ",".join(new + rest))
    except OSError as e:
        raise RuntimeFailure(f"cannot mount the idmapped root filesystem on {root}: {e.strerror}",
                             HINT) from None
    finally:
        os.chdir("/")
    rec.made("root", "mount(2) overlay", f"the container's root on {root}, over the idmapped layers")
