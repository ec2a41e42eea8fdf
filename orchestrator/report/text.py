"""A plain-text summary for a mailing-list reply: every line fits 72 columns.

Run header, the verdict table (variants by stages and tests, in words),
what the subtests show (the matrix's `about:`), what changed since the
previous run (with history), what went wrong where, flaky tests and the
quarantine, perf comparisons with the baseline (regressions first), then the
metrics per variant.
"""

from __future__ import annotations

import shlex
import textwrap
from collections.abc import Sequence
from pathlib import Path

from orchestrator import flakes
from orchestrator.perf import (
    History,
    MetricRow,
    MetricSummary,
    PlanNote,
    answers,
    batch_note,
    perf,
    place_lines,
    plan_note,
)
from orchestrator.report.common import aa_line, comparison_line, plural, reproduce
from orchestrator.results import (
    PatchOutcome,
    RunResult,
    Stage,
    StageResult,
    TestResult,
    VariantResult,
)
from orchestrator.stats import Change
from orchestrator.textfmt import MAIL_WIDTH, fmt_number, fmt_percent, grid, printable
from orchestrator.verdicts import (
    STAGE_COLUMNS,
    Cell,
    Outcome,
    boot_failed,
    labelled,
    not_reached,
    outcome_of,
    own_outcome,
    stage_outcome,
    verdict_table,
    walk,
)

WIDTH = MAIL_WIDTH
_LABEL = 10  # header labels: "matrix", "base", ...


def render(run: RunResult, history: History | None = None) -> str:
    summaries = perf(run)  # the statistics, once
    sections = [
        _header(run),
        _verdicts(run),
        _about(run),
        _changes(history),
        _failures(run),
        _flakes(run, history),
        _expected(run),
        _perf(
            summaries,
            batch_note(run),
            plan_note(run),
            answers(run, summaries),
        ),
        _places(place_lines(run)),
        _metrics(summaries),
    ]
    return "\n\n".join(s for s in sections if s) + "\n"


def wrap(text: str, indent: str = "", more: str | None = None) -> list[str]:
    """Lines of at most WIDTH columns; long words (paths, hashes) are broken."""
    more = indent + "  " if more is None else more
    out: list[str] = []
    for para in printable(text).splitlines() or [""]:
        # Not at hyphens: paths and symbols must stay whole where they can.
        out += textwrap.wrap(
            para, WIDTH, initial_indent=indent, subsequent_indent=more, break_on_hyphens=False
        ) or [indent.rstrip()]
    return out


def _title(text: str) -> list[str]:
    lines = wrap(text, "", "")
    return [*lines, "-" * min(WIDTH, max(len(line) for line in lines))]


def _kv(label: str, value: str) -> list[str]:
    pad = " " * _LABEL
    lines = wrap(value, pad, pad)
    return [label.ljust(_LABEL - 1)[: _LABEL - 1] + " " + lines[0][_LABEL:], *lines[1:]]


def _header(run: RunResult) -> str:
    bad = [v.name for v in run.variants if v.status.bad]
    verdict = f"{plural(len(run.variants), 'variant')}: " + (
        f"{len(bad)} failed ({', '.join(bad)})" if bad else "all as expected"
    )
    if run.incomplete and not bad:
        verdict += " so far"
    lines = wrap(f"orchestrate report: {Path(run.matrix).name}", "", "") + wrap(verdict, "", "")
    if run.incomplete:
        lines += wrap(_incomplete(run), "", "  ")
    lines.append("=" * WIDTH)
    lines += _kv("matrix", run.matrix)
    lines += _kv("run", f"{run.started} to {run.finished}")
    bases = sorted({v.base for v in run.variants if v.base})
    if bases:
        lines += _kv("base", ", ".join(b[:12] for b in bases))
    for v in run.variants:
        if v.mail is not None:  # taken from the list through b4 (hostile text: wrap shows it)
            n = f"{len(v.mail.patches)} patch" + ("" if len(v.mail.patches) == 1 else "es")
            about = f"revision {v.mail.revision}, {n}, <{v.mail.message_id}>"
            lines += _kv("series", f"{v.name}: {v.mail.subject} ({about})")
    for accel, why in sorted({(v.boot.accel, v.boot.accel_reason) for v in run.variants if v.boot}):
        lines += _kv("accel", f"{accel}: {why}" if why else accel)
    if run.host:
        lines += _kv("host", ", ".join(f"{k} {v}" for k, v in run.host.items()))
    return "\n".join(lines)


def _incomplete(run: RunResult) -> str:
    """What an incomplete run says before anything else: why it stopped, and who did not finish."""
    unfinished = [v.name for v in run.variants if not_reached(v)]
    text = f"INCOMPLETE: {run.incomplete}; the results are partial"
    return text + (f" (not finished: {', '.join(unfinished)})" if unfinished else "") + "."


def _verdicts(run: RunResult) -> str:
    table = verdict_table(run)
    header = ["variant", *(s.value for s in STAGE_COLUMNS), *table.tests]
    rows = []
    for row in table.rows:
        stages = [_word(c, detail=False) for c in row.stages]
        rows.append([row.variant.name, *stages, *(_word(c, detail=True) for c in row.tests)])
    return "\n".join([*_title("Verdicts"), *grid(header, rows)])


def _about(run: RunResult) -> str:
    """What each subtest shows, once per subtest, in the order the tests ran."""
    seen: dict[str, str] = {}
    for v in run.variants:
        for t in walk(v.tests):
            if t.about and t.name not in seen:
                seen[t.name] = t.about
    if not seen:
        return ""
    lines = _title("What the subtests show")
    for name, about in seen.items():
        lines += wrap(f"{name}: {about}", "", "  ")
    return "\n".join(lines)


def _word(cell: Cell | None, *, detail: bool) -> str:
    if cell is None:
        return "-"
    return cell.text if detail else cell.outcome.word


def command(cmd: str, indent: str) -> list[str]:
    """A shell command in lines that fit, joined by backslash-newlines so it still pastes."""
    lines: list[str] = []
    ends: list[str] = []  # what ends each line but the last
    for word in map(shlex.quote, shlex.split(cmd)):
        if lines and len(lines[-1]) + 1 + len(word) <= WIDTH - 2:
            lines[-1] += " " + word
            continue
        if lines:
            ends.append(" \\")
        start = indent + ("  " if lines else "")
        first = WIDTH - len(start) - 1
        lines.append(start + word[:first])
        # A word longer than a line goes on at column 0 after a bare
        # backslash: the shell would split it at any space or indentation.
        for i in range(first, len(word), WIDTH - 1):
            ends.append("\\")
            lines.append(word[i : i + WIDTH - 1])
    return [line + end for line, end in zip(lines, [*ends, ""], strict=True)]


def _failures(run: RunResult) -> str:
    lines: list[str] = []
    for v in run.variants:
        found = _variant_failures(v)
        if found:
            lines += ["", *wrap(f"{v.name}: {v.status.value.upper()}", "", "  ")]
            lines += found
            lines += ["  reproduce:", *command(reproduce(run, v), "    ")]
    if not lines:
        return ""
    return "\n".join([*_title("Failures"), *lines[1:]])


def _variant_failures(v: VariantResult) -> list[str]:
    lines: list[str] = []
    for stage in v.stages:
        # A failed test stage is told through its tests, below.
        if stage.status.bad and (stage.stage is not Stage.TEST or not v.tests):
            lines += _stage_failure(v, stage)
    not_run = boot_failed(v)
    for test in v.tests:
        if outcome_of(test, not_run=not_run).bad:
            lines += _test_failure(test, not_run)
    for b in v.bisect:
        lines += wrap(f"first bad patch for {b.test}: {b.summary}", "  ", "    ")
        if b.commit:
            lines += wrap(f"commit {b.commit[:12]} ({Path(b.source).name})", "    ", "      ")
    return lines


def _stage_failure(v: VariantResult, stage: StageResult) -> list[str]:
    word = stage_outcome(stage).word
    lines = wrap(f"{word}: {stage.reason}" if stage.reason else word, "  ", "    ")
    if stage.stage is Stage.APPLY:
        for p in v.patches:
            if p.outcome is PatchOutcome.CONFLICT:
                lines += wrap(f"patch: {p.subject} ({Path(p.source).name})", "    ", "      ")
                lines += wrap(f"conflict in: {', '.join(p.files) or 'unknown files'}", "    ")
    elif stage.stage is Stage.KCONFIG:
        for m in v.kconfig:
            text = f"{m.symbol}: wanted {m.wanted}, got {m.got} ({m.fragment}): {m.reason}"
            lines += wrap(text, "    ", "      ")
    elif stage.stage is Stage.BUILD and v.build is not None:
        if v.build.first_error and v.build.first_error != stage.reason:
            lines += wrap(f"first error: {v.build.first_error}", "    ", "      ")
        lines += wrap(plural(len(v.build.warnings), "warning"), "    ")
    elif stage.stage is Stage.BOOT and v.boot is not None:
        tail = [line for line in v.boot.console_tail.splitlines() if line.strip()]
        if tail:
            lines += wrap(f"console: {tail[-1].strip()}", "    ", "      ")
    return lines


def _test_failure(test: TestResult, not_run: bool) -> list[str]:
    lines: list[str] = []
    for name, t in labelled(test):
        outcome = own_outcome(t, not_run=not_run)
        if not outcome.bad:
            continue
        why = t.reason
        if outcome is Outcome.UNEXPECTED_PASS:
            why = f"expected {t.expected}, but it passed"
        lines += wrap(f"{name}: {outcome.word}" + (f" - {why}" if why else ""), "  ", "    ")
        if t.about:
            lines += wrap(f"({t.about})", "    ", "     ")
        for s in t.splats[:1]:
            times = f" \u00d7{s.count}" if s.count > 1 else ""  # printed that many times
            lines += wrap(f"{s.kind}{times}: {s.title}", "    ", "      ")
    return lines


def _flakes(run: RunResult, history: History | None) -> str:
    """FLAKY tests (fail:runs, and the flake rate over the history) and the quarantine:
    what it holds, until when and why, what it kept from failing, and what expired."""
    rates = history.flake_rates if history is not None else {}
    lines: list[str] = []
    for v in run.variants:
        for t in flakes.flaky(v):
            rate = rates.get(t.name)
            text = f"{v.name}: {t.label}: FLAKY {t.failures}:{t.attempts}"
            if rate is not None:
                text += f" (flaky in {rate[0]} of {rate[1]} runs recorded)"
            lines += wrap(f"{text} - {t.reason}", "", "  ")
    for q in run.quarantine:
        lines += wrap(flakes.describe(q), "", "  ")
    for variant, t in flakes.quarantined_misses(run):
        text = f"{variant}: {t.label}: {t.verdict.value}, not counted (quarantined)"
        lines += wrap(text + (f" - {t.reason}" if t.reason else ""), "  ", "    ")
    return "\n".join([*_title("Flakes and quarantine"), *lines]) if lines else ""


def _expected(run: RunResult) -> str:
    lines: list[str] = []
    for v in run.variants:
        for name, t in (x for top in v.tests for x in labelled(top)):
            if own_outcome(t) is Outcome.XFAIL:
                text = f"{v.name}: {name}: {t.verdict.value} as declared ({t.expected})"
                lines += wrap(text + (f" - {t.reason}" if t.reason else ""), "", "  ")
    return "\n".join([*_title("Expected failures"), *lines]) if lines else ""


def _changes(history: History | None) -> str:
    if history is None or not history.previous:
        return ""
    lines = _title("Changes since the previous run")
    lines += wrap(f"previous run: {history.previous}", "", "  ")
    if not history.changes:
        return "\n".join([*lines, "none: same verdicts, no metric beyond its noise"])
    for change in history.changes:
        lines += wrap(change, "  ", "    ")
    return "\n".join(lines)


def _perf(
    summaries: Sequence[MetricSummary],
    note: str = "",
    plan: PlanNote | None = None,
    answered: Sequence[str] = (),
) -> str:
    """Every comparison with the baseline, regressions first, then the noise floors.

    `note` says in one line when the A/A control found a batch noisy; `plan`
    how a sequential plan decided and how many boots each guest took;
    `answered` the matrix's questions, one sentence each.
    """
    compared = [
        (s, r) for s in summaries if not s.breakdown for r in s.rows if r.comparison is not None
    ]
    if not compared:
        return ""
    regressions: list[tuple[MetricSummary, MetricRow]] = []
    others: list[tuple[MetricSummary, MetricRow]] = []
    for s, r in compared:
        slower = r.comparison is not None and r.comparison.verdict is Change.SLOWER
        (regressions if slower else others).append((s, r))
    lines = _title(f"Performance against {compared[0][0].baseline}")
    for sentence in answered:
        lines += wrap(sentence, "", "  ")
    lines += wrap(note, "", "  ") if note else []
    for heading, group in (("Regressions:", regressions), ("Other comparisons:", others)):
        if group:
            lines.append(heading)
            for s, r in group:
                lines += wrap(comparison_line(s, r), "  ", "    ")
    lines.append("Noise floor (baseline CV; drop detectable with its n a side):")
    for s in dict.fromkeys(s for s, _ in compared):
        base = s.base
        assert base is not None  # it was compared with
        flag = ", NOISY: rerun" if s.noisy and s.floor is None else ""
        text = f"{s.name}: CV {fmt_percent(s.noise)}{flag}, "
        text += f"{fmt_percent(s.detectable)} at {base.n}+{base.n}"
        lines += wrap(text, "  ", "    ")
        if s.floor is not None:  # what the A/A control measured of the same kernel
            lines += wrap(aa_line(s), "    ", "      ")
    if plan is not None:
        lines += _plan(plan)
    details = [s.name for s in summaries if s.breakdown]
    if details:
        note = f"{len(details)} breakdowns (per CPU, min, max) are compared in report.html."
        lines += wrap(note, "", "  ")
    return "\n".join(lines)


def _places(places: Sequence[str]) -> str:
    """Where the perf rounds ran, when in more than one place (perf.place_lines)."""
    if not places:
        return ""
    lines = _title("Perf rounds by place")
    lines += wrap(places[0], "", "  ")
    for line in places[1:]:
        lines += wrap(line, "  ", "    ")
    return "\n".join(lines)


def _plan(plan: PlanNote) -> list[str]:
    """How the sequential plan decided, and each guest's boots."""
    lines = ["How these were decided:"]
    for text in (plan.method, plan.stopped, plan.twins):
        lines += wrap(text, "  ", "  ") if text else []
    lines.append("Perf boots (and why they stopped):")
    for guest, n, why in plan.boots:
        lines += wrap(f"{guest}: {n} ({why})", "  ", "    ")
    return lines


def _metrics(summaries: Sequence[MetricSummary]) -> str:
    per_variant: dict[str, list[str]] = {}
    for s in summaries:
        if s.breakdown:
            continue  # in report.html; the summary stays short enough to quote
        for row in s.rows:
            e = row.estimate
            spread = f"{fmt_number(row.low)}..{fmt_number(row.high)}"
            ci = f"{fmt_number(e.ci_low)}..{fmt_number(e.ci_high)}"
            text = f"{s.test} {s.metric}: {fmt_number(row.median)} (n={row.n}, {spread})"
            text += f" CI {ci} CV {fmt_percent(e.cv)}"
            per_variant.setdefault(row.variant, []).extend(wrap(text, "  ", "    "))
    if not per_variant:
        return ""
    lines = _title("Metrics (median of repeats)")
    lines += wrap("(n, min..max), 95% CI of the median, CV", "", "")
    for variant, rows in per_variant.items():
        lines += [*wrap(variant, "", "  "), *rows]
    return "\n".join(lines)
