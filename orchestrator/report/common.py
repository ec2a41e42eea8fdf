"""What the renderers share that is about showing, not meaning.

Capped log excerpts, the console a test died on, one-line comparisons and
the reproduce command.  What results mean (outcomes, the verdict table,
perf summaries) is the model's: orchestrator.verdicts and orchestrator.perf;
how numbers read is orchestrator.textfmt's.  Like every report module this
reads only results and the log files they name (never a stage, never the
history database).
"""

from __future__ import annotations

import math
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from orchestrator.perf import MetricRow, MetricSummary
from orchestrator.results import RunResult, Stage, VariantResult
from orchestrator.textfmt import fmt_p, fmt_percent, printable

LOG_LINES = 200
LOG_BYTES = 64 * 1024


def reproduce(run: RunResult, variant: VariantResult) -> str:
    """A one-line command that runs this variant again, stopping where it failed."""
    argv = ["orchestrate", "run", run.matrix, "--only", variant.name]
    failed = next((s.stage for s in variant.stages if s.status.bad), None)
    if failed in (Stage.APPLY, Stage.KCONFIG, Stage.BUILD):
        argv += ["--until", "build"]
    return shlex.join(argv)


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def human_size(n: int) -> str:
    if n < 1000:
        return f"{n} bytes"
    if n < 1_000_000:
        return f"{n / 1000:.1f} kB"
    return f"{n / 1_000_000:.1f} MB"


# --- perf in words ----------------------------------------------------------------


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


# --- logs ----------------------------------------------------------------


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


# What testrun writes to the kernel log before each run of a test (run_test.Marker).
_BEGIN = b"orchestrate: begin test "
_CONSOLE = re.compile(r"console-(\d+)\.log")
_CONSOLE_MAX = 64 * 1024 * 1024  # larger consoles are not searched for markers


def console_for(variant: VariantResult, label: str) -> str | None:
    """The console log of the boot that ran the test run `label` (TestResult.label).

    A crashed or hung guest is rebooted for the next test, so the run's
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
    marker = re.compile(re.escape(_BEGIN + label.encode()) + rb"\r?$", re.MULTILINE)
    for _n, log in sorted(found, reverse=True):
        try:
            if log.stat().st_size <= _CONSOLE_MAX and marker.search(log.read_bytes()):
                return str(log)
        except OSError:
            continue
    return None
