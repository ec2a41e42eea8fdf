"""The A/A control: the baseline's kernel measured again as a variant of its own.

Perf verdicts compare variants measured in one interleaved batch of boots.
Measuring the baseline's kernel twice in that batch shows how far the batch
puts one kernel from itself, its noise floor.  When that is too far (the rule
is stats.noise_floor), the whole batch is run again, up to perf.max_reruns
times; every batch is kept and verdicts use the last one.

Pure: the pipeline calls it between batches, tests call it with made-up samples.
"""

from __future__ import annotations

from collections.abc import Iterable

from orchestrator import stats
from orchestrator.results import Batch, TestResult, VariantResult, breakdowns

# "~" is not allowed in a variant name (config._SAFE_NAME), so the control's
# name can never be one the matrix declares.
SUFFIX = "~aa"


def name_for(baseline: str) -> str:
    return baseline + SUFFIX


def batch_samples(tests: Iterable[TestResult], batch: int) -> dict[tuple[str, str], list[float]]:
    """One batch's whole-test metric values by (test without its @round suffix, metric)."""
    out: dict[tuple[str, str], list[float]] = {}
    for t in tests:
        if t.batch != batch:
            continue
        for metric, value in t.metrics.items():
            out.setdefault((t.name.split("@")[0], metric), []).append(value)
    return out


def noisy_metrics(base: VariantResult, control: VariantResult, batch: int) -> tuple[str, ...]:
    """test.metric for every metric whose A/A control flags this batch as too noisy."""
    theirs = batch_samples(base.tests, batch)
    mine = batch_samples(control.tests, batch)
    details = breakdowns(theirs)
    # Breakdowns (per CPU, min, max) are noisier than their headline and no
    # verdict rests on them: they must not make a batch rerun.
    return tuple(
        f"{test}.{metric}"
        for (test, metric), values in theirs.items()
        if (test, metric) in mine
        and (test, metric) not in details
        and stats.noise_floor(metric, base.name, values, control.name, mine[test, metric]).noisy
    )


def judge_batch(
    attempt: int, base: VariantResult, control: VariantResult, max_reruns: int
) -> Batch:
    """The record of batch `attempt`, and whether another batch must follow it."""
    noisy = noisy_metrics(base, control, attempt)
    return Batch(attempt, noisy, rerun=bool(noisy) and attempt <= max_reruns)
