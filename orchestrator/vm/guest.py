"""A booted guest: QEMU, its console watcher and an SSH login, as one session.

`boot()` is a context manager: it returns once the guest answers over SSH or
raises BootFailed; on every exit path the VM is stopped (QMP quit, then the
process tree is killed) without waiting for the guest to power off.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from orchestrator.results import Splat
from orchestrator.vm.image import Keys
from orchestrator.vm.qemu import BootFailed, Machine, VmSpec
from orchestrator.vm.ssh import ExecResult, SshError, SshTransport, sshd_refused

MARKER_WAIT = 5.0  # seconds for a kmsg marker to reach the (slow, emulated) serial console


@dataclass(frozen=True)
class Booted:
    seconds: float  # QEMU start to SSH ready
    console_ready: float  # QEMU start to the console ready marker


class GuestSession:
    """What the test runner needs from a guest (run_test.Session)."""

    def __init__(self, machine: Machine, ssh: SshTransport) -> None:
        self.machine = machine
        self.ssh = ssh

    def run(self, command: str, *, timeout: float, stdout: Path, stderr: Path) -> ExecResult:
        try:
            return self.ssh.run(command, timeout=timeout, stdout=stdout, stderr=stderr)
        except SshError:
            # The connection broke mid-test: the caller asks ping() why.
            return ExecResult(exit_status=None, timed_out=False, duration=0.0)

    def ping(self, timeout: float = 5.0) -> bool:
        return self.machine.alive() and self.ssh.ping(timeout)

    def qemu_killed(self) -> str | None:
        """The signal that killed QEMU from outside the guest, if one did."""
        return self.machine.killed_by()

    def sshd_gone(self) -> bool:
        """The kernel runs but nothing answers on the SSH port (ssh.sshd_refused)."""
        return self.machine.alive() and sshd_refused(self.machine.spec.ssh_port)

    def kmsg(self, text: str) -> None:
        """Write a marker and wait until the console shows it (best effort)."""
        # Asked before it is written, so that it is looked for in every line
        # that comes, however many the guest prints before the next call.
        self.machine.console.seen(text)
        with contextlib.suppress(SshError):
            self.ssh.kmsg(text)
        deadline = time.monotonic() + MARKER_WAIT
        while not self.machine.console.seen(text) and time.monotonic() < deadline:
            if not self.machine.alive():
                return
            time.sleep(0.05)

    def alive(self) -> bool:
        return self.machine.alive()

    def splats(self) -> list[Splat]:
        """Every splat so far (counted and capped: console.SplatTally)."""
        if not self.machine.alive():
            # Final: flush() first waits for its last words (Machine.settle).
            self.machine.console.flush()
        return self.machine.console.all()

    def console_tail(self) -> str:
        return self.machine.console.tail()


@contextlib.contextmanager
def boot(spec: VmSpec, keys: Keys, boot_timeout: float) -> Iterator[tuple[GuestSession, Booted]]:
    """Boot spec and log in; raise BootFailed when either does not happen in time."""
    start = time.monotonic()
    with Machine(spec, boot_timeout=boot_timeout) as machine:
        console_ready = machine.boot_seconds or 0.0
        left = max(1.0, boot_timeout - (time.monotonic() - start))
        try:
            # machine.spec: QEMU may have been started again on another port.
            ssh = SshTransport.connect(port=machine.spec.ssh_port, keys=keys, timeout=left)
        except SshError as exc:
            raise BootFailed(
                f"console ready but no SSH login: {exc}", machine.console.tail()
            ) from exc
        with ssh:
            yield GuestSession(machine, ssh), Booted(time.monotonic() - start, console_ready)
