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
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import scipy.stats

from orchestrator import plan, reproduce, results, verdicts
from orchestrator.cache import Cache
from orchestrator.errors import UserError
from orchestrator.matrix import Matrix
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
    return f"the failure did not reproduce: {where} the test failed in {_counts(step)}"


def _ambiguous(skipped: tuple[int, ...], bad: int) -> str:
    names = ", ".join(str(k) for k in (*skipped, bad))
    return f"patches {names} could not all be tested (skipped): the first bad one is among them"


def _counts(step: BisectStep) -> str:
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
    return (
        f"{name}: bad in {_counts(by[k])}; good in {_counts(by[k - 1])} at {before}; "
        f"{_percent(confidence(found))} sure"
    )


def _percent(x: float) -> str:
    shown = math.floor(x * 1000) / 10  # never rounds up to a certainty it does not have
    return f"{shown:.0f}%" if shown == int(shown) else f"{shown:.1f}%"


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


class Steps:
    """The oracle of real steps: build the prefix, boot it, run the test."""

    def __init__(self, bench: reproduce.Bench, work: Path, progress: Progress) -> None:
        self.bench = bench
        self.work = work
        self.progress = progress
        self.commits = bench.commits
        self.accel: tuple[str, str] | None = None

    def __call__(self, k: int) -> BisectStep:
        commit = self.commits[k]
        step = reproduce.at(self.bench, self.work / f"step-{k}")
        test = step.ctx.matrix.tests[0]
        say = f"bisect {test.name}: {k} of {len(self.commits) - 1} patches ({commit[:12]})"
        self.progress(self.bench.variant, results.Stage.BUILD, None, say)
        built = reproduce.build_at(step, commit)
        if isinstance(built, results.StageResult):
            reason = f"{built.stage.value}: {built.reason}"
            return BisectStep(k, commit, StepStatus.SKIP, reason=reason)
        installed = reproduce.installed_for(step, commit, built)
        self.progress(self.bench.variant, results.Stage.TEST, None, f"{say}: {test.repeats} runs")
        tested = reproduce.test_on(step, built, installed, self.accel)
        self.accel = self.accel or tested.accel
        judged = judge(k, commit, tested)
        shown = {StepStatus.GOOD: results.Status.PASS, StepStatus.BAD: results.Status.FAIL}
        self.progress(
            self.bench.variant,
            results.Stage.TEST,
            shown.get(judged.status, results.Status.SKIPPED),
            f"{say}: {judged.status.value} ({_counts(judged)})",
        )
        return judged


@dataclass(frozen=True)
class Job:
    """One bisection to do."""

    variant: str
    test: str
    runs: int


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
    if test not in plan.functional_tests(matrix.tests):
        raise UserError(f"{job.test} is a perf test; bisect finds what makes a test fail")
    one = (replace(test, repeats=job.runs, retries=0),)
    where = work / job.variant / job.test
    bench = reproduce.open_bench(
        matrix, cache, where, job.variant, one, jobs=jobs, confined=confined, progress=progress
    )
    try:
        found = search(len(bench.patches), Steps(bench, where, progress))
    finally:
        reproduce.close(bench)
    return named(found, job, bench.patches)


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
    )


# --- what a run asks for, and where the answer goes -------------------------------------


def wanted(matrix: Matrix, run: RunResult) -> tuple[Job, ...]:
    """Each (variant, test) with `bisect` on that the variant fails and the baseline passes."""
    base = next((v for v in run.variants if v.name == verdicts.baseline_of(run)), None)
    if base is None:
        return ()
    base_bad = _outcomes(base)
    jobs: list[Job] = []
    for v in run.variants:
        spec = next((s for s in matrix.variants if s.name == v.name), None)
        if v is base or spec is None or not (spec.bisect or matrix.bisect.enabled):
            continue
        if not spec.series:
            continue
        for name, bad in _outcomes(v).items():
            if bad and base_bad.get(name) is False and _functional(matrix, name):
                jobs.append(Job(v.name, name, matrix.bisect.runs))
    return tuple(jobs)


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
