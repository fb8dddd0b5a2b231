"""docker pull's per-layer lines (kobako/cli/output.PullView) and its progress bar."""

from __future__ import annotations

import io

from kobako.cli.output import PullView, progress_bar


def test_plain_lines_one_per_status_and_no_byte_counts():
    out = io.StringIO()
    v = PullView(out)
    v.line("1: Pulling from kbt/bb")
    v.status("sha256:" + "a" * 64, "Pulling fs layer")
    v.status("sha256:" + "b" * 64, "Already exists")
    v.progress("sha256:" + "a" * 64, 10, 100)  # not on a terminal: not shown
    v.status("sha256:" + "a" * 64, "Download complete")
    v.status("sha256:" + "a" * 64, "Pull complete")
    v.close()
    assert out.getvalue().splitlines() == [
        "1: Pulling from kbt/bb", "aaaaaaaaaaaa: Pulling fs layer", "bbbbbbbbbbbb: Already exists",
        "aaaaaaaaaaaa: Download complete", "aaaaaaaaaaaa: Pull complete"]
    assert v.fetched


def test_quiet_prints_nothing_but_knows_whether_anything_was_fetched():
    out = io.StringIO()
    v = PullView(out, enabled=False)
    v.line("x")
    v.status("sha256:" + "b" * 64, "Already exists")
    assert out.getvalue() == "" and not v.fetched


def test_progress_bar_is_dockers():
    assert progress_bar(50, 100) == "[" + "=" * 24 + ">" + " " * 25 + "] 50B/100B"
    assert progress_bar(1_200_000, 3_400_000).endswith("] 1.2MB/3.4MB")
    assert progress_bar(0, 100).startswith("[" + " " * 50 + "]")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_line_before_the_layers_leaves_the_live_view_to_them():
    out = _Terminal()
    v = PullView(out)
    v.line_before("1: Pulling from kbt/bb")
    assert v.live is None  # not started before a layer has a line
    v.status("sha256:" + "a" * 64, "Pulling fs layer")
    assert v.live is not None  # the layers' lines are rewritten in place
    v.status("sha256:" + "a" * 64, "Pull complete")
    v.line("Digest: sha256:" + "0" * 64)  # ends the live region, for good
    assert v.live is None
    text = out.getvalue()
    assert text.startswith("1: Pulling from kbt/bb\n") and text.endswith("Digest: sha256:" + "0" * 64 + "\n")
    assert "aaaaaaaaaaaa: Pull complete" in text and "\x1b[" in text
