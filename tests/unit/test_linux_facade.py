"""kobako/linux through the Recorder: each wrapper passes the right call, no root needed."""

from __future__ import annotations

import ctypes
import os
import struct
import subprocess
import sys

import pytest

from kobako.linux import capabilities, fs, libc, mount, namespaces, prctl, uts

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def rec(monkeypatch):
    r = libc.Recorder()
    monkeypatch.setattr(libc, "LIBC", r)
    return r


class Failing:
    """A LIBC whose every call fails with the given errno."""

    def __init__(self, err: int) -> None:
        self.err = err

    def __getattr__(self, name):
        def call(*args):
            ctypes.set_errno(self.err)
            return -1

        return call


def test_mount_passes_every_argument(rec):
    mount.mount("tmpfs", "/x", "tmpfs", mount.MS_NOSUID | mount.MS_NODEV, "mode=755,size=1m")
    flags = mount.MS_NOSUID | mount.MS_NODEV
    assert rec.calls == [("mount", "tmpfs", "/x", "tmpfs", flags, "mode=755,size=1m")]


def test_mount_with_no_source_type_or_data_passes_null(rec):
    mount.mount(None, "/", None, mount.MS_SLAVE | mount.MS_REC)
    assert rec.calls == [("mount", None, "/", None, mount.MS_SLAVE | mount.MS_REC, None)]


def test_bind_mount(rec):
    mount.mount("/src", "/dst", None, mount.MS_BIND | mount.MS_REC)
    assert rec.calls == [("mount", "/src", "/dst", None, 0x1000 | 0x4000, None)]


def test_umount2(rec):
    mount.umount2("/old", mount.MNT_DETACH)
    mount.umount2("/other")
    assert rec.calls == [("umount2", "/old", 2), ("umount2", "/other", 0)]


def test_pivot_root_is_the_raw_syscall(rec):
    mount.pivot_root(".", ".")
    assert rec.calls == [("syscall", libc.syscall_number("pivot_root"), ".", ".")]
    if libc._ARCH == "x86_64":
        assert rec.calls[0][1] == 155


def test_unshare_flags(rec):
    flags = namespaces.CLONE_NEWNS | namespaces.CLONE_NEWUTS | namespaces.CLONE_NEWNET
    namespaces.unshare(flags)
    assert rec.calls == [("unshare", 0x00020000 | 0x04000000 | 0x40000000)]


def test_setns(rec):
    namespaces.setns(7, namespaces.CLONE_NEWNET, "/proc/1/ns/net")
    namespaces.setns(8)
    assert rec.calls == [("setns", 7, 0x40000000), ("setns", 8, 0)]


def test_namespace_flag_values():
    assert namespaces.TYPES["user"][0] == 0x10000000
    assert namespaces.TYPES["pid"][0] == 0x20000000
    assert namespaces.TYPES["ipc"][0] == 0x08000000
    assert namespaces.TYPES["cgroup"][0] == 0x02000000
    assert namespaces.TYPES["time"][0] == 0x80
    assert namespaces.TYPES["mount"] == (0x00020000, "mnt")
    assert namespaces.TYPES["network"][1] == "net"


def test_flag_names():
    s = namespaces.flag_names(namespaces.CLONE_NEWPID | namespaces.CLONE_NEWUTS)
    assert set(s.split("|")) == {"CLONE_NEWPID", "CLONE_NEWUTS"}


def test_sethostname_and_domainname(rec):
    uts.sethostname("box")
    uts.setdomainname("example.org")
    assert rec.calls == [("sethostname", "box", 3), ("setdomainname", "example.org", 11)]


def test_sethostname_length_is_in_bytes(rec):
    uts.sethostname("小箱")
    assert rec.calls == [("sethostname", "小箱", 6)]


def test_prctl_wrappers(rec):
    prctl.set_no_new_privs()
    prctl.set_child_subreaper()
    prctl.set_pdeathsig(9)
    prctl.set_dumpable(False)
    prctl.set_keepcaps(True)
    assert rec.calls == [
        ("prctl", 38, 1, 0, 0, 0),
        ("prctl", 36, 1, 0, 0, 0),
        ("prctl", 1, 9, 0, 0, 0),
        ("prctl", 4, 0, 0, 0, 0),
        ("prctl", 8, 1, 0, 0, 0),
    ]


def test_drop_bounding_drops_every_cap_not_kept(rec):
    keep = capabilities.to_mask(["CAP_CHOWN", "CAP_KILL"])
    capabilities.drop_bounding(keep, 6)
    dropped = [c[2] for c in rec.calls]
    assert all(c[0] == "prctl" and c[1] == prctl.PR_CAPBSET_DROP for c in rec.calls)
    assert dropped == [1, 2, 3, 4, 6]


def test_raise_ambient(rec):
    refused = capabilities.raise_ambient(capabilities.to_mask(["CAP_NET_BIND_SERVICE", "CAP_KILL"]))
    assert refused == []
    assert rec.calls == [("prctl", 47, 2, 5, 0, 0), ("prctl", 47, 2, 10, 0, 0)]


def test_capset_splits_64_bit_masks(rec):
    eff = capabilities.to_mask(["CAP_CHOWN", "CAP_BPF"])  # bits 0 and 39
    capabilities.capset(eff, eff, 0)
    name, hdr, data = rec.calls[0]
    assert name == "capset"
    assert struct.unpack("=Ii", hdr) == (0x20080522, 0)
    # two {effective, permitted, inheritable} structs: the low 32 bits, then the high ones
    assert struct.unpack("=6I", data) == (1, 1, 0, 1 << (39 - 32), 1 << 7, 0)


def test_openat2_passes_struct_open_how(rec):
    fs.openat2(3, "a/b", fs.O_PATH, fs.RESOLVE_IN_ROOT, 0o644)
    name, nr, dirfd, path, how, size = rec.calls[0]
    assert (name, nr, dirfd, path, size) == ("syscall", libc.syscall_number("openat2"), 3, "a/b", 24)
    assert struct.unpack("=3Q", how) == (fs.O_PATH | os.O_CLOEXEC, 0o644, fs.RESOLVE_IN_ROOT)


def test_the_runtime_does_not_import_the_ctypes_package():
    # ~3 ms of kobako-runtime's start: libc goes through _ctypes alone
    code = ("import sys; import kobako.runtime.commands.run, kobako.runtime.init, kobako.runtime.rootfs; "
            "print('ctypes' in sys.modules)")
    out = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {ROOT!r}); {code}"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_to_mask_and_from_mask():
    assert capabilities.to_mask(["CAP_CHOWN", "kill", "net_bind_service"]) == 1 | 1 << 5 | 1 << 10
    assert capabilities.to_mask([]) == 0 and capabilities.to_mask(None) == 0
    assert capabilities.from_mask(1 | 1 << 5) == ["CAP_CHOWN", "CAP_KILL"]
    with pytest.raises(ValueError, match="CAP_NOPE"):
        capabilities.to_mask(["CAP_NOPE"])


def test_to_mask_skips_caps_the_kernel_lacks():
    assert capabilities.to_mask(["CAP_CHOWN", "CAP_CHECKPOINT_RESTORE"], known=38) == 1


def test_errors_become_oserror_with_errno_and_object(monkeypatch):
    monkeypatch.setattr(libc, "LIBC", Failing(1))
    with pytest.raises(OSError) as e:
        mount.mount("tmpfs", "/target", "tmpfs")
    assert e.value.errno == 1 and e.value.filename == "/target" and "mount" in e.value.strerror
    with pytest.raises(OSError) as e:
        uts.sethostname("h")
    assert e.value.errno == 1 and e.value.filename == "h"


def test_enosys_is_explained(monkeypatch):
    monkeypatch.setattr(libc, "LIBC", Failing(38))
    with pytest.raises(OSError) as e:
        namespaces.unshare(namespaces.CLONE_NEWTIME)
    assert e.value.errno == 38 and "kernel" in e.value.strerror and "CLONE_NEWTIME" in e.value.strerror


def test_check_returns_success_values():
    assert libc.check(0, "op") == 0
    assert libc.check(5, "op") == 5


# -- mount option parsing -------------------------------------------------------------------


def test_parse_options_flags_propagation_and_data():
    flags, prop, data = mount.parse_options(
        ["nosuid", "noexec", "ro", "rbind", "rslave", "mode=755", "size=64k", "defaults"])
    assert flags == mount.MS_NOSUID | mount.MS_NOEXEC | mount.MS_RDONLY | mount.MS_BIND | mount.MS_REC
    assert prop == mount.MS_SLAVE | mount.MS_REC
    assert data == ["mode=755", "size=64k"]


@pytest.mark.parametrize("opts,flags", [
    (["ro", "rw"], 0),
    (["rw", "ro"], 0x1),
    (["nodev", "dev"], 0),
    (["noatime", "atime"], 0),
    (["bind"], 0x1000),
    (["strictatime"], 0x1000000),
    (["relatime", "norelatime"], 0),
    (["nosymfollow"], 0x100),
])
def test_parse_options_later_options_win(opts, flags):
    assert mount.parse_options(opts)[0] == flags


@pytest.mark.parametrize("name,value", [
    ("private", 0x40000), ("rprivate", 0x44000), ("shared", 0x100000), ("rshared", 0x104000),
    ("slave", 0x80000), ("rslave", 0x84000), ("unbindable", 0x20000), ("runbindable", 0x24000),
])
def test_parse_options_propagation(name, value):
    assert mount.parse_options([name]) == (0, value, [])


def test_parse_options_empty():
    assert mount.parse_options([]) == (0, 0, [])
