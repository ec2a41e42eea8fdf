from __future__ import annotations

import hashlib
import os
from pathlib import Path

from orchestrator.kernel import source


def test_file_digest_is_remembered_until_the_file_changes(tmp_path: Path) -> None:
    f = tmp_path / "linux.tar.xz"
    f.write_bytes(b"one")
    assert source.file_digest(f) == hashlib.sha256(b"one").hexdigest()
    f.write_bytes(b"two")
    os.utime(f, ns=(1, 1))  # a new mtime (and size stays 3): a new key
    assert source.file_digest(f) == hashlib.sha256(b"two").hexdigest()
