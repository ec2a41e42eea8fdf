"""Fixtures shared by all test levels, and the real kernel the e2e and
fault-injection tests share: a fresh cache per session whose expensive,
content-keyed parts (imported trees, ccache) persist under .orchestrate/
between local runs.  CI starts from a clean clone, so there everything is
built from nothing."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from orchestrator import proc, results

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def isolated_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """A fresh HOME per test, so nothing reads or writes the user's dotfiles."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    return home


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


@pytest.fixture(scope="session")
def kernel(e2e_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default matrix's upstream vmlinux, built (or found cached) by orchestrate."""
    if "ORCHESTRATE_TEST_KERNEL" in os.environ:
        path = Path(os.environ["ORCHESTRATE_TEST_KERNEL"])
        if not path.is_file():
            pytest.fail(f"ORCHESTRATE_TEST_KERNEL={path} is not a file")
        return path
    out = tmp_path_factory.mktemp("kernel-build")
    argv: list[str | Path] = [sys.executable, "-m", "orchestrator.cli", REPO / "matrix.yaml"]
    built = proc.run(
        [*argv, "--only", "upstream", "--until", "build", "--cache-dir", e2e_cache, "--out", out],
        timeout=3000,
    )
    if built.returncode != 0:
        pytest.fail(f"building the upstream kernel failed:\n{built.stdout[-3000:]}")
    (variant,) = results.read(out / "results.json").variants
    assert variant.build is not None
    return Path(variant.build.artifact_dir) / "vmlinux"
