"""The container spec (engine/spec.py): Docker's create body checked field by field, the
CLI's flags turned into the same spec, the image's config merged under it, and the spec
planned into run options."""

from __future__ import annotations

import pytest

from kobako.cli import containers as cli
from kobako.cli.parser import parse
from kobako.engine import spec as specs
from kobako.engine.spec import ContainerSpec
from kobako.errors import InvalidArgument, NotFound


def test_zero_values_and_strslice():
    s = ContainerSpec.from_docker({"Image": "busybox", "Cmd": "echo hi"})
    assert s.config["Cmd"] == ["echo hi"] and s.config["Entrypoint"] is None
    assert s.host["ShmSize"] == 64 << 20 and s.host["MemorySwappiness"] is None
    assert s.host["LogConfig"] == {"Type": "json-file", "Config": {}}
    assert s.host["RestartPolicy"] == {"Name": "", "MaximumRetryCount": 0}
    assert set(specs.HOST) <= set(s.record()["hostConfig"])  # every field dockerd shows


@pytest.mark.parametrize("body, words", [
    ({"Image": "b", "HostConfig": {"Memory": "64m"}}, "HostConfig.Memory: expected an integer, got a string"),
    ({"Image": "b", "HostConfig": {"Privileged": 1}}, "HostConfig.Privileged"),
    ({"Image": "b", "Env": "A=1"}, "Config.Env"),
    ({"Image": "b", "HostConfig": {"Tmpfs": {"/t": 5}}}, "HostConfig.Tmpfs"),
    ({"Image": "b", "HostConfig": []}, "invalid HostConfig"),
    ({"Cmd": ["true"]}, "missing the Image"),
    ({"Image": "b", "HostConfig": {"LogConfig": {"Type": "splunk"}}}, "no log driver named 'splunk'"),
    ({"Image": "b", "HostConfig": {"LogConfig": {"Type": "json-file", "Config": {"max-sise": "1m"}}}},
     "unknown log opt 'max-sise'"),
    ({"Image": "b", "HostConfig": {"LogConfig": {"Config": {"max-file": "0"}}}}, "max-file"),
    ({"Image": "b", "HostConfig": {"RestartPolicy": {"Name": "sometimes"}}}, "invalid restart policy"),
    ({"Image": "b", "HostConfig": {"RestartPolicy": {"Name": "always", "MaximumRetryCount": 3}}},
     "maximum retry count"),
    ({"Image": "b", "HostConfig": {"AutoRemove": True, "RestartPolicy": {"Name": "always"}}}, "AutoRemove"),
    ({"Image": "b", "HostConfig": {"Memory": 1024}}, "minimum memory limit"),
    ({"Image": "b", "HostConfig": {"Memory": 64 << 20, "MemorySwap": 32 << 20}}, "memoryswap"),
    ({"Image": "b", "HostConfig": {"MemorySwappiness": 101}}, "swappiness"),
    ({"Image": "b", "HostConfig": {"Runtime": "kata"}}, "unknown runtime"),
    ({"Image": "b", "HostConfig": {"Isolation": "hyperv"}}, "isolation"),
    ({"Image": "b", "HostConfig": {"KernelMemory": 1 << 30}}, "kernel memory"),
    ({"Image": "b", "HostConfig": {"CpuRealtimeRuntime": 500}}, "real-time"),
    ({"Image": "b", "HostConfig": {"CpuCount": 2}}, "Windows only"),
    ({"Image": "b", "HostConfig": {"NanoCpus": 10**9, "CpuPeriod": 100000}}, "Nano CPUs"),
    ({"Image": "b", "HostConfig": {"DeviceCgroupRules": ["c 7 rwm"]}}, "device cgroup rule"),
    ({"Image": "b", "HostConfig": {"PidMode": "shared"}}, "PID mode"),
    ({"Image": "b", "HostConfig": {"UTSMode": "host"}, "Hostname": "x"}, "hostname"),
    ({"Image": "b", "Healthcheck": {"Test": ["SHELL", "true"]}}, "Healthcheck.Test"),
    ({"Image": "b", "Healthcheck": {"Test": ["CMD"]}}, "no command"),
    ({"Image": "b", "Healthcheck": {"Test": ["CMD", "true"], "Interval": 5}}, "1ms"),
    ({"Image": "b", "StopSignal": "SIGNOPE"}, "invalid signal"),
    ({"Image": "b", "Env": ["=x"]}, "environment variable"),
    ({"Image": "b", "NetworkingConfig": {"EndpointsConfig": {"a": {}, "b": {}}}}, "network endpoints"),
])
def test_bad_bodies_are_refused_with_the_field(body, words):
    with pytest.raises(InvalidArgument) as e:
        ContainerSpec.from_docker(body)
    assert words in str(e.value)


def test_known_values_are_kept():
    s = ContainerSpec.from_docker({"Image": "b", "Env": ["Foo", "A=1"], "StopTimeout": 25, "HostConfig": {
        "Isolation": "default", "Runtime": "runc", "Init": True, "GroupAdd": ["1000"], "UTSMode": "host",
        "DeviceCgroupRules": ["c 7:128 rwm"], "MemorySwappiness": 0, "CgroupnsMode": "private",
        "VolumeDriver": "foo", "LogConfig": {"Type": "json-file", "Config": {"max-file": "100"}}}})
    r = s.record()
    assert r["config"]["Env"] == ["Foo", "A=1"] and r["config"]["StopTimeout"] == 25
    for k, v in (("Isolation", "default"), ("Runtime", "runc"), ("Init", True), ("GroupAdd", ["1000"]),
                 ("UTSMode", "host"), ("DeviceCgroupRules", ["c 7:128 rwm"]), ("MemorySwappiness", 0),
                 ("CgroupnsMode", "private"), ("VolumeDriver", "foo")):
        assert r["hostConfig"][k] == v, k
    assert r["hostConfig"]["LogConfig"] == {"Type": "json-file", "Config": {"max-file": "100"}}


def _cli(*argv: str) -> ContainerSpec:
    args = parse(cli.COMMANDS["create"][0], list(argv))
    body, extra = cli._body(args)
    return ContainerSpec.from_docker(body, args.name, extra)


def test_cli_flags_and_docker_json_make_the_same_spec():
    flags = _cli("--name", "web", "-e", "A=1", "-l", "k=v", "-v", "/h:/c:ro", "-v", "/anon",
                 "-p", "127.0.0.1:8080:80", "-m", "64m", "--cpus", "0.5", "--restart", "on-failure:2",
                 "--add-host", "db:10.0.0.2", "--dns", "10.9.9.9", "--cap-add", "NET_ADMIN",
                 "--group-add", "audio", "--init", "--stop-timeout", "5", "--tmpfs", "/run:size=1m",
                 "--ulimit", "nofile=100:200", "--log-opt", "max-size=1m", "--health-cmd", "true",
                 "--health-interval", "1m30s", "--memory-swappiness", "10", "--link", "db:database",
                 "busybox", "echo", "hi")
    api = ContainerSpec.from_docker({
        "Image": "busybox", "Cmd": ["echo", "hi"], "Env": ["A=1"], "Labels": {"k": "v"},
        "Volumes": {"/anon": {}}, "ExposedPorts": {"80/tcp": {}}, "StopTimeout": 5,
        "Healthcheck": {"Test": ["CMD-SHELL", "true"], "Interval": 90 * 10**9},
        "HostConfig": {"Binds": ["/h:/c:ro"], "Memory": 64 << 20, "NanoCpus": 500_000_000,
                       "PortBindings": {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}]},
                       "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 2},
                       "ExtraHosts": ["db:10.0.0.2"], "Dns": ["10.9.9.9"], "CapAdd": ["NET_ADMIN"],
                       "GroupAdd": ["audio"], "Init": True, "Tmpfs": {"/run": "size=1m"},
                       "Ulimits": [{"Name": "nofile", "Soft": 100, "Hard": 200}],
                       "LogConfig": {"Type": "json-file", "Config": {"max-size": "1m"}},
                       "MemorySwappiness": 10, "Links": ["db:database"]}}, "web")
    assert flags.name == api.name == "web"
    for k in ("Image", "Cmd", "Env", "Labels", "Volumes", "ExposedPorts", "StopTimeout"):
        assert flags.config[k] == api.config[k], k
    assert flags.config["Healthcheck"]["Test"] == api.config["Healthcheck"]["Test"]
    assert flags.config["Healthcheck"]["Interval"] == api.config["Healthcheck"]["Interval"]
    for k in ("Binds", "Memory", "NanoCpus", "PortBindings", "RestartPolicy", "ExtraHosts", "Dns", "CapAdd",
              "GroupAdd", "Init", "Tmpfs", "Ulimits", "LogConfig", "MemorySwappiness", "Links"):
        assert flags.host[k] == api.host[k], k


@pytest.mark.parametrize("argv, words", [
    (("--health-interval", "10", "b"), "missing unit"),
    (("--health-interval", "5x", "b"), "duration"),
    (("--no-healthcheck", "--health-cmd", "true", "b"), "conflicts"),
    (("--cpus", "many", "b"), "--cpus"),
    (("--sysctl", "novalue", "b"), "NAME=VALUE"),
    (("--rm", "--restart", "always", "b"), "AutoRemove"),
])
def test_bad_flags(argv, words):
    with pytest.raises(InvalidArgument) as e:
        _cli(*argv)
    assert words in str(e.value)


def test_image_config_merged_under_the_container():
    s = ContainerSpec.from_docker({"Image": "b", "Env": ["B=2", "PATH=/x"], "Labels": {"a": "1"},
                                   "Healthcheck": {"Interval": 10**9}})
    specs.merge_image(s.config, {"Env": ["PATH=/usr/bin", "A=1", "B=1"], "Cmd": ["sh"], "User": "nobody",
                                 "WorkingDir": "/w", "Labels": {"a": "0", "b": "1"},
                                 "ExposedPorts": {"80/tcp": {}}, "StopSignal": "SIGQUIT",
                                 "Healthcheck": {"Test": ["CMD", "true"], "Interval": 5 * 10**9}})
    c = s.config
    assert c["Env"] == ["A=1", "B=2", "PATH=/x"] and c["Cmd"] == ["sh"] and c["User"] == "nobody"
    assert c["WorkingDir"] == "/w" and c["Labels"] == {"a": "1", "b": "1"} and c["StopSignal"] == "SIGQUIT"
    assert c["ExposedPorts"] == {"80/tcp": {}}
    assert c["Healthcheck"] == {"Test": ["CMD", "true"], "Interval": 10**9}
    s = ContainerSpec.from_docker({"Image": "b", "Entrypoint": ["/bin/true"]})
    specs.merge_image(s.config, {"Cmd": ["sh"], "Entrypoint": ["/init"]})
    assert s.config["Entrypoint"] == ["/bin/true"] and s.config["Cmd"] is None  # docker: no image Cmd


class _NoEngine:
    root = run_dir = "/nonexistent"


def test_plan_turns_fields_into_run_options():
    s = ContainerSpec.from_docker({"Image": "b", "Cmd": ["true"], "Env": ["Foo", "A=1"], "HostConfig": {
        "NetworkMode": "none", "Memory": 64 << 20, "MemorySwappiness": 0, "OomScoreAdj": 100,
        "CpuPeriod": 50000, "CpuQuota": 25000, "GroupAdd": ["1000"], "PidMode": "host",
        "DeviceCgroupRules": ["c 7:* rw"], "Binds": ["/tmp:/t:ro", "vol:/v"], "Tmpfs": {"/run": ""},
        "MaskedPaths": ["/proc/kcore"]}})
    o = specs.plan(_NoEngine(), s)
    assert o.env == ["A=1"]  # "Foo" has no value to give
    assert o.memory == 64 << 20 and o.memory_swappiness == 0 and o.oom_score_adj == 100
    assert (o.cpu_period, o.cpu_quota) == (50000, 25000) and o.group_add == ["1000"]
    assert "pid" in o.host_ns and o.device_rules == [("c", 7, -1, "rw")]
    assert o.binds == [("/tmp", "/t", True)] and o.volumes == [("vol", "/v", False)]
    assert o.tmpfs == [("/run", "")] and o.masked_paths == ["/proc/kcore"]
    bad = ContainerSpec.from_docker({"Image": "b", "Cmd": ["true"], "HostConfig": {
        "NetworkMode": "none", "Binds": ["v:/v"], "VolumeDriver": "foo"}})
    with pytest.raises(NotFound):
        specs.plan(_NoEngine(), bad)
    with pytest.raises(InvalidArgument):
        specs.plan(_NoEngine(), ContainerSpec.from_docker({"Image": "b", "HostConfig": {
            "NetworkMode": "none", "Mounts": [{"Type": "npipe", "Target": "/x"}]}}))


def test_bind_propagation_is_kept():
    s = ContainerSpec.from_docker({"Image": "b", "Cmd": ["true"], "HostConfig": {
        "NetworkMode": "none", "Binds": ["/tmp:/t:rw,rshared"],
        "Mounts": [{"Type": "bind", "Source": "/", "Target": "/host",
                    "BindOptions": {"Propagation": "rslave"}}]}})
    o = specs.plan(_NoEngine(), s)
    assert o.propagation == {"/t": "rshared", "/host": "rslave"}
    bad = ContainerSpec.from_docker({"Image": "b", "Cmd": ["true"], "HostConfig": {
        "NetworkMode": "none",
        "Mounts": [{"Type": "bind", "Source": "/", "Target": "/h", "BindOptions": {"Propagation": "up"}}]}})
    with pytest.raises(InvalidArgument):
        specs.plan(_NoEngine(), bad)


def test_container_list_orders_and_filters_as_docker_ps():
    from kobako.engine import views
    recs = [{"id": c * 64, "name": n, "created": f"2026-01-0{i}T00:00:00Z", "labels": {"k": n},
             "config": {"ExposedPorts": {"80/tcp": {}}} if n == "b" else {}}
            for i, (c, n) in enumerate((("a", "a"), ("b", "b"), ("c", "c")), start=1)]

    class Store:
        def resolve(self, ref):
            hit = [r for r in recs if ref in (r["name"], r["id"])]
            if not hit:
                raise NotFound(f"no such container: {ref}")
            return hit[0]

    class E:
        containers = Store()
    states = [(r, "exited") for r in recs]
    names = [r["name"] for r, _ in views.container_list(E(), states, {}, every=True)]
    assert names == ["c", "b", "a"]  # newest first
    assert [r["name"] for r, _ in views.container_list(E(), states, {"before": ["c"], "since": ["a"]},
                                                        every=True)] == ["b"]
    assert [r["name"] for r, _ in views.container_list(E(), states, {"expose": ["80"]}, every=True)] == ["b"]
    assert [r["name"] for r, _ in views.container_list(E(), states, {}, last=2)] == ["c", "b"]
    assert views.container_list(E(), states, {}) == []  # none running
    with pytest.raises(InvalidArgument, match="no such container"):
        views.container_list(E(), states, {"since": ["zz"]}, every=True)
    with pytest.raises(InvalidArgument):
        views.container_list(E(), states, {"status": ["sleeping"]})
