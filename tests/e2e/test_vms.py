"""`--vms 2` with the real kernel: two 1-vCPU guests up at once, each QEMU
pinned to a CPU of its own, and the verdicts of a serial run.

The kernel is the default matrix's upstream build (tests/conftest.py); the
two variants are that kernel twice (same tree and config: built once).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from orchestrator import proc
from orchestrator.results import RunResult
from orchestrator.vm import cpusets
from tests.conftest import REPO
from tests.faults.harness import (
    CLI,
    MARKER,
    guest_matrix,
    processes_of,
    qemus,
    read_results,
    run_cli,
)
from tests.procs import sigint_default

pytestmark = pytest.mark.e2e

# Long enough that both guests are up together; KTAP for the verdict.
SLOW = "sleep 8; echo 'KTAP version 1'; echo 1..1; echo 'ok 1 slow'"


def _matrix(directory: Path) -> Path:
    tests = f'- name: slow\n  kind: ktap\n  timeout: 120\n  command: "{SLOW}"\n'
    matrix = guest_matrix(directory, tests, boot_timeout=120)
    text = matrix.read_text().replace("guest:\n", "guest:\n  cpus: 1\n  accel: tcg\n")
    # The same kernel under a second name: built once, booted twice.
    text = text.replace("tests:\n", "  - name: again\ntests:\n", 1)
    matrix.write_text(text)
    return matrix


def _verdicts(run: RunResult) -> list[tuple[str, list[str], list[tuple[str, str]]]]:
    return [
        (
            v.name,
            [s.status.value for s in v.stages],
            [(t.label, t.verdict.value) for t in v.tests],
        )
        for v in run.variants
    ]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs for 2 guests")
def test_two_guests_at_once_each_on_its_own_cpu(
    kernel: Path, e2e_cache: Path, tmp_path: Path
) -> None:
    matrix = _matrix(tmp_path)
    marker = f"vms-{os.getpid()}"
    seen: dict[int, str] = {}  # QEMU pid -> its Cpus_allowed_list
    together: list[set[str]] = []  # the CPU lists of the QEMUs up at one moment
    ran: list[proc.CmdResult] = []
    out = tmp_path / "vms"
    argv: list[str | Path] = [matrix, "--cache-dir", e2e_cache, "--out", out, "--vms", "2"]
    worker = threading.Thread(target=lambda: ran.append(run_cli(argv, marker, timeout=900)))
    worker.start()
    while worker.is_alive():
        now: set[str] = set()
        for qemu in qemus(marker):
            try:
                status = Path(f"/proc/{qemu.pid}/status").read_text()
            except OSError:
                continue
            line = next(x for x in status.splitlines() if x.startswith("Cpus_allowed_list:"))
            seen[qemu.pid] = now_cpus = line.split(":", 1)[1].strip()
            now.add(now_cpus)
        if len(now) > 1:
            together.append(now)
        worker.join(0.2)
    (result,) = ran
    vms = read_results(out, result)
    allowed = sorted(os.sched_getaffinity(0))
    # Each guest's QEMU on one CPU, and two of them up at once on different CPUs.
    assert together, f"never two guests at once: {seen}"
    singles = {c for c in seen.values() if len(cpusets.parse_cpu_list(c)) == 1}
    assert singles == {str(allowed[0]), str(allowed[1])}, seen
    assert qemus(marker) == []  # every QEMU gone with its run

    serial_out = tmp_path / "serial"
    serial_argv: list[str | Path] = [
        matrix,
        "--cache-dir",
        e2e_cache,
        "--out",
        serial_out,
        "--vms",
        "1",
    ]
    serial_ran = run_cli(serial_argv, f"{marker}-serial", timeout=900)
    serial = read_results(serial_out, serial_ran)
    assert result.returncode == serial_ran.returncode == 0, result.stdout[-3000:]
    assert _verdicts(vms) == _verdicts(serial)
    assert [t.verdict.value for v in vms.variants for t in v.tests] == ["pass", "pass"]


def test_ctrl_c_with_two_guests_up_stops_both(
    kernel: Path, e2e_cache: Path, tmp_path: Path
) -> None:
    """The units run in the guest executor's threads, where Ctrl-C does not land:
    its shutdown stops them as a serial run's unit is stopped."""
    matrix = _matrix(tmp_path)
    marker = f"vms-ctrl-c-{os.getpid()}"
    out = tmp_path / "out"
    argv: list[str | Path] = [*CLI, matrix, "--cache-dir", e2e_cache, "--out", out, "--vms", "2"]
    with sigint_default():  # the Ctrl-C below must reach it however the suite started
        run = proc.spawn(argv, log=tmp_path / "cli.log", env={MARKER: marker}, cwd=REPO)
    try:
        deadline = time.monotonic() + 600  # a safety net: the kernel is built already
        while len(qemus(marker)) < 2:
            assert run.poll() is None, (tmp_path / "cli.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "never two guests at once"
            time.sleep(0.1)
        os.kill(run.pid, signal.SIGINT)
        code = run.wait(120)
    finally:
        run.stop()
    said = (tmp_path / "cli.log").read_text()
    assert code == 130, said[-3000:]
    assert "Traceback" not in said and "Exception in thread" not in said
    assert processes_of(marker) == []  # both QEMUs and everything else gone
    assert read_results(out).incomplete.startswith("interrupted (Ctrl-C) after ")


PERF = (
    "- {name: map_perf_8, kind: map_perf, command: /opt/selftests/map_perf, timeout: 120, "
    "repeats: 3, args: {value-size: 8, loops: 20000, maps: 2}}\n"
)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs for 2 blocks")
def test_perf_rounds_run_as_blocks_one_per_cpu(
    kernel: Path, e2e_cache: Path, tmp_path: Path
) -> None:
    """A sequential plan's rounds side by side, each whole on one CPU: where each
    ran is recorded, and the reports show the places' spread."""
    matrix = guest_matrix(tmp_path, PERF, boot_timeout=120)
    text = matrix.read_text().replace("guest:\n", "guest:\n  cpus: 1\n  accel: tcg\n")
    matrix.write_text(text + "perf: {aa_control: true, max_reruns: 0}\n")
    out = tmp_path / "out"
    argv: list[str | Path] = [matrix, "--cache-dir", e2e_cache, "--out", out, "--vms", "2"]
    result = run_cli(argv, f"blocks-{os.getpid()}", timeout=900)
    run = read_results(out, result)
    assert result.returncode == 0, result.stdout[-3000:]
    assert run.perf_plan is not None and run.perf_plan.blocks == 2
    allowed = sorted(os.sched_getaffinity(0))
    places = {p.unit: p.worker for p in run.workers}
    # Rounds 1 and 2 were planned side by side, so they took one CPU each.
    assert {places["perf-round:1:1"], places["perf-round:1:2"]} == {
        f"CPUs {allowed[0]}",
        f"CPUs {allowed[1]}",
    }
    assert run.control is not None
    assert sorted(t.round for t in run.control.tests if not t.warmup) == [1, 2, 3]
    summary = " ".join((out / "summary.txt").read_text().split())
    assert "Perf rounds ran in 2 places" in summary
    assert f"CPUs {allowed[0]}: " in summary and "(A/A " in summary
