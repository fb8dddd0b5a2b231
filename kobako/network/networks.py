"""Networks as the user sees them: `network create/ls/inspect/rm/prune`, and the default
network `bridge`, made on first use.

A network is one file, kept by IPAM (network/ipam.py) next to its address pool:
    <data root>/networks/ipam/<name>.json
        {"name", "id", "driver": "bridge", "bridge": ifname, "internal", "mtu", "options",
         "labels", "created", "subnet", "gateway", "ipRange", "allocated": {ip: container id},
         "enableIPv6", and with an IPv6 pool "subnet6", "gateway6", "ipRange6", "allocated6";
         a vxlan network (network/overlay.py) "vxlan": {"vni", "peers", "port", "device"}}

Its bridge device exists only while a container is attached (network/endpoints.py makes
and removes it), so an idle network leaves nothing in the kernel. `host` and `none` are
modes rather than networks; `ls` shows them as Docker does.
"""

from __future__ import annotations

import os

from kobako import errors
from kobako.network.ipam import IPAM, AddressPool, IPAMError, file_name

DEFAULT = "bridge"
MODES = ("host", "none")
_DEFAULT_RUN = "/run/kobako"


def netns_dir() -> str:
    """Where network namespaces are bound: /run/netns for root (`ip netns` lists them there),
    the user's run root when rootless (network/rootlessns.py)."""
    from kobako.linux.namespaces import in_user_namespace
    if in_user_namespace():
        from kobako.paths import run_root
        return os.path.join(run_root(), "netns")
    return "/run/netns"


def netns_path(cid: str) -> str:
    """Where a container's network namespace is bound while it runs."""
    return f"{netns_dir()}/kobako-{cid[:12]}"


class NetworkError(errors.InvalidArgument):
    """A user-facing error: one line that says what is wrong."""


class NetworkNotFound(errors.NotFound, NetworkError):
    pass


def sha256_hex(s: str) -> str:
    import _sha256
    return _sha256.sha256(s.encode()).hexdigest()


def table_name(run_root: str) -> str:
    """kobako's nft table: `kobako` for the system's run root; a private root (tests, a second
    instance) gets its own, so two never rewrite each other's rules."""
    real = os.path.realpath(run_root)
    return "kobako" if real == _DEFAULT_RUN else "kobako_" + sha256_hex(real)[:8]


def _now() -> str:
    import time
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e9):09d}Z"


class NetworkStore:
    def __init__(self, root: str, run_root: str, pools: tuple[AddressPool, ...] | None = None) -> None:
        """`pools`: where networks without a subnet get one, the default network first (None:
        the configuration's, else kobako's own)."""
        self.root, self.run_root = root, run_root
        self.ipam = IPAM(root, pools)

    # -- reading ---------------------------------------------------------------------------
    def get(self, name: str) -> dict:
        """A network by name, full ID or unique ID prefix. `bridge` is made on first use. A
        name that two networks share (see create's `duplicate`) is ambiguous, as in dockerd."""
        try:
            rec = self.ipam.get(name)
            if self._duplicates(name):
                raise NetworkError(f"network {name} is ambiguous ({1 + len(self._duplicates(name))} matches "
                                   "found based on name): use its ID")
            return rec
        except IPAMError as e:
            if name == DEFAULT:
                return self._create_default()
            if "corrupt" in str(e):
                raise NetworkError(str(e)) from None
        except ValueError:
            pass
        same = self._duplicates(name)
        if len(same) == 1:  # the first of that name was removed
            return same[0]
        if same:
            raise NetworkError(f"network {name} is ambiguous ({len(same)} matches found based on name): "
                               "use its ID")
        hits = [n for n in self.all() if n.get("id", "").startswith(name)] if len(name) >= 3 else []
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise NetworkError(f"network {name} is ambiguous: {len(hits)} networks have IDs starting so")
        raise NetworkNotFound(f"network {name} not found")

    def _duplicates(self, name: str) -> list[dict]:
        """Networks made with the name of one that existed: known inside as NAME@<id12>."""
        try:
            prefix = file_name(name + "@")
        except IPAMError:
            return []
        if not any(f.startswith(prefix) for f in os.listdir(self.ipam.dir)):
            return []  # the usual case: one listdir, no reads
        return [n for n in self.all() if n.get("displayName") == name]

    def all(self) -> list[dict]:
        try:
            return self.ipam.networks()
        except IPAMError as e:
            raise NetworkError(str(e)) from None

    # -- making and removing ---------------------------------------------------------------
    def _create_default(self) -> dict:
        try:
            return self.create(DEFAULT, _default=True)
        except NetworkError as e:
            if "already exists" in str(e):  # another command made it meanwhile
                return self.ipam.get(DEFAULT)
            raise

    def create(self, name: str, subnet: str | None = None, gateway: str | None = None,
               ip_range: str | None = None, internal: bool = False, options: dict | None = None,
               labels: dict | None = None, aux: dict | None = None, attachable: bool = False,
               ipam_options: dict | None = None, duplicate: bool = False, _default: bool = False,
               v6: dict | None = None, driver: str = "bridge") -> dict:
        """`driver`: bridge, or vxlan (a bridge joined to other hosts' by a VXLAN device:
        network/overlay.py). `duplicate`: a network with this name exists and the client did
        not ask dockerd to check (CheckDuplicate false): this one is kept as NAME@<id12> and shown as NAME.
        `v6`: the IPv6 pool, {"subnet", "gateway", "ipRange", "enabled"} (IPAM.create)."""
        if name in MODES or (name == DEFAULT and not _default):
            raise NetworkError(f"network {name} is a predefined network and cannot be created")
        created_options = dict(options or {})  # as given: inspect shows them so (compose compares)
        options = dict(options or {})
        nid = os.urandom(32).hex()
        bridge = options.pop("com.docker.network.bridge.name", None) or options.pop("bridge_name", None)
        if bridge is None:
            default_root = os.path.realpath(self.run_root) == _DEFAULT_RUN
            bridge = "kobako0" if _default and default_root else "kb-" + nid[:12]
        elif (not bridge or len(bridge) > 15 or not all(c.isalnum() or c in "_.-" for c in bridge)
              or bridge in ("lo", "eth0") or os.path.exists(f"/sys/class/net/{bridge}")):
            raise NetworkError(f"invalid bridge name {bridge!r}: 1-15 letters, digits, '_', '.', '-', "
                               "not an existing interface")
        mtu = options.pop("com.docker.network.driver.mtu", None) or options.pop("mtu", None)
        if mtu is not None:
            if not str(mtu).isdigit() or not 68 <= int(mtu) <= 65535:
                raise NetworkError(f"invalid MTU {mtu!r}: a number from 68 to 65535")
            mtu = int(mtu)
        vxlan = None
        if driver == "vxlan":
            from kobako.network import overlay
            vxlan, gateway, mtu = overlay.settings(options, subnet, ip_range, gateway, mtu, self.all())
            vxlan["device"] = overlay.device_name(nid)
            created_options.update(peers=",".join(vxlan["peers"]), vni=str(vxlan["vni"]))
        if options:
            known = "com.docker.network.bridge.name, com.docker.network.driver.mtu"
            if driver == "vxlan":
                known += ", peers, vni, port, mtu"
            raise NetworkError(f"unknown network option {sorted(options)[0]!r} (known: {known})")
        for other in self.all():
            if other.get("bridge") == bridge:
                raise NetworkError(f"bridge name {bridge} is already used by network {other['name']}")
        if _default:
            created_options = {"com.docker.network.bridge.name": bridge}
        extra = {"id": nid, "driver": driver, "bridge": bridge, "internal": bool(internal), "mtu": mtu,
                 "labels": labels or {}, "created": _now(), "createdOptions": created_options,
                 "attachable": bool(attachable), "ipamOptions": ipam_options}
        if vxlan is not None:
            extra["vxlan"] = vxlan
        if subnet is None and not _default:
            self.get(DEFAULT)  # the default network takes its subnet from the pool first
        key = name
        if duplicate:
            key, extra["displayName"] = f"{name}@{nid[:12]}", name
        try:
            return self.ipam.create(key, subnet, gateway, ip_range, extra=extra, aux=aux, v6=v6)
        except IPAMError as e:
            raise NetworkError(str(e)) from None

    def set_peers(self, name: str, value: str) -> tuple[dict, list[str]]:
        """A vxlan network's peers replaced (`network update --opt peers=`): the record as it
        is now, and the peers it had."""
        from kobako.network import overlay
        net = self.get(name)
        if not net.get("vxlan"):
            raise NetworkError(f"network {net['name']} is not a vxlan network: only a vxlan network's peers "
                               "can be updated")
        peers = overlay.check_peers(net, value)
        with self.ipam._locked():
            rec = self.ipam.get(net["name"])
            old = list(rec["vxlan"]["peers"])
            rec["vxlan"]["peers"] = peers
            rec.setdefault("createdOptions", {})["peers"] = ",".join(peers)
            self.ipam._write(rec)
        return rec, old

    def remove(self, name: str, users: list[str]) -> dict:
        """`users`: names of containers (running or not) that are connected to it. `name`: the
        network's own (a twin's NAME@id12 too), else what get() takes."""
        try:
            net = self.ipam.get(name)
        except IPAMError:
            net = self.get(name)
        if net["name"] == DEFAULT:
            raise NetworkError(f"network {DEFAULT} is a predefined network and cannot be removed")
        if users:
            raise NetworkError(f"network {net['name']} is in use by container{'s' * (len(users) > 1)} "
                               f"{', '.join(sorted(users))}; remove or disconnect them first")
        try:
            self.ipam.remove(net["name"])
        except IPAMError as e:
            raise NetworkError(str(e)) from None
        return net
