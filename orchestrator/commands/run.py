"""`orchestrate run` and `orchestrate plan`: a matrix run, or what it would do.

They share the matrix, --cache-dir and --only; `plan --shards N` lists CI
shards and `run --shard I/N` runs one of them.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from orchestrator import bisect, config, history, journal, preview, results, shards
from orchestrator.assemble import stages_to
from orchestrator.cache import Cache, default_root
from orchestrator.commands import Subparsers
from orchestrator.commands.common import new_run_dir, print_summaries, record, shown
from orchestrator.errors import UserError
from orchestrator.executor import Executor, GuestExecutor, SerialExecutor, for_spec
from orchestrator.journal import Journal
from orchestrator.kernel import series, source
from orchestrator.matrix import Matrix
from orchestrator.plan import perf_tests, selected
from orchestrator.progress import PlainProgress, progress_for
from orchestrator.report import write_reports
from orchestrator.results import RunResult, Stage
from orchestrator.runner import Options, Runner, collect_series
from orchestrator.vm import cpusets
from orchestrator.yaml_nodes import parse_duration

NAMES: tuple[str, ...] = ("run", "plan")


def add_parsers(sub: Subparsers) -> None:
    examples = {
        "run": "examples:\n  orchestrate run matrix.yaml --only pre-fix -j 4\n"
        "  orchestrate run matrix.yaml --vms 2   (two guests at once, on CPUs of their own)\n"
        "  orchestrate run --resume reports/bpf-reuse/20261206-101500\n"
        "  orchestrate run matrix.yaml --shard 2/4 --out shard-2   (one CI shard)\n"
        "  orchestrate run matrix.yaml --perf-budget 20m   (perf rounds end within 20 min)",
        "plan": "examples:\n  orchestrate plan matrix.yaml --only gfp-zero\n"
        "  orchestrate plan matrix.yaml --shards 4 --format github   (a CI matrix)",
    }
    for name, text in (
        ("run", "apply, build and test every variant"),
        ("plan", "print what a run would do; touches nothing"),
    ):
        cmd = sub.add_parser(
            name,
            help=text,
            description=text,
            epilog=examples[name],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if name == "run":
            cmd.add_argument(
                "matrix", type=Path, nargs="?", help="the matrix YAML file (not with --resume)"
            )
            cmd.add_argument(
                "--resume",
                type=Path,
                default=None,
                metavar="RUN_DIR",
                help="continue a stopped run in its directory: only what it had not done runs",
            )
        else:
            cmd.add_argument("matrix", type=Path, help="the matrix YAML file")
        cmd.add_argument(
            "--cache-dir",
            type=Path,
            default=None,
            help=f"trees, builds and artifacts (default: {default_root()})",
        )
        cmd.add_argument(
            "--only",
            action="append",
            default=[],
            metavar="VARIANT",
            help="run only this variant (repeatable)",
        )
        cmd.add_argument(
            "--vms",
            type=_vms,
            default=None,
            metavar="N",
            help="guests that boot at once, each QEMU pinned to CPUs of its own; a perf round "
            "boots one guest at a time on one CPU set, a sequential plan one round per set "
            "side by side (default: what the CPUs and "
            "the available memory fit: CPUs / guest vCPUs, memory / (guest memory + "
            f"{cpusets.MARGIN_MB} MiB), at least 1)",
        )
        if name == "plan":
            cmd.add_argument(
                "--shards",
                type=int,
                default=None,
                metavar="N",
                help="print the variants of at most N CI shards instead (variants sharing a "
                "build directory or a perf comparison stay together)",
            )
            cmd.add_argument(
                "--format",
                choices=shards.FORMATS,
                default="json",
                help="with --shards: a JSON list, a GitHub Actions matrix (fromJSON) or "
                "GitLab parallel:matrix (default: json)",
            )
        if name == "run":
            cmd.add_argument(
                "--shard",
                default=None,
                metavar="I/N",
                help="run shard I of N (as `plan --shards N` lists them); "
                "`orchestrate merge` combines the shards' run directories",
            )
            cmd.add_argument(
                "-j",
                "--jobs",
                type=int,
                default=os.cpu_count() or 1,
                help="make jobs (default: number of CPUs)",
            )
            cmd.add_argument(
                "--until",
                choices=("build", "test"),
                default="test",
                help="stop after this stage (build: apply, configure and build only)",
            )
            cmd.add_argument(
                "--executor",
                default="serial",
                metavar="serial|dask://HOST:PORT",
                help="where units run: here, one after another (default), or on the workers "
                "of a Dask scheduler (README: On a Dask cluster)",
            )
            cmd.add_argument(
                "--perf-budget",
                default=None,
                metavar="TIME",
                help="spend at most this on perf rounds, e.g. 20m or 1h (instead of the "
                "matrix's perf: {budget}); what it could not decide is said so",
            )
            cmd.add_argument(
                "--no-sandbox",
                action="store_true",
                help="run the tree's make, kconfig and selftest builds unconfined (not advised "
                "for series from strangers; default: in a bubblewrap sandbox)",
            )
            cmd.add_argument(
                "--out",
                type=Path,
                default=None,
                help="run output directory (default: under the matrix's report dir)",
            )


def _vms(text: str) -> int:
    """--vms N: a whole number of guests, at least 1 (argparse exits 2 otherwise)."""
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of guests: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"at least 1 guest, not {value}")
    return value


def placement(matrix: Matrix, wanted: int | None) -> cpusets.Placement:
    """How many guests run at once, and the CPUs of each (UserError: too many)."""
    return cpusets.place(wanted, cpusets.host(), matrix.guest.cpus, matrix.guest.memory_mb)


def executor_for(placed: cpusets.Placement, matrix: Matrix) -> Executor:
    # One guest: the serial executor, which runs each unit in this thread
    # (Ctrl-C lands in it) exactly as before --vms existed; no pinning needed.
    if placed.vms == 1:
        return SerialExecutor()
    # Perf rounds side by side only for verdicts made within rounds (sequential).
    return GuestExecutor(placed.sets, blocks=matrix.perf.sequential)


def _perf_rounds(matrix: Matrix, placed: cpusets.Placement) -> str:
    """How perf rounds run beside each other with these CPU sets (executor.claim_of)."""
    if not cpusets.disjoint(placed.sets):
        return "one at a time, on the whole machine (the CPU sets overlap)"
    if not matrix.perf.sequential:
        return "one at a time, on the whole machine (a fixed plan pools boots across rounds)"
    return f"{placed.vms} side by side, each whole on one CPU set (a block)"


def run(ns: argparse.Namespace) -> int:
    resume = _resuming(ns) if ns.command == "run" else None
    if ns.matrix is None:
        print("orchestrate: error: run needs a matrix file (or --resume RUN_DIR)", file=sys.stderr)
        return 2
    matrix = config.load(ns.matrix)
    budget = getattr(ns, "perf_budget", None)
    if budget is not None:
        seconds = parse_duration(budget)
        if seconds is None:
            raise UserError(
                f"--perf-budget: expected a time such as 20m, 90s or 1h, got {budget!r}"
            )
        matrix = replace(matrix, perf=replace(matrix.perf, budget=seconds))
    unknown = sorted(set(ns.only) - {v.name for v in matrix.variants})
    if unknown:
        names = ", ".join(v.name for v in matrix.variants)
        print(
            shown(f"orchestrate: --only: no such variant: {', '.join(unknown)} "
                  f"(the matrix has: {names})"),
            file=sys.stderr,
        )  # fmt: skip
        return 2
    cache = Cache((ns.cache_dir or default_root()).resolve())
    if _sharded(ns, matrix, cache):
        return 0
    patches = collect_series(matrix, tuple(ns.only))
    if ns.command == "plan":
        print(preview.render(preview.make_preview(matrix, cache, patches, tuple(ns.only))))
        placed = placement(matrix, ns.vms)
        where = f"CPU sets: {_sets(placed)}" if placed.vms > 1 else "one at a time, not pinned"
        print(f"guests at once: {placed.vms} ({placed.why}); {where}")
        if placed.vms > 1 and perf_tests(matrix.tests):
            print(f"perf rounds: {_perf_rounds(matrix, placed)}")
        if placed.warning:
            print(f"orchestrate: warning: {placed.warning}", file=sys.stderr)
        return 0
    return _run_matrix(matrix, cache, patches, ns, resume)


def _sharded(ns: argparse.Namespace, matrix: Matrix, cache: Cache) -> bool:
    """`plan --shards N` prints the shards (True: done); `run --shard I/N` narrows
    the run to the shard's variants and notes the shard for its run directory."""
    ns.shard_record = None
    wanted = getattr(ns, "shards", None) if ns.command == "plan" else getattr(ns, "shard", None)
    if wanted is None:
        return False
    if ns.command == "run" and ns.resume is not None:
        raise UserError("--resume continues a shard's run as it was: leave out --shard")
    if ns.only:
        raise UserError("--only and shards do not mix: a shard is its own set of variants")
    repo, work = source.cache_path(matrix.tree, cache.root), cache.work
    if ns.command == "plan":
        print(shards.render(shards.partition(matrix, ns.shards, repo, work), ns.format))
        return True
    ns.shard_record = shards.select(matrix, ns.shard, repo, work)
    ns.only = list(ns.shard_record.shards[ns.shard_record.index - 1])
    return False


def _resuming(ns: argparse.Namespace) -> Journal | None:
    """With --resume: the stopped run's journal, and its matrix, cache and options as defaults."""
    if ns.resume is None:
        return None
    rec = journal.read(ns.resume)
    if ns.only and tuple(ns.only) != rec.only:
        raise UserError(f"--resume: the run was made with --only {' '.join(rec.only) or '(all)'}")
    ns.matrix = ns.matrix or Path(rec.matrix)
    ns.cache_dir = ns.cache_dir or Path(rec.cache)
    ns.only, ns.until, ns.out = list(rec.only), rec.until.value, ns.resume
    return rec


def _run_matrix(
    matrix: Matrix,
    cache: Cache,
    patches: dict[str, tuple[series.Patch, ...]],
    ns: argparse.Namespace,
    resume: Journal | None = None,
) -> int:
    if ns.executor != "serial" and ns.vms is not None:
        raise UserError("--vms N runs guests on this machine: leave it out with --executor")
    # Before anything starts: a bad address is exit 2, a scheduler out of reach exit 3.
    remote = for_spec(ns.executor) if ns.executor != "serial" else None
    started = datetime.now(UTC)
    if source.cached_base(matrix.tree, cache.root) is None:
        print(
            f"preparing the kernel tree {matrix.tree.location} in {cache.root} (once)", flush=True
        )
    run_dir = (ns.out or new_run_dir(matrix.report.dir / matrix.name, started)).resolve()
    shard = getattr(ns, "shard_record", None)
    if shard is not None:
        shards.write_record(shard, run_dir)
    options = Options(
        cache=cache,
        run_dir=run_dir,
        jobs=ns.jobs,
        only=tuple(ns.only),
        until=Stage(ns.until),
        # To the millisecond: two runs of a matrix started in the same second
        # are two runs (the history keys a run by matrix and start).
        started=started.isoformat(timespec="milliseconds"),
        sandbox=not ns.no_sandbox,
    )
    if ns.no_sandbox:
        print(
            "orchestrate: warning: --no-sandbox: code from the tree under test (its Makefiles, "
            "Kconfig, selftests) runs unconfined, as you, with your files and network",
            file=sys.stderr,
        )
    # Nothing boots with --until build: one unit at a time unless --vms says
    # otherwise (units still run one at a time, in a worker thread).
    booting = remote is None and (options.until is Stage.TEST or ns.vms is not None)
    placed = placement(matrix, ns.vms) if booting else None
    if placed is not None and placed.warning:
        print(f"orchestrate: warning: {placed.warning}", file=sys.stderr)
    if placed is not None and placed.vms > 1:
        print(f"{placed.vms} guests at once, on CPUs {_sets(placed)}", flush=True)
    executor = executor_for(placed, matrix) if placed is not None else SerialExecutor()
    if remote is not None:
        executor = remote
    start = time.monotonic()
    names = [v.name for v in selected(matrix, options.only)]
    runner = None
    try:
        with progress_for(names, stages_to(options.until)) as progress:
            runner = Runner(matrix, options, progress, executor)
            run = runner.run(patches, resume)
    except BaseException:
        # The runner wrote what was done, marked incomplete: make it readable.
        if runner is not None and runner.results_path.is_file():
            _partial_reports(runner.results_path, matrix)
        raise
    print(
        f"\n{len(run.variants)} variants in {time.monotonic() - start:.0f}s; "
        f"results: {run_dir / 'results.json'}"
    )
    run = _bisect_run(matrix, cache, run, run_dir, ns)
    # Recorded before rendering, so the reports can show this run's place in the trend.
    # A shard is a part of a run: `orchestrate merge` records the whole.
    sharded = shard is not None or (run_dir / shards.RECORD).is_file()  # or resumed
    past = None if sharded else record(matrix.report.dir / history.FILENAME, run, matrix.name)
    for path in write_reports(run, run_dir, matrix.report.formats, past):
        print(f"report: {path}")
    print_summaries(run)
    return 0 if run.ok else 1


def _sets(placed: cpusets.Placement) -> str:
    return " | ".join(cpusets.cpu_list(s) for s in placed.sets)


def _bisect_run(
    matrix: Matrix, cache: Cache, run: RunResult, run_dir: Path, ns: argparse.Namespace
) -> RunResult:
    """`bisect: true`: the first bad patch of each test a variant fails and the baseline passes."""
    if not bisect.wanted(matrix, run):
        return run
    print("\nbisecting what the baseline passes and a variant fails:", flush=True)
    run = bisect.after_run(
        matrix,
        cache,
        run,
        run_dir,
        jobs=ns.jobs,
        confined=not ns.no_sandbox,
        progress=PlainProgress(),
    )
    results.write(run, run_dir / "results.json")
    for v in run.variants:
        for b in v.bisect:
            print(shown(f"  {v.name} {b.test}: {b.summary}", one_line=True))
    return run


def _partial_reports(path: Path, matrix: Matrix) -> None:
    """Reports of an interrupted run, from its partial results (not in the history)."""
    try:
        run = results.read(path)
        write_reports(run, path.parent, matrix.report.formats)
    except (OSError, ValueError) as exc:
        print(shown(f"orchestrate: warning: {path}: reports not written: {exc}"), file=sys.stderr)
        return
    print(f"partial results ({run.incomplete}): {path}", file=sys.stderr)
