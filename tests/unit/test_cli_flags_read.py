"""Every flag a command's --help shows is read by its handler: a flag parsed and never looked
at would be silently ignored. A static check over the command tables: each option's dest
must be read as `args.<dest>` (or getattr(args, "<dest>")) in the handler or in a function
it calls (in its module, or imported from another kobako.cli module), or be one of the
flags main.py reads for every command."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import textwrap

import kobako.cli as cli


def _reads(fn) -> tuple[set[str], list]:
    """The dests `fn` reads off its args (its own parameters, by name), and the functions it
    calls that may read more."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    params = {a.arg for a in ast.walk(tree) if isinstance(a, ast.arg)}
    mod = inspect.getmodule(fn)
    reads: set[str] = set()
    calls: list = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in params:
            reads.add(node.attr)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
              and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)):
            reads.add(node.args[1].value)
        elif isinstance(node, ast.Name) and inspect.isfunction(getattr(mod, node.id, None)):
            calls.append(getattr(mod, node.id))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("kobako.cli"):
            other = importlib.import_module(node.module)
            calls += [getattr(other, a.name) for a in node.names
                      if inspect.isfunction(getattr(other, a.name, None))]
    return reads, calls


def _closure_reads(fn) -> set[str]:
    seen, todo, reads = set(), [fn], set()
    while todo:
        f = todo.pop()
        if f in seen or (seen and not (getattr(f, "__module__", "") or "").startswith("kobako.cli")):
            continue
        seen.add(f)
        r, calls = _reads(f)
        reads |= r
        todo += calls
    return reads


def _commands():
    for m in pkgutil.iter_modules(cli.__path__):
        mod = importlib.import_module(f"kobako.cli.{m.name}")
        for name, (cmd, handler) in (getattr(mod, "COMMANDS", None) or {}).items():
            yield name, cmd, handler


# flags that are true without being read, each with the reason
NOTHING_TO_DO = {
    ("load", "quiet"): "kobako load shows no progress to suppress",
    ("import", "quiet"): "kobako import prints only the ID already",
    ("builder prune", "all"): "kobako's build cache is one kind: prune always removes all of it",
}


def test_every_flag_is_read_by_its_command():
    from kobako.cli import main
    everywhere, _ = _reads(main.main)  # --trace: main turns the step record on for any command
    unread = []
    commands = list(_commands())
    assert len(commands) > 50  # the tables were found
    for name, cmd, handler in commands:
        reads = _closure_reads(handler) | everywhere
        unread += [f"kobako {name} {'/'.join(o.names)}" for o in cmd.opts
                   if o.dest not in reads and (name, o.dest) not in NOTHING_TO_DO]
    assert not unread, "flags parsed but never read: " + ", ".join(unread)


def test_the_check_sees_an_unread_flag():
    from kobako.cli.parser import Command, opt

    def handler(e, args):
        return args.used

    cmd = Command("x", "", "", [opt("--used", "used"), opt("--ignored", "ignored")])
    reads = _closure_reads(handler)
    assert [o.dest for o in cmd.opts if o.dest not in reads] == ["ignored"]
