"""bpf(2): load an eBPF program, attach it to a cgroup, list and detach what is attached.
Only what the cgroup v2 device filter needs (BPF_PROG_TYPE_CGROUP_DEVICE)."""

from __future__ import annotations

import ctypes

from kobako.linux import libc

BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_DETACH = 9
BPF_PROG_GET_FD_BY_ID = 13
BPF_PROG_QUERY = 16
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
BPF_F_ALLOW_MULTI = 2


class _Load(ctypes.Structure):
    _fields_ = [("prog_type", ctypes.c_uint32), ("insn_cnt", ctypes.c_uint32),
                ("insns", ctypes.c_uint64), ("license", ctypes.c_uint64),
                ("log_level", ctypes.c_uint32), ("log_size", ctypes.c_uint32),
                ("log_buf", ctypes.c_uint64), ("kern_version", ctypes.c_uint32),
                ("prog_flags", ctypes.c_uint32), ("prog_name", ctypes.c_char * 16)]


class _Attach(ctypes.Structure):
    _fields_ = [("target_fd", ctypes.c_uint32), ("attach_bpf_fd", ctypes.c_uint32),
                ("attach_type", ctypes.c_uint32), ("attach_flags", ctypes.c_uint32),
                ("replace_bpf_fd", ctypes.c_uint32)]


class _Query(ctypes.Structure):
    _fields_ = [("target_fd", ctypes.c_uint32), ("attach_type", ctypes.c_uint32),
                ("query_flags", ctypes.c_uint32), ("attach_flags", ctypes.c_uint32),
                ("prog_ids", ctypes.c_uint64), ("prog_cnt", ctypes.c_uint32)]


class _ById(ctypes.Structure):
    _fields_ = [("prog_id", ctypes.c_uint32), ("next_id", ctypes.c_uint32), ("open_flags", ctypes.c_uint32)]


def _bpf(cmd: int, attr: ctypes.Structure, what: str) -> int:
    # the kernel reads a union bpf_attr: pad ours to its 144 bytes with zeros
    buf = ctypes.create_string_buffer(bytes(attr), 144)
    r = libc.LIBC.syscall(libc.syscall_number("bpf"), cmd, buf, 144)
    if r == -1:
        libc.check(r, what)
    ctypes.memmove(ctypes.addressof(attr), buf, ctypes.sizeof(attr))
    return r


def prog_load(insns: bytes, prog_type: int, name: str) -> int:
    """Load a program; on a verifier error the log says why."""
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(b"Apache-2.0")
    log = ctypes.create_string_buffer(65536)
    attr = _Load(prog_type, len(insns) // 8, ctypes.addressof(code), ctypes.addressof(lic),
                 1, len(log), ctypes.addressof(log), 0, 0, name.encode()[:15])
    try:
        return _bpf(BPF_PROG_LOAD, attr, f"bpf BPF_PROG_LOAD {name}")
    except OSError as e:
        # the verifier's last lines are statistics: report the line that says why
        lines = [x for x in log.value.decode(errors="replace").splitlines()
                 if x.strip() and not x.startswith(("processed ", "verification time"))]
        raise OSError(e.errno, f"{e.strerror} ({lines[-1]})" if lines else e.strerror, e.filename) from None


def prog_attach(cgroup_fd: int, prog_fd: int, attach_type: int, flags: int) -> None:
    _bpf(BPF_PROG_ATTACH, _Attach(cgroup_fd, prog_fd, attach_type, flags, 0), "bpf BPF_PROG_ATTACH")


def prog_detach(cgroup_fd: int, prog_fd: int, attach_type: int) -> None:
    _bpf(BPF_PROG_DETACH, _Attach(cgroup_fd, prog_fd, attach_type, 0, 0), "bpf BPF_PROG_DETACH")


def prog_query(cgroup_fd: int, attach_type: int) -> list[int]:
    """IDs of the programs attached directly to this cgroup."""
    ids = (ctypes.c_uint32 * 64)()
    q = _Query(cgroup_fd, attach_type, 0, 0, ctypes.addressof(ids), 64)
    _bpf(BPF_PROG_QUERY, q, "bpf BPF_PROG_QUERY")
    return list(ids[: q.prog_cnt])


def prog_fd_by_id(prog_id: int) -> int:
    return _bpf(BPF_PROG_GET_FD_BY_ID, _ById(prog_id, 0, 0), "bpf BPF_PROG_GET_FD_BY_ID")

