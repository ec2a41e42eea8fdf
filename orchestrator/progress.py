"""Progress of a run: a live view on a terminal, timestamped plain lines otherwise (CI logs).

Two feeds, which both progress classes take:

* the per-stage callback (units.Progress): (variant, stage, status or None
  when starting, detail), from the runner and from inside units;
* the run as a whole, a RunStatus snapshot the runner sends through
  `status()` when a unit starts and when one is done: what runs where and
  since when, units done of all, the perf round and an estimate of the time
  left (estimate_left, from the units done so far).

On a terminal that is a variants x stages table under a header ("units 7 of
40 · perf round 2 of 10 · about 31 min left") and one line per running
unit.  Otherwise every line starts with the UTC time, and a unit that runs
long without a line about it gets a heartbeat line every HEARTBEAT seconds,
so a CI log never sits silent through a build.

A detail can hold hostile text (a patch subject, a compiler's or a test's
last words), and so can a variant's name, so what reaches the terminal goes
through textfmt.for_terminal: one line each, bounded, with nothing in it
that a terminal would act on.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Protocol, TextIO, runtime_checkable

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from orchestrator.plan import UnitKind
from orchestrator.results import Stage, Status
from orchestrator.textfmt import for_terminal

DETAIL = 500  # characters of a detail shown on a progress line
NAME = 64  # characters of a variant's name shown
HEARTBEAT = 60.0  # seconds a running unit may go without a line in a CI log
TICK = 5.0  # how often the heartbeat thread looks; a beat comes at most this late

# The stages whose log a running unit of a kind shows the last line of, first found first.
_LOGS = {UnitKind.BUILD: (Stage.BUILD,), UnitKind.FUNCTIONAL: (Stage.TEST, Stage.BOOT)}

STYLE = {
    Status.PASS: "green",
    Status.FAIL: "bold red",
    Status.ERROR: "bold magenta",
    Status.SKIPPED: "dim",
}


# --- the run as a whole -------------------------------------------------------------------


@dataclass(frozen=True)
class RunningUnit:
    id: str
    kind: UnitKind
    variant: str  # "" for units of the whole run (the guest image, a perf round)
    where: str  # "local", or the worker or guest slot an executor placed it on
    started: float  # time.monotonic() when it started


@dataclass(frozen=True)
class PerfRound:
    round: int  # 0 is the discarded warm-up
    of: int  # the rounds planned: the most there can be when at_most (rounds may stop early)
    at_most: bool = False
    batch: int = 1  # a rerun of the rounds (the A/A control asked) is batch 2, 3...


@dataclass(frozen=True)
class Estimate:
    seconds: float  # of work left, as the executor runs it
    lower_bound: bool  # some kind left has no unit done yet, so its time is not counted
    # A sequential perf plan may add rounds up to its most: counted, so the
    # estimate is what is left if it goes that far ("up to about")
    up_to: bool = False


@dataclass(frozen=True)
class RunStatus:
    """What the runner tells progress of the whole run, at `at` (time.monotonic())."""

    at: float
    running: tuple[RunningUnit, ...] = ()
    done: int = 0
    total: int = 0
    perf: PerfRound | None = None
    left: Estimate | None = None


@runtime_checkable
class StatusSink(Protocol):
    """A progress that shows the run as a whole, not only stage changes."""

    def status(self, snapshot: RunStatus) -> None: ...


def estimate_left(
    finished: Iterable[tuple[UnitKind, float]],
    pending: Iterable[tuple[UnitKind, float]],
    capacity: int,
) -> Estimate | None:
    """Seconds of work left: the mean time of the finished units of each kind,
    for every pending unit of that kind, less what a running one has already
    spent, spread over the units the executor runs at once.

    `finished` are (kind, seconds it took); `pending` (kind, seconds spent
    so far: 0 until it starts).  A pending kind with none finished is not
    counted, and the estimate says it is a lower bound; with no pending kind
    known at all there is no estimate.  Rough on purpose: units that must
    wait for each other do not spread over the capacity.
    """
    times: dict[UnitKind, list[float]] = {}
    for kind, seconds in finished:
        times.setdefault(kind, []).append(seconds)
    mean = {kind: sum(s) / len(s) for kind, s in times.items()}
    total, known, unknown = 0.0, False, False
    for kind, spent in pending:
        if kind in mean:
            total += max(mean[kind] - spent, 0.0)
            known = True
        else:
            unknown = True
    if unknown and not known:
        return None
    return Estimate(total / max(capacity, 1), lower_bound=unknown)


def elapsed(seconds: float) -> str:
    """45s, 2m00s, 1h02m: how long something has run."""
    s = max(int(seconds), 0)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def overall(snapshot: RunStatus, now: float) -> str:
    """units 7 of 40 · perf round 2 of 10 · about 31 min left"""
    parts = [f"units {snapshot.done} of {snapshot.total}"] if snapshot.total else []
    perf = snapshot.perf
    if perf is not None:
        most = "at most " if perf.at_most else ""
        if perf.round == 0:
            text = f"perf warm-up, then {most}{perf.of} rounds"
        else:
            text = f"perf round {perf.round} of {most}{perf.of}"
        parts.append(text + (f" (batch {perf.batch})" if perf.batch > 1 else ""))
    if snapshot.left is not None and snapshot.done < snapshot.total:
        # The estimate was made when the snapshot was; the run has gone on since.
        left = snapshot.left.seconds - max(now - snapshot.at, 0.0)
        minutes = max(math.ceil(left / 60), 1)
        how = (
            "at least"
            if snapshot.left.lower_bound
            else "up to about"
            if snapshot.left.up_to
            else "about"
        )
        parts.append(f"{how} {minutes} min left")
    return " · ".join(parts)


def _label(unit: RunningUnit) -> str:
    """[pre-fix] build, or [perf-round:1:3] for a unit of the whole run."""
    name = for_terminal(unit.variant or unit.id, one_line=True, limit=NAME)
    where = (
        ""
        if unit.where == "local"
        else f" on {for_terminal(unit.where, one_line=True, limit=NAME)}"
    )
    return f"[{name}] {unit.kind.value}{where}" if unit.variant else f"[{name}]{where}"


# --- plain lines (CI logs) ----------------------------------------------------------------


def _utc() -> datetime:
    return datetime.now(UTC)


class PlainProgress:
    """One line per stage change and per heartbeat, each prefixed with the UTC time.

    The heartbeat runs on a thread between start() and close() (or as a
    context manager); beat() is what it calls, so tests drive it with an
    injected clock instead of waiting.  One lock around every write: lines
    from the runner, from units in executor threads and from the heartbeat
    never interleave.
    """

    def __init__(
        self,
        out: TextIO = sys.stdout,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = _utc,
        every: float = HEARTBEAT,
        tick: float = TICK,
    ) -> None:
        self.out = out
        self.clock = clock
        self.wall = wall
        self.every = every
        self.tick = tick
        self._lock = threading.RLock()
        self._snapshot: RunStatus | None = None
        self._said: dict[str, float] = {}  # running unit id -> when a line last spoke of it
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __call__(self, variant: str, stage: Stage, status: Status | None, detail: str) -> None:
        state = "..." if status is None else status.value.upper()
        suffix = f" - {detail}" if detail else ""
        with self._lock:
            self._print(f"[{variant}] {stage.value}: {state}{suffix}")
            now = self.clock()
            for unit in self._running():
                if unit.variant == variant:
                    self._said[unit.id] = now

    def status(self, snapshot: RunStatus) -> None:
        with self._lock:
            self._snapshot = snapshot
            self._said = {u.id: self._said.get(u.id, u.started) for u in snapshot.running}

    def beat(self) -> None:
        """A line for each running unit nothing was said of for `every` seconds."""
        with self._lock:
            snapshot, now = self._snapshot, self.clock()
            if snapshot is None:
                return
            for unit in snapshot.running:
                if now - self._said[unit.id] >= self.every:
                    self._said[unit.id] = now
                    line = f"{_label(unit)}: running {elapsed(now - unit.started)}"
                    more = overall(snapshot, now)
                    self._print(f"{line} · {more}" if more else line)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._beating, name="heartbeat", daemon=True)
            self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> PlainProgress:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _beating(self) -> None:
        while not self._stop.wait(self.tick):
            self.beat()

    def _running(self) -> tuple[RunningUnit, ...]:
        return self._snapshot.running if self._snapshot is not None else ()

    def _print(self, line: str) -> None:
        shown = for_terminal(line, one_line=True, limit=DETAIL)
        print(f"{self.wall():%H:%M:%S} {shown}", file=self.out, flush=True)


# --- the live view (a terminal) -----------------------------------------------------------


class LiveProgress:
    """Redrawn a few times a second: the run's header, a line per running unit
    (a running build shows make's last line), then the variants x stages table."""

    def __init__(
        self,
        variants: Sequence[str],
        stages: Sequence[Stage],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.variants = list(variants)
        self.stages = list(stages)
        self.clock = clock
        self.cells: dict[tuple[str, Stage], tuple[Status | None, str, float]] = {}
        self.log: dict[tuple[str, Stage], Path] = {}
        self.snapshot: RunStatus | None = None  # replaced whole: the redraw thread reads it
        self.testing = ""  # the guest a test started on last: what a perf round is at

    def __call__(self, variant: str, stage: Stage, status: Status | None, detail: str) -> None:
        started = self.cells.get((variant, stage), (None, "", self.clock()))[2]
        if status is None:
            started = self.clock()
            if detail.startswith("log: "):
                self.log[(variant, stage)] = Path(detail[5:])
            if stage is Stage.TEST:
                self.testing = variant
        self.cells[(variant, stage)] = (status, detail, started)

    def status(self, snapshot: RunStatus) -> None:
        self.snapshot = snapshot

    def __rich__(self) -> Group:
        snapshot, now = self.snapshot, self.clock()
        if snapshot is None:
            return Group(self._table())
        head = Text(overall(snapshot, now), style="bold")
        return Group(head, *(self._line(u, now) for u in snapshot.running), self._table())

    def _line(self, unit: RunningUnit, now: float) -> Text:
        line = Text("  " + _label(unit))  # Text: no markup
        line.append(f" {elapsed(now - unit.started)}", style="yellow")
        if not unit.variant and self.testing:
            line.append(f" on {for_terminal(self.testing, one_line=True, limit=NAME)}")
        logs = (self.log.get((unit.variant, s)) for s in _LOGS.get(unit.kind, ()))
        log = next((p for p in logs if p is not None), None)
        if log is not None:
            line.append(" " + for_terminal(_last_line(log)[-80:], one_line=True), style="dim")
        return line

    def _table(self) -> Table:
        table = Table(box=None, pad_edge=False)
        table.add_column("variant", style="bold")
        for stage in self.stages:
            table.add_column(stage.value)
        for variant in self.variants:
            name = Text(for_terminal(variant, one_line=True, limit=NAME))
            table.add_row(name, *(self._cell(variant, s) for s in self.stages))
        return table

    def _cell(self, variant: str, stage: Stage) -> Text:
        if (variant, stage) not in self.cells:
            return Text("")
        status, _detail, started = self.cells[(variant, stage)]
        if status is not None:
            return Text(status.value.upper(), style=STYLE[status])
        running = Text(f"{self.clock() - started:4.0f}s", style="yellow")
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
    """The progress of a run, for as long as the run: the heartbeat thread or
    the live view's redraw stops when the block ends, however it ends."""
    if not out.isatty():
        with PlainProgress(out) as plain:
            yield plain
        return
    live = LiveProgress(variants, stages)
    with Live(live, console=Console(file=out), refresh_per_second=4):
        yield live
