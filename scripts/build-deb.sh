#!/bin/sh
# Build a Debian package of this checkout with dpkg-deb (docs/install.md, "A Debian package"):
# kobako and its PyPI dependencies in a venv at /opt/kobako/venv, launchers in /usr/bin, man
# pages, shell completion and the systemd units of contrib/ (not enabled).
#   scripts/build-deb.sh [OUTDIR]     -> OUTDIR/kobako_<version>_amd64.deb (default: .)
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
out=$(cd "${1:-.}" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
stage=$work/pkg
venv=/opt/kobako/venv
site=$venv/lib/python3.11/site-packages
[ "$(/usr/bin/python3 -c 'import sys; print(sys.version_info[:2] == (3, 11))')" = True ] \
  || { echo "build-deb.sh: needs Debian 12's python3 (3.11)" >&2; exit 1; }

# the wheel, as install.sh builds it, and a build venv with pip to unpack it and its dependencies
mkdir "$work/src"
tar -C "$here" --exclude=__pycache__ -cf - kobako pyproject.toml README.md | tar -C "$work/src" -xf -
/usr/bin/python3 -m venv "$work/bv"
"$work/bv/bin/pip" wheel -q --disable-pip-version-check --no-deps -w "$work/dist" "$work/src" >/dev/null
wheel=$(ls "$work"/dist/kobako-*.whl)
version=$(basename "$wheel" | cut -d- -f2)
# the venv in the package: a venv's layout, made at its final path's place in the stage (a
# venv is not relocatable: only python3 and pyvenv.cfg are kept, which name no path of ours)
/usr/bin/python3 -m venv --without-pip "$stage$venv"
"$work/bv/bin/pip" install -q --disable-pip-version-check --no-compile --target "$stage$site" "$wheel"
rm -rf "$stage$site"/bin "$stage$venv"/bin/activate* "$stage$venv"/bin/Activate.ps1 \
  "$stage$site"/kobako-*.dist-info/direct_url.json
sed -i '/^command = /d' "$stage$venv/pyvenv.cfg"  # it names the stage
/usr/bin/python3 -m compileall -q -s "$stage" -p / "$stage$site" >/dev/null

mkdir -p "$stage/usr/bin"
for pair in kobako:kobako.cli.main kobako-runtime:kobako.runtime.main; do
  printf '#!%s -IS\nimport sys\nsys.path[:0] = ["%s"]\nfrom %s import entry\nentry()\n' \
    "$venv/bin/python3" "$site" "${pair#*:}" > "$stage/usr/bin/${pair%%:*}"
  chmod 755 "$stage/usr/bin/${pair%%:*}"
done

kobako() { /usr/bin/python3 -IS -c "import sys; sys.path[:0] = ['$stage$site']; sys.argv[0] = 'kobako'
from kobako.cli.main import entry; entry()" "$@"; }
man=$stage/usr/share/man/man1
PYTHONPATH="$stage$site" /usr/bin/python3 -m kobako.cli.reference man "$work/man" >/dev/null
mkdir -p "$man"
for f in "$work"/man/*.1; do
  if [ -L "$f" ]; then ln -s "$(readlink "$f").gz" "$man/$(basename "$f").gz"
  else gzip -9n < "$f" > "$man/$(basename "$f").gz"; fi
done
mkdir -p "$stage/usr/share/bash-completion/completions" "$stage/usr/share/zsh/vendor-completions" \
  "$stage/usr/share/fish/vendor_completions.d" "$stage/lib/systemd/system" "$stage/usr/share/doc/kobako"
kobako completion bash > "$stage/usr/share/bash-completion/completions/kobako"
kobako completion zsh > "$stage/usr/share/zsh/vendor-completions/_kobako"
kobako completion fish > "$stage/usr/share/fish/vendor_completions.d/kobako.fish"
for u in kobako.socket kobako.service kobako-restore.service kobako-firewall.service; do
  sed 's#/usr/local/bin/kobako#/usr/bin/kobako#g' "$here/contrib/$u" > "$stage/lib/systemd/system/$u"
done
cp "$here/README.md" "$stage/usr/share/doc/kobako/"

mkdir -p "$stage/DEBIAN"
cat > "$stage/DEBIAN/control" <<EOF
Package: kobako
Version: $version
Architecture: $(dpkg --print-architecture)
Maintainer: kobako <kobako@localhost>
Depends: python3 (>= 3.11), python3 (<< 3.12), libseccomp2, nftables, iproute2, tini
Recommends: man-db, bash-completion, busybox-static
Suggests: uidmap, slirp4netns, fuse-overlayfs
Installed-Size: $(du -sk "$stage" | cut -f1)
Section: admin
Priority: optional
Homepage: https://github.com/kobako
Description: container engine built from Linux primitives, in Python
 kobako runs containers with Docker's verbs and flags, daemonless, and serves the
 Docker Engine API; kobako-runtime is an OCI runtime with runc's command line.
EOF
deb="$out/kobako_${version}_$(dpkg --print-architecture).deb"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "$deb"
