#!/bin/sh
# Install kobako on a Debian 12 machine, as root (docs/install.md): Debian's packages, a venv
# built from Debian's /usr/bin/python3 (3.11) at /opt/kobako/venv holding a wheel of this
# checkout (not tied to it: the clone may be deleted afterwards), fast launchers in
# /usr/local/bin, man pages and shell completion generated from the command tables, the
# systemd units of contrib/ (not enabled), and a busybox OCI bundle and image (from
# busybox-static, no internet). Run again to upgrade in place; --uninstall to remove.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=${KOBAKO_PREFIX:-/opt/kobako}
BIN=${KOBAKO_BIN:-/usr/local/bin}
SHARE=${KOBAKO_SHARE:-/usr/local/share}
# fish reads vendor completions from /usr/share only (its XDG_DATA_DIRS default)
if [ -n "${KOBAKO_SHARE:-}" ]; then FISH_DIR=$SHARE/fish/vendor_completions.d
else FISH_DIR=/usr/share/fish/vendor_completions.d; fi
FISH_DIR=${KOBAKO_FISH_DIR:-$FISH_DIR}
UNITS=${KOBAKO_UNITS:-/usr/local/lib/systemd/system}
BUNDLE=${KOBAKO_BUNDLE:-/var/lib/kobako/bundles/busybox}
MAN=$SHARE/man/man1
BASH_COMP=$SHARE/bash-completion/completions/kobako
ZSH_COMP=$SHARE/zsh/site-functions/_kobako
FISH_COMP=$FISH_DIR/kobako.fish
UNIT_NAMES="kobako.socket kobako.service kobako-restore.service kobako-firewall.service"

usage() {
  cat <<EOF
Usage: scripts/install.sh [--uninstall [--purge]]

  (no option)    install kobako, or upgrade an existing install in place
  --uninstall    remove what install.sh put on this machine: the venv ($PREFIX/venv),
                 the launchers ($BIN/kobako, $BIN/kobako-runtime), man pages ($MAN),
                 shell completion, systemd units ($UNITS), the busybox bundle ($BUNDLE);
                 images, containers, volumes and networks are kept
  --purge        with --uninstall: also remove every container, network and the store
                 (\${KOBAKO_ROOT:-/var/lib/kobako}, \${KOBAKO_RUN:-/run/kobako}); refused
                 while containers are running (stop them first)
  -h, --help     this text

Where things go: KOBAKO_PREFIX (/opt/kobako), KOBAKO_BIN (/usr/local/bin), KOBAKO_SHARE
(/usr/local/share: man pages, bash and zsh completion), KOBAKO_FISH_DIR
(/usr/share/fish/vendor_completions.d), KOBAKO_UNITS (/usr/local/lib/systemd/system),
KOBAKO_BUNDLE (/var/lib/kobako/bundles/busybox).
EOF
}

mode=install purge=""
for a in "$@"; do
  case $a in
    --uninstall) mode=uninstall ;;
    --purge) purge=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown option $a" >&2; usage >&2; exit 2 ;;
  esac
done
[ -z "$purge" ] || [ "$mode" = uninstall ] || { echo "install.sh: --purge goes with --uninstall" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "install.sh: run as root" >&2; exit 1; }

# systemd runs this machine and reads units from $UNITS (not so for a test's private prefix)
systemd_manages() {
  [ -d /run/systemd/system ] && systemd-analyze unit-paths 2>/dev/null | grep -qxF "$UNITS"
}

# Remove every container and network, so no mount, network namespace, bridge or nft table
# of kobako's outlives its store; refused while a container runs.
purge_store() {
  k="$BIN/kobako"
  root=${KOBAKO_ROOT:-/var/lib/kobako} run=${KOBAKO_RUN:-/run/kobako}
  if [ -x "$k" ] && [ -d "$root" ]; then
    running=$("$k" ps -q) || { echo "install.sh: 'kobako ps' failed; store kept" >&2; exit 1; }
    if [ -n "$running" ]; then
      echo "install.sh: $(echo "$running" | wc -l) container(s) running; stop them first" \
        "(kobako stop \$(kobako ps -q)), then run --uninstall --purge again; nothing was removed" >&2
      exit 1
    fi
    ids=$("$k" ps -aq)
    [ -z "$ids" ] || "$k" rm -f -v $ids >/dev/null
    "$k" network prune -f >/dev/null
    # the default network's bridge and kobako's nft table: objects only kobako made
    br=$("$k" network inspect -f '{{index .Options "com.docker.network.bridge.name"}}' bridge 2>/dev/null || true)
    [ -z "$br" ] || ! [ -e "/sys/class/net/$br" ] || ip link delete "$br"
    table=$("$PREFIX/venv/bin/python3" -c 'import sys; from kobako.network.networks import table_name
print(table_name(sys.argv[1]))' "$run")
    ! nft list table inet "$table" >/dev/null 2>&1 || nft delete table inet "$table"
  fi
  # what a kill -9 left mounted under the two roots (deepest first)
  for d in "$root" "$run"; do
    [ -d "$d" ] || continue
    findmnt -rn -o TARGET | grep -E "^$d(/|\$)" | sort -r | while read -r m; do umount -l "$m"; done
  done
  rm -rf "$root" "$run"
  echo "store removed: $root $run"
}

uninstall() {
  if systemd_manages; then
    for u in $UNIT_NAMES; do
      if [ -f "$UNITS/$u" ]; then systemctl disable --now "$u" >/dev/null 2>&1 || true; fi
    done
  fi
  [ -z "$purge" ] || purge_store
  for f in "$BIN/kobako" "$BIN/kobako-runtime"; do  # only launchers of this install
    if [ -f "$f" ] && head -1 "$f" | grep -qF "$PREFIX/venv/bin/python3"; then rm -f "$f"; fi
  done
  rm -f "$MAN/kobako.1.gz" "$MAN"/kobako-*.1.gz "$BASH_COMP" "$ZSH_COMP" "$FISH_COMP"
  for u in $UNIT_NAMES; do rm -f "$UNITS/$u"; done
  if systemd_manages; then systemctl daemon-reload; fi
  rm -rf "$PREFIX/venv" "$BUNDLE"
  rmdir "$PREFIX" "$(dirname "$BUNDLE")" 2>/dev/null || true
  echo "kobako uninstalled${purge:+, store purged}"
}
[ "$mode" = install ] || { uninstall; exit 0; }

need_pkgs=""
for p in python3 python3-venv busybox-static libseccomp2 tini nftables iproute2 man-db; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || need_pkgs="$need_pkgs $p"
done
if [ -n "$need_pkgs" ]; then
  echo "installing Debian packages:$need_pkgs"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need_pkgs >/dev/null
fi

# Debian's interpreter, never a pyenv one first on PATH: start-up is measured.
[ -x "$PREFIX/venv/bin/python3" ] || /usr/bin/python3 -m venv "$PREFIX/venv"
py="$PREFIX/venv/bin/python3"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# A wheel of this checkout, built from a copy: setuptools' build/ and egg-info never land in
# the clone, nor stale files of an earlier build in the wheel.
mkdir "$work/src"
tar -C "$here" --exclude=__pycache__ -cf - kobako pyproject.toml README.md | tar -C "$work/src" -xf -
"$PREFIX/venv/bin/pip" wheel -q --disable-pip-version-check --no-deps -w "$work/dist" "$work/src" >/dev/null
wheel=$(ls "$work"/dist/kobako-*.whl)
# its dependencies, then kobako itself replacing whatever kobako was there (same version too)
"$PREFIX/venv/bin/pip" install -q --disable-pip-version-check "$wheel"
"$PREFIX/venv/bin/pip" install -q --disable-pip-version-check --force-reinstall --no-deps "$wheel"
site=$("$py" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
# byte-compiled now, as root: modules only ordinary users import (rootless kobako) would
# otherwise be compiled on every command, since a user cannot write their __pycache__
"$py" -m compileall -q "$site/kobako" >/dev/null

# pip's console scripts import `re` and site-packages (~15 ms): the launchers run the venv's
# python with -I -S (isolated, no site) and name the venv's site-packages, nothing else.
mkdir -p "$BIN"
write_launcher() {  # name module
  cat > "$BIN/$1.tmp" <<PY
#!$py -IS
import sys
sys.path[:0] = ["$site"]
from $2 import entry
entry()
PY
  chmod 755 "$BIN/$1.tmp"; mv "$BIN/$1.tmp" "$BIN/$1"
}
write_launcher kobako-runtime kobako.runtime.main
write_launcher kobako kobako.cli.main

# Man pages and completion, generated from the installed command tables.
"$py" -m kobako.cli.reference man "$work/man" >/dev/null
mkdir -p "$MAN"
rm -f "$MAN/kobako.1.gz" "$MAN"/kobako-*.1.gz  # pages of commands an upgrade removed
for f in "$work"/man/*.1; do
  if [ -L "$f" ]; then ln -s "$(readlink "$f").gz" "$MAN/$(basename "$f").gz"
  else gzip -9n < "$f" > "$MAN/$(basename "$f").gz"; chmod 644 "$MAN/$(basename "$f").gz"; fi
done
mkdir -p "$(dirname "$BASH_COMP")" "$(dirname "$ZSH_COMP")" "$FISH_DIR"
"$BIN/kobako" completion bash > "$BASH_COMP"
"$BIN/kobako" completion zsh > "$ZSH_COMP"
"$BIN/kobako" completion fish > "$FISH_COMP"

# systemd units (the API socket, restore at boot, nft table after a firewall reload):
# installed, not enabled (docs/api.md, docs/networking.md)
mkdir -p "$UNITS"
for u in $UNIT_NAMES; do
  sed "s#/usr/local/bin/kobako#$BIN/kobako#g" "$here/contrib/$u" > "$UNITS/$u"
done
if systemd_manages; then
  systemctl daemon-reload
  systemctl try-restart kobako.service >/dev/null 2>&1 || true  # a running API serves the new code
fi

# A busybox bundle for the quick start, built from Debian's busybox-static.
if [ ! -x "$BUNDLE/rootfs/bin/busybox" ]; then
  rm -rf "$BUNDLE"; mkdir -p "$BUNDLE/rootfs"
  r="$BUNDLE/rootfs"
  mkdir -p "$r/bin" "$r/proc" "$r/dev" "$r/sys" "$r/tmp" "$r/etc" "$r/root" "$r/var"
  cp /bin/busybox "$r/bin/busybox"
  for a in $("$r/bin/busybox" --list); do [ -e "$r/bin/$a" ] || ln -s busybox "$r/bin/$a"; done
  echo 'root:x:0:0:root:/root:/bin/sh' > "$r/etc/passwd"; echo 'root:x:0:' > "$r/etc/group"
  (cd "$BUNDLE" && "$BIN/kobako-runtime" spec)
  "$py" - "$BUNDLE/config.json" <<'PY'
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
echo "kobako installed: $BIN/kobako, $BIN/kobako-runtime (venv $PREFIX/venv); man kobako; image $IMAGE; bundle at $BUNDLE"
