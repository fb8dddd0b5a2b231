"""kobako-runtime features: what this runtime implements, shaped like runc's output."""

import os

from kobako.linux import capabilities, mount
from kobako.runtime import jsonfast, seccomp, spec


def run(args, log) -> int:
    from kobako.runtime.main import SPEC_VERSION

    v2 = os.path.exists("/sys/fs/cgroup/cgroup.controllers") or os.path.isdir("/sys/fs/cgroup/unified")
    out = {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": SPEC_VERSION,
        "hooks": list(spec.HOOK_KINDS),
        "mountOptions": sorted(set(mount.FLAGS) | set(mount.PROPAGATION)),
        "linux": {
            "namespaces": list(spec.NAMESPACES),
            "capabilities": capabilities.NAMES[: capabilities.last_cap() + 1],
            "cgroup": {"v1": True, "v2": v2, "systemd": False, "systemdUser": False, "rdma": False},
            "seccomp": {"enabled": True, "actions": sorted(seccomp.ACTIONS.keys() - {"SCMP_ACT_NOTIFY"}),
                        "operators": sorted(seccomp.OPERATORS), "archs": sorted(seccomp.ARCHES)},
            "apparmor": {"enabled": False},
            "selinux": {"enabled": False},
            "intelRdt": {"enabled": False},
            "mountExtensions": {"idmap": {"enabled": False}},
        },
        "annotations": {"io.github.kobako.runtime.version": "0.1.0"},
    }
    print(jsonfast.dumps_pretty(out))
    return 0
