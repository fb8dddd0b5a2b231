"""Images of another CPU architecture on a real kernel: Debian's arm64 busybox-static as an
image, run through qemu-user-static's binfmt handler (registered by the engine when none is).
Handlers are host state kobako leaves registered, as systemd-binfmt does: these tests never
remove one."""

from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from engine_support import Kobako, assert_user_error

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.uname().machine != "x86_64", reason="written for an x86-64 host")]
IMG = "kbt/arm64:1"
CACHE = Path("/var/tmp/kobako-test-arm64")  # the downloaded busybox, kept between sessions


def arm64_busybox() -> Path:
    """Debian's arm64 busybox-static binary, fetched once with a private apt state (the host's
    dpkg architectures stay as they are)."""
    bb = CACHE / "busybox"
    if bb.exists():
        return bb
    shutil.rmtree(CACHE, ignore_errors=True)
    for d in ("lists/partial", "cache/archives/partial", "x"):
        (CACHE / d).mkdir(parents=True)
    opts = ["-o", f"Dir::State::Lists={CACHE}/lists", "-o", f"Dir::Cache={CACHE}/cache",
            "-o", "APT::Architectures=arm64"]
    for args in (["update"], ["download", "busybox-static:arm64"]):
        if subprocess.run(["apt-get", "-qq", *opts, *args], cwd=CACHE, capture_output=True).returncode:
            pytest.skip(f"apt-get {args[0]} for arm64 failed (no Debian mirror?)")
    deb = glob.glob(str(CACHE / "busybox-static_*_arm64.deb"))[0]
    subprocess.run(["dpkg-deb", "-x", deb, str(CACHE / "x")], check=True)
    shutil.copy2(CACHE / "x" / "bin" / "busybox", bb)
    return bb


def docker_archive(rootfs: Path, arch: str, tag: str) -> bytes:
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as t:
        t.add(str(rootfs), arcname=".")
    data = layer.getvalue()
    diff = "sha256:" + hashlib.sha256(data).hexdigest()
    cfg = json.dumps({"architecture": arch, "os": "linux", "config": {"Cmd": ["/bin/sh"]},
                      "rootfs": {"type": "layers", "diff_ids": [diff]}}).encode()
    cid = hashlib.sha256(cfg).hexdigest()
    man = json.dumps([{"Config": cid + ".json", "RepoTags": [tag], "Layers": ["layer.tar"]}]).encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as t:
        for name, blob in (("layer.tar", data), (cid + ".json", cfg), ("manifest.json", man)):
            i = tarfile.TarInfo(name)
            i.size = len(blob)
            t.addfile(i, io.BytesIO(blob))
    return out.getvalue()


@pytest.fixture(scope="module")
def k(session_base: Path) -> Kobako:
    if not os.path.exists("/usr/lib/binfmt.d/qemu-aarch64.conf"):
        pytest.skip("qemu-user-static is not installed (apt-get install qemu-user-static)")
    root = session_base / "arm64-rootfs"
    (root / "bin").mkdir(parents=True)
    shutil.copy2(arm64_busybox(), root / "bin" / "busybox")
    for a in ("sh", "uname", "echo", "cat", "true"):
        (root / "bin" / a).symlink_to("busybox")
    kb = Kobako(session_base / "engine-arm64")
    kb("load", input=docker_archive(root, "arm64", IMG), text=False)
    yield kb
    kb.clean()


def run(k: Kobako, *args: str, check: bool = True):
    return k("run", "--rm", "--network", "none", *args, check=check)


def test_loaded_image_keeps_its_architecture(k: Kobako):
    assert k("image", "inspect", "-f", "{{.Architecture}} {{.Os}}", IMG).stdout.strip() == "arm64 linux"


def test_runs_through_qemu_with_platform(k: Kobako):
    for plat in ("linux/arm64", "linux/aarch64", "linux/arm64/v8"):
        cp = run(k, "--platform", plat, IMG, "uname", "-m")
        assert cp.stdout == "aarch64\n" and "WARNING" not in cp.stderr, plat
    # the handler the kernel uses has F: its interpreter was opened on the host
    entries = [p for p in glob.glob("/proc/sys/fs/binfmt_misc/*") if not p.endswith(("/register", "/status"))
               if "magic 7f454c460201010000000000000000000200b700" in Path(p).read_text(errors="replace")]
    assert entries and "F" in Path(entries[0]).read_text().split("flags:")[1].split("\n")[0]


def test_runs_without_platform_with_dockers_warning(k: Kobako):
    cp = run(k, IMG, "uname", "-m")
    assert cp.stdout == "aarch64\n"
    assert cp.stderr.startswith("WARNING: The requested image's platform (linux/arm64) does not match the "
                                "detected host platform (linux/amd64) and no specific platform was requested")


def test_create_then_start_of_a_foreign_container(k: Kobako):
    cid = k("create", "--network", "none", IMG, "echo", "from-arm64").stdout.strip()
    try:
        rec = json.loads((k.data / "containers" / cid / "container.json").read_text())
        assert rec["emulated"] == "arm64"
        k("start", cid)
        assert k("wait", cid).stdout.strip() == "0"
        assert k("logs", cid).stdout == "from-arm64\n"
    finally:
        k("rm", "-f", cid)


@pytest.mark.parametrize("plat,words", [
    ("linux/s390x", ("image with reference kbt/arm64:1 was found but its platform (linux/arm64) does not "
                     "match the specified platform (linux/s390x)",)),
    ("linux/arm/v7", ("linux/arm/v7",)),
    ("linux/bogus", ("invalid platform", "linux/bogus")),
    ("linux", ("linux/amd64", "does not match")),
    ("arm64/", ("invalid platform",)),
])
def test_bad_platform_is_one_message_and_leaves_nothing(k: Kobako, plat: str, words: tuple[str, ...]):
    before = k("ps", "-aq").stdout
    assert_user_error(run(k, "--platform", plat, IMG, "true", check=False), *words)
    assert_user_error(k("create", "--platform", plat, IMG, "true", check=False), *words)
    assert k("ps", "-aq").stdout == before == ""


def test_a_native_image_runs_without_a_warning(k: Kobako, busybox_rootfs: Path):
    k("load", input=docker_archive(busybox_rootfs, "amd64", "kbt/amd64:1"), text=False)
    cp = run(k, "--platform", "linux/x86_64", "kbt/amd64:1", "uname", "-m")
    assert cp.stdout == "x86_64\n" and cp.stderr == ""
    assert run(k, "kbt/amd64:1", "true").stderr == ""
