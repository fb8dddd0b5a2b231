#!/bin/sh
# Install kobako on a Debian 12 machine, as root: Debian's packages, a venv built
# from Debian's /usr/bin/python3 (3.11) at /opt/kobako/venv, fast launchers in
# /usr/local/bin, and a busybox OCI bundle (from busybox-static, no internet) at
# /var/lib/kobako/bundles/busybox.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=${KOBAKO_PREFIX:-/opt/kobako}
BIN=${KOBAKO_BIN:-/usr/local/bin}
BUNDLE=${KOBAKO_BUNDLE:-/var/lib/kobako/bundles/busybox}
[ "$(id -u)" = 0 ] || { echo "install.sh: run as root" >&2; exit 1; }

need_pkgs=""
for p in python3 python3-venv busybox-static libseccomp2 tini nftables iproute2; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || need_pkgs="$need_pkgs $p"
done
if [ -n "$need_pkgs" ]; then
  echo "installing Debian packages:$need_pkgs"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need_pkgs >/dev/null
fi

# Debian's interpreter, never a pyenv one first on PATH: start-up is measured.
[ -x "$PREFIX/venv/bin/python3" ] || /usr/bin/python3 -m venv "$PREFIX/venv"
"$PREFIX/venv/bin/pip" install -q --disable-pip-version-check -e "$here"
# byte-compiled now, as root: modules only ordinary users import (rootless kobako) would
# otherwise be compiled on every command, since a user cannot write their __pycache__
"$PREFIX/venv/bin/python3" -m compileall -q "$here/kobako" >/dev/null

# pip's console scripts import `re` and site-packages (~15 ms). kobako-runtime is
# stdlib-only, so its launcher runs Debian's python with -I -S (isolated, no site).
site=$("$PREFIX/venv/bin/python3" -c 'import sys; print(sys.path[-1])')
write_launcher() {  # name module
  cat > "$BIN/$1.tmp" <<PY
#!$PREFIX/venv/bin/python3 -IS
import sys
sys.path[:0] = ["$here", "$site"]
from $2 import entry
entry()
PY
  chmod 755 "$BIN/$1.tmp"; mv "$BIN/$1.tmp" "$BIN/$1"
}
write_launcher kobako-runtime kobako.runtime.main
write_launcher kobako kobako.cli.main

# A busybox bundle for the quick start, built from Debian's busybox-static.
if [ ! -x "$BUNDLE/rootfs/bin/busybox" ]; then
  rm -rf "$BUNDLE"; mkdir -p "$BUNDLE/rootfs"
  r="$BUNDLE/rootfs"
  mkdir -p "$r/bin" "$r/proc" "$r/dev" "$r/sys" "$r/tmp" "$r/etc" "$r/root" "$r/var"
  cp /bin/busybox "$r/bin/busybox"
  for a in $("$r/bin/busybox" --list); do [ -e "$r/bin/$a" ] || ln -s busybox "$r/bin/$a"; done
  echo 'root:x:0:0:root:/root:/bin/sh' > "$r/etc/passwd"; echo 'root:x:0:' > "$r/etc/group"
  (cd "$BUNDLE" && "$BIN/kobako-runtime" spec)
  "$PREFIX/venv/bin/python3" - "$BUNDLE/config.json" <<'PY'
import json, sys
p = sys.argv[1]
c = json.load(open(p))
c["process"]["terminal"] = False
c["process"]["args"] = ["/bin/sh", "-c", "echo hello from $(hostname): pid $$, interfaces: $(ls /sys/class/net)"]
json.dump(c, open(p, "w"), indent=2)
PY
fi
# The same root filesystem as an image, for `kobako run` without a registry.
IMAGE=localhost/busybox:latest
if ! "$BIN/kobako" image inspect "$IMAGE" >/dev/null 2>&1; then
  "$BIN/kobako" import -q -c 'CMD ["/bin/sh", "-c", "echo hello from $(hostname): pid $$, interfaces: $(ls /sys/class/net)"]' \
    "$BUNDLE/rootfs" "$IMAGE" >/dev/null
fi
echo "kobako installed: $BIN/kobako, $BIN/kobako-runtime; image $IMAGE; bundle at $BUNDLE"
