"""Perf statistics on synthetic samples with known differences."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from typing import Any

import numpy as np
import pytest

from orchestrator import results, stats
from orchestrator.perf import summarize
from orchestrator.report import charts, html, junit, text
from orchestrator.results import RunResult, Status, TestResult, VariantResult, Verdict
from orchestrator.stats import Change, Estimate, compare, detectable_change, estimate, judge
from orchestrator.textfmt import fmt_number
from tests.unit.test_report_junit import _stages

from .samples import boots

BASE = boots(10, 0.03, seed=1)


@pytest.mark.parametrize(
    ("metric", "scale", "verdict"),
    [
        ("events_per_sec", 1.10, Change.FASTER),
        ("events_per_sec", 0.90, Change.SLOWER),
        # Time taken: more of it is worse.
        ("update_latency", 1.10, Change.SLOWER),
        ("run_seconds", 0.90, Change.FASTER),
        ("lookup_ns", 1.10, Change.SLOWER),
    ],
)
def test_a_ten_percent_change_is_seen_in_its_direction(
    metric: str, scale: float, verdict: Change
) -> None:
    c = compare(metric, "v", boots(10, 0.03, scale, seed=2), "base", BASE)
    assert c.verdict is verdict
    assert c.ratio == pytest.approx(scale, rel=0.04)
    assert c.ci_low < c.ratio < c.ci_high and not c.ci_low <= 1.0 <= c.ci_high
    assert c.p < 0.01 and c.bound is None
    assert (c.variant, c.baseline) == ("v", "base")


def test_no_change_comes_with_its_bound() -> None:
    c = compare("events_per_sec", "v", boots(10, 0.03, seed=2), "base", BASE)
    assert c.verdict is Change.SAME
    assert c.ci_low < 1.0 < c.ci_high
    assert c.bound is not None and 1 <= c.bound <= 8
    farthest = max(1.0 - c.ci_low, c.ci_high - 1.0) * 100
    assert farthest <= c.bound < farthest + 1  # rounded up to a whole percent
    assert c.text == f"no measurable change (within ±{c.bound}%)"


def test_three_samples_are_inconclusive_however_big_the_change() -> None:
    c = compare("events_per_sec", "v", boots(3, 0.03, 0.5, seed=2), "base", BASE)
    assert c.verdict is Change.INCONCLUSIVE
    assert c.reason == "n=3+10, need 5 each"
    assert c.text.startswith("inconclusive (n=3+10")


def test_a_noisy_baseline_is_inconclusive() -> None:
    noisy = boots(10, 0.20, seed=3)
    assert stats.cv(noisy) > 0.10
    c = compare("events_per_sec", "v", boots(10, 0.03, 0.8, seed=2), "base", noisy)
    assert c.verdict is Change.INCONCLUSIVE and c.reason.startswith("baseline CV")


def _est(n: int = 10, median: float = 1.0, cv: float = 0.03) -> Estimate:
    return Estimate(n, median, median * 0.98, median * 1.02, cv)


@pytest.mark.parametrize(
    ("ci", "p", "verdict", "bound"),
    [
        ((0.85, 0.95), 0.001, Change.SLOWER, None),
        ((1.05, 1.15), 0.001, Change.FASTER, None),
        ((0.95, 1.03), 0.001, Change.SAME, 5),  # significant, but the interval holds 1
        ((0.90, 0.97), 0.08, Change.SAME, 10),  # excludes 1, but p is not small enough
        ((0.99, 1.01), 0.9, Change.SAME, 1),
        ((1.0, 1.0), 1.0, Change.SAME, 0),  # identical samples
        ((0.60, 1.40), 0.5, Change.INCONCLUSIVE, None),  # wider than ±25 %
    ],
)
def test_judge_rules(ci: tuple[float, float], p: float, verdict: Change, bound: int | None) -> None:
    variant = _est(median=(ci[0] + ci[1]) / 2)
    assert judge("events_per_sec", variant, _est(), ci, p)[:2] == (verdict, bound)


def test_judge_limits_are_parameters() -> None:
    base, variant = _est(cv=0.12), _est(median=0.9)
    assert judge("m", variant, base, (0.85, 0.95), 0.001)[0] is Change.INCONCLUSIVE
    relaxed = judge("m", variant, base, (0.85, 0.95), 0.001, noise_limit=0.15)
    assert relaxed[0] is Change.SLOWER
    strict = judge("m", variant, _est(), (0.85, 0.95), 0.001, max_half_width=0.02)
    assert strict[0] is Change.INCONCLUSIVE and "±2%" in strict[2]
    assert judge("m", _est(n=4), _est(), (0.85, 0.95), 0.001)[0] is Change.INCONCLUSIVE
    assert judge("m", _est(), _est(n=4), (0.85, 0.95), 0.001)[0] is Change.INCONCLUSIVE
    negative = judge("m", _est(median=-1.0), _est(), (-1.1, -0.9), 0.001)
    assert negative == (Change.INCONCLUSIVE, None, "no positive ratio of medians")


@pytest.mark.parametrize(
    ("metric", "higher"),
    [
        ("events_per_sec", True),
        ("ops", True),
        ("ns_per_op", True),  # the rule is the name's end, nothing cleverer
        ("boot_seconds", False),
        ("update_ns", False),
        ("lookup_us", False),
        ("RTT_MS", False),
        ("p99_latency", False),
        ("latency", False),
    ],
)
def test_direction_from_the_name(metric: str, higher: bool) -> None:
    assert stats.higher_is_better(metric) is higher


def test_estimate() -> None:
    x = boots(10, 0.03)
    e = estimate(x)
    assert e.n == 10 and e.median == pytest.approx(float(np.median(x)))
    assert min(x) <= e.ci_low < e.median < e.ci_high <= max(x)
    assert e.cv == pytest.approx(float(np.std(x, ddof=1) / np.mean(x)))
    one = estimate([5.0])
    assert (one.n, one.median, one.ci_low, one.ci_high) == (1, 5.0, 5.0, 5.0)
    assert math.isnan(one.cv)
    same = estimate([2.0] * 6)
    assert (same.median, same.ci_low, same.ci_high, same.cv) == (2.0, 2.0, 2.0, 0.0)
    with pytest.raises(ValueError):
        estimate([])


def test_cv() -> None:
    assert stats.cv([9.0, 10.0, 11.0]) == pytest.approx(0.1)
    assert math.isnan(stats.cv([1.0])) and math.isnan(stats.cv([-1.0, 1.0]))


def test_same_input_same_numbers() -> None:
    x, y = boots(10, 0.05, seed=7), boots(8, 0.05, 1.02, seed=8)
    assert estimate(x) == estimate(list(x))
    assert compare("m", "v", y, "b", x) == compare("m", "v", list(y), "b", list(x))


def test_a_zero_baseline_has_no_ratio() -> None:
    c = compare("errors", "v", [1.0] * 5, "b", [0.0] * 5)
    assert c.verdict is Change.INCONCLUSIVE and math.isnan(c.ratio)
    assert c.reason == "baseline median is 0"


def test_detectable_change_matches_the_measured_table() -> None:
    # DESIGN.md: ≈ 16 % at 5+5, ≈ 10 % at 10+10, ≈ 7 % at 20+20 with CV ≈ 6 %.
    five, ten, twenty = (detectable_change(n, n, 0.06) for n in (5, 10, 20))
    assert 0.12 < five < 0.21
    assert 0.07 < ten < 0.14
    assert 0.05 < twenty < 0.10
    assert five > ten > twenty


def test_detectable_change_grows_with_noise_and_shrinks_with_samples() -> None:
    assert detectable_change(10, 10, 0.03) < detectable_change(10, 10, 0.06)
    assert detectable_change(10, 20, 0.06) < detectable_change(10, 10, 0.06)
    assert detectable_change(10, 10, 0.03) == detectable_change(10, 10, 0.03)
    assert detectable_change(2, 2, 0.03) == math.inf  # p < 0.05 is out of reach
    assert detectable_change(10, 10, 0.0) == 0.0
    assert detectable_change(0, 10, 0.03) == math.inf
    assert math.isnan(detectable_change(10, 10, math.nan))


def test_detectable_change_is_detected() -> None:
    """At the change it names, the verdict machinery sees a drop in most batches."""
    change = detectable_change(10, 10, 0.03, power=0.8, simulations=500)
    seen = 0
    for seed in range(20):
        base = boots(10, 0.03, seed=100 + seed)
        drop = boots(10, 0.03, 1 - change * 1.1, seed=200 + seed)
        seen += compare("events_per_sec", "v", drop, "b", base).verdict is Change.SLOWER
    assert seen >= 12


# --- in the reports ------------------------------------------------------------------

STARTED = "2026-11-25T19:07:17+00:00"
SCALES = {"upstream": 1.0, "no-reuse": 0.63, "ctor": 1.0}


def perf_variant(
    name: str, scale: float, seed: int, *, n: int = 10, cv: float = 0.03, lock: str = "pass"
) -> VariantResult:
    """A variant as a map_perf matrix makes it: one sample per boot, a KTAP test beside it."""
    subs = (
        TestResult("htab_reuse.update", Verdict.PASS),
        TestResult("htab_reuse.lock", Verdict(lock), reason="" if lock == "pass" else "stale"),
    )
    htab = TestResult("htab_reuse", Verdict(lock), 3.0, subtests=subs)
    perf = tuple(
        TestResult(
            "map_perf",
            Verdict.PASS,
            4.4,
            metrics={"events_per_sec": v, "update_latency_ns": 1e9 / v},
            round=i,
            batch=1,
        )
        for i, v in enumerate(boots(n, cv, scale, seed), 1)
    )
    return VariantResult(
        name, _stages(*[Status.PASS] * 5), base="1" * 40, head=name[0] * 40, tests=(htab, *perf)
    )


def perf_run(
    started: str = STARTED,
    scales: dict[str, float] | None = None,
    *,
    seed: int = 0,
    baseline: str = "upstream",
    **kw: Any,
) -> RunResult:
    variants = tuple(
        perf_variant(name, scale, seed * 10 + i, **kw)
        for i, (name, scale) in enumerate((scales or SCALES).items())
    )
    return RunResult("/work/matrix.yaml", started, started, variants, baseline=baseline)


def test_text_lists_regressions_with_their_numbers() -> None:
    out = text.render(perf_run())
    section = out[out.index("Performance against upstream") : out.index("Metrics (median")]
    regressions = section[section.index("Regressions:") : section.index("Other comparisons:")]
    joined = " ".join(line.strip() for line in regressions.splitlines())
    assert re.search(
        r"map_perf\.events_per_sec: no-reuse 0\.6\dx of upstream \[0\.\d\d, 0\.\d\d\], "
        r"p=0\.000\d+, slower",
        joined,
    ), joined
    assert "ctor" not in regressions
    others = section[section.index("Other comparisons:") :]
    assert "ctor" in others and "no measurable change (within ±" in others
    assert "map_perf.events_per_sec: CV " in section and "at 10+10" in section
    assert all(len(line) <= 72 for line in out.splitlines())


def test_html_shows_estimates_ratios_and_the_noise_floor() -> None:
    page = html.render(perf_run())
    perf_section = page[
        page.index('<section id="perf">') : page.index(
            "</section>", page.index('<section id="perf">')
        )
    ]
    assert perf_section.count('class="whisker"') >= 3 * 3  # a line and two caps per variant
    assert perf_section.count('class="dot"') == 2 * 3 * 10  # two metrics, every sample
    assert "ratio to upstream [95% CI]" in perf_section
    assert 'class="c-slower">slower<' in perf_section
    assert "no measurable change (within ±" in perf_section
    assert "Noise floor: upstream CV" in perf_section and "is detectable" in perf_section
    assert "Noisy batch" not in perf_section
    noisy = html.render(perf_run(cv=0.2))
    assert "Noisy batch" in noisy and "inconclusive (baseline CV" in noisy


def test_html_charts_keep_every_estimate_in_view() -> None:
    rows = summarize({"a": BASE, "b": boots(10, 0.03, 0.9, seed=4)}, "a", "ops")
    c = charts.chart(("t", "ops"), rows)
    for bar, row in zip(c.bars, rows, strict=True):
        assert c.left <= bar.whisker.low <= bar.x + bar.width <= bar.whisker.high <= c.right
        assert fmt_number(row.estimate.ci_low) in bar.whisker.text


def test_junit_carries_the_estimates() -> None:
    root = ET.fromstring(junit.render(perf_run()))
    suites = {s.get("name"): s for s in root.iter("testsuite")}

    def props(name: str) -> dict[str, str]:
        suite = suites[name].find("properties")
        assert suite is not None
        return {p.get("name") or "": p.get("value") or "" for p in suite}

    up, reuse = props("upstream"), props("no-reuse")
    key = "perf.map_perf.events_per_sec"
    assert up[f"{key}.n"] == "10" and up[f"{key}.baseline"] == "itself"
    assert float(up[f"{key}.ci_low"]) < float(up[f"{key}.median"]) < float(up[f"{key}.ci_high"])
    assert f"{key}.ratio" not in up
    assert reuse[f"{key}.verdict"] == "slower" and reuse[f"{key}.baseline"] == "upstream"
    assert 0.55 < float(reuse[f"{key}.ratio"]) < 0.7 and float(reuse[f"{key}.p"]) < 0.001
    assert float(reuse[f"{key}.detectable_drop"]) < 0.1


def test_results_keep_the_baseline_and_old_files_read() -> None:
    run = perf_run(baseline="ctor")
    data = results.to_data(run)
    assert results.from_data(RunResult, data).baseline == "ctor"
    del data["baseline"]  # a results.json from before the field
    assert results.from_data(RunResult, data).baseline == ""
