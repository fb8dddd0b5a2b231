"""docker-py's own integration suite (6.1.3, the tests its sdist ships) against kobako's API
socket, through the shared harness of ../shared/clients (kobako in a private network
namespace, an offline registry as the docker.io mirror, stand-ins for busybox, alpine and
hello-world). The harness excludes only what no engine here can pass (swarm services,
Docker Hub plugins, the internet).

Every test that fails today is listed below with the reason and the work that fixes it. A
failure not on the list fails this test, and so does a listed test that now passes: the
list stays the truth."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.root
REPO = Path(__file__).resolve().parents[2]
CLIENTS = REPO.parent / "shared" / "clients"

KNOWN_FAILING = {
    "api_plugin_test.py::PluginTest::test_create_plugin":
        "kobako has no plugin system (managed plugins are Docker's); refused with 501",
}


def test_docker_py_suite_fails_only_where_the_list_says(tmp_path: Path):
    harness = CLIENTS / "kobako-engine.sh"
    kobako = shutil.which("kobako")
    if not harness.exists() or kobako is None or shutil.which("docker-registry") is None:
        pytest.skip("needs ../shared/clients, an installed kobako and Debian's docker-registry")
    env = {**os.environ, "KOBAKO": kobako, "DOCKERPY_LOGDIR": str(tmp_path), "TAILN": "4"}
    cp = subprocess.run(["bash", str(harness), "run", str(CLIENTS / "dockerpy.sh")], env=env,
                        capture_output=True, text=True, timeout=1800)
    log = cp.stdout + cp.stderr
    summary = [ln for ln in log.splitlines() if " passed, " in ln and ln.endswith(" failed")]
    assert summary, f"the harness gave no score:\n{log[-3000:]}"
    rows = [ln.split("\t") for ln in (tmp_path / "results.tsv").read_text().splitlines()]
    final = {r[1]: r[2] for r in rows if r[0] == "result"}
    final.update({r[1]: r[2] for r in rows if r[0] == "rerun-result" and r[2] in ("passed", "xpassed")})
    collected = {r[1] for r in rows if r[0] == "collected"}
    failed = {n.removeprefix("tests/integration/") for n in collected
              if final.get(n, "notrun") in ("failed", "notrun")}
    passed = {n.removeprefix("tests/integration/") for n in collected
              if final.get(n) in ("passed", "xpassed")}
    new = sorted(failed - set(KNOWN_FAILING))
    fixed = sorted(set(KNOWN_FAILING) & passed)
    assert not new, f"docker-py tests that fail and are not known to ({summary[-1]}):\n" + "\n".join(new)
    assert not fixed, "known failures that pass now: take them off KNOWN_FAILING:\n" + "\n".join(fixed)
