"""Faults in the guest, on the real kernel the e2e tests share: panics, hangs,
lockups, leaks, floods, a dead sshd, QEMU killed from outside.

Each test declares the verdict a fault should get (``expect:``), so the run
exits 0 exactly when every verdict is the right one.
"""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from orchestrator.results import Stage, Status, TestResult, Verdict
from orchestrator.vm.qemu import Machine
from tests.e2e.test_guest import (  # noqa: F401  (fixtures)
    SpecFactory,
    accel,
    guest_image,
    make_spec,
    short_dir,
)
from tests.faults.harness import (
    SMOKE,
    Launch,
    guest_is_running,
    guest_matrix,
    qemu_running,
    qemus,
    read_results,
    record,
    reports_written,
    run_cli,
    wait_leftovers_gone,
)

pytestmark = pytest.mark.e2e

# Console lines as the kernel prints them, written where the console watcher reads.
KMEMLEAK = "kmemleak: 2 new suspected memory leaks (see /sys/kernel/debug/kmemleak)"
HARD_LOCKUP = "Kernel panic - not syncing: Watchdog detected hard LOCKUP on cpu 1"
WARN = "WARNING: CPU: 0 PID: 1 at kernel/bpf/memalloc.c:%d bpf_mem_free+0x10/0x20"


# What a test that saw nothing wrong prints (a fault must come from the console).
KTAP_OK = "; echo 'TAP version 13'; echo 1..1; echo ok 1 - done"


def _console(line: str) -> str:
    return f"echo '{line}' > /dev/console" + KTAP_OK


GUEST_FAULTS = [
    # (test name, shell command, timeout, expected verdict, what the fault is)
    ("hung", "sleep 300", 5, "timeout", "a test that hangs (sleep 300, timeout 5s)"),
    ("sshd_killed", "killall dropbear; sleep 5", 30, "error", "sshd killed in the guest"),
    ("kmemleak", _console(KMEMLEAK), 30, "fail", "a kmemleak report on the console"),
    # The panic line, then the guest stops as a panicked one does (sysrq o: power off).
    (
        "lockup",
        f"echo '{HARD_LOCKUP}' > /dev/console; sleep 1; echo o > /proc/sysrq-trigger",
        30,
        "crash",
        "panic: Watchdog detected hard LOCKUP",
    ),
    (
        "warn_storm",
        f"i=0; while [ $i -lt 20000 ]; do echo '{WARN % 42}'; i=$((i+1)); done > /dev/console"
        + KTAP_OK,
        300,
        "fail",
        "a storm of 20,000 identical WARNs",
    ),
    ("crash", "echo c > /proc/sysrq-trigger", 30, "crash", "a test that crashes the kernel"),
]


def _by_name(tests: tuple[TestResult, ...]) -> dict[str, TestResult]:
    return {t.name: t for t in tests}


def test_guest_faults_get_their_verdicts(kernel: Path, e2e_cache: Path, tmp_path: Path) -> None:
    tests = "".join(
        f"- {{name: {name}, kind: ktap, command: {cmd!r}, timeout: {timeout}}}\n"
        + SMOKE % f"after_{name}"
        for name, cmd, timeout, _, _ in GUEST_FAULTS
    )
    # The matrix declares the faults the guest tests catch; a fault of the test
    # machinery itself (error) cannot be declared and fails the run.
    declared = {n: "fail" if v == "crash" else v for n, _, _, v, _ in GUEST_FAULTS if v != "error"}
    expect = "{" + ", ".join(f"{n}: {v}" for n, v in declared.items()) + "}"
    exit_code = 1 if len(declared) < len(GUEST_FAULTS) else 0
    matrix = guest_matrix(tmp_path, tests, expect=expect)
    out = tmp_path / "out"
    peak = _PeakRss()
    with peak:
        ran = run_cli([matrix, "--cache-dir", e2e_cache, "--out", out], "guest-faults")
    run = read_results(out, ran)
    by = _by_name(run.variants[0].tests)
    for name, _, _, want, fault in GUEST_FAULTS:
        got = by[name]
        record(fault, f"{got.verdict.value}: {got.reason[:80]}", ran.returncode, got.duration,
               "guest-faults")  # fmt: skip
        assert got.verdict.value == want, (name, got)
        # The guest after each fault is usable again: the same one or a fresh boot.
        assert by[f"after_{name}"].verdict is Verdict.PASS, by[f"after_{name}"]
    assert ran.returncode == exit_code, ran.stdout[-3000:] + ran.stderr[-3000:]
    assert {s.kind.value for s in by["kmemleak"].splats} == {"kmemleak"}
    assert {s.kind.value for s in by["lockup"].splats} >= {"panic"}
    storm = by["warn_storm"].splats
    # Counted, not repeated.  A line or two may be torn by a kernel message printed
    # in the middle of it (the console is shared): they are lost, not miscounted.
    assert len(storm) == 1 and 19_990 <= storm[0].count <= 20_000, storm
    sizes = {f: (out / f).stat().st_size for f in ("report.html", "junit.xml")}
    assert max(sizes.values()) <= 2 << 20, sizes
    assert reports_written(out) and wait_leftovers_gone("guest-faults") == []
    record("(the same run) the storm in the reports; orchestrate's peak RSS",
           f"one splat x{storm[0].count}; report.html {sizes['report.html'] >> 10} kB, junit.xml "
           f"{sizes['junit.xml'] >> 10} kB; {peak.mib:.0f} MiB",
           ran.returncode, ran.duration, "guest-faults")  # fmt: skip


class _PeakRss:
    """orchestrate's RSS, sampled: the peak, and what it was when ``start()`` first
    held (the cost of a fault is the peak less that)."""

    def __init__(self, start: Callable[[], bool] = lambda: True) -> None:
        self.peak = 0
        self.base: int | None = None
        self._start = start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    @property
    def mib(self) -> float:
        return self.peak / (1 << 20)

    @property
    def cost_mib(self) -> float:
        return (self.peak - (self.base or 0)) / (1 << 20)

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.wait(0.2):
            for p in me.children(recursive=False):
                try:
                    if "orchestrator.cli" in " ".join(p.cmdline()):
                        rss = p.memory_info().rss
                        self.peak = max(self.peak, rss)
                        if self.base is None and self._start():
                            self.base = self.peak = rss
                except psutil.Error:
                    continue

    def __enter__(self) -> _PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_console_and_output_floods_are_capped(
    kernel: Path, e2e_cache: Path, tmp_path: Path
) -> None:
    tests = (
        "- {name: stdout_flood, kind: ktap, timeout: 600,"
        " command: \"head -c 300000000 /dev/zero | tr '\\\\0' x\"}\n"
        "- {name: console_flood, kind: ktap, timeout: 600,"
        " command: \"head -c 16000000 /dev/zero | tr '\\\\0' y > /dev/console\"}\n"
        + SMOKE
        % "after"
    )
    matrix = guest_matrix(tmp_path, tests)
    out = tmp_path / "out"
    # The cost is counted from the moment the flooding test starts.
    with _PeakRss(guest_is_running(out, "stdout_flood", "flood")) as peak:
        ran = run_cli([matrix, "--cache-dir", e2e_cache, "--out", out], "flood")
    logs = sum(f.stat().st_size for f in (out / "logs").rglob("*") if f.is_file())
    by = _by_name(read_results(out, ran).variants[0].tests)
    record("a guest writing 300 MB to a test's stdout and 16 MB to its console",
           f"{by['stdout_flood'].verdict.value}/{by['console_flood'].verdict.value}; "
           f"logs {logs >> 20} MiB, RSS +{peak.cost_mib:.0f} MiB (peak {peak.mib:.0f})",
           ran.returncode, ran.duration, "flood")  # fmt: skip
    assert by["after"].verdict is Verdict.PASS
    assert logs <= 20 << 20 and peak.base is not None and peak.cost_mib <= 100, (logs, peak.mib)


def test_boot_faults(kernel: Path, e2e_cache: Path, tmp_path: Path) -> None:
    cases = (
        ("rdinit=/nonexistent init=/nonexistent", 60, "a kernel that panics at boot", "panic"),
        ("rdinit=/bin/sleep 1000", 10, "a boot that never gets ready", "no ready marker"),
    )
    for i, (cmdline, timeout, fault, reason) in enumerate(cases):
        matrix = guest_matrix(tmp_path / str(i), SMOKE % "smoke", cmdline=cmdline,
                              boot_timeout=timeout)  # fmt: skip
        out = tmp_path / str(i) / "out"
        ran = run_cli([matrix, "--cache-dir", e2e_cache, "--out", out], f"boot-{i}")
        v = read_results(out, ran).variants[0]
        boot = v.stage(Stage.BOOT)
        assert boot is not None and v.boot is not None
        record(fault, f"BOOT-FAIL: {boot.reason[:60]}", ran.returncode, ran.duration, f"boot-{i}")
        assert ran.returncode == 1 and boot.status is Status.FAIL
        assert reason in (boot.reason + v.boot.console_tail).lower().replace(
            "kernel panic", "panic"
        )
        assert wait_leftovers_gone(f"boot-{i}") == []


def test_qemu_killed_from_outside(kernel: Path, e2e_cache: Path, tmp_path: Path) -> None:
    tests = "- {name: victim, kind: ktap, command: sleep 60, timeout: 120}\n" + SMOKE % "after"
    matrix = guest_matrix(tmp_path, tests)
    out = tmp_path / "out"
    run = Launch([matrix, "--cache-dir", e2e_cache, "--out", out], tmp_path / "cli.log", "qkill")
    run.wait_for(guest_is_running(out, "victim", "qkill"), 600, "the victim test's start")
    (qemu,) = qemus("qkill")
    qemu.kill()
    sent = time.monotonic()
    code = run.wait(300)
    victim = _by_name(read_results(out).variants[0].tests)
    record("QEMU killed (SIGKILL) from outside during a test",
           f"{victim['victim'].verdict.value}: {victim['victim'].reason[:60]}", code,
           time.monotonic() - sent, "qkill")  # fmt: skip
    # Not the kernel's fault, and not one a matrix can declare: ERROR, exit 1.
    assert code == 1, run.output()[-3000:]
    assert victim["victim"].verdict is Verdict.ERROR and "SIGKILL" in victim["victim"].reason
    assert victim["after"].verdict is Verdict.PASS
    assert not qemu_running("qkill")


def test_a_taken_ssh_port_is_retried_on_another(make_spec: SpecFactory) -> None:  # noqa: F811
    """Row 10: another process binds the SSH port between free_port() and QEMU's bind."""
    with socket.create_server(("127.0.0.1", 0)) as thief:
        port = thief.getsockname()[1]
        spec = dataclasses.replace(make_spec(), ssh_port=port)
        started = time.monotonic()
        with Machine(spec, boot_timeout=120) as vm:
            record("the SSH port taken between free_port() and QEMU's bind",
                   f"started again on another port ({vm.port_retries} retry)", None,
                   time.monotonic() - started, "port")  # fmt: skip
            assert vm.port_retries == 1 and vm.spec.ssh_port != port and vm.alive()
