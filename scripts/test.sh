#!/bin/sh
# Install kobako and what the tests need (as root, on Debian 12) and run every test, from a venv
# of their own (/opt/kobako/test-venv):
# unit (no root), integration (real containers), security, conformance on this host, then
# the cgroup v2 suite (tests/v2vm/suite.txt) in a pure cgroup v2 VM (scripts/v2vm.sh).
# Arguments, if any, go to pytest instead of "tests", on this host only (KOBAKO_TEST_RUNTIME=runc
# runs the integration and conformance tests against runc).
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
[ "$(id -u)" = 0 ] || { echo "test.sh: run as root (the integration tests make real containers)" >&2; exit 1; }
"$here/scripts/install.sh" >/dev/null
need_pkgs=""
for p in iproute2 procps util-linux docker-registry openssl tar tini nftables debootstrap curl busybox-static \
    uidmap slirp4netns fuse-overlayfs containernetworking-plugins; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || need_pkgs="$need_pkgs $p"
done
if [ -n "$need_pkgs" ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need_pkgs >/dev/null
fi
# docker-compose v1 (Debian's, Python): never its recommended docker.io, whose post-install
# would start dockerd
if ! dpkg-query -W -f='${Status}' docker-compose 2>/dev/null | grep -q "ok installed"; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
         docker-compose >/dev/null; }
fi
# The docker CLI alone, for the API tests: unpacked from Debian's docker.io, whose daemon is
# never installed or started here (its post-install would start dockerd, which rewrites the
# host's firewall).
if ! command -v docker >/dev/null 2>&1; then
  d=$(mktemp -d)
  (cd "$d" && { apt-get download docker.io >/dev/null 2>&1 || { apt-get update -qq && apt-get download docker.io >/dev/null 2>&1; }; }) \
    && dpkg-deb -x "$d"/docker.io_*.deb "$d/x" && install -m 0755 "$d/x/usr/bin/docker" /usr/local/bin/docker
  rm -rf "$d"
fi
# containerd's binaries (containerd, its runc v2 shim, ctr), unpacked the same way: the tests
# run a private containerd that calls kobako-runtime
if [ ! -x /opt/kobako/test-tools/containerd/usr/bin/containerd ]; then
  d=$(mktemp -d)
  (cd "$d" && apt-get download containerd >/dev/null 2>&1) \
    && mkdir -p /opt/kobako/test-tools && dpkg-deb -x "$d"/containerd_*.deb /opt/kobako/test-tools/containerd
  rm -rf "$d"
fi
# The tests' own venv: this checkout, editable (the tests run its code), and the test tools
# (pytest, ruff, docker-py), none of which the installed kobako's venv carries.
TEST_VENV=${KOBAKO_TEST_VENV:-/opt/kobako/test-venv}
[ -x "$TEST_VENV/bin/python3" ] || /usr/bin/python3 -m venv "$TEST_VENV"
"$TEST_VENV/bin/pip" install -q --disable-pip-version-check -e "$here[test]"
py=$TEST_VENV/bin/python
cd "$here"
[ $# = 0 ] || exec "$py" -m pytest -q -p no:cacheprovider "$@"  # just some
rc=0
"$py" -m pytest -q -p no:cacheprovider tests || rc=$?
# Most hosts CI runs on are cgroup v1 or hybrid, where the v2 code paths never run: the
# tests that take them run again in a VM that is pure v2.  It fails the run like any
# test; a VM that cannot start fails it too (exit 125).  900 s bounds a hung VM.
echo '== the cgroup v2 suite, in a VM (README.md, "The cgroup v2 suite") =='
"$here/scripts/v2vm.sh" -t 900 -- env KOBAKO_PYTHON="$py" tests/v2vm/suite.sh || { echo "the cgroup v2 suite failed (exit $?)"; rc=1; }
exit $rc
