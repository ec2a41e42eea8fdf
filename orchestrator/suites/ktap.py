"""KTAP / TAP output of one test program, as a tree of TestResults.

Understands KTAP version 1 (KUnit, kselftest.h) and the TAP version 13 that
kselftest's runner prints::

    KTAP version 1
    1..2
        KTAP version 1
        # Subtest: group
        1..2
        # metric: lookups_per_sec 1.25e6 ops/s
        ok 1 case_a
        not ok 2 case_b # SKIP needs two CPUs
    ok 1 group
    not ok 2 other
    # other: expected 0, got -22

gives ``prog`` (FAIL) with subtests ``prog.group`` (PASS; its subtests
``prog.group.case_a`` PASS and ``prog.group.case_b`` SKIP) and ``prog.other``.

Rules:

* Nesting is by indentation: a block indented deeper than its parent (2 or 4
  spaces, or TAP 13's ``    # Subtest: name``) holds the subtests of the
  result line that follows it at the parent's indentation.
* ``ok``/``not ok N name # DIRECTIVE reason``: SKIP (either form) is
  Verdict.SKIP; ``ok # TODO`` is PASS; ``not ok # TODO`` is SKIP with reason
  "TODO: ...", because TAP does not count it as a failure and a PASS would
  claim the unfinished feature works (XFAIL, kselftest's expected failure,
  likewise); ``not ok # TIMEOUT`` (kselftest's
  runner) is Verdict.TIMEOUT; any other directive text is kept as the reason.
* ``Bail out! reason``: the remaining planned tests of every open block are
  ERROR and the program FAILs with the reason; nothing after it is read.
* A block's verdict: FAIL if a subtest failed, timed out or errored, if it
  bailed out, or if its plan ``1..N`` does not match what reported; else
  PASS if a subtest passed; else SKIP.  A block whose result line never came
  (the program died) counts as FAIL.  A program with no KTAP at all is ERROR.
* Diagnostics ``# ...`` are not stored as logs (TestResult.logs holds paths
  to log files); a failure's reason is taken from the diagnostics printed
  before its result line (the first that mentions a failure or an error,
  else the last one when nothing else explains the failure).
* Metrics: a diagnostic ``# metric: NAME VALUE [UNIT]`` attaches
  ``NAME -> float(VALUE)`` to the next result line at the same indentation;
  metric lines after a block's last result line belong to the block itself
  (the group's result, or the program's).  The unit is for people reading
  the output only; put it in the name (``lookup_ns``) when it matters.  The
  last value of a repeated NAME wins; values that are not finite numbers are
  ignored.  The project's own guest programs print their measurements so.
* Names are kept as printed (spaces, markup, dots); ``\\#`` unescapes to
  ``#``.  Lines that are none of the above (kernel messages, program noise)
  are ignored.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from orchestrator.results import TestResult, Verdict

_BAD = frozenset({Verdict.FAIL, Verdict.ERROR, Verdict.TIMEOUT, Verdict.CRASH, Verdict.KERNEL_HANG})
_REASON_LIMIT = 300
_LISTED_FAILURES = 5
_DIAGNOSTIC_LIMIT = 1000  # per result

_VERSION = re.compile(r"(?:KTAP|TAP) version \d+")
_PLAN = re.compile(r"1\.\.(\d+)\s*(?:#\s*(.*))?")
_RESULT = re.compile(r"(not ok|ok)\s+(\d+)\b\s*(?:-\s+)?(.*)")
_SUBTEST = re.compile(r"#\s*Subtest:\s*(.*)")
_BAIL = re.compile(r"Bail out!\s*(.*)", re.IGNORECASE)
_DIAGNOSTIC = re.compile(r"#\s?(.*)")
_METRIC = re.compile(r"metric:\s+(\S+)\s+(\S+)(?:\s+\S+)?\s*")
# A directive starts at the first '#' that begins a word: "name # SKIP".
_DIRECTIVE_START = re.compile(r"(?:^|(?<=\s))#")
_DIRECTIVE = re.compile(r"(SKIP|TODO|XFAIL|TIMEOUT)\b[\s:]*(.*)", re.IGNORECASE)
_FAILURE_HINT = re.compile(r"\b(?:fail\w*|error\w*|expected|assert\w*)\b", re.IGNORECASE)
# Counters such as KUnit's "# suite: pass:1 fail:1 skip:0 total:2" say that
# something failed, not why.
_SUMMARY = re.compile(r"\bpass:\d+ fail:\d+|^Totals:|^Summary:|^FAILED: \d+ / \d+", re.IGNORECASE)

_Kind = Literal["version", "plan", "result", "subtest", "bail", "diagnostic"]


@dataclass(frozen=True)
class _Token:
    kind: _Kind
    indent: int
    text: str = ""  # test name, subtest name, bail reason or diagnostic text
    number: int = 0  # the test number, or the planned count
    ok: bool = False
    directive: str = ""  # the text after '#' on a result or plan line


@dataclass(frozen=True)
class _Block:
    """A closed nested block, waiting for (or lacking) its result line."""

    name: str
    results: tuple[TestResult, ...]
    verdict: Verdict
    reason: str
    metrics: dict[str, float]


@dataclass
class _Level:
    """Parser state for one indentation level (mutable, never leaves this module)."""

    indent: int
    name: str = ""  # from "# Subtest: name"
    plan: int | None = None
    plan_directive: str = ""
    results: list[TestResult] = field(default_factory=list)
    diagnostics: list[str] = field(default_factory=list)  # since the last result
    metrics: dict[str, float] = field(default_factory=dict)  # since the last result
    block: _Block | None = None  # the nested block just closed


def parse(text: str, name: str) -> TestResult:
    """The result of the program `name` from its KTAP/TAP output."""
    parser = _Parser()
    for line in text.splitlines():
        token = _tokenize(line)
        if token is not None:
            parser.feed(token)
        if parser.bail is not None:
            break
    return parser.finish(name)


def _tokenize(line: str) -> _Token | None:
    body = line.rstrip().replace("\r", "")
    stripped = body.lstrip(" \t")
    indent = len(body[: len(body) - len(stripped)].expandtabs(8))
    if _VERSION.fullmatch(stripped):
        return _Token("version", indent)
    if m := _PLAN.fullmatch(stripped):
        return _Token("plan", indent, number=int(m.group(1)), directive=m.group(2) or "")
    if m := _RESULT.fullmatch(stripped):
        test, directive = _split_directive(m.group(3))
        ok = m.group(1) == "ok"
        return _Token("result", indent, test, int(m.group(2)), ok, directive)
    if m := _BAIL.fullmatch(stripped):
        return _Token("bail", indent, m.group(1).strip())
    if m := _SUBTEST.fullmatch(stripped):
        return _Token("subtest", indent, m.group(1).strip())
    if m := _DIAGNOSTIC.fullmatch(stripped):
        return _Token("diagnostic", indent, m.group(1).strip())
    return None


def _split_directive(rest: str) -> tuple[str, str]:
    found = _DIRECTIVE_START.search(rest)
    if found is None:
        return _unescape(rest.strip()), ""
    return _unescape(rest[: found.start()].strip()), rest[found.end() :].strip()


def _unescape(name: str) -> str:
    return name.replace("\\#", "#")


class _Parser:
    def __init__(self) -> None:
        self.stack: list[_Level] = []
        self.bail: str | None = None
        self.seen_ktap = False  # a version, plan, result or bail line

    def feed(self, token: _Token) -> None:
        self.seen_ktap = self.seen_ktap or token.kind not in ("diagnostic", "subtest")
        self._align(token)
        level = self.stack[-1]
        if token.kind == "plan":
            level.plan, level.plan_directive = token.number, token.directive
        elif token.kind == "subtest" and not level.name and not level.results:
            level.name = token.text
        elif token.kind == "result":
            level.results.append(_result(level, token))
        elif token.kind == "bail":
            self.bail = token.text
        elif token.kind == "diagnostic":
            _diagnostic(level, token.text)

    def finish(self, name: str) -> TestResult:
        if not self.seen_ktap:
            return TestResult(name, Verdict.ERROR, reason="no KTAP output")
        while len(self.stack) > 1:
            self._pop()
        block = _close(self.stack[0], self.bail)
        root = TestResult(
            name, block.verdict, reason=block.reason, metrics=block.metrics, subtests=block.results
        )
        return _qualify(root, prefix="")

    def _align(self, token: _Token) -> None:
        """Open or close nesting levels so that the top one is the token's."""
        if not self.stack:
            self.stack.append(_Level(token.indent))
        while len(self.stack) > 1 and token.indent < self.stack[-1].indent:
            self._pop()
        top = self.stack[-1]
        if len(self.stack) == 1 and token.indent < top.indent:
            top.indent = token.indent  # the first lines were indented, the program's are not
        # Diagnostics do not open a block (KUnit indents a test's messages
        # deeper than its result lines), nor does a bail out.
        if token.indent > top.indent and token.kind not in ("diagnostic", "bail"):
            _adopt_orphan(top)
            self.stack.append(_Level(token.indent))

    def _pop(self) -> None:
        closed = _close(self.stack.pop(), self.bail)
        parent = self.stack[-1]
        _adopt_orphan(parent)
        parent.block = closed


def _diagnostic(level: _Level, text: str) -> None:
    metric = _METRIC.fullmatch(text)
    if metric is not None:
        value = _number(metric.group(2))
        if value is not None:
            level.metrics[metric.group(1)] = value
            return
    # A chatty program (test_progs prints thousands of lines) must not grow
    # this without bound: keep the first ones and the latest.
    if len(level.diagnostics) < _DIAGNOSTIC_LIMIT:
        level.diagnostics.append(text)
    else:
        level.diagnostics[-1] = text


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _result(level: _Level, token: _Token) -> TestResult:
    """The TestResult of a result line, with the block before it as its subtests."""
    verdict, reason = _verdict(token.ok, token.directive)
    block, level.block = level.block, None
    metrics, level.metrics = level.metrics, {}
    diagnostics, level.diagnostics = level.diagnostics, []
    subtests: tuple[TestResult, ...] = ()
    if block is not None:
        subtests, metrics = block.results, {**block.metrics, **metrics}
        # The line may say "ok" for a block whose plan was not met.
        if block.verdict is Verdict.FAIL and verdict not in _BAD:
            verdict, reason = Verdict.FAIL, block.reason
        elif verdict in _BAD:
            reason = _join(reason, block.reason)
    if verdict in _BAD:
        reason = _join(reason, _failure_diagnostic(diagnostics, fallback=not reason))
    name = token.text or (block.name if block else "") or str(token.number)
    return TestResult(name, verdict, reason=reason, metrics=metrics, subtests=subtests)


def _verdict(ok: bool, directive: str) -> tuple[Verdict, str]:
    found = _DIRECTIVE.fullmatch(directive)
    keyword = found.group(1).upper() if found else ""
    text = found.group(2).strip() if found else directive
    if keyword == "SKIP":
        return Verdict.SKIP, text
    if keyword in ("TODO", "XFAIL"):
        # Expected failures of unfinished work: not a failure, not a pass.
        label = _join(keyword, text, ": ")
        return (Verdict.PASS, label) if ok else (Verdict.SKIP, label)
    if ok:
        return Verdict.PASS, ""
    if keyword == "TIMEOUT":
        return Verdict.TIMEOUT, _join("TIMEOUT", text, " ")
    return Verdict.FAIL, text


def _failure_diagnostic(diagnostics: list[str], fallback: bool) -> str:
    """The diagnostic most likely to say why a test failed.

    The first that mentions a failure or an error; else, with fallback (when
    nothing else explains the failure), the last one, the closest to it.
    """
    useful = [d for d in diagnostics if d and not _SUMMARY.search(d)]
    hint = next((d for d in useful if _FAILURE_HINT.search(d)), None)
    if hint is None:
        hint = useful[-1] if useful and fallback else ""
    return hint[:_REASON_LIMIT]


def _adopt_orphan(level: _Level) -> None:
    """A closed block whose result line never came becomes a result of its own."""
    block, level.block = level.block, None
    if block is None:
        return
    name = block.name or str(len(level.results) + 1)
    if block.verdict in _BAD:
        verdict, reason = block.verdict, block.reason
    else:
        verdict, reason = Verdict.FAIL, "no result line after its subtests"
    result = TestResult(name, verdict, reason=reason, metrics=block.metrics, subtests=block.results)
    level.results.append(result)


def _close(level: _Level, bail: str | None) -> _Block:
    """The level's subtests and its own verdict, once nothing more will be read into it."""
    _adopt_orphan(level)
    results = list(level.results)
    verdict, reason = _aggregate(results, level, bail)
    if bail is not None and level.plan is not None:
        missing = range(len(results) + 1, level.plan + 1)
        results += [
            TestResult(str(n), Verdict.ERROR, reason=f"bailed out: {bail}") for n in missing
        ]
    metrics = dict(level.metrics)
    return _Block(level.name, tuple(results), verdict, reason, metrics)


def failures(results: Sequence[TestResult]) -> str:
    """ "2 of 5 failed: a, b" naming the first few; "" when none failed."""
    failed = [r.name for r in results if r.verdict in _BAD]
    if not failed:
        return ""
    more = ", ..." if len(failed) > _LISTED_FAILURES else ""
    return f"{len(failed)} of {len(results)} failed: " + ", ".join(failed[:_LISTED_FAILURES]) + more


def _aggregate(results: list[TestResult], level: _Level, bail: str | None) -> tuple[Verdict, str]:
    problems = []
    plan, count = level.plan, len(results)
    if bail is not None:
        problems.append(_join("Bail out!", bail, " "))
    elif plan is not None and count < plan:
        problems.append(f"{plan - count} planned tests did not report")
    elif plan is not None and count > plan:
        problems.append(f"{count} tests reported, {plan} planned")
    if failed := failures(results):
        problems.append(failed)
    if problems:
        return Verdict.FAIL, "; ".join(problems)
    if any(r.verdict is Verdict.PASS for r in results):
        return Verdict.PASS, ""
    if results:
        return Verdict.SKIP, "all subtests skipped"
    if plan == 0:
        skip = _DIRECTIVE.fullmatch(level.plan_directive)
        return Verdict.SKIP, (skip.group(2).strip() if skip else "") or "no tests planned"
    return Verdict.ERROR, "no test results"


def _qualify(result: TestResult, prefix: str) -> TestResult:
    """Names relative to their parent -> full dotted names (prog.group.case)."""
    name = f"{prefix}.{result.name}" if prefix else result.name
    subtests = tuple(_qualify(s, name) for s in result.subtests)
    return replace(result, name=name, subtests=subtests)


def _join(first: str, second: str, sep: str = "; ") -> str:
    return sep.join(part for part in (first, second) if part)
