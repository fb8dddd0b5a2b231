"""kobako-runtime pause: freeze every process (v1 freezer or v2 cgroup.freeze)."""

from kobako.runtime import state
from kobako.runtime.cgroups import manager_for
from kobako.runtime.errors import RuntimeFailure


def run(args, log) -> int:
    c = state.open_existing(args.root, args.id)
    st = c.status()
    if st != "running":
        raise RuntimeFailure(f"cannot pause container {args.id!r}: it is {st}")
    manager_for(c.data).freeze(True)
    return 0
