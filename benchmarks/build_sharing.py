"""Build sharing: wall time of building 5 variants that each touch kernel/bpf,
divided by the wall time of one clean build of the same config.

Both runs start from a cold cache and a cold ccache (only the imported tree is
shared), are measured in this one invocation, and go through the real CLI.
Goal: <= 1.3 (a clean build per variant would be about 5).

    python benchmarks/build_sharing.py [--keep DIR] [-j N]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from orchestrator import proc, results
from orchestrator.git import git
from orchestrator.kernel import source
from orchestrator.matrix import Tree, TreeKind

REPO = Path(__file__).resolve().parents[1]
TARBALL = "/usr/src/linux-source-6.1.tar.xz"
FILES = (
    "kernel/bpf/memalloc.c",
    "kernel/bpf/hashtab.c",
    "kernel/bpf/syscall.c",
    "kernel/bpf/arraymap.c",
    "kernel/bpf/helpers.c",
)


def make_series(trees: Path, out: Path) -> None:
    """One real format-patch per variant, each changing a different kernel/bpf file."""
    src = source.prepare(Tree(TreeKind.DEBIAN, TARBALL), trees.parent)
    wt = out / "worktree"
    git(src.repo, "worktree", "add", "-q", "--detach", wt, src.base, timeout=1800)
    for i, path in enumerate(FILES, 1):
        text = (wt / path).read_text()
        marker = f"/* build_sharing benchmark: variant {i} */\n"
        (wt / path).write_text(
            text + f"\nstatic const int bench_variant_{i} __maybe_unused = {i};\n{marker}"
        )
        git(wt, "commit", "-q", "-a", "-m", f"bpf: benchmark variant {i}")
        git(wt, "format-patch", "-q", "-1", "-o", out / f"v{i}", "HEAD")
        git(wt, "reset", "-q", "--hard", "HEAD~1")
    git(src.repo, "worktree", "remove", "--force", wt)


def write_matrix(out: Path, count: int) -> Path:
    for frag in ("base.config", "vm.config", "bpf.config", "debug.config"):
        shutil.copy(REPO / "kconfigs" / frag, out / frag)
    lines = [
        "name: build-sharing",
        f"tree: {{debian: {TARBALL}}}",
        "kconfig: {fragments: [base.config, vm.config, bpf.config, debug.config]}",
        "variants:",
    ]
    lines += [f"  - {{name: v{i}, series: v{i}}}" for i in range(1, count + 1)]
    matrix = out / f"matrix-{count}.yaml"
    matrix.write_text("\n".join(lines) + "\n")
    return matrix


def timed_run(matrix: Path, cache: Path, trees: Path, jobs: int) -> tuple[float, results.RunResult]:
    cache.mkdir(parents=True)
    (cache / "trees").symlink_to(trees)
    start = time.monotonic()
    outcome = proc.run(
        [sys.executable, "-m", "orchestrator.cli", matrix, "--cache-dir", cache,
         "--out", cache / "run", f"-j{jobs}"],
        timeout=7200,
    )  # fmt: skip
    wall = time.monotonic() - start
    if outcome.returncode != 0:
        sys.exit(f"run failed:\n{outcome.stdout[-3000:]}\n{outcome.stderr[-3000:]}")
    return wall, results.read(cache / "run" / "results.json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="work here and keep it (default: a temp dir)")
    parser.add_argument("-j", "--jobs", type=int, default=2)
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="build-sharing-"))
    trees = work / "shared" / "trees"
    trees.mkdir(parents=True, exist_ok=True)
    make_series(trees, work)

    one, _ = timed_run(write_matrix(work, 1), work / "one", trees, args.jobs)
    five, run = timed_run(write_matrix(work, 5), work / "five", trees, args.jobs)
    print(f"one clean build (1 variant, cold ccache): {one:7.1f} s")
    print(f"5 variants touching kernel/bpf (cold):   {five:7.1f} s")
    for v in run.variants:
        build = v.stage(results.Stage.BUILD)
        assert build is not None
        print(f"  {v.name}: build {build.duration:6.1f} s  {build.reason}")
    print(f"ratio: {five / one:.2f}  (goal <= 1.3; no sharing would be about 5)")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
