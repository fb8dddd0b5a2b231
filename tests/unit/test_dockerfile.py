"""The Dockerfile parser, Docker's word lexer, .dockerignore matching and the build
context's source lookup (no root, no containers)."""

from __future__ import annotations

import os

import pytest

from kobako.image import buildcache, dockerfile
from kobako.image.context import ContextError, Ignore, SourceNotFound, Tree, is_archive, read_in
from kobako.image.dockerfile import DockerfileError, Lexer, parse


def test_instructions_continuations_and_comments():
    df = parse("# syntax=docker/dockerfile:1\nFROM busybox AS Base\n\n# a comment\nRUN echo a \\\n"
               "  # inside\n\n   && echo b\nCMD [\"sh\", \"-c\", \"x\"]\n")
    assert df.syntax == "docker/dockerfile:1"
    assert [i.cmd for i in df.instructions] == ["from", "run", "cmd"]
    run = df.instructions[1]
    assert run.rest == "echo a    && echo b" and run.json is None and run.line == 5
    assert df.instructions[2].json == ["sh", "-c", "x"]


def test_escape_directive_and_flags():
    df = parse("# escape=`\nFROM x\nCOPY --from=build --chown=1:2 a `\n b /c/\nRUN echo \\ok\n")
    cp = df.instructions[1]
    assert cp.flags == {"from": "build", "chown": "1:2"} and cp.rest == "a  b /c/"
    assert df.instructions[2].rest == "echo \\ok"  # a backslash is no escape any more
    with pytest.raises(DockerfileError, match="escape token"):
        parse("# escape=x\nFROM y\n")


def test_bad_input_names_the_line():
    with pytest.raises(DockerfileError, match="line 2: unknown instruction: FROBNICATE"):
        parse("FROM x\nfrobnicate everything\n")
    with pytest.raises(DockerfileError, match="unknown flag: --nope"):
        parse("FROM x\nCOPY --nope=1 a b\n")
    with pytest.raises(DockerfileError, match="requires at least two"):
        parse("FROM x\nCOPY a\n")
    with pytest.raises(DockerfileError, match="JSON form"):
        parse("FROM x\nSHELL /bin/bash\n")
    with pytest.raises(DockerfileError, match="ONBUILD"):
        parse("FROM x\nONBUILD FROM y\n")
    with pytest.raises(DockerfileError, match="no build stage"):
        dockerfile.stages(parse("RUN x\nFROM y\n"))
    with pytest.raises(DockerfileError, match="duplicate name"):
        dockerfile.stages(parse("FROM x AS a\nFROM y AS a\n"))


def test_stages_and_meta_args():
    meta, stages = dockerfile.stages(parse("ARG B=busybox\nFROM ${B} AS one\nRUN a\nFROM one\nRUN b\n"))
    assert [m.rest for m in meta] == ["B=busybox"]
    assert [(s.name, s.base, len(s.instructions)) for s in stages] == [("one", "${B}", 1), (None, "one", 1)]
    assert dockerfile.arg_decls(meta[0], "\\") == [("B", "busybox")]


@pytest.mark.parametrize("word,want", [
    ("$A", "1"), ("${A}x", "1x"), ("${NOPE:-dflt}", "dflt"), ("${A:-dflt}", "1"), ("${A:+alt}", "alt"),
    ("${NOPE:+alt}", ""), ("${EMPTY:-d}", "d"), ("${EMPTY-d}", ""), ("'$A'", "$A"), ('"$A b"', "1 b"),
    ("\\$A", "$A"), ('"\\"q\\""', '"q"'), ("a\\ b", "a b"), ("$", "$"), ("${A:-${B}}", "1"),
    ("${NOPE:-${B}}", "two"),
])
def test_substitution(word, want):
    assert Lexer().word(word, {"A": "1", "B": "two", "EMPTY": ""}) == want


def test_words_and_key_values():
    assert Lexer().words('a "b c" $A', {"A": "x y"}) == ["a", "b c", "x", "y"]
    ins = parse('FROM x\nENV A="a b" B=c\\ d C=\'e\'\n').instructions[1]
    pairs = [(k, Lexer().word(v, {})) for k, v in dockerfile.key_values(ins, "\\")]
    assert pairs == [("A", "a b"), ("B", "c d"), ("C", "e")]
    legacy = parse("FROM x\nENV NAME some value here\n").instructions[1]
    assert dockerfile.key_values(legacy, "\\") == [("NAME", "some value here")]
    with pytest.raises(DockerfileError, match="unsupported modifier"):
        Lexer().word("${A:=x}", {})


def test_dockerignore_semantics():
    ig = Ignore.read("# comment\n*.log\n!keep.log\nbuild/\n docs/**/*.md \n/abs\n**/tmp\n")
    assert ig.excluded("a.log") and not ig.excluded("keep.log")
    assert not ig.excluded("sub/a.log")  # * does not cross a slash
    assert ig.excluded("build") and ig.excluded("build/x/y")  # a directory's contents go with it
    assert ig.excluded("docs/a/b/c.md") and ig.excluded("docs/c.md") and not ig.excluded("docs/c.txt")
    assert ig.excluded("abs") and ig.excluded("x/y/tmp")
    assert Ignore.read("#*\n").patterns == []  # a comment, not a pattern
    assert ig.exceptions and not Ignore.read("a\n").exceptions


def test_context_sources(tmp_path):
    (tmp_path / "a.txt").write_text("A")
    (tmp_path / "dir" / "sub").mkdir(parents=True)
    (tmp_path / "dir" / "sub" / "f").write_text("F")
    (tmp_path / "secret").write_text("S")
    os.symlink("/etc/passwd", tmp_path / "escape")
    os.symlink("a.txt", tmp_path / "link")
    t = Tree(str(tmp_path), Ignore.read("secret\n"))
    try:
        assert t.sources("a.txt")[0].rel == "a.txt"
        assert t.sources("./link")[0].rel == "a.txt"  # followed inside the context
        assert t.sources("dir")[0].is_dir
        assert sorted(s.rel for s in t.sources("*.txt")) == ["a.txt"]
        with pytest.raises(SourceNotFound):
            t.sources("secret")  # excluded by .dockerignore
        with pytest.raises(SourceNotFound):
            t.sources("escape")  # /etc/passwd resolved inside the context: not there
        with pytest.raises(SourceNotFound):
            t.sources("../../etc/passwd")
        with pytest.raises(SourceNotFound, match="matches nothing"):
            t.sources("*.nope")
        d1 = t.digest(t.sources("dir"))
        (tmp_path / "dir" / "sub" / "f").write_text("G")
        assert t.digest(t.sources("dir")) != d1  # content is in the key
        assert read_in(t, "a.txt") == b"A"
        with pytest.raises(ContextError):
            read_in(t, "dir")
    finally:
        t.close()


def test_archive_sniffing_and_cache_keys():
    assert is_archive(b"\x1f\x8b\x08") and is_archive(b"BZh9") and is_archive(b"\0" * 257 + b"ustar")
    assert not is_archive(b"FROM busybox\n")
    k = buildcache.key("base", "RUN a")
    assert k == buildcache.key("base", "RUN a") and k != buildcache.key("base", "RUN b")
    assert buildcache.key("a", "bc") != buildcache.key("ab", "c")


def test_run_heredocs():
    df = dockerfile.parse("FROM x\nRUN <<EOF\necho a\n  echo b\nEOF\n"
                          "RUN --network=none cat <<-'E1' > /f && cat <<E2 >> /f\n\thi $X\n\tE1\ntwo\nE2\n"
                          "RUN <<-EOF\n\techo tabbed\n\tEOF\nCMD [\"sh\"]\n")
    run1, run2, run3 = [x for x in df.instructions if x.cmd == "run"]
    assert run1.rest == "echo a\n  echo b"  # a heredoc alone is the script
    assert run2.flags == {"network": "none"}
    assert run2.rest == "cat <<-'E1' > /f && cat <<E2 >> /f\n\thi $X\nE1\ntwo\nE2"  # the shell reads them
    assert run3.rest == "echo tabbed" and df.instructions[-1].cmd == "cmd"
    with pytest.raises(dockerfile.DockerfileError, match="no end line"):
        dockerfile.parse("FROM x\nRUN <<EOF\necho a\n")
    shebang = dockerfile.parse("FROM x\nRUN <<EOF\n#!/usr/bin/env python3\nprint(1)\nEOF\n").instructions[1]
    assert dockerfile.run_script(shebang) == "#!/usr/bin/env python3\nprint(1)\n"  # run as a program
    assert dockerfile.run_script(run1) is None and dockerfile.run_script(dockerfile._instruction(
        "RUN #!not-a-script", 1, "\\")) is None  # one line: a shell comment, as ever
    exec_form = dockerfile.parse('FROM x\nRUN ["sh", "-c", "cat <<EOF"]\n').instructions[1]
    assert exec_form.json == ["sh", "-c", "cat <<EOF"]  # the exec form takes no heredoc


def test_copy_heredocs():
    df = dockerfile.parse("FROM x\nCOPY --chmod=755 <<EOF /etc/app.conf\nhello $WHO\n  \"q\"\nEOF\n"
                          "COPY <<a.txt <<\"b.txt\" /dest/\none\na.txt\ntwo $X\nb.txt\n"
                          "ADD <<-E /x\n\t\tindented\n\tE\nRUN echo after\n")
    c1, c2, a, run = df.instructions[1:]
    assert c1.flags == {"chmod": "755"} and c1.rest == "<<EOF /etc/app.conf"
    assert [(h.name, h.body, h.expand) for h in c1.heredocs] == [("EOF", 'hello $WHO\n  "q"\n', True)]
    assert [(h.word, h.name, h.body, h.expand) for h in c2.heredocs] == [
        ("<<a.txt", "a.txt", "one\n", True), ('<<"b.txt"', "b.txt", "two $X\n", False)]
    assert [(h.name, h.body) for h in a.heredocs] == [("E", "indented\n")]  # <<- strips leading tabs
    assert run.rest == "echo after" and not run.heredocs
    with pytest.raises(DockerfileError, match=r"line 2: COPY: the heredoc EOF has no end line"):
        parse("FROM x\nCOPY <<EOF /f\nno end\n")
    with pytest.raises(DockerfileError, match="cannot be the destination"):
        parse("FROM x\nCOPY a <<EOF\nx\nEOF\n")
    with pytest.raises(DockerfileError, match="invalid heredoc name"):
        parse("FROM x\nCOPY <<a/b /d/\nx\na/b\n")
    assert not parse('FROM x\nCOPY ["<<EOF", "/d"]\n').instructions[1].heredocs  # not in the JSON form


def test_heredoc_body_expansion_is_buildkits():
    """Quotes are plain characters, variables expand, the escape character escapes."""
    lex = Lexer("\\", quotes=False)
    env = {"WHO": "me"}
    assert lex.word('a "$WHO" \'${WHO}\' \\$WHO ${NOPE:-dflt}\n', env) == "a \"me\" 'me' $WHO dflt\n"
    assert Lexer().word('"$WHO"', env) == "me"  # the ordinary lexer still removes quotes


def test_git_sources_and_checksums():
    from kobako.engine.build import _url_name, git_source
    g = git_source("https://example.com/org/repo.git#v1.2:sub/dir")
    assert (g.remote, g.ref, g.subdir) == ("https://example.com/org/repo.git", "v1.2", "sub/dir")
    g = git_source("git@github.com:org/repo.git#main")
    assert (g.remote, g.ref, g.subdir) == ("git@github.com:org/repo.git", "main", "")
    g = git_source("https://example.com/repo.git?tag=v1&subdir=x&keep-git-dir=true")
    assert (g.ref, g.subdir, g.keep) == ("refs/tags/v1", "x", True)
    for not_git in ("https://example.com/file.tar.gz", "ftp://x/y.git", "dir/repo.git", "./a@b:c"):
        assert git_source(not_git) is None, not_git
    with pytest.raises(ValueError, match="bad ref"):
        git_source("https://example.com/repo.git#--upload-pack=evil").check()
    with pytest.raises(ValueError, match="unexpected query"):
        git_source("https://example.com/repo.git?frob=1").check()
    assert _url_name("http://h/a/b.tar.gz?x=1") == "b.tar.gz" and _url_name("http://h/") == "index.html"


def test_a_git_source_without_git_is_refused_clearly(tmp_path, monkeypatch):
    import shutil

    from kobako.engine import build
    from kobako.errors import Unavailable
    b = build.Builder.__new__(build.Builder)
    b.tmp = str(tmp_path)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(Unavailable, match=r"https://u:xxxxx@h/r.git: the git program is not installed"):
        b._clone(build.git_source("https://u:secret@h/r.git#main"), False, None)
    assert os.listdir(tmp_path) == []
def test_repeated_flags_and_mount_specs():
    run = parse("FROM x\nRUN --mount=type=cache,target=/c --network=none --mount=target=/src,rw echo\n"
                ).instructions[1]
    assert run.flag_list("mount") == ["type=cache,target=/c", "target=/src,rw"]
    assert run.flags["mount"] == "target=/src,rw" and run.flag_list("network") == ["none"]
    assert run.flag_list("security") == [] and run.rest == "echo"
    with pytest.raises(DockerfileError, match="line 2: RUN: duplicate flag specified: --network"):
        parse("FROM x\nRUN --network=none --network=host echo\n")
    with pytest.raises(DockerfileError, match="duplicate flag specified: --from"):
        parse("FROM x\nCOPY --from=a --from=b x /\n")

    ins = run
    m = dockerfile.parse_mount("target=/src", ins)
    assert (m.type, m.target, m.source, m.readonly) == ("bind", "/src", "", True)  # bind, read-only
    m = dockerfile.parse_mount("type=bind,src=app,dst=/a,rw", ins)
    assert (m.source, m.target, m.readonly) == ("app", "/a", False)
    m = dockerfile.parse_mount("type=bind,source=x,destination=/d,readwrite=true,from=build", ins)
    assert (m.target, m.readonly, m.from_) == ("/d", False, "build")
    m = dockerfile.parse_mount("type=cache,target=/var/cache/apt,sharing=locked,mode=0700,uid=7,gid=8,id=apt",
                               ins)
    assert (m.readonly, m.sharing, m.mode, m.uid, m.gid, m.id) == (False, "locked", 0o700, 7, 8, "apt")
    assert dockerfile.parse_mount("type=cache,target=/c,ro", ins).readonly
    assert dockerfile.parse_mount("type=cache,target=/c", ins).sharing == "shared"
    assert dockerfile.parse_mount("type=tmpfs,target=/t,size=64m", ins).size == 64 << 20
    # a secret: id from the target's name, target from the id; env instead of a file
    expand = (lambda v: v)  # noqa: E731 - as the builder substitutes, at the step
    s = dockerfile.parse_mount("type=secret,id=tok", ins, expand)
    assert (s.id, s.target, s.readonly, s.mode, s.required) == ("tok", "/run/secrets/tok", True, None, False)
    s = dockerfile.parse_mount("type=secret,target=/etc/key.pem,required,mode=0440", ins, expand)
    assert (s.id, s.target, s.required, s.mode) == ("key.pem", "/etc/key.pem", True, 0o440)
    s = dockerfile.parse_mount("type=secret,id=tok,env=TOKEN,required=true", ins, expand)
    assert (s.target, s.env, s.required) == ("", "TOKEN", True)
    # values are substituted at the step; the key changes with them
    m = dockerfile.parse_mount("type=cache,target=$DIR", ins, lambda v: v.replace("$DIR", "/go"))
    assert m.target == "/go" and m.key() != dockerfile.parse_mount("type=cache,target=/x", ins).key()
    assert dockerfile.parse_mount("type=$T,target=/x,size=1g", ins).target == "/x"  # checked later


@pytest.mark.parametrize("spec,msg", [
    ("type=bind", "mount target is required"),
    ("type=nfs,target=/x", "unsupported mount type 'nfs'"),
    ("target=/x,colour=red", "unexpected key 'colour'"),
    ("target=/x,bogus", "must be a key=value pair"),
    ("type=cache,target=/x,sharing=sometimes", "unsupported sharing value"),
    ("type=bind,target=/x,sharing=locked", "invalid cache sharing set for bind mount"),
    ("type=bind,target=/x,mode=0600", "mode not allowed for 'bind' type mounts"),
    ("type=tmpfs,target=/x,uid=1", "uid not allowed for 'tmpfs' type mounts"),
    ("type=cache,target=/x,required", "unexpected key 'required' for mount type 'cache'"),
    ("type=cache,target=/x,size=1g", "unexpected key 'size' for mount type 'cache'"),
    ("type=tmpfs,target=/x,size=lots", "invalid value for size"),
    ("type=cache,target=/x,mode=9", "invalid value 9 for mode"),
    ("type=bind,target=/x,ro=maybe", "invalid value for readonly: maybe"),
    ("type=secret,from=x,id=a", "secret mount should not have a from"),
    ("type=secret,source=a,id=a", "both source and id can't be set"),
    ("type=secret", "needs an id or a target"),
    ("type=bind,target=/x,from=$STAGE", "doesn't support variable expansion"),
])
def test_bad_mount_specs_name_the_line(spec: str, msg: str):
    with pytest.raises(DockerfileError, match="line 3: RUN: --mount=") as ex:
        parse(f"FROM x\n\nRUN --mount={spec} true\n")
    assert msg in str(ex.value)


def test_an_ssh_mount_is_refused_clearly():
    from kobako.errors import NotImplementedYet
    with pytest.raises(NotImplementedYet, match="line 2: RUN --mount=type=ssh is not supported"):
        parse("FROM x\nRUN --mount=type=ssh ssh git@example.com\n")
