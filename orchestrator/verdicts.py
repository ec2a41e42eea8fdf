"""What a run's results mean: expectations, outcomes, the verdict table, the baseline.

The one model every reader shares.  The runner asks it how a variant's tests
went against the matrix's expectations (the TEST stage) and which variant is
the baseline; renderers, the history and the A/A control read it to say the
same thing the same way.  It imports no renderer and no stage.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from orchestrator.results import (
    RunResult,
    Stage,
    StageResult,
    Status,
    TestResult,
    VariantResult,
    Verdict,
)

# --- expectations and the TEST stage ------------------------------------------


def choose_baseline(variants: Sequence[str], chosen: str = "") -> str:
    """The variant perf is compared with: the matrix's choice if it is among
    these variants, else the first; "" when there are none.  The one rule."""
    if chosen in variants:
        return chosen
    return variants[0] if variants else ""


def baseline_of(run: RunResult) -> str:
    """The run's baseline among the variants that ran (choose_baseline's rule)."""
    return choose_baseline([v.name for v in run.variants], run.baseline)


def meets(verdict: Verdict, expected: str) -> bool:
    """Whether a verdict is what the matrix declared ("" = pass or skip)."""
    if verdict is Verdict.FLAKY:
        # It missed, then met the expectation on a retry (flakes.py): it counts as
        # met, so it never fails the TEST stage by itself; every report shows it.
        return True
    if not expected:
        return verdict in (Verdict.PASS, Verdict.SKIP)
    if expected == "fail":
        # The test caught the bug, whichever way the kernel failed.
        return verdict in (Verdict.FAIL, Verdict.CRASH, Verdict.KERNEL_HANG, Verdict.TIMEOUT)
    return str(verdict.value) == expected


def with_expectations(
    result: TestResult,
    expect: Mapping[str, str],
    key: str = "",
    about: Mapping[str, str] | None = None,
) -> TestResult:
    """Attach the matrix's declared outcome to the test and its subtests.

    `expect` is keyed by test or test.subtest (the variant's `expect:`); `about`
    by the subtest's name within its test (the test's `about:`), and says what
    that subtest shows.
    """
    key = key or result.name
    about = about or {}
    subs = tuple(
        with_expectations(sub, expect, key + sub.name[len(result.name) :], about)
        for sub in result.subtests
    )
    # A test name has no dot: what follows the first one is the subtest's own name.
    _test, dot, subtest = key.partition(".")
    return dataclasses.replace(
        result,
        expected=expect.get(key, ""),
        about=about.get(subtest, "") if dot else result.about,
        subtests=subs,
    )


def judge_tests(tests: tuple[TestResult, ...]) -> StageResult:
    """The TEST stage: PASS when every test and subtest is what the matrix expects.

    A FLAKY test meets its expectation; a quarantined one that misses does not
    count (flakes.py).  Both are named in the stage's reason.
    """
    if not tests:
        return StageResult(Stage.TEST, Status.PASS, "no tests")
    every = misses(tests)
    counted = [t for t in every if not t.quarantined]
    notes = _notes(tests, [t for t in every if t.quarantined])
    if not counted:
        return StageResult(Stage.TEST, Status.PASS, f"{len(tests)} tests as expected{notes}")
    shown = ", ".join(miss_text(t) for t in counted[:5])
    return StageResult(Stage.TEST, Status.FAIL, f"{len(counted)} unexpected: {shown}{notes}")


def misses(tests: Iterable[TestResult]) -> list[TestResult]:
    """The tests and subtests that are not what the matrix expects, quarantined or not."""
    return [t for t in _flatten(tuple(tests)) if not meets(t.verdict, t.expected)]


def _notes(tests: tuple[TestResult, ...], quarantined: list[TestResult]) -> str:
    flaky = [t for t in tests if t.verdict is Verdict.FLAKY]
    notes = []
    if flaky:
        shown = ", ".join(f"{t.label} {t.failures}:{t.attempts}" for t in flaky[:5])
        notes.append(f"{len(flaky)} flaky: {shown}")
    if quarantined:
        shown = ", ".join(miss_text(t) for t in quarantined[:5])
        notes.append(f"{len(quarantined)} quarantined: {shown}")
    return "".join(f"; {n}" for n in notes)


def miss_text(t: TestResult) -> str:
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


# --- outcomes: a stage or a test as one word ----------------------------------

# The stages shown as columns; TEST is shown through its tests.
STAGE_COLUMNS = (Stage.APPLY, Stage.KCONFIG, Stage.BUILD, Stage.BOOT)

# Verdicts that end a test on their own, whatever its subtests say.
_OWN_FAILURES = (Verdict.ERROR, Verdict.TIMEOUT, Verdict.KERNEL_HANG, Verdict.CRASH)


class Outcome(enum.Enum):
    """How one cell reads: a stage's status or a test's verdict against its expectation.

    Declared worst first: when outcomes are combined (repeats, subtests) the
    earliest one wins.
    """

    APPLY_FAIL = "APPLY-FAIL"
    KCONFIG_FAIL = "KCONFIG-FAIL"
    BUILD_FAIL = "BUILD-FAIL"
    BOOT_FAIL = "BOOT-FAIL"
    CRASH = "CRASH"
    KERNEL_HANG = "KERNEL-HANG"
    TIMEOUT = "TIMEOUT"
    ERROR = "ERROR"
    FAIL = "FAIL"
    UNEXPECTED_PASS = "UNEXPECTED-PASS"
    UNEXPECTED_SKIP = "UNEXPECTED-SKIP"
    # Not bad (they do not fail the run) but shown before the good ones:
    # a quarantined test that missed, a test that met its expectation on a retry.
    QUARANTINED = "QUARANTINED"
    FLAKY = "FLAKY"
    XFAIL = "XFAIL (expected)"
    PASS = "PASS"
    SKIP = "SKIP"
    NOT_RUN = "NOT-RUN"

    @property
    def word(self) -> str:
        return self.value

    @property
    def bad(self) -> bool:
        return self not in _GOOD

    @property
    def css(self) -> str:
        return "o-" + self.name.lower().replace("_", "-")


# Outcomes that do not fail a run, the most telling first (outcome_of picks in this order).
_GOOD = (
    Outcome.QUARANTINED,
    Outcome.FLAKY,
    Outcome.XFAIL,
    Outcome.PASS,
    Outcome.SKIP,
    Outcome.NOT_RUN,
)
_RANK = {o: i for i, o in enumerate(Outcome)}
_STAGE_FAIL = {
    Stage.APPLY: Outcome.APPLY_FAIL,
    Stage.KCONFIG: Outcome.KCONFIG_FAIL,
    Stage.BUILD: Outcome.BUILD_FAIL,
    Stage.BOOT: Outcome.BOOT_FAIL,
    Stage.TEST: Outcome.FAIL,
}
_VERDICT = {
    Verdict.FAIL: Outcome.FAIL,
    Verdict.ERROR: Outcome.ERROR,
    Verdict.TIMEOUT: Outcome.TIMEOUT,
    Verdict.KERNEL_HANG: Outcome.KERNEL_HANG,
    Verdict.CRASH: Outcome.CRASH,
}


def worst(outcomes: Iterable[Outcome]) -> Outcome | None:
    return min(outcomes, key=_RANK.__getitem__, default=None)


def verdict_outcome(verdict: Verdict, expected: str) -> Outcome:
    if meets(verdict, expected):
        if verdict is Verdict.FLAKY:
            return Outcome.FLAKY
        if verdict is Verdict.PASS:
            return Outcome.PASS
        return Outcome.SKIP if verdict is Verdict.SKIP else Outcome.XFAIL
    if verdict is Verdict.PASS:
        return Outcome.UNEXPECTED_PASS
    if verdict is Verdict.SKIP:
        return Outcome.UNEXPECTED_SKIP
    return _VERDICT[verdict]


def stage_outcome(stage: StageResult) -> Outcome:
    if stage.status is Status.PASS:
        return Outcome.PASS
    if stage.status is Status.SKIPPED:
        return Outcome.NOT_RUN
    if stage.status is Status.ERROR:
        return Outcome.ERROR
    return _STAGE_FAIL[stage.stage]


def boot_failed(variant: VariantResult) -> bool:
    boot = variant.stage(Stage.BOOT)
    return boot is not None and boot.status is not Status.PASS


def not_reached(variant: VariantResult) -> tuple[Stage, ...]:
    """The stages with no result at all: the run stopped (or was told to stop) before them."""
    return tuple(s for s in Stage if variant.stage(s) is None)


def own_outcome(test: TestResult, *, not_run: bool = False) -> Outcome:
    """The test's own cell, without its subtests.

    A parent that failed because a subtest failed is judged through its
    subtests (as the test stage does), so an expected subtest failure does
    not turn its parent red.  `not_run`: the variant's boot failed, so an
    ERROR test without logs never started.
    """
    if not_run and test.verdict is Verdict.ERROR and not test.logs:
        return Outcome.NOT_RUN
    outcome = verdict_outcome(test.verdict, test.expected)
    if outcome is Outcome.FAIL and test.verdict not in _OWN_FAILURES:
        explained = any(s.verdict not in (Verdict.PASS, Verdict.SKIP) for s in walk(test.subtests))
        if explained:
            return Outcome.PASS
    if outcome.bad and test.quarantined:
        return Outcome.QUARANTINED  # it missed, but the matrix's quarantine says not to count it
    return outcome


def outcome_of(test: TestResult, *, not_run: bool = False) -> Outcome:
    """A test with its subtests, as one word: the worst of them.

    Among the good outcomes a quarantined miss and a flake come first (they
    must stay visible), XFAIL beats PASS (it passes only because a failure
    was declared) and PASS beats SKIP (one skipped subtest does not make a
    passing test a skip).
    """
    outcomes = [own_outcome(t, not_run=not_run) for t in (test, *walk(test.subtests))]
    good = [o for o in outcomes if not o.bad]
    bad = [o for o in outcomes if o.bad]
    if bad:
        return worst(bad) or Outcome.FAIL
    return worst(good) or Outcome.NOT_RUN


def walk(tests: Iterable[TestResult]) -> Iterator[TestResult]:
    """Every test and subtest, depth first."""
    for t in tests:
        yield t
        yield from walk(t.subtests)


def run_label(test: TestResult, sub: TestResult) -> str:
    """The label of a subtest (or of the test itself) in this run of `test`:
    map_perf@3.lookup.  Subtests carry no run of their own; their names
    extend their test's (map_perf.lookup)."""
    return test.label + sub.name[len(test.name) :]


def labelled(test: TestResult) -> Iterator[tuple[str, TestResult]]:
    """A test and its subtests, depth first, each with its run_label."""
    for t in walk((test,)):
        yield run_label(test, t), t


def first_reason(test: TestResult) -> str:
    """The test's reason, or that of its first subtest that has one."""
    return next((t.reason for t in walk((test,)) if t.reason), "")


def build_kind(variant: VariantResult) -> str:
    b = variant.build
    if b is None:
        return ""
    if b.shared_with:
        return f"shared with {b.shared_with}"
    return "cached" if b.cached else "built"


# --- the verdict table ----------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    outcome: Outcome
    detail: str = ""  # e.g. "2/5" when repeats disagree, "cached" for a build
    reason: str = ""

    @property
    def text(self) -> str:
        return f"{self.outcome.word} {self.detail}".strip()


@dataclass(frozen=True)
class Row:
    variant: VariantResult
    stages: tuple[Cell | None, ...]  # one per STAGE_COLUMNS entry; None: no such stage
    tests: tuple[Cell | None, ...]  # one per Table.tests entry; None: not in this variant


@dataclass(frozen=True)
class Table:
    """Variants by (stages, tests): the verdict table every format starts with."""

    tests: tuple[str, ...]  # test names (every run of a test shares its column), first seen first
    rows: tuple[Row, ...]


def verdict_table(run: RunResult) -> Table:
    names = list(dict.fromkeys(t.name for v in run.variants for t in v.tests))
    rows = []
    for v in run.variants:
        stages = tuple(stage_cell(v, s) for s in STAGE_COLUMNS)
        tests = tuple(_test_cell(v, name) for name in names)
        rows.append(Row(v, stages, tests))
    return Table(tuple(names), tuple(rows))


def stage_cell(variant: VariantResult, stage: Stage) -> Cell | None:
    result = variant.stage(stage)
    if result is None:
        return None
    detail = ""
    if stage is Stage.BUILD and result.status is Status.PASS and variant.build is not None:
        detail = build_kind(variant).split()[0]  # "shared"; the reason names the variant
    if stage is Stage.KCONFIG and result.status is Status.PASS and variant.kconfig:
        detail = "warn"  # mismatches the matrix chose to tolerate
    return Cell(stage_outcome(result), detail, result.reason)


def _test_cell(variant: VariantResult, name: str) -> Cell | None:
    """Every run of one test (repeats, perf rounds) in one cell: the worst of them."""
    runs = [t for t in variant.tests if t.name == name]
    if not runs:
        return None
    skipped_boot = boot_failed(variant)
    outcomes = [outcome_of(t, not_run=skipped_boot) for t in runs]
    shown = worst(outcomes) or Outcome.NOT_RUN
    detail = ""
    if len(runs) > 1:
        same = outcomes.count(shown)
        detail = f"x{len(runs)}" if same == len(runs) else f"{same}/{len(runs)}"
    first = next(t for t, o in zip(runs, outcomes, strict=True) if o is shown)
    detail = f"{detail} {fail_runs(runs)}".strip()
    return Cell(shown, detail, first_reason(first))


def fail_runs(runs: Iterable[TestResult]) -> str:
    """fail:runs over the runs of a test: "1:2" (FLAKY), "3:3" (missed every retry);
    "" when none of them was retried (`retries:`, flakes.py)."""
    runs = list(runs)
    if all(t.attempts <= 1 for t in runs):
        return ""
    # combine() counts a retried run's misses; a run done once missed or did not.
    failures = sum(t.failures if t.attempts > 1 else int(bool(misses((t,)))) for t in runs)
    return f"{failures}:{sum(t.attempts for t in runs)}"
