"""sethostname(2) and setdomainname(2): the UTS namespace's two names."""

from __future__ import annotations

from kobako.linux import libc


def sethostname(name: str) -> None:
    b = name.encode()
    libc.check(libc.LIBC.sethostname(b, len(b)), "sethostname", name)


def setdomainname(name: str) -> None:
    b = name.encode()
    libc.check(libc.LIBC.setdomainname(b, len(b)), "setdomainname", name)
