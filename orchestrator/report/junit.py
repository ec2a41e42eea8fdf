"""JUnit XML for CI: a <testsuite> per variant, a <testcase> per stage and test.

The apply, kconfig, build and boot stages are test cases too
(`stage:apply`, ...), so a variant that never reached its tests still shows
why, once, as an <error>; the stages after it are <skipped>.  Every test and
every KTAP subtest is its own case.  An expected failure passes (with an
"expected" property and a note in system-out); an expected failure that
passed is a <failure type="unexpected-pass">.

Each suite also carries the variant's perf estimates as properties
(`perf.TEST.METRIC.median`, `.ci_low`, ..., and against the baseline
`.ratio`, `.p`, `.verdict`, ...), so CI can track them without the HTML.
The A/A control (the baseline's kernel measured again) is no suite of its
own: its tests are a measurement of the noise, and CI must never count them
as failures.  The baseline's suite carries what it measured
(`perf.TEST.METRIC.aa.ratio`, `.aa.cv`, `.aa.noisy`, ...) and the batches
(`perf.batches`, `perf.batch_note`).

An incomplete run (interrupted, RunResult.incomplete) says so in the
<testsuites> name and in an `incomplete` property of every suite, and each
variant that did not reach all its stages gets an erroring `run:incomplete`
case: its stages that did run keep their verdicts, but CI must not read the
variant as green.

A retried test (`retries:`, flakes.py) carries its earlier runs as Surefire
does, which the Jenkins schema allows: a FLAKY case passes with a
<flakyFailure> (<flakyError>) per missed run; a test that missed every run
has its <failure> and a <rerunFailure> (<rerunError>) per earlier run; both
get `attempts` and `failures` properties.  A quarantined miss is <skipped
type="quarantined"> with the entry's reason and expiry, and every suite
lists the matrix's quarantine as `quarantine.TEST` properties.

The output validates against the Jenkins JUnit schema
(tests/unit/data/junit/jenkins-junit.xsd), which also allows the
<properties> of a <testcase> that the Jenkins JUnit plugin reads.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from junitparser import (
    Error,
    Failure,
    JUnitXml,
    Properties,
    Property,
    Skipped,
    TestCase,
    TestSuite,
)
from junitparser.xunit2 import (
    FlakyError,
    FlakyFailure,
    InterimResult,
    RerunError,
    RerunFailure,
)

from orchestrator import flakes
from orchestrator.perf import MetricSummary, batch_note, perf
from orchestrator.report.common import LogDirs, console_for, read_tail, reproduce
from orchestrator.results import (
    PatchOutcome,
    RunResult,
    Splat,
    Stage,
    StageResult,
    Status,
    TestResult,
    VariantResult,
    Verdict,
)
from orchestrator.textfmt import printable
from orchestrator.verdicts import (
    STAGE_COLUMNS,
    Outcome,
    baseline_of,
    boot_failed,
    build_kind,
    labelled,
    not_reached,
    own_outcome,
    stage_outcome,
)

# Output kept in the XML per failing test: enough to triage in the CI page.
_LOG_LINES = 100
_LOG_BYTES = 16 * 1024
_CONSOLE_LINES = 60  # the panic and its trace, for a test that took the guest down

# Characters XML 1.0 cannot carry at all (control characters, lone
# surrogates): console text is full of escape sequences.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def clean(text: str) -> str:
    """Text as XML can carry it: impossible characters become visible \\xNN escapes."""
    return _NOT_XML.sub(lambda m: f"\\x{ord(m[0]):02x}", printable(text))


def render(run: RunResult, log_dirs: LogDirs | None = None) -> str:
    """The XML; logs are read only from inside `log_dirs` when given (common.read_tail)."""
    xml = build(run, log_dirs)
    # Re-parsed with the standard library so the output is the same whether
    # junitparser runs on lxml or ElementTree, and indented for people.
    root = ET.fromstring(xml.tostring())  # type: ignore[no-untyped-call]
    # junitparser counts skipped cases on <testsuites> too; the schema has no
    # such attribute there (each <testsuite> carries its own count).
    root.attrib.pop("skipped", None)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, "unicode") + "\n"


def build(run: RunResult, log_dirs: LogDirs | None = None) -> JUnitXml:
    incomplete = f" (incomplete: {run.incomplete})" if run.incomplete else ""
    xml = JUnitXml(clean(f"orchestrate {run.matrix}{incomplete}"))
    summaries = perf(run)
    for variant in run.variants:
        xml.add_testsuite(_suite(run, variant, summaries, log_dirs))
    xml.update_statistics()  # type: ignore[no-untyped-call]
    return xml


def _suite(
    run: RunResult,
    variant: VariantResult,
    summaries: list[MetricSummary],
    within: LogDirs | None,
) -> TestSuite:
    suite = TestSuite(clean(variant.name))
    suite.timestamp = clean(run.started)
    if run.host.get("hostname"):
        suite.hostname = clean(run.host["hostname"])
    props = _suite_properties(run, variant) + _perf_properties(variant.name, summaries)
    if variant.name == baseline_of(run):
        props += _batch_properties(run)
    for name, value in props:
        suite.add_property(clean(name), clean(value))
    cases = [_stage_case(variant, s, within) for s in variant.stages if s.stage in STAGE_COLUMNS]
    not_run = boot_failed(variant)
    cases += [
        _test_case(variant, t, label, _batch_tag(top), not_run, within, _quarantine(run, t))
        for top in variant.tests
        for label, t in labelled(top)
    ]
    if run.incomplete and not_reached(variant):
        cases.append(_incomplete_case(run, variant))
    suite.add_testcases(cases)
    return suite


def _suite_properties(run: RunResult, variant: VariantResult) -> list[tuple[str, str]]:
    props = [("incomplete", run.incomplete), ("base", variant.base), ("head", variant.head)]
    if variant.build is not None:
        props += [("build.tree", variant.build.tree), ("build.kind", build_kind(variant))]
    if variant.boot is not None:
        props += [("accel", variant.boot.accel), ("accel.reason", variant.boot.accel_reason)]
    props.append(("reproduce", reproduce(run, variant)))
    # Every report says what is quarantined, why and until when (flakes.py).
    props += [(f"quarantine.{q.test}", flakes.describe(q)) for q in run.quarantine]
    return [(k, v) for k, v in props if v]


def _perf_properties(variant: str, summaries: list[MetricSummary]) -> list[tuple[str, str]]:
    """The variant's estimates, and its comparison with the baseline, per metric."""
    props: list[tuple[str, str]] = []
    for s in summaries:
        row = next((r for r in s.rows if r.variant == variant), None)
        if row is None:
            continue
        e = row.estimate
        values: list[tuple[str, object]] = [
            ("n", e.n), ("median", e.median), ("ci_low", e.ci_low), ("ci_high", e.ci_high),
            ("cv", e.cv),
        ]  # fmt: skip
        c = row.comparison
        if c is not None:
            values += [
                ("baseline", c.baseline), ("ratio", c.ratio), ("ratio_ci_low", c.ci_low),
                ("ratio_ci_high", c.ci_high), ("p", c.p), ("verdict", c.text),
                ("detectable_drop", row.detectable),
            ]  # fmt: skip
        elif variant == s.baseline:
            values.append(("baseline", "itself"))
            values += _aa_values(s)
        props += [(f"perf.{s.name}.{k}", _value(v)) for k, v in values]
    return props


def _aa_values(s: MetricSummary) -> list[tuple[str, object]]:
    """The A/A control's measurement of the baseline's kernel: the batch's noise floor."""
    if s.floor is None or s.control is None:
        return []
    c = s.floor.comparison
    return [
        ("aa.control", s.control.variant), ("aa.n", s.control.n), ("aa.ratio", c.ratio),
        ("aa.ratio_ci_low", c.ci_low), ("aa.ratio_ci_high", c.ci_high), ("aa.p", c.p),
        ("aa.cv", s.floor.cv), ("aa.noisy", s.floor.reason or "no"),
    ]  # fmt: skip


def _batch_properties(run: RunResult) -> list[tuple[str, str]]:
    if not run.batches:
        return []
    props = [("perf.batches", str(len(run.batches)))]
    note = batch_note(run)
    return [*props, ("perf.batch_note", note)] if note else props


def _value(value: object) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _stage_case(variant: VariantResult, stage: StageResult, within: LogDirs | None) -> TestCase:
    case = TestCase(f"stage:{stage.stage.value}", clean(variant.name), round(stage.duration, 3))
    outcome = stage_outcome(stage)
    if stage.status is Status.SKIPPED:
        case.result = [Skipped(clean(stage.reason) or "not run")]
    elif outcome.bad:
        case.result = [Error(clean(stage.reason) or outcome.word, outcome.word)]
    details = _stage_details(variant, stage, within)
    if details:
        case.system_out = clean(details)
    return case


def _stage_details(variant: VariantResult, stage: StageResult, within: LogDirs | None) -> str:
    lines = [stage.reason] if stage.reason else []
    if stage.stage is Stage.APPLY:
        for p in variant.patches:
            lines.append(f"{p.outcome.value}: {p.subject} ({p.source})")
            if p.outcome is PatchOutcome.CONFLICT:
                lines += [f"  conflict in {f}" for f in p.files] + p.output.splitlines()
    elif stage.stage is Stage.KCONFIG:
        lines += [
            f"{m.symbol}: wanted {m.wanted}, got {m.got} ({m.fragment}): {m.reason}"
            for m in variant.kconfig
        ]
    elif stage.stage is Stage.BUILD and variant.build is not None:
        b = variant.build
        lines.append(f"{build_kind(variant)}; {len(b.warnings)} warnings; {b.artifact_dir}")
        if b.first_error:
            lines.append(f"first error: {b.first_error}")
        lines += b.warnings[:20]
    elif stage.stage is Stage.BOOT and variant.boot is not None:
        lines += _boot_details(variant, stage, within)
    return "\n".join(lines)


def _boot_details(variant: VariantResult, stage: StageResult, within: LogDirs | None) -> list[str]:
    assert variant.boot is not None
    boot = variant.boot
    lines = [f"accelerator: {boot.accel} ({boot.accel_reason})", f"ready in {boot.seconds:g}s"]
    if stage.status.bad:
        tail = (
            boot.console_tail
            or read_tail(boot.console_log, _LOG_LINES, _LOG_BYTES, within=within).text
        )
        lines += [f"console ({boot.console_log}):", tail]
    return lines


def _batch_tag(test: TestResult) -> str:
    """A rerun batch repeats the first batch's test names: CI tools need them apart."""
    return f" (batch {test.batch})" if test.batch > 1 else ""


def _incomplete_case(run: RunResult, variant: VariantResult) -> TestCase:
    """An interrupted run's variant that did not finish: an error, so CI cannot read it as green."""
    case = TestCase("run:incomplete", clean(variant.name), 0.0)
    missing = ", ".join(s.value for s in not_reached(variant))
    case.result = [Error(clean(f"not finished: {run.incomplete}"), "INCOMPLETE")]
    case.system_out = clean(f"the run stopped before these stages: {missing}")
    return case


def _quarantine(run: RunResult, test: TestResult) -> str:
    entry = flakes.entry_for(run, test)
    return flakes.describe(entry) if entry is not None else ""


def _test_case(
    variant: VariantResult,
    test: TestResult,
    label: str,
    tag: str,
    not_run: bool,
    within: LogDirs | None,
    quarantine: str = "",
) -> TestCase:
    """A test or subtest as a case named after its run (`label`: map_perf@3.lookup)."""
    case = TestCase(clean(label + tag), clean(variant.name), round(test.duration, 3))
    outcome = own_outcome(test, not_run=not_run)
    result = _result(test, outcome, quarantine)
    if result is not None:
        case.result = [result]
    for element in _earlier_runs(test, within):
        case.append(element)  # type: ignore[no-untyped-call]
    props = [(name, f"{value:g}") for name, value in test.metrics.items()]
    if test.attempts > 1:
        props[:0] = [("attempts", str(test.attempts)), ("failures", str(test.failures))]
    if quarantine:
        props.insert(0, ("quarantine", quarantine))
    if test.expected:
        props.insert(0, ("expected", test.expected))
    if props:
        # junitparser has no testcase properties API; the elements are its own.
        block = Properties()  # type: ignore[no-untyped-call]
        for name, value in props:
            block.add_property(Property(clean(name), clean(value)))
        case.append(block)  # type: ignore[no-untyped-call]
    out, err = _test_output(variant, test, label, outcome, within)
    if out:
        case.system_out = clean(out)
    if err:
        case.system_err = clean(err)
    return case


# (a later run met the expectation, the run was an ERROR) -> its element.
_INTERIM: dict[tuple[bool, bool], type[InterimResult]] = {
    (True, False): FlakyFailure,
    (True, True): FlakyError,
    (False, False): RerunFailure,
    (False, True): RerunError,
}


def _earlier_runs(test: TestResult, within: LogDirs | None) -> list[InterimResult]:
    """A retried test's earlier runs as Surefire writes reruns (the Jenkins schema has them):
    <flakyFailure>/<flakyError> when a later run met the expectation, else
    <rerunFailure>/<rerunError> beside the final <failure>.  Each carries the run's
    reason, and its output and splats in <system-out>."""
    flaky = test.verdict is Verdict.FLAKY
    out: list[InterimResult] = []
    for run in test.earlier_runs:
        error = run.verdict is Verdict.ERROR
        kind = _INTERIM[flaky, error]
        element = kind(clean(run.reason or run.verdict.value), run.verdict.value)
        lines = [_splat_text(s) for s in run.splats]
        logs = [read_tail(p, _LOG_LINES, _LOG_BYTES, within=within) for p in run.logs[:1]]
        lines += [f"{x.path} ({x.note}):\n{x.text}" for x in logs if x.text]
        if lines:
            element.system_out = clean("\n".join(lines))
        out.append(element)
    return out


def _result(
    test: TestResult, outcome: Outcome, quarantine: str = ""
) -> Failure | Error | Skipped | None:
    reason = test.reason or outcome.word
    if outcome is Outcome.QUARANTINED:
        # Non-blocking by the matrix's word: CI shows it as skipped, with why.
        why = f"{quarantine}; it missed: {test.verdict.value}: {reason}"
        return Skipped(clean(why), "quarantined")
    if outcome is Outcome.UNEXPECTED_PASS:
        return Failure(clean(f"expected {test.expected}, but it passed"), "unexpected-pass")
    if outcome is Outcome.UNEXPECTED_SKIP:
        why = f"expected {test.expected}, but it was skipped: {reason}"
        return Failure(clean(why), "unexpected-skip")
    if outcome is Outcome.ERROR:
        return Error(clean(reason), test.verdict.value)
    if outcome in (Outcome.SKIP, Outcome.NOT_RUN):
        return Skipped(clean(reason))
    if outcome.bad:
        return Failure(clean(reason), test.verdict.value)
    return None


def _test_output(
    variant: VariantResult,
    test: TestResult,
    label: str,
    outcome: Outcome,
    within: LogDirs | None,
) -> tuple[str, str]:
    out: list[str] = []
    if outcome is Outcome.XFAIL:
        out.append(f"expected failure: {test.verdict.value}" + _colon(test.reason))
    elif outcome is Outcome.PASS and test.verdict.value != "pass":
        out.append(f"{test.verdict.value} through its subtests" + _colon(test.reason))
    out += [_splat_text(s) for s in test.splats]
    err = ""
    if outcome.bad or outcome is Outcome.XFAIL:
        if outcome in (Outcome.CRASH, Outcome.KERNEL_HANG):
            path = console_for(variant, label, within=within)
            console = read_tail(path, _CONSOLE_LINES, _LOG_BYTES, within=within) if path else None
            if console is not None and console.text:
                out.append(f"console ({console.path}, {console.note}):\n{console.text}")
        logs = [read_tail(p, _LOG_LINES, _LOG_BYTES, within=within) for p in test.logs]
        out += [f"{x.path} ({x.note}):\n{x.text}" for x in logs[:1] if x.text]
        err = "\n".join(f"{x.path} ({x.note}):\n{x.text}" for x in logs[1:] if x.text)
    return "\n".join(out), err


def _splat_text(splat: Splat) -> str:
    when = f" at {splat.timestamp:.6f}s" if splat.timestamp is not None else ""
    times = f" \u00d7{splat.count}" if splat.count > 1 else ""  # printed that many times
    head = f"{splat.kind}{times}{when}: {splat.title}"
    return "\n".join([head, *(f"  {t}" for t in splat.trace)])


def _colon(text: str) -> str:
    return f": {text}" if text else ""
