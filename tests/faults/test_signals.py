"""orchestrate receiving SIGINT, SIGTERM, SIGHUP and SIGKILL during a build, a
boot and a test: the exit, what is written, what is left running, whether
the cache is intact, and (after SIGKILL) that the next run cleans up."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from orchestrator import results
from tests.conftest import REPO
from tests.faults.harness import (
    SMOKE,
    Launch,
    guest_is_running,
    guest_matrix,
    qemu_running,
    read_results,
    record,
    reports_written,
    run_cli,
    sha256,
    wait_leftovers_gone,
)
from tests.integration.test_runner import _slow_project, project  # noqa: F401  (a fixture)

pytestmark = pytest.mark.e2e
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGKILL)


def _expect_stopped(
    launch: Launch, signum: signal.Signals, sent: float, out: Path, phase: str
) -> None:
    code = launch.wait(120)
    left = wait_leftovers_gone(launch.marker)
    written = (out / "results.json").is_file()
    partial = results.read(out / "results.json").incomplete if written else ""
    verdict = f"results: {partial.split(' after ')[0] or 'none'}"
    if signum is not signal.SIGKILL:
        verdict += "; reports written" if reports_written(out) else "; NO REPORTS"
    record(f"{signum.name} during {phase}", verdict, code, time.monotonic() - sent, launch.marker)
    assert left == [], left
    if signum is signal.SIGKILL:
        assert code == -signal.SIGKILL
        # What was done is on disk, marked unfinished (written after every unit).
        assert written and partial.startswith("running:"), partial
    else:
        assert code == 130, launch.output()[-2000:]
        assert "Traceback" not in launch.output()
        assert partial.startswith(
            f"interrupted ({'Ctrl-C' if signum is signal.SIGINT else signum.name})"
        )
        assert reports_written(out)


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: s.name)
def test_signal_during_a_build(project: Path, tmp_path: Path, signum: signal.Signals) -> None:  # noqa: F811
    """The fake tree's slow file keeps make busy; the rerun builds what a clean build does."""
    matrix = _slow_project(project)
    cache, out = tmp_path / "cache", tmp_path / "out"
    marker = f"build-{signum.name}"
    argv: list[str | Path] = [matrix, "--until", "build", "--cache-dir", cache, "--out", out]
    launch = Launch(argv, tmp_path / "cli.log", marker, env={"FAKELINUX_SLOW": "1"})
    launch.wait_for(lambda: "[slow] build: ... - log:" in launch.output(), 120, "the slow build")
    time.sleep(1)
    _expect_stopped(launch, signum, launch.signal(signum), out, "a build (fake kernel)")
    # The cache is intact: the rerun's artifacts are a clean build's, in another cache.
    again = run_cli([*argv[:-1], tmp_path / "again"], marker)
    clean = run_cli([matrix, "--until", "build", "--cache-dir", tmp_path / "clean", "--out",
                     tmp_path / "clean-out"], marker)  # fmt: skip
    assert again.returncode == 0 and clean.returncode == 0, again.stdout + clean.stdout

    def artifacts(run_dir: Path) -> dict[str, str]:
        run = results.read(run_dir / "results.json")
        return {
            v.name: sha256(Path(v.build.artifact_dir) / "vmlinux") for v in run.variants if v.build
        }

    assert artifacts(tmp_path / "again") == artifacts(tmp_path / "clean-out")


def test_kill_9_during_a_real_build_then_rerun(
    kernel: Path, e2e_cache: Path, tmp_path: Path
) -> None:
    """The issue's test: no orphan, and the rerun's bzImage is a clean build's
    (the shared kernel's, built in another cache)."""
    cache = tmp_path / "cache"
    cache.mkdir()
    for shared in ("trees", "ccache"):  # the imported tree and the compiler cache
        (cache / shared).symlink_to((e2e_cache / shared).resolve())
    argv: list[str | Path] = [REPO / "matrix.yaml", "--only", "upstream", "--until", "build",
                              "--cache-dir", cache]  # fmt: skip
    launch = Launch([*argv, "--out", tmp_path / "out1"], tmp_path / "cli.log", "kill9-build")
    launch.wait_for(lambda: bool(list(cache.glob("work/build/*/make-running"))), 900, "make")
    time.sleep(10)  # into the compiling (a build from a warm ccache takes about a minute)
    sent = launch.signal(signal.SIGKILL)
    code = launch.wait(60)
    left = wait_leftovers_gone("kill9-build", timeout=15)
    assert list(cache.glob("work/build/*/make-running")), "the build was not under way"
    rerun = run_cli([*argv, "--out", tmp_path / "out2"], "kill9-build")
    (variant,) = read_results(tmp_path / "out2").variants
    assert variant.build is not None
    same = sha256(Path(variant.build.artifact_dir) / "bzImage") == sha256(kernel.parent / "bzImage")
    record("SIGKILL during a real kernel build, then a rerun",
           f"rerun {'PASS' if rerun.returncode == 0 else 'FAILED'}; bzImage "
           f"{'identical to' if same else 'DIFFERENT from'} a clean build's", code,
           time.monotonic() - sent, "kill9-build")  # fmt: skip
    assert code == -signal.SIGKILL and left == [], left
    assert rerun.returncode == 0, rerun.stdout[-3000:]
    assert not variant.build.cached and same


def _guest_phase(tmp_path: Path, e2e_cache: Path, signum: signal.Signals, phase: str) -> None:
    tests = "- {name: long, kind: ktap, command: sleep 120, timeout: 300}\n" + SMOKE % "smoke"
    matrix = guest_matrix(tmp_path, tests)
    out = tmp_path / "out"
    marker = f"{phase}-{signum.name}"
    launch = Launch([matrix, "--cache-dir", e2e_cache, "--out", out], tmp_path / "cli.log", marker)
    if phase == "boot":
        launch.wait_for(lambda: qemu_running(marker), 600, "QEMU")
    else:
        launch.wait_for(guest_is_running(out, "long", marker), 600, "the test's start")
    _expect_stopped(launch, signum, launch.signal(signum), out, f"a {phase}")
    assert not qemu_running(marker)


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: s.name)
def test_signal_during_a_boot(
    kernel: Path, e2e_cache: Path, tmp_path: Path, signum: signal.Signals
) -> None:
    _guest_phase(tmp_path, e2e_cache, signum, "boot")


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: s.name)
def test_signal_during_a_test(
    kernel: Path, e2e_cache: Path, tmp_path: Path, signum: signal.Signals
) -> None:
    _guest_phase(tmp_path, e2e_cache, signum, "test")


def test_the_killed_runs_leave_the_cache_usable(
    kernel: Path, e2e_cache: Path, tmp_path: Path
) -> None:
    """After all the above: the shared kernel is unchanged and a plain run passes."""
    before = sha256(kernel.parent / "bzImage")
    matrix = guest_matrix(tmp_path, SMOKE % "smoke")
    started = time.monotonic()
    ran = run_cli([matrix, "--cache-dir", e2e_cache, "--out", tmp_path / "out"], "after-all")
    record("a plain run after every signal case", "PASS" if ran.returncode == 0 else "FAIL",
           ran.returncode, time.monotonic() - started, "after-all")  # fmt: skip
    assert ran.returncode == 0 and sha256(kernel.parent / "bzImage") == before
