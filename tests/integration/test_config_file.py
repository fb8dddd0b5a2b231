"""The configuration file on a real kernel: a container made under a config's DNS and
ulimit defaults shows them, a config's storage root is the store, a malformed file is one
line and exit 125 with nothing made. Each test names its own file with KOBAKO_CONFIG_FILE
(never /etc/kobako/kobako.toml of this machine)."""

from __future__ import annotations

from pathlib import Path

import pytest
from engine_support import Kobako

pytestmark = pytest.mark.root
IMG = "kbt/busybox:1"


@pytest.fixture(scope="module")
def k(session_base: Path, busybox_rootfs: Path) -> Kobako:
    kb = Kobako(session_base / "configfile")
    kb("import", str(busybox_rootfs), IMG)
    yield kb
    kb.env.pop("KOBAKO_CONFIG_FILE", None)
    kb.clean()


def test_dns_and_ulimit_defaults_reach_the_container(k: Kobako, tmp_path: Path):
    cfg = tmp_path / "kobako.toml"
    cfg.write_text('[dns]\nservers = ["192.0.2.53"]\nsearch = ["corp.example"]\n'
                   '[containers]\ndefault_ulimits = ["nofile=1234:2345"]\n')
    k.env["KOBAKO_CONFIG_FILE"] = str(cfg)
    try:
        out = k("run", "--rm", "--network", "none", IMG, "sh", "-c",
                "cat /etc/resolv.conf; ulimit -n; ulimit -Hn").stdout
        assert "nameserver 192.0.2.53" in out and "search corp.example" in out
        assert out.split()[-2:] == ["1234", "2345"]
        # a command's own flags override the file
        out = k("run", "--rm", "--network", "none", "--dns", "192.0.2.1", "--ulimit", "nofile=99:99", IMG,
                "sh", "-c", "cat /etc/resolv.conf; ulimit -n").stdout
        assert "nameserver 192.0.2.1" in out and "192.0.2.53" not in out and out.split()[-1] == "99"
    finally:
        del k.env["KOBAKO_CONFIG_FILE"]


def test_storage_root_from_the_file(k: Kobako, tmp_path: Path):
    cfg = tmp_path / "kobako.toml"
    cfg.write_text(f'[storage]\nroot = "{tmp_path}/store"\n')
    env = dict(k.env)
    del k.env["KOBAKO_ROOT"]  # the environment would override the file
    k.env["KOBAKO_CONFIG_FILE"] = str(cfg)
    try:
        k("ps")
        assert (tmp_path / "store" / "containers").is_dir()
        info = k("info").stdout
        assert f" Config Files:\n  {cfg}\n" in info and f"{tmp_path}/store" in info
    finally:
        k.env.clear()
        k.env.update(env)


def test_malformed_file_is_one_line_and_makes_nothing(k: Kobako, tmp_path: Path):
    cfg = tmp_path / "kobako.toml"
    cfg.write_text('[storage]\nroot = "/x"\n[network]\ndefault_address_pools = "10.0.0.0/8"\n')
    env = dict(k.env)
    k.env.update(KOBAKO_CONFIG_FILE=str(cfg), KOBAKO_ROOT=str(tmp_path / "data"),
                 KOBAKO_RUN=str(tmp_path / "run"))
    try:
        cp = k("run", "--rm", IMG, "true", check=False)
        assert cp.returncode == 125
        assert cp.stderr == (f"Error: {cfg}:4: [network] default_address_pools: expected a list of "
                             "{base, size} tables\n")
        assert not (tmp_path / "data").exists() and not (tmp_path / "run").exists()
    finally:
        k.env.clear()
        k.env.update(env)
