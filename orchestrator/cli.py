"""Command line: argument parsing and exit codes only; the work is elsewhere.

Exit codes: 0 all good, 1 some variant or test failed, 2 bad input,
3 infrastructure fault, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from orchestrator import config, history, journal, preview, results
from orchestrator.assemble import stages_to
from orchestrator.cache import Cache, default_root
from orchestrator.errors import InfraError, Interrupted, OrchestrateError, UserError
from orchestrator.journal import Journal
from orchestrator.kernel import series, source
from orchestrator.matrix import Matrix
from orchestrator.perf import History
from orchestrator.plan import selected
from orchestrator.progress import progress_for
from orchestrator.report import FILES, write_reports
from orchestrator.results import RunResult, Stage
from orchestrator.runner import Options, Runner, collect_series
from orchestrator.textfmt import for_terminal

COMMANDS = ("run", "plan", "report", "history")
SUMMARY = 300  # characters of a variant's reasons on its summary line
ERROR_TEXT = 4000  # characters of an error message (git's stderr is cut at 2000)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orchestrate",
        description="Test Linux kernel patch series in virtual machines.",
        epilog="`orchestrate MATRIX` is short for `orchestrate run MATRIX`; "
        "--debug anywhere shows a traceback for an unexpected error (exit 3 otherwise).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("run", "apply, build and test every variant"),
        ("plan", "print what a run would do; touches nothing"),
    ):
        cmd = sub.add_parser(name, help=text, description=text)
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
    text = "render JUnit, HTML and text reports again from a results file; runs nothing"
    cmd = sub.add_parser("report", help=text, description=text)
    cmd.add_argument("results", type=Path, help="a results.json written by `orchestrate run`")
    cmd.add_argument(
        "--out", type=Path, default=None, help="where to write (default: next to the results)"
    )
    _history_parser(sub)
    return parser


def _history_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    text = "print the verdicts and metric medians of the last runs of a matrix"
    cmd = sub.add_parser("history", help=text, description=text)
    where = cmd.add_mutually_exclusive_group()
    where.add_argument(
        "--db", type=Path, default=None, help=f"a {history.FILENAME} (every matrix in it)"
    )
    where.add_argument(
        "--matrix",
        type=Path,
        default=None,
        help=f"the matrix whose report dir holds {history.FILENAME} (default: matrix.yaml)",
    )
    cmd.add_argument("-n", "--last", type=int, default=10, help="how many runs (default: 10)")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    if args and args[0] not in COMMANDS and not args[0].startswith("-"):
        args.insert(0, "run")
    ns = _parser().parse_args(args)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _terminate)
    try:
        code = _command(ns)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
        return code
    except BrokenPipeError:
        # `orchestrate plan X | head`: the reader has gone; say nothing more.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except Exception as exc:
        if debug:
            raise
        # A fault of the tool or the machine (disk full, a bug): one line, exit 3.
        where = f" ({exc.filename})" if isinstance(exc, OSError) and exc.filename else ""
        print(
            _shown(f"orchestrate: error: {type(exc).__name__}{where}: {exc}", one_line=True)
            + " (a fault of orchestrate or this machine; --debug shows the traceback)",
            file=sys.stderr,
        )
        return 3


def _command(ns: argparse.Namespace) -> int:
    if ns.command == "report":
        return _report(ns.results, ns.out)
    if ns.command == "history":
        return _history(ns.db, ns.matrix, ns.last)
    try:
        resume = _resuming(ns) if ns.command == "run" else None
        if ns.matrix is None:
            print(
                "orchestrate: error: run needs a matrix file (or --resume RUN_DIR)", file=sys.stderr
            )
            return 2
        matrix = config.load(ns.matrix)
        unknown = sorted(set(ns.only) - {v.name for v in matrix.variants})
        if unknown:
            print(f"orchestrate: --only: no such variant: {', '.join(unknown)}", file=sys.stderr)
            return 2
        cache = Cache((ns.cache_dir or default_root()).resolve())
        patches = collect_series(matrix, tuple(ns.only))
        if ns.command == "plan":
            print(preview.render(preview.make_preview(matrix, cache, patches, tuple(ns.only))))
            return 0
        return _run(matrix, cache, patches, ns, resume)
    except OrchestrateError as exc:
        print(_shown(f"orchestrate: error: {exc}"), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("orchestrate: interrupted; child processes were stopped", file=sys.stderr)
        return 130


def _terminate(signum: int, frame: FrameType | None) -> None:
    # Unwind like Ctrl-C, so every running child's process tree is killed.
    raise Interrupted(signal.Signals(signum).name)


def _resuming(ns: argparse.Namespace) -> Journal | None:
    """With --resume: the stopped run's journal, and its matrix, cache and options as defaults."""
    if ns.resume is None:
        return None
    record = journal.read(ns.resume)
    if ns.only and tuple(ns.only) != record.only:
        raise UserError(
            f"--resume: the run was made with --only {' '.join(record.only) or '(all)'}"
        )
    ns.matrix = ns.matrix or Path(record.matrix)
    ns.cache_dir = ns.cache_dir or Path(record.cache)
    ns.only, ns.until, ns.out = list(record.only), record.until.value, ns.resume
    return record


def _run(
    matrix: Matrix,
    cache: Cache,
    patches: dict[str, tuple[series.Patch, ...]],
    ns: argparse.Namespace,
    resume: Journal | None = None,
) -> int:
    started = datetime.now(UTC)
    if source.cached_base(matrix.tree, cache.root) is None:
        print(
            f"preparing the kernel tree {matrix.tree.location} in {cache.root} (once)", flush=True
        )
    run_dir = (ns.out or _new_run_dir(matrix.report.dir / matrix.name, started)).resolve()
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
    start = time.monotonic()
    names = [v.name for v in selected(matrix, options.only)]
    runner = None
    try:
        with progress_for(names, stages_to(options.until)) as progress:
            runner = Runner(matrix, options, progress)
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
    # Recorded before rendering, so the reports can show this run's place in the trend.
    past = _record(matrix.report.dir / history.FILENAME, run, matrix.name)
    for path in write_reports(run, run_dir, matrix.report.formats, past):
        print(f"report: {path}")
    for v in run.variants:
        print(f"  {v.name:24} {v.status.value.upper():7} {_summary(v)}")
    return 0 if run.ok else 1


def _new_run_dir(parent: Path, started: datetime) -> Path:
    """A directory of its own for this run, named by its start: made here, so two
    runs started in the same second get two (the second with a -2 suffix)."""
    stamp = started.strftime("%Y%m%d-%H%M%S")
    parent.mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        path = parent / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise InfraError(f"{parent}: no free run directory for {stamp}")


def _partial_reports(path: Path, matrix: Matrix) -> None:
    """Reports of an interrupted run, from its partial results (not in the history)."""
    try:
        run = results.read(path)
        write_reports(run, path.parent, matrix.report.formats)
    except (OSError, ValueError) as exc:
        print(_shown(f"orchestrate: warning: {path}: reports not written: {exc}"), file=sys.stderr)
        return
    print(f"partial results ({run.incomplete}): {path}", file=sys.stderr)


def _report(path: Path, out: Path | None) -> int:
    """Re-render every report format from a results file; nothing runs.

    The file may come from anywhere: results.read checks it before anything
    reads it, and the reports read logs only from inside its directory.
    """
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
    except ValueError as exc:
        # The checker's ResultsError names the JSON path: variants[2].tests[0].verdict: ...
        return _bad_results(path, f"not a results file: {exc}")
    try:
        written = write_reports(
            run, out or path.parent, FILES, _past(path, run), run_dir=path.parent
        )
    except OSError as exc:
        return _bad_results(out or path.parent, f"cannot write the reports: {exc}")
    for report in written:
        print(f"report: {report}")
    return 0


def _record(db: Path, run: RunResult, matrix_name: str) -> History | None:
    """Add the run to the history and read back what the reports show of it.

    A broken or locked history costs the reports their trend, never the run.
    """
    try:
        history.record(db, run, matrix_name)
        return history.load_history(db, run, matrix_name)
    except (sqlite3.Error, OSError, history.HistoryError) as exc:
        print(_shown(f"orchestrate: warning: {db}: history not recorded: {exc}"), file=sys.stderr)
        return None


def _past(results_path: Path, run: RunResult) -> History | None:
    """The history next to the run directories: <report dir>/<matrix>/<run>/results.json."""
    parents = results_path.resolve().parents
    if len(parents) < 3:
        return None
    db = parents[2] / history.FILENAME
    try:
        return history.load_history(db, run)
    except (sqlite3.Error, OSError, history.HistoryError) as exc:
        print(_shown(f"orchestrate: warning: {db}: history not read: {exc}"), file=sys.stderr)
        return None


def _history(db: Path | None, matrix_path: Path | None, last: int) -> int:
    """Print the trend of one matrix (--matrix) or of every matrix in a database (--db)."""
    names: list[str] | None = None
    if db is None:
        try:
            matrix = config.load(matrix_path or Path("matrix.yaml"))
        except OrchestrateError as exc:
            print(_shown(f"orchestrate: error: {exc}"), file=sys.stderr)
            return exc.exit_code
        db, names = matrix.report.dir / history.FILENAME, [matrix.name]
    width = shutil.get_terminal_size((100, 24)).columns
    try:
        if not db.is_file():
            print(f"orchestrate: error: {db}: no history yet (no run recorded)", file=sys.stderr)
            return 2
        trends = [history.trend(db, name, last) for name in names or history.matrices(db)]
    except (sqlite3.Error, OSError, history.HistoryError) as exc:
        print(_shown(f"orchestrate: error: {db}: {exc}"), file=sys.stderr)
        return 2
    print("\n\n".join(history.format_trend(t, width) for t in trends) or f"{db}: no runs recorded")
    return 0


def _bad_results(path: Path, why: str) -> int:
    print(_shown(f"orchestrate: error: {path}: {why}", one_line=True), file=sys.stderr)
    return 2


def _summary(variant: results.VariantResult) -> str:
    """A variant's line in the run's last words: reasons hold patch subjects, compiler output."""
    bad = next((s for s in variant.stages if s.status.bad), None)
    if bad:
        text = f"{bad.stage.value}: {bad.reason}"
    else:
        text = "; ".join(f"{s.stage.value}: {s.reason}" for s in variant.stages[-3:] if s.reason)
    return for_terminal(text, one_line=True, limit=SUMMARY)


def _shown(message: str, *, one_line: bool = False) -> str:
    """An error or a warning as the terminal gets it: it may quote hostile text
    (a matrix value, a results file, git's stderr), so nothing in it acts and
    at most ERROR_TEXT characters of it are printed."""
    return for_terminal(message, one_line=one_line, limit=ERROR_TEXT)


if __name__ == "__main__":
    sys.exit(main())
