"""The conformance suite's one local fixture: tidy crun's pass on a hybrid host.

crun 1.8 refuses this VM's hybrid cgroup layout, so its pass runs in a private mount
namespace with the cgroup2 mount at /sys/fs/cgroup/unified hidden (docs/conformance.md).
crun then makes a plain directory per container under that (now tmpfs) path, with a
regular file cgroup.procs in it, and never removes it. This fixture deletes each
container and removes those plain directories (only those named after this test's
containers, only when the path is not a mount) so the shared teardown's cgroup check
sees what matters. It does nothing otherwise.
"""

from __future__ import annotations

import os

import pytest
import support
from oci_support import UNIFIED, hidden_unified


@pytest.fixture(autouse=True)
def _crun_hidden_unified(request):
    if support.runtime_name() != "crun" or not hidden_unified() or "runtime" not in request.fixturenames:
        yield
        return
    rt = request.getfixturevalue("runtime")
    yield
    for cid in rt.ids:
        if rt._exists(cid):
            rt("delete", "--force", cid, timeout=40, fail_on_timeout=False)
        d = os.path.join(UNIFIED, cid)
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):  # crun writes cgroup.procs there as a regular file
            if name.startswith("cgroup.") and os.path.isfile(os.path.join(d, name)):
                os.unlink(os.path.join(d, name))
        os.rmdir(d)
