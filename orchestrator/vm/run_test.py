"""Runs one test in a booted guest and turns what happened into a verdict.

A test failure is data: this module never raises for a kernel problem.  The
rules, in order:

* the guest stopped answering during the test → KERNEL-HANG, or CRASH when
  the console shows a panic/oops for it (QEMU exits on panic: panic=-1);
* the command outlived its timeout but the guest still answers → TIMEOUT
  (the command is killed and the guest is used for the next test);
* otherwise the output is parsed, as the test's kind reads it (suites/:
  KTAP, or test_progs' own format for a kselftest test); a non-zero exit or a
  kernel splat during the test fails an otherwise passing test.

A test's splats are counted and capped (console.merge): identical reports
are one splat with a count, and a test keeps its first 20 distinct splats
and the first of each kind, the rest counted per kind in a summary splat.

The guest command and the parser come from the kind's suite; nothing here
knows the kinds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from orchestrator import flakes, suites
from orchestrator.matrix import Test
from orchestrator.results import Splat, SplatKind, TestResult, Verdict
from orchestrator.vm import console

# Splats that end the guest: a dead guest with one of these is a CRASH.
CRASH_KINDS = frozenset({SplatKind.PANIC, SplatKind.OOPS, SplatKind.GPF, SplatKind.BUG})
# Splats that fail a test that otherwise passed; all of them are kernel bugs.
FAILING_KINDS = CRASH_KINDS | {
    SplatKind.WARNING, SplatKind.SOFT_LOCKUP, SplatKind.HARD_LOCKUP, SplatKind.RCU_STALL,
    SplatKind.HUNG_TASK, SplatKind.KASAN, SplatKind.KFENCE, SplatKind.UBSAN, SplatKind.KCSAN,
    SplatKind.OOM, SplatKind.KMEMLEAK,
}  # fmt: skip


class Exec(Protocol):
    @property
    def exit_status(self) -> int | None: ...
    @property
    def timed_out(self) -> bool: ...
    @property
    def duration(self) -> float: ...


class Session(Protocol):
    """A booted guest, as the test runner needs it."""

    def run(self, command: str, *, timeout: float, stdout: Path, stderr: Path) -> Exec:
        """Run command; on timeout the command and its children are killed."""

    def ping(self, timeout: float = 5.0) -> bool: ...
    def sshd_gone(self) -> bool: ...
    def qemu_killed(self) -> str | None: ...
    def kmsg(self, text: str) -> None: ...
    def alive(self) -> bool: ...
    def splats(self) -> list[Splat]: ...
    def console_tail(self) -> str: ...


@dataclass(frozen=True)
class Marker:
    begin: str
    end: str

    @classmethod
    def of(cls, name: str) -> Marker:
        return cls(f"orchestrate: begin test {name}", f"orchestrate: end test {name}")


def command_for(test: Test) -> str:
    """The guest shell command, as the test's kind builds it."""
    return suites.suite_for(test).command(test)


def run_test(session: Session, test: Test, logs: Path, *, label: str = "") -> TestResult:
    """Run test and judge it.  `label` names this run of it (map_perf@3) in log
    file names and console markers; the result is named after the test."""
    name = label or test.name
    logs.mkdir(parents=True, exist_ok=True)
    stdout, stderr = logs / f"{name}.stdout", logs / f"{name}.stderr"
    marker = Marker.of(name)
    session.kmsg(marker.begin)
    result = session.run(command_for(test), timeout=test.timeout, stdout=stdout, stderr=stderr)
    answering = session.alive() and session.ping()
    if answering:
        session.kmsg(marker.end)
    mine = console.merge(
        s for s in session.splats() if s.test == name or (not answering and s.test is None)
    )
    logs_ = (str(stdout), str(stderr))
    base = TestResult(test.name, Verdict.ERROR, result.duration, logs=logs_, splats=mine)
    if not answering and session.sshd_gone():
        # The guest's userspace lost its sshd (a test killed it, say): the kernel
        # is not to blame, and this guest can run nothing more.
        reason = "the guest's sshd is gone (its kernel still refuses connections on port 22)"
        return dataclasses.replace(base, reason=reason)
    killed = None if answering else session.qemu_killed()
    if killed is not None:
        # Not the kernel's doing: an OOM killer, an admin or a CI runner's teardown.
        reason = f"QEMU was killed ({killed}) from outside the guest"
        return dataclasses.replace(base, reason=reason)
    if not answering:
        return _dead_guest(base, session.console_tail(), result.timed_out)
    if result.timed_out:
        return dataclasses.replace(
            base, verdict=Verdict.TIMEOUT, reason=f"still running after {test.timeout:g}s; killed"
        )
    parse = suites.suite_for(test).parse
    parsed = parse(stdout.read_text(errors="replace"), test.name)
    return _judge(dataclasses.replace(parsed, duration=result.duration, logs=logs_, splats=mine),
                  result.exit_status)  # fmt: skip


def run_retried(
    session: Session,
    test: Test,
    logs: Path,
    judge: Callable[[TestResult], TestResult],
    *,
    label: str = "",
) -> TestResult:
    """Run test, and again (up to `test.retries` more times, in this guest) while a run
    misses its expectation; the runs folded into one result (flakes.combine).  `judge`
    attaches the run's identity and expectations to a result."""
    name = label or test.name
    attempts = [judge(run_test(session, test, logs, label=name))]
    while flakes.should_retry(attempts, test.retries) and session.alive():
        again = flakes.attempt_label(name, len(attempts) + 1)
        attempts.append(judge(run_test(session, test, logs, label=again)))
    return flakes.combine(attempts)


def _dead_guest(base: TestResult, console_tail: str, timed_out: bool) -> TestResult:
    crash = next((s for s in base.splats if s.kind in CRASH_KINDS), None)
    if crash is not None:
        return dataclasses.replace(base, verdict=Verdict.CRASH, reason=crash.title)
    oom = next((s for s in base.splats if s.kind is SplatKind.OOM), None)
    if oom is not None:
        reason = f"the guest stopped answering after running out of memory: {oom.title}"
        return dataclasses.replace(base, verdict=Verdict.KERNEL_HANG, reason=reason)
    why = "the guest stopped answering" + (
        " while the test ran past its timeout" if timed_out else ""
    )
    last = console_tail.strip().splitlines()[-1:] or ["(empty console)"]
    return dataclasses.replace(
        base, verdict=Verdict.KERNEL_HANG, reason=f"{why}; console: {last[0]}"
    )


def _judge(parsed: TestResult, exit_status: int | None) -> TestResult:
    if parsed.verdict is Verdict.PASS:
        bad = next((s for s in parsed.splats if s.kind in FAILING_KINDS), None)
        if bad is not None:
            return dataclasses.replace(
                parsed, verdict=Verdict.FAIL, reason=f"kernel {bad.kind}: {bad.title}"
            )
        if exit_status != 0:
            return dataclasses.replace(
                parsed, verdict=Verdict.FAIL, reason=f"exit status {exit_status}"
            )
    return parsed
