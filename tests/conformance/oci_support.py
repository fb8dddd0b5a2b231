"""Helpers shared by the conformance tests (imported as `oci_support`)."""

from __future__ import annotations

import os

import support

UNIFIED = os.path.join(support.CGROUP_ROOT, "unified")


def hidden_unified() -> bool:
    """True in crun's pass: /sys/fs/cgroup/unified exists but is not a mount (the
    cgroup2 mount was hidden in a private mount namespace, see docs/conformance.md)."""
    mounted = any(line.split()[4] == UNIFIED for line in support.mountinfo_lines())
    return os.path.isdir(UNIFIED) and not mounted


def cgroup_dirs(cid: str) -> list[str]:
    """support.cgroup_dirs, less the plain tmpfs directories crun makes under a hidden
    /sys/fs/cgroup/unified (they are not cgroups)."""
    dirs = support.cgroup_dirs(cid)
    if hidden_unified():
        dirs = [d for d in dirs if not d.startswith(UNIFIED + "/")]
    return dirs


def run_sh(runtime, bundle, script, edit=None, tag="c"):
    """Run `sh -c script` in a fresh container; returns its stdout (asserting exit 0)."""
    b = bundle(["sh", "-c", script], edit=edit)
    cid = runtime.new_id(tag)
    cp = runtime("run", "--bundle", b.path, cid)
    assert cp.returncode == 0, f"run exited {cp.returncode}\nstdout: {cp.stdout}\nstderr: {cp.stderr}"
    return cp.stdout
