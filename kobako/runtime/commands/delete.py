"""kobako-runtime delete: remove a stopped (or, with --force, any) container."""

from kobako.runtime import container
from kobako.runtime.errors import RuntimeFailure


def run(args, log) -> int:
    try:
        container.delete(args.root, args.id, args.force, log)
    except RuntimeFailure as e:
        # runc: `delete --force` of a container that does not exist is not an error
        if args.force and "does not exist" in str(e):
            return 0
        raise
    return 0
