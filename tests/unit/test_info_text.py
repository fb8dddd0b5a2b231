"""`kobako info` in docker info's layout, from the GET /info document."""

from __future__ import annotations

import os

from kobako.cli.host import _client_info, info_text


class _Engine:
    def __init__(self, root: str) -> None:
        self.root = root

        class _Store:
            def all(self):
                return []
        self.containers = self.images = _Store()

    def state(self, rec):
        return "exited"


def test_info_text_is_dockers_layout_without_python_reprs(tmp_path):
    from kobako.engine.views import system_info
    doc = system_info(_Engine(str(tmp_path)))
    doc["Warnings"] = ["WARNING: No swap limit support"]
    text = info_text(doc, _client_info(doc))
    lines = text.splitlines()
    assert lines[0] == "Client:" and "Server:" in lines
    assert " Containers: 0" in lines and "  Running: 0" in lines and " Storage Driver: overlay2" in lines
    assert "  seccomp" in lines and "   Profile: builtin" in lines
    assert f" CPUs: {os.cpu_count()}" in lines and f" Docker Root Dir: {tmp_path}" in lines
    assert any(ln.startswith(" Total Memory: ") and ln.endswith("iB") for ln in lines)
    assert "  Log: json-file local" in lines  # the log drivers a container may use
    assert lines[-1] == "WARNING: No swap limit support" and lines[-2] == ""
    for bad in ("[", "{", "None", "True", "False"):  # no list, dict or bool reprs
        assert bad not in text, bad
