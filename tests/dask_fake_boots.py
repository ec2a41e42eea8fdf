"""Fake boots for the `dask worker`s of tests/integration/test_dask_executor.py.

A worker started with `--preload tests.dask_fake_boots` boots no QEMU: each
boot answers every test with KTAP (a perf sample for map_perf), as the
runner's scripted guest does in tests/integration/test_runner.py.  The
worker's environment steers it: ORCHESTRATE_TEST_BOOT_SECONDS makes a
variant's first boot take that long, ORCHESTRATE_TEST_BOOT_MARKS names a directory where each
boot leaves `<pid>-<variant>` (so a test knows which worker boots what),
ORCHESTRATE_TEST_KILLER names a variant whose boot SIGKILLs its worker, and
ORCHESTRATE_TEST_HANG one whose boot waits on a `sleep 300` child (a QEMU
that never comes up) started through proc, as QEMU is.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from orchestrator import proc
from orchestrator.vm import guest
from orchestrator.vm.guest import Booted
from orchestrator.vm.image import Keys
from orchestrator.vm.qemu import VmSpec
from tests.fakes import FakeExec, HealthyGuest


class KtapGuest(HealthyGuest):
    def run(self, command: str, *, timeout: float, stdout: Path, stderr: Path) -> FakeExec:
        metric = "# metric: events_per_sec 1000\n" if "map_perf" in command else ""
        stdout.write_text(f"KTAP version 1\n1..1\n{metric}ok 1 {Path(command.split()[0]).name}\n")
        stderr.write_text("")
        return FakeExec(0)


@contextlib.contextmanager
def boot(spec: VmSpec, keys: Keys, timeout: float) -> Iterator[tuple[KtapGuest, Booted]]:
    name = spec.console_log.parent.name
    marks = os.environ.get("ORCHESTRATE_TEST_BOOT_MARKS")
    if marks:
        (Path(marks) / f"{os.getpid()}-{name}").touch()
    if os.environ.get("ORCHESTRATE_TEST_KILLER") == name:
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get("ORCHESTRATE_TEST_HANG") == name:
        proc.run(["sleep", "300"], timeout=600)
    if spec.console_log.name == "console-1.log":  # a variant's first boot; perf rounds are quick
        time.sleep(float(os.environ.get("ORCHESTRATE_TEST_BOOT_SECONDS", "0")))
    spec.console_log.write_text("fake console\n")
    yield KtapGuest(), Booted(1.0, 0.5)


def dask_setup(worker: Any) -> None:
    """distributed calls this when it preloads the module into a worker."""
    guest.boot = boot  # type: ignore[assignment]  # a fake session, not a GuestSession
