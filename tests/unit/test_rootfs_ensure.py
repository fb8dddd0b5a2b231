"""rootfs.ensure: a mount destination inside the root, made where missing, never outside it."""

from __future__ import annotations

import os

import pytest

from kobako.linux import fs
from kobako.runtime.rootfs import ensure


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "root"
    r.mkdir()
    fd = os.open(r, fs.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    yield r, fd
    os.close(fd)


def _same(fd: int, path) -> bool:
    a, b = os.stat(fs.proc_fd(fd)), os.stat(path)
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def test_existing_path_is_opened(root):
    r, rootfd = root
    (r / "sys" / "fs").mkdir(parents=True)
    fd = ensure(rootfd, "/sys/fs")
    assert _same(fd, r / "sys" / "fs")
    os.close(fd)


def test_missing_directories_are_made_from_the_nearest_existing_parent(root):
    r, rootfd = root
    (r / "sys").mkdir()
    fd = ensure(rootfd, "/sys/fs/cgroup/blkio")
    assert (r / "sys" / "fs" / "cgroup" / "blkio").is_dir() and _same(fd, r / "sys/fs/cgroup/blkio")
    os.close(fd)


def test_missing_file_is_made_as_a_file(root):
    r, rootfd = root
    fd = ensure(rootfd, "/etc/hosts", is_file=True)
    assert (r / "etc" / "hosts").is_file() and (r / "etc").is_dir()
    os.close(fd)


def test_a_symlink_leads_inside_the_root_not_out_of_it(root, tmp_path):
    r, rootfd = root
    (r / "data").mkdir()
    os.symlink("/data", r / "vol")  # absolute: inside the root it means <root>/data
    fd = ensure(rootfd, "/vol/sub")
    assert (r / "data" / "sub").is_dir() and not (tmp_path / "data").exists()
    os.close(fd)


def test_a_dangling_symlink_to_the_host_is_not_followed_to_make_a_file(root, tmp_path):
    r, rootfd = root
    outside = tmp_path / "outside"
    os.symlink(str(outside), r / "f")  # from the host's view: a file outside the root
    with pytest.raises(FileNotFoundError):
        ensure(rootfd, "/f", is_file=True)
    assert not outside.exists()
