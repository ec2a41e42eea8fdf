"""Run history: recording, trends, changes since the previous run, the reports and the CLI."""

from __future__ import annotations

import dataclasses
import sqlite3
import textwrap
import threading
from pathlib import Path

import pytest

from orchestrator import cli, history, results
from orchestrator.commands import common
from orchestrator.history import HistoryError, changes_since_previous, record, trend
from orchestrator.perf import History
from orchestrator.report import html, text, write_reports
from orchestrator.results import RunResult, Stage, Status, TestResult, Verdict
from tests.unit.test_report_junit import _stages
from tests.unit.test_stats import perf_run

DAYS = [f"2026-11-2{d}T10:00:00+00:00" for d in range(1, 6)]


@pytest.fixture()
def db(tmp_path: Path) -> Path:
    return tmp_path / "reports" / history.FILENAME


def _count(db: Path, table: str) -> int:
    with sqlite3.connect(db) as conn:
        # Table names from this test only.
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def _failed_build(run: RunResult, variant: str) -> RunResult:
    """The run with one variant's build failed: no boot, no tests."""
    stages = _stages(Status.PASS, Status.PASS, Status.FAIL, Status.SKIPPED, Status.SKIPPED)
    variants = tuple(
        dataclasses.replace(v, stages=stages, tests=()) if v.name == variant else v
        for v in run.variants
    )
    return dataclasses.replace(run, variants=variants)


def test_record_writes_every_stage_test_subtest_and_sample(db: Path) -> None:
    run = perf_run(DAYS[0])
    run_id = record(db, run, "bpf-reuse")
    assert run_id == 1
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == history.SCHEMA_VERSION
        row = conn.execute(
            "SELECT matrix_name, matrix_path, started, ok, base FROM runs"
        ).fetchone()
        assert row == ("bpf-reuse", "/work/matrix.yaml", DAYS[0], 1, "1" * 40)
        lock = conn.execute(
            "SELECT head, top, verdict, expected, outcome FROM results"
            " WHERE variant = 'ctor' AND test = 'htab_reuse.lock'"
        ).fetchone()
        assert lock == ("c" * 40, 0, "pass", "", "PASS")
        build = conn.execute(
            "SELECT outcome FROM results WHERE variant = 'ctor' AND test = 'stage:build'"
        ).fetchone()
        assert build == ("PASS",)
    # Per variant: 4 stages, htab_reuse and its 2 subtests, 10 boots of map_perf.
    assert _count(db, "results") == 3 * (4 + 3 + 10)
    assert _count(db, "metrics") == 3 * 10 * 2  # two metrics per boot
    assert _count(db, "runs") == 1


def test_record_is_idempotent_per_matrix_and_start(db: Path) -> None:
    run = perf_run(DAYS[0])
    first = record(db, run, "bpf-reuse")
    assert record(db, run, "bpf-reuse") == first
    assert (_count(db, "runs"), _count(db, "results")) == (1, 3 * 17)
    assert record(db, run, "other-matrix") != first  # another matrix, same second
    assert record(db, perf_run(DAYS[1]), "bpf-reuse") == 3
    assert _count(db, "runs") == 3


def test_two_runs_in_the_same_second_are_two_runs(db: Path) -> None:
    # Runs record their start to the millisecond (cli), so neither row is dropped.
    first = record(db, perf_run("2026-11-21T10:00:00.125+00:00"), "bpf-reuse")
    second = record(db, perf_run("2026-11-21T10:00:00.610+00:00"), "bpf-reuse")
    assert first != second and _count(db, "runs") == 2


def test_hostile_names_are_data(db: Path) -> None:
    evil = "x'); DROP TABLE runs; --"
    run = perf_run(DAYS[0], {evil: 1.0, "upstream": 1.0})
    record(db, run, evil)
    t = trend(db, evil)
    assert len(t.runs) == 1 and (evil, "htab_reuse") in t.verdicts
    assert history.matrices(db) == [evil]


def test_trend_folds_repeats_and_keeps_run_order(db: Path) -> None:
    record(db, perf_run(DAYS[0], seed=0), "m")
    record(db, perf_run(DAYS[2], seed=2, lock="fail"), "m")
    record(db, _failed_build(perf_run(DAYS[1], seed=1), "ctor"), "m")  # out of order
    record(db, perf_run(DAYS[3], seed=3), "elsewhere")
    t = trend(db, "m", last_n=10)
    assert [r.started for r in t.runs] == DAYS[:3]
    assert [r.ok for r in t.runs] == [True, False, True]
    assert t.verdicts["upstream", "map_perf"] == ("PASS", "PASS", "PASS")  # 10 boots, one cell
    assert t.verdicts["upstream", "htab_reuse"] == ("PASS", "PASS", "FAIL")
    assert t.verdicts["ctor", history.STAGES] == ("PASS", "BUILD-FAIL", "PASS")
    assert t.verdicts["ctor", "htab_reuse"] == ("PASS", "", "FAIL")  # not run on day 2
    assert set(t.medians) == {
        (v, "map_perf", m)
        for v in ("upstream", "no-reuse", "ctor")
        for m in ("events_per_sec", "update_latency_ns")
    }
    ctor = t.medians["ctor", "map_perf", "events_per_sec"]
    assert ctor[1] is None and 0.95e6 < (ctor[0] or 0) < 1.05e6
    reuse = t.medians["no-reuse", "map_perf", "events_per_sec"]
    assert all(0.58e6 < (m or 0) < 0.68e6 for m in reuse)


def test_trend_last_n_and_until(db: Path) -> None:
    for i, day in enumerate(DAYS):
        record(db, perf_run(day, seed=i), "m")
    assert [r.started for r in trend(db, "m", last_n=2).runs] == DAYS[3:]
    assert [r.started for r in trend(db, "m", 2, until=DAYS[2]).runs] == DAYS[1:3]
    assert trend(db, "m", last_n=0).runs == ()
    assert trend(db, "unknown").runs == ()


def test_reading_never_creates_and_refuses_newer_schemas(tmp_path: Path, db: Path) -> None:
    with pytest.raises(HistoryError, match="no such history database"):
        trend(db, "m")
    assert not db.exists()
    db.parent.mkdir(parents=True)
    sqlite3.connect(db).close()  # an empty file: no tables yet
    assert trend(db, "m").runs == () and history.matrices(db) == []
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(HistoryError, match="history schema 99"):
        trend(db, "m")
    with pytest.raises(HistoryError):
        record(db, perf_run(), "m")


def test_tests_are_recorded_by_name_not_by_run(db: Path) -> None:
    record(db, perf_run(DAYS[0]), "m")
    with sqlite3.connect(db) as conn:
        names = {t for (t,) in conn.execute("SELECT test FROM results WHERE top = 1")}
        boots = conn.execute(
            "SELECT count(*) FROM results WHERE variant = 'ctor' AND test = 'map_perf'"
        ).fetchone()[0]
    assert names == {"stage:apply", "stage:kconfig", "stage:build", "stage:boot"} | {
        "htab_reuse", "map_perf",
    }  # fmt: skip
    assert boots == 10  # one row per round, all under the test's name


def _old_database(db: Path) -> None:
    """A schema 1 database: it named each run of a test (map_perf@2, map_perf@2.lookup)."""
    db.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(db) as conn:
        for statement in history._SCHEMA:
            conn.execute(statement)
        conn.execute(
            "INSERT INTO runs VALUES (1, 'm', '/work/matrix.yaml', ?, ?, ?, 1, 'upstream')",
            (DAYS[0], DAYS[0], "1" * 40),
        )
        rows = [
            ("stage:build", 1, "PASS"), ("smoke@1", 1, "PASS"), ("smoke@2", 1, "FAIL"),
            ("smoke@2.bpffs", 0, "FAIL"), ("map_perf@3", 1, "PASS"),
            ("map_perf@3.lookup", 0, "PASS"), ("htab_reuse", 1, "PASS"),
            ("htab_reuse.lock@1", 0, "PASS"),  # a KTAP subtest may have any name
            ("v1.2@2", 1, "PASS"), ("v1.2@2.a@b", 0, "PASS"),  # a dotted test name
        ]  # fmt: skip
        conn.executemany(
            "INSERT INTO results VALUES (1, 'upstream', ?, ?, ?, 'pass', '', ?)",
            [("1" * 40, test, top, word) for test, top, word in rows],
        )
        conn.execute("PRAGMA user_version = 1")


def test_an_old_database_is_upgraded_by_the_next_run(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _old_database(db)
    with pytest.raises(HistoryError, match="history schema 1, from an older orchestrate"):
        trend(db, "m")  # reading never writes, so it cannot upgrade
    assert cli.main(["history", "--db", str(db)]) == 2
    assert "the next run of a matrix recorded in it upgrades it" in capsys.readouterr().err
    later = perf_run(DAYS[1])
    h = common.record(db, later, "m")  # a run records, and so upgrades
    assert h is not None and h.previous == DAYS[0]
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == history.SCHEMA_VERSION
        old = [t for (t,) in conn.execute("SELECT test FROM results WHERE run_id = 1")]
    assert old == [
        "stage:build", "smoke", "smoke", "smoke.bpffs", "map_perf", "map_perf.lookup",
        "htab_reuse", "htab_reuse.lock@1", "v1.2", "v1.2.a@b",
    ]  # fmt: skip
    t = trend(db, "m")
    assert t.verdicts["upstream", "smoke"] == ("FAIL", "")  # its repeats folded into one cell
    assert t.verdicts["upstream", "map_perf"] == ("PASS", "PASS")
    assert record(db, later, "m") == 2  # recorded once, upgraded once


def test_changes_since_the_previous_run(db: Path) -> None:
    first = perf_run(DAYS[0], seed=0)
    with pytest.raises(HistoryError):
        changes_since_previous(db, first)  # no database yet: reading does not make one
    record(db, first, "m")
    assert changes_since_previous(db, first) == []  # nothing before it
    same = perf_run(DAYS[1], seed=1)  # new boots, same kernels
    record(db, same, "m")
    assert changes_since_previous(db, same) == []
    worse = perf_run(DAYS[2], {**_scales(), "ctor": 0.8}, seed=2, lock="fail")
    record(db, worse, "m")
    changes = changes_since_previous(db, worse)
    assert "upstream htab_reuse: PASS → FAIL" in changes
    assert "upstream htab_reuse.lock: PASS → FAIL" in changes
    moved = [c for c in changes if c.startswith("ctor map_perf.events_per_sec: median")]
    assert len(moved) == 1 and moved[0].endswith("slower)") and "0.8" in moved[0]
    assert not any(c.startswith(("upstream map_perf", "no-reuse map_perf")) for c in changes)


def _with_maps(run: RunResult, scale: float) -> RunResult:
    """Each perf boot also reports one fresh map's number, scaled."""
    variants = tuple(
        dataclasses.replace(
            v,
            tests=tuple(
                dataclasses.replace(
                    t,
                    subtests=(
                        TestResult(
                            f"{t.name}.map_1",
                            Verdict.PASS,
                            metrics={m: x * scale for m, x in t.metrics.items()},
                        ),
                    ),
                )
                for t in v.tests
            ),
        )
        for v in run.variants
    )
    return dataclasses.replace(run, variants=variants)


def test_changes_follow_whole_tests_not_their_subtests(db: Path) -> None:
    record(db, _with_maps(perf_run(DAYS[0], seed=0), 1.0), "m")
    moved = _with_maps(perf_run(DAYS[1], seed=0), 0.7)  # one map's numbers moved alone
    assert changes_since_previous(db, moved) == []


def _scales() -> dict[str, float]:
    return {"upstream": 1.0, "no-reuse": 0.63, "ctor": 1.0}


def test_changes_ignore_what_only_one_run_has(db: Path) -> None:
    record(db, perf_run(DAYS[0], seed=0), "m")
    only = perf_run(DAYS[1], {"upstream": 1.0}, seed=1)  # an --only run
    record(db, only, "m")
    assert changes_since_previous(db, only) == []
    broken = _failed_build(perf_run(DAYS[2], seed=2), "ctor")
    record(db, broken, "m")
    changes = changes_since_previous(db, broken)
    # The last run of the matrix had upstream only: ctor has nothing to compare with.
    assert changes == []
    again = perf_run(DAYS[3], seed=3)
    record(db, again, "m")
    assert changes_since_previous(db, again) == [
        "ctor stage:build: BUILD-FAIL → PASS",
        "ctor stage:boot: NOT-RUN → PASS",
    ]


def test_load_history_for_the_reports(db: Path) -> None:
    runs = [perf_run(day, seed=i) for i, day in enumerate(DAYS[:3])]
    for run in runs:
        record(db, run, "m")
    h = history.load_history(db, runs[1])  # an older run re-rendered: nothing after it
    assert h is not None and h.previous == DAYS[0]
    points = h.medians["map_perf", "events_per_sec"]["ctor"]
    assert [started for started, _ in points] == DAYS[:2]
    latest = history.load_history(db, runs[2], last_n=2)
    assert latest is not None and len(latest.medians["map_perf", "events_per_sec"]["ctor"]) == 2
    stranger = dataclasses.replace(runs[0], matrix="/elsewhere.yaml")
    assert history.load_history(db, stranger) is None
    assert history.load_history(db.parent / "none.sqlite", runs[0]) is None


def test_format_trend(db: Path) -> None:
    record(db, perf_run(DAYS[0], seed=0), "m")
    record(db, _failed_build(perf_run(DAYS[1], seed=1), "ctor"), "m")
    out = history.format_trend(trend(db, "m"), width=100)
    assert out.startswith("m: the last 2 runs")
    assert f"#2  {DAYS[1]}  FAILED  base 111111111111" in out
    assert any(
        line.split()[:4] == ["ctor", "(stages)", "PASS", "BUILD-FAIL"] for line in out.splitlines()
    )
    assert "metric medians:" in out and "events_per_sec" in out
    assert history.format_trend(trend(db, "none")) == "none: no runs recorded"


# --- in the reports ------------------------------------------------------------------


def _history(db: Path) -> tuple[RunResult, History]:
    for i, day in enumerate(DAYS[:3]):
        record(db, perf_run(day, seed=i, lock="fail" if i == 2 else "pass"), "m")
    run = perf_run(DAYS[2], seed=2, lock="fail")
    h = history.load_history(db, run)
    assert h is not None
    return run, h


def test_html_shows_sparklines_and_changes(db: Path) -> None:
    run, h = _history(db)
    page = html.render(run, history=h)
    changes = page[page.index('<section id="changes">') : page.index('<section id="verdicts">')]
    assert "Changed since the previous run" in changes and DAYS[1] in changes
    assert "upstream htab_reuse: PASS → FAIL" in changes
    # A sparkline per metric and variant in the perf tables and in each variant's section.
    assert page.count('<svg class="spark"') == 2 * (2 * 3)
    assert page.count("<polyline") == 12 and "median over the last 3 runs" in page
    plain = html.render(run)
    assert 'class="spark"' not in plain and 'id="changes"' not in plain


def test_changes_are_escaped_and_a_quiet_history_says_so(db: Path) -> None:
    run, h = _history(db)
    hostile = dataclasses.replace(h, changes=("<script>alert(1)</script> → FAIL",))
    page = html.render(run, history=hostile)
    assert "<script>" not in page and "&lt;script&gt;" in page
    quiet = html.render(run, history=dataclasses.replace(h, changes=()))
    assert "Nothing changed" in quiet
    first = html.render(run, history=History())  # the first run: nothing to compare with
    assert 'id="changes"' not in first


def test_text_lists_changes(db: Path) -> None:
    run, h = _history(db)
    out = text.render(run, history=h)
    section = out[out.index("Changes since the previous run") :]
    assert f"previous run: {DAYS[1]}" in section
    assert "  upstream htab_reuse: PASS → FAIL" in section
    quiet = text.render(run, history=dataclasses.replace(h, changes=()))
    assert "none: same verdicts, no metric beyond its noise" in quiet
    assert "Changes since" not in text.render(run)


def test_write_reports_passes_history_on(tmp_path: Path, db: Path) -> None:
    run, h = _history(db)
    write_reports(run, tmp_path / "out", ["json", "html", "text", "junit"], h)
    assert "Changed since the previous run" in (tmp_path / "out" / "report.html").read_text()
    assert "Changes since the previous run" in (tmp_path / "out" / "summary.txt").read_text()


# --- the command line ----------------------------------------------------------------


def _matrix(tmp_path: Path) -> Path:
    path = tmp_path / "matrix.yaml"
    path.write_text(
        textwrap.dedent(
            """
            name: bpf-reuse
            tree: {git: "https://example.invalid/linux.git"}
            report: {dir: reports}
            variants: [{name: upstream}, {name: no-reuse}, {name: ctor}]
            """
        )
    )
    return path


def test_cli_history(tmp_path: Path, db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    matrix = _matrix(tmp_path)
    for i, day in enumerate(DAYS[:3]):
        record(db, perf_run(day, seed=i), "bpf-reuse")
    record(db, perf_run(DAYS[3]), "another")
    assert cli.main(["history", "--matrix", str(matrix), "-n", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("bpf-reuse: the last 2 runs") and DAYS[0] not in out
    assert "another" not in out and "events_per_sec" in out
    assert cli.main(["history", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert out.index("another: the last 1 runs") < out.index("bpf-reuse: the last 3 runs")


def test_cli_history_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["history", "--db", str(tmp_path / "nothing.sqlite")]) == 2
    assert "no history yet" in capsys.readouterr().err
    assert cli.main(["history", "--matrix", str(_matrix(tmp_path))]) == 2
    assert cli.main(["history", "--matrix", str(tmp_path / "missing.yaml")]) == 2
    junk = tmp_path / "junk.sqlite"
    junk.write_text("not a database\n" * 100)
    assert cli.main(["history", "--db", str(junk)]) == 2
    assert "junk.sqlite" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["history", "--db", "x", "--matrix", "y"])


def test_report_command_uses_the_history_two_levels_up(tmp_path: Path, db: Path) -> None:
    run, _ = _history(db)
    run_dir = db.parent / "m" / "20261123-100000"
    results.write(run, run_dir / "results.json")
    assert cli.main(["report", str(run_dir / "results.json")]) == 0
    page = (run_dir / "report.html").read_text()
    assert 'id="changes"' in page and 'class="spark"' in page
    # Elsewhere (no history next to it), the reports do without.
    alone = tmp_path / "copy" / "results.json"
    results.write(run, alone)
    assert cli.main(["report", str(alone)]) == 0
    assert 'class="spark"' not in (alone.parent / "report.html").read_text()


def test_run_records_and_survives_a_broken_history(
    tmp_path: Path, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _history(db)
    later = perf_run(DAYS[3], seed=3)
    h = common.record(db, later, "m")
    assert h is not None and h.previous == DAYS[2]
    assert trend(db, "m").runs[-1].started == DAYS[3]
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / history.FILENAME).mkdir()  # a directory where the database should be
    assert common.record(blocked / history.FILENAME, later, "m") is None
    assert "history not recorded" in capsys.readouterr().err


def test_a_failed_variant_is_recorded_as_such(db: Path) -> None:
    run = _failed_build(perf_run(DAYS[0]), "ctor")
    record(db, run, "m")
    assert not trend(db, "m").runs[0].ok
    stage = next(s for s in run.variants[2].stages if s.stage is Stage.BUILD)
    assert stage.status is Status.FAIL


def test_runs_recording_into_a_new_database_at_once_all_land(db: Path) -> None:
    """Each creates-and-upgrades the schema only after the other has: no row is lost."""
    runs = [dataclasses.replace(perf_run(), started=f"2026-11-25T10:00:0{i}") for i in range(6)]
    start = threading.Barrier(len(runs))
    errors: list[BaseException] = []

    def write(run: RunResult) -> None:
        start.wait()
        try:
            record(db, run, "m")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(run,)) for run in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and _count(db, "runs") == len(runs)
