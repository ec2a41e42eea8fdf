"""Statistics for perf metrics: estimates, comparisons to a baseline, verdicts.

The rules follow DESIGN.md "Perf methodology", which was measured on this
project's own benchmark: the independent sample is a boot, only ratios
within one run mean anything, Mann-Whitney and *percentile* bootstrap
intervals held at n = 10 (BCa did not), and a baseline whose spread is over
about 10 % makes a batch untrustworthy.  So every comparison says how big a
change it could have seen: "no measurable change" always carries its bound.

Pure: depends on numpy and scipy only, and every random draw comes from a
seeded Generator, so the same samples always give the same report.
"""

from __future__ import annotations

import enum
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
from scipy import stats as sps

SEED = 20261125  # any fixed number: reports must be reproducible
CONFIDENCE = 0.95
RESAMPLES = 9999
ALPHA = 0.05  # Mann-Whitney, two-sided
MIN_SAMPLES = 5  # per side; fewer boots cannot detect anything DESIGN cares about
NOISE_LIMIT = 0.10  # the baseline's CV above which a batch is flagged, not trusted
MAX_HALF_WIDTH = 0.25  # a ratio interval wider than ±25 % of the ratio says nothing

# Metric names that mean "time taken": smaller is better.
_LOWER_IS_BETTER = ("_seconds", "_ns", "_us", "_ms", "latency")

Floats = npt.NDArray[np.float64]


class Change(enum.StrEnum):
    FASTER = "faster"
    SLOWER = "slower"
    SAME = "no measurable change"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class Estimate:
    """One variant's samples of one metric."""

    n: int
    median: float
    ci_low: float  # 95 % percentile-bootstrap interval of the median
    ci_high: float
    cv: float  # sample standard deviation over mean, as a fraction; nan when undefined


@dataclass(frozen=True)
class Comparison:
    """A variant against the baseline: ratio of medians (variant / baseline)."""

    variant: str
    baseline: str
    ratio: float
    ci_low: float  # 95 % percentile-bootstrap interval of the ratio
    ci_high: float
    p: float  # Mann-Whitney U, two-sided
    verdict: Change
    bound: int | None = None  # "within ±bound %", for Change.SAME only
    reason: str = ""  # why a verdict is inconclusive; for SAME, the test behind it

    @property
    def text(self) -> str:
        """The verdict as people read it: "slower", "no measurable change (within ±4%)"."""
        if self.verdict is Change.SAME and self.bound is not None and self.reason:
            return f"same within ±{self.bound}% ({self.reason})"  # an equivalence test's
        if self.verdict is Change.SAME and self.bound is not None:
            return f"{self.verdict} (within ±{self.bound}%)"
        if self.verdict is Change.INCONCLUSIVE and self.reason:
            return f"{self.verdict} ({self.reason})"
        return str(self.verdict)


def higher_is_better(metric: str) -> bool:
    """Whether a bigger value of this metric is an improvement.

    Throughputs (events_per_sec, ops) are the default; names that end in a
    time unit or in "latency" measure time taken.
    """
    return not metric.lower().endswith(_LOWER_IS_BETTER)


def _array(values: Sequence[float]) -> Floats:
    return np.asarray(values, dtype=np.float64)


def _rng() -> np.random.Generator:
    return np.random.default_rng(SEED)


def cv(values: Sequence[float]) -> float:
    """Coefficient of variation (ddof=1); nan for fewer than two values or a zero mean."""
    x = _array(values)
    mean = float(np.mean(x)) if len(x) else 0.0
    if len(x) < 2 or mean == 0.0:
        return math.nan
    return float(np.std(x, ddof=1)) / abs(mean)


def estimate(values: Sequence[float]) -> Estimate:
    """Median with its 95 % percentile-bootstrap interval, and the CV."""
    x = _array(values)
    if len(x) == 0:
        raise ValueError("no samples")
    median = float(np.median(x))
    if len(x) < 2 or np.all(x == x[0]):
        # Nothing to resample: scipy refuses one value and warns on constant data.
        return Estimate(len(x), median, median, median, cv(values))
    result = sps.bootstrap(
        (x,),
        np.median,
        n_resamples=RESAMPLES,
        confidence_level=CONFIDENCE,
        method="percentile",
        vectorized=True,
        rng=_rng(),
    )
    low, high = result.confidence_interval
    return Estimate(len(x), median, float(low), float(high), cv(values))


def _median_ratio(x: Floats, y: Floats, axis: int = -1) -> Floats:
    ratio: Floats = np.median(x, axis=axis) / np.median(y, axis=axis)
    return ratio


def ratio_interval(values: Sequence[float], base: Sequence[float]) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of median(values) / median(base).

    The two samples are independent boots, so each is resampled on its own.
    """
    x, y = _array(values), _array(base)
    point = float(np.median(x) / np.median(y))
    if len(x) < 2 or len(y) < 2 or (np.all(x == x[0]) and np.all(y == y[0])):
        return point, point
    result = sps.bootstrap(
        (x, y),
        _median_ratio,
        n_resamples=RESAMPLES,
        confidence_level=CONFIDENCE,
        method="percentile",
        vectorized=True,
        paired=False,
        rng=_rng(),
    )
    low, high = result.confidence_interval
    return float(low), float(high)


def mann_whitney(values: Sequence[float], base: Sequence[float]) -> float:
    """Two-sided Mann-Whitney U p-value (1.0 when a side is empty)."""
    if not values or not base:
        return 1.0
    p = float(sps.mannwhitneyu(_array(values), _array(base), alternative="two-sided").pvalue)
    return 1.0 if math.isnan(p) else p


def judge(
    metric: str,
    variant: Estimate,
    base: Estimate,
    ratio_ci: tuple[float, float],
    p: float,
    *,
    noise_limit: float = NOISE_LIMIT,
    max_half_width: float = MAX_HALF_WIDTH,
) -> tuple[Change, int | None, str]:
    """The verdict, its bound and why: every rule of a perf verdict is here.

    1. inconclusive: fewer than MIN_SAMPLES on either side, a baseline CV
       over the noise limit, or a ratio interval wider than ±max_half_width;
    2. faster / slower: p < ALPHA and the ratio interval excludes 1, in the
       metric's direction (higher_is_better);
    3. otherwise no measurable change, within ±X % where X is the farther
       end of the ratio interval from 1, rounded up to a whole percent.
    """
    low, high = ratio_ci
    if min(variant.n, base.n) < MIN_SAMPLES:
        return Change.INCONCLUSIVE, None, f"n={variant.n}+{base.n}, need {MIN_SAMPLES} each"
    if not base.cv <= noise_limit:  # nan (zero mean) counts as too noisy
        return Change.INCONCLUSIVE, None, f"baseline CV {_pct(base.cv)} > {_pct(noise_limit)}"
    ratio = variant.median / base.median if base.median else math.nan
    if not ratio > 0:  # a zero or negative median: ratios mean nothing
        return Change.INCONCLUSIVE, None, "no positive ratio of medians"
    if (high - low) / 2 > max_half_width * ratio:
        return Change.INCONCLUSIVE, None, f"ratio interval wider than ±{_pct(max_half_width)}"
    if p < ALPHA and not low <= 1.0 <= high:
        better = (ratio > 1.0) == higher_is_better(metric)
        return (Change.FASTER if better else Change.SLOWER), None, ""
    farthest = max(abs(low - 1.0), abs(high - 1.0))
    # Rounded first so that 5 % computed as 5.0000000001 % stays 5 %.
    return Change.SAME, math.ceil(round(farthest * 100, 6)), ""


def _pct(x: float) -> str:
    return f"{x * 100:.0f}%" if not math.isnan(x) else "undefined"


def compare(
    metric: str,
    variant: str,
    values: Sequence[float],
    baseline: str,
    base: Sequence[float],
) -> Comparison:
    """One variant's samples against the baseline's, for one metric."""
    mine, theirs = estimate(values), estimate(base)
    if theirs.median == 0.0:
        nan = math.nan
        why = "baseline median is 0"
        return Comparison(variant, baseline, nan, nan, nan, 1.0, Change.INCONCLUSIVE, reason=why)
    ratio = mine.median / theirs.median
    low, high = ratio_interval(values, base)
    p = mann_whitney(values, base)
    verdict, bound, reason = judge(metric, mine, theirs, (low, high), p)
    return Comparison(variant, baseline, ratio, low, high, p, verdict, bound, reason)


# --- the A/A control ---------------------------------------------------------------------------
#
# The baseline's kernel measured a second time, as a variant of its own in the same
# interleaved batch (DESIGN "Perf methodology").  Two measurements of one kernel should
# agree; a batch where they do not is flagged noisy and rerun, not trusted.  Both limits
# are NOISE_LIMIT, DESIGN's "A/A spread over 10 %", and were checked by simulating
# 5+5 boots (the default plan) with DESIGN's measured boot-to-boot CVs:
# * spread: the CV of both sides pooled (2n boots of one kernel).  A quiet host (CV
#   5.7 %) pools over 10 % in 0.1 % of batches, a busy one (16 %) in 94 %;
# * shift: the two medians more than 10 % apart, which no verdict of this batch could
#   then rise above; a quiet host does it by chance in about 2 % of batches.
# Not the tests: the A/A ratio interval (at 5+5 it passes ±10 % in ~70 % of quiet
# batches: it measures n as much as noise; it is reported as the noise floor), nor a
# faster/slower A/A verdict (p < 0.05 tried on each of a batch's ~15 metrics would
# rerun many batches by chance alone).


@dataclass(frozen=True)
class NoiseFloor:
    """The A/A control against the baseline for one metric: how far one kernel is from itself."""

    comparison: Comparison  # the control's samples against the baseline's
    cv: float  # of both sides pooled
    reason: str = ""  # why the batch is too noisy to trust; "" when it is not

    @property
    def noisy(self) -> bool:
        return bool(self.reason)

    @property
    def spread(self) -> float:
        """The farther end of the A/A ratio interval from 1: "the same kernel, within ±X"."""
        c = self.comparison
        return max(abs(c.ci_low - 1.0), abs(c.ci_high - 1.0))


def noise_floor(
    metric: str,
    baseline: str,
    base: Sequence[float],
    control: str,
    values: Sequence[float],
    *,
    limit: float = NOISE_LIMIT,
) -> NoiseFloor:
    """The A/A comparison, and whether its spread or shift makes the batch untrustworthy."""
    c = compare(metric, control, values, baseline, base)
    pooled = cv([*base, *values])
    if min(len(base), len(values)) < MIN_SAMPLES or math.isnan(c.ratio):
        # Too few boots to tell noise from chance, or no ratio at all: every
        # verdict is inconclusive already, and a rerun would not change that.
        return NoiseFloor(c, pooled)
    reason = ""
    if abs(c.ratio - 1.0) > limit:  # the more telling of the two: said first
        reason = f"A/A shift: the same kernel measured {c.ratio:.2f}x of itself"
    elif not pooled <= limit:
        boots = f"{len(base)}+{len(values)} boots"
        reason = f"A/A spread: CV {_pct(pooled)} over {boots} > {_pct(limit)}"
    return NoiseFloor(c, pooled, reason)


def distrusted(comparison: Comparison, floor: NoiseFloor) -> Comparison:
    """A comparison made in a batch its A/A control flagged: inconclusive, saying why."""
    if not floor.noisy:
        return comparison
    reason = f"noisy batch, {floor.reason}"
    return replace(comparison, verdict=Change.INCONCLUSIVE, bound=None, reason=reason)


def same_kernel(comparison: Comparison) -> Comparison:
    """A variant that boots the baseline's very kernel (an identical tree, built
    once) is a second A/A: a "change" there is the batch's noise, a false
    alarm, never a verdict about the series."""
    if comparison.verdict not in (Change.FASTER, Change.SLOWER):
        return comparison
    reason = f"the baseline's own kernel: a {comparison.verdict} reading is noise"
    return replace(comparison, verdict=Change.INCONCLUSIVE, bound=None, reason=reason)


@functools.lru_cache(maxsize=256)
def detectable_change(
    n_a: int,
    n_b: int,
    cv: float,
    alpha: float = ALPHA,
    power: float = 0.95,
    simulations: int = 2000,
) -> float:
    """The smallest relative drop Mann-Whitney detects with this power, by simulation.

    Samples are lognormal with the given CV (boot-to-boot noise is
    multiplicative) and side b is side a's distribution times 1 - change: a
    regression, as DESIGN's measured table counts it (the same test sees a
    rise of change / (1 - change), e.g. a 16 % drop or a 19 % rise).  The
    same seeded draws serve every change tried (common random numbers), so
    power rises smoothly with the change and a binary search finds it.
    inf when nothing is detectable (too few samples to reach p < alpha).
    """
    if n_a < 1 or n_b < 1:
        return math.inf
    if math.isnan(cv):
        return math.nan  # no spread known (one sample, a zero mean): no answer either
    if cv <= 0:
        return 0.0
    sigma = math.sqrt(math.log1p(cv * cv))
    rng = np.random.default_rng(SEED)
    a = rng.normal(0.0, sigma, (simulations, n_a))
    b = rng.normal(0.0, sigma, (simulations, n_b))

    def powered(shift: float) -> bool:
        # On a log scale the change is a shift, and ranks do not care about exp().
        p = sps.mannwhitneyu(a, b - shift, axis=1, alternative="two-sided").pvalue
        return float(np.mean(p < alpha)) >= power

    high = 0.01
    while not powered(high):
        high *= 2
        if high > 10:  # a drop of 99.995 % unseen: these sample sizes cannot reach alpha
            return math.inf
    low = high / 2 if high > 0.01 else 0.0
    while high - low > 0.0005:
        mid = (low + high) / 2
        low, high = (low, mid) if powered(mid) else (mid, high)
    return -math.expm1(-high)  # the shift as a relative drop: 1 - exp(-shift)
