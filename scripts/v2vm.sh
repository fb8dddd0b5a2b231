#!/bin/bash
# v2vm.sh - run one command as root in a throwaway QEMU VM whose only cgroup hierarchy
# is cgroup v2, and exit with its status.  The suite's cgroup-v2 tests need such a
# machine and CI hosts are often v1 or hybrid (README.md, "The cgroup v2 suite" says more).
#
# usage: scripts/v2vm.sh [-t SECONDS] [-v] [--] COMMAND [ARG...]
#   -t SECONDS   power the VM off after SECONDS (exit 124); default: no limit
#   -v           copy the guest's kernel console to stderr while it runs
# environment: V2VM_CACHE (default /var/tmp/kobako-v2vm), V2VM_MEM (MiB, default 2048),
#   V2VM_CPUS (default: the host's, at most 4), V2VM_ACCEL (auto|kvm|tcg)
#
# The guest is Debian 12's own kernel (linux-image-amd64, fetched once with
# `apt-get download` and cached) booted with cgroup_no_v1=all and every controller
# enabled in the root cgroup, as systemd sets up a v2 host.  Its root file system is the
# host's / (9p, read-only) under an overlay whose upper layer is guest RAM: the guest
# has the host's Python, venv, tools and this checkout, and whatever it writes is gone
# when it powers off.  /tmp, /run and /var/lib/kobako are empty tmpfs; /dev/vda is a
# 64 MiB disk of zeros that drops writes.  The
# command runs in the current directory with stdin from /dev/null; its stdout and stderr
# (merged) come back on our stdout.  Exit status: the command's; 124 on timeout; 125
# when the VM could not be set up or did not report a status.
#
# Needs root on Debian 12.  Installs qemu-system-x86 and busybox-static when missing.
set -euo pipefail

CACHE=${V2VM_CACHE:-/var/tmp/kobako-v2vm}
MEM=${V2VM_MEM:-2048}
CPUS=${V2VM_CPUS:-$(nproc)}; [ "$CPUS" -gt 4 ] && CPUS=4
TIMEOUT=0
VERBOSE=0

die() { echo "v2vm: $*" >&2; exit 125; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "$1"; }
while [ $# -gt 0 ]; do
    case $1 in
        -t) TIMEOUT=$2; shift 2 ;;
        -v) VERBOSE=1; shift ;;
        -h|--help) usage 0 ;;
        --) shift; break ;;
        -*) echo "v2vm: unknown option $1" >&2; usage 2 >&2 ;;
        *) break ;;
    esac
done
[ $# -gt 0 ] || usage 2 >&2
[ "$(id -u)" = 0 ] || die "run as root (9p passes file owners through; the guest is root)"

# ------------------------------------------------------------------ host packages
BUSYBOX=/bin/busybox  # static: it is the initramfs's whole userland
if ! command -v qemu-system-x86_64 >/dev/null || ! [ -x $BUSYBOX ] || ldd $BUSYBOX >/dev/null 2>&1; then
    echo "v2vm: installing qemu-system-x86 busybox-static" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends qemu-system-x86 busybox-static >/dev/null; } ||
        die "cannot install qemu-system-x86 busybox-static"
fi

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"  # one fetch or initramfs build at a time
flock 9

# ------------------------------------------------------------------ kernel (cached)
# The package linux-image-amd64 points to today, remembered so later runs are offline.
if [ ! -s "$CACHE/kernel.pkg" ]; then
    pkg() { LC_ALL=C apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ && !n++ {print $2}'; }
    KPKG=$(pkg)
    [ -n "$KPKG" ] || { apt-get update -qq >&2 && KPKG=$(pkg); }
    [ -n "$KPKG" ] || die "cannot resolve Debian's linux-image-amd64"
    echo "$KPKG" > "$CACHE/kernel.pkg"
fi
KPKG=$(cat "$CACHE/kernel.pkg")
KDIR=$CACHE/$KPKG
if [ ! -e "$KDIR/.done" ]; then
    echo "v2vm: fetching $KPKG (once, cached in $KDIR)" >&2
    rm -rf "$KDIR"; mkdir -p "$KDIR/deb"; chmod 777 "$KDIR/deb"  # apt's _apt user writes there
    (cd "$KDIR/deb" && { apt-get download -q "$KPKG" || { apt-get update -qq && apt-get download -q "$KPKG"; }; } >&2) ||
        die "apt-get download $KPKG failed"
    dpkg-deb -x "$KDIR"/deb/*.deb "$KDIR/root"
    rm -rf "$KDIR/deb"
    # busybox's depmod writes the plain modules.dep that busybox's modprobe reads; the
    # guest loads modules with busybox because the host may have no kmod
    $BUSYBOX depmod -b "$KDIR/root" "$(ls "$KDIR/root/lib/modules")"
    touch "$KDIR/.done"
fi
KVER=$(ls "$KDIR/root/lib/modules")
MODDIR=$KDIR/root/lib/modules/$KVER
KERNEL=$(ls "$KDIR"/root/boot/vmlinuz-*)

# ------------------------------------------------------------------ the guest's init
# PID 1 from the initramfs: mount the root (host / over 9p, RAM overlay on top), the
# kernel file systems and a pure cgroup v2 hierarchy into it, then switch_root and run
# the command.  $KVER and $MODDIR come from the kernel command line.
read -r -d '' INIT <<'EOF' || true
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
fail() { echo "v2vm-init: FAILED: $*"; poweroff -f; }
mount -t proc proc /proc; mount -t devtmpfs devtmpfs /dev
for m in virtio_pci 9pnet_virtio 9p overlay; do modprobe $m || fail "modprobe $m"; done
O=trans=virtio,version=9p2000.L,msize=262144
mkdir -p /lower /rw /root
mount -t 9p -o $O,ro,cache=loose hostroot /lower || fail "mount the host's /"
mount -t tmpfs -o mode=0755 rw /rw && mkdir /rw/upper /rw/work
mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work root /root || fail "overlay root"
R=/root
mount --move /proc $R/proc; mount --move /dev $R/dev
mount -t sysfs -o nosuid,nodev,noexec sysfs $R/sys
mkdir -p $R/dev/pts $R/dev/shm $R/dev/mqueue
ln -s /proc/self/fd $R/dev/fd  # what udev would add: bash's <(...) needs /dev/fd
for i in 0:stdin 1:stdout 2:stderr; do ln -s /proc/self/fd/${i%:*} $R/dev/${i#*:}; done
mount -t devpts -o nosuid,noexec,gid=5,mode=620,ptmxmode=666 devpts $R/dev/pts
mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs $R/dev/shm
mount -t mqueue -o nosuid,nodev,noexec mqueue $R/dev/mqueue
mount -t tmpfs -o mode=1777 tmpfs $R/tmp  # not nodev: tests make device nodes in /tmp
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs $R/run
# kobako's data root holds overlay upper dirs, which cannot live on the overlay root
mkdir -p $R/var/lib/kobako && mount -t tmpfs -o mode=0711 tmpfs $R/var/lib/kobako
# pure cgroup v2 as systemd mounts it, every controller enabled for the children of the root
mount -t cgroup2 -o nosuid,nodev,noexec,nsdelegate,memory_recursiveprot cgroup2 $R/sys/fs/cgroup ||
    fail "mount cgroup2"
for c in $(cat $R/sys/fs/cgroup/cgroup.controllers); do
    echo "+$c" > $R/sys/fs/cgroup/cgroup.subtree_control || echo "v2vm-init: cannot enable $c"
done
mount -t bpf -o nosuid,nodev,noexec,mode=700 bpf $R/sys/fs/bpf
mkdir -p $R/run/v2vm/ctl && mount -t 9p -o $O,cache=none ctl $R/run/v2vm/ctl || fail "mount ctl"
# the guest kernel's modules, loaded on demand (veth, bridge, nf_tables, loop...) by busybox
mkdir -p $R/lib/modules/$KVER && mount --bind $R$MODDIR $R/lib/modules/$KVER
cp /bin/busybox $R/run/v2vm/busybox
for t in modprobe insmod rmmod lsmod depmod; do ln -sf /run/v2vm/busybox $R/usr/sbin/$t; done
echo /usr/sbin/modprobe > $R/proc/sys/kernel/modprobe
# a disk, as a host has one, for io.max and blkio rules to name (reads zeros, drops writes)
modprobe virtio_blk || echo "v2vm-init: no virtio_blk: the guest has no disk"
mount --make-rshared $R
exec switch_root $R /run/v2vm/busybox sh /run/v2vm/ctl/pid1
fail "switch_root"
EOF

# PID 1 in the final root: run the command (the shell reaps orphans while it waits),
# leave its status in the control directory, power off.
read -r -d '' PID1 <<'EOF' || true
B=/run/v2vm/busybox
. /run/v2vm/ctl/env
$B hostname v2vm
$B ip link set lo up
# the device nodes a host's kmod/udev make at boot: /dev/fuse and /dev/net/tun appear only
# once their modules are in (rootless containers use both: fuse-overlayfs, slirp4netns)
for m in fuse tun; do /usr/sbin/modprobe $m 2>/dev/null || echo "v2vm: no $m module" >/dev/ttyS1; done
$B stty -F /dev/ttyS0 raw -echo
echo "v2vm: command starts at uptime $($B cut -d' ' -f1 /proc/uptime)s" >/dev/ttyS1
{ $B env -i /bin/bash --noprofile --norc /run/v2vm/ctl/cmd </dev/null 2>&1
  echo $? > /run/v2vm/ctl/rc.tmp; } | $B cat > /dev/ttyS0
$B mv /run/v2vm/ctl/rc.tmp /run/v2vm/ctl/rc
echo "v2vm: command ended at uptime $($B cut -d' ' -f1 /proc/uptime)s" >/dev/ttyS1
$B sync
$B poweroff -f
EOF

# ------------------------------------------------------------------ initramfs (cached)
# busybox, the init, and the modules the init loads (with what they depend on)
add_module() {  # DEST NAME
    local line f dep
    line=$(grep -E "(^|/)$2\.ko(\.[a-z]+)?:" "$MODDIR/modules.dep") || return 0  # built in
    f=${line%%:*}
    [ -e "$1/$f" ] && return 0
    mkdir -p "$1/$(dirname "$f")"; cp "$MODDIR/$f" "$1/$f"
    for dep in ${line#*:}; do dep=${dep##*/}; add_module "$1" "${dep%%.ko*}"; done
}
INITRD=$KDIR/initrd-$( { echo "$INIT"; cat $BUSYBOX; } | sha256sum | cut -c1-12).cpio.gz
if [ ! -e "$INITRD" ]; then
    t=$(mktemp -d "$CACHE/initrd.XXXXXX")
    mkdir -p "$t"/{bin,proc,dev,lib/modules/"$KVER"}
    cp $BUSYBOX "$t/bin/busybox"
    printf '%s\n' "$INIT" > "$t/init"; chmod 755 "$t/init"
    for m in virtio_pci 9pnet_virtio 9p overlay virtio_blk; do add_module "$t/lib/modules/$KVER" $m; done
    cp "$MODDIR"/modules.builtin* "$t/lib/modules/$KVER/"
    $BUSYBOX depmod -b "$t" "$KVER"
    (cd "$t" && find . -mindepth 1 | sed 's|^\./||' | $BUSYBOX cpio -o -H newc 2>/dev/null) | gzip -1 > "$INITRD.tmp"
    rm -f "$KDIR"/initrd-*.cpio.gz; mv "$INITRD.tmp" "$INITRD"
    rm -rf "$t"
fi
exec 9>&-

# ------------------------------------------------------------------ this run
CTL=$(mktemp -d "$CACHE/run.XXXXXX")
QPID=""
cleanup() { [ -z "$QPID" ] || kill "$QPID" 2>/dev/null || true; rm -rf "$CTL"; }
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
printf '%s\n' "$PID1" > "$CTL/pid1"
q() { printf '%q' "$1"; }
{   # PID 1's environment: the host's open-file limits (the tests open many files)
    echo "ulimit -Hn $(ulimit -Hn); ulimit -Sn $(ulimit -Sn)"
} > "$CTL/env"
{   # the command, as bash runs it: our PATH and locale, our working directory
    echo "export HOME=/root PATH=$(q "$PATH") TERM=dumb V2VM=1"
    for v in LANG LC_ALL TZ; do [ -z "${!v:-}" ] || echo "export $v=$(q "${!v}")"; done
    echo "cd -- $(q "$PWD") || exit 125"
    printf 'exec'; printf ' %q' "$@"; echo
} > "$CTL/cmd"

ACCEL=${V2VM_ACCEL:-auto}
if [ "$ACCEL" = auto ]; then
    # only hardware virtualization runs a stock kernel (a paravirtual /dev/kvm does not)
    ACCEL=tcg
    [ -w /dev/kvm ] && { [ -d /sys/module/kvm_intel ] || [ -d /sys/module/kvm_amd ]; } && ACCEL=kvm
fi
case $ACCEL in
    kvm) ACC=(-accel kvm -cpu host) ;;
    tcg) ACC=(-accel tcg,thread=multi -cpu max) ;;  # emulation: 10-30x slower
    *) die "V2VM_ACCEL is auto, kvm or tcg" ;;
esac
share() {  # ID PATH [OPTIONS]: a 9p share with the host's owners and modes
    echo -fsdev; echo "local,id=$1,path=$2,security_model=passthrough,multidevs=remap${3:+,$3}"
    echo -device; echo "virtio-9p-pci,fsdev=$1,mount_tag=$1"
}
mapfile -t SHARES < <(share hostroot / readonly=on; share ctl "$CTL")
APPEND="console=ttyS1 panic=-1 rdinit=/init quiet loglevel=3 mitigations=off random.trust_cpu=on"
APPEND="$APPEND cgroup_no_v1=all KVER=$KVER MODDIR=$MODDIR"
touch "$CTL/console.log"
# ttyS0: the command's output, straight to our stdout (the UART paces the guest, so
# nothing is lost); ttyS1: the kernel console, to a log shown on failure or with -v
QEMU=(qemu-system-x86_64 -name v2vm -machine q35 "${ACC[@]}" -m "$MEM" -smp "$CPUS"
      -nodefaults -no-user-config -display none -no-reboot -nic none
      -kernel "$KERNEL" -initrd "$INITRD" -append "$APPEND"
      -chardev stdio,id=out,signal=off -serial chardev:out
      -chardev "file,id=con,path=$CTL/console.log" -serial chardev:con
      -blockdev driver=null-co,node-name=disk,size=67108864,read-zeroes=on -device virtio-blk-pci,drive=disk
      "${SHARES[@]}")
TAILPID=""
[ "$VERBOSE" = 0 ] || { tail -n +1 -f "$CTL/console.log" >&2 & TAILPID=$!; }
# qemu writes into a pipe of its own (it may make its stdout non-blocking, which must
# not reach a file description it shares with others)
exec 7> >(exec cat)
OUTPID=$!
timeout -k 5 "$TIMEOUT" "${QEMU[@]}" </dev/null >&7 &
QPID=$!
exec 7>&-
qrc=0; wait $QPID || qrc=$?
QPID=""
wait $OUTPID || true
[ -z "$TAILPID" ] || { sleep 0.2; kill "$TAILPID" 2>/dev/null || true; }
if [ -s "$CTL/rc" ]; then
    exit "$(cat "$CTL/rc")"
fi
if [ "$qrc" = 124 ]; then
    echo "v2vm: timed out after ${TIMEOUT}s; the end of the guest's console:" >&2; rc=124
else
    echo "v2vm: the VM ended without the command's status (qemu exited $qrc); its console:" >&2; rc=125
fi
tail -n 40 "$CTL/console.log" >&2
exit $rc
