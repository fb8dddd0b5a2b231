"""keyctl(2) KEYCTL_JOIN_SESSION_KEYRING: a session keyring of the container's own,
so it does not share the caller's keys (what runc does unless --no-new-keyring)."""

from __future__ import annotations

from kobako.linux import libc

KEYCTL_JOIN_SESSION_KEYRING = 1


def join_session_keyring(name: str) -> int:
    r = libc.LIBC.syscall(libc.syscall_number("keyctl"), KEYCTL_JOIN_SESSION_KEYRING, name.encode())
    return libc.check(r, "keyctl JOIN_SESSION_KEYRING", name)
