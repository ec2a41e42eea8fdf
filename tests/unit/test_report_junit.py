"""JUnit output: structure, verdict mapping, and the Jenkins schema.

The sample runs here are shared with test_report_text.py and
test_report_html.py: every outcome a report knows, with hostile text in
every free-text field.
"""

from __future__ import annotations

import dataclasses
import json
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import xmlschema
from markupsafe import escape

from orchestrator import cli, results
from orchestrator.report import FILES, junit
from orchestrator.report.common import OUTSIDE, log_dirs, read_tail
from orchestrator.results import (
    BootInfo,
    BuildInfo,
    KconfigMismatch,
    PatchOutcome,
    PatchResult,
    RunResult,
    Splat,
    SplatKind,
    Stage,
    StageResult,
    Status,
    TestResult,
    VariantResult,
    Verdict,
)

DATA = Path(__file__).parent / "data"
XSD = DATA / "junit" / "jenkins-junit.xsd"
REAL = DATA / "results-bpf-reuse.json"

SCRIPT = "<script>alert(1)</script>"
JINJA = "{{ 7*7 }}"
HOSTILE = f"{SCRIPT} {JINJA} & \"quoted\" 'single' </pre></details>"
# Console text carries terminal escapes and NULs that XML cannot hold; JSON
# can even carry a lone surrogate.
CONTROL = "\x1b[31mred\x1b[0m \x00 \x07 \ud800"

P, F, S = Status.PASS, Status.FAIL, Status.SKIPPED


def _stages(*statuses: Status, reasons: dict[Stage, str] | None = None) -> tuple[StageResult, ...]:
    why = reasons or {}
    return tuple(
        StageResult(stage, status, why.get(stage, ""), duration=1.25)
        for stage, status in zip(Stage, statuses, strict=False)
    )


def _build(**kw: Any) -> BuildInfo:
    built = BuildInfo(tree="ab" * 20, config="cd" * 32, artifact_dir="/nowhere", cached=False)
    return dataclasses.replace(built, **kw)


def _boot(console: Path, **kw: Any) -> BootInfo:
    boot = BootInfo("tcg", "KVM unusable", 3.4, console_log=str(console))
    return dataclasses.replace(boot, **kw)


def _perf(name: str, values: list[float], logs: tuple[str, ...] = ()) -> list[TestResult]:
    return [
        TestResult(
            name,
            Verdict.PASS,
            duration=2.0,
            logs=logs,
            metrics={"ops_per_sec": v},
            subtests=(TestResult(f"{name}.lookup", Verdict.PASS, metrics={"ns_per_op": 1e9 / v}),),
            round=i,
            batch=1,
        )
        for i, v in enumerate(values, 1)
    ]


def _smoke(logs: tuple[str, ...] = ()) -> TestResult:
    subs = tuple(TestResult(f"smoke.{n}", Verdict.PASS) for n in ("bpffs", "kprobes"))
    return TestResult("smoke", Verdict.PASS, duration=0.14, logs=logs, subtests=subs)


def write_logs(folder: Path) -> dict[str, str]:
    """Log files with hostile content, one of them far over the excerpt cap."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "stdout": f"KTAP version 1\n# {HOSTILE}\n\x1b[31mred\x1b[0m \x00\nok 1 smoke\n",
        "stderr": "",
        "console": f"Linux version 6.1\n{HOSTILE}\n"
        "orchestrate: begin test crashy\nKernel panic - not syncing: " + HOSTILE + "\n",
        "big": "".join(f"build line {i} {'x' * 60}\n" for i in range(20_000)),
    }
    paths = {}
    for name, text in files.items():
        path = folder / f"{name}.log"
        path.write_bytes(text.encode() + (b"\xff\xfe not utf-8\n" if name == "stdout" else b""))
        paths[name] = str(path)
    (folder / "console-1.log").write_text(files["console"])
    paths["console"] = str(folder / "console-1.log")
    return paths


def sample_run(logs: Path) -> RunResult:
    """Seven variants: every stage outcome and every test outcome."""
    paths = write_logs(logs)
    console = Path(paths["console"])
    test_logs = (paths["stdout"], paths["stderr"])
    return RunResult(
        matrix="/work/matrix.yaml",
        started="2026-11-25T19:07:17+00:00",
        finished="2026-11-25T19:09:17+00:00",
        host={"hostname": "vm", "kernel": "6.1", "python": "3.11", "cpus": "2"},
        variants=(
            _upstream(console, test_logs),
            _pre_fix(console, test_logs),
            _gfp_zero(console, test_logs, paths),
            _conflict(),
            _broken(paths),
            _kconfig_miss(),
            _no_boot(console),
        ),
    )


def _upstream(console: Path, logs: tuple[str, ...]) -> VariantResult:
    return VariantResult(
        "upstream",
        _stages(P, P, P, P, P),
        base="1" * 40,
        head="1" * 40,
        build=_build(cached=True),
        boot=_boot(console),
        tests=(_smoke(logs), *_perf("map_perf", [1000.0, 1100.0, 1050.0], logs)),
    )


def _pre_fix(console: Path, logs: tuple[str, ...]) -> VariantResult:
    lock = TestResult("htab_reuse.lock", Verdict.FAIL, reason="stale value seen", expected="fail")
    htab = TestResult(
        "htab_reuse", Verdict.FAIL, 4.0, "1 of 2 subtests failed", logs=logs,
        subtests=(TestResult("htab_reuse.update", Verdict.PASS), lock),
    )  # fmt: skip
    patch = PatchResult(f"/p/0001-{HOSTILE}.patch", f"Revert {HOSTILE}", PatchOutcome.APPLIED)
    return VariantResult(
        "pre-fix",
        _stages(P, P, P, P, P),
        base="1" * 40,
        head="2" * 40,
        patches=(dataclasses.replace(patch, commit="2" * 40),),
        build=_build(shared_with="upstream", cached=True),
        boot=_boot(console),
        tests=(_smoke(), htab, *_perf("map_perf", [900.0, 950.0, 920.0, 2000.0])),
    )


def _gfp_zero(console: Path, logs: tuple[str, ...], paths: dict[str, str]) -> VariantResult:
    splat = Splat(SplatKind.PANIC, f"Kernel panic - not syncing: {HOSTILE}", 12.5,
                  ("dump_stack+0x10", f"{SCRIPT}+0x20"), test="crashy")  # fmt: skip
    tests = (
        TestResult("htab_reuse", Verdict.PASS, 3.0, expected="fail", logs=logs),
        TestResult(HOSTILE, Verdict.FAIL, 1.0, reason=f"exit status 1: {CONTROL}", logs=logs),
        TestResult("crashy", Verdict.CRASH, 2.0, reason=splat.title, splats=(splat,)),
        TestResult("hangy", Verdict.KERNEL_HANG, 60.0, reason="the guest stopped answering"),
        TestResult("sleepy", Verdict.TIMEOUT, 30.0, reason="killed after 30s", expected="timeout"),
        TestResult("broken_harness", Verdict.ERROR, reason="no KTAP output"),
        TestResult("skippy", Verdict.SKIP, reason="needs CONFIG_X"),
        TestResult("gone", Verdict.FAIL, logs=("/nowhere/gone.stdout", paths["big"])),
    )
    return VariantResult(
        "gfp-zero",
        _stages(P, P, P, P, F, reasons={Stage.TEST: "5 unexpected"}),
        base="1" * 40,
        head="3" * 40,
        build=_build(warnings=("w1", f"w2 {HOSTILE}")),
        boot=_boot(console),
        tests=tests,
    )


def _conflict() -> VariantResult:
    patch = PatchResult(
        "/p/0001-fork.patch", f"fork: {HOSTILE}", PatchOutcome.CONFLICT,
        files=("kernel/fork.c", f"{SCRIPT}.c"), output=f"error: patch failed: {HOSTILE}",
    )  # fmt: skip
    later = PatchResult("/p/0002-next.patch", "next", PatchOutcome.NOT_ATTEMPTED)
    why = f"0001-fork.patch (fork: {HOSTILE}) does not apply: conflict in kernel/fork.c"
    skipped = f"apply failed: {why}"
    reasons = {Stage.APPLY: why, Stage.KCONFIG: skipped, Stage.BUILD: skipped}
    reasons |= {Stage.BOOT: skipped, Stage.TEST: skipped}
    return VariantResult(
        "conflict", _stages(F, S, S, S, S, reasons=reasons), base="1" * 40, patches=(patch, later)
    )


def _broken(paths: dict[str, str]) -> VariantResult:
    error = "kernel/bpf/hashtab.c:3:5: error: 'boom' undeclared"
    stages = _stages(P, P, F, S, S, reasons={Stage.BUILD: error, Stage.BOOT: "build failed"})
    stages = (*stages[:2], dataclasses.replace(stages[2], logs=(paths["big"],)), *stages[3:])
    return VariantResult(
        "broken", stages, base="1" * 40, head="4" * 40,
        build=_build(first_error=error, warnings=("warning: unused",)),
    )  # fmt: skip


def _kconfig_miss() -> VariantResult:
    miss = KconfigMismatch(
        "CONFIG_NEEDS_DEP", "y", "n", "needs-dep.config", f"depends on {HOSTILE}"
    )
    reasons = {Stage.KCONFIG: "did not stick: CONFIG_NEEDS_DEP=y"}
    return VariantResult(
        "kconfig-miss", _stages(P, F, S, S, S, reasons=reasons), base="1" * 40, kconfig=(miss,)
    )


def _no_boot(console: Path) -> VariantResult:
    reason = "no SSH within 60s"
    tail = f"[    1.0] {HOSTILE}\n[    2.0] VFS: Unable to mount root fs"
    stages = _stages(P, P, P, F, S, reasons={Stage.BOOT: reason, Stage.TEST: "boot failed"})
    not_run = f"not run: boot failed: {reason}"
    return VariantResult(
        "no-boot", stages, base="1" * 40, head="5" * 40, build=_build(cached=True),
        boot=_boot(console, seconds=0.0, console_tail=tail),
        tests=(TestResult("smoke", Verdict.ERROR, reason=not_run),),
    )  # fmt: skip


def all_pass(logs: Path) -> RunResult:
    run = sample_run(logs)
    return dataclasses.replace(run, variants=run.variants[:1])


INTERRUPTED = "interrupted (SIGTERM) after 7 of 20 units"


def partial_run(logs: Path) -> RunResult:
    """A run stopped by a signal: one variant tested (no TEST stage yet: the
    perf rounds were cut short), one built, one only applied."""
    run = sample_run(logs)
    upstream = run.variants[0]
    tested = dataclasses.replace(upstream, stages=upstream.stages[:4], tests=upstream.tests[:3])
    built = dataclasses.replace(
        upstream, name="built", stages=upstream.stages[:3], boot=None, tests=()
    )
    applied = VariantResult("applied", _stages(P), base="1" * 40, head="6" * 40)
    return dataclasses.replace(
        run, variants=(tested, built, applied), finished="", incomplete=INTERRUPTED
    )


def real_run() -> RunResult:
    """A results.json from a real run of the default matrix; its logs are gone."""
    return results.read(REAL)


# --- the tests ---------------------------------------------------------------


@pytest.fixture(scope="module")
def schema() -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(str(XSD))


def _cases(xml: str) -> dict[tuple[str, str], ET.Element]:
    root = ET.fromstring(xml)
    return {(c.get("classname", ""), c.get("name", "")): c for c in root.iter("testcase")}


@pytest.mark.parametrize("which", ["all-pass", "sample", "real", "empty", "partial"])
def test_output_validates_against_the_jenkins_schema(
    which: str, tmp_path: Path, schema: xmlschema.XMLSchema
) -> None:
    runs: dict[str, Callable[[], RunResult]] = {
        "all-pass": lambda: all_pass(tmp_path),
        "sample": lambda: sample_run(tmp_path),
        "real": real_run,
        "empty": lambda: RunResult("m.yaml", "", "", ()),
        "partial": lambda: partial_run(tmp_path),
    }
    xml = junit.render(runs[which]())
    schema.validate(xml)


def test_the_schema_rejects_what_jenkins_rejects(schema: xmlschema.XMLSchema) -> None:
    # The schema is only worth something if it is strict.
    assert not schema.is_valid('<testsuites><testsuite name="a"/></testsuites>')  # no counts
    bad_time = '<testsuite name="a" tests="0" failures="0" errors="0" time="1e-05"/>'
    assert not schema.is_valid(f"<testsuites>{bad_time}</testsuites>")
    assert not schema.is_valid('<testsuites skipped="1"/>')


def test_a_suite_per_variant_and_counts(tmp_path: Path) -> None:
    root = ET.fromstring(junit.render(sample_run(tmp_path)))
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    assert list(suites) == [
        "upstream", "pre-fix", "gfp-zero", "conflict", "broken", "kconfig-miss", "no-boot",
    ]  # fmt: skip
    up = suites["upstream"]
    assert (up.get("failures"), up.get("errors"), up.get("skipped")) == ("0", "0", "0")
    # 4 stages + smoke with 2 subtests + 3 repeats with one subtest each
    assert up.get("tests") == str(4 + 3 + 6)
    props = {p.get("name"): p.get("value") for p in up.find("properties") or ()}
    assert props["reproduce"] == "orchestrate reproduce results.json upstream"
    assert props["accel"] == "tcg"


def test_stage_failures_are_errors_and_later_stages_skipped(tmp_path: Path) -> None:
    cases = _cases(junit.render(sample_run(tmp_path)))
    apply = cases[("conflict", "stage:apply")]
    error = apply.find("error")
    assert error is not None and error.get("type") == "APPLY-FAIL"
    assert "does not apply" in (error.get("message") or "")
    out = apply.findtext("system-out") or ""
    assert "conflict in kernel/fork.c" in out and SCRIPT in out
    for stage in ("kconfig", "build", "boot"):
        skipped = cases[("conflict", f"stage:{stage}")].find("skipped")
        assert skipped is not None and "apply failed" in (skipped.get("message") or "")
    build = cases[("broken", "stage:build")].find("error")
    assert build is not None and build.get("type") == "BUILD-FAIL"
    assert "'boom' undeclared" in (build.get("message") or "")
    kconfig = cases[("kconfig-miss", "stage:kconfig")]
    assert "CONFIG_NEEDS_DEP" in (kconfig.findtext("system-out") or "")
    boot = cases[("no-boot", "stage:boot")]
    assert boot.find("error") is not None
    assert "Unable to mount root fs" in (boot.findtext("system-out") or "")
    # Tests that never started after a failed boot are skipped, not errors.
    smoke = cases[("no-boot", "smoke")].find("skipped")
    assert smoke is not None and "not run" in (smoke.get("message") or "")


def test_verdicts_map_to_junit_results(tmp_path: Path) -> None:
    cases = _cases(junit.render(sample_run(tmp_path)))

    def result(variant: str, name: str) -> tuple[str, str | None, str | None]:
        case = cases[(variant, name)]
        found = [e for e in case if e.tag in ("failure", "error", "skipped")]
        if not found:
            return ("pass", None, None)
        return (found[0].tag, found[0].get("type"), found[0].get("message"))

    assert result("gfp-zero", "crashy")[:2] == ("failure", "crash")
    assert result("gfp-zero", "hangy") == (
        "failure", "kernel-hang", "the guest stopped answering"
    )  # fmt: skip
    assert result("gfp-zero", "sleepy") == ("pass", None, None)  # declared timeout
    assert result("gfp-zero", "broken_harness") == ("error", "error", "no KTAP output")
    assert result("gfp-zero", "skippy")[0] == "skipped"
    assert result("gfp-zero", "htab_reuse") == (
        "failure", "unexpected-pass", "expected fail, but it passed"
    )  # fmt: skip
    assert result("gfp-zero", HOSTILE)[:2] == ("failure", "fail")


def test_expected_failure_passes_with_property_and_note(tmp_path: Path) -> None:
    cases = _cases(junit.render(sample_run(tmp_path)))
    lock = cases[("pre-fix", "htab_reuse.lock")]
    assert [e.tag for e in lock] == ["properties", "system-out"]
    props = {p.get("name"): p.get("value") for p in lock.iter("property")}
    assert props == {"expected": "fail"}
    assert "expected failure: fail: stale value seen" in (lock.findtext("system-out") or "")
    # The parent failed only through that subtest, so it passes too.
    parent = cases[("pre-fix", "htab_reuse")]
    assert parent.find("failure") is None
    assert "through its subtests" in (parent.findtext("system-out") or "")


def test_metrics_times_splats_and_logs(tmp_path: Path) -> None:
    cases = _cases(junit.render(sample_run(tmp_path)))
    perf = cases[("upstream", "map_perf@2")]
    assert perf.get("time") == "2.0"
    assert {p.get("name"): p.get("value") for p in perf.iter("property")} == {"ops_per_sec": "1100"}
    assert cases[("upstream", "map_perf@2.lookup")].find("properties") is not None
    crash = cases[("gfp-zero", "crashy")].findtext("system-out") or ""
    assert "panic at 12.500000s: Kernel panic" in crash and f"  {SCRIPT}+0x20" in crash
    assert "orchestrate: begin test crashy" in crash  # the console where it died
    failed = cases[("gfp-zero", HOSTILE)]
    assert "ok 1 smoke" in (failed.findtext("system-out") or "")
    gone = cases[("gfp-zero", "gone")]
    assert "build line 19999" in (gone.findtext("system-err") or "")  # the tail of a big log


def test_hostile_strings_survive_literally(tmp_path: Path) -> None:
    xml = junit.render(sample_run(tmp_path))
    root = ET.fromstring(xml)  # well-formed despite NULs and escapes
    names = [c.get("name") for c in root.iter("testcase")]
    assert HOSTILE in names
    assert "<script>" not in xml  # escaped in the file...
    failure = _cases(xml)[("gfp-zero", HOSTILE)].find("failure")
    assert failure is not None
    message = failure.get("message") or ""
    assert "\\x1b[31mred\\x1b[0m \\x00 \\x07 \\ud800" in message  # ...and visible when read


def test_an_incomplete_run_is_never_green(tmp_path: Path) -> None:
    xml = junit.render(partial_run(tmp_path))
    root = ET.fromstring(xml)
    assert root.get("name") == f"orchestrate /work/matrix.yaml (incomplete: {INTERRUPTED})"
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    assert list(suites) == ["upstream", "built", "applied"]
    for suite in suites.values():
        props = {p.get("name"): p.get("value") for p in suite.iter("property")}
        assert props["incomplete"] == INTERRUPTED
    cases = _cases(xml)
    # What ran keeps its verdict; nothing that did not run is made up.
    assert cases[("upstream", "map_perf@2")].find("failure") is None
    assert ("applied", "stage:kconfig") not in cases and ("built", "stage:boot") not in cases
    for variant, missing in (("upstream", "test"), ("built", "boot, test"),
                             ("applied", "kconfig, build, boot, test")):  # fmt: skip
        case = cases[(variant, "run:incomplete")]
        error = case.find("error")
        assert error is not None and error.get("type") == "INCOMPLETE"
        assert error.get("message") == f"not finished: {INTERRUPTED}"
        assert case.findtext("system-out") == f"the run stopped before these stages: {missing}"
        assert suites[variant].get("errors") == "1"
    assert root.get("errors") == "3"
    done = ET.fromstring(junit.render(sample_run(tmp_path)))  # a finished run: none of it
    assert not [p for p in done.iter("property") if p.get("name") == "incomplete"]
    assert not [c for c in done.iter("testcase") if c.get("name") == "run:incomplete"]


def test_real_results_without_their_logs() -> None:
    xml = junit.render(real_run())
    root = ET.fromstring(xml)
    assert {s.get("name") for s in root.iter("testsuite")} == {"upstream", "pre-fix", "gfp-zero"}
    assert root.get("failures") == "0" and root.get("errors") == "0"


def test_real_fixture_points_nowhere() -> None:
    # The fixture must not depend on files of the machine it was made on.
    data = json.loads(REAL.read_text())
    for variant in data["variants"]:
        for stage in variant["stages"]:
            assert all(p.startswith("/nonexistent/") for p in stage["logs"])


# --- logs: only from inside the run directory ----------------------------------------


SECRET = "-----BEGIN OPENSSH PRIVATE KEY-----"


def pointing_out(run_dir: Path, secret: Path) -> RunResult:
    """The sample run in run_dir, its failing test's logs and a console naming files outside.

    gfp-zero's failing test names the secret itself, a link to it inside the
    run directory, and its real log by a path relative to the run directory;
    a console-9.log links out to a console that shows crashy's begin marker.
    Its reason carries a right-to-left override.
    """
    secret.write_text(f"{SECRET}\n")
    run = sample_run(run_dir / "logs")
    (run_dir / "logs" / "link.log").symlink_to(secret)
    console = secret.with_name("console.log")
    console.write_text(f"orchestrate: begin test crashy\n{SECRET} console\n")
    (run_dir / "logs" / "console-9.log").symlink_to(console)
    logs = (str(secret), str(run_dir / "logs" / "link.log"), "logs/stdout.log")
    gfp = run.variants[2]
    tests = tuple(
        dataclasses.replace(t, logs=logs, reason="exit 1: \u202egnp.exe")
        if t.name == HOSTILE
        else t
        for t in gfp.tests
    )
    variants = list(run.variants)
    variants[2] = dataclasses.replace(gfp, tests=tests)
    return dataclasses.replace(run, variants=tuple(variants))


def test_logs_outside_the_run_directory_are_not_read(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run = pointing_out(run_dir, tmp_path / "id_ed25519")
    xml = junit.render(run, log_dirs=log_dirs(run_dir))
    assert SECRET not in xml
    failed = _cases(xml)[("gfp-zero", HOSTILE)]
    assert "ok 1 smoke" in (failed.findtext("system-err") or "")  # inside, by a relative path
    crash = _cases(xml)[("gfp-zero", "crashy")].findtext("system-out") or ""
    assert f"console ({run_dir / 'logs' / 'console-1.log'}, " in crash  # -9 links out
    assert SECRET in junit.render(run)  # a renderer called without the rule reads what it is told


def test_read_tail_opens_nothing_outside_and_no_fifo(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "logs").mkdir(parents=True)
    os.mkfifo(run_dir / "logs" / "fifo.log")  # opening it for reading would wait for a writer
    within = log_dirs(run_dir)
    assert read_tail(str(run_dir / "logs" / "fifo.log"), within=within).missing == (
        "unreadable: not a regular file"
    )
    for path in ("/etc/passwd", "/dev/zero", "../../etc/passwd", str(run_dir) + "/../x"):
        assert read_tail(path, within=within).missing == OUTSIDE
    # Nor elsewhere in the run directory: results.json saved in a home directory
    # must not open ~/.ssh to it.
    (run_dir / ".ssh").mkdir()
    (run_dir / ".ssh" / "id_ed25519").write_text(SECRET)
    for path in (".ssh/id_ed25519", str(run_dir / ".ssh" / "id_ed25519"), "logs/../.ssh/x"):
        assert read_tail(path, within=within).missing == OUTSIDE
    assert read_tail("a\x00b", within=within).missing.startswith("unreadable")
    assert read_tail("\ud800", within=within).missing.startswith("unreadable")


def test_report_reads_logs_only_beside_the_results(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    source = run_dir / "results.json"
    run = pointing_out(run_dir, tmp_path / "id_ed25519")
    # The reproduce command quotes the matrix path for a shell: it is shown all the same.
    results.write(dataclasses.replace(run, matrix="/m/\x1b]0;owned\x07.yaml"), source)
    out = tmp_path / "elsewhere"  # the rule follows the results, not where reports go
    assert cli.main(["report", str(source), "--out", str(out)]) == 0
    for name in FILES.values():
        text = (out / name).read_text()
        assert SECRET not in text and "\u202e" not in text and "\x1b" not in text, name
        assert ("<U+202E>" if name.endswith(".txt") else "&lt;U+202E&gt;") in text, name
    page = (out / "report.html").read_text()
    for name in ("id_ed25519", "link.log"):
        assert f"{name} — {escape(OUTSIDE)}" in page
    assert "ok 1 smoke" in page


def _counted(run: RunResult, count: int) -> RunResult:
    """The run with the crashy test's panic printed `count` times."""
    variants = []
    for v in run.variants:
        tests = tuple(
            dataclasses.replace(
                t, splats=tuple(dataclasses.replace(s, count=count) for s in t.splats)
            )
            for t in v.tests
        )
        variants.append(dataclasses.replace(v, tests=tests))
    return dataclasses.replace(run, variants=tuple(variants))


def test_a_counted_splat_says_how_many_times(tmp_path: Path) -> None:
    crash = _cases(junit.render(_counted(sample_run(tmp_path), 3)))[("gfp-zero", "crashy")]
    assert "panic \u00d73 at 12.500000s: Kernel panic" in (crash.findtext("system-out") or "")
    once = _cases(junit.render(sample_run(tmp_path)))[("gfp-zero", "crashy")]
    assert "\u00d7" not in (once.findtext("system-out") or "")
