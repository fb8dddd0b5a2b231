"""What a container changed in its image's files (`docker diff`), and its whole filesystem
as a tar (`docker export`)."""

from __future__ import annotations

KINDS = {"C": 0, "A": 1, "D": 2}  # Docker's ChangeType numbers


def changes(e, rec: dict) -> list[tuple[str, str]]:
    """(kind, path) for each file the container added (A), changed (C) or deleted (D), from
    its overlay upper directory against its image's layers."""
    from kobako.storage.changes import changes as upper_changes
    lowers = [e.snapshots.fs(c) for c in reversed(rec["chainIds"])]
    return list(upper_changes(e.containers.path(rec["id"], "upper"), lowers))


def export(e, rec: dict, out) -> None:
    """The container's filesystem (its image's files with its changes; no volumes, no /proc)
    as a tar to `out`, a binary file."""
    from kobako.engine import copy
    from kobako.storage import layer

    def write(root: str) -> None:  # runs in a child: flush before it exits
        layer.write_tree(root, out)  # other mounts (proc, sys, dev, volumes) are not crossed
        out.flush()

    # a running container is read inside its own mount namespace: mounting its overlay a
    # second time would share (and spoil) the live mount's work directory
    copy._in_container(e, rec, write, lambda: None, volumes=False)
