"""End-to-end fixtures: a fresh cache per test whose expensive, content-keyed
parts (imported trees, ccache) persist under .orchestrate/ between local runs.
CI starts from a clean clone, so there everything is built from nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PERSISTENT = Path(os.environ.get("ORCHESTRATE_TEST_CACHE", REPO / ".orchestrate" / "test-cache"))


@pytest.fixture(scope="session")
def e2e_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shared by the e2e tests of one session, so a kernel is built once."""
    cache = tmp_path_factory.mktemp("e2e") / "cache"
    cache.mkdir()
    for shared in ("trees", "ccache"):
        target = PERSISTENT / shared
        target.mkdir(parents=True, exist_ok=True)
        (cache / shared).symlink_to(target)
    return cache
