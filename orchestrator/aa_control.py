"""The A/A control: the baseline's kernel measured again as a variant of its own.

Perf verdicts compare variants measured in one interleaved batch of boots.
Measuring the baseline's kernel twice in that batch shows how far the batch
puts one kernel from itself, its noise floor.  When that is too far (the rule
is stats.noise_floor), the whole batch is run again, up to perf.max_reruns
times; every batch is kept and verdicts use the last one.

Pure: the runner calls it between batches, tests call it with made-up
samples.  Which samples a batch holds, what they say and whether the batch
is rerun is the perf model's (perf.judge_batch); this module names the
control and is where the runner asks.
"""

from __future__ import annotations

from collections.abc import Mapping

from orchestrator import perf
from orchestrator.results import Batch, VariantResult

# "~" is not allowed in a variant name (config._SAFE_NAME), so the control's
# name can never be one the matrix declares.
SUFFIX = "~aa"


def name_for(baseline: str) -> str:
    return baseline + SUFFIX


def judge_batch(
    attempt: int,
    base: VariantResult,
    control: VariantResult,
    max_reruns: int,
    places: Mapping[int, str] | None = None,
) -> Batch:
    """The record of batch `attempt`, and whether another batch must follow it.

    `places`: round -> where it ran, when rounds ran side by side in several
    places (perf.places_of): each place's level is divided out first."""
    return perf.judge_batch(attempt, base, control, max_reruns, places)
