"""Sequential perf verdicts: perf rounds go on only while a comparison is open.

A comparison is one variant against the baseline for one headline metric.
Its data are per-round log ratios, d = log(variant / baseline): a round is a
block that boots every guest once, so pairing within it takes out whatever
drifts between rounds (the host's load, which set of CPUs ran the round).

* **Looks**: after every round from `n_min` on, each open comparison's
  t-statistic meets a group-sequential boundary.  The boundaries spend alpha
  as alpha * t**rho (Lan-DeMets, power family, rho = 2: between Pocock and
  O'Brien-Fleming) over the information t = n / n_max, and are computed by
  recursive numerical integration of the score's density (Armitage,
  McPherson and Rowe); a t-statistic is put on the z scale through its own
  distribution (df = n - 1) before it meets them.
* **Family**: a look's repeated p-value is the smallest alpha whose boundary
  it crosses; it is valid however the looks stop (Jennison and Turnbull,
  ch. 9), so the run's comparisons form one family.  Holm's step-down at the
  error rate (family-wise, the default: the chance of any false "slower" in a
  run) or Benjamini-Hochberg (scipy's false_discovery_control: the expected
  share of false ones) says which changed.  A comparison stops early only
  when its p-value alone is under rate / m, which both reject whatever the
  others say.
* **Equivalence**: the repeated (1 - 2 * alpha_eq) interval of the ratio lying
  inside +-bound is a two-one-sided test at alpha_eq: "same within +-x %".

Pure: numpy and scipy only; the runner asks it after every round which
comparisons are open, the reports ask it for the verdicts, and
benchmarks/perf_power.py replays recorded boots through the same functions.
"""

from __future__ import annotations

import enum
import functools
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats as sps

Floats = npt.NDArray[np.float64]
Key = tuple[str, str, str]  # (variant, test, metric)

METHOD = "group-sequential (Lan-DeMets alpha*t^2 spending)"


class Control(enum.StrEnum):
    """Which error rate of the run's family of comparisons is held."""

    FWER = "fwer"  # Holm: the chance of any false faster/slower in a run
    FDR = "fdr"  # Benjamini-Hochberg: the expected share of false ones among those found

    @property
    def text(self) -> str:
        if self is Control.FWER:
            return "family-wise error rate (Holm)"
        return "false discovery rate (Benjamini-Hochberg)"


_ALPHAS = np.geomspace(1e-7, 1.0, 141)  # the grid repeated p-values are read from
_STEP = 0.1  # of the score's grid, in units of one round's standard deviation


@dataclass(frozen=True)
class Design:
    """The rules of a sequential perf plan (the matrix's `perf:` keys)."""

    q: float = 0.05  # the error rate held across the run's comparisons
    control: Control = Control.FWER
    equivalence: float = 0.05  # "same" means the ratio is within 1 +- this
    alpha_eq: float = 0.05  # per side of the two-one-sided test
    rho: float = 2.0  # spending alpha * t**rho
    n_min: int = 5  # rounds before the first look


class State(enum.StrEnum):
    OPEN = "open"
    CHANGED = "changed"  # its p-value alone passes q / m: BH rejects it whatever the rest say
    SAME = "same"  # the equivalence interval is inside +-bound
    MAXED = "max boots"  # n_max rounds and neither


@dataclass(frozen=True)
class Track:
    """One comparison as far as its rounds go."""

    n: int  # paired rounds used (up to the look that decided it)
    n_max: int
    ratio: float  # exp(mean log ratio)
    low: float  # the repeated equivalence interval of the ratio, at the last look
    high: float
    p: float  # the smallest repeated p-value over its looks
    state: State

    @property
    def bound(self) -> float:
        """The farther end of the interval from 1: "within +-bound"."""
        return max(abs(self.low - 1.0), abs(self.high - 1.0))

    @property
    def open(self) -> bool:
        return self.state is State.OPEN


# --- boundaries -------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def boundaries(n_min: int, n_max: int, rho: float) -> Floats:
    """z boundaries, one row per alpha of _ALPHAS and one column per look n_min..n_max.

    Under the null the score S_n (a sum of n unit-variance increments) is
    followed on a grid: at each look the density still inside the boundary
    loses the tails that carry this look's share of alpha, and the rest
    moves on by one round's increment.
    """
    n_min = max(1, min(n_min, n_max))
    looks = np.arange(n_min, n_max + 1, dtype=np.float64)
    half = 7.0 * math.sqrt(n_max)
    s = np.arange(-half, half + _STEP / 2, _STEP)
    kernel = sps.norm.pdf(s[None, :] - s[:, None]) * _STEP
    density = np.tile(sps.norm.pdf(s, scale=math.sqrt(looks[0])), (len(_ALPHAS), 1))
    out = np.empty((len(_ALPHAS), len(looks)))
    previous = np.zeros(len(_ALPHAS))
    for k, n in enumerate(looks):
        total = _ALPHAS * min(1.0, n / n_max) ** rho
        if k == len(looks) - 1:
            total = _ALPHAS.copy()
        share = np.maximum(total - previous, 0.0)
        previous = total
        # Two-sided tail mass beyond each grid point, from the top down.
        tail = 2.0 * np.cumsum(density[:, ::-1], axis=1)[:, ::-1] * _STEP
        right = s >= 0
        # A grid point's mass spreads over its cell: tails start at the cell's lower edge.
        edges = s[right] - _STEP / 2
        bounds = np.array([_crossing(edges, tail[a, right], share[a]) for a in range(len(_ALPHAS))])
        out[:, k] = bounds / math.sqrt(n)
        density = np.where(np.abs(s)[None, :] < bounds[:, None], density, 0.0)
        if k + 1 < len(looks):
            density = density @ kernel
    return out


def _crossing(s: Floats, tail: Floats, share: float) -> float:
    """The point beyond which the (decreasing) tail mass is `share`."""
    if share <= 0:
        return math.inf
    if tail[0] <= share:
        return 0.0
    j = int(np.searchsorted(-tail, -share))  # the first point whose tail is <= share
    if j >= len(s):
        return float(s[-1])
    t0, t1 = tail[j - 1], tail[j]
    frac = (t0 - share) / (t0 - t1) if t0 > t1 else 0.0
    return float(s[j - 1] + frac * (s[j] - s[j - 1]))


def critical(n: int, n_min: int, n_max: int, rho: float, alpha: float) -> float:
    """The z boundary at look n for a family-wise alpha (read off the grid, log-linear)."""
    col = boundaries(n_min, n_max, rho)[:, _look(n, n_min, n_max)]
    return float(np.interp(math.log(alpha), np.log(_ALPHAS), col))


def _look(n: int, n_min: int, n_max: int) -> int:
    return min(max(n, n_min), n_max) - max(1, min(n_min, n_max))


# --- one comparison -------------------------------------------------------------------------


def track(d: Sequence[float], n_max: int, family: int, design: Design) -> Track:
    """Replay the looks of one comparison over its per-round log ratios.

    The comparison stops at the first look that decides it; rounds after
    that (the runner no longer asks for them) do not count.
    """
    x = np.asarray(d, dtype=np.float64)
    if len(x) < first_look(design, n_max):
        return Track(len(x), n_max, _ratio(x), math.nan, math.nan, 1.0, State.OPEN)
    return tracks_of(x[None, :], n_max, family, design)[0]


def tracks_of(x: Floats, n_max: int, family: int, design: Design) -> list[Track]:
    """`track` for many comparisons of equal length at once, one per row of x.

    The simulation replays thousands of runs through this; the runner and
    the reports go through it one row at a time.
    """
    rows, length = x.shape
    last_look = min(length, n_max)
    stop_p = design.q / max(1, family)
    lo_eq, hi_eq = math.log1p(-design.equivalence), math.log1p(design.equivalence)
    first = first_look(design, n_max)
    nominal, actual = calibration(first, n_max, design.rho)
    # The boundary whose crossing chance, for t-statistics, is 2 * alpha_eq.
    eq_alpha = float(
        np.exp(np.interp(math.log(2 * design.alpha_eq), np.log(actual), np.log(nominal)))
    )
    best = np.ones(rows)
    state = np.full(rows, State.OPEN.value, dtype=object)
    used = np.full(rows, length)
    mean_at, low_at, high_at, p_at = (np.full(rows, math.nan) for _ in range(4))
    for look in _looks(x, first, last_look, n_max, design.rho):
        live = state == State.OPEN.value
        if not live.any():
            break
        n, mean, se = look.n, look.mean, look.se
        p = np.exp(np.interp(np.log(look.p), np.log(nominal), np.log(actual)))
        best = np.where(live, np.minimum(best, p), best)
        c = float(np.interp(math.log(eq_alpha), np.log(_ALPHAS), look.column))
        half = float(sps.t.isf(sps.norm.sf(c), n - 1)) * se
        low, high = mean - half, mean + half
        decided = np.where(
            best <= stop_p,
            State.CHANGED.value,
            np.where(
                (lo_eq < low) & (high < hi_eq),
                State.SAME.value,
                State.MAXED.value if n >= n_max else State.OPEN.value,
            ),
        )
        for arr, now in ((mean_at, mean), (low_at, low), (high_at, high), (p_at, best)):
            arr[live] = now[live]
        used[live] = n
        state[live] = decided[live]
    return [
        Track(
            int(used[i]),
            n_max,
            math.exp(mean_at[i]),
            math.exp(low_at[i]),
            math.exp(high_at[i]),
            float(p_at[i]),
            State(state[i]),
        )
        for i in range(rows)
    ]


@dataclass(frozen=True)
class _Look:
    n: int
    mean: Floats
    se: Floats
    p: Floats  # the repeated p-value as the z boundaries give it (before calibration)
    column: Floats  # this look's z boundary for every alpha of _ALPHAS


def _looks(x: Floats, first: int, last: int, n_max: int, rho: float) -> Iterator[_Look]:
    """Each look's statistics for every row of x, from `first` rounds to `last`."""
    total, squares = np.cumsum(x, axis=1), np.cumsum(x * x, axis=1)
    for n in range(first, last + 1):
        mean = total[:, n - 1] / n
        var = np.maximum(squares[:, n - 1] - n * mean * mean, 0.0) / (n - 1)
        # Identical rounds leave nothing to scale by; a real run never has them.
        se = np.maximum(np.sqrt(var / n), 1e-12)
        z = sps.norm.isf(sps.t.sf(np.abs(mean / se), n - 1))
        column = boundaries(first, n_max, rho)[:, _look(n, first, n_max)]
        yield _Look(n, mean, se, _p_from(column, z), column)


CALIBRATION_PATHS = 100_000
_SEED = 20261207


@functools.lru_cache(maxsize=16)
def calibration(first: int, n_max: int, rho: float) -> tuple[Floats, Floats]:
    """Nominal alphas, and how often t-statistics really cross their boundaries.

    Matching a t-statistic's tail to z's at each look is not exact over many
    looks: for Gaussian rounds of unknown spread, 40 looks from the fifth
    cross the 5 % boundaries 5.5 % of the time and the 0.42 % ones 0.52 %
    (more so the smaller alpha).  So the repeated p-values are calibrated on
    seeded Gaussian paths: a p-value is the chance that such a path's
    smallest repeated p-value is at most it.  Below what the paths resolve
    (the 50th smallest), the ratio there holds.
    """
    rng = np.random.default_rng(_SEED)
    paths = rng.standard_normal((CALIBRATION_PATHS, n_max))
    smallest = np.ones(CALIBRATION_PATHS)
    for look in _looks(paths, first, n_max, n_max, rho):
        smallest = np.minimum(smallest, look.p)
    ordered = np.sort(smallest)
    actual = np.searchsorted(ordered, _ALPHAS, side="right") / CALIBRATION_PATHS
    resolved = ordered[49]  # the 50th smallest: the tail beyond it keeps its ratio
    ratio = float(np.interp(resolved, _ALPHAS, actual / _ALPHAS))
    actual = np.where(resolved > _ALPHAS, _ALPHAS * ratio, actual)
    # Monotone and within (0, 1], so that it can be read both ways.
    actual = np.maximum.accumulate(np.clip(actual, 1e-12, 1.0))
    nominal = _ALPHAS.copy()
    keep = np.concatenate([[True], np.diff(actual) > 0])
    return nominal[keep], actual[keep]


def first_look(design: Design, n_max: int) -> int:
    """The round of a comparison's first look: n_min, or its most boots when
    fewer (at least 2: a t-statistic needs a spread)."""
    return max(2, min(design.n_min, n_max))


def _p_from(col: Floats, z: Floats) -> Floats:
    """Repeated p-values of many |z| at one look: col falls as alpha rises."""
    p = np.exp(np.interp(-np.abs(z), -col, np.log(_ALPHAS)))
    return np.where(np.abs(z) <= col[-1], 1.0, p)


def _ratio(x: Floats) -> float:
    return math.exp(float(np.mean(x))) if len(x) else math.nan


# --- the family -------------------------------------------------------------------------------


def tracks(
    ratios: Mapping[Key, Sequence[float]], n_max: Mapping[str, int], design: Design
) -> dict[Key, Track]:
    """Every comparison of the family, as far as its rounds go.

    `ratios`: per comparison, its per-round log ratios in round order;
    `n_max`: per test, its most boots.
    """
    family = len(ratios)
    return {key: track(d, n_max[key[1]], family, design) for key, d in ratios.items()}


def discoveries(found: Mapping[Key, Track], design: Design) -> frozenset[Key]:
    """The comparisons the family's error control at q says changed."""
    keys = [k for k, t in found.items() if not math.isnan(t.low)]  # looked at
    if not keys:
        return frozenset()
    p = [found[k].p for k in keys]
    if design.control is Control.FDR:
        adjusted = sps.false_discovery_control(p, method="bh")
        return frozenset(k for k, a in zip(keys, adjusted, strict=True) if a <= design.q)
    # Holm: the i-th smallest p-value (from 0) is tested at q / (m - i), in
    # order, until one fails.
    ordered = sorted(range(len(keys)), key=lambda i: p[i])
    out = set()
    for rank, i in enumerate(ordered):
        if p[i] > design.q / (len(keys) - rank):
            break
        out.add(keys[i])
    return frozenset(out)


def open_tests(found: Mapping[Key, Track]) -> dict[str, frozenset[str]]:
    """Per variant, the tests some comparison of which is still open."""
    out: dict[str, set[str]] = {}
    for (variant, test, _metric), t in found.items():
        if t.open:
            out.setdefault(variant, set()).add(test)
    return {v: frozenset(tests) for v, tests in out.items()}


def distance(t: Track, design: Design) -> float:
    """How far an open comparison is from decided: the part of its interval
    outside +-bound, relative to the bound (0 when it is inside)."""
    if math.isnan(t.low):
        return math.inf
    over = max(0.0, t.bound - design.equivalence)
    return over / design.equivalence
