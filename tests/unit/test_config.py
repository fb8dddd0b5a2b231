"""The configuration file (kobako/config.py): loading, merging, precedence, bad input, the
cache, and what each consumer takes from it. Every test names its own files (never
/etc/kobako/kobako.toml of this machine)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kobako import config, paths
from kobako.errors import InvalidArgument

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def private(tmp_path, monkeypatch):
    """A private run root (where the cache goes) and no KOBAKO_ROOT/KOBAKO_RUN of the caller's."""
    monkeypatch.setenv("KOBAKO_RUN", str(tmp_path / "run"))
    monkeypatch.delenv("KOBAKO_ROOT", raising=False)
    monkeypatch.delenv("KOBAKO_CONFIG_FILE", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    config.reset()
    yield
    config.reset()


def write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def use(monkeypatch, path: str) -> config.Config:
    monkeypatch.setenv("KOBAKO_CONFIG_FILE", path)
    config.reset()
    return config.get()


def test_no_file_means_defaults(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "SYSTEM_FILE", str(tmp_path / "none.toml"))
    cfg = config.get()
    assert cfg.values == {} and cfg.files == []
    assert not (tmp_path / "run").exists()  # nothing written when there is nothing to cache


def test_values_and_origins(tmp_path, monkeypatch):
    p = write(tmp_path / "k.toml", '[dns]\nservers = ["1.1.1.1"]\n[storage]\nroot = "/srv/kobako"\n')
    cfg = use(monkeypatch, p)
    assert cfg.get("dns", "servers") == ["1.1.1.1"]
    assert cfg.files == [p] and cfg.origins["storage.root"] == p


def test_named_file_missing_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("KOBAKO_CONFIG_FILE", str(tmp_path / "nope.toml"))
    with pytest.raises(config.ConfigError, match="nope.toml: no such file"):
        config.get()


def test_user_file_overrides_system_key_by_key(tmp_path, monkeypatch):
    system = write(tmp_path / "etc.toml", '[dns]\nservers = ["1.1.1.1"]\nsearch = ["a.example"]\n'
                   '[storage]\nroot = "/srv/system"\n')
    user = write(tmp_path / "xdg" / "kobako" / "kobako.toml", '[dns]\nservers = ["9.9.9.9"]\n')
    monkeypatch.setattr(config, "SYSTEM_FILE", system)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    cfg = config.load(config.candidates())
    assert cfg.files == [system, user]
    assert cfg.get("dns", "servers") == ["9.9.9.9"]  # the user's replaces the whole list
    assert cfg.get("dns", "search") == ["a.example"]  # a key the user's file does not set: the system's
    assert cfg.get("storage", "root") is None  # the system's store is root's, not the user's


def test_root_reads_only_the_system_file(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "SYSTEM_FILE", str(tmp_path / "etc.toml"))
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.delenv("KOBAKO_ROOTLESS_IDS", raising=False)
    assert config.candidates() == [str(tmp_path / "etc.toml")]
    monkeypatch.setenv("KOBAKO_ROOTLESS_IDS", "1000:1000")  # a user inside their namespace: still the user
    assert config.candidates()[-1] == str(tmp_path / "xdg" / "kobako" / "kobako.toml")


def test_precedence_of_the_roots(tmp_path, monkeypatch):
    p = write(tmp_path / "k.toml", '[storage]\nroot = "/srv/kobako"\nrun_root = "/run/elsewhere"\n')
    use(monkeypatch, p)
    monkeypatch.delenv("KOBAKO_RUN")
    assert paths.data_root() == "/srv/kobako" and paths.run_root() == "/run/elsewhere"
    monkeypatch.setenv("KOBAKO_ROOT", "/env/root")  # the environment beats the file
    assert paths.data_root() == "/env/root"
    from kobako.cli.main import global_flags
    global_flags(["--root", "/flag/root", "ps"])  # and a global flag beats the environment
    assert paths.data_root() == "/flag/root"


def test_syntax_error_names_file_and_line(tmp_path, monkeypatch):
    p = write(tmp_path / "k.toml", '[dns]\nservers = ["1.1.1.1"]\noptions = ndots:2\n')
    with pytest.raises(config.ConfigError) as e:
        use(monkeypatch, p)
    msg = str(e.value)
    assert msg.startswith(f"{p}:3: not valid TOML") and "options = ndots:2" in msg and "\n" not in msg
    assert isinstance(e.value, InvalidArgument)  # exit 125 in the CLI


def test_wrong_type_names_file_line_and_key(tmp_path, monkeypatch):
    p = write(tmp_path / "k.toml", '[storage]\nroot = "/x"\n\n[network]\n'
              'default_address_pools = "10.0.0.0/8"\n')
    with pytest.raises(config.ConfigError) as e:
        use(monkeypatch, p)
    assert str(e.value) == f"{p}:5: [network] default_address_pools: expected a list of {{base, size}} tables"


@pytest.mark.parametrize("text, key", [
    ('[storage]\nroot = "relative"\n', "[storage] root"),
    ('[dns]\nservers = "1.1.1.1"\n', "[dns] servers"),
    ('[containers]\ndefault_ulimits = ["nofile"]\n', "[containers] default_ulimits"),
    ('[log]\noptions = { max-size = 10 }\n', "[log] options"),
    ('[registries]\nmirrors = { "docker.io" = "http://m" }\n', "[registries] mirrors"),
    ('storage = 1\n', "[storage] must be a table"),
])
def test_type_errors(tmp_path, monkeypatch, text, key):
    p = write(tmp_path / "k.toml", text)
    with pytest.raises(config.ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        use(monkeypatch, p)


def test_unknown_keys_warned_once(tmp_path, monkeypatch, capsys):
    p = write(tmp_path / "k.toml", '[storage]\nrot = "/x"\n[stroage]\nroot = "/y"\n')
    cfg = use(monkeypatch, p)
    assert cfg.values == {}
    err = capsys.readouterr().err
    assert f'kobako: warning: {p}: unknown key "storage.rot" (ignored)' in err
    assert f'kobako: warning: {p}: unknown section "stroage" (ignored)' in err
    use(monkeypatch, p)  # the cache's hit: no warning again
    assert capsys.readouterr().err == ""


def test_cache_is_rebuilt_when_the_file_changes(tmp_path, monkeypatch):
    p = write(tmp_path / "k.toml", '[dns]\nservers = ["1.1.1.1"]\n')
    assert use(monkeypatch, p).get("dns", "servers") == ["1.1.1.1"]
    assert (tmp_path / "run" / config.CACHE_NAME).exists()
    write(tmp_path / "k.toml", '[dns]\nservers = ["8.8.8.8", "8.8.4.4"]\n')  # other size, mtime
    assert use(monkeypatch, p).get("dns", "servers") == ["8.8.8.8", "8.8.4.4"]


def test_a_bad_file_writes_nothing(tmp_path, monkeypatch):
    p = write(tmp_path / "k.toml", "[dns\n")
    with pytest.raises(config.ConfigError):
        use(monkeypatch, p)
    assert not (tmp_path / "run").exists()


def _modules_after_get(env: dict) -> str:
    code = "import sys; from kobako import config; config.get(); print('tomllib' in sys.modules)"
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_tomllib_not_imported_on_a_cache_hit(tmp_path):
    p = write(tmp_path / "k.toml", '[dns]\nservers = ["1.1.1.1"]\n')
    env = {**os.environ, "KOBAKO_CONFIG_FILE": p, "KOBAKO_RUN": str(tmp_path / "run"),
           "PYTHONPATH": str(REPO)}
    assert _modules_after_get(env) == "True"  # the miss parses
    assert _modules_after_get(env) == "False"  # the hit does not
    os.utime(p, ns=(1, 1))  # touched: parsed again
    assert _modules_after_get(env) == "True"


def test_tomllib_not_imported_without_a_file(tmp_path):
    env = {**os.environ, "KOBAKO_CONFIG_FILE": "", "KOBAKO_RUN": str(tmp_path / "run"),
           "XDG_CONFIG_HOME": str(tmp_path), "PYTHONPATH": str(REPO)}
    if os.path.exists(config.SYSTEM_FILE):
        pytest.skip(f"{config.SYSTEM_FILE} exists on this machine")
    assert _modules_after_get(env) == "False"


def test_proxy_sets_only_unset_variables(tmp_path, monkeypatch):
    p = write(tmp_path / "k.toml", '[proxy]\nhttps_proxy = "http://proxy:3128"\nno_proxy = "localhost"\n'
              'http_proxy = "http://proxy:3128"\n')
    for v in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setenv("no_proxy", "example.com")  # set (lower case): kept
    config.apply_proxy(use(monkeypatch, p))
    assert os.environ["HTTPS_PROXY"] == "http://proxy:3128" and os.environ["HTTP_PROXY"] == "http://proxy:3128"
    assert os.environ["no_proxy"] == "example.com" and "NO_PROXY" not in os.environ


# -- what the consumers take -------------------------------------------------------------------------

def test_address_pools(tmp_path, monkeypatch):
    from kobako.network import ipam
    use(monkeypatch, write(tmp_path / "k.toml", '[network]\ndefault_address_pools = '
                           '[{base = "10.200.0.0/16", size = 24}]\n'))
    pools = ipam.configured_pools()
    assert [(p.base, p.size) for p in pools] == [("10.200.0.0/16", 24)]
    assert str(ipam.pick_subnet(pools, [], [])) == "10.200.0.0/24"
    p = write(tmp_path / "bad.toml", '[network]\ndefault_address_pools = [{base = "10.200.0.0/16", '
              'size = 8}]\n')
    use(monkeypatch, p)
    with pytest.raises(config.ConfigError, match=rf"^{p}: \[network\] default_address_pools: invalid "):
        ipam.configured_pools()


def _plan_host(h: dict):
    from kobako.engine import ocispec, spec
    full = spec.ContainerSpec.from_docker({"Image": "x", "HostConfig": h})
    opts = ocispec.RunOptions(network="none")
    spec._dns(None, opts, full.host)
    spec._security(None, opts, full)
    spec._limits(opts, full.host)
    return full, opts


def test_container_defaults(tmp_path, monkeypatch):
    prof = write(tmp_path / "seccomp.json", '{"defaultAction": "SCMP_ACT_ALLOW"}')
    use(monkeypatch, write(tmp_path / "k.toml", f'''
[dns]
servers = ["10.0.0.53"]
search = ["corp.example"]
options = ["ndots:2"]
[containers]
default_ulimits = ["nofile=1024:2048", "nproc=500"]
default_capabilities = ["CHOWN", "CAP_KILL"]
seccomp_profile = "{prof}"
[log]
driver = "local"
options = {{ max-size = "5m" }}
'''))
    from kobako.engine import ocispec
    full, opts = _plan_host({})
    assert opts.dns == ["10.0.0.53"] and opts.dns_search == ["corp.example"]
    assert opts.dns_options == ["ndots:2"]
    assert opts.ulimits == [("nofile", 1024, 2048), ("nproc", 500, 500)]
    assert ocispec.capabilities(opts) == ["CAP_CHOWN", "CAP_KILL"]
    assert opts.seccomp == prof
    assert full.host["LogConfig"] == {"Type": "local", "Config": {"max-size": "5m"}}
    # the container's own flags win
    full, opts = _plan_host({"Dns": ["1.1.1.1"], "Ulimits": [{"Name": "nofile", "Soft": 10, "Hard": 20}],
                             "CapAdd": ["NET_ADMIN"], "SecurityOpt": ["seccomp=unconfined"],
                             "LogConfig": {"Type": "json-file", "Config": {}}})
    assert opts.dns == ["1.1.1.1"] and opts.dns_search == ["corp.example"]
    assert opts.ulimits[-1] == ("nofile", 10, 20)  # after the default: it replaces it in config.json
    assert "CAP_NET_ADMIN" in ocispec.capabilities(opts) and opts.seccomp == "unconfined"
    assert full.host["LogConfig"] == {"Type": "json-file", "Config": {}}


@pytest.mark.parametrize("text, message", [
    ('[containers]\ndefault_capabilities = ["FLY"]\n', r"\[containers\] default_capabilities: unknown capa"),
    ('[containers]\nseccomp_profile = "/no/such.json"\n', r"\[containers\] seccomp_profile: /no/such.json: "),
    ('[containers]\ndefault_ulimits = ["nofile=20:10"]\n', r"\[containers\] default_ulimits: invalid ulimit"),
    ('[dns]\nservers = ["dns.example"]\n', r"\[dns\] servers: 'dns.example' is not an IP address"),
    ('[log]\ndriver = "syslog"\n', r"\[log\] driver: no log driver named 'syslog'"),
])
def test_container_defaults_checked_by_their_consumer(tmp_path, monkeypatch, text, message):
    p = use(monkeypatch, write(tmp_path / "k.toml", text)).files[0]
    with pytest.raises(config.ConfigError, match=rf"^{p}: {message}"):
        _plan_host({})


def test_registries_from_toml_and_old_json(tmp_path, monkeypatch):
    from kobako.image import reference, registries
    (tmp_path / "registries.json").write_text('{"insecure": ["old:5000"], "mirrors": {"docker.io": ["http://old"]}}')
    monkeypatch.setenv("KOBAKO_REGISTRIES", str(tmp_path / "registries.json"))
    use(monkeypatch, write(tmp_path / "k.toml", '[registries]\ninsecure = ["new:5000", "10.0.0.0/8"]\n'
                           'mirrors = { "index.docker.io" = ["http://new"] }\nblocked = ["evil.example"]\n'
                           'search = ["quay.io"]\n'))
    assert registries.mirrors("docker.io") == ["http://new", "http://old"]
    assert registries.is_insecure("new:5000") and registries.is_insecure("old:5000")
    assert registries.is_insecure("10.1.2.3:5000") and not registries.is_insecure("other:5000")
    assert registries.is_blocked("evil.example") and registries.is_blocked("evil.example:443")
    assert not registries.is_blocked("docker.io")
    assert reference.parse("busybox").domain == "quay.io"
    assert reference.parse("docker.io/library/busybox").domain == "docker.io"
    from kobako.image.registry import Client, RegistryError
    with pytest.raises(RegistryError, match=r"registry evil.example is blocked in \[registries\] blocked"):
        Client("evil.example")
