"""Which proxy a registry request goes through, from the environment, with the rules of Go's
net/http/httpproxy (what docker, containerd and podman use):

    HTTPS_PROXY / https_proxy   for https:// URLs
    HTTP_PROXY  / http_proxy    for http:// URLs
    NO_PROXY    / no_proxy      hosts reached directly (the upper-case name wins)

NO_PROXY is a comma list of: "*" (nothing is proxied); an IP address or a CIDR range
(matched against hosts given as addresses, no DNS lookups); a domain, which matches
itself and its subdomains ("example.com"), or only subdomains with a leading dot
(".example.com", "*.example.com"); any of these with ":port" to match one port only.
Requests to localhost and loopback addresses are never proxied.

A proxy URL without a scheme is http://; `user:password@` in it is sent as
Proxy-Authorization: Basic. An https:// URL is tunnelled with CONNECT through the proxy,
an http:// URL is sent to the proxy as an absolute-URI request.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import urllib.parse

from kobako import errors

DEFAULT_PORTS = {"http": 80, "https": 443}


class ProxyConfigError(errors.InvalidArgument):
    pass


class Proxy:
    """One proxy server: where to connect, what to say, how to name it in messages."""

    def __init__(self, host: str, port: int, authorization: str | None, display: str) -> None:
        self.host = host
        self.port = port
        self.authorization = authorization  # the Proxy-Authorization header's value, if any
        self.display = display              # the URL without its password

    def headers(self) -> dict[str, str]:
        return {"Proxy-Authorization": self.authorization} if self.authorization else {}


def _env(*names: str) -> str:
    for n in names:
        v = os.environ.get(n)
        if v:
            return v
    return ""


def parse(url: str, variable: str) -> Proxy:
    """'http://user:pw@proxy:3128' -> Proxy; a bare 'proxy:3128' is http://."""
    raw = url.strip()
    shown = _without_password(raw)
    if "://" not in raw:
        raw = "http://" + raw
    u = urllib.parse.urlsplit(raw)
    if u.scheme != "http":
        raise ProxyConfigError(f"{variable}={shown}: only http:// proxies are supported (not {u.scheme}://)")
    try:
        port = u.port or DEFAULT_PORTS["http"]
    except ValueError:
        raise ProxyConfigError(f"{variable}={shown}: invalid port") from None
    if not u.hostname:
        raise ProxyConfigError(f"{variable}={shown}: no proxy host")
    authorization = None
    if u.username is not None:
        creds = f"{urllib.parse.unquote(u.username)}:{urllib.parse.unquote(u.password or '')}"
        authorization = "Basic " + base64.b64encode(creds.encode()).decode()
    host = u.hostname
    bracketed = f"[{host}]" if ":" in host else host
    user = f"{urllib.parse.unquote(u.username)}@" if u.username else ""
    return Proxy(host, port, authorization, f"http://{user}{bracketed}:{port}")


def _without_password(url: str) -> str:
    """'http://user:secret@proxy:3128' -> 'http://user@proxy:3128', for messages."""
    scheme, sep, rest = url.rpartition("://")
    userinfo, at, hostpart = rest.rpartition("@")
    if not at:
        return url
    return f"{scheme}{sep}{userinfo.split(':', 1)[0]}@{hostpart}"


def _split(addr: str) -> tuple[str, str]:
    """'host:443' -> ('host', '443'); '[::1]:80' -> ('::1', '80'); 'host' -> ('host', '')."""
    if addr.startswith("["):
        host, _, rest = addr[1:].partition("]")
        return host, rest[1:] if rest.startswith(":") else ""
    if addr.count(":") == 1:
        host, _, port = addr.partition(":")
        return host, port
    return addr, ""


def _address(s: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(s)
    except ValueError:
        return None


def bypassed(host: str, port: int, no_proxy: str) -> bool:
    """Does NO_PROXY (or the loopback rule) say `host:port` is reached directly?"""
    host = host.lower().rstrip(".")
    if host == "localhost":
        return True
    ip = _address(host)
    if ip is not None and ip.is_loopback:
        return True
    for entry in no_proxy.lower().split(","):
        entry = entry.strip()
        if not entry:
            continue
        if entry == "*":
            return True
        if "/" in entry:
            try:
                net = ipaddress.ip_network(entry, strict=False)
            except ValueError:
                continue
            if ip is not None and ip in net:
                return True
            continue
        name, want_port = _split(entry)
        if _address(entry.strip("[]")):  # a bare address, IPv6 included
            name, want_port = entry.strip("[]"), ""
        if want_port and want_port != str(port):
            continue
        addr = _address(name)
        if addr is not None:  # an address matches only a host given as that address
            if addr == ip:
                return True
            continue
        if name.startswith("*."):
            name = name[1:]
        if name.startswith("."):
            if host.endswith(name):  # subdomains only
                return True
        elif host == name or host.endswith("." + name):
            return True
    return False


def for_url(scheme: str, netloc: str) -> Proxy | None:
    """The proxy for a request to scheme://netloc, or None to connect directly."""
    if scheme == "https":
        url, variable = _env("HTTPS_PROXY", "https_proxy"), "HTTPS_PROXY"
    else:
        url, variable = _env("HTTP_PROXY", "http_proxy"), "HTTP_PROXY"
    if not url:
        return None
    host, port = _split(netloc)
    if bypassed(host, int(port) if port.isdigit() else DEFAULT_PORTS[scheme], _env("NO_PROXY", "no_proxy")):
        return None
    return parse(url, variable)
