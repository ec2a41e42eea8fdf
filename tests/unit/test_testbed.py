"""Which runs of which tests a variant's boots do, and their identity."""

from __future__ import annotations

from orchestrator.results import Verdict


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
