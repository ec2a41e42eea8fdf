from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from orchestrator.progress import LiveProgress, PlainProgress, progress_for
from orchestrator.results import Stage, Status


def test_plain_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    with progress_for(["a"], [Stage.BUILD], out) as progress:
        progress("a", Stage.BUILD, None, "")
        progress("a", Stage.BUILD, Status.FAIL, "x.c:1:1: error: boom")
    assert isinstance(progress, PlainProgress)
    assert out.getvalue().splitlines() == [
        "[a] build: ...",
        "[a] build: FAIL - x.c:1:1: error: boom",
    ]


def test_live_table_shows_states_and_make_progress(tmp_path: Path) -> None:
    log = tmp_path / "build.log"
    log.write_text("  CC      kernel/fork.o\n  CC      kernel/bpf/memalloc.o\n")
    live = LiveProgress(["upstream", "pre-fix"], [Stage.APPLY, Stage.BUILD])
    live("upstream", Stage.APPLY, Status.PASS, "no patches")
    live("upstream", Stage.BUILD, None, f"log: {log}")
    live("pre-fix", Stage.APPLY, Status.FAIL, "conflict")
    console = Console(file=io.StringIO(), width=120)
    console.print(live)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "PASS" in text and "FAIL" in text
    assert "kernel/bpf/memalloc.o" in text
