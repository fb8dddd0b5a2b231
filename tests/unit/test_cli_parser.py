"""kobako-runtime's command line: runc's shape (global flags, verb, verb flags, id)."""

from __future__ import annotations

import pytest

from kobako.runtime import main
from kobako.runtime.errors import RuntimeFailure
from kobako.runtime.main import parse


def test_global_flags_before_the_verb_as_containerd_passes_them():
    cmd, a = parse(["--root", "/r", "--log", "/l.json", "--log-format", "json", "--debug",
                    "create", "--bundle", "/b", "--pid-file", "/p", "c1"])
    assert cmd == "create"
    assert (a.root, a.log, a.log_format, a.debug) == ("/r", "/l.json", "json", True)
    assert (a.bundle, a.pid_file, a.id) == ("/b", "/p", "c1")


def test_defaults_when_no_flag_is_given():
    cmd, a = parse(["create", "c1"])
    assert cmd == "create"
    assert a.root == "/run/kobako-runtime"
    assert a.bundle == "."
    assert a.log is None and a.log_format == "text" and a.debug is False
    assert a.console_socket is None and a.pid_file is None and a.preserve_fds == 0


def test_flag_equals_value_form():
    cmd, a = parse(["--root=/r", "--log-format=json", "run", "--bundle=/b", "--pid-file=/p", "c2"])
    assert (cmd, a.root, a.log_format, a.bundle, a.pid_file, a.id) == ("run", "/r", "json", "/b", "/p", "c2")


def test_value_containing_equals_sign_is_kept_whole():
    _, a = parse(["--root=/a=b", "state", "c"])
    assert a.root == "/a=b"


def test_single_dash_long_flags_as_urfave_cli_accepts():
    cmd, a = parse(["-root", "/r", "-log", "/l", "create", "-bundle", "/b", "-pid-file", "/p", "c3"])
    assert (cmd, a.root, a.log, a.bundle, a.pid_file, a.id) == ("create", "/r", "/l", "/b", "/p", "c3")
    _, a = parse(["-root=/x", "run", "-bundle=/y", "c"])
    assert (a.root, a.bundle) == ("/x", "/y")


def test_short_flags():
    _, a = parse(["create", "-b", "/b", "c"])
    assert a.bundle == "/b"
    _, a = parse(["delete", "-f", "c"])
    assert a.force is True
    _, a = parse(["list", "-q"])
    assert a.quiet is True


def test_bool_flag_with_explicit_value():
    _, a = parse(["--debug=false", "state", "c"])
    assert a.debug is False
    _, a = parse(["--debug=true", "state", "c"])
    assert a.debug is True
    _, a = parse(["delete", "--force=0", "c"])
    assert a.force is False


def test_verb_flags_after_the_id_are_accepted():
    _, a = parse(["delete", "c", "--force"])
    assert a.force is True and a.id == "c"


def test_int_flag():
    _, a = parse(["create", "--preserve-fds", "2", "c"])
    assert a.preserve_fds == 2


def test_int_flag_rejects_a_non_number():
    with pytest.raises(RuntimeFailure, match="number"):
        parse(["create", "--preserve-fds", "two", "c"])


def test_flag_missing_its_value():
    with pytest.raises(RuntimeFailure, match="--bundle"):
        parse(["create", "c", "--bundle"])
    with pytest.raises(RuntimeFailure, match="--root"):
        parse(["--root"])


def test_kill_signal_is_an_optional_positional():
    _, a = parse(["kill", "c"])
    assert a.id == "c" and a.signal is None
    _, a = parse(["kill", "c", "KILL"])
    assert a.signal == "KILL"
    _, a = parse(["kill", "--all", "c", "9"])
    assert a.all is True and a.signal == "9"


def test_exec_program_args_are_left_untouched():
    cmd, a = parse(["exec", "c", "sh", "-c", "echo -n hi", "--cwd", "-e"])
    assert cmd == "exec"
    assert a.id == "c"
    assert a.args == ["sh", "-c", "echo -n hi", "--cwd", "-e"]
    assert a.cwd is None and a.env is None


def test_exec_flags_before_the_id():
    _, a = parse(["exec", "-e", "A=1", "--env", "B=2", "--cwd", "/tmp", "-u", "1000:1000",
                  "--pid-file=/p", "-d", "c", "ls", "-la"])
    assert a.env == ["A=1", "B=2"]
    assert (a.cwd, a.user, a.pid_file, a.detach) == ("/tmp", "1000:1000", "/p", True)
    assert a.args == ["ls", "-la"]


def test_exec_double_dash_ends_flags():
    _, a = parse(["exec", "c", "--", "ls", "--cwd"])
    assert a.args == ["ls", "--cwd"]
    _, a = parse(["exec", "--", "c", "-x"])
    assert a.id == "c" and a.args == ["-x"]


def test_exec_with_process_file_needs_no_args():
    _, a = parse(["exec", "--process", "/p.json", "c"])
    assert a.process == "/p.json" and a.id == "c" and a.args == []


def test_exec_unknown_flag_before_the_id_is_an_error():
    with pytest.raises(RuntimeFailure, match="unknown flag"):
        parse(["exec", "--bogus", "c", "ls"])


def test_unknown_global_flag():
    with pytest.raises(RuntimeFailure, match="unknown flag --bogus"):
        parse(["--bogus", "state", "c"])


def test_unknown_verb_flag():
    with pytest.raises(RuntimeFailure, match="unknown flag --bogus"):
        parse(["create", "--bogus", "c"])


def test_unknown_command():
    with pytest.raises(RuntimeFailure, match="unknown command"):
        parse(["frobnicate", "c"])


def test_missing_id():
    with pytest.raises(RuntimeFailure, match="missing <id>"):
        parse(["start"])


def test_unexpected_extra_positional():
    with pytest.raises(RuntimeFailure, match="unexpected argument"):
        parse(["start", "a", "b"])


def test_no_command_and_help_and_version():
    cmd, a = parse([])
    assert cmd is None and not a.help
    cmd, a = parse(["--help"])
    assert cmd is None and a.help
    cmd, a = parse(["help", "create"])
    assert cmd is None and a.help and a.help_cmd == "create"
    cmd, a = parse(["create", "--help"])
    assert cmd is None and a.help and a.help_cmd == "create"
    _, a = parse(["-v"])
    assert a.version


def test_every_command_has_a_module():
    import importlib

    for verb, (mod, _, _, _) in main.COMMANDS.items():
        m = importlib.import_module(f"kobako.runtime.commands.{mod}")
        assert callable(m.run), verb


# -- main(): exit codes and one-line errors ------------------------------------------------


def test_main_unknown_command_is_one_line_and_nonzero(capfd):
    code = main.main(["frobnicate"])
    out, err = capfd.readouterr()
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kobako-runtime:") and "frobnicate" in lines[0]
    assert "Traceback" not in err


def test_main_version(capfd):
    assert main.main(["--version"]) == 0
    out, _ = capfd.readouterr()
    assert "kobako-runtime version" in out and "spec:" in out


def test_main_help_lists_every_command(capfd):
    assert main.main(["--help"]) == 0
    out, _ = capfd.readouterr()
    for verb in main.COMMANDS:
        assert verb in out


def test_main_bad_log_format(capfd, tmp_path):
    code = main.main(["--root", str(tmp_path), "--log-format", "xml", "list"])
    _, err = capfd.readouterr()
    assert code != 0 and "--log-format" in err and "Traceback" not in err


def test_main_state_of_unknown_container(capfd, tmp_path):
    code = main.main(["--root", str(tmp_path), "state", "nope"])
    _, err = capfd.readouterr()
    assert code != 0
    assert err.strip().splitlines() == [err.strip()] and "does not exist" in err


def test_main_refuses_systemd_cgroup(capfd, tmp_path):
    code = main.main(["--root", str(tmp_path), "--systemd-cgroup", "list"])
    _, err = capfd.readouterr()
    assert code != 0 and "systemd" in err and "Traceback" not in err
