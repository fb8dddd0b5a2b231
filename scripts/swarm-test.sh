#!/usr/bin/env bash
# Docker Swarm with kobako-runtime as every node's OCI runtime, on "hosts" made here.
#
# Each host is a network + mount namespace (its own sysfs, a tmpfs on /run and /etc/docker,
# the machine's cgroups), joined to the others by an underlay bridge in a namespace of its
# own (192.168.234.0/24). On each host runs Debian's dockerd (unpacked from docker.io, never
# installed: its post-install would start a system dockerd) with its own data root, exec
# root, socket and containerd (dockerd starts it), and
#     --add-runtime kobako=<kobako-runtime> --default-runtime kobako
# Then: swarm init on the first host, join on the others (all managers, so any can be
# asked); a replicated service spread over every node; scaled up and down; a rolling update
# (--env-add, then --image); a node drained, its tasks moving to the others. Each running
# task's container is checked to have been made by kobako-runtime: HostConfig.Runtime,
# the runtime's state directory under the exec root, and a call log the runtime wrapper
# keeps (it also records the flags dockerd's shim passes: docs/runtime.md).
#
# Usage: scripts/swarm-test.sh [-n NODES] [-k]   (as root; NODES 2 or 3, default 3; -k keeps
# the work directory's logs, everything else is removed). KOBAKO_RUNTIME=path runs that
# runtime instead of this checkout's code. Takes one to two minutes.
# Exit 0: all passed; 1: a check failed; 77: dockerd/containerd/busybox unavailable.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
nodes=3 keep=0
while getopts n:k o; do
  case $o in n) nodes=$OPTARG ;; k) keep=1 ;; *) exit 2 ;; esac
done
case $nodes in 2|3) ;; *) echo "swarm-test: -n takes 2 or 3" >&2; exit 2 ;; esac
[ "$(id -u)" = 0 ] || { echo "swarm-test: run as root" >&2; exit 1; }

TOOLS=/opt/kobako/test-tools
DOCKERD=$TOOLS/docker/usr/sbin/dockerd
DOCKER=$TOOLS/docker/usr/bin/docker
CTRD=$TOOLS/containerd/usr/bin
unpack() {  # PACKAGE DIR: Debian's package unpacked, never installed
  local d; d=$(mktemp -d)
  (cd "$d" && { apt-get download "$1" >/dev/null 2>&1 || { apt-get update -qq && apt-get download "$1" >/dev/null 2>&1; }; }) \
    && mkdir -p "$2" && dpkg-deb -x "$d/$1"_*.deb "$2"
  rm -rf "$d"
}
[ -x "$DOCKERD" ] || unpack docker.io "$TOOLS/docker" || true
[ -x "$CTRD/containerd" ] || unpack containerd "$TOOLS/containerd" || true
skip() { echo "skip: $*"; exit 77; }
[ -x "$DOCKERD" ] && [ -x "$DOCKER" ] || skip "dockerd is not available (apt-get download docker.io failed)"
[ -x "$CTRD/containerd" ] && [ -x "$CTRD/containerd-shim-runc-v2" ] || skip "containerd is not available"
rootfs=${KOBAKO_BUSYBOX_ROOTFS:-/var/lib/kobako/bundles/busybox/rootfs}
[ -x "$rootfs/bin/busybox" ] || skip "no busybox rootfs at $rootfs"
command -v iptables >/dev/null || skip "iptables is not installed (dockerd needs it)"

w=$(mktemp -d /var/tmp/kbswarm.XXXXXX)
hosts=(a b c); hosts=("${hosts[@]:0:$nodes}")
tag=kbsw$$  # names of the namespaces and cgroups made here
declare -A HOLD DPID IP
fail() { echo "FAIL: $*" >&2; exit 1; }
say() { echo "== $*"; }

cleanup() {
  set +e
  for h in "${hosts[@]}"; do  # dockerd stops its containers and its containerd
    [ -n "${DPID[$h]:-}" ] && kill -TERM "${DPID[$h]}" 2>/dev/null
  done
  for h in "${hosts[@]}"; do
    [ -n "${DPID[$h]:-}" ] || continue
    for _ in $(seq 150); do kill -0 "${DPID[$h]}" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "${DPID[$h]}" 2>/dev/null
  done
  # containerd leaves its shims running when it stops (they outlive restarts by design):
  # ours are those whose command line names this work directory; by PID
  for p in /proc/[0-9]*; do
    tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -q -- "$w/" && kill -TERM "${p#/proc/}" 2>/dev/null
  done
  sleep 1
  for h in "${hosts[@]}"; do [ -n "${HOLD[$h]:-}" ] && kill "${HOLD[$h]}" 2>/dev/null; done
  sleep 0.3
  for h in "${hosts[@]}" u; do ip netns del "$tag-$h" 2>/dev/null; done
  grep -o " $w[^ ]*" /proc/self/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
  # a task that outlived a dockerd killed mid-shutdown: in our cgroups, by PID
  for p in $(cat /sys/fs/cgroup/*/"$tag"-*/*/cgroup.procs 2>/dev/null | sort -u); do kill -KILL "$p" 2>/dev/null; done
  sleep 0.3
  for d in /sys/fs/cgroup/*/"$tag"-*; do  # the cgroups dockerd's --cgroup-parent named
    [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null
  done
  if [ "$keep" = 1 ]; then
    find "$w" -mindepth 1 ! -name '*.log' ! -type d -delete 2>/dev/null; find "$w" -mindepth 1 -depth -type d -empty -delete
    echo "logs kept in $w"
  else
    rm -rf "$w"
  fi
}
trap cleanup EXIT
trap 'echo "FAIL: line $LINENO: $BASH_COMMAND" >&2' ERR  # a step set -e ends, named

on() {  # HOST CMD...: in that host's network + mount namespaces
  local h=$1; shift
  nsenter -t "${HOLD[$h]}" -m -n "$@"
}
dk() {  # HOST DOCKER-ARGS...: the docker CLI against that host's dockerd
  local h=$1; shift
  DOCKER_CONFIG=$w/cli timeout 120 "$DOCKER" -H "unix://$w/$h/docker.sock" "$@"
}
wait_for() {  # SECONDS WHAT CMD...: until CMD succeeds
  local t=$1 what=$2; shift 2
  for _ in $(seq $((t * 2))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
  fail "$what (after ${t}s)"
}

# The runtime dockerd's shim calls: a wrapper that logs each call (arguments, one line) and
# runs this checkout's kobako-runtime (or KOBAKO_RUNTIME).
if [ -n "${KOBAKO_RUNTIME:-}" ]; then
  runtime_cmd="exec $KOBAKO_RUNTIME \"\$@\""
else
  runtime_cmd="exec /usr/bin/python3 -I -c 'import sys; sys.path.insert(0, \"$here\"); from kobako.runtime.main import entry; entry()' \"\$@\""
fi
cat >"$w/kobako-runtime" <<EOF
#!/bin/sh
echo "\$*" >>"$w/runtime-calls.log"
$runtime_cmd
EOF
chmod 0755 "$w/kobako-runtime"

say "hosts ${hosts[*]}: network + mount namespaces, an underlay bridge between them"
ip netns add "$tag-u" || fail "ip netns add failed"
ip -n "$tag-u" link add br0 type bridge && ip -n "$tag-u" link set br0 up && ip -n "$tag-u" link set lo up
i=0
for h in "${hosts[@]}"; do
  i=$((i + 1)); IP[$h]=192.168.234.$i
  ip netns add "$tag-$h"
  ip link add eth0 netns "$tag-$h" type veth peer name "ul-$h" netns "$tag-u" || fail "underlay veth failed"
  ip -n "$tag-u" link set "ul-$h" master br0 up
  ip -n "$tag-$h" addr add "${IP[$h]}/24" dev eth0
  ip -n "$tag-$h" link set eth0 up; ip -n "$tag-$h" link set lo up
  mkdir -p "$w/$h/cg" "$w/$h/data" "$w/$h/exec"
  echo '{}' >"$w/$h/daemon.json"
  # a mount namespace of its own: sysfs of its netns (the machine's cgroups kept), a fresh
  # /run (dockerd's and containerd's fixed paths: /run/docker, /run/containerd) and
  # /etc/docker (dockerd writes its key there), held by a sleeper
  nsenter --net="/run/netns/$tag-$h" unshare --mount --propagation slave sh -c '
    mount --rbind /sys/fs/cgroup "$0"; mount -t sysfs sysfs /sys; mount --rbind "$0" /sys/fs/cgroup
    umount -l "$0"; mount -t tmpfs -o mode=0755 tmpfs /run; mount -t tmpfs -o mode=0700 tmpfs /etc/docker
    mount --make-rshared /; exec sleep 100000' "$w/$h/cg" &
  HOLD[$h]=$!
done
sleep 0.5
on "${hosts[1]}" "$rootfs/bin/busybox" ping -c 1 -W 2 "${IP[a]}" >/dev/null || fail "the underlay does not carry packets"

say "dockerd on each host, kobako-runtime its default runtime"
for h in "${hosts[@]}"; do
  # nsenter execs env, which execs dockerd: $! is dockerd's PID
  nsenter -t "${HOLD[$h]}" -m -n env PATH="$TOOLS/docker/usr/sbin:$TOOLS/docker/usr/bin:$CTRD:$PATH" "$DOCKERD" \
    --config-file "$w/$h/daemon.json" --data-root "$w/$h/data" --exec-root "$w/$h/exec" \
    --pidfile "$w/$h/dockerd.pid" -H "unix://$w/$h/docker.sock" --storage-driver overlay2 \
    --add-runtime "kobako=$w/kobako-runtime" --default-runtime kobako \
    --cgroup-parent "/$tag-$h" --userland-proxy=false >"$w/$h/dockerd.log" 2>&1 &
  DPID[$h]=$!
done
for h in "${hosts[@]}"; do
  wait_for 60 "dockerd on host $h did not answer (its log: $(tail -3 "$w/$h/dockerd.log"))" dk "$h" version
  [ "$(dk "$h" info -f '{{.DefaultRuntime}}')" = kobako ] || fail "host $h: the default runtime is not kobako"
done

say "the busybox image on each host (docker import of $rootfs)"
tar -C "$rootfs" -cf "$w/bb.tar" .
for h in "${hosts[@]}"; do
  dk "$h" import "$w/bb.tar" kbswarm/busybox:1 >/dev/null || fail "docker import on host $h failed"
  dk "$h" tag kbswarm/busybox:1 kbswarm/busybox:2
done

say "a plain docker run through kobako-runtime"
out=$(dk a run --rm kbswarm/busybox:1 sh -c 'echo via-dockerd; exit 3' 2>&1) && rc=0 || rc=$?
[ "$rc:$out" = "3:via-dockerd" ] || fail "docker run: exit $rc, output: $out"

say "swarm init on a, join on the others"
dk a swarm init --advertise-addr "${IP[a]}" --listen-addr "${IP[a]}:2377" >/dev/null || fail "swarm init failed"
token=$(dk a swarm join-token -q manager)
for h in "${hosts[@]:1}"; do
  dk "$h" swarm join --token "$token" --advertise-addr "${IP[$h]}" --listen-addr "${IP[$h]}:2377" "${IP[a]}:2377" \
    >/dev/null || fail "swarm join on host $h failed"
done
ready() { [ "$(dk a node ls --format '{{.Status}} {{.Availability}}' | grep -c '^Ready Active$')" = "$nodes" ]; }
wait_for 60 "not every node is Ready" ready

# running tasks of service web, as "node container-id" lines
tasks() {
  local h
  for h in "${hosts[@]}"; do
    dk "$h" ps -q --no-trunc --filter label=com.docker.swarm.service.name=web | sed "s/^/$h /"
  done
}
converged() {  # N: every replica running, the service's own view agrees, one per task
  local want=$1 n
  n=$(dk a service ps web --filter desired-state=running --format '{{.CurrentState}}' | grep -c '^Running' || true)
  [ "$n" = "$want" ] && [ "$(tasks | wc -l)" = "$want" ]
}
check_runtime() {  # every running task's container: kobako's runtime, state and log
  local h id
  while read -r h id; do
    [ "$(dk "$h" inspect -f '{{.HostConfig.Runtime}}' "$id")" = kobako ] || fail "$id on $h: runtime is not kobako"
    ls "$w/$h"/exec/runtime-*/moby/"$id"/state.json >/dev/null 2>&1 || fail "$id on $h: no kobako-runtime state under the exec root"
    grep -q "create .*$id" "$w/runtime-calls.log" || fail "$id on $h: kobako-runtime was not asked to create it"
  done < <(tasks)
}
per_node() { tasks | cut -d' ' -f1 | sort | uniq -c | awk '{print $2"="$1}' | tr '\n' ' '; }

say "service create --replicas $nodes"
dk a service create --detach --name web --replicas "$nodes" --no-resolve-image --env V=1 \
  --stop-grace-period 5s kbswarm/busybox:1 sh -c 'trap "exit 0" TERM; while :; do sleep 1; done' >/dev/null \
  || fail "service create failed"
wait_for 90 "service web did not converge to $nodes tasks" converged "$nodes"
[ "$(tasks | cut -d' ' -f1 | sort -u | wc -l)" = "$nodes" ] || fail "tasks not spread over every node: $(per_node)"
check_runtime
echo "   tasks per node: $(per_node)"
id=$(tasks | sed -n 1p)  # (head would end tasks early: pipefail)
[ "$(dk "${id%% *}" exec "${id#* }" sh -c 'echo $V')" = 1 ] || fail "docker exec in a task failed"

say "scale up to $((nodes * 2)), down to 2"
dk a service scale --detach web=$((nodes * 2)) >/dev/null
wait_for 90 "scale up did not converge" converged $((nodes * 2))
check_runtime
echo "   tasks per node: $(per_node)"
dk a service scale --detach web=2 >/dev/null
wait_for 90 "scale down did not converge" converged 2

say "rolling update (--env-add, one at a time), then --image"
dk a service scale --detach web="$nodes" >/dev/null
wait_for 90 "scale back did not converge" converged "$nodes"
before=$(tasks | cut -d' ' -f2 | sort)
dk a service update --detach --env-add V=2 --update-parallelism 1 --update-delay 1s web >/dev/null || fail "update failed"
updated() {
  converged "$nodes" && [ "$(dk a service inspect -f '{{.UpdateStatus.State}}' web)" = completed ] || return 1
  local h id
  while read -r h id; do [ "$(dk "$h" exec "$id" sh -c 'echo $V')" = 2 ] || return 1; done < <(tasks)
}
wait_for 120 "the rolling update did not complete" updated
[ -z "$(comm -12 <(echo "$before") <(tasks | cut -d' ' -f2 | sort))" ] || fail "some task was not replaced"
check_runtime
dk a service update --detach --image kbswarm/busybox:2 --no-resolve-image web >/dev/null || fail "update --image failed"
imaged() {
  converged "$nodes" && [ "$(dk a service inspect -f '{{.UpdateStatus.State}}' web)" = completed ] || return 1
  local h id
  while read -r h id; do [ "$(dk "$h" inspect -f '{{.Config.Image}}' "$id")" = kbswarm/busybox:2 ] || return 1; done < <(tasks)
}
wait_for 120 "the image update did not complete" imaged
check_runtime

last=${hosts[$((nodes - 1))]}
say "drain node $last: its tasks move to the others"
dk a node update --availability drain "$(dk "$last" info -f '{{.Swarm.NodeID}}')" >/dev/null || fail "node update failed"
drained() { converged "$nodes" && ! tasks | grep "^$last " >/dev/null; }
wait_for 90 "the drained node's tasks did not move" drained
check_runtime
echo "   tasks per node: $(per_node)"

say "service rm: every task's container gone"
dk a service rm web >/dev/null
gone() { [ -z "$(tasks)" ] && ! ls "$w"/*/exec/runtime-*/moby/*/state.json >/dev/null 2>&1; }
wait_for 60 "containers or runtime state left after service rm" gone
for h in "${hosts[@]}"; do dk "$h" swarm leave --force >/dev/null 2>&1 || true; done

calls=$(grep -c '' "$w/runtime-calls.log")
echo "ok: swarm of $nodes nodes, every task run by kobako-runtime ($calls runtime calls); service created, spread," \
  "scaled up and down, rolling-updated (env, image), a node drained"
