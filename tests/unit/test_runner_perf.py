"""The runner's perf rounds: interleaving, the A/A control, batch reruns, sequential rounds.

The runner and the perf-round unit are real; the other units are replaced
by fakes returning their usual records, and each guest is a FakeGuest whose
every run is one boot giving one sample per perf test.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

import pytest

from orchestrator import journal, perf, runner, units
from orchestrator.cache import Cache
from orchestrator.executor import Executor, ThreadExecutor
from orchestrator.kernel import kconfig
from orchestrator.matrix import Kconfig, Matrix, Perf, Report, Test, Tree, TreeKind, Variant
from orchestrator.plan import Unit, UnitKind
from orchestrator.progress import RunStatus
from orchestrator.report import html, text
from orchestrator.results import (
    Batch,
    BootInfo,
    BuildInfo,
    Placement,
    RunResult,
    Stage,
    StageResult,
    Status,
    TestResult,
    Verdict,
)
from orchestrator.runner import Options, Runner
from orchestrator.stats import Change
from orchestrator.vm import image, testbed
from orchestrator.vm.testbed import Pending

from .samples import boots

T = TypeVar("T")
_HOST_LOCK = threading.Lock()
BOOTED: list[tuple[str, int]] = []  # (guest, boot number) of every fake boot
# CPU 1 is 30 % faster than CPU 0 (TwoBlocks' sets)
PLACE_SPEED: dict[tuple[int, ...], float] = {(1,): 1.3}


@dataclass
class FakeGuest:
    """Stands for testbed.VariantRun: each run is a boot giving one sample per perf test."""

    name: str
    host: dict[str, int]  # runs so far per guest name, shared by every guest
    shifted_runs: int = 0  # the control's first N runs read 20 % high (a disturbed batch)
    effects: dict[str, float] = field(default_factory=dict)  # a guest's throughput x this
    clock: list[float] = field(default_factory=lambda: [0.0])  # the runner's, when it is faked
    boots: int = 0
    boot_info: BootInfo | None = None
    boot_failure: str | None = None
    calls: list[list[str]] = field(default_factory=list)
    place: float = 1.0  # every guest's throughput x this on the CPU set it runs on

    def run(self, pending: list[Pending]) -> tuple[TestResult, ...]:
        with _HOST_LOCK:  # rounds side by side run the same guest in two threads
            count = self.host[self.name] = self.host.get(self.name, 0) + 1
            BOOTED.append((self.name, self.boots + 1))
        self.clock[0] += 10.0  # a boot takes 10 s of the runner's clock
        self.boots += 1
        self.boot_info = self.boot_info or BootInfo("tcg", "fake", 1.0, "")
        shift = 1.2 if self.name.endswith("~aa") and count <= self.shifted_runs else 1.0
        shift *= self.effects.get(self.name, 1.0) * self.place
        seed = sum(map(ord, self.name)) * 1000 + count
        (value,) = boots(1, 0.03, shift, seed=seed)
        return tuple(
            p.identify(TestResult(p.test.name, Verdict.PASS, metrics={"events_per_sec": value}))
            for p in pending
        )


def _fake_units(
    monkeypatch: pytest.MonkeyPatch,
    host: dict[str, int],
    shifted_runs: int,
    effects: dict[str, float] | None = None,
    builds: dict[str, str] | None = None,
    clock: list[float] | None = None,
) -> None:
    """`builds`: a variant's artifact dir (default /art for all: one build)."""
    ok = StageResult

    def functional(ctx: units.Context, variant: str, *_: Any) -> units.Tested:
        state = units.GuestState(variant, variant, Path(f"/{variant}/vmlinux"), boots=1)
        return units.Tested(ok(Stage.BOOT, Status.PASS, "fake"), (), state, ("tcg", "fake"))

    def guest_run(ctx: units.Context, state: units.GuestState, *_: Any) -> FakeGuest:
        guest = FakeGuest(state.name, host, shifted_runs, effects or {}, clock or [0.0])
        guest.place = PLACE_SPEED.get(ctx.host_cpus, 1.0)
        guest.boots, guest.boot_info = state.boots, state.boot_info
        return guest

    def build_kernel(ctx: units.Context, variant: str, *_: Any) -> units.Built:
        art = (builds or {}).get(variant, "/art")
        return units.Built(ok(Stage.BUILD, Status.PASS), BuildInfo("t" * 40, "c" * 64, art, True))

    done = kconfig.Configured("", "c" * 64, (), (), Path("/k.log"))
    keys = image.Keys(Path("/k"), "", Path("/h"), "")
    setup = testbed.GuestSetup(Path("/initrd"), keys, Path("/sockets"), None)
    fakes = {
        "prepare": lambda ctx: units.Prepared(Path("/repo"), "b" * 40),
        "apply": lambda ctx, v, *_: units.Applied(ok(Stage.APPLY, Status.PASS), "b", "h" * 40, ()),
        "configure": lambda *_: units.Configured(ok(Stage.KCONFIG, Status.PASS), "t" * 40, done),
        "build_kernel": build_kernel,
        "make_guest": lambda ctx: units.GuestReady(setup),
        "functional": functional,
        "_guest_run": guest_run,
    }
    for name, fake in fakes.items():
        monkeypatch.setattr(units, name, fake)


def _run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, shifted_runs: int, aa: bool = True
) -> tuple[RunResult, dict[str, int]]:
    host: dict[str, int] = {}
    _fake_units(monkeypatch, host, shifted_runs)
    matrix = Matrix(
        path=tmp_path / "m.yaml",
        name="m",
        tree=Tree(TreeKind.PATH, str(tmp_path)),
        kconfig=Kconfig(),
        variants=(Variant("up"), Variant("slow")),
        report=Report(tmp_path / "reports", baseline="up"),
        tests=(Test("map_perf", "map_perf", "/opt/map_perf", repeats=5),),
        perf=Perf(aa_control=aa, max_reruns=1, sequential=False),
    )
    options = Options(cache=Cache(tmp_path / "cache"), run_dir=tmp_path / "run")
    run = Runner(matrix, options, lambda *_: None).run({"up": (), "slow": ()})
    return run, host


def test_a_disturbed_batch_is_rerun_for_every_variant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The control's whole first batch reads high, warm-up too.
    run, host = _run(tmp_path, monkeypatch, shifted_runs=6)
    assert run.batches == (Batch(1, ("map_perf.events_per_sec",), rerun=True), Batch(2))
    control = run.control
    assert control is not None and control.name == "up~aa"
    for result in (*run.variants, control):
        assert [t.batch for t in result.tests] == [1] * 5 + [2] * 5  # every batch kept
        assert [t.round for t in result.tests] == [1, 2, 3, 4, 5] * 2
    # The control ran only the perf tests, in every round of both batches, after the
    # variants: 6 rounds (a warm-up first), then 5 (a rerun starts warm).
    assert host == {"up": 11, "slow": 11, "up~aa": 11}
    assert [s.stage for s in control.stages] == [Stage.BOOT, Stage.TEST]
    assert control.status is Status.PASS and control.head == "h" * 40
    assert run.incomplete == ""


def test_a_quiet_batch_is_not_rerun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run, _ = _run(tmp_path, monkeypatch, shifted_runs=0)
    assert run.batches == (Batch(1),)
    assert run.control is not None and len(run.control.tests) == 5


def test_a_batch_still_noisy_is_kept_and_not_rerun_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run, _ = _run(tmp_path, monkeypatch, shifted_runs=100)  # disturbed for good
    assert [(b.attempt, bool(b.noisy), b.rerun) for b in run.batches] == [
        (1, True, True),
        (2, True, False),
    ]


def test_without_the_option_there_is_no_control(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run, host = _run(tmp_path, monkeypatch, shifted_runs=100, aa=False)
    assert run.control is None and run.batches == (Batch(1),)
    assert set(host) == {"up", "slow"}
    assert not (tmp_path / "run" / "logs" / "up~aa").exists()


def _sequential(
    tmp_path: Path,
    names: tuple[str, ...],
    perf_rules: Perf,
    questions: tuple[tuple[str, str], ...] = (),
    executor: Executor | None = None,
    resume: bool = False,
    progress: Any = None,
) -> RunResult:
    """A run of one perf test of at most 40 boots, `up` the baseline."""
    matrix = Matrix(
        path=tmp_path / "m.yaml",
        name="m",
        tree=Tree(TreeKind.PATH, str(tmp_path)),
        kconfig=Kconfig(),
        variants=tuple(Variant(n) for n in names),
        report=Report(tmp_path / "reports", baseline="up", questions=questions),
        tests=(Test("map_perf", "map_perf", "/opt/map_perf", repeats=40),),
        perf=perf_rules,
    )
    options = Options(cache=Cache(tmp_path / "cache"), run_dir=tmp_path / "run")
    runner = Runner(matrix, options, progress or (lambda *_: None), executor)
    record = journal.read(options.run_dir) if resume else None
    return runner.run({n: () for n in names}, record)


def test_sequential_rounds_go_on_only_while_a_comparison_is_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host: dict[str, int] = {}
    names = ("up", "slow", "same", "twin")
    builds = {"up": "/up", "slow": "/slow", "same": "/same", "twin": "/up"}
    _fake_units(monkeypatch, host, 0, {"slow": 0.7}, builds)
    run = _sequential(tmp_path, names, Perf(aa_control=True), (("twin", "same"),))
    assert run.perf_plan is not None
    assert run.perf_plan.stopped == "every comparison decided"
    rows = {r.variant: r for s in perf.perf(run) for r in s.rows}
    slow, same = rows["slow"].comparison, rows["same"].comparison
    assert slow is not None and slow.verdict is Change.SLOWER
    assert same is not None and same.verdict is Change.SAME and same.bound is not None
    assert same.bound <= 5
    # The twin boots the baseline's own build: never measured in perf rounds.
    assert "twin" not in rows and "twin" not in host
    # A 30 % drop is decided within a few looks and stops being booted; the
    # baseline and the A/A control go on as long as "same" is open.
    stops = perf.stop_reasons(run)
    assert stops["slow"][0] < stops["same"][0] <= 40
    assert stops["slow"][1] == stops["same"][1] == "every comparison decided"
    rounds = stops["same"][0]
    assert host["up"] == host["up~aa"] == rounds + 1  # and the warm-up
    assert host["slow"] == stops["slow"][0] + 1
    # The reports say how it was decided, each guest's boots, and answer the question.
    summary, page = text.render(run), html.render(run)
    for out in (summary, page):
        assert "family-wise error rate (Holm)" in out and "two one-sided" in out
        assert "every comparison decided" in out
    assert f"same: {rounds} (every comparison decided)" in summary
    assert f"up~aa: {rounds} (the reference" in summary
    answer = "Is twin measurably different from same? twin boots up's build, so same against"
    assert answer in " ".join(summary.split())
    assert "map_perf: no, the same within" in page


def _budgeted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shifted_runs: int
) -> tuple[RunResult, dict[str, int]]:
    """A 5-minute perf budget, each boot 10 s of the runner's (fake) clock."""
    clock = [0.0]
    monkeypatch.setattr(runner, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    host: dict[str, int] = {}
    builds = {"up": "/up", "slow": "/slow", "same": "/same"}
    _fake_units(monkeypatch, host, shifted_runs, {"slow": 0.7}, builds, clock)
    return _sequential(tmp_path, tuple(builds), Perf(aa_control=True, budget=300.0)), host


def test_a_budget_ends_the_rounds_it_has_no_room_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run, host = _budgeted(tmp_path, monkeypatch, shifted_runs=0)
    # Four guests boot in the warm-up and in rounds 1-5 (240 s); then "same" is
    # still open and the three boots of a round fit twice in what is left.
    assert run.perf_plan is not None and run.perf_plan.spent <= 300
    assert run.perf_plan.stopped == "the perf budget of 5 min was spent"
    assert host == {"up": 8, "up~aa": 8, "slow": 6, "same": 8}
    rows = {r.variant: r.comparison for s in perf.perf(run) for r in s.rows}
    same = rows["same"]
    assert same is not None and same.verdict is Change.INCONCLUSIVE
    assert "the perf budget of 5 min was spent" in same.reason
    assert "the perf budget of 5 min was spent" in text.render(run)


def test_a_noisy_batch_is_not_rerun_when_the_budget_has_no_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run, _ = _budgeted(tmp_path, monkeypatch, shifted_runs=100)  # the control reads high
    assert [(b.attempt, bool(b.noisy), b.rerun) for b in run.batches] == [(1, True, False)]
    assert run.perf_plan is not None and run.perf_plan.spent <= 300
    assert run.perf_plan.stopped == (
        "the perf budget of 5 min was spent; the noisy batch was not rerun: the budget has no "
        "room for it"
    )


class TwoBlocks(ThreadExecutor):
    """Runs two perf rounds side by side, as --vms 2 does on disjoint CPU sets:
    odd rounds on CPU 1, even ones on CPU 0, and says where each one ran."""

    perf_blocks = 2

    def __init__(self, workers: int) -> None:
        super().__init__(workers)
        self.places: dict[str, str] = {}

    def submit(self, unit: Unit, work: Callable[[], T]) -> Future[T]:
        if unit.kind is UnitKind.PERF_ROUND:
            cpus = (unit.round % 2,)
            work = units.on_cpus(work, cpus)
            self.places[unit.id] = f"CPUs {cpus[0]}"
        return super().submit(unit, work)

    def placement(self, unit: Unit) -> Placement | None:
        where = self.places.get(unit.id)
        return None if where is None else Placement(unit.id, where, "h", "cpu", "k", "qemu")


def test_rounds_run_side_by_side_as_blocks_and_keep_their_verdicts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host: dict[str, int] = {}
    BOOTED.clear()
    builds = {"up": "/up", "slow": "/slow", "same": "/same"}
    _fake_units(monkeypatch, host, 0, {"slow": 0.7}, builds)
    run = _sequential(tmp_path, tuple(builds), Perf(aa_control=True), executor=TwoBlocks(3))
    assert run.perf_plan is not None and run.perf_plan.blocks == 2
    rows = {r.variant: r.comparison for s in perf.perf(run) for r in s.rows}
    slow, same = rows["slow"], rows["same"]
    assert slow is not None and slow.verdict is Change.SLOWER
    assert same is not None and same.verdict is Change.SAME
    # After the warm-up, rounds come in pairs, each pair after the whole pair before.
    recorded = journal.read(tmp_path / "run").units
    planned = [u for u in recorded if u.kind is UnitKind.PERF_ROUND]
    assert [u.round for u in planned] == list(range(len(planned)))
    assert len(planned) % 2 == 1  # the warm-up, then whole pairs
    for first, second in zip(planned[1::2], planned[2::2], strict=True):
        assert first.after == second.after
        assert second.round == first.round + 1
    assert planned[3].after == (planned[1].id, planned[2].id)
    # Rounds side by side never reuse a boot number (console logs, QMP sockets).
    assert len(BOOTED) == len(set(BOOTED))
    assert host["up"] == host["up~aa"] == len(planned)
    # CPU 1 reads 30 % faster, yet the verdicts above hold: each ratio pairs
    # boots of one round.  The reports show the places' spread.
    (one, two) = perf.place_spread(run)
    assert (one.where, two.where) == ("CPUs 0", "CPUs 1")
    [(_, low)], [(_, high)] = one.base, two.base
    assert low < 0.95 and high > 1.05 and 1.2 < high / low < 1.4
    for p in (one, two):
        [(_, aa)] = p.aa
        assert 0.95 < aa < 1.05
    summary = " ".join(text.render(run).split())
    assert "Perf rounds ran in 2 places" in summary and "does not reach a comparison" in summary
    assert "CPUs 1: " in summary and "(A/A " in summary
    assert "Perf rounds ran in 2 places" in html.render(run)


def test_why_the_rounds_stopped_survives_a_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run, _ = _budgeted(tmp_path, monkeypatch, shifted_runs=0)
    assert run.perf_plan is not None and run.perf_plan.stopped
    assert journal.read(tmp_path / "run").perf_stopped == run.perf_plan.stopped
    # Resumed (here with nothing left to run), the run still says why its rounds stopped.
    names = ("up", "slow", "same")
    again = _sequential(tmp_path, names, Perf(aa_control=True, budget=300.0), resume=True)
    assert again.perf_plan is not None and again.perf_plan.stopped == run.perf_plan.stopped


class Snapshots:
    """A progress that keeps the runner's status snapshots (progress.StatusSink)."""

    def __init__(self) -> None:
        self.seen: list[RunStatus] = []

    def __call__(self, *_: Any) -> None:
        pass

    def status(self, snapshot: RunStatus) -> None:
        self.seen.append(snapshot)


def test_the_time_left_counts_rounds_a_sequential_plan_may_still_add(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host: dict[str, int] = {}
    builds = {"up": "/up", "slow": "/slow", "same": "/same"}
    _fake_units(monkeypatch, host, 0, {"slow": 0.7}, builds)
    sink = Snapshots()
    run = _sequential(tmp_path, tuple(builds), Perf(aa_control=True), progress=sink)
    assert run.perf_plan is not None and run.perf_plan.stopped == "every comparison decided"
    during = [s.left for s in sink.seen if s.perf is not None and s.perf.round >= 1 and s.left]
    assert during and all(e.up_to for e in during[:-1])
    assert not sink.seen[-1].left or not sink.seen[-1].left.up_to  # stopped: nothing more
