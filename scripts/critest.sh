#!/bin/bash
# Run Kubernetes' CRI validation suite (critest, from kubernetes-sigs/cri-tools) against a
# private containerd 1.6 whose CRI plugin runs containers with kobako-runtime (or runc, to
# compare on the same machine). Longer than CI allows; docs/runtime.md records its results.
#
#   scripts/critest.sh [-r kobako|runc] [-c CRITEST] [-o REPORT] [-- CRITEST-ARGS...]
#
#   -r   the runtime handler's binary: kobako (this checkout's kobako-runtime, default) or runc
#   -c   the critest binary (default: $CRITEST, or /var/tmp/critools/build/critest); crictl
#        beside it, if there, removes the pods a failed spec left. Build them
#        from cri-tools v1.26.1 (the newest whose go.mod accepts Debian 12's Go 1.19), offline:
#          cd cri-tools && export CGO_ENABLED=0 GOFLAGS=-mod=vendor
#          go test -c -o build/critest ./cmd/critest && go build -o build/crictl ./cmd/crictl
#   -o   where the ginkgo summary and the failures are written (default: stdout only), and
#        critest's whole output beside it as REPORT.full
#   after --: more critest flags, e.g. --ginkgo.focus='Container'
#
# Needs root, containerd's binaries unpacked by scripts/test.sh, containernetworking-plugins,
# docker-registry. There is no internet: critest's images are stand-ins that kobako builds from
# the host's busybox and pushes to a registry on 127.0.0.1, which containerd uses as the mirror
# of registry.k8s.io and gcr.io. Everything lives in one scratch directory; containerd's network
# namespaces go under its state directory; its CNI bridge has no gateway address and no
# masquerading (the host's firewall and forwarding are not touched) and is deleted at the end,
# with the cgroups the pods made. Tests that need the portmap plugin (iptables rules on the
# host) are skipped.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
runtime=kobako critest=${CRITEST:-/var/tmp/critools/build/critest} report=""
while getopts "r:c:o:" opt; do
  case $opt in
    r) runtime=$OPTARG ;;
    c) critest=$OPTARG ;;
    o) report=$OPTARG ;;
    *) sed -n '2,13p' "$0" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ "${1:-}" = "--" ] && shift
[ "$(id -u)" = 0 ] || { echo "critest.sh: run as root" >&2; exit 1; }
ctd=/opt/kobako/test-tools/containerd/usr/bin
for f in "$ctd/containerd" /usr/lib/cni/bridge /usr/bin/docker-registry "$critest"; do
  [ -x "$f" ] || { echo "critest.sh: $f is missing (see the header of this script)" >&2; exit 1; }
done
py=${KOBAKO_PYTHON:-/opt/kobako/test-venv/bin/python}

d=$(mktemp -d /var/tmp/kbt-critest.XXXXXX)
chmod 755 "$d"
bridge=kbcrit$$ subnet=10.234.$(($$ % 250)).0/24
reg_port=$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
reg=127.0.0.1:$reg_port
cg_before=$(ls -d /sys/fs/cgroup/*/k8s.io/* /sys/fs/cgroup/k8s.io/* 2>/dev/null | sort || true)
had_run_dir=$([ -d /run/containerd ] && echo 1 || echo 0)
ctd_pid="" reg_pid=""

cleanup() {
  set +e
  if [ -n "$ctd_pid" ]; then
    # pods critest left (a failed spec's AfterEach may not run): their shims outlive containerd
    crictl=$(dirname "$critest")/crictl
    [ -x "$crictl" ] && "$crictl" --runtime-endpoint "unix://$d/c.sock" rmp -fa >/dev/null 2>&1
    kill "$ctd_pid"; wait "$ctd_pid" 2>/dev/null
  fi
  [ -n "$reg_pid" ] && { kill "$reg_pid"; wait "$reg_pid" 2>/dev/null; }
  # cgroups made since the start (no parent given: containerd puts them under /k8s.io)
  for c in $(comm -13 <(echo "$cg_before") <(ls -d /sys/fs/cgroup/*/k8s.io/* /sys/fs/cgroup/k8s.io/* \
             2>/dev/null | sort)); do
    find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null
  done
  for c in /sys/fs/cgroup/*/k8s.io /sys/fs/cgroup/k8s.io; do
    [ -d "$c" ] && [ -z "$(echo "$cg_before" | grep -F "$c/")" ] && rmdir "$c" 2>/dev/null
  done
  ip link del "$bridge" 2>/dev/null
  grep -F " $d" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l
  rm -rf "$d"
  if [ "$had_run_dir" = 0 ]; then rmdir /run/containerd/fifo /run/containerd/s /run/containerd 2>/dev/null; fi
}
trap cleanup EXIT

# -- the runtime handler's binary ---------------------------------------------------------
case $runtime in
  kobako)
    binary=$d/kobako-runtime
    printf '#!%s -I\nimport sys\nsys.path.insert(0, %s)\nfrom kobako.runtime.main import entry\nentry()\n' \
      "$py" "'$here'" >"$binary"
    chmod 755 "$binary" ;;
  runc) binary=$(command -v runc) ;;
  *) echo "critest.sh: -r kobako or -r runc" >&2; exit 2 ;;
esac

# -- a registry with critest's images (stand-ins built from busybox) ---------------------
cat >"$d/registry.yml" <<EOF
version: 0.1
storage: {filesystem: {rootdirectory: $d/registry}, delete: {enabled: true}}
http: {addr: $reg}
log: {level: error}
EOF
/usr/bin/docker-registry serve "$d/registry.yml" >"$d/registry.log" 2>&1 &
reg_pid=$!
rootfs=$d/rootfs
mkdir -p "$rootfs"/{bin,proc,dev,sys,tmp,etc,root,www,var/www}
chmod 1777 "$rootfs/tmp"
cp "$(command -v busybox)" "$rootfs/bin/busybox"
for a in $("$rootfs/bin/busybox" --list); do [ -e "$rootfs/bin/$a" ] || ln -s busybox "$rootfs/bin/$a"; done
printf 'root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33:www-data:/var/www:/bin/sh\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nwww-data:x:33:\n' >"$rootfs/etc/group"
echo '<html>kobako critest</html>' >"$rootfs/www/index.html"
export KOBAKO_ROOT=$d/kobako/data KOBAKO_RUN=$d/kobako/run KOBAKO_CONFIG=$d/kobako/config
kobako() { (cd "$here" && "$py" -m kobako.cli.main "$@"); }
for _ in $(seq 50); do curl -sf "http://$reg/v2/" >/dev/null && break; sleep 0.1; done
push() {  # push REPO:TAG [--change INSTRUCTION]...
  local name=$1; shift
  local args=(--change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
  for c in "$@"; do args+=(--change "$c"); done
  kobako import "${args[@]}" "$rootfs" "$reg/$name" >/dev/null
  kobako push "$reg/$name" >/dev/null
}
web='CMD ["httpd", "-f", "-p", "80", "-h", "/www"]'
push pause:3.6 'CMD ["sleep", "2147483647"]'
push e2e-test-images/busybox:1.29-2 'CMD ["sh"]'
push e2e-test-images/httpd:2.4.39-4 "$web" 'EXPOSE 80'
push e2e-test-images/nginx:1.14-2 "$web" 'EXPOSE 80'
push e2e-test-images/nonewprivs:1.3 'CMD ["sh"]'
push k8s-staging-cri-tools/hostnet-nginx-amd64:latest 'CMD ["httpd", "-f", "-p", "12003", "-h", "/www"]'
for n in test-image-latest:latest test-image-tag:test test-image-tag:all test-image-1:latest test-image-2:latest \
         test-image-3:latest test-image-tags:1 test-image-tags:2 test-image-tags:3; do
  push "k8s-staging-cri-tools/$n" 'CMD ["sh"]'
done
push k8s-staging-cri-tools/test-image-user-uid:latest 'USER 1002'
push k8s-staging-cri-tools/test-image-user-username:latest 'USER www-data'
push k8s-staging-cri-tools/test-image-user-uid-group:latest 'USER 1003:users'
push k8s-staging-cri-tools/test-image-user-username-group:latest 'USER www-data:www-data'
push k8s-staging-cri-tools/test-image-predefined-group:latest 'USER 1000:50000'

# -- containerd with the CRI plugin and the handler ----------------------------------------
mkdir -p "$d/cni"
cat >"$d/cni/10-kbt.conflist" <<EOF
{"cniVersion": "0.4.0", "name": "$bridge", "plugins": [{"type": "bridge", "bridge": "$bridge",
 "isGateway": false, "ipMasq": false,
 "ipam": {"type": "host-local", "subnet": "$subnet", "dataDir": "$d/ipam"}}]}
EOF
p='plugins."io.containerd.grpc.v1.cri"'
cat >"$d/config.toml" <<EOF
version = 2
root = "$d/root"
state = "$d/state"
[grpc]
  address = "$d/c.sock"
[ttrpc]
  address = "$d/c.sock.ttrpc"
[$p]
  sandbox_image = "$reg/pause:3.6"
  disable_apparmor = true
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
[$p.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "$runtime"
[$p.containerd.runtimes.$runtime]
  runtime_type = "io.containerd.runc.v2"
[$p.containerd.runtimes.$runtime.options]
  BinaryName = "$binary"
  Root = "$d/runc"
[$p.cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "$d/cni"
# critest's images keep their upstream names: those registries are mirrored by the local one
# (critest's --registry-prefix is no use: v1.26 creates containers under the unprefixed names)
[$p.registry.mirrors."registry.k8s.io"]
  endpoint = ["http://$reg"]
[$p.registry.mirrors."gcr.io"]
  endpoint = ["http://$reg"]
[$p.registry.mirrors."$reg"]
  endpoint = ["http://$reg"]
EOF
PATH=$ctd:$PATH "$ctd/containerd" --config "$d/config.toml" >"$d/containerd.log" 2>&1 &
ctd_pid=$!
for _ in $(seq 100); do [ -S "$d/c.sock" ] && break; sleep 0.1; done

# -- the suite -----------------------------------------------------------------------------
# Skipped: port mapping (the portmap plugin writes iptables rules on the host), and the
# image-digest test (its digest names an image on gcr.io that cannot be rebuilt here).
out=$d/critest.out
set +e
"$critest" --runtime-endpoint "unix://$d/c.sock" --image-endpoint "unix://$d/c.sock" \
  --ginkgo.skip 'port mapping|should support network with port mapping' \
  --ginkgo.noColor "$@" >"$out" 2>&1
rc=$?
set -e
summary=$(grep -E '^Ran [0-9]+ of|Passed \| [0-9]+ Failed|^(SUCCESS|FAIL)!' "$out" || true)
fails=$(sed -n '/^Summarizing [0-9]* Failure/,$p' "$out" || true)
{
  echo "critest against containerd + $runtime ($binary)"
  echo "$summary"
  echo "$fails"
} | tee ${report:+"$report"}
[ -z "$report" ] || cp "$out" "$report.full"
exit $rc
