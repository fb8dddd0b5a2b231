"""The processes of a container (`docker top`): ps(1) on the host, its lines kept for the
PIDs in the container's cgroup, as dockerd does."""

from __future__ import annotations

from kobako import errors
from kobako.engine.records import ContainerConflict


def top(e, rec: dict, ps_args: list[str] | None = None) -> tuple[list[str], list[list[str]]]:
    """(titles, one row per process) of `ps ps_args` (default -ef); the last column (the
    command) keeps its spaces."""
    import subprocess

    from kobako.runtime import state
    from kobako.runtime.cgroups import manager_for
    st = e.state(rec)
    if st == "restarting":
        raise ContainerConflict(f"Container {rec['id']} is restarting, wait until the container is running")
    if st not in ("running", "paused"):
        raise ContainerConflict(f"Container {rec['id']} is not running")
    c = state.Container(e.runtime_root, rec["id"])
    try:
        c.load()
        pids = {str(p) for p in manager_for(c.data).pids()}
    except Exception:  # noqa: BLE001 - it stopped meanwhile
        raise ContainerConflict(f"Container {rec['id']} is not running") from None
    args = list(ps_args or []) or ["-ef"]
    try:
        cp = subprocess.run(["ps", *args], capture_output=True, timeout=30)
    except OSError as ex:
        raise errors.Unavailable(f"cannot run ps: {ex.strerror}", "install procps") from None
    if cp.returncode != 0:
        raise errors.InvalidArgument(f"ps {' '.join(args)} failed: "
                                     f"{cp.stderr.decode(errors='replace').strip() or cp.returncode}")
    lines = [ln for ln in cp.stdout.decode(errors="replace").splitlines() if ln.strip()]
    if not lines:
        return [], []
    titles = lines[0].split()
    if "PID" not in titles:
        raise errors.InvalidArgument("Couldn't find PID field in ps output",
                                     "give ps options that print a PID column")
    col = titles.index("PID")
    rows = []
    for line in lines[1:]:
        fields = line.split(None, len(titles) - 1)
        if len(fields) > col and fields[col] in pids:
            rows.append(fields)
    return titles, rows
