"""Runs a plan: hands ready units to an executor and folds their results.

The plan (plan.py) says what to do; the units (units.py) do it; this module
decides what is ready, skips what cannot run because its variant already
failed, and after every unit writes results.json (assemble.py), so a run
that is stopped leaves valid, partial results marked incomplete.  A stage
that fails marks its variant's later stages SKIPPED; other variants go on.
Kernel problems are results; only the tool's own faults (UserError,
InfraError) and interruptions propagate, after the partial results are
written.
"""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from orchestrator import (
    aa_control,
    flakes,
    journal,
    perf,
    plan,
    results,
    sandbox,
    sequential,
    units,
    verdicts,
)
from orchestrator.assemble import RunMeta, UnitResult, run_result, stages_to
from orchestrator.cache import Cache
from orchestrator.errors import UserError
from orchestrator.executor import Executor, SerialExecutor, perf_blocks, placement_of
from orchestrator.journal import Journal
from orchestrator.kernel import build, series, source
from orchestrator.matrix import Matrix
from orchestrator.plan import STAGE_OF, Unit, UnitKind, unit_id
from orchestrator.progress import (
    Estimate,
    PerfRound,
    RunningUnit,
    RunStatus,
    StatusSink,
    estimate_left,
)
from orchestrator.results import Batch, PerfPlan, RunResult, Stage
from orchestrator.sequential import State
from orchestrator.suites import Installed
from orchestrator.units import Context, GuestState, Progress

RESULTS = "results.json"


@dataclass(frozen=True)
class Options:
    cache: Cache
    run_dir: Path
    jobs: int = 2
    only: tuple[str, ...] = ()
    until: Stage = Stage.TEST  # the last stage to run
    started: str = ""  # ISO time the run started; "" means when Runner.run starts
    sandbox: bool = True  # code from the tree under test runs confined (sandbox.py)


def collect_series(matrix: Matrix, only: tuple[str, ...]) -> dict[str, tuple[series.Patch, ...]]:
    """Read every patch up front, so bad input fails before anything starts."""
    return {v.name: series.collect(v.series) for v in plan.selected(matrix, only)}


class Runner:
    def __init__(
        self,
        matrix: Matrix,
        options: Options,
        progress: Progress,
        executor: Executor | None = None,
    ) -> None:
        self.matrix = matrix
        self.options = options
        self.progress = progress
        self.executor: Executor = executor or SerialExecutor()
        self.units: list[Unit] = []
        self.done: dict[str, UnitResult] = {}
        self.running: dict[Future[Any], tuple[Unit, float]] = {}
        self.batches: list[Batch] = []
        self.built: dict[str, str] = {}  # artifact dir -> the variant that built it in this run
        self.guests: dict[str, GuestState] = {}  # a guest's latest state, by the name it runs as
        self.accel: tuple[str, str] | None = None  # chosen at the first boot
        self._shown: dict[str, int] = {}  # stages already announced, per variant
        self._started: set[str] = set()  # units handed to the executor
        self.perf_plan = perf_plan_of(matrix)  # None: fixed rounds
        if self.perf_plan is not None:
            # Rounds side by side, one per CPU set or worker: only a sequential
            # plan, whose verdicts pair boots within a round (a block); a fixed
            # plan's test pools boots across rounds, so its rounds go one by one.
            self.perf_plan = replace(self.perf_plan, blocks=perf_blocks(self.executor))
        self.perf_stopped = ""  # why a sequential plan's rounds stopped

    @property
    def results_path(self) -> Path:
        return self.options.run_dir / RESULTS

    def run(
        self, patches: dict[str, tuple[series.Patch, ...]], resume: Journal | None = None
    ) -> RunResult:
        """Every unit of the plan; results.json is written after each one.

        With `resume`, the journal of an interrupted run of the same plan in
        the same run directory: its units are not run again.
        """
        opts = self.options
        names = tuple(v.name for v in plan.selected(self.matrix, opts.only))
        started = resume.started if resume else opts.started or _now()
        self.meta = RunMeta(
            matrix=str(self.matrix.path),
            started=started,
            run_dir=opts.run_dir,
            variants=names,
            baseline=verdicts.choose_baseline(names, self.matrix.report.baseline),
            until=opts.until,
            host=host(),
            # Which quarantine entries hold is decided once, by the run's start date.
            quarantine=flakes.quarantine_on(self.matrix.quarantine, flakes.run_day(started)),
            questions=self.matrix.report.questions,
        )
        confined = sandbox.for_run(
            cache=opts.cache.root,
            run_dir=opts.run_dir,
            reports=self.matrix.report.dir,
            enabled=opts.sandbox,
        )
        self.ctx = Context(
            self.matrix, opts.cache, opts.run_dir, patches, opts.jobs, self.progress, confined
        )
        with opts.cache.locked():
            repo = source.cache_path(self.matrix.tree, opts.cache.root)
            self.units = list(plan.units(self.matrix, opts.only, opts.until, repo, opts.cache.work))
            if resume is not None:
                self._resume(resume)
            try:
                self._loop()
            except KeyboardInterrupt as exc:
                why = getattr(exc, "signal_name", "Ctrl-C")
                self._write(f"interrupted ({why}) after {self._count()}")
                raise
            except BaseException as exc:
                self._write(f"stopped by an error after {self._count()}: {exc}")
                raise
            finally:
                self.executor.shutdown()
                self._remove_sockets()
            return self._write("")

    # --- the loop ---------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            if self._start_next():
                continue
            if not self.running:
                left = [u.id for u in self.units if u.id not in self.done]
                assert not left, f"units that can never run: {left}"  # a plan bug
                return
            finished, _ = wait(list(self.running), return_when=FIRST_COMPLETED)
            for future in finished:
                self._finish(future)

    def _start_next(self) -> bool:
        """Start (or skip) the first ready unit in plan order; False when none is."""
        for unit in self.units:
            if unit.id in self.done or unit.id in self._started:
                continue
            if not all(d in self.done for d in unit.deps):
                continue
            why = self._skip_reason(unit)
            if why is not None:
                self._record(UnitResult(unit.id, None, skipped=why), unit)
                return True
            if len(self.running) >= self.executor.capacity:
                return False
            self._announce_start(unit)
            start = time.monotonic()  # before submit: the serial executor runs the unit in it
            future = self.executor.submit(unit, self._work(unit))
            self.running[future] = (unit, start)
            self._started.add(unit.id)
            if future.done():
                self._finish(future)
            return True
        return False

    def _finish(self, future: Future[Any]) -> None:
        unit, start = self.running.pop(future)
        output = future.result()  # the unit's own fault propagates from here
        seconds = time.monotonic() - start
        result = UnitResult(unit.id, output, seconds, placement=placement_of(self.executor, unit))
        self._absorb(unit, result)
        self.done[unit.id] = result
        # The next round is planned before results.json and the journal are
        # written, so a run stopped in between resumes with it.
        if unit.kind is UnitKind.PERF_ROUND and self._last_perf_unit():
            last = max(self._perf_units(), key=lambda u: (u.batch, u.round))
            if self.perf_plan is None:
                self._end_batch(last)
            else:
                self._after_round(last)
        self._record(result, unit)

    def _perf_units(self) -> list[Unit]:
        return [u for u in self.units if u.kind is UnitKind.PERF_ROUND]

    def _wave(self, unit: Unit) -> list[Unit]:
        """The perf rounds planned side by side with this one: its batch's rounds
        after the same rounds (_plan_wave); a round alone on a serial run."""
        return [u for u in self._perf_units() if (u.batch, u.after) == (unit.batch, unit.after)]

    def _last_perf_unit(self) -> bool:
        return all(u.id in self.done for u in self._perf_units())

    def _absorb(self, unit: Unit, result: UnitResult) -> None:
        """What later units need to know of a finished one."""
        output = result.output
        if isinstance(output, units.Built) and not output.build.cached:
            self.built[output.build.artifact_dir] = unit.variant
        if isinstance(output, units.Tested):
            self.guests[output.guest.name] = output.guest
            self.accel = self.accel or output.accel
        if isinstance(output, units.Round):
            for sample in output.samples:
                # Rounds side by side each numbered their boots from their own offset
                # (_work): the guest goes on from the highest.
                known = self.guests.get(sample.guest.name)
                if known is None or sample.guest.boots >= known.boots:
                    self.guests[sample.guest.name] = sample.guest

    def _resume(self, journal: Journal) -> None:
        """Take over an interrupted run's plan and finished units."""
        planned = [(u.id, u.inputs, u.deps) for u in self.units]
        recorded = [(u.id, u.inputs, u.deps) for u in journal.units[: len(self.units)]]
        if planned != recorded:
            changed = next((a[0] for a, b in zip(planned, recorded, strict=False) if a != b), "")
            raise UserError(
                f"{self.options.run_dir}: cannot resume: the matrix, its series or its tests "
                f"changed since that run (first difference: unit {changed or 'count'})"
            )
        self.units = list(journal.units)
        self.batches = list(journal.batches)
        self.perf_stopped = journal.perf_stopped
        by_id = {u.id: u for u in self.units}
        for result in journal.done:
            if isinstance(result.output, units.GuestReady):
                # The sockets directory of the stopped run is gone with it.
                sockets = Path(tempfile.mkdtemp(prefix="orchestrate-"))
                setup = replace(result.output.setup, sockets=sockets)
                result = replace(result, output=units.GuestReady(setup))
            self.done[result.unit] = result
            self._absorb(by_id[result.unit], result)
        self._announce(self._assemble("resuming"))

    def _record(self, result: UnitResult, unit: Unit) -> None:
        self.done[unit.id] = result
        run = self._write(f"running: {self._count()}")
        self._announce(run)
        self._status()

    def _skip_reason(self, unit: Unit) -> str | None:
        failed = [d for d in unit.needs if not units.passed(self.done[d].output)]
        if failed:
            return f"needs {', '.join(failed)}, which did not pass"
        if unit.needs_any and not any(units.passed(self.done[d].output) for d in unit.needs_any):
            return "nothing it could use passed: " + ", ".join(unit.needs_any)
        return None

    def _count(self) -> str:
        return f"{len(self.done)} of {len(self.units)} units"

    # --- the work of each unit, with its inputs -------------------------------------------------

    def _work(self, unit: Unit) -> partial[Any]:
        ctx, v, out = self.ctx, unit.variant, self._output
        match unit.kind:
            case UnitKind.PREPARE:
                return partial(units.prepare, ctx)
            case UnitKind.APPLY:
                return partial(units.apply, ctx, v, out(UnitKind.PREPARE))
            case UnitKind.CONFIGURE:
                return partial(
                    units.configure, ctx, v, out(UnitKind.PREPARE), out(UnitKind.APPLY, v)
                )
            case UnitKind.BUILD:
                configured = out(UnitKind.CONFIGURE, v)
                artifacts = build.artifact_dir(
                    ctx.cache.root, configured.tree, configured.configured.sha256
                )
                builder = self.built.get(str(artifacts))
                prepared, applied = out(UnitKind.PREPARE), out(UnitKind.APPLY, v)
                return partial(units.build_kernel, ctx, v, prepared, applied, configured, builder)
            case UnitKind.INSTALL:
                prepared, applied = out(UnitKind.PREPARE), out(UnitKind.APPLY, v)
                built = out(UnitKind.BUILD, v)
                return partial(units.install, ctx, v, prepared, applied, built)
            case UnitKind.GUEST:
                return partial(units.make_guest, ctx)
            case UnitKind.FUNCTIONAL:
                ks = self.done.get(unit_id(UnitKind.INSTALL, v))
                installed = (
                    ks.output.installed
                    if ks is not None and isinstance(ks.output, units.InstalledFiles)
                    else Installed()
                )
                setup = out(UnitKind.GUEST).setup
                built = out(UnitKind.BUILD, v)
                return partial(units.functional, ctx, v, built, setup, installed, self.accel)
            case UnitKind.PERF_ROUND:
                setup = out(UnitKind.GUEST).setup
                guests = self._measured()
                measure = dict(unit.measure) if unit.measure else None
                if measure is not None:
                    guests = tuple(g for g in guests if g.name in measure)
                # Rounds side by side must not share a console log or QMP socket,
                # which are named by boot number: each starts its own span.  A
                # round boots a guest at most once per test it runs.
                span = (len(plan.perf_tests(self.matrix.tests)) + 1) * self._wave(unit).index(unit)
                guests = tuple(replace(g, boots=g.boots + span) for g in guests)
                return partial(
                    units.perf_round,
                    ctx,
                    unit.batch,
                    unit.round,
                    guests,
                    setup,
                    self.accel,
                    measure,
                )
        raise AssertionError(unit.kind)

    def _output(self, kind: UnitKind, variant: str = "") -> Any:
        output = self.done[unit_id(kind, variant)].output
        assert output is not None, (kind, variant)
        return output

    def _measured(self) -> tuple[GuestState, ...]:
        """The guests of a perf round: every variant that booted, then the A/A control.

        A sequential plan leaves out the variants that boot the baseline's
        very build: measuring it again is the A/A control's job.
        """
        booted = [
            u.variant
            for u in self.units
            if u.kind is UnitKind.FUNCTIONAL and units.passed(self.done[u.id].output)
        ]
        if self.perf_plan is not None:
            twins = self._twins()
            booted = [name for name in booted if name not in twins]
        guests = [self.guests[name] for name in booted]
        base = self.meta.baseline
        if self.matrix.perf.aa_control and base in booted:
            name = aa_control.name_for(base)
            of = self.guests[base]
            fresh = GuestState(name, base, of.kernel, of.initrd, of.installed)
            guests.append(self.guests.get(name, fresh))
        return tuple(guests)

    def _twins(self) -> frozenset[str]:
        """The variants whose build is the baseline's (perf.same_kernel_as, from the units)."""
        built = {
            u.variant: r.output.build.artifact_dir
            for u in self.units
            if u.kind is UnitKind.BUILD
            and (r := self.done.get(u.id)) is not None
            and isinstance(r.output, units.Built)
        }
        return perf.twins_of(built, self.meta.baseline)

    def _after_round(self, last: Unit) -> None:
        """A sequential plan's look: the next round while a comparison is open, else the end.

        Rounds before the first look boot every guest; each round, those
        too, must fit in what is left of the budget.
        """
        assert self.perf_plan is not None
        design = perf.design_of(self.perf_plan)
        spent = f"the perf budget of {self.perf_plan.budget / 60:g} min was spent"
        most = max(n for _, n in self.perf_plan.max_boots)
        if last.round < sequential.first_look(design, most):
            if self._room(last) < len(self._measured()):
                self._end_sequence(last, spent + " before the first look")
            else:
                self._plan_wave(last, ())
            return
        found = perf.tracks(self._assemble(""), last.batch)
        open_ = sequential.open_tests(found)
        if not open_:
            decided = all(t.state in (State.CHANGED, State.SAME) for t in found.values())
            why = "every comparison decided" + ("" if decided else " or at its most boots")
            self._end_sequence(last, why if found else "nothing to compare")
            return
        # Rounds whose boots gave no sample (a crashed test) do not count towards
        # a comparison's most boots; this bounds the rounds all the same.
        if last.round >= most + most // 2:
            self._end_sequence(last, f"{last.round} rounds, half again its most boots")
            return
        # Furthest from decided first: when the budget has no room for every
        # open variant, those are the ones it boots.
        distance = {
            v: max(sequential.distance(t, design) for k, t in found.items() if k[0] == v and t.open)
            for v in open_
        }
        references = 1 + int(self.matrix.perf.aa_control)
        chosen = sorted(open_, key=lambda v: -distance[v])[: self._room(last) - references]
        if not chosen:
            self._end_sequence(last, spent)
            return
        tests = tuple(sorted({t for v in chosen for t in open_[v]}))
        measure = [(v, tuple(sorted(open_[v]))) for v in chosen]
        measure.append((self.meta.baseline, tests))
        if self.matrix.perf.aa_control:
            measure.append((aa_control.name_for(self.meta.baseline), tests))
        self._plan_wave(last, tuple(measure))

    def _plan_wave(self, last: Unit, measure: tuple[tuple[str, tuple[str, ...]], ...]) -> None:
        """The next rounds: one per block the executor runs side by side (one
        at a time on a serial run), each after every round of the wave before.

        The look comes when the whole wave is done; looking less often than
        every round only spends less of the error rate.
        """
        functional = tuple(u.id for u in self.units if u.kind is UnitKind.FUNCTIONAL)
        before = tuple(u.id for u in self._wave(last))
        assert self.perf_plan is not None
        most = max(n for _, n in self.perf_plan.max_boots)
        # Not past the most boots side by side; one at a time beyond (crashed rounds).
        count = max(1, min(self.perf_plan.blocks, most - last.round))
        for round_ in range(last.round + 1, last.round + 1 + count):
            self.units.append(
                plan.perf_round_unit(self.matrix, functional, last.batch, round_, before, measure)
            )

    def _room(self, last: Unit) -> int:
        """How many boots the budget has room for, at the last round's time per boot."""
        assert self.perf_plan is not None
        if not self.perf_plan.budget:
            return 1 << 30
        left = self.perf_plan.budget - self._perf_seconds()
        wave = [self.done[u.id] for u in self._wave(last)]
        # Seconds per boot of one block: its boots run one after another.
        per_boot = sum(
            r.seconds / max(1, len(r.output.samples))
            for r in wave
            if isinstance(r.output, units.Round)
        ) / max(1, len(wave))
        return int(left // per_boot) if per_boot > 0 else 1 << 30

    def _rerun_fits(self, last: Unit) -> bool:
        """Whether the budget (if any) has room for a rerun batch's rounds up to its first look."""
        if self.perf_plan is None or not self.perf_plan.budget:
            return True
        most = max(n for _, n in self.perf_plan.max_boots)
        first = sequential.first_look(perf.design_of(self.perf_plan), most)
        waves = -(-first // self.perf_plan.blocks)
        return self._room(last) >= waves * len(self._measured())

    def _perf_seconds(self) -> float:
        """The time perf rounds took: a wave of rounds side by side counts its longest."""
        waves: dict[tuple[int, tuple[str, ...]], float] = {}
        for u in self._perf_units():
            if (r := self.done.get(u.id)) is not None:
                key = (u.batch, u.after)
                waves[key] = max(waves.get(key, 0.0), r.seconds)
        return sum(waves.values())

    def _end_sequence(self, last: Unit, why: str) -> None:
        self.perf_stopped = why
        self._end_batch(last)

    def _end_batch(self, last: Unit) -> None:
        """Judge a finished perf batch by its A/A control; queue a rerun if it asks for one."""
        run = self._assemble("")
        base = next((v for v in run.variants if v.name == run.baseline), None)
        judged = Batch(last.batch)  # no control: nothing says a batch is noisy
        if base is not None and run.control is not None:
            reruns = self.matrix.perf.max_reruns
            places = perf.places_of(run, last.batch)
            judged = aa_control.judge_batch(last.batch, base, run.control, reruns, places)
        if judged.rerun and not self._rerun_fits(last):
            # A rerun cut short by the budget would replace this batch's
            # verdicts with none: keep this one, and say why it stands.
            judged = replace(judged, rerun=False)
            self.perf_stopped += "; the noisy batch was not rerun: the budget has no room for it"
        self.batches.append(judged)
        if judged.rerun:
            functional = tuple(u.id for u in self.units if u.kind is UnitKind.FUNCTIONAL)
            batch = last.batch + 1
            self.units += plan.perf_batch(self.matrix, functional, batch=batch, after=(last.id,))

    # --- results and progress ---------------------------------------------------------------

    def _assemble(self, incomplete: str) -> RunResult:
        perf_plan = self.perf_plan
        if perf_plan is not None:
            spent = round(self._perf_seconds(), 1)
            perf_plan = replace(perf_plan, spent=spent, stopped=self.perf_stopped)
        return run_result(
            self.meta,
            self.units,
            self.done,
            finished=_now(),
            batches=self.batches,
            incomplete=incomplete,
            perf_plan=perf_plan,
        )

    def _write(self, incomplete: str) -> RunResult:
        run = self._assemble(incomplete)
        results.write(run, self.results_path)
        record = Journal(
            matrix=str(self.matrix.path),
            cache=str(self.options.cache.root),
            only=self.options.only,
            until=self.options.until,
            started=self.meta.started,
            units=tuple(self.units),
            done=tuple(self.done[u.id] for u in self.units if u.id in self.done),
            batches=tuple(self.batches),
            perf_stopped=self.perf_stopped,
        )
        journal.write(record, self.options.run_dir / journal.FILENAME)
        return run

    def _announce_start(self, unit: Unit) -> None:
        stage = STAGE_OF.get(unit.kind)
        if stage is not None:
            self.progress(unit.variant, stage, None, "")
        self._status(unit)

    def _announce(self, run: RunResult) -> None:
        """Report every stage that appeared in the results since the last unit."""
        wanted = stages_to(self.options.until)
        for v in run.variants:
            shown = self._shown.get(v.name, 0)
            for stage in v.stages[shown:]:
                if stage.stage in wanted:
                    self.progress(v.name, stage.stage, stage.status, stage.reason)
            self._shown[v.name] = len(v.stages)

    def _status(self, starting: Unit | None = None) -> None:
        """The run as a whole, for a progress that shows it: after a unit starts or is done."""
        if not isinstance(self.progress, StatusSink):
            return
        now = time.monotonic()
        running = [*self.running.values(), *([(starting, now)] if starting else [])]
        since = {u.id: t for u, t in running}
        left = [u for u in self.units if u.id not in self.done]
        done = [(u, self.done[u.id]) for u in self.units if u.id in self.done]
        finished = [
            (u.kind, r.seconds) for u, r in done if r.output is not None
        ]  # ran: not skipped
        snapshot = RunStatus(
            at=now,
            running=tuple(
                RunningUnit(u.id, u.kind, u.variant, self._where(u), t) for u, t in running
            ),
            done=len(self.done),
            total=len(self.units),
            perf=perf_position(self.units, {*self._started, *since}, self._most_rounds()),
            left=self._estimate(finished, [(u.kind, now - since.get(u.id, now)) for u in left]),
        )
        self.progress.status(snapshot)

    def _estimate(
        self, finished: list[tuple[UnitKind, float]], pending: list[tuple[UnitKind, float]]
    ) -> Estimate | None:
        """The time left, counting the perf rounds a sequential plan may still add."""
        more = 0
        if self.perf_plan is not None and not self.perf_stopped:
            rounds = self._perf_units()
            planned = max((u.round for u in rounds if u.batch == rounds[-1].batch), default=0)
            more = max(0, self._most_rounds() - planned) if rounds else 0
        estimate = estimate_left(
            finished, pending + [(UnitKind.PERF_ROUND, 0.0)] * more, self.executor.capacity
        )
        return replace(estimate, up_to=True) if estimate is not None and more else estimate

    def _where(self, unit: Unit) -> str:
        """Where the executor placed a unit ("local" unless it says: an optional
        `where(unit_id)`, as GuestExecutor's CPU sets)."""
        where: Callable[[str], str] | None = getattr(self.executor, "where", None)
        return where(unit.id) if where is not None else "local"

    def _most_rounds(self) -> int:
        """A sequential plan's most rounds per batch; 0 for a fixed plan (planned up front)."""
        return max((n for _, n in self.perf_plan.max_boots), default=0) if self.perf_plan else 0

    def _remove_sockets(self) -> None:
        guest = self.done.get(unit_id(UnitKind.GUEST))
        if guest is not None and isinstance(guest.output, units.GuestReady):
            shutil.rmtree(guest.output.setup.sockets, ignore_errors=True)


def perf_plan_of(matrix: Matrix) -> PerfPlan | None:
    """A sequential plan's rules as the results record them; None for fixed rounds."""
    tests = plan.perf_tests(matrix.tests)
    if not matrix.perf.sequential or not tests:
        return None
    d = matrix.perf.design
    return PerfPlan(
        method=sequential.METHOD,
        error_rate=d.q,
        control=d.control.value,
        equivalence=d.equivalence,
        alpha_eq=d.alpha_eq,
        rho=d.rho,
        n_min=d.n_min,
        max_boots=tuple((t.name, t.repeats) for t in tests),
        budget=matrix.perf.budget or 0.0,
    )


def perf_position(
    plan_units: Sequence[Unit], started: Collection[str], most: int = 0
) -> PerfRound | None:
    """The perf round the run is at (the last one started) and the rounds of its batch.

    A fixed plan's rounds are planned up front (plan.perf_batch), so their
    number is exact; a sequential plan adds rounds while comparisons are
    open, up to `most` (its largest most boots): then N is a maximum.
    """
    rounds = [u for u in plan_units if u.kind is UnitKind.PERF_ROUND]
    begun = [u for u in rounds if u.id in started]
    if not begun:
        return None
    at = begun[-1]  # plan order is round order, batch after batch
    if most:
        return PerfRound(at.round, most, at_most=True, batch=at.batch)
    planned = max(u.round for u in rounds if u.batch == at.batch)
    return PerfRound(at.round, planned, at_most=False, batch=at.batch)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def host() -> dict[str, str]:
    return {
        "hostname": platform.node(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "cpus": str(os.cpu_count()),
    }
