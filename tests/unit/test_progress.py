from __future__ import annotations

import io
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from rich.console import Console

from orchestrator import units
from orchestrator.cache import Cache
from orchestrator.kernel import kconfig
from orchestrator.matrix import Kconfig, Matrix, Report, Tree, TreeKind, Variant
from orchestrator.plan import Unit, UnitKind
from orchestrator.progress import (
    Estimate,
    LiveProgress,
    PerfRound,
    PlainProgress,
    RunningUnit,
    RunStatus,
    elapsed,
    estimate_left,
    overall,
    progress_for,
)
from orchestrator.results import BuildInfo, Stage, StageResult, Status
from orchestrator.runner import Options, Runner, perf_position

NOON = datetime(2026, 12, 7, 12, 3, 4, tzinfo=UTC)


class Clock:
    """time.monotonic and the UTC time, moved by the test, not by waiting."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def wall(self) -> datetime:
        return NOON + timedelta(seconds=self.now - 1000.0)


def plain(out: io.StringIO, clock: Clock | None = None) -> PlainProgress:
    clock = clock or Clock()
    return PlainProgress(out, clock=clock, wall=clock.wall)


def test_plain_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    before = set(threading.enumerate())
    with progress_for(["a"], [Stage.BUILD], out) as progress:
        assert isinstance(progress, PlainProgress)
        progress.wall = lambda: NOON
        progress("a", Stage.BUILD, None, "")
        progress("a", Stage.BUILD, Status.FAIL, "x.c:1:1: error: boom")
    assert out.getvalue().splitlines() == [
        "12:03:04 [a] build: ...",
        "12:03:04 [a] build: FAIL - x.c:1:1: error: boom",
    ]
    assert set(threading.enumerate()) == before  # the heartbeat stopped with the run


def test_the_heartbeat_thread_stops_when_the_run_fails() -> None:
    before = set(threading.enumerate())
    with pytest.raises(KeyboardInterrupt), progress_for(["a"], [Stage.BUILD], io.StringIO()):
        raise KeyboardInterrupt
    assert set(threading.enumerate()) == before


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
    plain(out)("a", Stage.APPLY, Status.FAIL, f"conflict: {subject}")
    assert out.getvalue() == (
        "12:03:04 [a] apply: FAIL - conflict: "
        "\\x1b]0;owned\\x07<U+202E>evil\\x0a[b] build: PASS\\x0d\n"
    )


def test_plain_lines_are_bounded() -> None:
    out = io.StringIO()
    plain(out)("a", Stage.TEST, Status.FAIL, "x" * 1_000_000)
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


# --- the run as a whole -------------------------------------------------------------------

B, F, P = UnitKind.BUILD, UnitKind.FUNCTIONAL, UnitKind.PERF_ROUND


def test_estimate_is_the_mean_per_kind_times_what_is_left_over_the_capacity() -> None:
    finished = [(B, 100.0), (B, 300.0), (F, 30.0)]
    pending = [(B, 0.0), (B, 0.0), (F, 0.0)]
    assert estimate_left(finished, pending, 1) == Estimate(430.0, lower_bound=False)
    assert estimate_left(finished, pending, 2) == Estimate(215.0, lower_bound=False)


def test_estimate_counts_what_a_running_unit_already_spent() -> None:
    finished = [(B, 200.0)]
    assert estimate_left(finished, [(B, 150.0), (B, 0.0)], 1) == Estimate(250.0, False)
    # A unit slower than the mean: nothing more is counted for it, never less than nothing.
    assert estimate_left(finished, [(B, 900.0)], 1) == Estimate(0.0, False)


def test_estimate_of_kinds_never_done_is_a_lower_bound_or_nothing() -> None:
    # Perf rounds come after every build: until one is done, their time is unknown.
    assert estimate_left([(B, 60.0)], [(B, 0.0), (P, 0.0)], 1) == Estimate(60.0, True)
    assert estimate_left([(B, 60.0)], [(P, 0.0)], 1) is None
    assert estimate_left([], [(B, 0.0)], 4) is None
    assert estimate_left([(B, 60.0)], [], 1) == Estimate(0.0, False)
    assert estimate_left([(B, 60.0)], [(B, 0.0)], 0) == Estimate(60.0, False)


def test_elapsed_reads_as_people_read_it() -> None:
    assert [elapsed(s) for s in (-1, 0, 45.9, 120, 3599, 3720)] == [
        "0s",
        "0s",
        "45s",
        "2m00s",
        "59m59s",
        "1h02m",
    ]


def test_overall_says_units_round_and_time_left_as_the_run_goes_on() -> None:
    snap = RunStatus(at=0.0, done=7, total=40, perf=PerfRound(2, 10), left=Estimate(1860.0, False))
    assert overall(snap, 0.0) == "units 7 of 40 · perf round 2 of 10 · about 31 min left"
    # Ten minutes later, with no new snapshot, the estimate has gone down with the clock.
    assert overall(snap, 600.0).endswith("about 21 min left")
    assert overall(snap, 5000.0).endswith("about 1 min left")
    over = RunStatus(at=0.0, done=40, total=40, left=Estimate(0.0, False))
    assert overall(over, 0.0) == "units 40 of 40"  # no time left to tell of
    maximum = RunStatus(at=0.0, total=9, perf=PerfRound(3, 12, at_most=True, batch=2))
    assert overall(maximum, 0.0) == "units 0 of 9 · perf round 3 of at most 12 (batch 2)"
    first = RunStatus(at=0.0, perf=PerfRound(0, 12, at_most=True))
    assert overall(first, 0.0) == "perf warm-up, then at most 12 rounds"
    # A sequential plan's rounds still to come counted, as far as its most.
    more = RunStatus(at=0.0, done=7, total=9, left=Estimate(1860.0, False, up_to=True))
    assert overall(more, 0.0) == "units 7 of 9 · up to about 31 min left"
    warmup = RunStatus(at=0.0, done=1, total=2, perf=PerfRound(0, 5), left=Estimate(60, True))
    assert (
        overall(warmup, 0.0) == "units 1 of 2 · perf warm-up, then 5 rounds · at least 1 min left"
    )


def _rounds(batch: int, first: int, last: int) -> list[Unit]:
    return [
        Unit(f"perf-round:{batch}:{r}", P, batch=batch, round=r) for r in range(first, last + 1)
    ]


def test_perf_position_is_the_last_round_started_of_its_batch() -> None:
    units = [Unit("build:a", B), *_rounds(1, 0, 5)]
    assert perf_position(units, {"build:a"}) is None
    assert perf_position(units, {"build:a", "perf-round:1:0"}) == PerfRound(0, 5, batch=1)
    started = {"perf-round:1:0", "perf-round:1:1", "perf-round:1:2"}
    assert perf_position(units, started) == PerfRound(2, 5, batch=1)
    # The A/A control asked for a rerun: a second batch, with no warm-up.
    units += _rounds(2, 1, 5)
    at = perf_position(units, {u.id for u in units[:-3]})
    assert at == PerfRound(2, 5, batch=2)


def _running(variant: str = "pre-fix", kind: UnitKind = B, started: float = 1000.0) -> RunningUnit:
    return RunningUnit(f"{kind.value}:{variant}", kind, variant, "local", started)


def test_plain_heartbeat_says_what_runs_for_how_long_at_most_every_minute() -> None:
    out, clock = io.StringIO(), Clock()
    progress = plain(out, clock)
    progress("pre-fix", Stage.BUILD, None, "")
    unit = _running()
    progress.status(
        RunStatus(at=1000.0, running=(unit,), done=7, total=40, left=Estimate(1980, False))
    )
    for now in (1030.0, 1059.0):  # quiet for less than a minute: no heartbeat
        clock.now = now
        progress.beat()
    clock.now = 1120.0
    progress.beat()
    progress.beat()  # at most one a minute
    clock.now = 1170.0
    progress.beat()
    clock.now = 1180.0
    progress.beat()
    assert out.getvalue().splitlines() == [
        "12:03:04 [pre-fix] build: ...",
        "12:05:04 [pre-fix] build: running 2m00s · units 7 of 40 · about 31 min left",
        "12:06:04 [pre-fix] build: running 3m00s · units 7 of 40 · about 30 min left",
    ]


def test_a_line_about_a_unit_puts_off_its_heartbeat() -> None:
    out, clock = io.StringIO(), Clock()
    progress = plain(out, clock)
    build, perf = _running("a"), RunningUnit("perf-round:1:0", P, "", "local", 1000.0)
    progress.status(RunStatus(at=1000.0, running=(build, perf)))
    clock.now = 1050.0
    progress("a", Stage.BUILD, None, "log: build.log")  # a line about a: its minute starts again
    clock.now = 1060.0
    progress.beat()
    clock.now = 1110.0
    progress.beat()
    assert out.getvalue().splitlines()[1:] == [
        "12:04:04 [perf-round:1:0]: running 1m00s",
        "12:04:54 [a] build: running 1m50s",
    ]


def test_plain_heartbeat_is_quiet_when_nothing_runs() -> None:
    out, clock = io.StringIO(), Clock()
    progress = plain(out, clock)
    clock.now = 5000.0
    progress.beat()
    progress.status(RunStatus(at=1000.0, done=40, total=40))
    progress.beat()
    assert out.getvalue() == ""


def test_plain_heartbeat_shows_hostile_names_without_their_escapes() -> None:
    out, clock = io.StringIO(), Clock()
    progress = plain(out, clock)
    unit = RunningUnit(
        "build:x", B, "\x1b]0;owned\x07\u202eevil\n12:00:00 [b] build: PASS", "local", 900.0
    )
    progress.status(RunStatus(at=1000.0, running=(unit,)))
    progress.beat()
    assert out.getvalue() == (
        "12:03:04 [\\x1b]0;owned\\x07<U+202E>evil\\x0a12:00:00 [b] build: PASS]"
        " build: running 1m40s\n"
    )


class Told(io.StringIO):
    """An output that says when something was written to it."""

    def __init__(self) -> None:
        super().__init__()
        self.written = threading.Event()

    def write(self, s: str) -> int:
        self.written.set()
        return super().write(s)


def test_the_heartbeat_thread_beats_and_stops() -> None:
    out, clock = Told(), Clock()
    progress = PlainProgress(out, clock=clock, wall=clock.wall, every=0.0, tick=0.01)
    progress.status(RunStatus(at=1000.0, running=(_running(),)))
    with progress:
        assert out.written.wait(10)  # a bound, not a sleep: it returns at the first beat
    assert not any(t.name == "heartbeat" for t in threading.enumerate())
    assert "[pre-fix] build: running 0s" in out.getvalue()


def _render(live: LiveProgress, *, terminal: bool = False) -> str:
    """What the live view prints: with a terminal's escapes for its styles, or as plain text."""
    console = Console(file=io.StringIO(), width=160, force_terminal=terminal)
    console.print(live)
    return console.file.getvalue()  # type: ignore[attr-defined,no-any-return]


def test_live_view_has_the_header_and_a_line_per_running_unit(tmp_path: Path) -> None:
    log = tmp_path / "build.log"
    log.write_text("  CC      kernel/fork.o\n  CC      kernel/bpf/memalloc.o\n")
    clock = Clock()
    live = LiveProgress(["upstream", "pre-fix", "fixed"], [Stage.BUILD, Stage.TEST], clock=clock)
    live("pre-fix", Stage.BUILD, None, f"log: {log}")
    live("upstream", Stage.TEST, None, "perf round 2")
    running = (
        _running("pre-fix", B, 880.0),
        _running("fixed", B, 990.0),
        RunningUnit("perf-round:1:2", P, "", "guest-2", 995.0),
    )
    snap = RunStatus(1000.0, running, 7, 40, PerfRound(2, 10, at_most=True), Estimate(1860, False))
    live.status(snap)
    lines = _render(live).splitlines()
    assert "units 7 of 40 · perf round 2 of at most 10 · about 31 min left" in lines[0]
    assert "[pre-fix] build 2m00s" in lines[1] and "kernel/bpf/memalloc.o" in lines[1]
    assert "[fixed] build 10s" in lines[2]
    assert "[perf-round:1:2] on guest-2 5s on upstream" in lines[3]
    assert "variant" in lines[4]  # then the variants x stages table


def test_live_view_without_a_snapshot_is_the_table_alone() -> None:
    live = LiveProgress(["upstream"], [Stage.BUILD])
    assert _render(live).splitlines()[0].split() == ["variant", "build"]


def test_live_view_shows_hostile_names_and_log_lines_without_their_escapes(tmp_path: Path) -> None:
    log = tmp_path / "build.log"
    log.write_bytes(b"  CC      kernel/fork.o\n\x1b]0;owned\x07\x1b[31mred\xe2\x80\xae\n")
    name = "\x1b]0;owned\x07\u202eevil\n[b] PASS"
    live = LiveProgress([name], [Stage.BUILD], clock=Clock())
    live(name, Stage.BUILD, None, f"log: {log}")
    live.status(RunStatus(1000.0, (_running(name, B, 990.0),), 0, 9))
    lines = _render(live).splitlines()
    assert lines[1].startswith("  [\\x1b]0;owned\\x07<U+202E>evil\\x0a[b] PASS] build 10s")
    assert lines[1].endswith(" \\x1b]0;owned\\x07\\x1b[31mred<U+202E>")
    text = _render(live, terminal=True)  # its own escapes only: styles
    assert "\\x1b]0;owned\\x07\\x1b[31mred<U+202E>" in text
    assert "\x1b]0;" not in text and "\u202e" not in text


# --- what the runner sends ----------------------------------------------------------------


class Recorder:
    """A progress that keeps what it is told."""

    def __init__(self) -> None:
        self.stages: list[tuple[str, Stage, Status | None]] = []
        self.snapshots: list[RunStatus] = []

    def __call__(self, variant: str, stage: Stage, status: Status | None, detail: str) -> None:
        self.stages.append((variant, stage, status))

    def status(self, snapshot: RunStatus) -> None:
        self.snapshots.append(snapshot)


def test_the_runner_sends_the_run_when_each_unit_starts_and_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ok = StageResult
    done = kconfig.Configured("", "c" * 64, (), (), Path("/k.log"))
    built = BuildInfo("t" * 40, "c" * 64, "/art", cached=True)
    fakes = {
        "prepare": lambda ctx: units.Prepared(Path("/repo"), "b" * 40),
        "apply": lambda ctx, v, *_: units.Applied(ok(Stage.APPLY, Status.PASS), "b", "h" * 40, ()),
        "configure": lambda *_: units.Configured(ok(Stage.KCONFIG, Status.PASS), "t" * 40, done),
        "build_kernel": lambda *_: units.Built(ok(Stage.BUILD, Status.PASS), built),
    }
    for name, fake in fakes.items():
        monkeypatch.setattr(units, name, fake)
    matrix = Matrix(
        path=tmp_path / "m.yaml",
        name="m",
        tree=Tree(TreeKind.PATH, str(tmp_path)),
        kconfig=Kconfig(),
        variants=(Variant("up"), Variant("fix")),
        report=Report(tmp_path / "reports"),
    )
    options = Options(Cache(tmp_path / "cache"), tmp_path / "run", until=Stage.BUILD)
    recorder = Recorder()
    Runner(matrix, options, recorder).run({"up": (), "fix": ()})
    snaps = recorder.snapshots
    assert len(snaps) == 2 * 7  # prepare, 2 applies, 2 configures, 2 builds: start and end each
    starts, ends = snaps[::2], snaps[1::2]
    # The serial executor: the unit that starts is the one that runs, then nothing runs.
    assert [(s.running[0].id, s.running[0].where) for s in starts][3:5] == [
        ("configure:up", "local"),
        ("build:up", "local"),
    ]
    assert all(len(s.running) == 1 for s in starts) and all(not s.running for s in ends)
    assert [s.done for s in ends] == list(range(1, 8)) and {s.total for s in snaps} == {7}
    assert starts[0].left is None  # nothing done yet to estimate from
    assert ends[-1].left == Estimate(0.0, lower_bound=False)
    assert starts[5].left is not None and not starts[5].left.lower_bound  # a build was done
    assert all(s.perf is None for s in snaps)  # no perf tests
