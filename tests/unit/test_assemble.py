"""Folding unit results into the run's results, complete or partial."""

from __future__ import annotations

from pathlib import Path

from orchestrator.assemble import RunMeta, UnitResult, run_result
from orchestrator.kernel import kconfig
from orchestrator.plan import Unit, UnitKind, unit_id
from orchestrator.results import (
    BootInfo,
    BuildInfo,
    Stage,
    StageResult,
    Status,
    TestResult,
    Verdict,
)
from orchestrator.units import (
    Applied,
    Built,
    Configured,
    GuestState,
    Round,
    Sampled,
    Tested,
)

META = RunMeta(
    matrix="/m.yaml", started="t0", run_dir=Path("/run"), variants=("a", "b"), baseline="a"
)
UNITS = [
    Unit(unit_id(kind, v), kind, v)
    for v in ("a", "b")
    for kind in (UnitKind.APPLY, UnitKind.CONFIGURE, UnitKind.BUILD, UnitKind.FUNCTIONAL)
] + [Unit("perf-round:1:1", UnitKind.PERF_ROUND, batch=1, round=1)]


def _pass(stage: Stage, reason: str = "ok") -> StageResult:
    return StageResult(stage, Status.PASS, reason)


def _configured() -> Configured:
    done = kconfig.Configured("CONFIG_X=y\n", "c" * 64, (), (), Path("/k.log"))
    return Configured(_pass(Stage.KCONFIG), "t" * 40, done)


BUILD = BuildInfo("t" * 40, "c" * 64, "/art", cached=False)
BOOT = BootInfo("tcg", "set in the matrix", 1.5, "/run/logs/a/console-1.log")


def _guest(name: str) -> GuestState:
    return GuestState(name, name, Path("/art/vmlinux"), boots=1, boot_info=BOOT)


def _through_boot(v: str) -> dict[str, UnitResult]:
    smoke = TestResult("smoke", Verdict.PASS, duration=2.0)
    return {
        unit_id(UnitKind.APPLY, v): UnitResult("", Applied(_pass(Stage.APPLY), "b", "h", ()), 1),
        unit_id(UnitKind.CONFIGURE, v): UnitResult("", _configured(), 2),
        unit_id(UnitKind.BUILD, v): UnitResult("", Built(_pass(Stage.BUILD), BUILD), 3),
        unit_id(UnitKind.FUNCTIONAL, v): UnitResult(
            "", Tested(_pass(Stage.BOOT), (smoke,), _guest(v), ("tcg", "x")), 4.25
        ),
    }


def test_a_partial_run_shows_what_is_done_and_says_so() -> None:
    done = {unit_id(UnitKind.APPLY, "a"): UnitResult("", Applied(_pass(Stage.APPLY), "b", "h", ()))}
    run = run_result(META, UNITS, done, finished="t1", incomplete="interrupted (SIGTERM)")
    a, b = run.variants
    assert [s.stage for s in a.stages] == [Stage.APPLY] and a.head == "h"
    assert b.stages == () and run.incomplete == "interrupted (SIGTERM)"
    assert run.control is None


def test_a_failed_stage_skips_the_rest_with_its_reason() -> None:
    fail = StageResult(Stage.BUILD, Status.FAIL, "boom")
    done = _through_boot("a")
    done[unit_id(UnitKind.BUILD, "a")] = UnitResult("", Built(fail, BUILD), 3)
    done[unit_id(UnitKind.FUNCTIONAL, "a")] = UnitResult("", None, skipped="build failed")
    run = run_result(META, UNITS, done, finished="t1")
    a = run.variants[0]
    assert [(s.stage, s.status) for s in a.stages] == [
        (Stage.APPLY, Status.PASS), (Stage.KCONFIG, Status.PASS), (Stage.BUILD, Status.FAIL),
        (Stage.BOOT, Status.SKIPPED), (Stage.TEST, Status.SKIPPED),
    ]  # fmt: skip
    assert a.stages[-1].reason == "build failed: boom"


def test_the_test_stage_waits_for_every_perf_round() -> None:
    done = {**_through_boot("a"), **_through_boot("b")}
    before = run_result(META, UNITS, done, finished="t1")
    assert [s.stage for s in before.variants[0].stages][-1] is Stage.BOOT
    assert before.variants[0].stages[-1].duration == 4.25  # the unit's time
    sample = TestResult("map_perf", Verdict.PASS, metrics={"x": 1.0}, round=1, batch=1)
    samples = tuple(Sampled(_guest(v), (sample,)) for v in ("a", "b", "a~aa"))
    done["perf-round:1:1"] = UnitResult("", Round(samples))
    after = run_result(META, UNITS, done, finished="t2")
    a = after.variants[0]
    assert [t.label for t in a.tests] == ["smoke", "map_perf@1"]
    assert a.stages[-1].stage is Stage.TEST and a.stages[-1].status is Status.PASS
    assert a.stages[-1].duration == 2.0
    control = after.control
    assert control is not None and control.name == "a~aa" and len(control.tests) == 1
    assert control.build is not None and control.build.shared_with == "a"
    assert [s.stage for s in control.stages] == [Stage.BOOT, Stage.TEST]
