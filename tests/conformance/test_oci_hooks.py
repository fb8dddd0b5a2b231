"""OCI runtime-spec conformance: hooks (config.md#posix-platform-hooks, runtime.md#lifecycle).

One test per MUST that can be checked from outside the runtime. Where the spec is
silent, runc's behaviour is the reference.
"""

from __future__ import annotations

import json
import os

import oci_support
import pytest
import support

pytestmark = pytest.mark.root

HOST_KINDS = ["createRuntime", "prestart", "poststart", "poststop"]
# logs its kind and the state it got on stdin; a kind given as $3=fail exits 1
HOOK = """\
kind=$1; out=$2
echo "$kind" >> "$out/order"
cat > "$out/$kind.json"
[ "$3" = fail ] && exit 1
exit 0
"""


def hooked(bundle, hostdir, program, kinds=("createRuntime", "prestart", "createContainer", "startContainer",
                                             "poststart", "poststop"), fail=()):
    d = hostdir("hk")
    os.chmod(d, 0o777)
    host_hook = support.write_script(d / "hook.sh", HOOK)
    b = bundle(["sh", "-c", program])
    (b.rootfs / "hooklog").mkdir()
    support.write_script(b.rootfs / "hook.sh", HOOK)
    b.add_bind(d, "/hooklog")
    for kind in kinds:
        # only startContainer's path resolves in the container (createContainer's resolves
        # in the runtime namespace: config.md#createcontainer-hooks)
        inside = kind == "startContainer"
        args = ["hook.sh", kind, "/hooklog" if inside else str(d)]
        if kind in fail:
            args.append("fail")
        b.add_hook(kind, "/hook.sh" if inside else str(host_hook), args=args)
    return b, d


def order(d):
    p = d / "order"
    return p.read_text().split() if p.exists() else []


def test_hooks_run_in_lifecycle_order(runtime, bundle, hostdir):
    """runtime.md#lifecycle steps 4-13 + config.md#posix-platform-hooks: createRuntime and
    prestart run during create, before createContainer; startContainer runs at start
    before the program; poststart after the program started; poststop after delete."""
    b, d = hooked(bundle, hostdir,
                  "echo program >> /hooklog/order; while [ ! -e /hooklog/go ]; do sleep 0.05; done")
    cid = runtime.new_id("hkorder")
    runtime.create(cid, b)
    after_create = order(d)
    assert "createContainer" in after_create
    assert "startContainer" not in after_create and "program" not in after_create
    assert after_create.index("createRuntime") < after_create.index("createContainer")
    assert after_create.index("prestart") < after_create.index("createContainer")
    runtime.ok("start", cid)
    support.wait_for(lambda: "program" in order(d), what="the program")
    o = order(d)
    assert o.index("startContainer") < o.index("program")
    if support.runtime_name() != "runc":  # runc 1.1 runs poststart during create (fixed in 1.2)
        support.wait_for(lambda: "poststart" in order(d), what="poststart")
        assert order(d).index("startContainer") < order(d).index("poststart")
    assert "poststop" not in order(d)
    (d / "go").touch()
    support.wait_for(lambda: runtime.status(cid) == "stopped", what="stopped")
    assert "poststop" not in order(d), "poststop ran before delete"
    runtime.ok("delete", cid)
    assert order(d)[-1] == "poststop"


def test_hooks_get_the_state_on_stdin(runtime, bundle, hostdir):
    """config.md#posix-platform-hooks: hooks MUST be passed the container's state on
    stdin (ociVersion, id, status, pid, bundle)."""
    b, d = hooked(bundle, hostdir, "true", kinds=["createRuntime", "prestart", "poststop"])
    cid = runtime.new_id("hkstate")
    runtime.create(cid, b)
    pid = runtime.state(cid)["pid"]
    runtime.ok("start", cid)
    support.wait_for(lambda: runtime.status(cid) == "stopped", what="stopped")
    runtime.ok("delete", cid)
    for kind in ("createRuntime", "prestart", "poststop"):
        st = json.loads((d / f"{kind}.json").read_text())
        assert st["id"] == cid, kind
        assert st.get("ociVersion"), kind
        assert os.path.realpath(st["bundle"]) == os.path.realpath(b.path), kind
        assert st.get("status"), kind
        if kind != "poststop":
            assert st["pid"] == pid, kind
            assert st["status"] in ("creating", "created"), kind
    assert json.loads((d / "poststop.json").read_text())["status"] == "stopped"


def test_hooks_path_and_args(runtime, bundle, hostdir):
    """config.md#posix-platform-hooks: path is run with args as its argv (args[0] is the
    program's name, as execv's argv)."""
    d = hostdir("hkargs")
    script = support.write_script(d / "hook.sh", f'echo "$0|$1|$2" > {d}/argv\n')
    b = bundle(["true"])
    b.add_hook("createRuntime", str(script), args=["myname", "one", "two"])
    cid = runtime.new_id("hkargs")
    runtime.create(cid, b)
    assert (d / "argv").read_text().strip().split("|")[1:] == ["one", "two"]


def test_hooks_env(runtime, bundle, hostdir):
    """config.md#posix-platform-hooks: env is the hook's environment (execve's envp)."""
    d = hostdir("hkenv")
    script = support.write_script(d / "hook.sh", f'echo "$HOOKVAR" > {d}/env\n')
    b = bundle(["true"])
    b.add_hook("prestart", str(script), args=["hook.sh"], env=["HOOKVAR=the-value", "PATH=/bin:/usr/bin"])
    cid = runtime.new_id("hkenv")
    runtime.create(cid, b)
    assert (d / "env").read_text().strip() == "the-value"


@pytest.mark.parametrize("kind", ["prestart", "createRuntime"])
def test_a_failing_create_hook_fails_create_and_destroys_the_container(runtime, bundle, hostdir, kind):
    """runtime.md#lifecycle step 6: if a prestart/createRuntime hook fails the runtime
    MUST generate an error, stop the container, and continue at step 12 (delete): the
    program never runs and nothing of the container is left."""
    b, d = hooked(bundle, hostdir, "echo program >> /hooklog/order", kinds=[kind], fail=[kind])
    cid = runtime.new_id("hkfail")
    support.assert_clean_error(runtime("create", "--bundle", b.path, cid))
    assert "program" not in order(d)
    st = runtime("state", cid)
    assert st.returncode != 0 or json.loads(st.stdout)["status"] == "stopped", st.stdout
    runtime("delete", "--force", cid)
    assert oci_support.cgroup_dirs(cid) == []


def test_a_failing_prestart_hook_stops_the_later_hooks(runtime, bundle, hostdir):
    """runtime.md#lifecycle step 6: after a failing prestart hook the lifecycle goes on
    at step 12 — the createContainer and startContainer hooks never run."""
    b, d = hooked(bundle, hostdir, "true", kinds=["prestart", "createContainer", "startContainer"],
                  fail=["prestart"])
    cid = runtime.new_id("hkfail2")
    support.assert_clean_error(runtime("create", "--bundle", b.path, cid))
    assert "createContainer" not in order(d) and "startContainer" not in order(d)


def test_a_failing_poststart_hook_only_warns(runtime, bundle, hostdir):
    """runtime.md#lifecycle step 9: if a poststart hook fails the runtime MUST log a
    warning, but the remaining hooks and lifecycle continue: start succeeds and the
    container keeps running."""
    b, d = hooked(bundle, hostdir, "echo program >> /hooklog/order; sleep 300",
                  kinds=["poststart"], fail=["poststart"])
    cid = runtime.new_id("hkpoststart")
    cp = runtime("create", "--bundle", b.path, cid)
    assert cp.returncode == 0, f"create failed: {cp.stderr}"
    cp = runtime("start", cid)
    assert cp.returncode == 0, f"start failed: {cp.stderr}"
    support.wait_for(lambda: "program" in order(d), what="the program")
    assert runtime.status(cid) == "running"


def poststop_bundle(bundle, hostdir):
    d = hostdir("hkpoststop")
    bad = support.write_script(d / "bad.sh", "exit 1\n")
    good = support.write_script(d / "good.sh", f"touch {d}/second\n")
    b = bundle(["true"])
    b.add_hook("poststop", str(bad), args=["bad.sh"])
    b.add_hook("poststop", str(good), args=["good.sh"])
    return b, d


def test_a_failing_poststop_hook_does_not_fail_delete(runtime, bundle, hostdir):
    """runtime.md#lifecycle step 13: if a poststop hook fails the runtime MUST log a
    warning, but the lifecycle continues: delete succeeds and the container is gone."""
    b, d = poststop_bundle(bundle, hostdir)
    cid = runtime.new_id("hkpoststop")
    runtime.create(cid, b)
    runtime.ok("start", cid)
    support.wait_for(lambda: runtime.status(cid) == "stopped", what="stopped")
    cp = runtime("delete", cid)
    assert cp.returncode == 0, f"delete failed: {cp.stderr}"
    support.assert_clean_error(runtime("state", cid))


def test_a_failing_poststop_hook_does_not_stop_the_next_one(runtime, bundle, hostdir):
    """runtime.md#lifecycle step 13: if a poststop hook fails ... the remaining hooks
    continue as if it had succeeded: the next poststop hook still runs."""
    b, d = poststop_bundle(bundle, hostdir)
    cid = runtime.new_id("hkpoststop2")
    runtime.create(cid, b)
    runtime.ok("start", cid)
    support.wait_for(lambda: runtime.status(cid) == "stopped", what="stopped")
    runtime("delete", cid)
    assert (d / "second").exists(), "the poststop hook after the failing one did not run"


def test_hook_timeout_aborts_the_hook(runtime, bundle, hostdir):
    """config.md#posix-platform-hooks: timeout is the number of seconds before aborting
    the hook; a createRuntime hook past it fails create (as a failing hook does)."""
    d = hostdir("hktimeout")
    slow = support.write_script(d / "slow.sh", "exec sleep 30\n")
    b = bundle(["true"])
    b.add_hook("createRuntime", str(slow), args=["slow.sh"], timeout=1)
    cid = runtime.new_id("hktimeout")
    cp = runtime("create", "--bundle", b.path, cid, timeout=20)
    support.assert_clean_error(cp)
    runtime("delete", "--force", cid)
