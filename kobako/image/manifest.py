"""Manifests, indexes and image configs: OCI image spec and Docker v2 schema 2.

Parsing is strict about what kobako relies on (media types, digests, sizes) and
turns anything else into one ManifestError message.
"""

from __future__ import annotations

import os

from kobako import errors
from kobako.image.reference import InvalidReference, check_digest

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = OCI_LAYER + "+gzip"
OCI_LAYER_ZSTD = OCI_LAYER + "+zstd"
OCI_LAYER_NONDIST_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

MANIFESTS = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEXES = (OCI_INDEX, DOCKER_LIST)
LAYERS = (OCI_LAYER, OCI_LAYER_GZIP, OCI_LAYER_ZSTD, OCI_LAYER_NONDIST_GZIP, DOCKER_LAYER_GZIP,
          DOCKER_LAYER_FOREIGN, "application/vnd.oci.image.layer.nondistributable.v1.tar",
          "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd")
ACCEPT = ", ".join((OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST))

_GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "armv6l": "arm", "i686": "386",
           "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}


class ManifestError(errors.InvalidArgument):
    pass


class Descriptor:
    """An OCI content descriptor. (Plain classes, not dataclasses, here: this module is on
    `kobako run`'s path, and dataclasses import inspect, re and ast.)"""

    def __init__(self, media_type: str, digest: str, size: int, platform: dict | None = None,
                 annotations: dict | None = None, urls: list | None = None) -> None:
        self.media_type, self.digest, self.size = media_type, digest, size
        self.platform, self.annotations, self.urls = platform, annotations, urls

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Descriptor) and self.to_json() == other.to_json()

    def __repr__(self) -> str:
        return f"Descriptor({self.media_type!r}, {self.digest!r}, {self.size})"

    @classmethod
    def parse(cls, d: object, what: str) -> Descriptor:
        if not isinstance(d, dict):
            raise ManifestError(f"{what}: descriptor is not an object")
        try:
            digest = check_digest(d.get("digest") or "")
        except InvalidReference as e:
            raise ManifestError(f"{what}: {e}") from None
        size = d.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ManifestError(f"{what}: descriptor {digest} has no valid size")
        mt = d.get("mediaType") or ""
        if not isinstance(mt, str):
            raise ManifestError(f"{what}: mediaType is not a string")
        plat = d.get("platform")
        return cls(mt, digest, size, plat if isinstance(plat, dict) else None,
                   d.get("annotations") if isinstance(d.get("annotations"), dict) else None,
                   d.get("urls") if isinstance(d.get("urls"), list) else None)

    def to_json(self) -> dict:
        out: dict = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.platform:
            out["platform"] = self.platform
        if self.annotations:
            out["annotations"] = self.annotations
        return out


class Manifest:
    def __init__(self, media_type: str, config: Descriptor, layers: list[Descriptor],
                 raw: dict | None = None) -> None:
        self.media_type, self.config, self.layers, self.raw = media_type, config, layers, raw or {}


class Index:
    def __init__(self, media_type: str, manifests: list[Descriptor], raw: dict | None = None) -> None:
        self.media_type, self.manifests, self.raw = media_type, manifests, raw or {}


def loads(data: bytes, what: str = "manifest") -> dict:
    try:
        import json
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise ManifestError(f"{what} is not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise ManifestError(f"{what} is not a JSON object")
    return doc


def media_type_of(doc: dict, header: str | None = None) -> str:
    """The document's own mediaType, else the HTTP Content-Type, else guessed from the shape."""
    mt = doc.get("mediaType") or (header or "").split(";")[0].strip()
    if mt in MANIFESTS + INDEXES:
        return mt
    if "manifests" in doc:
        return OCI_INDEX
    if "config" in doc and "layers" in doc:
        return OCI_MANIFEST
    if doc.get("schemaVersion") == 1:
        raise ManifestError("Docker schema 1 manifests are not supported (deprecated since 2017); "
                            "re-push the image with a current client")
    raise ManifestError(f"unsupported manifest media type {mt or '(none)'!r}")


def parse(data: bytes, header: str | None = None, what: str = "manifest") -> Manifest | Index:
    doc = loads(data, what)
    mt = media_type_of(doc, header)
    if mt in INDEXES:
        ms = doc.get("manifests")
        if not isinstance(ms, list):
            raise ManifestError(f"{what}: index has no manifests list")
        return Index(mt, [Descriptor.parse(m, what) for m in ms], doc)
    cfg = Descriptor.parse(doc.get("config"), what + " config")
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise ManifestError(f"{what}: manifest has no layers list")
    descs = [Descriptor.parse(layer, what + " layer") for layer in layers]
    for d in descs:
        if d.media_type and d.media_type not in LAYERS:
            raise ManifestError(f"{what}: unsupported layer media type {d.media_type!r}")
    return Manifest(mt, cfg, descs, doc)


def host_platform() -> dict:
    m = os.uname().machine
    p = {"os": "linux", "architecture": _GOARCH.get(m, m)}
    if m == "armv7l":
        p["variant"] = "v7"
    elif m == "aarch64":
        p["variant"] = "v8"
    return p


def parse_platform(s: str) -> dict:
    """`os/arch[/variant]` (or just `arch`, or just `os`, as containerd's platforms.Parse
    takes them), normalised: `linux/aarch64` is `linux/arm64`, `x86_64` is `amd64`."""
    parts = s.strip().lower().split("/")
    if len(parts) > 3 or not all(p.strip() for p in parts):
        raise ManifestError(f"invalid platform {s!r}: expected os/arch[/variant], e.g. linux/arm64")
    if len(parts) == 1:  # one word: an OS (its host architecture) or an architecture (on linux)
        word = parts[0]
        if word in _OSES:
            return normalize({"os": word, "architecture": host_platform()["architecture"]})
        parts = ["linux", word]
    if parts[0] not in _OSES:
        raise ManifestError(f"invalid platform {s!r}: unknown operating system {parts[0]!r} "
                            "(expected os/arch[/variant], e.g. linux/arm64)")
    p = {"os": parts[0], "architecture": parts[1]}
    if len(parts) == 3:
        p["variant"] = parts[2]
    p = normalize(p)
    if p["architecture"] not in _ARCHES:
        raise ManifestError(f"invalid platform {s!r}: unknown architecture {parts[1]!r} "
                            f"(known: {', '.join(sorted(_ARCHES))})")
    return p


# GOOS / GOARCH values an image's config may name (Go's list, less the ones no Linux image uses)
_OSES = {"linux", "windows", "darwin", "freebsd", "netbsd", "openbsd", "solaris", "illumos", "aix", "plan9",
         "android", "ios", "js", "wasip1", "dragonfly"}
_ARCHES = {"amd64", "386", "arm", "arm64", "ppc64", "ppc64le", "s390x", "riscv64", "mips", "mipsle",
           "mips64", "mips64le", "loong64", "wasm", "sparc64"}


def normalize(p: dict) -> dict:
    """A platform as containerd's platforms.Normalize writes it: lower case, Go's names for
    the architecture, arm's variant made explicit (v7) and arm64's default one (v8) dropped."""
    os_ = (p.get("os") or "linux").lower()
    arch, variant = (p.get("architecture") or "").lower(), (p.get("variant") or "").lower()
    if arch in ("x86_64", "x86-64", "amd64"):
        arch, variant = "amd64", "" if variant == "v1" else variant
    elif arch in ("i386", "i686", "386"):
        arch, variant = "386", ""
    elif arch in ("aarch64", "arm64"):
        arch = "arm64"
        variant = {"8": "", "v8": "", "v8.0": "", "9": "v9", "9.0": "v9", "v9.0": "v9"}.get(variant, variant)
    elif arch == "armhf":
        arch, variant = "arm", "v7"
    elif arch == "armel":
        arch, variant = "arm", "v6"
    elif arch == "arm":
        variant = {"": "v7", "7": "v7", "5": "v5", "6": "v6", "8": "v8"}.get(variant, variant)
    out = {"os": "darwin" if os_ == "macos" else os_, "architecture": arch}
    if variant:
        out["variant"] = variant
    return out


def platform_string(p: dict) -> str:
    """os/arch[/variant], as docker prints a platform."""
    return "/".join(x for x in (p.get("os") or "linux", p.get("architecture") or "", p.get("variant")) if x)


def platform_matches(have: dict, want: dict) -> bool:
    """Whether an image of platform `have` serves a request for `want` (both normalised):
    os and architecture equal; a variant only when both name one (an image without one
    serves any, as containerd's matcher lets it)."""
    h, w = normalize(have), normalize(want)
    if (h["os"], h["architecture"]) != (w["os"], w["architecture"]):
        return False
    return not (h.get("variant") and w.get("variant")) or h["variant"] == w["variant"]


class NoMatchingManifest(errors.NotFound):
    """A platform an index (or an image) does not have: dockerd answers 404."""


def select(index: Index, want: dict | None = None) -> Descriptor:
    """The index entry for the wanted platform (the host's by default), as containerd picks it:
    os and architecture must match; a variant, when both name one, too (an exact variant
    is preferred over an entry naming none)."""
    want = normalize(want or host_platform())
    best = None
    for d in index.manifests:
        if d.media_type and d.media_type not in MANIFESTS:
            continue
        p = d.platform or {}
        have = normalize({"os": p.get("os") or "linux", "architecture": p.get("architecture") or "",
                          "variant": p.get("variant") or ""})
        if not platform_matches(have, want):
            continue
        if have.get("variant") == want.get("variant"):
            return d
        best = best or d
    if best is None:
        raise NoMatchingManifest(f"no matching manifest for {platform_string(want)} in the manifest list "
                                 "entries")
    return best


def is_image_entry(d: Descriptor) -> bool:
    """An index entry that is a platform's image: not a nested index, not an attestation
    (BuildKit's provenance manifests: platform unknown/unknown, annotated by type)."""
    if d.media_type and d.media_type not in MANIFESTS:
        return False
    if (d.annotations or {}).get("vnd.docker.reference.type"):
        return False
    return (d.platform or {}).get("architecture") != "unknown"


def entry_platform(d: Descriptor) -> dict:
    """An index entry's platform, normalised (linux/amd64 when it names none)."""
    p = d.platform or {}
    return normalize({"os": p.get("os") or "linux", "architecture": p.get("architecture") or "amd64",
                      "variant": p.get("variant") or ""})


def config_platform(config: dict, variant: str = "") -> dict:
    """An image config's platform, normalised; `variant` (its index entry's) when the config
    names none, as many arm images' configs do not."""
    return normalize({"os": config.get("os") or "linux", "architecture": config.get("architecture") or "",
                      "variant": config.get("variant") or variant})


def parse_config(data: bytes) -> dict:
    doc = loads(data, "image config")
    rootfs = doc.get("rootfs")
    if not isinstance(rootfs, dict) or not isinstance(rootfs.get("diff_ids"), list):
        raise ManifestError("image config has no rootfs.diff_ids")
    for d in rootfs["diff_ids"]:
        try:
            check_digest(d if isinstance(d, str) else "")
        except InvalidReference as e:
            raise ManifestError(f"image config: {e}") from None
    return doc


def dumps(doc: dict) -> bytes:
    """Canonical-enough JSON for manifests and configs kobako writes itself."""
    import json
    return json.dumps(doc, separators=(",", ":"), sort_keys=False).encode()
