"""The output of the kernel's BPF test runner, test_progs, as a tree of TestResults.

test_progs (tools/testing/selftests/bpf, 6.1) prints, after each test, its
subtests and then the test itself, each with its result::

    test_htab:FAIL:map_update unexpected error: -12
    #12/1    htab/lookup:OK
    #12/2    htab/update:FAIL
    #12      htab:FAIL
    #45      foo:SKIP
    Summary: 1/1 PASSED, 1 SKIPPED, 1 FAILED

gives ``prog`` (FAIL) with subtests ``prog.htab`` (FAIL; its subtests
``prog.htab.lookup`` PASS and ``prog.htab.update`` FAIL, the reason the
``...:FAIL:...`` line before it) and ``prog.foo`` (SKIP).

Rules:

* A result line is ``#N name:RESULT`` or ``#N/M test/subtest:RESULT`` with
  RESULT one of OK, FAIL, SKIP (the last ``:`` splits it off, so names may
  hold colons; the first ``/`` splits a subtest's test name off).  Other
  lines are a test's log: a failure's reason is the first log line since the
  previous result line (for a test: since the previous test's line, as its
  log comes before its subtests') that reports a failed check
  (``...:FAIL:...``), else one that mentions a failure or an error.
* test_progs repeats the failed tests after "All error logs:"; a result
  already seen (same numbers) is not counted again.
* Subtests whose test's own line never came (the output ended) form that
  test anyway: FAIL if one failed, else ERROR.
* The program: FAIL if a test failed, if ``Summary:`` counts a failure, if
  test_progs crashed (``Caught signal #N!``) or if there is no ``Summary:``
  line (it did not finish: crashed, killed or the output was cut); else PASS
  if a test passed, SKIP if all were skipped, and ERROR when it ran no test
  at all (the filter matched nothing) or printed nothing test_progs prints.
* Output that declares itself KTAP or TAP (newer runners, or the kselftest
  wrapper) is parsed by suites.ktap instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from orchestrator.results import TestResult, Verdict
from orchestrator.suites import ktap

_REASON_LIMIT = 300
_LOG_LIMIT = 1000  # log lines kept per result; test_progs logs can be huge

_KTAP = re.compile(r"^\s*(?:KTAP|TAP) version \d+\s*$", re.M)
_RESULT = re.compile(r"#(\d+)(?:/(\d+))?\s+(.*):(OK|FAIL|SKIP)")
_SUMMARY = re.compile(r"Summary: (\d+)/(\d+) PASSED, (\d+) SKIPPED, (\d+) FAILED")
_CRASH = re.compile(r"Caught signal #\d+!")
_FAILED_CHECK = re.compile(r":FAIL:")
_FAILURE_HINT = re.compile(r"\b(?:fail\w*|error\w*|expected|assert\w*)\b", re.IGNORECASE)
_VERDICT = {"OK": Verdict.PASS, "FAIL": Verdict.FAIL, "SKIP": Verdict.SKIP}
_BAD = frozenset({Verdict.FAIL, Verdict.ERROR})


@dataclass(frozen=True)
class _Summary:
    passed: int
    subtests_passed: int
    skipped: int
    failed: int


@dataclass
class _State:
    """What has been read so far (mutable, never leaves this module)."""

    tests: dict[int, TestResult] = field(default_factory=dict)  # by test number, in order
    subtests: dict[int, dict[int, TestResult]] = field(default_factory=dict)
    names: dict[int, str] = field(default_factory=dict)  # test names from subtest lines
    log: list[str] = field(default_factory=list)  # since the last result line
    block: list[str] = field(default_factory=list)  # since the last test's own line
    summary: _Summary | None = None
    crash: str = ""
    last: str = ""  # the last test that reported


def parse(text: str, name: str) -> TestResult:
    """The result of the test_progs run `name` from its output (stdout and stderr)."""
    if _KTAP.search(text):
        return ktap.parse(text, name)
    state = _State()
    for raw in text.splitlines():
        _feed(state, raw.replace("\0", "").strip())
    return _finish(state, name)


def _feed(state: _State, line: str) -> None:
    if m := _RESULT.fullmatch(line):
        _result(state, int(m.group(1)), m.group(2), m.group(3).strip(), m.group(4))
    elif m := _SUMMARY.fullmatch(line):
        state.summary = _Summary(*(int(g) for g in m.groups()))
    else:
        if not state.crash and (crash := _CRASH.search(line)):
            state.crash = crash.group(0)
        for lines in (state.log, state.block):
            if len(lines) < _LOG_LIMIT:
                lines.append(line)


def _result(state: _State, number: int, sub: str | None, text: str, word: str) -> None:
    verdict = _VERDICT[word]
    # A test's log comes before its subtests' lines, a subtest's right before its own.
    log, state.log = state.log, []
    if sub is None:
        log, state.block = state.block, []
    reason = _reason(log) if verdict is Verdict.FAIL else ""
    if sub is None:
        if number in state.tests:
            return  # repeated under "All error logs:"
        subtests = tuple(state.subtests.pop(number, {}).values())
        state.tests[number] = TestResult(text, verdict, reason=reason, subtests=subtests)
        state.last = f"#{number} {text}"
        return
    subs = state.subtests.setdefault(number, {})
    already_done = number in state.tests
    if int(sub) in subs or already_done:
        return
    test, _, subtest = text.partition("/")
    state.names.setdefault(number, test)
    subs[int(sub)] = TestResult(subtest or test, verdict, reason=reason)
    state.last = f"#{number}/{sub} {text}"


def _reason(log: list[str]) -> str:
    useful = [line for line in log if line]
    hint = next((line for line in useful if _FAILED_CHECK.search(line)), None)
    if hint is None:
        hint = next((line for line in useful if _FAILURE_HINT.search(line)), "")
    return hint[:_REASON_LIMIT]


def _finish(state: _State, name: str) -> TestResult:
    tests = list(state.tests.values()) + [
        _orphan(state.names[number], subs) for number, subs in state.subtests.items() if subs
    ]
    verdict, reason = _verdict(state, tests)
    root = TestResult(name, verdict, reason=reason, subtests=tuple(tests))
    return _qualify(root, prefix="")


def _orphan(name: str, subs: dict[int, TestResult]) -> TestResult:
    """A test whose subtests reported but whose own result line never came."""
    failed = any(s.verdict in _BAD for s in subs.values())
    verdict = Verdict.FAIL if failed else Verdict.ERROR
    reason = "a subtest failed" if failed else "no result line for the test"
    return TestResult(name, verdict, reason=reason, subtests=tuple(subs.values()))


def _verdict(state: _State, tests: list[TestResult]) -> tuple[Verdict, str]:
    if not (tests or state.summary or state.crash):
        first = next((line for line in state.log if line), "")
        return Verdict.ERROR, _join("no test_progs results", first[:_REASON_LIMIT], ": ")
    problems = []
    if state.crash:
        problems.append(f"test_progs crashed: {state.crash}" + _after(state))
    elif state.summary is None:
        problems.append("test_progs did not finish: no Summary line" + _after(state))
    if failed := ktap.failures(tests):
        problems.append(failed)
    elif state.summary is not None and state.summary.failed:
        problems.append(f"Summary counts {state.summary.failed} failed")
    if problems:
        return Verdict.FAIL, "; ".join(problems)
    if any(t.verdict is Verdict.PASS for t in tests):
        return Verdict.PASS, ""
    if tests:
        return Verdict.SKIP, "all tests skipped"
    return Verdict.ERROR, "test_progs ran no test: does the filter match any?"


def _after(state: _State) -> str:
    return f" (after {state.last})" if state.last else " (before any test reported)"


def _qualify(result: TestResult, prefix: str) -> TestResult:
    """Names relative to their parent -> full dotted names (prog.test.subtest)."""
    name = f"{prefix}.{result.name}" if prefix else result.name
    return replace(result, name=name, subtests=tuple(_qualify(s, name) for s in result.subtests))


def _join(first: str, second: str, sep: str) -> str:
    return sep.join(part for part in (first, second) if part)
