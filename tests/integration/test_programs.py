from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from orchestrator.vm import programs

pytestmark = pytest.mark.integration
REPO_SELFTESTS = Path(__file__).resolve().parents[2] / "selftests"


def test_builds_once_and_lists_guest_files(tmp_path: Path) -> None:
    src = tmp_path / "selftests"
    shutil.copytree(REPO_SELFTESTS, src, ignore=shutil.ignore_patterns("out"))
    built = programs.build(src, tmp_path / "cache", tmp_path / "make.log")
    assert built.error is None
    files = dict(built.files())
    assert "/opt/selftests/smoke.sh" in files
    assert files["/opt/selftests/smoke.sh"].stat().st_mode & 0o100
    log_size = (tmp_path / "make.log").stat().st_size
    again = programs.build(src, tmp_path / "cache", tmp_path / "make.log")
    assert again.out == built.out
    assert (tmp_path / "make.log").stat().st_size == log_size  # make did not run

    (src / "smoke" / "smoke.sh").write_text("#!/bin/sh\necho changed\n")
    changed = programs.build(src, tmp_path / "cache", tmp_path / "make.log")
    assert changed.out != built.out


def test_make_failure_is_reported(tmp_path: Path) -> None:
    src = tmp_path / "broken"
    src.mkdir()
    (src / "Makefile").write_text("all:\n\t@echo 'cc: error: nope'; false\n")
    built = programs.build(src, tmp_path / "cache", tmp_path / "make.log")
    assert built.out is None and built.files() == ()
    assert built.error is not None and "cc: error: nope" in built.error
