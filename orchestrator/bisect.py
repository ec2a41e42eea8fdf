"""The first bad patch: which patch of a variant's series makes a test fail.

A step is the series' first k patches (k = 0 is the base with the variant's
reverts), built incrementally in the variant's shared build directory,
booted, and its test run `runs` times: a step is BAD if any run fails (a
flaky failure must not pass for good), GOOD if none does, and SKIP when it
does not configure, build or boot (as `git bisect skip`).  The search is a
binary search over k between a good 0 and a bad N (the run saw the whole
series fail and the baseline pass), confirmed at the ends it did not test,
so the result always has counts on both sides of the first bad patch:

    patch 2 (bpf: ...): bad in 5/5 runs; good in 0/5 runs at patch 1; 100% sure

`search` is pure (a step oracle in, the steps and the answer out); `bisect`
is the oracle of real builds and boots (reproduce.Bench); `after_run` finds
what a finished run asks to bisect, and `record` puts a Bisection on its
variant in results.json.

A perf test is bisected the same way with another oracle (PerfSteps): a
step's kernel boots `runs` times, one sample of the metric per boot (the
project's independent sample, DESIGN "Perf methodology"), the base's kernel
the same way once, and `judge_perf` compares the two with stats.compare: a
step is BAD when that says slower, GOOD when it says faster or no
measurable change, SKIP when it cannot tell (inconclusive) or has no samples.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import scipy.stats

from orchestrator import perf, plan, reproduce, results, stats, units, verdicts
from orchestrator.cache import Cache
from orchestrator.errors import UserError
from orchestrator.matrix import Matrix, Test
from orchestrator.results import Bisection, BisectStep, RunResult, StepStatus, VariantResult
from orchestrator.units import Progress, Tested

LOW = 0.1  # the failure rate taken for `confidence`: a low quantile of its posterior
Oracle = Callable[[int], BisectStep]  # k patches applied -> that step tested


@dataclass(frozen=True)
class Found:
    """What the search concluded (before the patches are named)."""

    steps: tuple[BisectStep, ...]  # in the order they were tested
    first_bad: int = 0  # 1-based; 0: not found
    candidates: tuple[int, ...] = ()  # skips left these patches possible
    why: str = ""  # when there is no first bad patch
    metric: str = ""  # a perf bisection's metric; "" for a functional test
    base: tuple[float, ...] = ()  # a perf bisection's samples of the base (patches 0)


def search(count: int, oracle: Oracle) -> Found:
    """Binary search for the first bad patch among `count`, assuming the
    base good and the whole series bad, then testing whichever of the two
    steps around the answer it has not tested (so both have counts)."""
    if count < 1:
        return Found((), why="the variant has no patches to bisect")
    tested: dict[int, BisectStep] = {}
    order: list[BisectStep] = []

    def test(k: int) -> BisectStep:
        if k not in tested:
            tested[k] = oracle(k)
            order.append(tested[k])
        return tested[k]

    good, bad = 0, count
    while bad - good > 1:
        left = [k for k in range(good + 1, bad) if k not in tested]  # tested here: skipped
        if not left:
            break
        middle = (good + bad) / 2
        step = test(min(left, key=lambda k: (abs(k - middle), k)))
        if step.status is StepStatus.BAD:
            bad = step.patches
        elif step.status is StepStatus.GOOD:
            good = step.patches
    # Confirm the ends the search took on trust.
    end = test(bad)
    if end.status is StepStatus.GOOD:
        return Found(tuple(order), why=_not_reproduced(end, count))
    if end.status is StepStatus.SKIP and bad == count:
        return Found(tuple(order), why=f"the whole series cannot be tested: {end.reason}")
    start = test(good)
    if start.status is StepStatus.BAD:
        where = "the base (no patches)" if good == 0 else f"patch {good}"
        return Found(tuple(order), why=f"it fails at {where} too: {_counts(start)}")
    if start.status is StepStatus.SKIP:
        return Found(tuple(order), why=f"the base cannot be tested: {start.reason}")
    skipped = tuple(k for k in range(good + 1, bad) if tested[k].status is StepStatus.SKIP)
    if skipped:
        return Found(tuple(order), candidates=(*skipped, bad), why=_ambiguous(skipped, bad))
    return Found(tuple(order), first_bad=bad)


def _not_reproduced(step: BisectStep, count: int) -> str:
    where = "with the whole series" if step.patches == count else f"at patch {step.patches}"
    if step.ratio is not None:
        return f"the slowdown did not reproduce: {where} it measured {_counts(step)}"
    return f"the failure did not reproduce: {where} the test failed in {_counts(step)}"


def _ambiguous(skipped: tuple[int, ...], bad: int) -> str:
    names = ", ".join(str(k) for k in (*skipped, bad))
    return f"patches {names} could not all be tested (skipped): the first bad one is among them"


def _counts(step: BisectStep) -> str:
    if step.ratio is not None:  # a perf step
        low, high = step.ci_low, step.ci_high
        ci = f" (95% CI {low:.2f}-{high:.2f})" if low is not None and high is not None else ""
        return f"{step.ratio:.2f}x of the base{ci} in {step.runs} boots"
    return f"{step.failures}/{step.runs} runs"


def confidence(found: Found) -> float:
    """How sure the answer is: the chance that no GOOD step was really bad.

    A step judged good saw no failure in r runs; had it the bad steps'
    failure rate p, that happens with probability (1 - p)^r.  p is taken
    low on purpose: the 10th percentile of its Jeffreys posterior from the
    failures f in n runs of every BAD step, so 5/5 does not claim certainty
    and a rare flake says how little it shows.  The answer is right if every
    good step below it was; a bad step cannot mislead the other way unless
    the test fails without the series, which the base step checks.
    Simulated (tests/unit/test_bisect.py; 8 patches, 5 runs a step, from the
    5th on the test fails in 5 %, 10 %, 30 %, 60 % of runs): of the patches
    it named, 9 %, 20 %, 71 %, 98 % were right, at a mean confidence of
    11 %, 19 %, 55 %, 89 %.
    """
    if not found.first_bad:
        return 0.0
    if found.metric:
        return perf_confidence(found)
    bad = [s for s in found.steps if s.status is StepStatus.BAD]
    failures, runs = sum(s.failures for s in bad), sum(s.runs for s in bad)
    p = float(scipy.stats.beta.ppf(LOW, failures + 0.5, runs - failures + 0.5))
    sure = 1.0
    for step in found.steps:
        if step.status is StepStatus.GOOD and step.patches < found.first_bad:
            sure *= 1.0 - (1.0 - p) ** step.runs
    return sure


def summary(found: Found, subject: str = "") -> str:
    """One line: the patch and the counts on both sides of it, or why there is none."""
    if not found.first_bad:
        return found.why
    k = found.first_bad
    by = {s.patches: s for s in found.steps}
    before = "the base (no patches)" if k == 1 else f"patch {k - 1}"
    name = f"patch {k}" + (f" ({subject})" if subject else "")
    bad, good = ("bad in", "good in")
    if found.metric:
        bad, good = f"{found.metric} slower:", "not slower:"
    return (
        f"{name}: {bad} {_counts(by[k])}; {good} {_counts(by[k - 1])} at {before}; "
        f"{_percent(confidence(found))} sure"
    )


def _percent(x: float) -> str:
    shown = math.floor(x * 1000) / 10  # never rounds up to a certainty it does not have
    return f"{shown:.0f}%" if shown == int(shown) else f"{shown:.1f}%"


# --- perf steps (pure) ------------------------------------------------------------------

MISSED = 0.5  # the chance a GOOD step saw a slowdown smaller than it could detect: a coin


def judge_perf(
    k: int, commit: str, metric: str, values: Sequence[float], base: Sequence[float]
) -> BisectStep:
    """A perf step from its samples (one per boot) against the base's, by stats.compare.

    BAD when the comparison says slower (p < alpha and the ratio's interval
    excludes 1, in the metric's direction), GOOD when faster or no measurable
    change, SKIP when it cannot tell (too few samples, a noisy base, a wide
    interval): a step it cannot judge is one the search steps around.
    """
    if not values:
        return BisectStep(k, commit, StepStatus.SKIP, reason=f"no samples of {metric}")
    c = stats.compare(metric, f"patch {k}", values, "base", base)
    numbers = {
        "median": _finite(statistics.median(values)),
        "ratio": _finite(c.ratio),
        "ci_low": _finite(c.ci_low),
        "ci_high": _finite(c.ci_high),
        "p": _finite(c.p),
    }
    step = BisectStep(k, commit, StepStatus.GOOD, 0, len(values), c.text, **numbers)
    if c.verdict is stats.Change.SLOWER:
        return replace(step, status=StepStatus.BAD, reason=f"slower (p={c.p:.3g})")
    if c.verdict is stats.Change.INCONCLUSIVE or numbers["ratio"] is None:
        return replace(step, status=StepStatus.SKIP)
    return step


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def base_step(commit: str, metric: str, base: Sequence[float]) -> BisectStep:
    """The base (no patches) that every perf step is compared with: GOOD by definition."""
    if not base:
        return BisectStep(0, commit, StepStatus.SKIP, reason=f"no samples of {metric}")
    median = statistics.median(base)
    return BisectStep(
        0, commit, StepStatus.GOOD, 0, len(base), "the base", median, 1.0, 1.0, 1.0, 1.0
    )


def perf_confidence(found: Found) -> float:
    """How sure a perf answer is: its slowdown is no chance, and no GOOD step missed it.

    (1 - p) of the first bad step's Mann-Whitney test, times for each GOOD
    step below it the chance it would have seen the same slowdown: 95 %
    (the power stats.detectable_change is computed for) when the slowdown is
    at least what that step's samples against the base's could detect, else
    MISSED.
    """
    by = {s.patches: s for s in found.steps}
    bad = by.get(found.first_bad)
    if bad is None or bad.ratio is None or bad.p is None or not bad.ratio > 0:
        return 0.0
    ratio = bad.ratio
    drop = 1.0 - ratio if stats.higher_is_better(found.metric) else 1.0 - 1.0 / ratio
    spread = stats.cv(found.base)
    sure = 1.0 - bad.p
    for step in found.steps:
        if step.status is StepStatus.GOOD and 0 < step.patches < found.first_bad:
            seen = stats.detectable_change(len(found.base), step.runs, spread)
            sure *= 0.95 if drop >= seen else MISSED  # nan (no spread known): MISSED
    return sure


# --- real steps -----------------------------------------------------------------------


def judge(k: int, commit: str, tested: Tested) -> BisectStep:
    """A step from its boot and the runs of its test."""
    if tested.stage.status is not results.Status.PASS:
        return BisectStep(k, commit, StepStatus.SKIP, reason=f"boot: {tested.stage.reason}")
    judged = [(t, reproduce.failed(t)) for t in tested.tests]
    runs = [(t, bad) for t, bad in judged if bad is not None]
    fails = [t for t, bad in runs if bad]
    if not runs:
        reason = judged[0][0].reason if judged else "the test did not run"
        return BisectStep(k, commit, StepStatus.SKIP, reason=f"not run: {reason}")
    if not fails:
        return BisectStep(k, commit, StepStatus.GOOD, 0, len(runs))
    first = fails[0]
    reason = f"{first.label}: {verdicts.outcome_of(first).word} {first.reason}".strip()
    return BisectStep(k, commit, StepStatus.BAD, len(fails), len(runs), reason)


class _Prefixes:
    """Step k's kernel (the base and the series' first k patches), built
    incrementally in the variant's build directory, booted and tested."""

    def __init__(self, bench: reproduce.Bench, work: Path, progress: Progress) -> None:
        self.bench = bench
        self.work = work
        self.progress = progress
        self.commits = bench.commits
        self.accel: tuple[str, str] | None = None

    def _test(self) -> Test:
        return self.bench.ctx.matrix.tests[0]

    def _say(self, k: int) -> str:
        commit = self.commits[k]
        return f"bisect {self._test().name}: {k} of {len(self.commits) - 1} patches ({commit[:12]})"

    def _tested(self, k: int, testing: str = "") -> tuple[reproduce.Bench, Tested] | BisectStep:
        """Build step k and run its guest (and test, saying `testing`); a SKIP step
        when it does not build."""
        commit = self.commits[k]
        step = reproduce.at(self.bench, self.work / f"step-{k}")
        self.progress(self.bench.variant, results.Stage.BUILD, None, self._say(k))
        built = reproduce.build_at(step, commit)
        if isinstance(built, results.StageResult):
            reason = f"{built.stage.value}: {built.reason}"
            return BisectStep(k, commit, StepStatus.SKIP, reason=reason)
        installed = reproduce.installed_for(step, commit, built)
        if testing:
            self.progress(self.bench.variant, results.Stage.TEST, None, testing)
        tested = reproduce.test_on(step, built, installed, self.accel)
        self.accel = self.accel or tested.accel
        return step, tested

    def _shown(self, k: int, judged: BisectStep) -> BisectStep:
        shown = {StepStatus.GOOD: results.Status.PASS, StepStatus.BAD: results.Status.FAIL}
        self.progress(
            self.bench.variant,
            results.Stage.TEST,
            shown.get(judged.status, results.Status.SKIPPED),
            f"{self._say(k)}: {judged.status.value} ({_counts(judged)})",
        )
        return judged


class Steps(_Prefixes):
    """The oracle of real steps: build the prefix, boot it, run the test."""

    def __call__(self, k: int) -> BisectStep:
        tested = self._tested(k, f"{self._say(k)}: {self._test().repeats} runs")
        if isinstance(tested, BisectStep):
            return tested
        return self._shown(k, judge(k, self.commits[k], tested[1]))


class PerfSteps(_Prefixes):
    """The oracle of perf steps: build the prefix, boot it once (the BOOT
    check, as a run's functional unit), then `runs` boots with one sample of
    the metric each; the base's kernel is sampled the same way, once, first."""

    def __init__(self, bench: reproduce.Bench, work: Path, progress: Progress, metric: str) -> None:
        super().__init__(bench, work, progress)
        self.metric = metric  # "": the base's first headline metric
        self.base: tuple[float, ...] = ()
        self._base: BisectStep | None = None

    def start(self) -> BisectStep:
        """The base, sampled once: every step is compared with its samples."""
        if self._base is None:
            sampled = self._sample(0)
            if isinstance(sampled, BisectStep):
                self._base = sampled
                return sampled
            self.metric = self.metric or _headline(self._test().name, sampled)
            known = sorted({m for s in sampled for m in s})
            if sampled and self.metric not in known:
                test = self._test().name
                raise UserError(
                    f"{test}: the base reports no metric {self.metric!r} "
                    f"(it reports: {', '.join(known) or 'none'})"
                )
            self.base = tuple(s[self.metric] for s in sampled if self.metric in s)
            self._base = base_step(self.commits[0], self.metric, self.base)
        return self._base

    def __call__(self, k: int) -> BisectStep:
        if k == 0:
            return self.start()
        self.start()
        sampled = self._sample(k)
        if isinstance(sampled, BisectStep):
            return sampled
        values = [s[self.metric] for s in sampled if self.metric in s]
        return self._shown(k, judge_perf(k, self.commits[k], self.metric, values, self.base))

    def _sample(self, k: int) -> list[dict[str, float]] | BisectStep:
        """The test's metrics from each of `runs` boots of step k's kernel."""
        commit = self.commits[k]
        done_step = self._tested(k)  # boots; a perf test is not run there
        if isinstance(done_step, BisectStep):
            return done_step
        step, tested = done_step
        test = self._test()
        if tested.stage.status is not results.Status.PASS:
            return BisectStep(k, commit, StepStatus.SKIP, reason=f"boot: {tested.stage.reason}")
        guest, samples = tested.guest, []
        for round_ in range(1, test.repeats + 1):
            sampled = units.perf_round(step.ctx, 1, round_, (guest,), step.setup, self.accel)
            (done,) = sampled.samples
            guest = done.guest
            samples += [
                dict(t.metrics)
                for t in done.tests
                if t.name == test.name and t.verdict is not results.Verdict.ERROR and t.metrics
            ]
        return samples


def _headline(test: str, sampled: Sequence[dict[str, float]]) -> str:
    """The first metric the test reports that is no breakdown of another (map_perf's
    events_per_sec, not events_per_sec_cpu0)."""
    names = list(dict.fromkeys(m for s in sampled for m in s))
    details = perf.breakdowns((test, m) for m in names)
    return next((m for m in names if (test, m) not in details), "")


@dataclass(frozen=True)
class Job:
    """One bisection to do."""

    variant: str
    test: str
    runs: int
    metric: str = ""  # a perf test's metric ("": the base's first headline metric)


def is_perf(matrix: Matrix, test: str) -> bool:
    return not _functional(matrix, test)


def default_runs(matrix: Matrix, test: str) -> int:
    """The matrix's runs per step; a perf step takes at least stats.MIN_SAMPLES boots."""
    runs = matrix.bisect.runs
    return max(runs, stats.MIN_SAMPLES) if is_perf(matrix, test) else runs


def bisect(
    matrix: Matrix,
    cache: Cache,
    work: Path,
    job: Job,
    *,
    jobs: int = 2,
    confined: bool = True,
    progress: Progress,
) -> Bisection:
    """Find the first patch of job.variant's series that makes job.test fail.

    The caller holds the cache lock.  Steps write under work/<variant>/<test>/.
    """
    if job.variant not in {v.name for v in matrix.variants}:
        raise UserError(f"{job.variant}: no such variant in {matrix.path}")
    test = next((t for t in matrix.tests if t.name == job.test), None)
    if test is None:
        names = ", ".join(t.name for t in matrix.tests) or "none"
        raise UserError(f"no test {job.test!r} in the matrix (its tests: {names})")
    slower = is_perf(matrix, job.test)
    if slower and job.runs < stats.MIN_SAMPLES:
        raise UserError(
            f"{job.test} is a perf test: a step takes at least {stats.MIN_SAMPLES} boots "
            f"to compare (one sample each), not {job.runs}"
        )
    if job.metric and not slower:
        raise UserError(f"{job.test} is a functional test: --metric is for a perf test")
    one = (replace(test, repeats=job.runs, retries=0),)
    where = work / job.variant / job.test
    bench = reproduce.open_bench(
        matrix, cache, where, job.variant, one, jobs=jobs, confined=confined, progress=progress
    )
    try:
        if slower:
            found = _search_perf(bench, where, progress, job.metric)
        else:
            found = search(len(bench.patches), Steps(bench, where, progress))
    finally:
        reproduce.close(bench)
    return named(found, job, bench.patches)


def _search_perf(bench: reproduce.Bench, where: Path, progress: Progress, metric: str) -> Found:
    """The perf search: the base sampled first, then the same binary search."""
    oracle = PerfSteps(bench, where, progress, metric)
    if not bench.patches:
        return search(0, oracle)
    base = oracle.start()
    if base.status is StepStatus.SKIP:
        return Found((base,), why=f"the base cannot be tested: {base.reason}", metric=metric)
    found = search(len(bench.patches), oracle)
    steps = found.steps if any(s.patches == 0 for s in found.steps) else (base, *found.steps)
    return replace(found, steps=steps, metric=oracle.metric, base=oracle.base)


def named(found: Found, job: Job, patches: tuple[results.PatchResult, ...]) -> Bisection:
    """The search's answer as the results record, the first bad patch named."""
    subject = commit = source = ""
    if found.first_bad:
        patch = patches[found.first_bad - 1]
        subject, commit, source = patch.subject, patch.commit or "", patch.source
    return Bisection(
        test=job.test,
        runs=job.runs,
        steps=found.steps,
        first_bad=found.first_bad,
        candidates=found.candidates,
        subject=subject,
        commit=commit,
        source=source,
        confidence=confidence(found),
        summary=summary(found, subject),
        metric=found.metric,
    )


# --- what a run asks for, and where the answer goes -------------------------------------


def wanted(matrix: Matrix, run: RunResult) -> tuple[Job, ...]:
    """Each (variant, test) with `bisect` on that the variant fails and the baseline
    passes, then each (variant, perf test, metric) the run found slower than the baseline."""
    base = next((v for v in run.variants if v.name == verdicts.baseline_of(run)), None)
    if base is None:
        return ()
    base_bad = _outcomes(base)
    jobs: list[Job] = []
    slower = _slower(run)
    for v in run.variants:
        spec = next((s for s in matrix.variants if s.name == v.name), None)
        if v is base or spec is None or not (spec.bisect or matrix.bisect.enabled):
            continue
        if not spec.series:
            continue
        for name, bad in _outcomes(v).items():
            if bad and base_bad.get(name) is False and _functional(matrix, name):
                jobs.append(Job(v.name, name, matrix.bisect.runs))
        for test, metric in slower.get(v.name, ()):
            if is_perf(matrix, test) and any(t.name == test for t in matrix.tests):
                jobs.append(Job(v.name, test, default_runs(matrix, test), metric))
    return tuple(jobs)


def _slower(run: RunResult) -> dict[str, list[tuple[str, str]]]:
    """variant -> the (test, headline metric) the run's perf comparison found slower,
    one metric per test (the first)."""
    out: dict[str, list[tuple[str, str]]] = {}
    for summary_ in perf.perf(run):
        if summary_.breakdown:
            continue
        for row in summary_.rows:
            c = row.comparison
            mine = out.setdefault(row.variant, [])
            first = all(test != summary_.test for test, _ in mine)
            if c is not None and c.verdict is stats.Change.SLOWER and first:
                mine.append((summary_.test, summary_.metric))
    return out


def metric_for(run: RunResult, variant: str, test: str) -> str:
    """The metric to bisect a perf test by when none is named: the one the run
    found slower for this variant, else "" (the base's first headline metric)."""
    return next((m for t, m in _slower(run).get(variant, ()) if t == test), "")


def _outcomes(variant: VariantResult) -> dict[str, bool]:
    """Each test of a variant that ran: whether any run of it failed."""
    out: dict[str, bool] = {}
    for t in variant.tests:
        bad = reproduce.failed(t)
        if bad is not None:
            out[t.name] = out.get(t.name, False) or bad
    return out


def _functional(matrix: Matrix, name: str) -> bool:
    return any(t.name == name for t in plan.functional_tests(matrix.tests))


def record(run: RunResult, variant: str, found: Iterable[Bisection]) -> RunResult:
    """The run with these bisections on the variant (replacing earlier ones of a test)."""
    new = tuple(found)
    tests = {b.test for b in new}
    variants = tuple(
        replace(v, bisect=(*(b for b in v.bisect if b.test not in tests), *new))
        if v.name == variant
        else v
        for v in run.variants
    )
    return replace(run, variants=variants)


def after_run(
    matrix: Matrix,
    cache: Cache,
    run: RunResult,
    run_dir: Path,
    *,
    jobs: int,
    confined: bool,
    progress: Progress,
) -> RunResult:
    """Every bisection the matrix asks of a finished run, recorded on the run."""
    for job in wanted(matrix, run):
        with cache.locked():
            found = bisect(
                matrix,
                cache,
                run_dir / "bisect",
                job,
                jobs=jobs,
                confined=confined,
                progress=progress,
            )
        run = record(run, job.variant, (found,))
    return run
