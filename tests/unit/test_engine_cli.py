"""The engine's CLI parser, output formatting and run-option translation: no root needed."""

from __future__ import annotations

import pytest

from kobako.cli import output, parser
from kobako.cli.containers import COMMANDS as CCMDS
from kobako.engine import ocispec
from kobako.image.changes import apply as parse_changes

RUN = CCMDS["run"][0]


def test_run_flags_bundle_and_stop_at_the_image():
    a = parser.parse(RUN, ["-it", "--rm", "--name=x", "-e", "A=1", "-eB=2", "-v", "/h:/c:ro", "img",
                           "sh", "-c", "echo -it"])
    assert a.interactive and a.tty and a.rm and a.name == "x"
    assert a.env == ["A=1", "B=2"] and a.volume == ["/h:/c:ro"]
    assert a.args == ["img", "sh", "-c", "echo -it"]


@pytest.mark.parametrize("argv, msg", [
    (["--bogus", "img"], "unknown flag: --bogus"), (["-Z", "img"], "unknown shorthand"),
    (["--name"], "needs an argument"), ([], "requires at least 1 argument"),
])
def test_run_usage_errors(argv, msg):
    with pytest.raises(parser.UsageError, match=msg):
        parser.parse(RUN, argv)


def test_human_size():
    assert output.human_size(0) == "0B" and output.human_size(4_300_000) == "4.3MB"


def test_changes_apply_dockerfile_instructions():
    cfg = parse_changes(['CMD ["sh", "-c", "x"]', "ENV A=1", "ENV B 2", "WORKDIR /w", "EXPOSE 80 53/udp",
                         "ENTRYPOINT echo hi", "USER 1000:1000", "LABEL k=v"], {"Env": ["A=0"]})
    assert cfg["Cmd"] == ["sh", "-c", "x"] and cfg["Env"] == ["A=1", "B=2"]
    assert cfg["Entrypoint"] == ["/bin/sh", "-c", "echo hi"] and cfg["WorkingDir"] == "/w"
    assert cfg["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}} and cfg["User"] == "1000:1000"
    assert cfg["Labels"] == {"k": "v"}


def test_spec_from_image_config_and_options():
    img = {"Cmd": ["sh"], "Entrypoint": None, "Env": ["PATH=/bin", "X=1"], "WorkingDir": "/srv"}
    s = ocispec.build(img, ocispec.RunOptions(command=["echo", "hi"], env=["Y=2"], memory=1 << 25),
                      "f" * 64, (0, 0, []), {"type": "overlay", "source": "overlay", "options": []})
    assert s["process"]["args"] == ["echo", "hi"] and s["process"]["cwd"] == "/srv"
    assert s["process"]["env"] == ["PATH=/bin", "X=1", "Y=2"]
    assert s["hostname"] == "f" * 12 and s["linux"]["resources"]["memory"]["limit"] == 1 << 25
    assert "CAP_CHOWN" in s["process"]["capabilities"]["bounding"]
    assert "org.kobako.rootfs.mount" in s["annotations"]
    s2 = ocispec.build({"Entrypoint": ["/ep"], "Cmd": ["a"]}, ocispec.RunOptions(), "f" * 64, (5, 6, []),
                       None)
    assert s2["process"]["args"] == ["/ep", "a"] and s2["process"]["env"][0].startswith("PATH=")
    assert s2["process"]["user"] == {"uid": 5, "gid": 6} and s2["process"]["capabilities"]["effective"] == []
    with pytest.raises(ocispec.OptionError, match="no command"):
        ocispec.build({}, ocispec.RunOptions(), "f" * 64, (0, 0, []), None)


@pytest.mark.parametrize("s, n", [("512", 512), ("32m", 32 << 20), ("1g", 1 << 30), ("1.5k", 1536)])
def test_sizes(s, n):
    assert ocispec.parse_size(s) == n


def test_h_is_the_hostname_for_run_and_create_and_help_elsewhere():
    a = parser.parse(CCMDS["run"][0], ["-h", "myhost", "img"])
    assert a.hostname == "myhost" and not a.help
    assert parser.parse(CCMDS["create"][0], ["-h", "x", "img"]).hostname == "x"
    assert parser.parse(CCMDS["run"][0], ["--help"]).help
    assert parser.parse(CCMDS["ps"][0], ["-h"]).help


def test_group_help_and_help_of_a_command(capsys):
    from kobako.cli import main
    assert main.main(["network", "--help"]) == 0
    out = capsys.readouterr().out
    assert "Usage:  kobako network COMMAND" in out and "  ls, list" in out and "create" in out
    assert main.main(["image"]) == 0
    assert "inspect" in capsys.readouterr().out
    assert main.main(["help", "ps"]) == 0
    assert capsys.readouterr().out.startswith("Usage:  kobako ps [OPTIONS]")


def test_stats_memory_in_binary_units_and_block_io_summed():
    from kobako.cli.host import _stats_row
    doc = {"id": "a" * 64, "name": "/c", "memory_stats": {"usage": 64 << 20, "limit": 1 << 30},
           "pids_stats": {"current": 2}, "networks": {},
           "cpu_stats": {"cpu_usage": {"total_usage": 0}, "system_cpu_usage": 0, "online_cpus": 1},
           "precpu_stats": {"cpu_usage": {"total_usage": 0}, "system_cpu_usage": 0},
           "blkio_stats": {"io_service_bytes_recursive": [
               {"major": 8, "minor": 0, "op": "Read", "value": 1500},
               {"major": 8, "minor": 0, "op": "Write", "value": 0},
               {"major": 8, "minor": 16, "op": "read", "value": 500},
               {"major": 8, "minor": 0, "op": "Total", "value": 9}]}}
    row = _stats_row(doc)
    assert row["MemUsage"] == "64MiB / 1GiB" and row["BlockIO"] == "2kB / 0B"


def test_block_io_from_v1_and_v2_files(tmp_path):
    from kobako.runtime.cgroups import stats
    (tmp_path / "blkio.throttle.io_service_bytes_recursive").write_text(
        "8:0 Read 4096\n8:0 Write 8192\n8:0 Total 12288\nTotal 12288\n")
    (tmp_path / "io.stat").write_text("8:0 rbytes=100 wbytes=200 rios=1 wios=2 dbytes=0 dios=0\n")
    assert stats._blkio_v1(str(tmp_path))[:2] == [{"major": 8, "minor": 0, "op": "Read", "value": 4096},
                                                 {"major": 8, "minor": 0, "op": "Write", "value": 8192}]
    assert stats._io_v2(str(tmp_path)) == [{"major": 8, "minor": 0, "op": "read", "value": 100},
                                           {"major": 8, "minor": 0, "op": "write", "value": 200}]
