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


def _pairs(items: list[str], what: str) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for it in items:
        k, eq, v = it.partition("=")
        if not k:
            raise UsageError(f"invalid {what} {it!r}: KEY=VALUE")
        out[k] = v if eq else os.environ.get(k)  # --build-arg NAME: the value from our environment
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
        cache_from=list(args.cache_from) or None, platform=args.platform or None)
    if args.memory:
        opts.limits["Memory"] = _size(args.memory, "--memory")
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
            tree = b.context_dir(src, e, refresh=args.no_cache)
        try:
            if text is None:
                if args.file == "-":
                    text = sys.stdin.read()
                elif args.file:
                    text = _read_file(args.file, src if src != "-" else None)
                else:
                    text = b.read_dockerfile(tree, "Dockerfile")
            out = _Printer(quiet)
            try:
                img = b.build(e, tree, text, opts, out)
            except BaseException:
                if quiet and out.kept:
                    sys.stderr.write("".join(out.kept))
                raise
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
    from kobako.cli.output import human_size
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
        opt("--platform", "platform", "str", None, "os/arch (this host's only)"),
        opt("--progress", "progress", "str", None, "auto, plain, tty or quiet"),
        opt("--rm", "rm", "bool", True, "remove intermediate containers (always done)"),
        opt("--force-rm", "force_rm", help="remove intermediate containers (always done)"),
    ], min_args=1, max_args=1), build),
    "builder prune": (Command("builder prune", "[OPTIONS]", "Remove the build cache", [
        opt("-a --all", "all", help="remove all build cache (kobako's is one kind)"),
        opt("-f --force", "force", help="do not prompt for confirmation"),
    ], max_args=0), builder_prune),
}
