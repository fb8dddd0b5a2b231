"""Docker's CLI conventions on a real kernel: global flags before the command, and the
flags that change output (cp -L, inspect -s, stats -a, logs --details, system df -v)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from engine_support import Kobako

pytestmark = pytest.mark.root
IMG = "kbt/busybox:1"


@pytest.fixture(scope="module")
def k(session_base: Path, busybox_rootfs: Path) -> Kobako:
    kb = Kobako(session_base / "cliflags")
    kb("import", str(busybox_rootfs), IMG)
    yield kb
    kb.clean()


def test_global_root_and_runroot_override_the_environment(k: Kobako, tmp_path: Path):
    k("create", "--name", "in-env-root", IMG, "true")
    try:
        other = tmp_path / "other"
        cp = k("--root", str(other / "data"), f"--runroot={other}/run", "ps", "-a", "--format", "{{.Names}}")
        assert "in-env-root" not in cp.stdout
        assert (other / "data" / "containers").is_dir()  # the store was made where the flag said
        assert "in-env-root" in k("ps", "-a", "--format", "{{.Names}}").stdout
        bad = k("--bogus", "ps", check=False)
        assert bad.returncode == 125 and "unknown flag: --bogus" in bad.stderr
    finally:
        k("rm", "-f", "in-env-root")


def test_cp_follow_link(k: Kobako, tmp_path: Path):
    k("create", "--name", "cpl", IMG, "true")
    try:
        (tmp_path / "target.txt").write_text("through-the-link\n")
        os.symlink("target.txt", tmp_path / "link")
        k("cp", str(tmp_path / "target.txt"), "cpl:/tmp/")
        k("cp", str(tmp_path / "link"), "cpl:/tmp/")  # the link itself
        k("cp", "-L", str(tmp_path / "link"), "cpl:/tmp/followed")  # the file it points to
        out = tmp_path / "out"
        out.mkdir()
        k("cp", "cpl:/tmp/link", str(out))
        assert os.readlink(out / "link") == "target.txt"
        k("cp", "-L", "cpl:/tmp/link", str(out / "copied"))
        assert not (out / "copied").is_symlink() and (out / "copied").read_text() == "through-the-link\n"
        k("cp", "--follow-link", "cpl:/tmp/followed", str(out / "f2"))
        assert (out / "f2").read_text() == "through-the-link\n"
        os.symlink("/nowhere", tmp_path / "dangling")
        cp = k("cp", "-L", str(tmp_path / "dangling"), "cpl:/tmp/", check=False)
        assert cp.returncode == 125 and "dangling" in cp.stderr
    finally:
        k("rm", "-f", "cpl")


def test_inspect_size(k: Kobako):
    k("run", "--name", "sized", IMG, "sh", "-c", "head -c 100000 /dev/zero > /big")
    try:
        plain = json.loads(k("inspect", "sized").stdout)[0]
        assert plain.get("SizeRw") is None
        doc = json.loads(k("inspect", "-s", "sized").stdout)[0]
        assert doc["SizeRw"] >= 100000
        assert doc["SizeRootFs"] > doc["SizeRw"]  # plus the image's layers
    finally:
        k("rm", "-f", "sized")


def test_stats_all_shows_stopped_containers_with_zeros(k: Kobako):
    k("create", "--name", "stopped1", IMG, "true")
    try:
        names = "{{.Name}} {{.MemUsage}} {{.PIDs}}"
        assert "stopped1" not in k("stats", "--no-stream", "--format", names).stdout
        lines = k("stats", "-a", "--no-stream", "--format", names).stdout.splitlines()
        assert "stopped1 0B / 0B 0" in lines
    finally:
        k("rm", "-f", "stopped1")


def test_logs_details_prefix(k: Kobako):
    k("run", "--name", "dl", IMG, "echo", "hello")
    try:
        assert k("logs", "dl").stdout == "hello\n"
        assert k("logs", "--details", "dl").stdout == " hello\n"
    finally:
        k("rm", "-f", "dl")


def test_system_df_verbose(k: Kobako):
    k("volume", "create", "dfvol")
    k("create", "--name", "dfc", "-v", "dfvol:/data", IMG, "true")
    try:
        out = k("system", "df", "-v").stdout
        for section in ("Images space usage:", "Containers space usage:", "Local Volumes space usage:",
                        "Build cache usage:"):
            assert section in out
        assert "SHARED SIZE" in out and "UNIQUE SIZE" in out
        vol = next(ln for ln in out.splitlines() if ln.startswith("dfvol "))
        assert vol.split()[1] == "1"  # one container links it
        assert any(ln.split()[-1] == "dfc" for ln in out.splitlines() if ln.strip())
        assert "RECLAIMABLE" in k("system", "df").stdout and "RECLAIMABLE" not in out
    finally:
        k("rm", "-f", "dfc")
        k("volume", "rm", "dfvol")


def test_cp_archive_gives_the_containers_user_and_rmi_no_prune_keeps_parents(k: Kobako, tmp_path: Path):
    """cp as dockerd: going in, files keep their owners, or with -a belong to the container's
    user; coming out they are ours. rmi removes the untagged commit base unless --no-prune;
    network rm -f ignores a missing network."""
    k("create", "--name", "cpa", "-u", "4321:8765", IMG, "true")
    try:
        f = tmp_path / "owned"
        f.write_text("x\n")
        os.chown(f, 1234, 5678)
        k("cp", str(f), "cpa:/tmp/plain")
        k("cp", "-a", str(f), "cpa:/tmp/archived")
        out = tmp_path / "out"
        out.mkdir()
        tar = k("cp", "cpa:/tmp", "-", text=False).stdout
        listing = subprocess.run(["tar", "-tvnf", "-"], input=tar, capture_output=True,
                                 check=True).stdout.decode()
        assert "1234/5678" in next(ln for ln in listing.splitlines() if ln.endswith("tmp/plain"))
        assert "4321/8765" in next(ln for ln in listing.splitlines() if ln.endswith("tmp/archived"))
        k("cp", "-a", "cpa:/tmp/archived", str(out / "archived"))
        k("cp", "cpa:/tmp/plain", str(out / "plain"))
        assert os.stat(out / "archived").st_uid == 0 and os.stat(out / "plain").st_uid == 0  # ours
        base = k("commit", "--pause=false", "cpa", "kbt/cpa-base:1").stdout.strip()
        k("rm", "-f", "cpa")
        k("create", "--name", "cpa", "kbt/cpa-base:1", "true")
        k("commit", "cpa", "kbt/cpa-child:1")
        k("rm", "-f", "cpa")
        k("rmi", "kbt/cpa-base:1")  # untagged now, and the child's parent: kept, hidden
        assert base[7:19] not in k("images", "-q").stdout and base[7:19] in k("images", "-a", "-q").stdout
        kept = k("rmi", "--no-prune", "kbt/cpa-child:1").stdout
        assert base not in kept and base[7:19] in k("images", "-a", "-q").stdout
        k("rmi", base)
    finally:
        k("rm", "-f", "cpa", check=False)
    assert k("network", "rm", "-f", "kbt-no-such-net").returncode == 0
    assert k("network", "rm", "kbt-no-such-net", check=False).returncode != 0


def test_domainname_sets_the_uts_namespaces_nis_domain(k: Kobako):
    out = k("run", "--rm", "--network", "none", "--domainname", "corp.example", "-h", "web", IMG,
            "cat", "/proc/sys/kernel/hostname", "/proc/sys/kernel/domainname").stdout
    assert out.split() == ["web", "corp.example"]
    bad = k("run", "--rm", "--uts", "host", "--domainname", "x", IMG, "true", check=False)
    assert bad.returncode == 125 and "UTS mode" in bad.stderr
