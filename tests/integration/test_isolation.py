"""`run` makes a real isolated container: PID 1, own names, only lo, a mount
namespace that hides the host's mounts, masked and read-only paths."""

from __future__ import annotations

import os
import subprocess

import pytest
import support

pytestmark = pytest.mark.root


def run(runtime, b, tag="run", **kw) -> subprocess.CompletedProcess:
    return runtime("run", "--bundle", b.path, runtime.new_id(tag), **kw)


def test_run_prints_output_and_returns_exit_code(runtime, bundle):
    cp = run(runtime, bundle(["sh", "-c", "echo hello from inside; exit 7"]))
    assert cp.returncode == 7, cp.stderr
    assert cp.stdout == "hello from inside\n"


def test_run_exit_zero(runtime, bundle):
    cp = run(runtime, bundle(["true"]))
    assert cp.returncode == 0, cp.stderr


def test_run_exit_code_when_the_init_is_killed(runtime, bundle, hostdir):
    d = hostdir("pid")
    cid = runtime.new_id("sig")
    p = runtime.popen("run", "--bundle", bundle(["sleep", "300"]).path, "--pid-file", d / "pid", cid)
    support.wait_for(lambda: (d / "pid").exists() or p.poll() is not None, what="the pid file")
    assert p.poll() is None, open(p.err_path).read()
    os.kill(int((d / "pid").read_text()), 9)
    assert p.wait(timeout=30) == 137
    assert not (runtime.root / cid).exists()


def test_run_passes_stdin(runtime, bundle):
    cp = run(runtime, bundle(["sh", "-c", "read line; echo got:$line"]), input="abc\n")
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == "got:abc\n"


def test_run_deletes_the_container_afterwards(runtime, bundle):
    b = bundle(["true"])
    cid = runtime.new_id("gone")
    runtime.ok("run", "--bundle", b.path, cid)
    assert not (runtime.root / cid).exists()
    assert support.cgroup_dirs(cid) == []
    assert runtime("state", cid).returncode != 0


def test_pid_1(runtime, bundle):
    script = "echo $$; cut -d' ' -f4 /proc/1/stat; ls /proc | grep -c '^[0-9]'"
    cp = run(runtime, bundle(["sh", "-c", script]))
    assert cp.returncode == 0, cp.stderr
    pid, ppid, nprocs = cp.stdout.split()
    assert pid == "1"
    assert ppid == "0"  # its parent is outside the namespace
    assert int(nprocs) <= 3  # sh, cat/ls, grep: no host process is visible


def test_hostname(runtime, bundle):
    cp = run(runtime, bundle(["hostname"], edit={"hostname": "kbox-host"}))
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.strip() == "kbox-host"
    assert os.uname().nodename != "kbox-host"


def test_domainname(runtime, bundle):
    support.lacks("runc", "domainname is runc 1.2+")
    b = bundle(["sh", "-c", "hostname; cat /proc/sys/kernel/domainname"],
               edit={"hostname": "kbox-host", "domainname": "kbox.example"})
    cp = run(runtime, b)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.split() == ["kbox-host", "kbox.example"]
    with open("/proc/sys/kernel/domainname") as f:
        assert f.read().strip() != "kbox.example"


def test_uts_namespace_is_private(runtime, bundle):
    cp = run(runtime, bundle(["sh", "-c", "hostname changed-inside && hostname"],
                             edit=support.add_caps("CAP_SYS_ADMIN")))
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.strip() == "changed-inside"
    assert os.uname().nodename != "changed-inside"


def test_only_lo_in_a_new_network_namespace(runtime, bundle):
    cp = run(runtime, bundle(["ls", "/sys/class/net"]))
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.split() == ["lo"]


def test_namespaces_differ_from_the_host(runtime, bundle):
    names = ["pid", "net", "ipc", "uts", "mnt", "cgroup"]
    script = "; ".join(f"readlink /proc/self/ns/{n}" for n in names)
    b = bundle(["sh", "-c", script], edit=lambda c: support.add_namespace(c, "cgroup"))
    cp = run(runtime, b)
    assert cp.returncode == 0, cp.stderr
    inside = cp.stdout.split()
    for n, link in zip(names, inside, strict=True):
        assert link != os.readlink(f"/proc/self/ns/{n}"), f"{n} namespace is the host's"


def test_without_a_network_namespace_the_host_network_is_shared(runtime, bundle):
    def edit(cfg):
        cfg["linux"]["namespaces"] = [n for n in cfg["linux"]["namespaces"] if n["type"] != "network"]

    cp = run(runtime, bundle(["readlink", "/proc/self/ns/net"], edit=edit))
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.strip() == os.readlink("/proc/self/ns/net")


def test_host_mounts_are_invisible(runtime, bundle, hostdir):
    marker = hostdir("marker")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "kbtmarker", str(marker)], check=True)
    try:
        cp = run(runtime, bundle(["sh", "-c", "grep -c . /proc/self/mountinfo; cat /proc/self/mountinfo"]))
    finally:
        subprocess.run(["umount", str(marker)], check=True)
    assert cp.returncode == 0, cp.stderr
    count, _, mountinfo = cp.stdout.partition("\n")
    assert int(count) < 30, f"container sees {count} mounts"
    assert "kbtmarker" not in mountinfo
    assert not [x for x in mountinfo.splitlines() if str(marker) in x.split()[4]]


def test_mounts_in_the_container_do_not_reach_the_host(runtime, bundle):
    before = support.mountinfo_lines()
    cp = run(runtime, bundle(["sh", "-c", "mkdir -p /mnt/x && mount -t tmpfs kbtinner /mnt/x && echo ok"],
                             edit=support.add_caps("CAP_SYS_ADMIN")))
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.strip() == "ok"
    assert not any("kbtinner" in x for x in support.mountinfo_lines())
    assert len(support.mountinfo_lines()) == len(before)


def test_proc_and_sys_are_mounted(runtime, bundle):
    cp = run(runtime, bundle(["sh", "-c", "cat /proc/self/mountinfo"]))
    assert cp.returncode == 0, cp.stderr
    by_target = _mount_targets(cp.stdout)
    assert by_target.get("/proc") == "proc"
    assert by_target.get("/sys") == "sysfs"
    assert by_target.get("/dev") == "tmpfs"
    assert by_target.get("/dev/pts") == "devpts"
    assert by_target.get("/dev/shm") == "tmpfs"
    assert by_target.get("/dev/mqueue") == "mqueue"


def test_default_devices(runtime, bundle):
    cp = run(runtime, bundle(["sh", "-c", "for d in null zero full random urandom tty; do "
                                          "stat -c '%n %F %t:%T' /dev/$d; done; "
                                          "echo x > /dev/null && head -c 4 /dev/zero | wc -c"]))
    assert cp.returncode == 0, cp.stderr
    lines = cp.stdout.splitlines()
    assert lines[:6] == ["/dev/null character special file 1:3", "/dev/zero character special file 1:5",
                         "/dev/full character special file 1:7", "/dev/random character special file 1:8",
                         "/dev/urandom character special file 1:9", "/dev/tty character special file 5:0"]
    assert lines[6].strip() == "4"


def test_dev_symlinks(runtime, bundle):
    cp = run(runtime, bundle(["sh", "-c", "for f in fd stdin stdout stderr; do readlink /dev/$f; done"]))
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.split() == ["/proc/self/fd", "/proc/self/fd/0", "/proc/self/fd/1", "/proc/self/fd/2"]


def _mount_targets(mountinfo: str) -> dict[str, str]:
    """mount point -> fstype, the last mount on a point winning."""
    out = {}
    for line in mountinfo.splitlines():
        f = line.split()
        out[f[4]] = f[f.index("-") + 1]
    return out


def test_masked_paths(runtime, bundle):
    script = ("echo kcore=$(wc -c < /proc/kcore 2>/dev/null || echo unreadable); "
              "echo keys=$(wc -c < /proc/keys); "
              "echo firmware=$(ls -A /sys/firmware | wc -l); "
              "echo timer_list=$(wc -c < /proc/timer_list); "
              "echo ---; cat /proc/self/mountinfo")
    cp = run(runtime, bundle(["sh", "-c", script], edit=support.add_caps("CAP_SYS_RAWIO")))
    assert cp.returncode == 0, cp.stderr
    values, _, mountinfo = cp.stdout.partition("---\n")
    got = dict(x.split("=", 1) for x in values.split())
    assert got["kcore"] in ("0", "unreadable")
    assert got["keys"] == "0" and got["timer_list"] == "0"
    assert got["firmware"] == "0"
    targets = _mount_targets(mountinfo)
    for p in ("/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/acpi", "/sys/firmware"):
        if os.path.exists(p):  # a path this kernel lacks needs no mask
            assert p in targets, f"{p} is not masked by a mount"
    assert targets.get("/sys/firmware") == "tmpfs"
    if os.path.isdir("/proc/acpi"):
        assert targets["/proc/acpi"] == "tmpfs"


def test_masked_file_is_the_null_device(runtime, bundle):
    cp = run(runtime, bundle(["sh", "-c", "stat -c '%t:%T' /proc/keys"]))
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.strip() == "1:3"


def test_readonly_paths(runtime, bundle):
    """Even with CAP_SYS_ADMIN (which may write it otherwise) /proc/sys is read-only."""
    script = ("(echo x > /proc/sys/kernel/hostname) 2>&1 && echo WROTE; "
              "echo ---; cat /proc/self/mountinfo")
    cp = run(runtime, bundle(["sh", "-c", script], edit=support.add_caps("CAP_SYS_ADMIN")))
    assert cp.returncode == 0, cp.stderr
    first, _, mountinfo = cp.stdout.partition("---\n")
    assert "WROTE" not in first and "Read-only file system" in first, first
    opts = {x.split()[4]: x.split()[5].split(",") for x in mountinfo.splitlines()}
    for p in ("/proc/sys", "/proc/bus", "/proc/fs", "/proc/irq"):
        assert "ro" in opts.get(p, []), f"{p} is not a read-only mount"
    assert "rw" in opts["/proc"]


def test_readonly_root(runtime, bundle):
    b = bundle(["sh", "-c", "touch /x 2>/dev/null && echo WROTE || echo refused; touch /tmp/y || true; "
                            "grep -E '^[0-9]+ [0-9]+ [^ ]+ [^ ]+ / ' /proc/self/mountinfo | cut -d' ' -f6"],
               edit={"root.readonly": True})
    cp = run(runtime, b)
    assert cp.returncode == 0, cp.stderr
    lines = cp.stdout.split()
    assert lines[0] == "refused"
    assert "ro" in lines[-1].split(",")
    assert not (b.rootfs / "x").exists()


def test_writable_root_writes_into_the_rootfs(runtime, bundle):
    b = bundle(["sh", "-c", "echo data > /written"])
    cp = run(runtime, b)
    assert cp.returncode == 0, cp.stderr
    assert (b.rootfs / "written").read_text() == "data\n"


def test_bind_mount_of_a_host_dir(runtime, bundle, hostdir):
    d = hostdir("bind")
    (d / "from-host").write_text("hi\n")
    b = bundle(["sh", "-c", "cat /data/from-host; echo back > /data/from-container"])
    b.add_bind(d, "/data")
    cp = run(runtime, b)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == "hi\n"
    assert (d / "from-container").read_text() == "back\n"
    assert not support.is_mountpoint(b.rootfs / "data")


def test_readonly_bind_mount(runtime, bundle, hostdir):
    d = hostdir("robind")
    b = bundle(["sh", "-c", "touch /data/x 2>/dev/null && echo WROTE || echo refused"])
    b.add_bind(d, "/data", options=["rbind", "ro"])
    cp = run(runtime, b)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.strip() == "refused"
    assert not (d / "x").exists()


def test_tmpfs_mount_with_options(runtime, bundle):
    b = bundle(["sh", "-c", "grep ' /scratch ' /proc/self/mountinfo"])
    b.config["mounts"].append({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
                               "options": ["nosuid", "nodev", "mode=700", "size=1m"]})
    b.write()
    cp = run(runtime, b)
    assert cp.returncode == 0, cp.stderr
    f = cp.stdout.split()
    opts = f[5].split(",")
    assert "nosuid" in opts and "nodev" in opts
    assert f[f.index("-") + 1] == "tmpfs"
    assert "size=1024k" in cp.stdout and "mode=700" in cp.stdout


def test_cgroup_namespace_sees_its_own_cgroup_as_root(runtime, bundle):
    cp = run(runtime, bundle(["cat", "/proc/self/cgroup"], edit=lambda c: support.add_namespace(c, "cgroup")))
    assert cp.returncode == 0, cp.stderr
    for line in cp.stdout.splitlines():
        assert line.rsplit(":", 1)[1] == "/", line


def test_container_is_in_its_own_pids_cgroup(runtime, bundle, hostdir):
    d = hostdir("cg")
    b = bundle(["sh", "-c", "touch /w/started; sleep 300"])
    b.add_bind(d, "/w")
    cid, pid = runtime.start_container(b, "cg")
    support.wait_for(lambda: (d / "started").exists(), what="container start")
    dirs = support.cgroup_dirs(cid)
    assert dirs, "no cgroup named after the container"
    if runtime.is_kobako and os.path.isdir("/sys/fs/cgroup/pids"):
        assert f"/sys/fs/cgroup/pids/kobako/{cid}" in dirs
    assert pid in support.cgroup_pids(cid)


def test_stdout_and_stderr_stay_apart(runtime, bundle):
    cp = run(runtime, bundle(["sh", "-c", "echo to-out; echo to-err >&2"]))
    assert cp.returncode == 0
    assert cp.stdout == "to-out\n" and cp.stderr == "to-err\n"


def test_no_pivot(runtime, bundle):
    cp = runtime("run", "--no-pivot", "--bundle", bundle(["sh", "-c", "ls /; echo $$"]).path,
                 runtime.new_id("nopivot"))
    assert cp.returncode == 0, cp.stderr
    lines = cp.stdout.split()
    assert "bin" in lines and lines[-1] == "1"
    assert "home" not in lines and "usr" not in lines  # the host's root is not visible


def test_sysctl_in_the_containers_network_namespace(runtime, bundle):
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        host = f.read().strip()
    want = "0" if host == "1" else "1"
    b = bundle(["cat", "/proc/sys/net/ipv4/ip_forward"], edit={"linux.sysctl": {"net.ipv4.ip_forward": want}})
    cp = run(runtime, b)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.strip() == want
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        assert f.read().strip() == host


def test_extra_device(runtime, bundle):
    dev = {"path": "/dev/kbtnull", "type": "c", "major": 1, "minor": 3, "fileMode": 0o620, "uid": 0, "gid": 5}
    b = bundle(["sh", "-c", "stat -c '%t:%T %a %g' /dev/kbtnull; echo x > /dev/kbtnull && echo written"],
               edit={"linux.devices": [dev]})
    cp = run(runtime, b)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.splitlines() == ["1:3 620 5", "written"]
    assert not (b.rootfs / "dev" / "kbtnull").exists()  # made on the container's /dev tmpfs


def test_oom_score_adj(runtime, bundle):
    cp = run(runtime, bundle(["cat", "/proc/self/oom_score_adj"], edit={"process.oomScoreAdj": 123}))
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.strip() == "123"


def test_bind_mount_of_a_host_file(runtime, bundle, hostdir):
    d = hostdir("fbind")
    (d / "config.txt").write_text("file-content\n")
    b = bundle(["sh", "-c", "cat /etc/kbt/config.txt; test -d /etc/kbt && echo parent-made"])
    b.add_bind(d / "config.txt", "/etc/kbt/config.txt", options=["bind", "ro"])
    cp = run(runtime, b)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.splitlines() == ["file-content", "parent-made"]


def test_nested_mounts_in_order(runtime, bundle, hostdir):
    d = hostdir("nest")
    (d / "inner-file").write_text("inner\n")
    b = bundle(["sh", "-c", "cat /outer/inner/inner-file; grep -c ' /outer' /proc/self/mountinfo"])
    b.config["mounts"].append({"destination": "/outer", "type": "tmpfs", "source": "tmpfs"})
    b.write()
    b.add_bind(d, "/outer/inner")
    cp = run(runtime, b)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.split() == ["inner", "2"]


def test_cgroupfs_and_sysfs_are_read_only_inside(runtime, bundle):
    script = ("for f in /sys/fs/cgroup/pids/cgroup.procs /sys/fs/cgroup/cgroup.procs; do "
              "test -e $f && (echo $$ > $f) 2>/dev/null && echo MOVED; done; "
              "echo ---; cat /proc/self/mountinfo")
    cp = run(runtime, bundle(["sh", "-c", script], edit=support.add_caps("CAP_SYS_ADMIN")))
    assert cp.returncode == 0, cp.stderr
    moved, _, mountinfo = cp.stdout.partition("---\n")
    assert "MOVED" not in moved
    checked = 0
    for line in mountinfo.splitlines():
        f = line.split()
        point, opts, fstype = f[4], f[5].split(","), f[f.index("-") + 1]
        if point.startswith("/sys") and fstype in ("sysfs", "cgroup", "cgroup2"):
            assert "ro" in opts, f"{point} ({fstype}) is writable"
            checked += 1
    assert checked >= 2
