"""Tar-split: a layer unpacked with a recording gives back its tar byte for byte."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from kobako.storage import layer, tarsplit

pytestmark = pytest.mark.root  # mknod, chown to other ids


def _tree(src: Path) -> None:
    (src / "d" / "sub").mkdir(parents=True)
    (src / "d" / "f").write_bytes(os.urandom(3 << 20) + b"tail")
    os.link(src / "d" / "f", src / "d" / "hard")
    os.chown(src / "d" / "f", 123, 456)
    (src / "empty").touch()
    (src / "odd").write_bytes(b"x" * 513)  # padding of 511 bytes after it
    os.symlink("d/f", src / "link")
    os.mknod(src / "null", 0o20666, os.makedev(1, 3))
    os.mkfifo(src / "fifo")
    long_dir = src / ("x" * 90) / ("y" * 90)
    long_dir.mkdir(parents=True)
    (long_dir / ("z" * 120)).write_text("long name")
    (src / "ünïcode").write_text("utf-8")
    (src / os.fsdecode(b"raw-\xff")).write_text("not utf-8")
    os.setxattr(src / "empty", "user.note", b"\x00\xff")


def _roundtrip(tar: bytes, tmp_path: Path, name: str) -> Path:
    dest = tmp_path / name / "fs"
    dest.mkdir(parents=True)
    split = tmp_path / name / tarsplit.NAME
    layer.extract(io.BytesIO(tar), str(dest), split=str(split))
    return split


@pytest.mark.parametrize("fmt", ["gnu", "posix", "ustar-python", "pax-python"])
def test_assembled_tar_is_the_unpacked_one_byte_for_byte(tmp_path: Path, fmt: str):
    src = tmp_path / "src"
    src.mkdir()
    _tree(src)
    tail = 0
    if fmt in ("gnu", "posix"):
        tar = subprocess.run(["tar", "-C", str(src), f"--format={fmt}", "--xattrs", "-cf", "-", "."],
                             check=True, capture_output=True).stdout
    else:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT if fmt == "pax-python"
                          else tarfile.GNU_FORMAT) as tf:
            tf.add(str(src), arcname=".")
        tail = 3 << 20
        tar = buf.getvalue() + bytes(tail)  # a long zero tail: kept too
    split = _roundtrip(tar, tmp_path, fmt)
    assert split.exists()
    assert tarsplit.size(str(split)) == len(tar)
    assert b"".join(tarsplit.assemble(str(split), str(split.parent / "fs"))) == tar
    assert split.stat().st_size - tail < len(tar) // 20  # headers, not the content


def test_a_layer_that_rewrites_its_own_files_keeps_no_recording(tmp_path: Path):
    def member(name: str, data: bytes) -> tuple[tarfile.TarInfo, io.BytesIO]:
        ti = tarfile.TarInfo(name)
        ti.size = len(data)
        return ti, io.BytesIO(data)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        tf.addfile(*member("a", b"first"))
        tf.addfile(*member("a", b"second"))  # the first content is gone from the snapshot
    assert not _roundtrip(buf.getvalue(), tmp_path, "twice").exists()
    src = tmp_path / "s"
    src.mkdir()
    with open(src / "big", "wb") as f:
        f.truncate(8 << 20)
        f.write(b"start")
    tar = subprocess.run(["tar", "-C", str(src), "--sparse", "-cf", "-", "big"], check=True,
                         capture_output=True).stdout
    assert not _roundtrip(tar, tmp_path, "sparse").exists()


def test_assemble_refuses_a_snapshot_whose_files_changed(tmp_path: Path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name in ("a", "b"):
            ti = tarfile.TarInfo(name)
            ti.size = 100
            tf.addfile(ti, io.BytesIO(b"y" * 100))
    split = _roundtrip(buf.getvalue(), tmp_path, "l")
    fs_dir = split.parent / "fs"
    (fs_dir / "a").write_bytes(b"y" * 99)
    with pytest.raises(tarsplit.TarSplitError, match="shorter"):
        b"".join(tarsplit.assemble(str(split), str(fs_dir)))
    (fs_dir / "a").write_bytes(b"y" * 101)
    with pytest.raises(tarsplit.TarSplitError, match="longer"):
        b"".join(tarsplit.assemble(str(split), str(fs_dir)))
    (fs_dir / "a").unlink()
    os.symlink("/etc/passwd", fs_dir / "a")  # never followed
    with pytest.raises(tarsplit.TarSplitError, match="gone"):
        b"".join(tarsplit.assemble(str(split), str(fs_dir)))
    split.write_bytes(split.read_bytes()[:-1])
    with pytest.raises(tarsplit.TarSplitError, match="cut short"):
        list(tarsplit._records(str(split)))


def test_names_longer_than_path_max_keep_no_recording(tmp_path: Path):
    """Made through cached parent fds, such a file could not be opened again by name."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        path = ""
        for i in range(20):
            path = f"{path}/{chr(97 + i) * 242}".lstrip("/")
            ti = tarfile.TarInfo(path)
            ti.type = tarfile.DIRTYPE
            tf.addfile(ti)
        ti = tarfile.TarInfo(path + "/f")
        ti.size = 1
        tf.addfile(ti, io.BytesIO(b"x"))
    assert not _roundtrip(buf.getvalue(), tmp_path, "deep").exists()


def test_assemble_reads_only_regular_files(tmp_path: Path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        ti = tarfile.TarInfo("a")
        ti.size = 3
        tf.addfile(ti, io.BytesIO(b"abc"))
    split = _roundtrip(buf.getvalue(), tmp_path, "l")
    fs_dir = split.parent / "fs"
    (fs_dir / "a").unlink()
    os.mkfifo(fs_dir / "a")  # would block a plain open for reading
    with pytest.raises(tarsplit.TarSplitError, match="no longer a regular file"):
        b"".join(tarsplit.assemble(str(split), str(fs_dir)))
