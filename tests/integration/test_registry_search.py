"""Short names with a [registries] search list, against two docker-registry instances on
127.0.0.1 with the image only on the second: pull, run and build FROM find it there, the
local image is then found under its qualified name, and a name no registry has is one
error naming both."""

from __future__ import annotations

from pathlib import Path

import pytest
import registry_support as rs
from engine_support import Kobako, build_context

pytestmark = [pytest.mark.root, pytest.mark.skipif(rs.available() is not None,
                                                    reason=str(rs.available()))]


@pytest.fixture(scope="module")
def regs():
    with rs.Registry() as a, rs.Registry() as b:
        yield a, b


@pytest.fixture(scope="module")
def on_second(regs, session_base: Path, busybox_rootfs: Path) -> str:
    """busybox pushed as kbt/bb:1 to the second registry only."""
    src = Kobako(session_base / "search-pusher")
    src("import", "-c", 'CMD ["echo", "from the second registry"]', str(busybox_rootfs), "kbt/bb:1")
    name = f"{regs[1].addr}/kbt/bb:1"
    src("tag", "kbt/bb:1", name)
    src("push", name)
    return name


@pytest.fixture
def k(tmp_path: Path, regs) -> Kobako:
    kb = Kobako(tmp_path / "k")
    cfg = tmp_path / "kobako.toml"
    cfg.write_text(f'[registries]\nsearch = ["{regs[0].addr}", "{regs[1].addr}"]\n')
    kb.env["KOBAKO_CONFIG_FILE"] = str(cfg)
    return kb


def test_pull_finds_a_short_name_on_the_second_registry(k: Kobako, regs, on_second: str):
    cp = k("pull", "kbt/bb:1")
    assert f"Trying to pull {regs[0].addr}/kbt/bb:1..." in cp.stderr
    assert f"Trying to pull {regs[1].addr}/kbt/bb:1..." in cp.stderr
    assert cp.stdout.splitlines()[-1] == on_second
    # the local image answers to the short name through the list, without a pull
    assert k("image", "inspect", "-f", "{{index .RepoTags 0}}", "kbt/bb:1").stdout.strip() == on_second
    cp = k("run", "--rm", "--network", "none", "kbt/bb:1")
    assert cp.stdout == "from the second registry\n" and "Trying" not in cp.stderr


def test_run_and_build_pull_a_missing_short_name_through_the_list(k: Kobako, regs, on_second: str,
                                                                  tmp_path: Path):
    cp = k("run", "--rm", "--network", "none", "kbt/bb:1")
    assert cp.stdout == "from the second registry\n"
    assert "Unable to find image" in cp.stderr and f"Trying to pull {regs[1].addr}/kbt/bb:1" in cp.stderr
    k("rmi", on_second)
    ctx = build_context(tmp_path, "FROM kbt/bb:1\nRUN echo built > /built\n")
    k("build", "--network", "none", "-t", "kbt/built:1", str(ctx))
    assert k("image", "inspect", "-f", "{{index .RepoTags 0}}", "kbt/bb:1").stdout.strip() == on_second
    assert k("run", "--rm", "--network", "none", "kbt/built:1", "cat", "/built").stdout == "built\n"


def test_a_name_no_registry_has_names_each_registry_tried(k: Kobako, regs, on_second: str):
    for cmd in (["pull", "kbt/nothere:1"], ["run", "--rm", "kbt/nothere:1"]):
        cp = k(*cmd, check=False)
        assert cp.returncode == 125, cp.stderr
        err = cp.stderr[cp.stderr.index("Error: "):]
        assert err.startswith(f"Error: kbt/nothere:1: no registry of the search list ({regs[0].addr}, "
                              f"{regs[1].addr}) gave the image:\n"), err
        assert f"  * registry {regs[0].addr}: " in err and f"  * registry {regs[1].addr}: " in err
    assert k("images", "-q").stdout == ""


def test_an_unreachable_registry_of_the_list_is_passed_over(k: Kobako, regs, on_second: str,
                                                            tmp_path: Path):
    down = f"127.0.0.1:{rs.free_port()}"
    (tmp_path / "kobako.toml").write_text(f'[registries]\nsearch = ["{down}", "{regs[1].addr}"]\n')
    assert k("pull", "kbt/bb:1").stdout.splitlines()[-1] == on_second
    cp = k("pull", "kbt/nothere:1", check=False)
    assert cp.returncode == 125
    assert f"registry {down}: connection refused" in cp.stderr and f"registry {regs[1].addr}: " in cp.stderr
