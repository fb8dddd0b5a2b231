"""The DNS server of kobako's user networks: what Docker's embedded 127.0.0.11 and podman's
aardvark-dns give -- containers find each other by name with any DNS client (`nslookup`,
`dig`, resolvers that do not read /etc/hosts), other names go to the host's resolvers.

One small process per run root, `kobako-dns` (kobako is daemonless, so it is its own
process, as aardvark-dns is netavark's). It listens on each user network's gateway,
port 53, UDP and TCP, and answers from the endpoint states on disk
(<run root>/network/endpoints/*.json), re-read when one changes (a new inode: they are
replaced atomically), so a connect or a disconnect is visible at the next query:

    who asks      the container whose address on that network is the query's source
                  (anyone else: REFUSED; kobako's nft table also drops port 53 on a
                  gateway from anywhere but that gateway's bridge)
    what it sees  on every user network it shares with them: container names, network
                  aliases, short IDs (12 hex digits), NAME.NETWORK, and its own links'
                  aliases (`--link NAME:ALIAS` on a user network is scoped to the container
                  that has it); A, AAAA, and PTR for those addresses
    the rest      forwarded to the container's --dns servers, else the host's resolv.conf
                  servers (127.0.0.53 too: the server runs in the host's namespace); a
                  container with no way out (only --internal networks) gets REFUSED

Its life (network/endpoints.py calls these under the network lock):
    ensure()  the first container of a user network: the CLI binds the gateway's sockets
              itself and hands them over (SCM_RIGHTS on <run>/network/dns.sock), or starts
              the server with them -- bound before the container runs, so its first query
              waits in the socket, never meets a closed port; a `kill -9`ed server is found
              here (its control socket refuses) and started again with every live gateway
    sync()    a bridge went: the server closes that gateway's sockets
    stop()    no user bridge left: the server named by <run>/network/dns.pid is ended (after
              checking /proc that it is ours) and its files removed; `system prune`'s sweep
              does the same for a crash's leftovers
Sockets carry SO_REUSEPORT: a bridge removed and made again (same gateway) binds anew while
the old socket is still being closed.
"""

from __future__ import annotations

import os
import struct

PORT = 53
PIDFILE, CTL = "dns.pid", "dns.sock"
TTL = 600  # as Docker's embedded server
A, PTR, AAAA, ANY = 1, 12, 28, 255
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
_UDP_MAX = 512  # local answers fit a plain DNS datagram
_FORWARD_TIMEOUT = 2.0


# -- the wire format (RFC 1035) ------------------------------------------------------------------

class Query:
    """One question: its ID and flags, the name (lower case, no final dot), type, class,
    and where the question ends in the message."""

    __slots__ = ("raw", "id", "flags", "name", "qtype", "qclass", "end")

    def __init__(self, raw: bytes, name: str, qtype: int, qclass: int, end: int) -> None:
        self.raw, self.name, self.qtype, self.qclass, self.end = raw, name, qtype, qclass, end
        self.id, self.flags = struct.unpack_from("!HH", raw)


def parse(raw: bytes) -> Query | int | None:
    """A query, an rcode to answer with (FORMERR, NOTIMP), or None: not worth an answer
    (too short to carry an ID, or a response)."""
    if len(raw) < 12:
        return None
    flags, qd = struct.unpack_from("!HH", raw, 2)
    if flags & 0x8000:
        return None  # a response: never answer one (no loops between servers)
    if (flags >> 11) & 0xF:
        return NOTIMP  # only QUERY
    if qd != 1:
        return FORMERR
    labels, i = [], 12
    while True:
        if i >= len(raw):
            return FORMERR
        n = raw[i]
        i += 1
        if n == 0:
            break
        if n & 0xC0 or i + n > len(raw):
            return FORMERR  # no compression in a question
        labels.append(raw[i:i + n].decode("ascii", "replace").lower())
        i += n
    if i + 4 > len(raw) or sum(len(x) + 1 for x in labels) > 255:
        return FORMERR
    qtype, qclass = struct.unpack_from("!HH", raw, i)
    return Query(raw, ".".join(labels), qtype, qclass, i + 4)


def encode_name(name: str) -> bytes:
    out = b""
    for label in name.strip(".").split("."):
        if label:
            b = label.encode("ascii", "replace")[:63]
            out += bytes([len(b)]) + b
    return out + b"\0"


def error(raw: bytes, rcode: int) -> bytes:
    """An answer with only a header (and the question, if it parsed)."""
    q = parse(raw)
    if isinstance(q, Query):
        return reply(q, rcode)
    flags = 0x8000 | (struct.unpack_from("!H", raw, 2)[0] & 0x7900) | 0x0080 | rcode
    return raw[:2] + struct.pack("!HHHHH", flags, 0, 0, 0, 0)


def reply(q: Query, rcode: int, answers: list[tuple[int, bytes]] | tuple = (), limit: int = 65535) -> bytes:
    """The answer: the question echoed, then (type, rdata) records for that name. Records
    that would not fit `limit` are left out and TC set, as RFC 1035 asks."""
    flags = 0x8000 | (q.flags & 0x7900) | 0x0400 | 0x0080 | rcode  # QR, opcode+RD kept, AA, RA
    body = q.raw[12:q.end]
    rrs = b""
    n = 0
    for rtype, rdata in answers:
        rr = b"\xc0\x0c" + struct.pack("!HHIH", rtype, 1, TTL, len(rdata)) + rdata
        if 12 + len(body) + len(rrs) + len(rr) > limit:
            flags |= 0x0200
            break
        rrs += rr
        n += 1
    return struct.pack("!HHHHHH", q.id, flags, 1, n, 0, 0) + body + rrs


def _pton(addr: str) -> bytes | None:
    import _socket
    try:
        return _socket.inet_pton(_socket.AF_INET6 if ":" in addr else _socket.AF_INET, addr)
    except (OSError, ValueError):
        return None


def ptr_address(name: str) -> str | None:
    """d.c.b.a.in-addr.arpa -> a.b.c.d; the 32 nibbles of ip6.arpa -> the IPv6 address."""
    import _socket
    if name.endswith(".in-addr.arpa"):
        parts = name[:-len(".in-addr.arpa")].split(".")
        if len(parts) == 4 and all(p.isdigit() and int(p) < 256 for p in parts):
            return ".".join(str(int(p)) for p in reversed(parts))
    elif name.endswith(".ip6.arpa"):
        nib = name[:-len(".ip6.arpa")].split(".")
        if len(nib) == 32 and all(len(x) == 1 and x in "0123456789abcdef" for x in nib):
            return _socket.inet_ntop(_socket.AF_INET6, bytes.fromhex("".join(reversed(nib))))
    return None


# -- names, from the endpoint states on disk ------------------------------------------------------

def host_servers(path: str = "/etc/resolv.conf", loopback: bool = True) -> list[str]:
    """The nameservers of a resolv.conf; `loopback=False` leaves out 127.x and ::1 (what a
    container cannot reach from its own namespace)."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return []
    out = []
    for ln in text.splitlines():
        f = ln.split()
        if len(f) >= 2 and f[0] == "nameserver" and (loopback or not f[1].startswith(("127.", "::1"))):
            out.append(f[1].split("%")[0])
    return out


Resolved = tuple[int, list[tuple[int, bytes]], "list[str] | None"]  # rcode, answers, upstreams


class Names:
    """The endpoint states of one run root, re-read file by file when one changes."""

    def __init__(self, endpoints_dir: str) -> None:
        self.dir = endpoints_dir
        self._cache: dict[str, tuple[tuple[int, int, int], dict]] = {}

    def states(self) -> list[dict]:
        from kobako.runtime import jsonfast
        out, seen = [], set()
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        for n in names:
            if not n.endswith(".json") or n.startswith("."):
                continue
            p = os.path.join(self.dir, n)
            try:
                s = os.stat(p)
            except FileNotFoundError:
                continue
            key = (s.st_ino, s.st_mtime_ns, s.st_size)
            seen.add(n)
            hit = self._cache.get(n)
            if hit is None or hit[0] != key:
                try:
                    with open(p, "rb") as f:
                        st = jsonfast.loads(f.read())
                except (OSError, ValueError):
                    continue
                if not isinstance(st, dict) or not isinstance(st.get("networks"), dict):
                    continue
                hit = self._cache[n] = (key, st)
            out.append(hit[1])
        for n in set(self._cache) - seen:
            del self._cache[n]
        return out

    def resolve(self, q: Query, local: str, peer: str) -> Resolved:
        """(rcode, answers, upstreams): upstreams is set when the query is to be forwarded
        there instead. `local`: the gateway it came to; `peer`: its source address."""
        states = self.states()
        me, here = None, ""
        for st in states:
            for n, ep in st["networks"].items():
                if ep.get("dns") and peer in (ep.get("ip"), ep.get("ip6")) \
                        and local in (ep.get("gateway"), ep.get("gateway6")):
                    me, here = st, n
        if me is None:
            return REFUSED, [], None
        nets = [here] + [n for n, ep in me["networks"].items() if n != here and ep.get("dns")]
        if q.qclass not in (1, 255):
            return REFUSED, [], None
        if q.qtype == PTR:
            addr = ptr_address(q.name)
            if addr is not None:
                for n in nets:
                    for st in states:
                        ep = st["networks"].get(n)
                        if ep and ep.get("id") == me["networks"][n].get("id") \
                                and addr in (ep.get("ip"), ep.get("ip6")):
                            return NOERROR, [(PTR, encode_name(f"{st['name']}.{n}"))], None
                if any(_inside(addr, me["networks"][n]) for n in nets):
                    return NXDOMAIN, [], None  # an address of our own subnets nobody holds
        else:
            hits = self._lookup(q.name, me, nets, states)
            if hits:
                ans: list[tuple[int, bytes]] = []
                for ep in hits:
                    for key, rtype in (("ip", A), ("ip6", AAAA)):
                        if ep.get(key) and q.qtype in (rtype, ANY):
                            packed = _pton(ep[key])
                            if packed is not None and (rtype, packed) not in ans:
                                ans.append((rtype, packed))
                return NOERROR, ans, None  # a known name without that type: NOERROR, no records
        if not me.get("route"):
            return REFUSED, [], None  # no way out of its networks: no way out through us either
        ups = list(me.get("dnsServers") or []) or host_servers()
        ours = {ep.get(k) for st in states for ep in st["networks"].values() for k in ("gateway", "gateway6")}
        ups = [u for u in ups if u not in ours]  # never to ourselves
        return (SERVFAIL, [], None) if not ups else (NOERROR, [], ups)

    @staticmethod
    def _lookup(name: str, me: dict, nets: list[str], states: list[dict]) -> list[dict]:
        for n in nets:
            mine = me["networks"][n]
            want = name[:-len(n) - 1] if name.endswith("." + n.lower()) else name  # NAME.NETWORK
            links = {}
            for lk in mine.get("links") or []:
                target, _, alias = lk.partition(":")
                links[(alias or target).lower()] = target.strip("/").lower()
            hits = []
            for st in states:
                ep = st["networks"].get(n)
                if not ep or ep.get("id") != mine.get("id"):
                    continue
                cname = str(st.get("name", "")).strip("/").lower()
                if want in (cname, st["id"][:12]) or want in (a.lower() for a in ep.get("aliases") or []) \
                        or links.get(want) == cname:
                    hits.append(ep)
            if hits:
                return hits
        return []


def _inside(addr: str, ep: dict) -> bool:
    import ipaddress
    try:
        a = ipaddress.ip_address(addr)
        return any(ep.get(k) and a in ipaddress.ip_network(ep[k], strict=False)
                   for k in ("subnet", "subnet6"))
    except ValueError:
        return False


# -- the server process ---------------------------------------------------------------------------

class Server:
    def __init__(self, netdir: str, ctl_fd: int) -> None:
        import selectors
        import socket
        import threading
        self.netdir = netdir
        self.names = Names(os.path.join(netdir, "endpoints"))
        self.lock = threading.Lock()  # Names' cache is shared with the TCP threads
        self.sel = selectors.DefaultSelector()
        self.ctl = socket.socket(fileno=ctl_fd)
        self.sel.register(self.ctl, selectors.EVENT_READ, "ctl")
        self.socks: dict[int, tuple[str, socket.socket]] = {}  # fd -> (gateway, socket)
        self.slots = threading.BoundedSemaphore(64)  # forwards and TCP connections in flight

    def adopt(self, fd: int) -> None:
        import selectors
        import socket
        s = socket.socket(fileno=fd)
        s.setblocking(False)
        self.socks[s.fileno()] = (s.getsockname()[0], s)
        self.sel.register(s, selectors.EVENT_READ, "udp" if s.type == socket.SOCK_DGRAM else "tcp")

    def live(self) -> set[str]:
        """Gateways of the user bridges that exist now (their records, network/endpoints.py)."""
        from kobako.runtime import jsonfast
        out = set()
        d = os.path.join(self.netdir, "bridges")
        for n in os.listdir(d):
            if n.endswith(".json") and not n.startswith("."):
                try:
                    with open(os.path.join(d, n), "rb") as f:
                        rec = jsonfast.loads(f.read())
                except (OSError, ValueError):
                    continue
                if rec.get("dns"):
                    out.update(g for g in (rec.get("gateway"), rec.get("gateway6")) if g)
        return out

    def sync(self) -> None:
        try:
            live = self.live()
        except OSError:
            return
        for fd, (gw, s) in list(self.socks.items()):
            if gw not in live:
                self.sel.unregister(s)
                s.close()
                del self.socks[fd]

    def ours(self) -> bool:
        """Still this run root's server: the directory is there and the pid file names us."""
        try:
            with open(os.path.join(self.netdir, PIDFILE)) as f:
                return int(f.read().split()[0]) == os.getpid()
        except (OSError, ValueError, IndexError):
            return False

    def run(self) -> None:
        import time
        next_check = time.monotonic() + 5
        while True:
            for key, _ in self.sel.select(timeout=5):
                try:
                    if key.data == "ctl":
                        self._control()
                    elif key.data == "udp":
                        self._udp(key.fileobj)
                    else:
                        self._accept(key.fileobj)
                except Exception:  # noqa: BLE001 - one bad query or state file never ends the server
                    continue
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + 5
                if not self.ours():
                    return  # the run root is gone, or a newer server took over
                self.sync()

    def _control(self) -> None:
        import socket
        try:
            msg, fds, _, _ = socket.recv_fds(self.ctl, 64, 32)
        except (BlockingIOError, InterruptedError):
            return
        for fd in fds:
            try:
                self.adopt(fd)
            except OSError:
                os.close(fd)
        if msg.startswith(b"sync"):
            self.sync()

    def _answer(self, raw: bytes, local: str, peer: str, limit: int) -> tuple[bytes | None, list[str] | None]:
        q = parse(raw)
        if q is None:
            return None, None
        if not isinstance(q, Query):
            return error(raw, q), None
        with self.lock:
            rcode, answers, ups = self.names.resolve(q, local, peer)
        if ups:
            return None, ups
        return reply(q, rcode, answers, limit), None

    def _udp(self, s) -> None:
        import threading
        try:
            raw, peer = s.recvfrom(65535)
        except (BlockingIOError, InterruptedError, ConnectionRefusedError):
            return
        out, ups = self._answer(raw, s.getsockname()[0], peer[0], _UDP_MAX)
        if out is not None:
            self._send(s, out, peer)
        elif ups:
            if not self.slots.acquire(blocking=False):
                self._send(s, error(raw, SERVFAIL), peer)
                return
            threading.Thread(target=self._forward_udp, args=(s, raw, peer, ups), daemon=True).start()

    @staticmethod
    def _send(s, data: bytes, peer) -> None:
        try:
            s.sendto(data, peer)
        except OSError:
            pass  # the container went meanwhile

    def _forward_udp(self, s, raw: bytes, peer, ups: list[str]) -> None:
        import socket
        import time
        try:
            for server in ups:
                try:
                    with socket.socket(socket.AF_INET6 if ":" in server else socket.AF_INET,
                                       socket.SOCK_DGRAM) as u:
                        u.connect((server, PORT))  # replies only from that server are read
                        u.send(raw)
                        end = time.monotonic() + _FORWARD_TIMEOUT
                        while True:
                            u.settimeout(max(0.01, end - time.monotonic()))
                            data = u.recv(65535)
                            if len(data) >= 12 and data[:2] == raw[:2]:
                                self._send(s, data, peer)
                                return
                except OSError:
                    continue  # unreachable, refused or silent: the next one
            self._send(s, error(raw, SERVFAIL), peer)
        finally:
            self.slots.release()

    def _accept(self, s) -> None:
        import threading
        try:
            conn, peer = s.accept()
        except OSError:
            return
        if not self.slots.acquire(blocking=False):
            conn.close()
            return
        threading.Thread(target=self._tcp, args=(conn, s.getsockname()[0], peer[0]), daemon=True).start()

    def _tcp(self, conn, local: str, peer: str) -> None:
        try:
            with conn:
                conn.setblocking(True)
                conn.settimeout(10)
                while True:
                    raw = _read_msg(conn)
                    if raw is None:
                        return
                    out, ups = self._answer(raw, local, peer, 65535)
                    if out is None and ups:
                        out = _forward_tcp(raw, ups) or error(raw, SERVFAIL)
                    if out is None:
                        return
                    conn.sendall(struct.pack("!H", len(out)) + out)
        except OSError:
            pass
        finally:
            self.slots.release()


def _read_msg(conn) -> bytes | None:
    """One length-prefixed DNS message from a TCP stream; None at its end."""
    buf = b""
    need = 2
    while len(buf) < need:
        chunk = conn.recv(need - len(buf))
        if not chunk:
            return None
        buf += chunk
        if need == 2 and len(buf) == 2:
            need = 2 + struct.unpack("!H", buf)[0]
    return buf[2:]


def _forward_tcp(raw: bytes, ups: list[str]) -> bytes | None:
    import socket
    for server in ups:
        try:
            with socket.create_connection((server, PORT), timeout=_FORWARD_TIMEOUT) as c:
                c.sendall(struct.pack("!H", len(raw)) + raw)
                out = _read_msg(c)
                if out is not None and out[:2] == raw[:2]:
                    return out
        except OSError:
            continue
    return None


def main() -> None:
    """`kobako-dns ... NETDIR N`: fd 3 (the control socket) and 4 to 3+N-1 (listening
    sockets) are inherited from the command that started it."""
    import signal
    import sys
    netdir, n = sys.argv[1], int(sys.argv[2])
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    srv = Server(netdir, 3)
    for fd in range(4, 3 + n):
        srv.adopt(fd)
    srv.run()


# -- its life: called by network/endpoints.py under the network lock ---------------------------------

def bind(gateway: str) -> list:
    """UDP and TCP sockets on gateway:53, or [] when the port is taken there by someone
    else (a host resolver on 0.0.0.0:53): the network then works without names by DNS."""
    import _socket
    fam = _socket.AF_INET6 if ":" in gateway else _socket.AF_INET
    out = []
    try:
        for kind in (_socket.SOCK_DGRAM, _socket.SOCK_STREAM):
            s = _socket.socket(fam, kind | _socket.SOCK_CLOEXEC)
            out.append(s)
            s.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
            s.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEPORT, 1)
            if fam == _socket.AF_INET6:
                s.setsockopt(_socket.IPPROTO_IPV6, _socket.IPV6_V6ONLY, 1)
            s.bind((gateway, PORT))
            if kind == _socket.SOCK_STREAM:
                s.listen(64)
    except OSError:
        for s in out:
            s.close()
        return []
    return out


def _tell(netdir: str, msg: bytes, socks: list) -> bool:
    """A message (and sockets) to the running server; False if none listens."""
    import _socket
    c = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM | _socket.SOCK_CLOEXEC)
    try:
        anc = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS,
                struct.pack(f"{len(socks)}i", *(s.fileno() for s in socks)))] if socks else []
        c.sendmsg([msg], anc, _socket.MSG_DONTWAIT, os.path.join(netdir, CTL))
        return True
    except (FileNotFoundError, ConnectionRefusedError):
        return False
    except BlockingIOError:
        return True  # its queue is full: alive but busy (the sockets are lost; sync finds out)
    finally:
        c.close()


def ensure(netdir: str, new: list[str], live: list[str]) -> tuple[set[str], set[str]]:
    """Make the server answer on the gateways `new` (bridges just made) and be running for
    `live` (every user bridge's gateway, `new` included). (gateways tried, gateways it
    answers on of those): a gateway whose port 53 someone else holds is tried, not served."""
    bound = {gw: bind(gw) for gw in new}
    try:
        if not _tell(netdir, b"add", [s for ss in bound.values() for s in ss]):
            # not running (first use, a crash, kill -9): a new one with every live gateway
            for gw in live:
                if gw not in bound:
                    bound[gw] = bind(gw)
            _spawn(netdir, [s for ss in bound.values() for s in ss])
        return set(bound), {gw for gw, s in bound.items() if s}
    finally:
        for ss in bound.values():
            for s in ss:
                s.close()  # the server has its own copies now


def sync(netdir: str) -> None:
    _tell(netdir, b"sync", [])


def server_pid(netdir: str) -> int | None:
    """The pid in the pid file, if that process is this run root's kobako-dns."""
    try:
        with open(os.path.join(netdir, PIDFILE)) as f:
            pid = int(f.read().split()[0])
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except (OSError, ValueError, IndexError):
        return None
    return pid if argv[:1] == [b"kobako-dns"] and os.fsencode(netdir) in argv else None


def stop(netdir: str) -> bool:
    """End the server (ours only: the pid file's process, if /proc says it is kobako-dns for
    this run root) and remove its files. True if one was running."""
    import signal
    pid = server_pid(netdir)
    if pid is not None:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pid = None
    for n in (PIDFILE, CTL):
        try:
            os.unlink(os.path.join(netdir, n))
        except FileNotFoundError:
            pass
    return pid is not None


def _spawn(netdir: str, socks: list) -> None:
    """A fresh interpreter (as the monitor: not a fork that keeps the CLI's imports), in its
    own session, stdio on /dev/null, holding the control socket and `socks`."""
    import _socket
    import sys

    from kobako.paths import atomic_write
    path = os.path.join(netdir, CTL)
    try:
        os.unlink(path)  # a dead server's
    except FileNotFoundError:
        pass
    ctl = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM | _socket.SOCK_CLOEXEC)
    try:
        ctl.bind(path)
        fds = [ctl.fileno()] + [s.fileno() for s in socks]
        pkg = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        code = f"import sys; sys.path.insert(0, {pkg!r}); from kobako.network.dns import main; main()"
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        # the interpreter itself: in the monitor (argv[0] kobako-monitor) sys.executable is empty
        exe = sys.executable if os.path.isabs(sys.executable or "") else os.readlink("/proc/self/exe")
        pid = os.fork()
        if pid == 0:
            try:
                os.setsid()
                child = os.fork()
                if child:  # recorded before the caller goes on: stop() and the sweep find it
                    atomic_write(os.path.join(netdir, PIDFILE), f"{child}\n".encode(), 0o600, durable=False)
                    os._exit(0)
                null = os.open("/dev/null", os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(null, fd)
                base = max(fds + [3 + len(fds)]) + 1  # above all of them: moved to 3... without overlap
                for i, fd in enumerate(fds):
                    os.dup2(fd, base + i)
                for i in range(len(fds)):
                    os.dup2(base + i, 3 + i)
                os.closerange(3 + len(fds), 1 << 16)
                os.chdir("/")
                os.execve(exe, ["kobako-dns", "-I", "-S", "-c", code, netdir, str(len(fds))], env)
            finally:
                os._exit(127)
        os.waitpid(pid, 0)
    finally:
        ctl.close()
