"""kobako.storage.layer: layer tars in and out -- round trips of every entry kind,
decompression sniffing, whiteouts both ways, sparse files, replacing entries."""

from __future__ import annotations

import gzip
import inspect
import io
import os
import shutil
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from kobako.storage import layer
from kobako.storage.layer import LayerError

pytestmark = pytest.mark.root  # chown to other uids, mknod, security.* and trusted.* xattrs

# security.capability, VFS_CAP_REVISION_2: magic 0x02000001, then permitted/inheritable
# pairs; this one is cap_net_raw+ep (what `setcap cap_net_raw+ep` writes).
CAP_NET_RAW = bytes.fromhex("0100000200200000000000000000000000000000")


# -- helpers ----------------------------------------------------------------------------------


def make_tar(*entries: tuple[tarfile.TarInfo, bytes | None], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for info, data in entries:
            if data is not None:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def entry(name: str, kind: bytes = tarfile.REGTYPE, data: bytes | None = None, mode: int = 0o644,
          linkname: str = "", **kw) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname, info.mtime = kind, mode, linkname, 1_600_000_000
    for k, v in kw.items():
        setattr(info, k, v)
    return info, (data if data is not None else (b"" if kind == tarfile.REGTYPE else None))


def extract_bytes(data: bytes, dest: Path) -> int:
    dest.mkdir(exist_ok=True)
    return layer.extract(io.BytesIO(data), str(dest))


def names(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as tf:
        return [m.name + ("/" if m.isdir() else "") for m in tf]


def describe(root: Path) -> dict[str, tuple]:
    """Everything about a tree that a layer carries, by relative path (root excluded)."""
    out = {}
    inodes: dict[tuple[int, int], str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for n in sorted(dirnames + filenames):
            p = os.path.join(dirpath, n)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            kind = stat.S_IFMT(st.st_mode)
            if stat.S_ISREG(st.st_mode):
                extra = Path(p).read_bytes()
            elif stat.S_ISLNK(st.st_mode):
                extra = os.readlink(p)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                extra = st.st_rdev
            else:
                extra = None
            xattrs = {} if stat.S_ISLNK(st.st_mode) else {
                k: os.getxattr(p, k) for k in os.listxattr(p) if not k.startswith("trusted.")}
            # hardlinks: the same inode under two names, told by the first name seen
            first = inodes.setdefault((st.st_dev, st.st_ino), rel) if st.st_nlink > 1 else rel
            out[rel] = (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, int(st.st_mtime),
                        st.st_nlink if not stat.S_ISDIR(st.st_mode) else None, extra, xattrs, first)
    return out


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A source tree with one of everything a layer can hold."""
    src = tmp_path / "src"
    (src / "d" / "sub").mkdir(parents=True)
    (src / "d" / "f").write_bytes(b"hello\n" * 1000)
    os.chown(src / "d" / "f", 123, 456)
    os.chmod(src / "d" / "f", 0o640)
    os.chown(src / "d", 1000, 1001)
    os.chmod(src / "d", 0o750)
    os.link(src / "d" / "f", src / "d" / "hard")
    (src / "bin").mkdir()
    (src / "bin" / "su").write_bytes(b"\x7fELF fake")
    os.chmod(src / "bin" / "su", 0o4755)
    (src / "sg").mkdir()
    os.chmod(src / "sg", 0o2775)
    (src / "tmp").mkdir()
    os.chmod(src / "tmp", 0o1777)
    (src / "ping").write_bytes(b"ping")
    os.setxattr(src / "ping", "security.capability", CAP_NET_RAW)
    os.setxattr(src / "d" / "f", "user.note", b"\x00\xffbinary")
    os.symlink("d/f", src / "rel-link")
    os.symlink("/etc/passwd", src / "abs-link")
    os.symlink("nowhere", src / "dangling")
    os.mkfifo(src / "fifo", 0o600)
    os.mknod(src / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(src / "loop9", stat.S_IFBLK | 0o660, os.makedev(7, 9))
    (src / "empty").touch()
    with open(src / "sparse", "wb") as f:
        f.truncate(8 << 20)
        f.seek(4 << 20)
        f.write(b"middle")
    long_dir = src / ("x" * 90) / ("y" * 90)
    long_dir.mkdir(parents=True)
    (long_dir / ("z" * 120)).write_text("long name")
    (src / "ünïcode").write_text("utf-8 name")
    (src / os.fsdecode(b"raw-\xff")).write_text("not utf-8")
    os.utime(src / "d" / "f", (1_500_000_000, 1_500_000_000))
    os.utime(src / "rel-link", (1_400_000_000, 1_400_000_000), follow_symlinks=False)
    os.utime(src / "d", (1_300_000_000, 1_300_000_000))
    return src


# -- round trips ------------------------------------------------------------------------------


def test_write_tree_then_extract_gives_back_the_same_tree(tree: Path, tmp_path: Path):
    out = io.BytesIO()
    layer.write_tree(str(tree), out)
    dest = tmp_path / "dest"
    written = extract_bytes(out.getvalue(), dest)
    want = describe(tree)
    assert describe(dest) == want
    # content bytes, a hardlinked file's once
    assert written == sum(len(v[6]) for k, v in want.items() if v[0] == stat.S_IFREG and v[8] == k)
    assert os.getxattr(dest / "ping", "security.capability") == CAP_NET_RAW
    assert (dest / "d" / "f").stat().st_nlink == 2
    assert os.path.samestat((dest / "d" / "f").stat(), (dest / "d" / "hard").stat())
    assert stat.S_IMODE((dest / "bin" / "su").stat().st_mode) == 0o4755


def test_written_tar_looks_like_a_docker_layer(tree: Path):
    out = io.BytesIO()
    layer.write_tree(str(tree), out)
    got = names(out.getvalue())
    assert got[:2] == ["abs-link", "bin/"]
    assert "d/" in got and got.index("d/") < got.index("d/f") < got.index("d/hard")
    assert not any(n.startswith(("/", "./")) for n in got)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue()), mode="r|") as tf:
        members = {m.name: m for m in tf}
    assert members["d/hard"].islnk() and members["d/hard"].linkname == "d/f"
    assert members["null"].ischr() and (members["null"].devmajor, members["null"].devminor) == (1, 3)
    assert members["ping"].pax_headers["SCHILY.xattr.security.capability"].encode(
        "utf-8", "surrogateescape") == CAP_NET_RAW
    assert members["d/f"].mtime == 1_500_000_000 and members["d/f"].uid == 123


def test_write_tree_does_not_cross_into_other_mounts(tree: Path):
    mnt = tree / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "kobako-test", str(mnt)], check=True)
    try:
        (mnt / "inner").write_text("on another filesystem")
        out = io.BytesIO()
        layer.write_tree(str(tree), out)
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    got = names(out.getvalue())
    assert "mnt/" in got and "mnt/inner" not in got


def test_gnu_sparse_members_keep_their_holes(tmp_path: Path):
    src = tmp_path / "s"
    src.mkdir()
    with open(src / "big", "wb") as f:
        f.truncate(64 << 20)
        f.seek(32 << 20)
        f.write(b"data in the middle")
        f.seek((64 << 20) - 4)
        f.write(b"tail")
    want = (src / "big").read_bytes()
    for fmt in ("gnu", "posix"):  # old GNU 'S' members, and PAX GNU.sparse 1.0
        tar = subprocess.run(["tar", "-C", str(src), f"--format={fmt}", "--sparse", "-cf", "-", "big"],
                             check=True, capture_output=True).stdout
        dest = tmp_path / f"d-{fmt}"
        assert extract_bytes(tar, dest) <= 64 << 10  # only the data blocks (tar stores whole 4k ones)
        assert (dest / "big").read_bytes() == want
        assert (dest / "big").stat().st_blocks * 512 < 1 << 20, "holes were filled in"


# -- decompression -----------------------------------------------------------------------------


def _sample() -> bytes:
    return make_tar(entry("etc/", tarfile.DIRTYPE, mode=0o755),
                    entry("etc/hosts", data=b"127.0.0.1 localhost\n" * 5000))


def _roundtrip(blob: bytes, tmp_path: Path) -> bytes:
    with layer.open_decompressed(io.BufferedReader(io.BytesIO(blob))) as r:
        dest = tmp_path / "d"
        dest.mkdir()
        layer.extract(r, str(dest))
    return (dest / "etc" / "hosts").read_bytes()


def test_plain_tar_is_passed_through(tmp_path: Path):
    assert _roundtrip(_sample(), tmp_path) == b"127.0.0.1 localhost\n" * 5000


def test_gzip_is_sniffed(tmp_path: Path):
    assert _roundtrip(gzip.compress(_sample()), tmp_path) == b"127.0.0.1 localhost\n" * 5000


def test_concatenated_gzip_members_and_zero_padding(tmp_path: Path):
    t = _sample()
    blob = gzip.compress(t[:7000]) + gzip.compress(t[7000:20000]) + b"\0" * 100 + gzip.compress(t[20000:])
    assert _roundtrip(blob, tmp_path) == b"127.0.0.1 localhost\n" * 5000


def test_zlib_gunzip_reader_in_small_and_large_reads():
    data = os.urandom(300_000) + b"\0" * 3_000_000
    blob = gzip.compress(data[:100]) + gzip.compress(data[100:])
    r = layer._Decoded.gzip(io.BytesIO(blob))
    got = r.read(1) + r.read(7) + r.read(100_000) + r.read()
    assert got == data
    assert r.read(10) == b""


def test_gunzip_reader_reports_a_cut_stream():
    blob = gzip.compress(os.urandom(100_000))
    r = layer._Decoded.gzip(io.BytesIO(blob[:-9]))
    with pytest.raises(EOFError):
        r.read()


def test_zstd(tmp_path: Path):
    try:
        import zstandard
    except ImportError:
        with pytest.raises(LayerError, match="zstandard"):
            layer.open_decompressed(io.BytesIO(b"\x28\xb5\x2f\xfd" + b"\0" * 20))
        return
    t = _sample()
    c = zstandard.ZstdCompressor()
    assert _roundtrip(c.compress(t), tmp_path) == b"127.0.0.1 localhost\n" * 5000
    blob = c.compress(t[:5000]) + c.compress(t[5000:])  # two frames
    with layer.open_decompressed(io.BytesIO(blob)) as r:
        assert r.read() == t
    with layer.open_decompressed(io.BytesIO(blob[:-3])) as r, pytest.raises(EOFError):
        r.read()


def test_short_reads_from_a_pipe_are_fine(tmp_path: Path):
    blob = gzip.compress(_sample())
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # a writer that hands the stream out one byte, then in odd sizes
        os.close(r)
        os.write(w, blob[:1])
        for i in range(1, len(blob), 777):
            os.write(w, blob[i:i + 777])
        os._exit(0)
    os.close(w)
    with open(r, "rb", buffering=0) as f:
        assert _roundtrip_stream(f, tmp_path) == b"127.0.0.1 localhost\n" * 5000
    os.waitpid(pid, 0)


def _roundtrip_stream(f, tmp_path: Path) -> bytes:
    with layer.open_decompressed(f) as r:
        dest = tmp_path / "d"
        dest.mkdir()
        layer.extract(r, str(dest))
    return (dest / "etc" / "hosts").read_bytes()


# -- whiteouts ----------------------------------------------------------------------------------


def test_whiteouts_become_overlay_whiteouts(tmp_path: Path):
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "x").mkdir()  # an existing entry the whiteout replaces
    (dest / "x" / "inner").write_text("old")
    tar = make_tar(entry(".wh.x"), entry("d/", tarfile.DIRTYPE), entry("d/.wh..wh..opq"),
                   entry("d/keep", data=b"kept"), entry("e/.wh..wh..opq"), entry("f/.wh.gone"))
    extract_bytes(tar, dest)
    st = os.lstat(dest / "x")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert os.getxattr(dest / "d", "trusted.overlay.opaque") == b"y"
    assert (dest / "d" / "keep").read_bytes() == b"kept"
    assert os.getxattr(dest / "e", "trusted.overlay.opaque") == b"y"  # made for the marker
    assert stat.S_ISCHR(os.lstat(dest / "f" / "gone").st_mode)
    assert not (dest / "d" / ".wh..wh..opq").exists() and not (dest / ".wh.x").exists()


def test_write_diff_turns_overlay_whiteouts_back_into_wh_files(tmp_path: Path):
    upper = tmp_path / "upper"
    (upper / "o").mkdir(parents=True)
    os.setxattr(upper / "o", "trusted.overlay.opaque", b"y")
    (upper / "o" / "new").write_text("new")
    os.mknod(upper / "gone", stat.S_IFCHR, 0)
    (upper / "etc").mkdir()
    os.mknod(upper / "etc" / "removed", stat.S_IFCHR, 0)
    os.mknod(upper / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))  # a real device stays one
    out = io.BytesIO()
    layer.write_diff(str(upper), out)
    assert names(out.getvalue()) == ["etc/", "etc/.wh.removed", ".wh.gone", "null", "o/",
                                     "o/.wh..wh..opq", "o/new"]
    with tarfile.open(fileobj=io.BytesIO(out.getvalue()), mode="r|") as tf:
        for m in tf:
            assert not any(k.startswith("SCHILY.xattr.trusted.") for k in m.pax_headers), m.name
    dest = tmp_path / "again"
    extract_bytes(out.getvalue(), dest)
    assert describe(dest) == describe(upper)
    assert os.getxattr(dest / "o", "trusted.overlay.opaque") == b"y"


def test_write_tree_keeps_char_0_0_as_a_device(tmp_path: Path):
    root = tmp_path / "r"
    root.mkdir()
    os.mknod(root / "c", stat.S_IFCHR, 0)
    out = io.BytesIO()
    layer.write_tree(str(root), out)
    assert names(out.getvalue()) == ["c"]


# -- replacing what is there ---------------------------------------------------------------------


def test_later_members_replace_earlier_ones(tmp_path: Path):
    dest = tmp_path / "dest"
    tar = make_tar(
        entry("a/", tarfile.DIRTYPE), entry("a/child", data=b"1"),
        entry("a/", tarfile.DIRTYPE, mode=0o700),           # dir over dir: kept, metadata updated
        entry("b/", tarfile.DIRTYPE), entry("b/x", data=b"x"),
        entry("b", data=b"now a file"),                      # file over dir: the tree goes
        entry("c", data=b"file"), entry("c/", tarfile.DIRTYPE),  # dir over file
        entry("l", tarfile.SYMTYPE, linkname="a"), entry("l/", tarfile.DIRTYPE),  # dir over symlink
        entry("f", data=b"first"), entry("f", data=b"second"),
    )
    extract_bytes(tar, dest)
    assert (dest / "a" / "child").read_bytes() == b"1"
    assert stat.S_IMODE((dest / "a").stat().st_mode) == 0o700
    assert (dest / "b").read_bytes() == b"now a file"
    assert (dest / "c").is_dir() and not (dest / "l").is_symlink() and (dest / "l").is_dir()
    assert (dest / "f").read_bytes() == b"second"


def test_owners_and_modes_are_exact_where_no_chown_or_chmod_is_made(tmp_path: Path):
    """Entries that are ours already skip fchown/fchmod: a setgid directory (whose group new
    entries inherit), a symlink into it, modes the umask would cut, and setuid still come out
    exactly as written."""
    dest = tmp_path / "dest"
    tar = make_tar(
        entry("mail/", tarfile.DIRTYPE, mode=0o2775, gid=8),
        entry("mail/root", data=b"r", mode=0o660), entry("mail/l", tarfile.SYMTYPE, linkname="root"),
        entry("via", tarfile.SYMTYPE, linkname="mail"), entry("via/f", data=b"f"),
        entry("open", data=b"o", mode=0o666), entry("su", data=b"s", mode=0o4755),
        entry("plain", data=b"p", mode=0o644), entry("none", data=b"n", mode=0o000),
    )
    old = os.umask(0o077)
    try:
        extract_bytes(tar, dest)
    finally:
        os.umask(old)
    st = {n: os.lstat(dest / n)
          for n in ("mail", "mail/root", "mail/l", "mail/f", "open", "su", "plain", "none")}
    assert (st["mail"].st_gid, stat.S_IMODE(st["mail"].st_mode)) == (8, 0o2775)
    assert all(st[n].st_gid == 0 for n in ("mail/root", "mail/l", "mail/f", "open", "su", "plain"))
    assert [stat.S_IMODE(st[n].st_mode) for n in ("mail/root", "open", "su", "plain", "none")] == \
        [0o660, 0o666, 0o4755, 0o644, 0]


def test_header_numbers_in_every_encoding_tarfile_reads(tmp_path: Path):
    """The fast header parser reads what tarfile's does: base-256 sizes and ids (GNU), octal
    fields ending in a space or NUL, ustar prefixes for long names, V7 directories."""
    dest = tmp_path / "dest"
    long = "d" * 90 + "/" + "e" * 90 + "/file"
    gnu = make_tar(entry("big-uid", data=b"x", uid=0o10000000, gid=3), fmt=tarfile.GNU_FORMAT)
    ustar = make_tar(entry(long, data=b"deep"), fmt=tarfile.USTAR_FORMAT)
    v7 = bytearray(make_tar(entry("olddir/", tarfile.DIRTYPE), fmt=tarfile.USTAR_FORMAT))
    v7[156:157] = tarfile.AREGTYPE
    v7[148:156] = b"%06o\0 " % (256 + sum(v7[:148]) + sum(v7[156:512]))
    for t in (gnu, ustar, bytes(v7)):
        extract_bytes(t, dest)
    assert os.stat(dest / "big-uid").st_uid == 0o10000000 and (dest / long).read_bytes() == b"deep"
    assert (dest / "olddir").is_dir()
    bad = bytearray(gnu)
    bad[100] ^= 1  # mode digit changed: the checksum no longer matches
    with pytest.raises(LayerError, match="checksum"):
        extract_bytes(bytes(bad), tmp_path / "bad")


def test_missing_parents_are_made_and_dir_mtimes_survive_their_children(tmp_path: Path):
    dest = tmp_path / "dest"
    tar = make_tar(entry("p/", tarfile.DIRTYPE, mtime=1_234_567_890), entry("p/q/r/file", data=b"deep"))
    extract_bytes(tar, dest)
    assert (dest / "p" / "q" / "r" / "file").read_bytes() == b"deep"
    assert stat.S_IMODE((dest / "p" / "q").stat().st_mode) == 0o755
    assert (dest / "p").stat().st_mtime == 1_234_567_890


def test_root_entry_sets_the_root_metadata(tmp_path: Path):
    dest = tmp_path / "dest"
    extract_bytes(make_tar(entry("./", tarfile.DIRTYPE, mode=0o711), entry("./a", data=b"a")), dest)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o711 and (dest / "a").exists()


def test_empty_stream_is_an_empty_layer_and_a_missing_end_marker_is_accepted(tmp_path: Path):
    assert extract_bytes(b"", tmp_path / "e") == 0
    tar = make_tar(entry("a", data=b"abc"))
    assert extract_bytes(tar[:1024], tmp_path / "f") == 3  # header + one data block, no zero blocks
    assert (tmp_path / "f" / "a").read_bytes() == b"abc"


def test_unknown_member_types_are_skipped_and_contiguous_files_are_files(tmp_path: Path):
    dest = tmp_path / "dest"
    tar = make_tar(entry("weird", b"Z", data=None), entry("cont", tarfile.CONTTYPE, data=b"contiguous"),
                   entry("after", data=b"ok"))
    extract_bytes(tar, dest)
    assert not (dest / "weird").exists()
    assert (dest / "cont").read_bytes() == b"contiguous" and (dest / "after").read_bytes() == b"ok"


def test_fds_are_all_closed_afterwards(tree: Path, tmp_path: Path):
    out = io.BytesIO()
    layer.write_tree(str(tree), out)
    before = set(os.listdir("/proc/self/fd"))
    extract_bytes(out.getvalue(), tmp_path / "a")
    with pytest.raises(LayerError):
        extract_bytes(out.getvalue()[:5000], tmp_path / "b")
    assert set(os.listdir("/proc/self/fd")) == before


def test_many_directories_do_not_run_out_of_fds(tmp_path: Path):
    entries = []
    for i in range(300):  # more than the fd cache holds, revisited out of order
        entries.append(entry(f"d{i}/", tarfile.DIRTYPE))
        entries.append(entry(f"d{i}/f", data=b"x"))
    entries += [entry(f"d{i}/g", data=b"y") for i in range(0, 300, 7)]
    dest = tmp_path / "dest"
    extract_bytes(make_tar(*entries), dest)
    assert (dest / "d299" / "f").read_bytes() == b"x" and (dest / "d294" / "g").read_bytes() == b"y"


def test_missing_destination_is_a_layer_error(tmp_path: Path):
    with pytest.raises(LayerError, match="cannot open layer directory"):
        layer.extract(io.BytesIO(_sample()), str(tmp_path / "nope"))


def test_write_tree_of_a_missing_directory_is_a_layer_error(tmp_path: Path):
    with pytest.raises(LayerError):
        layer.write_tree(str(tmp_path / "nope"), io.BytesIO())


@pytest.fixture(autouse=True)
def _no_stray_mounts(tmp_path: Path):
    yield
    if any(str(tmp_path) in line for line in Path("/proc/self/mountinfo").read_text().splitlines()):
        pytest.fail("a mount under tmp_path was left behind")
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_deep_trees_are_walked_without_recursion(tmp_path: Path):
    root = tmp_path / "deep"
    root.mkdir()
    fd = os.open(root, os.O_RDONLY)
    for _ in range(400):
        os.mkdir("d", dir_fd=fd)
        nfd = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    os.close(os.open("leaf", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))
    os.close(fd)
    out = io.BytesIO()
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(len(inspect.stack()) + 60)  # write_tree may not recurse per level
    try:
        layer.write_tree(str(root), out)
    finally:
        sys.setrecursionlimit(limit)
    got = names(out.getvalue())
    assert len(got) == 401 and got[-1] == "d/" * 400 + "leaf"
    subprocess.run(["rm", "-rf", str(root)], check=True)  # shutil.rmtree recurses
