"""Shared incremental kernel builds.

One build directory per distinct configuration input: a worktree of the
source plus a make O= directory.  Variants are built in turn in it by
switching the worktree with git, which rewrites only the files a series
changed, so make recompiles only those.  Artifacts are stored by
(tree hash, config hash): two variants with identical trees are built once,
and an unchanged matrix compiles nothing.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestrator import proc
from orchestrator.errors import InfraError
from orchestrator.sandbox import Sandbox

ARTIFACT_FILES = ("vmlinux", "arch/x86/boot/bzImage", ".config", "System.map")
DONE = "artifact.json"
INTERRUPTED = "make-running"  # beside a build dir's out/ while make runs there
# Fixed so that every variant's make command line is identical (any change
# of a make variable makes kbuild rebuild everything) and builds reproduce.
FIXED_MAKE_VARS = (
    "CC=ccache gcc",
    "HOSTCC=ccache gcc",
    "KBUILD_BUILD_TIMESTAMP=2000-01-01",
    "KBUILD_BUILD_USER=orchestrate",
    "KBUILD_BUILD_HOST=orchestrate",
    # Else each link in a shared build dir bumps the "#N" in the version string,
    # and the same tree and config would give a different bzImage each time.
    "KBUILD_BUILD_VERSION=1",
)
_ERROR = re.compile(r"^(\S+?:\d+(?::\d+)?: (?:fatal )?error: .*)$", re.M)
_WARNING = re.compile(r"^(\S+?:\d+(?::\d+)?: warning: .*)$", re.M)
_MAKE_ERROR = re.compile(r"^(make(?:\[\d+\])?: \*\*\* .*)$", re.M)


@dataclass(frozen=True)
class BuildDir:
    key: str
    src: Path  # a worktree of the tree cache
    out: Path  # make O=
    config: Path  # O= for generating configs without touching out/

    @classmethod
    def at(cls, work: Path, key: str) -> BuildDir:
        # src and out are siblings under the same parent for every key, so
        # with CCACHE_BASEDIR the compiler sees the same relative paths in
        # every build directory and ccache hits across them.
        root = work / "build" / key
        return cls(key=key, src=root / "src", out=root / "out", config=root / "config")


@dataclass(frozen=True)
class Outcome:
    ok: bool
    artifact_dir: Path
    log: Path
    first_error: str | None
    warnings: tuple[str, ...]


def build_dir_key(repo: Path, arch: str, base: str, fragments: Sequence[Path]) -> str:
    """Variants whose configuration inputs are equal share one build directory."""
    digest = hashlib.sha256()
    for part in (str(repo), arch, base, *FIXED_MAKE_VARS):
        digest.update(part.encode() + b"\0")
    for fragment in fragments:
        digest.update(fragment.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def artifact_dir(cache: Path, tree: str, config_sha: str) -> Path:
    return cache / "artifacts" / f"{tree[:16]}-{config_sha[:16]}"


def is_built(artifacts: Path) -> bool:
    return (artifacts / DONE).exists()


def make_argv(bdir: BuildDir, arch: str, jobs: int, *targets: str) -> list[str]:
    return [
        "make", "-C", str(bdir.src), f"O={bdir.out}", f"ARCH={arch}", f"-j{jobs}",
        *FIXED_MAKE_VARS, *targets,
    ]  # fmt: skip


def make_env(cache: Path, bdir: BuildDir) -> dict[str, str]:
    return {
        "CCACHE_DIR": str(cache / "ccache"),
        "CCACHE_BASEDIR": str(bdir.src.parent),
        "CCACHE_NOHASHDIR": "1",
        "CCACHE_MAXSIZE": "5G",
    }


def build(
    bdir: BuildDir,
    config_text: str,
    artifacts: Path,
    *,
    cache: Path,
    arch: str,
    jobs: int,
    timeout: float,
    sandbox: Sandbox,
) -> Outcome:
    """Build the worktree's current checkout with config_text; store the artifacts.

    A build directory whose last make never finished (the run was killed)
    is emptied first: what a killed make leaves behind is not trusted.
    """
    marker = bdir.out.with_name(INTERRUPTED)
    if marker.exists():
        shutil.rmtree(bdir.out, ignore_errors=True)
    bdir.out.mkdir(parents=True, exist_ok=True)
    check_free_space(bdir.out)
    marker.write_text("make was running here; if this file is left, it never finished\n")
    dot_config = bdir.out / ".config"
    # Rewriting an identical .config would change its mtime and make kbuild
    # rerun syncconfig; leave it alone when nothing changed.
    if not dot_config.exists() or dot_config.read_text() != config_text:
        dot_config.write_text(config_text)
    log = pending_log(artifacts)
    staging = log.parent
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    result = proc.run(
        make_argv(bdir, arch, jobs, "bzImage"),
        wrap=sandbox.prefix(writable=[bdir.out], readable=[bdir.src]),
        timeout=timeout,
        env=make_env(cache, bdir),
        log=log,
    )
    marker.unlink()  # make finished, well or not: what it left is consistent
    text = log.read_text(errors="replace")
    warnings = tuple(dict.fromkeys(_WARNING.findall(text)))[:100]
    if not result.ok:
        if _DISK_FULL in text:  # the machine's fault, not the kernel's
            raise InfraError(f"disk full while building in {bdir.out} (log: {log})")
        reason = "timed out" if result.timed_out else first_error(text)
        return Outcome(False, staging, log, reason, warnings)
    for name in ARTIFACT_FILES:
        shutil.copy2(bdir.out / name, staging / Path(name).name)
    (staging / DONE).write_text(json.dumps({"warnings": warnings}, indent=2) + "\n")
    shutil.rmtree(artifacts, ignore_errors=True)
    staging.rename(artifacts)
    return Outcome(True, artifacts, artifacts / "build.log", None, warnings)


# A clean tinyconfig-based build fills ~200 MB of O= (measured); a defconfig one
# several GB.  Below this, a build would likely stop half-way for lack of space.
MIN_FREE_BYTES = 1 << 30
_DISK_FULL = "No space left on device"


def check_free_space(where: Path, needed: int = MIN_FREE_BYTES) -> None:
    """InfraError (exit 3) before a build that the disk cannot hold."""
    free = shutil.disk_usage(where).free
    if free < needed:
        raise InfraError(
            f"only {free / 2**30:.2f} GiB free on the disk of {where}; a kernel build needs "
            f"at least {needed / 2**30:.0f} GiB: free some space or use another --cache-dir"
        )


def pending_log(artifacts: Path) -> Path:
    """Where the log of a build in progress goes (moved with the artifacts)."""
    return artifacts.with_name(artifacts.name + ".partial") / "build.log"


def cached_warnings(artifacts: Path) -> tuple[str, ...]:
    data = json.loads((artifacts / DONE).read_text())
    return tuple(data.get("warnings", ()))


def first_error(log_text: str) -> str:
    """The first compiler error, else make's own complaint, else the last line."""
    for pattern in (_ERROR, _MAKE_ERROR):
        match = pattern.search(log_text)
        if match:
            return match.group(1).strip()
    lines = [line for line in log_text.splitlines() if line.strip()]
    return lines[-1] if lines else "make failed with no output"
