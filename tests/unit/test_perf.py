"""The perf model: samples by test and batch, summaries, comparisons, batch decisions."""

from __future__ import annotations

import dataclasses
import math

import pytest

from orchestrator import aa_control, stats
from orchestrator import perf as perf_module
from orchestrator.perf import (
    batch_note,
    breakdowns,
    judge_batch,
    latest_batch,
    metric_samples,
    noisy_metrics,
    perf,
    same_kernel_as,
    summarize,
)
from orchestrator.results import (
    Batch,
    BuildInfo,
    RunResult,
    Status,
    TestResult,
    VariantResult,
    Verdict,
)
from orchestrator.stats import Change, detectable_change
from tests.unit.samples import boots
from tests.unit.test_aa_control import samples_of
from tests.unit.test_report_junit import _stages
from tests.unit.test_stats import BASE, perf_run


def _round(i: int, value: float, batch: int = 1) -> TestResult:
    """Perf round i of a batch, with one fresh map's number as a subtest."""
    test = TestResult("map_perf", Verdict.PASS, metrics={"events_per_sec": value}, round=i)
    return _with_map(dataclasses.replace(test, batch=batch), value / 8)


def _repeat(i: int, reads: float) -> TestResult:
    """Repeat i of a functional test, run in one boot outside any batch."""
    return TestResult("htab_reuse", Verdict.PASS, metrics={"reads": reads}, repeat=i)


def _with_map(test: TestResult, value: float) -> TestResult:
    """The test with one fresh map's number as a subtest."""
    sub = TestResult(f"{test.name}.map_1", Verdict.PASS, metrics={"events_per_sec": value})
    return dataclasses.replace(test, subtests=(sub,))


def _variant(name: str, *tests: TestResult) -> VariantResult:
    return VariantResult(name, _stages(*[Status.PASS] * 5), tests=tests)


# --- samples -------------------------------------------------------------------------


def test_samples_are_grouped_by_test_name_and_batch() -> None:
    v = _variant(
        "up",
        _repeat(1, 10.0), _repeat(2, 12.0),
        *(_round(i, 100.0 + i, batch=1) for i in (1, 2)),
        *(_round(i, 200.0 + i, batch=2) for i in (1, 2, 3)),
    )  # fmt: skip
    assert latest_batch([v]) == 2 and latest_batch([_variant("f", _repeat(1, 1.0))]) == 0
    latest = metric_samples([v])
    assert latest == {
        ("htab_reuse", "reads"): {"up": [10.0, 12.0]},  # outside batches: always counts
        ("map_perf", "events_per_sec"): {"up": [201.0, 202.0, 203.0]},  # the last batch only
        ("map_perf.map_1", "events_per_sec"): {"up": [201 / 8, 202 / 8, 203 / 8]},
    }
    first = metric_samples([v], 1, subtests=False)
    assert first == {
        ("htab_reuse", "reads"): {"up": [10.0, 12.0]},
        ("map_perf", "events_per_sec"): {"up": [101.0, 102.0]},
    }
    assert metric_samples([v], 2, subtests=False, functional=False) == {
        ("map_perf", "events_per_sec"): {"up": [201.0, 202.0, 203.0]},
    }


def test_breakdowns_are_named_by_their_headline() -> None:
    keys = [
        ("map_perf", "events_per_sec"), ("map_perf", "events_per_sec_cpu0"),
        ("map_perf", "events_per_sec_cpu12"), ("map_perf", "events_per_sec_min"),
        ("map_perf", "events_per_sec_max"), ("other", "events_per_sec_max"),  # no headline
        ("map_perf", "run_max_seconds"), ("map_perf", "events_per_sec_cpux"),
    ]  # fmt: skip
    assert breakdowns(keys) == {
        ("map_perf", "events_per_sec_cpu0"), ("map_perf", "events_per_sec_cpu12"),
        ("map_perf", "events_per_sec_min"), ("map_perf", "events_per_sec_max"),
    }  # fmt: skip


# --- summaries ----------------------------------------------------------------------------


def test_summarize_is_the_statistics_seam() -> None:
    rows = summarize({"a": [3.0, 1.0, 2.0], "b": [5.0, 7.0], "c": []})
    assert [(r.variant, r.n, r.median, r.low, r.high) for r in rows] == [
        ("a", 3, 2.0, 1.0, 3.0),
        ("b", 2, 6.0, 5.0, 7.0),
    ]


def test_summarize_compares_every_variant_with_the_baseline() -> None:
    rows = summarize({"a": BASE, "b": boots(10, 0.03, 0.8, seed=2), "c": []}, "a", "ops")
    assert [r.variant for r in rows] == ["a", "b"]
    a, b = rows
    assert a.comparison is None and math.isnan(a.detectable)
    assert b.comparison is not None and b.comparison.verdict is Change.SLOWER
    assert b.detectable == pytest.approx(detectable_change(10, 10, stats.cv(BASE)))
    assert (b.median, b.low, b.high) == (b.estimate.median, min(b.samples), max(b.samples))
    first = summarize({"b": BASE, "a": BASE})  # no baseline named: the first one
    assert first[0].comparison is None and first[1].comparison is not None


def test_perf_compares_with_the_runs_baseline() -> None:
    moved = perf_run(scales={"no-reuse": 0.63, "upstream": 1.0}, baseline="upstream")
    (events, latency) = perf(moved)
    assert events.baseline == "upstream" and events.name == "map_perf.events_per_sec"
    reuse = events.rows[0]
    assert reuse.comparison is not None and reuse.comparison.baseline == "upstream"
    assert reuse.comparison.verdict is Change.SLOWER
    # Latency went up: for a time that is "slower" too, with the ratio above 1.
    lat = latency.rows[0].comparison
    assert lat is not None and lat.verdict is Change.SLOWER and lat.ratio > 1.5
    elsewhere = perf(dataclasses.replace(moved, baseline="not-run"))  # the first variant
    assert elsewhere[0].baseline == "no-reuse"


def test_perf_summarizes_typed_rounds_of_the_last_batch() -> None:
    def rounds(scale: float, seed: int) -> list[TestResult]:
        """Two batches of five rounds each."""
        return [
            _round(i, x, batch)
            for batch in (1, 2)
            for i, x in enumerate(boots(5, 0.03, scale, seed=seed + batch), 1)
        ]

    up = _variant("up", _repeat(1, 5.0), _repeat(2, 6.0), *rounds(1.0, 0))
    slow = _variant("slow", _repeat(1, 5.0), _repeat(2, 7.0), *rounds(0.7, 10))
    run = RunResult("m", "", "", (up, slow))
    summaries = {s.name: s for s in perf(run)}
    # A subtest's numbers are detail of its test: not compared.
    assert set(summaries) == {"map_perf.events_per_sec", "htab_reuse.reads"}
    events = summaries["map_perf.events_per_sec"]
    assert events.rows[0].samples == tuple(boots(5, 0.03, seed=2))  # batch 2, the rerun
    assert events.rows[1].comparison is not None
    assert events.rows[1].comparison.verdict is Change.SLOWER
    assert summaries["htab_reuse.reads"].rows[1].samples == (5.0, 7.0)  # repeats are samples


def test_a_measurement_needs_two_samples() -> None:
    once = RunResult("m", "", "", (_variant("a", _repeat(0, 3.0)), _variant("b", _repeat(0, 4.0))))
    assert perf(once) == []


def test_the_baselines_own_kernel_is_never_faster_or_slower() -> None:
    kernel = BuildInfo("t", "c", "/cache/artifacts/t-c", cached=False)
    elsewhere = dataclasses.replace(kernel, artifact_dir="/other")
    run = perf_run(scales={"upstream": 1.0, "twin": 0.63, "other": 0.63})
    builds = {"upstream": kernel, "twin": kernel, "other": elsewhere}
    variants = tuple(dataclasses.replace(v, build=builds[v.name]) for v in run.variants)
    run = dataclasses.replace(run, variants=variants)
    assert same_kernel_as(run, "upstream") == {"twin"}
    assert same_kernel_as(run, "absent") == frozenset()
    found = {r.variant: r.comparison for r in perf(run)[0].rows if r.comparison}
    assert found["other"].verdict is Change.SLOWER
    assert found["twin"].verdict is Change.INCONCLUSIVE


# --- batches and the A/A control -------------------------------------------------------


def test_the_aa_control_judges_whole_tests_of_one_batch() -> None:
    base = samples_of("up", boots(5, 0.03, seed=1), 1)
    same = samples_of("up~aa", boots(5, 0.03, seed=2), 1)
    assert noisy_metrics(base, same, 1) == ()
    # A wild subtest (one fresh map) and a functional test's counters do not
    # make a batch noisy: only the batch's whole-test metrics are judged.
    maps = boots(5, 0.4, 2.0, seed=3)
    wild = dataclasses.replace(
        same,
        tests=(
            *(_with_map(t, x) for t, x in zip(same.tests, maps, strict=True)),
            _repeat(1, 1.0),
            _repeat(2, 100.0),
        ),
    )
    base_functional = dataclasses.replace(base, tests=(*base.tests, _repeat(1, 50.0)))
    assert noisy_metrics(base_functional, wild, 1) == ()
    shifted = samples_of("up~aa", boots(5, 0.03, 1.2, seed=2), 1)
    assert noisy_metrics(base, shifted, 1) == ("map_perf.events_per_sec",)
    assert noisy_metrics(base, shifted, 2) == ()  # nothing measured in batch 2


def test_the_runner_asks_aa_control_and_gets_the_models_answer() -> None:
    base = samples_of("up", boots(5, 0.03, seed=1), 1)
    shifted = samples_of("up~aa", boots(5, 0.03, 1.2, seed=2), 1)
    for max_reruns in (0, 1):
        ours = judge_batch(1, base, shifted, max_reruns)
        assert aa_control.judge_batch(1, base, shifted, max_reruns) == ours
        assert ours == Batch(1, ("map_perf.events_per_sec",), rerun=max_reruns == 1)


def test_batch_note() -> None:
    run = RunResult("m", "", "", ())
    assert batch_note(run) == ""
    assert batch_note(dataclasses.replace(run, batches=(Batch(1),))) == ""
    names = ("a.x", "a.y", "a.z")
    rerun = dataclasses.replace(run, batches=(Batch(1, names, rerun=True), Batch(2, names[:1])))
    assert batch_note(rerun) == (
        "Noisy batch: batch 1 noisy (a.x, a.y and 1 more), rerun; batch 2 noisy (a.x) with no "
        "rerun left: its verdicts for those are inconclusive."
    )


# --- sequential plans ------------------------------------------------------------------


def test_paired_ratios_pair_rounds_against_the_baseline_and_its_control() -> None:
    base = _variant("up", _round(1, 100.0), _round(2, 100.0), _round(3, 100.0))
    aa = _variant("up~aa", _round(1, 100.0), _round(2, 121.0))  # round 3 gave no sample
    slow = _variant("slow", _round(1, 90.0), _round(2, 110.0), _round(3, 80.0))
    twin = _variant("twin", _round(1, 50.0))
    art = {"up": "/up", "slow": "/slow", "twin": "/up"}
    variants = tuple(
        dataclasses.replace(v, build=BuildInfo("t", "c", art[v.name], True))
        for v in (base, slow, twin)
    )
    run = RunResult("m", "", "", variants, baseline="up", control=aa)
    ratios = perf_module.paired_ratios(run, 1)
    # The twin boots up's own build: not a comparison.  Round 2's reference is
    # the geometric mean of up's 100 and the control's 121 (110); round 3 has
    # no control sample, so up alone.
    assert list(ratios) == [("slow", "map_perf", "events_per_sec")]
    got = ratios[("slow", "map_perf", "events_per_sec")]
    assert got == pytest.approx([math.log(0.9), 0.0, math.log(0.8)])
