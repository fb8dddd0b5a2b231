"""The content digests of a build context's files remembered between builds
(image/context.py DigestCache): an unchanged file is not read again, any change the kernel
records in ctime is seen, files changed just before they were read are not remembered, and
concurrent savers never leave a broken cache."""

from __future__ import annotations

import json
import os
import time

import pytest

from kobako.image.context import DigestCache, Tree


@pytest.fixture
def reads(monkeypatch):
    """The paths whose content a digest read."""
    seen: list[str] = []
    real = Tree._content

    def counting(self, rel, st, dfd, name):
        seen.append(rel)
        return real(self, rel, st, dfd, name)

    monkeypatch.setattr(Tree, "_content", counting)
    return seen


@pytest.fixture
def short_margin(monkeypatch):
    """The racily-clean margin made short, so a test need not wait 2 s; files are made that
    much older than the build that reads them."""
    monkeypatch.setattr(DigestCache, "MARGIN_NS", 20_000_000)


def make(tmp_path, files: dict[str, str]) -> str:
    ctx = tmp_path / "ctx"
    for name, text in files.items():
        (ctx / name).parent.mkdir(parents=True, exist_ok=True)
        (ctx / name).write_text(text)
    return str(ctx)


def digest(ctx: str, cache_dir: str | None, src: str = "src") -> str:
    t = Tree(ctx)
    try:
        if cache_dir is not None:
            t.remember_digests(cache_dir)
        return t.digest(t.sources(src))
    finally:
        t.close()


def aged() -> None:
    time.sleep(0.05)  # older than the short margin, and in an earlier timestamp tick


def test_an_unchanged_file_is_not_read_again_and_the_digest_is_the_same(tmp_path, reads, short_margin):
    ctx = make(tmp_path, {"src/a.txt": "A", "src/d/b.txt": "B" * 1000, "other.txt": "O"})
    os.symlink("a.txt", os.path.join(ctx, "src", "link"))
    cache = str(tmp_path / "digests")
    aged()
    plain = digest(ctx, None)
    first = digest(ctx, cache)
    assert first == plain
    assert sorted(reads) == ["src/a.txt", "src/a.txt", "src/d/b.txt", "src/d/b.txt"]
    reads.clear()
    assert digest(ctx, cache) == plain
    assert reads == []
    assert digest(ctx, cache, "src/a.txt") == digest(ctx, None, "src/a.txt")  # a file source too
    (f,) = os.listdir(cache)
    assert os.stat(os.path.join(cache, f)).st_mode & 0o777 == 0o600


def test_a_change_with_size_and_mtime_restored_is_seen(tmp_path, reads, short_margin):
    ctx = make(tmp_path, {"src/a.txt": "AAAA"})
    cache = str(tmp_path / "digests")
    aged()
    before = digest(ctx, cache)
    path = os.path.join(ctx, "src", "a.txt")
    st = os.stat(path)
    with open(path, "r+") as f:
        f.write("BBBB")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same mtime: ctime moved
    assert os.stat(path).st_mtime_ns == st.st_mtime_ns
    reads.clear()
    after = digest(ctx, cache)
    assert reads == ["src/a.txt"]
    assert after != before
    assert after == digest(ctx, None)


@pytest.mark.parametrize("change", ["resize", "replace", "delete", "symlink", "chmod"])
def test_every_kind_of_change_invalidates(tmp_path, short_margin, change):
    ctx = make(tmp_path, {"src/a.txt": "one", "src/b.txt": "two"})
    cache = str(tmp_path / "digests")
    aged()
    before = digest(ctx, cache)
    a = os.path.join(ctx, "src", "a.txt")
    if change == "resize":
        with open(a, "a") as f:
            f.write("more")
    elif change == "replace":  # another file (a new inode) renamed over it, with its old times
        st = os.stat(a)
        with open(a + ".new", "w") as f:
            f.write("ONE")
        os.utime(a + ".new", ns=(st.st_atime_ns, st.st_mtime_ns))
        os.rename(a + ".new", a)
    elif change == "delete":
        os.unlink(a)
    elif change == "symlink":
        os.unlink(a)
        os.symlink("b.txt", a)
    else:
        os.chmod(a, 0o600)
    assert digest(ctx, cache) != before
    assert digest(ctx, cache) == digest(ctx, None)


def test_a_file_changed_just_before_it_is_read_is_not_remembered(tmp_path, reads):
    ctx = make(tmp_path, {"src/a.txt": "new"})  # the default 2 s margin: racily clean
    cache = str(tmp_path / "digests")
    digest(ctx, cache)
    digest(ctx, cache)
    assert reads == ["src/a.txt", "src/a.txt"]
    assert not os.path.exists(cache) or os.listdir(cache) == []  # nothing to save


def test_a_broken_or_foreign_cache_file_is_an_empty_one(tmp_path, reads, short_margin):
    ctx = make(tmp_path, {"src/a.txt": "A"})
    cache = str(tmp_path / "digests")
    aged()
    plain = digest(ctx, None)
    digest(ctx, cache)
    (name,) = os.listdir(cache)
    path = os.path.join(cache, name)
    doc = json.load(open(path))
    doc["files"]["src/a.txt"][5] = "0" * 64
    json.dump({**doc, "context": "/elsewhere"}, open(path, "w"))  # another context's file
    reads.clear()
    assert digest(ctx, cache) == plain
    assert reads == ["src/a.txt"]
    open(path, "w").write('{"context": ')  # torn
    assert digest(ctx, cache) == plain
    assert json.load(open(path))["files"]["src/a.txt"][5] != "0" * 64


def test_entries_of_files_gone_are_dropped_when_saving(tmp_path, short_margin):
    ctx = make(tmp_path, {"src/a.txt": "A", "src/b.txt": "B", "late.txt": "1"})
    cache = str(tmp_path / "digests")
    aged()
    digest(ctx, cache)
    os.unlink(os.path.join(ctx, "src", "b.txt"))
    aged()
    digest(ctx, cache, "late.txt")  # saves, not having walked src/
    (name,) = os.listdir(cache)
    assert sorted(json.load(open(os.path.join(cache, name)))["files"]) == ["late.txt", "src/a.txt"]


def test_concurrent_builds_never_corrupt_the_cache(tmp_path, short_margin):
    files = {f"{w}/{i}.txt": f"{w}{i}" for w in "ab" for i in range(40)}
    ctx = make(tmp_path, files)
    cache = str(tmp_path / "digests")
    aged()
    pids = []
    for w in "ab":
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                for i in range(40):  # each build saves one new entry: none may be lost
                    digest(ctx, cache, f"{w}/{i}.txt")
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    for pid in pids:
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    names = os.listdir(cache)
    assert len(names) == 1  # no temp file left
    saved = json.load(open(os.path.join(cache, names[0])))["files"]
    assert sorted(saved) == sorted(files)  # both writers' entries, merged


def test_a_directory_context_of_an_engine_remembers_under_the_builder(tmp_path):
    from types import SimpleNamespace

    from kobako.engine.build import context_dir
    e = SimpleNamespace(root=str(tmp_path / "root"))
    ctx = make(tmp_path, {"Dockerfile": "FROM scratch\n"})
    t = context_dir(ctx, e)
    try:
        assert t.digests is not None
        assert os.path.dirname(t.digests.path) == os.path.join(e.root, "builder", "digests")
    finally:
        t.close()
    t = context_dir(ctx)  # a context unpacked for one build: its files are new each time
    try:
        assert t.digests is None
    finally:
        t.close()
