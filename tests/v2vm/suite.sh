#!/bin/bash
# The cgroup v2 suite: the tests listed in tests/v2vm/suite.txt (or, with arguments, those
# pytest arguments instead), run against this checkout on a pure cgroup v2 machine.
# CI runs it in a VM:  scripts/v2vm.sh tests/v2vm/suite.sh [PYTEST ARGS]
# On a host that is pure v2 already it runs as it is:  tests/v2vm/suite.sh
# A listed test that skips fails the suite: everything listed must run on cgroup v2.
set -eu
here=$(cd "$(dirname "$0")/../.." && pwd)
py=${KOBAKO_PYTHON:-/opt/kobako/test-venv/bin/python}  # scripts/test.sh makes it
cd "$here"

if [ "$(stat -fc %T /sys/fs/cgroup)" != cgroup2fs ] || grep -q ' - cgroup ' /proc/self/mountinfo; then
    echo "v2 suite: this machine is not pure cgroup v2 (/sys/fs/cgroup is $(stat -fc %T /sys/fs/cgroup));" \
         "run it in the VM: scripts/v2vm.sh tests/v2vm/suite.sh" >&2
    exit 2
fi

# `kobako-runtime` runs this checkout, as scripts/install.sh's launcher does, from a
# directory of our own put first on PATH (the host's launcher may point elsewhere)
bin=$(mktemp -d /tmp/v2suite.XXXXXX)
trap 'rm -rf "$bin"' EXIT
site=$("$py" -c 'import sys; print(sys.path[-1])')
cat > "$bin/kobako-runtime" <<PY
#!$py -IS
import sys
sys.path[:0] = ["$here", "$site"]
from kobako.runtime.main import entry
entry()
PY
chmod 755 "$bin/kobako-runtime"
export PATH=$bin:$PATH
# under emulation everything is 10-30x slower: the tests' waits for events stretch 4x
export KOBAKO_TEST_TIME_SCALE=${KOBAKO_TEST_TIME_SCALE:-4}

if [ $# = 0 ]; then
    mapfile -t tests < <(sed 's/#.*//; /^[[:space:]]*$/d; s/[[:space:]]*$//' tests/v2vm/suite.txt)
    set -- "${tests[@]}"
fi
echo "v2 suite: kernel $(uname -r), controllers: $(cat /sys/fs/cgroup/cgroup.subtree_control)"
rc=0
"$py" -m pytest -v -rfEs --durations=8 -p no:cacheprovider --junitxml="$bin/junit.xml" "$@" || rc=$?
# counts from the report, and a skip is a failure here: a listed test that cannot run on
# v2 tests nothing
"$py" - "$bin/junit.xml" "$rc" <<'PY'
import os
import sys
import xml.etree.ElementTree as ET

if not os.path.exists(sys.argv[1]):
    sys.exit(f"v2 suite: FAILED: pytest wrote no report (exit status {sys.argv[2]})")
suite = ET.parse(sys.argv[1]).getroot().find("testsuite")
n = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
passed = n["tests"] - n["failures"] - n["errors"] - n["skipped"]
print(f"v2 suite: {n['tests']} tests on cgroup v2: {passed} passed, {n['failures']} failed, "
      f"{n['errors']} errors, {n['skipped']} skipped")
if n["skipped"]:
    print("v2 suite: FAILED: a listed test skipped on cgroup v2 (see the reasons above)")
sys.exit(1 if n["skipped"] or int(sys.argv[2]) else 0)
PY
