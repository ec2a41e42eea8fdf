"""Read-only views of a run: JUnit, HTML and a plain-text summary.

Every renderer works from a RunResult alone (plus the log files whose paths
it names), so `orchestrate report results.json` can redo them at any time.
What results mean is the model's (orchestrator.verdicts, orchestrator.perf);
what the renderers share about showing it is report.common.  No report
module imports a stage or the history database.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from orchestrator.perf import History
from orchestrator.report import html, junit, text
from orchestrator.results import RunResult

FILES = {"junit": "junit.xml", "html": "report.html", "text": "summary.txt"}


def write_reports(
    run: RunResult, out_dir: Path, formats: Iterable[str], history: History | None = None
) -> list[Path]:
    """Render the chosen formats into out_dir; "json" is results.json, written by the caller.

    `history`, when there is one, adds trends and changes to the HTML and text.
    """
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
