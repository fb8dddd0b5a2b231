"""jsonfast must read and write what the json module does."""

from __future__ import annotations

import json
import math

import pytest

from kobako.runtime import jsonfast

SAMPLES = [
    {},
    [],
    {"a": 1, "b": [1, 2, {"c": None}], "d": True, "e": False},
    {"nested": {"deeper": {"deepest": [[[]]], "x": {"y": {"z": "w"}}}}},
    {"uni": "小箱 — ünïcødé ✓ \U0001f4e6", "esc": "quote\" back\\ nl\n tab\t nul\x00"},
    {"ints": [0, -1, 2**31, 2**63 + 1, -(2**70)], "floats": [0.5, -1.25e-7, 1e300, 3.141592653589793]},
    "a bare string",
    12345,
    None,
    [{"destination": "/proc", "type": "proc", "options": ["nosuid", "noexec"]}],
]


@pytest.mark.parametrize("obj", SAMPLES)
def test_round_trip(obj):
    assert jsonfast.loads(jsonfast.dumps(obj)) == obj


@pytest.mark.parametrize("obj", SAMPLES)
def test_dumps_matches_json_module(obj):
    assert jsonfast.dumps(obj) == json.dumps(obj, separators=(",", ":"))


@pytest.mark.parametrize("obj", SAMPLES)
def test_loads_reads_json_module_output(obj):
    assert jsonfast.loads(json.dumps(obj, indent=2, ensure_ascii=False)) == obj
    assert jsonfast.loads(json.dumps(obj)) == obj


def test_dumps_is_ascii():
    s = jsonfast.dumps({"k": "小箱"})
    assert s.isascii()
    assert json.loads(s) == {"k": "小箱"}


def test_loads_bytes_utf8_and_bom():
    data = json.dumps({"k": "ü小"}, ensure_ascii=False).encode()
    assert jsonfast.loads(data) == {"k": "ü小"}
    assert jsonfast.loads(b"\xef\xbb\xbf" + data) == {"k": "ü小"}


def test_loads_surrounding_whitespace():
    assert jsonfast.loads(" \n\t{\"a\": [1]}\r\n ") == {"a": [1]}


def test_numbers_have_json_types():
    v = jsonfast.loads('{"i": 10, "f": 10.0, "e": 1e2, "big": 123456789012345678901234567890}')
    assert type(v["i"]) is int and type(v["f"]) is float and type(v["e"]) is float
    assert v["big"] == 123456789012345678901234567890


def test_constants_like_json_module():
    v = jsonfast.loads("[NaN, Infinity, -Infinity]")
    assert math.isnan(v[0]) and v[1] == math.inf and v[2] == -math.inf


def test_duplicate_keys_last_wins_like_json_module():
    assert jsonfast.loads('{"a": 1, "a": 2}') == json.loads('{"a": 1, "a": 2}') == {"a": 2}


@pytest.mark.parametrize("bad", ['{"a": 1} x', "[1] [2]", "{} {}", "1 2", '"a" ,'])
def test_trailing_garbage_is_an_error(bad):
    with pytest.raises(ValueError):
        jsonfast.loads(bad)
    with pytest.raises(ValueError):
        json.loads(bad)


@pytest.mark.parametrize("bad", ["", "   ", "{", "[1,", '{"a" 1}', "{'a': 1}", "[1,]", "tru", "nul",
                                 '"unterminated', '{"a": 1,}', "01", "-", '"\\x"'])
def test_invalid_is_an_error(bad):
    with pytest.raises(ValueError):
        jsonfast.loads(bad)
    with pytest.raises(ValueError):
        json.loads(bad)


def test_invalid_utf8_is_an_error():
    with pytest.raises(ValueError):  # UnicodeDecodeError is a ValueError
        jsonfast.loads(b'{"a": "\xff"}')


def test_control_character_in_string_is_an_error():
    with pytest.raises(ValueError):
        jsonfast.loads('{"a": "x\ny"}')


def test_dumps_pretty_is_json():
    obj = {"a": [1, {"b": "c"}]}
    s = jsonfast.dumps_pretty(obj)
    assert "\n" in s and json.loads(s) == obj
