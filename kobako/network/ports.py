"""Published ports: `-p [ip:][hostPort:]containerPort[/tcp|udp]` as Docker reads it, and the
checks made when a container starts (the port is free on the host, no other container
publishes it). The forwarding itself is a DNAT rule (network/nftables.py): no proxy process.
"""

from __future__ import annotations

import _socket

from kobako import errors


class PortError(errors.InvalidArgument):
    pass


def _port(s: str, spec: str) -> int:
    if not s.isdigit() or not 1 <= int(s) <= 65535:
        raise PortError(f"invalid port {s!r} in {spec!r}: a number from 1 to 65535")
    return int(s)


def _range(s: str, spec: str) -> list[int]:
    lo, dash, hi = s.partition("-")
    if not dash:
        return [_port(s, spec)]
    a, b = _port(lo, spec), _port(hi, spec)
    if b < a:
        raise PortError(f"invalid port range {s!r} in {spec!r}")
    return list(range(a, b + 1))


def parse(spec: str) -> list[dict]:
    """One -p value -> [{"proto", "hostIp", "hostPort" (0: any free port), "containerPort"}]."""
    body, slash, proto = spec.partition("/")
    proto = proto or "tcp"
    if proto not in ("tcp", "udp", "sctp") or (slash and not proto):
        raise PortError(f"invalid protocol in {spec!r}: tcp, udp or sctp")
    if body.startswith("["):
        raise PortError(f"invalid -p {spec!r}: publishing on an IPv6 address is not supported "
                        "(publish on 0.0.0.0 or an IPv4 address)")
    parts = body.rsplit(":", 2)
    ip, host, ctr = ("", "", parts[0]) if len(parts) == 1 else \
        ("", parts[0], parts[1]) if len(parts) == 2 else (parts[0], parts[1], parts[2])
    if ip:
        from kobako.network.ipam import IPAMError, _ip
        try:
            _ip(ip, "host address")
        except IPAMError as e:
            raise PortError(f"invalid -p {spec!r}: {e}") from None
    if not ctr:
        raise PortError(f"invalid -p {spec!r}: no container port")
    ctrs = _range(ctr, spec)
    hosts = _range(host, spec) if host else [0] * len(ctrs)
    if len(hosts) != len(ctrs):
        if len(ctrs) == 1 and host:  # docker: -p 8000-8010:80 takes one free port of the range
            return [{"proto": proto, "hostIp": ip, "hostPort": 0, "hostRange": [hosts[0], hosts[-1]],
                     "containerPort": ctrs[0]}]
        raise PortError(f"invalid -p {spec!r}: the host and container ranges differ in length")
    return [{"proto": proto, "hostIp": ip, "hostPort": h, "containerPort": c}
            for h, c in zip(hosts, ctrs, strict=True)]


def exposed(config: dict, extra: list[str] = ()) -> list[dict]:
    """-P: every EXPOSEd port of the image (and --expose) on a free host port."""
    out, seen = [], set()
    for key in list(config.get("ExposedPorts") or {}) + list(extra):
        num, _, proto = key.partition("/")
        for c in _range(num, key):
            k = (c, proto or "tcp")
            if k not in seen:
                seen.add(k)
                out.append({"proto": k[1], "hostIp": "", "hostPort": 0, "containerPort": c})
    return out


def _overlap(a: str, b: str) -> bool:
    return a in ("", "0.0.0.0") or b in ("", "0.0.0.0") or a == b


def _busy_on_host(proto: str, ip: str, port: int) -> bool:
    """Whether a host program holds the port: try to bind it (and let go at once)."""
    kind = _socket.SOCK_DGRAM if proto == "udp" else _socket.SOCK_STREAM
    s = _socket.socket(_socket.AF_INET, kind | _socket.SOCK_CLOEXEC)
    try:
        if kind == _socket.SOCK_STREAM:  # TIME_WAIT leftovers are no reason to refuse
            s.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
        s.bind((ip or "0.0.0.0", port))
        return False
    except OSError as e:
        if e.errno == 98:  # EADDRINUSE
            return True
        if e.errno == 99:  # EADDRNOTAVAIL
            raise PortError(f"cannot publish on {ip}:{port}: {ip} is not an address of this host") from None
        raise
    finally:
        s.close()


def _free_port(proto: str, ip: str, taken: set[tuple[str, int]], lo: int = 0, hi: int = 0) -> int:
    if lo:
        for p in range(lo, hi + 1):
            if (proto, p) not in taken and not _busy_on_host(proto, ip, p):
                return p
        raise PortError(f"no free host port in {lo}-{hi}/{proto}")
    kind = _socket.SOCK_DGRAM if proto == "udp" else _socket.SOCK_STREAM
    for _ in range(64):  # the kernel's pick from its ephemeral range, as docker's allocator
        s = _socket.socket(_socket.AF_INET, kind | _socket.SOCK_CLOEXEC)
        try:
            s.bind((ip or "0.0.0.0", 0))
            p = s.getsockname()[1]
        finally:
            s.close()
        if (proto, p) not in taken:
            return p
    raise PortError(f"no free host port for {proto}")


def assign(wanted: list[dict], others: list[dict]) -> list[dict]:
    """Concrete host ports for `wanted`, checked against the ports other containers publish
    (`others`) and against the host's own sockets. Raises PortError, Docker's words."""
    out: list[dict] = []
    for w in wanted:
        ip, proto = w.get("hostIp") or "", w["proto"]
        taken = {(o["proto"], o["hostPort"]) for o in others + out if _overlap(o.get("hostIp") or "", ip)}
        port = w["hostPort"]
        if not port:
            lo, hi = w.get("hostRange") or (0, 0)
            port = _free_port(proto, ip, taken, lo, hi)
        else:
            where = f"{ip or '0.0.0.0'}:{port}"
            if (proto, port) in taken:
                raise PortError(f"Bind for {where} failed: port is already allocated")
            if proto != "sctp" and _busy_on_host(proto, ip, port):
                raise PortError(f"cannot publish {where}/{proto}: address already in use "
                                "by a program on the host")
        out.append({"proto": proto, "hostIp": ip, "hostPort": port, "containerPort": w["containerPort"]})
    return out


def describe(p: dict) -> str:
    """`80/tcp -> 0.0.0.0:8080`, as `docker port` prints it."""
    return f"{p['containerPort']}/{p['proto']} -> {p.get('hostIp') or '0.0.0.0'}:{p['hostPort']}"
