"""process.*: rlimits, the five capability sets, no_new_privs, user and groups,
umask, cwd, env; and the user and time namespaces."""

from __future__ import annotations

import os
import re

import pytest
import support
from support import cap_lines, cap_mask

pytestmark = pytest.mark.root


def run_ok(runtime, b) -> str:
    cp = runtime("run", "--bundle", b.path, runtime.new_id("proc"))
    assert cp.returncode == 0, f"exit {cp.returncode}: {cp.stderr}"
    return cp.stdout


def test_rlimits(runtime, bundle):
    b = bundle(["sh", "-c", "ulimit -n; ulimit -Hn; grep 'Max open files' /proc/self/limits"],
               edit={"process.rlimits": [{"type": "RLIMIT_NOFILE", "soft": 123, "hard": 456}]})
    lines = run_ok(runtime, b).splitlines()
    assert lines[0] == "123" and lines[1] == "456"
    assert lines[2].split()[3:5] == ["123", "456"]


def test_several_rlimits(runtime, bundle):
    b = bundle(["cat", "/proc/self/limits"], edit={"process.rlimits": [
        {"type": "RLIMIT_NOFILE", "soft": 200, "hard": 300},
        {"type": "RLIMIT_NPROC", "soft": 77, "hard": 88},
        {"type": "RLIMIT_CORE", "soft": 0, "hard": 0},
    ]})
    out = run_ok(runtime, b)
    assert re.search(r"^Max open files\s+200\s+300\s", out, re.M)
    assert re.search(r"^Max processes\s+77\s+88\s", out, re.M)
    assert re.search(r"^Max core file size\s+0\s+0\s", out, re.M)


BND = ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SETUID", "CAP_SETGID"]
PRM = ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
INH = ["CAP_NET_BIND_SERVICE"]
AMB = ["CAP_NET_BIND_SERVICE"]


def _caps(cfg, effective=PRM, permitted=PRM, uid=0):
    cfg["process"]["capabilities"] = {"bounding": BND, "effective": effective, "permitted": permitted,
                                      "inheritable": INH, "ambient": AMB}
    cfg["process"]["noNewPrivileges"] = True
    cfg["process"]["user"] = {"uid": uid, "gid": uid}


def test_capabilities_as_root(runtime, bundle):
    """root with no_new_privs: execve keeps exactly the configured sets
    (effective follows permitted for root, so they are configured equal)."""
    caps = cap_lines(run_ok(runtime, bundle(["cat", "/proc/self/status"], edit=_caps)))
    assert caps["CapBnd"] == cap_mask(BND), hex(caps["CapBnd"])
    assert caps["CapPrm"] == cap_mask(PRM), hex(caps["CapPrm"])
    assert caps["CapEff"] == cap_mask(PRM), hex(caps["CapEff"])
    assert caps["CapInh"] == cap_mask(INH), hex(caps["CapInh"])
    assert caps["CapAmb"] == cap_mask(AMB), hex(caps["CapAmb"])


def test_ambient_capabilities_reach_a_non_root_user(runtime, bundle):
    """uid 1000: after execve only the ambient set survives, into permitted and effective."""
    caps = cap_lines(run_ok(runtime, bundle(["cat", "/proc/self/status"],
                                            edit=lambda c: _caps(c, uid=1000))))
    assert caps["CapBnd"] == cap_mask(BND)
    assert caps["CapAmb"] == cap_mask(AMB)
    assert caps["CapInh"] == cap_mask(INH)
    assert caps["CapPrm"] == cap_mask(AMB)
    assert caps["CapEff"] == cap_mask(AMB)


def test_empty_capabilities(runtime, bundle):
    def edit(cfg):
        cfg["process"]["capabilities"] = {k: [] for k in ("bounding", "effective", "permitted",
                                                           "inheritable", "ambient")}

    caps = cap_lines(run_ok(runtime, bundle(["cat", "/proc/self/status"], edit=edit)))
    assert caps == {"CapInh": 0, "CapPrm": 0, "CapEff": 0, "CapBnd": 0, "CapAmb": 0}


def test_dropped_capability_is_enforced(runtime, bundle):
    """Without CAP_CHOWN root cannot chown a file it does not own... nor its own to another user."""
    def edit(cfg):
        cfg["process"]["capabilities"] = {k: ["CAP_KILL"] for k in ("bounding", "effective", "permitted")}

    b = bundle(["sh", "-c", "touch /tmp/f; chown 1234 /tmp/f 2>/dev/null && echo CHOWNED || echo refused"],
               edit=edit)
    assert run_ok(runtime, b).strip() == "refused"


def test_no_new_privileges(runtime, bundle):
    out = run_ok(runtime, bundle(["grep", "NoNewPrivs", "/proc/self/status"],
                                 edit={"process.noNewPrivileges": True}))
    assert out.split() == ["NoNewPrivs:", "1"]
    out = run_ok(runtime, bundle(["grep", "NoNewPrivs", "/proc/self/status"],
                                 edit={"process.noNewPrivileges": False}))
    assert out.split() == ["NoNewPrivs:", "0"]


def test_user_and_groups(runtime, bundle):
    b = bundle(["sh", "-c", "id -u; id -g; grep ^Groups: /proc/self/status"],
               edit={"process.user": {"uid": 1000, "gid": 1001, "additionalGids": [10, 20]}})
    lines = run_ok(runtime, b).splitlines()
    assert lines[0] == "1000" and lines[1] == "1001"
    assert sorted(lines[2].split()[1:]) == ["10", "20"]


def test_user_ids_are_all_set(runtime, bundle):
    b = bundle(["sh", "-c", "grep -E '^(Uid|Gid):' /proc/self/status"],
               edit={"process.user": {"uid": 1000, "gid": 1001}})
    lines = run_ok(runtime, b).splitlines()
    assert lines[0].split()[1:] == ["1000"] * 4
    assert lines[1].split()[1:] == ["1001"] * 4


def test_umask(runtime, bundle):
    b = bundle(["sh", "-c", "umask; touch /tmp/f; stat -c %a /tmp/f"],
               edit={"process.user": {"uid": 0, "gid": 0, "umask": 0o027}})
    lines = run_ok(runtime, b).split()
    assert lines[0] == "0027"
    assert lines[1] == "640"


def test_default_umask(runtime, bundle):
    assert run_ok(runtime, bundle(["sh", "-c", "umask"])).strip() == "0022"


def test_signal_dispositions_and_mask_are_clean(runtime, bundle):
    """The runtime (Python ignores SIGPIPE) must not pass ignored or blocked signals on."""
    out = run_ok(runtime, bundle(["grep", "-E", "^Sig(Ign|Blk):", "/proc/self/status"]))
    got = dict(x.split() for x in out.replace(":", "").splitlines())
    assert got == {"SigIgn": "0" * 16, "SigBlk": "0" * 16}, got


def test_exec_signal_dispositions_are_clean(runtime, running):
    cid, _, _ = running
    out = runtime.ok("exec", cid, "grep", "-E", "^Sig(Ign|Blk):", "/proc/self/status").stdout
    got = dict(x.split() for x in out.replace(":", "").splitlines())
    assert got == {"SigIgn": "0" * 16, "SigBlk": "0" * 16}, got


def test_a_pipeline_ends_on_sigpipe(runtime, bundle):
    """`yes | head` ends only if yes dies of SIGPIPE, the default disposition."""
    cp = runtime("run", "--bundle", bundle(["sh", "-c", "yes abcdefghi | head -c 2000000 | wc -c"]).path,
                 runtime.new_id("sigpipe"), timeout=20)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.strip() == "2000000"


def test_cwd(runtime, bundle):
    b = bundle(["sh", "-c", "pwd; readlink /proc/self/cwd"], edit={"process.cwd": "/tmp"})
    assert run_ok(runtime, b).split() == ["/tmp", "/tmp"]


def test_cwd_is_created_when_missing(runtime, bundle):
    b = bundle(["pwd"], edit={"process.cwd": "/work/dir"})
    cp = runtime("run", "--bundle", b.path, runtime.new_id("cwd"))
    # runc creates a missing cwd; failing cleanly would be acceptable too, a traceback is not
    if cp.returncode == 0:
        assert cp.stdout.strip() == "/work/dir"
    else:
        support.assert_clean_error(cp, "/work/dir")


def test_env(runtime, bundle):
    b = bundle(["sh", "-c", 'echo "$FOO|$EMPTY|$SPACED|$PATH"'],
               edit={"process.env": ["PATH=/bin:/usr/bin", "FOO=bar", "EMPTY=", "SPACED=a b  c"]})
    assert run_ok(runtime, b) == "bar||a b  c|/bin:/usr/bin\n"


def test_env_is_exactly_the_configured_one(runtime, bundle):
    b = bundle(["env"], edit={"process.env": ["PATH=/bin", "ONLY=this"]})
    env = dict(x.split("=", 1) for x in run_ok(runtime, b).splitlines())
    env.pop("HOME", None)  # runtimes add HOME, as runc does
    env.pop("PWD", None)
    env.pop("SHLVL", None)
    assert env == {"PATH": "/bin", "ONLY": "this"}
    assert "KOBAKO" not in run_ok(runtime, b)


def test_home_is_set(runtime, bundle):
    b = bundle(["sh", "-c", 'echo "$HOME"'], edit={"process.env": ["PATH=/bin"]})
    assert run_ok(runtime, b).strip() == "/root"


def test_args_are_passed_verbatim(runtime, bundle):
    b = bundle(["sh", "-c", 'for a in "$@"; do echo "[$a]"; done', "sh", "a b", "", "-n", "$HOME", "*"])
    assert run_ok(runtime, b) == "[a b]\n[]\n[-n]\n[$HOME]\n[*]\n"


# -- user namespace ------------------------------------------------------------------------------


def _userns(cfg):
    support.add_namespace(cfg, "user")
    cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    cfg["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]


def test_user_namespace_maps(runtime, bundle):
    b = bundle(["sh", "-c", "cat /proc/self/uid_map /proc/self/gid_map; id -u; id -g; echo $$"], edit=_userns)
    lines = [x.split() for x in run_ok(runtime, b).splitlines()]
    assert lines[0] == ["0", "100000", "65536"]
    assert lines[1] == ["0", "100000", "65536"]
    assert lines[2:] == [["0"], ["0"], ["1"]]


def test_a_new_user_namespace_joins_a_network_namespace_given_by_path(runtime, bundle):
    """The path namespace belongs to the host's user namespace: it is joined before the new
    user namespace is made (as runc does), which is how an engine's netns reaches a
    user-namespaced container."""
    import subprocess
    name = f"{support.SESSION.tag}-uns"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "add", "kbtva", "type", "veth", "peer", "name", "kbtvb"],
                       check=True)  # a mark to recognise this namespace by, from inside

        def edit(cfg: dict) -> None:
            _userns(cfg)
            cfg["linux"]["namespaces"] = [n for n in cfg["linux"]["namespaces"] if n["type"] != "network"]
            cfg["linux"]["namespaces"].append({"type": "network", "path": f"/run/netns/{name}"})
        b = bundle(["sh", "-c", "id -u; ip -o link"], edit=edit)
        out = run_ok(runtime, b)
        assert out.split()[0] == "0" and "kbtva" in out
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def test_user_namespace_root_is_unprivileged_on_the_host(runtime, bundle, hostdir):
    d = hostdir("uns")
    os.chmod(d, 0o777)
    b = bundle(["sh", "-c", "touch /shared/made-inside && echo ok"], edit=_userns)
    (b.rootfs / "shared").mkdir()  # the rootfs belongs to host root: the namespace's root cannot mkdir
    b.add_bind(d, "/shared")
    assert run_ok(runtime, b).strip() == "ok"
    st = os.stat(d / "made-inside")
    assert (st.st_uid, st.st_gid) == (100000, 100000)


def test_user_namespace_init_is_seen_with_host_ids(runtime, bundle):
    b = bundle(["sleep", "300"], edit=_userns)
    cid, pid = runtime.start_container(b, "uns")
    assert support.proc_status(pid, "Uid").split() == ["100000"] * 4
    assert os.readlink(f"/proc/{pid}/ns/user") != os.readlink("/proc/self/ns/user")


# -- time namespace ------------------------------------------------------------------------------


def test_time_namespace_offsets(runtime, bundle):
    support.lacks("runc", "time namespaces are runc 1.2+")
    ten_days = 86400 * 10

    def edit(cfg):
        support.add_namespace(cfg, "time")
        cfg["linux"]["timeOffsets"] = {"monotonic": {"secs": ten_days, "nanosecs": 0},
                                       "boottime": {"secs": ten_days, "nanosecs": 0}}

    out = run_ok(runtime, bundle(["sh", "-c", "cat /proc/self/timens_offsets; cut -d' ' -f1 /proc/uptime"],
                                 edit=edit))
    lines = out.splitlines()
    offsets = {x.split()[0]: x.split()[1:] for x in lines[:-1]}
    assert offsets["monotonic"] == [str(ten_days), "0"]
    assert offsets["boottime"] == [str(ten_days), "0"]
    with open("/proc/uptime") as f:
        host_uptime = float(f.read().split()[0])
    assert float(lines[-1]) >= ten_days
    assert float(lines[-1]) >= host_uptime + ten_days - 60


def test_time_namespace_without_offsets(runtime, bundle):
    support.lacks("runc", "time namespaces are runc 1.2+")
    out = run_ok(runtime, bundle(["sh", "-c", "readlink /proc/self/ns/time; cat /proc/self/timens_offsets"],
                                 edit=lambda c: support.add_namespace(c, "time")))
    lines = out.splitlines()
    assert lines[0] != os.readlink("/proc/self/ns/time")
    assert {x.split()[0]: x.split()[1] for x in lines[1:]} == {"monotonic": "0", "boottime": "0"}
