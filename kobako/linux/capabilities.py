"""Capabilities: capget/capset(2) for the effective/permitted/inheritable sets,
prctl for the bounding and ambient sets. All five OCI sets end up here."""

from __future__ import annotations

from kobako.linux import fs, libc, prctl

NAMES = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
]
BY_NAME = {n: i for i, n in enumerate(NAMES)}
_VERSION_3 = 0x20080522


def last_cap() -> int:
    try:
        return int(fs.read_file("/proc/sys/kernel/cap_last_cap"))
    except OSError:
        return len(NAMES) - 1


def to_mask(names: list[str] | None, known: int | None = None) -> int:
    """Names -> bit mask; unknown names raise ValueError (validated before any step)."""
    mask = 0
    for n in names or ():
        i = BY_NAME.get(n.upper() if n.upper().startswith("CAP_") else "CAP_" + n.upper())
        if i is None:
            raise ValueError(f"unknown capability {n!r}")
        if known is None or i <= known:  # a cap this kernel lacks is skipped, as runc does
            mask |= 1 << i
    return mask


def from_mask(mask: int) -> list[str]:
    return [NAMES[i] if i < len(NAMES) else f"CAP_{i}" for i in range(64) if mask >> i & 1]


def capset(effective: int, permitted: int, inheritable: int) -> None:
    hdr = libc.u32(_VERSION_3, 0)  # struct __user_cap_header_struct: version, pid (0: ourselves)
    # two struct __user_cap_data_struct {effective, permitted, inheritable}: bits 0-31, 32-63
    data = libc.u32(effective, permitted, inheritable, effective >> 32, permitted >> 32, inheritable >> 32)
    libc.check(libc.LIBC.capset(hdr, data), "capset")


def drop_bounding(keep: int, top: int) -> None:
    for i in range(top + 1):
        if not keep >> i & 1:
            prctl.prctl(prctl.PR_CAPBSET_DROP, i, what=f"PR_CAPBSET_DROP {NAMES[i]}")


def raise_ambient(mask: int) -> list[str]:
    """Raise each ambient cap; returns those the kernel refused (not in P and I)."""
    refused = []
    for i in range(64):
        if mask >> i & 1:
            try:
                prctl.prctl(prctl.PR_CAP_AMBIENT, prctl.PR_CAP_AMBIENT_RAISE, i)
            except OSError:
                refused.append(NAMES[i])
    return refused
