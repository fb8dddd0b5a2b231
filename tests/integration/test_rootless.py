"""Rootless kobako, for real: ordinary users made for this module (with subordinate id
ranges in /etc/subuid and /etc/subgid, as Debian's useradd writes them) run the CLI of this
checkout through runuser. Root inside is the user outside, the user's ids come from its
range, files written into a bind-mounted home directory are the user's, ports are published
on the host's 127.0.0.1, user networks resolve names, and two users cannot reach each
other's containers. Each way a host can be unready ends in one message and leaves nothing.

On this hybrid-cgroup host nothing is delegated, so limits are refused; the v2 VM suite
runs the delegated-subtree case (tests/v2vm)."""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from support import free_port

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]
SRC = {"path": str(REPO)}  # the users' copy of kobako/ (the checkout may be where they cannot read)
USERS = {"kbrl1": 3200000000, "kbrl2": 3200200000, "kbrl3": None}  # kbrl3: no range at all
NEEDED = ("newuidmap", "newgidmap", "slirp4netns", "runuser", "useradd")



def _drop_lines(path: str, user: str) -> None:
    with open(path) as f:
        lines = f.readlines()
    with open(path, "w") as f:
        f.writelines(ln for ln in lines if not ln.startswith(f"{user}:"))


class User:
    """kobako run as an ordinary user, in a login-like environment (XDG_RUNTIME_DIR as
    pam_systemd gives it)."""

    def __init__(self, name: str) -> None:
        pw = pwd.getpwnam(name)
        self.name, self.uid, self.gid, self.home = name, pw.pw_uid, pw.pw_gid, Path(pw.pw_dir)
        self.run = Path(f"/run/user/{self.uid}")

    def env(self) -> list[str]:
        return ["env", "-i", f"HOME={self.home}", f"USER={self.name}", f"LOGNAME={self.name}",
                "PATH=/usr/local/bin:/usr/bin:/bin", f"XDG_RUNTIME_DIR={self.run}"]

    def __call__(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        cp = subprocess.run(["runuser", "-u", self.name, "--", *self.env(), sys.executable, "-I", "-c",
                             f"import sys; sys.path.insert(0, {SRC['path']!r}); "
                             "from kobako.cli.main import entry; sys.argv[0] = 'kobako'; entry()", *args],
                            capture_output=True, text=True, timeout=timeout, cwd="/")
        if check and cp.returncode != 0:
            raise AssertionError(f"{self.name}: kobako {' '.join(args)} failed ({cp.returncode}):\n"
                                 f"{cp.stderr}")
        return cp

    def sh(self, script: str) -> subprocess.CompletedProcess:
        return subprocess.run(["runuser", "-u", self.name, "--", *self.env(), "sh", "-c", script],
                              capture_output=True, text=True, timeout=60, cwd="/")

    def pids(self) -> list[int]:
        out = subprocess.run(["ps", "-u", str(self.uid), "-o", "pid="], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]


@pytest.fixture(scope="module")
def users(busybox_rootfs: Path, session_base: Path):
    missing = [t for t in NEEDED if shutil.which(t, path="/usr/sbin:/usr/bin:/sbin:/bin") is None]
    if missing:
        pytest.skip(f"rootless needs {', '.join(missing)}")
    src = session_base / "rootless-src"
    shutil.rmtree(src, ignore_errors=True)
    shutil.copytree(REPO / "kobako", src / "kobako", ignore=shutil.ignore_patterns("__pycache__"))
    for d in (src, *src.rglob("*")):
        d.chmod(0o755 if d.is_dir() else 0o644)
    SRC["path"] = str(src)
    modes = {}
    for dev in ("/dev/net/tun", "/dev/fuse"):  # what udev gives them on a stock host
        if os.path.exists(dev):
            modes[dev] = os.stat(dev).st_mode & 0o777
            os.chmod(dev, 0o666)
    made = {}
    try:
        for name, start in USERS.items():
            if subprocess.run(["id", name], capture_output=True).returncode != 0:
                subprocess.run(["useradd", "-m", "-s", "/bin/sh", name], check=True, capture_output=True)
            for path in ("/etc/subuid", "/etc/subgid"):
                _drop_lines(path, name)
                if start is not None:
                    with open(path, "a") as f:
                        f.write(f"{name}:{start}:65536\n")
            u = User(name)
            u.run.mkdir(parents=True, exist_ok=True)
            os.chown(u.run, u.uid, u.gid)
            u.run.chmod(0o700)
            tar = u.home / "bb.tar"
            subprocess.run(["tar", "-C", str(busybox_rootfs), "-cf", str(tar), "."], check=True)
            os.chown(tar, u.uid, u.gid)
            made[name] = u
        yield made
    finally:
        for u in made.values():
            for pid in u.pids():  # its pause process, slirp4netns, monitors: all made by this module
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        time.sleep(0.2)
        for name in USERS:
            subprocess.run(["userdel", "-r", name], capture_output=True)
            for path in ("/etc/subuid", "/etc/subgid"):
                _drop_lines(path, name)
            if name in made:
                shutil.rmtree(made[name].run, ignore_errors=True)
        for dev, mode in modes.items():
            os.chmod(dev, mode)


@pytest.fixture(scope="module")
def one(users) -> User:
    u = users["kbrl1"]
    u("import", str(u.home / "bb.tar"), "rl/bb:1")
    return u


def test_root_inside_is_the_user_outside(one: User) -> None:
    share = one.home / "share"
    share.mkdir(exist_ok=True)
    os.chown(share, one.uid, one.gid)
    out = one("run", "--rm", "-v", f"{share}:/share", "rl/bb:1", "sh", "-c",
              "id -u; cat /proc/self/uid_map; echo made > /share/out.txt; ls -ln /bin/busybox").stdout
    lines = out.splitlines()
    assert lines[0] == "0"
    assert lines[1].split() == ["0", str(one.uid), "1"]
    assert lines[2].split() == ["1", "3200000000", "65536"]
    assert os.stat(share / "out.txt").st_uid == one.uid
    assert " 0 " in lines[3]  # the image's files are root's inside
    # the store is the user's, under XDG; root's is not touched
    assert (one.home / ".local/share/kobako/containers").is_dir()
    assert (one.run / "kobako/pause.pid").is_file()


def test_every_command_joins_one_namespace(one: User) -> None:
    pid = int((one.run / "kobako/pause.pid").read_text())
    ns = os.readlink(f"/proc/{pid}/ns/user")
    a = one("run", "--rm", "rl/bb:1", "readlink", "/proc/self/ns/user").stdout.strip()
    b = one("run", "--rm", "rl/bb:1", "readlink", "/proc/self/ns/user").stdout.strip()
    assert a == b == ns


def test_published_port_exec_and_teardown(one: User) -> None:
    port = free_port()
    one("run", "-d", "--name", "web", "-p", f"127.0.0.1:{port}:80", "rl/bb:1", "httpd", "-f", "-p", "80",
        "-h", "/etc")
    try:
        body = ""
        for _ in range(50):
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/passwd", timeout=2).read().decode()
                break
            except OSError:
                time.sleep(0.2)
        assert "root:x:0:0" in body
        assert one("exec", "web", "id", "-u").stdout.strip() == "0"
        assert f"127.0.0.1:{port}" in one("port", "web").stdout
        top = one("top", "web").stdout
        assert "httpd" in top
    finally:
        one("rm", "-f", "web")
    with pytest.raises(OSError):  # the host forward went with the container
        urllib.request.urlopen(f"http://127.0.0.1:{port}/passwd", timeout=2)


def test_user_network_names_resolve(one: User) -> None:
    one("network", "create", "rlnet")
    try:
        one("run", "-d", "--name", "srv", "--network", "rlnet", "rl/bb:1", "httpd", "-f", "-p", "80",
            "-h", "/etc")
        out = one("run", "--rm", "--network", "rlnet", "rl/bb:1", "sh", "-c",
                  "nslookup srv >/dev/null && wget -qO- http://srv/hostname").stdout
        srv_id = one("inspect", "-f", "{{.Id}}", "srv").stdout.strip()
        assert out.strip() == srv_id[:12]
    finally:
        one("rm", "-f", "srv", check=False)
        one("network", "rm", "rlnet", check=False)


def test_volume_build_commit_save_load(one: User) -> None:
    one("run", "--rm", "-v", "rlvol:/data", "rl/bb:1", "sh", "-c", "echo v > /data/f")
    assert one("run", "--rm", "-v", "rlvol:/data", "rl/bb:1", "cat", "/data/f").stdout == "v\n"
    ctx = one.home / "ctx"
    ctx.mkdir(exist_ok=True)
    # a whiteout (rm of an image file) and an opaque directory (a dir replaced whole)
    (ctx / "Dockerfile").write_text("FROM rl/bb:1\nRUN mkdir -p /a/b && echo x > /a/b/f && rm -rf /root\n"
                                    "RUN rm -rf /a && mkdir /a && echo y > /a/g\n")
    os.chown(ctx, one.uid, one.gid)
    one("build", "-q", "-t", "rl/built:1", str(ctx))
    assert one("run", "--rm", "rl/built:1", "sh", "-c", "ls /a; test -e /root || echo gone").stdout.split() \
        == ["g", "gone"]
    one("run", "--name", "tocommit", "rl/bb:1", "touch", "/committed")
    one("commit", "tocommit", "rl/committed:1")
    one("rm", "tocommit")
    one("run", "--rm", "rl/committed:1", "ls", "/committed")
    one("save", "-o", str(one.home / "s.tar"), "rl/built:1")
    one("rmi", "rl/built:1")
    one("load", "-i", str(one.home / "s.tar"))
    assert one("run", "--rm", "rl/built:1", "cat", "/a/g").stdout == "y\n"
    one("volume", "rm", "rlvol")


def test_two_users_cannot_reach_each_other(users, one: User) -> None:
    two = users["kbrl2"]
    two("import", str(two.home / "bb.tar"), "rl/bb:1")
    one("run", "-d", "--name", "mine", "rl/bb:1", "sleep", "300")
    try:
        assert "mine" not in two("ps", "-a").stdout
        assert two("rm", "-f", "mine", check=False).returncode != 0
        pid = one("inspect", "-f", "{{.State.Pid}}", "mine").stdout.strip()
        r = two.sh(f"kill -9 {pid}")
        assert r.returncode != 0
        assert one("inspect", "-f", "{{.State.Status}}", "mine").stdout.strip() == "running"
        assert two.sh(f"ls {one.home}/.local/share/kobako").returncode != 0
    finally:
        one("rm", "-f", "mine")


def test_a_user_without_a_range_is_told_and_nothing_is_made(users) -> None:
    u = users["kbrl3"]
    cp = u("run", "--rm", "rl/bb:1", "true", check=False)
    assert cp.returncode == 125
    assert "/etc/subuid" in cp.stderr and "usermod --add-subuids" in cp.stderr
    assert "Traceback" not in cp.stderr
    assert not (u.run / "kobako").exists()
    assert not (u.home / ".local/share/kobako").exists()
    assert not u.pids()


def test_a_limit_without_delegation_is_refused(one: User) -> None:
    before = one("ps", "-aq").stdout
    cp = one("run", "--rm", "--memory", "64m", "rl/bb:1", "true", check=False)
    assert cp.returncode == 125 and "Traceback" not in cp.stderr
    assert "delegat" in cp.stderr
    assert one("ps", "-aq").stdout == before


def test_a_privileged_port_is_refused_with_the_sysctl(one: User) -> None:
    with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
        start = int(f.read())
    if start <= 80:
        pytest.skip("this host lets users bind port 80")
    cp = one("run", "--rm", "-p", "127.0.0.1:80:80", "rl/bb:1", "true", check=False)
    assert cp.returncode == 125 and "Traceback" not in cp.stderr
    assert "ip_unprivileged_port_start" in cp.stderr
    assert one("ps", "-aq").stdout == ""


def test_pause_without_a_cgroup_says_why(one: User) -> None:
    one("run", "-d", "--name", "nopause", "rl/bb:1", "sleep", "300")
    try:
        cp = one("pause", "nopause", check=False)
        assert cp.returncode != 0 and "no cgroup" in cp.stderr and "Traceback" not in cp.stderr
        # stats of a container without a cgroup: summed over its pid namespace's processes
        out = one("stats", "--no-stream", "--format", "{{.PIDs}} {{.MemUsage}}", "nopause").stdout
        pids, mem = out.split()[:2]
        assert pids == "1" and not mem.startswith("0B")
    finally:
        one("rm", "-f", "nopause")


def test_keep_id_is_the_users_own_id_inside(one: User) -> None:
    if shutil.which("fuse-overlayfs") is None:
        pytest.skip("fuse-overlayfs is not installed")
    share = one.home / "keep"
    share.mkdir(exist_ok=True)
    os.chown(share, one.uid, one.gid)
    out = one("run", "--rm", "--userns", "keep-id", "-v", f"{share}:/keep", "rl/bb:1", "sh", "-c",
              "id -u; id -g; stat -c %u /bin/busybox; echo k > /keep/f").stdout.split()
    assert out == [str(one.uid), str(one.gid), "0"]  # the image's files stay root's inside
    assert os.stat(share / "f").st_uid == one.uid
    time.sleep(0.3)
    assert not any("fuse-overlayfs" in Path(f"/proc/{p}/cmdline").read_text(errors="replace")
                   for p in one.pids() if Path(f"/proc/{p}/cmdline").exists())


def test_fuse_overlayfs_serves_the_root_where_the_kernel_refuses(one: User) -> None:
    """The fallback of runtime/idmap.detached_root, driven with an option only the kernel's
    overlay rejects (fuse-overlayfs ignores it): the root is served by fuse-overlayfs from
    outside the container, and its daemon ends with the mount's last reference."""
    if shutil.which("fuse-overlayfs") is None:
        pytest.skip("fuse-overlayfs is not installed")
    script = (
        "import os, sys; sys.path.insert(0, REPO)\n"
        "from kobako.engine import rootless; rootless.enter()\n"
        "from kobako.runtime import idmap\n"
        "from kobako.linux import mount as m, namespaces as ns\n"
        "b = os.path.expanduser('~/fb')\n"
        "for d in ('l', 'u', 'w', 'at'): os.makedirs(f'{b}/{d}', exist_ok=True)\n"
        "open(f'{b}/l/f', 'w').write('lower')\n"
        "fd = idmap.detached_root({'type': 'overlay', 'options': [f'lowerdir={b}/l', f'upperdir={b}/u', "
        "f'workdir={b}/w', 'kbtest_only_the_kernel_refuses=1']}, f'{b}/t')\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    ns.unshare(ns.CLONE_NEWNS); m.mount(None, '/', None, m.MS_REC | m.MS_SLAVE)\n"
        "    m.move_mount(fd, f'{b}/at'); open(f'{b}/at/new', 'w').write('up')\n"
        "    print(open(f'{b}/at/f').read(), open('/proc/self/mountinfo').read().count('fuse'),\n"
        "          flush=True)\n"
        "    os._exit(0)\n"
        "os.close(fd); os.waitpid(pid, 0); print(open(f'{b}/u/new').read())\n"
    ).replace("REPO", repr(SRC["path"]), 1)
    cp = subprocess.run(["runuser", "-u", one.name, "--", *one.env(), sys.executable, "-I", "-c", script],
                        capture_output=True, text=True, timeout=60, cwd="/")
    assert cp.returncode == 0, cp.stderr
    lines = cp.stdout.split("\n")
    assert lines[0].split()[0] == "lower" and int(lines[0].split()[1]) >= 1  # a fuse mount served it
    assert lines[1] == "up"  # writes land in the upper dir
    for _ in range(50):  # the daemon ends once no namespace holds the mount
        if not any("fuse-overlayfs" in Path(f"/proc/{p}/cmdline").read_text(errors="replace")
                   for p in one.pids() if Path(f"/proc/{p}/cmdline").exists()):
            break
        time.sleep(0.1)
    else:
        raise AssertionError("fuse-overlayfs outlived the mount")


def test_no_tun_access_is_told_and_leaves_no_container(users, tmp_path: Path) -> None:
    """/dev/net/tun mode 0600 (this host without udev), in a mount namespace of the test's
    own: the user's first command there makes its namespaces from it."""
    u = users["kbrl2"]
    if not (u.home / ".local/share/kobako").exists():
        u("import", str(u.home / "bb.tar"), "rl/bb:1")
    for pid in u.pids():  # a fresh pause process: made inside the namespace below
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)
    node = tmp_path / "tun0600"
    os.mknod(node, 0o600 | 0o020000, os.makedev(10, 200))
    entry = f"import sys; sys.path.insert(0, {SRC['path']!r}); from kobako.cli.main import entry; " \
        "sys.argv[0] = 'kobako'; entry()"
    user_cmd = " ".join(["runuser", "-u", u.name, "--", *u.env(), sys.executable, "-I", "-c", repr(entry),
                         "run", "--rm", "rl/bb:1", "true"])
    cp = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                         f"mount --bind {node} /dev/net/tun && {user_cmd}"],
                        capture_output=True, text=True, timeout=60, cwd="/")
    assert cp.returncode == 125, cp.stderr
    assert "/dev/net/tun" in cp.stderr and "chmod 0666" in cp.stderr and "Traceback" not in cp.stderr
    assert u("ps", "-aq").stdout == ""
    assert not any(Path(f"/proc/{p}/cmdline").read_bytes().startswith(b"/usr/bin/slirp4netns")
                   for p in u.pids() if Path(f"/proc/{p}/cmdline").exists())


def _get(port: int) -> str:
    for _ in range(50):
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/passwd", timeout=2).read().decode()
        except OSError:
            time.sleep(0.1)
    return ""


def test_a_killed_slirp4netns_is_mended_by_the_next_command(one: User) -> None:
    port = free_port()
    one("run", "-d", "--name", "mend", "-p", f"127.0.0.1:{port}:80", "rl/bb:1", "httpd", "-f", "-p", "80",
        "-h", "/etc")
    try:
        assert "root:x:0:0" in _get(port)
        pid = int((one.run / "kobako/network/slirp4netns.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/passwd", timeout=2)
        one("ps")  # any command: a new slirp4netns, the container's forward again
        assert "root:x:0:0" in _get(port)
        assert int((one.run / "kobako/network/slirp4netns.pid").read_text()) != pid
    finally:
        one("rm", "-f", "mend")


def test_a_killed_pause_process_is_replaced_in_the_same_namespaces(one: User) -> None:
    one("run", "-d", "--name", "keep", "rl/bb:1", "sleep", "300")
    try:
        pidfile = one.run / "kobako/pause.pid"
        old = int(pidfile.read_text())
        ns = os.readlink(f"/proc/{old}/ns/user")
        os.kill(old, signal.SIGKILL)
        time.sleep(0.2)
        assert "keep" in one("ps").stdout  # still within reach: through the monitor's namespaces
        assert one("exec", "keep", "echo", "hi").stdout == "hi\n"
        new = int(pidfile.read_text())
        assert new != old and os.readlink(f"/proc/{new}/ns/user") == ns
    finally:
        one("rm", "-f", "keep")


def _pure_v2() -> bool:
    with open("/proc/self/mountinfo") as f:
        kinds = {line.split(" - ")[1].split()[0] for line in f if " - cgroup" in line}
    return kinds == {"cgroup2"}


def test_limits_pause_update_in_a_delegated_cgroup_v2(one: User) -> None:
    """What systemd's Delegate=yes gives a user, made by hand: a cgroup the user owns, the
    session in a child of it. Every limit then lands in the container's own cgroup, below it."""
    if not _pure_v2():
        pytest.skip("needs pure cgroup v2 (tests/v2vm runs it in a VM)")
    cg = Path("/sys/fs/cgroup/kbrl-delegated")
    (cg / "session").mkdir(parents=True, exist_ok=True)
    for p in (cg, *cg.rglob("*")):
        os.chown(p, one.uid, one.gid)

    def in_session(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        entry = f"import sys; sys.path.insert(0, {SRC['path']!r}); from kobako.cli.main import entry; " \
            "sys.argv[0] = 'kobako'; entry()"
        argv = " ".join(shlex.quote(a) for a in ["runuser", "-u", one.name, "--", *one.env(), sys.executable,
                                                 "-I", "-c", entry, *args])
        cp = subprocess.run(["sh", "-c", f"echo $$ > {cg}/session/cgroup.procs && exec {argv}"],
                            capture_output=True, text=True, timeout=300, cwd="/")
        if check and cp.returncode != 0:
            raise AssertionError(f"kobako {' '.join(args)} failed ({cp.returncode}): {cp.stderr}")
        return cp
    try:
        out = in_session("run", "--rm", "--network", "none", "-m", "64m", "--pids-limit", "20",
                         "--cpus", "0.5", "rl/bb:1", "sh", "-c",
                         "cat /proc/self/cgroup /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max "
                         "/sys/fs/cgroup/cpu.max").stdout.split("\n")
        assert out[1:4] == ["67108864", "20", "50000 100000"], out
        oom = in_session("run", "--rm", "--network", "none", "-m", "32m", "rl/bb:1", "sh", "-c",
                         "head -c 200m /dev/zero | tail >/dev/null", check=False)
        assert oom.returncode == 137, oom.stderr
        in_session("run", "-d", "--name", "lim", "--network", "none", "rl/bb:1", "sleep", "300")
        (d,) = [p for p in (cg / "kobako").iterdir() if p.is_dir()]  # below the delegated subtree
        in_session("update", "--memory", "100m", "--pids-limit", "50", "lim")
        assert (d / "memory.max").read_text().strip() == "104857600"
        assert (d / "pids.max").read_text().strip() == "50"
        in_session("pause", "lim")
        assert (d / "cgroup.freeze").read_text().strip() == "1"
        in_session("unpause", "lim")
        assert "lim" in in_session("stats", "--no-stream", "lim").stdout
        in_session("rm", "-f", "lim")
        assert not (cg / "kobako").exists()  # the last container out takes kobako's level with it
    finally:
        in_session("rm", "-f", "lim", check=False)
        for d in [*sorted(cg.rglob("*"), key=lambda p: -len(str(p))), cg]:
            if d.is_dir():
                try:
                    d.rmdir()
                except OSError:
                    pass


def test_push_and_pull_against_a_registry_on_the_hosts_loopback(one: User) -> None:
    import registry_support as rs
    if rs.available() is not None:
        pytest.skip(str(rs.available()))
    with rs.Registry() as reg:
        ref = f"{reg.addr}/rl/bb:1"
        one("tag", "rl/bb:1", ref)
        one("push", ref)
        one("rmi", ref)
        one("pull", ref)
        assert one("run", "--rm", "--network", "none", ref, "echo", "pulled").stdout == "pulled\n"
        one("rmi", ref)


def test_kill_9_of_a_running_command_leaves_nothing_after_rm(one: User) -> None:
    """kill -9 of a user's foreground `kobako run` while its container runs: the next commands
    find the container, `rm -f` takes it, its network namespace and its published port."""
    port = free_port()
    entry = f"import sys; sys.path.insert(0, {SRC['path']!r}); from kobako.cli.main import entry; " \
        "sys.argv[0] = 'kobako'; entry()"
    p = subprocess.Popen(["runuser", "-u", one.name, "--", *one.env(), sys.executable, "-I", "-c", entry,
                          "run", "--name", "killed", "-p", f"127.0.0.1:{port}:80", "rl/bb:1",
                          "httpd", "-f", "-p", "80", "-h", "/etc"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/")
    try:
        assert "root:x:0:0" in _get(port)
        cli = [pid for pid in one.pids()
               if b"killed" in Path(f"/proc/{pid}/cmdline").read_bytes() and pid != p.pid]
        for pid in cli:  # the CLI (runuser's child), not the container
            if b"kobako.cli.main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)
    finally:
        p.wait(timeout=30)
    assert "killed" in one("ps", "-a").stdout
    one("rm", "-f", "killed")
    assert "killed" not in one("ps", "-a").stdout
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/passwd", timeout=2)
    netns = one.sh(f"ls {one.run}/kobako/netns").stdout.split()
    assert netns == ["kobako-user"], netns  # only the user's own network namespace is left
    assert not os.listdir(one.run / "kobako/network/endpoints")
