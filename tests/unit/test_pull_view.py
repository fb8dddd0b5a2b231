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
