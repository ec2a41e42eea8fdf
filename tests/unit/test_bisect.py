"""The first-bad-patch search as a function of a step oracle: skips, flakes, ends."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator import bisect
from orchestrator.bisect import Found, Job
from orchestrator.results import (
    Bisection,
    BisectStep,
    PatchOutcome,
    PatchResult,
    RunResult,
    Stage,
    StageResult,
    Status,
    StepStatus,
    TestResult,
    VariantResult,
    Verdict,
)
from orchestrator.units import GuestState, Tested

RUNS = 5


def oracle(
    first_bad: int,
    *,
    skip: tuple[int, ...] = (),
    failures: Callable[[int], int] = lambda k: RUNS,
) -> tuple[Callable[[int], BisectStep], list[int]]:
    """Steps k >= first_bad fail `failures(k)` of RUNS times; the calls are recorded."""
    calls: list[int] = []

    def step(k: int) -> BisectStep:
        calls.append(k)
        if k in skip:
            return BisectStep(k, f"c{k}", StepStatus.SKIP, reason="build: boom")
        fails = failures(k) if k >= first_bad else 0
        status = StepStatus.BAD if fails else StepStatus.GOOD
        return BisectStep(k, f"c{k}", status, fails, RUNS)

    return step, calls


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7, 16])
def test_finds_every_first_bad_patch_with_counts_on_both_sides(count: int) -> None:
    for first in range(1, count + 1):
        step, calls = oracle(first)
        found = bisect.search(count, step)
        assert found.first_bad == first, (count, first, calls)
        assert len(calls) == len(set(calls)), "a step is tested once"
        assert {first, first - 1} <= set(calls)  # both sides of the answer were tested
        # A binary search, plus at most the two ends it took on trust.
        assert len(calls) <= (count).bit_length() + 2


def test_three_patches_second_bad_takes_two_steps() -> None:
    step, calls = oracle(2)
    found = bisect.search(3, step)
    assert calls == [1, 2]
    assert bisect.summary(found, "bpf: break it") == (
        "patch 2 (bpf: break it): bad in 5/5 runs; good in 0/5 runs at patch 1; 99.9% sure"
    )


def test_first_patch_bad_confirms_the_base() -> None:
    step, calls = oracle(1)
    found = bisect.search(3, step)
    assert found.first_bad == 1 and calls == [1, 0]
    assert "good in 0/5 runs at the base (no patches)" in bisect.summary(found)


def test_a_skipped_step_is_stepped_around() -> None:
    step, calls = oracle(6, skip=(4,))
    found = bisect.search(8, step)
    assert calls == [4, 3, 5, 6]  # 4 would not build: its neighbour below instead
    assert found.first_bad == 6 and found.candidates == ()
    assert found.steps[0].status is StepStatus.SKIP


def test_skips_next_to_the_answer_leave_candidates() -> None:
    step, _ = oracle(3, skip=(2,))
    found = bisect.search(3, step)
    # 1 good, 2 cannot be built, 3 bad: the first bad is 2 or 3.
    assert found.first_bad == 0
    assert found.candidates == (2, 3)
    assert "patches 2, 3 could not all be tested" in found.why
    assert bisect.confidence(found) == 0.0


def test_the_whole_series_passing_is_not_reproduced() -> None:
    step, calls = oracle(99)  # nothing fails
    found = bisect.search(3, step)
    assert found.first_bad == 0
    assert calls[-1] == 3
    assert found.why == (
        "the failure did not reproduce: with the whole series the test failed in 0/5 runs"
    )


def test_a_base_that_fails_too_is_said() -> None:
    step, _ = oracle(0)
    found = bisect.search(3, step)
    assert found.first_bad == 0
    assert found.why == "it fails at the base (no patches) too: 5/5 runs"


def test_no_patches() -> None:
    found = bisect.search(0, oracle(1)[0])
    assert found == Found((), why="the variant has no patches to bisect")


def test_an_unbuildable_whole_series() -> None:
    found = bisect.search(1, oracle(1, skip=(1,))[0])
    assert found.first_bad == 0 and found.why == "the whole series cannot be tested: build: boom"


def test_a_flaky_failure_counts_once_and_lowers_confidence() -> None:
    # Patch 3 of 4 makes the test fail 1 run in 5: any failure makes a step bad.
    step, _ = oracle(3, failures=lambda k: 1)
    found = bisect.search(4, step)
    assert found.first_bad == 3
    sure = bisect.confidence(found)
    assert 0.1 < sure < 0.5  # 1 failure in 5 runs says little about the good steps
    solid = bisect.search(4, oracle(3)[0])
    assert bisect.confidence(solid) > 0.99 > sure


@pytest.mark.parametrize("rate", [0.05, 0.1, 0.3, 0.6, 1.0])
def test_confidence_does_not_claim_more_than_it_gets_right(rate: float) -> None:
    """Simulated: a test failing in `rate` of runs from patch 5 of 8 on, 5 runs a step.
    A flaky failure can make the search name a later patch; the confidence
    must say so: over the patches it names, it is on average no higher than
    the share of them that are right."""
    rng = random.Random(7)
    named, right, sure = 0, 0, 0.0
    for _ in range(1000):
        fails = lambda k: sum(rng.random() < rate for _ in range(RUNS))  # noqa: E731
        found = bisect.search(8, oracle(5, failures=fails)[0])
        if found.first_bad:
            named += 1
            right += found.first_bad == 5
            sure += bisect.confidence(found)
    assert named > 300
    if rate == 1.0:
        assert right == named and sure / named > 0.99
    else:
        assert right < named  # the flakes did mislead it sometimes
        assert sure / named <= right / named + 0.03


def _tested(*verdicts: Verdict, boot: Status = Status.PASS) -> Tested:
    tests = tuple(
        TestResult("smoke", v, repeat=i, reason="x" if v is not Verdict.PASS else "")
        for i, v in enumerate(verdicts, 1)
    )
    guest = GuestState("v", "v", kernel=Path("/k"))
    return Tested(StageResult(Stage.BOOT, boot, "no login"), tests, guest, None)


def test_judge_counts_failures_and_skips_what_did_not_run() -> None:
    bad = bisect.judge(2, "c2", _tested(Verdict.PASS, Verdict.FAIL, Verdict.CRASH))
    assert (bad.status, bad.failures, bad.runs) == (StepStatus.BAD, 2, 3)
    assert bad.reason == "smoke@2: FAIL x"
    good = bisect.judge(1, "c1", _tested(Verdict.PASS, Verdict.PASS, Verdict.ERROR))
    assert (good.status, good.failures, good.runs) == (StepStatus.GOOD, 0, 2)
    unbooted = bisect.judge(1, "c1", _tested(boot=Status.FAIL))
    assert unbooted.status is StepStatus.SKIP and unbooted.reason == "boot: no login"
    errors = bisect.judge(1, "c1", _tested(Verdict.ERROR))
    assert errors.status is StepStatus.SKIP


def _variant(name: str, *verdicts: tuple[str, Verdict]) -> VariantResult:
    stages = (StageResult(Stage.TEST, Status.PASS),)
    tests = tuple(TestResult(n, v) for n, v in verdicts)
    patch = PatchResult("p.patch", "subject", PatchOutcome.APPLIED, commit="abc")
    return VariantResult(name, stages, tests=tests, patches=(patch,))


def test_named_and_recorded_on_the_variant() -> None:
    step, _ = oracle(1)
    found = bisect.search(1, step)
    patches = (PatchResult("0001-x.patch", "bpf: x", PatchOutcome.APPLIED, commit="c1"),)
    made = bisect.named(found, Job("v", "smoke", RUNS), patches)
    assert (made.first_bad, made.subject, made.commit, made.source) == (
        1,
        "bpf: x",
        "c1",
        "0001-x.patch",
    )
    run = RunResult("m.yaml", "", "", (_variant("base"), _variant("v")))
    older = Bisection("smoke", 3, summary="old")
    other = Bisection("other", 3)
    run = bisect.record(run, "v", (older, other))
    run = bisect.record(run, "v", (made,))
    assert run.variants[1].bisect == (other, made)
    assert run.variants[0].bisect == ()


def _bisected_run() -> RunResult:
    step, _ = oracle(2)
    found = bisect.search(3, step)
    patches = tuple(
        PatchResult(f"/p/000{i}-x.patch", f"bpf: <b>{i}</b>\x1b[31m", PatchOutcome.APPLIED,
                    commit=f"{i}" * 40)
        for i in (1, 2, 3)
    )  # fmt: skip
    made = bisect.named(found, Job("v", "smoke", RUNS), patches)
    base = _variant("base", ("smoke", Verdict.PASS))
    failing = VariantResult(
        "v",
        (StageResult(Stage.TEST, Status.FAIL, "1 unexpected"),),
        tests=(TestResult("smoke", Verdict.FAIL, reason="not ok 1"),),
        patches=patches,
    )
    return bisect.record(
        RunResult("m.yaml", "", "", (base, failing), baseline="base"), "v", (made,)
    )


def test_reports_name_the_first_bad_patch_and_how_sure() -> None:
    from orchestrator.report import html, text

    run = _bisected_run()
    page = html.render(run)
    assert "First bad patch: smoke" in page
    assert "bpf: &lt;b&gt;2&lt;/b&gt;" in page and "<b>2</b>" not in page  # escaped
    assert "\x1b" not in page
    assert "99.9% sure" in page and "2222222222" in page
    summary = text.render(run)
    assert "first bad patch for smoke: patch 2 (bpf: <b>2</b>\\x1b[31m): bad in 5/5 runs;" in (
        summary.replace("\n    ", " ")
    )
    assert "\x1b" not in summary


def test_wanted_is_what_the_variant_fails_and_the_baseline_passes(tmp_path: Path) -> None:
    from orchestrator.matrix import Bisect, Kconfig, Matrix, Report, Test, Tree, TreeKind, Variant

    def matrix(enabled: bool, own: bool = False) -> Matrix:
        return Matrix(
            path=tmp_path / "m.yaml",
            name="m",
            tree=Tree(TreeKind.PATH, str(tmp_path)),
            kconfig=Kconfig(),
            variants=(
                Variant("base"),
                Variant("v", series=(tmp_path / "p",), bisect=own),
                Variant("w", series=(tmp_path / "p",)),
            ),
            report=Report(tmp_path),
            tests=(Test("smoke", "ktap", "/bin/smoke"), Test("other", "ktap", "/bin/o")),
            bisect=Bisect(enabled=enabled, runs=3),
        )

    base = _variant("base", ("smoke", Verdict.PASS), ("other", Verdict.FAIL))
    v = _variant("v", ("smoke", Verdict.PASS), ("smoke", Verdict.FAIL), ("other", Verdict.FAIL))
    w = _variant("w", ("smoke", Verdict.ERROR), ("other", Verdict.FAIL))
    run = RunResult("m.yaml", "", "", (base, v, w), baseline="base")
    assert bisect.wanted(matrix(False), run) == ()
    # smoke failed in one of v's repeats; "other" fails on the baseline too; w's
    # smoke never ran.
    assert bisect.wanted(matrix(True), run) == (Job("v", "smoke", 3),)
    assert bisect.wanted(matrix(False, own=True), run) == (Job("v", "smoke", 3),)


def _matrix_file(tmp_path: Path, top: str, variant: str = "") -> Path:
    (tmp_path / "linux" / ".git").mkdir(parents=True, exist_ok=True)
    path = tmp_path / "m.yaml"
    path.write_text(
        f"tree: {{path: {tmp_path / 'linux'}}}\n{top}\nvariants:\n  - name: a\n{variant}"
    )
    return path


def test_bisect_settings_in_the_matrix(tmp_path: Path) -> None:
    from orchestrator import config
    from orchestrator.matrix import Bisect

    assert config.load(_matrix_file(tmp_path, "")).bisect == Bisect(False, 5)
    assert config.load(_matrix_file(tmp_path, "bisect: true")).bisect == Bisect(True, 5)
    assert config.load(_matrix_file(tmp_path, "bisect: {runs: 10}")).bisect == Bisect(True, 10)
    off = config.load(_matrix_file(tmp_path, "bisect: {enabled: false, runs: 2}"))
    assert off.bisect == Bisect(False, 2)
    own = config.load(_matrix_file(tmp_path, "", "    bisect: true\n"))
    assert own.variants[0].bisect and not own.bisect.enabled


@pytest.mark.parametrize(
    ("top", "variant", "message"),
    [
        ("bisect: {runs: 0}", "", "m.yaml:2: bisect.runs:"),
        ("bisect: {runs: 1000}", "", "m.yaml:2: bisect.runs:"),
        ("bisect: {rnus: 3}", "", "m.yaml:2: bisect"),
        ("bisect: maybe", "", "m.yaml:2: bisect: expected true or false"),
        ("", "    bisect: 3\n", "m.yaml:5: variants[0].bisect: expected true or false"),
    ],
)
def test_bad_bisect_settings_name_file_line_key(
    tmp_path: Path, top: str, variant: str, message: str
) -> None:
    from orchestrator import config
    from orchestrator.errors import MatrixError

    with pytest.raises(MatrixError) as caught:
        config.load(_matrix_file(tmp_path, top, variant))
    assert message in str(caught.value)


# --- perf steps: slower than the base beyond the bound ---------------------------------------

BASE = (1000.0, 1012.0, 991.0, 1005.0, 997.0)  # ~1 % boot-to-boot spread


def test_judge_perf_is_the_runs_comparison_of_a_step_with_the_base() -> None:
    slower = bisect.judge_perf(2, "c2", "events_per_sec", [x * 0.7 for x in BASE], BASE)
    assert (slower.status, slower.runs, slower.failures) == (StepStatus.BAD, 5, 0)
    assert slower.ratio == pytest.approx(0.7)
    assert slower.median == pytest.approx(700.0)
    assert slower.ci_low is not None and slower.ci_high is not None and slower.p is not None
    assert slower.ci_low <= 0.7 <= slower.ci_high < 1.0 and slower.p < 0.05
    assert slower.reason.startswith("slower (p=")
    same = bisect.judge_perf(1, "c1", "events_per_sec", [x * 1.002 for x in BASE], BASE)
    assert same.status is StepStatus.GOOD and same.reason.startswith("no measurable change")
    faster = bisect.judge_perf(1, "c1", "events_per_sec", [x * 1.3 for x in BASE], BASE)
    assert (faster.status, faster.reason) == (StepStatus.GOOD, "faster")
    # Time taken: more is slower.
    longer = bisect.judge_perf(1, "c1", "update_ns", [x * 1.3 for x in BASE], BASE)
    assert longer.status is StepStatus.BAD
    shorter = bisect.judge_perf(1, "c1", "update_ns", [x * 0.7 for x in BASE], BASE)
    assert shorter.status is StepStatus.GOOD


def test_judge_perf_skips_what_it_cannot_tell() -> None:
    few = bisect.judge_perf(1, "c1", "events_per_sec", [700.0] * 4, BASE)
    assert few.status is StepStatus.SKIP and "need 5 each" in few.reason
    assert few.ratio == pytest.approx(0.7)  # the numbers are kept even so
    noisy_base = (1000.0, 1400.0, 800.0, 1200.0, 700.0)
    noisy = bisect.judge_perf(1, "c1", "events_per_sec", [x * 0.7 for x in BASE], noisy_base)
    assert noisy.status is StepStatus.SKIP and "baseline CV" in noisy.reason
    none = bisect.judge_perf(1, "c1", "events_per_sec", [], BASE)
    assert (none.status, none.reason) == (StepStatus.SKIP, "no samples of events_per_sec")
    zero = bisect.judge_perf(1, "c1", "events_per_sec", [1.0] * 5, [0.0] * 5)
    assert zero.status is StepStatus.SKIP and zero.ratio is None  # NaN is never stored
    base = bisect.base_step("c0", "events_per_sec", BASE)
    assert (base.status, base.ratio, base.median, base.runs) == (StepStatus.GOOD, 1.0, 1000.0, 5)


def _perf_oracle(first_bad: int, drop: float, base: tuple[float, ...] = BASE) -> bisect.Oracle:
    def step(k: int) -> BisectStep:
        if k == 0:
            return bisect.base_step("c0", "events_per_sec", base)
        factor = 1.0 - drop if k >= first_bad else 1.0
        return bisect.judge_perf(k, f"c{k}", "events_per_sec", [x * factor for x in base], base)

    return step


def test_a_perf_search_names_the_patch_with_ratios_and_how_sure() -> None:
    found = bisect.search(3, _perf_oracle(2, 0.3))
    found = Found(found.steps, found.first_bad, found.candidates, found.why, "events_per_sec", BASE)
    assert found.first_bad == 2
    # Mann-Whitney's p at 5+5 (0.0079), and step 1 could see a 30 % drop (95 % power).
    assert bisect.confidence(found) == pytest.approx((1 - 0.00794) * 0.95, abs=1e-3)
    assert bisect.summary(found, "fork: slower") == (
        "patch 2 (fork: slower): events_per_sec slower: 0.70x of the base (95% CI 0.69-0.71) "
        "in 5 boots; not slower: 1.00x of the base (95% CI 0.99-1.01) in 5 boots at patch 1; "
        "94.2% sure"
    )
    patches = tuple(
        PatchResult(f"000{i}.patch", f"p{i}", PatchOutcome.APPLIED, commit=f"c{i}")
        for i in (1, 2, 3)
    )
    made = bisect.named(found, Job("v", "map_perf", 5, "events_per_sec"), patches)
    assert made.metric == "events_per_sec" and made.confidence == bisect.confidence(found)


def test_a_slowdown_below_what_a_good_step_could_see_is_less_sure() -> None:
    noisy = (1000.0, 1080.0, 930.0, 1050.0, 960.0)  # CV ~6 %: 5+5 boots see ~16 %
    found = bisect.search(3, _perf_oracle(2, 0.3, noisy))
    sure = Found(found.steps, found.first_bad, (), "", "events_per_sec", noisy)
    assert found.first_bad == 2 and bisect.confidence(sure) > 0.9
    # A 12 % drop: slower at the step (the samples are the base's, scaled), but
    # a good step might have missed it.
    found = bisect.search(3, _perf_oracle(2, 0.12, noisy))
    unsure = Found(found.steps, found.first_bad, (), "", "events_per_sec", noisy)
    bad = next(s for s in found.steps if s.patches == 2)
    assert found.first_bad == 2 and bad.p is not None and bad.p < 0.05
    assert bisect.confidence(unsure) == pytest.approx((1 - bad.p) * bisect.MISSED)


def test_a_perf_search_that_finds_nothing_slower_did_not_reproduce() -> None:
    found = bisect.search(3, _perf_oracle(99, 0.3))
    assert found.first_bad == 0 and bisect.confidence(found) == 0.0
    assert found.why == (
        "the slowdown did not reproduce: with the whole series it measured "
        "1.00x of the base (95% CI 0.99-1.01) in 5 boots"
    )


def test_wanted_includes_what_the_run_found_slower(tmp_path: Path) -> None:
    from orchestrator.matrix import Bisect, Kconfig, Matrix, Report, Test, Tree, TreeKind, Variant

    m = Matrix(
        path=tmp_path / "m.yaml",
        name="m",
        tree=Tree(TreeKind.PATH, str(tmp_path)),
        kconfig=Kconfig(),
        variants=(Variant("base"), Variant("v", series=(tmp_path / "p",))),
        report=Report(tmp_path),
        tests=(Test("map_perf", "map_perf", "/bin/map_perf", repeats=5),),
        bisect=Bisect(enabled=True, runs=3),
    )

    def sampled(name: str, factor: float) -> VariantResult:
        tests = tuple(
            TestResult(
                "map_perf",
                Verdict.PASS,
                metrics={"events_per_sec": x * factor, "events_per_sec_cpu0": x * factor / 2},
                round=i + 1,
                batch=1,
            )
            for i, x in enumerate(BASE)
        )
        return VariantResult(name, (StageResult(Stage.TEST, Status.PASS),), tests=tests)

    run = RunResult("m.yaml", "", "", (sampled("base", 1.0), sampled("v", 0.7)), baseline="base")
    assert bisect.wanted(m, run) == (Job("v", "map_perf", 5, "events_per_sec"),)
    assert bisect.metric_for(run, "v", "map_perf") == "events_per_sec"
    faster = RunResult("m.yaml", "", "", (sampled("base", 1.0), sampled("v", 1.3)))
    assert bisect.wanted(m, faster) == () and bisect.metric_for(faster, "v", "map_perf") == ""
    assert bisect.default_runs(m, "map_perf") == 5  # at least stats.MIN_SAMPLES boots


def test_perf_step_fields_round_trip_and_are_checked(tmp_path: Path) -> None:
    from orchestrator import results
    from orchestrator.results_check import ResultsError

    step = BisectStep(2, "c2", StepStatus.BAD, 0, 5, "slower", 700.0, 0.7, 0.69, 0.71, 0.008)
    made = Bisection("map_perf", 5, (BisectStep(0, "c0", StepStatus.GOOD), step), 2,
                     metric="events_per_sec")  # fmt: skip
    run = bisect.record(RunResult("m.yaml", "", "", (_variant("v"),)), "v", (made,))
    path = tmp_path / "results.json"
    results.write(run, path)
    assert results.read(path).variants[0].bisect == (made,)
    path.write_text(path.read_text().replace('"ratio": 0.7', '"ratio": "slow"'))
    with pytest.raises(ResultsError, match=r"bisect\[0\]\.steps\[1\]\.ratio"):
        results.read(path)
