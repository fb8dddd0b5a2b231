"""config.json: id rules, validation before any step, and `spec` defaults."""

from __future__ import annotations

import copy
import json
import os

import pytest

from kobako.runtime import spec
from kobako.runtime.errors import RuntimeFailure


@pytest.mark.parametrize("cid", ["a", "abc", "A1", "a.b-c_d+e", "0", "x" * 1024, "-lead", "a..b"])
def test_check_id_accepts(cid):
    spec.check_id(cid)


@pytest.mark.parametrize("cid", ["", ".", "..", "a/b", "/", "a b", " a", "a\tb", "a:b", "a*b", "é",
                                 "a\nb", "x" * 1025, "a;b", "$(x)"])
def test_check_id_refuses(cid):
    with pytest.raises(RuntimeFailure, match="invalid container id"):
        spec.check_id(cid)


@pytest.fixture
def good(tmp_path):
    (tmp_path / "rootfs").mkdir()
    cfg = spec.default()
    return cfg, str(tmp_path)


def test_default_config_is_valid(good):
    cfg, bundle = good
    spec.validate(cfg, bundle)


def test_default_rootless_config_is_valid(tmp_path):
    (tmp_path / "rootfs").mkdir()
    spec.validate(spec.default(rootless=True), str(tmp_path))


def _fails(cfg, bundle, *words):
    with pytest.raises(RuntimeFailure) as e:
        spec.validate(cfg, bundle)
    msg = str(e.value)
    for w in words:
        assert w in msg, f"{w!r} not in {msg!r}"
    return msg


def test_missing_root_path(good):
    cfg, b = good
    del cfg["root"]["path"]
    _fails(cfg, b, "root.path")
    cfg["root"] = None
    _fails(cfg, b, "root.path")
    del cfg["root"]
    _fails(cfg, b, "root.path")


def test_missing_rootfs_dir(good):
    cfg, b = good
    cfg["root"]["path"] = "nothere"
    _fails(cfg, b, "nothere", "does not exist")


def test_rootfs_that_is_a_file(good):
    cfg, b = good
    open(os.path.join(b, "afile"), "w").close()
    cfg["root"]["path"] = "afile"
    _fails(cfg, b, "not a directory")


def test_absolute_root_path(good, tmp_path):
    cfg, b = good
    cfg["root"]["path"] = str(tmp_path / "rootfs")
    spec.validate(cfg, "/nonexistent-bundle")


def test_unknown_namespace_type(good):
    cfg, b = good
    cfg["linux"]["namespaces"].append({"type": "bogus"})
    _fails(cfg, b, "unknown namespace type", "bogus")


def test_duplicate_namespace(good):
    cfg, b = good
    cfg["linux"]["namespaces"].append({"type": "pid"})
    _fails(cfg, b, "'pid'", "twice")


def test_namespace_path_must_exist(good):
    cfg, b = good
    cfg["linux"]["namespaces"][1] = {"type": "network", "path": "/proc/nonexistent/ns/net"}
    _fails(cfg, b, "/proc/nonexistent/ns/net")


def test_user_namespace_without_mappings(good):
    cfg, b = good
    cfg["linux"]["namespaces"].append({"type": "user"})
    _fails(cfg, b, "uidMappings")
    cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    _fails(cfg, b, "gidMappings")
    cfg["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    spec.validate(cfg, b)


def test_joined_user_namespace_needs_no_mappings(good):
    cfg, b = good
    cfg["linux"]["namespaces"].append({"type": "user", "path": "/proc/self/ns/user"})
    spec.validate(cfg, b)


def test_mappings_without_user_namespace(good):
    cfg, b = good
    cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 1000, "size": 1}]
    _fails(cfg, b, "uidMappings", "no user namespace")


def test_mapping_fields_must_be_numbers(good):
    cfg, b = good
    cfg["linux"]["namespaces"].append({"type": "user"})
    cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": "1000", "size": 1}]
    cfg["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 1000, "size": 1}]
    _fails(cfg, b, "hostID")


def test_hostname_without_uts_namespace(good):
    cfg, b = good
    cfg["linux"]["namespaces"] = [n for n in cfg["linux"]["namespaces"] if n["type"] != "uts"]
    _fails(cfg, b, "hostname", "uts")
    cfg["hostname"] = ""
    spec.validate(cfg, b)


def test_time_offsets_need_a_time_namespace(good):
    cfg, b = good
    cfg["linux"]["timeOffsets"] = {"monotonic": {"secs": 1}}
    _fails(cfg, b, "time namespace")
    cfg["linux"]["namespaces"].append({"type": "time"})
    spec.validate(cfg, b)
    cfg["linux"]["timeOffsets"] = {"realtime": {"secs": 1}}
    _fails(cfg, b, "realtime")


@pytest.mark.parametrize("kind", ["bounding", "effective", "permitted", "inheritable", "ambient"])
def test_bad_capability_name(good, kind):
    cfg, b = good
    cfg["process"]["capabilities"][kind] = ["CAP_CHOWN", "CAP_NOT_A_CAP"]
    _fails(cfg, b, "CAP_NOT_A_CAP", kind)


def test_capability_names_without_prefix_are_accepted(good):
    cfg, b = good
    cfg["process"]["capabilities"]["bounding"] = ["chown", "CAP_KILL"]
    spec.validate(cfg, b)


def test_bad_rlimit_type(good):
    cfg, b = good
    cfg["process"]["rlimits"] = [{"type": "RLIMIT_BOGUS", "soft": 1, "hard": 1}]
    _fails(cfg, b, "RLIMIT_BOGUS")


def test_rlimit_values_must_be_numbers(good):
    cfg, b = good
    cfg["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": "many", "hard": 1}]
    _fails(cfg, b, "soft")


def test_relative_mount_destination(good):
    cfg, b = good
    cfg["mounts"].append({"destination": "relative/x", "type": "tmpfs", "source": "tmpfs"})
    _fails(cfg, b, "relative/x", "absolute")


def test_mount_without_destination(good):
    cfg, b = good
    cfg["mounts"].append({"type": "tmpfs", "source": "tmpfs"})
    _fails(cfg, b, "destination")


def test_mount_options_must_be_a_list(good):
    cfg, b = good
    cfg["mounts"].append({"destination": "/x", "type": "tmpfs", "options": "ro"})
    _fails(cfg, b, "options")


def test_unknown_hook_kind(good):
    cfg, b = good
    cfg["hooks"] = {"preStart": [{"path": "/bin/true"}]}
    _fails(cfg, b, "preStart")


def test_relative_hook_path(good):
    cfg, b = good
    cfg["hooks"] = {"prestart": [{"path": "bin/true"}]}
    _fails(cfg, b, "bin/true", "absolute")


def test_hook_that_is_not_an_object(good):
    cfg, b = good
    cfg["hooks"] = {"poststop": ["/bin/true"]}
    _fails(cfg, b, "poststop")


def test_all_six_hook_kinds_are_known(good):
    cfg, b = good
    cfg["hooks"] = {k: [{"path": "/bin/true"}] for k in ("prestart", "createRuntime", "createContainer",
                                                        "startContainer", "poststart", "poststop")}
    spec.validate(cfg, b)


@pytest.mark.parametrize("args", [[], None, "sh", ["sh", 1]])
def test_process_args_must_be_a_nonempty_string_list(good, args):
    cfg, b = good
    cfg["process"]["args"] = args
    _fails(cfg, b, "args")


def test_relative_cwd(good):
    cfg, b = good
    cfg["process"]["cwd"] = "tmp"
    _fails(cfg, b, "cwd")


def test_uid_must_be_a_number(good):
    cfg, b = good
    cfg["process"]["user"]["uid"] = "0"
    _fails(cfg, b, "uid")
    cfg["process"]["user"]["uid"] = True
    _fails(cfg, b, "uid")


def test_device_rules(good):
    cfg, b = good
    cfg["linux"]["devices"] = [{"path": "/dev/x", "type": "z", "major": 1, "minor": 1}]
    _fails(cfg, b, "unknown type")
    cfg["linux"]["devices"] = [{"path": "/etc/x", "type": "c", "major": 1, "minor": 1}]
    _fails(cfg, b, "/dev")


def test_unknown_rootfs_propagation(good):
    cfg, b = good
    cfg["linux"]["rootfsPropagation"] = "sideways"
    _fails(cfg, b, "sideways")


def test_linux_must_be_an_object(good):
    cfg, b = good
    cfg["linux"] = []
    _fails(cfg, b, "linux")


# -- load(): the file itself ----------------------------------------------------------------


def test_load_missing_config(tmp_path):
    with pytest.raises(RuntimeFailure, match="no config.json"):
        spec.load(str(tmp_path))


@pytest.mark.parametrize("text", ["{not json", "", "[1, 2]", '{"a": 1} trailing', "null"])
def test_load_malformed_config(tmp_path, text):
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(RuntimeFailure, match="malformed config.json"):
        spec.load(str(tmp_path))


def test_load_good_config_records_the_bundle(tmp_path):
    (tmp_path / "rootfs").mkdir()
    (tmp_path / "config.json").write_text(json.dumps(spec.default()))
    cfg = spec.load(str(tmp_path))
    assert cfg["_bundle"] == str(tmp_path)
    assert cfg["process"]["args"] == ["sh"]


# -- defaults -------------------------------------------------------------------------------


def test_default_shape():
    cfg = spec.default()
    assert cfg["ociVersion"]
    p = cfg["process"]
    assert p["terminal"] is True and p["args"] == ["sh"] and p["cwd"] == "/"
    assert p["user"] == {"uid": 0, "gid": 0}
    assert any(e.startswith("PATH=") for e in p["env"])
    assert p["noNewPrivileges"] is True
    for k in ("bounding", "effective", "permitted"):
        assert sorted(p["capabilities"][k]) == ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    assert cfg["root"] == {"path": "rootfs", "readonly": True}
    types = [n["type"] for n in cfg["linux"]["namespaces"]]
    assert sorted(types) == sorted(["pid", "network", "ipc", "uts", "mount", "cgroup"])
    dests = [m["destination"] for m in cfg["mounts"]]
    assert dests[0] == "/proc"
    for d in ("/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup"):
        assert d in dests
    assert dests.index("/dev") < dests.index("/dev/pts")
    assert "/proc/kcore" in cfg["linux"]["maskedPaths"]
    assert "/proc/sys" in cfg["linux"]["readonlyPaths"]
    assert cfg["hostname"]


def test_default_returns_a_fresh_dict_each_time():
    a = spec.default()
    a["process"]["capabilities"]["bounding"].append("CAP_SYS_ADMIN")
    assert "CAP_SYS_ADMIN" not in spec.default()["process"]["capabilities"]["bounding"]


def test_default_rootless_shape():
    cfg = spec.default(rootless=True)
    types = [n["type"] for n in cfg["linux"]["namespaces"]]
    assert "user" in types and "network" not in types
    assert cfg["linux"]["uidMappings"] == [{"containerID": 0, "hostID": os.getuid(), "size": 1}]
    assert cfg["linux"]["gidMappings"] == [{"containerID": 0, "hostID": os.getgid(), "size": 1}]
    assert "resources" not in cfg["linux"]
    sysm = [m for m in cfg["mounts"] if m["destination"] == "/sys"]
    assert len(sysm) == 1 and "rbind" in sysm[0]["options"] and "ro" in sysm[0]["options"]
    assert not any(m["destination"] == "/sys/fs/cgroup" for m in cfg["mounts"])
    pts = next(m for m in cfg["mounts"] if m["destination"] == "/dev/pts")
    assert "gid=5" not in pts["options"]


def test_rootless_default_does_not_change_the_rootful_one():
    before = copy.deepcopy(spec.default())
    spec.default(rootless=True)
    assert spec.default() == before


# -- values the kernel would refuse later: refused up front, as the design asks ----------------


@pytest.mark.parametrize("field,value", [("uid", 2**32), ("uid", -1), ("gid", 2**32), ("gid", -5)])
def test_ids_out_of_range(good, field, value):
    cfg, b = good
    cfg["process"]["user"][field] = value
    _fails(cfg, b, field)


@pytest.mark.parametrize("where", ["args", "env", "cwd"])
def test_nul_bytes_are_refused(good, where):
    cfg, b = good
    if where == "args":
        cfg["process"]["args"] = ["sh", "-c", "a\x00b"]
    elif where == "env":
        cfg["process"]["env"] = ["A=b\x00c"]
    else:
        cfg["process"]["cwd"] = "/tm\x00p"
    _fails(cfg, b, where)


def test_capability_set_must_be_a_list(good):
    cfg, b = good
    cfg["process"]["capabilities"]["bounding"] = "CAP_KILL"
    msg = _fails(cfg, b, "bounding")
    assert "'C'" not in msg


@pytest.mark.parametrize("key,namespaces", [
    ("net.ipv4.ip_forward", ["network"]), ("kernel.shmmax", ["ipc"]), ("fs.mqueue.msg_max", ["ipc"]),
    ("kernel.domainname", ["uts"])])
def test_namespaced_sysctls_pass(good, key, namespaces):
    cfg, bundle = good
    cfg["linux"]["namespaces"] = [{"type": t} for t in dict.fromkeys(["mount", "pid", "uts", *namespaces])]
    cfg["linux"]["sysctl"] = {key: "1"}
    spec.validate(cfg, bundle)


@pytest.mark.parametrize("key,namespaces,words", [
    ("kernel.panic", ["network", "ipc", "uts"], "not in a separate kernel namespace"),
    ("vm.swappiness", ["network", "ipc", "uts"], "not in a separate kernel namespace"),
    ("net.ipv4.ip_forward", ["ipc"], "host's network namespace"),
    ("kernel.shmmax", ["network"], "host's ipc namespace"),
    ("kernel.hostname", ["uts"], "hostname"),
    ("net.ipv4..x", ["network"], "invalid sysctl name"),
    ("net/../../kernel/panic", ["network"], "invalid sysctl name")])
def test_sysctls_outside_the_containers_namespaces_are_refused(key, namespaces, words):
    with pytest.raises(RuntimeFailure, match=words):
        spec.validate_sysctls({key: "1"}, {t: {"type": t} for t in namespaces})


def test_sysctl_with_the_hosts_own_network_namespace_by_path_is_refused():
    with pytest.raises(RuntimeFailure, match="host's network namespace"):
        spec.validate_sysctls({"net.ipv4.ip_forward": "1"},
                              {"network": {"type": "network", "path": "/proc/self/ns/net"}})
