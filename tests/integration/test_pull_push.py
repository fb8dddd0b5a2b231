"""Pull and push through the `kobako` CLI against Debian's docker-registry on 127.0.0.1
and against small fake registries that misbehave on purpose: every failure is one line,
exit 125, and leaves the store as it was; a retry then succeeds."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import registry_support as rs
from engine_support import Kobako, assert_user_error

from kobako.image import manifest as mf

pytestmark = [pytest.mark.root, pytest.mark.skipif(rs.available() is not None,
                                                    reason=str(rs.available()))]


@pytest.fixture(scope="module")
def reg():
    with rs.Registry() as r:
        yield r


@pytest.fixture
def k(tmp_path: Path) -> Kobako:
    return Kobako(tmp_path / "k")


@pytest.fixture(scope="module")
def pushed(reg, session_base: Path, busybox_rootfs: Path) -> str:
    """The busybox root imported by one kobako and pushed to the registry."""
    src = Kobako(session_base / "pusher")
    src("import", "-c", 'CMD ["cat", "/etc/motd"]', str(_with_motd(busybox_rootfs)), "kbt/bb:1")
    name = f"{reg.addr}/kbt/bb:1"
    src("tag", "kbt/bb:1", name)
    out = src("push", name).stdout
    assert "digest: sha256:" in out
    again = src("push", name).stdout  # everything is there already: only HEADs
    assert "digest: sha256:" in again
    return name


def _with_motd(root: Path) -> Path:
    (root / "etc" / "motd").write_text("pulled and run\n")
    return root


def test_push_then_pull_into_an_empty_store_and_run(k: Kobako, reg, pushed: str):
    tags = json.loads(reg.request("GET", "/v2/kbt/bb/tags/list")[2])
    assert tags["tags"] == ["1"]
    k("pull", "-q", pushed)
    assert k("run", "--rm", pushed).stdout == "pulled and run\n"
    rows = k("images", "--digests").stdout
    assert f"{reg.addr}/kbt/bb" in rows and "sha256:" in rows
    blobs = {p: os.stat(k.data / "blobs" / "sha256" / p).st_mtime_ns for p in k.blobs()}
    k("pull", "-q", pushed)  # nothing new to fetch: no blob rewritten
    assert {p: os.stat(k.data / "blobs" / "sha256" / p).st_mtime_ns for p in k.blobs()} == blobs


def test_pull_prints_dockers_lines(k: Kobako, reg, pushed: str):
    """Not on a terminal: docker's per-layer lines, then Digest/Status and the name; again:
    every layer already exists and the image is up to date; -q: the name only."""
    lines = k("pull", pushed).stdout.splitlines()
    assert lines[0] == "1: Pulling from kbt/bb"
    layer = lines[1].split(":")[0]
    assert len(layer) == 12 and lines[1] == f"{layer}: Pulling fs layer"
    assert f"{layer}: Pull complete" in lines
    assert lines[-3].startswith("Digest: sha256:")
    assert lines[-2:] == [f"Status: Downloaded newer image for {pushed}", pushed]
    again = k("pull", pushed).stdout.splitlines()
    assert again[1] == f"{layer}: Already exists" and f"{layer}: Pull complete" not in again
    assert again[-2] == f"Status: Image is up to date for {pushed}"
    assert k("pull", "-q", pushed).stdout == pushed + "\n"


def test_pull_by_digest(k: Kobako, reg, pushed: str):
    digest = reg.request("HEAD", "/v2/kbt/bb/manifests/1", headers={
        "Accept": "application/vnd.oci.image.manifest.v1+json"})[1]["docker-content-digest"]
    k("pull", "-q", f"{reg.addr}/kbt/bb@{digest}")
    assert k("run", "--rm", f"{reg.addr}/kbt/bb@{digest}").stdout == "pulled and run\n"


def test_platform_selection_from_an_index(k: Kobako, reg):
    amd = rs.upload_image(reg, "kbt/multi", "amd", files={"arch": b"amd64\n"})
    arm = rs.upload_image(reg, "kbt/multi", "arm", files={"arch": b"arm64\n"})
    # the arm64 image's config must say arm64 for kobako to accept it
    cfg = json.loads(arm["config"])
    cfg["architecture"] = "arm64"
    cfg_bytes = json.dumps(cfg).encode()
    cfg_digest = reg.put_blob("kbt/multi", cfg_bytes)
    man = json.loads(arm["manifest"])
    man["config"] = {**man["config"], "digest": cfg_digest, "size": len(cfg_bytes)}
    arm_man = json.dumps(man).encode()
    arm_digest = reg.put_manifest("kbt/multi", "arm", arm_man)
    index = json.dumps({"schemaVersion": 2, "mediaType": mf.OCI_INDEX, "manifests": [
        {"mediaType": mf.OCI_MANIFEST, "digest": arm_digest, "size": len(arm_man),
         "platform": {"os": "linux", "architecture": "arm64"}},
        {"mediaType": mf.OCI_MANIFEST, "digest": amd["manifest_digest"], "size": len(amd["manifest"]),
         "platform": {"os": "linux", "architecture": "amd64"}},
    ]}).encode()
    reg.put_manifest("kbt/multi", "both", index, mf.OCI_INDEX)
    k("pull", "-q", f"{reg.addr}/kbt/multi:both")
    def arch() -> str:
        return json.loads(k("image", "inspect", f"{reg.addr}/kbt/multi:both").stdout)[0]["Architecture"]

    assert arch() == "amd64"
    k("pull", "-q", "--platform", "linux/arm64", f"{reg.addr}/kbt/multi:both")
    assert arch() == "arm64"
    blobs = sorted(p.name for p in k.root.joinpath("data", "blobs").rglob("*") if p.is_file())
    cp = k("pull", "--platform", "linux/s390x", f"{reg.addr}/kbt/multi:both", check=False)
    assert_user_error(cp, "no matching manifest for linux/s390x in the manifest list entries")
    assert sorted(p.name for p in k.root.joinpath("data", "blobs").rglob("*") if p.is_file()) == blobs


def test_pulled_platform_is_kept_shown_filtered_and_saved(k: Kobako, reg, tmp_path: Path):
    """An arm/v7 image whose config names no variant (as many do): the index entry's v7 is
    kept, shown by inspect, filtered on by `images`, and written by save."""
    amd = rs.upload_image(reg, "kbt/plat", "amd", files={"arch": b"amd64\n"})
    arm = rs.upload_arm_v7(reg, "kbt/plat", "arm", files={"arch": b"armv7\n"})
    rs.upload_index(reg, "kbt/plat", "multi", amd, arm)
    name = f"{reg.addr}/kbt/plat:multi"
    k("pull", "-q", f"{reg.addr}/kbt/plat:amd")
    k("pull", "-q", "--platform", "linux/arm/v7", name)
    doc = json.loads(k("image", "inspect", name).stdout)[0]
    assert (doc["Os"], doc["Architecture"], doc["Variant"]) == ("linux", "arm", "v7")
    assert "Variant" not in json.loads(k("image", "inspect", f"{reg.addr}/kbt/plat:amd").stdout)[0]
    fmt = "{{.Tag}} {{.Platform}} {{.Architecture}} {{.Variant}}"
    got = k("images", "--filter", "platform=linux/arm", "--format", fmt).stdout
    assert got == "multi linux/arm/v7 arm v7\n"
    assert k("images", "--filter", "platform=amd64", "--format", "{{.Tag}}").stdout == "amd\n"
    assert k("images", "--filter", "platform=linux/s390x", "-q").stdout == ""
    assert_user_error(k("images", "--filter", "platform=linux/nope", check=False), "invalid platform")
    out = tmp_path / "arm.tar"
    k("save", "--format", "oci-archive", "-o", str(out), name)
    import tarfile
    with tarfile.open(out) as t:
        entry = json.load(t.extractfile("index.json"))["manifests"][0]  # type: ignore[arg-type]
    assert entry["platform"] == {"architecture": "arm", "os": "linux", "variant": "v7"}
    k("rmi", name)
    k("load", "--platform", "linux/arm/v7", "-i", str(out))
    assert json.loads(k("image", "inspect", name).stdout)[0]["Variant"] == "v7"
    assert_user_error(k("load", "--platform", "linux/arm64", "-i", str(out), check=False),
                      "no matching manifest for linux/arm64")
    cp = k("pull", "--platform", "linux/arm64", f"{reg.addr}/kbt/plat:amd", check=False)
    assert_user_error(cp, "does not match the specified platform: wanted linux/arm64, actual: linux/amd64")


def _index_of_busybox_and_arm(src_reg, reg, pushed: str, repo: str) -> tuple[str, str]:
    """An index in `repo`:multi on `reg` of the busybox pushed to `src_reg` (amd64, runnable)
    and an arm/v7 image."""
    src = pushed.split("/", 1)[1].split(":")[0]
    status, h, body = src_reg.request("GET", f"/v2/{src}/manifests/1", headers={"Accept": mf.OCI_MANIFEST},
                                  scope=f"repository:{src}:pull")
    assert status == 200, body
    for d in [json.loads(body)["config"]] + json.loads(body)["layers"]:
        _, _, blob = src_reg.request("GET", f"/v2/{src}/blobs/{d['digest']}", scope=f"repository:{src}:pull")
        reg.put_blob(repo, blob)
    reg.put_manifest(repo, "amd", body, h["content-type"].split(";")[0])
    amd = {"manifest": body, "manifest_digest": rs.sha256(body)}
    arm = rs.upload_arm_v7(reg, repo, "arm", files={"arch": b"armv7\n"})
    return f"{reg.addr}/{repo}:multi", rs.upload_index(reg, repo, "multi", amd, arm)


def test_pull_all_platforms_keeps_the_index_and_picks_offline(k: Kobako, reg, pushed: str, tmp_path: Path):
    with rs.Registry() as own:  # stopped after the pull
        name, digest = _index_of_busybox_and_arm(reg, own, pushed, "kbt/all")
        out = k("pull", "--all-platforms", name).stdout
        assert f"Digest: {digest} (2 platforms: linux/arm/v7, linux/amd64)" in out
        assert_user_error(k("pull", "--all-platforms", "--platform", "linux/arm", name, check=False),
                          "--all-platforms and --platform cannot be used together")
    # the registry is gone: everything below is offline
    fmt = "{{.Tag}} {{.Platform}} {{.Digest}}"
    arm_only = ("images", "--filter", "platform=linux/arm", "--format", fmt)
    assert k("images", "--format", fmt).stdout == f"multi linux/amd64 {digest}\n"
    assert k(*arm_only).stdout == f"multi linux/arm/v7 {digest}\n"
    assert len(k("images", "-aq").stdout.split()) == 1
    doc = json.loads(k("image", "inspect", "--platform", "linux/arm/v7", name).stdout)[0]
    assert (doc["Architecture"], doc["Variant"]) == ("arm", "v7")
    assert json.loads(k("image", "inspect", name).stdout)[0]["Architecture"] == "amd64"
    assert k("run", "--rm", name, "cat", "/etc/motd").stdout == "pulled and run\n"
    cid = k("create", "--platform", "linux/arm/v7", name, "cat", "/arch").stdout.strip()
    ctr = json.loads(k("inspect", cid).stdout)[0]
    assert ctr["Image"] == doc["Id"]
    k("rm", cid)
    assert_user_error(k("run", "--rm", "--platform", "linux/s390x", "--pull", "never", name, "true",
                        check=False), "no matching manifest for linux/s390x")
    assert_user_error(k("push", name, check=False), "multi-platform image")
    k("tag", name, "kbt/copy:1")
    copy = json.loads(k("image", "inspect", "--platform", "linux/arm", "kbt/copy:1").stdout)[0]
    assert copy["Id"] == doc["Id"]
    k("rmi", "kbt/copy:1")
    archive = tmp_path / "all.tar"
    k("save", "--format", "oci-archive", "-o", str(archive), name)
    k("rmi", name)
    k("image", "prune", "-f")
    assert k("images", "-aq").stdout == "" and k.blobs() == set()
    k("load", "-i", str(archive))
    # the same images (pulled layers are gzipped anew by save, so the index is a new one)
    by_id = ("images", "--filter", "platform=linux/arm", "--format", "{{.Tag}} {{.Platform}} {{.ID}}")
    assert k(*by_id).stdout == f"multi linux/arm/v7 {doc['Id'][7:19]}\n"
    assert k("run", "--rm", name, "cat", "/etc/motd").stdout == "pulled and run\n"
    k("rmi", name)
    k("load", "--platform", "linux/arm/v7", "-i", str(archive))
    assert k("images", "--format", "{{.Tag}} {{.Platform}}").stdout == "multi linux/arm/v7\n"


def test_pull_all_platforms_of_a_single_manifest_is_a_plain_pull(k: Kobako, reg):
    rs.upload_image(reg, "kbt/single", "1")
    k("pull", "-q", "--all-platforms", f"{reg.addr}/kbt/single:1")
    assert k("images", "--format", "{{.Tag}} {{.Platform}}").stdout == "1 linux/amd64\n"
    assert not (k.data / "images" / "indexes").exists()


@pytest.mark.parametrize("point", ["image:record", "image:record#2", "image:blob#4"])
def test_kill_9_midway_through_pull_all_platforms_leaves_no_index(k: Kobako, reg, point: str):
    amd = rs.upload_image(reg, "kbt/killall", "amd", files={"arch": b"amd64\n"})
    arm = rs.upload_arm_v7(reg, "kbt/killall", "arm", files={"arch": b"armv7\n"})
    rs.upload_index(reg, "kbt/killall", "multi", amd, arm)
    name = f"{reg.addr}/kbt/killall:multi"
    p = subprocess.run([sys.executable, "-m", "kobako.cli.main", "pull", "--all-platforms", name],
                       cwd=Path(__file__).resolve().parents[2], env={**k.env, "KOBAKO_FAULT": point},
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == -9, p.stderr
    assert "no such image" in k("image", "inspect", name, check=False).stderr  # no index record
    k("image", "prune", "-f")
    assert k("images", "-aq").stdout == "" and k.blobs() == set()
    k("pull", "-q", "--all-platforms", name)  # a retry starts clean
    [index] = (k.data / "images" / "indexes").glob("*.json")
    assert len(json.loads(index.read_text())["manifests"]) == 2


def test_login_with_basic_auth_then_pull_and_logout(k: Kobako, pushed: str, session_base: Path):
    with rs.Registry(htpasswd=("alice", "s3cret")) as sec:
        name = f"{sec.addr}/kbt/private:1"
        src = Kobako(session_base / "pusher")
        src("tag", "kbt/bb:1", name)
        cp = src("push", name, check=False)
        assert_user_error(cp, "unauthorized", f"kobako login {sec.addr}")
        cp = src("login", "-u", "alice", "--password-stdin", sec.addr, input="wrong\n", check=False)
        assert_user_error(cp, "unauthorized")
        assert src("login", "-u", "alice", "--password-stdin", sec.addr, input="s3cret\n").stdout.strip() \
            == "Login Succeeded"
        auth = src.root / "config" / "auth.json"
        assert oct(auth.stat().st_mode & 0o777) == "0o600" and sec.addr in auth.read_text()
        src("push", name)
        cp = k("pull", name, check=False)  # another user, not logged in
        assert_user_error(cp, "unauthorized")
        assert not k.blobs()
        src("logout", sec.addr)
        assert sec.addr not in auth.read_text()


def test_unknown_tag_and_registry_down(k: Kobako, reg):
    cp = k("pull", f"{reg.addr}/kbt/bb:nope", check=False)
    assert_user_error(cp, "not found")
    port = rs.free_port()
    cp = k("pull", f"127.0.0.1:{port}/x/y:1", check=False)
    assert_user_error(cp, f"127.0.0.1:{port}")
    cp = k("run", "--rm", f"127.0.0.1:{port}/x/y:1", "true", check=False)
    assert_user_error(cp, f"127.0.0.1:{port}")
    assert not k.blobs() and not k.snapshots()


# -- a registry that misbehaves on purpose ---------------------------------------------------

class Fake:
    """A one-image registry over http.server whose blob answers a test can spoil."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.tar = rs.make_layer(files)
        import gzip
        self.layer = gzip.compress(self.tar, mtime=0)
        self.config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/x"]},
                                  "rootfs": {"type": "layers", "diff_ids": [rs.sha256(self.tar)]}}).encode()
        self.manifest = json.dumps({
            "schemaVersion": 2, "mediaType": mf.OCI_MANIFEST,
            "config": {"mediaType": mf.OCI_CONFIG, "digest": rs.sha256(self.config),
                       "size": len(self.config)},
            "layers": [{"mediaType": mf.OCI_LAYER_GZIP, "digest": rs.sha256(self.layer),
                        "size": len(self.layer)}]}).encode()
        self.mode = "ok"   # ok | corrupt | truncate | slow | garbage | error500
        fake = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_HEAD(self):
                self.do_GET(head=True)

            def do_GET(self, head: bool = False):
                p = self.path
                if fake.mode == "garbage" and p != "/v2/":
                    self.wfile.write(b"this is not HTTP\r\n\r\n")
                    self.close_connection = True
                    return
                if fake.mode == "error500" and "/manifests/" in p:
                    return self._send(500, b'{"errors":[{"code":"UNKNOWN","message":"boom"}]}')
                if p == "/v2/":
                    return self._send(200, b"{}")
                if "/manifests/" in p:
                    return self._send(200, fake.manifest, mf.OCI_MANIFEST,
                                      {"Docker-Content-Digest": rs.sha256(fake.manifest)}, head)
                if p.endswith(rs.sha256(fake.config)):
                    return self._send(200, fake.config, head=head)
                if p.endswith(rs.sha256(fake.layer)):
                    body = fake.layer
                    if fake.mode == "corrupt":
                        body = body[:100] + bytes([body[100] ^ 0xFF]) + body[101:]
                    if fake.mode == "slowok":  # half now, the rest after a pause
                        self.send_response(200)
                        self.send_header("Content-Length", str(len(body)))
                        self.end_headers()
                        self.wfile.write(body[:len(body) // 2])
                        self.wfile.flush()
                        time.sleep(1.5)
                        self.wfile.write(body[len(body) // 2:])
                        return
                    if fake.mode in ("truncate", "slow"):
                        self.send_response(200)
                        self.send_header("Content-Length", str(len(body)))
                        self.end_headers()
                        half = len(body) // 2
                        self.wfile.write(body[:half])
                        self.wfile.flush()
                        if fake.mode == "slow":
                            time.sleep(30)
                        self.close_connection = True
                        return
                    return self._send(200, body, head=head)
                self._send(404, b'{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}')

            def _send(self, code, body, ctype="application/octet-stream", headers=None, head=False):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for kk, v in (headers or {}).items():
                    self.send_header(kk, v)
                self.end_headers()
                if not head:
                    self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.addr = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake():
    f = Fake({"x": os.urandom(300_000)})
    yield f
    f.close()


@pytest.mark.parametrize("mode, words", [
    ("corrupt", ["corrupt"]), ("truncate", []), ("garbage", ["invalid answer"]), ("error500", ["500"]),
])
def test_a_bad_download_leaves_nothing_and_a_retry_succeeds(k: Kobako, fake: Fake, mode, words):
    fake.mode = mode
    cp = k("pull", f"{fake.addr}/t/img:1", check=False, timeout=120)
    assert_user_error(cp, *words)
    assert not k.blobs() and not k.snapshots()
    assert not os.listdir(k.data / "ingest")
    assert "t/img" not in k("images").stdout
    fake.mode = "ok"
    k("pull", "-q", f"{fake.addr}/t/img:1")
    assert_pulled_whole(k)


def assert_pulled_whole(k: Kobako) -> None:
    """Manifest and config as blobs; the layer as its snapshot with a tar-split (no blob)."""
    assert len(k.blobs()) == 2 and len(k.snapshots()) == 1
    (snap,) = k.snapshots()
    assert (k.data / "snapshots" / snap / "tarsplit").stat().st_size > 0


def wait_for_half_a_layer(k: Kobako) -> None:
    """Until a pull has its layer's temp snapshot: the download is under way (and stalls
    at half the blob: the fake registry's slow modes)."""
    end = time.monotonic() + 20
    while time.monotonic() < end:
        snaps = k.data / "snapshots"
        if any(n.startswith(".tmp-") for n in (os.listdir(snaps) if snaps.exists() else [])):
            time.sleep(0.2)  # whatever arrived is being unpacked
            return
        time.sleep(0.05)
    pytest.fail("the pull never started unpacking its layer")


def test_kill_9_midway_then_retry_and_prune(k: Kobako, fake: Fake):
    fake.mode = "slow"
    p = subprocess.Popen([sys.executable, "-m", "kobako.cli.main", "pull", "-q", f"{fake.addr}/t/img:1"],
                         env=k.env, cwd=Path(__file__).resolve().parents[2],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_half_a_layer(k)
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    assert "t/img" not in k("images").stdout
    assert not any(Path(k.data / "blobs" / "sha256" / b).stat().st_size > 200_000 for b in k.blobs())
    fake.mode = "ok"
    k("pull", "-q", f"{fake.addr}/t/img:1")
    k("system", "prune", "-f")
    assert not os.listdir(k.data / "ingest")
    assert not [n for n in os.listdir(k.data / "snapshots") if n.startswith(".tmp-")]
    assert "t/img" in k("images").stdout  # prune keeps tagged images


def test_a_full_disk_is_one_message_and_leaves_nothing(tmp_path: Path, fake: Fake):
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "kbt-small", str(small)], check=True)
    try:
        k = Kobako(small)
        cp = k("pull", f"{fake.addr}/t/img:1", check=False)
        assert_user_error(cp, "no space left")
        assert not k.blobs() and not os.listdir(k.data / "ingest")
        assert not os.listdir(k.data / "snapshots")
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_push_of_an_unknown_image_and_bad_names(k: Kobako, reg):
    assert_user_error(k("push", f"{reg.addr}/nope/nope:1", check=False), "no such image")
    assert_user_error(k("pull", "Upper_Case", check=False), "invalid reference")
    assert_user_error(k("pull", f"{reg.addr}/a@sha256:{'0' * 10}", check=False), "invalid digest")
    hashlib.sha256()  # (keeps the import honest for readers: digests are sha256)


def test_push_to_another_repository_of_the_same_registry(k: Kobako, reg, pushed: str):
    """The pulled image's repo digest names kbt/bb: its layers are mounted from there
    (client-level test: tests/integration/test_registry_client.py); the result is whole."""
    k("pull", "-q", pushed)
    other = f"{reg.addr}/kbt/copy:1"
    k("tag", pushed, other)
    k("push", other)
    fresh = Kobako(k.root.parent / "fresh")
    fresh("pull", "-q", other)
    assert fresh("run", "--rm", other).stdout == "pulled and run\n"


def test_garbage_collection_during_a_pull_removes_nothing_it_needs(k: Kobako, fake: Fake):
    fake.mode = "slowok"
    p = subprocess.Popen([sys.executable, "-m", "kobako.cli.main", "pull", "-q", f"{fake.addr}/t/img:1"],
                         env=k.env, cwd=Path(__file__).resolve().parents[2], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        wait_for_half_a_layer(k)
        # a collection now must not take the half-written layer: it waits for the pull's shield
        k("image", "prune", "-f")
        k("system", "prune", "-f")
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    finally:
        if p.poll() is None:
            p.kill()
    assert "t/img" in k("images").stdout
    assert_pulled_whole(k)


def test_a_pulled_layer_keeps_no_blob_and_is_rebuilt_for_save_and_push(k: Kobako, reg, pushed: str,
                                                                       tmp_path: Path):
    """The pull stores the layer once, as its snapshot (+ tar-split); save gives the exact
    layer tar back (its diff ID), OCI save and a push to another registry gzip it anew."""
    import tarfile
    k("pull", "-q", pushed)
    (chain,) = k.snapshots()
    diff = json.loads(k("image", "inspect", pushed).stdout)[0]["RootFS"]["Layers"][0]
    assert len(k.blobs()) == 2  # manifest and config only
    out = tmp_path / "d.tar"
    k("save", "-o", str(out), pushed)
    with tarfile.open(out) as t:
        layer = t.extractfile(f"blobs/sha256/{diff[7:]}").read()  # type: ignore[union-attr]
    assert "sha256:" + hashlib.sha256(layer).hexdigest() == diff
    oci = tmp_path / "o.tar"
    k("save", "--format", "oci-archive", "-o", str(oci), pushed)
    with rs.Registry() as other:  # no mount from the first registry: the layer is uploaded
        there = f"{other.addr}/kbt/moved:1"
        k("tag", pushed, there)
        k("push", "-q", there)
        for src, name in ((None, there), (out, pushed), (oci, pushed)):
            fresh = Kobako(tmp_path / f"fresh-{len(os.listdir(tmp_path))}")
            if src is None:
                fresh("pull", "-q", name)
            else:
                fresh("load", "-i", str(src))
            assert fresh("run", "--rm", name).stdout == "pulled and run\n"
            inspected = json.loads(fresh("image", "inspect", name).stdout)[0]
            assert inspected["RootFS"]["Layers"] == [diff]
        # a snapshot changed on disk is caught, not saved or pushed
        fs_dir = k.data / "snapshots" / chain / "fs"
        (fs_dir / "etc" / "motd").write_text("PULLED AND RUN\n")  # same size, other bytes
        cp = k("save", "-o", str(tmp_path / "bad.tar"), pushed, check=False)
        assert_user_error(cp, "changed on disk")
        assert not (tmp_path / "bad.tar").exists()
        (fs_dir / "etc" / "motd").write_text("pulled\n")
        again = f"{other.addr}/kbt/again:1"
        k("tag", pushed, again)
        assert_user_error(k("push", "-q", again, check=False), "shorter than it was")
