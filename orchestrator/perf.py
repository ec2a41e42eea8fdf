"""What a run's measurements say: samples, estimates, comparisons, noise, batches.

The model of perf results every reader shares: the reports summarize and
compare with it, the history stores its samples, and the A/A control judges
a batch with it (judge_batch).  The numbers themselves come from the pure
`stats`; this module says which samples are compared with which.

A measurement is a metric of a whole test run once per boot (a perf round,
or a functional test's repeats).  Perf samples are compared within one
batch only: a batch the A/A control found noisy is rerun, and the rerun
replaces it.
"""

from __future__ import annotations

import dataclasses
import math
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from orchestrator import sequential, stats
from orchestrator.plan import UnitKind, unit_id
from orchestrator.results import Batch, PerfPlan, RunResult, VariantResult
from orchestrator.sequential import Design, State, Track
from orchestrator.stats import Change, Comparison, Estimate, NoiseFloor
from orchestrator.textfmt import fmt_rate
from orchestrator.verdicts import baseline_of, walk

MetricKey = tuple[str, str]  # (test name, metric); a subtest's name is test.subtest

# A program may print a metric's breakdown next to it: map_perf prints
# events_per_sec and also events_per_sec_cpu0, _min and _max.  Verdicts,
# reruns and the summary's regressions follow the headline metric; the
# breakdowns are detail, shown in the HTML report.
_BREAKDOWN = re.compile(r"(?P<headline>.+)_(?:cpu\d+|min|max)")


def breakdowns(keys: Iterable[MetricKey]) -> set[MetricKey]:
    """The (test, metric) keys that break down another metric of the same test."""
    keys = set(keys)
    return {
        (test, metric)
        for test, metric in keys
        if (m := _BREAKDOWN.fullmatch(metric)) and (test, m["headline"]) in keys
    }


# --- samples ---------------------------------------------------------------------


def latest_batch(variants: Iterable[VariantResult]) -> int:
    """The last perf batch in these results (0 when nothing was measured in batches)."""
    return max((t.batch for v in variants for t in v.tests), default=0)


def metric_samples(
    variants: Iterable[VariantResult],
    batch: int | None = None,
    *,
    subtests: bool = True,
    functional: bool = True,
) -> dict[MetricKey, dict[str, list[float]]]:
    """Every metric value, grouped by (test, metric) and then by variant.

    Perf samples count from one batch only, `batch` or else the latest:
    comparisons are made within one batch, and a rerun replaces the batch
    before it.  Tests outside batches (functional ones) count too, unless
    `functional` is False; subtests' metrics too, unless `subtests` is False
    (a program's per-map or per-round numbers are already in its totals).
    """
    variants = list(variants)
    batch = latest_batch(variants) if batch is None else batch
    wanted = (0, batch) if functional else (batch,)
    out: dict[MetricKey, dict[str, list[float]]] = {}
    for v in variants:
        tests = [t for t in v.tests if t.batch in wanted]
        for t in walk(tests) if subtests else tests:
            for metric, value in t.metrics.items():
                out.setdefault((t.name, metric), {}).setdefault(v.name, []).append(value)
    return out


# --- summaries -------------------------------------------------------------------


@dataclass(frozen=True)
class MetricRow:
    """One variant's samples of one metric, with its statistics."""

    variant: str
    samples: tuple[float, ...]
    estimate: Estimate
    comparison: Comparison | None = None  # against the baseline; None for the baseline itself
    detectable: float = math.nan  # the drop a comparison with the baseline could see

    @property
    def n(self) -> int:
        return len(self.samples)

    @property
    def median(self) -> float:
        return self.estimate.median

    @property
    def low(self) -> float:
        return min(self.samples)

    @property
    def high(self) -> float:
        return max(self.samples)


@dataclass(frozen=True)
class MetricSummary:
    """One (test, metric) across the variants, compared with the baseline."""

    test: str
    metric: str
    baseline: str  # "" when the baseline variant has no samples of this metric
    rows: tuple[MetricRow, ...]
    # The A/A control's row (its comparison is the A/A one) and what it says
    # of the batch; None without a control.  Not in `rows`: it is no variant.
    control: MetricRow | None = None
    floor: NoiseFloor | None = None
    breakdown: bool = False  # a per-CPU, min or max split of another metric: detail

    @property
    def name(self) -> str:
        return f"{self.test}.{self.metric}"

    @property
    def base(self) -> MetricRow | None:
        return next((r for r in self.rows if r.variant == self.baseline), None)

    @property
    def noise(self) -> float:
        """The baseline's CV: the spread DESIGN flags above NOISE_LIMIT."""
        return self.base.estimate.cv if self.base else math.nan

    @property
    def noisy(self) -> bool:
        """Too noisy to trust: as the A/A control says, else by the baseline's CV alone."""
        if self.floor is not None:
            return self.floor.noisy
        return not self.noise <= stats.NOISE_LIMIT

    @property
    def detectable(self) -> float:
        """The drop detectable with the baseline's n on both sides, as the plan gives them."""
        b = self.base
        return _detectable(b.n, b.n, b.estimate.cv) if b else math.nan


@dataclass(frozen=True)
class History:
    """What earlier runs of the same matrix say, as plain data.

    history.py reads the database and builds this; renderers only show it.
    """

    # (test, metric) -> variant -> (started, median) per run, oldest first
    medians: Mapping[MetricKey, Mapping[str, tuple[tuple[str, float], ...]]] = field(
        default_factory=dict
    )
    changes: tuple[str, ...] = ()  # what changed since the previous run, in words
    previous: str = ""  # when the previous run started; "" when this is the first
    # test -> (FLAKY runs, runs) over every recorded run of the matrix up to this
    # one, tests that were ever FLAKY only (history.flake_rates; flakes.py)
    flake_rates: Mapping[str, tuple[int, int]] = field(default_factory=dict)


def summarize(
    samples: Mapping[str, Sequence[float]],
    baseline: str = "",
    metric: str = "",
    floor: NoiseFloor | None = None,
) -> list[MetricRow]:
    """One row per variant for one metric, each compared with the baseline's samples.

    `baseline` "" means the first variant with samples; `metric` is the
    metric's name, which says whether higher is better; `floor`, the A/A
    control's verdict on the batch, makes every comparison inconclusive
    when it found the batch noisy.
    """
    present = {variant: tuple(map(float, x)) for variant, x in samples.items() if x}
    baseline = baseline or next(iter(present), "")
    base = present.get(baseline)
    rows = []
    for variant, values in present.items():
        comparison, detectable = None, math.nan
        if base is not None and variant != baseline:
            comparison = stats.compare(metric, variant, values, baseline, base)
            if floor is not None:
                comparison = stats.distrusted(comparison, floor)
            detectable = _detectable(len(base), len(values), stats.cv(base))
        rows.append(MetricRow(variant, values, stats.estimate(values), comparison, detectable))
    return rows


def _detectable(n_base: int, n: int, cv: float) -> float:
    # The simulation needs a spread to simulate: no CV, no number.
    return stats.detectable_change(n_base, n, cv) if cv > 0 else math.nan


def perf(run: RunResult) -> list[MetricSummary]:
    """The run's measurements, summarized and compared with the baseline.

    A measurement is a metric of a whole test (not of a subtest: a program's
    per-round numbers are already in its totals) that was sampled at least
    twice for some variant; one-off counters of functional tests (reads,
    misses, ...) stay in the per-test details and are not compared.
    """
    baseline = baseline_of(run)
    control = run.control
    measured = [*run.variants, *([control] if control is not None else [])]
    batch = latest_batch(measured)
    controls = metric_samples([control], batch, subtests=False) if control is not None else {}
    out = []
    by_metric = metric_samples(run.variants, batch, subtests=False)
    twins = same_kernel_as(run, baseline)
    details = breakdowns(by_metric)
    found = tracks(run, batch)
    changed = (
        sequential.discoveries(found, design_of(run.perf_plan)) if run.perf_plan else frozenset()
    )
    base_v = next((v for v in run.variants if v.name == baseline), None)
    # Rounds in several places: the A/A check judges each place's level divided out.
    judged = (
        _within_places_by_key(base_v, control, batch, places_of(run, batch))
        if base_v is not None and control is not None
        else {}
    )
    for (test, metric), samples in by_metric.items():
        if max(len(x) for x in samples.values()) < 2:
            continue
        base = samples.get(baseline)
        aa = next(iter(controls.get((test, metric), {}).items()), None)
        floor, row = (
            _noise_floor(metric, baseline, base, aa, judged.get((test, metric)))
            if base and aa
            else (None, None)
        )
        rows = [_same_kernel(r, twins) for r in summarize(samples, baseline, metric, floor)]
        if run.perf_plan is not None:
            rows = [_sequential_row(r, found, changed, run, (test, metric), floor) for r in rows]
        has_base = any(r.variant == baseline for r in rows)
        name = baseline if has_base else ""
        detail = (test, metric) in details
        out.append(MetricSummary(test, metric, name, tuple(rows), row, floor, detail))
    # Headline metrics first: they carry the verdicts; breakdowns are detail.
    return sorted(out, key=lambda s: s.breakdown)


def _sequential_row(
    row: MetricRow,
    found: Mapping[sequential.Key, Track],
    changed: frozenset[sequential.Key],
    run: RunResult,
    key: MetricKey,
    floor: NoiseFloor | None,
) -> MetricRow:
    """A row whose comparison is the sequential plan's, when it has one."""
    track = found.get((row.variant, *key))
    if track is None or row.comparison is None or run.perf_plan is None:
        return row
    full = (row.variant, *key)
    comparison = sequential_comparison(full, track, full in changed, run.perf_plan, run.baseline)
    if floor is not None:
        comparison = stats.distrusted(comparison, floor)
    return dataclasses.replace(row, comparison=comparison)


def same_kernel_as(run: RunResult, baseline: str) -> frozenset[str]:
    """The variants that boot the baseline's very kernel (gfp-zero's tree is upstream's)."""
    return twins_of({v.name: v.build.artifact_dir for v in run.variants if v.build}, baseline)


def twins_of(artifacts: Mapping[str, str], baseline: str) -> frozenset[str]:
    """The rule behind same_kernel_as, over variant -> artifact dir (the runner has those
    before there is a RunResult)."""
    base = artifacts.get(baseline)
    if not base:
        return frozenset()
    return frozenset(v for v, a in artifacts.items() if v != baseline and a == base)


def _same_kernel(row: MetricRow, twins: frozenset[str]) -> MetricRow:
    if row.comparison is None or row.variant not in twins:
        return row
    return dataclasses.replace(row, comparison=stats.same_kernel(row.comparison))


def _noise_floor(
    metric: str,
    baseline: str,
    base: Sequence[float],
    control: tuple[str, Sequence[float]],
    judged: tuple[list[float], list[float]] | None = None,
) -> tuple[NoiseFloor, MetricRow]:
    """The A/A control's verdict on the batch, and its row as the reports show it
    (`judged`: the two sides as the check sees them, when not the samples)."""
    name, values = control[0], tuple(map(float, control[1]))
    mine, theirs = judged or (base, values)
    floor = stats.noise_floor(metric, baseline, mine, name, theirs)
    detectable = _detectable(len(base), len(values), stats.cv(base))
    return floor, MetricRow(name, values, stats.estimate(values), floor.comparison, detectable)


# --- batches and the A/A control ----------------------------------------------------


def noisy_metrics(
    base: VariantResult,
    control: VariantResult,
    batch: int,
    places: Mapping[int, str] | None = None,
) -> tuple[str, ...]:
    """test.metric for every metric whose A/A control flags this batch as too noisy.

    The samples are the whole-test metrics of this one batch, as perf()
    groups them.  Breakdowns (per CPU, min, max) are noisier than their
    headline and no verdict rests on them: they must not make a batch rerun.
    `places`: round -> where it ran, when rounds ran in several places
    (places_of); then each place's level is divided out first.
    """
    pairs = _within_places_by_key(base, control, batch, places or {})
    if not places:
        samples = metric_samples([base, control], batch, subtests=False, functional=False)
        details = breakdowns(key for key, by in samples.items() if base.name in by)
        for key, by in samples.items():
            if base.name in by and control.name in by and key not in details:
                pairs[key] = (list(by[base.name]), list(by[control.name]))
    return tuple(
        f"{test}.{metric}"
        for (test, metric), (mine, theirs) in pairs.items()
        if stats.noise_floor(metric, base.name, mine, control.name, theirs).noisy
    )


def places_of(run: RunResult, batch: int) -> dict[int, str]:
    """Round -> where it ran (a CPU set, a Dask worker) for the measured rounds of
    `batch`, when they ran in more than one place; {} when in one (or unrecorded)."""
    where = {p.unit: p.worker for p in run.workers}
    rounds = {
        t.round
        for v in (*run.variants, *([run.control] if run.control else []))
        for t in v.tests
        if t.batch == batch and t.round >= 1 and not t.warmup
    }
    found = {
        r: where[uid]
        for r in rounds
        if (uid := unit_id(UnitKind.PERF_ROUND, batch=batch, round=r)) in where
    }
    return found if len(set(found.values())) > 1 else {}


def _within_places_by_key(
    base: VariantResult, control: VariantResult, batch: int, places: Mapping[int, str]
) -> dict[MetricKey, tuple[list[float], list[float]]]:
    """Per headline metric, the baseline's and the A/A control's samples with each
    place's level divided out (within_places); {} when the rounds ran in one place."""
    if not places:
        return {}
    theirs = _by_round(control, batch)
    return {
        key: within_places(mine, theirs[key], places)
        for key, mine in _by_round(base, batch).items()
        if key in theirs
    }


def within_places(
    base: Mapping[int, float], control: Mapping[int, float], places: Mapping[int, str]
) -> tuple[list[float], list[float]]:
    """Two guests' samples by round, each divided by its place's level (the
    median of both guests' samples there): the A/A check then sees the spread
    within places, as the verdicts, which pair boots within a round, do.
    A round of no recorded place is a place of its own."""
    level: dict[str, float] = {}
    for place in set(places.get(r, "") for r in (*base, *control)):
        here = [x for by in (base, control) for r, x in by.items() if places.get(r, "") == place]
        level[place] = statistics.median(here)
    return (
        [x / level[places.get(r, "")] for r, x in sorted(base.items())],
        [x / level[places.get(r, "")] for r, x in sorted(control.items())],
    )


def judge_batch(
    attempt: int,
    base: VariantResult,
    control: VariantResult,
    max_reruns: int,
    places: Mapping[int, str] | None = None,
) -> Batch:
    """The record of batch `attempt`, and whether another batch must follow it."""
    noisy = noisy_metrics(base, control, attempt, places)
    return Batch(attempt, noisy, rerun=bool(noisy) and attempt <= max_reruns)


def batch_note(run: RunResult) -> str:
    """The perf batches in one sentence, when the A/A control found one noisy; else ""."""
    if not any(b.noisy for b in run.batches):
        return ""
    parts = [f"batch {b.attempt} noisy ({_few(b.noisy)}), rerun" for b in run.batches if b.rerun]
    last = run.batches[-1]
    if last.noisy:
        parts.append(
            f"batch {last.attempt} noisy ({_few(last.noisy)}) with no rerun left: "
            "its verdicts for those are inconclusive"
        )
    else:
        parts.append(f"verdicts from batch {last.attempt}")
    return "Noisy batch: " + "; ".join(parts) + "."


def _few(names: Sequence[str], shown: int = 2) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


# --- sequential rounds ----------------------------------------------------------------------
#
# A sequential plan (sequential.py) compares each variant with the baseline round by
# round: a round boots every guest once, so a variant's boot and the baseline's in
# the same round are a pair.  The A/A control boots the baseline's very kernel in the
# same round: both are the reference, which takes a third off the variance of every
# comparison's ratio (the A/A's own check of the batch, noise_floor, still compares
# the two).  Variants that boot the baseline's own build (same_kernel_as) are never
# measured again: their comparisons are the baseline's with itself.


def design_of(plan: PerfPlan) -> Design:
    return Design(
        q=plan.error_rate,
        control=sequential.Control(plan.control),
        equivalence=plan.equivalence,
        alpha_eq=plan.alpha_eq,
        rho=plan.rho,
        n_min=plan.n_min,
    )


def _by_round(v: VariantResult, batch: int) -> dict[MetricKey, dict[int, float]]:
    """A guest's headline metrics of one batch's rounds, by round (warm-up left out)."""
    out: dict[MetricKey, dict[int, float]] = {}
    for t in v.tests:
        if t.batch != batch or t.round < 1 or t.warmup:
            continue
        for metric, value in t.metrics.items():
            if value > 0:  # a ratio needs both sides positive
                out.setdefault((t.name, metric), {})[t.round] = value
    details = breakdowns(out)
    return {key: by for key, by in out.items() if key not in details}


def paired_ratios(run: RunResult, batch: int) -> dict[sequential.Key, list[float]]:
    """Per comparison, the per-round log ratios to the reference, in round order."""
    base = next((v for v in run.variants if v.name == run.baseline), None)
    if base is None:
        return {}
    reference = _reference(base, run.control, batch)
    twins = same_kernel_as(run, run.baseline)
    out: dict[sequential.Key, list[float]] = {}
    for v in run.variants:
        if v.name == run.baseline or v.name in twins:
            continue
        for key, by in _by_round(v, batch).items():
            ref = reference.get(key, {})
            rounds = sorted(set(by) & set(ref))
            out[(v.name, *key)] = [math.log(by[r]) - ref[r] for r in rounds]
    return out


def _reference(
    base: VariantResult, control: VariantResult | None, batch: int
) -> dict[MetricKey, dict[int, float]]:
    """The baseline's log value per round, averaged with the A/A control's where it booted."""
    mine = _by_round(base, batch)
    theirs = _by_round(control, batch) if control is not None else {}
    out: dict[MetricKey, dict[int, float]] = {}
    for key, by in mine.items():
        aa = theirs.get(key, {})
        out[key] = {
            r: (math.log(x) + math.log(aa[r])) / 2 if r in aa else math.log(x)
            for r, x in by.items()
        }
    return out


def tracks(run: RunResult, batch: int | None = None) -> dict[sequential.Key, Track]:
    """Every comparison of a sequential run, as far as its rounds go ({} for a fixed plan)."""
    plan = run.perf_plan
    if plan is None:
        return {}
    if batch is None:
        batch = latest_batch([*run.variants, *([run.control] if run.control else [])])
    n_max = dict(plan.max_boots)
    ratios = {k: d for k, d in paired_ratios(run, batch).items() if k[1] in n_max}
    return sequential.tracks(ratios, n_max, design_of(plan))


def sequential_comparison(
    key: sequential.Key, track: Track, changed: bool, plan: PerfPlan, baseline: str
) -> Comparison:
    """A comparison as the reports show it, from its track and the family's verdict."""
    variant, _test, metric = key
    verdict, bound, reason = Change.INCONCLUSIVE, None, ""
    if changed:
        better = (track.ratio > 1.0) == stats.higher_is_better(metric)
        verdict = Change.FASTER if better else Change.SLOWER
    elif track.state is State.SAME:
        verdict, bound = Change.SAME, math.ceil(round(track.bound * 100, 6))
        reason = f"two one-sided tests at ±{fmt_rate(plan.equivalence)}, {track.n} boots"
    elif math.isnan(track.low):
        reason = f"{track.n} rounds, fewer than the {plan.n_min} of the first look"
    else:
        reached = math.ceil(round(track.bound * 100, 6))
        why = "its most boots" if track.state is State.MAXED else (plan.stopped or "stopped")
        reason = (
            f"within ±{reached}% after {track.n} boots ({why}), not ±{fmt_rate(plan.equivalence)}"
        )
    return Comparison(
        variant, baseline, track.ratio, track.low, track.high, track.p, verdict, bound, reason
    )


def stop_reasons(
    run: RunResult, found: Mapping[sequential.Key, Track] | None = None
) -> dict[str, tuple[int, str]]:
    """Per measured variant: its perf boots in the last batch, and why they stopped
    (`found`: the run's tracks, when the caller has them already)."""
    plan = run.perf_plan
    if plan is None:
        return {}
    found = tracks(run) if found is None else found
    out: dict[str, tuple[int, str]] = {}
    for variant in dict.fromkeys(k[0] for k in found):
        mine = [t for k, t in found.items() if k[0] == variant]
        boots = max(t.n for t in mine)
        if all(t.state in (State.CHANGED, State.SAME) for t in mine):
            why = "every comparison decided"
        elif any(t.state is State.OPEN for t in mine):
            why = plan.stopped or "still running"
        else:
            why = "its most boots reached"
        out[variant] = (boots, why)
    return out


# --- what the reports say of the plan -------------------------------------------------------


@dataclass(frozen=True)
class PlanNote:
    """A sequential plan in words: its method, why it stopped, each guest's boots."""

    method: str
    stopped: str
    boots: tuple[tuple[str, int, str], ...]  # (guest, perf boots, why it stopped)
    twins: str  # the variants not measured again, and why; "" when none


def plan_note(run: RunResult) -> PlanNote | None:
    plan = run.perf_plan
    if plan is None:
        return None
    found = tracks(run)
    family = len(found)
    when = (
        f"after every wave of {plan.blocks} rounds side by side (each round whole on one CPU set "
        f"or worker) from the {_nth(plan.n_min)} round"
        if plan.blocks > 1
        else f"after every round from the {_nth(plan.n_min)}"
    )
    equivalence = fmt_rate(plan.equivalence)
    method = (
        f"Sequential rounds: {when}, each comparison with "
        f"{run.baseline} (per-round ratios to {run.baseline} and its A/A control together) meets a "
        f"{plan.method} boundary; rounds go on only for variants with an open "
        f"comparison.  Faster/slower: {sequential.Control(plan.control).text} at "
        f"{fmt_rate(plan.error_rate)} over the run's {family} comparisons (on repeated p-values, "
        "calibrated for t-statistics).  Same: two one-sided tests at "
        f"±{equivalence} (the {fmt_rate(1 - 2 * plan.alpha_eq)} repeated interval inside "
        f"±{equivalence}).  Most boots: "
        + ", ".join(f"{test} {n}" for test, n in plan.max_boots)
        + "."
    )
    budget = f" of a {plan.budget / 60:g} min budget" if plan.budget else ""
    stopped = (
        f"Perf rounds stopped: {plan.stopped or 'not yet'}, after "
        f"{plan.spent / 60:.1f} min{budget}."
    )
    reasons = stop_reasons(run, found)
    last = latest_batch([*run.variants, *([run.control] if run.control else [])])
    boots = []
    for v in (*run.variants, *([run.control] if run.control else [])):
        n = len({t.round for t in v.tests if t.batch == last and t.round >= 1 and not t.warmup})
        if v.name in reasons:
            boots.append((v.name, n, reasons[v.name][1]))
        elif n:
            boots.append((v.name, n, "the reference: on while any comparison was open"))
    twins = sorted(same_kernel_as(run, run.baseline))
    twin_note = (
        f"{', '.join(twins)} boot{'s' if len(twins) == 1 else ''} {run.baseline}'s very build: "
        f"not measured again (its comparisons would be {run.baseline}'s with itself, which the "
        "A/A control measures)."
        if twins
        else ""
    )
    return PlanNote(method, stopped, tuple(boots), twin_note)


@dataclass(frozen=True)
class PlaceSpread:
    """The perf rounds that ran in one place (a CPU set or a Dask worker)."""

    where: str
    rounds: int
    # per headline (test, metric): the baseline's median here over its median
    # everywhere, and the A/A control's ratio to the baseline within these rounds
    base: tuple[tuple[MetricKey, float], ...]
    aa: tuple[tuple[MetricKey, float], ...]


def place_spread(run: RunResult) -> list[PlaceSpread]:
    """Where the last batch's rounds ran, when that is more than one place.

    Each round ran whole in one place (a block).  The baseline's median per
    place against its median everywhere shows how far places differ; the
    A/A ratio within a place's rounds shows what pairing within a round
    leaves of that (a sequential plan's ratios are all within rounds).
    """
    base = next((v for v in run.variants if v.name == run.baseline), None)
    batch = latest_batch([*run.variants, *([run.control] if run.control else [])])
    place_of = places_of(run, batch)
    if base is None or not place_of:
        return []
    mine = _by_round(base, batch)
    theirs = _by_round(run.control, batch) if run.control is not None else {}
    places = sorted(set(place_of.values()))
    out = []
    for place in places:
        rounds = {r for r, w in place_of.items() if w == place}
        spread, aa = [], []
        for key, by in sorted(mine.items()):
            here = [x for r, x in by.items() if r in rounds]
            if not here:
                continue
            spread.append((key, statistics.median(here) / statistics.median(by.values())))
            control = theirs.get(key, {})
            logs = [math.log(control[r] / x) for r, x in by.items() if r in rounds and r in control]
            if logs:
                aa.append((key, math.exp(sum(logs) / len(logs))))
        if spread:
            out.append(PlaceSpread(place, len(rounds), tuple(spread), tuple(aa)))
    return out if len(out) > 1 else []


def place_lines(run: RunResult) -> list[str]:
    """place_spread in words, for both reports; [] when the rounds ran in one place."""
    spread = place_spread(run)
    if not spread:
        return []
    ratios = [x for p in spread for _, x in p.base]
    how = (
        "the sequential plan's ratios pair boots of one round, so that difference does not "
        "reach a comparison"
        if run.perf_plan is not None
        else "a fixed plan's test pools boots across places, so that difference adds to its noise"
    )
    lines = [
        f"Perf rounds ran in {len(spread)} places, each round whole in one (a block: every guest "
        f"once); {run.baseline}'s median per place was {min(ratios):.2f}x to {max(ratios):.2f}x "
        f"of its median over all places; {how}."
    ]
    for p in spread:
        aa = dict(p.aa)
        parts = [
            f"{test} {x:.2f}x" + (f" (A/A {aa[(test, m)]:.2f}x)" if (test, m) in aa else "")
            for (test, m), x in p.base
        ]
        lines.append(f"{p.where}: {p.rounds} rounds; {run.baseline}: " + ", ".join(parts))
    return lines


def _nth(n: int) -> str:
    return {1: "first", 2: "second", 3: "third", 4: "fourth", 5: "fifth"}.get(n, f"{n}th")


def answers(run: RunResult, summaries: Sequence[MetricSummary]) -> list[str]:
    """One sentence per report.questions pair: is A measurably different from B?"""
    twins = same_kernel_as(run, run.baseline) | {run.baseline}
    out = []
    for a, b in run.questions:
        ask = f"Is {a} measurably different from {b}?"
        if a in twins and b in twins:
            out.append(f"{ask} No: both boot {run.baseline}'s very build.")
            continue
        if a not in twins and b not in twins:
            out.append(f"{ask} Not compared: neither boots {run.baseline}'s build.")
            continue
        other, same = (b, a) if a in twins else (a, b)
        via = (
            f"{same} boots {run.baseline}'s build, so {other} against it: "
            if (same != run.baseline)
            else ""
        )
        parts = []
        for s in summaries:
            row = next((r for r in s.rows if r.variant == other), None)
            if s.breakdown or row is None or row.comparison is None:
                continue
            c = row.comparison
            if c.verdict is Change.SAME:
                parts.append(f"{s.test}: no, the same within ±{c.bound}%")
            elif c.verdict in (Change.FASTER, Change.SLOWER):
                parts.append(f"{s.test}: yes, {other} {c.ratio:.2f}x ({c.verdict})")
            else:
                parts.append(f"{s.test}: {c.text}")
        if not parts:
            out.append(f"{ask} Not measured{via}.")
            continue
        out.append(f"{ask} {via}" + "; ".join(parts) + ".")
    return out
