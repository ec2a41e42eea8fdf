"""Faults around the build: hostile series, a torn cache, a full disk, runs that
collide, a dead git's lock.  The sandbox case builds the real kernel tree."""

from __future__ import annotations

import difflib
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from orchestrator import history, proc
from orchestrator.git import git
from orchestrator.kernel import source
from orchestrator.results import Stage, Status
from tests.conftest import REPO
from tests.faults.harness import CLI, FRAGMENTS, MARKER, fake_matrix, read_results, record, run_cli
from tests.integration.test_runner import _commit_patch, project  # noqa: F401  (a fixture)

pytestmark = pytest.mark.e2e
TARBALL = Path("/usr/src/linux-source-6.1.tar.xz")


def test_a_hostile_series_on_the_real_tree_is_contained(
    kernel: Path, e2e_cache: Path, tmp_path: Path
) -> None:
    """Row 1: a patch to kernel/bpf/Makefile whose $(shell) writes outside the
    build, reads ~/.ssh and opens a socket; the variant still gets its verdict."""
    home, outside = tmp_path / "home", tmp_path / "outside"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_test").write_text("SECRET KEY\n")
    outside.mkdir()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    port = listener.getsockname()[1]
    evil = (
        f"EVIL := $(shell echo pwned > {outside}/pwned; "
        f"cat {home}/.ssh/id_test > {outside}/stolen; "
        f"python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", {port}), 3)' "
        f"&& echo connected > {outside}/net)\n"
    )
    # The patch, made against the tree's own kernel/bpf/Makefile.
    repo = next((e2e_cache / "trees").glob("debian-*.git"))
    before = git(repo, "show", f"{source.BASE_REF}:kernel/bpf/Makefile").stdout
    after = before.replace("obj-y := core.o\n", f"obj-y := core.o\n{evil}", 1)
    diff = difflib.unified_diff(
        before.splitlines(keepends=True), after.splitlines(keepends=True),
        "a/kernel/bpf/Makefile", "b/kernel/bpf/Makefile",
    )  # fmt: skip
    patch = tmp_path / "0001-evil.patch"
    patch.write_text(
        "From: Mallory <m@example.org>\nSubject: [PATCH] bpf: a helpful build tweak\n\n---\n"
        "diff --git a/kernel/bpf/Makefile b/kernel/bpf/Makefile\n" + "".join(diff)
    )
    matrix = tmp_path / "matrix.yaml"
    matrix.write_text(
        f"name: evil\ntree: {{debian: {TARBALL}}}\n"
        f"kconfig: {{base: tinyconfig, fragments: [{FRAGMENTS}]}}\n"
        f"report: {{dir: {tmp_path / 'reports'}}}\n"
        f"variants:\n  - name: evil\n    series: [{patch}]\n"
    )
    started = time.monotonic()
    ran = proc.run(
        [*CLI, matrix, "--until", "build", "--cache-dir", e2e_cache, "--out", tmp_path / "out"],
        timeout=1800,
        env={"HOME": str(home), MARKER: "sandbox"},
        cwd=REPO,
    )
    v = read_results(tmp_path / "out", ran).variants[0]
    escaped = [f.name for f in outside.iterdir()]
    build = v.stage(Stage.BUILD)
    verdict = (
        f"build {build.status.value if build else 'not reached'}; escaped: {escaped or 'nothing'}"
    )
    record("a series whose kernel/bpf/Makefile runs $(shell) to write outside, read ~/.ssh, "
           "open a socket", verdict, ran.returncode, time.monotonic() - started,
           "sandbox")  # fmt: skip
    assert escaped == [], escaped
    with pytest.raises(TimeoutError):  # nobody connected
        listener.accept()
    listener.close()
    assert [s.status for s in v.stages] == [Status.PASS] * 3, v.stages


def test_torn_cache_records_and_odd_paths_in_patches(project: Path, tmp_path: Path) -> None:  # noqa: F811
    """Row 4: a cache record cut short by a killed run is redone; a patch that adds
    `a:b/Kconfig` is that variant's problem, not a traceback."""
    tree = project.parent / "linux"
    (tree / "a:b").mkdir()
    (tree / "a:b" / "Kconfig").write_text("config ODD\n\tbool\n")
    git(tree, "add", "-A")
    git(tree, "commit", "-q", "-m", "odd")
    git(tree, "format-patch", "-q", "-1", "-o", project / "patches" / "odd", "HEAD")
    assert list((project / "patches" / "odd").glob("*.patch"))
    git(tree, "reset", "-q", "--hard", "HEAD~1")
    matrix = fake_matrix(project, "  - name: base\n  - name: odd\n    series: patches/odd\n")
    cache = tmp_path / "cache"
    first = run_cli([matrix, "--until", "build", "--cache-dir", cache, "--out", tmp_path / "1"],
                    "torn")  # fmt: skip
    assert first.returncode in (0, 1), first.stdout + first.stderr
    for record_file in (cache / "records").rglob("*.json"):
        record_file.write_text(record_file.read_text()[: len(record_file.read_text()) // 2])
    started = time.monotonic()
    again = run_cli([matrix, "--until", "build", "--cache-dir", cache, "--out", tmp_path / "2"],
                    "torn")  # fmt: skip
    run = read_results(tmp_path / "2", again)
    odd = run.variants[1]
    record("cache records cut in half (a killed run's torn writes); a patch adding a:b/Kconfig",
           f"records redone; odd: {odd.status.value}", again.returncode,
           time.monotonic() - started, "torn")  # fmt: skip
    assert "Traceback" not in again.stderr and again.returncode in (0, 1), again.stderr
    assert [s.status for s in run.variants[0].stages] == [Status.PASS] * 3


def test_a_full_disk_during_a_build(project: Path, tmp_path: Path) -> None:  # noqa: F811
    """Row 5: the compiler says No space left on device: exit 3, not BUILD-FAIL."""
    tree = project.parent / "linux"
    full = "return 0; /* BUILD_ENOSPC */"
    _commit_patch(tree, project / "patches" / "full", "kernel/fork.c", "return 0", full, "full")
    matrix = fake_matrix(project, "  - name: base\n  - name: full\n    series: patches/full\n")
    started = time.monotonic()
    ran = run_cli([matrix, "--until", "build", "--cache-dir", tmp_path / "cache", "--out",
                   tmp_path / "out"], "enospc")  # fmt: skip
    run = read_results(tmp_path / "out", ran)
    record("disk full during a build (fake kernel)", "infrastructure fault: "
           + ran.stderr.strip().splitlines()[-1][:60], ran.returncode,
           time.monotonic() - started, "enospc")  # fmt: skip
    assert ran.returncode == 3 and "disk full while building" in ran.stderr
    errors = [line for line in ran.stderr.splitlines() if line.startswith("orchestrate: error")]
    assert len(errors) == 1 and "Traceback" not in ran.stderr and run.incomplete


def test_runs_that_collide(project: Path, tmp_path: Path) -> None:  # noqa: F811
    """Row 10: two runs of a matrix started together; a stale index.lock of a dead git."""
    matrix = fake_matrix(project, "  - name: base\n")
    started = time.monotonic()
    both = [
        subprocess.Popen(
            [*CLI, str(matrix), "--until", "build", "--cache-dir", str(tmp_path / f"cache{i}")],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for i in (1, 2)
    ]
    codes = [p.wait(300) for p in both]
    run_dirs = sorted(p.name for p in (project / "reports" / "fake").iterdir() if p.is_dir())
    with sqlite3.connect(project / "reports" / history.FILENAME) as db:
        rows = db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    record("two runs of one matrix started at once", f"{len(run_dirs)} run dirs, {rows} history "
           "rows", max(codes), time.monotonic() - started, "collide")  # fmt: skip
    assert codes == [0, 0] and len(run_dirs) == 2 and rows == 2, (run_dirs, rows)

    repo = next((tmp_path / "cache1" / "trees").glob("*.git"))
    (repo / "index.lock").write_text("")
    (repo / "HEAD.lock").write_text("")
    started = time.monotonic()
    ran = run_cli([matrix, "--until", "build", "--cache-dir", tmp_path / "cache1"], "lock")
    record("a stale index.lock and HEAD.lock of a killed git in the cache", "cleared; PASS"
           if ran.returncode == 0 else "FAILED", ran.returncode, time.monotonic() - started,
           "lock")  # fmt: skip
    assert ran.returncode == 0, ran.stdout + ran.stderr
