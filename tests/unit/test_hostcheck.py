"""`kobako system check` without root: each check of engine/hostcheck.py run on a fake host
(a directory standing for /, with /proc, /etc/subuid, /dev nodes, cgroup files), its probes
answered by the test; the rendering, the exit status, and the hint a failure gets."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from kobako.cli import system as cli_system
from kobako.engine import hostcheck as hc
from kobako.errors import InvalidArgument, KobakoError

PURE_V2 = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
HYBRID = ("32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
          "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
          "36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices\n"
          "39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n"
          "40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n"
          "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n")
USER_CG = "/user.slice/user-1000.slice/user@1000.service/app.slice/run-1.scope"


class FakeHost(hc.Host):
    """A host under `root`: files are read there; who may open what follows the files' mode
    bits and `owned` (paths the user owns), not the test's own uid; probes answer from
    `probes` (None: it worked)."""

    def __init__(self, root: Path, uid: int = 1000, user: str = "alice", **kw) -> None:
        super().__init__(str(root), uid=uid, gid=uid, user=user, data_root=kw.pop("data_root", None) or (
            "/var/lib/kobako" if uid == 0 else f"/home/{user}/.local/share/kobako"))
        self.probes: dict[str, str | None] = kw.pop("probes", {})
        self.libs: dict[str, str | None] = kw.pop("libs", {})
        self.fake_routes: list[str] = kw.pop("routes", [])
        self.owned: set[str] = set()
        self.caps: set[str] = set()
        self.probed: list[str] = []

    def put(self, path: str, text: str = "", mode: int = 0o644, owner: int = 0) -> None:
        p = Path(self.path(path))
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        p.chmod(mode)
        if owner == self.uid:
            self.owned.add(path)

    def _allowed(self, path: str, bits: int) -> bool:
        st = os.stat(self.path(path)) if os.path.exists(self.path(path)) else None
        if st is None:
            return False
        if self.uid == 0:
            return True
        shift = 6 if path in self.owned else 0
        return (st.st_mode >> shift) & bits == bits

    def writable(self, p: str) -> bool:
        return self._allowed(p, 2)

    def read_write(self, p: str) -> bool:
        return self._allowed(p, 6)

    def stat(self, p: str):
        st = super().stat(p)
        if st is None:
            return None
        fields = list(st[:10])
        fields[4] = self.uid if p in self.owned else 0  # st_uid as the fake host has it
        return os.stat_result(fields)

    def has_file_caps(self, p: str) -> bool:
        return p in self.caps

    def library(self, name: str) -> str | None:
        return self.libs.get(name)

    def routes(self) -> list[str]:
        return self.fake_routes

    def scratch_parent(self) -> str:
        return self.data_root

    def _probe(self, key: str) -> str | None:
        self.probed.append(key)
        return self.probes.get(key)

    def try_overlay(self, userns: bool) -> str | None:
        return self._probe("overlay-userns" if userns else "overlay")

    def try_userns(self) -> str | None:
        return self._probe("userns")

    def try_idmap(self) -> str | None:
        return self._probe("idmap")

    def try_bpf_device(self) -> str | None:
        return self._probe("bpf")

    def try_nftables(self) -> str | None:
        return self._probe("nft")


def _tool(h: FakeHost, name: str, setuid: bool = False) -> None:
    h.put(f"/usr/bin/{name}", "#!/bin/sh\n", 0o4755 if setuid else 0o755)


def good_host(root: Path, uid: int = 1000, mountinfo: str = PURE_V2) -> FakeHost:
    """A stock Debian 12 host with a user set up by useradd and systemd's delegation."""
    h = FakeHost(root, uid=uid)
    h.put("/proc/sys/kernel/osrelease", "6.1.0-18-amd64\n")
    h.put("/proc/self/mountinfo", mountinfo)
    h.put("/proc/self/cgroup", f"0::{USER_CG}\n" if uid else "0::/init.scope\n")
    h.put("/proc/self/ns/time", "")
    h.put("/proc/sys/user/max_user_namespaces", "63432\n")
    h.put("/proc/sys/net/ipv4/ip_unprivileged_port_start", "0\n")
    h.put("/sys/fs/cgroup/cgroup.controllers", "cpuset cpu io memory hugetlb pids rdma misc\n")
    h.put("/sys/fs/cgroup/cgroup.subtree_control", "cpu memory pids\n")
    deleg = "/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service"
    h.put(f"{deleg}/cgroup.controllers", "cpu memory pids\n")
    for sub in ("", "/app.slice", "/app.slice/run-1.scope"):
        h.put(f"{deleg}{sub}/cgroup.subtree_control", "", 0o644, owner=uid)
    h.put("/sys/fs/cgroup/user.slice/cgroup.subtree_control", "")
    h.put("/sys/fs/cgroup/user.slice/user-1000.slice/cgroup.subtree_control", "")
    h.put("/etc/subuid", "alice:100000:65536\n")
    h.put("/etc/subgid", "alice:100000:65536\n")
    h.put("/dev/net/tun", "", 0o666)
    h.put("/dev/fuse", "", 0o666)
    for t in ("newuidmap", "newgidmap"):
        _tool(h, t, setuid=True)
    for t in ("slirp4netns", "fuse-overlayfs", "nft"):
        _tool(h, t)
    return h


def by_name(results: list[hc.Result]) -> dict[str, hc.Result]:
    return {r.name: r for r in results}


# -- whole hosts ----------------------------------------------------------------------------

def test_a_set_up_host_passes_every_check_of_a_user(tmp_path):
    res = by_name(hc.run_checks(good_host(tmp_path)))
    assert {r.status for r in res.values()} == {"ok"}, [r for r in res.values() if r.status != "ok"]
    assert list(res) == ["kernel", "userns", "newuidmap", "newgidmap", "subuid", "subgid", "overlay-userns",
                         "fuse-overlayfs", "fuse", "idmapped-mounts", "time-namespace", "cgroups",
                         "cgroup-delegation", "seccomp", "nftables", "nft", "tun", "rootless-network",
                         "unprivileged-ports"]
    assert res["cgroup-delegation"].detail == ("/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service "
                                               "is delegated to alice: cpu, memory, pids")
    assert res["subuid"].detail == "alice has 65536 ids in /etc/subuid: 100000-165535"


def test_root_gets_roots_checks_and_none_of_a_users(tmp_path):
    res = by_name(hc.run_checks(good_host(tmp_path, uid=0)))
    assert list(res) == ["kernel", "userns", "overlay", "idmapped-mounts", "time-namespace", "cgroups",
                         "bpf-devices", "seccomp", "nftables", "nft", "default-subnet"]
    assert {r.status for r in res.values()} == {"ok"}


def test_a_check_that_breaks_is_a_failure_naming_it_not_a_traceback(tmp_path, monkeypatch):
    def broken(h):
        raise ValueError("boom")
    monkeypatch.setattr(hc, "CHECKS", [(broken, "all", ())])
    [r] = hc.run_checks(good_host(tmp_path))
    assert (r.name, r.status) == ("broken", "FAIL") and "boom" in r.detail


# -- the user's ids ---------------------------------------------------------------------------

def test_no_subuid_range_fails_with_a_usermod_line_for_a_free_range(tmp_path):
    h = good_host(tmp_path)
    h.put("/etc/subuid", "bob:100000:65536\ncarol:165536:65536\n")
    r = hc.check_subuid(h)
    assert r.status == "FAIL" and r.detail.startswith("alice has no range in /etc/subuid")
    # the first 65536 ids no entry of either file uses (subgid has alice at 100000 too)
    assert r.fix == "as root: usermod --add-subuids 231072-296607 --add-subgids 231072-296607 alice"


def test_a_range_too_small_fails_and_a_uid_number_counts_as_the_user(tmp_path):
    h = good_host(tmp_path)
    h.put("/etc/subgid", "alice:100000:1000\n")
    r = hc.check_subgid(h)
    assert r.status == "FAIL" and "only 1000 ids in /etc/subgid (65536 needed)" in r.detail
    h.put("/etc/subgid", "1000:200000:40000\nalice:300000:30000\n# comment\nbad line\n")
    assert hc.check_subgid(h).detail == "alice has 70000 ids in /etc/subgid: 200000-239999, 300000-329999"


def test_free_range_skips_taken_ranges():
    assert hc.free_range([]) == 100000
    assert hc.free_range([(100000, 65536), (300000, 10)]) == 165536
    assert hc.free_range([(100000, 10), (160000, 65536)]) == 225536  # 100010..159999 is too small
    assert hc.free_range([(100000, 10), (170000, 65536)]) == 100010
    assert hc.free_range([(0, 5000), (3000000000, 65536)]) == 100000


def test_newuidmap_missing_or_not_setuid_fails_and_file_capabilities_do(tmp_path):
    h = good_host(tmp_path)
    os.unlink(h.path("/usr/bin/newuidmap"))
    r = hc.check_newuidmap(h)
    assert r.status == "FAIL" and r.fix == "as root: apt-get install uidmap"
    _tool(h, "newuidmap")  # there, mode 0755
    r = hc.check_newuidmap(h)
    assert r.status == "FAIL" and "neither setuid root" in r.detail
    assert "chmod u+s /usr/bin/newuidmap" in r.fix
    h.caps.add("/usr/bin/newuidmap")  # Fedora's way: cap_setuid on the file
    assert hc.check_newuidmap(h).status == "ok"
    assert hc.check_newgidmap(h).detail == "/usr/bin/newgidmap is setuid root"


def test_user_namespace_switches_fail_with_their_sysctl(tmp_path):
    h = good_host(tmp_path)
    h.put("/proc/sys/kernel/unprivileged_userns_clone", "0\n")
    r = hc.check_userns(h)
    assert r.status == "FAIL" and "kernel.unprivileged_userns_clone is 0" in r.detail
    assert r.fix == ("as root: sysctl -w kernel.unprivileged_userns_clone=1 && echo "
                     "'kernel.unprivileged_userns_clone = 1' > /etc/sysctl.d/90-kobako-userns.conf")
    assert "userns" not in h.probed  # the switch says it all
    h.put("/proc/sys/kernel/unprivileged_userns_clone", "1\n")
    h.probes["userns"] = "unshare: Operation not permitted"
    r = hc.check_userns(h)
    assert r.status == "FAIL" and "Operation not permitted" in r.detail


def test_root_with_no_user_namespaces_gets_a_warning(tmp_path):
    h = good_host(tmp_path, uid=0)
    h.put("/proc/sys/user/max_user_namespaces", "0\n")
    r = hc.check_userns(h)
    assert r.status == "warn" and "--userns" in r.detail and r.fix.startswith("sysctl -w user.max_user")


# -- overlay and fuse ---------------------------------------------------------------------------

def test_overlay_in_a_user_namespace_falls_back_to_fuse_overlayfs_or_fails(tmp_path):
    h = good_host(tmp_path)
    h.probes["overlay-userns"] = "mount: Operation not permitted"
    r = hc.check_overlay_userns(h)
    assert r.status == "warn" and "/usr/bin/fuse-overlayfs is used instead" in r.detail
    os.unlink(h.path("/usr/bin/fuse-overlayfs"))
    r = hc.check_overlay_userns(h)
    assert r.status == "FAIL" and "fuse-overlayfs is not installed" in r.detail
    assert "apt-get install fuse-overlayfs" in r.fix
    assert hc.check_fuse_overlayfs(h).status == "warn"


def test_a_kernel_older_than_5_11_is_not_even_tried(tmp_path):
    h = good_host(tmp_path)
    h.put("/proc/sys/kernel/osrelease", "5.10.0-28-amd64\n")
    os.unlink(h.path("/usr/bin/fuse-overlayfs"))
    r = hc.check_overlay_userns(h)
    assert r.status == "FAIL" and "Linux 5.10.0-28-amd64 is older than 5.11" in r.detail
    assert "overlay-userns" not in h.probed


def test_fuse_is_only_needed_when_the_kernels_overlay_refuses(tmp_path):
    h = good_host(tmp_path)
    h.put("/dev/fuse", "", 0o600)
    r = hc.check_fuse(h)
    assert r.status == "ok" and "not needed" in r.detail and "mode 0600" in r.detail
    h.probes["overlay-userns"] = "mount: Invalid argument"
    h._memo.clear()
    r = hc.check_fuse(h)
    assert r.status == "warn" and "alice cannot open it" in r.detail and "chmod 0666 /dev/fuse" in r.fix


def test_root_overlay_failure_is_fatal(tmp_path):
    h = good_host(tmp_path, uid=0)
    h.probes["overlay"] = "mount: No such device /var/lib/kobako/.kobako-check-x/merged"
    r = hc.check_overlay(h)
    assert r.status == "FAIL" and "No such device" in r.detail and "modprobe overlay" in r.fix


# -- devices ------------------------------------------------------------------------------------

def test_tun_closed_to_the_user_fails_with_chmod_and_a_udev_rule(tmp_path):
    h = good_host(tmp_path)
    h.put("/dev/net/tun", "", 0o600)
    r = hc.check_tun(h)
    assert r.status == "FAIL"
    assert r.detail.startswith("/dev/net/tun is mode 0600, owner uid 0: alice cannot open it")
    assert r.fix == ("as root: chmod 0666 /dev/net/tun; to keep it after a reboot: echo 'KERNEL==\"tun\", "
                     "MODE=\"0666\"' > /etc/udev/rules.d/60-kobako-tun.rules (Debian's udev default is 0666)")
    os.unlink(h.path("/dev/net/tun"))
    r = hc.check_tun(h)
    assert r.status == "FAIL" and r.fix == "as root: modprobe tun"


def test_pasta_alone_is_not_a_rootless_network(tmp_path):
    # rootless kobako's way out is slirp4netns only (kobako/network/rootlessns.py)
    h = good_host(tmp_path)
    assert hc.check_rootless_network(h).status == "ok"
    os.unlink(h.path("/usr/bin/slirp4netns"))
    _tool(h, "pasta")
    r = hc.check_rootless_network(h)
    assert r.status == "FAIL" and r.fix == "as root: apt-get install slirp4netns"


# -- cgroups ------------------------------------------------------------------------------------

def test_no_delegated_subtree_warns_with_the_systemd_drop_in(tmp_path):
    h = good_host(tmp_path)
    h.owned.clear()
    r = hc.check_cgroup_delegation(h)
    assert r.status == "warn" and f"neither its cgroup {USER_CG} nor any above it is writable" in r.detail
    assert "Delegate=yes" in r.fix and "/etc/systemd/system/user@.service.d/delegate.conf" in r.fix
    assert "chown -R alice: /sys/fs/cgroup/kobako-alice" in r.fix
    assert "kobako-alice/session/cgroup.procs" in r.fix


def test_a_delegation_without_memory_warns(tmp_path):
    h = good_host(tmp_path)
    h.put("/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service/cgroup.controllers", "pids\n")
    r = hc.check_cgroup_delegation(h)
    assert r.status == "warn" and "with controllers pids; no cpu, memory" in r.detail


def test_delegated_subtree_is_the_topmost_writable_ancestor(tmp_path):
    h = good_host(tmp_path)
    top = hc.delegated_subtree(h, "/sys/fs/cgroup", USER_CG)
    assert top == "/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service"
    assert hc.own_v2_cgroup("12:pids:/x\n0::/a/b\n") == "/a/b"
    assert hc.own_v2_cgroup("0::\n") == "/"
    assert hc.own_v2_cgroup("4:memory:/\n") is None


def test_cgroup_v1_cannot_be_delegated(tmp_path):
    h = good_host(tmp_path, mountinfo=HYBRID)
    r = hc.check_cgroup_delegation(h)
    assert r.status == "warn" and r.detail.startswith("hybrid")
    assert "systemd.unified_cgroup_hierarchy=1" in r.fix


def test_the_cgroup_layout_is_named_with_its_controllers(tmp_path):
    h = good_host(tmp_path, uid=0, mountinfo=HYBRID)
    h.put("/sys/fs/cgroup/unified/cgroup.controllers", "hugetlb\n")
    r = hc.check_cgroups(h)
    assert r.status == "ok"
    assert r.detail == ("hybrid (v1 controllers, plus cgroup2); v1: cpu, devices, memory, pids; "
                        "v2 at /sys/fs/cgroup/unified: hugetlb")
    h = good_host(tmp_path / "v2", uid=0)
    h.put("/sys/fs/cgroup/cgroup.controllers", "cpu memory\n")
    r = hc.check_cgroups(h)
    assert r.status == "warn" and "no pids controller" in r.detail
    assert r.fix == "echo '+pids' > /sys/fs/cgroup/cgroup.subtree_control"
    h.put("/proc/self/mountinfo", "")
    assert hc.check_cgroups(h).status == "FAIL"


def test_the_bpf_device_filter_matters_on_v2_only(tmp_path):
    h = good_host(tmp_path, uid=0, mountinfo=HYBRID)
    h.probes["bpf"] = "bpf BPF_PROG_LOAD kobako_check: Operation not permitted"
    assert hc.check_bpf_devices(h).status == "ok" and "bpf" not in h.probed
    h = good_host(tmp_path / "v2", uid=0)
    h.probes["bpf"] = "bpf BPF_PROG_LOAD kobako_check: Invalid argument"
    r = hc.check_bpf_devices(h)
    assert r.status == "FAIL" and "Invalid argument" in r.detail and "CONFIG_CGROUP_BPF" in r.fix


def test_the_probe_loads_the_runtimes_own_device_program(monkeypatch):
    from kobako.linux import bpf
    from kobako.runtime.cgroups import devices
    seen = []
    monkeypatch.setattr(bpf, "prog_load", lambda code, typ, name: seen.append((code, typ)) or os.open("/", 0))
    assert hc._try_bpf_device() is None
    assert seen == [(devices.assemble([]), bpf.BPF_PROG_TYPE_CGROUP_DEVICE)]


# -- nftables, ports, the default subnet ----------------------------------------------------------

def test_nftables_is_fatal_for_root_and_a_warning_for_a_user(tmp_path):
    h = good_host(tmp_path, uid=0)
    h.libs["libnftables.so.1"] = "libnftables.so.1: cannot open shared object file"
    r = hc.check_nftables(h)
    assert r.status == "FAIL" and r.fix == "apt-get install nftables (it brings libnftables1)"
    u = good_host(tmp_path / "u")
    u.probes["nft"] = "nftables: cannot look up table inet kobako: Protocol not supported"
    r = hc.check_nftables(u)
    assert r.status == "warn" and "Protocol not supported" in r.detail
    assert r.fix == "as root: modprobe nf_tables (a kernel built with CONFIG_NF_TABLES)"
    os.unlink(u.path("/usr/bin/nft"))
    r = hc.check_nft(u)
    assert r.status == "warn" and r.fix == "as root: apt-get install nftables"


def test_low_ports_warn_with_the_sysctl(tmp_path):
    h = good_host(tmp_path)
    h.put("/proc/sys/net/ipv4/ip_unprivileged_port_start", "1024\n")
    r = hc.check_unprivileged_ports(h)
    assert r.status == "warn" and "a port below 1024 cannot be published (-p 80:80 is refused)" in r.detail
    assert "sysctl -w net.ipv4.ip_unprivileged_port_start=0" in r.fix


def test_subnet_collisions_ignore_the_default_route():
    routes = ["0.0.0.0/0", "10.88.0.0/16", "192.168.1.0/24"]
    hits = hc.subnet_collisions(["10.88.0.0/16", "10.89.0.0/16"], routes)
    assert hits == [("10.88.0.0/16", "10.88.0.0/16")]
    assert hc.subnet_collisions(["10.0.0.0/8"], routes) == [("10.0.0.0/8", "10.88.0.0/16")]
    assert hc.subnet_collisions(["192.168.1.128/25"], routes) == [("192.168.1.128/25", "192.168.1.0/24")]
    assert hc.subnet_collisions(["172.17.0.0/16"], routes) == []


def test_the_default_networks_subnet_against_the_hosts_routes(tmp_path):
    h = good_host(tmp_path, uid=0)
    h.fake_routes = ["0.0.0.0/0", "10.88.0.0/16"]
    # not made yet: the pool's first free subnet
    r = hc.check_default_subnet(h)
    assert r.status == "ok"
    assert r.detail == ("the default network will get 10.89.0.0/16; "
                        "10.88.0.0/16 and others before it are taken by host routes")
    rec = "/var/lib/kobako/networks/ipam/bridge.json"
    h.put(rec, json.dumps({"name": "bridge", "subnet": "10.88.0.0/16", "bridge": "kobako0", "allocated": {}}))
    r = hc.check_default_subnet(h)
    assert r.status == "FAIL"
    assert r.detail == ("the default network's subnet 10.88.0.0/16 overlaps the host's route 10.88.0.0/16: a "
                        "default `kobako run` cannot make its bridge kobako0")
    assert "ip route show 10.88.0.0/16" in r.fix and f"rm {rec}" in r.fix
    h.put("/sys/class/net/kobako0/ifindex", "7\n")  # kobako's own bridge holds the route
    assert hc.check_default_subnet(h).status == "ok"
    h.fake_routes = [f"{c.split('/')[0]}/8" for c in ("10.0.0.0", "172.0.0.0", "192.0.0.0")]
    os.unlink(h.path(rec))
    assert hc.check_default_subnet(h).status == "FAIL"


def test_the_pool_is_the_network_layers(tmp_path):
    h = good_host(tmp_path, uid=0)
    h.fake_routes = ["10.88.0.0/13"]  # the allocator steps over the whole blocker, as the network layer does
    assert hc.check_default_subnet(h).detail.startswith("the default network will get 10.96.0.0/16")


# -- kernel features -------------------------------------------------------------------------------

def test_kernel_versions_parse():
    assert hc.kernel_version("6.1.0-18-amd64") == (6, 1)
    assert hc.kernel_version("5.11") == (5, 11)
    assert hc.kernel_version("4.19rc1") == (4, 19)
    assert hc.kernel_version("6") == (6, 0)


def test_idmapped_mounts_and_time_namespaces_are_warnings(tmp_path):
    h = good_host(tmp_path, uid=0)
    h.put("/proc/sys/kernel/osrelease", "5.10.0\n")
    r = hc.check_idmapped_mounts(h)
    assert r.status == "warn" and "older than 5.12" in r.detail and "idmap" not in h.probed
    os.unlink(h.path("/proc/self/ns/time"))
    r = hc.check_time_namespace(h)
    assert r.status == "warn" and "CONFIG_TIME_NS" in r.fix


def test_a_probe_directory_is_removed_even_with_overlays_mode_0_work_dir(tmp_path):
    base = tmp_path / ".kobako-check-x"
    (base / "work" / "work").mkdir(parents=True)
    (base / "upper" / "f").parent.mkdir()
    (base / "upper" / "f").write_text("x")
    (base / "work" / "work").chmod(0)
    hc._remove_tree(str(base))
    assert not base.exists()


def test_a_probe_runs_in_a_child_and_reports_what_it_raised():
    assert hc._in_child(lambda: None) is None
    assert hc._in_child(lambda: os.stat("/nonexistent/x")) == "No such file or directory /nonexistent/x"

    def die():
        os.kill(os.getpid(), 9)
    assert hc._in_child(die).startswith("the probe died")


# -- the diagnosis a failure gets --------------------------------------------------------------------

def test_a_failure_gets_the_first_failing_check_of_its_area(tmp_path, monkeypatch):
    h = good_host(tmp_path)
    h.put("/dev/net/tun", "", 0o600)
    h.put("/etc/subuid", "")
    assert hc.why("network", h).startswith("/dev/net/tun is mode 0600")
    assert hc.why("runtime", h).startswith("alice has no range in /etc/subuid")
    assert "fix: as root: usermod --add-subuids" in hc.why("runtime", h)
    assert hc.why("runtime", good_host(tmp_path / "ok")) is None
    monkeypatch.setattr(hc, "why", lambda area, h=None: f"{area} reason")
    e = KobakoError("cannot start")
    hc.hint(e, "network")
    assert str(e) == "cannot start (network reason)"
    e = KobakoError("cannot start", "its own hint")
    hc.hint(e, "network")
    assert e.hint == "its own hint"
    plain = ValueError("x")
    hc.hint(plain, "network")
    assert not hasattr(plain, "hint")
    missing = KobakoError('exec: "nope": executable file not found in $PATH')
    hc.hint_start_failure(missing)  # the program's fault (127): no host reason
    assert missing.hint is None
    other = KobakoError("mount overlay: Operation not permitted")
    hc.hint_start_failure(other)
    assert other.hint == "runtime reason"


# -- the command --------------------------------------------------------------------------------------

RESULTS = [hc.Result("kernel", "ok", "Linux 6.1.0"),
           hc.Result("tun", "FAIL", "/dev/net/tun is mode 0600", "chmod 0666 /dev/net/tun"),
           hc.Result("unprivileged-ports", "warn", "ports below 1024", "sysctl -w x=0")]


class Args:
    def __init__(self, fmt=None):
        self.format = fmt


def test_the_text_has_a_line_per_check_and_the_fix_under_what_is_not_ok():
    text = cli_system.render_check(RESULTS)
    assert text.splitlines() == [
        "ok    kernel              Linux 6.1.0",
        "FAIL  tun                 /dev/net/tun is mode 0600",
        "                          fix: chmod 0666 /dev/net/tun",
        "warn  unprivileged-ports  ports below 1024",
        "                          fix: sysctl -w x=0",
        "",
        "1 problem(s) stop a default `kobako run` here (FAIL above); "
        "1 warning(s) concern some features only."]
    assert cli_system.render_check(RESULTS[:1]).endswith("\nkobako can run here.\n")


def test_exit_status_is_1_on_a_failure_and_0_on_warnings(monkeypatch, capsys):
    monkeypatch.setattr(hc, "run_checks", lambda h=None, area=None: list(RESULTS))
    assert cli_system.check(None, Args()) == 1
    assert cli_system.check(None, Args("json")) == 1
    out = capsys.readouterr().out
    doc = json.loads(out[out.index("["):])
    assert doc[1] == {"name": "tun", "status": "FAIL", "detail": "/dev/net/tun is mode 0600",
                      "fix": "chmod 0666 /dev/net/tun"}
    monkeypatch.setattr(hc, "run_checks", lambda h=None, area=None: [RESULTS[0], RESULTS[2]])
    assert cli_system.check(None, Args()) == 0
    with pytest.raises(InvalidArgument):
        cli_system.check(None, Args("yaml"))


def test_system_check_makes_no_data_root(tmp_path, monkeypatch, capsys):
    from kobako.cli.main import main
    monkeypatch.setenv("KOBAKO_ROOT", str(tmp_path / "data"))
    monkeypatch.setenv("KOBAKO_RUN", str(tmp_path / "run"))
    monkeypatch.setattr(hc, "run_checks", lambda h=None, area=None: [RESULTS[0]])
    assert main(["system", "check"]) == 0
    assert "kobako can run here." in capsys.readouterr().out
    assert not (tmp_path / "data").exists() and not (tmp_path / "run").exists()

