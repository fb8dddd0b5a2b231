"""`kobako pull` on a terminal: run under a real pty from a registry on 127.0.0.1, its
output (rich's live region: lines rewritten in place with cursor moves) is replayed on a
small screen model, and the final screen must be docker's: `Pulling from`, one
`Pull complete` line per layer, `Digest:`, `Status:`, the name."""

from __future__ import annotations

import gzip
import json
import os
import pty
import select
import sys
from pathlib import Path

import pytest
import registry_support as rs

pytestmark = [pytest.mark.root, pytest.mark.skipif(rs.available() is not None,
                                                    reason=str(rs.available()))]
REPO = Path(__file__).resolve().parents[2]


def _two_layer_image(reg: rs.Registry, repo: str) -> list[str]:
    """An image of two layers of incompressible bytes (so downloads take a few reads);
    returns the layers' short IDs."""
    layers, diff_ids = [], []
    for i in range(2):
        tar = rs.make_layer({f"data{i}": os.urandom(3 << 20)})
        layers.append(gzip.compress(tar, mtime=0))
        diff_ids.append(rs.sha256(tar))
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/data0"]},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    digests = [reg.put_blob(repo, b) for b in layers]
    man = json.dumps({
        "schemaVersion": 2, "mediaType": rs.OCI_MANIFEST,
        "config": {"mediaType": rs.OCI_CONFIG, "digest": reg.put_blob(repo, config), "size": len(config)},
        "layers": [{"mediaType": rs.OCI_LAYER_GZIP, "digest": d, "size": len(b)}
                   for d, b in zip(digests, layers, strict=True)]}).encode()
    reg.put_manifest(repo, "1", man)
    return [d.split(":")[1][:12] for d in digests]


def screen(data: str, width: int = 100) -> list[str]:
    """What a terminal shows after `data`: printable text, CR, LF, and the CSI sequences
    rich's live region uses (cursor up/down/column, erase line; SGR and cursor show/hide
    ignored). Blank rows are left out."""
    rows: list[list[str]] = [[]]
    r = c = 0
    i = 0
    while i < len(data):
        ch = data[i]
        while len(rows) <= r:
            rows.append([])
        if ch == "\x1b" and data[i + 1:i + 2] == "[":
            j = i + 2
            while j < len(data) and not ("@" <= data[j] <= "~"):
                j += 1
            params, final = data[i + 2:j], data[j]
            n = int(params) if params.isdigit() else 1
            if final == "A":
                r = max(0, r - n)
            elif final == "B":
                r += n
            elif final == "G":
                c = n - 1
            elif final == "K":
                rows[r] = [] if params == "2" else rows[r][:c] if params in ("", "0") else rows[r]
            i = j + 1
            continue
        if ch == "\r":
            c = 0
        elif ch == "\n":
            r, c = r + 1, 0
        elif ch >= " ":
            row = rows[r]
            if len(row) <= c:
                row.extend(" " * (c - len(row) + 1))
            row[c] = ch
            c = min(c + 1, width - 1)
        i += 1
    return [s for s in ("".join(x).rstrip() for x in rows) if s]


def test_screen_model():
    # rich's refresh of a two-line region: back to its start, erase, rewrite
    assert screen("a: x\nb: y\r\x1b[2K\x1b[1A\x1b[2Ka: done\nb: done\n") == ["a: done", "b: done"]


def test_pull_on_a_terminal_ends_on_dockers_screen(tmp_path: Path):
    with rs.Registry() as reg:
        shorts = _two_layer_image(reg, "kbt/live")
        env = {**os.environ, "KOBAKO_ROOT": str(tmp_path / "data"), "KOBAKO_RUN": str(tmp_path / "run"),
               "KOBAKO_CONFIG": str(tmp_path / "config"), "TERM": "xterm", "COLUMNS": "100", "LINES": "40"}
        name = f"{reg.addr}/kbt/live:1"
        pid, fd = pty.fork()
        if pid == 0:  # the child: kobako on the pty
            os.chdir(REPO)
            os.execve(sys.executable, [sys.executable, "-m", "kobako.cli.main", "pull", name], env)
        out = b""
        while True:
            ready, _, _ = select.select([fd], [], [], 120)
            assert ready, "kobako pull gave no output for 120s"
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the child closed the pty
                break
            if not chunk:
                break
            out += chunk
        _, status = os.waitpid(pid, 0)
    text = out.decode()
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert "Traceback" not in text and "Error" not in text, text
    assert "\x1b[" in text  # it was the live view, not the plain lines
    final = screen(text)
    assert final == [
        "1: Pulling from kbt/live",
        *(f"{s}: Pull complete" for s in shorts),
        final[-3],
        f"Status: Downloaded newer image for {name}",
        name], "\n".join(final)
    assert final[-3].startswith("Digest: sha256:")
