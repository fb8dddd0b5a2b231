"""OCI runtime-spec conformance: root, mounts, process, hostname (config.md).

Each test runs one short container with `run` and checks what the program sees. Where
the spec is silent, runc's behaviour is the reference.
"""

from __future__ import annotations

import os

import oci_support
import pytest
import support

pytestmark = pytest.mark.root


def run(runtime, bundle, script, edit=None, tag="p"):
    return oci_support.run_sh(runtime, bundle, script, edit, tag)


def test_process_args(runtime, bundle):
    """config.md#process: args MUST be the argv of the program (execvp semantics)."""
    out = run(runtime, bundle, 'echo "[$0]"; echo "[$1]"; echo "$#"',
              edit=lambda c: c["process"]["args"].extend(["first arg", "x y"]))
    assert out.splitlines() == ["[first arg]", "[x y]", "1"]


def test_process_cwd(runtime, bundle):
    """config.md#process: cwd is the working directory the runtime MUST set."""
    assert run(runtime, bundle, "pwd", edit={"process.cwd": "/etc"}).strip() == "/etc"


def test_process_env(runtime, bundle):
    """config.md#process: env MUST be the program's environment (execve's envp)."""
    out = run(runtime, bundle, 'echo "$FOO|$BAR"',
              edit={"process.env": ["PATH=/bin:/usr/bin", "FOO=foo value", "BAR=b=c"]})
    assert out.strip() == "foo value|b=c"


def test_process_user(runtime, bundle):
    """config.md#posix-platform-user: uid, gid and additionalGids MUST be the process's
    user, group and supplementary groups."""
    out = run(runtime, bundle, "id -u; id -g; cat /proc/self/status | grep ^Groups:",
              edit={"process.user": {"uid": 1234, "gid": 2345, "additionalGids": [3456, 4567]}})
    lines = out.splitlines()
    assert lines[0] == "1234" and lines[1] == "2345"
    assert set(lines[2].split()[1:]) == {"3456", "4567"}


def test_process_user_umask(runtime, bundle):
    """config.md#posix-platform-user: umask, when set, is the process's umask."""
    out = run(runtime, bundle, "umask", edit={"process.user.umask": 0o027})
    assert out.strip().lstrip("0") == "27"


def test_hostname(runtime, bundle):
    """config.md#hostname: the runtime MUST set the container's hostname (with a uts
    namespace)."""
    assert run(runtime, bundle, "hostname", edit={"hostname": "oci-conf"}).strip() == "oci-conf"


def test_root_readonly(runtime, bundle):
    """config.md#root: with readonly true the root filesystem MUST be read-only inside
    the container."""
    out = run(runtime, bundle, "touch /x 2>/dev/null && echo writable || echo readonly",
              edit={"root.readonly": True})
    assert out.strip() == "readonly"


def test_mounts_in_listed_order(runtime, bundle, hostdir):
    """config.md#mounts: the runtime MUST mount entries in the listed order (a later
    mount over a subdirectory of an earlier one is visible on top of it)."""
    a = hostdir("ma")
    (a / "sub").mkdir()
    (a / "sub" / "from-a").write_text("a")
    bb = hostdir("mb")
    (bb / "from-b").write_text("b")
    b = bundle(["sh", "-c", "ls /m/sub"])
    b.add_bind(a, "/m")
    b.add_bind(bb, "/m/sub")
    cid = runtime.new_id("morder")
    cp = runtime("run", "--bundle", b.path, cid)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.split() == ["from-b"]


def test_mount_options_ro(runtime, bundle, hostdir):
    """config.md#mounts: options (mount(8) style, here `ro`) MUST apply to the mount."""
    d = hostdir("mro")
    b = bundle(["sh", "-c", "touch /m/x 2>/dev/null && echo writable || echo readonly"])
    b.add_bind(d, "/m", options=["rbind", "ro"])
    cid = runtime.new_id("mro")
    cp = runtime("run", "--bundle", b.path, cid)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.strip() == "readonly"
    assert not (d / "x").exists()


def test_mount_tmpfs_type(runtime, bundle):
    """config.md#mounts: type is the filesystem type the runtime MUST mount (tmpfs with
    a size option)."""
    out = run(runtime, bundle, "grep ' /scratch ' /proc/self/mounts",
              edit=lambda c: c["mounts"].append({"destination": "/scratch", "type": "tmpfs",
                                                 "source": "tmpfs", "options": ["nosuid", "size=1m"]}))
    f = out.split()
    assert f[2] == "tmpfs" and "nosuid" in f[3].split(",") and "size=1024k" in f[3].split(",")


@pytest.mark.parametrize("prop,field", [("shared", "shared:"), ("private", None),
                                        ("unbindable", "unbindable")])
def test_rootfs_propagation(runtime, bundle, prop, field):
    """config-linux.md#rootfs-mount-propagation: rootfsPropagation sets the propagation
    of the container's root mount (seen in the container's mountinfo for `/`)."""
    out = run(runtime, bundle, "awk '$5 == \"/\"' /proc/self/mountinfo",
              edit={"linux.rootfsPropagation": prop})
    line = out.strip().splitlines()[-1]
    optional = line.split(" - ")[0].split()[6:]
    if field:  # (the bundles live on /'s own mount here: unbindable must still start)
        assert any(o.startswith(field) for o in optional), line
    else:
        assert not any(o.startswith(("shared:", "master:")) for o in optional), line


def test_rlimits(runtime, bundle):
    """config.md#posix-process rlimits: the runtime MUST set each rlimit (soft and hard)
    on the process."""
    out = run(runtime, bundle, "grep 'Max open files' /proc/self/limits",
              edit={"process.rlimits": [{"type": "RLIMIT_NOFILE", "soft": 123, "hard": 456}]})
    assert out.split()[3:5] == ["123", "456"]


def test_rlimits_unknown_type_fails(runtime, bundle):
    """config.md#posix-process rlimits: the runtime MUST generate an error for any type
    that cannot be mapped to a relevant kernel interface."""
    b = bundle(["true"], edit={"process.rlimits": [{"type": "RLIMIT_NOPE", "soft": 1, "hard": 1}]})
    cid = runtime.new_id("rlbad")
    support.assert_clean_error(runtime("create", "--bundle", b.path, cid))
    assert runtime("state", cid).returncode != 0


def test_invalid_oci_version_fails(runtime, bundle):
    """config.md#specification-version: ociVersion MUST be in SemVer v2.0.0 format."""
    b = bundle(["true"], edit={"ociVersion": "not-a-version"})
    cid = runtime.new_id("ver")
    support.assert_clean_error(runtime("create", "--bundle", b.path, cid))
    assert runtime("state", cid).returncode != 0


def test_capabilities(runtime, bundle):
    """config.md#linux-process capabilities: the bounding, effective and permitted sets
    MUST be exactly the listed capabilities."""
    caps = ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    out = run(runtime, bundle, "grep ^Cap /proc/self/status",
              edit={"process.capabilities": {"bounding": caps, "effective": caps, "permitted": caps}})
    m = support.cap_lines(out)
    want = support.cap_mask(caps)
    assert m["CapBnd"] == want and m["CapEff"] == want and m["CapPrm"] == want, out
    assert m["CapInh"] == 0 and m.get("CapAmb", 0) == 0


def test_no_new_privileges(runtime, bundle):
    """config.md#linux-process: noNewPrivileges true MUST prevent the process from
    gaining privileges (NoNewPrivs set)."""
    out = run(runtime, bundle, "grep ^NoNewPrivs /proc/self/status", edit={"process.noNewPrivileges": True})
    assert out.split()[1] == "1"


def test_oom_score_adj(runtime, bundle):
    """config.md#linux-process: oomScoreAdj is the process's oom_score_adj."""
    out = run(runtime, bundle, "cat /proc/self/oom_score_adj", edit={"process.oomScoreAdj": 123})
    assert out.strip() == "123"


def test_process_user_is_set_before_exec(runtime, bundle, hostdir):
    """config.md#posix-platform-user: the user applies to the program itself: a file it
    makes is owned by uid:gid."""
    d = hostdir("own")
    os.chmod(d, 0o777)
    b = bundle(["touch", "/w/f"], edit={"process.user": {"uid": 1234, "gid": 2345}})
    b.add_bind(d, "/w")
    cid = runtime.new_id("own")
    cp = runtime("run", "--bundle", b.path, cid)
    assert cp.returncode == 0, cp.stderr
    st = os.stat(d / "f")
    assert (st.st_uid, st.st_gid) == (1234, 2345)
