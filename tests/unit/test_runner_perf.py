"""The runner's perf rounds: interleaving, the A/A control and batch reruns, with fake guests."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from orchestrator import runner as pipeline
from orchestrator.cache import Cache
from orchestrator.matrix import Kconfig, Matrix, Perf, Report, Test, Tree, TreeKind, Variant
from orchestrator.results import (
    Batch,
    BootInfo,
    Stage,
    StageResult,
    Status,
    TestResult,
    VariantResult,
    Verdict,
)
from orchestrator.vm.testbed import Pending


def boots(n: int, cv: float, scale: float = 1.0, seed: int = 1) -> list[float]:
    """n boots of a throughput near 1e6 * scale with lognormal noise of this CV."""
    sigma = math.sqrt(math.log1p(cv * cv))
    rng = np.random.default_rng(seed)
    return [float(x) for x in 1e6 * scale * np.exp(rng.normal(0.0, sigma, n))]


@dataclass
class FakeGuest:
    """Stands for testbed.VariantRun: each run is a boot giving one sample per perf test."""

    variant: Variant
    logs: Path
    host: dict[str, int]  # runs so far per variant name, shared by every guest
    shifted_runs: int = 0  # the control's first N runs read 20 % high (a disturbed batch)
    boots: int = 0
    boot_info: BootInfo | None = None
    boot_failure: str | None = None
    reboot_failure: str | None = None
    calls: list[list[str]] = field(default_factory=list)

    def run(self, pending: list[Pending]) -> tuple[TestResult, ...]:
        name = self.variant.name
        count = self.host[name] = self.host.get(name, 0) + 1
        self.boots += 1
        self.boot_info = self.boot_info or BootInfo("tcg", "fake", 1.0, "")
        self.calls.append([p.label for p in pending])
        shift = 1.2 if name.endswith("~aa") and count <= self.shifted_runs else 1.0
        (value,) = boots(1, 0.03, shift, seed=hash((name, count)) % 2**32)
        return tuple(
            p.identify(TestResult(p.test.name, Verdict.PASS, metrics={"events_per_sec": value}))
            for p in pending
        )

    def boot_stage(self) -> StageResult:
        return StageResult(Stage.BOOT, Status.PASS, "fake")


def _runner(tmp_path: Path, *, aa: bool = True, max_reruns: int = 1) -> pipeline.Runner:
    matrix = Matrix(
        path=tmp_path / "m.yaml",
        name="m",
        tree=Tree(TreeKind.PATH, str(tmp_path)),
        kconfig=Kconfig(),
        variants=(Variant("up"), Variant("slow")),
        report=Report(tmp_path / "reports", baseline="up"),
        tests=(Test("map_perf", "map_perf", "/opt/map_perf", repeats=5),),
        perf=Perf(aa_control=aa, max_reruns=max_reruns),
    )
    options = pipeline.Options(cache=Cache(tmp_path / "cache"), run_dir=tmp_path / "run")
    return pipeline.Runner(matrix, options, lambda *_: None)


def _records(runner: pipeline.Runner, tmp_path: Path, shifted_runs: int) -> list[pipeline._Variant]:
    host: dict[str, int] = {}
    records = []
    for v in runner.matrix.variants:
        rec = pipeline._Variant(v.name)
        rec.result = VariantResult(v.name, (), head="h" * 40)
        rec.guest = FakeGuest(v, tmp_path / v.name, host, shifted_runs)  # type: ignore[assignment]
        records.append(rec)
    return records


def test_a_disturbed_batch_is_rerun_for_every_variant(tmp_path: Path) -> None:
    runner = _runner(tmp_path)
    records = _records(runner, tmp_path, shifted_runs=6)  # the whole first batch, warm-up too
    runner._perf(records)
    assert runner.batches == [Batch(1, ("map_perf.events_per_sec",), rerun=True), Batch(2)]
    control = runner.control
    assert control is not None and control.name == "up~aa"
    for result in (*(r.result for r in records), control):
        assert result is not None
        assert [t.batch for t in result.tests] == [1] * 5 + [2] * 5  # every batch kept
    # The control ran only the perf tests, in every round of both batches, after the
    # variants: 6 rounds (a warm-up first), then 5 (a rerun starts warm).
    guest = records[0].guest
    assert isinstance(guest, FakeGuest) and guest.host == {"up": 11, "slow": 11, "up~aa": 11}
    assert [s.stage for s in control.stages] == [Stage.BOOT, Stage.TEST]
    assert control.status is Status.PASS and control.head == "h" * 40


def test_a_quiet_batch_is_not_rerun(tmp_path: Path) -> None:
    runner = _runner(tmp_path)
    records = _records(runner, tmp_path, shifted_runs=0)
    runner._perf(records)
    assert runner.batches == [Batch(1)]
    assert runner.control is not None and len(runner.control.tests) == 5


def test_a_batch_still_noisy_is_kept_and_not_rerun_again(tmp_path: Path) -> None:
    runner = _runner(tmp_path)
    records = _records(runner, tmp_path, shifted_runs=100)  # disturbed for good
    runner._perf(records)
    assert [(b.attempt, bool(b.noisy), b.rerun) for b in runner.batches] == [
        (1, True, True),
        (2, True, False),
    ]


def test_without_the_option_there_is_no_control(tmp_path: Path) -> None:
    runner = _runner(tmp_path, aa=False)
    records = _records(runner, tmp_path, shifted_runs=100)
    runner._perf(records)
    assert runner.control is None and runner.batches == [Batch(1)]
    assert not (tmp_path / "run" / "logs" / "up~aa").exists()


# --- the matrix option -------------------------------------------------------------------------
