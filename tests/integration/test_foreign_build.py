"""build --platform for another architecture on a real kernel: an arm64 image built from a
Dockerfile (its RUN steps under qemu-user-static) and run; a FROM --platform=$BUILDPLATFORM
stage that runs natively and is copied into an arm64 one; what is refused, leaving nothing."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import pytest
from engine_support import Kobako, api_service, assert_user_error, http_request
from test_foreign_arch import arm64_busybox, docker_archive

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.uname().machine != "x86_64", reason="written for an x86-64 host")]
ARM, AMD = "kbt/arm64:1", "kbt/amd64:1"


@pytest.fixture(scope="module")
def k(session_base: Path, busybox_rootfs: Path) -> Kobako:
    if not os.path.exists("/usr/lib/binfmt.d/qemu-aarch64.conf"):
        pytest.skip("qemu-user-static is not installed (apt-get install qemu-user-static)")
    kb = Kobako(session_base / "engine-arm64-build")
    kb("load", input=arm64_archive(session_base), text=False)
    kb("load", input=docker_archive(busybox_rootfs, "amd64", AMD), text=False)
    yield kb
    kb.clean()


def arm64_archive(base: Path) -> bytes:
    root = base / "arm64-build-rootfs"
    if not root.exists():
        (root / "bin").mkdir(parents=True)
        shutil.copy2(arm64_busybox(), root / "bin" / "busybox")
        for a in ("sh", "uname", "echo", "cat", "true"):
            (root / "bin" / a).symlink_to("busybox")
    return docker_archive(root, "arm64", ARM)


def context(tmp: Path, text: str) -> str:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "Dockerfile").write_text(text)
    return str(tmp)


def run(k: Kobako, *args: str) -> str:
    return k("run", "--rm", "--network", "none", *args).stdout


def test_builds_an_arm64_image_from_a_dockerfile_and_runs_it(k: Kobako, session_base: Path):
    d = context(session_base / "ctx-arm64", f"FROM {ARM}\n"
                "RUN uname -m > /arch\n"
                "ARG TARGETARCH\n"
                "RUN echo $TARGETARCH > /targetarch\n"
                'CMD ["cat", "/arch", "/targetarch"]\n')
    out = k("build", "--platform", "linux/arm64", "-t", "kbt/built-arm64:1", d).stdout
    assert "Successfully tagged kbt/built-arm64:1" in out
    fmt = "{{.Architecture}} {{.Os}}"
    assert k("image", "inspect", "-f", fmt, "kbt/built-arm64:1").stdout.split() == ["arm64", "linux"]
    assert run(k, "--platform", "linux/arm64", "kbt/built-arm64:1") == "aarch64\narm64\n"
    # unchanged: every step from the cache, the same image
    again = k("build", "--platform", "linux/arm64", d).stdout
    assert "Running in" not in again and again.count("Using cache") == 4
    assert k("ps", "-aq").stdout == ""


def test_a_buildplatform_stage_runs_natively_and_is_copied_into_an_arm64_one(k: Kobako, session_base: Path):
    d = context(session_base / "ctx-cross", f"FROM --platform=$BUILDPLATFORM {AMD} AS tools\n"
                "ARG TARGETPLATFORM BUILDPLATFORM\n"
                'RUN echo "$(uname -m) $BUILDPLATFORM->$TARGETPLATFORM" > /made\n'
                f"FROM {ARM}\n"
                "COPY --from=tools /made /made\n"
                "RUN uname -m >> /made\n")
    k("build", "--platform", "linux/arm64", "-t", "kbt/cross:1", d)
    assert k("image", "inspect", "-f", "{{.Architecture}}", "kbt/cross:1").stdout.strip() == "arm64"
    assert run(k, "kbt/cross:1", "cat", "/made") == "x86_64 linux/amd64->linux/arm64\naarch64\n"


@pytest.mark.parametrize("plat,text,words", [
    ("linux/s390x", f"FROM {ARM}\nRUN true\n",
     (f"image with reference {ARM} was found but its platform (linux/arm64) does not match the specified "
      "platform (linux/s390x)",)),
    ("linux/amd64", f"FROM {ARM}\nRUN true\n", ("linux/arm64", "linux/amd64", "does not match")),
    ("linux/arm64/x/y", f"FROM {ARM}\n", ("invalid platform", "linux/arm64/x/y")),
    ("linux/arm64,linux/amd64", f"FROM {ARM}\n", ("multiple platforms", "one platform per build")),
    ("linux/arm64", "FROM --platform=linux/bogus scratch\n", ("line 1", "invalid platform", "linux/bogus")),
])
def test_bad_platform_is_one_message_and_leaves_nothing(k: Kobako, session_base: Path, plat: str, text: str,
                                                        words: tuple[str, ...]):
    images = k("images", "-aq").stdout
    d = context(session_base / "ctx-bad", text)
    assert_user_error(k("build", "--platform", plat, d, check=False), *words)
    assert k("ps", "-aq").stdout == ""
    assert k("images", "-aq").stdout == images
    assert not any((k.data / "builder" / "tmp").iterdir())


def test_api_build_takes_dockerds_platform_parameter(k: Kobako, session_base: Path, busybox_rootfs: Path):
    df = f"FROM {ARM}\nARG TARGETPLATFORM\nRUN echo $(uname -m) $TARGETPLATFORM > /made\n".encode()
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as t:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(df)
        t.addfile(info, io.BytesIO(df))
    headers = {"Content-Type": "application/x-tar"}
    with api_service(session_base / "api-arm64", busybox_rootfs, AMD) as api:
        api("load", input=arm64_archive(session_base), text=False)
        st, out, _ = http_request(api.sock, "POST", "/build?t=kbt/api-arm64:1&platform=linux%2Farm64",
                                  tar.getvalue(), headers)
        assert st == 200 and b"Successfully tagged kbt/api-arm64:1" in out, out
        assert json.loads(api("image", "inspect", "kbt/api-arm64:1").stdout)[0]["Architecture"] == "arm64"
        assert run(api, "kbt/api-arm64:1", "cat", "/made") == "aarch64 linux/arm64\n"
        for bad in ("linux%2Farm64%2Clinux%2Famd64", "nope%2Fx"):  # refused before the stream, as dockerd
            st, out, _ = http_request(api.sock, "POST", f"/build?platform={bad}", tar.getvalue(), headers)
            assert st == 400, out
        assert api("ps", "-aq").stdout == ""
