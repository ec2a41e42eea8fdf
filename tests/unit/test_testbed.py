"""The TEST stage's verdict over test results and expectations."""

from __future__ import annotations

from orchestrator.results import Status, TestResult, Verdict
from orchestrator.vm.testbed import judge_tests


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


def test_perf_rounds_interleave_and_skip_functional_tests() -> None:
    from orchestrator.matrix import Test
    from orchestrator.vm.testbed import functional, perf_round, perf_rounds

    smoke = Test(name="smoke", kind="ktap", command="/x", repeats=2)
    perf = Test(name="map_perf", kind="map_perf", command="/y", repeats=3)
    short = Test(name="quick", kind="map_perf", command="/z", repeats=1)
    tests = (smoke, perf, short)
    assert [(p.test.name, p.repeat) for p in functional(tests)] == [("smoke", 1), ("smoke", 2)]
    assert [p.label for p in functional(tests)] == ["smoke@1", "smoke@2"]
    assert perf_rounds(tests) == 3
    warmup = perf_round(tests, 0)
    assert [(p.test.name, p.warmup) for p in warmup] == [("map_perf", True), ("quick", True)]
    assert [p.label for p in warmup] == ["map_perf@warmup", "quick@warmup"]
    first = perf_round(tests, 1, batch=2)
    assert [(p.test.name, p.round, p.batch) for p in first] == [("map_perf", 1, 2), ("quick", 1, 2)]
    assert [p.label for p in perf_round(tests, 3)] == ["map_perf@3"]


def test_a_run_carries_its_identity_as_fields() -> None:
    from orchestrator.matrix import Test
    from orchestrator.vm.testbed import Pending

    pending = Pending(Test(name="map_perf", kind="map_perf"), round=4, batch=2)
    result = pending.result(Verdict.ERROR, "not run")
    assert (result.name, result.round, result.batch, result.repeat) == ("map_perf", 4, 2, 0)
    assert result.label == "map_perf@4" and not result.warmup
