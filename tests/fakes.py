"""A healthy fake guest for tests of the runner and test runner above the VM
layer (the real guest is tested in tests/e2e): subclasses say what each
command prints; the rest of vm.run_test.Session answers "all is well"."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestrator.results import Splat


@dataclass(frozen=True)
class FakeExec:
    exit_status: int | None = 0
    timed_out: bool = False
    duration: float = 0.5


class HealthyGuest:
    """Answers, never splats, never dies; `run` writes nothing (override it)."""

    def run(self, command: str, *, timeout: float, stdout: Path, stderr: Path) -> FakeExec:
        stdout.write_text("")
        stderr.write_text("")
        return FakeExec()

    def ping(self, timeout: float = 5.0) -> bool:
        return True

    def kmsg(self, text: str) -> None:
        pass

    def alive(self) -> bool:
        return True

    def splats(self) -> list[Splat]:
        return []

    def sshd_gone(self) -> bool:
        return False

    def qemu_killed(self) -> str | None:
        return None

    def console_tail(self) -> str:
        return ""
