"""`kobako system check` on the real host, as root and as a plain user (runuser), each
answer checked against what the test reads from the host itself; and the hint a failed
`kobako run` gets from the same checks, in a network namespace of the test's own where a
route covers the default network's subnet."""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from engine_support import Kobako, assert_user_error

pytestmark = pytest.mark.root
IMG = "kbt/busybox:1"
REPO = Path(__file__).resolve().parents[2]
LINE = re.compile(r"^(ok|warn|FAIL) +([a-z0-9-]+) +(.+)$")
ROOT_CHECKS = ["kernel", "userns", "overlay", "idmapped-mounts", "time-namespace", "cgroups", "bpf-devices",
               "seccomp", "nftables", "nft", "default-subnet"]
USER_CHECKS = ["kernel", "userns", "newuidmap", "newgidmap", "subuid", "subgid", "overlay-userns",
               "fuse-overlayfs", "fuse", "idmapped-mounts", "time-namespace", "cgroups", "cgroup-delegation",
               "seccomp", "nftables", "nft", "tun", "rootless-network", "unprivileged-ports"]
PLAIN_USER = "kbrootless"  # a user with a subuid range, as useradd makes one (skipped where there is none)


def parse(text: str) -> dict[str, tuple[str, str, str]]:
    """name -> (status, detail, fix) from the text output."""
    out: dict[str, tuple[str, str, str]] = {}
    last = None
    for line in text.splitlines():
        m = LINE.match(line)
        if m:
            last = m.group(2)
            out[last] = (m.group(1), m.group(3), "")
        elif line.strip().startswith("fix: ") and last:
            s, d, _ = out[last]
            out[last] = (s, d, line.strip()[5:])
    return out


def check_both(run) -> tuple[dict, list[dict], int]:
    text = run("system", "check")
    js = run("system", "check", "--format", "json")
    assert text.returncode == js.returncode, (text.stdout, js.stdout)
    assert "Traceback" not in text.stderr + js.stderr
    doc = json.loads(js.stdout)
    rows = parse(text.stdout)
    assert [d["name"] for d in doc] == list(rows)
    for d in doc:  # the two formats say the same
        assert (d["status"], d["detail"], d["fix"]) == rows[d["name"]]
        assert (d["status"] == "ok") == (d["fix"] == ""), d
    failed = any(d["status"] == "FAIL" for d in doc)
    assert text.returncode == (1 if failed else 0)
    return rows, doc, text.returncode


def test_as_root_every_check_matches_the_host(tmp_path: Path):
    k = Kobako(tmp_path / "k")
    rows, _, _ = check_both(lambda *a: k(*a, check=False))
    assert list(rows) == ROOT_CHECKS
    # kobako's own containers run here (the rest of the suite proves it): these must be ok
    for name in ("overlay", "seccomp", "nftables", "cgroups"):
        assert rows[name][0] == "ok", rows[name]
    assert rows["kernel"][1].startswith(f"Linux {os.uname().release} ")
    assert rows["time-namespace"][0] == ("ok" if os.path.exists("/proc/self/ns/time") else "warn")
    v1 = [ln for ln in Path("/proc/self/mountinfo").read_text().splitlines() if " - cgroup cgroup " in ln]
    assert rows["cgroups"][1].startswith("hybrid" if v1 else "pure cgroup v2")
    if any(ln.split()[4] == "/sys/fs/cgroup/devices" for ln in v1):
        assert rows["bpf-devices"] == ("ok", "not needed: device rules go to the v1 devices controller", "")
    assert rows["nft"][0] == ("ok" if shutil.which("nft") else "warn")
    # the private data root: its default network is made on first use, from the free pool
    assert rows["default-subnet"][0] == "ok"
    assert rows["default-subnet"][1].startswith("the default network will get ")
    # the check made no store, and its probes left nothing where they ran
    assert rows["overlay"][1] == f"overlay mounts work (one tried under {k.root})"
    assert not k.data.exists() and os.listdir(k.root) == []


def test_a_route_over_the_default_subnet_fails_the_check_and_gives_a_failed_run_its_fix(
        session_base: Path, busybox_rootfs: Path, tmp_path: Path):
    """In a network namespace of this test's: the default network is made (10.88.0.0/16: no
    route here yet), then a bridge of another engine takes 10.88.0.1/16 -- as podman's would."""
    k = Kobako(session_base / "syscheck")
    k("import", str(busybox_rootfs), IMG)
    try:
        cli = f"{sys.executable} -m kobako.cli.main"
        script = (f"set -e; ip link set lo up; {cli} network inspect bridge >/dev/null; "
                  "ip link add kbtchk0 type bridge; ip addr add 10.88.0.1/16 dev kbtchk0; "
                  "ip link set kbtchk0 up; "
                  f"{cli} system check --format json > {tmp_path}/check.json || echo $? > {tmp_path}/rc; "
                  f"{cli} run --rm {IMG} true")
        cp = subprocess.run(["unshare", "--net", "sh", "-c", script], env=k.env, cwd=REPO,
                            capture_output=True, text=True, timeout=120)
        doc = json.loads((tmp_path / "check.json").read_text())
        assert (tmp_path / "rc").read_text().strip() == "1"  # a default run cannot work here
        subnet = {d["name"]: d for d in doc}["default-subnet"]
        assert subnet["status"] == "FAIL"
        assert subnet["detail"].startswith(
            "the default network's subnet 10.88.0.0/16 overlaps the host's route 10.88.0.0/16")
        assert "ip route show 10.88.0.0/16" in subnet["fix"]
        line = assert_user_error(cp, "overlaps the host's route 10.88.0.0/16")
        assert f"fix: {subnet['fix']}" in line  # the run's error carries the check's fix
    finally:
        k.clean()
    assert k("ps", "-aq").stdout.strip() == ""


def _plain_user() -> pwd.struct_passwd:
    if not shutil.which("runuser"):
        pytest.skip("runuser is not installed")
    try:
        return pwd.getpwnam(PLAIN_USER)
    except KeyError:
        pytest.skip(f"no user {PLAIN_USER} on this host")


def _as_user(u: pwd.struct_passwd, root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": u.pw_dir, "KOBAKO_ROOT": str(root / "data"),
           "KOBAKO_RUN": str(root / "run"), "LANG": "C.UTF-8"}
    argv = ["runuser", "-u", u.pw_name, "--", "env", "-i", *[f"{k}={v}" for k, v in env.items()],
            sys.executable, "-m", "kobako.cli.main", *args]
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120)


def _user_can(u: pwd.struct_passwd, test: str, path: str) -> bool:
    return subprocess.run(["runuser", "-u", u.pw_name, "--", "test", test, path]).returncode == 0


def _ids(path: str, u: pwd.struct_passwd) -> int:
    total = 0
    for line in Path(path).read_text().splitlines():
        f = line.split(":")
        if len(f) == 3 and f[0] in (u.pw_name, str(u.pw_uid)) and f[1].isdigit() and f[2].isdigit():
            total += int(f[2])
    return total


def test_as_a_plain_user_every_check_matches_the_host(session_base: Path):
    u = _plain_user()
    root = session_base / "syscheck-user"
    root.mkdir(mode=0o755)
    os.chown(root, u.pw_uid, u.pw_gid)  # the user's own (empty) data root: probes make their dirs there
    try:
        rows, _, _ = check_both(lambda *a: _as_user(u, root, *a))
        assert list(rows) == USER_CHECKS
        tun = _user_can(u, "-r", "/dev/net/tun") and _user_can(u, "-w", "/dev/net/tun")
        assert rows["tun"][0] == ("ok" if tun else "FAIL"), rows["tun"]
        if not tun:
            assert rows["tun"][2].startswith("as root: chmod 0666 /dev/net/tun")
        for kind in ("subuid", "subgid"):
            assert rows[kind][0] == ("ok" if _ids(f"/etc/{kind}", u) >= 65536 else "FAIL"), rows[kind]
        for tool in ("newuidmap", "newgidmap"):
            p = shutil.which(tool)
            st = os.stat(p) if p else None
            setuid = bool(st and st.st_uid == 0 and st.st_mode & stat.S_ISUID)
            assert rows[tool][0] == ("ok" if setuid else "FAIL") or "file capabilities" in rows[tool][1]
        port = Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text().strip()
        assert rows["unprivileged-ports"][0] == ("ok" if port == "0" else "warn")
        net = shutil.which("slirp4netns")
        assert rows["rootless-network"][0] == ("ok" if net else "FAIL")
        v1 = " - cgroup cgroup " in Path("/proc/self/mountinfo").read_text()
        if v1:
            assert rows["cgroup-delegation"][0] == "warn" and "cgroup v1 cannot be delegated" in rows[
                "cgroup-delegation"][1]
        if rows["overlay-userns"][0] == "ok":  # tried where the user's store would be
            assert rows["overlay-userns"][1].endswith(f"(one tried under {root})")
        assert os.listdir(root) == []  # no store made, and the probe's directory is gone
    finally:
        shutil.rmtree(root, ignore_errors=True)
