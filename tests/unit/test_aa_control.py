"""The A/A control: the noise-floor rule, the rerun decision, the matrix option, the reports."""

from __future__ import annotations

import dataclasses
import re
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from orchestrator import aa_control, config, results, stats
from orchestrator.errors import MatrixError
from orchestrator.matrix import Perf
from orchestrator.perf import batch_note, perf
from orchestrator.report import html, junit, text
from orchestrator.results import (
    Batch,
    RunResult,
    Stage,
    StageResult,
    Status,
    TestResult,
    VariantResult,
    Verdict,
)
from orchestrator.sequential import Control
from orchestrator.stats import Change, noise_floor

from .samples import boots

# --- the rule (stats) ---------------------------------------------------------------------


def test_identical_distributions_are_not_flagged() -> None:
    for seed in range(5):
        floor = noise_floor("events_per_sec", "up", boots(5, 0.03, seed=seed), "up~aa",
                            boots(5, 0.03, seed=seed + 50))  # fmt: skip
        assert not floor.noisy, floor.reason
        assert floor.comparison.verdict is Change.SAME
        assert floor.cv < stats.NOISE_LIMIT and 0 < floor.spread < stats.MAX_HALF_WIDTH


def test_a_twenty_percent_shift_is_flagged() -> None:
    floor = noise_floor("events_per_sec", "up", boots(5, 0.03, seed=1), "up~aa",
                        boots(5, 0.03, 1.2, seed=2))  # fmt: skip
    assert floor.noisy
    assert re.fullmatch(r"A/A shift: the same kernel measured 1\.[12]\dx of itself", floor.reason)


def test_a_busy_host_spread_is_flagged() -> None:
    # DESIGN: separate boots of one kernel vary by ~16 % on a busy host.
    floor = noise_floor("events_per_sec", "up", boots(10, 0.16, seed=3), "up~aa",
                        boots(10, 0.16, seed=4))  # fmt: skip
    assert floor.noisy and floor.reason.startswith("A/A spread: CV ")
    assert "over 10+10 boots > 10%" in floor.reason


def test_too_few_boots_are_not_judged() -> None:
    # A rerun cannot help a plan of 3 boots: its verdicts are inconclusive anyway.
    floor = noise_floor("events_per_sec", "up", boots(3, 0.03), "up~aa", boots(3, 0.03, 1.5))
    assert not floor.noisy and floor.comparison.verdict is Change.INCONCLUSIVE


def test_the_limit_is_a_parameter() -> None:
    base, aa = boots(5, 0.03, seed=1), boots(5, 0.03, 1.07, seed=2)
    assert not noise_floor("ops", "up", base, "up~aa", aa).noisy
    assert noise_floor("ops", "up", base, "up~aa", aa, limit=0.03).noisy


def test_a_noisy_floor_makes_every_verdict_inconclusive() -> None:
    base = boots(5, 0.03, seed=1)
    slower = stats.compare("events_per_sec", "v", boots(5, 0.03, 0.7, seed=5), "up", base)
    assert slower.verdict is Change.SLOWER
    quiet = noise_floor("events_per_sec", "up", base, "up~aa", boots(5, 0.03, seed=2))
    assert stats.distrusted(slower, quiet) is slower
    noisy = noise_floor("events_per_sec", "up", base, "up~aa", boots(5, 0.03, 1.2, seed=2))
    c = stats.distrusted(slower, noisy)
    assert c.verdict is Change.INCONCLUSIVE and c.bound is None
    assert c.text == f"inconclusive (noisy batch, {noisy.reason})"
    assert c.ratio == slower.ratio  # the numbers stay; only the verdict is withheld


# --- the rerun decision (pure) --------------------------------------------------------------


def samples_of(name: str, values: list[float], batch: int) -> VariantResult:
    tests = tuple(
        TestResult("map_perf", Verdict.PASS, metrics={"events_per_sec": v}, round=i, batch=batch)
        for i, v in enumerate(values, 1)
    )
    return VariantResult(name, (), tests=tests)


def test_a_noisy_batch_is_rerun_while_reruns_are_left() -> None:
    base = samples_of("up", boots(5, 0.03, seed=1), 1)
    shifted = samples_of("up~aa", boots(5, 0.03, 1.2, seed=2), 1)
    same = samples_of("up~aa", boots(5, 0.03, seed=2), 1)
    assert aa_control.judge_batch(1, base, same, 1) == Batch(1)
    assert aa_control.judge_batch(1, base, shifted, 1) == Batch(
        1, ("map_perf.events_per_sec",), rerun=True
    )
    assert not aa_control.judge_batch(1, base, shifted, 0).rerun  # max_reruns: 0
    base2, shifted2 = (
        dataclasses.replace(v, tests=tuple(dataclasses.replace(t, batch=2) for t in v.tests))
        for v in (base, shifted)
    )
    last = aa_control.judge_batch(2, base2, shifted2, 1)
    assert last.noisy and not last.rerun  # still noisy, none left: kept, and distrusted


def test_only_the_batch_asked_for_is_judged() -> None:
    base = samples_of("up", boots(5, 0.03, seed=1), 2)
    shifted = samples_of("up~aa", boots(5, 0.03, 1.2, seed=2), 1)  # an older batch
    assert aa_control.judge_batch(2, base, shifted, 1) == Batch(2)


def test_the_control_name_cannot_be_a_variant_name(tmp_path: Path) -> None:
    name = aa_control.name_for("upstream")
    assert name == "upstream~aa"
    path = tmp_path / "m.yaml"
    path.write_text(f"tree: {{path: {tmp_path}}}\nvariants:\n  - name: {name}\n")
    (tmp_path / ".git").mkdir()
    with pytest.raises(MatrixError, match="contains '~'"):
        config.load(path)


# --- the matrix option -------------------------------------------------------------------------


def _matrix(tmp_path: Path, perf_section: str) -> Path:
    (tmp_path / ".git").mkdir(exist_ok=True)
    path = tmp_path / "m.yaml"
    path.write_text(
        f"tree: {{path: {tmp_path}}}\n"
        + textwrap.dedent(perf_section)
        + "variants:\n  - name: up\n"
    )
    return path


def test_perf_section(tmp_path: Path) -> None:
    assert config.load(_matrix(tmp_path, "")).perf == Perf(aa_control=False, max_reruns=1)
    loaded = config.load(_matrix(tmp_path, "perf:\n  aa_control: true\n  max_reruns: 2\n"))
    assert loaded.perf == Perf(aa_control=True, max_reruns=2)
    section = (
        "perf:\n  sequential: false\n  equivalence: 3%\n  error_rate: 10%\n  control: fdr\n"
        "  budget: 20m\n"
    )
    loaded = config.load(_matrix(tmp_path, section))
    expected = Perf(
        sequential=False, equivalence=0.03, error_rate=0.1, control=Control.FDR, budget=1200.0
    )
    assert loaded.perf == expected
    assert config.load(_matrix(tmp_path, "perf: {budget: 90}\n")).perf.budget == 90.0


@pytest.mark.parametrize(
    ("section", "line", "key", "fragment"),
    [
        ("perf:\n  aa_control: yes please\n", 3, "perf.aa_control",
         "expected true or false, got a string 'yes please'"),
        ("perf:\n  aa_control: 1\n", 3, "perf.aa_control", "expected true or false"),
        ("perf:\n  max_reruns: 9\n", 3, "perf.max_reruns", "between 0 and 5, got 9"),
        ("perf:\n  reruns: 1\n", 3, "perf.reruns", "allowed keys: aa_control, max_reruns"),
        ("perf:\n  equivalence: 80%\n", 3, "perf.equivalence", "between 0.5% and 50%, got 80%"),
        ("perf:\n  equivalence: five\n", 3, "perf.equivalence", "a percentage such as 5%"),
        ("perf:\n  error_rate: 0%\n", 3, "perf.error_rate", "between 0.1% and 20%"),
        ("perf:\n  control: fdx\n", 3, "perf.control", "must be one of fwer, fdr"),
        ("perf:\n  budget: 20 parsecs\n", 3, "perf.budget", "a duration such as 20m"),
        ("perf:\n  budget: -5\n", 3, "perf.budget", "positive number of seconds"),
        ("perf:\n  sequential: maybe\n", 3, "perf.sequential", "expected true or false"),
        ("perf: true\n", 2, "perf", "expected a mapping"),
    ],
)  # fmt: skip
def test_bad_perf_section(tmp_path: Path, section: str, line: int, key: str, fragment: str) -> None:
    path = _matrix(tmp_path, section)
    with pytest.raises(MatrixError) as info:
        config.load(path)
    assert (info.value.file, info.value.line, info.value.key) == (path, line, key)
    assert fragment in info.value.message


def test_the_default_matrix_measures_an_aa_control() -> None:
    matrix = config.load(Path(__file__).parents[2] / "matrix.yaml")
    assert matrix.perf.aa_control and matrix.perf.max_reruns == 1


# --- the reports ---------------------------------------------------------------------------


def _variant(name: str, batches: dict[int, list[float]]) -> VariantResult:
    tests = tuple(
        TestResult("map_perf", Verdict.PASS, 4.4, metrics={"events_per_sec": v}, round=i, batch=b)
        for b, values in batches.items()
        for i, v in enumerate(values, 1)
    )
    stages = tuple(StageResult(s, Status.PASS) for s in Stage)
    return VariantResult(name, stages, tests=tests)


def _run(second_batch_shift: float | None) -> RunResult:
    """Batch 1: the control reads 20 % high; batch 2 (if any): shifted as asked."""
    up = {1: boots(5, 0.03, seed=1)}
    slow = {1: boots(5, 0.03, 0.7, seed=2)}
    aa = {1: boots(5, 0.03, 1.2, seed=3)}
    batches: tuple[Batch, ...] = (Batch(1, ("map_perf.events_per_sec",)),)
    if second_batch_shift is not None:
        up[2], slow[2] = boots(5, 0.03, seed=11), boots(5, 0.03, 0.7, seed=12)
        aa[2] = boots(5, 0.03, second_batch_shift, seed=13)
        noisy = ("map_perf.events_per_sec",) if second_batch_shift != 1.0 else ()
        batches = (Batch(1, batches[0].noisy, rerun=True), Batch(2, noisy))
    return RunResult(
        "/work/matrix.yaml", "t0", "t1", (_variant("up", up), _variant("slow", slow)),
        baseline="up", control=_variant("up~aa", aa), batches=batches,
    )  # fmt: skip


def test_verdicts_use_the_last_batch_and_its_floor() -> None:
    (s,) = perf(_run(1.0))
    assert [r.variant for r in s.rows] == ["up", "slow"]  # the control is no variant
    assert s.rows[0].samples == tuple(boots(5, 0.03, seed=11))  # batch 2 only
    assert s.control is not None and s.control.variant == "up~aa"
    assert s.floor is not None and not s.floor.noisy and not s.noisy
    slow = s.rows[1].comparison
    assert slow is not None and slow.verdict is Change.SLOWER


def test_a_last_batch_still_noisy_leaves_only_inconclusive_verdicts() -> None:
    (s,) = perf(_run(1.2))
    assert s.noisy and s.floor is not None
    slow = s.rows[1].comparison
    assert slow is not None and slow.verdict is Change.INCONCLUSIVE
    assert "noisy batch, A/A shift" in slow.text


def test_the_text_says_so_in_one_line() -> None:
    rerun = text.render(_run(1.0))
    section = rerun[rerun.index("Performance against up") : rerun.index("Metrics (median")]
    (note,) = [x for x in section.split("\n") if x.startswith("Noisy batch")]
    following = section.split(note + "\n", 1)[1].split("\n", 1)[0]
    assert f"{note} {following.strip()}" == (  # one sentence, wrapped at 72 columns
        "Noisy batch: batch 1 noisy (map_perf.events_per_sec), rerun; verdicts from batch 2."
    )
    regressions = section[section.index("Regressions:") : section.index("Noise floor")]
    assert "slow 0.7" in regressions and "up~aa" not in regressions
    assert re.search(r"A/A: up~aa 1\.0\dx of up \[0\.\d\d, 1\.\d\d\], CV 4\.\d% over 5\+5", section)
    still = text.render(_run(1.2))
    assert "no rerun left" in still and "NOISY: A/A shift" in " ".join(still.split())
    assert "Regressions:" not in still  # a noisy batch convicts nobody
    assert all(len(x) <= 72 for x in still.splitlines())


def test_html_shows_the_floor_and_the_rerun() -> None:
    page = html.render(_run(1.0))
    assert "Noisy batch, rerun." in page and batch_note(_run(1.0)) in page
    assert "is the A/A control" in page
    assert "Measured again as up~aa, the same kernel read" in page
    assert "A/A control: within the noise limit" in page
    assert page.count('class="dot"') == 15  # up, slow and the control, batch 2
    still = html.render(_run(1.2))
    assert "<b>Noisy batch:</b> A/A shift" in still


def test_junit_keeps_the_control_out_of_the_suites() -> None:
    root = ET.fromstring(junit.render(_run(1.2)))
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    assert set(suites) == {"up", "slow"}
    props = {p.get("name"): p.get("value") for p in suites["up"].iter("property")}
    key = "perf.map_perf.events_per_sec"
    assert props[f"{key}.aa.control"] == "up~aa" and props[f"{key}.aa.n"] == "5"
    assert (props[f"{key}.aa.noisy"] or "").startswith("A/A shift")
    assert props["perf.batches"] == "2" and "no rerun left" in (props["perf.batch_note"] or "")
    slow = {p.get("name"): p.get("value") for p in suites["slow"].iter("property")}
    assert (slow[f"{key}.verdict"] or "").startswith("inconclusive (noisy batch")


def test_junit_names_a_rerun_batch_apart() -> None:
    root = ET.fromstring(junit.render(_run(1.2)))
    (up,) = [s for s in root.iter("testsuite") if s.get("name") == "up"]
    names = [c.get("name") for c in up.iter("testcase") if "map_perf" in (c.get("name") or "")]
    assert len(names) == len(set(names)) == 10
    assert "map_perf@1" in names and "map_perf@1 (batch 2)" in names


def test_results_round_trip_and_old_files_read() -> None:
    run = _run(1.0)
    data = results.to_data(run)
    assert results.from_data(RunResult, data) == run
    for key in ("control", "batches"):
        del data[key]  # a results.json from before the A/A control
    for v in data["variants"]:
        for t in v["tests"]:
            del t["batch"]
    old = results.from_data(RunResult, data)
    assert old.control is None and old.batches == () and batch_note(old) == ""
    (s,) = perf(old)  # every sample, from both batches, as before
    assert s.floor is None and len(s.rows[0].samples) == 10
    assert "Noise floor" in text.render(old) and "A/A" not in text.render(old)


# --- breakdowns (per CPU, min, max) ------------------------------------------------------


def _with_breakdown(v: VariantResult, spread: list[float]) -> VariantResult:
    """Each boot also reports a per-CPU breakdown, with the values given."""
    tests = tuple(
        dataclasses.replace(t, metrics={**t.metrics, "events_per_sec_cpu0": x})
        for t, x in zip(v.tests, spread, strict=True)
    )
    return dataclasses.replace(v, tests=tests)


def test_a_noisy_breakdown_does_not_rerun_the_batch() -> None:
    base = samples_of("up", boots(5, 0.03, seed=1), 1)
    same = samples_of("up~aa", boots(5, 0.03, seed=2), 1)
    wild = _with_breakdown(same, boots(5, 0.4, 1.5, seed=3))
    assert aa_control.judge_batch(1, _with_breakdown(base, boots(5, 0.03)), wild, 1) == Batch(1)


def test_reports_fold_breakdowns_after_their_headline() -> None:
    run = _run(1.0)
    up, slow = (
        _with_breakdown(v, [t.metrics["events_per_sec"] / 2 for t in v.tests]) for v in run.variants
    )
    run = dataclasses.replace(run, variants=(up, slow))
    summaries = perf(run)
    assert [(s.metric, s.breakdown) for s in summaries] == [
        ("events_per_sec", False), ("events_per_sec_cpu0", True),
    ]  # fmt: skip
    summary = text.render(run)
    assert "map_perf.events_per_sec:" in summary
    assert "events_per_sec_cpu0" not in summary
    assert "1 breakdowns (per CPU, min, max) are compared in report.html." in summary
    page = html.render(run)
    folded = page.index('<details class="breakdowns">')
    assert page.index("events_per_sec_cpu0") > folded > page.index("events_per_sec")
    assert "Breakdowns: 1 per-CPU, min and max metrics" in page[folded:]


# --- a variant with the baseline's very kernel ---------------------------------------------


def test_the_baselines_own_kernel_is_never_faster_or_slower() -> None:
    run = _run(1.0)
    built = results.BuildInfo("t", "c", "/cache/artifacts/t-c", cached=False)
    up, slow = (dataclasses.replace(v, build=built) for v in run.variants)
    twin = dataclasses.replace(slow, name="twin")  # 0.7x of up, but the same kernel
    other = dataclasses.replace(slow, build=dataclasses.replace(built, artifact_dir="/other"))
    (s,) = perf(dataclasses.replace(run, variants=(up, twin, other)))
    verdicts = {r.variant: r.comparison for r in s.rows if r.comparison is not None}
    assert verdicts["slow"].verdict is Change.SLOWER
    assert verdicts["twin"].verdict is Change.INCONCLUSIVE
    assert "the baseline's own kernel: a slower reading is noise" in verdicts["twin"].text
    same = stats.compare("events_per_sec", "b", boots(5, 0.03, seed=5), "a", boots(5, 0.03))
    assert stats.same_kernel(same) == same  # no change stays as it is
