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


def test_plain_lines_show_hostile_text_and_stay_one_line() -> None:
    # A patch subject decoded from RFC 2047 (=1B]0;...=07 retitles a terminal),
    # a bidi override, and a newline that would forge a line of its own.
    out = io.StringIO()
    subject = "\x1b]0;owned\x07\u202eevil\n[b] build: PASS\r"
    PlainProgress(out)("a", Stage.APPLY, Status.FAIL, f"conflict: {subject}")
    assert out.getvalue() == (
        "[a] apply: FAIL - conflict: \\x1b]0;owned\\x07<U+202E>evil\\x0a[b] build: PASS\\x0d\n"
    )


def test_plain_lines_are_bounded() -> None:
    out = io.StringIO()
    PlainProgress(out)("a", Stage.TEST, Status.FAIL, "x" * 1_000_000)
    assert out.getvalue().endswith(" characters)\n") and len(out.getvalue()) < 600


def test_live_table_shows_the_last_line_of_a_log_without_its_escapes(tmp_path: Path) -> None:
    log = tmp_path / "build.log"
    log.write_bytes(b"  CC      kernel/fork.o\n\x1b]0;owned\x07\x1b[31mred\xe2\x80\xae\n")
    live = LiveProgress(["upstream"], [Stage.BUILD])
    live("upstream", Stage.BUILD, None, f"log: {log}")
    console = Console(file=io.StringIO(), width=200, force_terminal=True)
    console.print(live)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "\\x1b]0;owned\\x07\\x1b[31mred<U+202E>" in text
    assert "\x1b]0;" not in text and "\u202e" not in text
