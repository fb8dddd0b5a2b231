"""Images of another CPU architecture, run through QEMU's user-mode emulators (binfmt_misc).

The kernel runs a foreign ELF binary through the interpreter binfmt_misc names for its magic.
Debian's qemu-user-static ships one handler description per architecture in
/usr/lib/binfmt.d/qemu-<arch>.conf, which systemd-binfmt registers at boot. Where nothing did
(no systemd, a container host), the engine registers the one handler a container needs, from
that file, when the container is created or started — with the F flag, so the kernel opens
the interpreter on the host at registration and never looks its path up inside a container's
root (which has no /usr/libexec/qemu-binfmt). A handler someone else registered is used when
it has F and otherwise explained, never replaced or removed; registered handlers stay, as
systemd-binfmt's do (docs/platforms.md says why).

Imported only when an image's architecture differs from the host's: a native `run` never
loads this module.
"""

from __future__ import annotations

import os

from kobako import errors

BINFMT_MISC = "/proc/sys/fs/binfmt_misc"
# systemd-binfmt's search path; a file in an earlier directory overrides one of the same name
CONF_DIRS = ("/etc/binfmt.d", "/run/binfmt.d", "/usr/local/lib/binfmt.d", "/usr/lib/binfmt.d")
PACKAGE = "qemu-user-static"

# Go's architecture names (images) -> QEMU's (its binaries and binfmt.d files)
QEMU_ARCH = {"amd64": "x86_64", "386": "i386", "arm64": "aarch64", "arm": "arm", "ppc64le": "ppc64le",
             "ppc64": "ppc64", "s390x": "s390x", "riscv64": "riscv64", "mips": "mips", "mipsle": "mipsel",
             "mips64": "mips64", "mips64le": "mips64el", "loong64": "loongarch64", "sparc64": "sparc64"}
# what the host's CPU runs itself, beside its own architecture
NATIVE_TOO = {"amd64": {"386"}}


class EmulationUnavailable(errors.Unavailable):
    pass


class Handler:
    """One binfmt_misc magic handler: a binfmt.d line (`:name:M:offset:magic:mask:interpreter:flags`)
    or a registered entry (/proc/sys/fs/binfmt_misc/<name>). Magic and mask are bytes."""

    def __init__(self, name: str, offset: int, magic: bytes, mask: bytes, interpreter: str, flags: str,
                 enabled: bool = True, line: str = "") -> None:
        self.name, self.offset, self.magic, self.mask = name, offset, magic, mask
        self.interpreter, self.flags, self.enabled, self.line = interpreter, flags, enabled, line

    def matches(self, other: Handler) -> bool:
        """Whether two handlers claim the same binaries (the kernel compares magic under mask)."""
        return (self.offset, self.masked(), self.mask or b"\xff" * len(self.magic)) == \
            (other.offset, other.masked(), other.mask or b"\xff" * len(other.magic))

    def masked(self) -> bytes:
        mask = self.mask or b"\xff" * len(self.magic)
        return bytes(m & k for m, k in zip(self.magic, mask, strict=False))

    def registration(self) -> str:
        """The line to write to `register`: as the file has it, with F among the flags."""
        head, sep, flags = self.line.rstrip("\n").rpartition(self.line[0])
        return head + sep + (flags if "F" in flags else flags + "F")


def _unescape(s: str) -> bytes:
    """binfmt_misc's escapes: \\xHH (and \\\\); other characters stand for themselves."""
    out, i = bytearray(), 0
    while i < len(s):
        if s[i] == "\\" and s[i + 1:i + 2] == "x" and i + 4 <= len(s):
            out.append(int(s[i + 2:i + 4], 16))
            i += 4
        elif s[i] == "\\" and s[i + 1:i + 2] == "\\":
            out.append(0x5C)
            i += 2
        else:
            out.extend(s[i].encode())
            i += 1
    return bytes(out)


def parse_conf_line(line: str) -> Handler | None:
    """One line of a binfmt.d file; None for blank lines, comments and extension handlers.
    The first character is the field separator (systemd-binfmt and the kernel take any)."""
    line = line.rstrip("\n")
    if not line.strip() or line[0] in "#;":
        return None
    parts = line[1:].split(line[0])
    if len(parts) != 7:
        raise ValueError(f"binfmt.d line has {len(parts)} fields, not 7: {line!r}")
    name, kind, offset, magic, mask, interp, flags = parts
    if kind != "M":
        return None
    try:
        return Handler(name, int(offset or 0), _unescape(magic), _unescape(mask), interp, flags, line=line)
    except ValueError:
        raise ValueError(f"bad magic or offset in binfmt.d line {line!r}") from None


def parse_entry(name: str, text: str) -> Handler | None:
    """A registered handler as /proc/sys/fs/binfmt_misc/<name> shows it; None for extension handlers."""
    fields: dict[str, str] = {}
    lines = text.splitlines()
    for ln in lines[1:]:
        key, _, val = ln.partition(" ")
        fields[key.rstrip(":")] = val.strip()
    if "magic" not in fields:
        return None
    return Handler(name, int(fields.get("offset") or 0), bytes.fromhex(fields["magic"]),
                   bytes.fromhex(fields.get("mask", "")), fields.get("interpreter", ""),
                   fields.get("flags", ""), enabled=bool(lines) and lines[0].strip() == "enabled")


def needs_emulation(arch: str) -> bool:
    from kobako.image.manifest import host_platform
    host = host_platform()["architecture"]
    return arch != host and arch not in NATIVE_TOO.get(host, set())


def ensure_for(arch: str) -> str:
    """`arch` (an image's, any spelling) normalised; '' when the host runs it itself, else
    its handler made sure of."""
    from kobako.image.manifest import normalize
    arch = normalize({"architecture": arch})["architecture"]
    if not needs_emulation(arch):
        return ""
    ensure(arch, f"linux/{arch}")
    return arch


def _unavailable(platform: str, why: str) -> EmulationUnavailable:
    return EmulationUnavailable(f"cannot run {platform} images on this host: {why}",
                                f"install Debian's {PACKAGE} package: apt-get install {PACKAGE}")


def handler_for(arch: str, platform: str, conf_dirs: tuple[str, ...] = CONF_DIRS) -> Handler:
    """The binfmt handler qemu-user-static ships for `arch` (Go's name); Unavailable if none is installed."""
    qarch = QEMU_ARCH.get(arch)
    if qarch is None:
        raise _unavailable(platform, f"QEMU has no user-mode emulator for {arch}")
    for d in conf_dirs:
        path = os.path.join(d, f"qemu-{qarch}.conf")
        try:
            with open(path) as f:
                text = f.read()
        except FileNotFoundError:
            continue
        except OSError as e:
            raise _unavailable(platform, f"cannot read {path}: {e.strerror}") from None
        for line in text.splitlines():
            try:
                h = parse_conf_line(line)
            except ValueError as e:
                raise _unavailable(platform, f"{path}: {e}") from None
            if h is not None:
                if not os.access(h.interpreter, os.X_OK):
                    raise _unavailable(platform, f"{path} names {h.interpreter}, which is missing")
                return h
        raise _unavailable(platform, f"{path} has no handler")
    raise _unavailable(platform, f"no QEMU emulator for {arch} is installed (no qemu-{qarch}.conf in "
                                 f"{', '.join(conf_dirs)})")


def registered(root: str = BINFMT_MISC) -> list[Handler]:
    out = []
    for name in sorted(os.listdir(root)):
        if name in ("register", "status"):
            continue
        try:
            with open(os.path.join(root, name)) as f:
                h = parse_entry(name, f.read())
        except (OSError, ValueError):
            continue  # removed meanwhile, or not a magic handler
        if h is not None:
            out.append(h)
    return out


def _root_must(platform: str, want: Handler, why: str) -> EmulationUnavailable:
    return EmulationUnavailable(
        f"cannot run {platform} images: {why}",
        f"as root, register qemu-user-static's handler once: kobako run --rm --platform {platform} IMAGE, "
        f"or: cat /usr/lib/binfmt.d/{want.name}.conf > {BINFMT_MISC}/register")


def ensure(arch: str, platform: str, root: str = BINFMT_MISC, conf_dirs: tuple[str, ...] = CONF_DIRS,
           is_root: bool | None = None) -> str:
    """Make sure the kernel runs `arch` binaries through QEMU, with an F handler; registers
    qemu-user-static's one when none claims them. Returns how: 'registered' or 'present'."""
    want = handler_for(arch, platform, conf_dirs)
    is_root = os.geteuid() == 0 if is_root is None else is_root
    if not os.path.exists(os.path.join(root, "register")):
        if not is_root:
            raise _root_must(platform, want, f"binfmt_misc is not mounted at {root}")
        _mount_binfmt_misc(root)
    try:
        with open(os.path.join(root, "status")) as f:
            if f.read().strip() != "enabled":
                raise EmulationUnavailable(f"cannot run {platform} images: binfmt_misc is disabled "
                                           f"on this host ({root}/status)",
                                           f"someone turned it off; as root: echo 1 > {root}/status")
    except FileNotFoundError:
        pass
    for attempt in range(2):
        for h in registered(root):
            if h.name != want.name and not want.matches(h):
                continue
            if not want.matches(h):
                raise EmulationUnavailable(
                    f"cannot run {platform} images: a binfmt handler named {h.name} is registered for "
                    "other binaries", f"kobako does not replace it; see {root}/{h.name}")
            if not h.enabled:
                raise EmulationUnavailable(
                    f"cannot run {platform} images: the binfmt handler {h.name} for {arch} binaries "
                    "is disabled", f"kobako does not change it; as root: echo 1 > {root}/{h.name}")
            if "F" not in h.flags:
                raise EmulationUnavailable(
                    f"cannot run {platform} images: the binfmt handler {h.name} for {arch} binaries was "
                    "registered without the F flag, so its interpreter "
                    f"{h.interpreter} would be looked up inside each container, where it is missing",
                    f"kobako does not replace it; as root, remove it (echo -1 > {root}/{h.name}) and "
                    "kobako registers qemu-user-static's with F, or register it again with F yourself")
            return "present"
        if attempt or not is_root:
            break
        try:
            fd = os.open(os.path.join(root, "register"), os.O_WRONLY)
            try:
                os.write(fd, want.registration().encode())
            finally:
                os.close(fd)
            return "registered"
        except FileExistsError:
            continue  # another kobako registered it meanwhile: look again
        except OSError as e:
            raise EmulationUnavailable(f"cannot run {platform} images: registering the binfmt handler "
                                       f"{want.name} failed: {e.strerror}",
                                       f"the line was: {want.registration()}") from None
    raise _root_must(platform, want, f"no binfmt handler for {arch} binaries is registered")


def _mount_binfmt_misc(root: str) -> None:
    """binfmt_misc where systemd's proc-sys-fs-binfmt_misc.mount puts it."""
    from kobako.linux import mount as m
    try:
        m.mount("binfmt_misc", root, "binfmt_misc", m.MS_NOSUID | m.MS_NODEV | m.MS_NOEXEC)
    except OSError as e:
        raise EmulationUnavailable(f"cannot mount binfmt_misc at {root}: {e.strerror}",
                                   "the kernel needs CONFIG_BINFMT_MISC") from None


def image_platform(image: dict, config: dict) -> dict:
    """An image's platform, normalised: its record's os and architecture, its config's variant
    (else the record's: the index entry's it was pulled by)."""
    from kobako.image.manifest import normalize
    return normalize({"os": image.get("os") or config.get("os") or "linux",
                      "architecture": image.get("architecture") or config.get("architecture") or "",
                      "variant": config.get("variant") or image.get("variant") or ""})


def check_image_platform(have: dict, name: str, want: dict | None) -> list[str]:
    """Whether a container of an image of platform `have` may be made: refused (not found, as
    dockerd says it) when a requested platform `want` differs; docker's warning when none was
    requested and the image is not the host's. QEMU for a foreign one is seen to at create."""
    from kobako.image.manifest import host_platform, normalize, platform_matches, platform_string
    if want is not None:
        if not platform_matches(have, want):
            raise errors.NotFound(f"image with reference {name} was found but its platform "
                                  f"({platform_string(have)}) does not match the specified platform "
                                  f"({platform_string(want)})")
        return []
    host = normalize(host_platform())
    if have["os"] == host["os"] and not needs_emulation(have["architecture"]):
        return []
    return [f"The requested image's platform ({platform_string(have)}) does not match the detected host "
            f"platform ({platform_string(host)}) and no specific platform was requested"]


def check_requested(want: dict) -> None:
    """Before a pull for `--platform`: an OS or architecture this host cannot run at all."""
    from kobako.image.manifest import host_platform, platform_string
    if want["os"] != host_platform()["os"]:
        raise _unavailable(platform_string(want), f"this host runs {host_platform()['os']} binaries only")
    if needs_emulation(want["architecture"]):
        handler_for(want["architecture"], platform_string(want))


def check_image(engine, image: dict, name: str, want: dict | None) -> list[str]:
    """check_image_platform for an image in `engine`'s store (its variant is in its config)."""
    return check_image_platform(image_platform(image, engine.image_config_doc(image)), name, want)
