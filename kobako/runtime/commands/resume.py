"""kobako-runtime resume: thaw a paused container."""

from kobako.runtime import state
from kobako.runtime.cgroups import manager_for
from kobako.runtime.errors import RuntimeFailure


def run(args, log) -> int:
    c = state.open_existing(args.root, args.id)
    st = c.status()
    if st != "paused":
        raise RuntimeFailure(f"cannot resume container {args.id!r}: it is {st}, not paused")
    manager_for(c.data).freeze(False)
    return 0
