#!/bin/sh
# Install what the tests need (as root, on Debian 12) and run every test:
# unit (no root), integration (real containers), security, conformance.
# Arguments, if any, go to pytest instead of "tests" (KOBAKO_TEST_RUNTIME=runc runs the
# integration and conformance tests against runc).
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
[ "$(id -u)" = 0 ] || { echo "test.sh: run as root (the integration tests make real containers)" >&2; exit 1; }
"$here/scripts/install.sh" >/dev/null
need_pkgs=""
for p in iproute2 procps util-linux docker-registry openssl tar tini nftables debootstrap curl busybox-static \
    uidmap slirp4netns fuse-overlayfs; do
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
/opt/kobako/venv/bin/pip install -q --disable-pip-version-check -e "$here[test]"
cd "$here"
[ $# -gt 0 ] || set -- tests  # or just some: ./scripts/test.sh tests/conformance
exec /opt/kobako/venv/bin/python -m pytest -q -p no:cacheprovider "$@"
