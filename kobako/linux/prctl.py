"""prctl(2) operations the runtime uses."""

from __future__ import annotations

from kobako.linux import libc

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_KEEPCAPS = 8
PR_SET_NAME = 15
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4


def prctl(option: int, a2: int = 0, a3: int = 0, a4: int = 0, a5: int = 0, what: str = "") -> int:
    return libc.check(libc.LIBC.prctl(option, a2, a3, a4, a5), f"prctl {what or option}")


def set_name(name: str) -> None:
    """The thread's comm (what ps and top show), up to 15 bytes."""
    import ctypes
    buf = ctypes.create_string_buffer(name.encode()[:15])
    prctl(15, ctypes.addressof(buf), what="PR_SET_NAME")  # PR_SET_NAME


def set_child_subreaper() -> None:
    prctl(PR_SET_CHILD_SUBREAPER, 1, what="PR_SET_CHILD_SUBREAPER")


def set_pdeathsig(sig: int) -> None:
    prctl(PR_SET_PDEATHSIG, sig, what="PR_SET_PDEATHSIG")


def set_dumpable(on: bool) -> None:
    prctl(PR_SET_DUMPABLE, int(on), what="PR_SET_DUMPABLE")


def set_keepcaps(on: bool) -> None:
    prctl(PR_SET_KEEPCAPS, int(on), what="PR_SET_KEEPCAPS")


def set_no_new_privs() -> None:
    prctl(PR_SET_NO_NEW_PRIVS, 1, what="PR_SET_NO_NEW_PRIVS")
