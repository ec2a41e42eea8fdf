"""Command line: argument parsing and exit codes only; the work is elsewhere.

Exit codes: 0 all good, 1 some variant or test failed, 2 bad input,
3 infrastructure fault, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from orchestrator import config, plan, results, series
from orchestrator.cache import Cache, default_root
from orchestrator.errors import OrchestrateError
from orchestrator.matrix import Matrix
from orchestrator.pipeline import STAGES, Options, Runner, collect_series, selected
from orchestrator.progress import progress_for
from orchestrator.report import FILES, write_reports
from orchestrator.results import RunResult, Stage

COMMANDS = ("run", "plan", "report")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orchestrate",
        description="Test Linux kernel patch series in virtual machines.",
        epilog="`orchestrate MATRIX` is short for `orchestrate run MATRIX`.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("run", "apply, build and test every variant"),
        ("plan", "print what a run would do; touches nothing"),
    ):
        cmd = sub.add_parser(name, help=text, description=text)
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
        if name == "run":
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
                "--out",
                type=Path,
                default=None,
                help="run output directory (default: under the matrix's report dir)",
            )
    text = "render JUnit, HTML and text reports again from a results file; runs nothing"
    cmd = sub.add_parser("report", help=text, description=text)
    cmd.add_argument("results", type=Path, help="a results.json written by `orchestrate run`")
    cmd.add_argument(
        "--out", type=Path, default=None, help="where to write (default: next to the results)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] not in COMMANDS and not args[0].startswith("-"):
        args.insert(0, "run")
    ns = _parser().parse_args(args)
    signal.signal(signal.SIGTERM, _terminate)
    if ns.command == "report":
        return _report(ns.results, ns.out)
    try:
        matrix = config.load(ns.matrix)
        unknown = sorted(set(ns.only) - {v.name for v in matrix.variants})
        if unknown:
            print(f"orchestrate: --only: no such variant: {', '.join(unknown)}", file=sys.stderr)
            return 2
        cache = Cache((ns.cache_dir or default_root()).resolve())
        patches = collect_series(matrix, tuple(ns.only))
        if ns.command == "plan":
            print(plan.render(plan.make_plan(matrix, cache, patches, tuple(ns.only))))
            return 0
        return _run(matrix, cache, patches, ns)
    except OrchestrateError as exc:
        print(f"orchestrate: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("orchestrate: interrupted; child processes were stopped", file=sys.stderr)
        return 130


def _terminate(signum: int, frame: FrameType | None) -> None:
    # Unwind like Ctrl-C, so every running child's process tree is killed.
    raise KeyboardInterrupt


def _run(
    matrix: Matrix,
    cache: Cache,
    patches: dict[str, tuple[series.Patch, ...]],
    ns: argparse.Namespace,
) -> int:
    started = datetime.now(UTC)
    run_dir = ns.out or matrix.report.dir / matrix.name / started.strftime("%Y%m%d-%H%M%S")
    run_dir = run_dir.resolve()
    options = Options(
        cache=cache, run_dir=run_dir, jobs=ns.jobs, only=tuple(ns.only), until=Stage(ns.until)
    )
    start = time.monotonic()
    names = [v.name for v in selected(matrix, options.only)]
    with progress_for(names, STAGES[: STAGES.index(options.until) + 1]) as progress:
        variants = Runner(matrix, options, progress).run(patches)
    run = RunResult(
        matrix=str(matrix.path),
        started=started.isoformat(timespec="seconds"),
        finished=datetime.now(UTC).isoformat(timespec="seconds"),
        variants=variants,
        host=_host(),
    )
    results.write(run, run_dir / "results.json")
    print(
        f"\n{len(variants)} variants in {time.monotonic() - start:.0f}s; "
        f"results: {run_dir / 'results.json'}"
    )
    for path in write_reports(run, run_dir, matrix.report.formats):
        print(f"report: {path}")
    for v in variants:
        print(f"  {v.name:24} {v.status.value.upper():7} {_summary(v)}")
    return 0 if run.ok else 1


def _report(path: Path, out: Path | None) -> int:
    """Re-render every report format from a results file; nothing runs."""
    try:
        run = results.read(path)
    except FileNotFoundError:
        return _bad_results(path, "no such file")
    except IsADirectoryError:
        return _bad_results(path, "is a directory, not a results file")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return _bad_results(path, f"not JSON: {exc}")
    except OSError as exc:
        return _bad_results(path, exc.strerror or str(exc))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        # from_data trusts the shape of the data: anything else is not a results file.
        return _bad_results(path, f"not a results file: {type(exc).__name__}: {exc}")
    if run.schema != results.SCHEMA_VERSION:
        want = results.SCHEMA_VERSION
        return _bad_results(path, f"results schema {run.schema}; this version reads {want}")
    try:
        written = write_reports(run, out or path.parent, FILES)
    except OSError as exc:
        return _bad_results(out or path.parent, f"cannot write the reports: {exc}")
    for report in written:
        print(f"report: {report}")
    return 0


def _bad_results(path: Path, why: str) -> int:
    print(f"orchestrate: error: {path}: {why}", file=sys.stderr)
    return 2


def _summary(variant: results.VariantResult) -> str:
    bad = next((s for s in variant.stages if s.status.bad), None)
    if bad:
        return f"{bad.stage.value}: {bad.reason}"
    return "; ".join(f"{s.stage.value}: {s.reason}" for s in variant.stages[-3:] if s.reason)


def _host() -> dict[str, str]:
    return {
        "hostname": platform.node(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "cpus": str(os.cpu_count()),
    }


if __name__ == "__main__":
    sys.exit(main())
