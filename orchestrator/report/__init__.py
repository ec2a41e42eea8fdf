"""Read-only views of a run: JUnit, HTML and a plain-text summary.

Every renderer works from a RunResult alone (plus the log files whose paths
it names), so `orchestrate report results.json` can redo them at any time.
This module holds what the renderers share: how a stage or a test reads as
one word, the verdict table, metric samples and their summary, and capped
log excerpts.  Like every report module it imports only `results` and the
pure `stats` (never a stage, never the history database).
"""

from __future__ import annotations

import dataclasses
import enum
import math
import re
import shlex
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator import stats
from orchestrator.results import (
    RunResult,
    Stage,
    StageResult,
    Status,
    TestResult,
    VariantResult,
    Verdict,
    breakdowns,
)
from orchestrator.stats import Comparison, Estimate, NoiseFloor
from orchestrator.verdicts import meets

FILES = {"junit": "junit.xml", "html": "report.html", "text": "summary.txt"}

# The stages shown as columns; TEST is shown through its tests.
STAGE_COLUMNS = (Stage.APPLY, Stage.KCONFIG, Stage.BUILD, Stage.BOOT)

# Verdicts that end a test on their own, whatever its subtests say.
_OWN_FAILURES = (Verdict.ERROR, Verdict.TIMEOUT, Verdict.KERNEL_HANG, Verdict.CRASH)


class Outcome(enum.Enum):
    """How one cell reads: a stage's status or a test's verdict against its expectation.

    Declared worst first: when outcomes are combined (repeats, subtests) the
    earliest one wins.
    """

    APPLY_FAIL = "APPLY-FAIL"
    KCONFIG_FAIL = "KCONFIG-FAIL"
    BUILD_FAIL = "BUILD-FAIL"
    BOOT_FAIL = "BOOT-FAIL"
    CRASH = "CRASH"
    KERNEL_HANG = "KERNEL-HANG"
    TIMEOUT = "TIMEOUT"
    ERROR = "ERROR"
    FAIL = "FAIL"
    UNEXPECTED_PASS = "UNEXPECTED-PASS"
    UNEXPECTED_SKIP = "UNEXPECTED-SKIP"
    XFAIL = "XFAIL (expected)"
    PASS = "PASS"
    SKIP = "SKIP"
    NOT_RUN = "NOT-RUN"

    @property
    def word(self) -> str:
        return self.value

    @property
    def bad(self) -> bool:
        return self not in (Outcome.XFAIL, Outcome.PASS, Outcome.SKIP, Outcome.NOT_RUN)

    @property
    def css(self) -> str:
        return "o-" + self.name.lower().replace("_", "-")


_RANK = {o: i for i, o in enumerate(Outcome)}
_STAGE_FAIL = {
    Stage.APPLY: Outcome.APPLY_FAIL,
    Stage.KCONFIG: Outcome.KCONFIG_FAIL,
    Stage.BUILD: Outcome.BUILD_FAIL,
    Stage.BOOT: Outcome.BOOT_FAIL,
    Stage.TEST: Outcome.FAIL,
}
_VERDICT = {
    Verdict.FAIL: Outcome.FAIL,
    Verdict.ERROR: Outcome.ERROR,
    Verdict.TIMEOUT: Outcome.TIMEOUT,
    Verdict.KERNEL_HANG: Outcome.KERNEL_HANG,
    Verdict.CRASH: Outcome.CRASH,
}


# C0 controls (but tab and newline), DEL and C1 controls: terminal escapes
# and NULs from consoles, which no report should pass on raw.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """Text with control characters shown as \\xNN, so they read and do not act."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m[0]):02x}", text)


def worst(outcomes: Iterable[Outcome]) -> Outcome | None:
    return min(outcomes, key=_RANK.__getitem__, default=None)


def verdict_outcome(verdict: Verdict, expected: str) -> Outcome:
    if meets(verdict, expected):
        if verdict is Verdict.PASS:
            return Outcome.PASS
        return Outcome.SKIP if verdict is Verdict.SKIP else Outcome.XFAIL
    if verdict is Verdict.PASS:
        return Outcome.UNEXPECTED_PASS
    if verdict is Verdict.SKIP:
        return Outcome.UNEXPECTED_SKIP
    return _VERDICT[verdict]


def stage_outcome(stage: StageResult) -> Outcome:
    if stage.status is Status.PASS:
        return Outcome.PASS
    if stage.status is Status.SKIPPED:
        return Outcome.NOT_RUN
    if stage.status is Status.ERROR:
        return Outcome.ERROR
    return _STAGE_FAIL[stage.stage]


def boot_failed(variant: VariantResult) -> bool:
    boot = variant.stage(Stage.BOOT)
    return boot is not None and boot.status is not Status.PASS


def own_outcome(test: TestResult, *, not_run: bool = False) -> Outcome:
    """The test's own cell, without its subtests.

    A parent that failed because a subtest failed is judged through its
    subtests (as the test stage does), so an expected subtest failure does
    not turn its parent red.  `not_run`: the variant's boot failed, so an
    ERROR test without logs never started.
    """
    if not_run and test.verdict is Verdict.ERROR and not test.logs:
        return Outcome.NOT_RUN
    outcome = verdict_outcome(test.verdict, test.expected)
    if outcome is Outcome.FAIL and test.verdict not in _OWN_FAILURES:
        explained = any(s.verdict not in (Verdict.PASS, Verdict.SKIP) for s in walk(test.subtests))
        if explained:
            return Outcome.PASS
    return outcome


def outcome_of(test: TestResult, *, not_run: bool = False) -> Outcome:
    """A test with its subtests, as one word: the worst of them.

    Among the good outcomes XFAIL beats PASS (it passes only because a
    failure was declared) and PASS beats SKIP (one skipped subtest does not
    make a passing test a skip).
    """
    outcomes = [own_outcome(t, not_run=not_run) for t in (test, *walk(test.subtests))]
    good = [o for o in outcomes if not o.bad]
    bad = [o for o in outcomes if o.bad]
    if bad:
        return worst(bad) or Outcome.FAIL
    for choice in (Outcome.XFAIL, Outcome.PASS, Outcome.SKIP):
        if choice in good:
            return choice
    return Outcome.NOT_RUN


def walk(tests: Iterable[TestResult]) -> Iterator[TestResult]:
    """Every test and subtest, depth first."""
    for t in tests:
        yield t
        yield from walk(t.subtests)


_REPEAT = re.compile(r"@\d+(?=\.|$)")


def base_name(name: str) -> str:
    """The test's name without its repeat suffix: map_perf@3.lookup -> map_perf.lookup."""
    return _REPEAT.sub("", name, count=1)


@dataclass(frozen=True)
class Cell:
    outcome: Outcome
    detail: str = ""  # e.g. "2/5" when repeats disagree, "cached" for a build
    reason: str = ""

    @property
    def text(self) -> str:
        return f"{self.outcome.word} {self.detail}".strip()


@dataclass(frozen=True)
class Row:
    variant: VariantResult
    stages: tuple[Cell | None, ...]  # one per STAGE_COLUMNS entry; None: no such stage
    tests: tuple[Cell | None, ...]  # one per Table.tests entry; None: not in this variant


@dataclass(frozen=True)
class Table:
    """Variants by (stages, tests): the verdict table every format starts with."""

    tests: tuple[str, ...]  # test names without repeat suffixes, in first-seen order
    rows: tuple[Row, ...]


def verdict_table(run: RunResult) -> Table:
    names = list(dict.fromkeys(base_name(t.name) for v in run.variants for t in v.tests))
    rows = []
    for v in run.variants:
        stages = tuple(stage_cell(v, s) for s in STAGE_COLUMNS)
        tests = tuple(_test_cell(v, name) for name in names)
        rows.append(Row(v, stages, tests))
    return Table(tuple(names), tuple(rows))


def stage_cell(variant: VariantResult, stage: Stage) -> Cell | None:
    result = variant.stage(stage)
    if result is None:
        return None
    detail = ""
    if stage is Stage.BUILD and result.status is Status.PASS and variant.build is not None:
        detail = build_kind(variant).split()[0]  # "shared"; the reason names the variant
    if stage is Stage.KCONFIG and result.status is Status.PASS and variant.kconfig:
        detail = "warn"  # mismatches the matrix chose to tolerate
    return Cell(stage_outcome(result), detail, result.reason)


def _test_cell(variant: VariantResult, name: str) -> Cell | None:
    runs = [t for t in variant.tests if base_name(t.name) == name]
    if not runs:
        return None
    skipped_boot = boot_failed(variant)
    outcomes = [outcome_of(t, not_run=skipped_boot) for t in runs]
    shown = worst(outcomes) or Outcome.NOT_RUN
    detail = ""
    if len(runs) > 1:
        same = outcomes.count(shown)
        detail = f"x{len(runs)}" if same == len(runs) else f"{same}/{len(runs)}"
    first = next(t for t, o in zip(runs, outcomes, strict=True) if o is shown)
    return Cell(shown, detail, first_reason(first))


def first_reason(test: TestResult) -> str:
    """The test's reason, or that of its first subtest that has one."""
    return next((t.reason for t in walk((test,)) if t.reason), "")


def build_kind(variant: VariantResult) -> str:
    b = variant.build
    if b is None:
        return ""
    if b.shared_with:
        return f"shared with {b.shared_with}"
    return "cached" if b.cached else "built"


def reproduce(run: RunResult, variant: VariantResult) -> str:
    """A one-line command that runs this variant again, stopping where it failed."""
    argv = ["orchestrate", "run", run.matrix, "--only", variant.name]
    failed = next((s.stage for s in variant.stages if s.status.bad), None)
    if failed in (Stage.APPLY, Stage.KCONFIG, Stage.BUILD):
        argv += ["--until", "build"]
    return shlex.join(argv)


# --- metrics ---------------------------------------------------------------

MetricKey = tuple[str, str]  # (test name without repeat suffix, metric)


@dataclass(frozen=True)
class MetricRow:
    """One variant's samples of one metric, with its statistics."""

    variant: str
    samples: tuple[float, ...]
    estimate: Estimate
    comparison: Comparison | None = None  # against the baseline; None for the baseline itself
    detectable: float = math.nan  # the drop a comparison with the baseline could see

    @property
    def n(self) -> int:
        return len(self.samples)

    @property
    def median(self) -> float:
        return self.estimate.median

    @property
    def low(self) -> float:
        return min(self.samples)

    @property
    def high(self) -> float:
        return max(self.samples)


@dataclass(frozen=True)
class MetricSummary:
    """One (test, metric) across the variants, compared with the baseline."""

    test: str
    metric: str
    baseline: str  # "" when the baseline variant has no samples of this metric
    rows: tuple[MetricRow, ...]
    # The A/A control's row (its comparison is the A/A one) and what it says
    # of the batch; None without a control.  Not in `rows`: it is no variant.
    control: MetricRow | None = None
    floor: NoiseFloor | None = None
    breakdown: bool = False  # a per-CPU, min or max split of another metric: detail

    @property
    def name(self) -> str:
        return f"{self.test}.{self.metric}"

    @property
    def base(self) -> MetricRow | None:
        return next((r for r in self.rows if r.variant == self.baseline), None)

    @property
    def noise(self) -> float:
        """The baseline's CV: the spread DESIGN flags above NOISE_LIMIT."""
        return self.base.estimate.cv if self.base else math.nan

    @property
    def noisy(self) -> bool:
        """Too noisy to trust: as the A/A control says, else by the baseline's CV alone."""
        if self.floor is not None:
            return self.floor.noisy
        return not self.noise <= stats.NOISE_LIMIT

    @property
    def detectable(self) -> float:
        """The drop detectable with the baseline's n on both sides, as the plan gives them."""
        b = self.base
        return _detectable(b.n, b.n, b.estimate.cv) if b else math.nan


@dataclass(frozen=True)
class History:
    """What earlier runs of the same matrix say, as plain data.

    history.py reads the database and builds this; renderers only show it.
    """

    # (test, metric) -> variant -> (started, median) per run, oldest first
    medians: Mapping[MetricKey, Mapping[str, tuple[tuple[str, float], ...]]] = field(
        default_factory=dict
    )
    changes: tuple[str, ...] = ()  # what changed since the previous run, in words
    previous: str = ""  # when the previous run started; "" when this is the first


def baseline_of(run: RunResult) -> str:
    """The variant others are compared with: the run's choice if it ran, else the first."""
    names = [v.name for v in run.variants]
    if run.baseline in names:
        return run.baseline
    return names[0] if names else ""


def latest_batch(variants: Iterable[VariantResult]) -> int:
    """The last perf batch in these results (0 when nothing was measured in batches)."""
    return max((t.batch for v in variants for t in v.tests), default=0)


def metric_samples(
    variants: Iterable[VariantResult], batch: int | None = None
) -> dict[MetricKey, dict[str, list[float]]]:
    """Every metric value, grouped by (test, metric) and then by variant.

    Perf samples count from one batch only, `batch` or else the latest:
    comparisons are made within one batch, and a rerun replaces the batch
    before it.  Tests outside batches (functional ones) always count.
    """
    variants = list(variants)
    batch = latest_batch(variants) if batch is None else batch
    out: dict[MetricKey, dict[str, list[float]]] = {}
    for v in variants:
        tests = [t for t in v.tests if t.batch in (0, batch)]
        for t in walk(tests):
            for metric, value in t.metrics.items():
                out.setdefault((base_name(t.name), metric), {}).setdefault(v.name, []).append(value)
    return out


def summarize(
    samples: Mapping[str, Sequence[float]],
    baseline: str = "",
    metric: str = "",
    floor: NoiseFloor | None = None,
) -> list[MetricRow]:
    """One row per variant for one metric, each compared with the baseline's samples.

    `baseline` "" means the first variant with samples; `metric` is the
    metric's name, which says whether higher is better; `floor`, the A/A
    control's verdict on the batch, makes every comparison inconclusive
    when it found the batch noisy.
    """
    present = {variant: tuple(map(float, x)) for variant, x in samples.items() if x}
    baseline = baseline or next(iter(present), "")
    base = present.get(baseline)
    rows = []
    for variant, values in present.items():
        comparison, detectable = None, math.nan
        if base is not None and variant != baseline:
            comparison = stats.compare(metric, variant, values, baseline, base)
            if floor is not None:
                comparison = stats.distrusted(comparison, floor)
            detectable = _detectable(len(base), len(values), stats.cv(base))
        rows.append(MetricRow(variant, values, stats.estimate(values), comparison, detectable))
    return rows


def _detectable(n_base: int, n: int, cv: float) -> float:
    # The simulation needs a spread to simulate: no CV, no number.
    return stats.detectable_change(n_base, n, cv) if cv > 0 else math.nan


def perf(run: RunResult) -> list[MetricSummary]:
    """The run's measurements, summarized and compared with the baseline.

    A measurement is a metric of a whole test (not of a subtest: a program's
    per-round numbers are already in its totals) that was sampled at least
    twice for some variant; one-off counters of functional tests (reads,
    misses, ...) stay in the per-test details and are not compared.
    """
    baseline = baseline_of(run)
    control = run.control
    measured = [*run.variants, *([control] if control is not None else [])]
    batch = latest_batch(measured)
    controls = metric_samples([control], batch) if control is not None else {}
    out = []
    by_metric = metric_samples(run.variants, batch)
    twins = same_kernel_as(run, baseline)
    details = breakdowns(by_metric)
    for (test, metric), samples in by_metric.items():
        if "." in test or max(len(x) for x in samples.values()) < 2:
            continue
        base = samples.get(baseline)
        aa = next(iter(controls.get((test, metric), {}).items()), None)
        floor, row = _noise_floor(metric, baseline, base, aa) if base and aa else (None, None)
        rows = [_same_kernel(r, twins) for r in summarize(samples, baseline, metric, floor)]
        has_base = any(r.variant == baseline for r in rows)
        name = baseline if has_base else ""
        detail = (test, metric) in details
        out.append(MetricSummary(test, metric, name, tuple(rows), row, floor, detail))
    # Headline metrics first: they carry the verdicts; breakdowns are detail.
    return sorted(out, key=lambda s: s.breakdown)


def same_kernel_as(run: RunResult, baseline: str) -> frozenset[str]:
    """The variants that boot the baseline's very kernel (gfp-zero's tree is upstream's)."""
    base = next((v for v in run.variants if v.name == baseline), None)
    if base is None or base.build is None or not base.build.artifact_dir:
        return frozenset()
    return frozenset(
        v.name
        for v in run.variants
        if v.name != baseline and v.build and v.build.artifact_dir == base.build.artifact_dir
    )


def _same_kernel(row: MetricRow, twins: frozenset[str]) -> MetricRow:
    if row.comparison is None or row.variant not in twins:
        return row
    return dataclasses.replace(row, comparison=stats.same_kernel(row.comparison))


def _noise_floor(
    metric: str, baseline: str, base: Sequence[float], control: tuple[str, Sequence[float]]
) -> tuple[NoiseFloor, MetricRow]:
    """The A/A control's verdict on the batch, and its row as the reports show it."""
    name, values = control[0], tuple(map(float, control[1]))
    floor = stats.noise_floor(metric, baseline, base, name, values)
    detectable = _detectable(len(base), len(values), stats.cv(base))
    return floor, MetricRow(name, values, stats.estimate(values), floor.comparison, detectable)


def batch_note(run: RunResult) -> str:
    """The perf batches in one sentence, when the A/A control found one noisy; else ""."""
    if not any(b.noisy for b in run.batches):
        return ""
    parts = [f"batch {b.attempt} noisy ({_few(b.noisy)}), rerun" for b in run.batches if b.rerun]
    last = run.batches[-1]
    if last.noisy:
        parts.append(
            f"batch {last.attempt} noisy ({_few(last.noisy)}) with no rerun left: "
            "its verdicts for those are inconclusive"
        )
    else:
        parts.append(f"verdicts from batch {last.attempt}")
    return "Noisy batch: " + "; ".join(parts) + "."


def _few(names: Sequence[str], shown: int = 2) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def aa_line(summary: MetricSummary) -> str:
    """The A/A noise floor of one metric in one line, e.g.

    A/A: upstream~aa 1.02x of upstream [0.95, 1.08], CV 4.1% over 5+5 boots

    (the ratio and its interval, as for a variant; the CV of both sides pooled).
    """
    floor, row = summary.floor, summary.control
    if floor is None or row is None:
        return ""
    c = floor.comparison
    base = summary.base
    boots = f"{base.n if base else 0}+{row.n} boots"
    ratio = f"{c.ratio:.2f}x of {c.baseline} [{c.ci_low:.2f}, {c.ci_high:.2f}]"
    text = f"A/A: {row.variant} {ratio}, CV {fmt_percent(floor.cv)} over {boots}"
    return text + (f"; NOISY: {floor.reason}" if floor.noisy else "")


def fmt_ratio(c: Comparison) -> str:
    """The ratio to the baseline and its interval: 0.63x [0.60, 0.66]."""
    if math.isnan(c.ratio):
        return "no ratio"
    return f"{c.ratio:.2f}x [{c.ci_low:.2f}, {c.ci_high:.2f}]"


def fmt_p(p: float) -> str:
    return f"{p:.2g}"


def fmt_percent(x: float) -> str:
    """A fraction as a percentage for people: 0.0312 -> "3.1%"; nan and inf -> "—"."""
    if not math.isfinite(x):
        return "—"
    return f"{x * 100:.1f}%" if x < 0.1 else f"{x * 100:.0f}%"


def comparison_line(summary: MetricSummary, row: MetricRow) -> str:
    """A comparison in one line, e.g.

    map_perf.events_per_sec: no-reuse 0.63x of upstream [0.60, 0.66], p=0.001, slower
    """
    c = row.comparison
    assert c is not None
    if math.isnan(c.ratio):
        return f"{summary.name}: {c.variant} vs {c.baseline}: {c.text}"
    ratio = f"{c.ratio:.2f}x of {c.baseline} [{c.ci_low:.2f}, {c.ci_high:.2f}]"
    return f"{summary.name}: {c.variant} {ratio}, p={fmt_p(c.p)}, {c.text}"


def fmt_number(x: float) -> str:
    """A metric value for people: integers whole, others to about four digits."""
    x = float(x)  # ints arrive from JSON too
    if x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    if abs(x) >= 1000:
        return f"{x:.1f}"
    return f"{x:.4g}"


# --- logs ----------------------------------------------------------------

LOG_LINES = 200
LOG_BYTES = 64 * 1024


@dataclass(frozen=True)
class Excerpt:
    path: str
    text: str = ""
    size: int = 0  # bytes in the file
    truncated: bool = False  # only the tail is in text
    missing: str = ""  # why there is no text: "not found", "omitted: ..."

    @property
    def note(self) -> str:
        if self.missing:
            return self.missing
        if self.truncated:
            return f"last {self.text.count(chr(10)) + 1} lines of {human_size(self.size)}"
        return human_size(self.size)


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def human_size(n: int) -> str:
    if n < 1000:
        return f"{n} bytes"
    if n < 1_000_000:
        return f"{n / 1000:.1f} kB"
    return f"{n / 1_000_000:.1f} MB"


def read_tail(path: str, lines: int = LOG_LINES, limit: int = LOG_BYTES) -> Excerpt:
    """The end of a log: at most `lines` lines and `limit` bytes.

    The end, because that is where a build error, a panic or a failing
    test's last words are.  A missing file is a note, not an error: results
    outlive their logs (copied results, cleaned caches).
    """
    if not path:
        return Excerpt(path, missing="no log recorded")
    try:
        with Path(path).open("rb") as f:
            size = f.seek(0, 2)
            f.seek(max(0, size - limit))
            data = f.read(limit)
    except FileNotFoundError:
        return Excerpt(path, missing="not found (the log was moved or cleaned up)")
    except OSError as exc:
        return Excerpt(path, missing=f"unreadable: {exc.strerror or exc}")
    text = printable(data.decode("utf-8", errors="replace"))
    kept = text.splitlines()
    cut = size > limit
    if cut and len(kept) > 1:
        kept = kept[1:]  # the first line is likely cut in half
    if len(kept) > lines:
        kept, cut = kept[-lines:], True
    return Excerpt(path, "\n".join(kept), size, cut)


# What testrun writes to the kernel log before each test (run_test.Marker).
_BEGIN = b"orchestrate: begin test "
_CONSOLE = re.compile(r"console-(\d+)\.log")
_CONSOLE_MAX = 64 * 1024 * 1024  # larger consoles are not searched for markers


def console_for(variant: VariantResult, test: str) -> str | None:
    """The console log of the boot that ran `test`, if it can be found.

    A crashed or hung guest is rebooted for the next test, so the test's
    console is the latest console-N.log that shows its begin marker; its
    end is where the guest died.
    """
    if variant.boot is None or not variant.boot.console_log:
        return None
    folder = Path(variant.boot.console_log).parent
    try:
        found = [(int(m[1]), p) for p in folder.iterdir() if (m := _CONSOLE.fullmatch(p.name))]
    except OSError:
        return None
    marker = re.compile(re.escape(_BEGIN + test.encode()) + rb"\r?$", re.MULTILINE)
    for _n, log in sorted(found, reverse=True):
        try:
            if log.stat().st_size <= _CONSOLE_MAX and marker.search(log.read_bytes()):
                return str(log)
        except OSError:
            continue
    return None


def write_reports(
    run: RunResult, out_dir: Path, formats: Iterable[str], history: History | None = None
) -> list[Path]:
    """Render the chosen formats into out_dir; "json" is results.json, written by the caller.

    `history`, when there is one, adds trends and changes to the HTML and text.
    """
    # Imported here: the renderers import this package for the shared model above.
    from orchestrator.report import html, junit, text

    render: dict[str, Callable[[RunResult], str]] = {
        "junit": junit.render,
        "html": lambda r: html.render(r, history=history),
        "text": lambda r: text.render(r, history=history),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in dict.fromkeys(formats):
        if fmt == "json":
            continue
        if fmt not in render:
            raise ValueError(f"unknown report format {fmt!r}")
        path = out_dir / FILES[fmt]
        tmp = path.with_name(path.name + ".tmp")
        # A lone surrogate (JSON can hold one) must not stop the report.
        tmp.write_text(render[fmt](run), encoding="utf-8", errors="backslashreplace")
        tmp.replace(path)
        written.append(path)
    return written
