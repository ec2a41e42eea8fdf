"""The TEST stage's verdict over test results and expectations."""

from __future__ import annotations

from orchestrator.results import Status, TestResult, Verdict
from orchestrator.verdicts import choose_baseline, judge_tests


def sub(name: str, verdict: Verdict, expected: str = "") -> TestResult:
    return TestResult(name, verdict, expected=expected)


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


def test_no_tests() -> None:
    assert judge_tests(()).status is Status.PASS


def test_one_baseline_rule() -> None:
    assert choose_baseline(["a", "b"], "b") == "b"
    assert choose_baseline(["a", "b"], "") == "a"
    assert choose_baseline(["a", "b"], "not-run") == "a"
    assert choose_baseline([], "x") == ""
