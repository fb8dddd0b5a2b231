"""`--userns` / `--uidmap`: the container's root is an unprivileged host uid, image layers
and named volumes are seen through idmapped mounts (stored unshifted on disk), and every
way in (exec, cp, commit, restart, container:NAME) keeps to the container's ids."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from engine_support import Kobako, assert_user_error

pytestmark = pytest.mark.root
IMG = "kbt/busybox:1"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def k(session_base: Path, busybox_rootfs: Path) -> Kobako:
    kb = Kobako(session_base / "userns")
    kb("import", str(busybox_rootfs), IMG)
    yield kb
    for cid in kb("ps", "-aq", check=False).stdout.split():
        kb("rm", "-f", cid, check=False)
    for v in kb("volume", "ls", "-q", check=False).stdout.split():
        kb("volume", "rm", "-f", v, check=False)


def _inspect(k: Kobako, name: str) -> dict:
    return json.loads(k("inspect", name).stdout)[0]


def _host_ids(pid: int) -> tuple[int, int]:
    st = {ln.split(":")[0]: ln.split()[1:] for ln in open(f"/proc/{pid}/status")}
    return int(st["Uid"][0]), int(st["Gid"][0])


def _upper(k: Kobako, name: str) -> Path:
    return Path(_inspect(k, name)["GraphDriver"]["Data"]["UpperDir"])


def test_root_inside_is_an_unprivileged_uid_outside(k: Kobako):
    k("run", "-d", "--name", "u-basic", "--userns", "auto", IMG, "sleep", "60")
    try:
        doc = _inspect(k, "u-basic")
        assert doc["HostConfig"]["UsernsMode"] == "auto"
        start = int(doc["HostConfig"]["IDMappings"]["UidMap"][0].split(":")[1])
        assert start > 65535
        assert _host_ids(doc["State"]["Pid"]) == (start, start)
        out = k("exec", "u-basic", "sh", "-c", "id -u; id -g; cat /proc/self/uid_map").stdout.split()
        assert out[:2] == ["0", "0"]
        assert out[2:5] == ["0", str(start), "65536"]
        # the image's root-owned files are the container root's own
        assert k("exec", "u-basic", "stat", "-c", "%u:%g", "/bin").stdout.strip() == "0:0"
    finally:
        k("rm", "-f", "u-basic")


def test_writes_are_stored_with_the_containers_ids_and_commit_keeps_them(k: Kobako):
    k("run", "-d", "--name", "u-write", "--userns", "auto", IMG, "sh", "-c",
      "mkdir -p /home/app && touch /home/app/f && chown -R 1000:1000 /home/app && touch /rootfile; sleep 60")
    try:
        upper = _upper(k, "u-write")
        deadline = time.monotonic() + 10
        while not (upper / "rootfile").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        st = os.stat(upper / "home/app/f")
        assert (st.st_uid, st.st_gid) == (1000, 1000), "stored unshifted, as without --userns"
        st = os.stat(upper / "rootfile")
        assert (st.st_uid, st.st_gid) == (0, 0)
        k("cp", str(REPO / "README.md"), "u-write:/home/app/readme")
        st = os.stat(upper / "home/app/readme")
        assert st.st_uid == 0, "cp writes as the container's root, not the host's"
        assert "0" == k("exec", "u-write", "stat", "-c", "%u", "/home/app/readme").stdout.strip()
        k("commit", "u-write", "kbt/userns-commit:1")
        # the committed layer has the container's ids: a plain container sees 1000, not a host id
        out = k("run", "--rm", "--network", "none", "kbt/userns-commit:1", "stat", "-c", "%u:%g",
                "/home/app/f").stdout.strip()
        assert out == "1000:1000"
        diff = k("diff", "u-write").stdout.split("\n")
        assert "A /home/app/f" in diff
    finally:
        k("rm", "-f", "u-write")
        k("rmi", "kbt/userns-commit:1", check=False)


def test_concurrent_auto_containers_get_disjoint_ranges(k: Kobako):
    names = [f"u-par{i}" for i in range(6)]

    def run(n: str) -> None:
        k("run", "-d", "--name", n, "--userns", "auto", "--network", "none", IMG, "sleep", "60")

    try:
        with ThreadPoolExecutor(6) as ex:
            list(ex.map(run, names))
        spans = []
        for n in names:
            for key in ("UidMap", "GidMap"):
                _, host, size = map(int, _inspect(k, n)["HostConfig"]["IDMappings"][key][0].split(":"))
                spans.append((key, host, host + size))
        for key in ("UidMap", "GidMap"):
            s = sorted((a, b) for kk, a, b in spans if kk == key)
            assert len(s) == len(names)
            assert all(s[i][1] <= s[i + 1][0] for i in range(len(s) - 1)), f"overlapping {key}: {s}"
    finally:
        k("rm", "-f", *names, check=False)


def test_host_files_stay_out_of_reach_unless_idmap_is_asked(k: Kobako, tmp_path: Path):
    host = tmp_path / "h"
    host.mkdir()
    host.chmod(0o755)
    (host / "secret").write_text("s")
    (host / "secret").chmod(0o600)
    cp = k("run", "--rm", "--userns", "auto", "--network", "none", "-v", f"{host}:/h", IMG, "sh", "-c",
           "stat -c %u /h; cat /h/secret; echo rc=$?; touch /h/new; echo rc=$?", check=False)
    lines = cp.stdout.split()
    assert lines[0] == "65534", "the host's root is nobody to the container"
    assert "rc=1" in lines and "s" not in lines, cp.stdout + cp.stderr
    assert not (host / "new").exists()
    # :idmap shows the host's root as the container's root: it may write, the file is root's on disk
    cp = k("run", "--rm", "--userns", "auto", "--network", "none", "-v", f"{host}:/h:idmap", IMG, "sh", "-c",
           "stat -c %u /h; cat /h/secret; touch /h/new")
    assert cp.stdout.split() == ["0", "s"]
    assert os.stat(host / "new").st_uid == 0


def test_a_named_volume_is_shared_by_containers_with_different_ranges(k: Kobako):
    k("run", "--rm", "--userns", "auto", "--network", "none", "-v", "u-vol:/data", IMG, "sh", "-c",
      "echo one > /data/f && chown 123:45 /data/f")
    mp = Path(json.loads(k("volume", "inspect", "u-vol").stdout)[0]["Mountpoint"])
    st = os.stat(mp / "f")
    assert (st.st_uid, st.st_gid) == (123, 45), "a volume is stored with the container's ids"
    k("run", "-d", "--name", "u-vol-a", "--userns", "auto", "--network", "none", IMG, "sleep", "60")
    try:  # a second range is taken while u-vol-a holds the first
        out = k("run", "--rm", "--userns", "auto", "--network", "none", "-v", "u-vol:/data", IMG, "sh", "-c",
                "stat -c %u:%g /data/f; echo two >> /data/f && cat /data/f").stdout.split()
        assert out == ["123:45", "one", "two"]
        out = k("run", "--rm", "--network", "none", "-v", "u-vol:/data", IMG, "stat", "-c", "%u:%g",
                "/data/f").stdout.strip()
        assert out == "123:45", "and a container without --userns sees the same ids"
    finally:
        k("rm", "-f", "u-vol-a")
        k("volume", "rm", "u-vol")


def test_container_mode_joins_the_same_user_namespace_and_restart_maps_again(k: Kobako):
    k("run", "-d", "--name", "u-owner", "--userns", "private", IMG, "sleep", "60")
    try:
        own = k("exec", "u-owner", "readlink", "/proc/1/ns/user").stdout.strip()
        out = k("run", "--rm", "--userns", "container:u-owner", IMG, "sh", "-c",
                "readlink /proc/self/ns/user; id -u; touch /x").stdout.split()
        assert out == [own, "0"]
        assert _inspect(k, "u-owner")["HostConfig"]["IDMappings"]["UidMap"]
        k("stop", "-t", "0", "u-owner")
        k("start", "u-owner")
        out = k("exec", "u-owner", "sh", "-c", "id -u; touch /after-restart && echo ok").stdout.split()
        assert out == ["0", "ok"]
    finally:
        k("rm", "-f", "u-owner")


def test_explicit_uidmap_and_gidmap(k: Kobako):
    out = k("run", "--rm", "--network", "none", "--uidmap", "0:3000000:2000", "--gidmap", "0:3100000:2000",
            IMG, "sh", "-c", "cat /proc/self/uid_map /proc/self/gid_map").stdout.split()
    assert out == ["0", "3000000", "2000", "0", "3100000", "2000"]


def test_privileged_in_a_user_namespace_is_not_the_hosts_root(k: Kobako):
    cp = k("run", "--rm", "--userns", "auto", "--privileged", "--network", "none", IMG, "sh", "-c",
           "mknod /tmp/null c 1 3; echo mknod=$?; echo 1 > /proc/sys/vm/drop_caches; echo sysctl=$?; "
           "mkdir -p /m && mount -t tmpfs t /m && echo mounted", check=False)
    assert "mknod=1" in cp.stdout and "sysctl=1" in cp.stdout, cp.stdout + cp.stderr
    assert "mounted" in cp.stdout, "its own mount namespace is its to change"
    # ... but not a read-only volume the host's root mounted for it: the flag is locked
    cp = k("run", "--rm", "--userns", "auto", "--privileged", "--network", "none", "-v", "u-lock:/d:ro", IMG,
           "sh", "-c", "mount -o remount,rw /d; echo remount=$?; touch /d/x; echo touch=$?", check=False)
    k("volume", "rm", "u-lock")
    assert "remount=1" in cp.stdout and "touch=1" in cp.stdout, cp.stdout + cp.stderr


def test_host_network_keeps_the_hostname_and_sysfs(k: Kobako):
    out = k("run", "--rm", "--userns", "auto", "--network", "host", IMG, "sh", "-c",
            "hostname; id -u; ls /sys/class/net | grep -c lo").stdout.split()
    assert out == [os.uname().nodename, "0", "1"]


@pytest.mark.parametrize("argv,words", [
    (["--userns", "bogus"], ["--userns", "auto"]),
    (["--userns", "auto:size=0"], ["size"]),
    (["--userns", "auto:fast=1"], ["size"]),
    (["--uidmap", "0:100000"], ["--uidmap", "CONTAINER-ID:HOST-ID:SIZE"]),
    (["--uidmap", "1:100000:10"], ["id 0"]),
    (["--uidmap", "0:100000:10", "--gidmap", "5:100000:10"], ["--gidmap", "id 0"]),
    (["--uidmap", "0:100000:100", "--uidmap", "50:300000:10"], ["overlap"]),
    (["--uidmap", "0:100000:10", "--userns", "host"], ["--uidmap"]),
    (["--userns", "auto", "--pid", "host"], ["--pid host"]),
    (["--userns", "container:nosuch"], ["nosuch"]),
    (["--userns", "auto", "-v", "/tmp:/t:idmapp"], ["idmapp"]),
])
def test_bad_userns_input_is_one_error_and_leaves_nothing(k: Kobako, argv: list[str], words: list[str]):
    before = set(k("ps", "-aq").stdout.split())
    cp = k("run", "--rm", *argv, IMG, "true", check=False)
    assert_user_error(cp, *words)
    assert set(k("ps", "-aq").stdout.split()) == before


def test_container_mode_needs_a_user_namespace_of_its_own(k: Kobako):
    k("run", "-d", "--name", "u-plain", "--network", "none", IMG, "sleep", "60")
    try:
        cp = k("run", "--rm", "--userns", "container:u-plain", IMG, "true", check=False)
        assert_user_error(cp, "no user namespace")
        cp = k("run", "--rm", "--userns", "auto", "--pid", "container:u-plain", IMG, "true", check=False)
        assert_user_error(cp, "--userns container:NAME")
    finally:
        k("rm", "-f", "u-plain")


@pytest.mark.parametrize("point", ["engine:bundle", "userns:idmapped"])
def test_kill_9_while_mapping_then_rm_leaves_nothing(k: Kobako, point: str):
    name = f"u-crash-{point.replace(':', '-')}"
    p = subprocess.run([sys.executable, "-m", "kobako.cli.main", "run", "--name", name, "--userns", "auto",
                        "-v", "u-crash-vol:/v", IMG, "sleep", "30"], env={**k.env, "KOBAKO_FAULT": point},
                       cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
    assert p.returncode == -9, f"the fault at {point} did not fire: {p.returncode}"
    cid = k("inspect", "--format", "{{.Id}}", name).stdout.strip()
    k("rm", "-f", name)
    k("volume", "rm", "u-crash-vol")
    assert not (k.data / "containers" / cid).exists()
    assert not (k.root / "run" / "runtime" / cid).exists()
    mounts = [ln for ln in open("/proc/self/mountinfo") if cid[:12] in ln or "idmap" in ln]
    assert mounts == []
    # the range is free again: the next container gets the lowest one
    k("run", "-d", "--name", "u-after", "--userns", "auto", "--network", "none", IMG, "sleep", "30")
    try:
        from kobako.engine.userns import subid_ranges
        lowest = subid_ranges("/etc/subuid")[0][0]
        assert _inspect(k, "u-after")["HostConfig"]["IDMappings"]["UidMap"][0].split(":")[1] == str(lowest)
    finally:
        k("rm", "-f", "u-after")
