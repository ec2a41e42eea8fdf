"""The guest's serial console: find kernel splats and the test that was running.

:func:`scan` is a pure parser over a whole console log; :class:`ConsoleWatcher`
follows the log file while QEMU appends to it and hands out each splat once,
as soon as its report is complete.  Both run the same line-by-line state
machine, so a watched log gives exactly the splats a later scan would.

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
"""

from __future__ import annotations

import codecs
import itertools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.results import Splat, SplatKind

TRACE_LIMIT = 64  # trace lines kept per splat; the rest of the block is skipped
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
    die: bool = False  # an "Oops: ... [#N]" line, which may belong to the open report
    absorbs_die: bool = False  # this head is followed by its own "Oops" line
    awaits_panic: bool = False  # this head announces a panic
    bare_trace: bool = False  # the report's frames come without a "Call Trace:" line


def _p(kind: SplatKind, regex: str, **flags: bool) -> _Pattern:
    return _Pattern(kind, re.compile(regex), **flags)


# First match wins: the specific patterns come before the generic "BUG:" one
# (the soft lockup line reads "watchdog: BUG: soft lockup ...").  Anchored
# with "^" where the kernel prints the phrase first, so that look-alikes do
# not match ("RETBleed: WARNING: ...", "traps: a.out[9] general protection
# fault ip:...", "---[ end Kernel panic - ...").
_PATTERNS = (
    _p(SplatKind.SOFT_LOCKUP, r"\bBUG: soft lockup\b"),
    _p(SplatKind.HARD_LOCKUP, r"\bWatchdog detected hard LOCKUP\b"),
    _p(SplatKind.RCU_STALL, r"\bINFO: rcu_\w+ (?:self-)?detected (?:expedited )?stalls?\b"),
    _p(SplatKind.HUNG_TASK, r"^INFO: task \S.* blocked for more than \d+ seconds"),
    _p(SplatKind.KASAN, r"^BUG: KASAN: "),
    _p(SplatKind.KFENCE, r"^BUG: KFENCE: ", bare_trace=True),
    _p(SplatKind.KCSAN, r"^BUG: KCSAN: ", bare_trace=True),
    _p(SplatKind.UBSAN, r"^UBSAN: "),
    # The OOM report starts here and carries the allocating task's trace.
    _p(SplatKind.OOM, r"^\S+ invoked oom-killer: "),
    _p(SplatKind.PANIC, r"^Kernel panic - not syncing: "),
    _p(SplatKind.PANIC, r"^sysrq: (?:SysRq : )?Trigger a crash\b", awaits_panic=True),
    _p(SplatKind.GPF, r"^general protection fault\b"),
    _p(
        SplatKind.OOPS,
        r"^BUG: (?:kernel NULL pointer dereference|unable to handle )",
        absorbs_die=True,
    ),
    _p(
        SplatKind.OOPS,
        r"^(?:Internal error: )?Oops\b|^invalid opcode: [0-9a-f]+ \[#\d+\]",
        die=True,
    ),
    _p(SplatKind.BUG, r"^kernel BUG at \S+:\d+!", absorbs_die=True),
    _p(SplatKind.BUG, r"^(?:[\w/.-]+: )?BUG: "),
    _p(SplatKind.WARNING, r"^WARNING: CPU: \d+ PID: \d+ at "),
    _p(SplatKind.WARNING, r"^WARNING: (?:" + "|".join(re.escape(s) for s in _LOCKDEP) + ")"),
)


def scan(text: str) -> list[Splat]:
    """Every splat in a console log, in the order the kernel printed them."""
    scanner = _Scanner()
    for line in text.split("\n"):
        scanner.feed(line)
    scanner.finish()
    return list(scanner.done)


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
    return next((p for p in _PATTERNS if p.regex.search(message)), None)


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
    """The line-by-line state machine behind scan() and ConsoleWatcher."""

    def __init__(self) -> None:
        self.done: list[Splat] = []
        self._test: str | None = None
        self._report: _Report | None = None

    def feed(self, line: str) -> None:
        timestamp, message = _split(clean(line))
        report = self._report
        if report is not None and report.in_trace and self._trace_line(report, message):
            return
        marker = _MARKER.match(message)
        if marker is not None:
            self._close()
            self._mark(marker.group(1), marker.group(2).strip())
            return
        pattern = _head(message)
        if pattern is not None:
            self._start(pattern, message, timestamp)
        elif report is not None and self._report is report:
            self._body_line(report, message)

    def finish(self) -> None:
        """The log ended: the open report is as complete as it will get."""
        self._close()

    def _trace_line(self, report: _Report, message: str) -> bool:
        """Add a line to the trace being read; False when the trace has ended."""
        if _FRAME.match(message) or _CONTEXT.match(message):
            if len(report.trace) < TRACE_LIMIT:
                report.trace.append(message)
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
                report.trace.append(message)
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
            self.done.append(splat)

    def _mark(self, what: str, name: str) -> None:
        if what == "begin":
            self._test = name
        elif name == self._test:
            self._test = None


class ConsoleWatcher:
    """Follows a console log file that QEMU appends to while the guest runs.

    Every method first reads what was appended since the last call.  A splat
    is handed out by :meth:`poll` once, when its report is complete; a report
    still being printed stays back until its trace has ended (or :meth:`flush`
    says the log will not grow any more).  The file may not exist yet; if it
    shrinks (a new QEMU truncated it), reading starts again from its start.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._partial = ""  # text after the last newline: a line still being written
        self._lines: list[str] = []  # cleaned, for tail() and seen()
        self._scanner = _Scanner()
        self._returned = 0  # how many of self._scanner.done poll() has handed out
        self._searched: dict[str, int] = {}  # marker -> lines already searched for it

    def poll(self) -> list[Splat]:
        """The splats completed since the last poll() or flush()."""
        self._read()
        return self._take()

    def flush(self) -> list[Splat]:
        """Like poll(), after taking the unterminated last line and the open report as final."""
        self._read()
        rest = self._partial + self._decoder.decode(b"", final=True)
        self._partial = ""
        if rest:
            self._add(rest)
        self._scanner.finish()
        return self._take()

    def all(self) -> list[Splat]:
        """Every completed splat so far, whether or not poll() returned it."""
        self._read()
        return list(self._scanner.done)

    def tail(self, n_lines: int = 50) -> str:
        """The last lines of the console (escape sequences removed), for boot failures."""
        self._read()
        lines = self._lines[-n_lines:] if n_lines > 0 else []
        if self._partial and n_lines > 0:
            lines = [*lines, clean(self._partial)][-n_lines:]
        return "\n".join(lines)

    def seen(self, marker: str) -> bool:
        """Whether a console line containing marker has appeared (e.g. ORCHESTRATE-READY)."""
        self._read()
        start = self._searched.get(marker, 0)
        found = any(marker in line for line in itertools.islice(self._lines, start, None))
        # Remember where the search stopped; once found, always found.
        self._searched[marker] = start if found else len(self._lines)
        return found or marker in clean(self._partial)

    def _take(self) -> list[Splat]:
        new = self._scanner.done[self._returned :]
        self._returned = len(self._scanner.done)
        return new

    def _read(self) -> None:
        try:
            with self.path.open("rb") as f:
                if os.fstat(f.fileno()).st_size < self._offset:
                    self._restart()
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return
        self._offset += len(data)
        *lines, self._partial = (self._partial + self._decoder.decode(data)).split("\n")
        for line in lines:
            self._add(line)

    def _restart(self) -> None:
        # Splats already found stay found; the new file is read as a new console.
        self._offset = 0
        self._partial = ""
        self._decoder.reset()
        self._scanner.finish()

    def _add(self, line: str) -> None:
        self._lines.append(clean(line))
        self._scanner.feed(line)
