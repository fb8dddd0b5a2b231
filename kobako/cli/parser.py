"""A small Docker-style option parser: `-it` bundles, `--name x` / `--name=x`, repeatable
options, and for commands that run a program (run, exec) options stop at the first
positional so the program's own flags pass untouched. argparse is not used: its import
(gettext, re) costs more than the whole start-up budget of `kobako run`; for the same reason
these are plain classes, not dataclasses (which import inspect, re and ast)."""

from __future__ import annotations

from kobako import errors


class UsageError(errors.InvalidArgument):
    pass


class Opt:
    __slots__ = ("names", "dest", "kind", "default", "help")

    def __init__(self, names: tuple[str, ...], dest: str, kind: str = "bool", default: object = None,
                 help: str = "") -> None:
        self.names, self.dest, self.kind, self.default, self.help = names, dest, kind, default, help


class Command:
    """A command's usage, help, options; `interspersed=False`: options end at the first
    positional (run, exec), so the program's own flags pass through."""

    def __init__(self, name: str, usage: str, help: str, opts: list[Opt] | None = None,
                 interspersed: bool = True, min_args: int = 0, max_args: int | None = None) -> None:
        self.name, self.usage, self.help = name, usage, help
        self.opts = opts or []
        self.interspersed, self.min_args, self.max_args = interspersed, min_args, max_args


class Args:
    def __init__(self, vals: dict, args: list[str]) -> None:
        self.__dict__.update(vals)
        self.args = args

    def __getattr__(self, name: str) -> object:
        return None


def opt(names: str, dest: str, kind: str = "bool", default: object = None, help: str = "") -> Opt:
    if kind == "list" and default is None:
        default = []
    if kind == "bool" and default is None:
        default = False
    return Opt(tuple(names.split()), dest, kind, default, help)


def parse(cmd: Command, argv: list[str]) -> Args:
    by_name = {n: o for o in cmd.opts for n in o.names}
    vals: dict = {o.dest: (list(o.default) if isinstance(o.default, list) else o.default) for o in cmd.opts}
    vals["help"] = False
    pos: list[str] = []
    i = 0

    def take(o: Opt, name: str, value: str | None) -> None:
        nonlocal i
        if o.kind == "bool":
            vals[o.dest] = True if value is None else value.lower() not in ("false", "0", "no")
            return
        if value is None:
            i += 1
            if i >= len(argv):
                raise UsageError(f"flag needs an argument: {name}")
            value = argv[i]
        if o.kind == "int":
            try:
                vals[o.dest] = int(value)
            except ValueError:
                raise UsageError(f'invalid argument "{value}" for "{name}" flag: not a number') from None
        elif o.kind == "list":
            vals[o.dest] = vals[o.dest] + [value]
        else:
            vals[o.dest] = value

    while i < len(argv):
        a = argv[i]
        if a == "--":
            pos += argv[i + 1:]
            break
        if a == "--help" or (a == "-h" and "-h" not in by_name):  # run/create: -h is the hostname
            vals["help"] = True
        elif a.startswith("--"):
            name, eq, value = a.partition("=")
            o = by_name.get(name)
            if o is None:
                raise UsageError(f"unknown flag: {name}")
            take(o, name, value if eq else None)
        elif a.startswith("-") and len(a) > 1:
            # -it, -p8080:80, -e=X: bool letters bundle; a value option takes the rest
            j = 1
            while j < len(a):
                name = "-" + a[j]
                o = by_name.get(name)
                if o is None:
                    raise UsageError(f"unknown shorthand flag: {a[j]!r} in {a}")
                rest = a[j + 1:]
                if o.kind == "bool":
                    if rest.startswith("="):
                        take(o, name, rest[1:])
                        break
                    take(o, name, None)
                    j += 1
                    continue
                take(o, name, (rest[1:] if rest.startswith("=") else rest) if rest else None)
                break
        else:
            pos.append(a)
            if not cmd.interspersed:
                pos += argv[i + 1:]
                break
        i += 1
    if vals["help"]:
        return Args(vals, pos)
    if len(pos) < cmd.min_args:
        raise UsageError(f'"kobako {cmd.name}" requires at least {cmd.min_args} argument'
                         f'{"s" if cmd.min_args > 1 else ""}\nUsage: kobako {cmd.name} {cmd.usage}')
    if cmd.max_args is not None and len(pos) > cmd.max_args:
        raise UsageError(f'"kobako {cmd.name}" accepts at most {cmd.max_args} argument'
                         f'{"s" if cmd.max_args != 1 else ""}\nUsage: kobako {cmd.name} {cmd.usage}')
    return Args(vals, pos)


def help_text(cmd: Command) -> str:
    lines = [f"Usage:  kobako {cmd.name} {cmd.usage}", "", cmd.help, ""]
    if cmd.opts:
        lines.append("Options:")
        for o in cmd.opts:
            flags = ", ".join(o.names) + ("" if o.kind == "bool" else f" {o.kind}")
            lines.append(f"  {flags:<30} {o.help}")
    return "\n".join(lines) + "\n"


def pairs(items: list[str], bad) -> dict[str, str]:
    """K=V (or a bare K, value "") as docker's --label and --opt take them; `bad(item)` is
    the exception to raise for an item without a key."""
    out = {}
    for it in items:
        k, _, v = it.partition("=")
        if not k:
            raise bad(it)
        out[k] = v
    return out
