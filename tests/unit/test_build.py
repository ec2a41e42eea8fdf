"""Kernel builds: the free-space check before make."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from orchestrator.errors import InfraError
from orchestrator.kernel import build


def test_a_build_the_disk_cannot_hold_is_an_infrastructure_fault(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=300 << 20))
    with pytest.raises(InfraError, match=r"only 0\.29 GiB free .* needs at least 1 GiB"):
        build.check_free_space(tmp_path)
    build.check_free_space(tmp_path, needed=100 << 20)  # enough for a smaller need
