"""`kobako build` on a real kernel, with a private data root: instructions into the image
config and layers, the layer cache, contexts from a directory and from stdin, hostile
contexts, and bad input that fails cleanly (no container, mount or temp directory left)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from engine_support import Kobako, import_tarred
from engine_support import build_context as ctx

pytestmark = pytest.mark.root
IMG = "kbt/busybox:1"


@pytest.fixture(scope="module")
def k(session_base: Path, busybox_rootfs: Path) -> Kobako:
    kb = Kobako(session_base / "engine-build")
    tar = session_base / "busybox-rootfs-build.tar"
    import_tarred(kb, busybox_rootfs, tar, IMG)
    return kb


def inspect(k: Kobako, name: str) -> dict:
    return json.loads(k("image", "inspect", name).stdout)[0]


def assert_clean(k: Kobako) -> None:
    """Nothing a build makes outlives it: step containers, temp dirs, mounts."""
    assert k("ps", "-aq").stdout.strip() == ""
    tmp = k.data / "builder" / "tmp"
    assert not tmp.exists() or os.listdir(tmp) == []
    assert str(k.root) not in Path("/proc/self/mountinfo").read_text()


def test_instructions_make_the_config_and_layers(k: Kobako, tmp_path: Path):
    d = ctx(tmp_path, f"""FROM {IMG}
ENV A=1 B="two words"
LABEL x.y=z
WORKDIR /app
COPY --chown=7:8 --chmod=640 data.txt ./
COPY dir/ sub/
RUN echo "$A $B" > env.txt && id -u > uid.txt
EXPOSE 80 53/udp
VOLUME /data
USER 7:8
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=5s --retries=2 CMD true
SHELL ["/bin/sh", "-ec"]
ONBUILD RUN echo triggered > /tmp/trig
ENTRYPOINT ["cat"]
CMD ["/app/env.txt"]
""", {"data.txt": "data\n", "dir/a/b.txt": "nested\n"})
    k("build", "-q", "-t", "kbt/full:1", str(d))
    doc = inspect(k, "kbt/full:1")
    cfg = doc["Config"]
    assert "A=1" in cfg["Env"] and "B=two words" in cfg["Env"]
    assert cfg["Labels"] == {"x.y": "z"} and cfg["WorkingDir"] == "/app" and cfg["User"] == "7:8"
    assert cfg["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}} and cfg["Volumes"] == {"/data": {}}
    assert cfg["StopSignal"] == "SIGTERM" and cfg["Shell"] == ["/bin/sh", "-ec"]
    assert cfg["Healthcheck"] == {"Test": ["CMD-SHELL", "true"], "Interval": 5_000_000_000, "Retries": 2}
    assert cfg["OnBuild"] == ["RUN echo triggered > /tmp/trig"]
    assert cfg["Entrypoint"] == ["cat"] and cfg["Cmd"] == ["/app/env.txt"]
    assert len(doc["RootFS"]["Layers"]) == 4  # the base, two COPYs, one RUN
    hist = k("history", "--no-trunc", "kbt/full:1").stdout
    assert "#(nop)  ENV A=1 B=two words" in hist and 'echo "$A $B" > env.txt' in hist
    assert k("run", "--rm", "kbt/full:1").stdout == "1 two words\n"
    out = k("run", "--rm", "-u", "0", "--entrypoint", "sh", "kbt/full:1", "-c",
            "stat -c '%u:%g %a' /app/data.txt; cat /app/sub/a/b.txt; cat /app/uid.txt; ls -a /etc").stdout
    lines = out.splitlines()
    assert lines[0] == "7:8 640" and lines[1] == "nested" and lines[2] == "0"
    # ONBUILD: runs when the image is a base, and is not inherited further
    d2 = ctx(tmp_path / "child", "FROM kbt/full:1\n")
    k("build", "-q", "-t", "kbt/child:1", str(d2))
    assert inspect(k, "kbt/child:1")["Config"]["OnBuild"] is None
    assert k("run", "--rm", "--entrypoint", "cat", "kbt/child:1", "/tmp/trig").stdout == "triggered\n"
    assert_clean(k)


def test_the_cache_reuses_unchanged_steps(k: Kobako, tmp_path: Path):
    d = ctx(tmp_path, f"FROM {IMG}\nCOPY f.txt /f.txt\nRUN cat /f.txt > /copy\nCMD [\"cat\", \"/copy\"]\n",
            {"f.txt": "one\n"})
    k("build", "-q", "-t", "kbt/cache:1", str(d))
    id1 = inspect(k, "kbt/cache:1")["Id"]
    again = k("build", "-t", "kbt/cache:1", str(d)).stdout
    assert again.count("Using cache") == 3 and "Running in" not in again
    assert inspect(k, "kbt/cache:1")["Id"] == id1  # the same image, created times and all
    os.utime(d / "f.txt")  # a touched file is the same file
    assert "Running in" not in k("build", "-t", "kbt/cache:1", str(d)).stdout
    (d / "f.txt").write_text("two\n")
    changed = k("build", "-t", "kbt/cache:1", str(d)).stdout
    assert "Running in" in changed and inspect(k, "kbt/cache:1")["Id"] != id1
    assert k("run", "--rm", "kbt/cache:1").stdout == "two\n"
    assert "Using cache" not in k("build", "--no-cache", "-t", "kbt/cache:1", str(d)).stdout
    assert "Build Cache" in k("system", "df").stdout
    k("builder", "prune", "-f")
    assert k("system", "df").stdout.split("Build Cache")[1].split()[0] == "0"  # no entries left
    assert "Using cache" not in k("build", "-t", "kbt/cache:1", str(d)).stdout
    assert_clean(k)


def test_build_args_targets_and_stages(k: Kobako, tmp_path: Path):
    d = ctx(tmp_path, f"""ARG BASE={IMG}
FROM $BASE AS first
ARG WHO=nobody
RUN echo "hi $WHO" > /greeting
FROM ${{BASE}}
COPY --from=first /greeting /from-first
RUN cat /from-first
""")
    out = k("build", "-t", "kbt/stages:1", "--build-arg", "WHO=kobako", "--build-arg", "UNUSED=1",
            str(d)).stdout
    assert "hi kobako" in out and "[UNUSED] were not consumed" in out
    assert k("run", "--rm", "kbt/stages:1", "cat", "/from-first").stdout == "hi kobako\n"
    k("build", "-q", "-t", "kbt/first:1", "--target", "first", str(d))
    assert k("run", "--rm", "kbt/first:1", "cat", "/greeting").stdout == "hi nobody\n"
    cp = k("build", "--target", "nosuch", str(d), check=False)
    assert cp.returncode == 125 and "nosuch" in cp.stderr
    assert_clean(k)


def test_contexts_from_stdin(k: Kobako, tmp_path: Path):
    k("build", "-q", "-t", "kbt/stdin:1", "-", input=f"FROM {IMG}\nRUN echo alone > /alone\n")
    assert k("run", "--rm", "kbt/stdin:1", "cat", "/alone").stdout == "alone\n"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, data in (("Dockerfile", f"FROM {IMG}\nCOPY in.txt /\n"), ("in.txt", "from a tar\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data.encode()))
    k("build", "-q", "-t", "kbt/stdin:2", "-", input=buf.getvalue(), text=False)
    assert k("run", "--rm", "kbt/stdin:2", "cat", "/in.txt").stdout == "from a tar\n"
    assert_clean(k)


def test_add_unpacks_a_local_tar_and_a_url_fails_clearly(k: Kobako, tmp_path: Path):
    d = ctx(tmp_path, f"FROM {IMG}\nADD files.tar.gz /opt/\n")
    with tarfile.open(d / "files.tar.gz", "w:gz") as t:
        info = tarfile.TarInfo("pkg/x.txt")
        info.size = 2
        t.addfile(info, io.BytesIO(b"x\n"))
    k("build", "-q", "-t", "kbt/add:1", str(d))
    assert k("run", "--rm", "kbt/add:1", "cat", "/opt/pkg/x.txt").stdout == "x\n"
    (d / "Dockerfile").write_text(f"FROM {IMG}\nADD http://127.0.0.1:1/file /file\n")
    cp = k("build", str(d), check=False)
    assert cp.returncode == 125 and "cannot download http://127.0.0.1:1/file" in cp.stderr
    assert "Traceback" not in cp.stderr
    assert_clean(k)


def test_a_hostile_context_cannot_reach_the_host(k: Kobako, tmp_path: Path):
    d = ctx(tmp_path, f"FROM {IMG}\nCOPY . /ctx/\n", {"ok.txt": "ok\n"})
    os.symlink("/etc/shadow", d / "shadow")
    os.symlink("/etc", d / "etcdir")
    k("build", "-q", "-t", "kbt/hostile:1", str(d))
    out = k("run", "--rm", "kbt/hostile:1", "readlink", "/ctx/shadow").stdout
    assert out.splitlines()[0] == "/etc/shadow"  # copied as the link it is, never followed
    for src in ("shadow", "etcdir/passwd", "../../../../etc/passwd"):
        (d / "Dockerfile").write_text(f"FROM {IMG}\nCOPY {src} /x\n")
        cp = k("build", str(d), check=False)
        assert cp.returncode == 125 and "file not found in build context" in cp.stderr, cp.stderr
    # a tar context with ../ and absolute names: nothing lands outside the build's own directory
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, data in (("Dockerfile", f"FROM {IMG}\n"), ("../escape.txt", "x"), ("/abs-escape.txt", "x")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data.encode()))
    k("build", "-q", "-", input=buf.getvalue(), text=False, check=False)
    assert not (k.data / "builder" / "escape.txt").exists() and not Path("/abs-escape.txt").exists()
    assert_clean(k)


@pytest.mark.parametrize("dockerfile,words", [
    ("FROM {img}\nRUN echo step-ran && exit 3\n", ["returned a non-zero code: 3"]),
    ("FROM {img}\nFROBNICATE everything\n", ["unknown instruction: FROBNICATE"]),
    ("FROM {img}\nCOPY --from=nostage /x /y\n", ["nostage"]),
    ("FROM {img}\nCOPY missing.txt /\n", ["missing.txt", "not found"]),
    ("FROM {img}\nCOPY a.txt b.txt /dir\n", ["must be a directory"]),
    ("FROM scratch\nRUN true\n", ["empty filesystem"]),
])
def test_bad_input_fails_cleanly(k: Kobako, tmp_path: Path, dockerfile: str, words: list[str]):
    d = ctx(tmp_path, dockerfile.format(img=IMG), {"a.txt": "a", "b.txt": "b"})
    blobs, snaps = k.blobs(), k.snapshots()
    cp = k("build", "-t", "kbt/bad:1", str(d), check=False)
    err = [ln for ln in cp.stderr.splitlines() if ln.startswith("Error:")]
    assert cp.returncode in (1, 125) and len(err) == 1 and "Traceback" not in cp.stderr + cp.stdout
    for w in words:
        assert w.lower() in err[0].lower(), err[0]
    assert k("image", "inspect", "kbt/bad:1", check=False).returncode != 0
    assert_clean(k)
    if "non-zero" in words[0]:
        assert cp.returncode == 1 and "step-ran" in cp.stdout
    else:
        assert k.blobs() == blobs and k.snapshots() == snaps  # nothing was made


def test_a_build_killed_midway_leaves_nothing_running(k: Kobako, tmp_path: Path):
    d = ctx(tmp_path, f"FROM {IMG}\nRUN sleep 30\n")
    p = subprocess.Popen([sys.executable, "-m", "kobako.cli.main", "build", str(d)], env=k.env,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         cwd=Path(__file__).resolve().parents[2])
    try:
        end = time.monotonic() + 30
        assert p.stdout is not None
        while "Running in" not in p.stdout.readline().decode() and time.monotonic() < end:
            pass
        p.send_signal(signal.SIGKILL)
    finally:
        p.wait()
    # a copy's temp directory a killed build left (its owner's PID and start time are in its name)
    left = k.data / "builder" / "tmp" / f"step-{os.getpid()}-1-x"
    (left / "upper").mkdir(parents=True)
    # the next build finds the step container and the directory of the dead ones and removes them
    k("build", "-q", "-", input=f"FROM {IMG}\nLABEL after=kill\n")
    assert not left.exists()
    assert_clean(k)


def test_docker_compose_builds_a_service(session_base: Path, busybox_rootfs: Path, tmp_path: Path):
    """docker-compose 1.29 (Debian's) builds a service through kobako's socket, then runs it."""
    import shutil

    from engine_support import api_service
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("no docker-compose (scripts/test.sh installs Debian's, without dockerd)")
    (tmp_path / "app").mkdir()
    dockerfile = f'FROM {IMG}\nCOPY msg.txt /msg.txt\nCMD ["cat", "/msg.txt"]\n'
    (tmp_path / "app" / "Dockerfile").write_text(dockerfile)
    (tmp_path / "app" / "msg.txt").write_text("built by compose\n")
    (tmp_path / "docker-compose.yml").write_text('version: "3"\nservices:\n  app:\n    build: ./app\n'
                                                 '    image: kbt/composed:1\n    network_mode: none\n')
    with api_service(session_base / "build-compose", busybox_rootfs, IMG) as api:
        def compose(*args: str) -> subprocess.CompletedProcess:
            cp = subprocess.run([exe, "-p", "kbtbuild", *args], cwd=tmp_path, env=api.env_docker,
                                capture_output=True, text=True, timeout=180)
            assert cp.returncode == 0, cp.stdout + cp.stderr
            return cp
        compose("build")
        assert "kbt/composed" in api("images").stdout
        assert "built by compose" in compose("run", "--rm", "app").stdout
        compose("down", "--rmi", "all")


def test_run_heredocs(k: Kobako, tmp_path: Path):
    d = ctx(tmp_path, f"""FROM {IMG}
ENV WHO=kobako
RUN <<EOF
echo one > /h1
echo two >> /h1
EOF
RUN cat <<'RAW' > /h2 && cat <<EXP >> /h2
$WHO stays
RAW
$WHO expands
EXP
""")
    k("build", "-q", "-t", "kbt/heredoc:1", str(d))
    out = k("run", "--rm", "--network", "none", "kbt/heredoc:1", "cat", "/h1", "/h2").stdout
    assert out == "one\ntwo\n$WHO stays\nkobako expands\n"
    k("rmi", "kbt/heredoc:1")
    assert_clean(k)
