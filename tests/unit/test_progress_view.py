"""`kobako build`'s live view (cli/build.py _Live) drawn into a pipe and replayed by a tiny
terminal (cursor up, erase below, erase to the end of the line): what stays on screen."""

from __future__ import annotations

import os
import re

from kobako.cli import build as cli


def screen(data: str) -> list[str]:
    """The lines a terminal shows after `data` (the escapes the view uses)."""
    lines, r, c = [""], 0, 0
    for m in re.finditer(r"\x1b\[(\d*)([AJK])|\r|\n|[^\x1b\r\n]+", data):
        t = m.group(0)
        if t == "\r":
            c = 0
        elif t == "\n":
            r, c = r + 1, 0
            if r == len(lines):
                lines.append("")
        elif m.group(2) == "A":
            r = max(0, r - int(m.group(1) or 1))
        elif m.group(2) in ("J", "K"):
            lines[r] = lines[r][:c]
            if m.group(2) == "J":
                del lines[r + 1:]
        else:
            lines[r] = lines[r][:c].ljust(c) + t + lines[r][c + len(t):]
            c += len(t)
    return [ln.rstrip() for ln in lines if ln.strip()]


class Pipe:
    def __init__(self) -> None:
        self.r, self.w = os.pipe()
        os.set_blocking(self.r, False)
        self.data = b""

    def read(self) -> str:
        try:
            while chunk := os.read(self.r, 1 << 16):
                self.data += chunk
        except BlockingIOError:
            pass
        return self.data.decode()


def live(pipe: Pipe) -> cli._Live:
    v = cli._Live(pipe.w)
    v.TICK = 3600  # no timer redraws: the test draws by hand
    return v


def test_steps_window_and_final_lines():
    p = Pipe()
    v = live(p)
    v.step(1, 3, "FROM busybox")
    v.stream(" ---> abc\n")
    v.step_done()
    v.step(2, 3, "RUN  make   all")
    v.cached()
    v.step_done()
    v.step(3, 3, "RUN seq 10")
    v.stream("".join(f"n{i}\n" for i in range(1, 11)) + "partial")
    v._draw()
    shown = screen(p.read())
    assert shown[0].startswith(" => [1/3] FROM busybox") and shown[0].endswith("s")
    assert shown[1].startswith(" => CACHED [2/3] RUN make all")
    assert shown[2].startswith(" => [3/3] RUN seq 10")
    assert shown[3:] == [f" => => # n{i}" for i in range(6, 11)] + [" => => # partial"]  # 6 lines
    assert len(shown[0]) <= 79  # a pipe: 80 columns, one kept free
    v.stream("\n")
    v.step_done()
    v.aux("sha256:" + "1" * 64)
    v.stream("Successfully built 111111111111\nSuccessfully tagged x:1\n")
    v.close()
    shown = screen(p.read())
    assert [s.split("  ")[0] for s in shown[:3]] == [
        " => [1/3] FROM busybox", " => CACHED [2/3] RUN make all", " => [3/3] RUN seq 10"]
    assert shown[3].startswith(" => writing image sha256:1111") and shown[3].endswith("s")
    assert shown[4:] == ["Successfully built 111111111111", "Successfully tagged x:1"]
    assert not any("n10" in s for s in shown)  # the window went with its step


def test_a_failed_step_keeps_its_whole_tail():
    p = Pipe()
    v = live(p)
    v.step(1, 1, "RUN noisy")
    v.stream("".join(f"out {i}\n" for i in range(250)))
    v.stderr("last words")
    v.failed(RuntimeError("boom"))
    v.close()
    shown = screen(p.read())
    assert shown[0].startswith(" => ERROR [1/1] RUN noisy")
    assert shown[1:3] == ["------", " > [1/1] RUN noisy:"]
    assert shown[3] == "(50 earlier lines not shown)"  # the last KEEP = 200 lines, and the partial one
    assert shown[4] == "out 50" and shown[-3:] == ["out 249", "last words", "------"]


def test_program_output_is_made_plain_and_fits():
    assert cli._clean("\x1b[31mred\x1b[0m\tx") == "red     x"
    assert cli._clean("50%\r100%\r") == "100%"
    assert cli._clean("a\x07b\x1b]0;title\x07c\x9bd") == "abcd"
    assert cli._fit("日本語テキスト", 5) == "日本"  # two columns each
    assert cli._fit("abc", 5) == "abc"
    p = Pipe()
    v = live(p)
    v.step(1, 1, "RUN printf '\x1b[2J'")  # a Dockerfile's escapes do not reach the terminal
    v.close()
    assert "\x1b[2J" not in p.read()


def test_auto_is_plain_when_not_a_terminal(monkeypatch):
    monkeypatch.setattr(cli.sys.stdout, "isatty", lambda: False, raising=False)
    assert type(cli._printer("auto", False)) is cli._Printer
    assert type(cli._printer(None, False)) is cli._Printer
    assert cli._printer("plain", False).quiet is False
    assert cli._printer("tty", True).quiet is True  # -q wins
    v = cli._printer("tty", False)
    try:
        assert isinstance(v, cli._Live)
    finally:
        v.close()
