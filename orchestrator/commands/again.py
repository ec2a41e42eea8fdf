"""`orchestrate reproduce` and `orchestrate bisect`: a finished run's variant again.

Both read a results file, boot or build that variant's kernel from the run's
cache and share the options of a rerun (--cache-dir, -j, --no-sandbox).
"""

from __future__ import annotations

import argparse
import os
from datetime import UTC, datetime
from pathlib import Path

from orchestrator import bisect, config, journal, reproduce, results
from orchestrator.cache import Cache, default_root
from orchestrator.commands import Subparsers
from orchestrator.commands.common import new_run_dir, shown
from orchestrator.errors import UserError
from orchestrator.progress import PlainProgress
from orchestrator.report import write_reports
from orchestrator.results import RunResult

NAMES: tuple[str, ...] = ("reproduce", "bisect")


def add_parsers(sub: Subparsers) -> None:
    _reproduce_parser(sub)
    _bisect_parser(sub)


def _reproduce_parser(sub: Subparsers) -> None:
    text = "boot a variant's kernel from a run again and run its test, or open a shell in it"
    cmd = sub.add_parser(
        "reproduce",
        help=text,
        description=text + " (the kernel from the cache, rebuilt if it is gone)",
        epilog="example: orchestrate reproduce reports/bpf/20261206-101500/results.json "
        "pre-fix htab_reuse   (add --shell for a root shell in that guest)",
    )
    cmd.add_argument("results", type=Path, help="a results.json written by `orchestrate run`")
    cmd.add_argument("variant", help="the variant whose kernel boots")
    cmd.add_argument("test", nargs="?", default=None, help="the test to run (default: all)")
    cmd.add_argument(
        "--shell", action="store_true", help="log in to the guest instead (needs a terminal)"
    )
    _rerun_options(cmd)


def _bisect_parser(sub: Subparsers) -> None:
    text = "find the first patch of a variant's series that makes a test fail or slower"
    cmd = sub.add_parser(
        "bisect",
        help=text,
        description=text + ": builds prefixes of the series incrementally, runs the test "
        "--runs times at each step (a perf test: --runs boots, one sample each, compared with "
        "the base's); records the answer in the results and re-renders reports",
        epilog="example: orchestrate bisect reports/bpf/20261206-101500/results.json "
        "ctor htab_reuse --runs 10   (a perf test: ... ctor map_perf --metric events_per_sec)",
    )
    cmd.add_argument("results", type=Path, help="a results.json written by `orchestrate run`")
    cmd.add_argument("variant", help="the variant whose series is bisected")
    cmd.add_argument("test", help="the test it fails")
    cmd.add_argument(
        "--runs",
        type=int,
        default=None,
        help="runs of the test per step; any failure makes a step bad; for a perf test, "
        "boots per step (at least 5) and a step is bad when slower than the base "
        "(default: the matrix's bisect: runs, else 5)",
    )
    cmd.add_argument(
        "--metric",
        default="",
        help="a perf test's metric (default: the one the run found slower, else the first)",
    )
    _rerun_options(cmd)


def _rerun_options(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help=f"trees, builds and artifacts (default: the run's, else {default_root()})",
    )
    cmd.add_argument(
        "-j", "--jobs", type=int, default=os.cpu_count() or 1, help="make jobs (default: CPUs)"
    )
    cmd.add_argument(
        "--no-sandbox", action="store_true", help="run the tree's make unconfined (not advised)"
    )


def run(ns: argparse.Namespace) -> int:
    done = results.read_given(ns.results)
    cache = Cache((ns.cache_dir or _cache_of(ns.results)).resolve())
    if ns.command == "reproduce":
        reproduce.variant_of(done, ns.variant, reproduce.matrix_of(done))  # before any mkdir
        work = new_run_dir(ns.results.parent / "reproduce" / ns.variant, datetime.now(UTC))
        request = reproduce.Request(
            done, ns.variant, ns.test, ns.shell, cache, work, ns.jobs, not ns.no_sandbox
        )
        return reproduce.reproduce(request)
    return _bisect(ns, done, cache)


def _bisect(ns: argparse.Namespace, run: RunResult, cache: Cache) -> int:
    matrix = reproduce.matrix_of(run)
    reproduce.variant_of(run, ns.variant, matrix)
    if ns.runs is not None and not 1 <= ns.runs <= config.MAX_BISECT_RUNS:
        raise UserError(f"--runs must be 1 to {config.MAX_BISECT_RUNS}, not {ns.runs}")
    metric = ns.metric or bisect.metric_for(run, ns.variant, ns.test)
    known = any(t.name == ns.test for t in matrix.tests)
    runs = ns.runs or (bisect.default_runs(matrix, ns.test) if known else matrix.bisect.runs)
    job = bisect.Job(ns.variant, ns.test, runs, metric)
    with cache.locked():
        found = bisect.bisect(
            matrix,
            cache,
            ns.results.parent / "bisect",
            job,
            jobs=ns.jobs,
            confined=not ns.no_sandbox,
            progress=PlainProgress(),
        )
    # Read again: the file may have changed while the steps ran (another bisect).
    run = bisect.record(results.read_given(ns.results), ns.variant, (found,))
    results.write(run, ns.results)
    formats = matrix.report.formats
    for path in write_reports(run, ns.results.parent, formats, run_dir=ns.results.parent):
        print(f"report: {path}")
    print(shown(f"{ns.variant} {ns.test}: {found.summary}"))
    return 0 if found.first_bad else 1


def _cache_of(results_path: Path) -> Path:
    """The cache the run used (its journal says), else the default one."""
    try:
        return Path(journal.read(results_path.parent).cache)
    except (UserError, OSError, ValueError, KeyError, TypeError):
        return default_root()
