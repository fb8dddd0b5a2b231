"""`kobako explain` on real containers: every value it reports is checked against what this
test reads itself from /proc, the cgroup files, sysfs and the nft table, and every host
command it lists is run and must print the value it claims. Broken pieces (a veth deleted
behind kobako's back, an nft element removed) must show up as problems, not be assumed."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from engine_support import Kobako, assert_user_error
from support import free_port

pytestmark = pytest.mark.root
IMG = "kbt/busybox:1"
NET = "kbtexplain"


@pytest.fixture(scope="module")
def k(session_base: Path, busybox_rootfs: Path) -> Kobako:
    kb = Kobako(session_base / "explain")
    kb("import", str(busybox_rootfs), IMG)
    kb("network", "create", NET)
    yield kb
    kb.clean()



def _explain(k: Kobako, name: str) -> dict:
    return json.loads(k("explain", "--format", "json", name).stdout)


def _objects(doc: dict, kind: str) -> dict[str, dict]:
    return {o["name"]: o for o in doc["objects"] if o["kind"] == kind}


def _status(pid: int) -> dict[str, str]:
    out = {}
    for line in open(f"/proc/{pid}/status"):
        key, _, val = line.partition(":")
        out[key] = val.strip()
    return out


def _cgroup_file(pid: int, controller: str, v1: str, v2: str) -> tuple[str, str]:
    """(path, value) of a limit file of the init's cgroup, found from /proc/PID/cgroup."""
    for line in open(f"/proc/{pid}/cgroup"):
        _, ctrls, path = line.rstrip("\n").split(":", 2)
        if controller in ctrls.split(","):
            f = f"/sys/fs/cgroup/{controller}{path}/{v1}"
            return f, open(f).read().strip()
    path = [ln.rstrip("\n").split(":", 2)[2] for ln in open(f"/proc/{pid}/cgroup") if ln.startswith("0::")][0]
    f = f"/sys/fs/cgroup{path}/{v2}"
    return f, open(f).read().strip()


def _run_checks(doc: dict) -> list[str]:
    """Run every listed host command that claims an output; return the commands run."""
    ran = []
    for o in doc["objects"]:
        for c in o["checks"]:
            if c["shows"] is None or c["command"].startswith("kobako "):
                continue
            cp = subprocess.run(c["command"], shell=True, capture_output=True, text=True, timeout=30)
            assert cp.returncode == 0, f"{c['command']} failed: {cp.stderr}"
            assert " ".join(c["shows"].split()) in " ".join(cp.stdout.split()), \
                f"`{c['command']}` does not show {c['shows']!r}:\n{cp.stdout}"
            ran.append(c["command"])
    return ran


def test_a_published_limited_container_on_a_named_network(k: Kobako):
    port = free_port()
    k("run", "-d", "--name", "ex-web", "-p", f"127.0.0.1:{port}:80", "-m", "64m", "--pids-limit", "42",
      "--network", NET, IMG, "sleep", "600")
    doc = _explain(k, "ex-web")
    pid = doc["pid"]
    assert json.loads(k("inspect", "ex-web").stdout)[0]["State"]["Pid"] == pid
    assert doc["state"] == "running"
    problems = [p for o in doc["objects"] for p in o["problems"]]
    assert problems == []

    ns = _objects(doc, "namespace")
    for name in ("cgroup", "ipc", "mnt", "net", "pid", "uts", "user"):
        assert ns[name]["facts"]["inode"] == os.stat(f"/proc/{pid}/ns/{name}").st_ino, name
    for name in ("cgroup", "ipc", "mnt", "net", "pid", "uts"):
        assert ns[name]["facts"]["owner"] == "container", name
        assert ns[name]["facts"]["inode"] != os.stat(f"/proc/self/ns/{name}").st_ino
    assert ns["user"]["facts"]["owner"] == "host"
    netns = ns["net"]["facts"]["bound"]
    assert netns and os.stat(netns).st_ino == ns["net"]["facts"]["inode"]

    cg = _objects(doc, "cgroup")
    mem_file, mem = _cgroup_file(pid, "memory", "memory.limit_in_bytes", "memory.max")
    assert mem == str(64 << 20)
    assert [o for o in cg.values() if o["facts"].get("files", {}).get(os.path.basename(mem_file)) == mem]
    pids_file, pids = _cgroup_file(pid, "pids", "pids.max", "pids.max")
    assert pids == "42"
    assert any(o["facts"].get("files", {}).get("pids.max") == "42" for o in cg.values())
    assert pid in cg["path"]["facts"]["processes"]

    mounts = _objects(doc, "mount")
    root = [ln.split() for ln in open(f"/proc/{pid}/mountinfo") if ln.split()[4] == "/"][0]
    upper = [o for o in root[root.index("-") + 3].split(",") if o.startswith("upperdir=")][0]
    assert mounts["/"]["facts"]["upperdir"] == upper.split("=", 1)[1]
    assert all(x["exists"] for x in mounts["/"]["facts"]["layers"])
    assert "/etc/hosts" in mounts and mounts["/etc/hosts"]["facts"]["type"] == "bind"
    assert any(p["path"] == "/proc/keys" for p in mounts["masked"]["facts"]["paths"])

    ep = _objects(doc, "network")[NET]["facts"]
    ip = json.loads(k("inspect", "ex-web").stdout)[0]["NetworkSettings"]["Networks"][NET]["IPAddress"]
    assert ep["ip"] == ip and f"{ip}/{ep['prefix']}" in ep["addresses"]
    assert os.path.basename(os.readlink(f"/sys/class/net/{ep['veth']}/master")) == ep["bridge"]
    assert int(open(f"/sys/class/net/{ep['veth']}/ifindex").read()) == ep["hostLink"]["ifindex"]

    nft = list(_objects(doc, "nftables").values())[0]["facts"]
    elem = f"dnat_ip {{ 127.0.0.1 . tcp . {port} : {ip} . 80 }}"
    assert elem in nft["present"] and nft["missing"] == []
    listed = subprocess.run(["nft", "list", "map", "inet", nft["table"], "dnat_ip"], capture_output=True,
                            text=True).stdout
    assert f"127.0.0.1 . tcp . {port} : {ip} . 80" in listed

    sec = _objects(doc, "security")
    st = _status(pid)
    assert sec["seccomp"]["facts"]["mode"] == int(st["Seccomp"]) == 2
    assert sec["capabilities"]["facts"]["effective"]["hex"] == st["CapEff"]
    assert "CAP_CHOWN" in sec["capabilities"]["facts"]["effective"]["names"]
    assert "CAP_SYS_ADMIN" not in sec["capabilities"]["facts"]["bounding"]["names"]

    ran = _run_checks(doc)
    assert len(ran) >= 25, ran  # every namespace, limit, mount, link, element and status line
    assert f"lsns -p {pid} -t net" in ran
    assert f"cat {mem_file}" in ran
    assert f"ip -o link show {ep['veth']}" in ran
    assert f"nft list map inet {nft['table']} dnat_ip" in ran

    text = k("explain", "ex-web").stdout
    assert "limit 64 MiB (67108864)" in text and ep["veth"] in text and f"$ lsns -p {pid} -t net" in text
    assert "\n      ! " not in text
    assert text.rstrip().endswith("read from the kernel or from kobako's files just now.")


@pytest.mark.parametrize("flags, caps", [(["--cap-drop", "ALL"], "none"), (["--privileged"], "all")])
def test_no_network_and_the_capability_extremes(k: Kobako, flags: list[str], caps: str):
    name = f"ex-none-{caps}"
    k("run", "-d", "--name", name, "--network", "none", *flags, IMG, "sleep", "600")
    doc = _explain(k, name)
    pid = doc["pid"]
    assert [p for o in doc["objects"] for p in o["problems"]] == []
    ns = _objects(doc, "namespace")
    assert ns["net"]["facts"]["owner"] == "container" and ns["net"]["facts"]["bound"] is None
    net = _objects(doc, "network")
    assert list(net) == ["none"] and net["none"]["facts"]["interfaces"] == ["lo"]
    assert not _objects(doc, "nftables")
    st = _status(pid)
    got = _objects(doc, "security")
    for field, what in (("CapEff", "effective"), ("CapBnd", "bounding"), ("CapPrm", "permitted")):
        assert got["capabilities"]["facts"][what]["hex"] == st[field]
    names = got["capabilities"]["facts"]["effective"]["names"]
    if caps == "none":
        assert names == [] and int(st["CapEff"], 16) == 0
    else:
        assert {"CAP_SYS_ADMIN", "CAP_NET_ADMIN", "CAP_SYS_MODULE"} <= set(names)
    assert got["seccomp"]["facts"]["mode"] == int(st["Seccomp"])
    _run_checks(doc)
    k("rm", "-f", name)


def test_shared_namespaces_are_named_as_shared(k: Kobako):
    k("run", "-d", "--name", "ex-owner", "--network", NET, IMG, "sleep", "600")
    k("run", "-d", "--name", "ex-guest", "--network", "container:ex-owner", "--pid", "host", IMG,
      "sleep", "600")
    guest, owner = _explain(k, "ex-guest"), _explain(k, "ex-owner")
    g, o = _objects(guest, "namespace"), _objects(owner, "namespace")
    inode = os.stat(f"/proc/{guest['pid']}/ns/net").st_ino
    assert g["net"]["facts"]["inode"] == o["net"]["facts"]["inode"] == inode
    assert g["net"]["facts"]["owner"] == "ex-owner"
    assert "also joined by ex-guest" in o["net"]["summary"]
    assert g["pid"]["facts"]["owner"] == "host"
    assert g["pid"]["facts"]["inode"] == os.stat("/proc/self/ns/pid").st_ino
    assert list(_objects(guest, "network")) == ["container"]
    k("rm", "-f", "ex-guest", "ex-owner")


def test_a_user_namespace_and_its_idmapped_root(k: Kobako):
    k("run", "-d", "--name", "ex-userns", "--userns", "auto", "--network", "none", IMG, "sleep", "600")
    doc = _explain(k, "ex-userns")
    pid = doc["pid"]
    assert [p for o in doc["objects"] for p in o["problems"]] == []
    user = _objects(doc, "namespace")["user"]["facts"]
    assert user["owner"] == "container" and user["inode"] == os.stat(f"/proc/{pid}/ns/user").st_ino
    sec = _objects(doc, "security")["user"]
    assert sec["facts"]["uidMap"] == [" ".join(ln.split()) for ln in open(f"/proc/{pid}/uid_map")]
    host_uid = _status(pid)["Uid"].split()[0]
    assert host_uid != "0" and sec["summary"].startswith(f"runs as uid 0, gid 0 (the host's {host_uid}")
    root = _objects(doc, "mount")["/"]["facts"]
    assert root["idmapped"] and root["layers"] and all(x["exists"] for x in root["layers"])
    _run_checks(doc)
    k("rm", "-f", "ex-userns")


def test_what_the_kernel_lacks_is_reported_not_assumed(k: Kobako):
    port = free_port()
    k("run", "-d", "--name", "ex-broken", "-p", f"127.0.0.1:{port}:80", "--network", NET, IMG, "sleep", "600")
    doc = _explain(k, "ex-broken")
    ep = _objects(doc, "network")[NET]["facts"]
    table = list(_objects(doc, "nftables").values())[0]["facts"]["table"]
    # what a kill -9 or a stray hand leaves: the veth gone, the published port's element gone
    subprocess.run(["ip", "link", "del", ep["veth"]], check=True)
    subprocess.run(["nft", "delete", "element", "inet", table, "dnat_ip",
                    f"{{ 127.0.0.1 . tcp . {port} }}"], check=True)
    doc = _explain(k, "ex-broken")
    net = _objects(doc, "network")[NET]
    assert any(f"veth {ep['veth']} does not exist" in p for p in net["problems"])
    assert "not on the host" in net["summary"] and "master" not in net["summary"]
    nft = list(_objects(doc, "nftables").values())[0]
    assert any(f"tcp . {port}" in p for p in nft["problems"])
    text = k("explain", "ex-broken").stdout
    assert f"! veth {ep['veth']} does not exist" in text and "problem(s)" in text
    k("rm", "-f", "ex-broken")


def test_a_container_that_is_not_running_and_one_that_does_not_exist(k: Kobako):
    k("create", "--name", "ex-idle", "--network", NET, IMG, "true")
    doc = _explain(k, "ex-idle")
    assert doc["pid"] is None and doc["state"] == "created" and "only while it runs" in doc["note"]
    kernel = _objects(doc, "kernel")["objects"]
    assert kernel["facts"]["leftovers"] == [] and kernel["problems"] == []
    files = _objects(doc, "files")
    assert os.path.isdir(files["state"]["facts"]["upper dir (its changes)"])
    assert all(x["exists"] for x in files["image layers"]["facts"]["layers"])
    assert not _objects(doc, "namespace") and not _objects(doc, "cgroup")
    text = k("explain", "ex-idle").stdout
    assert "Not running" in text and "kobako start ex-idle" in text
    k("rm", "ex-idle")
    assert_user_error(k("explain", "ex-nothing", check=False), "no such container", "ex-nothing")
    assert_user_error(k("explain", "--format", "yaml", "ex-nothing", check=False))
