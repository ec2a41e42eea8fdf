"""One self-contained HTML file: inline CSS and SVG, no JavaScript, no URLs.

Everything shown comes from the results and the logs they name, and all of
it is untrusted (patch subjects, console and test output, test names), so
the template is rendered with autoescape on and nothing is marked safe.
Logs are cut to their last lines and the whole report has a log budget, so
a run with huge consoles still makes a file a mail client can carry.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import markupsafe

from orchestrator import flakes
from orchestrator.perf import (
    History,
    MetricRow,
    MetricSummary,
    answers,
    batch_note,
    perf,
    place_lines,
    plan_note,
)
from orchestrator.report.charts import Spark, charts, ci_text, spark
from orchestrator.report.common import (
    LOG_BYTES,
    LOG_LINES,
    Excerpt,
    LogDirs,
    console_for,
    plural,
    read_tail,
    reproduce,
)
from orchestrator.results import RunResult, Splat, Stage, Status, TestResult, VariantResult
from orchestrator.stats import ALPHA, NOISE_LIMIT
from orchestrator.textfmt import fmt_number, fmt_percent, printable
from orchestrator.verdicts import (
    STAGE_COLUMNS,
    Cell,
    Outcome,
    baseline_of,
    boot_failed,
    build_kind,
    fail_runs,
    not_reached,
    outcome_of,
    own_outcome,
    run_label,
    stage_cell,
    verdict_table,
)

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


def render(
    run: RunResult,
    *,
    budget: int = LOG_BUDGET,
    history: History | None = None,
    log_dirs: LogDirs | None = None,
) -> str:
    """The page; logs are read only from inside `log_dirs` when given (common.read_tail)."""
    logs = Logs(budget, log_dirs)
    summaries = perf(run)  # the statistics, once for the whole page
    template = _environment().get_template("report.html.j2")
    return template.render(
        run=run,
        title=f"orchestrate: {Path(run.matrix).name}",
        summary=_summary(run),
        incomplete=_incomplete(run),
        stages=[s.value for s in STAGE_COLUMNS],
        table=_table(run),
        charts=charts(summaries, history),
        baseline=baseline_of(run),
        control=run.control.name if run.control is not None else "",
        batch_note=batch_note(run),
        plan=plan_note(run),
        places=place_lines(run),
        answers=answers(run, summaries),
        history=history,
        flakes=_flakes(run, history),
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

    def __init__(self, budget: int, within: LogDirs | None = None) -> None:
        self.left = budget
        self.total = budget
        self.within = within  # the run directory: no log is read from elsewhere
        self.seen: dict[tuple[str, int], LogView] = {}

    def tail(self, path: str, lines: int = LOG_LINES) -> LogView:
        key = (path, lines)
        if key in self.seen:
            return dataclasses.replace(self.seen[key], repeat=True)
        excerpt = read_tail(path, lines, LOG_BYTES, within=self.within)
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
                tests=[
                    _cell(c, reproduce(run, row.variant, name))
                    for c, name in zip(row.tests, table.tests, strict=True)
                ],
            )
        )
    return TableView(list(table.tests), rows)


def _summary(run: RunResult) -> CellView:
    bad = [v.name for v in run.variants if v.status.bad]
    count = plural(len(run.variants), "variant")
    if not bad:
        so_far = " so far" if run.incomplete else ""
        return CellView(f"{count}, all as expected{so_far}", Outcome.PASS.css)
    return CellView(f"{len(bad)} of {count} failed", Outcome.FAIL.css)


def _incomplete(run: RunResult) -> str:
    """The banner of a run that stopped early: why, and which variants did not finish."""
    if not run.incomplete:
        return ""
    unfinished = [v.name for v in run.variants if not_reached(v)]
    text = f"{run.incomplete}. The results below are partial"
    return text + (f"; not finished: {', '.join(unfinished)}." if unfinished else ".")


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
    about: str = ""  # what the subtest shows (the matrix's `about:`)
    # A retried test's earlier runs (each missed): what they were, why, their stdout.
    earlier: list[RerunView] = field(default_factory=list)


@dataclass(frozen=True)
class RerunView:
    verdict: str
    reason: str
    logs: list[LogView]
    splats: list[Splat]


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
    unreached: str  # in an incomplete run, the stages it stopped before
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
        MetricView(
            s.test, s.metric, r, ci_text(r), fmt_percent(r.estimate.cv), spark(s, r, history)
        )
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
        unreached=", ".join(s.value for s in not_reached(v)) if run.incomplete else "",
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
        views.append(_test_view(v, test, test.label, 0, logs, not_run))
        shown = 0
        for sub, depth in _subtests(test, 1):
            outcome = outcome_of(sub, not_run=not_run)
            if outcome in (Outcome.PASS, Outcome.SKIP) and shown >= SUBTEST_ROWS:
                hidden += 1
                continue
            shown += 1
            views.append(_test_view(v, sub, run_label(test, sub), depth, logs, not_run))
    return views, hidden


def _subtests(test: TestResult, depth: int) -> list[tuple[TestResult, int]]:
    out: list[tuple[TestResult, int]] = []
    for sub in test.subtests:
        out += [(sub, depth), *_subtests(sub, depth + 1)]
    return out


def _test_view(
    v: VariantResult, test: TestResult, label: str, depth: int, logs: Logs, not_run: bool
) -> TestView:
    """A test or subtest's row, named after its run (`label`: smoke@2, smoke@2.bpffs)."""
    outcome = (
        outcome_of(test, not_run=not_run) if depth == 0 else own_outcome(test, not_run=not_run)
    )
    console = None
    if outcome in (Outcome.CRASH, Outcome.KERNEL_HANG):
        path = console_for(v, label, within=logs.within)
        console = logs.tail(path, CONSOLE_LINES) if path else None
    earlier = [
        RerunView(r.verdict.value, r.reason, [logs.tail(p) for p in r.logs[:1]], list(r.splats))
        for r in test.earlier_runs
    ]
    return TestView(
        name=label,
        depth=depth,
        cell=CellView(outcome.word, outcome.css, fail_runs((test,))),
        earlier=earlier,
        expected=test.expected,
        duration=test.duration,
        reason=test.reason,
        metrics=[(k, fmt_number(x)) for k, x in test.metrics.items()],
        logs=[logs.tail(p) for p in test.logs],
        console=console,
        splats=list(test.splats),
        about=test.about,
    )


# --- flakes and quarantine ------------------------------------------------------


@dataclass(frozen=True)
class FlakeView:
    variant: str
    test: str
    fail_runs: str
    reason: str


@dataclass(frozen=True)
class QuarantineView:
    text: str  # flakes.describe
    css: str
    misses: list[str]  # "variant: test: verdict" kept from failing the run


@dataclass(frozen=True)
class FlakesView:
    flaky: list[FlakeView]
    quarantine: list[QuarantineView]
    # test, FLAKY runs, runs, the rate: over the recorded history of the matrix
    rates: list[tuple[str, int, int, str]]

    def __bool__(self) -> bool:
        return bool(self.flaky or self.quarantine or self.rates)


def _flakes(run: RunResult, history: History | None) -> FlakesView:
    flaky = [
        FlakeView(v.name, t.label, f"{t.failures}:{t.attempts}", t.reason)
        for v in run.variants
        for t in flakes.flaky(v)
    ]
    misses = flakes.quarantined_misses(run)
    quarantine = [
        QuarantineView(
            flakes.describe(q),
            Outcome.FAIL.css if q.expired else Outcome.QUARANTINED.css,
            [
                f"{variant}: {t.label}: {t.verdict.value}"
                for variant, t in misses
                if flakes.entry_for(run, t) == q
            ],
        )
        for q in run.quarantine
    ]
    rates = [
        (test, n, runs, fmt_percent(n / runs))
        for test, (n, runs) in (history.flake_rates if history is not None else {}).items()
        if runs
    ]
    return FlakesView(flaky, quarantine, rates)


def _all_splats(test: TestResult) -> list[Splat]:
    return [*test.splats, *(s for sub in test.subtests for s in _all_splats(sub))]


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
