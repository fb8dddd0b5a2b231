"""kobako-runtime kill: signal the init (or, with --all, every process)."""

from kobako.runtime import container


def run(args, log) -> int:
    container.kill(args.root, args.id, args.signal, args.all)
    return 0
