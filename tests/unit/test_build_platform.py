"""build --platform without containers: the automatic platform ARGs (BuildKit's scoping),
FROM --platform, the image's platform, the cache key and the refusals. Only FROM scratch and
metadata steps, so the builder runs on a store in a temp directory."""

from __future__ import annotations

import json

import pytest

from kobako import errors
from kobako.engine import build as b
from kobako.engine.lifecycle import Engine
from kobako.image import manifest as mf

HOST = mf.platform_string(mf.normalize(mf.host_platform()))


class Out(b.Output):
    def __init__(self) -> None:
        self.text, self.hits = "", 0

    def stream(self, text: str) -> None:
        self.text += text

    def cached(self) -> None:
        self.hits += 1


@pytest.fixture
def e(tmp_path) -> Engine:
    return Engine(str(tmp_path / "data"), str(tmp_path / "run"))


def build(e: Engine, text: str, **opts) -> tuple[dict, Out]:
    out = Out()
    img = b.build(e, b.context_dir(None), text, b.Options(**opts), out)
    return json.loads(e.images.content.read(img["id"])), out


def test_platform_args_as_buildkit_defines_them():
    host, arm = mf.parse_platform("linux/amd64"), mf.parse_platform("linux/arm/v7")
    assert b.platform_args(host, arm) == {
        "BUILDPLATFORM": "linux/amd64", "BUILDOS": "linux", "BUILDARCH": "amd64", "BUILDVARIANT": "",
        "TARGETPLATFORM": "linux/arm/v7", "TARGETOS": "linux", "TARGETARCH": "arm", "TARGETVARIANT": "v7"}
    # arm64's default variant is not named; a --build-arg of the same name replaces the value
    args = b.platform_args(host, mf.parse_platform("linux/aarch64"), {"TARGETOS": "x", "OTHER": "y"})
    assert (args["TARGETPLATFORM"], args["TARGETVARIANT"], args["TARGETOS"]) == ("linux/arm64", "", "x")
    assert "OTHER" not in args


def test_args_are_global_for_from_and_in_a_stage_only_once_declared(e):
    text = ("ARG BASE=scratch\n"
            "FROM --platform=$BUILDPLATFORM $BASE AS tools\n"
            "FROM $BASE\n"
            "LABEL before=x$TARGETARCH\n"
            "ARG TARGETARCH\n"
            "ARG TARGETPLATFORM TARGETVARIANT BUILDPLATFORM\n"
            "LABEL arch=$TARGETARCH plat=$TARGETPLATFORM var=$TARGETVARIANT build=$BUILDPLATFORM\n")
    doc, _ = build(e, text, platform="linux/arm/v7")
    assert doc["config"]["Labels"] == {"before": "x", "arch": "arm", "plat": "linux/arm/v7", "var": "v7",
                                       "build": HOST}
    assert (doc["architecture"], doc["os"], doc["variant"]) == ("arm", "linux", "v7")
    # no --platform: the target is the host
    doc, _ = build(e, text)
    assert doc["config"]["Labels"]["arch"] == mf.normalize(mf.host_platform())["architecture"]
    assert doc["config"]["Labels"]["plat"] == HOST


def test_from_platform_sets_the_stage_platform_and_a_stage_keeps_its_own(e):
    text = ("FROM --platform=$BUILDPLATFORM scratch AS tools\n"
            "FROM --platform=linux/s390x scratch AS other\n"
            "FROM tools\n"
            "ARG TARGETARCH\n"
            "LABEL t=$TARGETARCH\n")
    doc, _ = build(e, text, target="other")
    assert doc["architecture"] == "s390x"  # no --platform: the stage's own platform
    doc, _ = build(e, text)
    assert doc["architecture"] == mf.host_platform()["architecture"]
    # --platform labels the image with it, whatever the last stage's platform, as BuildKit does
    doc, _ = build(e, text, platform="linux/arm64")
    assert (doc["architecture"], "variant" in doc) == ("arm64", False)
    assert doc["config"]["Labels"] == {"t": "arm64"}


def test_the_platform_is_in_the_cache_key(e):
    text = "FROM scratch\nLABEL a=1\nENV B=2\n"
    arm, out = build(e, text, platform="linux/arm64")
    assert out.hits == 0
    amd, out = build(e, text, platform="linux/amd64")
    assert out.hits == 0  # the same steps on the same base: another platform's are not reused
    again, out = build(e, text, platform="linux/arm64")
    assert out.hits == 2 and again == arm and amd["architecture"] == "amd64"


@pytest.mark.parametrize("plat,words", [
    ("linux/amd64,linux/arm64", ("multiple platforms (linux/amd64,linux/arm64) are not supported",
                                 "one platform per build")),
    ("linux/bogus", ("invalid platform", "linux/bogus")),
    ("windows/amd64", ("windows/amd64", "linux images only")),
])
def test_bad_platform_is_refused_before_any_step(e, plat, words):
    out = Out()
    with pytest.raises(errors.InvalidArgument) as ex:
        b.build(e, b.context_dir(None), "FROM scratch\nLABEL a=1\n", b.Options(platform=plat), out)
    assert all(w in errors.describe(ex.value) for w in words)
    assert out.text == "" and e.images.all() == []


def test_from_platform_that_does_not_parse_names_its_line(e):
    with pytest.raises(errors.InvalidArgument, match="line 2: FROM: invalid platform 'linux/nope'"):
        build(e, "ARG P=linux/nope\nFROM --platform=$P scratch\n")
    assert e.images.all() == []


def test_a_stage_that_runs_on_an_architecture_qemu_lacks_is_refused_before_it_runs(e):
    from kobako.engine.emulation import EmulationUnavailable
    out = Out()
    with pytest.raises(EmulationUnavailable, match="linux/wasm"):
        b.build(e, b.context_dir(None), "FROM scratch\nCOPY <<EOF /x\nx\nEOF\nRUN true\n",
                b.Options(platform="linux/wasm"), out)
    assert "Step 2/3" not in out.text and e.images.all() == []
    # without a RUN it needs no emulator: COPY-only builds for any platform
    doc, _ = build(e, "FROM scratch\nLABEL a=1\n", platform="linux/wasm")
    assert doc["architecture"] == "wasm"
