"""kobako-runtime ps: the container's processes (from its cgroup), through ps(1)."""

from __future__ import annotations

from kobako.runtime import jsonfast, state
from kobako.runtime.cgroups import manager_for
from kobako.runtime.errors import RuntimeFailure


def run(args, log) -> int:
    c = state.open_existing(args.root, args.id, lock=False)
    pids = manager_for(c.data).pids()
    if args.format == "json":
        print(jsonfast.dumps(pids))
        return 0
    if args.format != "table":
        raise RuntimeFailure(f"unknown --format {args.format!r}", "use table or json")
    import subprocess

    ps_args = list(args.ps_args or []) or ["-ef"]
    try:
        out = subprocess.run(["ps", *ps_args], stdout=subprocess.PIPE, check=True).stdout.decode()
    except (OSError, subprocess.CalledProcessError) as e:
        raise RuntimeFailure(f"ps {' '.join(ps_args)} failed: {e}") from None
    lines = out.splitlines()
    if not lines:
        return 0
    head = lines[0].split()
    if "PID" not in head:
        raise RuntimeFailure("ps output has no PID column", "pass ps options that print PID")
    col = head.index("PID")
    print(lines[0])
    want = {str(p) for p in pids}
    for line in lines[1:]:
        f = line.split()
        if len(f) > col and f[col] in want:
            print(line)
    return 0
