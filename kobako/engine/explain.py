"""What a container is made of, read back from the kernel (`kobako explain`).

A running container is a handful of kernel objects: the namespaces of its init, a cgroup
per hierarchy with the limits written there, the mounts of its mount namespace (the overlay
root, binds, masked and read-only paths), a veth pair on a bridge, elements in kobako's nft
table, a seccomp filter and capability sets. This module finds each one from kobako's own
state (the container's record, the runtime's state, the network endpoint's state) and then
*reads it from the kernel* -- /proc/<pid>/ns, /proc/<pid>/cgroup and the cgroup's files,
/proc/<pid>/mountinfo, sysfs, `ip` inside the namespace, the nft table, /proc/<pid>/status
-- so every claim is what the kernel says now, never what the spec asked for. Where the two
differ (a veth gone after a kill -9, an element missing after someone flushed the ruleset),
the object carries a problem saying so.

Each object: `kind` (its section), `name`, `summary` (one line), `facts` (the values, for
scripts), `read` (where each value was read: {"source", "value"}), `checks` (a host command
a reader runs to see the same thing: {"command", "shows"}, `shows` the text its output
contains, whitespace aside) and `problems`.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from kobako.engine.records import ContainerConflict

# /proc/PID/ns/<name> -> (OCI type, nsenter flag)
NAMESPACES = {"cgroup": ("cgroup", "-C"), "ipc": ("ipc", "-i"), "mnt": ("mount", "-m"),
              "net": ("network", "-n"), "pid": ("pid", "-p"), "time": ("time", "-T"),
              "user": ("user", "-U"), "uts": ("uts", "-u")}
SECCOMP_MODES = {"0": "disabled: every system call is allowed", "1": "strict (read, write, exit only)",
                 "2": "filter: a BPF program decides each system call"}
# v1 reports "no memory limit" as the largest page-aligned counter; anything this large is none
_NO_LIMIT = 1 << 62


def obj(kind: str, name: str, summary: str, *, facts: dict | None = None,
        read: list[tuple[str, object]] | None = None, checks: list[tuple[str, str | None]] | None = None,
        problems: list[str] | None = None) -> dict:
    return {"kind": kind, "name": name, "summary": summary, "facts": facts or {},
            "read": [{"source": s, "value": v} for s, v in read or ()],
            "checks": [{"command": c, "shows": s} for c, s in checks or ()], "problems": list(problems or ())}


# -- formatting and parsing (pure; unit-tested) ---------------------------------------------------

def size(n: int) -> str:
    """Bytes for a person: 64 MiB, 1.5 GiB, 512 B."""
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    v, i = float(n), 0
    while v >= 1024 and i < len(units) - 1:
        v, i = v / 1024, i + 1
    return f"{n} B" if i == 0 else f"{v:g} {units[i]}" if v == int(v) else f"{v:.1f} {units[i]}"


def limit_bytes(raw: str) -> str:
    """A cgroup byte limit as read ("67108864", "max", v1's 9223372036854771712)."""
    raw = raw.strip()
    if raw == "max" or (raw.lstrip("-").isdigit() and (int(raw) >= _NO_LIMIT or int(raw) < 0)):
        return "no limit"
    return f"{size(int(raw))} ({raw})" if raw.isdigit() else raw


def cap_names(hexmask: str) -> list[str]:
    """A Cap* field of /proc/PID/status (hex) -> capability names, lowest bit first (capsh's order)."""
    from kobako.linux.capabilities import from_mask
    return from_mask(int(hexmask, 16))


def describe_caps(hexmask: str, last_cap: int) -> str:
    """'none', 'all 41 (CAP_CHOWN .. CAP_CHECKPOINT_RESTORE)', or the names, short (chown, kill)."""
    mask = int(hexmask, 16)
    if mask == 0:
        return "none"
    full = (1 << (last_cap + 1)) - 1
    names = cap_names(hexmask)
    if mask & full == full:
        return f"all {last_cap + 1} ({names[0]} .. {names[last_cap]})"
    short = [n.removeprefix("CAP_").lower() for n in names]
    if len(names) > (last_cap + 1) // 2:  # most of them: name the few it lacks
        lacks = [n.removeprefix("CAP_").lower() for n in cap_names(f"{full & ~mask:x}")]
        return f"{len(names)} of {last_cap + 1}: all but " + " ".join(lacks)
    return f"{len(names)}: " + " ".join(short)


def capsh_names(hexmask: str) -> str:
    """What `capsh --decode=HEX` prints after the '=': the names, lower case, comma-separated."""
    return ",".join(n.lower() for n in cap_names(hexmask))


def inside_id(host_id: str, id_map: list[str]) -> str:
    """A host uid/gid (as /proc/PID/status shows it from the host) as the container sees it,
    through the lines of /proc/PID/uid_map ("inside outside count")."""
    if not host_id.isdigit():
        return host_id
    for line in id_map:
        inside, outside, count = (int(x) for x in line.split())
        if outside <= int(host_id) < outside + count:
            return str(int(host_id) - outside + inside)
    return f"{host_id} (unmapped)"


def parse_status(text: str) -> dict[str, str]:
    """/proc/PID/status as {field: value} (tabs between a field's values kept as one space)."""
    out = {}
    for line in text.splitlines():
        k, sep, v = line.partition(":")
        if sep:
            out[k] = " ".join(v.split())
    return out


def _unescape(s: str) -> str:
    """mountinfo writes space, tab, newline and backslash as \\040-style octal escapes."""
    if "\\" not in s:
        return s
    import re
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def parse_mountinfo(text: str) -> list[dict]:
    """/proc/PID/mountinfo: one {"target", "root", "fstype", "source", "options", "super"} a mount,
    in mount order (the later of two mounts on one target is the one seen)."""
    out = []
    for line in text.splitlines():
        f = line.split(" ")
        if len(f) < 10:
            continue
        sep = f.index("-", 6)
        out.append({"target": _unescape(f[4]), "root": _unescape(f[3]), "options": f[5],
                    "fstype": f[sep + 1], "source": _unescape(f[sep + 2]), "super": f[sep + 3]})
    return out


def read_only(m: dict) -> bool:
    return "ro" in m["options"].split(",")


def parse_cgroup(text: str) -> dict[str, str]:
    """/proc/PID/cgroup -> {controllers ("" for the v2 hierarchy): path}."""
    out = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            out[parts[1]] = parts[2]
    return out


def parse_nft_elements(text: str) -> dict[str, list[str]]:
    """`nft list table` output -> {set or map name: its elements, as nft writes them}."""
    out: dict[str, list[str]] = {}
    current = None
    buf: list[str] | None = None
    for line in text.splitlines():
        s = line.strip()
        if buf is not None:
            buf.append(s)
            if s.endswith("}"):
                joined = " ".join(buf).rstrip("}").strip()
                out[current or ""] = [" ".join(e.split()) for e in joined.split(",") if e.strip()]
                buf = None
            continue
        if (s.startswith("set ") or s.startswith("map ")) and s.endswith("{"):
            current = s.split()[1]
            out.setdefault(current, [])
        elif s.startswith("elements = {") and current:
            rest = s[len("elements = {"):].strip()
            buf = [rest]
            if rest.endswith("}"):
                out[current] = [" ".join(e.split()) for e in rest.rstrip("}").split(",") if e.strip()]
                buf = None
    return out


# -- reading ----------------------------------------------------------------------------------------

def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _ns_inode(pid: int | str, name: str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/{name}").st_ino
    except OSError:
        return None


def _run(argv: list[str]) -> tuple[str | None, str]:
    """A host tool's output, or (None, why not)."""
    import subprocess
    try:
        cp = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, str(e)
    if cp.returncode != 0:
        return None, cp.stderr.strip() or f"exit {cp.returncode}"
    return cp.stdout, ""


class _Live:
    """The running container's init and what kobako's state says about it."""

    def __init__(self, pid: int, start: int, state: dict, config: dict) -> None:
        self.pid, self.start, self.state, self.config = pid, start, state, config


def _live(e, cid: str) -> tuple[_Live | None, str]:
    """The init of a container whose kernel objects exist (created, running or paused)."""
    from kobako.runtime import state
    c = state.Container(e.runtime_root, cid)
    if not os.path.isdir(c.dir):
        return None, "stopped"
    try:
        c.load()
        st = c.status()
        cfg = c.config()
    except Exception:  # noqa: BLE001 - a damaged or half-written state: nothing runs from it
        return None, "stopped"
    if st not in ("created", "running", "paused"):
        return None, st
    return _Live(int(c.data["pid"]), c.data.get("_start_time"), c.data, cfg), st


def explain(e, rec: dict) -> dict:
    """What the container `rec` is made of; kernel objects only while it runs."""
    cid = rec["id"]
    live, rt_state = _live(e, cid)
    doc: dict = {"id": cid, "name": rec["name"], "image": rec.get("imageName", ""),
                 "state": e.state(rec) if live is None else rt_state, "pid": None, "objects": []}
    objs = doc["objects"]
    if live is None:
        doc["note"] = ("its namespaces, cgroup, mounts, veth pair and nft elements exist only while it "
                       f"runs: `kobako start {rec['name']}` makes them, `kobako explain {rec['name']}` "
                       "then shows them")
        objs += _leftovers(e, rec)
        objs += _files(e, rec, None)
        return doc
    pid = live.pid
    doc["pid"] = pid
    status = parse_status(_read(f"/proc/{pid}/status") or "")
    objs.append(_process(e, rec, live, status, rt_state))
    objs += _namespaces(e, rec, live)
    objs += _cgroup(live)
    objs += _mounts(e, live)
    net = _network(e, rec, live)
    objs += net
    objs += _security(live, status)
    objs += _files(e, rec, live)
    from kobako.runtime.state import start_time
    if start_time(pid) != live.start:  # it exited while we read: what we read may be half gone
        raise ContainerConflict(f"container {rec['name']} stopped while explain read it",
                                "run it again, or explain it stopped")
    return doc


# -- the objects ------------------------------------------------------------------------------------

def _process(e, rec: dict, live: _Live, status: dict, rt_state: str) -> dict:
    pid = live.pid
    cmd = (_read(f"/proc/{pid}/cmdline") or "").replace("\0", " ").strip()
    inside = status.get("NSpid", str(pid)).split()[-1]
    what = {"created": "waits for `start` (the program has not run yet)", "running": "runs",
            "paused": "is frozen (cgroup freezer)"}[rt_state]
    return obj("process", "init", f"PID {pid} on the host, PID {inside} in its PID namespace, {what}: {cmd}",
               facts={"pid": pid, "pidInside": int(inside), "command": cmd, "status": rt_state},
               read=[(os.path.join(e.runtime_root, rec["id"], "state.json"), f"pid {pid}"),
                     (f"/proc/{pid}/status", f"NSpid: {status.get('NSpid', '')}"),
                     (f"/proc/{pid}/cmdline", cmd)],
               checks=[(f"ps -o pid,stat,args -p {pid}", str(pid)),
                       (f"grep NSpid /proc/{pid}/status", f"NSpid: {status.get('NSpid', '')}")])


def _others(e, cid: str) -> dict[tuple[str, int], list[str]]:
    """(ns name, inode) -> names of the other live containers in that namespace."""
    from kobako.runtime import state
    names = {r["id"]: r["name"] for r in e.containers.all()}
    out: dict[tuple[str, int], list[str]] = {}
    for other in state.ids(e.runtime_root):
        if other == cid or other not in names:
            continue
        c = state.Container(e.runtime_root, other)
        try:
            c.load()
        except Exception:  # noqa: BLE001 - going away meanwhile
            continue
        if not c.init_alive():
            continue
        for ns in NAMESPACES:
            ino = _ns_inode(c.data["pid"], ns)
            if ino is not None:
                out.setdefault((ns, ino), []).append(names[other])
    return out


def _host_reference() -> str:
    """Whose namespaces are "the host's": PID 1's, or where PID 1 cannot be read (a sandbox
    that hides it), this process's own."""
    return "1" if _ns_inode(1, "net") is not None else "self"


def _namespaces(e, rec: dict, live: _Live) -> list[dict]:
    pid = live.pid
    cfg_ns = {n["type"]: n.get("path") for n in (live.config.get("linux") or {}).get("namespaces") or []}
    made = set(live.state.get("_namespaces") or ())
    others = _others(e, rec["id"])
    joined = dict(rec.get("joinNamespaces") or {})
    if (rec.get("net") or {}).get("mode") == "container":
        joined["network"] = rec["net"]["container"]
    names = {r["id"]: r["name"] for r in e.containers.all()}
    ref = _host_reference()
    from kobako.linux.namespaces import in_user_namespace
    rootless = in_user_namespace() and ref == "self"
    out = []
    for ns, (oci, flag) in NAMESPACES.items():
        try:
            link = os.readlink(f"/proc/{pid}/ns/{ns}")
        except OSError:
            continue  # a kernel without this namespace type
        ino = int(link.split("[")[1].rstrip("]"))
        host = _ns_inode(ref, ns)
        read: list[tuple[str, object]] = [(f"/proc/{pid}/ns/{ns}", link),
                                          (f"/proc/{ref}/ns/{ns}", f"{ns}:[{host}]")]
        facts: dict = {"type": ns, "inode": ino, "hostInode": host, "hostReference": f"/proc/{ref}",
                       "enter": f"nsenter -t {pid} {flag}"}
        sharers = others.get((ns, ino), [])
        path = cfg_ns.get(oci) or ""
        bound = path if oci == "network" and path.startswith("/run/netns/") else None
        if ino == host and rootless:
            whose, facts["owner"] = "the user's (rootless kobako's, shared by the user's containers)", "user"
        elif ino == host:
            whose, facts["owner"] = "the host's (shared with the host's processes)", "host"
        elif oci in joined and names.get(joined[oci]) in sharers:
            whose, facts["owner"] = f"container {names[joined[oci]]}'s, joined (setns(2))", names[joined[oci]]
        else:
            whose, facts["owner"] = "its own", "container"
            if oci in made:
                whose += ", made by the runtime (unshare(2))"
            elif bound:
                whose += ", made by kobako's network layer, joined by the runtime (setns(2))"
            elif path:
                whose += f", joined (setns(2)) from {path}"
        if sharers and facts["owner"] == "container":
            whose += "; also joined by " + ", ".join(sharers)
        problems = []
        if bound:
            try:
                b_ino = os.stat(bound).st_ino
                read.append((f"stat {bound}", f"inode {b_ino}"))
                if b_ino == ino:
                    whose += f"; bound at {bound}"
                else:
                    problems.append(f"{bound} holds namespace {b_ino}, not the init's {ino}")
            except OSError as ex:
                problems.append(f"{bound} is gone ({ex.strerror}): `ip netns` no longer lists it")
        checks = [(f"lsns -p {pid} -t {ns}", str(ino)), (f"readlink /proc/{pid}/ns/{ns}", link)]
        if bound:
            checks.append(("ip netns list", os.path.basename(bound)))
        facts["bound"] = bound
        out.append(obj("namespace", ns, f"{ino}  {whose}", facts=facts, read=read, checks=checks,
                       problems=problems))
    return out


# (file, what, formatter) of the limits each controller holds; v1 files, then v2's
def _v1_quota(raw: str) -> str:
    return "none" if raw.strip() == "-1" else f"{raw.strip()} us a period"


def _device_rules(raw: str) -> str:
    rules = raw.splitlines()
    return f"{len(rules)} ({'; '.join(rules[:3])}{' ...' if len(rules) > 3 else ''})"


def _cpu_max(raw: str) -> str:
    quota, _, period = raw.strip().partition(" ")
    if quota == "max":
        return f"none (period {period} us)"
    return f"{int(quota) / int(period):g} CPUs ({quota} us every {period} us)"


def _plain(raw: str) -> str:
    return raw.strip() or "none"


V1_FILES: dict[str, list[tuple[str, str, Callable[[str], str]]]] = {
    "memory": [("memory.limit_in_bytes", "limit", limit_bytes),
               ("memory.memsw.limit_in_bytes", "with swap", limit_bytes),
               ("memory.soft_limit_in_bytes", "reservation", limit_bytes),
               ("memory.usage_in_bytes", "in use", limit_bytes)],
    "pids": [("pids.max", "limit", _plain), ("pids.current", "now", _plain)],
    "cpu": [("cpu.cfs_quota_us", "quota", _v1_quota), ("cpu.cfs_period_us", "period (us)", _plain),
            ("cpu.shares", "shares", _plain)],
    "cpuset": [("cpuset.cpus", "CPUs", _plain), ("cpuset.mems", "memory nodes", _plain)],
    "blkio": [("blkio.throttle.read_bps_device", "read limits", _plain),
              ("blkio.throttle.write_bps_device", "write limits", _plain)],
    "devices": [("devices.list", "rules", _device_rules)],
    "freezer": [("freezer.state", "state", _plain)],
}
V2_FILES = [("memory.max", "memory limit", limit_bytes), ("memory.swap.max", "swap limit", limit_bytes),
            ("memory.current", "memory in use", limit_bytes), ("pids.max", "process limit", _plain),
            ("pids.current", "processes now", _plain), ("cpu.max", "CPU quota", _cpu_max),
            ("cpu.weight", "CPU weight", _plain), ("cpuset.cpus.effective", "CPUs", _plain),
            ("io.max", "I/O limits", _plain)]
# the files whose check command a reader is shown (the limits people ask about)
CHECKED = ("memory.limit_in_bytes", "memory.max", "pids.max", "cpu.max", "cpu.cfs_quota_us", "cpuset.cpus")


def _cgroup(live: _Live) -> list[dict]:
    pid = live.pid
    rec = live.state.get("_cgroup") or {}
    proc = _read(f"/proc/{pid}/cgroup") or ""
    member = parse_cgroup(proc)
    leaves = rec.get("leaves") or []
    path = rec.get("path", "")
    problems, read = [], [(f"/proc/{pid}/cgroup", "; ".join(proc.split()))]
    for leaf in leaves:
        key = "" if leaf["v"] == 2 else leaf["ctrls"]
        want = "/" + os.path.relpath(leaf["dir"], leaf["mount"]).strip("/")
        if member.get(key) != want:
            problems.append(f"the init is in {member.get(key)!r} of the {key or 'v2'} hierarchy, not {want}")
        if not os.path.isdir(leaf["dir"]):
            problems.append(f"{leaf['dir']} does not exist")
    procs = sorted({p for leaf in leaves
                    for p in (_read(os.path.join(leaf["dir"], "cgroup.procs")) or "").split()}, key=int)
    out = [obj("cgroup", "path", f"{path} in {len(leaves)} hierarchies ({rec.get('layout', '?')} layout); "
               f"processes in it: {' '.join(procs) or 'none'}",
               facts={"path": path, "layout": rec.get("layout"), "dirs": [x["dir"] for x in leaves],
                      "processes": [int(p) for p in procs]},
               read=read, checks=[(f"cat /proc/{pid}/cgroup", path)], problems=problems)]
    for leaf in leaves:
        files = V2_FILES if leaf["v"] == 2 and rec.get("layout") == "v2" else \
            [f for c in leaf["ctrls"].split(",") for f in V1_FILES.get(c, ())]
        facts: dict = {"dir": leaf["dir"], "controllers": leaf["ctrls"], "files": {}}
        lines, read, checks = [], [], []
        for fname, what, fmt in files:
            raw = _read(os.path.join(leaf["dir"], fname))
            if raw is None:
                continue
            facts["files"][fname] = raw.strip()
            read.append((os.path.join(leaf["dir"], fname), raw.strip()))
            lines.append(f"{what} {fmt(raw)}")
            if fname in CHECKED and raw.strip():
                checks.append((f"cat {os.path.join(leaf['dir'], fname)}", raw.strip()))
        if lines:
            out.append(obj("cgroup", leaf["ctrls"] or "cgroup2", "; ".join(lines), facts=facts, read=read,
                           checks=checks))
    return out


def _options(opts: list[str]) -> dict[str, str]:
    return dict((o.split("=", 1) + [""])[:2] for o in opts)


def _layers(cwd: str, lowerdir: str) -> list[dict]:
    """Each lowerdir entry (relative to the data root, l/<short>) -> the layer's snapshot."""
    out = []
    for entry in lowerdir.split(":"):
        path = os.path.realpath(os.path.join(cwd, entry))
        chain = os.path.basename(os.path.dirname(path)) if path.endswith("/fs") else ""
        out.append({"lowerdir": entry, "path": path, "chainId": "sha256:" + chain if chain else "",
                    "exists": os.path.isdir(path)})
    return out


def _mounts(e, live: _Live) -> list[dict]:
    pid = live.pid
    info = parse_mountinfo(_read(f"/proc/{pid}/mountinfo") or "")
    seen = {m["target"]: m for m in info}  # the later mount on a target is the visible one
    out = []
    root = seen.get("/")
    if root:
        opts = _options(root["super"].split(","))
        import json
        ann = json.loads((live.state.get("annotations") or {}).get("org.kobako.rootfs.mount") or "{}")
        cwd = ann.get("cwd", e.root)
        # with a user namespace the runtime mounts the layers through idmapped mounts staged in a
        # directory of its own: the kernel names them relative to it (lowerdir=l0), so the layers
        # are found from the mount kobako described, and the line says so
        staged = _options(ann.get("options") or []) if ann.get("idmap") else {}
        upper = staged.get("upperdir") or opts.get("upperdir", "?")
        lowers = staged.get("lowerdir") or opts.get("lowerdir", "")
        layers = _layers(cwd, lowers) if root["fstype"] == "overlay" else []
        problems = [f"layer {x['lowerdir']} -> {x['path']} is missing" for x in layers if not x["exists"]]
        ro = "read-only" if read_only(root) else "writable"
        out.append(obj("mount", "/", f"{root['fstype']}, {ro}: {len(layers)} image layer(s) under "
                       f"upperdir {upper}" + ("; layers and upper dir seen through idmapped mounts (the "
                                              "kernel names them lowerdir="
                                              f"{opts.get('lowerdir')}, upperdir={opts.get('upperdir')})"
                                              if staged else ""),
                       facts={"fstype": root["fstype"], "readOnly": read_only(root), "layers": layers,
                              "upperdir": opts.get("upperdir"), "workdir": opts.get("workdir"),
                              "lowerdir": opts.get("lowerdir"), "idmapped": bool(staged)},
                       read=[(f"/proc/{pid}/mountinfo", f"/ {root['options']} - {root['fstype']} "
                              f"{root['super']}")]
                       + [(f"readlink -f {cwd}/{x['lowerdir']}", x["path"]) for x in layers],
                       checks=[(f"findmnt -N {pid} -no FSTYPE,OPTIONS /",
                                opts.get("upperdir") or root["fstype"])],
                       problems=problems))
    lin = live.config.get("linux") or {}
    special: set[str] = set()
    for kind, paths in (("masked", lin.get("maskedPaths") or []),
                        ("read-only", lin.get("readonlyPaths") or [])):
        rows, problems, read = [], [], []
        for p in paths:
            m = seen.get(p)
            if m is None:
                if os.path.lexists(f"/proc/{pid}/root{p}"):
                    problems.append(f"{p} exists in the container but has no mount over it")
                continue  # absent in this kernel: nothing to mask
            special.add(p)
            if kind == "masked":
                how = "/dev/null bound over it" if m["root"] == "/null" else \
                    f"an empty read-only {m['fstype']}"
                if m["root"] != "/null" and not read_only(m):
                    problems.append(f"{p} is covered by a writable {m['fstype']}")
            else:
                how = "bound read-only" if read_only(m) else "NOT read-only"
                if not read_only(m):
                    problems.append(f"{p} is mounted read-write")
            rows.append({"path": p, "how": how})
            read.append((f"/proc/{pid}/mountinfo", f"{p} {m['options']} - {m['fstype']} {m['source']}"
                         + (f" root {m['root']}" if m["root"] != "/" else "")))
        if rows:
            ex = rows[0]["path"]
            out.append(obj("mount", kind, f"{len(rows)} paths: " + ", ".join(f"{r['path']} ({r['how']})"
                                                                               for r in rows),
                           facts={"paths": rows}, read=read,
                           checks=[(f"findmnt -N {pid} {ex}", ex)], problems=problems))
    binds = {m.get("destination"): m.get("source") for m in live.config.get("mounts") or ()
             if "bind" in (m.get("options") or ()) or m.get("type") == "bind"}
    cg = [m for m in info if m["target"].startswith("/sys/fs/cgroup/")]
    for m in info:
        if m["target"] == "/" or m["target"] in special or m in cg or seen.get(m["target"]) is not m:
            continue
        src = binds.get(m["target"])
        kind = "bind" if src else m["fstype"]
        summary = f"bind of {src}" if src else \
            m["fstype"] + (f" ({m['source']})" if m["source"] != m["fstype"] else "")
        summary += ", read-only" if read_only(m) else ", writable"
        if m["fstype"] == "tmpfs":
            summary += ", " + ",".join(o for o in m["super"].split(",") if o not in ("rw", "ro"))
        out.append(obj("mount", m["target"], summary,
                       facts={"type": kind, "fstype": m["fstype"], "source": src or m["source"],
                              "readOnly": read_only(m), "options": m["options"], "super": m["super"]},
                       read=[(f"/proc/{pid}/mountinfo", f"{m['target']} {m['options']} - {m['fstype']} "
                              f"{m['source']}" + (f" root {m['root']}" if m["root"] != "/" else ""))],
                       checks=[(f"findmnt -N {pid} {m['target']}", m["target"])]))
    if cg:
        out.append(obj("mount", "/sys/fs/cgroup/*", f"{len(cg)} cgroup hierarchies, "
                       f"{'read-only' if all(read_only(m) for m in cg) else 'some writable'}, each rooted at "
                       f"the container's own cgroup ({cg[0]['root']})",
                       facts={"hierarchies": [m["target"] for m in cg], "root": cg[0]["root"]},
                       read=[(f"/proc/{pid}/mountinfo", f"{m['target']} {m['options']} root {m['root']}")
                             for m in cg], checks=[(f"findmnt -N {pid} -R /sys/fs/cgroup", cg[0]["target"])]))
    return out


def _ip_json(pid: int, what: str) -> tuple[list | None, str]:
    import json
    text, err = _run(["nsenter", "-t", str(pid), "-n", "ip", "-j", what, "show"])
    if text is None:
        return None, err
    try:
        return json.loads(text or "[]"), ""
    except ValueError as ex:
        return None, str(ex)


def _sys_link(name: str) -> dict | None:
    """A host link as sysfs shows it: ifindex, master, state; None if there is none."""
    d = f"/sys/class/net/{name}"
    if not os.path.isdir(d):
        return None
    master = os.path.join(d, "master")
    return {"ifindex": int((_read(f"{d}/ifindex") or "0").strip() or 0),
            "master": os.path.basename(os.readlink(master)) if os.path.islink(master) else None,
            "operstate": (_read(f"{d}/operstate") or "").strip()}


def _network(e, rec: dict, live: _Live) -> list[dict]:
    pid = live.pid
    net = rec.get("net") or {}
    mode = net.get("mode") or "none"
    links, err = _ip_json(pid, "addr")
    inside = {x["ifname"]: x for x in links or ()}
    addrs = {n: [f"{a['local']}/{a['prefixlen']}" for a in x.get("addr_info") or ()]
             for n, x in inside.items()}
    seen = "; ".join(f"{n} {' '.join(a) or '(no address)'}" for n, a in addrs.items())
    read = [(f"nsenter -t {pid} -n ip -j addr", seen if links is not None else err)]
    if mode == "host":
        return [obj("network", "host", "the host's network namespace: the host's interfaces, no veth, no nft "
                    "elements", facts={"mode": "host"}, read=read,
                    checks=[(f"nsenter -t {pid} -n ip -o addr", None)])]
    if mode == "container":
        other = e.containers.get(net.get("container", "")) or {}
        return [obj("network", "container", f"shares container {other.get('name', net.get('container', '?'))}"
                    f"'s network namespace (its veth, addresses, ports; `kobako explain "
                    f"{other.get('name', '')}`)", facts={"mode": "container", "container": other.get("id")},
                    read=read, checks=[(f"nsenter -t {pid} -n ip -o addr", None)])]
    if mode != "bridge":
        only = sorted(inside)
        problems = [] if only == ["lo"] or links is None else [f"interfaces besides lo: {', '.join(only)}"]
        return [obj("network", "none", f"a network namespace with {', '.join(only) or 'no interface'} only: "
                    "no veth, no address outside, no nft elements",
                    facts={"mode": "none", "interfaces": only}, read=read,
                    checks=[(f"nsenter -t {pid} -n ip -o link", "lo")], problems=problems)]
    from kobako.linux.namespaces import in_user_namespace
    if in_user_namespace():  # rootless: the veths, bridges and table are in the user's namespace
        from kobako.network import rootlessns
        return rootlessns.call_inside(rootlessns.ensure(e.run_dir)[0], _bridged, e, rec, pid, read, inside,
                                      addrs, sysfs=True)
    return _bridged(e, rec, pid, read, inside, addrs)


def _bridged(e, rec: dict, pid: int, read: list, inside: dict, addrs: dict) -> list[dict]:
    from kobako.network.networks import table_name
    from kobako.runtime import jsonfast
    state_file = os.path.join(e.run_dir, "network", "endpoints", rec["id"] + ".json")
    try:
        with open(state_file, "rb") as f:
            st = jsonfast.loads(f.read())
    except (OSError, ValueError):
        return [obj("network", "bridge", f"no endpoint state at {state_file}: kobako made no veth for it",
                    read=read, problems=[f"{state_file} is missing"])]
    routes, _ = _ip_json(pid, "route")
    default = next((r for r in routes or () if r.get("dst") == "default"), None)
    out = [_endpoint(pid, name, st["networks"][name], state_file, inside, addrs, default)
           for name in st.get("order") or ()]
    out.append(_nft(e, table_name(e.run_dir), st))
    return out


def _endpoint(pid: int, name: str, ep: dict, state_file: str, inside: dict, addrs: dict,
              default: dict | None) -> dict:
    """One network's veth pair: the state's claim, then each end as the kernel has it."""
    veth, br, ifname, cidr = ep["veth"], ep["bridge"], ep["ifname"], f"{ep['ip']}/{ep['prefix']}"
    host = _sys_link(veth)
    peer = inside.get(ifname)
    problems = []
    read: list[tuple[str, object]] = [(state_file, f"{name}: veth {veth}, {ifname} {cidr}, bridge {br}")]
    if host is None:
        problems.append(f"veth {veth} does not exist on the host (its namespace was removed, or a kill -9 "
                        "left only the state)")
    else:
        read.append((f"/sys/class/net/{veth}", f"ifindex {host['ifindex']}, master {host['master']}, "
                     f"{host['operstate']}"))
        if host["master"] != br:
            problems.append(f"veth {veth} is on {host['master'] or 'no bridge'}, not {br}")
    if _sys_link(br) is None:
        problems.append(f"bridge {br} does not exist")
    if peer is None:
        problems.append(f"{ifname} is not in the container's namespace")
    else:
        if host is not None and peer.get("link_index") != host["ifindex"]:
            problems.append(f"{ifname}'s peer is link {peer.get('link_index')}, not {veth}")
        if cidr not in addrs.get(ifname, []):
            problems.append(f"{cidr} is not on {ifname}")
    route = default is not None and default.get("dev") == ifname
    # the line says what the kernel has; the state's plan shows only where the kernel lacks it
    left = f"veth {veth} (host, on bridge {host['master']})" if host else f"veth {veth}: not on the host"
    right = f"{ifname} {' '.join(addrs.get(ifname, [])) or '(no address)'} mac {peer.get('address')} " \
        "(container)" if peer else f"{ifname}: not in the container"
    return obj("network", name, f"{left} <-> {right}"
               + (f", default route via {default.get('gateway')}" if route else ""),
               facts={"network": name, "veth": veth, "bridge": br, "ifname": ifname, "ip": ep["ip"],
                      "prefix": ep["prefix"], "mac": ep["mac"], "gateway": ep["gateway"], "hostLink": host,
                      "addresses": addrs.get(ifname, []), "defaultRoute": route},
               read=read, problems=problems,
               checks=[(f"ip -o link show {veth}", f"master {br}"), (f"ip link show master {br}", veth),
                       (f"nsenter -t {pid} -n ip -o addr show {ifname}", cidr),
                       (f"nsenter -t {pid} -n ip route", f"default via {ep['gateway']}" if route else None)])


def _nft(e, table: str, st: dict) -> dict:
    """The elements of kobako's table that this container's networks and ports need, each
    looked up in the table as the kernel has it now."""
    from kobako.network import nftables
    ip_of = {k: v["ip"] for k, v in st["networks"].items()}
    ports = nftables.port_elements(st.get("ports") or [], ip_of)
    want = ports + [x for ep in st["networks"].values() for x in nftables.network_elements(ep)]
    try:
        have = parse_nft_elements(nftables.run(f"list table inet {table}\n"))
    except nftables.NftError as ex:
        return obj("nftables", table, f"table inet {table} cannot be read: {ex}",
                   problems=[f"table inet {table} is missing (`kobako network reload` rebuilds it)"],
                   checks=[("nft list tables", None)])
    found, missing = [], []
    for s, elem in want:
        (found if " ".join(elem.split()) in have.get(s, []) else missing).append(f"{s} {{ {elem} }}")
    ips = set(ip_of.values())
    naming = [f"{s} {{ {x} }}" for s, xs in have.items() for x in xs if ips & set(x.split())]
    checks: list[tuple[str, str | None]] = [(f"nft list map inet {table} {s}", elem) for s, elem in ports]
    checks.append((f"nft list table inet {table}", f"table inet {table}"))
    return obj("nftables", table, f"table inet {table}: {len(found)} of {len(want)} elements for this "
               f"container present; {len(ports)} published port(s)"
               + "".join(f"; {s} {{ {x} }}" for s, x in ports),
               facts={"table": table, "present": found, "missing": missing, "namingItsAddress": naming},
               read=[(f"nft list table inet {table}", x) for x in found],
               checks=checks, problems=[f"missing: {m}" for m in missing])


def _security(live: _Live, status: dict) -> list[dict]:
    from kobako.linux.capabilities import last_cap
    pid, top = live.pid, last_cap()
    out = []
    mode = status.get("Seccomp", "?")
    filters = status.get("Seccomp_filters", "0")
    nnp = status.get("NoNewPrivs", "?")
    out.append(obj("security", "seccomp", f"mode {mode}, {SECCOMP_MODES.get(mode, 'unknown')}"
                   + (f" ({filters} filter{'s' if filters != '1' else ''})" if mode == "2" else "")
                   + f"; no_new_privs {nnp}",
                   facts={"mode": int(mode) if mode.isdigit() else None, "filters": int(filters or 0),
                          "noNewPrivs": nnp == "1"},
                   read=[(f"/proc/{pid}/status", f"Seccomp: {mode}, Seccomp_filters: {filters}, "
                          f"NoNewPrivs: {nnp}")],
                   checks=[(f"grep -E '^(Seccomp|NoNewPrivs)' /proc/{pid}/status", f"Seccomp: {mode}")]))
    facts: dict = {}
    read = []
    groups: dict[str, list[str]] = {}  # sets that hold the same capabilities are named together
    for field, what in (("CapEff", "effective"), ("CapPrm", "permitted"), ("CapBnd", "bounding"),
                        ("CapInh", "inheritable"), ("CapAmb", "ambient")):
        hexmask = status.get(field)
        if hexmask is None:
            continue
        facts[what] = {"hex": hexmask, "names": cap_names(hexmask)}
        groups.setdefault(hexmask, []).append(what)
        read.append((f"/proc/{pid}/status", f"{field}: {hexmask}"))
    lines = [" = ".join(whats) + " " + describe_caps(h, top) for h, whats in groups.items()]
    eff = status.get("CapEff", "0")
    out.append(obj("security", "capabilities", "; ".join(lines), facts=facts, read=read,
                   checks=[(f"grep Cap /proc/{pid}/status", f"CapEff: {eff}"),
                           (f"capsh --decode={eff}", capsh_names(eff) or None)]))
    maps = {}
    for f in ("uid_map", "gid_map"):
        maps[f] = [" ".join(x.split()) for x in (_read(f"/proc/{pid}/{f}") or "").splitlines() if x.strip()]
    uid, gid = status.get("Uid", "?").split(" ")[0], status.get("Gid", "?").split(" ")[0]
    user = f"uid {inside_id(uid, maps['uid_map'])}, gid {inside_id(gid, maps['gid_map'])}"
    if maps["uid_map"] != ["0 0 4294967295"]:
        user += f" (the host's {uid}, {gid})"
    if status.get("Groups"):
        user += f", groups {status['Groups']}"
    if maps["uid_map"] == ["0 0 4294967295"]:
        how = "the host's user namespace: container uid 0 is the host's root"
    else:
        how = "uid map " + ", ".join(maps["uid_map"]) + " (inside outside count)"
    out.append(obj("security", "user", f"runs as {user}; {how}",
                   facts={"uid": status.get("Uid"), "gid": status.get("Gid"),
                          "groups": status.get("Groups", ""), "uidMap": maps["uid_map"],
                          "gidMap": maps["gid_map"]},
                   read=[(f"/proc/{pid}/status", f"Uid: {status.get('Uid')}, Gid: {status.get('Gid')}"),
                         (f"/proc/{pid}/uid_map", "; ".join(maps["uid_map"])),
                         (f"/proc/{pid}/gid_map", "; ".join(maps["gid_map"]))],
                   checks=[(f"cat /proc/{pid}/{f}", maps[f][0] if maps[f] else None)
                           for f in ("uid_map", "gid_map")]))
    return out


def _files(e, rec: dict, live: _Live | None) -> list[dict]:
    """kobako's own files for the container: they exist whether it runs or not."""
    cid = rec["id"]
    d = e.containers.path(cid)
    upper = e.containers.path(cid, "upper")
    entries = sum(len(ds) + len(fs) for _, ds, fs in os.walk(upper)) if os.path.isdir(upper) else None
    rows = [("record", e.containers.path(cid, "container.json")), ("upper dir (its changes)", upper),
            ("work dir", e.containers.path(cid, "work")),
            ("OCI bundle", os.path.join(d, "bundle", "config.json"))]
    if live is not None:
        rows.append(("runtime state", os.path.join(e.runtime_root, cid, "state.json")))
        if (rec.get("net") or {}).get("mode") == "bridge":
            rows.append(("network endpoint state", os.path.join(e.run_dir, "network", "endpoints",
                                                                cid + ".json")))
    kept = ", ".join(w.split(" (")[0] for w, _ in rows)
    out = [obj("files", "state", f"{d}: {kept}; {entries if entries is not None else '?'} entries "
               "changed or added in the upper dir",
               facts={w: p for w, p in rows} | {"upperEntries": entries},
               read=[(p, "exists" if os.path.lexists(p) else "missing") for _, p in rows],
               checks=[(f"ls {d}", "container.json"), (f"kobako diff {rec['name']}", None)],
               problems=[f"{what} {p} is missing" for what, p in rows if not os.path.lexists(p)])]
    layers = []
    for chain in reversed(rec.get("chainIds") or ()):  # top first, as lowerdir lists them
        fs = e.snapshots.fs(chain)
        layers.append({"chainId": chain, "path": fs, "exists": os.path.isdir(fs)})
    out.append(obj("files", "image layers", f"{len(layers)} layer(s) of {rec.get('imageName', '')} "
                   "(read-only, shared with every container of the image), top first: "
                   + ", ".join(x["chainId"].split(":")[-1][:12] for x in layers),
                   facts={"layers": layers},
                   read=[(x["path"], "exists" if x["exists"] else "missing") for x in layers],
                   checks=[(f"ls {layers[0]['path']}", None)] if layers else [],
                   problems=[f"layer {x['chainId']} is missing at {x['path']}"
                             for x in layers if not x["exists"]]))
    for v in rec.get("volumes") or ():
        out.append(obj("files", f"volume {v['name'][:24]}",
                       f"{'anonymous ' if v.get('anonymous') else ''}volume at {v['destination']}"
                       + (" (read-only)" if v.get("readOnly") else ""), facts=dict(v),
                       checks=[(f"kobako volume inspect {v['name']}", v["name"])]))
    return out


def _leftovers(e, rec: dict) -> list[dict]:
    """A stopped container has no kernel objects; say so only after looking for each."""
    import glob

    from kobako.network.networks import netns_path
    from kobako.runtime import jsonfast
    cid = rec["id"]
    ep_state = os.path.join(e.run_dir, "network", "endpoints", cid + ".json")
    candidates = [("runtime state", os.path.join(e.runtime_root, cid)),
                  ("network namespace", netns_path(cid)), ("network endpoint state", ep_state)]
    candidates += [("cgroup", p) for p in sorted(glob.glob(f"/sys/fs/cgroup/*/kobako/{cid}")
                                                + glob.glob(f"/sys/fs/cgroup/kobako/{cid}"))]
    try:
        with open(ep_state, "rb") as f:
            st = jsonfast.loads(f.read())
        candidates += [("veth", f"/sys/class/net/{ep['veth']}") for ep in st["networks"].values()]
    except (OSError, ValueError, KeyError):
        pass
    found = [(w, p) for w, p in candidates if os.path.lexists(p)]
    looked = [p for _, p in candidates]
    return [obj("kernel", "objects", "none: it is not running" if not found else
                f"it is not running, yet {len(found)} object(s) of an earlier run remain",
                facts={"leftovers": [{"what": w, "path": p} for w, p in found], "lookedAt": looked},
                read=[(p, "exists" if os.path.lexists(p) else "absent") for p in looked],
                checks=[(f"ip netns list | grep {os.path.basename(netns_path(cid))}", None)],
                problems=[f"left over: {w} {p} (`kobako rm -f {rec['name']}` or `kobako system prune` "
                          "removes it)" for w, p in found])]
