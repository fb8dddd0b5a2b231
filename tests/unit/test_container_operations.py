"""The engine's container operations without a kernel: detach keys and frames, update's
checks and what it writes, log selection, exec configs, and the refusals of kill, rename,
prune, top and exec on a container that never ran."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from kobako import errors
from kobako.engine import execs, logs, processes, resources, stdio
from kobako.engine.lifecycle import Engine

REPO = Path(__file__).resolve().parents[2]


# -- stdio ------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, keys", [
    (None, b"\x10\x11"), ("", b"\x10\x11"), ("ctrl-x", b"\x18"), ("ctrl-P,ctrl-Q", b"\x10\x11"),
    ("a,ctrl-@", b"a\x00"), ("ctrl-\\", b"\x1c"),
])
def test_detach_keys_parse_as_dockers(spec, keys):
    assert stdio.parse_detach_keys(spec) == keys


@pytest.mark.parametrize("spec", ["ctrl-é", "ctrl-", "ctrl-ab", "foo", "ctrl-1"])
def test_bad_detach_keys_are_refused(spec):
    with pytest.raises(errors.InvalidArgument, match="detach keys"):
        stdio.parse_detach_keys(spec)


def test_the_detach_scanner_holds_a_partial_sequence_back_across_reads():
    s = stdio.DetachScanner(b"\x10\x11")
    assert s.feed(b"ab\x10") == (b"ab", False)  # ctrl-p may begin the sequence: held
    assert s.feed(b"x") == (b"\x10x", False)  # it did not: passed on with what followed
    assert s.feed(b"cd\x10") == (b"cd", False)
    assert s.feed(b"\x11 dropped") == (b"", True)
    assert stdio.DetachScanner(b"").feed(b"\x10\x11") == (b"\x10\x11", False)  # no keys: no detach


def test_a_frame_is_dockers_multiplexed_header():
    assert stdio.frame(2, b"err") == b"\x02\x00\x00\x00\x00\x00\x00\x03err"


# -- update -------------------------------------------------------------------------------------

@pytest.mark.parametrize("body, msg", [
    ({"Memory": 1024}, "Minimum memory limit"), ({"Memory": "1g"}, "must be an integer"),
    ({"Memory": 64 << 20, "MemorySwap": 32 << 20}, "memoryswap limit should be larger"),
    ({"MemoryReservation": 1}, "Minimum memory reservation"),
    ({"NanoCpus": 10**9, "CpuQuota": 50000}, "Conflicting options"),
    ({"NanoCpus": 10**6 * 10**9}, "Range of CPUs"), ({"CpuShares": -2}, "cannot be negative"),
    ({"BlkioWeight": 5}, "blkio weight"), ({"CpusetCpus": "1-0"}, "Invalid value"),
    ({"CpusetCpus": "0-100000"}, "not available"), ({"CpusetCpus": 3}, "must be a string"),
    ({"RestartPolicy": {"Name": "sometimes"}}, "invalid restart policy"),
    ({"RestartPolicy": {"Name": "always", "MaximumRetryCount": 3}}, "cannot be used"),
    ({"RestartPolicy": "always"}, "must be an object"), ({"PidsLimit": True}, "must be an integer"),
])
def test_update_checks_every_field(body, msg):
    with pytest.raises(errors.InvalidArgument, match=msg):
        resources.check(body)


def test_update_drops_zero_values_and_keeps_lifts():
    got = resources.check({"Memory": 0, "CpuShares": 0, "CpusetCpus": "", "PidsLimit": -1, "MemorySwap": -1,
                           "Unknown": 5, "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 2}})
    assert got == {"PidsLimit": -1, "MemorySwap": -1,
                   "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 2}}


def test_update_as_runtime_flags_and_into_the_spec():
    ch = {"Memory": -1, "MemorySwap": -1, "NanoCpus": 1_500_000_000, "PidsLimit": -1, "CpuShares": 512}
    flags = resources._runtime_flags(ch)
    assert flags[:4] == ["--memory", "-1", "--memory-swap", "-1"]
    assert "--cpu-quota" in flags and flags[flags.index("--cpu-quota") + 1] == "150000"
    assert flags[flags.index("--pids-limit") + 1] == "-1"
    res = {"memory": {"limit": 1 << 30, "swap": 1 << 31}, "pids": {"limit": 10}}
    resources._into_spec(res, ch)
    assert res["memory"] == {} and res["pids"] == {}  # lifted
    assert res["cpu"] == {"shares": 512, "period": 100000, "quota": 150000}


@pytest.fixture
def eng(tmp_path: Path) -> Engine:
    return Engine(str(tmp_path / "data"), str(tmp_path / "run"))


def _record(e: Engine, name: str, **extra) -> dict:
    rec = e.containers.create({"image": "sha256:x", "imageName": "img", "chainIds": [], "status": "created",
                               "created": "2026-01-01T00:00:00Z", **extra}, name)
    bundle = e.containers.path(rec["id"], "bundle")
    os.makedirs(bundle)
    with open(os.path.join(bundle, "config.json"), "w") as f:
        json.dump({"linux": {"resources": {"memory": {"limit": 400 << 20, "swap": 800 << 20}}}}, f)
    return e.containers.update(rec["id"], bundle=bundle)


def test_update_of_a_stopped_container_is_kept_for_its_next_start(eng: Engine):
    rec = _record(eng, "upd", hostConfig={"Memory": 400 << 20, "MemorySwap": 800 << 20, "Privileged": False})
    resources.update(eng, rec, {"Memory": 300 << 20, "CpuShares": 3,
                                "RestartPolicy": {"Name": "always", "MaximumRetryCount": 0}})
    after = eng.containers.get(rec["id"])
    always = {"Name": "always", "MaximumRetryCount": 0}
    assert after["hostConfig"] == {"Memory": 300 << 20, "MemorySwap": 800 << 20, "Privileged": False,
                                   "CpuShares": 3, "RestartPolicy": always}
    assert after["restartPolicy"] == {"Name": "always", "MaximumRetryCount": 0}
    with open(os.path.join(after["bundle"], "config.json")) as f:
        res = json.load(f)["linux"]["resources"]
    assert res["memory"] == {"limit": 300 << 20, "swap": 800 << 20} and res["cpu"] == {"shares": 3}
    with pytest.raises(errors.InvalidArgument, match="smaller than already set memoryswap"):
        resources.update(eng, after, {"Memory": 900 << 20})  # docker's rule: swap must follow
    with pytest.raises(errors.InvalidArgument):
        resources.update(eng, after, {"Memory": 1})
    assert eng.containers.get(rec["id"])["hostConfig"] == after["hostConfig"]  # nothing changed


def test_update_refuses_a_restart_policy_with_auto_remove(eng: Engine):
    rec = _record(eng, "auto", options={"autoRemove": True})
    with pytest.raises(errors.InvalidArgument, match="AutoRemove"):
        resources.update(eng, rec, {"RestartPolicy": {"Name": "always"}})


# -- logs ---------------------------------------------------------------------------------------

def test_log_selection_by_stream_time_and_tail(tmp_path: Path):
    lines = [("stdout", "a\n", "2026-01-01T00:00:01.5Z"), ("stderr", "b\n", "2026-01-01T00:00:02Z"),
             ("stdout", "c\n", "2026-01-01T00:00:03Z")]
    with open(tmp_path / "cid-json.log", "w") as f:
        for stream, text, t in lines:
            f.write(json.dumps({"log": text, "stream": stream, "time": t}) + "\n")
    t0 = logs.parse_time("2026-01-01T00:00:00Z")
    pick = lambda **kw: [x["log"] for x in logs.select(str(tmp_path), "cid", **kw)]  # noqa: E731
    assert pick() == ["a\n", "b\n", "c\n"]
    assert pick(streams=("stdout",)) == ["a\n", "c\n"]
    assert pick(until=t0 + 2) == ["a\n", "b\n"] and pick(until=t0 + 1) == []
    assert pick(since=t0 + 2) == ["b\n", "c\n"] and pick(tail=1) == ["c\n"] and pick(tail=0) == []
    assert logs.parse_tail("all") is None and logs.parse_tail("2") == 2
    assert logs.parse_bound("0", "until") is None and logs.parse_bound("12.5", "until") == 12.5
    with pytest.raises(errors.InvalidArgument):
        logs.parse_tail("ten")
    with pytest.raises(errors.InvalidArgument, match="until"):
        logs.parse_bound("soon", "until")


# -- exec, kill, rename, prune, top on containers that never ran ----------------------------------

@pytest.mark.parametrize("kw, msg", [
    ({"cmd": []}, "No exec command"), ({"cmd": ["x"], "workdir": "rel"}, "absolute"),
    ({"cmd": ["x"], "env": ["=v"]}, "environment"), ({"cmd": ["x"], "detach_keys": "nope"}, "detach keys"),
])
def test_exec_config_refuses_bad_input(kw, msg):
    with pytest.raises(errors.InvalidArgument, match=msg):
        execs.ExecConfig(**kw)


def test_operations_on_a_container_that_is_not_running_are_conflicts(eng: Engine):
    rec = _record(eng, "idle")
    with pytest.raises(errors.Conflict, match="is not running"):
        eng.kill(rec)
    with pytest.raises(errors.InvalidArgument, match="Invalid signal: NOPE"):
        eng.kill(rec, "NOPE")  # the signal is checked first, as dockerd's
    with pytest.raises(errors.Conflict, match="is not running"):
        execs.check_running(eng, rec)
    with pytest.raises(errors.Conflict, match="is not running"):
        processes.top(eng, rec)
    with pytest.raises(errors.Conflict, match="is not running"):
        eng.pause(rec)
    with pytest.raises(errors.Conflict, match="is not paused"):
        eng.unpause(rec)


def test_rename_refusals_and_its_event(eng: Engine):
    a, _ = _record(eng, "ra"), _record(eng, "rb")
    with pytest.raises(errors.Conflict, match="already in use"):
        eng.rename(a, "rb")
    with pytest.raises(errors.InvalidArgument, match="same name"):
        eng.rename(a, "/ra")
    with pytest.raises(errors.InvalidArgument, match="Invalid container name"):
        eng.rename(a, "a b")
    eng.rename(a, "/rc")
    assert eng.containers.get(a["id"])["name"] == "rc"
    from kobako.engine import events
    with open(events.path(eng.root)) as f:
        ev = [json.loads(x) for x in f][-1]
    assert ev["Action"] == "rename" and ev["Actor"]["Attributes"] == {"name": "rc", "image": "img",
                                                                      "oldName": "/ra"}


def test_prune_filters(eng: Engine):
    keep = _record(eng, "keep", labels={"keep": "1"})
    go = _record(eng, "go")
    with pytest.raises(errors.InvalidArgument, match="Invalid filter 'nope'"):
        eng.prune({"nope": ["x"]})
    assert eng.prune({"until": ["2025-01-01T00:00:00Z"]}) == ([], 0)  # both made after it
    removed, _ = eng.prune({"label!": ["keep"]})
    assert removed == [go["id"]] and eng.containers.get(keep["id"]) is not None
    assert eng.prune({"label": ["keep=1"]})[0] == [keep["id"]]


# -- the front ends call the engine ---------------------------------------------------------------

def test_no_api_endpoint_runs_the_cli():
    """No CLI in a subprocess either (test_layers.py checks the imports)."""
    for p in sorted((REPO / "kobako" / "api").glob("*.py")):
        text = p.read_text()
        assert "kobako.cli.main" not in text and "sys.executable" not in text, p.name


def test_a_child_error_of_a_kind_is_raised_as_that_kind():
    from kobako.storage.mounts import in_child

    def missing() -> None:
        raise errors.NotFound("no such file in the container: /x")

    with pytest.raises(errors.NotFound, match="no such file"):
        in_child(missing)
    assert in_child(lambda: (_ for _ in ()).throw(ValueError("plain"))) == "plain"


def test_split_frames_keeps_the_incomplete_rest():
    from kobako.engine import stdio
    buf = stdio.frame(stdio.STDOUT, b"out") + stdio.frame(stdio.STDERR, b"err") + stdio.frame(1, b"xyz")[:9]
    frames, rest = stdio.split_frames(buf)
    assert frames == [(1, b"out"), (2, b"err")] and rest == stdio.frame(1, b"xyz")[:9]
    assert stdio.split_frames(rest + b"yz") == ([(1, b"xyz")], b"")


# -- owners (records.py): who must be alive for a running record to be true -------------------

def test_an_owner_that_lives_is_not_gone():
    from kobako.engine.records import owner_gone, this_process
    assert owner_gone({"owner": this_process("run")}) is None
    assert owner_gone({}) is None  # a record of an older kobako: left as it is


def test_an_owner_whose_pid_was_reused_is_gone_and_says_who_it_was():
    from kobako.engine.records import owner_gone, this_process
    me = this_process("run")
    reused = {**me, "start": (me["start"] or 0) + 1}  # same PID, another process
    assert owner_gone({"owner": reused}) == (f"kobako run (pid {me['pid']}), which ran it, was killed: "
                                             "its exit code is unknown")
    assert "killed while it was starting" in owner_gone({"owner": reused}, ran=False)
    assert owner_gone({"owner": {**reused, "by": "monitor"}}).startswith("the container monitor (pid ")
    assert "before the monitor took it" in owner_gone({"owner": {**reused, "by": "start"}})


def test_a_record_whose_owner_is_gone_is_settled_by_state(tmp_path: Path, monkeypatch):
    """No runtime state, a dead owner: exited with 255 and why; with --rm, removed."""
    from kobako.engine.records import this_process
    e = Engine(str(tmp_path / "data"), str(tmp_path / "run"))
    monkeypatch.setattr(Engine, "event", lambda *a, **k: None)
    dead = {**this_process("run"), "start": -1}
    rec = e.containers.create({"status": "running", "owner": dead, "options": {}}, "orphan")
    assert e.state(rec) == "exited"
    assert rec["exitCode"] == 255 and "was killed" in rec["error"] and rec["finished"]
    assert e.containers.get(rec["id"])["status"] == "exited"
    gone = e.containers.create({"status": "running", "owner": dead, "options": {"autoRemove": True}}, "rm")
    assert e.state(gone) == "removing" and e.containers.get(gone["id"]) is None
    alive = e.containers.create({"status": "running", "owner": this_process("run"), "options": {}}, "mine")
    assert e.state(alive) == "exited" and e.containers.get(alive["id"])["status"] == "running"
