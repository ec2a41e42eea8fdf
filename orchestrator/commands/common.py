"""What more than one command needs: errors as the terminal shows them, results
files read with a reason, the history recorded, a run directory of its own."""

from __future__ import annotations

import sqlite3
import sys
from datetime import datetime
from pathlib import Path

from orchestrator import history, results
from orchestrator.errors import InfraError
from orchestrator.perf import History
from orchestrator.results import RunResult
from orchestrator.textfmt import for_terminal

SUMMARY = 300  # characters of a variant's reasons on its summary line
ERROR_TEXT = 4000  # characters of an error message (git's stderr is cut at 2000)


def shown(message: str, *, one_line: bool = False) -> str:
    """An error or a warning as the terminal gets it: it may quote hostile text
    (a matrix value, a results file, git's stderr), so nothing in it acts and
    at most ERROR_TEXT characters of it are printed."""
    return for_terminal(message, one_line=one_line, limit=ERROR_TEXT)


def bad_results(path: Path, why: str) -> int:
    print(shown(f"orchestrate: error: {path}: {why}", one_line=True), file=sys.stderr)
    return 2


def record(db: Path, run: RunResult, matrix_name: str) -> History | None:
    """Add the run to the history and read back what the reports show of it.

    A broken or locked history costs the reports their trend, never the run.
    """
    try:
        history.record(db, run, matrix_name)
        return history.load_history(db, run, matrix_name)
    except (sqlite3.Error, OSError, history.HistoryError) as exc:
        print(shown(f"orchestrate: warning: {db}: history not recorded: {exc}"), file=sys.stderr)
        return None


def new_run_dir(parent: Path, started: datetime) -> Path:
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


def _summary(variant: results.VariantResult) -> str:
    """A variant's line in the run's last words: reasons hold patch subjects, compiler output."""
    bad = next((s for s in variant.stages if s.status.bad), None)
    if bad:
        text = f"{bad.stage.value}: {bad.reason}"
    else:
        text = "; ".join(f"{s.stage.value}: {s.reason}" for s in variant.stages[-3:] if s.reason)
    return for_terminal(text, one_line=True, limit=SUMMARY)


def print_summaries(run: RunResult) -> None:
    """The run's last words: a line per variant."""
    for v in run.variants:
        print(f"  {v.name:24} {v.status.value.upper():7} {_summary(v)}")
