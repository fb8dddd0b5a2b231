"""`kobako explain CONTAINER`: the kernel objects a container is made of, each with where it
was read and a host command that shows it (engine/explain.py reads them)."""

from __future__ import annotations

import sys

from kobako.cli.parser import Command, opt
from kobako.engine.lifecycle import Engine

HEADINGS = {
    "kernel": "Kernel objects",
    "process": "Process",
    "namespace": "Namespaces (inode; whose: compared with the host's inodes)",
    "cgroup": "Cgroup (one directory per hierarchy; the limits as its files hold them now)",
    "mount": "Mounts (the init's mount namespace: /proc/PID/mountinfo)",
    "network": "Network",
    "nftables": "nftables (kobako's table)",
    "security": "Security",
    "files": "kobako's files",
}


def render(doc: dict, verbose: bool = False) -> str:
    """The explanation for a person: per section, each object's one line, then (indented)
    the host commands that show it, `!` lines for what the kernel contradicts, and with
    `verbose` where each value was read."""
    head = f"{doc['name']} ({doc['id'][:12]}), image {doc['image']}: {doc['state']}"
    if doc.get("pid"):
        head += f", init PID {doc['pid']}"
    lines = [head]
    if doc.get("note"):
        lines.append(f"Not running: {doc['note']}.")
    section = None
    for o in doc["objects"]:
        if o["kind"] != section:
            section = o["kind"]
            lines += ["", HEADINGS.get(section, section)]
        lines.append(f"  {o['name']:<10} {o['summary']}" if len(o["name"]) <= 10 else
                     f"  {o['name']}  {o['summary']}")
        if verbose:
            lines += [f"      read {r['source']}: {r['value']}" for r in o["read"]]
        if o["kind"] == "namespace":  # short commands: one line
            lines.append("      " + "   ".join(f"$ {c['command']}" for c in o["checks"])
                         + f"   (enter: {o['facts']['enter']})")
        else:
            lines += [f"      $ {c['command']}" for c in o["checks"]]
        lines += [f"      ! {p}" for p in o["problems"]]
    problems = sum(len(o["problems"]) for o in doc["objects"])
    lines += ["", f"{problems} problem(s): the kernel contradicts kobako's state where a line starts with '!'"
              if problems else "Every object above was read from the kernel or from kobako's files just now."]
    return "\n".join(lines) + "\n"


def explain(e: Engine, args) -> int:
    from kobako.engine.explain import explain as read
    doc = read(e, e.containers.resolve(args.args[0]))
    if args.format == "json":
        import json
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    elif args.format:
        from kobako.errors import InvalidArgument
        raise InvalidArgument(f"unknown --format {args.format!r}: json, or none for text")
    else:
        sys.stdout.write(render(doc, args.verbose))
    return 0


COMMANDS = {
    "explain": (Command("explain", "[OPTIONS] CONTAINER",
                        "Show the kernel objects a container is made of, and how to check each", [
                            opt("--format", "format", "str", None, "json: the objects as JSON, for scripts"),
                            opt("-v --verbose", "verbose", help="also show where each value was read")],
                        min_args=1, max_args=1), explain),
}
