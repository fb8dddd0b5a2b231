"""Output the way the docker CLI prints it: aligned tables, human sizes and ages,
and `--format` with the Go-template subset people use ({{.Field}}, {{json .}}, table)."""

from __future__ import annotations

import sys

from kobako.engine.views import ago, parse_time  # noqa: F401 - re-exported for the CLI
from kobako.image.reference import familiar  # noqa: F401 - re-exported for the CLI


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


def render(fmt: str, obj: dict) -> str:
    """A Go-template subset: {{.A}}, {{.A.B}}, {{json .}}, {{json .A}}, \\t and \\n."""
    out = []
    i = 0
    fmt = fmt.replace("\\t", "\t").replace("\\n", "\n")
    while i < len(fmt):
        j = fmt.find("{{", i)
        if j < 0:
            out.append(fmt[i:])
            break
        out.append(fmt[i:j])
        k = fmt.find("}}", j)
        if k < 0:
            raise ValueError(f"unclosed action in format {fmt!r}")
        expr = fmt[j + 2:k].strip()
        as_json = expr.startswith("json ")
        if as_json:
            expr = expr[5:].strip()
        val: object = obj
        if expr != ".":
            if not expr.startswith("."):
                raise ValueError(f"unsupported template action {{{{{expr}}}}}")
            for part in expr[1:].split("."):
                val = val.get(part) if isinstance(val, dict) else None
        if as_json:
            import json
            out.append(json.dumps(val))
        elif isinstance(val, (dict, list)):
            import json
            out.append(json.dumps(val) if isinstance(val, dict) else " ".join(map(str, val)))
        else:
            out.append("" if val is None else str(val))
        i = k + 2
    return "".join(out)


def print_docs(docs: list[dict], fmt: str | None, errors: list[str] = ()) -> int:
    """`inspect`'s output: a JSON array (or each document through --format), then one
    `Error:` line per name that was not found; exit 1 if there was one."""
    if fmt:
        for d in docs:
            formatted(fmt, [d])
    else:
        import json
        print(json.dumps(docs, indent=4))
    for m in errors:
        sys.stderr.write(f"Error: {m}\n")
    return 1 if errors else 0


def formatted(fmt: str, rows: list[dict], headers: dict[str, str] | None = None) -> None:
    """Print rows with --format: 'json' (one JSON object per line), 'table TEMPLATE', or TEMPLATE."""
    if fmt == "json":
        import json
        for r in rows:
            sys.stdout.write(json.dumps(r) + "\n")
        return
    if fmt.startswith("table"):
        tmpl = fmt[5:].strip() or "\t".join("{{." + h + "}}" for h in (headers or {}))
        cols = tmpl.replace("\\t", "\t").split("\t")
        heads = []
        for c in cols:
            key = c.strip().strip("{}").strip().lstrip(".")
            heads.append((headers or {}).get(key, key.upper()))
        table(heads, [[render(c, r) for c in cols] for r in rows])
        return
    for r in rows:
        sys.stdout.write(render(fmt, r) + "\n")


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
