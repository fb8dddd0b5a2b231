"""The pty through --console-socket, --debug, --log, spec, features, --systemd-cgroup."""

from __future__ import annotations

import json
import os

import pytest
import support

pytestmark = pytest.mark.root


def test_console_socket_pty(runtime, bundle, hostdir):
    d = hostdir("pty")
    b = bundle(["sh", "-c", "tty; echo hi-through-the-pty"], edit={"process.terminal": True})
    cs = support.ConsoleSocket(d / "console.sock")
    try:
        cid = runtime.new_id("pty")
        runtime.create(cid, b, "--console-socket", cs.path)
        master = cs.receive()
        assert os.isatty(master)
        runtime.ok("start", cid)
        out = cs.read_until(b"hi-through-the-pty").decode(errors="replace")
    finally:
        cs.close()
    lines = [x.strip() for x in out.splitlines()]
    assert "hi-through-the-pty" in lines, out
    tty = lines[lines.index("hi-through-the-pty") - 1]
    assert tty.startswith("/dev/pts/"), out
    assert "\r\n" in out  # a real terminal: the line discipline turns \n into \r\n


def test_console_socket_pty_is_the_controlling_terminal(runtime, bundle, hostdir):
    d = hostdir("pty")
    b = bundle(["sh", "-c", "echo sid=$(cut -d' ' -f6 /proc/self/stat) tty=$(cut -d' ' -f7 /proc/self/stat); "
                            "test -t 0 && test -t 1 && test -t 2 && echo all-ttys"],
               edit={"process.terminal": True})
    cs = support.ConsoleSocket(d / "console.sock")
    try:
        cid = runtime.new_id("ctty")
        runtime.create(cid, b, "--console-socket", cs.path)
        cs.receive()
        runtime.ok("start", cid)
        out = cs.read_until(b"all-ttys").decode(errors="replace")
    finally:
        cs.close()
    assert "all-ttys" in out, out
    tty_nr = int(out.split("tty=")[1].split()[0])
    assert tty_nr != 0, "the pty is not the controlling terminal"


def test_terminal_without_console_socket_fails_cleanly(runtime, bundle):
    b = bundle(["true"], edit={"process.terminal": True})
    cid = runtime.new_id("noconsole")
    support.assert_clean_error(runtime("create", "--bundle", b.path, cid))
    assert not (runtime.root / cid).exists()
    assert support.cgroup_dirs(cid) == []


def test_run_with_a_terminal_and_no_console_socket_proxies_the_pty(runtime, bundle):
    """runc's `run` holds the pty itself when nobody gave a console socket: stdin goes
    in through the pty, its output comes back, the exit status is the program's."""
    b = bundle(["sh", "-c", "tty; read x; echo got:$x; exit 3"], edit={"process.terminal": True})
    cid = runtime.new_id("ttyrun")
    cp = runtime("run", "--bundle", b.path, cid, input="abc\n")
    assert cp.returncode == 3, cp.stderr
    assert "/dev/pts/" in cp.stdout
    assert "got:abc" in cp.stdout
    assert cp.stdout.count("abc") == 2  # a real terminal echoed the typed line
    assert not (runtime.root / cid).exists()
    assert support.cgroup_dirs(cid) == []


def test_run_detached_with_a_terminal_needs_a_console_socket(runtime, bundle):
    support.lacks("runc crun", "runc's message differs")
    b = bundle(["true"], edit={"process.terminal": True})
    cid = runtime.new_id("ttydetach")
    support.assert_clean_error(runtime("run", "-d", "--bundle", b.path, cid))
    assert not (runtime.root / cid).exists()
    assert support.cgroup_dirs(cid) == []


def test_console_socket_that_does_not_exist(runtime, bundle, hostdir):
    b = bundle(["true"], edit={"process.terminal": True})
    cid = runtime.new_id("badconsole")
    cp = runtime("create", "--bundle", b.path, "--console-socket", hostdir("cs") / "none.sock", cid)
    support.assert_clean_error(cp)
    assert not (runtime.root / cid).exists()
    assert support.cgroup_dirs(cid) == []


def test_debug_prints_the_step_trace(runtime, bundle):
    support.lacks("runc crun", "the step trace is kobako's")
    cp = runtime("run", "--bundle", bundle(["true"]).path, runtime.new_id("debug"), global_args=["--debug"])
    assert cp.returncode == 0, cp.stderr
    for primitive in ("unshare(2)", "mount(2)", "pivot_root(2)", "sethostname(2)"):
        assert primitive in cp.stderr, f"{primitive} missing from the --debug trace"
    assert "Traceback" not in cp.stderr


def test_debug_without_debug_is_quiet(runtime, bundle):
    cp = runtime("run", "--bundle", bundle(["true"]).path, runtime.new_id("quiet"))
    assert cp.returncode == 0 and cp.stderr == ""


def test_log_json_on_failure(runtime, hostdir):
    d = hostdir("log")
    log = d / "runtime.log"
    cid = runtime.new_id("logfail")
    cp = runtime("run", "--bundle", d, cid, global_args=["--log", log, "--log-format", "json"])
    assert cp.returncode != 0
    assert "Traceback" not in cp.stderr
    entries = [json.loads(x) for x in log.read_text().splitlines() if x.strip()]
    errors = [e for e in entries if e.get("level") == "error"]
    assert errors, f"no error entry in {entries}"
    assert "config.json" in errors[-1]["msg"]
    assert errors[-1].get("time")
    assert not (runtime.root / cid).exists()


def test_log_text_on_failure(runtime, hostdir):
    d = hostdir("log")
    log = d / "runtime.log"
    cp = runtime("run", "--bundle", d, runtime.new_id("logtext"), global_args=["--log", log])
    assert cp.returncode != 0
    text = log.read_text()
    assert "level=error" in text and "config.json" in text


def test_debug_trace_goes_to_the_log_file(runtime, bundle, hostdir):
    support.lacks("runc crun", "the step trace is kobako's")
    log = hostdir("log") / "debug.log"
    cp = runtime("run", "--bundle", bundle(["true"]).path, runtime.new_id("debuglog"),
                 global_args=["--debug", "--log", log, "--log-format", "json"])
    assert cp.returncode == 0, cp.stderr
    msgs = [json.loads(x)["msg"] for x in log.read_text().splitlines()]
    assert any("pivot_root(2)" in m for m in msgs)


def test_spec_writes_a_config_and_refuses_to_overwrite(runtime, hostdir):
    d = hostdir("spec")
    runtime.ok("spec", cwd=d)
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["root"]["path"] == "rootfs" and cfg["process"]["args"] == ["sh"]
    (d / "config.json").write_text('{"mine": true}')
    cp = runtime("spec", cwd=d)
    support.assert_clean_error(cp, "config.json")
    assert json.loads((d / "config.json").read_text()) == {"mine": True}


def test_spec_bundle_flag(runtime, hostdir):
    d = hostdir("specb")
    runtime.ok("spec", "--bundle", d)
    assert json.loads((d / "config.json").read_text())["ociVersion"]


def test_spec_rootless(runtime, hostdir):
    d = hostdir("specr")
    runtime.ok("spec", "--rootless", "--bundle", d)
    cfg = json.loads((d / "config.json").read_text())
    assert any(n["type"] == "user" for n in cfg["linux"]["namespaces"])
    assert cfg["linux"]["uidMappings"]


def test_features(runtime):
    feats = json.loads(runtime.ok("features").stdout)
    assert {"pid", "network", "mount", "ipc", "uts", "user", "cgroup"} <= set(feats["linux"]["namespaces"])
    assert {"prestart", "createRuntime", "createContainer", "startContainer", "poststart",
            "poststop"} <= set(feats["hooks"])
    assert feats["ociVersionMin"] and feats["ociVersionMax"]
    assert "CAP_SYS_ADMIN" in feats["linux"]["capabilities"]
    assert "rbind" in feats["mountOptions"]
    if runtime.is_kobako:
        assert "time" in feats["linux"]["namespaces"]


def test_systemd_cgroup_is_refused_clearly(runtime, bundle):
    support.lacks("runc crun", "they implement the systemd driver")
    cid = runtime.new_id("systemd")
    cp = runtime("run", "--bundle", bundle(["true"]).path, cid, global_args=["--systemd-cgroup"])
    support.assert_clean_error(cp, "systemd")
    assert not (runtime.root / cid).exists()


def test_version(runtime):
    out = runtime.ok("--version").stdout
    assert "version" in out and "spec" in out


def test_unknown_command_fails_cleanly(runtime):
    support.assert_clean_error(runtime("frobnicate"))


def test_unknown_flag_fails_cleanly(runtime):
    support.assert_clean_error(runtime("state", "--frobnicate", "x"))


def test_exec_tty_through_the_console_socket(runtime, running, hostdir):
    cid, _, _ = running
    cs = support.ConsoleSocket(hostdir("xpty") / "console.sock")
    try:
        p = runtime.popen("exec", "--detach", "--tty", "--console-socket", cs.path, cid,
                          "sh", "-c", "tty; echo exec-pty-ok")
        try:
            cs.receive()
        except TimeoutError:
            p.kill()
            p.wait()
            raise AssertionError("no pty master arrived: " + open(p.err_path).read()) from None
        out = cs.read_until(b"exec-pty-ok").decode(errors="replace")
        assert p.wait(timeout=30) == 0, open(p.err_path).read()
    finally:
        cs.close()
    lines = [x.strip() for x in out.splitlines()]
    assert "exec-pty-ok" in lines, out
    assert lines[lines.index("exec-pty-ok") - 1].startswith("/dev/pts/")
