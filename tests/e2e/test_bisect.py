"""The first bad patch for real: a three-patch series on Debian's 6.1 tree whose
second patch makes the kernel log a line that a tiny KTAP test fails on.  A run
with `bisect:` builds the steps incrementally in the shared build directory,
boots each twice-tested step and names patch 2; `orchestrate reproduce` of the
variant's test shows the failure again.

Kept cheap: each patch touches one file (a comment, a pr_notice, a comment),
so every step is an incremental build; 2 runs per step.
"""

from __future__ import annotations

import difflib
import sys
import textwrap
from pathlib import Path

import pytest

from orchestrator import config, proc, results
from orchestrator.git import git
from orchestrator.kernel import source
from orchestrator.results import StepStatus, Verdict

from .conftest import REPO

pytestmark = pytest.mark.e2e
MARKER = "orchestrate-bisect-marker"
# KTAP: fails when the kernel logged MARKER.
TEST = (
    "echo 'KTAP version 1'; echo 1..1; "
    f"if dmesg | grep -q {MARKER}; then echo 'not ok 1 quiet_boot'; "
    "else echo 'ok 1 quiet_boot'; fi"
)


def _patch(repo: Path, base: str, path: str, old: str, new: str, n: int, subject: str) -> str:
    text = git(repo, "show", f"{base}:{path}").stdout
    assert text.count(old) == 1, (path, old)
    diff = difflib.unified_diff(
        text.splitlines(keepends=True),
        text.replace(old, new).splitlines(keepends=True),
        f"a/{path}",
        f"b/{path}",
    )
    return (
        "From: Bisect Test <bisect@example.org>\n"
        f"Subject: [PATCH {n}/3] {subject}\n\n"
        f"{subject}.\n\n---\n"
        f"diff --git a/{path} b/{path}\n" + "".join(diff)
    )


def _write(directory: Path, cache: Path) -> Path:
    frags = ", ".join(
        str(REPO / "kconfigs" / f)
        for f in ("base.config", "vm.config", "bpf.config", "debug.config")
    )
    directory.mkdir(parents=True, exist_ok=True)
    matrix = directory / "matrix.yaml"
    matrix.write_text(
        textwrap.dedent(f"""\
        name: bisect
        kconfig: {{fragments: [{frags}]}}
        guest: {{boot_timeout: 60}}
        bisect: {{enabled: true, runs: 2}}
        report: {{baseline: upstream}}
        tests:
          - name: quiet
            kind: ktap
            timeout: 60
            command: "{TEST}"
        variants:
          - name: upstream
          - name: three
            series: patches
        """)
    )
    patches = directory / "patches"
    patches.mkdir(exist_ok=True)
    src = source.prepare(config.load(matrix).tree, cache)
    for n, (path, old, new, subject) in enumerate(
        (
            ("kernel/bpf/memalloc.c", "/* Any context", "/* Any (really) context",
             "bpf: memalloc: a comment"),
            ("init/main.c", '\tpr_info("Run %s as init process\\n", init_filename);\n',
             '\tpr_info("Run %s as init process\\n", init_filename);\n'
             f'\tpr_notice("{MARKER}\\n");\n', "init: log a marker"),
            ("kernel/bpf/hashtab.c", "/* Copyright (c) 2011-2014", "/* Copyright (C) 2011-2014",
             "bpf: hashtab: a comment"),
        ),
        start=1,
    ):  # fmt: skip
        text = _patch(src.repo, src.base, path, old, new, n, subject)
        (patches / f"000{n}-{subject.split(':')[0]}.patch").write_text(text)
    return matrix


def test_bisect_names_the_patch_that_breaks_a_test_and_reproduce_shows_it(
    e2e_cache: Path, tmp_path: Path
) -> None:
    matrix = _write(tmp_path / "proj", e2e_cache)
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "orchestrator.cli"]
    ran = proc.run([*argv, matrix, "--cache-dir", e2e_cache, "--out", out], timeout=3000)
    assert ran.returncode == 1, ran.stdout[-3000:] + ran.stderr[-3000:]
    run = results.read(out / "results.json")
    by = {v.name: v for v in run.variants}
    assert [t.verdict for t in by["upstream"].tests] == [Verdict.PASS]
    assert [t.verdict for t in by["three"].tests] == [Verdict.FAIL]
    (found,) = by["three"].bisect
    assert found.first_bad == 2, found
    assert found.subject == "init: log a marker"
    steps = [(s.patches, s.status, s.failures, s.runs) for s in found.steps]
    assert steps == [(1, StepStatus.GOOD, 0, 2), (2, StepStatus.BAD, 2, 2)], found.steps
    assert found.summary.startswith(
        "patch 2 (init: log a marker): bad in 2/2 runs; good in 0/2 runs at patch 1;"
    )
    assert "First bad patch: quiet" in (out / "report.html").read_text()
    # The steps were incremental builds in the shared build dir: a few files each.
    for k in (1, 2):
        log = out / "bisect" / "three" / "quiet" / f"step-{k}" / "logs" / "three" / "build.log"
        compiled = [line for line in log.read_text().splitlines() if line.strip().startswith("CC ")]
        assert 0 < len(compiled) < 20, (k, compiled)

    again = proc.run(
        [*argv, "reproduce", out / "results.json", "three", "quiet", "--cache-dir", e2e_cache],
        timeout=600,
    )
    assert again.returncode == 1, again.stdout[-3000:] + again.stderr[-3000:]
    assert "(from the run)" in again.stdout
    assert "== quiet: FAIL" in again.stdout and "not ok 1 quiet_boot" in again.stdout
