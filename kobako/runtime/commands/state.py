"""kobako-runtime state: the OCI state of one container, as JSON."""

from kobako.runtime import jsonfast, state


def run(args, log) -> int:
    c = state.open_existing(args.root, args.id, lock=False)
    print(jsonfast.dumps_pretty(c.public()))
    return 0
