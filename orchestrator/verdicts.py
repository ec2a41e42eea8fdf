"""What a run's results mean: expectations, verdicts and the baseline.

The one model every reader shares.  The runner asks it how a variant's tests
went against the matrix's expectations (the TEST stage) and which variant is
the baseline; renderers, the history and the A/A control read it to say the
same thing the same way.  It imports no renderer and no stage.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from orchestrator.results import Stage, StageResult, Status, TestResult, Verdict


def choose_baseline(variants: Sequence[str], chosen: str = "") -> str:
    """The variant perf is compared with: the matrix's choice if it is among
    these variants, else the first; "" when there are none.  The one rule."""
    if chosen in variants:
        return chosen
    return variants[0] if variants else ""


def meets(verdict: Verdict, expected: str) -> bool:
    """Whether a verdict is what the matrix declared ("" = pass or skip)."""
    if not expected:
        return verdict in (Verdict.PASS, Verdict.SKIP)
    if expected == "fail":
        # The test caught the bug, whichever way the kernel failed.
        return verdict in (Verdict.FAIL, Verdict.CRASH, Verdict.KERNEL_HANG, Verdict.TIMEOUT)
    return verdict.value == expected


def with_expectations(result: TestResult, expect: Mapping[str, str], key: str = "") -> TestResult:
    """Attach the matrix's declared outcome to the test and its subtests."""
    key = key or result.name
    subs = tuple(
        with_expectations(sub, expect, key + sub.name[len(result.name) :])
        for sub in result.subtests
    )
    return dataclasses.replace(result, expected=expect.get(key, ""), subtests=subs)


def judge_tests(tests: tuple[TestResult, ...]) -> StageResult:
    """The TEST stage: PASS when every test and subtest is what the matrix expects."""
    if not tests:
        return StageResult(Stage.TEST, Status.PASS, "no tests")
    misses = [t for t in _flatten(tests) if not meets(t.verdict, t.expected)]
    if not misses:
        return StageResult(Stage.TEST, Status.PASS, f"{len(tests)} tests as expected")
    shown = ", ".join(_miss(t) for t in misses[:5])
    return StageResult(Stage.TEST, Status.FAIL, f"{len(misses)} unexpected: {shown}")


def _miss(t: TestResult) -> str:
    expected = f" (expected {t.expected})" if t.expected else ""
    return f"{t.label}: {t.verdict.value}{expected}"


def _flatten(tests: tuple[TestResult, ...]) -> list[TestResult]:
    out: list[TestResult] = []
    for t in tests:
        # A parent with subtests is judged through them, unless its verdict
        # is its own (a splat, an exit status, a missing plan entry).
        if not t.subtests or t.verdict is not _derived(t.subtests):
            out.append(t)
        out += _flatten(t.subtests)
    return out


def _derived(subtests: tuple[TestResult, ...]) -> Verdict:
    """The verdict a parent gets from its subtests alone (as ktap.parse rules)."""
    verdicts = {s.verdict for s in subtests}
    if verdicts - {Verdict.PASS, Verdict.SKIP}:
        return Verdict.FAIL
    return Verdict.PASS if Verdict.PASS in verdicts else Verdict.SKIP
