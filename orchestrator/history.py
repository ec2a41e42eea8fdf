"""Run history: every run of a matrix in one SQLite file, for trends and changes.

The database sits next to the per-run directories (`<report dir>/history.sqlite`)
and only ever gets rows added: results.json stays the source of truth for a
run, this is the index across runs.  Recording is idempotent (a run is
known by its matrix and start time), so re-recording changes nothing.

Cross-run numbers are hints, not evidence: DESIGN.md measured the host's
speed drifting by up to 20 % within minutes, so only ratios inside one run
are trusted.  A metric is reported as changed here only when its samples
differ beyond their noise (stats.compare), and the reports say so.
"""

from __future__ import annotations

import contextlib
import sqlite3
import statistics
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from orchestrator import stats
from orchestrator.perf import History, breakdowns, metric_samples
from orchestrator.results import RunResult, Verdict
from orchestrator.stats import Change
from orchestrator.textfmt import fmt_number, fmt_p, fmt_ratio, grid
from orchestrator.verdicts import (
    STAGE_COLUMNS,
    Outcome,
    boot_failed,
    outcome_of,
    own_outcome,
    stage_outcome,
    walk,
    worst,
)

FILENAME = "history.sqlite"
# PRAGMA user_version.  2: results.test is the test's name (map_perf.lookup),
# where 1 kept the run in it (map_perf@2.lookup).  3: results.attempts and
# .failures (`retries:`, flakes.py).  _open upgrades older files in place.
SCHEMA_VERSION = 3
STAGES = "(stages)"  # the trend's row for a variant's apply..boot stages
MAX_CHANGES = 100  # a flapping KTAP suite must not bury the report

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS runs (
        id INTEGER PRIMARY KEY,
        matrix_name TEXT NOT NULL,
        matrix_path TEXT NOT NULL,
        started TEXT NOT NULL,
        finished TEXT NOT NULL,
        base TEXT NOT NULL,      -- the variants' base commits, sorted, comma separated
        ok INTEGER NOT NULL,
        baseline TEXT NOT NULL,  -- the variant perf was compared with
        UNIQUE (matrix_name, started)
    )""",
    """CREATE TABLE IF NOT EXISTS results (
        run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        variant TEXT NOT NULL,
        head TEXT NOT NULL,
        test TEXT NOT NULL,      -- map_perf, map_perf.lookup (every run); stage:build
        top INTEGER NOT NULL,    -- 1 for a test or stage, 0 for a subtest
        verdict TEXT NOT NULL,   -- results.Verdict (or Status, for a stage)
        expected TEXT NOT NULL,
        outcome TEXT NOT NULL    -- the report's word: PASS, XFAIL (expected), CRASH, ...
        -- and, from schema 3 (_UPGRADE_2, also run on a new file):
        -- attempts INTEGER   runs in one guest (retries: N), 1 for older rows
        -- failures INTEGER   of them, missed (a retried test; 0 for older rows)
    )""",
    """CREATE TABLE IF NOT EXISTS metrics (
        run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        variant TEXT NOT NULL,
        test TEXT NOT NULL,      -- map_perf, map_perf.lookup: one row per sample
        metric TEXT NOT NULL,
        value REAL NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS results_run ON results (run_id)",
    "CREATE INDEX IF NOT EXISTS metrics_run ON metrics (run_id)",
)


# Schema 1 named each run of a test in results.test: map_perf@2, map_perf@2.lookup.
# Schema 2 keeps the test's own name, as results.TestResult.name does.  The
# one place that reads the old suffix, in old rows only: a test's own name
# has no at sign (config._SAFE_NAME), so a test row's name ends before its
# first one, and a subtest row is renamed after the test row it extends.
_UPGRADE_1 = (
    """UPDATE results SET test = coalesce((
        SELECT substr(t.test, 1, instr(t.test, '@') - 1) || substr(results.test, length(t.test) + 1)
        FROM results AS t
        WHERE t.run_id = results.run_id AND t.variant = results.variant AND t.top = 1
          AND instr(t.test, '@') > 0 AND substr(results.test, 1, length(t.test) + 1) = t.test || '.'
        LIMIT 1
    ), test) WHERE top = 0""",
    "UPDATE results SET test = substr(test, 1, instr(test, '@') - 1)"
    " WHERE top = 1 AND instr(test, '@') > 0",
)


# Schema 3 counts a retried test's runs; older rows were run once.  Run on a new
# file too, after _SCHEMA made the tables as schema 2 had them.
_UPGRADE_2 = (
    "ALTER TABLE results ADD COLUMN attempts INTEGER NOT NULL DEFAULT 1",
    "ALTER TABLE results ADD COLUMN failures INTEGER NOT NULL DEFAULT 0",
)


class HistoryError(Exception):
    pass


@dataclass(frozen=True)
class RunRow:
    id: int
    started: str
    finished: str
    base: str
    ok: bool


@dataclass(frozen=True)
class Trend:
    matrix: str
    runs: tuple[RunRow, ...]  # oldest first
    # (variant, test) -> the report's word per run; "" where the run lacks it
    verdicts: dict[tuple[str, str], tuple[str, ...]]
    # (variant, test, metric) -> the median per run; None where the run lacks it
    medians: dict[tuple[str, str, str], tuple[float | None, ...]]


# --- the database --------------------------------------------------------------


@contextlib.contextmanager
def _open(db: Path, *, write: bool) -> Iterator[sqlite3.Connection]:
    """A connection that is closed afterwards; read-only ones never create the file."""
    if write:
        db.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(db, timeout=30)  # parallel runs of other matrices wait
    else:
        if not db.is_file():
            raise HistoryError(f"{db}: no such history database")
        conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
    try:
        if write:
            conn.execute("PRAGMA foreign_keys = ON")  # outside a transaction, or it is ignored
            # The schema's version is read and upgraded by one writer at a time: two runs
            # recording into a new file at once would otherwise both create and upgrade it,
            # and the second's upgrade would fail (a lost history row).
            conn.execute("BEGIN IMMEDIATE")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise HistoryError(
                f"{db}: history schema {version}; this version reads ≤ {SCHEMA_VERSION}"
            )
        if version == 1 and not write:
            raise HistoryError(
                f"{db}: history schema 1, from an older orchestrate; "
                "the next run of a matrix recorded in it upgrades it"
            )
        if write:
            with conn:  # commits the transaction begun above
                for statement in _UPGRADE_1 if version == 1 else ():
                    conn.execute(statement)
                for statement in _SCHEMA:
                    conn.execute(statement)
                for statement in _UPGRADE_2 if version < 3 else ():
                    conn.execute(statement)
                # A constant, not data: PRAGMA takes no parameters.
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION:d}")
        yield conn
    finally:
        conn.close()


def _has_tables(conn: sqlite3.Connection) -> bool:
    row = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'runs'")
    return row.fetchone() is not None


def record(db: Path, run: RunResult, matrix_name: str) -> int:
    """Add a run (once: the same matrix and start time is the same run); its id."""
    bases = ",".join(sorted({v.base for v in run.variants if v.base}))
    with _open(db, write=True) as conn, conn:
        cursor = conn.execute(
            "INSERT OR IGNORE INTO runs"
            " (matrix_name, matrix_path, started, finished, base, ok, baseline)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (matrix_name, run.matrix, run.started, run.finished, bases, int(run.ok), run.baseline),
        )
        if cursor.rowcount == 0:  # recorded before
            found = conn.execute(
                "SELECT id FROM runs WHERE matrix_name = ? AND started = ?",
                (matrix_name, run.started),
            ).fetchone()
            return int(found[0])
        run_id = int(cursor.lastrowid or 0)
        conn.executemany(
            "INSERT INTO results"
            " (run_id, variant, head, test, top, verdict, expected, outcome, attempts, failures)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (run_id, *row, *runs)
                for row, runs in zip(_result_rows(run), _runs(run), strict=True)
            ],
        )
        conn.executemany(
            "INSERT INTO metrics (run_id, variant, test, metric, value) VALUES (?, ?, ?, ?, ?)",
            [
                (run_id, variant, test, metric, value)
                for (test, metric), by_variant in metric_samples(run.variants).items()
                for variant, values in by_variant.items()
                for value in values
            ],
        )
        return run_id


_ResultRow = tuple[str, str, str, int, str, str, str]


def _result_rows(run: RunResult) -> list[_ResultRow]:
    """(variant, head, test, top, verdict, expected, outcome) for every stage, test and subtest."""
    rows: list[_ResultRow] = []
    for v in run.variants:
        for s in v.stages:
            if s.stage in STAGE_COLUMNS:
                word = stage_outcome(s).word
                rows.append((v.name, v.head, f"stage:{s.stage.value}", 1, s.status.value, "", word))
        not_run = boot_failed(v)
        for test in v.tests:
            word = outcome_of(test, not_run=not_run).word
            rows.append((v.name, v.head, test.name, 1, test.verdict.value, test.expected, word))
            for sub in walk(test.subtests):
                word = own_outcome(sub, not_run=not_run).word
                rows.append((v.name, v.head, sub.name, 0, sub.verdict.value, sub.expected, word))
    return rows


def _runs(run: RunResult) -> list[tuple[int, int]]:
    """(attempts, failures) for each of _result_rows' rows, in the same order."""
    rows: list[tuple[int, int]] = []
    for v in run.variants:
        rows += [(1, 0) for s in v.stages if s.stage in STAGE_COLUMNS]
        for test in v.tests:
            rows.append((test.attempts, test.failures))
            rows += [(1, 0) for _ in walk(test.subtests)]
    return rows


def flake_rates(db: Path, matrix_name: str, until: str | None = None) -> dict[str, tuple[int, int]]:
    """test -> (FLAKY runs, runs) over every recorded run of the matrix (up to `until`,
    a start time), for the tests that were FLAKY at least once.  A run is one test
    run in one variant (each repeat counts); a schema-2 file has no FLAKY rows."""
    with _open(db, write=False) as conn:
        if not _has_tables(conn):
            return {}
        rows = conn.execute(
            "SELECT r.test, sum(r.verdict = ?), count(*) FROM results AS r"
            " JOIN runs ON runs.id = r.run_id"
            " WHERE runs.matrix_name = ? AND (? IS NULL OR runs.started <= ?) AND r.top = 1"
            " AND r.test NOT LIKE 'stage:%' GROUP BY r.test HAVING sum(r.verdict = ?) > 0"
            " ORDER BY r.test",
            (Verdict.FLAKY.value, matrix_name, until, until, Verdict.FLAKY.value),
        ).fetchall()
    return {str(test): (int(flaky), int(runs)) for test, flaky, runs in rows}


# --- reading ---------------------------------------------------------------------


# The last runs of a matrix, newest first: parameters (matrix, until, until, limit).
_LAST = (
    "SELECT id FROM runs WHERE matrix_name = ? AND (? IS NULL OR started <= ?)"
    " ORDER BY started DESC, id DESC LIMIT ?"
)


def trend(db: Path, matrix_name: str, last_n: int = 10, until: str | None = None) -> Trend:
    """The last runs of a matrix (up to `until`, a start time): verdicts and medians."""
    with _open(db, write=False) as conn:
        if not _has_tables(conn):
            return Trend(matrix_name, (), {}, {})
        last = (matrix_name, until, until, max(0, last_n))
        runs = tuple(
            RunRow(i, s, f, b, bool(ok))
            for i, s, f, b, ok in conn.execute(
                f"SELECT id, started, finished, base, ok FROM runs WHERE id IN ({_LAST})"
                " ORDER BY started, id",
                last,
            )
        )
        results = conn.execute(
            "SELECT run_id, variant, test, outcome FROM results"
            f" WHERE top = 1 AND run_id IN ({_LAST}) ORDER BY rowid",
            last,
        ).fetchall()
        samples = conn.execute(
            f"SELECT run_id, variant, test, metric, value FROM metrics WHERE run_id IN ({_LAST})"
            " ORDER BY rowid",
            last,
        ).fetchall()
    index = {r.id: i for i, r in enumerate(runs)}
    return Trend(matrix_name, runs, _verdicts(results, index), _medians(samples, index))


def _verdicts(
    rows: Iterable[tuple[int, str, str, str]], index: dict[int, int]
) -> dict[tuple[str, str], tuple[str, ...]]:
    """Per (variant, test), the worst word of each run: repeats and stages fold into one."""
    cells: dict[tuple[str, str], list[Outcome | None]] = {}
    for run_id, variant, test, outcome in rows:
        key = (variant, STAGES if test.startswith("stage:") else test)
        row = cells.setdefault(key, [None] * len(index))
        row[index[run_id]] = worst(o for o in (row[index[run_id]], Outcome(outcome)) if o)
    return {k: tuple(o.word if o else "" for o in row) for k, row in cells.items()}


def _medians(
    rows: Iterable[tuple[int, str, str, str, float]], index: dict[int, int]
) -> dict[tuple[str, str, str], tuple[float | None, ...]]:
    values: dict[tuple[str, str, str], list[list[float]]] = {}
    for run_id, variant, test, metric, value in rows:
        values.setdefault((variant, test, metric), [[] for _ in index])[index[run_id]].append(value)
    return {k: tuple(statistics.median(x) if x else None for x in v) for k, v in values.items()}


def matrices(db: Path) -> list[str]:
    """The matrix names in a database, most recently run first."""
    with _open(db, write=False) as conn:
        if not _has_tables(conn):
            return []
        rows = conn.execute(
            "SELECT matrix_name FROM runs GROUP BY matrix_name ORDER BY max(started) DESC"
        ).fetchall()
    return [name for (name,) in rows]


def _matrix_of(conn: sqlite3.Connection, run: RunResult) -> str | None:
    """The name a run was recorded under, or the latest name of its matrix file."""
    if not _has_tables(conn):
        return None
    row = conn.execute(
        "SELECT matrix_name FROM runs WHERE matrix_path = ?"
        " ORDER BY started = ? DESC, started DESC LIMIT 1",
        (run.matrix, run.started),
    ).fetchone()
    return str(row[0]) if row else None


# --- changes since the previous run ------------------------------------------------


def changes_since_previous(db: Path, run: RunResult, matrix_name: str | None = None) -> list[str]:
    """What changed since the previous run of the same matrix, in words.

    Verdicts are compared per variant and test (repeats folded, subtests
    included); metrics are compared sample against sample, and listed only
    when stats sees a change beyond the noise.  Variants or tests that only
    one of the runs has are not changes (an --only run would list them all).
    """
    with _open(db, write=False) as conn:
        previous = _previous(conn, run, matrix_name)
        if previous is None:
            return []
        before = conn.execute(
            "SELECT variant, test, outcome FROM results WHERE run_id = ?", (previous.id,)
        ).fetchall()
        samples = conn.execute(
            "SELECT variant, test, metric, value FROM metrics WHERE run_id = ?", (previous.id,)
        ).fetchall()
    now = [(v, test, word) for v, _h, test, _t, _v, _e, word in _result_rows(run)]
    changes = _verdict_changes(_words(before), _words(now))
    changes += _metric_changes(samples, run)
    if len(changes) > MAX_CHANGES:
        changes = [*changes[:MAX_CHANGES], f"... and {len(changes) - MAX_CHANGES} more"]
    return changes


def previous_run(db: Path, run: RunResult, matrix_name: str | None = None) -> RunRow | None:
    """The latest run of the same matrix that started before this one."""
    with _open(db, write=False) as conn:
        return _previous(conn, run, matrix_name)


def _previous(conn: sqlite3.Connection, run: RunResult, matrix_name: str | None) -> RunRow | None:
    name = matrix_name or _matrix_of(conn, run)
    if name is None:
        return None
    row = conn.execute(
        "SELECT id, started, finished, base, ok FROM runs WHERE matrix_name = ? AND started < ?"
        " ORDER BY started DESC, id DESC LIMIT 1",
        (name, run.started),
    ).fetchone()
    return RunRow(row[0], row[1], row[2], row[3], bool(row[4])) if row else None


def _words(rows: Iterable[tuple[str, str, str]]) -> dict[tuple[str, str], str]:
    """(variant, test) -> the worst word over its runs (repeats, perf rounds)."""
    found: dict[tuple[str, str], Outcome] = {}
    for variant, test, word in rows:
        key = (variant, test)
        found[key] = worst(o for o in (found.get(key), Outcome(word)) if o) or Outcome(word)
    return {k: o.word for k, o in found.items()}


def _verdict_changes(
    before: dict[tuple[str, str], str], now: dict[tuple[str, str], str]
) -> list[str]:
    return [
        f"{variant} {test}: {before[variant, test]} → {word}"
        for (variant, test), word in now.items()
        if (variant, test) in before and before[variant, test] != word
    ]


def _metric_changes(previous: Iterable[tuple[str, str, str, float]], run: RunResult) -> list[str]:
    before: dict[tuple[str, str, str], list[float]] = {}
    for variant, test, metric, value in previous:
        before.setdefault((variant, test, metric), []).append(value)
    out = []
    # Whole tests only: a test's own metric speaks for its subtests' ones.
    samples = metric_samples(run.variants, subtests=False)
    details = breakdowns(samples)
    for (test, metric), by_variant in samples.items():
        if (test, metric) in details:
            continue  # its headline metric speaks for it
        for variant, values in by_variant.items():
            old = before.get((variant, test, metric))
            if not old:
                continue
            c = stats.compare(metric, "this run", values, "the previous run", old)
            if c.verdict in (Change.FASTER, Change.SLOWER):
                was, now = fmt_number(statistics.median(old)), fmt_number(statistics.median(values))
                why = f"{fmt_ratio(c)}, p={fmt_p(c.p)}, {c.verdict}"
                out.append(f"{variant} {test}.{metric}: median {was} → {now} ({why})")
    return out


def load_history(
    db: Path, run: RunResult, matrix_name: str | None = None, last_n: int = 10
) -> History | None:
    """What the reports show of earlier runs; None when the database does not know the matrix."""
    if not db.is_file():
        return None
    with _open(db, write=False) as conn:
        name = matrix_name or _matrix_of(conn, run)
        previous = _previous(conn, run, name) if name else None
    if name is None:
        return None
    t = trend(db, name, last_n, until=run.started)
    medians: dict[tuple[str, str], dict[str, tuple[tuple[str, float], ...]]] = {}
    for (variant, test, metric), per_run in t.medians.items():
        points = tuple(
            (r.started, m) for r, m in zip(t.runs, per_run, strict=True) if m is not None
        )
        medians.setdefault((test, metric), {})[variant] = points
    changes = changes_since_previous(db, run, name)
    rates = flake_rates(db, name, until=run.started)
    return History(medians, tuple(changes), previous.started if previous else "", rates)


# --- the trend as text ----------------------------------------------------------------


def format_trend(t: Trend, width: int = 100) -> str:
    """The trend as plain tables: runs, verdicts per variant and test, metric medians."""
    if not t.runs:
        return f"{t.matrix}: no runs recorded"
    cols = [f"#{i}" for i in range(1, len(t.runs) + 1)]
    lines = [f"{t.matrix}: the last {len(t.runs)} runs", ""]
    for col, r in zip(cols, t.runs, strict=True):
        state = "ok" if r.ok else "FAILED"
        lines.append(f"{col:>4}  {r.started}  {state:6}  base {r.base[:12] or '?'}")
    if t.verdicts:
        rows = [[v, test, *(_short(w) for w in words)] for (v, test), words in t.verdicts.items()]
        lines += ["", *grid(["variant", "test", *cols], rows, width)]
    if t.medians:
        rows = [
            [v, test, metric, *("-" if m is None else fmt_number(m) for m in per_run)]
            for (v, test, metric), per_run in t.medians.items()
        ]
        lines += ["", "metric medians:", *grid(["variant", "test", "metric", *cols], rows, width)]
    return "\n".join(lines)


def _short(word: str) -> str:
    # "XFAIL (expected)" would make every column twice as wide.
    return word.split(" ")[0] if word else "-"
