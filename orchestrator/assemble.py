"""The run's results, folded from the results of its units (pure).

The runner calls this after every unit, so results.json is always a valid
picture of what has happened so far: a variant whose later units have not
run yet simply has fewer stages, and the run says why it is incomplete.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from orchestrator import aa_control, flakes, verdicts
from orchestrator.plan import Unit, UnitKind, unit_id
from orchestrator.results import (
    Batch,
    PerfPlan,
    Quarantine,
    RunResult,
    Stage,
    StageResult,
    Status,
    TestResult,
    VariantResult,
)
from orchestrator.units import Applied, Built, Configured, Output, Round, Tested
from orchestrator.vm import testbed

STAGES = (Stage.APPLY, Stage.KCONFIG, Stage.BUILD, Stage.BOOT, Stage.TEST)

# The unit behind each stage a variant shows, in order (TEST is judged over all its tests).
_CHAIN = (
    (UnitKind.APPLY, Stage.APPLY),
    (UnitKind.CONFIGURE, Stage.KCONFIG),
    (UnitKind.BUILD, Stage.BUILD),
    (UnitKind.FUNCTIONAL, Stage.BOOT),
)


@dataclass(frozen=True)
class UnitResult:
    unit: str
    output: Output | None  # None: the unit was skipped
    seconds: float = 0.0
    skipped: str = ""  # why it was skipped


@dataclass(frozen=True)
class RunMeta:
    """What the run is, known before any unit runs."""

    matrix: str  # the matrix file
    started: str
    run_dir: Path
    variants: tuple[str, ...]  # the selected variants, in matrix order
    baseline: str
    until: Stage = Stage.TEST
    host: dict[str, str] = field(default_factory=dict)
    quarantine: tuple[Quarantine, ...] = ()  # the matrix's, as of the run's start (flakes.py)
    questions: tuple[tuple[str, str], ...] = ()  # the matrix's report.questions


def run_result(
    meta: RunMeta,
    units: Sequence[Unit],
    done: Mapping[str, UnitResult],
    *,
    finished: str,
    batches: Sequence[Batch] = (),
    incomplete: str = "",
    perf_plan: PerfPlan | None = None,
) -> RunResult:
    rounds = [done[u.id] for u in units if u.kind is UnitKind.PERF_ROUND and u.id in done]
    perf_done = all(u.id in done for u in units if u.kind is UnitKind.PERF_ROUND)
    variants = tuple(_variant(meta, name, done, rounds, perf_done) for name in meta.variants)
    return RunResult(
        matrix=meta.matrix,
        started=meta.started,
        finished=finished,
        variants=variants,
        host=dict(meta.host),
        baseline=meta.baseline,
        control=_control(meta, variants, rounds, perf_done),
        batches=tuple(batches),
        incomplete=incomplete,
        quarantine=meta.quarantine,
        perf_plan=perf_plan,
        questions=meta.questions,
    )


def stages_to(until: Stage) -> tuple[Stage, ...]:
    return STAGES[: STAGES.index(until) + 1]


def _variant(
    meta: RunMeta,
    name: str,
    done: Mapping[str, UnitResult],
    rounds: Sequence[UnitResult],
    perf_done: bool,
) -> VariantResult:
    wanted = stages_to(meta.until)
    result = VariantResult(name, ())
    stages: list[StageResult] = []
    for kind, stage in _CHAIN:
        if stage not in wanted:
            break
        unit = done.get(unit_id(kind, name))
        if unit is None:  # not run yet
            return replace(result, stages=tuple(stages))
        if unit.output is None:
            stages += _skipped(wanted, stages, unit.skipped)
            return replace(result, stages=tuple(stages))
        current = replace(_stage_of(unit.output), duration=round(unit.seconds, 3))
        stages.append(current)
        result = _with(result, unit.output)
        if current.status is not Status.PASS:
            reason = f"{stage.value} failed: {current.reason}"
            stages += _skipped(wanted, stages, reason)
            return replace(result, stages=tuple(stages))
    if Stage.TEST in wanted:
        tests = flakes.mark((*result.tests, *_samples(rounds, name)), meta.quarantine)
        result = replace(result, tests=tests)
        if perf_done:
            judged = verdicts.judge_tests(tests)
            stages.append(replace(judged, duration=sum(t.duration for t in tests)))
    return replace(result, stages=tuple(stages))


def _stage_of(output: Output) -> StageResult:
    assert isinstance(output, Applied | Configured | Built | Tested)
    return output.stage


def _with(result: VariantResult, output: Output) -> VariantResult:
    if isinstance(output, Applied):
        return replace(
            result, base=output.base, head=output.head, patches=output.patches, mail=output.mail
        )
    if isinstance(output, Configured):
        return replace(result, kconfig=output.configured.mismatches)
    if isinstance(output, Built):
        return replace(result, build=output.build)
    if isinstance(output, Tested):
        return replace(result, boot=output.guest.boot_info, tests=output.tests)
    return result


def _skipped(
    wanted: Sequence[Stage], so_far: Sequence[StageResult], reason: str
) -> list[StageResult]:
    rest = wanted[len(so_far) :]
    return [StageResult(stage, Status.SKIPPED, reason) for stage in rest]


def _samples(rounds: Sequence[UnitResult], name: str) -> tuple[TestResult, ...]:
    out: list[TestResult] = []
    for r in rounds:
        if isinstance(r.output, Round):
            out += [t for s in r.output.samples if s.guest.name == name for t in s.tests]
    return tuple(out)


def _control(
    meta: RunMeta,
    variants: Sequence[VariantResult],
    rounds: Sequence[UnitResult],
    perf_done: bool,
) -> VariantResult | None:
    """The A/A control: the baseline's kernel measured as a variant of its own."""
    name = aa_control.name_for(meta.baseline)
    states = [
        s.guest for r in rounds if isinstance(r.output, Round) for s in r.output.samples
        if s.guest.name == name
    ]  # fmt: skip
    base = next((v for v in variants if v.name == meta.baseline), None)
    if not states or base is None:
        return None
    last = states[-1]
    tests = _samples(rounds, name)
    logs = meta.run_dir / "logs" / name
    stages = [testbed.boot_stage(logs, last.boot_info, last.boot_failure)]
    if perf_done:
        stages.append(verdicts.judge_tests(tests))
    built = base.build
    return VariantResult(
        name,
        tuple(stages),
        base=base.base,
        head=base.head,
        build=replace(built, shared_with=base.name) if built is not None else None,
        boot=last.boot_info,
        tests=tests,
    )
