"""scripts/install.sh as a user runs it: from a clone, into a private prefix (never the
machine's /opt/kobako), and the install keeps working once the clone is deleted: launchers
that name only the venv, man pages, completion; --uninstall --purge leaves nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.root
REPO = Path(__file__).resolve().parents[2]
# pip could not reach an index for the build tools or the dependencies: not this test's business
OFFLINE = ("Could not find a version", "No matching distribution", "NewConnectionError",
           "Network is unreachable")


def test_install_survives_deleting_its_clone_and_uninstall_removes_it(tmp_path: Path):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    t = tmp_path
    clone = t / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    env = {**os.environ, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "KOBAKO_PREFIX": str(t / "opt"),
           "KOBAKO_BIN": str(t / "bin"), "KOBAKO_SHARE": str(t / "share"), "KOBAKO_UNITS": str(t / "units"),
           "KOBAKO_BUNDLE": str(t / "lib/bundles/busybox"), "KOBAKO_ROOT": str(t / "lib"),
           "KOBAKO_RUN": str(t / "run")}
    p = subprocess.run([str(clone / "scripts/install.sh")], cwd=clone, env=env, capture_output=True,
                       text=True)
    if p.returncode and any(w in p.stderr for w in OFFLINE):
        pytest.skip(f"install.sh needs a package index: {p.stderr.strip().splitlines()[-1]}")
    assert p.returncode == 0, p.stderr[-3000:]
    shutil.rmtree(clone)

    kobako = t / "bin/kobako"
    launcher = kobako.read_text()
    assert str(clone) not in launcher and launcher.startswith(f"#!{t}/opt/venv/bin/python3 -IS\n")
    v = subprocess.run([str(kobako), "version"], env=env, capture_output=True, text=True)
    assert v.returncode == 0 and "Version:" in v.stdout, v.stderr
    site = next((t / "opt/venv/lib").glob("python3*/site-packages"))
    assert not list(site.glob("__editable__*")) and (site / "kobako/cli/main.py").exists()
    assert not (site / "pytest").exists()  # the test tools live in the tests' own venv
    imgs = subprocess.run([str(kobako), "images", "--format", "{{.Repository}}"], env=env,
                          capture_output=True, text=True)
    assert "localhost/busybox" in imgs.stdout, imgs.stderr

    man = t / "share/man"
    for page in ("kobako", "kobako-run", "kobako-network-create", "kobako-image-ls"):
        w = subprocess.run(["man", "-M", str(man), "-w", page], capture_output=True, text=True)
        assert w.returncode == 0, page
    assert "--network" in (t / "share/bash-completion/completions/kobako").read_text()
    assert (t / "share/zsh/site-functions/_kobako").exists()
    assert (t / "share/fish/vendor_completions.d/kobako.fish").exists()
    assert f"ExecStart={kobako} system service" in (t / "units/kobako.service").read_text()

    u = subprocess.run([str(REPO / "scripts/install.sh"), "--uninstall", "--purge"], env=env,
                       capture_output=True, text=True)
    assert u.returncode == 0, u.stderr
    left = [str(f.relative_to(t)) for f in t.rglob("*") if not f.is_dir()]
    assert left == [], left
    assert not (t / "opt").exists() and not (t / "lib").exists()
