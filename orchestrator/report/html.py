"""One self-contained HTML file: inline CSS and SVG, no JavaScript, no URLs.

Everything shown comes from the results and the logs they name, and all of
it is untrusted (patch subjects, console and test output, test names), so
the template is rendered with autoescape on and nothing is marked safe.
Logs are cut to their last lines and the whole report has a log budget, so
a run with huge consoles still makes a file a mail client can carry.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import markupsafe

from orchestrator.report import (
    LOG_BYTES,
    LOG_LINES,
    STAGE_COLUMNS,
    Cell,
    Excerpt,
    History,
    MetricKey,
    MetricRow,
    MetricSummary,
    Outcome,
    baseline_of,
    batch_note,
    boot_failed,
    build_kind,
    console_for,
    fmt_number,
    fmt_p,
    fmt_percent,
    fmt_ratio,
    outcome_of,
    own_outcome,
    perf,
    plural,
    printable,
    read_tail,
    reproduce,
    stage_cell,
    verdict_table,
)
from orchestrator.results import RunResult, Splat, Stage, Status, TestResult, VariantResult
from orchestrator.stats import ALPHA, NOISE_LIMIT, Change, higher_is_better

LOG_BUDGET = 1_200_000  # bytes of log text in one report; the rest is 2 MB headroom
CONSOLE_LINES = 60  # of the console where a test took the guest down
SUBTEST_ROWS = 200  # passing subtests shown per test; failing ones are always shown


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("orchestrator.report", "templates"),
        autoescape=True,  # every string in a report is hostile
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=_finalize,
    )


def _finalize(value: object) -> object:
    """Every {{ value }} before escaping: terminal escapes are shown, not passed on.

    Markup is the template's own output (a macro call) and is left alone.
    """
    if isinstance(value, str) and not isinstance(value, markupsafe.Markup):
        return printable(value)
    return value


def render(run: RunResult, *, budget: int = LOG_BUDGET, history: History | None = None) -> str:
    logs = Logs(budget)
    summaries = perf(run)  # the statistics, once for the whole page
    template = _environment().get_template("report.html.j2")
    return template.render(
        run=run,
        title=f"orchestrate: {Path(run.matrix).name}",
        summary=_summary(run),
        stages=[s.value for s in STAGE_COLUMNS],
        table=_table(run),
        charts=charts(summaries, history),
        baseline=baseline_of(run),
        control=run.control.name if run.control is not None else "",
        batch_note=batch_note(run),
        history=history,
        variants=[
            _variant(run, i, v, logs, summaries, history) for i, v in enumerate(run.variants)
        ],
        environment=_environment_rows(run),
        legend=[(o.word, o.css) for o in Outcome],
        fmt=fmt_number,
        alpha=ALPHA,
        noise_limit=fmt_percent(NOISE_LIMIT),
    )


@dataclass(frozen=True)
class LogView:
    excerpt: Excerpt
    anchor: str  # the id of the place where it is shown in full
    repeat: bool = False  # shown in full earlier in the page


class Logs:
    """Reads log tails under one size budget for the whole report.

    A log named twice (a shared build log, a console in two places) is
    shown in full once; later mentions link to it.
    """

    def __init__(self, budget: int) -> None:
        self.left = budget
        self.total = budget
        self.seen: dict[tuple[str, int], LogView] = {}

    def tail(self, path: str, lines: int = LOG_LINES) -> LogView:
        key = (path, lines)
        if key in self.seen:
            return dataclasses.replace(self.seen[key], repeat=True)
        excerpt = read_tail(path, lines, LOG_BYTES)
        # What the page will carry: escaping can make hostile text 5x larger.
        size = len(str(markupsafe.escape(excerpt.text)).encode())
        if size > self.left:
            why = f"omitted: the report's {self.total // 1000} kB log budget is spent"
            excerpt = Excerpt(path, size=excerpt.size, missing=why)
            size = 0
        self.left -= size
        view = LogView(excerpt, f"log{len(self.seen)}")
        self.seen[key] = view
        return view


# --- the verdict table ---------------------------------------------------


@dataclass(frozen=True)
class CellView:
    word: str
    css: str
    detail: str = ""
    title: str = ""


@dataclass(frozen=True)
class RowView:
    anchor: str
    name: str
    stages: list[CellView]
    tests: list[CellView]


@dataclass(frozen=True)
class TableView:
    tests: list[str]
    rows: list[RowView]


def _cell(cell: Cell | None, command: str) -> CellView:
    if cell is None:
        return CellView("—", "o-none", title="not in this variant's results")
    title = "\n".join(x for x in (cell.reason, f"reproduce: {command}") if x)
    return CellView(cell.outcome.word, cell.outcome.css, cell.detail, title)


def _table(run: RunResult) -> TableView:
    table = verdict_table(run)
    rows = []
    for i, row in enumerate(table.rows):
        command = reproduce(run, row.variant)
        rows.append(
            RowView(
                anchor=f"v{i}",
                name=row.variant.name,
                stages=[_cell(c, command) for c in row.stages],
                tests=[_cell(c, command) for c in row.tests],
            )
        )
    return TableView(list(table.tests), rows)


def _summary(run: RunResult) -> CellView:
    bad = [v.name for v in run.variants if v.status.bad]
    count = plural(len(run.variants), "variant")
    if not bad:
        return CellView(f"{count}, all as expected", Outcome.PASS.css)
    return CellView(f"{len(bad)} of {count} failed", Outcome.FAIL.css)


# --- per variant -----------------------------------------------------------


@dataclass(frozen=True)
class StageView:
    name: str
    cell: CellView
    reason: str
    duration: float
    logs: list[LogView]


@dataclass(frozen=True)
class TestView:
    name: str
    depth: int
    cell: CellView
    expected: str
    duration: float
    reason: str
    metrics: list[tuple[str, str]]
    logs: list[LogView] = field(default_factory=list)
    console: LogView | None = None
    splats: list[Splat] = field(default_factory=list)


@dataclass(frozen=True)
class VariantView:
    anchor: str
    result: VariantResult
    cell: CellView
    reproduce: str
    stages: list[StageView]
    build: str
    ran: list[str]  # stages that ran (were not skipped)
    kconfig_reason: str
    not_run: str  # the stages that were skipped, and why
    console: LogView | None
    tests: list[TestView]
    hidden: int  # passing subtests not shown
    splats: list[Splat]
    metrics: list[MetricView]


@dataclass(frozen=True)
class MetricView:
    test: str
    metric: str
    row: MetricRow
    ci: str
    cv: str
    spark: Spark | None


def _variant(
    run: RunResult,
    index: int,
    v: VariantResult,
    logs: Logs,
    summaries: list[MetricSummary],
    history: History | None,
) -> VariantView:
    status = Outcome.PASS if not v.status.bad else Outcome.FAIL
    tests, hidden = _tests(v, logs)
    metrics = [
        MetricView(s.test, s.metric, r, _ci(r), fmt_percent(r.estimate.cv), _spark(s, r, history))
        for s in summaries
        for r in s.rows
        if r.variant == v.name
    ]
    console = logs.tail(v.boot.console_log) if v.boot and v.boot.console_log else None
    kconfig = v.stage(Stage.KCONFIG)
    return VariantView(
        anchor=f"v{index}",
        result=v,
        cell=CellView(v.status.value.upper(), status.css),
        reproduce=reproduce(run, v),
        stages=[_stage(v, s.stage, logs) for s in v.stages],
        build=build_kind(v),
        ran=[s.stage.value for s in v.stages if s.status is not Status.SKIPPED],
        kconfig_reason=(kconfig.reason if kconfig else "") or "Every requested symbol is set.",
        not_run=_not_run(v),
        console=console,
        tests=tests,
        hidden=hidden,
        splats=[s for t in v.tests for s in _all_splats(t)],
        metrics=metrics,
    )


def _not_run(v: VariantResult) -> str:
    skipped = [s for s in v.stages if s.status is Status.SKIPPED]
    if not skipped:
        return ""
    names = ", ".join(s.stage.value for s in skipped)
    return f"{names}: {skipped[0].reason}" if skipped[0].reason else names


def _stage(v: VariantResult, stage: Stage, logs: Logs) -> StageView:
    result = v.stage(stage)
    cell = stage_cell(v, stage)
    assert result is not None and cell is not None
    view = CellView(cell.outcome.word, cell.outcome.css, cell.detail)
    # The boot console is shown in the boot section, when there is one.
    console = v.boot.console_log if v.boot else None
    paths = [p for p in result.logs if p != console]
    return StageView(
        stage.value, view, result.reason, result.duration, [logs.tail(p) for p in paths]
    )


def _tests(v: VariantResult, logs: Logs) -> tuple[list[TestView], int]:
    not_run = boot_failed(v)
    views: list[TestView] = []
    hidden = 0
    for test in v.tests:
        views.append(_test_view(v, test, 0, logs, not_run))
        shown = 0
        for sub, depth in _subtests(test, 1):
            outcome = outcome_of(sub, not_run=not_run)
            if outcome in (Outcome.PASS, Outcome.SKIP) and shown >= SUBTEST_ROWS:
                hidden += 1
                continue
            shown += 1
            views.append(_test_view(v, sub, depth, logs, not_run))
    return views, hidden


def _subtests(test: TestResult, depth: int) -> list[tuple[TestResult, int]]:
    out: list[tuple[TestResult, int]] = []
    for sub in test.subtests:
        out += [(sub, depth), *_subtests(sub, depth + 1)]
    return out


def _test_view(
    v: VariantResult, test: TestResult, depth: int, logs: Logs, not_run: bool
) -> TestView:
    outcome = (
        outcome_of(test, not_run=not_run) if depth == 0 else own_outcome(test, not_run=not_run)
    )
    console = None
    if outcome in (Outcome.CRASH, Outcome.KERNEL_HANG):
        path = console_for(v, test.name)
        console = logs.tail(path, CONSOLE_LINES) if path else None
    return TestView(
        name=test.name,
        depth=depth,
        cell=CellView(outcome.word, outcome.css),
        expected=test.expected,
        duration=test.duration,
        reason=test.reason,
        metrics=[(k, fmt_number(x)) for k, x in test.metrics.items()],
        logs=[logs.tail(p) for p in test.logs],
        console=console,
        splats=list(test.splats),
    )


def _all_splats(test: TestResult) -> list[Splat]:
    return [*test.splats, *(s for sub in test.subtests for s in _all_splats(sub))]


# --- charts ----------------------------------------------------------------

_W, _LEFT, _RIGHT, _ROW, _TOP, _AXIS = 720, 170, 100, 28, 8, 26


@dataclass(frozen=True)
class Dot:
    x: float
    y: float
    value: str


@dataclass(frozen=True)
class Whisker:
    """The 95 % interval of the median, drawn across the row."""

    low: float  # x of the interval's ends
    high: float
    text: str


@dataclass(frozen=True)
class Bar:
    label: str
    y: float  # the row's centre
    x: float
    width: float
    median: str
    dots: list[Dot]
    whisker: Whisker


@dataclass(frozen=True)
class Spark:
    """A small line of one variant's medians over the last runs."""

    width: int
    height: int
    points: str  # SVG polyline points
    last: tuple[float, float]
    title: str


@dataclass(frozen=True)
class PerfRow:
    """A variant's line in a metric's table: its estimate and its comparison."""

    variant: str
    n: int
    median: str
    ci: str
    cv: str
    ratio: str
    p: str
    verdict: str
    css: str
    detectable: str
    spark: Spark | None


@dataclass(frozen=True)
class Chart:
    test: str
    metric: str
    width: int
    height: int
    left: int
    right: int  # x of the plot's right edge
    axis_y: float
    bars: list[Bar]
    ticks: list[tuple[float, str]]
    rows: list[MetricRow]
    table: list[PerfRow] = field(default_factory=list)
    noise: str = ""  # the noise floor, in words
    noisy: str = ""  # why the batch is too noisy to trust (A/A control or baseline CV); "" if not
    direction: str = ""
    breakdown: bool = False  # per CPU, min or max: shown folded, after the headline metrics


def charts(summaries: list[MetricSummary], history: History | None = None) -> list[Chart]:
    """A chart and a comparison table per metric that more than one variant reports."""
    out = []
    for s in summaries:
        if len(s.rows) < 2:
            continue  # one variant: its table in the variant's section says it all
        direction = "higher is better" if higher_is_better(s.metric) else "lower is better"
        rows = [*s.rows, *([s.control] if s.control is not None else [])]
        out.append(
            dataclasses.replace(
                chart((s.test, s.metric), rows),
                table=[_perf_row(s, r, history) for r in rows],
                noise=_noise(s),
                noisy=_noisy(s),
                direction=direction,
                breakdown=s.breakdown,
            )
        )
    return out


def _noisy(s: MetricSummary) -> str:
    if s.floor is not None:
        return s.floor.reason
    if s.base is not None and s.noisy:
        return f"the baseline's CV is over {fmt_percent(NOISE_LIMIT)}"
    return ""


_VERDICT_CSS = {
    Change.FASTER: "c-faster",
    Change.SLOWER: "c-slower",
    Change.SAME: "c-same",
    Change.INCONCLUSIVE: "c-inconclusive",
}


def _ci(row: MetricRow) -> str:
    e = row.estimate
    return f"[{fmt_number(e.ci_low)}, {fmt_number(e.ci_high)}]"


def _perf_row(s: MetricSummary, r: MetricRow, history: History | None) -> PerfRow:
    c = r.comparison
    if c is None:
        ratio = "baseline" if r.variant == s.baseline else "no baseline samples"
        p = verdict = detectable = ""
        css = "c-baseline"
    elif s.control is r and s.floor is not None:  # the A/A control: a noise floor, no verdict
        ratio, p, detectable = fmt_ratio(c), fmt_p(c.p), fmt_percent(r.detectable)
        verdict = "A/A control: " + (s.floor.reason or "within the noise limit")
        css = "c-inconclusive" if s.floor.noisy else "c-baseline"
    else:
        ratio, p, verdict = fmt_ratio(c), fmt_p(c.p), c.text
        css, detectable = _VERDICT_CSS[c.verdict], fmt_percent(r.detectable)
    e = r.estimate
    return PerfRow(
        r.variant, r.n, fmt_number(e.median), _ci(r), fmt_percent(e.cv), ratio, p, verdict, css,
        detectable, _spark(s, r, history),
    )  # fmt: skip


def _noise(s: MetricSummary) -> str:
    base = s.base
    if base is None:
        return "No baseline samples: nothing to compare with."
    cv = fmt_percent(s.noise)
    n = base.n
    detectable = fmt_percent(s.detectable)
    text = (
        f"Noise floor: {s.baseline} CV {cv} over {n} samples; with {n}+{n} samples a drop of "
        f"{detectable} is detectable (Mann-Whitney, alpha {ALPHA}, power 0.95)."
    )
    if s.floor is not None and s.control is not None:
        f = s.floor
        text += (
            f" Measured again as {s.control.variant}, the same kernel read "
            f"{fmt_ratio(f.comparison)} of itself (within ±{fmt_percent(f.spread)}), "
            f"CV {fmt_percent(f.cv)} over both."
        )
    return text


def chart(key: MetricKey, rows: list[MetricRow]) -> Chart:
    """Every sample as a dot, the median as a bar, its 95 % interval as a whisker."""
    values = [x for r in rows for x in r.samples]
    values += [x for r in rows for x in (r.estimate.ci_low, r.estimate.ci_high)]
    ticks = nice_ticks(min(0.0, *values), max(0.0, *values))
    lo, hi = ticks[0], ticks[-1]
    right = _W - _RIGHT

    def xs(value: float) -> float:
        return round(_LEFT + (value - lo) / (hi - lo) * (right - _LEFT), 1)

    base = xs(0.0)
    bars = []
    for i, r in enumerate(rows):
        y = _TOP + _ROW * i + _ROW / 2
        dots = [
            Dot(xs(x), round(y + ((j % 5) - 2) * 2.5, 1), fmt_number(x))
            for j, x in enumerate(r.samples)
        ]
        end = xs(r.median)
        e = r.estimate
        whisker = Whisker(xs(e.ci_low), xs(e.ci_high), f"95% CI of the median {_ci(r)}")
        bars.append(
            Bar(r.variant, y, min(base, end), abs(end - base), fmt_number(r.median), dots, whisker)
        )
    axis_y = _TOP + _ROW * len(rows) + 4
    return Chart(
        test=key[0],
        metric=key[1],
        width=_W,
        height=int(axis_y + _AXIS),
        left=_LEFT,
        right=right,
        axis_y=axis_y,
        bars=bars,
        ticks=[(xs(t), fmt_number(t)) for t in ticks],
        rows=rows,
    )


_SPARK_W, _SPARK_H, _SPARK_PAD = 120, 24, 3


def _spark(s: MetricSummary, r: MetricRow, history: History | None) -> Spark | None:
    """The variant's medians over the last runs, when there are at least two."""
    if history is None:
        return None
    points = history.medians.get((s.test, s.metric), {}).get(r.variant, ())
    return sparkline(points)


def sparkline(points: tuple[tuple[str, float], ...]) -> Spark | None:
    if len(points) < 2:
        return None
    values = [m for _, m in points]
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0  # a flat line sits in the middle
    step = (_SPARK_W - 2 * _SPARK_PAD) / (len(points) - 1)
    inner = _SPARK_H - 2 * _SPARK_PAD
    xy = [
        (
            round(_SPARK_PAD + i * step, 1),
            round(_SPARK_PAD + inner * ((hi - m) / span if hi > lo else 0.5), 1),
        )
        for i, m in enumerate(values)
    ]
    title = "\n".join(f"{started}: {fmt_number(m)}" for started, m in points)
    return Spark(
        _SPARK_W,
        _SPARK_H,
        " ".join(f"{x},{y}" for x, y in xy),
        xy[-1],
        f"median over the last {len(points)} runs\n{title}",
    )


def nice_ticks(lo: float, hi: float, count: int = 4) -> list[float]:
    """Round axis ticks (steps of 1, 2 or 5 times a power of ten) covering lo..hi."""
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.floor(lo / step) * step
    n = math.ceil((hi - first) / step - 1e-9)
    return [float(round(first + i * step, 12)) for i in range(n + 1)]


# --- environment -------------------------------------------------------------


def _environment_rows(run: RunResult) -> list[tuple[str, str]]:
    rows = [("matrix", run.matrix), ("started", run.started), ("finished", run.finished)]
    rows.append(("perf baseline", baseline_of(run) or "—"))
    rows += [(f"host {k}", v) for k, v in run.host.items()]
    for v in run.variants:
        if v.boot is not None:
            rows.append((f"{v.name}: accelerator", f"{v.boot.accel} — {v.boot.accel_reason}"))
    for v in run.variants:
        rows.append((f"{v.name}: base → head", f"{v.base or '?'} → {v.head or '?'}"))
    rows.append(("results schema", str(run.schema)))
    return rows
