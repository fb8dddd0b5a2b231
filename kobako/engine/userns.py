"""`--userns`, `--uidmap`, `--gidmap`: which host ids a container's ids are.

Docker remaps users only daemon-wide (`userns-remap`); kobako has no daemon, so it
takes Podman's per-container modes:

    host (default)    no user namespace: the container's root is the host's root
    auto[:size=N]     a range of N ids (default 65536) for this container alone
    private           the same as auto
    container:NAME    the user namespace (and range) of another running container
    --uidmap C:H:N    an explicit mapping (repeatable); --gidmap likewise (default: the uidmap)

Ranges for `auto` come from /etc/subuid and /etc/subgid entries for the user
"kobako", else from POOL. A range is taken under a
lock and recorded in the container's record, so no two containers get the same one;
it is free again once the container is removed.

The image's layers stay as they are on disk: the runtime sees them, and the
container's upper dir and named volumes, through idmapped mounts (runtime/idmap.py).
"""

from __future__ import annotations

import os

from kobako.engine.ocispec import OptionError

DEFAULT_SIZE = 65536
# ids 2^30 .. 2^30 + 2^29: inside the range systemd leaves to containers (524288-1879048191),
# far above the 100000+ ranges useradd hands out for rootless users
POOL = (1 << 30, 1 << 29)
# not Podman's "containers": Podman allocates from it by its own records, and two engines
# handing out the same range would let their containers signal and write each other's files
SUBID_USERS = ("kobako",)


class Userns:
    """A container's user-namespace request, then its mapping once allocated."""

    def __init__(self, mode: str, size: int = DEFAULT_SIZE, uid_maps: list[dict] | None = None,
                 gid_maps: list[dict] | None = None, join: str | None = None) -> None:
        self.mode, self.size, self.join = mode, size, join
        self.user = ""  # the container's default user (keep-id: the user's own ids)
        self.uid_maps, self.gid_maps = uid_maps or [], gid_maps or []

    def record(self) -> dict:
        return {"mode": self.mode, "uidMappings": self.uid_maps, "gidMappings": self.gid_maps}


def _parse_map(spec: str, flag: str) -> dict:
    parts = spec.split(":")
    try:
        c, h, n = (int(p) for p in parts)
    except ValueError:
        raise OptionError(f"invalid {flag} {spec!r}: CONTAINER-ID:HOST-ID:SIZE, "
                          "e.g. 0:100000:65536") from None
    if c < 0 or h < 0 or n < 1 or c + n > (1 << 32) - 1 or h + n > (1 << 32) - 1:  # (uid_t)-1 is no id
        raise OptionError(f"invalid {flag} {spec!r}: ids are 0 to 4294967295 and SIZE at least 1")
    return {"containerID": c, "hostID": h, "size": n}


def _check_overlaps(maps: list[dict], flag: str) -> None:
    for key in ("containerID", "hostID"):
        spans = sorted((m[key], m[key] + m["size"]) for m in maps)
        for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
            if start < end:
                raise OptionError(f"invalid {flag}: the mappings overlap")


def parse(mode: str | None, uidmap: list[str], gidmap: list[str]) -> Userns | None:
    """The --userns/--uidmap/--gidmap flags, checked; None for the host's user namespace."""
    if uidmap or gidmap:
        if mode not in (None, "", "private", "auto"):
            raise OptionError(f"--uidmap/--gidmap and --userns {mode} cannot be used together")
        uids = [_parse_map(s, "--uidmap") for s in uidmap] or [_parse_map(s, "--gidmap") for s in gidmap]
        gids = [_parse_map(s, "--gidmap") for s in gidmap] or uids
        _check_overlaps(uids, "--uidmap")
        _check_overlaps(gids, "--gidmap")
        for flag, maps in (("--uidmap", uids), ("--gidmap", gids)):
            if not any(m["containerID"] == 0 for m in maps):
                raise OptionError(f"invalid {flag}: container id 0 must be mapped (the runtime sets up "
                                  "the container as its root)")
        return Userns("private", uid_maps=uids, gid_maps=gids)
    if mode in (None, "", "host"):
        return None
    if mode == "keep-id":
        return keep_id()
    if mode.startswith("container:"):
        return Userns("container", join=mode.split(":", 1)[1])
    name, _, rest = mode.partition(":")
    if name not in ("auto", "private"):
        raise OptionError(f"invalid --userns {mode!r}: host, auto[:size=N], private, keep-id or "
                          "container:NAME")
    size = DEFAULT_SIZE
    for kv in filter(None, rest.split(",")):
        k, _, v = kv.partition("=")
        if k != "size" or not v.isdigit() or not 1 <= int(v) <= 1 << 24:
            raise OptionError(f"invalid --userns {mode!r}: the one option is size=N (1 to 16777216)")
        size = int(v)
    return Userns(name, size=size)


def keep_id() -> Userns:
    """Podman's --userns keep-id, for rootless kobako: the user's own uid and gid inside the
    container too (files it writes into a bind-mounted home dir are the user's, under the
    user's own id), in a user namespace nested in the user's (engine/rootless.py), where the
    user is 0: container id U is 0 there, ids below U move up by one, the rest stay."""
    from kobako.engine import rootless
    ids = rootless.host_ids()
    if ids is None:
        raise OptionError("--userns keep-id is for rootless kobako (an ordinary user's): root's "
                          "containers take --userns auto")

    def maps(own: int, kind: str) -> list[dict]:
        extents = rootless.namespace_extents(kind)
        total = sum(n for _, n in extents)
        if own + 1 >= total:
            raise OptionError(f"--userns keep-id: id {own} is beyond the {total} ids of the user's "
                              f"namespace (/etc/sub{kind}id gives it {total - 1})")
        out = [{"containerID": own, "hostID": 0, "size": 1}]
        if own:
            out += _split({"containerID": 0, "hostID": 1, "size": own}, extents)
        return out + _split({"containerID": own + 1, "hostID": own + 1, "size": total - own - 1}, extents)
    req = Userns("keep-id", uid_maps=maps(ids[0], "u"), gid_maps=maps(ids[1], "g"))
    req.user = f"{ids[0]}:{ids[1]}"
    return req


def _split(m: dict, extents: list[tuple[int, int]]) -> list[dict]:
    """A mapping cut where the parent namespace's extents meet: the kernel takes a child's
    range only when it lies within one extent of its parent's map."""
    out = []
    for first, count in extents:
        lo, hi = max(first, m["hostID"]), min(first + count, m["hostID"] + m["size"])
        if lo < hi:
            out.append({"containerID": m["containerID"] + lo - m["hostID"], "hostID": lo, "size": hi - lo})
    return out


def subid_ranges(path: str) -> list[tuple[int, int]]:
    """(start, count) of /etc/subuid or /etc/subgid entries for kobako's users, else POOL."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        lines = []
    for user in SUBID_USERS:
        out = []
        for ln in lines:
            f = ln.strip().split(":")
            if len(f) == 3 and f[0] == user and f[1].isdigit() and f[2].isdigit():
                out.append((int(f[1]), int(f[2])))
        if out:
            return out
    return [POOL]


def _pick(ranges: list[tuple[int, int]], used: list[tuple[int, int]], size: int) -> int | None:
    """The lowest start of `size` free ids inside one of `ranges`."""
    used = sorted(used)
    for start, count in ranges:
        at = start
        for u_start, u_end in used:
            if u_end <= at:
                continue
            if u_start >= at + size:
                break
            at = u_end
        if at + size <= start + count:
            return at
    return None


def allocate(req: Userns, records: list[dict]) -> None:
    """Give an auto/private request its own range, one no recorded container has. The caller
    holds the lock and writes the record before letting go of it."""
    if req.uid_maps or req.mode == "container":
        return
    from kobako.engine import rootless
    if rootless.host_ids() is not None:
        raise OptionError(f"--userns {req.mode}: a range of the host's ids is root's to give; rootless "
                          "kobako has only the user's own (--uidmap with ids of the user's namespace, "
                          "0 to 65536, works)")
    for key, path in (("uidMappings", "/etc/subuid"), ("gidMappings", "/etc/subgid")):
        used = [(m["hostID"], m["hostID"] + m["size"]) for r in records
                for m in (r.get("userns") or {}).get(key) or []]
        start = _pick(subid_ranges(path), used, req.size)
        if start is None:
            raise OptionError(f"--userns {req.mode}: no {req.size} free ids left in {path} "
                              f"(for user {SUBID_USERS[0]!r}) or kobako's pool; remove containers "
                              "or add a range")
        maps = [{"containerID": 0, "hostID": start, "size": req.size}]
        if key == "uidMappings":
            req.uid_maps = maps
        else:
            req.gid_maps = maps


def host_root(req: Userns) -> tuple[int, int]:
    """The host uid and gid the container's root is."""
    def of(maps: list[dict]) -> int:
        for m in maps:
            if m["containerID"] == 0:
                return m["hostID"]
        return 65534
    return of(req.uid_maps), of(req.gid_maps)


def chown_for(req: Userns | None, paths: list[str]) -> None:
    """Files the engine writes for the container (/etc/hosts, ...): owned by its root."""
    if req is None:
        return
    uid, gid = host_root(req)
    for p in paths:
        os.chown(p, uid, gid)
