"""Platforms (os/arch[/variant]) and QEMU's binfmt handlers: parsing, normalising, matching,
and the engine's registration decisions against a stand-in binfmt_misc directory."""

from __future__ import annotations

import sys

import pytest

from kobako import errors
from kobako.engine import emulation as em
from kobako.image import manifest as mf

DEBIAN_AARCH64 = (r":qemu-aarch64:M::\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00"
                  r"\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:"
                  "/usr/libexec/qemu-binfmt/aarch64-binfmt-P:OPF")
PROC_AARCH64 = """enabled
interpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P
flags: POF
offset 0
magic 7f454c460201010000000000000000000200b700
mask ffffffffffffff00fffffffffffffffffeffffff
"""


@pytest.mark.parametrize("text,want", [
    ("linux/arm64", {"os": "linux", "architecture": "arm64"}),
    ("linux/aarch64", {"os": "linux", "architecture": "arm64"}),
    ("linux/arm64/v8", {"os": "linux", "architecture": "arm64"}),
    ("linux/arm64/v9.0", {"os": "linux", "architecture": "arm64", "variant": "v9"}),
    ("linux/x86_64", {"os": "linux", "architecture": "amd64"}),
    ("Linux/AMD64", {"os": "linux", "architecture": "amd64"}),
    ("linux/amd64/v3", {"os": "linux", "architecture": "amd64", "variant": "v3"}),
    ("linux/arm", {"os": "linux", "architecture": "arm", "variant": "v7"}),
    ("linux/arm/7", {"os": "linux", "architecture": "arm", "variant": "v7"}),
    ("linux/arm/v6", {"os": "linux", "architecture": "arm", "variant": "v6"}),
    ("linux/armhf", {"os": "linux", "architecture": "arm", "variant": "v7"}),
    ("linux/i386", {"os": "linux", "architecture": "386"}),
    ("arm64", {"os": "linux", "architecture": "arm64"}),
    ("linux/s390x", {"os": "linux", "architecture": "s390x"}),
])
def test_parse_platform_normalises_as_containerd(text, want):
    assert mf.parse_platform(text) == want


def test_parse_platform_os_alone_is_the_hosts_architecture():
    assert mf.parse_platform("linux") == mf.normalize(mf.host_platform())


@pytest.mark.parametrize("text", ["", "linux/", "/arm64", "linux/arm64/v8/x", "linux/bogus", "plan10/amd64",
                                  "linux//v7"])
def test_parse_platform_refuses_what_does_not_parse(text):
    with pytest.raises(errors.InvalidArgument, match="invalid platform"):
        mf.parse_platform(text)


def test_platform_matching_and_format():
    arm64 = mf.parse_platform("linux/arm64")
    assert mf.platform_matches({"os": "linux", "architecture": "aarch64", "variant": "v8"}, arm64)
    assert mf.platform_matches({"os": "linux", "architecture": "arm64"}, mf.parse_platform("linux/arm64/v8"))
    assert not mf.platform_matches({"os": "linux", "architecture": "amd64"}, arm64)
    assert not mf.platform_matches({"os": "linux", "architecture": "arm", "variant": "v6"},
                                   mf.parse_platform("linux/arm/v7"))
    assert not mf.platform_matches({"os": "windows", "architecture": "arm64"}, arm64)
    assert mf.platform_string({"os": "linux", "architecture": "arm", "variant": "v7"}) == "linux/arm/v7"
    assert mf.platform_string(arm64) == "linux/arm64"


def test_binfmt_conf_line_parses_as_the_kernel_reads_it():
    h = em.parse_conf_line(DEBIAN_AARCH64)
    assert h is not None and h.name == "qemu-aarch64" and h.offset == 0
    assert h.magic[:4] == b"\x7fELF" and h.magic[18:20] == b"\xb7\x00" and len(h.mask) == len(h.magic) == 20
    assert h.interpreter == "/usr/libexec/qemu-binfmt/aarch64-binfmt-P" and h.flags == "OPF"
    assert h.registration() == DEBIAN_AARCH64  # F already there: written as the file has it
    no_f = em.parse_conf_line(DEBIAN_AARCH64[:-3] + "OC")
    assert no_f is not None and no_f.registration().endswith(":OCF")
    assert em.parse_conf_line("# comment") is None and em.parse_conf_line("   ") is None
    assert em.parse_conf_line(":jar:E::jar::/usr/bin/jexec:") is None  # by extension: not QEMU's kind
    assert em.parse_conf_line("|qemu-x|M|0|\\x7fELF||/bin/q|F").magic == b"\x7fELF"  # any separator
    with pytest.raises(ValueError, match="7"):
        em.parse_conf_line(":qemu-aarch64:M::\\x7f:")


def test_registered_entry_matches_the_conf_line_under_mask():
    entry = em.parse_entry("qemu-aarch64", PROC_AARCH64)
    conf = em.parse_conf_line(DEBIAN_AARCH64)
    assert entry is not None and conf is not None
    assert entry.enabled and "F" in entry.flags and conf.matches(entry)
    s390x = em.parse_conf_line(r":qemu-s390x:M::\x7fELF\x02\x02\x01:\xff\xff\xff\xff\xff\xff\xff:/q:F")
    assert s390x is not None and not s390x.matches(entry)
    assert em.parse_entry("jar", "enabled\ninterpreter /usr/bin/jexec\nflags: \nextension .jar\n") is None


@pytest.fixture
def host(tmp_path):
    """A stand-in binfmt_misc (register is a plain file here) and a binfmt.d with aarch64's line."""
    root, conf = tmp_path / "binfmt_misc", tmp_path / "binfmt.d"
    root.mkdir()
    conf.mkdir()
    (root / "register").write_text("")
    (root / "status").write_text("enabled\n")
    line = DEBIAN_AARCH64.replace("/usr/libexec/qemu-binfmt/aarch64-binfmt-P", sys.executable)
    (conf / "qemu-aarch64.conf").write_text(f"# from qemu-user-static\n{line}\n")
    return root, (str(conf),)


def _ensure(host, is_root=True):
    root, dirs = host
    return em.ensure("arm64", "linux/arm64", root=str(root), conf_dirs=dirs, is_root=is_root)


def test_ensure_registers_the_packages_handler_when_none_is_there(host):
    assert _ensure(host) == "registered"
    written = (host[0] / "register").read_text()
    assert written.startswith(":qemu-aarch64:M::") and written.endswith(":OPF")


def test_ensure_uses_a_handler_registered_with_f_and_writes_nothing(host):
    (host[0] / "qemu-aarch64").write_text(PROC_AARCH64)
    assert _ensure(host) == "present"
    (host[0] / "qemu-aarch64").unlink()
    (host[0] / "arm64-by-someone").write_text(PROC_AARCH64.replace("aarch64-binfmt-P", "other"))
    assert _ensure(host) == "present"  # same magic under another name: theirs serves
    assert (host[0] / "register").read_text() == ""


@pytest.mark.parametrize("entry,match", [
    (PROC_AARCH64.replace("flags: POF", "flags: P"), "without the F flag"),
    (PROC_AARCH64.replace("enabled", "disabled", 1), "is disabled"),
    (PROC_AARCH64.replace("0200b700", "0200b600"), "registered for other binaries"),
])
def test_ensure_never_replaces_someone_elses_handler(host, entry, match):
    (host[0] / "qemu-aarch64").write_text(entry)
    with pytest.raises(em.EmulationUnavailable, match=match):
        _ensure(host)
    assert (host[0] / "register").read_text() == ""
    assert (host[0] / "qemu-aarch64").read_text() == entry


def test_ensure_as_a_user_says_what_root_must_do(host):
    with pytest.raises(em.EmulationUnavailable) as e:
        _ensure(host, is_root=False)
    assert "no binfmt handler for arm64" in str(e.value) and "register" in (e.value.hint or "")
    assert (host[0] / "register").read_text() == ""


def test_no_qemu_names_the_platform_and_the_package(host, tmp_path):
    with pytest.raises(em.EmulationUnavailable) as e:
        em.ensure("s390x", "linux/s390x", root=str(host[0]), conf_dirs=host[1])
    msg = errors.describe(e.value)
    assert "linux/s390x" in msg and "qemu-user-static" in msg and e.value.status == 503
    (tmp_path / "binfmt.d" / "qemu-s390x.conf").write_text(":qemu-s390x:M::\\x7fELF::/nonexistent/q:F\n")
    with pytest.raises(em.EmulationUnavailable, match="/nonexistent/q, which is missing"):
        em.ensure("s390x", "linux/s390x", root=str(host[0]), conf_dirs=host[1])
    assert (host[0] / "register").read_text() == ""


def test_image_platform_checks_as_docker():
    arm64 = {"os": "linux", "architecture": "arm64"}
    with pytest.raises(errors.NotFound) as e:
        em.check_image_platform(arm64, "kbars/arm64:1", mf.parse_platform("linux/s390x"))
    assert str(e.value) == ("image with reference kbars/arm64:1 was found but its platform (linux/arm64) "
                            "does not match the specified platform (linux/s390x)")
    assert em.check_image_platform(arm64, "x", mf.parse_platform("linux/aarch64")) == []
    host = mf.normalize(mf.host_platform())
    assert em.check_image_platform(host, "x", None) == []
    other = {"os": "linux", "architecture": "s390x" if host["architecture"] != "s390x" else "arm64"}
    [warning] = em.check_image_platform(other, "x", None)
    assert warning.startswith(f"The requested image's platform ({mf.platform_string(other)}) does not match "
                              f"the detected host platform ({mf.platform_string(host)})")
    assert em.image_platform({"os": "linux", "architecture": "aarch64"}, {"variant": "v8"}) == arm64


def test_a_native_run_does_not_load_emulation():
    from kobako.engine.lifecycle import Engine
    saved = sys.modules.pop("kobako.engine.emulation")
    try:
        assert Engine.emulate(mf.host_platform()["architecture"]) == "" and Engine.emulate("") == ""
        assert "kobako.engine.emulation" not in sys.modules
    finally:
        sys.modules["kobako.engine.emulation"] = saved
