"""Device rules on cgroup v2: a BPF_PROG_TYPE_CGROUP_DEVICE program that kobako
assembles itself from the OCI rule list and attaches to the container's cgroup (crun's
ebpf.c is the model).

The kernel runs the program on every open/mknod of a device node with
struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; } in R1, where
access_type = access << 16 | type. The program returns 1 to allow, 0 to deny.
OCI rules are ordered and the last match wins, so they are emitted last-first: the
first match in the program is the last in the list. runc's default devices come
after the user's rules, so they always win, as on v1 (v1.DEFAULT_ALLOW).
"""

from __future__ import annotations

import os
import struct

from kobako.runtime.errors import RuntimeFailure

DEV_BLOCK, DEV_CHAR = 1, 2  # BPF_DEVCG_DEV_*
ACC_MKNOD, ACC_READ, ACC_WRITE = 1, 2, 4  # BPF_DEVCG_ACC_*

# eBPF opcodes used here
LDX_W = 0x61  # r_dst = *(u32 *)(r_src + off)
AND32_K = 0x54  # w_dst &= imm
RSH32_K = 0x74  # w_dst >>= imm
MOV64_X = 0xBF  # r_dst = r_src
MOV32_K = 0xB4  # w_dst = imm
JNE_K = 0x55  # if r_dst != imm goto +off
EXIT = 0x95

DEFAULTS = [  # (type, major, minor, access): runc's default allow list
    ("c", 1, 3, "rwm"), ("c", 1, 5, "rwm"), ("c", 1, 7, "rwm"), ("c", 1, 8, "rwm"), ("c", 1, 9, "rwm"),
    ("c", 5, 0, "rwm"), ("c", 5, 1, "rwm"), ("c", 5, 2, "rwm"), ("c", 136, None, "rwm"),
    ("c", 10, 200, "rwm"),
]


def insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def _access_mask(access: str) -> int:
    return ((ACC_MKNOD if "m" in access else 0) | (ACC_READ if "r" in access else 0)
            | (ACC_WRITE if "w" in access else 0))


def _rule_block(typ: str, major: int | None, minor: int | None, access: str, allow: bool) -> bytes:
    """Checks for one rule; every failed check jumps past the block's own end."""
    checks: list[tuple[int, int, int]] = []  # (register, immediate) to compare, as JNE
    if typ in ("c", "b"):
        checks.append((2, DEV_CHAR if typ == "c" else DEV_BLOCK, 0))
    mask = _access_mask(access)
    body: list[bytes] = []
    if mask != ACC_MKNOD | ACC_READ | ACC_WRITE:
        # the request's access bits must all be in mask: (r3 & ~mask) == 0
        body.append(insn(MOV64_X, dst=1, src=3))
        body.append(insn(AND32_K, dst=1, imm=~mask & 0xFFFF))
        checks.append((1, 0, len(body)))
    if major is not None:
        checks.append((4, major, 0))
    if minor is not None:
        checks.append((5, minor, 0))
    tail = [insn(MOV32_K, dst=0, imm=int(allow)), insn(EXIT)]
    out: list[bytes] = []
    # emit: [mask prep] then each JNE; offsets count the instructions left in the block
    prep = body
    jnes = [(reg, imm) for reg, imm, _ in checks]
    n_after = len(jnes) + len(tail)
    for k, (reg, imm) in enumerate(jnes):
        out.append(insn(JNE_K, dst=reg, off=n_after - k - 1, imm=imm))
    return b"".join(prep + out + tail)


def assemble(rules: list[dict]) -> bytes:
    """The whole program: unpack the context, then the rules last-first, then deny."""
    prog = [
        insn(LDX_W, dst=2, src=1, off=0),  # r2 = access_type
        insn(AND32_K, dst=2, imm=0xFFFF),  # r2 = type
        insn(LDX_W, dst=3, src=1, off=0),
        insn(RSH32_K, dst=3, imm=16),  # r3 = access
        insn(LDX_W, dst=4, src=1, off=4),  # r4 = major
        insn(LDX_W, dst=5, src=1, off=8),  # r5 = minor
    ]
    ordered = [(r.get("type") or "a", _num(r.get("major")), _num(r.get("minor")), r.get("access") or "rwm",
                bool(r.get("allow"))) for r in rules]
    ordered += [(t, ma, mi, acc, True) for t, ma, mi, acc in DEFAULTS]
    for typ, major, minor, access, allow in reversed(ordered):
        if typ == "a":
            major = minor = None
        prog.append(_rule_block(typ, major, minor, access, allow))
        if typ == "a" and _access_mask(access) == ACC_MKNOD | ACC_READ | ACC_WRITE:
            # matches every request: what comes after it could never run, and the
            # verifier refuses unreachable instructions
            return b"".join(prog)
    prog += [insn(MOV32_K, dst=0, imm=0), insn(EXIT)]  # no rule matched: deny
    return b"".join(prog)


def _num(v: int | None) -> int | None:
    return None if v in (None, -1) else v


def apply_v2(cgroup_dir: str, rules: list[dict]) -> None:
    """Load the program, attach it, then detach whatever was attached before: new
    rules replace old ones, and at no moment is the cgroup without a filter."""
    from kobako.linux import bpf

    code = assemble(rules)
    cg = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            old = bpf.prog_query(cg, bpf.BPF_CGROUP_DEVICE)
            prog = bpf.prog_load(code, bpf.BPF_PROG_TYPE_CGROUP_DEVICE, "kobako_devices")
            try:
                bpf.prog_attach(cg, prog, bpf.BPF_CGROUP_DEVICE, bpf.BPF_F_ALLOW_MULTI)
            finally:
                os.close(prog)
            for pid in old:
                fd = bpf.prog_fd_by_id(pid)
                try:
                    bpf.prog_detach(cg, fd, bpf.BPF_CGROUP_DEVICE)
                finally:
                    os.close(fd)
        except OSError as e:
            raise RuntimeFailure(f"cannot install the device filter on {cgroup_dir}: {e.strerror}",
                                 "cgroup v2 device rules need bpf(2) with CAP_SYS_ADMIN") from None
    finally:
        os.close(cg)


def attached(cgroup_dir: str) -> list[int]:
    from kobako.linux import bpf

    cg = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return bpf.prog_query(cg, bpf.BPF_CGROUP_DEVICE)
    finally:
        os.close(cg)
