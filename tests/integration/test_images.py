"""Images on a real kernel: import a rootfs, run it on an overlay of its layers, commit,
diff, export, history, tag, rmi and garbage collection, with a private data root."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
from engine_support import Kobako, assert_user_error

pytestmark = pytest.mark.root
IMG = "kbt/busybox:1"


@pytest.fixture(scope="module")
def k(session_base: Path, busybox_rootfs: Path) -> Kobako:
    kb = Kobako(session_base / "engine-images")
    (busybox_rootfs / "www").mkdir(exist_ok=True)
    (busybox_rootfs / "www" / "index.html").write_text("kobako-bars\n")
    tar = session_base / "busybox-rootfs.tar"
    subprocess.run(["tar", "-C", str(busybox_rootfs), "-cf", str(tar), "."], check=True)
    kb("import", str(tar), IMG)
    return kb


def test_import_lists_and_inspects(k: Kobako):
    out = k("images").stdout
    assert "kbt/busybox" in out and "1" in out
    doc = json.loads(k("image", "inspect", IMG).stdout)[0]
    assert doc["RepoTags"] == [IMG] and doc["Id"].startswith("sha256:")
    assert len(doc["RootFS"]["Layers"]) == 1 and doc["Architecture"]
    assert k("images", "-q").stdout.strip() == doc["Id"][7:19]
    fmt = k("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    assert fmt == [IMG]


def test_run_sees_the_image_and_passes_the_exit_code(k: Kobako):
    assert k("run", "--rm", IMG, "cat", "/www/index.html").stdout == "kobako-bars\n"
    cp = k("run", "--rm", IMG, "sh", "-c", "exit 7", check=False)
    assert cp.returncode == 7
    assert k("ps", "-aq").stdout.strip() == ""


def test_containers_share_lower_layers_and_keep_their_changes_apart(k: Kobako):
    k("run", "--name", "c1", IMG, "sh", "-c", "echo one > /www/index.html")
    k("run", "--name", "c2", IMG, "sh", "-c", "echo two > /new")
    try:
        assert k("run", "--rm", IMG, "cat", "/www/index.html").stdout == "kobako-bars\n"
        d1 = k("diff", "c1").stdout.split("\n")
        assert "C /www/index.html" in d1
        assert "A /new" in k("diff", "c2").stdout
        recs = [json.loads((k.data / "containers" / c / "container.json").read_text())
                for c in os.listdir(k.data / "containers") if len(c) == 64]
        assert len({tuple(r["chainIds"]) for r in recs}) == 1  # one set of layer snapshots
    finally:
        k("rm", "c1", "c2")


def test_commit_with_changes_then_run_the_new_image(k: Kobako):
    k("run", "--name", "cm", IMG, "sh", "-c", "echo made > /made; rm /www/index.html; mkdir -p /d/e")
    try:
        iid = k("commit", "-c", 'CMD ["cat", "/made"]', "-c", "ENV K=V", "-m", "msg", "-a", "me", "cm",
                "kbt/committed:1").stdout.strip()
        assert iid.startswith("sha256:")
    finally:
        k("rm", "cm")
    assert k("run", "--rm", "kbt/committed:1").stdout == "made\n"
    assert k("run", "--rm", "kbt/committed:1", "ls", "/www").stdout == ""  # the whiteout holds
    assert "K=V" in k("run", "--rm", "kbt/committed:1", "env").stdout
    doc = json.loads(k("image", "inspect", "kbt/committed:1").stdout)[0]
    assert doc["Author"] == "me" and doc["Comment"] == "msg" and len(doc["RootFS"]["Layers"]) == 2
    hist = k("history", "kbt/committed:1").stdout
    assert "kobako commit" in hist and "kobako import" in hist
    k("rmi", "kbt/committed:1")


def test_export_is_the_merged_filesystem(k: Kobako, session_base: Path):
    k("run", "--name", "ex", IMG, "sh", "-c", "echo x > /added; rm /bin/ls")
    try:
        out = session_base / "export.tar"
        k("export", "-o", str(out), "ex")
        names = tarfile.open(out).getnames()
        assert "added" in names and "www/index.html" in names and "bin/ls" not in names
        assert not any(".wh." in n for n in names)
        assert not any(str(session_base) in line for line in open("/proc/self/mountinfo"))
    finally:
        k("rm", "ex")


def test_tag_rmi_and_garbage_collection(k: Kobako, session_base: Path):
    k("tag", IMG, "kbt/other:2")
    doc = json.loads(k("image", "inspect", "kbt/other:2").stdout)[0]
    assert sorted(doc["RepoTags"]) == ["kbt/busybox:1", "kbt/other:2"]
    assert k("rmi", "kbt/other:2").stdout.strip() == "Untagged: kbt/other:2"
    # a second, throw-away image: its blobs and snapshot go when it is removed
    tree = session_base / "tiny"
    (tree / "etc").mkdir(parents=True, exist_ok=True)
    (tree / "etc" / "tiny").write_text("tiny\n")
    blobs0, snaps0 = k.blobs(), k.snapshots()
    k("import", str(tree), "kbt/tiny:1")
    assert len(k.blobs()) == len(blobs0) + 3  # layer, config, manifest
    assert len(k.snapshots()) == len(snaps0) + 1
    k("rmi", "kbt/tiny:1")
    assert k.blobs() == blobs0 and k.snapshots() == snaps0


def test_rmi_refuses_an_image_a_container_uses(k: Kobako, session_base: Path):
    tree = session_base / "tiny2"
    (tree / "bin").mkdir(parents=True, exist_ok=True)
    k("import", str(tree), "kbt/tiny:2")
    img = json.loads(k("image", "inspect", IMG).stdout)[0]["Id"]
    k("tag", IMG, "kbt/inuse:1")
    k("run", "--name", "user", "kbt/inuse:1", "true")
    try:
        cp = k("rmi", img, check=False)
        assert cp.returncode != 0 and "Traceback" not in cp.stderr
    finally:
        k("rm", "user")
    k("rmi", "kbt/inuse:1", "kbt/tiny:2")


def test_import_of_a_host_directory_and_stdin(k: Kobako, session_base: Path):
    tree = session_base / "hostdir"
    (tree / "bin").mkdir(parents=True, exist_ok=True)
    os.link("/bin/busybox", tree / "bin" / "busybox") if os.stat("/bin/busybox").st_dev == \
        os.stat(session_base).st_dev else __import__("shutil").copy2("/bin/busybox", tree / "bin" / "busybox")
    os.symlink("busybox", tree / "bin" / "sh")
    (tree / "hello").write_text("from a host dir\n")
    k("import", "-c", 'CMD ["/bin/sh", "-c", "cat /hello"]', str(tree), "kbt/fromdir:1")
    assert k("run", "--rm", "kbt/fromdir:1").stdout == "from a host dir\n"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        info = tarfile.TarInfo("stdin-file")
        info.size = 3
        t.addfile(info, io.BytesIO(b"hi\n"))
    k("import", "-", "kbt/fromstdin:1", input=buf.getvalue(), text=False)
    k("rmi", "kbt/fromdir:1", "kbt/fromstdin:1")


@pytest.mark.parametrize("args, words", [
    (["run", "--rm", "--pull", "never", "kbt/nope:0", "true"], ["no such image"]),
    (["run", "--rm", "Bad_Name", "true"], ["invalid reference"]),
    (["image", "inspect", "kbt/nope:0"], ["no such image"]),
    (["tag", "kbt/nope:0", "x:1"], ["no such image"]),
    (["rmi", "kbt/nope:0"], ["no such image"]),
    (["import", "/nonexistent/file.tar", "x:1"], ["no such file"]),
    (["run", "--rm", IMG], ["no command"]),
    (["rm", "nosuchcontainer"], ["no such container"]),
    (["bogus-command"], []),
])
def test_user_errors_are_one_line_and_exit_125(k: Kobako, args, words):
    cp = k(*args, check=False)
    if args[0] in ("rmi", "rm", "image"):
        assert cp.returncode != 0 and "Traceback" not in cp.stderr
        assert any(w in cp.stderr.lower() for w in words)
    elif args[0] == "bogus-command":
        assert cp.returncode == 125 and "Traceback" not in cp.stderr
    else:
        assert_user_error(cp, *words)


def test_a_corrupt_import_leaves_nothing(k: Kobako, session_base: Path):
    bad = session_base / "garbage.tar"
    bad.write_bytes(os.urandom(100_000))
    blobs0, snaps0 = k.blobs(), k.snapshots()
    cp = k("import", str(bad), "kbt/bad:1", check=False)
    assert_user_error(cp)
    assert k.blobs() == blobs0 and k.snapshots() == snaps0
    assert "kbt/bad" not in k("images").stdout


def _many_layer_archive(path: Path, n: int, base_tar: Path) -> None:
    """A docker-archive of `n` layers: the busybox root, then n-1 layers of one file each."""
    import hashlib
    layers = [base_tar.read_bytes()]
    for i in range(1, n):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as t:
            info = tarfile.TarInfo(f"layer{i}")
            data = f"{i}\n".encode()
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
        layers.append(buf.getvalue())
    diff_ids = ["sha256:" + hashlib.sha256(x).hexdigest() for x in layers]
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["cat", f"/layer{n - 1}"]},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    chex = hashlib.sha256(config).hexdigest()
    with tarfile.open(path, "w") as t:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
        add(f"blobs/sha256/{chex}", config)
        for d, x in zip(diff_ids, layers, strict=True):
            add(f"blobs/sha256/{d[7:]}", x)
        add("manifest.json", json.dumps([{"Config": f"blobs/sha256/{chex}", "RepoTags": [f"kbt/layers:{n}"],
                                          "Layers": [f"blobs/sha256/{d[7:]}" for d in diff_ids]}]).encode())


def test_an_image_of_120_layers_runs_and_too_many_is_a_clear_error(k: Kobako, session_base: Path):
    base = session_base / "busybox-rootfs.tar"
    arc = session_base / "many.tar"
    _many_layer_archive(arc, 120, base)
    k("load", "-i", str(arc))
    assert k("run", "--rm", "kbt/layers:120").stdout == "119\n"
    _many_layer_archive(arc, 200, base)
    k("load", "-i", str(arc))
    assert_user_error(k("run", "--rm", "kbt/layers:200", check=False), "too many layers")
    assert not k("ps", "-aq").stdout.strip()
    k("rmi", "kbt/layers:120", "kbt/layers:200")
    arc.unlink()


def test_export_of_a_running_container_leaves_it_writable(k: Kobako, session_base: Path):
    k("run", "-d", "--name", "exlive", IMG, "sh", "-c", "echo live > /livefile; sleep 60")
    try:
        import time
        time.sleep(0.5)
        out = session_base / "live.tar"
        k("export", "-o", str(out), "exlive")
        names = tarfile.open(out).getnames()
        assert "livefile" in names and not any(n.startswith("proc/") and n != "proc/" for n in names)
        # copy-up of an image file still works in the live container
        cp = k("exec", "exlive", "sh", "-c", "echo changed > /www/index.html && cat /www/index.html")
        assert cp.stdout == "changed\n"
        out.unlink()
    finally:
        k("rm", "-f", "exlive")
