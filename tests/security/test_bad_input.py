"""Hostile or broken input: one clear error line, a non-zero exit, no traceback,
and nothing left behind (state dir, cgroup, mount, process)."""

from __future__ import annotations

import os
import shutil

import pytest
import support

pytestmark = pytest.mark.root


def _processes_mentioning(text: str) -> list[int]:
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                if text.encode() in f.read() and support.pid_alive(int(name)):
                    out.append(int(name))
        except OSError:
            pass
    return out


def _nothing_left(runtime, cid: str, b) -> None:
    assert not (runtime.root / cid).exists(), f"state dir of {cid} left behind"
    if "/" not in cid:
        assert support.cgroup_dirs(cid) == [], f"cgroup left behind: {support.cgroup_dirs(cid)}"
    leaked = [x for x in support.mountinfo_lines() if str(b.path) in x]
    assert leaked == [], f"mounts left behind: {leaked}"
    support.wait_for(lambda: not _processes_mentioning(cid), timeout=5,
                     what=f"processes of {cid} to go: {_processes_mentioning(cid)}")


# Each breaker changes a good bundle and returns the id to use (or None: a fresh one),
# plus words the error line must contain.


def malformed_config(b, hostdir):
    (b.path / "config.json").write_text('{"ociVersion": "1.0.2", "process": {')
    return None, ("config.json",)


def config_not_an_object(b, hostdir):
    (b.path / "config.json").write_text("[]")
    return None, ("config.json",)


def missing_config(b, hostdir):
    (b.path / "config.json").unlink()
    return None, ("config.json",)


def missing_rootfs(b, hostdir):
    shutil.rmtree(b.rootfs)
    return None, ("rootfs",)


def unknown_namespace(b, hostdir):
    b.config["linux"]["namespaces"].append({"type": "bogusns"})
    b.write()
    return None, ("bogusns",)


def id_with_slash(b, hostdir):
    return "kt-a/b", ("kt-a/b",)


def id_with_dotdot(b, hostdir):
    return "../escape", ()


def id_with_spaces(b, hostdir):
    return "kt with spaces", ()


def missing_program(b, hostdir):
    b.config["process"]["args"] = ["/no/such/program"]
    b.write()
    return None, ("/no/such/program",)


def missing_program_in_path(b, hostdir):
    b.config["process"]["args"] = ["nosuchprogram"]
    b.write()
    return None, ("nosuchprogram",)


def program_not_executable(b, hostdir):
    (b.rootfs / "notexec").write_text("#!/bin/sh\necho hi\n")
    b.config["process"]["args"] = ["/notexec"]
    b.write()
    return None, ("/notexec",)


def failing_hook(b, hostdir):
    hook = support.write_script(hostdir("hook") / "no.sh", "exit 1\n")
    b.add_hook("createRuntime", str(hook))
    return None, ("createRuntime",)


def missing_hook(b, hostdir):
    b.add_hook("prestart", "/no/such/hook")
    return None, ("/no/such/hook",)


def unknown_capability(b, hostdir):
    b.config["process"]["capabilities"]["bounding"].append("CAP_MAKE_COFFEE")
    b.write()
    return None, ("CAP_MAKE_COFFEE",)


def relative_mount_destination(b, hostdir):
    b.config["mounts"].append({"destination": "relative", "type": "tmpfs", "source": "tmpfs"})
    b.write()
    return None, ("relative",)


def missing_bind_source(b, hostdir):
    b.add_bind("/no/such/source/dir", "/data")
    return None, ("/no/such/source/dir",)


def unknown_filesystem_type(b, hostdir):
    """Fails late: after the namespaces and the first mounts exist."""
    b.config["mounts"].append({"destination": "/late", "type": "nosuchfs", "source": "x"})
    b.write()
    return None, ("/late",)


def cwd_is_a_file(b, hostdir):
    b.config["process"]["cwd"] = "/etc/passwd"
    b.write()
    return None, ("/etc/passwd",)


def bad_sysctl(b, hostdir):
    b.config["linux"]["sysctl"] = {"kernel.no_such_sysctl": "1"}
    b.write()
    return None, ("kernel.no_such_sysctl",)


def host_wide_sysctl(b, hostdir):
    # kernel.panic belongs to no namespace: writing it in the container would change the host's
    b.config["linux"]["sysctl"] = {"kernel.panic": "7"}
    b.write()
    return None, ("kernel.panic", "namespace")


def sysctl_name_climbing_out(b, hostdir):
    b.config["linux"]["sysctl"] = {"net/../../kernel/panic": "7"}
    b.write()
    return None, ("sysctl",)


def user_ns_without_mappings(b, hostdir):
    support.add_namespace(b.config, "user")
    b.write()
    return None, ()


def bad_rlimit(b, hostdir):
    b.config["process"]["rlimits"] = [{"type": "RLIMIT_BOGUS", "soft": 1, "hard": 1}]
    b.write()
    return None, ("RLIMIT_BOGUS",)


def rlimit_above_hard(b, hostdir):
    b.config["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 2000, "hard": 1000}]
    b.write()
    return None, ("RLIMIT_NOFILE",)


def namespace_path_missing(b, hostdir):
    b.config["linux"]["namespaces"] = [n for n in b.config["linux"]["namespaces"] if n["type"] != "network"]
    b.config["linux"]["namespaces"].append({"type": "network", "path": "/proc/999999999/ns/net"})
    b.write()
    return None, ()


def hostname_too_long(b, hostdir):
    b.config["hostname"] = "h" * 65  # the kernel's limit is 64
    b.write()
    return None, ("hostname",)


def namespace_path_not_a_namespace(b, hostdir):
    """Fails in the init before anything else: its error must reach the user intact."""
    b.config["linux"]["namespaces"] = [n for n in b.config["linux"]["namespaces"] if n["type"] != "network"]
    b.config["linux"]["namespaces"].append({"type": "network", "path": "/etc/hostname"})
    b.write()
    return None, ("/etc/hostname",)


def uid_out_of_range(b, hostdir):
    b.config["process"]["user"] = {"uid": 2**32, "gid": 0}
    b.write()
    return None, ("uid",)


def negative_gid(b, hostdir):
    b.config["process"]["user"] = {"uid": 0, "gid": -5}
    b.write()
    return None, ("gid",)


def nul_byte_in_args(b, hostdir):
    b.config["process"]["args"] = ["sh", "-c", "echo a\x00b"]
    b.write()
    return None, ()


def nul_byte_in_env(b, hostdir):
    b.config["process"]["env"] = ["PATH=/bin", "A=b\x00c"]
    b.write()
    return None, ()


def capabilities_not_a_list(b, hostdir):
    b.config["process"]["capabilities"]["bounding"] = "CAP_KILL"
    b.write()
    return None, ("bounding",)


def bad_mount_data(b, hostdir):
    b.config["mounts"].append({"destination": "/sized", "type": "tmpfs", "source": "tmpfs",
                               "options": ["size=notanumber"]})
    b.write()
    return None, ("/sized",)


def cgroups_path_with_dotdot(b, hostdir):
    b.config["linux"]["cgroupsPath"] = "/kobako/../../escape-" + support.SESSION.tag
    b.write()
    return None, ()


BREAKERS = [malformed_config, config_not_an_object, missing_config, missing_rootfs, unknown_namespace,
            id_with_slash, id_with_dotdot, id_with_spaces, missing_program, missing_program_in_path,
            program_not_executable, failing_hook, missing_hook, missing_bind_source, unknown_filesystem_type,
            cwd_is_a_file, bad_sysctl, host_wide_sysctl, user_ns_without_mappings, bad_rlimit,
            rlimit_above_hard, namespace_path_missing, hostname_too_long, namespace_path_not_a_namespace,
            uid_out_of_range, negative_gid,
            nul_byte_in_args, nul_byte_in_env, capabilities_not_a_list, bad_mount_data]
KOBAKO_ONLY = {  # stricter than runc 1.1, which only warns or cleans up
    cgroups_path_with_dotdot: "runc cleans the path instead of refusing it",
    unknown_capability: "runc 1.1 ignores unknown capabilities with a warning",
    relative_mount_destination: "runc 1.1 accepts a relative destination with a warning",
    sysctl_name_climbing_out: "runc 1.1 reads '/' in a sysctl name as '.'",
}


# Errors runc itself only finds at `start` (execve's arguments): create may succeed,
# and then start must fail cleanly. Every other breaker must fail create itself.
DEFERRABLE = {nul_byte_in_args, nul_byte_in_env}


@pytest.mark.parametrize("verb", ["create", "run"])
@pytest.mark.parametrize("breaker", BREAKERS + list(KOBAKO_ONLY), ids=lambda f: f.__name__)
def test_bad_input_fails_cleanly(runtime, bundle, hostdir, verb, breaker):
    if breaker in KOBAKO_ONLY:
        support.lacks("runc crun", KOBAKO_ONLY[breaker])
    b = bundle(["sh", "-c", "echo PROGRAM-RAN"])
    cid, words = breaker(b, hostdir)
    cid = cid or runtime.new_id(breaker.__name__.replace("_", ""))
    before = os.listdir(runtime.root)
    cp = runtime(verb, "--bundle", b.path, cid)
    if verb == "create" and breaker in DEFERRABLE and cp.returncode == 0:
        st = runtime("start", cid)
        if runtime.is_kobako or st.returncode != 0:  # runc 1.1's start does not wait for execve
            support.assert_clean_error(st, *words)
        runtime.ok("delete", "--force", cid)
        _nothing_left(runtime, cid, b)
        return
    line = support.assert_clean_error(cp, *words)
    assert "Broken pipe" not in line, "the init's own error was lost"
    if breaker is capabilities_not_a_list:
        assert "'C'" not in line, "a string was taken for a list of one-letter names"
    assert "PROGRAM-RAN" not in cp.stdout
    assert os.listdir(runtime.root) == before
    _nothing_left(runtime, cid, b)
    if breaker in (host_wide_sysctl, sysctl_name_climbing_out):
        with open("/proc/sys/kernel/panic") as f:
            assert f.read().strip() != "7", "a container's sysctl changed the host's kernel.panic"
    if breaker is cgroups_path_with_dotdot:
        assert not [d for d in support.cgroup_walk() if "escape-" + support.SESSION.tag in d]


def test_id_already_taken(runtime, bundle):
    b = bundle(["sleep", "300"])
    cid = runtime.new_id("taken")
    runtime.create(cid, b)
    pid = runtime.state(cid)["pid"]
    cp = runtime("create", "--bundle", bundle(["true"]).path, cid)
    support.assert_clean_error(cp, cid)
    cp = runtime("run", "--bundle", bundle(["true"]).path, cid)
    support.assert_clean_error(cp, cid)
    st = runtime.state(cid)  # the first container is untouched
    assert st["status"] == "created" and st["pid"] == pid and support.pid_alive(pid)
    assert os.path.realpath(st["bundle"]) == os.path.realpath(b.path)
    runtime.ok("delete", cid)
    assert support.cgroup_dirs(cid) == []


@pytest.mark.parametrize("verb", ["start", "state", "kill", "delete", "pause", "resume", "ps", "exec"])
def test_commands_refuse_a_bad_id(runtime, verb):
    args = [verb, "../../etc"] + (["true"] if verb == "exec" else [])
    cp = runtime(*args)
    support.assert_clean_error(cp)


def test_start_of_unknown_container(runtime):
    cid = runtime.new_id("nostart")
    support.assert_clean_error(runtime("start", cid), cid)


def test_damaged_state_is_reported_not_crashed_on(runtime, bundle):
    support.lacks("runc crun", "the state file layout is the runtime's own")
    b = bundle(["sleep", "300"])
    cid = runtime.new_id("damaged")
    runtime.create(cid, b)
    pid = runtime.state(cid)["pid"]
    state = runtime.root / cid / "state.json"
    good = state.read_text()
    state.write_text("{garbage")
    try:
        support.assert_clean_error(runtime("state", cid))
        support.assert_clean_error(runtime("start", cid))
    finally:
        state.write_text(good)
    runtime.ok("delete", "--force", cid)
    support.wait_for(lambda: not support.pid_alive(pid), what="the init to die")
