"""Flakes and quarantine: what a retried test is, and which tests do not count (pure).

`retries: N` on a functional test reruns, in the same guest, a run that
missed its expectation (verdicts.misses: the rule the TEST stage applies),
up to N more times.  The runs fold into one TestResult (`combine`):

* met on the first run: as before, attempts 1;
* missed, then met on a retry: Verdict.FLAKY, with `failures` of `attempts`
  runs missed (shown as fail:runs, "1:2"), the earlier runs kept in
  `earlier_runs` (their reasons, logs and splats);
* missed every run: the last run's verdict (FAIL, TIMEOUT, ...) with
  failures == attempts.

A FLAKY test meets any expectation (it met it on a retry), so it does not
fail the TEST stage and does not change the exit code by itself; every
report shows it (the verdict table, JUnit's <flakyFailure>, the history's
flake rate).  A run that took the guest down (CRASH, KERNEL-HANG) is not
retried: the next test needs a fresh boot, and a crash is never a flake.

The matrix's `quarantine:` names known-bad tests with a reason and the last
day it holds.  The run decides once, from its start date (UTC), which
entries still hold (`quarantine_on`); a quarantined test or subtest that
misses its expectation is QUARANTINED, not FAIL, and does not fail the
TEST stage.  After the expiry date the test counts again, and the reports
say the quarantine expired.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime

from orchestrator import matrix, verdicts
from orchestrator.results import Quarantine, RunResult, TestResult, VariantResult, Verdict

# Verdicts that leave no guest to retry in (the next test gets a fresh boot).
_GUEST_GONE = (Verdict.CRASH, Verdict.KERNEL_HANG)


# --- retries -----------------------------------------------------------------------


def should_retry(attempts: Sequence[TestResult], retries: int) -> bool:
    """Whether to run the test again: the last run missed, the guest lives, retries remain."""
    if not attempts or len(attempts) > retries:
        return False
    last = attempts[-1]
    return last.verdict not in _GUEST_GONE and verdicts.misses((last,)) != []


def attempt_label(label: str, attempt: int) -> str:
    """The label of a test's nth run (1-based): htab_reuse, htab_reuse~retry1, ...

    `~` is in no test name (config's safe names), so a retry's log files and
    console markers never collide with another test's.
    """
    return label if attempt <= 1 else f"{label}~retry{attempt - 1}"


def combine(attempts: Sequence[TestResult]) -> TestResult:
    """The runs of one test (expectations attached, in order) as one result."""
    if not attempts:
        raise ValueError("combine needs at least one run")
    last = attempts[-1]
    n = len(attempts)
    if n == 1:
        return last
    earlier = tuple(attempts[:-1])
    duration = round(sum(a.duration for a in attempts), 3)
    if verdicts.misses((last,)):
        return dataclasses.replace(
            last,
            duration=duration,
            reason=_joined(last.reason or last.verdict.value, f"missed all {n} runs"),
            attempts=n,
            failures=n,
            earlier_runs=earlier,
        )
    first = verdicts.misses(earlier[:1])
    why = verdicts.miss_text(first[0]) if first else earlier[0].verdict.value
    return dataclasses.replace(
        last,
        verdict=Verdict.FLAKY,
        duration=duration,
        reason=f"missed {n - 1} of {n} runs, then met its expectation; first: {why}",
        attempts=n,
        failures=n - 1,
        earlier_runs=earlier,
    )


def _joined(reason: str, note: str) -> str:
    return f"{reason} ({note})"


def flaky(variant: VariantResult) -> list[TestResult]:
    """The variant's FLAKY test runs, in order."""
    return [t for t in variant.tests if t.verdict is Verdict.FLAKY]


# --- quarantine ----------------------------------------------------------------------


def run_day(started: str) -> date:
    """The UTC date a run started on (RunResult.started is an ISO time with an offset)."""
    when = datetime.fromisoformat(started)
    if when.tzinfo is not None:
        when = when.astimezone(UTC)
    return when.date()


def quarantine_on(entries: Sequence[matrix.Quarantine], day: date) -> tuple[Quarantine, ...]:
    """The matrix's entries as a run on `day` sees them: expired after their last day."""
    return tuple(
        Quarantine(e.test, e.reason, e.expires.isoformat(), expired=day > e.expires)
        for e in entries
    )


def holding(quarantine: Iterable[Quarantine]) -> dict[str, Quarantine]:
    """The entries that still hold, by test or test.subtest."""
    return {q.test: q for q in quarantine if not q.expired}


def mark(tests: tuple[TestResult, ...], quarantine: Iterable[Quarantine]) -> tuple[TestResult, ...]:
    """The tests with `quarantined` set where an entry that holds names them.

    An entry naming a test covers its subtests; one naming test.subtest
    covers that subtest (and its own subtests) only.
    """
    held = holding(quarantine)
    if not held:
        return tests
    return tuple(_mark(t, held, t.name, False) for t in tests)


def _mark(test: TestResult, held: dict[str, Quarantine], key: str, inherited: bool) -> TestResult:
    on = inherited or key in held
    subs = tuple(_mark(s, held, key + s.name[len(test.name) :], on) for s in test.subtests)
    return dataclasses.replace(test, quarantined=on, subtests=subs)


def entry_for(run: RunResult, test: TestResult) -> Quarantine | None:
    """The entry that names this test or subtest (the nearest: test.subtest before test)."""
    by_name = {q.test: q for q in run.quarantine}
    name = test.name
    while name:
        if name in by_name:
            return by_name[name]
        name = name.rpartition(".")[0]
    return None


def describe(q: Quarantine) -> str:
    """One line for the reports: what is quarantined, until when, why."""
    if q.expired:
        return (
            f"{q.test}: quarantine expired after {q.expires}, the test counts again "
            f"(was: {q.reason})"
        )
    return f"{q.test}: quarantined until {q.expires} (inclusive): {q.reason}"


def quarantined_misses(run: RunResult) -> list[tuple[str, TestResult]]:
    """(variant, test or subtest) that missed but did not count, because quarantined."""
    out: list[tuple[str, TestResult]] = []
    for v in run.variants:
        for top in v.tests:
            out += [(v.name, t) for t in verdicts.misses((top,)) if t.quarantined]
    return out
