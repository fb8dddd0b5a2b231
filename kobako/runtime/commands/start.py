"""kobako-runtime start: release a created container's init into its program."""

from kobako.runtime import container


def run(args, log) -> int:
    container.start(args.root, args.id, log)
    return 0
