"""`kobako build` (docker build's legacy builder: its flags and its plain output) and
`kobako builder prune`."""

from __future__ import annotations

import os
import shutil
import sys

from kobako.cli.parser import Command, UsageError, opt
from kobako.engine.lifecycle import Engine


class _Printer:
    """The build's progress on stdout, as the docker CLI prints the legacy builder's stream;
    with -q it is kept, and shown only if the build fails."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.kept: list[str] = []
        self.image_id = ""

    def stream(self, text: str) -> None:
        if self.quiet:
            self.kept.append(text)
        else:
            sys.stdout.write(text)
            sys.stdout.flush()

    def stderr(self, text: str) -> None:
        if self.quiet:
            self.kept.append(text)
        else:
            sys.stdout.flush()
            sys.stderr.write(text)
            sys.stderr.flush()

    def aux(self, image_id: str) -> None:
        self.image_id = image_id

    def step(self, number: int, total: int, instruction: str) -> None:
        self.stream(f"Step {number}/{total} : {instruction}\n")

    def cached(self) -> None:
        self.stream(" ---> Using cache\n")

    def step_done(self) -> None:
        pass

    def failed(self, ex: BaseException) -> None:
        if self.quiet and self.kept:
            sys.stderr.write("".join(self.kept))

    def close(self) -> None:
        pass


class _Live(_Printer):
    """A live view on a terminal, as BuildKit's: one line per step with its time, and
    under the running one a window of its last WINDOW output lines, redrawn in place with
    ANSI cursor movements (and every TICK for the timer) and replaced by the step's line
    when it ends. A failed step keeps its output's last KEEP lines on screen.

    Everything is written to fd 1 with os.write under one lock (the timer's thread draws
    too, and a COPY step forks: no buffered stream is shared with it)."""

    WINDOW = 6
    KEEP = 200
    TICK = 0.1

    def __init__(self, fd: int = 1) -> None:
        super().__init__(False)
        import collections
        import threading
        self.fd = fd
        self.lock = threading.Lock()
        self.drawn = 0  # lines of the live part on screen, the cursor at the start of the next
        self.title = ""
        self.started = 0.0
        self.was_cached = False
        self.lines: collections.deque[str] = collections.deque(maxlen=self.KEEP)
        self.partial = ""
        self.dropped = 0
        self.writing_since = 0.0
        self.last = False
        self.stop = threading.Event()
        self.ticker = threading.Thread(target=self._tick, name="progress", daemon=True)
        self.ticker.start()

    # -- the builder's events --
    def step(self, number: int, total: int, instruction: str) -> None:
        import time
        with self.lock:
            self.title = f"[{number}/{total}] {_clean(' '.join(instruction.split()))}"
            self.started = time.monotonic()
            self.was_cached = False
            self.lines.clear()
            self.partial = ""
            self.dropped = 0
            self.last = number == total
            self._draw()

    def cached(self) -> None:
        with self.lock:
            self.was_cached = True

    def step_done(self) -> None:
        import time
        with self.lock:
            if not self.title:
                return
            line = self._step_line("CACHED " if self.was_cached else "")
            self.title = ""
            if self.last:  # the image is written next
                self.writing_since = time.monotonic()
            self._print([line])

    def stream(self, text: str) -> None:
        with self.lock:
            if not self.title:  # outside a step: warnings, the final lines
                self._print([_clean(ln) for ln in text.rstrip("\n").split("\n")])
                return
            text = self.partial + text
            *done, self.partial = text.split("\n")
            for ln in done:
                if len(self.lines) == self.lines.maxlen:
                    self.dropped += 1
                self.lines.append(_clean(ln))
            # drawn by the timer: a step that prints fast costs no more than one that does not

    stderr = stream

    def aux(self, image_id: str) -> None:
        super().aux(image_id)
        with self.lock:
            if self.writing_since:
                line = self._line(f"writing image {image_id}", self.writing_since, "")
                self.writing_since = 0.0
                self._print([line])

    def failed(self, ex: BaseException) -> None:
        with self.lock:
            if not self.title:
                self._print([])
                return
            tail = list(self.lines) + ([_clean(self.partial)] if self.partial else [])
            head = "CANCELED " if isinstance(ex, KeyboardInterrupt) else "ERROR "
            out = [self._step_line(head), "------", f" > {self.title}:"]
            if self.dropped:
                out.append(f"({self.dropped} earlier lines not shown)")
            self.title = ""
            self._print(out + tail + ["------"])

    def close(self) -> None:
        self.stop.set()
        self.ticker.join()
        with self.lock:
            self._print([])

    # -- drawing (the lock held) --
    def _tick(self) -> None:
        while not self.stop.wait(self.TICK):
            with self.lock:
                if self.title or self.writing_since:
                    self._draw()

    def _width(self) -> int:
        """Columns to use: the terminal's but one (a full line would wrap on some)."""
        try:
            return max(os.get_terminal_size(self.fd).columns, 20) - 1
        except OSError:
            return 79

    def _line(self, text: str, since: float, prefix: str) -> str:
        import time
        w = self._width()
        timer = f"{time.monotonic() - since:.1f}s"
        body = _fit(f" => {prefix}{text}", w - len(timer) - 1)
        return body + " " * (w - len(timer) - _width_of(body)) + timer

    def _step_line(self, prefix: str) -> str:
        return self._line(self.title, self.started, prefix)

    def _live(self) -> list[str]:
        if self.title:
            w = self._width()
            window = list(self.lines)[-self.WINDOW:]
            if self.partial and len(window) == self.WINDOW:
                window = window[1:]
            window += [_clean(self.partial)] if self.partial else []
            return [self._step_line("")] + [_fit(" => => # " + ln, w) for ln in window]
        if self.writing_since:
            return [self._line("writing image", self.writing_since, "")]
        return []

    def _draw(self) -> None:
        self._write(self._erase() + "".join(ln + "\x1b[K\n" for ln in self._live()), len(self._live()))

    def _print(self, lines: list[str]) -> None:
        """Lines above the live part, which stay."""
        live = self._live()
        w = self._width()
        text = "".join(_fit(ln, w) + "\x1b[K\n" for ln in lines)
        self._write(self._erase() + text + "".join(ln + "\x1b[K\n" for ln in live), len(live))

    def _erase(self) -> str:
        return (f"\r\x1b[{self.drawn}A" if self.drawn else "\r") + "\x1b[J"

    def _write(self, text: str, drawn: int) -> None:
        data = text.encode(errors="replace")
        try:
            while data:
                data = data[os.write(self.fd, data):]
        except OSError:  # the terminal went away: the build goes on
            pass
        self.drawn = drawn


_ESCAPES = None


def _clean(text: str) -> str:
    """A line of a program's output as plain text: escape sequences and control characters
    dropped, a carriage return keeping what was written after it, tabs as spaces."""
    global _ESCAPES
    if _ESCAPES is None:
        import re
        _ESCAPES = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)?|[@-Z\\-_])")
    text = _ESCAPES.sub("", text).rstrip("\r").rsplit("\r", 1)[-1].expandtabs(8)
    return "".join(ch for ch in text if ch >= " " and not "\x7f" <= ch <= "\x9f")


def _char_width(ch: str) -> int:
    import unicodedata
    if unicodedata.combining(ch):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in "WF" else 1


def _width_of(text: str) -> int:
    return sum(_char_width(ch) for ch in text)


def _fit(text: str, width: int) -> str:
    """text cut to `width` terminal columns (a wide character counts two)."""
    if len(text) <= width and text.isascii():
        return text
    out, used = [], 0
    for ch in text:
        used += _char_width(ch)
        if used > width:
            break
        out.append(ch)
    return "".join(out)


def _printer(progress: str | None, quiet: bool) -> _Printer:
    """--progress: tty (the live view), plain (the legacy builder's lines), quiet (-q), or
    auto (the live view when stdout is a terminal that can show it)."""
    if quiet:
        return _Printer(True)
    if progress == "tty" or (progress in (None, "auto") and sys.stdout.isatty()
                             and os.environ.get("TERM", "dumb") != "dumb"):
        sys.stdout.flush()
        return _Live()
    return _Printer(False)


def _pairs(items: list[str], what: str) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for it in items:
        k, eq, v = it.partition("=")
        if not k:
            raise UsageError(f"invalid {what} {it!r}: KEY=VALUE")
        out[k] = v if eq else os.environ.get(k)  # --build-arg NAME: the value from our environment
    return out


MAX_SECRET = 500 * 1024  # BuildKit's limit


def _secrets(items: list[str]) -> dict[str, bytes]:
    """--secret id=ID[,src=PATH|,env=VAR][,type=file|env] (docker buildx's syntax): the values
    by id, read here. Neither src nor env: the variable named ID if it is set, else the
    file ID (as BuildKit's secret store)."""
    import csv
    out: dict[str, bytes] = {}
    for it in items:
        try:
            fields = next(csv.reader([it], strict=True), [])
        except csv.Error as ex:
            raise UsageError(f"invalid --secret {it!r}: failed to parse csv secret: {ex}") from None
        sid = src = env = typ = ""
        for field in fields:
            key, eq, value = field.partition("=")
            key = key.lower()
            if not eq:
                raise UsageError(f"invalid --secret {it!r}: invalid field '{field}' must be a key=value pair")
            if key == "type":
                if value not in ("file", "env"):
                    raise UsageError(f"invalid --secret {it!r}: unsupported secret type {value!r} "
                                     "(file or env)")
                typ = value
            elif key == "id":
                sid = value
            elif key in ("source", "src"):
                src = value
            elif key == "env":
                env = value
            else:
                raise UsageError(f"invalid --secret {it!r}: unexpected key '{key}' in '{field}' "
                                 "(id, src, env, type)")
        if typ == "env" and not env:
            env, src = src, ""
        if not sid:
            raise UsageError(f"invalid --secret {it!r}: secret missing ID (id=ID)")
        if not src and not env:
            if sid in os.environ:
                env = sid
            else:
                src = sid
        if env:
            out[sid] = os.environ.get(env, "").encode()
            continue
        from kobako.errors import InvalidArgument
        try:
            with open(src, "rb") as f:
                data = f.read(MAX_SECRET + 1)
        except OSError as ex:
            raise InvalidArgument(f"--secret {sid}: cannot read {src}: {ex.strerror}") from None
        if len(data) > MAX_SECRET:
            raise InvalidArgument(f"--secret {sid}: secret {sid} too big. max size 500KB")
        out[sid] = data
    return out


def _size(v: str | None, what: str) -> int:
    if not v:
        return 0
    from kobako.engine.ocispec import parse_size
    try:
        return parse_size(v)
    except Exception:  # noqa: BLE001 - parse_size's own error kinds vary
        raise UsageError(f"invalid {what} {v!r}: a size such as 64m") from None


def build(e: Engine, args) -> int:
    from kobako.engine import build as b
    src = args.args[0]
    quiet = args.quiet or args.progress == "quiet"
    if args.progress not in (None, "auto", "plain", "tty", "quiet"):
        raise UsageError(f"invalid --progress {args.progress!r}: auto, plain, tty or quiet")
    ulimits = []
    for u in args.ulimit:
        from kobako.engine.ocispec import parse_ulimit
        name, soft, hard = parse_ulimit(u)
        ulimits.append({"Name": name, "Soft": soft, "Hard": hard})
    opts = b.Options(
        tags=list(args.tag), build_args=_pairs(args.build_arg, "--build-arg"), target=args.target or None,
        no_cache=args.no_cache, pull=args.pull,
        labels={k: v or "" for k, v in _pairs(args.label, "--label").items()},
        network="default" if args.network in (None, "bridge") else args.network,
        extra_hosts=list(args.add_host), shm_size=_size(args.shm_size, "--shm-size"), ulimits=ulimits,
        cache_from=list(args.cache_from) or None, platform=args.platform or None,
        secrets=_secrets(args.secret))
    if args.memory:
        opts.limits["Memory"] = _size(args.memory, "--memory")
    opts.rm, opts.force_rm = args.rm, args.force_rm
    tmp = None
    text = None
    try:
        if src == "-":
            data = sys.stdin.buffer
            from kobako.image.context import is_archive
            head = data.peek(512)[:512] if hasattr(data, "peek") else b""
            if is_archive(head):
                tmp = b.unpack_context(e, data)
                tree = b.context_dir(tmp)
            else:  # a Dockerfile alone: no context
                if args.file and args.file != "-":
                    raise UsageError("a Dockerfile from stdin (build -) and -f cannot be combined")
                text = data.read().decode(errors="replace")
                tree = b.context_dir(None)
        else:
            if not os.path.isdir(src):
                raise UsageError(f"unable to prepare context: path {src!r} not found or not a directory")
            tree = b.context_dir(src, e)
        try:
            if text is None:
                if args.file == "-":
                    text = sys.stdin.read()
                elif args.file:
                    text = _read_file(args.file, src if src != "-" else None)
                else:
                    text = b.read_dockerfile(tree, "Dockerfile")
            out = _printer(args.progress, quiet)
            try:
                img = b.build(e, tree, text, opts, out)
            except BaseException as ex:
                out.failed(ex)
                raise
            finally:
                out.close()
        finally:
            tree.close()
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.iidfile:
        with open(args.iidfile, "w") as f:
            f.write(img["id"])
    if quiet:
        print(img["id"])
    return 0


def _read_file(path: str, context: str | None) -> str:
    """-f FILE: a path as given (relative to here), as the docker CLI takes it."""
    try:
        with open(path, "rb") as f:
            data = f.read(16 << 20)
    except OSError as ex:
        from kobako.engine.build import BuildError
        raise BuildError(f"Cannot locate specified Dockerfile: {path} ({ex.strerror})") from None
    return data.decode(errors="replace")


def builder_prune(e: Engine, args) -> int:
    from kobako.cli.output import confirmed, human_size
    if not confirmed(args.force, "This will remove all build cache."):
        return 0
    from kobako.engine.build import prune
    freed = prune(e)
    print(f"Total reclaimed space: {human_size(freed)}")
    return 0


COMMANDS = {
    "build": (Command("build", "[OPTIONS] PATH | -", "Build an image from a Dockerfile", [
        opt("-t --tag", "tag", "list", None, "name:tag for the image (repeatable)"),
        opt("-f --file", "file", "str", None, "the Dockerfile (default PATH/Dockerfile; - for stdin)"),
        opt("--build-arg", "build_arg", "list", None, "KEY=VALUE for an ARG"),
        opt("--target", "target", "str", None, "build up to this stage"),
        opt("--no-cache", "no_cache", help="run every step, using no cache"),
        opt("--pull", "pull", help="pull base images even if present"),
        opt("--label", "label", "list", None, "KEY=VALUE label of the image"),
        opt("--network", "network", "str", None, "RUN steps: default (bridge), host, none, NETWORK"),
        opt("--add-host", "add_host", "list", None, "HOST:IP in RUN steps' /etc/hosts"),
        opt("--shm-size", "shm_size", "str", None, "size of RUN steps' /dev/shm"),
        opt("--ulimit", "ulimit", "list", None, "NAME=SOFT[:HARD] for RUN steps"),
        opt("-m --memory", "memory", "str", None, "memory limit of RUN steps"),
        opt("--iidfile", "iidfile", "str", None, "write the image ID to this file"),
        opt("-q --quiet", "quiet", help="print only the image ID"),
        opt("--cache-from", "cache_from", "list", None, "images whose layers may serve as cache"),
        opt("--secret", "secret", "list", None,
            "id=ID[,src=PATH|,env=VAR]: a secret for RUN --mount=type=secret"),
        opt("--platform", "platform", "str", None, "os/arch[/variant] to build for"),
        opt("--progress", "progress", "str", None, "auto, plain, tty or quiet"),
        opt("--rm", "rm", "bool", True, "remove RUN steps' containers (--rm=false keeps them, stopped)"),
        opt("--force-rm", "force_rm", help="always remove RUN steps' containers, even with --rm=false"),
    ], min_args=1, max_args=1), build),
    "builder prune": (Command("builder prune", "[OPTIONS]", "Remove the build cache", [
        opt("-a --all", "all", help="all build cache: kobako's prune always removes all of it"),
        opt("-f --force", "force", help="do not prompt for confirmation"),
    ], max_args=0), builder_prune),
}
