"""kobako-runtime create: the init is set up and waits for `start`."""

from kobako.runtime import container


def run(args, log) -> int:
    container.create(args, log)
    return 0
