"""Thin typed wrappers over Linux syscalls, through ctypes on libc.

One obvious place per primitive: mount.py (mount, umount2, pivot_root),
namespaces.py (unshare, setns), capabilities.py (capget/capset, bounding and
ambient sets), prctl.py, uts.py (sethostname), fs.py (openat2, close_range).
Every wrapper goes through ``libc.LIBC`` at call time, so unit tests can swap in
a recorder (``kobako.linux.libc.Recorder``) and assert calls without root.
Nothing here imports more than os and ctypes: this is the runtime's start-up path.
"""
