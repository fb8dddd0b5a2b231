"""COPY/ADD sources beyond the context, on a real kernel: heredocs, URLs (with --checksum)
and git repositories served from 127.0.0.1; intermediate containers kept by --rm=false;
registry credentials a build request carries (X-Registry-Config)."""

from __future__ import annotations

import base64
import functools
import http.server
import io
import json
import os
import shutil
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from engine_support import Kobako, import_tarred
from engine_support import build_context as ctx

pytestmark = pytest.mark.root
IMG = "kbt/busybox:1"


@pytest.fixture(scope="module")
def k(session_base: Path, busybox_rootfs: Path) -> Kobako:
    kb = Kobako(session_base / "engine-build-sources")
    tar = session_base / "busybox-rootfs-sources.tar"
    import_tarred(kb, busybox_rootfs, tar, IMG)
    return kb


def assert_clean(k: Kobako, containers: bool = True) -> None:
    """Nothing a build makes outlives it: step containers, temp dirs, mounts."""
    if containers:
        assert k("ps", "-aq").stdout.strip() == ""
    tmp = k.data / "builder" / "tmp"
    assert not tmp.exists() or os.listdir(tmp) == []
    assert str(k.root) not in Path("/proc/self/mountinfo").read_text()


def fails(k: Kobako, d: Path, *words: str) -> str:
    """The build fails with one error line holding `words`, leaving nothing behind."""
    cp = k("build", str(d), check=False)
    err = [ln for ln in cp.stderr.splitlines() if ln.startswith("Error:")]
    assert cp.returncode == 125 and len(err) == 1 and "Traceback" not in cp.stderr, cp.stderr
    for w in words:
        assert w in err[0], err[0]
    assert_clean(k)
    return err[0]


@contextmanager
def http_dir(root: Path) -> Iterator[str]:
    """`root` served over plain HTTP on 127.0.0.1 (a free port); yields the base URL."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()
        t.join()


def run_cat(k: Kobako, image: str, *paths: str) -> str:
    return k("run", "--rm", "--network", "none", image, "cat", *paths).stdout


# -- heredocs --------------------------------------------------------------------------------------

def test_copy_heredocs(k: Kobako, tmp_path: Path):
    df = f"""FROM {IMG}
ENV WHO=kobako
ARG V=1
COPY <<EOF /etc/app.conf
who=$WHO v=${{V}} "quoted" \\$LITERAL
EOF
COPY --chmod=750 --chown=7:8 <<run.sh <<"raw.txt" /dest/
#!/bin/sh
echo $WHO
run.sh
raw $WHO
raw.txt
ADD <<-EOF /tabs
\tindented
\tEOF
"""
    d = ctx(tmp_path, df)
    k("build", "-q", "-t", "kbt/heredoc-copy:1", str(d))
    assert run_cat(k, "kbt/heredoc-copy:1", "/etc/app.conf", "/dest/run.sh", "/dest/raw.txt", "/tabs") == \
        'who=kobako v=1 "quoted" $LITERAL\n#!/bin/sh\necho kobako\nraw $WHO\nindented\n'
    modes = k("run", "--rm", "--network", "none", "kbt/heredoc-copy:1", "stat", "-c", "%n %a %u:%g",
              "/etc/app.conf", "/dest/run.sh", "/dest/raw.txt").stdout.splitlines()
    assert modes == ["/etc/app.conf 644 0:0", "/dest/run.sh 750 7:8", "/dest/raw.txt 750 7:8"]
    # the text is the source: unchanged, every step hits; a changed line re-runs its COPY
    assert k("build", "-t", "kbt/heredoc-copy:1", str(d)).stdout.count("Using cache") == 5
    (d / "Dockerfile").write_text(df.replace("raw $WHO", "raw, changed"))
    out = k("build", "-t", "kbt/heredoc-copy:1", str(d)).stdout
    assert out.count("Using cache") == 3  # ENV, ARG and the first COPY; the second and ADD run again
    assert run_cat(k, "kbt/heredoc-copy:1", "/dest/raw.txt") == "raw, changed\n"
    # a heredoc mixed with a context file
    d2 = ctx(tmp_path / "mixed", f"FROM {IMG}\nCOPY f.txt <<inline.txt /m/\nfrom the Dockerfile\n"
             "inline.txt\n", {"f.txt": "from the context\n"})
    k("build", "-q", "-t", "kbt/heredoc-copy:2", str(d2))
    assert run_cat(k, "kbt/heredoc-copy:2", "/m/f.txt", "/m/inline.txt") == \
        "from the context\nfrom the Dockerfile\n"
    k("rmi", "kbt/heredoc-copy:1", "kbt/heredoc-copy:2")
    d3 = ctx(tmp_path / "bad", f"FROM {IMG}\nRUN true\nCOPY <<EOF /f\nno end line\n")
    fails(k, d3, "line 3", "heredoc EOF has no end line")


# -- URLs ----------------------------------------------------------------------------------------

def test_add_of_a_url_with_and_without_checksum(k: Kobako, tmp_path: Path):
    import hashlib
    served = tmp_path / "www"
    served.mkdir()
    (served / "data.txt").write_text("downloaded\n")
    with tarfile.open(served / "pkg.tar.gz", "w:gz") as t:
        info = tarfile.TarInfo("inside.txt")
        info.size = 2
        t.addfile(info, io.BytesIO(b"x\n"))
    good = "sha256:" + hashlib.sha256(b"downloaded\n").hexdigest()
    bad = "sha256:" + "0" * 64
    with http_dir(served) as url:
        df = (f"FROM {IMG}\nADD {url}/data.txt /plain.txt\nADD {url}/pkg.tar.gz /dl/\n"
              f"ADD --checksum={good} {url}/data.txt /checked/\n")
        d = ctx(tmp_path, df)
        k("build", "-q", "-t", "kbt/url:1", str(d))
        out = k("run", "--rm", "--network", "none", "kbt/url:1", "sh", "-c",
                "cat /plain.txt /checked/data.txt; ls /dl; stat -c %a /plain.txt").stdout
        assert out == "downloaded\ndownloaded\npkg.tar.gz\n600\n"  # a remote archive is not unpacked
        (d / "Dockerfile").write_text(f"FROM {IMG}\nADD --checksum={bad} {url}/data.txt /f\n")
        fails(k, d, f"digest mismatch for {url}/data.txt", good, f"(expected: {bad})")
        (d / "Dockerfile").write_text(f"FROM {IMG}\nADD --checksum={good} {url}/data.txt /checked/\n")
        k("build", "-q", "-t", "kbt/url:2", str(d))
    # with a checksum the content is known: a cached step needs no download (the server is gone)
    assert "Using cache" in k("build", "-t", "kbt/url:2", str(d)).stdout
    fails(k, ctx(tmp_path / "down", f"FROM {IMG}\nADD {url}/data.txt /f\n"),
          f"cannot download {url}/data.txt")
    fails(k, ctx(tmp_path / "local", f"FROM {IMG}\nADD --checksum={good} f.txt /f\n", {"f.txt": "x"}),
          "checksum requires HTTP(S) or Git sources")
    fails(k, ctx(tmp_path / "form", f"FROM {IMG}\nADD --checksum=md5:abc {url}/data.txt /f\n"),
          "invalid checksum")
    k("rmi", "kbt/url:1", "kbt/url:2")


# -- git -------------------------------------------------------------------------------------------

def _git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(cwd)}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


def test_add_of_a_git_repository(k: Kobako, tmp_path: Path):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    work, www = tmp_path / "work", tmp_path / "www"
    work.mkdir()
    www.mkdir()
    _git(work, "init", "-q", "-b", "main")
    (work / "sub").mkdir()
    (work / "version.txt").write_text("v1\n")
    (work / "sub" / "in-sub.txt").write_text("sub v1\n")
    _git(work, "add", "-A")
    _git(work, "commit", "-q", "-m", "one")
    _git(work, "tag", "-a", "-m", "first", "v1")
    v1 = _git(work, "rev-parse", "HEAD")
    (work / "version.txt").write_text("v2\n")
    _git(work, "commit", "-q", "-am", "two")
    bare = www / "repo.git"

    def publish() -> None:  # git's dumb HTTP protocol: a bare repository and its info/refs
        shutil.rmtree(bare, ignore_errors=True)
        _git(tmp_path, "clone", "-q", "--bare", str(work), str(bare))
        _git(bare, "update-server-info")
    publish()
    with http_dir(www) as url:
        repo = f"{url}/repo.git"
        df = (f"FROM {IMG}\nADD {repo}#v1 /tag/\nADD {repo}#main:sub /sub/\n"
              f"ADD --keep-git-dir=true {repo}#main /kept/\nADD --checksum={v1[:12]} {repo}#v1 /checked/\n"
              f"ADD {repo} /head/\n")
        d = ctx(tmp_path, df)
        k("build", "-q", "-t", "kbt/git:1", str(d))
        out = k("run", "--rm", "--network", "none", "kbt/git:1", "sh", "-c",
                "cat /tag/version.txt /sub/in-sub.txt /kept/version.txt /checked/version.txt "
                "/head/version.txt; "
                "ls -a /tag /sub | tr '\\n' ' '; echo; test -d /kept/.git && echo kept-git").stdout
        assert out.splitlines()[:5] == ["v1", "sub v1", "v2", "v1", "v2"]
        assert ".git" not in out.splitlines()[5] and "in-sub.txt" in out.splitlines()[5]
        assert out.splitlines()[6] == "kept-git"
        # the commit is the cache key: unchanged, every step hits; a new commit on main re-runs its steps
        assert k("build", "-t", "kbt/git:1", str(d)).stdout.count("Using cache") == 5
        (work / "sub" / "in-sub.txt").write_text("sub v3\n")
        _git(work, "commit", "-q", "-am", "three")
        publish()
        out = k("build", "-t", "kbt/git:1", str(d)).stdout
        assert out.count("Using cache") == 1  # the first ADD (#v1); the later ones follow a changed step
        assert run_cat(k, "kbt/git:1", "/sub/in-sub.txt") == "sub v3\n"
        fails(k, ctx(tmp_path / "noref", f"FROM {IMG}\nADD {repo}#nosuch /x/\n"),
              "cannot fetch 'nosuch' from git repository", repo)
        fails(k, ctx(tmp_path / "sum", f"FROM {IMG}\nADD --checksum=deadbeef {repo}#v1 /x/\n"),
              "expected checksum to match deadbeef")
        fails(k, ctx(tmp_path / "copy", f"FROM {IMG}\nCOPY {repo}#v1 /x/\n"),
              "source can't be a git ref for COPY")
    k("rmi", "kbt/git:1")


# -- intermediate containers -----------------------------------------------------------------------

def test_rm_false_keeps_the_step_containers(k: Kobako, tmp_path: Path, session_base: Path):
    d = ctx(tmp_path, f"FROM {IMG}\nRUN echo kept-output && echo made > /made.txt\n")
    out = k("build", "--rm=false", "-t", "kbt/kept:1", str(d)).stdout
    assert "Removing intermediate container" not in out
    rows = k("ps", "-a", "--no-trunc", "--format", "{{.ID}} {{.Status}} {{.Command}}").stdout.splitlines()
    assert len(rows) == 1 and "Exited (0)" in rows[0] and "echo kept-output" in rows[0], rows
    cid = rows[0].split()[0]
    assert "kept-output" in k("logs", cid).stdout
    assert json.loads(k("inspect", cid).stdout)[0]["State"]["ExitCode"] == 0
    k("build", "-q", "-", input=f"FROM {IMG}\nRUN true\n")  # the next build does not sweep it
    assert k("ps", "-aq", "--no-trunc").stdout.split() == [cid]
    # its layers stay while it does, even with every image and the cache pruned
    k("rmi", "kbt/kept:1")
    k("image", "prune", "-af")
    k("builder", "prune", "-f")
    assert "A /made.txt" in k("diff", cid).stdout
    assert "kept-output" in k("start", "-a", cid).stdout
    k("import", str(session_base / "busybox-rootfs-sources.tar"), IMG)
    # a failed step's container is kept too with --rm=false; --force-rm removes even then
    d2 = ctx(tmp_path / "fail", f"FROM {IMG}\nRUN echo failing && exit 4\n")
    assert k("build", "--rm=false", str(d2), check=False).returncode == 1
    assert len(k("ps", "-aq").stdout.split()) == 2
    k("rm", cid, *[c for c in k("ps", "-aq", "--no-trunc").stdout.split() if c != cid])
    assert k("build", "--rm=false", "--force-rm", str(d2), check=False).returncode == 1
    assert_clean(k)


# -- registry credentials --------------------------------------------------------------------------

def test_build_pulls_with_the_requests_registry_config(session_base: Path, busybox_rootfs: Path):
    import registry_support as rs
    from engine_support import api_service, http_request
    why = rs.available()
    if why:
        pytest.skip(why)

    def context(dockerfile: str) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as t:
            info = tarfile.TarInfo("Dockerfile")
            info.size = len(dockerfile)
            t.addfile(info, io.BytesIO(dockerfile.encode()))
        return buf.getvalue()

    with rs.Registry(htpasswd=("alice", "s3cret")) as reg, \
            api_service(session_base / "build-auth", busybox_rootfs, IMG) as api:
        rs.upload_image(reg, "kbt/private", "1")
        body = context(f"FROM {reg.addr}/kbt/private:1\nLABEL built=with-credentials\n")

        def build(config: str | None) -> str:
            headers = {"Content-Type": "application/x-tar"}
            if config is not None:
                headers["X-Registry-Config"] = config
            st, out, _ = http_request(api.sock, "POST", "/build?t=kbt/authed:1", body, headers)
            assert st == 200
            return out.decode()
        assert "unauthorized" in build(None)  # no login stored for it
        assert "unauthorized" in build("%not base64%")  # ignored, as dockerd ignores it
        cfg = {f"http://{reg.addr}": {"username": "alice", "password": "s3cret"}}
        out = build(base64.urlsafe_b64encode(json.dumps(cfg).encode()).decode())
        assert "Successfully built" in out, out
        labels = json.loads(api("image", "inspect", "kbt/authed:1").stdout)[0]["Config"]["Labels"]
        assert labels == {"built": "with-credentials"}
        assert not (api.root / "config" / "auth.json").exists()  # used, not stored
        # docker pull sends X-Registry-Auth: /images/create pulls with it
        auth = base64.urlsafe_b64encode(json.dumps({"username": "alice", "password": "s3cret"}).encode())
        st, out, _ = http_request(api.sock, "POST", f"/images/create?fromImage={reg.addr}/kbt/private&tag=1",
                                  b"", {"X-Registry-Auth": auth.decode()})
        assert st == 200, out
        msgs = [json.loads(ln) for ln in out.splitlines() if ln.strip()]
        # the build pulled it already: dockerd's per-layer message and status say so
        assert {"status": "Already exists", "progressDetail": {}, "id": msgs[1]["id"]} in msgs, msgs
        assert msgs[-1]["status"].startswith("Status: Image is up to date for "), msgs
