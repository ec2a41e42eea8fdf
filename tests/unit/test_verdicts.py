"""What results mean: the TEST stage, outcomes, the verdict table and the baseline."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator import results, verdicts
from orchestrator.results import (
    RunResult,
    Stage,
    StageResult,
    Status,
    TestResult,
    VariantResult,
    Verdict,
)
from orchestrator.verdicts import (
    Outcome,
    baseline_of,
    choose_baseline,
    judge_tests,
    labelled,
    not_reached,
    outcome_of,
    own_outcome,
    verdict_table,
)
from tests.unit.test_report_junit import _stages, sample_run


def sub(name: str, verdict: Verdict, expected: str = "") -> TestResult:
    return TestResult(name, verdict, expected=expected)


# --- the TEST stage ---------------------------------------------------------------


def test_expected_subtest_failure_passes_the_stage() -> None:
    parent = TestResult(
        "htab_reuse",
        Verdict.FAIL,
        subtests=(sub("htab_reuse.lock", Verdict.FAIL, "fail"), sub("htab_reuse.id", Verdict.PASS)),
    )
    assert judge_tests((parent,)).status is Status.PASS


def test_parent_failing_on_its_own_fails_the_stage() -> None:
    # All subtests passed, but a kernel warning (or an exit status) failed the program.
    parent = TestResult(
        "smoke", Verdict.FAIL, reason="kernel warning", subtests=(sub("smoke.a", Verdict.PASS),)
    )
    stage = judge_tests((parent,))
    assert stage.status is Status.FAIL and "smoke: fail" in stage.reason


def test_unexpected_pass_fails_the_stage() -> None:
    stage = judge_tests((sub("t", Verdict.PASS, "fail"),))
    assert stage.status is Status.FAIL and "expected fail" in stage.reason


def test_a_miss_names_the_run_it_was() -> None:
    stage = judge_tests((TestResult("smoke", Verdict.FAIL, repeat=2),))
    assert "smoke@2: fail" in stage.reason


def test_no_tests() -> None:
    assert judge_tests(()).status is Status.PASS


def _htab() -> TestResult:
    nest = TestResult(
        "htab_reuse.nest", Verdict.PASS, subtests=(sub("htab_reuse.nest.deep", Verdict.PASS),)
    )
    return TestResult(
        "htab_reuse",
        Verdict.FAIL,
        subtests=(
            sub("htab_reuse.lock", Verdict.FAIL),
            nest,
            sub("htab_reuse.other", Verdict.PASS),
        ),
        repeat=2,
    )


def test_about_goes_to_the_subtests_it_names() -> None:
    about = {"lock": "problem 1", "nest.deep": "deeper", "htab_reuse": "names no subtest"}
    out = verdicts.with_expectations(_htab(), {"htab_reuse.lock": "fail"}, about=about)
    lock, nest, other = out.subtests
    assert (lock.about, lock.expected) == ("problem 1", "fail")
    assert (nest.about, nest.subtests[0].about) == ("", "deeper")
    assert other.about == "" and out.about == ""  # the test itself is no subtest
    # Expectations work as before, with or without an about.
    plain = verdicts.with_expectations(_htab(), {"htab_reuse.lock": "fail"})
    assert plain.subtests[0].expected == "fail"
    assert all(t.about == "" for t in verdicts.walk((plain,)))
    assert judge_tests((out,)).status is Status.PASS


def test_about_is_kept_in_results_and_optional_in_old_files() -> None:
    about = {"lock": "problem 1: <b>lock</b>"}
    test = verdicts.with_expectations(_htab(), {}, about=about)
    data = results.to_data(test)
    assert data["subtests"][0]["about"] == "problem 1: <b>lock</b>"
    assert results.from_data(TestResult, data) == test
    for t in (data, *data["subtests"]):  # a schema 2 file written before `about`
        del t["about"]
    assert results.from_data(TestResult, data).subtests[0].about == ""
    assert results.SCHEMA_VERSION == 2


# --- the baseline -------------------------------------------------------------------


def test_one_baseline_rule() -> None:
    assert choose_baseline(["a", "b"], "b") == "b"
    assert choose_baseline(["a", "b"], "") == "a"
    assert choose_baseline(["a", "b"], "not-run") == "a"
    assert choose_baseline([], "x") == ""


def _variant(name: str, *statuses: Status, tests: tuple[TestResult, ...] = ()) -> VariantResult:
    return VariantResult(name, _stages(*statuses), tests=tests)


def test_the_runs_baseline_follows_the_one_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    run = RunResult("m", "", "", (_variant("a"), _variant("b")), baseline="b")
    assert baseline_of(run) == "b"
    run_elsewhere = RunResult("m", "", "", (_variant("a"),), baseline="b")  # b did not run
    assert baseline_of(run_elsewhere) == "a"
    assert baseline_of(RunResult("m", "", "", ())) == ""
    asked: list[tuple[list[str], str]] = []

    def rule(variants: list[str], chosen: str = "") -> str:
        asked.append((list(variants), chosen))
        return "ruled"

    monkeypatch.setattr(verdicts, "choose_baseline", rule)
    assert baseline_of(run) == "ruled" and asked == [(["a", "b"], "b")]


# --- outcomes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("verdict", "expected", "outcome"),
    [
        (Verdict.PASS, "", Outcome.PASS),
        (Verdict.SKIP, "", Outcome.SKIP),
        (Verdict.FAIL, "fail", Outcome.XFAIL),
        (Verdict.CRASH, "fail", Outcome.XFAIL),
        (Verdict.TIMEOUT, "timeout", Outcome.XFAIL),
        (Verdict.PASS, "fail", Outcome.UNEXPECTED_PASS),
        (Verdict.SKIP, "fail", Outcome.UNEXPECTED_SKIP),
        (Verdict.FAIL, "crash", Outcome.FAIL),
        (Verdict.KERNEL_HANG, "", Outcome.KERNEL_HANG),
        (Verdict.ERROR, "", Outcome.ERROR),
    ],
)
def test_outcome_of_a_verdict(verdict: Verdict, expected: str, outcome: Outcome) -> None:
    assert own_outcome(TestResult("t", verdict, expected=expected)) is outcome


def test_parents_are_judged_through_their_subtests() -> None:
    xfail = TestResult("t.a", Verdict.FAIL, expected="fail")
    ok = TestResult("t.b", Verdict.PASS)
    parent = TestResult("t", Verdict.FAIL, subtests=(ok, xfail))
    assert own_outcome(parent) is Outcome.PASS and outcome_of(parent) is Outcome.XFAIL
    # A parent failing with every subtest passing failed on its own (a splat, an exit status).
    alone = TestResult("t", Verdict.FAIL, reason="kernel warning", subtests=(ok,))
    assert outcome_of(alone) is Outcome.FAIL
    crashed = TestResult("t", Verdict.CRASH, subtests=(xfail,))
    assert outcome_of(crashed) is Outcome.CRASH
    skipped_one = TestResult("t", Verdict.PASS, subtests=(ok, TestResult("t.c", Verdict.SKIP)))
    assert outcome_of(skipped_one) is Outcome.PASS


def test_subtests_are_labelled_with_their_tests_run() -> None:
    inner = TestResult("map_perf.lookup.hot", Verdict.PASS)
    lookup = TestResult("map_perf.lookup", Verdict.PASS, subtests=(inner,))
    test = TestResult("map_perf", Verdict.PASS, subtests=(lookup,), round=3, batch=2)
    assert [name for name, _ in labelled(test)] == [
        "map_perf@3", "map_perf@3.lookup", "map_perf@3.lookup.hot",
    ]  # fmt: skip
    once = TestResult("smoke", Verdict.PASS, subtests=(TestResult("smoke.a", Verdict.PASS),))
    assert [name for name, _ in labelled(once)] == ["smoke", "smoke.a"]
    assert verdicts.run_label(TestResult("map_perf", Verdict.PASS, repeat=2), lookup) == (
        "map_perf@2.lookup"
    )


# --- the verdict table ------------------------------------------------------------------


def test_tests_after_a_failed_boot_did_not_run(tmp_path: Path) -> None:
    row = verdict_table(sample_run(tmp_path)).rows[-1]
    assert row.variant.name == "no-boot"
    assert [c.outcome for c in row.stages if c] == [
        Outcome.PASS, Outcome.PASS, Outcome.PASS, Outcome.BOOT_FAIL,
    ]  # fmt: skip
    smoke = row.tests[0]
    assert smoke is not None and smoke.outcome is Outcome.NOT_RUN


def test_repeats_share_a_column() -> None:
    runs = tuple(
        TestResult("p", v, repeat=i) for i, v in enumerate([Verdict.PASS, Verdict.FAIL], 1)
    )
    table = verdict_table(RunResult("m", "", "", (_variant("v", *[Status.PASS] * 5, tests=runs),)))
    assert table.tests == ("p",)
    cell = table.rows[0].tests[0]
    assert cell is not None and cell.text == "FAIL 1/2"


def test_perf_rounds_of_every_batch_share_a_column() -> None:
    runs = tuple(
        TestResult("map_perf", Verdict.PASS, round=r, batch=b) for b in (1, 2) for r in (1, 2, 3)
    )
    table = verdict_table(RunResult("m", "", "", (_variant("v", *[Status.PASS] * 5, tests=runs),)))
    cell = table.rows[0].tests[0]
    assert table.tests == ("map_perf",) and cell is not None and cell.text == "PASS x6"


def test_a_partial_run_has_cells_only_for_what_happened() -> None:
    """An interrupted run: one variant only applied, one built, one ran a test."""
    smoke = TestResult("smoke", Verdict.PASS)
    run = RunResult(
        "m", "s", "", incomplete="interrupted (SIGTERM) after 7 of 20 units",
        variants=(
            _variant("applied", Status.PASS),
            _variant("built", Status.PASS, Status.PASS, Status.PASS),
            _variant("tested", *[Status.PASS] * 4, tests=(smoke,)),
            VariantResult("nothing", ()),
        ),
    )  # fmt: skip
    table = verdict_table(run)
    assert table.tests == ("smoke",)
    cells = {r.variant.name: ([c and c.outcome for c in r.stages], r.tests) for r in table.rows}
    assert cells["applied"] == ([Outcome.PASS, None, None, None], (None,))
    assert cells["built"] == ([Outcome.PASS] * 3 + [None], (None,))
    stages, tests = cells["tested"]
    assert stages == [Outcome.PASS] * 4 and tests[0] is not None
    assert tests[0].outcome is Outcome.PASS
    assert cells["nothing"] == ([None] * 4, (None,))
    assert not_reached(run.variants[0]) == (Stage.KCONFIG, Stage.BUILD, Stage.BOOT, Stage.TEST)
    assert not_reached(run.variants[2]) == (Stage.TEST,)
    done = VariantResult("done", tuple(StageResult(s, Status.PASS) for s in Stage))
    assert not_reached(done) == ()
