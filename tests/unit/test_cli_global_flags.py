"""`kobako [OPTIONS] COMMAND`: the global flags before the command (docker's, podman's)."""

from __future__ import annotations

import os

import pytest

from kobako.cli import main as cli
from kobako.cli.main import GlobalUsageError, global_flags

VARS = ("KOBAKO_ROOT", "KOBAKO_RUN", "KOBAKO_CONFIG", "DOCKER_CONFIG", "KOBAKO_DEBUG")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for v in VARS:
        monkeypatch.delenv(v, raising=False)


def test_space_and_equals_forms_set_the_environment(tmp_path):
    rest = global_flags(["--root", str(tmp_path / "r"), f"--runroot={tmp_path}/run",
                         "--config", str(tmp_path / "c"), "ps", "-a"])
    assert rest == ["ps", "-a"]
    assert os.environ["KOBAKO_ROOT"] == str(tmp_path / "r")
    assert os.environ["KOBAKO_RUN"] == f"{tmp_path}/run"
    assert os.environ["KOBAKO_CONFIG"] == os.environ["DOCKER_CONFIG"] == str(tmp_path / "c")


def test_flags_override_the_environment_and_paths_follow(monkeypatch, tmp_path):
    from kobako import paths
    from kobako.image import auth
    monkeypatch.setenv("KOBAKO_ROOT", "/elsewhere")
    monkeypatch.setenv("KOBAKO_CONFIG", "/elsewhere-config")
    global_flags(["--root=" + str(tmp_path), "--config", str(tmp_path), "images"])
    assert paths.data_root() == str(tmp_path)
    assert auth.path() == str(tmp_path / "auth.json")
    assert auth.docker_path() == str(tmp_path / "config.json")


def test_relative_directory_made_absolute(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    global_flags(["--root", "store", "ps"])
    assert os.environ["KOBAKO_ROOT"] == str(tmp_path / "store")


def test_only_flags_before_the_command_are_global():
    assert global_flags(["ps", "--root", "x"]) == ["ps", "--root", "x"]
    assert "KOBAKO_ROOT" not in os.environ


@pytest.mark.parametrize("flags", [["-D"], ["--debug"], ["--log-level", "debug"], ["--log-level=debug"],
                                   ["-l", "debug"]])
def test_debug(flags):
    assert global_flags(flags + ["ps"]) == ["ps"]
    assert os.environ["KOBAKO_DEBUG"] == "1"


def test_log_level_above_debug_turns_the_environment_off(monkeypatch):
    monkeypatch.setenv("KOBAKO_DEBUG", "1")
    global_flags(["--log-level", "warn", "ps"])
    assert "KOBAKO_DEBUG" not in os.environ


@pytest.mark.parametrize("argv,msg", [
    (["--bogus", "ps"], "unknown flag: --bogus"),
    (["-x", "ps"], "unknown shorthand flag: 'x' in -x"),
    (["--root"], "flag needs an argument: --root"),
    (["--root=", "ps"], "--root needs a directory"),
    (["--log-level", "loud", "ps"], 'invalid argument "loud" for "--log-level"'),
])
def test_usage_errors(argv, msg):
    with pytest.raises(GlobalUsageError, match=msg):
        global_flags(argv)


def test_unknown_global_flag_exits_125(capsys):
    assert cli.main(["--frobnicate", "ps"]) == 125
    err = capsys.readouterr().err
    assert "unknown flag: --frobnicate" in err and "kobako --help" in err


def test_usage_lists_the_global_flags():
    for f in ("--root", "--runroot", "--config", "--debug", "--log-level"):
        assert f in cli.USAGE


def test_help_and_version_after_global_flags(capsys, tmp_path):
    assert cli.main(["--root", str(tmp_path), "--version"]) == 0
    assert "kobako version" in capsys.readouterr().out
    assert cli.main(["-D", "--help"]) == 0
    assert "Usage:  kobako [OPTIONS] COMMAND" in capsys.readouterr().out
