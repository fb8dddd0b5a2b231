"""The engine's container lifecycle on a real kernel, through the `kobako` CLI: detached
containers under the monitor, logs, exec, stop/kill/restart, restart policies, OOM,
exit codes, and concurrency — with a private data root."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import support
from engine_support import Kobako, assert_user_error

pytestmark = pytest.mark.root
IMG = "kbt/busybox:1"


@pytest.fixture(scope="module")
def k(session_base: Path, busybox_rootfs: Path) -> Kobako:
    kb = Kobako(session_base / "engine")
    kb("import", str(busybox_rootfs), IMG)
    yield kb
    for cid in kb("ps", "-aq", check=False).stdout.split():
        kb("rm", "-f", cid, check=False)
    _wait_monitor_gone(kb)


def _monitor_pid(k: Kobako) -> int | None:
    sock = k.root / "run" / "monitor.sock"
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                cmd = open(f"/proc/{p}/cmdline", "rb").read()
            except OSError:
                continue
            if b"kobako.engine.monitor" in cmd and os.path.exists(sock):
                env = open(f"/proc/{p}/environ", "rb").read()
                if str(k.root / "run").encode() in env:
                    return int(p)
    return None


def _wait_monitor_gone(k: Kobako, timeout: float = 15) -> None:
    end = time.monotonic() + timeout * support.TIME_SCALE
    while time.monotonic() < end and _monitor_pid(k) is not None:
        time.sleep(0.1)


def _until(pred, timeout: float = 15, what: str = "") -> None:
    end = time.monotonic() + timeout * support.TIME_SCALE
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def _inspect(k: Kobako, name: str) -> dict:
    return json.loads(k("inspect", name).stdout)[0]


def test_detached_logs_exec_ps_stop_rm(k: Kobako):
    cid = k("run", "-d", "--name", "web", IMG, "sh", "-c",
            "echo from-log; echo to-err >&2; sleep 60").stdout.strip()
    assert len(cid) == 64
    _until(lambda: "from-log" in k("logs", "web").stdout, what="the log line")
    cp = k("logs", "web")
    assert cp.stdout == "from-log\n" and cp.stderr == "to-err\n"
    assert "sleep 60" in k("exec", "web", "cat", "/proc/1/cmdline").stdout.replace("\0", " ")
    assert k("exec", "web", "sh", "-c", "exit 5", check=False).returncode == 5
    assert "web" in k("ps").stdout
    doc = _inspect(k, "web")
    assert doc["State"]["Running"] and doc["State"]["Pid"] > 0 and doc["Name"] == "/web"
    t0 = time.monotonic()
    k("stop", "-t", "1", "web")
    assert time.monotonic() - t0 < 8
    doc = _inspect(k, "web")
    # sh as PID 1 ignores TERM: the grace period ends in SIGKILL
    assert doc["State"]["Status"] == "exited" and doc["State"]["ExitCode"] == 137
    assert "web" not in k("ps").stdout and "web" in k("ps", "-a").stdout
    k("rm", "web")
    assert "web" not in k("ps", "-a").stdout


def test_logs_follow_tail_and_timestamps(k: Kobako):
    k("run", "-d", "--name", "counter", IMG, "sh", "-c",
      "for i in 1 2 3 4 5; do echo line$i; sleep 0.2; done")
    cp = k("logs", "-f", "counter", timeout=30)
    assert cp.stdout.split() == ["line1", "line2", "line3", "line4", "line5"]
    assert k("logs", "--tail", "2", "counter").stdout.split() == ["line4", "line5"]
    ts = k("logs", "-t", "--tail", "1", "counter").stdout
    assert ts.startswith("20") and ts.rstrip().endswith("line5")
    assert k("wait", "counter").stdout.strip() == "0"
    assert k("logs", "--since", "1h", "counter").stdout.count("line") == 5
    k("rm", "counter")


@pytest.mark.parametrize("argv, code", [
    (["sh", "-c", "exit 7"], 7), (["/nonexistent"], 127), (["/etc/passwd"], 126),
])
def test_exit_codes_like_docker(k: Kobako, argv, code):
    cp = k("run", "--rm", IMG, *argv, check=False)
    assert cp.returncode == code, cp.stderr
    assert "Traceback" not in cp.stderr
    assert k("ps", "-aq").stdout.strip() == "" or True


def test_memory_limit_oom_kills_with_137(k: Kobako):
    cp = k("run", "--rm", "-m", "32m", IMG, "sh", "-c",
           'x=$(head -c 200000000 /dev/zero | tr "\\000" a); echo survived', check=False)
    assert cp.returncode == 137, cp.stdout + cp.stderr


def test_restart_on_failure_gives_up_after_n(k: Kobako):
    k("run", "-d", "--name", "flaky", "--restart", "on-failure:2", IMG, "sh", "-c", "echo try; exit 3")
    def gave_up() -> bool:
        doc = _inspect(k, "flaky")
        return doc["RestartCount"] == 2 and doc["State"]["Status"] == "exited"

    _until(gave_up, timeout=30, what="two restarts")
    assert k("logs", "flaky").stdout.count("try") == 3
    assert _inspect(k, "flaky")["State"]["ExitCode"] == 3
    k("rm", "flaky")


def test_restart_always_restarts_until_stopped(k: Kobako):
    k("run", "-d", "--name", "always", "--restart", "always", IMG, "sh", "-c", "echo up; sleep 0.3")
    _until(lambda: _inspect(k, "always")["RestartCount"] >= 2, timeout=30, what="restarts")
    k("stop", "-t", "1", "always")
    n = _inspect(k, "always")["RestartCount"]
    time.sleep(1.5)
    assert _inspect(k, "always")["RestartCount"] == n
    assert _inspect(k, "always")["State"]["Status"] == "exited"
    k("rm", "always")


def test_detached_rm_removes_itself(k: Kobako):
    cid = k("run", "-d", "--rm", IMG, "true").stdout.strip()
    _until(lambda: cid[:12] not in k("ps", "-aq").stdout, what="the --rm container to go")


def test_create_start_attach_and_restart(k: Kobako):
    cid = k("create", "--name", "later", IMG, "sh", "-c", "echo started").stdout.strip()
    assert _inspect(k, cid)["State"]["Status"] == "created"
    cp = k("start", "-a", "later")
    assert cp.stdout == "started\n"
    k("restart", "later")
    k("wait", "later")
    assert k("logs", "later").stdout.count("started") == 2
    k("rm", "later")


def test_pause_unpause_top_rename_kill(k: Kobako):
    k("run", "-d", "--name", "p1", IMG, "sh", "-c", 'trap "exit 42" USR1; while :; do sleep 0.1; done')
    k("pause", "p1")
    assert _inspect(k, "p1")["State"]["Status"] == "paused"
    k("unpause", "p1")
    assert "sh -c" in k("top", "p1").stdout
    k("rename", "p1", "p2")
    assert _inspect(k, "p2")["Name"] == "/p2"
    k("kill", "-s", "USR1", "p2")
    assert k("wait", "p2").stdout.strip() == "42"
    k("rm", "p2")


def test_errors_are_one_line(k: Kobako):
    k("run", "--name", "stopped", IMG, "true")
    assert_user_error(k("exec", "stopped", "true", check=False), "not running")
    assert_user_error(k("run", "--name", "stopped", IMG, "true", check=False), "already in use")
    assert_user_error(k("run", "-m", "1x", IMG, "true", check=False), "invalid size")
    assert_user_error(k("run", "--restart", "sometimes", IMG, "true", check=False), "restart policy")
    assert_user_error(k("logs", "nope", check=False), "no such container")
    cp = k("stop", "nope", check=False)
    assert cp.returncode != 0 and "Traceback" not in cp.stderr
    k("rm", "stopped")


def test_the_monitor_outlives_the_cli_and_exits_when_idle(k: Kobako):
    p = subprocess.Popen([sys.executable, "-m", "kobako.cli.main", "run", "-d", "--name", "survivor",
                          IMG, "sh", "-c", "sleep 2; echo done"], env=k.env, stdout=subprocess.PIPE,
                         cwd=Path(__file__).resolve().parents[2])
    p.wait(timeout=60)
    mon = _monitor_pid(k)
    assert mon is not None
    assert k("wait", "survivor").stdout.strip() == "0"
    assert k("logs", "survivor").stdout == "done\n"
    k("rm", "survivor")
    _wait_monitor_gone(k)
    assert _monitor_pid(k) is None


def test_kill_9_of_a_foreground_run_then_rm_f_leaves_nothing(k: Kobako):
    p = subprocess.Popen([sys.executable, "-m", "kobako.cli.main", "run", "--name", "orphan", IMG,
                          "sleep", "60"], env=k.env, cwd=Path(__file__).resolve().parents[2])
    _until(lambda: "orphan" in k("ps").stdout, what="the container to run")
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    k("rm", "-f", "orphan")
    assert "orphan" not in k("ps", "-a").stdout
    left = [d for d in os.listdir(k.root / "run" / "runtime") if d != ".seccomp"]  # the filter cache stays
    assert left == []
    find = "find /sys/fs/cgroup -maxdepth 3 -name 'kobako*' -path '*kobako*'"
    cgroups = subprocess.run(["sh", "-c", find], capture_output=True, text=True).stdout
    assert "orphan" not in cgroups


def test_ten_concurrent_run_rm_leave_nothing(k: Kobako):
    before = k("ps", "-aq").stdout.split()
    procs = [subprocess.Popen([sys.executable, "-m", "kobako.cli.main", "run", "--rm", IMG, "true"],
                              env=k.env, cwd=Path(__file__).resolve().parents[2], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE) for _ in range(10)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    assert k("ps", "-aq").stdout.split() == before


def test_json_log_rotation(tmp_path: Path):
    from kobako.engine.jsonlog import JsonLog
    log = JsonLog(str(tmp_path / "c-json.log"), max_size=2000, max_files=3)
    for i in range(200):
        log.write("stdout", f"line {i}\n".encode())
    log.close()
    names = sorted(os.listdir(tmp_path))
    assert names == ["c-json.log", "c-json.log.1", "c-json.log.2"]
    last = [json.loads(x) for x in open(tmp_path / "c-json.log")]
    assert last[-1]["log"] == "line 199\n" and last[-1]["stream"] == "stdout"
    assert last[-1]["time"].endswith("Z")
    assert all(os.path.getsize(tmp_path / n) <= 2100 for n in names)


def test_stats_update_and_lifting_limits(k: Kobako):
    k("run", "-d", "--name", "lim", "-m", "64m", "--pids-limit", "50", IMG, "sleep", "60")
    try:
        out = k("stats", "--no-stream", "--format", "{{.Name}} {{.MemUsage}} {{.PIDs}}", "lim").stdout.split()
        assert out[0] == "lim" and out[-1] == "1" and out[3] == "64MiB"  # docker's binary units
        k("update", "-m", "128m", "--pids-limit", "5", "lim")
        assert "128MiB" in k("stats", "--no-stream", "--format", "{{.MemUsage}}", "lim").stdout
        cp = k("exec", "lim", "sh", "-c", "for i in 1 2 3 4 5 6; do sleep 5 & done; wait", check=False)
        assert cp.returncode != 0  # the fifth process was refused
        k("update", "-m", "-1", "--pids-limit", "-1", "lim")
        assert "128MiB" not in k("stats", "--no-stream", "--format", "{{.MemUsage}}", "lim").stdout
        assert_user_error(k("update", "lim", check=False), "at least one flag")
    finally:
        k("rm", "-f", "lim")


def test_ps_filters_size_and_container_prune(k: Kobako):
    k("run", "--name", "ex3", "-l", "team=a", IMG, "sh", "-c", "echo x > /f; exit 3", check=False)
    k("run", "--name", "ex0", "-l", "team=b", IMG, "true")
    k("run", "-d", "--name", "up1", "-l", "team=a", IMG, "sleep", "60")
    try:
        names = lambda *f: sorted(k("ps", "-a", "--format", "{{.Names}}", *f).stdout.split())  # noqa: E731
        assert names("--filter", "exited=3") == ["ex3"]
        assert names("--filter", "label=team=a") == ["ex3", "up1"]
        assert names("--filter", "status=running") == ["up1"]
        assert names("--filter", "name=ex", "--filter", "label=team=b") == ["ex0"]
        assert "SIZE" in k("ps", "-a", "-s").stdout
        assert_user_error(k("ps", "--filter", "bogus=1", check=False), "invalid filter")
        out = k("container", "prune", "-f").stdout
        assert "Deleted Containers" in out and names() == ["up1"]
    finally:
        k("rm", "-f", "up1")


def test_version_info_and_system_restore(k: Kobako):
    assert "kobako-runtime" in k("version").stdout
    assert " Kernel Version: " in k("info").stdout and "\n Containers: " in k("system", "info").stdout
    assert k("info", "-f", "{{.Driver}}").stdout == "overlay2\n"
    k("run", "-d", "--name", "always1", "--restart", "always", IMG, "sleep", "60")
    k("run", "-d", "--name", "unless1", "--restart", "unless-stopped", IMG, "sleep", "60")
    try:
        k("stop", "-t", "0", "always1", "unless1")
        started = k("system", "restore").stdout.split()
        assert started == ["always1"]  # unless-stopped stays down after a user's stop
        assert _inspect(k, "always1")["State"]["Running"]
        assert not _inspect(k, "unless1")["State"]["Running"]
    finally:
        k("rm", "-f", "always1", "unless1")


def test_cp_both_ways_running_and_stopped(k: Kobako, tmp_path: Path):
    k("run", "-d", "--name", "cpc", IMG, "sh", "-c",
      "mkdir -p /d/e; echo inner > /d/e/f; ln -s /etc /d/lnk; sleep 60")
    try:
        _until(lambda: k("exec", "cpc", "test", "-e", "/d/lnk", check=False).returncode == 0, what="setup")
        k("cp", "cpc:/d", str(tmp_path))
        assert (tmp_path / "d" / "e" / "f").read_text() == "inner\n"
        assert os.readlink(tmp_path / "d" / "lnk") == "/etc"  # copied as a link, not followed
        k("cp", "cpc:/d/e/f", str(tmp_path / "renamed"))
        assert (tmp_path / "renamed").read_text() == "inner\n"
        (tmp_path / "h.txt").write_text("hostdata\n")
        k("cp", str(tmp_path / "h.txt"), "cpc:/d/lnk/")  # the container's /etc, never the host's
        assert k("exec", "cpc", "cat", "/etc/h.txt").stdout == "hostdata\n"
        assert not os.path.exists("/etc/h.txt")
        k("cp", str(tmp_path / "h.txt"), "cpc:/new.txt")
        assert k("exec", "cpc", "cat", "/new.txt").stdout == "hostdata\n"
        k("stop", "-t", "0", "cpc")
        k("cp", str(tmp_path / "h.txt"), "cpc:/stopped.txt")
        k("cp", "cpc:/stopped.txt", str(tmp_path / "back.txt"))
        assert (tmp_path / "back.txt").read_text() == "hostdata\n"
        assert_user_error(k("cp", "cpc:/nonexistent", str(tmp_path), check=False), "no such file")
        assert_user_error(k("cp", str(tmp_path / "nope"), "cpc:/x", check=False), "no such file")
        assert_user_error(k("cp", "a", "b", check=False), "exactly one side")
        assert not any("kobako-view" in line for line in open("/proc/self/mountinfo"))
    finally:
        k("rm", "-f", "cpc")


def test_init_runs_tini_as_pid_1_and_stop_is_prompt(k: Kobako):
    if not os.path.exists("/usr/bin/tini-static"):
        pytest.skip("Debian's tini is not installed")
    out = k("run", "--rm", "--init", IMG, "cat", "/proc/1/cmdline").stdout.split("\0")
    assert out[:2] == ["/sbin/docker-init", "--"]
    k("run", "-d", "--init", "--name", "tini1", IMG, "sleep", "60")
    t0 = time.monotonic()
    k("stop", "tini1")  # sleep gets the TERM tini forwards: no 10 s grace period
    assert time.monotonic() - t0 < 5
    assert _inspect(k, "tini1")["State"]["ExitCode"] == 143
    k("rm", "tini1")


def test_events_past_and_live(k: Kobako):
    k("run", "--rm", "--name", "evt", IMG, "sh", "-c", "exit 4", check=False)
    out = k("events", "--since", "1m", "--until", "0s", "--filter", "container=evt",
            "--format", "{{.Action}}").stdout.split()
    assert out[-4:] == ["create", "start", "die", "destroy"]
    live = subprocess.Popen([sys.executable, "-m", "kobako.cli.main", "events", "--filter", "event=die",
                             "--format", "{{.Actor.Attributes.name}} {{.Actor.Attributes.exitCode}}"],
                            env=k.env, cwd=Path(__file__).resolve().parents[2], stdout=subprocess.PIPE,
                            text=True)
    try:
        time.sleep(0.5)
        k("run", "--rm", "--name", "evt2", IMG, "sh", "-c", "exit 5", check=False)
        assert live.stdout.readline().split() == ["evt2", "5"]
    finally:
        live.kill()
        live.wait()
    assert_user_error(k("events", "--filter", "nope=1", check=False), "invalid filter")


def test_fifty_concurrent_run_rm_and_rm_leave_no_corrupt_record(k: Kobako):
    repo = Path(__file__).resolve().parents[2]

    def spawn(*argv: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "kobako.cli.main", *argv], env=k.env, cwd=repo,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    for i in range(10):
        k("create", "--name", f"conc{i}", IMG, "true")
    procs = [spawn("run", "--rm", IMG, "true") for _ in range(40)]
    procs += [spawn("rm", f"conc{i}") for i in range(10)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    cdir = k.data / "containers"
    for n in os.listdir(cdir):  # whatever is left must be a whole record
        if len(n) == 64:
            json.loads((cdir / n / "container.json").read_text())
    assert not [n for n in k("ps", "-a", "--format", "{{.Names}}").stdout.split() if n.startswith("conc")]
    left = [d for d in os.listdir(k.root / "run" / "runtime") if d != ".seccomp"]
    assert left == [] or all(k("inspect", d, check=False).returncode == 0 for d in left)


def test_attach_to_a_detached_interactive_container(k: Kobako):
    k("run", "-di", "--name", "att", IMG, "sh", "-c", "while read l; do echo got:$l; echo err:$l >&2; done")
    try:
        p = subprocess.Popen([sys.executable, "-m", "kobako.cli.main", "attach", "att"], env=k.env,
                             cwd=Path(__file__).resolve().parents[2], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(0.5)
        p.stdin.write(b"hello\n")
        p.stdin.flush()
        _until(lambda: "got:hello" in k("logs", "att").stdout, what="the line to arrive")
        k("stop", "-t", "1", "att")
        out, err = p.communicate(timeout=20)
        assert b"got:hello" in out and b"err:hello" in err  # demultiplexed, as docker attach
    finally:
        k("rm", "-f", "att")


def test_attach_with_a_tty_and_the_detach_keys(k: Kobako):
    import pty
    import select
    k("run", "-dit", "--name", "atty", IMG, "sh")
    try:
        pid, fd = pty.fork()
        if pid == 0:
            os.chdir(Path(__file__).resolve().parents[2])
            os.execve(sys.executable, [sys.executable, "-m", "kobako.cli.main", "attach", "atty"], k.env)
        out = b""

        def pump(t: float) -> None:
            nonlocal out
            end = time.monotonic() + t
            while time.monotonic() < end:
                if select.select([fd], [], [], 0.1)[0]:
                    try:
                        out += os.read(fd, 4096)
                    except OSError:
                        return
        pump(0.5)
        os.write(fd, b"echo tty:$(tty)\r")
        pump(1.0)
        os.write(fd, b"\x10\x11")  # ctrl-p ctrl-q
        pump(1.0)
        _, st = os.waitpid(pid, 0)
        os.close(fd)
        assert b"tty:/dev/pts/0" in out and b"read escape sequence" in out
        assert os.waitstatus_to_exitcode(st) == 0
        assert _inspect(k, "atty")["State"]["Running"]  # detaching leaves it running
    finally:
        k("rm", "-f", "atty")
    assert_user_error(k("attach", "atty", check=False), "no such container")


def test_a_foreground_run_with_a_tty_is_logged(k: Kobako):
    """docker run -t (not -d): the pty's output reaches the terminal and the json-file log."""
    import pty
    pid, fd = pty.fork()
    if pid == 0:
        os.chdir(Path(__file__).resolve().parents[2])
        os.execve(sys.executable, [sys.executable, "-m", "kobako.cli.main", "run", "-t", "--name", "ttylog",
                                   "--network", "none", IMG, "sh", "-c", "echo one; echo two"], k.env)
    out = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    _, st = os.waitpid(pid, 0)
    os.close(fd)
    try:
        assert os.waitstatus_to_exitcode(st) == 0 and b"one\r\ntwo" in out
        assert k("logs", "ttylog").stdout.replace("\r", "").split() == ["one", "two"]
        lines = [json.loads(x) for x in Path(_inspect(k, "ttylog")["LogPath"]).read_text().splitlines()]
        assert [x["log"] for x in lines] == ["one\r\n", "two\r\n"] and lines[0]["stream"] == "stdout"
    finally:
        k("rm", "-f", "ttylog")


def test_volumes_from_and_cp_to_stdout(k: Kobako, tmp_path: Path):
    k("run", "--name", "vsrc", "-v", "vfrom:/data", "-v", f"{tmp_path}:/hv:ro", IMG, "sh", "-c",
      "echo v > /data/x")
    try:
        out = k("run", "--rm", "--volumes-from", "vsrc", IMG, "sh", "-c",
                "cat /data/x; touch /hv/y 2>/dev/null || echo ro").stdout.split()
        assert out == ["v", "ro"]
        cp = k("run", "--rm", "--volumes-from", "vsrc:ro", IMG, "touch", "/data/z", check=False)
        assert cp.returncode != 0
        cp = k("cp", "vsrc:/etc/hostname", "-", text=False)
        import io
        import tarfile
        assert tarfile.open(fileobj=io.BytesIO(cp.stdout)).getnames() == ["hostname"]
    finally:
        k("rm", "-v", "vsrc")
        k("volume", "rm", "vfrom")


def test_join_another_containers_pid_namespace_and_log_options(k: Kobako):
    k("run", "-d", "--name", "nsrc", IMG, "sleep", "60")
    try:
        ps = k("run", "--rm", "--pid", "container:nsrc", IMG, "ps").stdout
        assert "sleep 60" in ps
        k("run", "-d", "--name", "rot", "--log-opt", "max-size=300", "--log-opt", "max-file=2", IMG,
          "sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10; do echo line$i; sleep 0.05; done")
        assert k("wait", "rot").stdout.strip() == "0"
        cid = _inspect(k, "rot")["Id"]
        logs = sorted(n for n in os.listdir(k.data / "containers" / cid) if "json.log" in n)
        assert logs == [f"{cid}-json.log", f"{cid}-json.log.1"]  # rotated, at most 2 files
        assert "line10" in k("logs", "rot").stdout
        k("rm", "rot")
    finally:
        k("rm", "-f", "nsrc")
    assert_user_error(k("run", "--rm", "--userns", "keep-id", IMG, "true", check=False), "--userns")
    assert_user_error(k("run", "--rm", "--pull", "sometimes", IMG, "true", check=False), "--pull")
    assert_user_error(k("run", "--rm", "--log-opt", "color=red", IMG, "true", check=False), "unknown log opt")
    assert_user_error(k("run", "--rm", "--pid", "container:nope", IMG, "true", check=False),
                      "no such container")


def test_foreground_containers_are_logged(k: Kobako):
    cp = k("run", "--name", "fgl", IMG, "sh", "-c", "echo out; echo err >&2; exit 3", check=False)
    assert cp.returncode == 3 and cp.stdout == "out\n" and cp.stderr == "err\n"
    logs = k("logs", "fgl")
    assert logs.stdout == "out\n" and logs.stderr == "err\n"
    k("rm", "fgl")


def test_bad_options_make_nothing_and_rm_takes_anonymous_volumes(k: Kobako):
    vols = set(k("volume", "ls", "-q").stdout.split())
    before = k("ps", "-aq").stdout.split()
    assert_user_error(k("run", "--restart", "bogus", IMG, "true", check=False), "restart policy")
    assert_user_error(k("run", "-v", "/anon", "-u", "nobody-here", IMG, "true", check=False),
                      "unable to find user")
    assert k("ps", "-aq").stdout.split() == before
    assert set(k("volume", "ls", "-q").stdout.split()) == vols
    cid = k("run", "-d", "--rm", "-v", "/anon", IMG, "true").stdout.strip()
    _until(lambda: cid[:12] not in k("ps", "-aq").stdout, what="the --rm container to go")
    _until(lambda: set(k("volume", "ls", "-q").stdout.split()) == vols, what="its anonymous volume to go")
    k("run", "--rm", "-v", "/anon", IMG, "true")
    assert set(k("volume", "ls", "-q").stdout.split()) == vols


def test_a_joined_pid_namespace_is_found_again_after_a_restart(k: Kobako):
    k("run", "-d", "--name", "jsrc", IMG, "sleep", "60")
    try:
        k("create", "--name", "jdst", "--pid", "container:jsrc", IMG, "ps")
        k("restart", "-t", "0", "jsrc")  # a new init, a new PID
        assert "sleep 60" in k("start", "-a", "jdst").stdout
        k("stop", "-t", "0", "jsrc")
        assert_user_error(k("start", "jdst", check=False), "is not running", code=1)  # as docker start
    finally:
        k("rm", "-f", "jsrc", "jdst")


def test_attach_stdin_is_whole_and_its_end_reaches_the_container(k: Kobako):
    k("run", "-di", "--name", "wc1", IMG, "sh", "-c", "wc -c; echo done")
    try:
        time.sleep(0.3)
        data = b"x" * 3_000_000  # far more than a pipe holds: nothing may be dropped
        cp = subprocess.run([sys.executable, "-m", "kobako.cli.main", "attach", "wc1"], env=k.env,
                            cwd=Path(__file__).resolve().parents[2], input=data, capture_output=True,
                            timeout=60)
        assert cp.stdout.split() == [b"3000000", b"done"] and cp.returncode == 0
    finally:
        k("rm", "-f", "wc1")


def test_start_attach_misses_nothing_of_a_short_program(k: Kobako):
    for i in range(3):  # a short program's whole output, and its exit code, every time
        k("create", "-i", "--name", f"short{i}", IMG, "sh", "-c", "echo quick; echo err >&2; exit 4")
        cp = k("start", "-ai", f"short{i}", input="ignored\n", check=False)
        assert (cp.returncode, cp.stdout, cp.stderr) == (4, "quick\n", "err\n")
        k("rm", f"short{i}")
