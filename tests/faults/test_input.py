"""Hostile or broken input: matrices, results files, patch text, closed pipes.

No kernel boots here; the runs that build use the fake kernel tree.
"""

from __future__ import annotations

import dataclasses
import json
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from orchestrator import results
from tests.conftest import REPO
from tests.faults.harness import CLI, fake_matrix, record, run_cli
from tests.integration.test_runner import _commit_patch, project  # noqa: F401  (a fixture)

pytestmark = pytest.mark.e2e
SAMPLE = REPO / "tests" / "unit" / "data" / "results-bpf-reuse.json"


def test_huge_and_deep_matrices_are_bounded_errors(tmp_path: Path) -> None:
    for size, line in ((50 << 20, "huge.yaml: "), (5 << 20, "huge.yaml:4")):
        huge = tmp_path / "huge.yaml"
        huge.write_text(f"name: m\ntree: {{path: /x}}\nvariants:\n  - name: {'v' * size}\n")
        started = time.monotonic()
        out = run_cli([huge], "huge-name")
        row = record(f"matrix: a {size >> 20} MiB variant name", "bad input, named",
                     out.returncode, time.monotonic() - started, "huge-name")  # fmt: skip
        assert out.returncode == 2 and line in out.stderr, out.stderr[:500]
        assert len(out.stdout) + len(out.stderr) < 10_000 and not row.leftovers

    deep = tmp_path / "deep.yaml"
    deep.write_text("name: m\nvariants: " + "[" * 2000 + "]" * 2000 + "\n")
    started = time.monotonic()
    out = run_cli([deep], "deep")
    record("matrix: a 2,000-deep YAML list", "bad input, named", out.returncode,
           time.monotonic() - started, "deep")  # fmt: skip
    assert out.returncode == 2 and "deep.yaml:" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("name", ["a..b", "v.lock"])
def test_names_git_rejects_are_bad_input(project: Path, name: str) -> None:  # noqa: F811
    matrix = fake_matrix(project, f"  - name: {name}\n")
    started = time.monotonic()
    out = run_cli([matrix, "--until", "build", "--cache-dir", project / "cache"], f"name-{name}")
    record(f"variant name `{name}`", "bad input: git's branch rules", out.returncode,
           time.monotonic() - started, f"name-{name}")  # fmt: skip
    assert out.returncode == 2 and "name" in out.stderr, out.stderr


def _mutations(data: object, rng: random.Random) -> object:
    """data with one value somewhere replaced by a value of another type."""
    paths: list[tuple[object, object]] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                paths.append((node, k))
                walk(v)
        elif isinstance(node, list):
            for i, v in enumerate(node):
                paths.append((node, i))
                walk(v)

    walk(data)
    parent, key = rng.choice(paths)
    parent[key] = rng.choice([None, 7, -1.5, "x", [], {}, [[[]]], True])  # type: ignore[index]
    return data


def test_hostile_results_files_through_report(tmp_path: Path) -> None:
    """Row 7 through the real CLI (the 400-mutation fuzz is in-process in
    tests/unit/test_results_check.py); and a foreign log path is not read."""
    rng = random.Random(7)
    codes: dict[int | None, int] = {}
    started = time.monotonic()
    for i in range(25):
        case = tmp_path / f"m{i}"
        case.mkdir()
        data = _mutations(json.loads(SAMPLE.read_text()), rng)
        (case / "results.json").write_text(json.dumps(data))
        out = run_cli(["report", case / "results.json"], "fuzz")
        assert "Traceback" not in out.stderr, out.stderr
        codes[out.returncode] = codes.get(out.returncode, 0) + 1
    record("25 type-mutated results.json through `orchestrate report`",
           f"exit codes {dict(sorted(codes.items(), key=str))}", max(codes, key=lambda c: c or 0),
           (time.monotonic() - started) / 25, "fuzz")  # fmt: skip
    assert set(codes) <= {0, 2}

    secret = tmp_path / "home" / ".ssh" / "id_ed25519"
    secret.parent.mkdir(parents=True)
    secret.write_text("PRIVATE KEY MATERIAL\n")
    run = results.read(SAMPLE)
    v = run.variants[0]
    assert v.boot is not None
    boot = dataclasses.replace(v.boot, console_log=str(secret))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    hostile = dataclasses.replace(run, variants=(dataclasses.replace(v, boot=boot),))
    (foreign / "results.json").write_text(json.dumps(results.to_data(hostile)))
    started = time.monotonic()
    out = run_cli(["report", foreign / "results.json"], "foreign")
    leaked = any("PRIVATE KEY" in p.read_text() for p in foreign.iterdir() if p.is_file())
    record("results.json naming ~/.ssh/id_ed25519 as a log",
           "rendered; the file not read" if not leaked else "LEAKED", out.returncode,
           time.monotonic() - started, "foreign")  # fmt: skip
    assert out.returncode == 0 and not leaked, out.stderr


def test_escapes_in_a_patch_subject_do_not_reach_the_terminal(project: Path) -> None:  # noqa: F811
    tree = project.parent / "linux"
    patch = _commit_patch(tree, project / "patches" / "evil", "kernel/fork.c", "return 0",
                          "return 2", "fork: two")  # fmt: skip
    text = patch.read_text()
    evil = "=?utf-8?q?fork=3A_=1B]0;pwned=07_=E2=80=AEtwo=1B[2J?="
    patch.write_text(text.replace("Subject: [PATCH] fork: two", f"Subject: [PATCH] {evil}"))
    patch.write_text(patch.read_text().replace("-\treturn 0;", "-\treturn 9;"))  # a conflict
    matrix = fake_matrix(project, "  - name: evil\n    series: patches/evil\n")
    started = time.monotonic()
    out = run_cli([matrix, "--until", "build", "--cache-dir", project / "cache"], "escapes")
    shown = out.stdout + out.stderr
    report = next((project / "reports").glob("fake/*/report.html")).read_text()
    record("patch subject with RFC 2047 terminal escapes and U+202E",
           "APPLY conflict; escapes shown as text", out.returncode,
           time.monotonic() - started, "escapes")  # fmt: skip
    assert out.returncode == 1, shown
    assert "\x1b" not in shown and "\x07" not in shown and "\u202e" not in shown, shown
    assert "\u202e" not in report and "\x1b" not in report
    assert "pwned" in report  # the subject is shown, as text


def test_a_closed_pipe_is_quiet(project: Path) -> None:  # noqa: F811
    started = time.monotonic()
    plan = subprocess.Popen(
        [*CLI, "plan", str(project / "matrix.yaml"), "--cache-dir", str(project / "cache")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
    )
    assert plan.stdout is not None and plan.stderr is not None
    plan.stdout.readline()
    plan.stdout.close()  # `| head -1`
    err = plan.stderr.read().decode()
    code = plan.wait(60)
    record("`orchestrate plan X | head -1`", "quiet exit", code, time.monotonic() - started,
           "pipe")  # fmt: skip
    assert code in (0, 128 + signal.SIGPIPE) and err == "", err


def test_the_suite_sets_up_the_signals_it_tests(tmp_path: Path) -> None:
    """Row 13: the SIGINT test passes from a shell that ignores SIGINT (nohup, CI)."""
    started = time.monotonic()
    test = "tests/unit/test_proc.py::test_interrupt_kills_the_child"
    ran = subprocess.run(
        [CLI[0], "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    record("the test suite run with SIGINT ignored (nohup)", "the SIGINT test passes",
           ran.returncode, time.monotonic() - started, "nohup")  # fmt: skip
    assert ran.returncode == 0, ran.stdout[-2000:]
