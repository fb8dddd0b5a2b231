"""The builder's RUN --mount helpers without containers: a source found in a stack of layer
directories as overlay shows it, cache-mount directories and their locks, `--secret`
parsing, and a missing required secret."""

from __future__ import annotations

import os
import stat
import types
from pathlib import Path

import pytest

from kobako.cli.build import _secrets
from kobako.cli.parser import UsageError
from kobako.engine import build
from kobako.errors import InvalidArgument
from kobako.image import dockerfile
from kobako.image.buildcache import CacheMounts
from kobako.image.context import SourceNotFound


def layers(tmp_path: Path, n: int) -> list[Path]:
    out = [tmp_path / f"l{i}" for i in range(n)]
    for d in out:
        d.mkdir()
    return out


def test_a_source_in_a_stack_of_layers(tmp_path: Path):
    low, high = layers(tmp_path, 2)
    (low / "app" / "lib").mkdir(parents=True)
    (low / "app" / "lib" / "a.so").write_text("a")
    (low / "app" / "old.txt").write_text("old")
    (high / "app").mkdir()
    (high / "app" / "new.txt").write_text("new")
    (high / "app" / "old.txt").write_text("replaced")
    os.symlink("/app", high / "link")  # absolute: resolves inside the stack, not on the host
    os.symlink("../../../../../etc/passwd", high / "escape")
    (low / "etc").mkdir()
    (low / "etc" / "passwd").write_text("the stage's own\n")
    stack = [str(high), str(low)]  # top first
    assert build._layer_lookup(stack, "/app") == (True, [f"{high}/app", f"{low}/app"])
    assert build._layer_lookup(stack, "link/lib") == (True, [f"{low}/app/lib"])
    assert build._layer_lookup(stack, "/app/old.txt") == (False, [f"{high}/app/old.txt"])
    assert build._layer_lookup(stack, "escape") == (False, [f"{low}/etc/passwd"])
    assert build._layer_lookup(stack, "") == (True, stack)
    for missing in ("/nope", "/app/old.txt/x", "/app/../../nope"):
        with pytest.raises(SourceNotFound):
            build._layer_lookup(stack, missing)
    os.symlink("loop", high / "loop")
    with pytest.raises(InvalidArgument, match="too many levels"):
        build._layer_lookup(stack, "loop")


def test_a_file_above_a_directory_hides_it(tmp_path: Path):
    low, high = layers(tmp_path, 2)
    (low / "d").mkdir()
    (low / "d" / "x").write_text("x")
    (high / "d").write_text("now a file")
    assert build._layer_lookup([str(high), str(low)], "d") == (False, [f"{high}/d"])
    with pytest.raises(SourceNotFound):
        build._layer_lookup([str(high), str(low)], "d/x")


@pytest.mark.skipif(os.geteuid() != 0, reason="whiteouts (0:0 devices) and trusted xattrs need root")
def test_whiteouts_and_opaque_directories_hide_the_layers_below(tmp_path: Path):
    low, mid, high = layers(tmp_path, 3)
    (low / "gone").mkdir()
    (low / "gone" / "x").write_text("x")
    os.mknod(mid / "gone", stat.S_IFCHR, 0)  # deleted in mid
    (low / "redo").mkdir()
    (low / "redo" / "old").write_text("old")
    (high / "redo").mkdir()  # made again in high: opaque, the old content does not show
    os.setxattr(high / "redo", "trusted.overlay.opaque", b"y")
    stack = [str(high), str(mid), str(low)]
    with pytest.raises(SourceNotFound):
        build._layer_lookup(stack, "gone")
    assert build._layer_lookup(stack, "redo") == (True, [f"{high}/redo"])
    with pytest.raises(SourceNotFound):
        build._layer_lookup(stack, "redo/old")


def test_cache_mount_directories_and_their_sharing(tmp_path: Path):
    cm = CacheMounts(str(tmp_path))
    p1, fd1 = cm.acquire("/var/cache/apt", "shared", 0o750)
    p2, fd2 = cm.acquire("/var/cache/apt", "shared")
    assert p1 == p2 and p1.endswith("/0") and stat.S_IMODE(os.stat(p1).st_mode) == 0o750
    p3, fd3 = cm.acquire("/var/cache/apt", "private")  # 0 is in use: a directory of its own
    assert p3.endswith("/1")
    Path(p1, "f").write_bytes(b"x" * 10000)
    n, size = cm.size()
    assert n == 2 and size >= 10000
    assert cm.clear() == 0 and os.path.isdir(p1) and os.path.isdir(p3)  # all in use: kept
    for fd in (fd1, fd2, fd3):
        os.close(fd)
    assert cm.clear() >= 10000 and not os.path.exists(p1) and not os.path.exists(p3)
    p4, fd4 = cm.acquire("/var/cache/apt", "locked")
    assert p4 == p1 and os.listdir(p4) == []  # made again, empty
    os.close(fd4)
    other, fd5 = cm.acquire("go-build", "shared")
    assert os.path.dirname(other) != os.path.dirname(p1)
    os.close(fd5)


def test_secret_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    f = tmp_path / "tok"
    f.write_bytes(b"file-value")
    monkeypatch.setenv("API_TOKEN", "env-value")
    monkeypatch.setenv("OTHER", "other-value")
    monkeypatch.chdir(tmp_path)
    assert _secrets([f"id=a,src={f}", "id=b,env=OTHER", "id=API_TOKEN", "id=tok", "type=env,id=c,src=OTHER",
                     f"type=file,id=d,source={f}"]) == {
        "a": b"file-value", "b": b"other-value", "API_TOKEN": b"env-value", "tok": b"file-value",
        "c": b"other-value", "d": b"file-value"}
    for bad, msg in (("src=x", "secret missing ID"), ("id=a,colour=red", "unexpected key 'colour'"),
                     ("id=a,type=ssh", "unsupported secret type"), ("id=a,src", "key=value pair")):
        with pytest.raises(UsageError, match=msg):
            _secrets([bad])
    with pytest.raises(InvalidArgument, match="--secret nope: cannot read nope"):
        _secrets(["id=nope"])
    (tmp_path / "big").write_bytes(b"x" * (500 * 1024 + 1))
    with pytest.raises(InvalidArgument, match="too big"):
        _secrets(["id=big"])


@pytest.mark.parametrize("secrets,words", [
    (None, "POST /build carries no secrets"),
    ({}, "--secret id=db,src=FILE"),
])
def test_a_missing_required_secret_fails_naming_it(tmp_path: Path, secrets, words: str):
    ins = dockerfile.parse("FROM x\nRUN --mount=type=secret,id=db,required true\n").instructions[1]
    m = dockerfile.parse_mount(ins.flag_list("mount")[0], ins, lambda v: v)
    b = types.SimpleNamespace(opts=build.Options(secrets=secrets), tmp=str(tmp_path), e=None)
    with build._StepMounts(b) as held, pytest.raises(build.BuildError, match="secret db: not found") as ex:
        held.make([{"mount": m}], None)
    assert words in str(ex.value) and os.listdir(tmp_path) == []
    optional = dockerfile.parse_mount("type=secret,id=db", ins, lambda v: v)
    with build._StepMounts(b) as held:
        assert held.make([{"mount": optional}], None) == ([], [])  # left out, as BuildKit
