"""The six OCI hook kinds: each runs once, at its moment, with the state on stdin."""

from __future__ import annotations

import json
import os

import pytest
import support

pytestmark = pytest.mark.root

KINDS = ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"]
HOOK = """\
kind=$1; out=$2
echo "$@" >> "$out/$kind.argv"
echo "$kind" >> "$out/order"
cat > "$out/$kind.json"
echo "$HOOKVAR" > "$out/$kind.env"
"""


def hooked_bundle(bundle, hostdir, program: str, kinds=KINDS):
    d = hostdir("hooks")
    os.chmod(d, 0o777)
    host_hook = support.write_script(d / "hook.sh", HOOK)
    b = bundle(["sh", "-c", program])
    (b.rootfs / "hooklog").mkdir()
    support.write_script(b.rootfs / "hook.sh", HOOK)  # startContainer: resolved inside the container
    b.add_bind(d, "/hooklog")
    for kind in kinds:
        inside = kind == "startContainer"
        b.add_hook(kind, "/hook.sh" if inside else str(host_hook),
                   args=["hook", kind, "/hooklog" if inside else str(d)],
                   env=["PATH=/usr/sbin:/usr/bin:/sbin:/bin", f"HOOKVAR=env-of-{kind}"])
    return b, d


def test_all_six_hooks_run_once_in_order_with_the_state(runtime, bundle, hostdir):
    b, d = hooked_bundle(bundle, hostdir, "echo program >> /hooklog/order")
    cid = runtime.new_id("hooks")
    cp = runtime("run", "--bundle", b.path, cid)
    assert cp.returncode == 0, cp.stderr
    for kind in KINDS:
        argv = (d / f"{kind}.argv").read_text().splitlines() if (d / f"{kind}.argv").exists() else []
        assert len(argv) == 1, f"{kind} ran {len(argv)} times"
        where = "/hooklog" if kind == "startContainer" else str(d)
        assert argv[0] == f"{kind} {where}", f"{kind} got argv {argv[0]!r}"
        assert (d / f"{kind}.env").read_text().strip() == f"env-of-{kind}"
        st = json.loads((d / f"{kind}.json").read_text())
        assert st["id"] == cid, kind
        assert os.path.realpath(st["bundle"]) == os.path.realpath(b.path), kind
        assert st.get("ociVersion"), kind
        if kind != "poststop":
            assert isinstance(st["pid"], int) and st["pid"] > 0, f"{kind}: pid {st.get('pid')}"
    status = {k: json.loads((d / f"{k}.json").read_text())["status"] for k in KINDS}
    assert status["prestart"] in ("creating", "created")
    assert status["createRuntime"] in ("creating", "created")
    assert status["createContainer"] in ("creating", "created")
    assert status["startContainer"] in ("created", "running")
    early_poststart = support.runtime_name() == "runc"  # runc 1.1 runs it during create (fixed in 1.2)
    if not early_poststart:
        assert status["poststart"] == "running"
    assert status["poststop"] == "stopped"
    order = (d / "order").read_text().split()
    pos = {k: order.index(k) for k in order}
    assert pos["prestart"] < pos["createContainer"] and pos["createRuntime"] < pos["createContainer"]
    assert pos["createContainer"] < pos["startContainer"] < pos["program"]
    if not early_poststart:
        assert pos["startContainer"] < pos["poststart"]
    assert order[-1] == "poststop"


def test_hooks_pid_is_the_containers_init(runtime, bundle, hostdir):
    support.lacks("runc", "runc 1.1 runs poststart during create (fixed in 1.2)")
    b, d = hooked_bundle(bundle, hostdir, "sleep 300", kinds=["createRuntime", "poststart"])
    cid = runtime.new_id("hookpid")
    runtime.create(cid, b)
    pid = runtime.state(cid)["pid"]
    assert json.loads((d / "createRuntime.json").read_text())["pid"] == pid
    assert not (d / "poststart.json").exists()
    runtime.ok("start", cid)
    assert json.loads((d / "poststart.json").read_text())["pid"] == pid


def test_poststop_runs_at_delete(runtime, bundle, hostdir):
    b, d = hooked_bundle(bundle, hostdir, "exit 0", kinds=["poststop"])
    cid = runtime.new_id("poststop")
    runtime.create(cid, b)
    runtime.ok("start", cid)
    support.wait_for(lambda: runtime.status(cid) == "stopped", what="the program to exit")
    assert not (d / "poststop.json").exists()
    runtime.ok("delete", cid)
    st = json.loads((d / "poststop.json").read_text())
    assert st["id"] == cid and st["status"] == "stopped"
    assert len((d / "poststop.argv").read_text().splitlines()) == 1


def _failing(bundle, hostdir, kind, body="echo hook says no >&2; exit 3"):
    d = hostdir("fail")
    hook = support.write_script(d / "fail.sh", body)
    b = bundle(["sh", "-c", "echo PROGRAM-RAN"])
    b.add_hook(kind, str(hook))
    return b, d


@pytest.mark.parametrize("kind", ["createRuntime", "prestart", "createContainer"])
def test_failing_hook_fails_create_cleanly(runtime, bundle, hostdir, kind):
    b, _ = _failing(bundle, hostdir, kind)
    cid = runtime.new_id("hookfail")
    cp = runtime("create", "--bundle", b.path, cid)
    support.assert_clean_error(cp, kind)
    assert "PROGRAM-RAN" not in cp.stdout
    assert not (runtime.root / cid).exists()
    assert support.cgroup_dirs(cid) == []
    assert not [x for x in support.mountinfo_lines() if str(b.path) in x]
    assert runtime("state", cid).returncode != 0


def test_failing_hook_fails_run_cleanly(runtime, bundle, hostdir):
    b, _ = _failing(bundle, hostdir, "createRuntime")
    cid = runtime.new_id("hookfail")
    cp = runtime("run", "--bundle", b.path, cid)
    support.assert_clean_error(cp, "createRuntime")
    assert "PROGRAM-RAN" not in cp.stdout
    assert not (runtime.root / cid).exists()
    assert support.cgroup_dirs(cid) == []


def test_hook_timeout(runtime, bundle, hostdir):
    d = hostdir("slow")
    hook = support.write_script(d / "slow.sh", "exec sleep 30\n")
    b = bundle(["true"])
    b.add_hook("createRuntime", str(hook), timeout=1)
    cid = runtime.new_id("hookslow")
    cp = runtime("create", "--bundle", b.path, cid)
    support.assert_clean_error(cp)
    assert not (runtime.root / cid).exists()
    assert support.cgroup_dirs(cid) == []


def test_failing_poststop_hook_is_only_a_warning(runtime, bundle, hostdir):
    b, _ = _failing(bundle, hostdir, "poststop")
    cid = runtime.new_id("poststopfail")
    cp = runtime("run", "--bundle", b.path, cid)
    assert cp.returncode == 0, cp.stderr
    assert "PROGRAM-RAN" in cp.stdout
    assert "Traceback" not in cp.stderr
    assert not (runtime.root / cid).exists()
    assert support.cgroup_dirs(cid) == []


def test_failing_poststart_hook_is_only_a_warning(runtime, bundle, hostdir):
    support.lacks("runc", "runc 1.1 fails the container when poststart fails")
    b, _ = _failing(bundle, hostdir, "poststart")
    cid = runtime.new_id("poststartfail")
    cp = runtime("run", "--bundle", b.path, cid)
    assert cp.returncode == 0, cp.stderr
    assert "PROGRAM-RAN" in cp.stdout
    assert "Traceback" not in cp.stderr
