"""The guest layer's fault handling, for real: a hung test, a crashing test,
a panicking boot, a boot that never gets ready, SIGTERM mid-boot.

The kernel is the default matrix's upstream build (cached after the first
e2e test that builds it).
"""

from __future__ import annotations

import signal
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from orchestrator import proc, results
from orchestrator.results import Stage, Status, Verdict

from .conftest import REPO

pytestmark = pytest.mark.e2e


def write_matrix(
    directory: Path, *, cmdline: str = "", boot_timeout: int = 60, tests: str, expect: str = "{}"
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    frags = ", ".join(
        str(REPO / "kconfigs" / f)
        for f in ("base.config", "vm.config", "bpf.config", "debug.config")
    )
    matrix = directory / "matrix.yaml"
    matrix.write_text(
        textwrap.dedent(f"""\
        name: faults
        kconfig: {{fragments: [{frags}]}}
        guest:
          cmdline: "{cmdline}"
          boot_timeout: {boot_timeout}
          selftests: {REPO / "selftests"}
        variants:
          - name: upstream
            expect: {expect}
        tests:
        """)
        + textwrap.indent(textwrap.dedent(tests), "  ")
    )  # fmt: skip
    return matrix


def run(matrix: Path, cache: Path, out: Path) -> tuple[proc.CmdResult, results.RunResult]:
    outcome = proc.run(
        [sys.executable, "-m", "orchestrator.cli", matrix, "--cache-dir", cache, "--out", out],
        timeout=1800,
    )
    return outcome, results.read(out / "results.json")


def our_qemus(marker: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["name", "cmdline"]):
        if "qemu" in (p.info["name"] or "") and marker in " ".join(p.info["cmdline"] or []):
            found.append(p)
    return found


SMOKE = "- {name: %s, kind: ktap, command: /opt/selftests/smoke.sh, timeout: 60}\n"


def test_hung_and_crashing_tests(e2e_cache: Path, tmp_path: Path) -> None:
    tests = (
        "- {name: sleepy, kind: ktap, command: sleep 300, timeout: 3}\n"
        + SMOKE % "usable"
        + "- {name: crash, kind: ktap, command: echo c > /proc/sysrq-trigger, timeout: 30}\n"
        + SMOKE % "rebooted"
    )
    matrix = write_matrix(tmp_path, tests=tests, expect="{sleepy: timeout, crash: fail}")
    outcome, run_ = run(matrix, e2e_cache, tmp_path / "out")
    # Every outcome is what the matrix declared: exit 0.
    assert outcome.returncode == 0, outcome.stdout + outcome.stderr
    (v,) = run_.variants
    by = {t.name: t for t in v.tests}
    assert by["sleepy"].verdict is Verdict.TIMEOUT and by["sleepy"].expected == "timeout"
    assert by["usable"].verdict is Verdict.PASS  # the same guest, still usable
    crash = by["crash"]
    assert crash.verdict is Verdict.CRASH, crash
    assert any(s.kind == "panic" and s.test == "crash" for s in crash.splats), crash.splats
    assert "sysrq" in crash.reason
    assert by["rebooted"].verdict is Verdict.PASS  # a fresh guest after the crash
    assert (tmp_path / "out" / "logs" / "upstream" / "console-2.log").exists()
    assert our_qemus(str(tmp_path)) == []


def test_panicking_boot_is_boot_fail(e2e_cache: Path, tmp_path: Path) -> None:
    # Without a usable rdinit the kernel falls back to init=, and panics when that fails too.
    panics = "rdinit=/nonexistent init=/nonexistent"
    matrix = write_matrix(tmp_path, cmdline=panics, tests=SMOKE % "smoke")
    outcome, run_ = run(matrix, e2e_cache, tmp_path / "out")
    assert outcome.returncode == 1
    (v,) = run_.variants
    boot = v.stage(Stage.BOOT)
    assert boot is not None and boot.status is Status.FAIL
    assert v.boot is not None and "panic" in (boot.reason + v.boot.console_tail).lower()
    assert v.stage(Stage.TEST).status is Status.SKIPPED  # type: ignore[union-attr]
    # QEMU exited on the panic: the verdict is the panic, not the boot timeout.
    assert "no ready marker" not in boot.reason


def test_boot_without_ready_marker_times_out(e2e_cache: Path, tmp_path: Path) -> None:
    # "1000" is not a kernel parameter, so it becomes init's argument: sleep 1000.
    matrix = write_matrix(
        tmp_path, cmdline="rdinit=/bin/sleep 1000", boot_timeout=10, tests=SMOKE % "smoke"
    )
    outcome, run_ = run(matrix, e2e_cache, tmp_path / "out")
    assert outcome.returncode == 1
    boot = run_.variants[0].stage(Stage.BOOT)
    assert boot is not None and boot.status is Status.FAIL
    assert "no ready marker within 10s" in boot.reason
    assert our_qemus(str(tmp_path)) == []


def test_sigterm_mid_boot_leaves_no_qemu(e2e_cache: Path, tmp_path: Path) -> None:
    matrix = write_matrix(tmp_path, tests=SMOKE % "smoke")
    out = tmp_path / "out"
    argv: list[str | Path] = [sys.executable, "-m", "orchestrator.cli", matrix]
    argv += ["--cache-dir", e2e_cache, "--out", out]
    with proc.spawn(argv, log=tmp_path / "cli.log") as cli:
        deadline = time.monotonic() + 300
        while not our_qemus(str(out)) and time.monotonic() < deadline and cli.poll() is None:
            time.sleep(0.05)
        assert our_qemus(str(out)), (tmp_path / "cli.log").read_text()
        cli_process = psutil.Process(cli.pid)
        cli_process.send_signal(signal.SIGTERM)
        assert cli.wait(30) == 130, (tmp_path / "cli.log").read_text()
    assert our_qemus(str(out)) == []
