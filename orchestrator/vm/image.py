"""The guest's initramfs, assembled offline from the host's Debian packages.

An image is a list of uncompressed newc cpio layers that QEMU gets
concatenated as one initramfs (the kernel unpacks concatenated archives in
order, later entries overwriting earlier ones):

* the **base** layer: busybox, dropbear with its shared libraries, /init and
  a minimal /etc.  It is the same for every run, so it is cached under its
  content hash and rebuilt only when an input changes;
* the **run** layer: this run's keys, the guest's network settings and the
  test binaries.  It is small and written fresh for every run.

The cpio writer is pure Python and deterministic (mtime 0, owner root, inode
numbers in order, parents before children), so equal inputs give
byte-identical archives and a content hash names an image exactly.
Uncompressed because unpacking is cheap while decompressing under TCG is not
(see DESIGN.md, "The guest").
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import itertools
import os
import re
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from orchestrator import proc
from orchestrator.errors import InfraError, UserError
from orchestrator.sandbox import PLAIN, Sandbox

# Bump when the archive layout or encoding changes in a way the content hash
# would not see; it is hashed together with the archive bytes.
FORMAT_VERSION = "1"
VM_IMAGES = Path(__file__).resolve().parents[2] / "vm_images"
TOOL_TIMEOUT = 60.0

# Guest paths shared with vm_images/init (which reads them) and the host side.
HOST_KEY = "/etc/dropbear/dropbear_ed25519_host_key"
AUTHORIZED_KEYS = "/root/.ssh/authorized_keys"
NET_CONFIG = "/etc/orchestrate/net"

_S_IFDIR = 0o040000
_S_IFREG = 0o100000
_S_IFLNK = 0o120000
_S_IFCHR = 0o020000
_TRAILER = "TRAILER!!!"


# --- archive entries -------------------------------------------------------


def _check_path(path: str) -> None:
    """Entries name absolute, normalised guest paths (never "/" itself)."""
    pure = PurePosixPath(path)
    # PurePosixPath keeps a leading "//" (POSIX leaves it open): refuse it too.
    normal = pure.is_absolute() and str(pure) == path and not path.startswith("//")
    if not normal or path == "/" or ".." in pure.parts:
        raise ValueError(f"not a normalised absolute guest path: {path!r}")


@dataclass(frozen=True)
class Directory:
    path: str
    mode: int = 0o755

    def __post_init__(self) -> None:
        _check_path(self.path)


@dataclass(frozen=True)
class File:
    """A regular file whose content is given as bytes or read from a host path."""

    path: str
    source: bytes | Path
    mode: int = 0o644

    def __post_init__(self) -> None:
        _check_path(self.path)

    def content(self) -> bytes:
        # read_bytes follows symlinks: the guest gets the real file.
        return self.source.read_bytes() if isinstance(self.source, Path) else self.source


@dataclass(frozen=True)
class Symlink:
    path: str
    target: str

    def __post_init__(self) -> None:
        _check_path(self.path)


@dataclass(frozen=True)
class CharDevice:
    path: str
    major: int
    minor: int
    mode: int = 0o600

    def __post_init__(self) -> None:
        _check_path(self.path)


Entry = Directory | File | Symlink | CharDevice


# --- the newc cpio writer --------------------------------------------------


def _pad4(length: int) -> bytes:
    return b"\0" * (-length % 4)


def _record(
    name: str, ino: int, mode: int, nlink: int, data: bytes, rdev: tuple[int, int] = (0, 0)
) -> bytes:
    """One newc record: header, NUL-terminated name and data, each padded to 4 bytes."""
    encoded = name.encode() + b"\0"
    # magic, then ino mode uid gid nlink mtime filesize devmajor devminor
    # rdevmajor rdevminor namesize check: 13 fields of 8 hex digits.
    fields = (ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0)
    header = b"070701" + b"".join(b"%08X" % value for value in fields)
    head = header + encoded
    return head + _pad4(len(head)) + data + _pad4(len(data))


def _encode(entry: Entry, ino: int) -> bytes:
    # Names are stored relative ("bin/sh"), as gen_init_cpio and `find .` do.
    name = entry.path.lstrip("/")
    match entry:
        case Directory(mode=mode):
            return _record(name, ino, _S_IFDIR | mode, 2, b"")
        case File(mode=mode):
            return _record(name, ino, _S_IFREG | mode, 1, entry.content())
        case Symlink(target=target):
            return _record(name, ino, _S_IFLNK | 0o777, 1, target.encode())
        case CharDevice(major=major, minor=minor, mode=mode):
            return _record(name, ino, _S_IFCHR | mode, 1, b"", (major, minor))


def ordered(entries: Iterable[Entry]) -> list[Entry]:
    """Entries in archive order: by path components, so parents precede children.

    The kernel creates each entry as it unpacks, so a directory must come
    before anything inside it (within one archive or an earlier layer).
    """
    result = sorted(entries, key=lambda e: PurePosixPath(e.path).parts)
    for before, after in itertools.pairwise(result):
        if before.path == after.path:
            raise ValueError(f"duplicate archive entry: {after.path}")
    return result


def cpio_bytes(entries: Iterable[Entry]) -> bytes:
    """The newc archive of entries; a pure function of the entries' content."""
    records = [_encode(entry, ino) for ino, entry in enumerate(ordered(entries), start=1)]
    records.append(_record(_TRAILER, 0, 0, 1, b""))
    return b"".join(records)


def _write_atomically(out: Path, data: bytes) -> Path:
    # Readers (QEMU, a concurrent run reusing the cache) never see half a file.
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(out)
    return out


def write_cpio(entries: Sequence[Entry], out: Path) -> Path:
    return _write_atomically(out, cpio_bytes(entries))


def with_parents(entries: Iterable[Entry], existing: Iterable[str] = ()) -> list[Entry]:
    """Entries plus a 0755 Directory for every missing ancestor not in existing.

    existing names directories an earlier layer provides: re-declaring them
    here would reset their mode (the kernel chmods existing directories).
    """
    result = list(entries)
    have = {e.path for e in result} | set(existing)
    for entry in list(result):
        for parent in PurePosixPath(entry.path).parents:
            name = str(parent)
            if name != "/" and name not in have:
                have.add(name)
                result.append(Directory(name))
    return result


# --- the base layer --------------------------------------------------------

# Mount points and other directories of the base layer, with their modes.
BASE_DIRECTORIES: Mapping[str, int] = {
    "/bin": 0o755,
    "/dev": 0o755,
    "/etc": 0o755,
    "/mnt": 0o755,
    "/proc": 0o555,
    "/root": 0o700,
    "/root/.ssh": 0o700,
    "/run": 0o755,
    "/sys": 0o555,
    "/sys/fs": 0o755,
    "/sys/fs/bpf": 0o755,
    "/tmp": 0o1777,
    "/usr": 0o755,
    "/usr/sbin": 0o755,
    "/var": 0o755,
    "/var/log": 0o755,
}
# Merged-/usr style aliases, so "#!/usr/bin/env" and /sbin/... resolve.
BASE_LINKS: Mapping[str, str] = {"/sbin": "bin", "/usr/bin": "../bin", "/var/run": "../run"}
# Mounted over by init: a file placed below one of these would be hidden.
MOUNT_POINTS = ("/dev", "/proc", "/run", "/sys", "/tmp", "/var/run")

_ETC_FILES = {
    "/etc/passwd": b"root:x:0:0:root:/root:/bin/sh\n",
    "/etc/group": b"root:x:0:\n",
    # dropbear refuses logins whose shell is not listed here.
    "/etc/shells": b"/bin/sh\n",
    # glibc's lookups in dropbear: files only, no NSS modules to load.
    "/etc/nsswitch.conf": b"passwd: files\ngroup: files\nshadow: files\nhosts: files\n",
    "/etc/hosts": b"127.0.0.1 localhost\n127.0.1.1 guest\n",
}


@dataclass(frozen=True)
class BaseInputs:
    """Host files the base layer is made of; tests substitute their own."""

    init: Path = field(default_factory=lambda: VM_IMAGES / "init")
    busybox: Path = Path("/bin/busybox")
    dropbear: Path = Path("/usr/sbin/dropbear")


def _require(path: Path, package: str) -> None:
    if not path.is_file():
        raise InfraError(f"{path} is missing (install the Debian package {package})")


def busybox_applets(busybox: Path) -> tuple[str, ...]:
    listing = proc.run([busybox, "--list"], timeout=TOOL_TIMEOUT).check().stdout
    return tuple(line.strip() for line in listing.splitlines() if line.strip())


def parse_ldd(output: str) -> tuple[str, ...]:
    """Absolute paths of the libraries and loader in ldd's output, in order.

    Lines are "libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x...)", the
    loader's "/lib64/ld-linux-x86-64.so.2 (0x...)", and the vDSO without a
    path (provided by the kernel, skipped).
    """
    paths: list[str] = []
    for line in output.splitlines():
        if "not found" in line:
            raise InfraError(f"ldd: a library is missing: {line.strip()}")
        found = re.match(r"\s*(?:\S+\s+=>\s+)?(/\S+)\s+\(0x[0-9a-f]+\)", line)
        if found:
            paths.append(found.group(1))
    return tuple(paths)


def shared_libraries(binary: Path, sandbox: Sandbox = PLAIN) -> tuple[str, ...]:
    """What binary needs at run time; empty for a static binary.

    ldd may run the binary's own code: one built from a tree under test is
    inspected in the sandbox (the host's own dropbear needs none)."""
    wrap = sandbox.prefix(readable=[binary.parent])
    result = proc.run(["ldd", binary], timeout=TOOL_TIMEOUT, wrap=wrap)
    if "not a dynamic executable" in result.stdout + result.stderr:
        return ()
    return parse_ldd(result.check().stdout)


def base_entries(inputs: BaseInputs) -> list[Entry]:
    _require(inputs.busybox, "busybox-static")
    _require(inputs.dropbear, "dropbear-bin")
    if not inputs.init.is_file():
        raise InfraError(f"the guest init script {inputs.init} is missing")
    entries: list[Entry] = [Directory(path, mode) for path, mode in BASE_DIRECTORIES.items()]
    entries += [
        File("/init", inputs.init, 0o755),
        File("/bin/busybox", inputs.busybox, 0o755),
        File("/usr/sbin/dropbear", inputs.dropbear, 0o755),
        # The kernel opens /dev/console for init before devtmpfs is mounted.
        CharDevice("/dev/console", 5, 1, 0o600),
        CharDevice("/dev/null", 1, 3, 0o666),
    ]
    entries += [Symlink(path, target) for path, target in BASE_LINKS.items()]
    entries += [File(path, data) for path, data in _ETC_FILES.items()]
    # The library's guest path is the one the loader looks in (as ldd
    # printed it); its content is the real file behind any symlinks.
    entries += [File(lib, Path(lib), 0o755) for lib in shared_libraries(inputs.dropbear)]
    taken = {e.path for e in entries}
    entries += [
        Symlink(f"/bin/{name}", "busybox")
        for name in busybox_applets(inputs.busybox)
        if "/" not in name and name not in {".", ".."} and f"/bin/{name}" not in taken
    ]
    return with_parents(entries)


def base_image(cache: Path, inputs: BaseInputs | None = None) -> Path:
    """The base layer at cache/images/base-<sha16>.cpio, built only if missing.

    The key is the hash of the archive itself (with FORMAT_VERSION), which
    holds the bytes of every input: a new busybox, dropbear, library or init
    script gives a new image, and a cached file always equals a fresh build.
    Encoding costs milliseconds; what the cache saves is the write and keeps
    the path QEMU gets stable.
    """
    data = cpio_bytes(base_entries(inputs or BaseInputs()))
    key = hashlib.sha256(FORMAT_VERSION.encode() + b"\0" + data).hexdigest()[:16]
    out = cache / "images" / f"base-{key}.cpio"
    if out.is_file() and out.stat().st_size == len(data):
        return out
    return _write_atomically(out, data)


# --- keys ------------------------------------------------------------------


@dataclass(frozen=True)
class Keys:
    """One run's SSH keys: the client's, and the guest's host key to pin."""

    client_private: Path
    client_public: str  # the authorized_keys line
    host_private: Path  # dropbear's own key format
    host_public: str  # exactly "ssh-ed25519 <base64>", for paramiko


def parse_dropbear_public(output: str) -> str:
    """ "ssh-ed25519 <base64>" from `dropbearkey -y` output (comment dropped)."""
    for line in output.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "ssh-ed25519":
            base64.b64decode(fields[1], validate=True)
            return f"{fields[0]} {fields[1]}"
    raise InfraError(f"dropbearkey printed no ed25519 public key:\n{output.strip()}")


def make_keys(directory: Path) -> Keys:
    directory.mkdir(parents=True, exist_ok=True)
    client = directory / "client"
    host = directory / "host_ed25519"
    # Both tools refuse to overwrite (ssh-keygen would prompt): start clean.
    for stale in (client, client.with_suffix(".pub"), host):
        stale.unlink(missing_ok=True)
    keygen: list[proc.StrPath] = [
        "ssh-keygen",
        "-t",
        "ed25519",
        "-N",
        "",
        "-q",
        "-C",
        "orchestrate",
        "-f",
        client,
    ]
    proc.run(keygen, timeout=TOOL_TIMEOUT).check()
    proc.run(["dropbearkey", "-t", "ed25519", "-f", host], timeout=TOOL_TIMEOUT).check()
    shown = proc.run(["dropbearkey", "-y", "-f", host], timeout=TOOL_TIMEOUT).check()
    return Keys(
        client_private=client,
        client_public=client.with_suffix(".pub").read_text().strip(),
        host_private=host,
        host_public=parse_dropbear_public(shown.stdout),
    )


# --- the run layer and the whole image -------------------------------------


def _extra_file(guest: str, host: Path) -> File:
    try:
        entry = File(guest, host, stat.S_IMODE(host.stat().st_mode))
    except ValueError as exc:
        raise UserError(f"guest file {guest!r}: {exc}") from None
    except OSError as exc:
        raise UserError(f"file for the guest's {guest}: {exc}") from None
    if not host.is_file():
        raise UserError(f"file for the guest's {guest}: {host} is not a regular file")
    if any(PurePosixPath(guest).is_relative_to(mount) for mount in MOUNT_POINTS):
        raise UserError(f"guest file {guest}: would be hidden by a mount on {MOUNT_POINTS}")
    return entry


def run_layer(
    keys: Keys,
    files: Sequence[tuple[str, Path]],
    out: Path,
    *,
    ip: str = "10.0.2.15",
    gateway: str = "10.0.2.2",
) -> Path:
    """This run's layer: authorized key, host key, network settings, extra files.

    files are (guest path, host path) pairs; modes are preserved and missing
    parent directories created.
    """
    # init sources the net file: only well-formed addresses get into it.
    for address in (ip, gateway):
        try:
            ipaddress.IPv4Address(address)
        except ValueError:
            raise UserError(f"not an IPv4 address for the guest: {address!r}") from None
    net = f"IP={ip}\nGW={gateway}\n".encode()
    entries: list[Entry] = [
        # dropbear ignores keys in a group- or world-writable directory.
        Directory("/root/.ssh", 0o700),
        File(AUTHORIZED_KEYS, keys.client_public.encode() + b"\n", 0o600),
        File(HOST_KEY, keys.host_private, 0o600),
        File(NET_CONFIG, net),
    ]
    taken = {e.path for e in entries}
    for guest, host in files:
        if guest in taken:
            raise UserError(f"guest file {guest}: given twice or reserved for the run layer")
        taken.add(guest)
        entries.append(_extra_file(guest, host))
    return _upper_layer(entries, out)


def files_layer(files: Sequence[tuple[str, Path]], out: Path) -> Path:
    """A layer of extra files only (guest path, host path), for one variant's boots."""
    return _upper_layer([_extra_file(guest, host) for guest, host in dict(files).items()], out)


def _upper_layer(entries: list[Entry], out: Path) -> Path:
    """A layer on top of the base: only the parent directories the base lacks.

    Through a base symlink (/usr/bin/x) the kernel follows the link; a
    Directory entry there would replace the link.
    """
    return write_cpio(with_parents(entries, existing=[*BASE_DIRECTORIES, *BASE_LINKS]), out)


def image(
    cache: Path,
    keys: Keys,
    files: Sequence[tuple[str, Path]],
    run_dir: Path,
    *,
    ip: str = "10.0.2.15",
    gateway: str = "10.0.2.2",
) -> tuple[Path, ...]:
    """The layers of the guest's initramfs in boot order, base first."""
    base = base_image(cache)
    run = run_layer(keys, files, run_dir / "run.cpio", ip=ip, gateway=gateway)
    return (base, run)


def concatenate(layers: Sequence[Path], out: Path) -> Path:
    """One initramfs file for QEMU's -initrd: the layers back to back.

    Every layer's length is a multiple of 4, which the kernel requires
    between concatenated archives.
    """
    return _write_atomically(out, b"".join(layer.read_bytes() for layer in layers))
