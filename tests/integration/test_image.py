"""The real image: host busybox, dropbear and its libraries, real keys.

The layers are unpacked with GNU cpio into tmp_path as an ordinary
user-space extraction.  GNU cpio stops at the first trailer, while the
kernel goes on to the next archive, so each layer is extracted in boot
order into the same directory: the same result the kernel gets.
"""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from orchestrator import proc
from orchestrator.vm.image import (
    AUTHORIZED_KEYS,
    HOST_KEY,
    NET_CONFIG,
    VM_IMAGES,
    Keys,
    base_image,
    concatenate,
    image,
    make_keys,
    shared_libraries,
)

pytestmark = pytest.mark.integration

LOADER = "lib64/ld-linux-x86-64.so.2"
LIBDIR = "lib/x86_64-linux-gnu"


def extract(layer: Path, into: Path) -> None:
    # As non-root, mknod of the device nodes fails: cpio reports it and exits
    # non-zero but extracts everything else, which is all these tests read.
    into.mkdir(exist_ok=True)
    argv: list[proc.StrPath] = ["cpio", "-idm", "--no-absolute-filenames", "--quiet", "-F", layer]
    result = proc.run(argv, cwd=into, timeout=60)
    if os.geteuid() == 0:
        result.check()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Keys, tuple[Path, ...], Path]:
    root = tmp_path_factory.mktemp("image")
    keys = make_keys(root / "keys")
    test_binary = root / "hello"
    test_binary.write_bytes(b"#!/bin/sh\necho hello\n")
    test_binary.chmod(0o755)
    layers = image(root / "cache", keys, [("/opt/tests/hello", test_binary)], root / "run")
    tree = root / "tree"
    for layer in layers:
        extract(layer, tree)
    return keys, layers, tree


def test_layers_are_base_then_run_and_concatenate(
    built: tuple[Keys, tuple[Path, ...], Path], tmp_path: Path
) -> None:
    _, layers, _ = built
    base, run = layers
    assert base.name.startswith("base-")
    assert base.stat().st_size > 1_000_000  # busybox alone is ~2 MB
    whole = concatenate(layers, tmp_path / "initramfs.cpio")
    assert whole.read_bytes() == base.read_bytes() + run.read_bytes()


def test_init_busybox_and_applets(built: tuple[Keys, tuple[Path, ...], Path]) -> None:
    _, _, tree = built
    init = tree / "init"
    assert init.read_bytes() == (VM_IMAGES / "init").read_bytes()
    assert init.stat().st_mode & 0o111 == 0o111
    assert os.readlink(tree / "bin/sh") == "busybox"
    assert os.readlink(tree / "bin/ip") == "busybox"
    assert (tree / "bin/busybox").read_bytes() == Path("/bin/busybox").read_bytes()
    assert (tree / "etc/passwd").read_text() == "root:x:0:0:root:/root:/bin/sh\n"
    assert (tree / "etc/shells").read_text() == "/bin/sh\n"
    for mount_point in ("proc", "sys", "dev", "tmp", "run", "mnt", "var/log", "sys/fs/bpf"):
        assert (tree / mount_point).is_dir(), mount_point


def test_dropbear_runs_with_only_the_copied_libraries(
    built: tuple[Keys, tuple[Path, ...], Path],
) -> None:
    _, _, tree = built
    for library in shared_libraries(Path("/usr/sbin/dropbear")):
        copied = tree / library.lstrip("/")
        assert copied.is_file() and not copied.is_symlink(), library
    # The copied loader, looking in the copied libraries first.  It falls
    # back to the host's default directories for a library missing there, so
    # check where each one resolved, then that dropbear runs.
    loader: list[proc.StrPath] = [tree / LOADER, "--library-path", tree / LIBDIR, "--inhibit-cache"]
    env = {"LD_LIBRARY_PATH": ""}
    listing = proc.run([*loader, "--list", tree / "usr/sbin/dropbear"], timeout=30, env=env)
    resolved = [line.split()[2] for line in listing.check().stdout.splitlines() if "=>" in line]
    assert len(resolved) >= 3, listing.stdout
    assert all(path.startswith(str(tree)) for path in resolved), listing.stdout
    version = proc.run([*loader, tree / "usr/sbin/dropbear", "-V"], timeout=30, env=env)
    assert "Dropbear v" in version.stdout + version.stderr, version


def test_run_layer_keys_and_network(built: tuple[Keys, tuple[Path, ...], Path]) -> None:
    keys, _, tree = built
    auth = tree / AUTHORIZED_KEYS.lstrip("/")
    assert auth.read_text() == keys.client_public + "\n"
    assert stat.S_IMODE(auth.stat().st_mode) == 0o600
    assert stat.S_IMODE((tree / "root/.ssh").stat().st_mode) == 0o700
    host_key = tree / HOST_KEY.lstrip("/")
    assert host_key.read_bytes() == keys.host_private.read_bytes()
    assert stat.S_IMODE(host_key.stat().st_mode) == 0o600
    assert (tree / NET_CONFIG.lstrip("/")).read_text() == "IP=10.0.2.15\nGW=10.0.2.2\n"
    assert (tree / "opt/tests/hello").read_bytes() == b"#!/bin/sh\necho hello\n"
    assert stat.S_IMODE((tree / "opt/tests/hello").stat().st_mode) == 0o755


def _ssh_string(blob: bytes, pos: int) -> tuple[bytes, int]:
    length = int.from_bytes(blob[pos : pos + 4], "big")
    return blob[pos + 4 : pos + 4 + length], pos + 4 + length


def test_host_public_is_the_public_half_of_the_host_key(
    built: tuple[Keys, tuple[Path, ...], Path],
) -> None:
    """Derived independently of dropbearkey: dropbear stores the ed25519 seed."""
    keys, _, _ = built
    blob = keys.host_private.read_bytes()
    kind, pos = _ssh_string(blob, 0)
    secret, _ = _ssh_string(blob, pos)  # 32-byte seed + 32-byte public key
    assert kind == b"ssh-ed25519"
    public = (
        Ed25519PrivateKey.from_private_bytes(secret[:32])
        .public_key()
        .public_bytes(Encoding.Raw, PublicFormat.Raw)
    )
    wire = b"".join(len(p).to_bytes(4, "big") + p for p in (b"ssh-ed25519", public))
    assert keys.host_public == "ssh-ed25519 " + base64.b64encode(wire).decode()
    assert stat.S_IMODE(keys.host_private.stat().st_mode) == 0o600


def test_client_key_pair(built: tuple[Keys, tuple[Path, ...], Path]) -> None:
    keys, _, _ = built
    assert stat.S_IMODE(keys.client_private.stat().st_mode) == 0o600
    derived = proc.run(["ssh-keygen", "-y", "-f", keys.client_private], timeout=30).check()
    assert derived.stdout.split()[:2] == keys.client_public.split()[:2]


def test_base_image_is_cached_across_calls(built: tuple[Keys, tuple[Path, ...], Path]) -> None:
    _, layers, _ = built
    cache = layers[0].parents[1]
    assert base_image(cache) == layers[0]


def test_init_script_parses() -> None:
    proc.run(["/bin/busybox", "sh", "-n", VM_IMAGES / "init"], timeout=30).check()
