"""Hostile layer tars: each trick to write, link or delete outside the layer directory,
and each way to break the stream. Nothing may land outside dest, the bait file next to
it keeps its content and link count, and bad input is a LayerError, never a traceback."""

from __future__ import annotations

import gzip
import hashlib
import inspect
import io
import os
import stat
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

import pytest

from kobako.storage import layer
from kobako.storage.layer import LayerError

BAIT = b"host file: must not change\n"


def make_tar(*entries: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info, data in entries:
            if data is not None:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def reg(name: str, data: bytes = b"pwned\n") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.mode = 0o644
    return info, data


def dir_(name: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, 0o755
    return info, None


def sym(name: str, target: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info, None


def hard(name: str, target: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.LNKTYPE, target
    return info, None


def snapshot(top: Path, skip: Path) -> dict[str, tuple]:
    """Every entry under top except skip: type, content hash or link target, link count."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = [d for d in dirnames if Path(dirpath) / d != skip]  # do not walk into dest
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                what = hashlib.sha256(p.read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                what = os.readlink(p)
            else:
                what = None
            out[str(p)] = (stat.S_IFMT(st.st_mode), what, st.st_nlink, stat.S_IMODE(st.st_mode))
    return out


class Box:
    """tmp_path/dest is the layer directory; tmp_path/outside/bait is a host file to aim at."""

    def __init__(self, tmp_path: Path) -> None:
        self.top = tmp_path
        self.dest = tmp_path / "dest"
        self.dest.mkdir()
        self.outside = tmp_path / "outside"
        self.outside.mkdir()
        self.bait = self.outside / "bait"
        self.bait.write_bytes(BAIT)
        self.tag = uuid.uuid4().hex[:12]  # for names aimed at the real host: /etc/kobako-evil-TAG
        self.before = snapshot(tmp_path, self.dest)
        self.host_passwd = (os.stat("/etc/passwd").st_nlink, Path("/etc/passwd").read_bytes())

    def extract(self, data: bytes | io.IOBase) -> int:
        stream = io.BytesIO(data) if isinstance(data, bytes) else data
        return layer.extract(stream, str(self.dest))

    def check(self) -> None:
        assert snapshot(self.top, self.dest) == self.before, "something outside dest changed"
        assert self.bait.read_bytes() == BAIT and self.bait.stat().st_nlink == 1
        assert (os.stat("/etc/passwd").st_nlink, Path("/etc/passwd").read_bytes()) == self.host_passwd
        for p in (f"/etc/kobako-evil-{self.tag}", f"/kobako-evil-{self.tag}", f"/tmp/kobako-evil-{self.tag}",
                  str(self.top.parent / f"kobako-evil-{self.tag}")):
            assert not os.path.lexists(p), f"{p} was written on the host"


@pytest.fixture
def box(tmp_path: Path):
    b = Box(tmp_path)
    yield b
    b.check()


# -- names ------------------------------------------------------------------------------------------


def test_absolute_name_lands_inside(box: Box):
    box.extract(make_tar(reg(f"/etc/kobako-evil-{box.tag}")))
    assert (box.dest / "etc" / f"kobako-evil-{box.tag}").read_bytes() == b"pwned\n"


def test_absolute_name_of_the_bait_lands_inside(box: Box):
    box.extract(make_tar(reg(str(box.bait))))
    assert (box.dest / str(box.bait).lstrip("/")).read_bytes() == b"pwned\n"


def test_dotdot_name_cannot_climb(box: Box):
    box.extract(make_tar(reg(f"../../kobako-evil-{box.tag}"), reg("../outside/bait"),
                         reg(f"a/../../../../kobako-evil-{box.tag}-2")))
    assert (box.dest / f"kobako-evil-{box.tag}").exists()
    assert (box.dest / "outside" / "bait").read_bytes() == b"pwned\n"
    assert (box.dest / f"kobako-evil-{box.tag}-2").exists()


# -- symlinks used as parents ---------------------------------------------------------------------------


def test_symlink_to_root_then_write_through_it(box: Box):
    box.extract(make_tar(sym("evil", "/"), reg(f"evil/etc/kobako-evil-{box.tag}"), reg("evil/outside/bait")))
    assert (box.dest / "etc" / f"kobako-evil-{box.tag}").read_bytes() == b"pwned\n"
    assert (box.dest / "outside" / "bait").read_bytes() == b"pwned\n"


def test_symlink_to_tmp_lands_in_dest_tmp(box: Box):
    box.extract(make_tar(dir_("tmp/"), sym("evil", "/tmp"), reg(f"evil/kobako-evil-{box.tag}")))
    assert (box.dest / "tmp" / f"kobako-evil-{box.tag}").exists()


def test_symlink_dotdot_then_write_through_it(box: Box):
    box.extract(make_tar(sym("up", "../.."), reg("up/outside/bait"), reg(f"up/kobako-evil-{box.tag}")))
    assert (box.dest / "outside" / "bait").read_bytes() == b"pwned\n"
    assert (box.dest / f"kobako-evil-{box.tag}").exists()


def test_symlink_to_the_real_outside_dir_then_write_through_it(box: Box):
    # the host path exists, but inside dest it does not: a dangling link, refused
    with pytest.raises(LayerError):
        box.extract(make_tar(sym("s", str(box.outside)), reg("s/bait")))


def test_symlink_relative_to_the_outside_dir_then_write_through_it(box: Box):
    with pytest.raises(LayerError):  # '..' stops at dest: dest/outside, which does not exist
        box.extract(make_tar(sym("s", "../outside"), reg("s/bait")))
    box.extract(make_tar(dir_("outside/"), sym("s", "../outside"), reg("s/bait")))
    assert (box.dest / "outside" / "bait").read_bytes() == b"pwned\n"


def test_directory_replaced_by_symlink_mid_extraction(box: Box):
    # 'a' is a real (and cached) directory first; the symlink replaces it, then a/x comes.
    with pytest.raises(LayerError):
        box.extract(make_tar(dir_("a/"), reg("a/first"), sym("a", str(box.outside)), reg("a/bait")))


def test_directory_replaced_by_relative_symlink_mid_extraction(box: Box):
    box.extract(make_tar(dir_("a/"), reg("a/first"), dir_("outside/"),
                         sym("a", "../../outside"), reg("a/bait")))
    assert (box.dest / "outside" / "bait").read_bytes() == b"pwned\n"
    assert (box.dest / "a").is_symlink()


def test_nested_symlinks_chain_stays_inside(box: Box):
    box.extract(make_tar(sym("l1", "../l2"), sym("l2", "/l3/.."), sym("l3", "/../../.."),
                         reg(f"l1/kobako-evil-{box.tag}")))
    assert (box.dest / f"kobako-evil-{box.tag}").exists()


def test_symlink_loop_is_an_error_not_a_hang(box: Box):
    with pytest.raises(LayerError):
        box.extract(make_tar(sym("a", "b"), sym("b", "a"), reg("a/x")))


# -- the final component --------------------------------------------------------------------------------


def test_file_over_a_symlink_replaces_the_symlink(box: Box):
    box.extract(make_tar(sym("f", str(box.bait)), reg("f", b"replaced")))
    assert not (box.dest / "f").is_symlink() and (box.dest / "f").read_bytes() == b"replaced"


def test_file_over_a_relative_symlink_replaces_the_symlink(box: Box):
    box.extract(make_tar(sym("f", "../outside/bait"), reg("f", b"replaced")))
    assert not (box.dest / "f").is_symlink()


def test_directory_over_a_symlink_replaces_the_symlink(box: Box):
    box.extract(make_tar(sym("d", str(box.outside)), dir_("d/"), reg("d/bait")))
    assert (box.dest / "d").is_dir() and not (box.dest / "d").is_symlink()


@pytest.mark.root
def test_device_and_fifo_over_a_symlink_replace_it(box: Box):
    fifo = tarfile.TarInfo("p")
    fifo.type = tarfile.FIFOTYPE
    dev = tarfile.TarInfo("c")
    dev.type, dev.devmajor, dev.devminor = tarfile.CHRTYPE, 1, 3
    box.extract(make_tar(sym("p", str(box.bait)), (fifo, None), sym("c", str(box.bait)), (dev, None)))
    assert stat.S_ISFIFO(os.lstat(box.dest / "p").st_mode)
    assert stat.S_ISCHR(os.lstat(box.dest / "c").st_mode)


# -- hardlinks --------------------------------------------------------------------------------------------


def test_hardlink_to_absolute_host_file_is_refused(box: Box):
    with pytest.raises(LayerError, match="hardlink"):
        box.extract(make_tar(hard("passwd", "/etc/passwd")))


def test_hardlink_to_absolute_name_links_the_layers_own_file(box: Box):
    box.extract(make_tar(reg("etc/passwd", b"layer's passwd"), hard("h", "/etc/passwd")))
    assert os.path.samefile(box.dest / "h", box.dest / "etc" / "passwd")
    assert (box.dest / "h").read_bytes() == b"layer's passwd"


def test_hardlink_to_dotdot_outside_is_refused(box: Box):
    with pytest.raises(LayerError, match="hardlink"):
        box.extract(make_tar(hard("h", "../outside/bait")))


def test_hardlink_through_a_symlinked_parent(box: Box):
    with pytest.raises(LayerError):
        box.extract(make_tar(sym("s", str(box.outside)), hard("h", "s/bait")))
    with pytest.raises(LayerError):
        box.extract(make_tar(sym("s2", "../../outside"), hard("h2", "s2/bait")))


def test_hardlink_through_a_symlinked_parent_to_a_file_inside(box: Box):
    box.extract(make_tar(reg("real/file", b"inside"), sym("s", "/real"), hard("h", "s/file")))
    assert os.path.samefile(box.dest / "h", box.dest / "real" / "file")


def test_hardlink_to_a_symlink_links_the_symlink_not_its_target(box: Box):
    box.extract(make_tar(sym("s", str(box.bait)), hard("h", "s")))
    assert (box.dest / "h").is_symlink() and os.readlink(box.dest / "h") == str(box.bait)


def test_hardlink_over_an_existing_file_replaces_it_and_does_not_write_through(box: Box):
    box.extract(make_tar(reg("a", b"a"), reg("b", b"b"), hard("b", "a"), reg("a", b"new a")))
    assert (box.dest / "b").read_bytes() == b"a" and (box.dest / "a").read_bytes() == b"new a"


# -- whiteouts --------------------------------------------------------------------------------------------


@pytest.mark.root
def test_whiteout_names_cannot_delete_outside(box: Box):
    box.extract(make_tar(reg(".wh.../../outside/bait"), reg("d/.wh..."), reg("d/.wh.."), reg(".wh."),
                         reg("../.wh.outside"), reg("../../.wh.outside")))
    assert stat.S_ISCHR(os.lstat(box.dest / "outside").st_mode)  # a whiteout, inside dest
    assert box.outside.is_dir()


@pytest.mark.root
def test_whiteout_through_a_symlinked_parent_stays_inside(box: Box):
    box.extract(make_tar(dir_("outside/"), sym("s", "../outside"), reg("s/.wh.bait")))
    assert stat.S_ISCHR(os.lstat(box.dest / "outside" / "bait").st_mode)


@pytest.mark.root
def test_opaque_marker_through_a_symlink_to_the_host_is_refused(box: Box):
    with pytest.raises(LayerError):
        box.extract(make_tar(sym("s", str(box.outside)), reg("s/.wh..wh..opq")))
    assert "trusted.overlay.opaque" not in os.listxattr(box.outside)


@pytest.mark.root
def test_layer_cannot_set_overlay_xattrs_itself(box: Box):
    info, data = reg("f")
    info.pax_headers = {"SCHILY.xattr.trusted.overlay.redirect": "/etc",
                        "SCHILY.xattr.trusted.overlay.opaque": "y", "SCHILY.xattr.user.ok": "fine"}
    box.extract(make_tar((info, data)))
    assert os.listxattr(box.dest / "f") == ["user.ok"]


# -- broken streams ------------------------------------------------------------------------------------------


def _good_layer() -> bytes:
    return make_tar(dir_("etc/"), reg("etc/a", os.urandom(5000)), reg("etc/b", b"b" * 3000), reg("etc/c"))


def test_truncated_gzip_layer(box: Box):
    blob = gzip.compress(_good_layer())
    for cut in (len(blob) - 4, len(blob) // 2, 12):
        with pytest.raises(LayerError, match="truncated or corrupt"):
            with layer.open_decompressed(io.BytesIO(blob[:cut])) as r:
                box.extract(r)


def test_corrupt_gzip_layer(box: Box):
    blob = bytearray(gzip.compress(_good_layer()))
    blob[len(blob) // 2] ^= 0xFF
    with pytest.raises(LayerError, match="truncated or corrupt"):
        with layer.open_decompressed(io.BytesIO(bytes(blob))) as r:
            box.extract(r)


@pytest.mark.parametrize("where", ["in data", "in a header", "in padding", "in a pax header"])
def test_truncated_tar(box: Box, where: str):
    t = _good_layer()
    # etc/ header at 0, etc/a header at 512, its 5000 bytes from 1024 padded to 6144, etc/b header
    cut = {"in data": 1124, "in padding": 6030, "in a header": 6144 + 200, "in a pax header": 700}[where]
    if where == "in a pax header":
        t = make_tar(reg("x" * 200))  # a long name: a PAX header comes first
    with pytest.raises(LayerError, match="truncated or corrupt"):
        box.extract(t[:cut])


def test_garbage_bytes(box: Box):
    with pytest.raises(LayerError, match="truncated or corrupt"):
        box.extract(os.urandom(4096))
    with pytest.raises(LayerError, match="truncated or corrupt"):
        box.extract(b"this is not a tar at all")


def test_garbage_after_a_good_member(box: Box):
    t = make_tar(reg("ok", b"fine"))
    with pytest.raises(LayerError, match="truncated or corrupt"):
        box.extract(t[:1024] + os.urandom(2048))


def test_huge_extended_header_is_refused_without_reading_it(box: Box):
    hdr = tarfile.TarInfo("././@PaxHeader")
    hdr.type, hdr.size = tarfile.XHDTYPE, 1 << 40  # a terabyte of "header"
    blob = hdr.tobuf(tarfile.GNU_FORMAT) + b"x" * 512
    with pytest.raises(LayerError, match="extended header"):
        box.extract(blob)


def test_bad_sparse_map_is_refused(box: Box):
    # an old GNU sparse member whose map claims a MiB of data where 512 bytes are stored
    hdr = tarfile.TarInfo("s")
    hdr.type, hdr.size = tarfile.GNUTYPE_SPARSE, 512
    buf = bytearray(hdr.tobuf(tarfile.GNU_FORMAT))
    buf[386:398] = b"%011o\0" % 0  # sparse[0].offset
    buf[398:410] = b"%011o\0" % (1 << 20)  # sparse[0].numbytes
    buf[483:495] = b"%011o\0" % (1 << 20)  # realsize
    buf[148:156] = b"%06o\0 " % tarfile.calc_chksums(bytes(buf))[0]
    with pytest.raises(LayerError, match="sparse"):
        box.extract(bytes(buf) + b"z" * 512 + b"\0" * 1024)


def test_error_messages_are_one_line_and_name_the_entry(box: Box):
    with pytest.raises(LayerError) as e:
        box.extract(make_tar(reg("file"), reg("file/child")))
    assert "file/child" in str(e.value) and "\n" not in str(e.value)


def test_bad_pax_sparse_numbers_are_a_layer_error(box: Box):
    info, data = reg("s", b"z" * 10)
    info.pax_headers = {"GNU.sparse.map": "0,x,5", "GNU.sparse.size": "nope"}
    with pytest.raises(LayerError, match="truncated or corrupt"):
        box.extract(make_tar((info, data)))


def test_very_deep_name_is_made_without_recursion(box: Box):
    deep = "a/" * 400 + "leaf"
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(len(inspect.stack()) + 60)  # extract may not recurse per path component
    try:
        box.extract(make_tar(reg(deep, b"deep")))
    finally:
        sys.setrecursionlimit(limit)
    assert (box.dest / deep).read_bytes() == b"deep"
    subprocess.run(["rm", "-rf", str(box.dest / "a")], check=True)  # shutil.rmtree recurses
    with pytest.raises(LayerError, match="too long"):
        box.extract(make_tar(reg("b/" * 2100 + "leaf")))  # over PATH_MAX
    assert os.listdir(box.dest) == []


def test_parent_that_is_a_dangling_symlink_is_refused(box: Box):
    with pytest.raises(LayerError, match="evil/x"):
        box.extract(make_tar(sym("evil", "/nowhere"), reg("evil/x")))
    assert (box.dest / "evil").is_symlink()


def test_user_xattrs_on_a_fifo_are_dropped_not_fatal(box: Box):
    info = tarfile.TarInfo("p")
    info.type = tarfile.FIFOTYPE
    info.pax_headers = {"SCHILY.xattr.user.x": "1"}
    box.extract(make_tar((info, None)))
    assert stat.S_ISFIFO(os.lstat(box.dest / "p").st_mode)
