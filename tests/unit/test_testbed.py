"""Which runs of which tests a variant's boots do, and their identity."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestrator.results import TestResult, Verdict


def test_perf_rounds_interleave_and_skip_functional_tests() -> None:
    from orchestrator.matrix import Test
    from orchestrator.plan import perf_rounds
    from orchestrator.vm.testbed import functional, perf_round

    smoke = Test(name="smoke", kind="ktap", command="/x", repeats=2)
    perf = Test(name="map_perf", kind="map_perf", command="/y", repeats=3)
    short = Test(name="quick", kind="map_perf", command="/z", repeats=1)
    tests = (smoke, perf, short)
    assert [(p.test.name, p.repeat) for p in functional(tests)] == [("smoke", 1), ("smoke", 2)]
    assert [p.label for p in functional(tests)] == ["smoke@1", "smoke@2"]
    assert perf_rounds(tests) == 3
    warmup = perf_round(tests, 0)
    assert [(p.test.name, p.warmup) for p in warmup] == [("map_perf", True), ("quick", True)]
    assert [p.label for p in warmup] == ["map_perf@warmup", "quick@warmup"]
    first = perf_round(tests, 1, batch=2)
    assert [(p.test.name, p.round, p.batch) for p in first] == [("map_perf", 1, 2), ("quick", 1, 2)]
    assert [p.label for p in perf_round(tests, 3)] == ["map_perf@3"]


def test_a_run_carries_its_identity_as_fields() -> None:
    from orchestrator.matrix import Test
    from orchestrator.vm.testbed import Pending

    pending = Pending(Test(name="map_perf", kind="map_perf"), round=4, batch=2)
    result = pending.result(Verdict.ERROR, "not run")
    assert (result.name, result.round, result.batch, result.repeat) == ("map_perf", 4, 2, 0)
    assert result.label == "map_perf@4" and not result.warmup


def test_a_tests_result_carries_its_expectations_and_about(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orchestrator.matrix import Test, Variant
    from orchestrator.vm import run_test
    from orchestrator.vm.testbed import GuestSetup, Pending, VariantRun

    def fake_run(session: Any, test: Test, logs: Path, *, label: str) -> TestResult:
        subs = (TestResult("htab_reuse.a", Verdict.FAIL), TestResult("htab_reuse.b", Verdict.PASS))
        return TestResult(test.name, Verdict.FAIL, subtests=subs)

    monkeypatch.setattr(run_test, "run_test", fake_run)
    test = Test(name="htab_reuse", kind="ktap", command="/x", about=(("a", "problem 2"),))
    variant = Variant("v", expect=(("htab_reuse.a", "fail"),))
    setup = GuestSetup(tmp_path / "initrd", None, tmp_path, None)  # type: ignore[arg-type]
    run = VariantRun(None, variant, setup, tmp_path, tmp_path, None)  # type: ignore[arg-type]
    result = run._test(None, Pending(test))  # type: ignore[arg-type]
    a, b = result.subtests
    assert (a.expected, a.about) == ("fail", "problem 2")
    assert (b.expected, b.about) == ("", "")


def test_socket_names_of_long_variants_stay_apart() -> None:
    from orchestrator.vm.testbed import socket_name

    a, b = "x" * 45 + "-ctor", "x" * 45 + "-gfp-zero"
    assert socket_name("short") == "short"
    assert len(socket_name(a)) == len(socket_name(b)) == 40
    assert socket_name(a) != socket_name(b)  # their guests can boot at once (--vms)


def test_the_units_cpu_set_reaches_every_boots_spec(tmp_path: Path) -> None:
    from functools import partial

    from orchestrator.matrix import Guest, Variant
    from orchestrator.units import Context, _guest_run, on_cpus
    from orchestrator.vm.testbed import GuestSetup

    class Matrix:
        guest = Guest(cpus=1)

        def variant(self, name: str) -> Variant:
            return Variant(name)

    setup = GuestSetup(tmp_path / "initrd", None, tmp_path, None)  # type: ignore[arg-type]
    state: Any = type("State", (), {"of": "v", "name": "v", "kernel": tmp_path / "vmlinux",
                                    "initrd": None, "installed": None, "boots": 0,
                                    "boot_info": None, "boot_failure": None})()  # fmt: skip
    ctx: Any = Context(Matrix(), None, tmp_path, {})  # type: ignore[arg-type]
    # As the guest executor does it: the unit's work, its Context given the set.
    work = on_cpus(partial(_guest_run, ctx, state, setup, None), (1,))  # type: ignore[arg-type]
    run = work()
    assert run.host_cpus == (1,)
    assert run._spec("tcg", 1).host_cpus == (1,)
    assert _guest_run(ctx, state, setup, None).host_cpus == ()  # type: ignore[arg-type]
