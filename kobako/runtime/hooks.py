"""The six OCI hook kinds, each run with the container's state on stdin.

prestart/createRuntime/poststart/poststop run in the runtime's namespaces (the
parent); createContainer and startContainer run in the container's (the init).
A failing hook before the program starts fails the container; a failing
poststart or poststop hook is only logged, as the spec says.
"""

from __future__ import annotations

from kobako.runtime.errors import RuntimeFailure


def run(hooks: dict | None, kind: str, state_json: str, log) -> None:
    for h in (hooks or {}).get(kind) or []:
        run_one(h, kind, state_json, log)


def run_one(h: dict, kind: str, state_json: str, log) -> None:
    import subprocess

    path = h["path"]
    argv = h.get("args") or [path]
    log.debug(f"hook {kind}: {path} {' '.join(argv[1:])}")
    try:
        p = subprocess.run(argv, executable=path, input=state_json.encode(), env=_env(h.get("env")),
                           capture_output=True, timeout=h.get("timeout"),
                           close_fds=True, preexec_fn=_die_with_parent)
    except FileNotFoundError:
        raise RuntimeFailure(f"{kind} hook {path} does not exist") from None
    except PermissionError:
        raise RuntimeFailure(f"{kind} hook {path} is not executable") from None
    except subprocess.TimeoutExpired:
        raise RuntimeFailure(f"{kind} hook {path} timed out after {h.get('timeout')}s") from None
    if p.returncode != 0:
        tail = (p.stderr or p.stdout).decode(errors="replace").strip().splitlines()[-1:] or [""]
        raise RuntimeFailure(f"{kind} hook {path} failed with exit status {p.returncode}"
                             + (f": {tail[0]}" if tail[0] else ""))


def _die_with_parent() -> None:
    """A hook must not outlive a runtime killed with -9 midway (it would be orphaned)."""
    from kobako.linux import prctl

    prctl.set_pdeathsig(9)


def _env(env: list[str] | None) -> dict[str, str]:
    out = {}
    for e in env or []:
        k, _, v = e.partition("=")
        out[k] = v
    return out


def run_logged(hooks: dict | None, kind: str, state_json: str, log) -> None:
    """poststart / poststop: a failure is reported, not fatal, and the hooks after it
    still run (runtime.md, lifecycle steps 10 and 13)."""
    for h in (hooks or {}).get(kind) or []:
        try:
            run_one(h, kind, state_json, log)
        except RuntimeFailure as e:
            log.warning(str(e))


def has(hooks: dict | None, *kinds: str) -> bool:
    return any((hooks or {}).get(k) for k in kinds)


