"""kill -9 of the CLI at every step of `load` and of `volume create`, the steps enumerated
from the step record itself (kobako/steps.py), not from a list kept here: a traced load
prints each blob, snapshot and image record it makes with its fault point
(`[image:blob#2]`, `[image:snapshot]`, `[image:record]`); each one is then armed in turn
(KOBAKO_FAULT), the CLI dies by SIGKILL right after that step, and after `image prune` /
`system prune` no image is half-made, no blob or snapshot is left that was not there
before, and a normal load then works and its image runs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from engine_support import Kobako

pytestmark = pytest.mark.root
BASE = "kbt/busybox:1"
IMG = "kbt/loadme:1"
REPO = Path(__file__).resolve().parents[2]
POINT = re.compile(r"\[([a-z]+:[a-z0-9_#-]+)\](?:  \([0-9.]+ ms\))?$")


@pytest.fixture(scope="module")
def k(session_base: Path, busybox_rootfs: Path) -> Kobako:
    kb = Kobako(session_base / "kill-every-load-step")
    kb("import", str(busybox_rootfs), BASE)
    # an image with a layer of its own on top of the base's, as a docker-archive
    kb("run", "--name", "mk", BASE, "sh", "-c", "echo loaded > /proof")
    kb("commit", "mk", IMG)
    kb("rm", "mk")
    kb("save", "-o", str(kb.root / "img.tar"), IMG)
    return kb


def _points(stderr: str) -> list[str]:
    return list(dict.fromkeys(m.group(1) for ln in stderr.splitlines() if (m := POINT.search(ln))))


def _kill_at(k: Kobako, point: str, *argv: str) -> str | None:
    p = subprocess.run([sys.executable, "-m", "kobako.cli.main", *argv], cwd=REPO,
                       env={**k.env, "KOBAKO_FAULT": point}, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True, timeout=60)
    if p.returncode != -9:
        return f"{point}: the fault did not fire (exit {p.returncode}: {p.stderr[-300:]})"
    return None


def _images(k: Kobako) -> set[str]:
    return set(k("images", "-aq", "--no-trunc").stdout.split())


def test_kill_9_at_every_step_of_load_leaves_nothing_half_made(k: Kobako):
    archive = str(k.root / "img.tar")
    k("rmi", IMG)
    k("image", "prune", "-f")
    images, blobs, snaps = _images(k), k.blobs(), k.snapshots()
    cp = k("load", "--trace", "-i", archive)
    points = _points(cp.stderr)
    assert {"image:blob", "image:blob#2", "image:snapshot", "image:record"} <= set(points), cp.stderr
    loaded = _images(k) - images
    assert len(loaded) == 1, loaded
    k("rmi", IMG)
    k("image", "prune", "-f")
    assert (k.blobs(), k.snapshots()) == (blobs, snaps)
    problems = []
    for i, point in enumerate(points):
        if failed := _kill_at(k, point, "load", "-i", archive):
            problems.append(failed)
        k("image", "prune", "-f") if i % 2 == 0 else k("system", "prune", "-f")
        now = _images(k)
        if now - images - loaded:
            problems.append(f"{point}: an image record nobody loaded: {now - images - loaded}")
        if now - images:  # killed once the record was written: the image is whole
            (rec,) = json.loads(k("image", "inspect", IMG).stdout)
            out = k("run", "--rm", rec["Id"], "cat", "/proof", check=False)
            if out.stdout != "loaded\n":
                problems.append(f"{point}: the image left is not whole: {out.stderr[-300:]}")
            k("rmi", IMG)
            k("image", "prune", "-f")
        elif k("image", "inspect", IMG, check=False).returncode == 0:
            problems.append(f"{point}: {IMG} inspects, but no image record is listed")
        if (k.blobs(), k.snapshots()) != (blobs, snaps):
            problems.append(f"{point}: left blobs {k.blobs() - blobs}, snapshots {k.snapshots() - snaps}; "
                            f"lost blobs {blobs - k.blobs()}, snapshots {snaps - k.snapshots()}")
    assert problems == [], "\n".join(problems)
    assert "Loaded image: kbt/loadme:1" in k("load", "-i", archive).stdout
    assert k("run", "--rm", IMG, "cat", "/proof").stdout == "loaded\n"
    assert k("run", "--rm", BASE, "true").returncode == 0  # the base's layers were never touched


def test_kill_9_at_every_step_of_volume_create_leaves_no_half_volume(k: Kobako):
    cp = k("volume", "create", "--trace", "kv")
    points = _points(cp.stderr)
    assert points == ["volume:dir", "volume:data", "volume:record", "volume:rename"], cp.stderr
    k("volume", "rm", "kv")
    vdir = k.data / "volumes"
    problems = []
    for point in points:
        if failed := _kill_at(k, point, "volume", "create", "kv"):
            problems.append(failed)
        k("volume", "prune", "-f")  # the store's lock: a crashed create's temp directory is swept
        left = sorted(n for n in (p.name for p in vdir.iterdir()) if n not in (".lock", "kv"))
        if left:
            problems.append(f"{point}: left {left}")
        if (vdir / "kv").exists():  # killed after the rename: the volume is whole
            (vol,) = json.loads(k("volume", "inspect", "kv").stdout)
            if not Path(vol["Mountpoint"]).is_dir():
                problems.append(f"{point}: volume kv has no _data")
            k("volume", "rm", "kv")
    assert problems == [], "\n".join(problems)
    k("volume", "create", "kv")
    assert k("run", "--rm", "-v", "kv:/d", BASE, "sh", "-c", "echo x > /d/f && cat /d/f").stdout == "x\n"
    k("volume", "rm", "kv")
