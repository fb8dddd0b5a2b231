"""Man pages and shell completion generated from the command tables (kobako/cli/reference.py):
every command has its page and its completion, with every flag; the scripts parse in their
shell; `kobako completion` refuses a missing or unknown shell as a usage error."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kobako.cli import main, reference

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("man") / "man1"
    reference.write_man(str(d))
    return d


def _unroff(text: str) -> str:
    return text.replace("\\-", "-").replace("\\e", "\\")


def test_every_command_has_a_man_page_with_each_of_its_flags(pages: Path):
    cmds = reference.commands()
    assert set(cmds) == set(main.MODULES)
    for name, cmd in cmds.items():
        page = pages / f"kobako-{name.replace(' ', '-')}.1"
        text = _unroff(page.read_text())
        assert f"kobako {name}" in text and cmd.help in text, name
        for o in cmd.opts:
            for flag in o.names:
                assert f"\\fB{flag}\\fR" in text, f"{name}: {flag} missing from {page.name}"


def test_the_main_page_lists_every_command_and_global_option(pages: Path):
    text = _unroff((pages / "kobako.1").read_text())
    for name in main.MODULES:
        assert f"kobako-{name.replace(' ', '-')} (1)" in text, name
    for flag in ("--root", "--runroot", "--config", "--log-level"):
        assert flag in text
    for group in main.GROUPS:
        assert (pages / f"kobako-{group}.1").exists(), group


def test_aliases_are_links_to_their_command_page(pages: Path):
    link = pages / "kobako-image-ls.1"
    assert link.is_symlink() and link.resolve() == (pages / "kobako-images.1").resolve()
    assert (pages / "kobako-container-run.1").resolve() == (pages / "kobako-run.1").resolve()
    for a in main.ALIASES:
        assert (pages / f"kobako-{a.replace(' ', '-')}.1").exists(), a


@pytest.mark.skipif(shutil.which("man") is None, reason="man-db is not installed")
def test_man_renders_the_pages_without_warnings(pages: Path):
    for name in ("kobako.1", "kobako-run.1", "kobako-network.1", "kobako-network-create.1"):
        p = subprocess.run(["man", "--warnings", "-l", str(pages / name)], capture_output=True, text=True,
                           env={"PATH": "/usr/bin:/bin", "MANWIDTH": "80", "LC_ALL": "C.UTF-8"})
        assert p.returncode == 0 and p.stderr == "", (name, p.stderr)
        assert "NAME" in p.stdout and "OPTIONS" in p.stdout or name == "kobako-network.1"


def test_a_line_starting_with_a_dot_is_not_a_roff_request():
    assert reference._roff(".hidden") == "\\&.hidden"
    assert reference._roff("a-b \\x") == "a\\-b \\ex"


def test_bash_completion_names_every_command_and_flag():
    script = reference.bash_script()
    for name, cmd in reference.commands().items():
        assert f"['{name}']=" in script, name
        for o in cmd.opts:
            for flag in o.names:
                assert flag in script, (name, flag)
    assert "--network" in script


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_each_completion_script_parses_in_its_shell(shell: str, tmp_path: Path):
    exe = shutil.which(shell)
    if exe is None:
        pytest.skip(f"{shell} is not installed")
    f = tmp_path / f"kobako.{shell}"
    scripts = {"bash": reference.bash_script, "zsh": reference.zsh_script, "fish": reference.fish_script}
    f.write_text(scripts[shell]())
    p = subprocess.run([exe, "-n", str(f)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def _bash_complete(script: Path, *words: str) -> list[str]:
    driver = (f"source {script}\nCOMP_WORDS=({' '.join(repr(w) for w in words)})\n"
              "COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _kobako; printf '%s\\n' \"${COMPREPLY[@]}\"")
    p = subprocess.run(["bash", "-c", driver], capture_output=True, text=True, check=True,
                       env={"PATH": "/nonexistent:/usr/bin:/bin"})  # no kobako: dynamic names are empty
    return sorted(w for w in p.stdout.split("\n") if w)


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_bash_completes_commands_subcommands_flags_and_values(tmp_path: Path):
    script = tmp_path / "kobako.bash"
    script.write_text(reference.bash_script())
    assert _bash_complete(script, "kobako", "ru") == ["run"]
    assert _bash_complete(script, "kobako", "network", "c") == ["connect", "create"]
    assert _bash_complete(script, "kobako", "--root", "/tmp", "netw") == ["network"]
    assert "--network" in _bash_complete(script, "kobako", "run", "--netw")
    assert "--all" in _bash_complete(script, "kobako", "image", "ls", "--a")  # an alias: images' flags
    assert _bash_complete(script, "kobako", "run", "--log-driver", "") == ["json-file", "local", "none"]
    assert _bash_complete(script, "kobako", "completion", "") == ["bash", "fish", "zsh"]
    assert _bash_complete(script, "kobako", "--log-level", "w") == ["warn"]


@pytest.mark.parametrize("argv", [["completion"], ["completion", "tcsh"], ["completion", "bash", "zsh"]])
def test_completion_without_a_known_shell_is_a_usage_error(argv: list[str], capsys):
    assert main.main(argv) == 125
    assert "completion" in capsys.readouterr().err


def test_completion_prints_the_script(capsys):
    assert main.main(["completion", "bash"]) == 0
    assert "complete -o default -F _kobako kobako" in capsys.readouterr().out


def test_the_generators_are_not_loaded_at_start_up():
    code = "import sys, kobako.cli.main; print('kobako.cli.reference' in sys.modules)"
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert p.stdout.strip() == "False"
