"""The fault suite's tools: start orchestrate for real, inject, measure, look for leftovers.

Every case starts the real CLI as a separate process with a marker in its
environment; children inherit it (the sandbox keeps the environment), so a
scan of the whole machine finds anything the run left running, whatever its
parent is now.  Each case records a :class:`Row`; conftest.py turns the rows
into docs/faults.md.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from orchestrator import proc, results
from tests.conftest import REPO
from tests.procs import described, processes_with, sigint_default

MARKER = "ORCHESTRATE_FAULT_CASE"
CLI = (sys.executable, "-m", "orchestrator.cli")


@dataclass(frozen=True)
class Row:
    fault: str  # what was injected, and when
    verdict: str  # what orchestrate made of it
    exit_code: int | None
    seconds: float  # from the injection (or the start, for bad input) to the exit
    leftovers: tuple[str, ...] = ()


ROWS: list[Row] = []


def record(fault: str, verdict: str, exit_code: int | None, seconds: float, marker: str) -> Row:
    row = Row(fault, verdict, exit_code, round(seconds, 1), tuple(leftovers(marker)))
    ROWS.append(row)
    return row


def processes_of(marker: str) -> list[psutil.Process]:
    """Processes anywhere on the machine that carry this case's marker."""
    return processes_with(MARKER, marker)


def leftovers(marker: str) -> list[str]:
    return described(processes_of(marker))


def wait_leftovers_gone(marker: str, timeout: float = 10) -> list[str]:
    """What is still running after ``timeout`` (children take a moment to exit)."""
    deadline = time.monotonic() + timeout
    while (left := leftovers(marker)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


class Launch:
    """orchestrate started in the background with a case marker, output to a log."""

    def __init__(
        self, argv: list[str | Path], log: Path, marker: str, env: dict[str, str] | None = None
    ) -> None:
        self.marker = marker
        self.log = log
        self.started = time.monotonic()
        env = {**os.environ, **(env or {}), MARKER: marker}
        with sigint_default():  # the SIGINT cases must reach it however the suite started
            self.bg = proc.spawn([*CLI, *map(str, argv)], log=log, env=env, cwd=REPO)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, what: Callable[[], bool], timeout: float, about: str) -> None:
        deadline = time.monotonic() + timeout
        while not what():
            if self.bg.poll() is not None:
                raise AssertionError(f"orchestrate ended before {about}:\n{self.output()[-3000:]}")
            if time.monotonic() > deadline:
                self.bg.stop()
                raise AssertionError(f"no {about} within {timeout}s:\n{self.output()[-3000:]}")
            time.sleep(0.05)

    def signal(self, signum: signal.Signals) -> float:
        """Send signum to orchestrate itself; the time it was sent."""
        psutil.Process(self.bg.pid).send_signal(signum)
        return time.monotonic()

    def wait(self, timeout: float = 120) -> int | None:
        code = self.bg.wait(timeout)
        if code is None:
            self.bg.stop()
        return code


def run_cli(argv: list[str | Path], marker: str, timeout: float = 1800) -> proc.CmdResult:
    env = {MARKER: marker}
    return proc.run([*CLI, *map(str, argv)], timeout=timeout, env=env, cwd=REPO)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_results(out: Path, ran: proc.CmdResult | None = None) -> results.RunResult:
    """The run's results; when there are none, fail with what orchestrate said."""
    if not (out / "results.json").is_file() and ran is not None:
        raise AssertionError(
            f"no results (exit {ran.returncode}):\n{ran.stdout[-3000:]}\n{ran.stderr[-3000:]}"
        )
    return results.read(out / "results.json")


def reports_written(out: Path) -> bool:
    return all(
        (out / name).stat().st_size > 0 for name in ("junit.xml", "report.html", "summary.txt")
    )


def qemus(marker: str) -> list[psutil.Process]:
    return [p for p in processes_of(marker) if (p.info["name"] or "").startswith("qemu")]


def qemu_running(marker: str) -> bool:
    return bool(qemus(marker))


FRAGMENTS = ", ".join(
    str(REPO / "kconfigs" / f) for f in ("base.config", "vm.config", "bpf.config", "debug.config")
)


def guest_matrix(
    directory: Path, tests: str, *, cmdline: str = "", boot_timeout: int = 60, expect: str = "{}"
) -> Path:
    """A matrix of the upstream kernel (the one the e2e tests share) with these tests."""
    directory.mkdir(parents=True, exist_ok=True)
    matrix = directory / "matrix.yaml"
    matrix.write_text(
        textwrap.dedent(f"""\
        name: faults
        kconfig: {{fragments: [{FRAGMENTS}]}}
        guest:
          cmdline: "{cmdline}"
          boot_timeout: {boot_timeout}
          selftests: {REPO / "selftests"}
        report: {{dir: {directory / "reports"}}}
        variants:
          - name: upstream
            expect: {expect}
        tests:
        """)
        + textwrap.indent(textwrap.dedent(tests), "  ")
    )  # fmt: skip
    return matrix


SMOKE = "- {name: %s, kind: ktap, command: /opt/selftests/smoke.sh, timeout: 60}\n"


def guest_is_running(out: Path, test: str, marker: str) -> Callable[[], bool]:
    """Whether the guest runs ``test`` now: its output file is open and QEMU is up."""
    started = out / "logs" / "upstream" / "tests" / f"{test}.stdout"
    return lambda: started.exists() and qemu_running(marker)


def fake_matrix(proj: Path, variants: str) -> Path:
    """The fake tree's matrix (tests/integration/test_runner.py's `project`) with
    these variants, reporting into the project."""
    matrix = proj / "case.yaml"
    matrix.write_text(
        (proj / "matrix.yaml").read_text().split("variants:\n")[0]
        + f"report: {{dir: {proj / 'reports'}}}\nvariants:\n{variants}"
    )
    return matrix
