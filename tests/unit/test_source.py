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


def test_stale_git_locks_of_a_killed_git_are_cleared(tmp_path: Path) -> None:
    repo = tmp_path / "tree.git"
    (repo / "worktrees" / "apply").mkdir(parents=True)
    (repo / "refs" / "heads").mkdir(parents=True)
    stale = [repo / "index.lock", repo / "worktrees/apply/index.lock", repo / "refs/heads/x.lock"]
    for lock in stale:
        lock.write_text("")
    (repo / "config").write_text("[core]\n")
    assert sorted(source.clear_stale_locks(repo)) == sorted(stale)
    assert not any(lock.exists() for lock in stale) and (repo / "config").exists()
    assert source.clear_stale_locks(tmp_path / "none") == []
