"""Healthcheck results as Docker counts them, and the log drivers' files (json-file with
rotation and compression, local, none) read back in order."""

from __future__ import annotations

import gzip
import json

import pytest

from kobako.engine import health, logs
from kobako.engine.jsonlog import JsonLog

S = health.SECOND


def _hc(**kw) -> dict:
    return {"Test": ["CMD-SHELL", "true"], **health.DEFAULTS, **kw}


def test_settings_fill_docker_defaults_and_none_disables():
    assert health.settings({"config": {"Healthcheck": {"Test": ["NONE"]}}}) is None
    assert health.settings({"config": {}}) is None
    got = health.settings({"config": {"Healthcheck": {"Test": ["CMD", "true"], "Interval": S}}})
    assert got == {"Test": ["CMD", "true"], "Interval": S, "Timeout": 30 * S, "StartPeriod": 0, "Retries": 3}
    assert health.command(["CMD-SHELL", "echo hi"]) == ["/bin/sh", "-c", "echo hi"]
    assert health.command(["CMD", "true", "x"]) == ["true", "x"]


def test_retries_failures_in_a_row_make_it_unhealthy_and_one_success_healthy():
    hc, h = _hc(Retries=2), health.starting()
    h = health.result(h, hc, 0, "a", "b", 1, "no", now=100)
    assert (h["Status"], h["FailingStreak"]) == ("starting", 1)
    h = health.result(h, hc, 0, "a", "b", 1, "no", now=101)
    assert (h["Status"], h["FailingStreak"]) == ("unhealthy", 2)
    h = health.result(h, hc, 0, "a", "b", 0, "ok", now=102)
    assert (h["Status"], h["FailingStreak"]) == ("healthy", 0)
    for i in range(7):
        h = health.result(h, hc, 0, str(i), "e", 0, "", now=103 + i)
    assert len(h["Log"]) == health.LOG_KEEP and h["Log"][-1]["Start"] == "6"


def test_failures_in_the_start_period_do_not_count():
    hc = _hc(Retries=1, StartPeriod=3 * S)
    h = health.result(health.starting(), hc, 100.0, "a", "b", 1, "", now=101.0)
    assert (h["Status"], h["FailingStreak"]) == ("starting", 0)
    h = health.result(h, hc, 100.0, "a", "b", 1, "", now=104.0)  # the period is over
    assert h["Status"] == "unhealthy"


def _write(log: JsonLog, n: int) -> None:
    for i in range(n):
        log.write("stdout", f"line {i}\n".encode())


def test_json_file_rotates_and_compresses_and_reads_back_in_order(tmp_path):
    rec = {"id": "c1", "logOptions": {"max-size": 200, "max-file": 3, "compress": "true"}}
    log = JsonLog.of_container(str(tmp_path), rec)
    _write(log, 40)
    log.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["c1-json.log", "c1-json.log.1.gz", "c1-json.log.2.gz"]
    with gzip.open(tmp_path / "c1-json.log.1.gz") as f:
        assert json.loads(f.readline())["stream"] == "stdout"
    got = [int(x["log"].split()[1]) for x in logs.entries(str(tmp_path), "c1")]
    assert got == sorted(got) and got[-1] == 39 and len(got) < 40  # the oldest rotated away


def test_local_and_none_drivers(tmp_path):
    log = JsonLog.of_container(str(tmp_path), {"id": "c2", "logOptions": {"driver": "local"}})
    assert (log.max_size, log.max_files, log.compress) == (20 << 20, 5, True)
    log.close()
    log = JsonLog.of_container(str(tmp_path), {"id": "c3", "logOptions": {"driver": "none"}})
    _write(log, 3)
    log.close()
    assert not (tmp_path / "c3-json.log").exists()


def test_one_big_write_rotates_between_messages(tmp_path):
    log = JsonLog.of_container(str(tmp_path), {"id": "c4", "logOptions": {"max-size": 300, "max-file": 2}})
    log.write("stdout", b"".join(b"%d\n" % i for i in range(100)))
    log.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c4-json.log", "c4-json.log.1"]
    assert (tmp_path / "c4-json.log").stat().st_size <= 300
    got = [int(x["log"]) for x in logs.entries(str(tmp_path), "c4")]
    assert got == list(range(got[0], 100))


def test_event_filters_as_docker_takes_them():
    from kobako.engine import events
    x = {"Type": "container", "Action": "health_status: healthy", "timeNano": 5 * 10**9,
         "Actor": {"ID": "abcdef" * 10, "Attributes": {"name": "web", "image": "busybox", "k": "v"}}}
    assert events.matches(x, {"event": ["health_status"]}) and events.matches(x, {"container": ["web"]})
    assert events.matches(x, {"container": ["abc"], "type": ["container"], "label": ["k=v"]})
    assert not events.matches(x, {"event": ["die"]}) and not events.matches(x, {"image": ["alpine"]})
    assert not events.matches(x, {"container": ["ab"]})  # too short to be an ID prefix
    assert events.matches(x, {}, since=4.0, until=6.0) and not events.matches(x, {}, since=5.5)


def test_go_durations():
    assert health.duration_ns("1m30s") == 90 * S and health.duration_ns("500ms") == S // 2
    assert health.duration_ns("1.5h") == 5400 * S and health.duration_ns("2µs") == 2000
    for bad, words in (("10", "missing unit"), ("5x", "a duration like"), ("", "a duration like")):
        with pytest.raises(ValueError, match=words):
            health.duration_ns(bad)
