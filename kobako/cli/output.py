"""Output the way the docker CLI prints it: aligned tables, human sizes and ages,
and `--format` with Go templates (kobako/cli/template.py), `table` and `json`."""

from __future__ import annotations

import sys

from kobako.engine.views import ago, parse_time  # noqa: F401 - re-exported for the CLI
from kobako.image.reference import familiar  # noqa: F401 - re-exported for the CLI


def confirmed(force: bool, warning: str) -> bool:
    """docker's prune prompt: without -f, the WARNING and a [y/N] answer read from stdin (an
    empty answer or end of input is no)."""
    if force:
        return True
    sys.stdout.write(f"WARNING! {warning}\nAre you sure you want to continue? [y/N] ")
    sys.stdout.flush()
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def human_size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.3g}{unit}"
        n /= 1000
    return f"{n}"


def binary_size(n: float) -> str:
    """docker's units.BytesSize: 1024-based, four significant digits (`1.562MiB`), as
    `docker stats` shows memory."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.4g}{unit}"
        n /= 1024
    return f"{n}"


def table(headers: list[str], rows: list[list[str]], out=None) -> None:
    out = out or sys.stdout
    widths = [len(h) for h in headers]
    for r in rows:
        for i, c in enumerate(r):
            widths[i] = max(widths[i], len(c))
    for r in [headers] + rows:
        out.write("   ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip() + "\n")


def print_docs(docs: list[dict], fmt: str | None, errors: list[str] = ()) -> int:
    """`inspect`'s output: a JSON array (`--format json` too, as docker's), or each document
    through the Go template fmt, then one `Error:` line per name that was not found; exit 1
    if there was one. As docker's inspect: a field a document lacks prints "<no value>", and
    \\t is not translated (write {{"\\t"}})."""
    if fmt and fmt != "json":
        from kobako.cli.template import parse
        tmpl = parse(fmt)
        sys.stdout.write("".join(tmpl.execute(d) + "\n" for d in docs))
    else:
        import json
        print(json.dumps(docs, indent=4))
    for m in errors:
        sys.stderr.write(f"Error: {m}\n")
    return 1 if errors else 0


def formatted(fmt: str, rows: list[dict], headers: dict[str, str] | None = None) -> None:
    """Print rows with --format as the docker CLI's list commands do: 'json' (one JSON object
    per line), 'table TEMPLATE' (a header row, then aligned columns), or TEMPLATE (a line per
    row). As docker does, \\t and \\n in the template are a tab and a newline, and a field the
    rows do not have is an error. Nothing is printed if the template fails on any row."""
    if fmt == "json":
        import json
        for r in rows:
            sys.stdout.write(json.dumps({k: v for k, v in r.items() if not callable(v)}) + "\n")
        return
    from kobako.cli.template import parse, tabwrite
    is_table = fmt.startswith("table")
    src = (fmt[5:] if is_table else fmt).strip(" ")
    if is_table and not src:
        src = "\t".join("{{." + h + "}}" for h in (headers or {}))
    tmpl = parse(src.replace("\\t", "\t").replace("\\n", "\n"))
    body = "".join(tmpl.execute(r, strict=True) + "\n" for r in rows)
    if is_table:
        names = {k: k.upper() for r in rows[:1] for k in r} | (headers or {})
        body = tabwrite(tmpl.execute(names, header=True) + "\n" + body)
    sys.stdout.write(body)


class Progress:
    """Per-layer progress: rich bars on a terminal, nothing otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.bars = None
        self.tasks: dict[str, int] = {}
        if enabled and sys.stderr.isatty():
            from rich.progress import BarColumn, DownloadColumn, TextColumn, TransferSpeedColumn
            from rich.progress import Progress as RichProgress
            self.bars = RichProgress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                     TransferSpeedColumn(), transient=False)
            self.bars.start()

    def __call__(self, key: str, done: int, total: int | None) -> None:
        if self.bars is None:
            return
        t = self.tasks.get(key)
        if t is None:
            t = self.tasks[key] = self.bars.add_task(key.split(":")[-1][:12], total=total)
        self.bars.update(t, completed=done)

    def close(self) -> None:
        if self.bars is not None:
            self.bars.stop()


def progress_bar(done: int, total: int | None) -> str:
    """docker's jsonmessage progress: `[=====>        ] 1.2MB/3.4MB`."""
    if not total:
        return human_size(done)
    n = min(50, done * 50 // total)
    arrow = "=" * max(n - 1, 0) + (">" if n else "")
    return f"[{arrow:<50}] {human_size(done)}/{human_size(total)}"


class PullView:
    """docker pull's per-layer lines. Not on a terminal: one line per status as it comes
    (`<id>: Pull complete`), never the byte counts, as the docker CLI prints a stream when
    not on a terminal; on one: each layer's line rewritten in place (rich), with
    `Downloading [==>  ] 1.2MB/3.4MB` while its bytes arrive. Called from the download
    threads. `fetched`: a layer had to be pulled (else the image was up to date)."""

    def __init__(self, out, enabled: bool = True) -> None:
        import threading
        self.out, self.enabled, self.lock = out, enabled, threading.Lock()
        self.lines: dict[str, str] = {}  # layer short ID -> its line, in first-seen order
        self.fetched = False
        self.live = None
        # the live region starts with the first layer's line: the lines before it (`Pulling
        # from`) are plain, and one written after the layers (`Digest:`) ends it
        self.rich = enabled and out.isatty()

    def line(self, text: str) -> None:
        """A line of the whole pull: `Pulling from` before the layers, `Digest:` after them."""
        if self.enabled:
            with self.lock:
                self.close()
                self.rich = False  # a layer line after this one is plain: the region is ended
                self.out.write(text + "\n")
                self.out.flush()

    def line_before(self, text: str) -> None:
        """A line before the layers' (`Pulling from`): the live region is still to come."""
        if self.enabled:
            self.out.write(text + "\n")
            self.out.flush()

    def _start(self) -> None:
        from rich.console import Console
        from rich.live import Live
        self.live = Live(console=Console(file=self.out), refresh_per_second=8, transient=False)
        self.live.start()

    def status(self, digest: str, text: str) -> None:
        short = digest.split(":")[-1][:12]
        with self.lock:
            self.fetched |= text == "Pulling fs layer"
            self.lines[short] = text
            if self.rich and self.live is None:
                self._start()
            if self.live is not None:
                self._render()
            elif self.enabled:
                self.out.write(f"{short}: {text}\n")
                self.out.flush()

    def progress(self, digest: str, done: int, total: int | None) -> None:
        if self.live is None:
            return
        short = digest.split(":")[-1][:12]
        with self.lock:
            if self.lines.get(short) != "Pulling fs layer" and not (self.lines.get(short) or "").startswith(
                    "Downloading"):
                return  # already complete, or not this pull's to show
            self.lines[short] = f"Downloading {progress_bar(done, total)}"
            self._render()

    def _render(self) -> None:
        from rich.text import Text
        self.live.update(Text("\n".join(f"{k}: {v}" for k, v in self.lines.items())))

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
