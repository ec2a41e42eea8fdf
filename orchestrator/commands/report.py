"""`orchestrate report`: every report rendered again from a results file; nothing runs."""

from __future__ import annotations

import argparse
import sqlite3
import sys
from pathlib import Path

from orchestrator import history, results
from orchestrator.commands import Subparsers
from orchestrator.commands.common import bad_results, shown
from orchestrator.errors import UserError
from orchestrator.perf import History
from orchestrator.report import FILES, write_reports
from orchestrator.results import RunResult

NAMES: tuple[str, ...] = ("report",)


def add_parsers(sub: Subparsers) -> None:
    text = "render JUnit, HTML and text reports again from a results file; runs nothing"
    cmd = sub.add_parser(
        "report",
        help=text,
        description=text,
        epilog="example: orchestrate report reports/bpf-reuse/20261206-101500/results.json "
        "--out /tmp/again",
    )
    cmd.add_argument("results", type=Path, help="a results.json written by `orchestrate run`")
    cmd.add_argument(
        "--out", type=Path, default=None, help="where to write (default: next to the results)"
    )


def run(ns: argparse.Namespace) -> int:
    return _report(ns.results, ns.out)


def _report(path: Path, out: Path | None) -> int:
    """Re-render every report format from a results file; nothing runs.

    The file may come from anywhere: results.read checks it before anything
    reads it, and the reports read logs only from inside its directory.
    """
    try:
        run = results.read_given(path)
    except UserError as exc:  # says which path, and why: one line, exit 2
        print(shown(f"orchestrate: error: {exc}", one_line=True), file=sys.stderr)
        return 2
    try:
        written = write_reports(
            run, out or path.parent, FILES, _past(path, run), run_dir=path.parent
        )
    except OSError as exc:
        return bad_results(out or path.parent, f"cannot write the reports: {exc}")
    for report in written:
        print(f"report: {report}")
    return 0


def _past(results_path: Path, run: RunResult) -> History | None:
    """The history next to the run directories: <report dir>/<matrix>/<run>/results.json."""
    parents = results_path.resolve().parents
    if len(parents) < 3:
        return None
    db = parents[2] / history.FILENAME
    try:
        return history.load_history(db, run)
    except (sqlite3.Error, OSError, history.HistoryError) as exc:
        print(shown(f"orchestrate: warning: {db}: history not read: {exc}"), file=sys.stderr)
        return None
