"""kobako: the engine's command line. The engine arrives with later issues; until
then this says what exists and where the runtime is."""

from __future__ import annotations

import os
import sys

from kobako import __version__

PLANNED = {
    "run, create, start, stop, kill, rm, ps, logs, exec, attach, inspect, wait": "containers",
    "pull, push, images, rmi, tag, save, load, import, export, commit, history": "images",
    "volume, network": "volumes and networks",
    "system info, system version": "the host",
}

USAGE = f"""kobako {__version__}: a container engine built from Linux primitives

The engine commands are not built yet. Planned:
""" + "".join(f"  {cmds:<78} {what}\n" for cmds, what in PLANNED.items()) + """
Available now:
  kobako version             print the version
  kobako-runtime --help      the OCI runtime (runc's command line): create, start,
                             run, exec, state, kill, delete, list, ps, pause, resume
"""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        sys.stdout.write(USAGE)
        return 0
    if argv[0] in ("version", "--version", "-v"):
        print(f"kobako version {__version__}")
        return 0
    sys.stderr.write(f"kobako: '{argv[0]}' is not a kobako command yet (see kobako --help)\n")
    return 125


def entry() -> None:
    code = main()
    sys.stdout.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
