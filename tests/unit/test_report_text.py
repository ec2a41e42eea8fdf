"""The text summary, what the renderers share, and `orchestrate report`."""

from __future__ import annotations

import dataclasses
import json
import shlex
from pathlib import Path

import pytest

from orchestrator import cli, results, textfmt
from orchestrator.report import FILES, write_reports
from orchestrator.report import text as summary
from orchestrator.report.common import read_tail
from orchestrator.results import RunResult, TestResult, Verdict
from tests.unit.test_report_html import _with_about
from tests.unit.test_report_junit import (
    HOSTILE,
    INTERRUPTED,
    REAL,
    all_pass,
    partial_run,
    real_run,
    sample_run,
)


@pytest.fixture()
def sample(tmp_path: Path) -> RunResult:
    return sample_run(tmp_path / "logs")


def _long_names(run: RunResult) -> RunResult:
    """Names and paths far wider than a mail line."""
    long = "x" * 150
    variant = dataclasses.replace(run.variants[2], name=f"variant-{long}")
    test = TestResult(f"test-{long}", Verdict.TIMEOUT, reason=f"killed {long}")
    variant = dataclasses.replace(variant, tests=(*variant.tests, test))
    return dataclasses.replace(run, matrix=f"/{long}/m.yaml", variants=(*run.variants, variant))


# --- the text summary ----------------------------------------------------------


def test_every_line_fits_72_columns(sample: RunResult) -> None:
    for run in (sample, real_run(), _long_names(sample)):
        for line in summary.render(run).splitlines():
            assert len(line) <= 72, line


def test_header(sample: RunResult) -> None:
    text = summary.render(sample)
    assert text.startswith("orchestrate report: matrix.yaml\n")
    assert "7 variants: 5 failed (gfp-zero, conflict, broken, kconfig-miss, no-boot)" in text
    assert "matrix    /work/matrix.yaml" in text
    assert "run       2026-11-25T19:07:17+00:00 to 2026-11-25T19:09:17+00:00" in text
    assert "base      111111111111" in text and "accel     tcg: KVM unusable" in text
    real = summary.render(real_run())
    assert "3 variants: all as expected" in real and "base      cb94e8e52588" in real


def test_an_incomplete_run_says_so_first(tmp_path: Path) -> None:
    text = summary.render(partial_run(tmp_path))
    head = text[: text.index("=" * 72)]
    assert " ".join(head.split()) == (
        "orchestrate report: matrix.yaml 3 variants: all as expected so far "
        f"INCOMPLETE: {INTERRUPTED}; the results are partial "
        "(not finished: upstream, built, applied)."
    )
    table = text[text.index("Verdicts") :]
    applied = next(line for line in table.splitlines() if line.startswith("applied "))
    assert applied.split() == ["applied", "PASS", "-", "-", "-", "-", "-"]  # no made-up cells
    assert all(len(line) <= 72 for line in text.splitlines())
    assert "INCOMPLETE" not in summary.render(sample_run(tmp_path))


def test_verdict_table_in_words(sample: RunResult) -> None:
    text = summary.render(_long_names(sample))
    table = text[text.index("Verdicts") : text.index("Failures")]
    for word in (
        "PASS", "FAIL", "XFAIL (expected)", "UNEXPECTED-PASS", "SKIP", "TIMEOUT",
        "KERNEL-HANG", "CRASH", "BOOT-FAIL", "BUILD-FAIL", "APPLY-FAIL", "KCONFIG-FAIL",
        "ERROR", "NOT-RUN", "PASS x3", "PASS x4",
    ):  # fmt: skip
        assert word in table, word
    rows = [line for line in table.splitlines() if line.startswith("conflict ")]
    assert rows[0].split()[:5] == ["conflict", "APPLY-FAIL", "NOT-RUN", "NOT-RUN", "NOT-RUN"]


def test_failures_say_what_and_where(sample: RunResult) -> None:
    text = summary.render(sample)
    failures = text[text.index("Failures\n") : text.index("Expected failures")]
    flat = " ".join(failures.split())
    assert "conflict in: kernel/fork.c, <script>alert(1)</script>.c" in flat
    assert "BUILD-FAIL: kernel/bpf/hashtab.c:3:5: error: 'boom' undeclared" in flat
    assert "panic: Kernel panic - not syncing: <script>alert(1)</script>" in flat
    assert "htab_reuse: UNEXPECTED-PASS - expected fail, but it passed" in flat
    assert "BOOT-FAIL: no SSH within 60s console: [ 2.0] VFS: Unable to mount root fs" in flat
    assert "CONFIG_NEEDS_DEP: wanted y, got n (needs-dep.config)" in flat
    assert "upstream" not in failures and "pre-fix:" not in failures  # they passed
    assert (
        "Expected failures\n-----------------\npre-fix: htab_reuse.lock: fail as declared" in text
    )


def test_hostile_text_is_literal_and_controls_visible(sample: RunResult) -> None:
    text = summary.render(sample)
    assert HOSTILE in " ".join(text.split())
    assert "\x1b" not in text and "\x00" not in text
    assert "\\x1b[31mred\\x1b[0m \\x00 \\x07" in text


def _shell_words(lines: list[str]) -> list[str]:
    """The words a POSIX shell reads: backslash-newline joins lines."""
    return shlex.split("\n".join(lines).replace("\\\n", ""))


def test_reproduce_commands_paste_back_whole(sample: RunResult) -> None:
    text = summary.render(_long_names(sample))
    blocks = text.split("  reproduce:\n")[1:]
    assert len(blocks) == 6
    for block in blocks:
        lines = block.splitlines()
        command = [lines[0]]
        while command[-1].endswith("\\"):
            command.append(lines[len(command)])
        argv = _shell_words(command)
        built = argv[:3] == ["orchestrate", "reproduce", "results.json"]
        assert built or (argv[:3] == ["orchestrate", "run", argv[2]] and "--only" in argv)


def test_command_splits_words_longer_than_a_line() -> None:
    word = "/" + "y" * 150
    lines = summary.command(shlex.join(["orchestrate", "run", word]), "    ")
    assert all(len(line) <= 72 for line in lines)
    assert _shell_words(lines) == ["orchestrate", "run", word]


def test_metrics_are_medians_per_variant(sample: RunResult) -> None:
    text = summary.render(sample)
    metrics = text[text.index("Metrics (median of repeats)") :]
    assert "upstream\n  map_perf ops_per_sec: 1050 (n=3, 1000..1100)" in metrics
    assert "pre-fix\n  map_perf ops_per_sec: 935 (n=4, 900..2000)" in metrics
    assert "Metrics" not in summary.render(real_run())  # nothing measured, no section


def test_grid_splits_wide_tables() -> None:
    header = ["variant", *(f"column{i}" for i in range(12))]
    lines = textfmt.grid(header, [["v1", *["PASS"] * 12]])
    assert max(map(len, lines)) <= 72
    assert sum(1 for line in lines if line.startswith("variant")) == 2


# --- what the renderers share ------------------------------------------------


def test_read_tail(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.write_bytes(b"".join(b"line %d\n" % i for i in range(1000)) + b"\xff\x1b[0m")
    tail = read_tail(str(log), lines=10)
    assert tail.truncated and tail.text.splitlines()[0] == "line 991"
    assert tail.text.endswith("\ufffd\\x1b[0m")
    assert read_tail(str(tmp_path / "gone")).missing.startswith("not found")
    assert read_tail(str(tmp_path)).missing.startswith("unreadable")
    assert read_tail("").missing == "no log recorded"
    small = read_tail(str(log), lines=5000)
    assert not small.truncated and small.note.endswith("kB")


def test_write_reports(tmp_path: Path) -> None:
    run = all_pass(tmp_path / "logs")
    written = write_reports(run, tmp_path / "out", ("json", "junit", "html", "text"))
    assert [p.name for p in written] == ["junit.xml", "report.html", "summary.txt"]
    assert write_reports(run, tmp_path / "out2", ("json",)) == []
    with pytest.raises(ValueError, match="pdf"):
        write_reports(run, tmp_path / "out3", ("pdf",))


# --- orchestrate report --------------------------------------------------------


def test_report_command_renders_every_format(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "run" / "results.json"
    source.parent.mkdir()
    source.write_text(REAL.read_text())
    assert cli.main(["report", str(source)]) == 0
    out = capsys.readouterr().out
    for name in FILES.values():
        assert (source.parent / name).stat().st_size > 0
        assert str(source.parent / name) in out
    assert cli.main(["report", str(source), "--out", str(tmp_path / "elsewhere")]) == 0
    assert sorted(p.name for p in (tmp_path / "elsewhere").iterdir()) == sorted(FILES.values())


def test_report_command_renders_hostile_results(tmp_path: Path) -> None:
    source = tmp_path / "results.json"
    results.write(sample_run(tmp_path / "logs"), source)
    assert cli.main(["report", str(source)]) == 0
    page = (tmp_path / "report.html").read_text()
    assert "<script" not in page and "\\ud800" in page  # a lone surrogate does not stop it


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ("{not json", "not JSON"),
        ("[1, 2]", "not a results file"),
        ('{"matrix": "m", "started": "", "finished": "", "variants": [{"name": 3}]}',
         "not a results file"),
        (json.dumps({"matrix": "m", "started": "", "finished": "", "variants": [],
                     "schema": 99}), "results schema 99"),
    ],
)  # fmt: skip
def test_report_command_rejects_bad_results(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, message: str
) -> None:
    path = tmp_path / "results.json"
    if content is not None:
        path.write_text(content)
    assert cli.main(["report", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"orchestrate: error: {path}: ") and message in err
    assert "Traceback" not in err
    assert not (tmp_path / "report.html").exists()


def test_about_says_what_each_subtest_shows(sample: RunResult) -> None:
    run = _with_about(sample)
    text = summary.render(run)
    assert all(len(line) <= 72 for line in text.splitlines())
    section = text[text.index("What the subtests show\n") : text.index("Failures\n")]
    flat = " ".join(section.split())
    assert "htab_reuse.update: problem 2: another key's element" in flat
    assert "htab_reuse.lock: problem 1: <script>alert(1)</script> lock reset" in flat
    assert text.index("Verdicts") < text.index("What the subtests show")
    assert "What the subtests show" not in summary.render(sample)


def test_a_failing_subtest_says_what_it_shows(sample: RunResult) -> None:
    pre = sample.variants[1]
    htab = next(t for t in pre.tests if t.name == "htab_reuse")
    lock = dataclasses.replace(htab.subtests[1], expected="", about="problem 1: lock reset")
    htab = dataclasses.replace(htab, subtests=(htab.subtests[0], lock))
    tests = tuple(htab if t.name == "htab_reuse" else t for t in pre.tests)
    pre = dataclasses.replace(pre, tests=tests)
    run = dataclasses.replace(sample, variants=(sample.variants[0], pre, *sample.variants[2:]))
    failures = summary.render(run).split("Failures\n")[1]
    assert "  htab_reuse.lock: FAIL - stale value seen\n    (problem 1: lock reset)\n" in failures


def test_a_counted_splat_says_how_many_times(sample: RunResult) -> None:
    from tests.unit.test_report_junit import _counted

    flat = " ".join(summary.render(_counted(sample, 250)).split())
    assert "panic \u00d7250: Kernel panic - not syncing: <script>" in flat
    assert "\u00d7" not in summary.render(sample)
