"""RUN --mount in `kobako build` on a real kernel: binds from the context and from stages,
cache mounts kept across builds, tmpfs, secrets (never in a layer, the history or the
config), a `#!` heredoc script, and a build killed midway that leaves no mount or temp
directory behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from engine_support import Kobako, assert_user_error, import_tarred
from engine_support import build_context as ctx

pytestmark = pytest.mark.root
IMG = "kbt/busybox:1"


@pytest.fixture(scope="module")
def k(session_base: Path, busybox_rootfs: Path) -> Kobako:
    kb = Kobako(session_base / "engine-build-mounts")
    tar = session_base / "busybox-rootfs-mounts.tar"
    import_tarred(kb, busybox_rootfs, tar, IMG)
    yield kb
    kb.clean()


def assert_clean(k: Kobako) -> None:
    """No step container, no temp directory (data root and run root), no mount."""
    assert k("ps", "-aq").stdout.strip() == ""
    for tmp in (k.data / "builder" / "tmp", k.root / "run" / "builder"):
        assert not tmp.exists() or os.listdir(tmp) == [], os.listdir(tmp)
    assert str(k.root) not in Path("/proc/self/mountinfo").read_text()


def run(k: Kobako, image: str, *cmd: str) -> str:
    return k("run", "--rm", "--network", "none", image, *cmd).stdout


def test_bind_mounts_from_the_context(k: Kobako, tmp_path: Path):
    d = ctx(tmp_path, f"""FROM {IMG}
RUN --mount=target=/ctx cat /ctx/src/a.txt > /seen && ! test -e /ctx/ignored.txt \\
    && readlink /ctx/shadow >> /seen && ! cat /ctx/shadow && ! touch /ctx/ro-test
RUN --mount=type=bind,source=src,target=/src,rw echo scribble > /src/a.txt && cat /src/a.txt > /rw
RUN --mount=source=src/a.txt,target=/one.txt cat /one.txt > /one
""", {"src/a.txt": "version 1\n", "ignored.txt": "never shown\n", ".dockerignore": "ignored.txt\n"})
    os.symlink("/etc/shadow", d / "shadow")
    k("build", "-q", "-t", "kbt/bind:1", str(d))
    # an ignored file is not there, a link out of the context resolves inside the container
    assert run(k, "kbt/bind:1", "cat", "/seen") == "version 1\n/etc/shadow\n"
    assert run(k, "kbt/bind:1", "cat", "/rw", "/one") == "scribble\nversion 1\n"
    assert (d / "src" / "a.txt").read_text() == "version 1\n"  # rw writes are thrown away
    for gone in ("/ctx", "/src", "/one.txt"):  # the mountpoints made for them are not in the layer
        cp = k("run", "--rm", "--network", "none", "kbt/bind:1", "test", "-e", gone, check=False)
        assert cp.returncode == 1
    # the mounted content is in the cache key: an ignored file is not, a mounted one is
    (d / "ignored.txt").write_text("changed, still ignored\n")
    assert k("build", "-t", "kbt/bind:1", str(d)).stdout.count("Using cache") == 3
    (d / "src" / "a.txt").write_text("version 2\n")
    out = k("build", "-t", "kbt/bind:1", str(d)).stdout
    assert out.count("Using cache") == 0, out
    assert run(k, "kbt/bind:1", "cat", "/one") == "version 2\n"
    # a source outside the context or excluded fails the step, naming it
    (d / "Dockerfile").write_text(f"FROM {IMG}\nRUN --mount=source=ignored.txt,target=/x true\n")
    assert_user_error(k("build", str(d), check=False), "line 2", "ignored.txt", "not found")
    assert_clean(k)


def test_bind_mounts_from_a_stage_and_an_image(k: Kobako, tmp_path: Path):
    d = ctx(tmp_path, f"""FROM {IMG} AS base
RUN mkdir -p /stage/gone && echo a > /stage/gone/x && echo keep > /stage/k && ln -s /etc /stage/etc \\
    && ln -s ../../../../etc/passwd /stage/pw
RUN rm -r /stage/gone && echo new > /stage/n

FROM {IMG}
RUN --mount=from=base,source=/stage,target=/st,rw ! test -e /st/gone && cat /st/k /st/n > /seen \\
    && echo w > /st/w && head -1 /st/pw >> /seen
RUN --mount=from=base,source=/stage/etc,target=/e --mount=from={IMG},target=/img \\
    head -1 /e/passwd > /etc-seen && test -x /img/bin/busybox
""")
    k("build", "-q", "-t", "kbt/stage:1", str(d))
    # two layers merged as overlay shows them (a removed directory stays removed); the stage's
    # links resolve inside the stage, never on the host
    passwd = (Path(k.root).parent / "rootfs" / "etc" / "passwd").read_text().splitlines()[0]
    assert run(k, "kbt/stage:1", "cat", "/seen") == f"keep\nnew\n{passwd}\n"
    assert run(k, "kbt/stage:1", "cat", "/etc-seen") == passwd + "\n"
    assert k("run", "--rm", "--network", "none", "kbt/stage:1", "ls", "/st", check=False).returncode != 0
    (d / "Dockerfile").write_text(f"FROM {IMG} AS base\nFROM {IMG}\n"
                                  "RUN --mount=from=base,source=/nope,target=/x true\n")
    assert_user_error(k("build", str(d), check=False), "/nope", "not found")
    assert_clean(k)


def test_cache_mounts_survive_builds_until_pruned(k: Kobako, tmp_path: Path):
    d = ctx(tmp_path, f"""FROM {IMG}
RUN --mount=type=cache,target=/var/cache/app,sharing=locked \\
    n=$(cat /var/cache/app/count 2>/dev/null || echo 0); echo $((n + 1)) | tee /var/cache/app/count > /count
RUN --mount=type=cache,id=other,target=/c,mode=0700,uid=7 stat -c '%a %u' /c > /other
""")
    k("build", "-q", "-t", "kbt/cache:1", str(d))
    assert run(k, "kbt/cache:1", "cat", "/count", "/other") == "1\n700 7\n"
    k("build", "-q", "--no-cache", "-t", "kbt/cache:1", str(d))
    assert run(k, "kbt/cache:1", "cat", "/count") == "2\n"  # the directory was kept
    assert k("run", "--rm", "--network", "none", "kbt/cache:1", "ls", "/var/cache/app",
             check=False).returncode != 0  # its content is in no layer
    k("builder", "prune", "-f")
    assert not any((k.data / "builder" / "mounts").glob("*/[0-9]*"))
    k("build", "-q", "--no-cache", "-t", "kbt/cache:1", str(d))
    assert run(k, "kbt/cache:1", "cat", "/count") == "1\n"
    assert_clean(k)


def test_tmpfs_mounts(k: Kobako, tmp_path: Path):
    d = ctx(tmp_path, f"""FROM {IMG}
RUN --mount=type=tmpfs,target=/scratch,size=2m echo x > /scratch/f && df -k /scratch | tail -1 > /df
""")
    k("build", "-q", "-t", "kbt/tmpfs:1", str(d))
    fields = run(k, "kbt/tmpfs:1", "cat", "/df").split()
    assert fields[0] == "tmpfs" and fields[1] == "2048"
    assert k("run", "--rm", "--network", "none", "kbt/tmpfs:1", "test", "-e", "/scratch",
             check=False).returncode == 1
    assert_clean(k)


def test_secrets_reach_the_step_and_nothing_kept(k: Kobako, tmp_path: Path):
    value = "s3cr3t-" + os.urandom(6).hex()
    src = tmp_path / "token.txt"
    src.write_text(value)
    d = ctx(tmp_path, f"""FROM {IMG}
RUN --mount=type=secret,id=tok --mount=type=secret,id=tok,env=TOK,target=/etc/tok,mode=0440,gid=5 \\
    --mount=type=secret,id=absent \\
    test "$(cat /run/secrets/tok)" = "$TOK" && test -n "$TOK" \\
    && stat -c '%a %u %g' /run/secrets/tok /etc/tok > /st \\
    && ! test -e /run/secrets/absent && cat /run/secrets/tok | wc -c > /len
""")
    k("build", "-q", "--secret", f"id=tok,src={src}", "-t", "kbt/secret:1", str(d))
    assert run(k, "kbt/secret:1", "cat", "/st", "/len") == f"400 0 0\n440 0 5\n{len(value)}\n"
    env_build = Kobako(k.root)
    env_build.env = {**k.env, "MYTOKEN": value}
    env_build("build", "-q", "--no-cache", "--secret", "id=tok,env=MYTOKEN", "-t", "kbt/secret:2", str(d))
    assert run(k, "kbt/secret:2", "cat", "/len") == f"{len(value)}\n"
    # not in a layer, a snapshot, the cache, the history, the config
    found = subprocess.run(["grep", "-rlaF", value, str(k.data), str(k.root / "run")],
                           capture_output=True, text=True)
    assert found.stdout == "", found.stdout
    for img in ("kbt/secret:1", "kbt/secret:2"):
        assert value not in k("history", "--no-trunc", img).stdout
        assert value not in k("image", "inspect", img).stdout
    # a required secret that is missing fails the step, naming it
    (d / "Dockerfile").write_text(f"FROM {IMG}\nRUN --mount=type=secret,id=db-pass,required true\n")
    assert_user_error(k("build", str(d), check=False), "secret db-pass: not found")
    assert_user_error(k("build", "--secret", "id=x,src=/nonexistent", str(d), check=False), "/nonexistent")
    assert_clean(k)


def test_a_heredoc_script_with_a_shebang_runs_as_a_program(k: Kobako, tmp_path: Path):
    d = ctx(tmp_path, f"""FROM {IMG}
RUN <<EOF
#!/bin/awk -f
BEGIN {{ printf "awk ran as %s\\n", ARGV[0] > "/out" }}
EOF
""")
    k("build", "-q", "-t", "kbt/shebang:1", str(d))
    assert run(k, "kbt/shebang:1", "cat", "/out") == "awk ran as awk\n"
    assert k("run", "--rm", "--network", "none", "kbt/shebang:1", "test", "-e", "/dev/pipes",
             check=False).returncode == 1
    assert "#!/bin/awk -f" in k("history", "--no-trunc", "kbt/shebang:1").stdout
    assert_clean(k)


def test_a_build_killed_during_a_step_with_mounts_leaves_no_mount(k: Kobako, tmp_path: Path):
    src = tmp_path / "tok"
    src.write_text("killed-secret")
    d = ctx(tmp_path, f"""FROM {IMG}
RUN --mount=target=/ctx --mount=type=cache,target=/c --mount=type=secret,id=tok \\
    --mount=type=tmpfs,target=/t echo started && sleep 30
""", {"f.txt": "f\n"})
    p = subprocess.Popen([sys.executable, "-m", "kobako.cli.main", "build", "--network", "none",
                          "--secret", f"id=tok,src={src}", str(d)], env=k.env, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, cwd=Path(__file__).resolve().parents[2])
    try:
        end = time.monotonic() + 60
        assert p.stdout is not None
        while time.monotonic() < end:
            line = p.stdout.readline().decode()
            assert line, "the build ended before its step started"
            if line == "started\n":  # the step's own output: its mounts are made
                break
        p.send_signal(signal.SIGKILL)
    finally:
        p.wait()
    assert str(k.root) not in Path("/proc/self/mountinfo").read_text()  # every mount was the step's own
    left = os.listdir(k.data / "builder" / "tmp") + os.listdir(k.root / "run" / "builder")
    assert left  # the context's copy and the secret, until the next build
    k("build", "-q", "-", input=f"FROM {IMG}\nLABEL after=kill\n")
    assert_clean(k)
