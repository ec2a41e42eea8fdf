"""Read-only views of a run: JUnit, HTML and a plain-text summary.

Every renderer works from a RunResult alone (plus the log files whose paths
it names), so `orchestrate report results.json` can redo them at any time.
A results file may come from elsewhere, and the paths it names with it: the
logs are read only from inside the run directory (report.common.read_tail),
and what is shown of them is shown, never acted on (textfmt.printable).
What results mean is the model's (orchestrator.verdicts, orchestrator.perf);
what the renderers share about showing it is report.common.  No report
module imports a stage or the history database.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from orchestrator.perf import History
from orchestrator.report import html, junit, text
from orchestrator.report.common import log_dirs
from orchestrator.results import RunResult
from orchestrator.textfmt import BIDI, printable

FILES = {"junit": "junit.xml", "html": "report.html", "text": "summary.txt"}

_BIDI = re.compile(f"[{BIDI}]")


def write_reports(
    run: RunResult,
    out_dir: Path,
    formats: Iterable[str],
    history: History | None = None,
    *,
    run_dir: Path | None = None,
    also_logs_from: Sequence[Path] = (),
) -> list[Path]:
    """Render the chosen formats into out_dir; "json" is results.json, written by the caller.

    `history`, when there is one, adds trends and changes to the HTML and text.
    Logs are read only from the logs/ of `run_dir` (the directory of
    results.json; default: out_dir) and from `also_logs_from` (directories
    whose logs the run itself wrote: the cache's artifacts); any other path a
    result names is "not read: outside the run directory's logs".
    """
    dirs = log_dirs(run_dir or out_dir, *also_logs_from)
    render: dict[str, Callable[[RunResult], str]] = {
        "junit": lambda r: junit.render(r, log_dirs=dirs),
        "html": lambda r: html.render(r, history=history, log_dirs=dirs),
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
        output = _inert(render[fmt](run), markup=fmt != "text")
        # A lone surrogate (JSON can hold one) must not stop the report.
        tmp.write_text(output, encoding="utf-8", errors="backslashreplace")
        tmp.replace(path)
        written.append(path)
    return written


def _inert(output: str, *, markup: bool) -> str:
    """The last line of defence: no control character or bidi override leaves in a report.

    The renderers show them (textfmt.printable: \\x1b, <U+202E>); one that
    slips through (a renderer that forgot, a shell-quoted path in the text
    summary) is shown so here.  In XML and HTML such a character can only be
    text or an attribute's value, so <U+202E> is written escaped there.
    """
    if markup:
        output = _BIDI.sub(lambda m: f"&lt;U+{ord(m[0]):04X}&gt;", output)
    return printable(output)
