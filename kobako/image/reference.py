"""Image names as people type them, normalised the way Docker does:

    busybox                 -> docker.io/library/busybox:latest
    me/app:1                -> docker.io/me/app:1
    localhost:5000/app      -> localhost:5000/app:latest
    app@sha256:<64 hex>     -> docker.io/library/app@sha256:...

The first component is a registry host when it has a '.' or ':' or is 'localhost'.
Hand-written checks instead of `re`: the CLI's start-up path avoids that import.
"""

from __future__ import annotations

from kobako import errors

DEFAULT_DOMAIN = "docker.io"
LEGACY_DOMAINS = ("index.docker.io", "registry-1.docker.io")
_LOWER = set("abcdefghijklmnopqrstuvwxyz0123456789")
_TAG = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
_HOST = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:[]")
HEX = set("0123456789abcdef")
ALGORITHMS = {"sha256": 64, "sha512": 128}


class InvalidReference(errors.InvalidArgument, ValueError):
    """A name that is not an image reference (400 / exit 125); still a ValueError for the
    callers that parse names in bulk."""


class Reference:
    __slots__ = ("domain", "path", "tag", "digest")

    def __init__(self, domain: str, path: str, tag: str | None = None, digest: str | None = None) -> None:
        self.domain, self.path, self.tag, self.digest = domain, path, tag, digest

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Reference) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __repr__(self) -> str:
        return f"Reference({str(self)!r})"

    @property
    def name(self) -> str:
        return f"{self.domain}/{self.path}"

    def __str__(self) -> str:
        s = self.name
        if self.tag:
            s += ":" + self.tag
        if self.digest:
            s += "@" + self.digest
        return s

    def with_tag(self, tag: str) -> Reference:
        return Reference(self.domain, self.path, tag, None)

    @property
    def locator(self) -> str:
        """What to ask the registry for: the digest if pinned, else the tag."""
        return self.digest or self.tag or "latest"


def check_digest(d: str) -> str:
    algo, _, hexpart = d.partition(":")
    n = ALGORITHMS.get(algo)
    if n is None or len(hexpart) != n or not set(hexpart) <= HEX:
        raise InvalidReference(f"invalid digest {d!r}: expected sha256:<64 lowercase hex digits>")
    return d


def _check_component(c: str, whole: str) -> None:
    # [a-z0-9]+ separated by '.', '_', '__' or runs of '-'
    if not c or c[0] not in _LOWER or c[-1] not in _LOWER:
        raise InvalidReference(f"invalid reference format: {whole!r} (repository names are lowercase "
                             "letters, digits and separators . _ -)")
    prev = ""
    run = 0
    for ch in c:
        if ch in _LOWER:
            prev, run = ch, 0
            continue
        if ch not in "._-":
            raise InvalidReference(f"invalid reference format: {whole!r} (character {ch!r} is not allowed "
                                 "in a repository name; names are lowercase)")
        run += 1
        if ch == "-":
            prev = ch
            continue
        if ch == "." and run > 1 or ch == "_" and (run > 2 or run == 2 and prev != "_"):
            raise InvalidReference(f"invalid reference format: {whole!r}")
        prev = ch


def search_domains() -> list[str]:
    """Where a name without a registry (`busybox`, `me/app`) is looked up, in order: the
    configuration's [registries] search, else docker.io alone (Docker's behaviour)."""
    from kobako import config
    search = config.get().get("registries", "search")
    if not search:
        return [DEFAULT_DOMAIN]
    from kobako.image.registries import normalize
    out: list[str] = []
    for d in search:
        d = normalize(d)
        d = DEFAULT_DOMAIN if d in LEGACY_DOMAINS else d
        if d not in out:
            out.append(d)
    return out


def short_name_domain() -> str:
    """The registry a short name means when one is needed (tag, push, commit): the first
    of the search list."""
    return search_domains()[0]


def is_short(s: str) -> bool:
    """A name without a registry host (`busybox`, `me/app:1`): one the search list applies to."""
    first, slash, _ = s.partition("/")
    return not slash or not ("." in first or ":" in first or first == "localhost" or first != first.lower())


def candidates(s: str, default_tag: str | None = "latest") -> list[Reference]:
    """The references a name stands for, in the order they are tried: one for a qualified
    name, one per registry of the search list for a short one (podman's
    unqualified-search-registries)."""
    if not is_short(s.partition("@")[0]):
        return [parse(s, default_tag)]
    return [parse(s, default_tag, domain=d) for d in search_domains()]


def parse(s: str, default_tag: str | None = "latest", domain: str | None = None) -> Reference:
    """Parse and normalise; a bare name gets `default_tag` unless it has a digest. `domain`:
    the registry of a short name (by default the first of the search list)."""
    whole = s
    if not s or len(s) > 4096 or s != s.strip():
        raise InvalidReference(f"invalid reference format: {whole!r}")
    digest = None
    if "@" in s:
        s, digest = s.split("@", 1)
        check_digest(digest)
    tag = None
    slash = s.rfind("/")
    colon = s.rfind(":")
    if colon > slash:
        s, tag = s[:colon], s[colon + 1:]
        if not tag or len(tag) > 128 or tag[0] in ".-" or not set(tag) <= _TAG:
            raise InvalidReference(f"invalid tag in {whole!r}: tags are up to 128 letters, digits, "
                                 "'_', '.', '-' and do not start with '.' or '-'")
    parts = s.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"
                           or parts[0] != parts[0].lower()):
        domain, parts = parts[0], parts[1:]
        if not set(domain) <= _HOST or domain.startswith(("-", ".")) or domain.endswith((".", ":")):
            raise InvalidReference(f"invalid registry host in {whole!r}")
    else:
        domain = domain or short_name_domain()
    if domain in LEGACY_DOMAINS:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and len(parts) == 1:
        parts = ["library", parts[0]]
    for c in parts:
        _check_component(c, whole)
    path = "/".join(parts)
    if len(domain) + 1 + len(path) > 255:
        raise InvalidReference(f"repository name too long: {whole!r}")
    if tag is None and digest is None:
        tag = default_tag
    return Reference(domain, path, tag, digest)


def looks_like_id(s: str) -> bool:
    """A (possibly shortened) image or container ID: hex, optionally 'sha256:'-prefixed."""
    h = s[7:] if s.startswith("sha256:") else s
    return 3 <= len(h) <= 64 and set(h) <= HEX


def familiar(name: str) -> str:
    """docker.io/library/busybox:latest -> busybox:latest, as the docker CLI shows names."""
    for p in ("docker.io/library/", "docker.io/"):
        if name.startswith(p):
            return name[len(p):]
    return name
