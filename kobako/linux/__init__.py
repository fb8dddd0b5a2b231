"""Thin typed wrappers over Linux syscalls, through _ctypes (ctypes' C half) on libc.

One obvious place per primitive: mount.py (mount, umount2, pivot_root),
namespaces.py (unshare, setns), capabilities.py (capget/capset, bounding and
ambient sets), prctl.py, uts.py (sethostname), fs.py (openat2, close_range).
Every wrapper goes through ``libc.LIBC`` at call time, so unit tests can swap in
a recorder (``kobako.linux.libc.Recorder``) and assert calls without root.
The start-up path imports nothing here but os and _ctypes: structs go as bytes
(libc.u32/u64); the ctypes package (~3 ms) is for code off that path (bpf, seccomp).
"""
