"""Escape routes: leaked fds, a cwd outside the root, the runtime's own executable,
symlinks and '..' pointing mounts at the host."""

from __future__ import annotations

import os

import pytest
import support

pytestmark = pytest.mark.root


def run(runtime, b, tag="sec", **kw):
    return runtime("run", "--bundle", b.path, runtime.new_id(tag), **kw)


def _fd_listing(out: str) -> dict[int, str]:
    fds = {}
    for line in out.splitlines():
        f = line.split()
        if len(f) >= 9 and f[-3].isdigit() and f[-2] == "->":
            fds[int(f[-3])] = f[-1]
    return fds


def _secret(hostdir):
    secret = hostdir("fd") / "secret-host-file"
    secret.write_text("secret")
    return secret


def _leaked(listing: str) -> dict[int, str]:
    """fds above stdio, except the /proc directory ls itself reads."""
    return {n: t for n, t in _fd_listing(listing).items() if n > 2 and not t.startswith("/proc/")}


def test_no_fd_of_the_caller_or_runtime_reaches_the_container(runtime, bundle, hostdir):
    secret = _secret(hostdir)
    cp = run(runtime, bundle(["ls", "-l", "/proc/self/fd/"]), open_fds={7: secret, 9: secret})
    assert cp.returncode == 0, cp.stderr
    fds = _fd_listing(cp.stdout)
    assert {0, 1, 2} <= set(fds), cp.stdout
    assert _leaked(cp.stdout) == {}, f"fds leaked into the container:\n{cp.stdout}"
    assert len([n for n in fds if n > 2]) <= 1  # ls's own directory fd at most
    assert "secret" not in cp.stdout


def test_no_fd_reaches_a_created_then_started_container(runtime, bundle, hostdir):
    d = hostdir("fd2")
    secret = _secret(hostdir)
    b = bundle(["sh", "-c", "ls -l /proc/self/fd/ > /w/fds"])
    b.add_bind(d, "/w")
    cid = runtime.new_id("fd")
    runtime.create(cid, b, open_fds={7: secret})
    runtime.ok("start", cid, open_fds={8: secret})
    support.wait_for(lambda: runtime.status(cid) == "stopped", what="the program to finish")
    listing = (d / "fds").read_text()
    assert _leaked(listing) == {}, f"fds leaked into the container:\n{listing}"


def test_no_fd_reaches_an_exec_process(runtime, running, hostdir):
    cid, _, _ = running
    cp = runtime.ok("exec", cid, "ls", "-l", "/proc/self/fd/", open_fds={8: _secret(hostdir)})
    assert _leaked(cp.stdout) == {}, f"fds leaked into the exec'd process:\n{cp.stdout}"


def test_preserve_fds_passes_exactly_the_asked_ones(runtime, bundle, hostdir):
    d = hostdir("pfd")
    (d / "passed").write_text("passed-through\n")
    b = bundle(["sh", "-c", "cat <&3; ls -l /proc/self/fd/"])
    cp = runtime("run", "--preserve-fds", "1", "--bundle", b.path, runtime.new_id("pfd"),
                 open_fds={3: d / "passed", 4: d / "passed"})
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.startswith("passed-through\n")
    fds = _fd_listing(cp.stdout)
    assert fds.get(3, "").endswith("/passed")
    assert not fds.get(4, "/proc/").startswith(str(d)), "fd 4 was not asked for"


def test_cwd_resolves_inside_the_root(runtime, bundle):
    cp = run(runtime, bundle(["sh", "-c", "readlink /proc/self/cwd; cd ..; cd ..; pwd; ls /"],
                             edit={"process.cwd": "/tmp"}))
    assert cp.returncode == 0, cp.stderr
    lines = cp.stdout.splitlines()
    assert lines[0] == "/tmp"
    assert lines[1] == "/"
    assert "kbt" not in cp.stdout and "bin" in lines[2:]


@pytest.mark.parametrize("fd", range(3, 11))
def test_cwd_through_a_leaked_fd_cannot_leave_the_root(runtime, bundle, fd):
    """CVE-2024-21626: process.cwd /proc/self/fd/N must not land on a runtime fd."""
    b = bundle(["sh", "-c", "readlink /proc/self/cwd; ls -a . | head -50"],
               edit={"process.cwd": f"/proc/self/fd/{fd}"})
    cp = run(runtime, b)
    if cp.returncode != 0:
        support.assert_clean_error(cp)
        return
    where = cp.stdout.splitlines()[0] if cp.stdout else ""
    assert where.startswith("/") and "unreachable" not in where, f"cwd escaped the root: {where!r}"


def test_init_is_the_container_program_not_the_runtime(runtime, bundle):
    cp = run(runtime, bundle(["sh", "-c", "readlink /proc/1/exe; grep -c python /proc/1/maps; "
                                          "test -e /usr/lib/python3.11 && echo PYTHON-VISIBLE; "
                                          "ls /usr 2>/dev/null | wc -l"]))
    lines = cp.stdout.split()
    assert lines[0] == "/bin/busybox"
    assert lines[1] == "0"
    assert "PYTHON-VISIBLE" not in lines
    assert lines[-1] == "0"


def test_exec_process_exe_is_the_program(runtime, running):
    cid, _, _ = running
    cp = runtime.ok("exec", cid, "sh", "-c", "readlink /proc/self/exe; echo ppid=$PPID; "
                                             "grep -c python /proc/self/maps || true")
    lines = cp.stdout.split()
    assert lines[0] == "/bin/busybox"
    assert lines[1] == "ppid=0"  # its parent (the runtime) is outside the pid namespace
    assert lines[-1] == "0"


def _host_target(hostdir):
    target = hostdir("target")
    (target / "host-file").write_text("untouched\n")
    return target


def _host_target_untouched(target):
    assert sorted(os.listdir(target)) == ["host-file"], os.listdir(target)
    assert (target / "host-file").read_text() == "untouched\n"
    assert not support.is_mountpoint(target)
    assert not [x for x in support.mountinfo_lines() if str(target) in x]


def test_symlink_cannot_point_a_mount_at_the_host(runtime, bundle, hostdir):
    target = _host_target(hostdir)
    b = bundle(["sh", "-c", "touch /evil/from-container 2>/dev/null; echo done"])
    os.symlink(str(target), b.rootfs / "evil")
    b.config["mounts"].append({"destination": "/evil", "type": "tmpfs", "source": "tmpfs",
                               "options": ["size=64k"]})
    b.write()
    cp = run(runtime, b)
    assert "Traceback" not in cp.stderr
    _host_target_untouched(target)


def test_symlink_cannot_point_a_bind_mount_at_the_host(runtime, bundle, hostdir):
    target = _host_target(hostdir)
    src = hostdir("src")
    (src / "planted").write_text("x")
    b = bundle(["sh", "-c", "echo done"])
    os.symlink(str(target), b.rootfs / "evil")
    b.add_bind(src, "/evil/sub")
    cp = run(runtime, b)
    assert "Traceback" not in cp.stderr
    _host_target_untouched(target)


def test_relative_symlink_climbing_out_is_confined(runtime, bundle, hostdir):
    target = _host_target(hostdir)
    b = bundle(["sh", "-c", "echo done"])
    depth = len(b.rootfs.parts)
    os.symlink("../" * depth + str(target).lstrip("/"), b.rootfs / "climb")
    b.config["mounts"].append({"destination": "/climb", "type": "tmpfs", "source": "tmpfs"})
    b.write()
    cp = run(runtime, b)
    assert "Traceback" not in cp.stderr
    _host_target_untouched(target)


def test_dotdot_in_a_mount_destination_stays_inside(runtime, bundle, hostdir):
    target = _host_target(hostdir)
    b = bundle(["sh", "-c", "echo done"])
    b.config["mounts"].append({"destination": "/../../../../../.." + str(target), "type": "tmpfs",
                               "source": "tmpfs", "options": ["size=64k"]})
    b.write()
    cp = run(runtime, b)
    assert "Traceback" not in cp.stderr
    _host_target_untouched(target)
    if cp.returncode == 0:
        assert cp.stdout.strip() == "done"


def test_symlinked_proc_cannot_mount_over_the_host(runtime, bundle, hostdir):
    """An image whose /proc is a symlink to a host path must not get procfs mounted there."""
    target = _host_target(hostdir)
    b = bundle(["true"])
    os.rmdir(b.rootfs / "proc")
    os.symlink(str(target), b.rootfs / "proc")
    cp = run(runtime, b)
    assert "Traceback" not in cp.stderr
    _host_target_untouched(target)


def test_symlinked_dev_file_cannot_overwrite_a_host_file(runtime, bundle, hostdir):
    target = _host_target(hostdir)
    b = bundle(["true"])
    (b.rootfs / "dev").rmdir()
    os.symlink(str(target), b.rootfs / "dev")
    b.config["mounts"] = [m for m in b.config["mounts"] if not m["destination"].startswith("/dev")]
    b.write()
    cp = run(runtime, b)
    assert "Traceback" not in cp.stderr
    _host_target_untouched(target)


def test_container_cannot_see_the_runtime_state(runtime, running):
    cid, _, _ = running
    cp = runtime.ok("exec", cid, "sh", "-c", f"ls -d {runtime.root} 2>/dev/null; find / -name '{cid}' "
                                             "-maxdepth 6 2>/dev/null | grep -v '^/sys/fs/cgroup' | head")
    assert cp.stdout.strip() == ""
