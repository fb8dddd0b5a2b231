"""A container's (or an exec's) stdio as a client sees it: Docker's multiplexed frames and
the detach keys (ctrl-p ctrl-q unless told otherwise) that end an attachment and leave the
process running. Both front ends use them: `kobako attach` on a terminal, the API's attach
and exec start on a hijacked connection."""

from __future__ import annotations

from kobako import errors

DEFAULT_DETACH_KEYS = "ctrl-p,ctrl-q"
STDOUT, STDERR = 1, 2


def frame(stream: int, data: bytes) -> bytes:
    """One multiplexed frame: stream byte, three zero bytes, big-endian length, data."""
    return bytes([stream, 0, 0, 0]) + len(data).to_bytes(4, "big") + data


def split_frames(buf: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """The whole frames at the start of `buf` as (stream, data), and the incomplete rest."""
    out = []
    while len(buf) >= 8:
        n = int.from_bytes(buf[4:8], "big")
        if len(buf) < 8 + n:
            break
        out.append((buf[0], buf[8:8 + n]))
        buf = buf[8 + n:]
    return out, buf


def parse_detach_keys(spec: str | None) -> bytes:
    """Docker's detach-keys syntax: comma-separated keys, each one character or ctrl-X
    (X a letter, or one of @ [ \\ ] ^ _)."""
    if not spec:
        spec = DEFAULT_DETACH_KEYS
    out = bytearray()
    for key in spec.split(","):
        low = key.strip().lower()
        if len(key) == 1:
            out += key.encode()
        elif low.startswith("ctrl-") and len(low) == 6 and low[5] in "abcdefghijklmnopqrstuvwxyz@[\\]^_":
            out.append(ord(low[5].upper()) & 0x1F)
        else:
            raise errors.InvalidArgument(f"invalid detach keys {spec!r}: give keys like ctrl-p,ctrl-q "
                                         "(ctrl-<letter> or single characters, comma-separated)")
    return bytes(out)


class DetachScanner:
    """Watches what a client types for the detach sequence, across reads: feed() returns
    the bytes to pass on and whether the sequence was seen (what came after it is dropped).
    A possible start of the sequence at the end of a read is held back until the next."""

    def __init__(self, keys: bytes) -> None:
        self.keys = keys
        self.pending = b""

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        if not self.keys:
            return data, False
        data = self.pending + data
        self.pending = b""
        at = data.find(self.keys)
        if at >= 0:
            return data[:at], True
        for i in range(min(len(self.keys) - 1, len(data)), 0, -1):
            if data.endswith(self.keys[:i]):
                self.pending, data = data[-i:], data[:-i]
                break
        return data, False
