"""kobako-runtime spec: write a default config.json (refuses to overwrite one)."""

import os

from kobako.runtime import jsonfast, spec
from kobako.runtime.errors import RuntimeFailure


def run(args, log) -> int:
    path = os.path.join(args.bundle, "config.json")
    if os.path.exists(path):
        raise RuntimeFailure(f"{path} exists", "remove it first")
    with open(path, "w") as f:
        f.write(jsonfast.dumps_pretty(spec.default(rootless=args.rootless or os.getuid() != 0)) + "\n")
    return 0
