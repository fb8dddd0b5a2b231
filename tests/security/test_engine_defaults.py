"""The engine's safe defaults on a real kernel: Docker's capability set, a default-deny
seccomp profile (compiled once, then loaded from a root-only cache that a tampered file
cannot poison), masked /proc paths; and the switches that relax them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from engine_support import Kobako, assert_user_error

pytestmark = pytest.mark.root
IMG = "kbt/busybox:1"


@pytest.fixture(scope="module")
def k(session_base: Path, busybox_rootfs: Path) -> Kobako:
    kb = Kobako(session_base / "engine-defaults")
    kb("import", str(busybox_rootfs), IMG)
    return kb


def _cache(k: Kobako) -> Path:
    return k.root / "run" / "runtime" / ".seccomp"


def test_default_seccomp_denies_namespaces_and_mounts(k: Kobako):
    out = k("run", "--rm", IMG, "sh", "-c",
            "unshare -n true 2>/dev/null; echo u=$?; mount -t tmpfs x /mnt 2>/dev/null; echo m=$?; "
            "grep Seccomp: /proc/self/status").stdout
    assert "u=1" in out and "m=1" in out and "Seccomp:\t2" in out


def test_the_compiled_filter_is_cached_root_only_and_still_enforced(k: Kobako):
    k("run", "--rm", IMG, "true")
    files = list(_cache(k).glob("*.bpf"))
    assert len(files) == 1
    st = files[0].stat()
    assert st.st_uid == 0 and st.st_mode & 0o077 == 0 and st.st_size % 8 == 0
    assert oct(_cache(k).stat().st_mode & 0o777) == "0o700"
    out = k("run", "--rm", IMG, "sh", "-c", "unshare -n true 2>/dev/null; echo u=$?").stdout
    assert "u=1" in out  # loaded from the cache, same verdict


@pytest.mark.parametrize("spoil", ["allow-all", "world-writable", "truncated"])
def test_a_tampered_cache_is_not_trusted(k: Kobako, spoil):
    k("run", "--rm", IMG, "true")
    f = next(_cache(k).glob("*.bpf"))
    if spoil == "allow-all":  # a valid 1-instruction program: RET ALLOW, written by someone else
        f.write_bytes(bytes.fromhex("0600000000000000") [:4] + b"\0\0\xff\x7f")
        os.chown(f, 65534, 65534)
    elif spoil == "world-writable":
        f.write_bytes(bytes.fromhex("06000000" "0000ff7f"))
        f.chmod(0o666)
    else:
        f.write_bytes(f.read_bytes()[:-3])
    out = k("run", "--rm", IMG, "sh", "-c", "unshare -n true 2>/dev/null; echo u=$?").stdout
    assert "u=1" in out
    f.unlink(missing_ok=True)


def test_unconfined_privileged_and_cap_add(k: Kobako):
    out = k("run", "--rm", "--security-opt", "seccomp=unconfined", IMG, "grep", "Seccomp:",
            "/proc/self/status").stdout
    assert "Seccomp:\t0" in out
    out = k("run", "--rm", "--privileged", IMG, "sh", "-c",
            "grep -E 'Seccomp:|CapEff' /proc/self/status; ls /dev | wc -l").stdout
    assert "Seccomp:\t0" in out and int(out.split()[-1]) > 20
    out = k("run", "--rm", "--cap-drop", "ALL", IMG, "grep", "CapEff", "/proc/self/status").stdout
    assert out.split()[-1] == "0000000000000000"
    out = k("run", "--rm", IMG, "grep", "CapEff", "/proc/self/status").stdout
    assert int(out.split()[-1], 16) == 0xa80425fb  # Docker's 14 default capabilities


def test_masked_paths_and_etc_files(k: Kobako):
    out = k("run", "--rm", "--hostname", "box1", IMG, "sh", "-c",
            "cat /proc/keys 2>&1 | wc -c; cat /etc/hostname; grep box1 /etc/hosts").stdout.split()
    assert out[0] == "0" and out[1] == "box1" and "box1" in out


def test_bad_security_flags_are_one_line(k: Kobako):
    assert_user_error(k("run", "--rm", "--cap-add", "NOPE", IMG, "true", check=False), "unknown capability")
    assert_user_error(k("run", "--rm", "--security-opt", "seccomp=/nonexistent.json", IMG, "true",
                        check=False), "no such profile")
    assert_user_error(k("run", "--rm", "--security-opt", "bogus", IMG, "true", check=False), "security-opt")
    assert_user_error(k("run", "--rm", "--pid", "container:x", IMG, "true", check=False), "no such container")
    assert_user_error(k("run", "--rm", "--uts", "container:x", IMG, "true", check=False), "UTS mode")
