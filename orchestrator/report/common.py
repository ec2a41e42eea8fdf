"""What the renderers share that is about showing, not meaning.

Capped log excerpts, the console a test died on, one-line comparisons and
the reproduce command.  What results mean (outcomes, the verdict table,
perf summaries) is the model's: orchestrator.verdicts and orchestrator.perf;
how numbers read is orchestrator.textfmt's.  Like every report module this
reads only results and the log files they name (never a stage, never the
history database), and of those only the ones inside the run directory: a
results file from elsewhere may name ~/.ssh/id_ed25519 as a test's log.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import stat
from dataclasses import dataclass
from pathlib import Path

from orchestrator.perf import MetricRow, MetricSummary
from orchestrator.results import RunResult, Stage, VariantResult
from orchestrator.textfmt import fmt_p, fmt_percent, printable

LOG_LINES = 200
LOG_BYTES = 64 * 1024
OUTSIDE = "not read: outside the run directory's logs"


def reproduce(run: RunResult, variant: VariantResult, test: str = "") -> str:
    """A one-line command that shows this variant's failure again.

    A kernel that was built is booted again by `orchestrate reproduce` (the
    results.json beside the report; the test's, or every test); one that
    never built needs its stages run again, up to the build.
    """
    failed = next((s.stage for s in variant.stages if s.status.bad), None)
    built = variant.build is not None and failed not in (Stage.APPLY, Stage.KCONFIG, Stage.BUILD)
    if built:
        argv = ["orchestrate", "reproduce", "results.json", variant.name]
        return shlex.join([*argv, test] if test else argv)
    argv = ["orchestrate", "run", run.matrix, "--only", variant.name]
    if failed is not None:
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


@dataclass(frozen=True)
class LogDirs:
    """Where a report may read logs: the run directory's logs/ and nothing else,
    unless the run itself wrote some elsewhere (`also`: the cache's artifacts).

    Not the whole run directory: a results file saved in a home directory
    would otherwise open ~/.ssh to it.
    """

    run_dir: Path  # resolved; a relative log path is taken from here
    allowed: tuple[Path, ...]  # resolved


def log_dirs(run_dir: Path, *also: Path) -> LogDirs:
    """The run directory's logs/ (and `also`), resolved: the `within` of read_tail."""
    root = Path(run_dir).resolve()
    return LogDirs(root, (root / "logs", *(Path(d).resolve() for d in also)))


def _inside(path: str, within: LogDirs | None) -> Path | str:
    """The file to open for a log path, or why it is not opened.

    With `within` the path, symlinks resolved, must lie inside one of its
    directories; a relative path is taken from the run directory.
    """
    if within is None:
        return Path(path)
    try:
        resolved = (within.run_dir / path).resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # a loop, a NUL, a name too long
        return f"unreadable: {getattr(exc, 'strerror', None) or exc}"
    if not any(resolved.is_relative_to(d) for d in within.allowed):
        return OUTSIDE
    return resolved


def _open_log(path: Path, within: LogDirs | None) -> int:
    """A regular file opened for reading; never a FIFO that blocks or a device.

    Inside the run directory the path is the resolved one, so a link that
    appears there after the check is not followed either.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
    fd = os.open(path, flags if within is None else flags | os.O_NOFOLLOW)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(0, "not a regular file", str(path))
    return fd


def read_tail(
    path: str,
    lines: int = LOG_LINES,
    limit: int = LOG_BYTES,
    *,
    within: LogDirs | None = None,
) -> Excerpt:
    """The end of a log: at most `lines` lines and `limit` bytes.

    The end, because that is where a build error, a panic or a failing
    test's last words are.  A missing file is a note, not an error: results
    outlive their logs (copied results, cleaned caches).  With `within`
    (from write_reports: the run directory's logs/), a path outside it is
    never opened: the excerpt says "not read: outside the run directory's logs".
    """
    if not path:
        return Excerpt(path, missing="no log recorded")
    where = _inside(path, within)
    if isinstance(where, str):
        return Excerpt(path, missing=where)
    try:
        with open(_open_log(where, within), "rb") as f:
            size = f.seek(0, 2)
            f.seek(max(0, size - limit))
            data = f.read(limit)
    except FileNotFoundError:
        return Excerpt(path, missing="not found (the log was moved or cleaned up)")
    except OSError as exc:
        return Excerpt(path, missing=f"unreadable: {exc.strerror or exc}")
    except ValueError as exc:  # a NUL in the path
        return Excerpt(path, missing=f"unreadable: {exc}")
    text = printable(data.decode("utf-8", errors="replace"))
    kept = text.splitlines()
    cut = size > limit
    if cut and len(kept) > 1:
        kept = kept[1:]  # the first line is likely cut in half
    if len(kept) > lines:
        kept, cut = kept[-lines:], True
    return Excerpt(path, "\n".join(kept), size, cut)


# What run_test writes to the kernel log before each run of a test (run_test.Marker).
_BEGIN = b"orchestrate: begin test "
_CONSOLE = re.compile(r"console-(\d+)\.log")
_CONSOLE_MAX = 64 * 1024 * 1024  # larger consoles are not searched for markers


def console_for(variant: VariantResult, label: str, *, within: LogDirs | None = None) -> str | None:
    """The console log of the boot that ran the test run `label` (TestResult.label).

    A crashed or hung guest is rebooted for the next test, so the run's
    console is the latest console-N.log that shows its begin marker; its
    end is where the guest died.  With `within`, only consoles inside it are
    looked at (as read_tail).
    """
    if variant.boot is None or not variant.boot.console_log:
        return None
    folder = _inside(str(Path(variant.boot.console_log).parent), within)
    if isinstance(folder, str):
        return None
    try:
        found = [(int(m[1]), p) for p in folder.iterdir() if (m := _CONSOLE.fullmatch(p.name))]
    except (OSError, ValueError):
        return None
    name = label.encode(errors="replace")  # a lone surrogate cannot be in a marker
    marker = re.compile(re.escape(_BEGIN + name) + rb"\r?$", re.MULTILINE)
    for _n, log in sorted(found, reverse=True):
        target = _inside(str(log), within)
        if isinstance(target, str):
            continue  # a link out of the run directory
        try:
            with open(_open_log(target, within), "rb") as f:
                size = f.seek(0, 2)
                f.seek(0)
                if size <= _CONSOLE_MAX and marker.search(f.read(_CONSOLE_MAX)):
                    return str(log)
        except (OSError, ValueError):
            continue
    return None
