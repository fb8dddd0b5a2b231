"""Per-registry TLS material in Docker's certs.d layout:

    /etc/docker/certs.d/<host[:port]>/ca.crt        a CA to trust (any *.crt), besides the system's
    /etc/docker/certs.d/<host[:port]>/client.cert   a client certificate (any *.cert) ...
    /etc/docker/certs.d/<host[:port]>/client.key    ... and its key (the same name, .key)

The directories searched, in order: $KOBAKO_CERTS_DIR (a colon-separated list) if set;
else, for a user other than root, ~/.config/containers/certs.d and ~/.config/docker/certs.d;
then /etc/docker/certs.d and /etc/containers/certs.d (podman's). Every directory named
after the registry contributes its CAs; the first client certificate found is used.
"""

from __future__ import annotations

import os
import ssl

from kobako import errors

SYSTEM_DIRS = ("/etc/docker/certs.d", "/etc/containers/certs.d")


class CertsError(errors.InvalidArgument):
    pass


def dirs() -> list[str]:
    env = os.environ.get("KOBAKO_CERTS_DIR")
    if env:
        return [d for d in env.split(":") if d]
    out = []
    if os.geteuid() != 0:
        config = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
        out += [os.path.join(config, "containers", "certs.d"), os.path.join(config, "docker", "certs.d")]
    return out + list(SYSTEM_DIRS)


def ca_hint(netloc: str) -> str:
    """Where a user puts the CA of the registry at `netloc`."""
    return os.path.join(dirs()[0], netloc, "ca.crt")


def material(netloc: str) -> tuple[list[str], tuple[str, str] | None]:
    """(CA files, (client cert, client key) or None) for the registry at host[:port] `netloc`."""
    cas: list[str] = []
    client: tuple[str, str] | None = None
    for base in dirs():
        d = os.path.join(base, netloc)
        try:
            names = sorted(os.listdir(d))
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as e:
            raise CertsError(f"cannot read {d}: {e.strerror or e}") from None
        for n in names:
            p = os.path.join(d, n)
            if n.endswith(".crt"):
                cas.append(p)
            elif n.endswith(".cert") and client is None:
                key = p[:-len(".cert")] + ".key"
                if not os.path.exists(key):
                    raise CertsError(f"client certificate {p} has no key {key} (CA certificates must "
                                     "end in .crt)")
                client = (p, key)
            elif n.endswith(".key") and not os.path.exists(p[:-len(".key")] + ".cert"):
                raise CertsError(f"key {p} has no client certificate {p[:-len('.key')]}.cert")
    return cas, client


def context(netloc: str, verify: bool) -> ssl.SSLContext:
    """A TLS context for the registry at `netloc`: the system's trust plus its certs.d CAs
    (unless `verify` is off), and its client certificate if it has one."""
    ctx = ssl.create_default_context()
    cas, client = material(netloc)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        for p in cas:
            try:
                ctx.load_verify_locations(cafile=p)
            except (ssl.SSLError, OSError) as e:
                raise CertsError(f"CA certificate {p} cannot be used: {_reason(e)}") from None
    if client:
        try:
            ctx.load_cert_chain(*client)
        except (ssl.SSLError, OSError) as e:
            raise CertsError(f"client certificate {client[0]} with key {client[1]} cannot be used: "
                             f"{_reason(e)}") from None
    return ctx


def _reason(e: BaseException) -> str:
    if isinstance(e, ssl.SSLError):
        if e.reason in (None, "PEM_LIB", "NO_CERTIFICATE_OR_CRL_FOUND", "NO_START_LINE"):
            return "not a valid PEM file"
        return e.reason.lower().replace("_", " ")
    return getattr(e, "strerror", None) or str(e)
