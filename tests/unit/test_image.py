"""The cpio writer, ldd parsing, the base image's cache key and the run layer.

Archives are parsed back with a small newc reader written independently of
the writer.  The base image is built from fake inputs (a script standing in
for busybox, another for dropbear), so these tests need only ldd.
"""

from __future__ import annotations

import random
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestrator.errors import InfraError, UserError
from orchestrator.vm.image import (
    AUTHORIZED_KEYS,
    HOST_KEY,
    NET_CONFIG,
    BaseInputs,
    CharDevice,
    Directory,
    Entry,
    File,
    Keys,
    Symlink,
    base_image,
    concatenate,
    cpio_bytes,
    parse_dropbear_public,
    parse_ldd,
    run_layer,
    with_parents,
    write_cpio,
)


@dataclass(frozen=True)
class Member:
    name: str
    ino: int
    mode: int
    uid: int
    gid: int
    nlink: int
    mtime: int
    rdev: tuple[int, int]
    data: bytes


def read_newc(blob: bytes) -> list[list[Member]]:
    """Every archive in blob (concatenated), each without its trailer."""
    archives: list[list[Member]] = []
    members: list[Member] = []
    pos = 0
    while pos < len(blob):
        assert pos % 4 == 0, "record not 4-byte aligned"
        assert blob[pos : pos + 6] == b"070701", f"bad magic at {pos}"
        f = [int(blob[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        ino, mode, uid, gid, nlink, mtime, size, _, _, rmaj, rmin, namesize, check = f
        assert check == 0
        name_end = pos + 110 + namesize
        assert blob[name_end - 1] == 0, "name not NUL-terminated"
        name = blob[pos + 110 : name_end - 1].decode()
        data_start = name_end + (-name_end % 4)
        data = blob[data_start : data_start + size]
        pos = data_start + size + (-(data_start + size) % 4)
        if name == "TRAILER!!!":
            archives.append(members)
            members = []
            continue
        members.append(Member(name, ino, mode, uid, gid, nlink, mtime, (rmaj, rmin), data))
    assert not members, "archive without trailer"
    return archives


def by_name(blob: bytes) -> dict[str, Member]:
    (archive,) = read_newc(blob)
    return {m.name: m for m in archive}


SAMPLE: list[Entry] = [
    Directory("/etc"),
    File("/etc/hostname", b"guest\n"),
    File("/bin/tool", b"\x7fELF" + bytes(range(7)), 0o755),
    Directory("/bin"),
    Symlink("/bin/sh", "busybox"),
    CharDevice("/dev/console", 5, 1),
    CharDevice("/dev/null", 1, 3, 0o666),
    Directory("/dev"),
    Directory("/tmp", 0o1777),
]


# --- cpio writer -----------------------------------------------------------


def test_entries_round_trip_with_types_modes_and_owner_root() -> None:
    members = by_name(cpio_bytes(SAMPLE))
    assert set(members) == {e.path.lstrip("/") for e in SAMPLE}
    assert members["bin/tool"].mode == stat.S_IFREG | 0o755
    assert members["bin/tool"].data == b"\x7fELF" + bytes(range(7))
    assert members["etc/hostname"].mode == stat.S_IFREG | 0o644
    assert members["bin/sh"].mode == stat.S_IFLNK | 0o777
    assert members["bin/sh"].data == b"busybox"
    assert members["tmp"].mode == stat.S_IFDIR | 0o1777
    assert members["dev/console"].mode == stat.S_IFCHR | 0o600
    assert members["dev/console"].rdev == (5, 1)
    assert members["dev/null"].rdev == (1, 3)
    assert members["dev/null"].data == b""
    for member in members.values():
        assert (member.uid, member.gid, member.mtime) == (0, 0, 0)
        assert member.nlink == (2 if stat.S_ISDIR(member.mode) else 1)


def test_parents_precede_children_and_inodes_count_up() -> None:
    (archive,) = read_newc(cpio_bytes(SAMPLE))
    names = [m.name for m in archive]
    for i, name in enumerate(names):
        parent = name.rpartition("/")[0]
        if parent:
            assert parent in names[:i], f"{name} before its parent"
    assert [m.ino for m in archive] == list(range(1, len(archive) + 1))


def test_same_entries_in_any_order_give_identical_bytes(tmp_path: Path) -> None:
    shuffled = list(SAMPLE)
    random.Random(4).shuffle(shuffled)
    write_cpio(SAMPLE, tmp_path / "a.cpio")
    write_cpio(shuffled, tmp_path / "b.cpio")
    assert (tmp_path / "a.cpio").read_bytes() == (tmp_path / "b.cpio").read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 5, 511])
def test_padding_keeps_every_record_aligned(size: int) -> None:
    entries = [File(f"/f{'x' * size}", b"y" * size)]
    blob = cpio_bytes(entries)
    assert len(blob) % 4 == 0
    assert by_name(blob)[f"f{'x' * size}"].data == b"y" * size  # the reader checks alignment


def test_trailer_ends_the_archive() -> None:
    blob = cpio_bytes([])
    assert b"TRAILER!!!\0" in blob
    assert read_newc(blob) == [[]]


def test_file_content_is_read_from_a_host_path(tmp_path: Path) -> None:
    (tmp_path / "real").write_bytes(b"content")
    (tmp_path / "link").symlink_to("real")
    members = by_name(cpio_bytes([File("/f", tmp_path / "link", 0o600)]))
    assert members["f"].data == b"content"
    assert members["f"].mode == stat.S_IFREG | 0o600


def test_duplicate_paths_are_rejected() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        cpio_bytes([File("/a", b"1"), Directory("/a")])


@pytest.mark.parametrize("path", ["relative", "/", "/a/../b", "/a/", "//a", "/a//b"])
def test_paths_must_be_absolute_and_normalised(path: str) -> None:
    with pytest.raises(ValueError, match="guest path"):
        File(path, b"")


def test_with_parents_adds_missing_directories_but_not_existing_ones() -> None:
    entries = with_parents([File("/opt/a/b/x", b""), Directory("/opt/a")], existing=["/opt"])
    assert {e.path for e in entries} == {"/opt/a/b/x", "/opt/a", "/opt/a/b"}
    assert Directory("/opt/a/b", 0o755) in entries


def test_concatenated_layers_parse_as_consecutive_archives(tmp_path: Path) -> None:
    first = write_cpio([File("/a", b"abc")], tmp_path / "1.cpio")
    second = write_cpio([File("/a", b"new"), File("/b", b"")], tmp_path / "2.cpio")
    out = concatenate([first, second], tmp_path / "all.cpio")
    archives = read_newc(out.read_bytes())
    assert [[(m.name, m.data) for m in a] for a in archives] == [
        [("a", b"abc")],
        [("a", b"new"), ("b", b"")],
    ]


# --- helpers' parsers ------------------------------------------------------

LDD = """\
\tlinux-vdso.so.1 (0x00007ffd4a5f2000)
\tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x00007f1e2a5a4000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f1e2a386000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f1e2a702000)
"""


def test_parse_ldd_keeps_libraries_and_loader_and_skips_the_vdso() -> None:
    assert parse_ldd(LDD) == (
        "/lib/x86_64-linux-gnu/libz.so.1",
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/lib64/ld-linux-x86-64.so.2",
    )


def test_parse_ldd_reports_a_missing_library() -> None:
    with pytest.raises(InfraError, match="libgone"):
        parse_ldd("\tlibgone.so.1 => not found\n")


def test_parse_dropbear_public_drops_the_comment() -> None:
    output = (
        "Public key portion is:\n"
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPwVnJVslZnDxnBkJAADueN4NTJeqXhw14m7nu8N8lfM root@vm\n"
        "Fingerprint: SHA256:g+nKFfeRCNsffYQyQVVTYHpXsProPBFUxQIF9UVcJWM\n"
    )
    assert parse_dropbear_public(output) == (
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPwVnJVslZnDxnBkJAADueN4NTJeqXhw14m7nu8N8lfM"
    )
    with pytest.raises(InfraError):
        parse_dropbear_public("Fingerprint: nothing\n")


# --- the base image --------------------------------------------------------


def fake_inputs(root: Path, init: str = "#!/bin/busybox sh\necho hi\n") -> BaseInputs:
    """Scripts standing in for busybox (lists applets) and dropbear (static to ldd)."""
    root.mkdir(parents=True, exist_ok=True)
    busybox = root / "busybox"
    busybox.write_text("#!/bin/sh\nprintf '%s\\n' '[' sh ls busybox ip 'a/b'\n")
    dropbear = root / "dropbear"
    dropbear.write_text("#!/bin/sh\necho dropbear\n")
    for tool in (busybox, dropbear):
        tool.chmod(0o755)
    (root / "init").write_text(init)
    return BaseInputs(init=root / "init", busybox=busybox, dropbear=dropbear)


def test_base_image_contents(tmp_path: Path) -> None:
    path = base_image(tmp_path / "cache", fake_inputs(tmp_path / "in"))
    assert path.parent == tmp_path / "cache" / "images"
    assert path.name.startswith("base-") and len(path.stem) == len("base-") + 16
    members = by_name(path.read_bytes())
    assert members["init"].mode == stat.S_IFREG | 0o755
    assert members["init"].data == b"#!/bin/busybox sh\necho hi\n"
    for applet in ("[", "sh", "ls", "ip"):
        assert members[f"bin/{applet}"].data == b"busybox"
    # The binary itself is not replaced by a link, and odd names are skipped.
    assert stat.S_ISREG(members["bin/busybox"].mode)
    assert not any(name.startswith("bin/a") for name in members)
    assert members["dev/console"].rdev == (5, 1)
    assert members["etc/passwd"].data == b"root:x:0:0:root:/root:/bin/sh\n"
    assert members["root/.ssh"].mode == stat.S_IFDIR | 0o700
    for mount_point in ("proc", "sys", "dev", "tmp", "run", "mnt", "root", "var/log", "sys/fs/bpf"):
        assert stat.S_ISDIR(members[mount_point].mode), mount_point


def test_base_image_is_reused_until_an_input_changes(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = base_image(cache, fake_inputs(tmp_path / "a"))
    written = first.stat().st_mtime_ns
    again = base_image(cache, fake_inputs(tmp_path / "b"))  # equal content elsewhere
    assert again == first
    assert first.stat().st_mtime_ns == written  # not rewritten
    changed = base_image(cache, fake_inputs(tmp_path / "c", init="#!/bin/busybox sh\n"))
    assert changed != first
    assert sorted(p.name for p in (cache / "images").iterdir()) == sorted(
        [first.name, changed.name]
    )


def test_base_image_names_the_missing_package(tmp_path: Path) -> None:
    inputs = fake_inputs(tmp_path / "in")
    gone = BaseInputs(init=inputs.init, busybox=tmp_path / "nope", dropbear=inputs.dropbear)
    with pytest.raises(InfraError, match="busybox-static"):
        base_image(tmp_path / "cache", gone)


# --- the run layer ---------------------------------------------------------


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    host = tmp_path / "host_ed25519"
    host.write_bytes(b"dropbear key bytes")
    return Keys(
        client_private=tmp_path / "client",
        client_public="ssh-ed25519 AAAAclient orchestrate",
        host_private=host,
        host_public="ssh-ed25519 AAAAhost",
    )


def test_run_layer_holds_keys_network_and_extra_files(tmp_path: Path, keys: Keys) -> None:
    binary = tmp_path / "htab_reuse"
    binary.write_bytes(b"\x7fELF test")
    binary.chmod(0o750)
    out = run_layer(keys, [("/opt/tests/htab_reuse", binary)], tmp_path / "run.cpio", ip="10.0.2.9")
    members = by_name(out.read_bytes())
    auth = members[AUTHORIZED_KEYS.lstrip("/")]
    assert auth.data == b"ssh-ed25519 AAAAclient orchestrate\n"
    assert auth.mode == stat.S_IFREG | 0o600
    assert members["root/.ssh"].mode == stat.S_IFDIR | 0o700
    host_key = members[HOST_KEY.lstrip("/")]
    assert (host_key.data, host_key.mode) == (b"dropbear key bytes", stat.S_IFREG | 0o600)
    assert members[NET_CONFIG.lstrip("/")].data == b"IP=10.0.2.9\nGW=10.0.2.2\n"
    test = members["opt/tests/htab_reuse"]
    assert (test.data, test.mode) == (b"\x7fELF test", stat.S_IFREG | 0o750)
    assert stat.S_ISDIR(members["opt/tests"].mode)
    # Directories the base provides keep the base's modes: not re-declared.
    assert "root" not in members and "etc" not in members


def test_run_layer_follows_base_symlinks_instead_of_replacing_them(
    tmp_path: Path, keys: Keys
) -> None:
    (tmp_path / "x").write_bytes(b"")
    out = run_layer(keys, [("/usr/bin/x", tmp_path / "x")], tmp_path / "run.cpio")
    assert "usr/bin" not in by_name(out.read_bytes())


@pytest.mark.parametrize(
    ("guest", "message"),
    [
        ("/tmp/x", "hidden by a mount"),
        ("/run/x", "hidden by a mount"),
        ("relative/x", "guest path"),
        (AUTHORIZED_KEYS, "reserved"),
    ],
)
def test_run_layer_rejects_bad_guest_paths(
    tmp_path: Path, keys: Keys, guest: str, message: str
) -> None:
    (tmp_path / "x").write_bytes(b"")
    with pytest.raises(UserError, match=message):
        run_layer(keys, [(guest, tmp_path / "x")], tmp_path / "run.cpio")


def test_run_layer_rejects_a_missing_host_file(tmp_path: Path, keys: Keys) -> None:
    with pytest.raises(UserError, match="nope"):
        run_layer(keys, [("/opt/x", tmp_path / "nope")], tmp_path / "run.cpio")


@pytest.mark.parametrize("bad", ["10.0.2", "10.0.2.15; reboot", "", "::1"])
def test_run_layer_rejects_addresses_that_are_not_ipv4(
    tmp_path: Path, keys: Keys, bad: str
) -> None:
    with pytest.raises(UserError, match="IPv4"):
        run_layer(keys, [], tmp_path / "run.cpio", gateway=bad)
