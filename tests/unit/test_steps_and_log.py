"""Steps (the undo record) and Log (stderr, --log text/json)."""

from __future__ import annotations

import json

import pytest

from kobako.runtime.log import Log
from kobako.runtime.steps import Steps


def test_unwind_undoes_in_reverse_order():
    order = []
    s = Steps(Log())
    s.made("mkdir(2)", "a", lambda: order.append("a"))
    s.made("mount(2)", "b", lambda: order.append("b"))
    s.made("note", "no undo")
    s.made("unshare(2)", "c", lambda: order.append("c"))
    assert s.unwind() == []
    assert order == ["c", "b", "a"]
    assert s.unwind() == []  # nothing twice
    assert order == ["c", "b", "a"]


def test_unwind_runs_every_undo_and_collects_every_error():
    order = []

    def boom(name):
        def f():
            order.append(name)
            raise OSError(16, f"busy {name}")
        return f

    s = Steps(Log())
    s.made("p", "first", lambda: order.append("first"))
    s.made("p", "second", boom("second"))
    s.made("p", "third", boom("third"))
    errors = s.unwind()
    assert order == ["third", "second", "first"]
    assert len(errors) == 2
    assert "third" in errors[0] and "busy third" in errors[0]
    assert "second" in errors[1]


def test_forget_hands_objects_over():
    order = []
    s = Steps(Log())
    s.made("p", "a", lambda: order.append("a"))
    s.forget()
    s.made("p", "b", lambda: order.append("b"))
    assert s.unwind() == []
    assert order == ["b"]


def test_count_and_debug_trace(capfd):
    s = Steps(Log(debug=True), who="init")
    s.made("unshare(2)", "new namespaces")
    s.made("mount(2)", "proc at /proc", lambda: None)
    s.unwind()
    _, err = capfd.readouterr()
    assert s.count == 2
    assert "init step 1: unshare(2): new namespaces" in err
    assert "init step 2: mount(2): proc at /proc" in err
    assert "init undo: proc at /proc" in err


def test_no_trace_without_debug(capfd):
    s = Steps(Log())
    s.made("unshare(2)", "x", lambda: None)
    s.unwind()
    _, err = capfd.readouterr()
    assert err == ""


def test_log_error_goes_to_stderr_as_one_line(capfd):
    Log().error("it broke")
    _, err = capfd.readouterr()
    assert err == "kobako-runtime: it broke\n"


def test_log_json_file(tmp_path, capfd):
    p = tmp_path / "log.json"
    log = Log(str(p), "json", debug=True)
    log.error("bad thing")
    log.debug("a step")
    lines = [json.loads(x) for x in p.read_text().splitlines()]
    assert lines[0]["level"] == "error" and lines[0]["msg"] == "bad thing" and lines[0]["time"]
    assert lines[1]["level"] == "debug" and "a step" in lines[1]["msg"]
    _, err = capfd.readouterr()
    assert "bad thing" in err and "a step" not in err  # debug goes to the file only


def test_log_text_file(tmp_path):
    p = tmp_path / "log.txt"
    Log(str(p), "text").error('say "hi"')
    line = p.read_text().strip()
    assert line.startswith('time="') and "level=error" in line and 'msg="say \\"hi\\""' in line


def test_log_appends(tmp_path):
    p = tmp_path / "log.json"
    p.write_text('{"level":"info","msg":"before"}\n')
    Log(str(p), "json").error("after")
    assert [json.loads(x)["msg"] for x in p.read_text().splitlines()] == ["before", "after"]


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_log_unwritable_file_still_reports_on_stderr(tmp_path, capfd, fmt):
    Log(str(tmp_path / "no" / "such" / "dir" / "log"), fmt).error("still seen")
    _, err = capfd.readouterr()
    assert "still seen" in err
