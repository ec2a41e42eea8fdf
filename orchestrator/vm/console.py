"""The guest's serial console: find kernel splats and the test that was running.

:func:`scan` is a pure parser over a whole console log; :class:`ConsoleWatcher`
is fed the console as it arrives (by :class:`ConsoleCapture`, or by following
a file) and hands out each splat once, as soon as its report is complete.
Both run the same line-by-line state machine, so a watched console gives
exactly the splats a later scan would.

A *report* starts at a head line (``Kernel panic - not syncing: ...``,
``BUG: soft lockup ...``, ...) and gets the first call trace printed after
it.  It ends at its trace's end, at the next head line, at a test marker, at
``---[ end trace ... ]---`` or after :data:`REPORT_WINDOW` lines without a
trace.  One report is one :class:`~orchestrator.results.Splat`, except that
lines the kernel prints as parts of the same report are folded into it:

* ``BUG: kernel NULL pointer dereference`` / ``BUG: unable to handle page
  fault`` and ``kernel BUG at f.c:1!`` are followed by their ``Oops: ... [#1]``
  / ``invalid opcode: ... [#1]`` line: one splat, titled by the first line;
* ``sysrq: Trigger a crash`` is followed by the panic it causes: one panic
  splat, titled by the panic line (or by the sysrq line when the console lost
  the panic).

An oops that ends in ``Kernel panic - not syncing: Fatal exception`` is two
reports, an oops and a panic: that is what the kernel printed.

Attribution: the host writes ``orchestrate: begin test NAME`` and
``orchestrate: end test NAME`` to the guest's /dev/kmsg around each test
(boot the guest with ``printk.devkmsg=on``, or the kernel rate-limits those
writes).  A splat belongs to the test whose begin marker came last before it,
unless that test's end marker came in between.

Bounds: a broken or hostile guest may print without end, so everything here
is bounded, whatever the guest writes.

* On disk (:class:`CappedLog`): a console log keeps its first
  :data:`CONSOLE_HEAD` and last :data:`CONSOLE_TAIL` bytes, and says in the
  file what it dropped between them (``[orchestrate: N bytes dropped
  here]``).  QEMU writes the console into a FIFO that :class:`ConsoleCapture`
  reads, so no file QEMU writes can grow.
* In memory: a console line is scanned as its last :data:`MAX_LINE`
  characters (printk's records are shorter), the watcher keeps
  :data:`TAIL_LINES` lines for :meth:`ConsoleWatcher.tail`, and a marker is
  looked for in new text only, so each byte costs the same however long the
  line it is in.
* Splats (:class:`SplatTally`): identical reports (kind, title, trace and
  test) are one splat with a :attr:`~orchestrator.results.Splat.count`; a
  test keeps its first :data:`SPLATS_PER_TEST` distinct splats and the first
  of each kind, and the rest of each kind are counted in one summary splat
  (title ``orchestrate: further <kind> reports, not kept ...``).
"""

from __future__ import annotations

import codecs
import collections
import dataclasses
import fcntl
import os
import re
import select
import sys
import termios
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from orchestrator.results import Splat, SplatKind

TRACE_LIMIT = 64  # trace lines kept per splat; the rest of the block is skipped
# Characters kept of a title or a trace line (a printk record is < 1024 bytes).
FIELD_LIMIT = 512
# A console line is scanned as its last MAX_LINE characters: enough for any
# printk record, also one that continues a partial line userspace left.
MAX_LINE = 4096
TAIL_LINES = 200  # console lines kept for tail()
# Splats: a test keeps its first SPLATS_PER_TEST distinct ones (and the first
# of each kind); a console keeps at most SPLATS_TOTAL distinct ones in all.
SPLATS_PER_TEST = 20
SPLATS_TOTAL = 200
# The console log on disk: its first and last bytes, compacted every
# CONSOLE_SLACK bytes (so it never exceeds head + tail + slack while written).
# A whole boot with its tests prints ~100 KiB; the panic is at the end.
MiB = 1024 * 1024
CONSOLE_HEAD = 2 * MiB
CONSOLE_TAIL = 6 * MiB
CONSOLE_SLACK = 4 * MiB
# An oops prints ~20 lines (page-fault details, registers) before its trace,
# a lockdep report can print a hundred (the dependency chain).  A report with
# no trace after this many lines is complete, so the watcher does not hold it.
REPORT_WINDOW = 150
# The "Oops: ... [#1]" line that follows a page-fault BUG line comes within
# a handful of lines (#PF details, page table walk).
_DIE_WINDOW = 12

# printk's "[%5lu.%06lu] " prefix, with the optional caller id of
# CONFIG_PRINTK_CALLER.  Searched anywhere in the line: userspace writes to
# the console can leave a partial line that the next printk record continues.
_TIMESTAMP = re.compile(r"\[\s*(\d+\.\d{6})\](?:\[\s*[CT]\d+\])? ?")
_ANSI = re.compile(r"\x1b(?:\[[0-9;?=]*[A-Za-z]|[()][A-Z0-9]|[A-Za-z=<>])")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # incl. \r; keeps \t
_MARKER = re.compile(r"^orchestrate: (begin|end) test (\S.*)$")

# One frame: "func+0x1a/0x30", "? func+0x..", "func+0x.. [module]", a bare
# "? 0xffffffffc0201000" (a BPF program without symbols), or a symbolised
# "__dump_stack lib/dump_stack.c:88 [inline]".
_FRAME = re.compile(
    r"^(?:\? )?(?:\S+\+0x[0-9a-f]+/0x[0-9a-f]+\b.*|0x[0-9a-f]+|\S+ \S+:\d+ \[inline\])$"
)
_CONTEXT = re.compile(r"^</?(?:IRQ|TASK|NMI|SOFTIRQ|EOE|#[A-Z]{2})>$")
# Registers of an exception frame printed in the middle of a trace (an IRQ
# that interrupted the task, the user-space frame before </TASK>): they are
# not frames, but the trace goes on after them.
_REGISTERS = re.compile(
    r"^(?:RIP|EIP|Code|RSP|ESP|RAX|EAX|RDX|EDX|RBP|EBP|R\d\d|FS|GS|CS|DS|ES|SS|CR\d|DR\d|PKRU):"
)
_CALL_TRACE = re.compile(r"^Call [Tt]race:$")
_END = re.compile(r"^---\[ end (?:trace|Kernel panic)\b")
_LOCKDEP = (
    "possible circular locking dependency detected",
    "possible recursive locking detected",
    "inconsistent lock state",
    "suspicious RCU usage",
    "bad unlock balance detected!",
    "held lock freed!",
    "lock held when returning to user space!",
    "possible irq lock inversion dependency detected",
)


@dataclass(frozen=True)
class _Pattern:
    kind: SplatKind
    regex: re.Pattern[str]
    # Text that every line the regex matches contains: a console line with
    # none of the patterns' keys is no head line, and is skipped at C speed.
    keys: tuple[str, ...]
    die: bool = False  # an "Oops: ... [#N]" line, which may belong to the open report
    absorbs_die: bool = False  # this head is followed by its own "Oops" line
    awaits_panic: bool = False  # this head announces a panic
    bare_trace: bool = False  # the report's frames come without a "Call Trace:" line
    one_line: bool = False  # the report is its head line alone


def _p(kind: SplatKind, regex: str, *keys: str, **flags: bool) -> _Pattern:
    return _Pattern(kind, re.compile(regex), keys, **flags)


# First match wins: the specific patterns come before the generic "BUG:" one
# (the soft lockup line reads "watchdog: BUG: soft lockup ...").  Anchored
# with "^" where the kernel prints the phrase first, so that look-alikes do
# not match ("RETBleed: WARNING: ...", "traps: a.out[9] general protection
# fault ip:...", "---[ end Kernel panic - ...").
_PATTERNS = (
    # A panic line is a panic whatever it says next ("Kernel panic - not
    # syncing: Watchdog detected hard LOCKUP on cpu 1" ends the guest: CRASH).
    _p(SplatKind.PANIC, r"^Kernel panic - not syncing: ", "Kernel panic - not syncing: "),
    _p(SplatKind.SOFT_LOCKUP, r"\bBUG: soft lockup\b", "BUG: soft lockup"),
    _p(
        SplatKind.HARD_LOCKUP,
        r"^(?:[\w ]+: )?Watchdog detected hard LOCKUP\b",
        "Watchdog detected hard LOCKUP",
    ),
    _p(
        SplatKind.RCU_STALL,
        r"\bINFO: rcu_\w+ (?:self-)?detected (?:expedited )?stalls?\b",
        "INFO: rcu_",
    ),
    _p(SplatKind.HUNG_TASK, r"^INFO: task \S.* blocked for more than \d+ seconds", "INFO: task "),
    _p(SplatKind.KASAN, r"^BUG: KASAN: ", "BUG: KASAN: "),
    _p(SplatKind.KFENCE, r"^BUG: KFENCE: ", "BUG: KFENCE: ", bare_trace=True),
    _p(SplatKind.KCSAN, r"^BUG: KCSAN: ", "BUG: KCSAN: ", bare_trace=True),
    _p(SplatKind.UBSAN, r"^UBSAN: ", "UBSAN: "),
    # The OOM report starts here and carries the allocating task's trace.
    _p(SplatKind.OOM, r"^\S+ invoked oom-killer: ", " invoked oom-killer: "),
    # kmemleak's scan prints one line; the leaks' traces are in debugfs.
    _p(
        SplatKind.KMEMLEAK,
        r"^kmemleak: \d+ new suspected memory leaks?\b",
        "kmemleak: ",
        one_line=True,
    ),
    _p(
        SplatKind.PANIC,
        r"^sysrq: (?:SysRq : )?Trigger a crash\b",
        "Trigger a crash",
        awaits_panic=True,
    ),
    _p(SplatKind.GPF, r"^general protection fault\b", "general protection fault"),
    _p(
        SplatKind.OOPS,
        r"^BUG: (?:kernel NULL pointer dereference|unable to handle )",
        "BUG: ",
        absorbs_die=True,
    ),
    _p(
        SplatKind.OOPS,
        r"^(?:Internal error: )?Oops\b|^invalid opcode: [0-9a-f]+ \[#\d+\]",
        "Oops",
        "invalid opcode: ",
        die=True,
    ),
    _p(SplatKind.BUG, r"^kernel BUG at \S+:\d+!", "kernel BUG at ", absorbs_die=True),
    _p(SplatKind.BUG, r"^(?:[\w/.-]+: )?BUG: ", "BUG: "),
    _p(SplatKind.WARNING, r"^WARNING: CPU: \d+ PID: \d+ at ", "WARNING: "),
    _p(
        SplatKind.WARNING,
        r"^WARNING: (?:" + "|".join(re.escape(s) for s in _LOCKDEP) + ")",
        "WARNING: ",
    ),
)
_MARKER_KEY = "orchestrate: "


def _minimal(keys: Iterable[str]) -> tuple[str, ...]:
    """The keys without those that contain another key (which finds their lines too)."""
    unique = set(keys)
    return tuple(sorted(k for k in unique if not any(o != k and o in k for o in unique)))


_HEAD_KEYS = _minimal(k for p in _PATTERNS for k in p.keys)
# What the scanner can act on when no report is open: a head or a test marker.
_KEYS = _minimal((*_HEAD_KEYS, _MARKER_KEY))


def scan(text: str) -> list[Splat]:
    """Every splat in a console log, in the order the kernel printed them
    (identical ones counted, as :class:`SplatTally` keeps them)."""
    tally = SplatTally()
    scanner = _Scanner(tally.add)
    scanner.feed_block(clean(text))
    scanner.finish()
    return tally.splats()


def clean(line: str) -> str:
    """A console line without carriage returns, escape sequences or control bytes."""
    return _CONTROL.sub("", _ANSI.sub("", line))


def _split(line: str) -> tuple[float | None, str]:
    """(printk timestamp or None, the message with surrounding blanks removed)."""
    found = _TIMESTAMP.search(line)
    if found is None:
        return None, line.strip()
    return float(found.group(1)), line[found.end() :].strip()


def _head(message: str) -> _Pattern | None:
    if not any(key in message for key in _HEAD_KEYS):
        return None  # the ordinary line
    return next(
        (p for p in _PATTERNS if any(k in message for k in p.keys) and p.regex.search(message)),
        None,
    )


def _next_key(block: str, pos: int, found: dict[str, int]) -> int:
    """Where the first of _KEYS at or after pos is in block, or -1."""
    first = -1
    for key in _KEYS:
        at = found.get(key, -2)
        if at != -1 and at < pos:
            at = found[key] = block.find(key, pos)
        if at >= 0 and (first < 0 or at < first):
            first = at
    return first


@dataclass
class _Report:
    """The report being read: mutable scanner state, frozen into a Splat when done."""

    pattern: _Pattern
    title: str
    timestamp: float | None
    test: str | None
    trace: list[str] = field(default_factory=list)
    in_trace: bool = False
    lines: int = 0  # lines read since the head
    died: bool = False  # its "Oops: ... [#N]" line has been folded in


class _Scanner:
    """The line-by-line state machine behind scan() and ConsoleWatcher.

    It is fed cleaned lines (:func:`clean`) and hands each finished report
    to ``emit``; it keeps only the report being read.
    """

    def __init__(self, emit: Callable[[Splat], object]) -> None:
        self._emit = emit
        self._test: str | None = None
        self._report: _Report | None = None

    def feed_block(self, block: str) -> None:
        """Feed cleaned lines, "\n"-separated (the last one needs no "\n").

        While no report is open, only a line with one of the patterns' keys
        (or a marker's) can change anything: the lines between are skipped
        with str.find.  Each line is taken as its last MAX_LINE characters.
        """
        found: dict[str, int] = {}  # key -> where it occurs next in block, -1: nowhere
        pos, end = 0, len(block)
        while pos <= end:
            if self._report is None:
                at = _next_key(block, pos, found)
                if at < 0:
                    return
                pos = max(pos, block.rfind("\n", 0, at) + 1)
            stop = block.find("\n", pos)
            stop = end if stop < 0 else stop
            self.feed(block[max(pos, stop - MAX_LINE) : stop])
            pos = stop + 1

    def feed(self, line: str) -> None:
        """Feed one cleaned line."""
        timestamp, message = _split(line)
        report = self._report
        if report is not None and report.in_trace and self._trace_line(report, message):
            return
        marker = _MARKER.match(message)
        if marker is not None:
            self._close()
            self._mark(marker.group(1), marker.group(2).strip()[:FIELD_LIMIT])
            return
        pattern = _head(message)
        if pattern is not None:
            self._start(pattern, message[:FIELD_LIMIT], timestamp)
        elif report is not None and self._report is report:
            self._body_line(report, message)

    def finish(self) -> None:
        """The log ended: the open report is as complete as it will get."""
        self._close()

    def _trace_line(self, report: _Report, message: str) -> bool:
        """Add a line to the trace being read; False when the trace has ended."""
        if _FRAME.match(message) or _CONTEXT.match(message):
            if len(report.trace) < TRACE_LIMIT:
                report.trace.append(message[:FIELD_LIMIT])
            # On x86 the task's stack is always the outermost part of a
            # trace: its end is the trace's end, no need to wait for a line.
            if message == "</TASK>":
                self._close()
            return True
        if _REGISTERS.match(message):
            return True
        self._close()
        return False

    def _body_line(self, report: _Report, message: str) -> None:
        report.lines += 1
        starts_bare = report.pattern.bare_trace and _FRAME.match(message)
        if _CALL_TRACE.match(message) or starts_bare:
            report.in_trace = True
            if starts_bare:
                report.trace.append(message[:FIELD_LIMIT])
        elif _END.match(message) or report.lines > REPORT_WINDOW:
            self._close()

    def _start(self, pattern: _Pattern, message: str, timestamp: float | None) -> None:
        report = self._report
        if report is not None:
            report.lines += 1
            folds_die = report.pattern.absorbs_die and not report.died
            if pattern.die and folds_die and report.lines <= _DIE_WINDOW:
                report.died = True
                return
            if pattern.kind is SplatKind.PANIC and report.pattern.awaits_panic:
                # The panic that sysrq announced: its line says more.
                report.pattern, report.title, report.timestamp = pattern, message, timestamp
                return
        self._close()
        self._report = _Report(pattern, message, timestamp, self._test)
        if pattern.one_line:
            self._close()

    def _close(self) -> None:
        report, self._report = self._report, None
        if report is not None:
            splat = Splat(
                kind=report.pattern.kind,
                title=report.title,
                timestamp=report.timestamp,
                trace=tuple(report.trace),
                test=report.test,
            )
            self._emit(splat)

    def _mark(self, what: str, name: str) -> None:
        if what == "begin":
            self._test = name
        elif name == self._test:
            self._test = None


# --- counting splats ------------------------------------------------------------

_SUMMARY = re.compile(r"^orchestrate: further (\S+) reports, not kept\b")


def summary_title(kind: SplatKind, limit: int = SPLATS_PER_TEST) -> str:
    """The title of the splat that counts a kind's reports a test did not keep."""
    return (
        f"orchestrate: further {kind} reports, not kept "
        f"(a test keeps its first {limit} distinct splats and the first of each kind)"
    )


def is_summary(splat: Splat) -> bool:
    """Whether splat counts reports that were not kept (see summary_title)."""
    return not splat.trace and _SUMMARY.match(splat.title) is not None


class SplatTally:
    """Splats as reports keep them: identical ones counted, a bounded number kept.

    Identical means the same kind, title, trace and test: the first one's
    timestamp stays, its count grows.  A test (``by_test``; else all splats
    added are one group) keeps its first ``per_test`` distinct splats and the
    first of each kind, at most ``total`` in all; every other splat is
    counted in one summary splat per test and kind (:func:`summary_title`),
    or, once ``total`` summaries exist too, per kind.  Order: first seen.
    """

    def __init__(
        self, per_test: int = SPLATS_PER_TEST, total: int = SPLATS_TOTAL, *, by_test: bool = True
    ) -> None:
        self.per_test = per_test
        self.total = total
        self.by_test = by_test
        self._entries: dict[tuple[object, ...], Splat] = {}
        self._counts: dict[tuple[object, ...], int] = {}
        self._kept: dict[str | None, int] = {}  # distinct splats kept per group
        self._kinds: set[tuple[str | None, SplatKind]] = set()
        self._summaries = 0

    def add(self, splat: Splat) -> bool:
        """Count splat in; whether it became an entry of its own (not a repeat)."""
        summary = is_summary(splat)
        key: tuple[object, ...] = (
            ("summary", splat.kind, splat.test)
            if summary
            else (splat.kind, splat.title, splat.trace, splat.test)
        )
        if self._bump(key, splat.count):
            return False
        group = splat.test if self.by_test else None
        kept = self._kept.get(group, 0)
        first_of_kind = (group, splat.kind) not in self._kinds
        fits = kept < self.per_test or first_of_kind
        if not summary and fits and len(self._entries) - self._summaries < self.total:
            self._entries[key], self._counts[key] = splat, splat.count
            self._kept[group] = kept + 1
            self._kinds.add((group, splat.kind))
            return True
        return self._summarise(splat)

    def _bump(self, key: tuple[object, ...], count: int) -> bool:
        if key not in self._counts:
            return False
        self._counts[key] += count
        return True

    def _summarise(self, splat: Splat) -> bool:
        key = ("summary", splat.kind, splat.test)
        if self._bump(key, splat.count):
            return False
        if self._summaries >= self.total:
            key = ("summary", splat.kind, None)
            if self._bump(key, splat.count):
                return False
        title = summary_title(splat.kind, self.per_test)
        test = splat.test if key[2] is not None else None
        self._entries[key] = Splat(splat.kind, title, splat.timestamp, (), test)
        self._counts[key] = splat.count
        self._summaries += 1
        return True

    def splats(self) -> list[Splat]:
        return [
            s if s.count == self._counts[k] else dataclasses.replace(s, count=self._counts[k])
            for k, s in self._entries.items()
        ]

    def __len__(self) -> int:
        return len(self._entries)


def merge(splats: Iterable[Splat], limit: int = SPLATS_PER_TEST) -> tuple[Splat, ...]:
    """One test's splats, identical ones counted, at most `limit` distinct ones
    (and the first of each kind) plus a summary per kind of the rest."""
    tally = SplatTally(per_test=limit, total=limit + len(SplatKind), by_test=False)
    for splat in splats:
        tally.add(splat)
    return tuple(tally.splats())


# --- following the console ------------------------------------------------------

_MARKER_WINDOW = 512  # characters of an unfinished line kept to find a marker split across reads
_WANTED = 32  # markers looked for at once (older ones are searched again when asked)
_FOUND = 256  # markers remembered as seen


class ConsoleWatcher:
    """The console as it arrives: splats, markers and the last lines.

    Bytes come in through :meth:`feed` (from :class:`ConsoleCapture`'s
    thread: every method is thread-safe), or, with a ``path``, every method
    first reads what was appended to that file since the last call; if the
    file shrinks (a new QEMU truncated it), reading starts again from its
    start.  A splat is handed out by :meth:`poll` once, when its report is
    complete; a report still being printed stays back until its trace has
    ended (or :meth:`flush` says the console will not grow any more).
    ``settle``, when given, is called first thing in flush(): the feeder's
    chance to hand over what is still on its way (Machine.settle).

    Memory is bounded whatever the guest prints: see the module's "Bounds".
    """

    def __init__(
        self, path: Path | None = None, *, settle: Callable[[], object] | None = None
    ) -> None:
        self.path = path
        self._settle = settle
        self._lock = threading.RLock()
        self._offset = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        # The line still being written: pieces, their length, and its last
        # characters (to find a marker that arrives in parts).
        self._partial: list[str] = []
        self._partial_len = 0
        self._partial_end = ""
        self._recent: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self._tally = SplatTally()
        self._scanner = _Scanner(self._tally.add)
        self._returned = 0  # how many of the tally's splats poll() has handed out
        self._wanted: dict[str, None] = {}  # markers asked for and not seen yet
        self._found: dict[str, None] = {}  # markers seen
        self.received = 0  # bytes fed in

    def feed(self, data: bytes) -> None:
        """The next bytes of the console."""
        with self._lock:
            self.received += len(data)
            self._text(self._decoder.decode(data))

    def poll(self) -> list[Splat]:
        """The distinct splats completed since the last poll() or flush()."""
        with self._lock:
            self._read()
            return self._take()

    def flush(self) -> list[Splat]:
        """Like poll(), after taking the unterminated last line and the open report as final."""
        if self._settle is not None:
            self._settle()  # not under the lock: the feeder needs it
        with self._lock:
            self._read()
            self._text(self._decoder.decode(b"", final=True))
            if self._partial:
                self._block(self._take_partial())
            self._scanner.finish()
            return self._take()

    def all(self) -> list[Splat]:
        """Every completed splat so far (counted: see SplatTally), whether or not
        poll() returned it."""
        with self._lock:
            self._read()
            return self._tally.splats()

    def tail(self, n_lines: int = 50) -> str:
        """The last lines of the console (escape sequences removed), for boot failures."""
        with self._lock:
            self._read()
            if n_lines <= 0:
                return ""
            lines = list(self._recent)[-n_lines:]
            if self._partial:
                lines = [*lines, clean("".join(self._partial))][-n_lines:]
            return "\n".join(lines)

    def seen(self, marker: str) -> bool:
        """Whether a console line containing marker has appeared (e.g. ORCHESTRATE-READY).

        The first call looks through the lines tail() keeps; from then on
        each line is checked as it arrives, so a call costs nothing however
        much the guest prints.  Once seen, always seen.
        """
        with self._lock:
            self._read()
            if marker in self._found:
                return True
            if marker not in self._wanted:
                partial = clean("".join(self._partial))
                if marker in partial or any(marker in line for line in self._recent):
                    self._see(marker)
                    return True
                self._wanted[marker] = None
                if len(self._wanted) > _WANTED:
                    del self._wanted[next(iter(self._wanted))]
            return False

    def _see(self, marker: str) -> None:
        self._wanted.pop(marker, None)
        self._found[marker] = None
        if len(self._found) > _FOUND:
            del self._found[next(iter(self._found))]

    def _take(self) -> list[Splat]:
        splats = self._tally.splats()
        new = splats[self._returned :]
        self._returned = len(splats)
        return new

    def _read(self) -> None:
        if self.path is None:
            return
        try:
            with self.path.open("rb") as f:
                if os.fstat(f.fileno()).st_size < self._offset:
                    self._restart()
                f.seek(self._offset)
                while data := f.read(1 << 20):
                    self._offset += len(data)
                    self.feed(data)
        except FileNotFoundError:
            return

    def _restart(self) -> None:
        # Splats already found stay found; the new file is read as a new console.
        self._offset = 0
        self._partial, self._partial_len, self._partial_end = [], 0, ""
        self._decoder.reset()
        self._scanner.finish()

    def _text(self, text: str) -> None:
        cut = text.rfind("\n")
        if cut >= 0:
            self._partial.append(text[:cut])
            self._block(self._take_partial())
        self._grow_partial(text[cut + 1 :])

    def _grow_partial(self, text: str) -> None:
        if not text:
            return
        self._partial.append(text)
        self._partial_len += len(text)
        if self._partial_len > 2 * MAX_LINE:  # keep the line's end only
            kept = "".join(self._partial)[-MAX_LINE:]
            self._partial, self._partial_len = [kept], len(kept)
        if self._wanted:
            # Only the new text, and the end of what came before it.
            window = clean(self._partial_end + text)
            for marker in [m for m in self._wanted if m in window]:
                self._see(marker)
        self._partial_end = (self._partial_end + text[-_MARKER_WINDOW:])[-_MARKER_WINDOW:]

    def _take_partial(self) -> str:
        line = "".join(self._partial)
        self._partial, self._partial_len, self._partial_end = [], 0, ""
        return line

    def _block(self, text: str) -> None:
        """Complete lines ("\n"-separated, the last one without its "\n")."""
        block = clean(text)
        for marker in [m for m in self._wanted if m in block]:
            self._see(marker)
        # The last TAIL_LINES lines, for tail() and a marker's first search.
        start = len(block)
        for _ in range(TAIL_LINES):
            start = block.rfind("\n", 0, start)
            if start < 0:
                break
        self._recent.extend(line[-MAX_LINE:] for line in block[start + 1 :].split("\n"))
        self._scanner.feed_block(block)


# --- capped logs ----------------------------------------------------------------

_ALIGN = 4096  # how far a cut looks for a line boundary
_MARKER_ROOM = 64  # bytes the "dropped" line may take
_COPY_CHUNK = 1 << 20


def dropped_line(n_bytes: int) -> bytes:
    """The line a capped log has where it dropped bytes."""
    return b"[orchestrate: %d bytes dropped here]\n" % n_bytes


class CappedLog:
    """A log that keeps its first `head` and its last `tail` bytes, on disk.

    Written like a file (write, flush, close) into a seekable, readable
    binary stream (a file opened "w+b", or a BytesIO).  Everything goes to
    the stream as it comes, so the file is current while it is written; once
    the bytes after the head exceed ``tail + slack``, they are compacted: the
    last `tail` bytes (starting at a line, when one starts near the cut) are
    moved up behind the head, and a line ``[orchestrate: N bytes dropped
    here]`` says how much went between them.  So the stream never holds more
    than head + tail + slack (+ that line), each byte is moved at most
    tail/slack times, and memory stays one copy buffer.  ``finish()`` (and
    close()) compacts to head + tail.
    """

    def __init__(self, stream: BinaryIO, *, head: int, tail: int, slack: int | None = None) -> None:
        self.stream = stream
        self.head = head
        self.tail = tail
        self.slack = max(_MARKER_ROOM, tail // 2 if slack is None else slack)
        self.written = 0  # bytes written to the log
        self.dropped = 0  # bytes of those that are not in the stream any more
        self._size = 0  # the stream's length
        self._head_len: int | None = None  # once the head is full: its length
        self._marker_len = 0
        self._closed = False

    @classmethod
    def open(cls, path: Path, *, head: int, tail: int, slack: int | None = None) -> CappedLog:
        """A new (truncated) log file at path."""
        return cls(open(path, "w+b"), head=head, tail=tail, slack=slack)

    def __enter__(self) -> CappedLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write(self, data: bytes) -> int:
        n = len(data)
        self.written += n
        if self._head_len is None:
            room = self.head - self._size
            self.stream.write(data[:room])
            self._size += min(n, room)
            if self._size < self.head:
                return n
            self._head_len = self._size
            data = data[room:]
        if data:
            self.stream.write(data)
            self._size += len(data)
            if self._body() > self.tail + self.slack:
                self._compact()
        return n

    def flush(self) -> None:
        self.stream.flush()

    def finish(self) -> None:
        """Compact to the head and the tail (the log may still grow after)."""
        if self._head_len is not None and self._body() > self.tail + _MARKER_ROOM:
            self._compact()
        self.stream.flush()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                self.finish()
            finally:
                self.stream.close()

    def _body(self) -> int:
        """Bytes after the head and the dropped line."""
        assert self._head_len is not None
        return self._size - self._head_len - self._marker_len

    def _compact(self) -> None:
        assert self._head_len is not None
        stream = self.stream
        body_start = self._head_len + self._marker_len
        keep_from = self._size - self.tail
        # The tail starts at a line when one starts soon after the cut.
        stream.seek(keep_from)
        newline = stream.read(min(_ALIGN, self.tail)).find(b"\n")
        if 0 <= newline < self.tail - 1:
            keep_from += newline + 1
        head_len = self._head_len
        if self._marker_len == 0:
            # The first cut: the head ends at a line when one ends near its end.
            start = max(0, head_len - _ALIGN)
            stream.seek(start)
            last = stream.read(head_len - start).rfind(b"\n")
            if last >= 0:
                head_len = start + last + 1
        self.dropped += (keep_from - body_start) + (self._head_len - head_len)
        ends_line = head_len == 0 or self._byte_at(head_len - 1) == b"\n"
        marker = (b"" if ends_line else b"\n") + dropped_line(self.dropped)
        stream.seek(head_len)
        stream.write(marker)
        # Move the tail up, front to back: its new place starts before its old.
        dst, src = head_len + len(marker), keep_from
        while src < self._size:
            stream.seek(src)
            chunk = stream.read(min(_COPY_CHUNK, self._size - src))
            stream.seek(dst)
            stream.write(chunk)
            src += len(chunk)
            dst += len(chunk)
        stream.truncate(dst)
        stream.seek(dst)
        self._head_len, self._marker_len, self._size = head_len, len(marker), dst

    def _byte_at(self, offset: int) -> bytes:
        self.stream.seek(offset)
        return self.stream.read(1)


# --- capturing QEMU's console ---------------------------------------------------

READ_SIZE = 1 << 16
_POLL_MS = 100


def pipe_path(log: Path) -> Path:
    """The FIFO QEMU writes the console into, next to the log it becomes."""
    return log.with_name(log.name + ".pipe")


class ConsoleCapture:
    """Reads the console QEMU writes into a FIFO: into a CappedLog and a watcher.

    ``start()`` makes the FIFO (:func:`pipe_path`) and opens its read end
    before QEMU starts, so QEMU's open for writing does not block; a thread
    then copies everything QEMU writes into the capped log file and feeds it
    to the watcher, until QEMU closes its end (exits) or ``stop()``.  QEMU's
    end is non-blocking: were this reader slow, the guest's serial port
    would wait, as a real UART does, and nothing would be lost.
    """

    def __init__(
        self,
        log: Path,
        watcher: ConsoleWatcher,
        *,
        head: int = CONSOLE_HEAD,
        tail: int = CONSOLE_TAIL,
        slack: int = CONSOLE_SLACK,
    ) -> None:
        self.log = log
        self.pipe = pipe_path(log)
        self.watcher = watcher
        self._limits = (head, tail, slack)
        self._fd: int | None = None
        self._capped: CappedLog | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._closed = threading.Event()  # QEMU closed its end; all it wrote was read
        self._closing = threading.Lock()
        self._busy = False  # the reader holds data it has not fed yet
        self._written = 0
        self.error: BaseException | None = None

    def start(self) -> Path:
        """Make the FIFO and start reading it; the FIFO's path, for QEMU."""
        if self._thread is not None:
            raise RuntimeError("this ConsoleCapture was already started")
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.pipe.unlink(missing_ok=True)
        os.mkfifo(self.pipe, 0o600)
        head, tail, slack = self._limits
        self._capped = CappedLog.open(self.log, head=head, tail=tail, slack=slack)
        self._fd = os.open(self.pipe, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        self._thread = threading.Thread(target=self._run, name=f"console {self.log}", daemon=True)
        self._thread.start()
        return self.pipe

    def wait_closed(self, timeout: float) -> bool:
        """Wait until QEMU has closed the console and all of it was read."""
        return self._closed.wait(timeout)

    def settle(self, timeout: float) -> bool:
        """Once QEMU has exited: wait until what it wrote has been read and fed.

        Like wait_closed(), but also quick when QEMU exited before it opened
        the FIFO (then no close is ever reported).
        """
        deadline = time.monotonic() + timeout
        while not self._closed.is_set():
            # In this order: the reader is busy from before its read until
            # the data is fed, so an empty FIFO and an idle reader is the end.
            if self._pending() == 0 and not self._busy:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def _pending(self) -> int:
        """Bytes in the FIFO not read yet (-1 once closed)."""
        with self._closing:
            if self._fd is None:
                return -1
            raw = fcntl.ioctl(self._fd, termios.FIONREAD, b"\0\0\0\0")
            return int.from_bytes(raw, sys.byteorder)

    @property
    def written(self) -> int:
        """Bytes QEMU wrote to the console so far."""
        return self._written

    def stop(self, timeout: float = 2.0) -> None:
        """Stop reading (after what is in the FIFO now), close the log; idempotent."""
        thread = self._thread
        if thread is None:
            return
        self._stop.set()
        thread.join(timeout)
        if not thread.is_alive():  # else a stuck disk write: the thread closes up after it
            self._close()

    def _close(self) -> None:
        with self._closing:
            fd, self._fd = self._fd, None
            capped, self._capped = self._capped, None
            if fd is not None:
                os.close(fd)
            if capped is not None:
                capped.close()
            self.pipe.unlink(missing_ok=True)

    def _run(self) -> None:
        assert self._fd is not None
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        try:
            while not self._stop.is_set():
                events = poller.poll(_POLL_MS)
                # POLLHUP comes only after a writer has come and gone (Linux):
                # before QEMU opens its end there is nothing to report.
                if events and not self._drain():
                    self._closed.set()
                    return
            self._drain()  # what QEMU wrote before stop()
        except BaseException as exc:  # kept for the owner; the thread ends quietly
            self.error = exc
            self._closed.set()
        finally:
            if self._stop.is_set():
                self._close()

    def _drain(self) -> bool:
        """Copy what the FIFO holds; False once QEMU has closed it."""
        assert self._fd is not None and self._capped is not None
        for _ in range(64):  # then back to poll(), to see stop() in a flood
            self._busy = True
            try:
                data = os.read(self._fd, READ_SIZE)
            except BlockingIOError:  # QEMU is there, nothing to read
                self._busy = False
                return True
            if data:
                self._write(data)
                self.watcher.feed(data)
            self._busy = False
            if not data:
                return False
        return True

    def _write(self, data: bytes) -> None:
        assert self._capped is not None
        self._written += len(data)
        if self.error is None:
            try:
                self._capped.write(data)
            except OSError as exc:  # a full disk: the watcher still reads the console
                self.error = exc
