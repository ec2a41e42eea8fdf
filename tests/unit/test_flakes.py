"""Flakes and quarantine (orchestrator/flakes.py) and what every reader makes of them."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import textwrap
import xml.etree.ElementTree as ET
from datetime import date
from pathlib import Path

import pytest
import xmlschema

from orchestrator import cli, config, flakes, history, matrix, results, verdicts
from orchestrator.errors import MatrixError
from orchestrator.perf import History
from orchestrator.report import html, junit, text
from orchestrator.results import (
    Quarantine,
    RunResult,
    Stage,
    StageResult,
    Status,
    TestResult,
    VariantResult,
    Verdict,
)
from orchestrator.verdicts import Outcome

XSD = Path(__file__).parent / "data" / "junit" / "jenkins-junit.xsd"


def _fail(name: str = "t", reason: str = "exit status 1", **kw: object) -> TestResult:
    return TestResult(name, Verdict.FAIL, duration=1.0, reason=reason, **kw)  # type: ignore[arg-type]


def _pass(name: str = "t", **kw: object) -> TestResult:
    return TestResult(name, Verdict.PASS, duration=2.0, **kw)  # type: ignore[arg-type]


# --- retries ---------------------------------------------------------------------------


def test_a_run_that_met_its_expectation_is_left_as_it_is() -> None:
    assert flakes.combine([_pass()]) == _pass()
    assert flakes.combine([_fail()]) == _fail()  # no retries: one run, as before


def test_fail_then_pass_is_flaky_with_fail_runs() -> None:
    first, second = _fail(reason="exit status 1"), _pass()
    got = flakes.combine([first, second])
    assert got.verdict is Verdict.FLAKY
    assert (got.failures, got.attempts) == (1, 2)
    assert got.earlier_runs == (first,)
    assert got.duration == 3.0  # the time all runs took
    assert got.reason.startswith("missed 1 of 2 runs, then met its expectation")
    assert "t: fail" in got.reason  # what the first run did


def test_missing_every_run_keeps_the_verdict_and_counts_the_runs() -> None:
    runs = [_fail(reason="r1"), _fail(reason="r2"), TestResult("t", Verdict.TIMEOUT, reason="r3")]
    got = flakes.combine(runs)
    assert got.verdict is Verdict.TIMEOUT
    assert (got.failures, got.attempts) == (3, 3)
    assert got.reason == "r3 (missed all 3 runs)"
    assert got.earlier_runs == tuple(runs[:2])
    with pytest.raises(ValueError):
        flakes.combine([])


def test_an_expected_failure_that_passed_then_failed_is_flaky() -> None:
    passed = _pass(expected="fail")  # UNEXPECTED-PASS: a miss
    failed = _fail(expected="fail")  # met
    assert flakes.should_retry([passed], 1)
    assert flakes.combine([passed, failed]).verdict is Verdict.FLAKY


def test_when_to_retry() -> None:
    assert not flakes.should_retry([_fail()], 0)  # no retries asked
    assert flakes.should_retry([_fail()], 2)
    assert flakes.should_retry([_fail(), _fail()], 2)
    assert not flakes.should_retry([_fail(), _fail(), _fail()], 2)  # 1 + 2 runs done
    assert not flakes.should_retry([_pass()], 2)  # met
    assert not flakes.should_retry([], 2)
    for gone in (Verdict.CRASH, Verdict.KERNEL_HANG):  # no guest left to retry in
        assert not flakes.should_retry([TestResult("t", gone)], 2)
    # A subtest that missed is a miss of the run.
    sub = TestResult("t", Verdict.FAIL, subtests=(TestResult("t.a", Verdict.FAIL),))
    assert flakes.should_retry([sub], 1)


def test_attempt_labels_never_collide_with_a_test_name() -> None:
    assert flakes.attempt_label("smoke@2", 1) == "smoke@2"
    assert flakes.attempt_label("smoke@2", 3) == "smoke@2~retry2"
    assert config._unsafe_reason("smoke~retry1") is not None  # no test can be named so


# --- verdicts: FLAKY counts as met, shown everywhere -----------------------------------------


def _flaky(name: str = "t") -> TestResult:
    return flakes.combine([_fail(name), _pass(name)])


def test_flaky_meets_any_expectation_and_is_not_bad() -> None:
    for expected in ("", "pass", "fail"):
        assert verdicts.meets(Verdict.FLAKY, expected)
    assert verdicts.own_outcome(_flaky()) is Outcome.FLAKY
    assert not Outcome.FLAKY.bad and not Outcome.QUARANTINED.bad
    stage = verdicts.judge_tests((_pass("a"), _flaky("t")))
    assert stage.status is Status.PASS
    assert stage.reason == "2 tests as expected; 1 flaky: t 1:2"


def test_the_verdict_table_shows_fail_runs() -> None:
    all_failed = flakes.combine([_fail("u"), _fail("u"), _fail("u")])
    v = VariantResult("v", (), tests=(_flaky("t"), all_failed, _pass("w")))
    run = RunResult("m.yaml", "2026-12-06T10:00:00+00:00", "", (v,))
    cells = verdicts.verdict_table(run).rows[0].tests
    assert [c.text if c else "" for c in cells] == ["FLAKY 1:2", "FAIL 3:3", "PASS"]
    # Repeats: each run's misses over all attempts.
    v2 = VariantResult("v", (), tests=(_flaky("t"), _pass("t", repeat=2), _fail("t", repeat=3)))
    cell = verdicts.verdict_table(RunResult("m", "", "", (v2,))).rows[0].tests[0]
    assert cell is not None and cell.text == "FAIL 1/3 2:4"


def test_a_flaky_repeat_shows_beside_passing_ones() -> None:
    runs = (_flaky("t"), dataclasses.replace(_pass("t"), repeat=2))
    v = VariantResult("v", (), tests=runs)
    cell = verdicts.verdict_table(RunResult("m", "", "", (v,))).rows[0].tests[0]
    assert cell is not None and cell.outcome is Outcome.FLAKY and cell.detail == "1/2 1:3"


# --- quarantine ----------------------------------------------------------------------------


ENTRY = matrix.Quarantine("t", "known bug 123", date(2026, 12, 31))


def test_a_quarantine_holds_through_its_last_day() -> None:
    on = flakes.quarantine_on
    assert on([ENTRY], date(2026, 12, 31)) == (Quarantine("t", "known bug 123", "2026-12-31"),)
    assert on([ENTRY], date(2027, 1, 1))[0].expired
    assert flakes.run_day("2026-12-31T23:30:00.000-02:00") == date(2027, 1, 1)  # UTC
    assert flakes.run_day("2026-12-31T23:30:00") == date(2026, 12, 31)


def test_a_quarantined_miss_does_not_fail_the_stage() -> None:
    q = flakes.quarantine_on([ENTRY], date(2026, 12, 1))
    tests = flakes.mark((_fail("t"), _pass("u")), q)
    assert [t.quarantined for t in tests] == [True, False]
    assert verdicts.own_outcome(tests[0]) is Outcome.QUARANTINED
    stage = verdicts.judge_tests(tests)
    assert stage.status is Status.PASS
    assert stage.reason == "2 tests as expected; 1 quarantined: t: fail"
    # A quarantined test that passes is simply PASS.
    assert verdicts.own_outcome(flakes.mark((_pass("t"),), q)[0]) is Outcome.PASS


def test_an_expired_quarantine_counts_again() -> None:
    q = flakes.quarantine_on([ENTRY], date(2027, 1, 1))
    tests = flakes.mark((_fail("t"),), q)
    assert not tests[0].quarantined
    assert verdicts.judge_tests(tests).status is Status.FAIL
    assert flakes.describe(q[0]) == (
        "t: quarantine expired after 2026-12-31, the test counts again (was: known bug 123)"
    )


def test_a_quarantined_subtest_only_covers_itself() -> None:
    entry = matrix.Quarantine("t.lock", "races", date(2026, 12, 31))
    q = flakes.quarantine_on([entry], date(2026, 12, 1))
    subs = (TestResult("t.lock", Verdict.FAIL), TestResult("t.other", Verdict.PASS))
    (t,) = flakes.mark((TestResult("t", Verdict.FAIL, subtests=subs),), q)
    assert (t.quarantined, t.subtests[0].quarantined, t.subtests[1].quarantined) == (
        False, True, False,
    )  # fmt: skip
    assert verdicts.judge_tests((t,)).status is Status.PASS
    assert verdicts.outcome_of(t) is Outcome.QUARANTINED
    whole = flakes.quarantine_on([ENTRY], date(2026, 12, 1))
    (t2,) = flakes.mark((TestResult("t", Verdict.FAIL, subtests=subs),), whole)
    assert all(x.quarantined for x in verdicts.walk((t2,)))  # the test covers its subtests


# --- the matrix ----------------------------------------------------------------------------

MATRIX = """
    name: m
    tree: {{path: {tree}}}
    tests:
      - {{name: smoke, kind: ktap, command: /bin/true, retries: 2}}
      - {{name: other, kind: ktap, command: /bin/true}}
    quarantine:
      - test: smoke.sub
        reason: known bug
        expires: 2026-12-31
    variants:
      - name: a
"""


def _matrix(tmp_path: Path, body: str) -> Path:
    (tmp_path / "tree" / ".git").mkdir(parents=True, exist_ok=True)
    path = tmp_path / "matrix.yaml"
    path.write_text(textwrap.dedent(body.format(tree=tmp_path / "tree")).lstrip("\n"))
    return path


def test_retries_and_quarantine_are_read(tmp_path: Path) -> None:
    m = config.load(_matrix(tmp_path, MATRIX))
    assert [t.retries for t in m.tests] == [2, 0]
    assert m.quarantine == (matrix.Quarantine("smoke.sub", "known bug", date(2026, 12, 31)),)


@pytest.mark.parametrize(
    ("old", "new", "line", "key", "message"),
    [
        ("retries: 2", "retries: -1", 4, "tests[0].retries", "must be between 0 and 10, got -1"),
        ("retries: 2", "retries: many", 4, "tests[0].retries", "expected an integer"),
        ("test: smoke.sub", "test: nosuch", 7, "quarantine[0].test",
         "'nosuch' is not a declared test (declared tests: smoke, other)"),
        ("expires: 2026-12-31", "expires: 2026-13-01", 9, "quarantine[0].expires",
         "'2026-13-01' is not a date: write YYYY-MM-DD"),
        ("expires: 2026-12-31", "expires: next week", 9, "quarantine[0].expires", "is not a date"),
        ("        reason: known bug\n", "", 7, "quarantine[0].reason", "is required"),
        ("reason: known bug", "reason: ''", 8, "quarantine[0].reason", "must be one line"),
    ],
)  # fmt: skip
def test_bad_retries_and_quarantine_name_file_line_and_key(
    tmp_path: Path, old: str, new: str, line: int, key: str, message: str
) -> None:
    assert old in MATRIX
    path = _matrix(tmp_path, MATRIX.replace(old, new))
    with pytest.raises(MatrixError) as info:
        config.load(path)
    assert (info.value.line, info.value.key) == (line, key)
    assert message in info.value.message
    assert cli.main(["plan", str(path)]) == 2  # a clear error, exit 2


def test_retries_on_a_perf_test_is_refused(tmp_path: Path) -> None:
    body = MATRIX.replace("{{name: other, kind: ktap, command: /bin/true}}",
                          "{{name: other, kind: map_perf, retries: 1}}")  # fmt: skip
    with pytest.raises(MatrixError, match=r"perf test.*retries is for functional tests"):
        config.load(_matrix(tmp_path, body))


def test_a_duplicate_quarantine_entry_is_refused(tmp_path: Path) -> None:
    body = MATRIX.replace(
        "    variants:",
        "      - {{test: smoke.sub, reason: again, expires: 2027-01-01}}\n    variants:",
    )
    with pytest.raises(MatrixError, match=r"duplicate quarantined test name 'smoke\.sub'"):
        config.load(_matrix(tmp_path, body))


# --- results.json ----------------------------------------------------------------------------


def sample_run(
    expired: bool = False, started: str = "2026-12-06T10:00:00.000+00:00", stuck: bool = True
) -> RunResult:
    q = (
        Quarantine("broken", "bug 42", "2026-12-31", expired=expired),
        Quarantine("other", "old bug", "2026-01-01", expired=True),
    )
    broken = TestResult("broken", Verdict.FAIL, reason="exit status 3", quarantined=not expired)
    tests: tuple[TestResult, ...] = (
        _flaky("smoke"), flakes.combine([_fail("stuck")] * 3), broken, _pass("fine"),
    )  # fmt: skip
    if not stuck:
        tests = tuple(t for t in tests if t.name != "stuck")
    stage = verdicts.judge_tests(tests)
    stages = tuple(
        StageResult(s, Status.PASS) for s in (Stage.APPLY, Stage.KCONFIG, Stage.BUILD, Stage.BOOT)
    )
    v = VariantResult("upstream", (*stages, stage), tests=tests)
    return RunResult("/m/matrix.yaml", started, started, (v,), quarantine=q)


def test_results_keep_the_new_fields(tmp_path: Path) -> None:
    run = sample_run()
    path = tmp_path / "results.json"
    results.write(run, path)
    assert results.read(path) == run
    data = json.loads(path.read_text())
    smoke = data["variants"][0]["tests"][0]
    assert (smoke["verdict"], smoke["failures"], smoke["attempts"]) == ("flaky", 1, 2)
    assert smoke["earlier_runs"][0]["verdict"] == "fail"
    # Files without the fields read as one run each and no quarantine.
    for t in data["variants"][0]["tests"]:
        for k in ("attempts", "failures", "earlier_runs", "quarantined"):
            t.pop(k)
    data.pop("quarantine")
    path.write_text(json.dumps(data))
    old = results.read(path)
    assert old.variants[0].tests[0].attempts == 1 and old.quarantine == ()


@pytest.mark.parametrize(
    ("where", "value", "message"),
    [
        (("variants", 0, "tests", 0, "attempts"), "2", "expected an integer"),
        (("variants", 0, "tests", 0, "quarantined"), 1, "expected true or false"),
        (("variants", 0, "tests", 0, "earlier_runs"), {}, "expected a list"),
        (("quarantine", 0, "expired"), "no", "expected true or false"),
        (("quarantine", 0), {"test": "x"}, r"quarantine\[0\]\.reason: missing"),
    ],
)
def test_bad_types_in_the_new_fields_are_refused(
    tmp_path: Path, where: tuple[str | int, ...], value: object, message: str
) -> None:
    data = results.to_data(sample_run())
    node = data
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = value
    path = tmp_path / "results.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=message):
        results.read(path)


# --- the exit code -------------------------------------------------------------------------


def test_flaky_and_quarantined_keep_the_run_green_until_the_quarantine_expires() -> None:
    assert not sample_run().ok  # "stuck" missed all its runs: that counts
    assert sample_run(stuck=False).ok  # a flaky test and a quarantined miss: green
    expired = sample_run(expired=True, stuck=False)
    assert expired.variants[0].stages[-1].reason.startswith("1 unexpected: broken: fail")
    assert not expired.ok


# --- JUnit -----------------------------------------------------------------------------------


def test_junit_carries_reruns_as_surefire_does_and_stays_valid() -> None:
    xml = junit.render(sample_run())
    xmlschema.XMLSchema(str(XSD)).validate(xml)
    root = ET.fromstring(xml)
    cases = {c.get("name"): c for c in root.iter("testcase")}
    smoke = cases["smoke"]
    assert [e.tag for e in smoke if e.tag not in ("properties", "system-out")] == ["flakyFailure"]
    flaky = smoke.find("flakyFailure")
    assert flaky is not None and flaky.get("type") == "fail"
    assert flaky.get("message") == "exit status 1"
    props = {p.get("name"): p.get("value") for p in smoke.iter("property")}
    assert (props["attempts"], props["failures"]) == ("2", "1")
    stuck = cases["stuck"]
    assert [e.tag for e in stuck if e.tag != "properties"] == [
        "failure", "rerunFailure", "rerunFailure",
    ]  # fmt: skip
    broken = cases["broken"].find("skipped")
    assert broken is not None and broken.get("type") == "quarantined"
    assert "quarantined until 2026-12-31 (inclusive): bug 42" in (broken.get("message") or "")
    suite = {p.get("name"): p.get("value") for p in root.find("testsuite").iter("property")}  # type: ignore[union-attr]
    assert str(suite["quarantine.other"]).startswith("other: quarantine expired after 2026-01-01")
    # Counted: the flaky case passes, the quarantined one is skipped.
    assert root.find("testsuite").get("failures") == "1"  # type: ignore[union-attr]


def test_an_expired_quarantine_is_a_failure_again_in_junit() -> None:
    xml = junit.render(sample_run(expired=True))
    xmlschema.XMLSchema(str(XSD)).validate(xml)
    broken = {c.get("name"): c for c in ET.fromstring(xml).iter("testcase")}["broken"]
    assert broken.find("failure") is not None and broken.find("skipped") is None
    props = {p.get("name"): p.get("value") for p in broken.iter("property")}
    assert "quarantine expired" in str(props["quarantine"])


# --- history: the flake rate -------------------------------------------------------------------


def _day(i: int) -> str:
    return f"2026-12-{i:02d}T10:00:00.000+00:00"


def test_history_keeps_the_flake_rate(tmp_path: Path) -> None:
    db = tmp_path / "history.sqlite"
    for i in range(1, 5):
        run = sample_run(started=_day(i))
        if i > 1:  # smoke is flaky in the first run only
            v = run.variants[0]
            tests = (_pass("smoke"), *v.tests[1:])
            run = dataclasses.replace(run, variants=(dataclasses.replace(v, tests=tests),))
        history.record(db, run, "m")
    assert history.flake_rates(db, "m") == {"smoke": (1, 4)}
    assert history.flake_rates(db, "m", until=_day(1)) == {"smoke": (1, 1)}
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT test, attempts, failures FROM results WHERE top = 1 AND run_id = 1"
            " AND test NOT LIKE 'stage:%' ORDER BY rowid"
        ).fetchall()
    assert rows == [("smoke", 2, 1), ("stuck", 3, 3), ("broken", 1, 0), ("fine", 1, 0)]
    loaded = history.load_history(db, sample_run(started=_day(4)), "m")
    assert loaded is not None and loaded.flake_rates == {"smoke": (1, 4)}


def test_a_schema_2_history_is_upgraded_and_read(tmp_path: Path) -> None:
    db = tmp_path / "history.sqlite"
    with sqlite3.connect(db) as conn:
        for statement in history._SCHEMA:  # the tables as schema 2 made them
            conn.execute(statement)
        conn.execute("INSERT INTO runs VALUES (1, 'm', '/m', ?, ?, '', 1, '')", (_day(1),) * 2)
        conn.execute("INSERT INTO results VALUES (1, 'v', '', 'smoke', 1, 'pass', '', 'PASS')")
        conn.execute("PRAGMA user_version = 2")
    assert history.flake_rates(db, "m") == {}  # read-only: a schema 2 file reads as it is
    history.record(db, sample_run(started=_day(2)), "m")
    assert history.flake_rates(db, "m") == {"smoke": (1, 2)}
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 3
        old = conn.execute("SELECT attempts, failures FROM results WHERE run_id = 1").fetchone()
    assert old == (1, 0)


# --- text and HTML ------------------------------------------------------------------------------


def test_text_and_html_say_what_is_flaky_and_quarantined() -> None:
    run = sample_run()
    past = History(flake_rates={"smoke": (2, 10)})
    summary = text.render(run, history=past)
    assert "Flakes and quarantine" in summary
    assert "upstream: smoke: FLAKY 1:2 (flaky in 2 of 10 runs recorded)" in summary
    assert "broken: quarantined until 2026-12-31 (inclusive): bug 42" in summary
    assert "upstream: broken: fail, not counted (quarantined)" in summary
    assert "other: quarantine expired after 2026-01-01" in summary
    assert all(len(line) <= 72 for line in summary.splitlines())
    page = html.render(run, history=past)
    assert 'class="o o-flaky' in page and ">FLAKY <small>1:2</small>" in page
    assert "QUARANTINED" in page and "bug 42" in page
    assert '<td class="num">20%</td>' in page  # the flake rate from the history
    assert "run 1 of 2: <b>fail</b> exit status 1" in page
