"""Progress of a run: a live variants x stages table on a terminal, one plain
line per stage change otherwise (CI logs).

Both implement the runner's Progress callback (units.Progress):
(variant, stage, status or None when starting, detail).  A detail can hold
hostile text (a patch subject, a compiler's or a test's last words), so
what reaches the terminal goes through textfmt.for_terminal: one line each,
bounded, with nothing in it that a terminal would act on.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from orchestrator.results import Stage, Status
from orchestrator.textfmt import for_terminal

DETAIL = 500  # characters of a detail shown on a progress line

STYLE = {
    Status.PASS: "green",
    Status.FAIL: "bold red",
    Status.ERROR: "bold magenta",
    Status.SKIPPED: "dim",
}


class PlainProgress:
    def __init__(self, out: TextIO = sys.stdout) -> None:
        self.out = out

    def __call__(self, variant: str, stage: Stage, status: Status | None, detail: str) -> None:
        state = "..." if status is None else status.value.upper()
        suffix = f" - {detail}" if detail else ""
        line = f"[{variant}] {stage.value}: {state}{suffix}"
        print(for_terminal(line, one_line=True, limit=DETAIL), file=self.out, flush=True)


class LiveProgress:
    """A table redrawn a few times a second; a running build shows make's last line."""

    def __init__(self, variants: Sequence[str], stages: Sequence[Stage]) -> None:
        self.variants = list(variants)
        self.stages = list(stages)
        self.cells: dict[tuple[str, Stage], tuple[Status | None, str, float]] = {}
        self.log: dict[tuple[str, Stage], Path] = {}

    def __call__(self, variant: str, stage: Stage, status: Status | None, detail: str) -> None:
        started = self.cells.get((variant, stage), (None, "", time.monotonic()))[2]
        if status is None:
            started = time.monotonic()
            if detail.startswith("log: "):
                self.log[(variant, stage)] = Path(detail[5:])
        self.cells[(variant, stage)] = (status, detail, started)

    def __rich__(self) -> Table:
        table = Table(box=None, pad_edge=False)
        table.add_column("variant", style="bold")
        for stage in self.stages:
            table.add_column(stage.value)
        for variant in self.variants:
            name = Text(for_terminal(variant, one_line=True, limit=64))  # Text: no markup
            table.add_row(name, *(self._cell(variant, s) for s in self.stages))
        return table

    def _cell(self, variant: str, stage: Stage) -> Text:
        if (variant, stage) not in self.cells:
            return Text("")
        status, _detail, started = self.cells[(variant, stage)]
        if status is not None:
            return Text(status.value.upper(), style=STYLE[status])
        running = Text(f"{time.monotonic() - started:4.0f}s", style="yellow")
        log = self.log.get((variant, stage))
        if log is not None:
            # make's last line: a compiler's or a test's words, shown, never acted on.
            running.append(" " + for_terminal(_last_line(log)[-40:], one_line=True), style="dim")
        return running


def _last_line(log: Path) -> str:
    try:
        with log.open("rb") as f:
            f.seek(max(0, log.stat().st_size - 512))
            lines = f.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1].strip() if lines else ""


@contextmanager
def progress_for(
    variants: Sequence[str], stages: Sequence[Stage], out: TextIO = sys.stdout
) -> Iterator[PlainProgress | LiveProgress]:
    if not out.isatty():
        yield PlainProgress(out)
        return
    live = LiveProgress(variants, stages)
    with Live(live, console=Console(file=out), refresh_per_second=4):
        yield live
