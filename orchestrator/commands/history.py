"""`orchestrate history`: the trend of a matrix's last runs, from its history database."""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import sys
from pathlib import Path

from orchestrator import config, history
from orchestrator.commands import Subparsers
from orchestrator.commands.common import shown

NAMES: tuple[str, ...] = ("history",)


def add_parsers(sub: Subparsers) -> None:
    text = "print the verdicts and metric medians of the last runs of a matrix"
    cmd = sub.add_parser(
        "history",
        help=text,
        description=text,
        epilog="example: orchestrate history --matrix matrix.yaml -n 20",
    )
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


def run(ns: argparse.Namespace) -> int:
    return _history(ns.db, ns.matrix, ns.last)


def _history(db: Path | None, matrix_path: Path | None, last: int) -> int:
    """Print the trend of one matrix (--matrix) or of every matrix in a database (--db)."""
    names: list[str] | None = None
    if db is None:
        matrix = config.load(matrix_path or Path("matrix.yaml"))  # a bad one: cli says why, exit 2
        db, names = matrix.report.dir / history.FILENAME, [matrix.name]
    width = shutil.get_terminal_size((100, 24)).columns
    try:
        if not db.is_file():
            print(f"orchestrate: error: {db}: no history yet (no run recorded)", file=sys.stderr)
            return 2
        trends = [history.trend(db, name, last) for name in names or history.matrices(db)]
    except (sqlite3.Error, OSError, history.HistoryError) as exc:
        print(shown(f"orchestrate: error: {db}: {exc}"), file=sys.stderr)
        return 2
    print("\n\n".join(history.format_trend(t, width) for t in trends) or f"{db}: no runs recorded")
    return 0
