"""Runtime pieces that need no root: state files, hooks, signals, program lookup,
the parent/child channel, exec's process building."""

from __future__ import annotations

import json
import os
import signal

import pytest

from kobako.runtime import container, hooks, process, spec, state
from kobako.runtime.commands import exec as exec_cmd
from kobako.runtime.errors import RuntimeFailure, describe_oserror
from kobako.runtime.log import Log
from kobako.runtime.main import parse
from kobako.runtime.sync import Channel

# -- state ------------------------------------------------------------------------------------


def test_start_time_of_self_and_of_a_missing_pid():
    assert isinstance(state.start_time(os.getpid()), int)
    assert state.start_time(2**22 + 12345) is None


def test_make_dir_claims_the_id_once(tmp_path):
    c = state.Container(str(tmp_path / "root"), "c1")
    c.make_dir()
    assert (tmp_path / "root" / "c1").is_dir()
    with pytest.raises(RuntimeFailure, match="already exists"):
        state.Container(str(tmp_path / "root"), "c1").make_dir()
    c.unlock()


def test_save_is_atomic_json_and_load_reads_it(tmp_path):
    c = state.Container(str(tmp_path), "c1")
    c.make_dir()
    c.data = {"id": "c1", "pid": 0, "status": "created", "uni": "小箱"}
    c.save()
    assert json.loads((tmp_path / "c1" / "state.json").read_text()) == c.data
    assert not (tmp_path / "c1" / ".state.json.tmp").exists()
    c.unlock()
    d = state.open_existing(str(tmp_path), "c1", lock=False)
    assert d.data == c.data


def test_a_second_save_replaces_the_state_and_leaves_no_temp_file(tmp_path):
    c = state.Container(str(tmp_path), "c1")
    c.make_dir()
    c.data = {"status": "creating", "pid": 1}
    c.save()
    first = os.stat(tmp_path / "c1" / "state.json").st_ino
    c.data = {"status": "created", "pid": 1}
    c.save()  # names swapped (renameat2 RENAME_EXCHANGE), the old content unlinked
    assert json.loads((tmp_path / "c1" / "state.json").read_text()) == {"status": "created", "pid": 1}
    assert os.stat(tmp_path / "c1" / "state.json").st_ino != first
    assert sorted(os.listdir(tmp_path / "c1")) == ["lock", "state.json"]


def test_damaged_state_is_a_clear_error(tmp_path):
    (tmp_path / "c1").mkdir()
    (tmp_path / "c1" / "state.json").write_text("{broken")
    with pytest.raises(RuntimeFailure, match="damaged"):
        state.open_existing(str(tmp_path), "c1", lock=False)


def test_open_existing_of_unknown_container(tmp_path):
    with pytest.raises(RuntimeFailure, match="does not exist"):
        state.open_existing(str(tmp_path), "nope")
    with pytest.raises(RuntimeFailure, match="does not exist"):
        state.open_existing(str(tmp_path), "nope", lock=False)


def test_open_existing_checks_the_id(tmp_path):
    with pytest.raises(RuntimeFailure, match="invalid container id"):
        state.open_existing(str(tmp_path), "../x")


def test_status_is_derived_from_the_init(tmp_path):
    c = state.Container(str(tmp_path), "c1")
    c.make_dir()
    me = os.getpid()
    c.data = {"pid": me, "_start_time": state.start_time(me), "status": "created"}
    assert c.status() == "running"
    (tmp_path / "c1" / "exec.sock").write_text("")
    assert c.status() == "created"
    c.data["_start_time"] = -1  # the pid was reused by another process
    assert c.status() == "stopped"
    assert c.public()["pid"] == 0
    c.data = {"pid": me, "_start_time": state.start_time(me), "status": "creating"}
    assert c.status() == "creating"
    c.data["pid"] = 0
    assert c.status() == "stopped"
    c.unlock()


def test_public_state_shape(tmp_path):
    c = state.Container(str(tmp_path), "c1")
    c.data = {"ociVersion": "1.0.2", "pid": 0, "status": "created", "bundle": "/b", "rootfs": "/b/rootfs",
              "created": "2024-01-01T00:00:00Z", "annotations": {"a": "b"}, "_cgroup": {}}
    pub = c.public()
    assert set(pub) == {"ociVersion", "id", "pid", "status", "bundle", "rootfs", "created", "owner",
                        "annotations"}
    assert pub["id"] == "c1" and pub["status"] == "stopped" and pub["annotations"] == {"a": "b"}
    assert not any(k.startswith("_") for k in pub)


def test_ids_lists_only_containers(tmp_path):
    for cid in ("b", "a"):
        (tmp_path / cid).mkdir()
        (tmp_path / cid / "state.json").write_text("{}")
    (tmp_path / "half-made").mkdir()
    (tmp_path / "stray-file").write_text("")
    assert state.ids(str(tmp_path)) == ["a", "b"]
    assert state.ids(str(tmp_path / "missing")) == []


def test_remove_dir(tmp_path):
    c = state.Container(str(tmp_path), "c1")
    c.make_dir()
    (tmp_path / "c1" / "state.json").write_text("{}")
    (tmp_path / "c1" / "sub").mkdir()
    (tmp_path / "c1" / "sub" / "f").write_text("")
    c.remove_dir()
    c.unlock()
    assert not (tmp_path / "c1").exists()
    c.remove_dir()  # twice is harmless


def test_now_rfc3339():
    s = state.now_rfc3339()
    assert len(s) == len("2024-01-01T00:00:00.000000000Z") and s.endswith("Z") and s[10] == "T"


# -- hooks --------------------------------------------------------------------------------------


def _script(tmp_path, name, body, mode=0o755):
    p = tmp_path / name
    p.write_text("#!/bin/sh\n" + body)
    p.chmod(mode)
    return str(p)


def test_hook_gets_state_on_stdin_args_and_env(tmp_path):
    out = tmp_path / "out"
    path = _script(tmp_path, "h.sh", f'cat > {out}.stdin; echo "$@" > {out}.args; echo "$V" > {out}.env\n')
    h = {"path": path, "args": ["ignored-argv0", "one", "two words"], "env": ["V=value", "PATH=/bin"]}
    hooks.run({"prestart": [h]}, "prestart", '{"id":"c1"}', Log())
    assert (tmp_path / "out.stdin").read_text() == '{"id":"c1"}'
    assert (tmp_path / "out.args").read_text() == "one two words\n"
    assert (tmp_path / "out.env").read_text() == "value\n"


def test_hooks_of_one_kind_run_in_order(tmp_path):
    log = tmp_path / "order"
    hs = [{"path": _script(tmp_path, f"h{i}.sh", f"echo {i} >> {log}\n")} for i in range(3)]
    hooks.run({"poststop": hs}, "poststop", "{}", Log())
    assert log.read_text().split() == ["0", "1", "2"]


def test_hook_of_another_kind_does_not_run(tmp_path):
    path = _script(tmp_path, "h.sh", f"touch {tmp_path}/ran\n")
    hooks.run({"prestart": [{"path": path}]}, "poststop", "{}", Log())
    assert not (tmp_path / "ran").exists()


def test_failing_hook_names_kind_path_status_and_its_last_line(tmp_path):
    path = _script(tmp_path, "h.sh", "echo first >&2; echo the reason >&2; exit 3\n")
    with pytest.raises(RuntimeFailure) as e:
        hooks.run({"createRuntime": [{"path": path}]}, "createRuntime", "{}", Log())
    msg = str(e.value)
    assert "createRuntime" in msg and path in msg and "3" in msg and "the reason" in msg


def test_first_failing_hook_stops_the_rest(tmp_path):
    bad = _script(tmp_path, "bad.sh", "exit 1\n")
    after = _script(tmp_path, "after.sh", f"touch {tmp_path}/after\n")
    with pytest.raises(RuntimeFailure):
        hooks.run({"prestart": [{"path": bad}, {"path": after}]}, "prestart", "{}", Log())
    assert not (tmp_path / "after").exists()


def test_missing_and_unexecutable_hooks(tmp_path):
    with pytest.raises(RuntimeFailure, match="does not exist"):
        hooks.run({"prestart": [{"path": str(tmp_path / "nope")}]}, "prestart", "{}", Log())
    path = _script(tmp_path, "noexec.sh", "exit 0\n", mode=0o644)
    if os.geteuid() == 0 and os.access(path, os.X_OK):
        pytest.skip("root may execute anything here")
    with pytest.raises(RuntimeFailure, match="not executable"):
        hooks.run({"prestart": [{"path": path}]}, "prestart", "{}", Log())


def test_hook_timeout(tmp_path):
    path = _script(tmp_path, "slow.sh", "exec sleep 20\n")
    with pytest.raises(RuntimeFailure, match="timed out"):
        hooks.run({"prestart": [{"path": path, "timeout": 1}]}, "prestart", "{}", Log())


def test_run_logged_only_warns(tmp_path, capfd):
    path = _script(tmp_path, "bad.sh", "exit 4\n")
    hooks.run_logged({"poststop": [{"path": path}]}, "poststop", "{}", Log())
    _, err = capfd.readouterr()
    assert "poststop" in err and "4" in err and "Traceback" not in err


def test_has():
    h = {"prestart": [{"path": "/x"}], "poststop": []}
    assert hooks.has(h, "prestart") and hooks.has(h, "poststop", "prestart")
    assert not hooks.has(h, "poststop") and not hooks.has(None, "prestart")


# -- signals ------------------------------------------------------------------------------------


@pytest.mark.parametrize("given,want", [
    (None, 15), ("", 15), ("TERM", 15), ("SIGTERM", 15), ("term", 15), ("KILL", 9), ("9", 9),
    ("SIGKILL", 9), ("usr1", signal.SIGUSR1), ("SIGHUP", 1), ("WINCH", signal.SIGWINCH),
])
def test_signal_number(given, want):
    assert container.signal_number(given) == want


@pytest.mark.parametrize("bad", ["NOPE", "SIGNOPE", "-9", "9x", "SIG_DFL", "SIG_IGN", "SIG_BLOCK",
                                 "SIG_UNBLOCK", "SIG_SETMASK", "_SETMASK"])
def test_signal_number_refuses(bad):
    with pytest.raises(RuntimeFailure, match="signal"):
        container.signal_number(bad)


# -- finding the program -----------------------------------------------------------------------------


def _exe(p):
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("#!/bin/sh\n")
    p.chmod(0o755)
    return str(p)


def test_find_program_in_path_order(tmp_path):
    first = _exe(tmp_path / "a" / "prog")
    _exe(tmp_path / "b" / "prog")
    proc = {"args": ["prog"], "env": [f"PATH={tmp_path}/none:{tmp_path}/a:{tmp_path}/b"]}
    assert process.find_program(proc) == first


def test_find_program_skips_directories_and_reports_missing(tmp_path):
    (tmp_path / "a" / "prog").mkdir(parents=True)
    with pytest.raises(RuntimeFailure, match="not found in \\$PATH"):
        process.find_program({"args": ["prog"], "env": [f"PATH={tmp_path}/a"]})


def test_find_program_absolute_and_missing(tmp_path):
    p = _exe(tmp_path / "x")
    assert process.find_program({"args": [p]}) == p
    with pytest.raises(RuntimeFailure, match="no such file"):
        process.find_program({"args": [str(tmp_path / "missing")]})


def test_find_program_relative_to_cwd(tmp_path):
    p = _exe(tmp_path / "sub" / "tool")
    assert os.path.samefile(process.find_program({"args": ["./sub/tool"], "cwd": str(tmp_path)}), p)


def test_find_program_not_executable(tmp_path):
    p = tmp_path / "plain"
    p.write_text("x")
    p.chmod(0o644)
    if os.access(p, os.X_OK):
        pytest.skip("root may execute anything here")
    with pytest.raises(RuntimeFailure, match="permission denied"):
        process.find_program({"args": [str(p)]})


# -- the channel -----------------------------------------------------------------------------------


def test_channel_messages_and_eof():
    parent, child = Channel.pair()
    child.send("READY")
    child.send("ERR", "two words: and more")
    assert parent.recv() == ("READY", "")
    assert parent.recv() == ("ERR", "two words: and more")
    parent.send("GO", '{"state": 1}')
    assert child.recv() == ("GO", '{"state": 1}')
    child.close()
    assert parent.recv() == ("EOF", "")
    parent.close()


def test_channel_fds_are_close_on_exec():
    parent, child = Channel.pair()
    try:
        for fd in (parent.rfd, parent.wfd, child.rfd, child.wfd):
            assert not os.get_inheritable(fd)
    finally:
        parent.close()
        child.close()


def test_channel_large_message():
    parent, child = Channel.pair()
    payload = "x" * 60000
    child.send("BIG", payload)
    assert parent.recv() == ("BIG", payload)
    parent.close()
    child.close()


# -- exec's process ------------------------------------------------------------------------------


def _exec_args(*argv):
    return parse(["exec", *argv])[1]


CFG = {"process": {"args": ["sleep", "1"], "env": ["PATH=/bin", "A=config"], "cwd": "/",
                   "user": {"uid": 0, "gid": 0},
                   "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"],
                                    "permitted": ["CAP_KILL"]}}}


def test_build_process_inherits_the_config():
    proc = exec_cmd.build_process(_exec_args("c", "ls", "-l"), CFG)
    assert proc["args"] == ["ls", "-l"]
    assert proc["env"] == ["PATH=/bin", "A=config"]
    assert proc["capabilities"]["bounding"] == ["CAP_KILL"]
    assert proc["terminal"] is False


def test_build_process_overrides():
    a = _exec_args("--env", "A=exec", "--env", "B=new", "--cwd", "/tmp", "--user", "1000:1001",
                   "--additional-gids", "10", "--cap", "CAP_CHOWN", "--no-new-privs", "c", "id")
    proc = exec_cmd.build_process(a, CFG)
    assert proc["env"] == ["PATH=/bin", "A=exec", "B=new"]
    assert proc["cwd"] == "/tmp"
    assert proc["user"]["uid"] == 1000 and proc["user"]["gid"] == 1001
    assert proc["user"]["additionalGids"] == [10]
    assert set(proc["capabilities"]["bounding"]) == {"CAP_KILL", "CAP_CHOWN"}
    assert proc["noNewPrivileges"] is True
    assert CFG["process"]["env"] == ["PATH=/bin", "A=config"]  # the container's config is untouched


def test_build_process_user_without_group():
    proc = exec_cmd.build_process(_exec_args("--user", "1000", "c", "id"), CFG)
    assert proc["user"]["uid"] == 1000 and proc["user"]["gid"] == 0


@pytest.mark.parametrize("user", ["alice", "1000:staff", ":", "-1x"])
def test_build_process_refuses_a_non_numeric_user(user):
    with pytest.raises(RuntimeFailure, match="--user"):
        exec_cmd.build_process(_exec_args("--user", user, "c", "id"), CFG)


def test_build_process_needs_a_program():
    with pytest.raises(RuntimeFailure, match="program"):
        exec_cmd.build_process(_exec_args("c"), CFG)


def test_build_process_from_file(tmp_path):
    p = tmp_path / "p.json"
    p.write_text(json.dumps({"args": ["echo", "hi"], "cwd": "/", "env": []}))
    proc = exec_cmd.build_process(_exec_args("--process", str(p), "c"), CFG)
    assert proc["args"] == ["echo", "hi"]
    p.write_text(json.dumps({"args": [], "cwd": "/"}))
    with pytest.raises(RuntimeFailure, match="args"):
        exec_cmd.build_process(_exec_args("--process", str(p), "c"), CFG)
    with pytest.raises(RuntimeFailure, match="missing.json"):
        exec_cmd.build_process(_exec_args("--process", str(tmp_path / "missing.json"), "c"), CFG)


def test_build_process_validates_the_result():
    with pytest.raises(RuntimeFailure, match="CAP_NOPE"):
        exec_cmd.build_process(_exec_args("--cap", "CAP_NOPE", "c", "id"), CFG)
    with pytest.raises(RuntimeFailure, match="cwd"):
        exec_cmd.build_process(_exec_args("--cwd", "relative", "c", "id"), CFG)


# -- errors ----------------------------------------------------------------------------------------


def test_runtime_failure_text():
    assert str(RuntimeFailure("what failed")) == "what failed"
    assert str(RuntimeFailure("what failed", "how to fix")) == "what failed (how to fix)"
    assert RuntimeFailure("x").code == 1 and RuntimeFailure("x", code=125).code == 125


def test_describe_oserror():
    assert describe_oserror(OSError(2, "No such file or directory", "/x")) == "No such file or directory: /x"
    assert describe_oserror(OSError(1, "mount: Operation not permitted")) == "mount: Operation not permitted"


def test_spec_constants_cover_the_oci_lists():
    assert set(spec.NAMESPACES) == {"pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time"}
    assert len(spec.RLIMITS) == 16 and spec.RLIMITS["RLIMIT_NOFILE"] == 7


# -- rlimits ------------------------------------------------------------------------------------

class _NoSteps:
    def made(self, *args) -> None:
        pass


def _in_child(fn) -> int:
    """Run fn in a forked child (rlimits are the process's own); its exit status."""
    pid = os.fork()
    if pid == 0:
        try:
            code = fn()
        except BaseException:
            code = 99
        os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_set_rlimits_sets_soft_and_hard():
    import resource

    def child() -> int:
        process.set_rlimits({"rlimits": [{"type": "RLIMIT_NOFILE", "soft": 100, "hard": 200},
                                         {"type": "RLIMIT_CORE", "soft": 0, "hard": 2**64 - 1}]}, _NoSteps())
        ok = resource.getrlimit(resource.RLIMIT_NOFILE) == (100, 200)
        return 0 if ok and resource.getrlimit(resource.RLIMIT_CORE) == (0, resource.RLIM_INFINITY) else 1
    assert _in_child(child) == 0


def test_set_rlimits_refused_is_one_clear_error():
    def child() -> int:
        process.set_rlimits({"rlimits": [{"type": "RLIMIT_NOFILE", "soft": 10, "hard": 10}]}, _NoSteps())
        try:  # a hard limit above the one just set: refused without CAP_SYS_RESOURCE, else granted
            process.set_rlimits({"rlimits": [{"type": "RLIMIT_NOFILE", "soft": 10, "hard": 2**40}]},
                                _NoSteps())
        except RuntimeFailure as e:
            return 0 if "cannot set RLIMIT_NOFILE to 10:1099511627776: " in str(e) else 1
        return 0 if os.geteuid() == 0 else 2
    assert _in_child(child) == 0


# -- the exec.sock gate under a deep --root (dockerd's: <exec-root>/runtime-runc/moby/<64 hex>) --


def test_the_gate_socket_binds_and_connects_beyond_sun_paths_107_bytes(tmp_path):
    import socket
    import stat

    d = tmp_path / ("r" * 60) / "runtime-runc" / "moby" / ("f" * 64)
    d.mkdir(parents=True)
    path = str(d / "exec.sock")
    assert len(path) > 108
    fd = container._listen(path)
    try:
        assert stat.S_ISSOCK(os.stat(path).st_mode)  # made in the directory itself
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with container._UnixAddress(path) as address:
            assert len(address) < 108
            c.connect(address)
        c.sendall(b"S")
        with socket.socket(fileno=fd) as server:
            conn, _ = server.accept()
            assert conn.recv(1) == b"S"
            conn.close()
        c.close()
    finally:
        os.unlink(path)


def test_a_short_socket_path_is_used_as_it_is(tmp_path):
    with container._UnixAddress(str(tmp_path / "exec.sock")) as address:
        assert address == str(tmp_path / "exec.sock")
