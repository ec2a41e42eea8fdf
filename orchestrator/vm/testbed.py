"""The boot and test stages of one variant.

Each variant's kernel boots in a fresh guest; its tests run in order over
SSH.  When a test leaves the guest dead (a crash or a hang), the next test
gets a freshly booted guest, so one wedged kernel costs one test, not the
rest of the list.
"""

from __future__ import annotations

import dataclasses
import hashlib
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator import plan, suites, verdicts
from orchestrator.cache import Cache
from orchestrator.matrix import Matrix, Test, Variant
from orchestrator.results import (
    BootInfo,
    Stage,
    StageResult,
    Status,
    TestResult,
    Verdict,
    label,
)
from orchestrator.suites import Installed
from orchestrator.vm import guest, image, programs, qemu, run_test


@dataclass(frozen=True)
class GuestSetup:
    """What every variant's boots share within one run."""

    initrd: Path
    keys: image.Keys
    sockets: Path  # a short directory: unix socket paths are limited to 107 bytes
    tests_error: str | None  # the guest programs did not build


def prepare(matrix: Matrix, cache: Cache, run_dir: Path) -> GuestSetup:
    work = run_dir / "guest"
    work.mkdir(parents=True, exist_ok=True)
    keys = image.make_keys(work / "keys")
    files: tuple[tuple[str, Path], ...] = ()
    error = None
    if matrix.guest.selftests is not None:
        built = programs.build(matrix.guest.selftests, cache.root, work / "selftests.log")
        files, error = built.files(), built.error
    layers = image.image(cache.root, keys, files, work)
    initrd = image.concatenate(layers, work / "initrd.cpio")
    sockets = Path(tempfile.mkdtemp(prefix="orchestrate-"))
    return GuestSetup(initrd=initrd, keys=keys, sockets=sockets, tests_error=error)


def variant_initrd(setup: GuestSetup, installed: Installed, out: Path) -> Path:
    """The run's initramfs plus a layer with what was built for this variant's kernel."""
    if not installed.files:
        return setup.initrd
    layer = image.files_layer(installed.files, out.with_name(out.stem + "-layer.cpio"))
    return image.concatenate((setup.initrd, layer), out)


def socket_name(variant: str) -> str:
    """A short name for the variant's sockets that no other variant's shares:
    guests of several variants boot at once (--vms), and a variant's name can
    be longer than a socket path allows."""
    if len(variant) <= 40:
        return variant
    return f"{variant[:31]}-{hashlib.sha256(variant.encode()).hexdigest()[:8]}"


Accelerator = Callable[[Path, Path], tuple[str, str]]


def boot_stage(logs: Path, boot_info: BootInfo | None, boot_failure: str | None) -> StageResult:
    """The first boot is the BOOT stage; tests reuse that guest."""
    console = (str(logs / "console-1.log"),)
    if boot_failure or boot_info is None:
        return StageResult(Stage.BOOT, Status.FAIL, boot_failure or "", logs=console)
    reason = f"{boot_info.accel}, SSH ready in {boot_info.seconds:.1f}s"
    return StageResult(Stage.BOOT, Status.PASS, reason, logs=console)


@dataclass
class VariantRun:
    """Boots a variant's kernel and runs its tests; results accumulate here."""

    matrix: Matrix
    variant: Variant
    setup: GuestSetup
    kernel: Path
    logs: Path
    accel: Accelerator
    # The variant's own initramfs (setup.initrd plus what the test kinds
    # built against its kernel: kselftests), and what of that did not build.
    initrd: Path | None = None
    installed: Installed = field(default_factory=Installed)
    boots: int = 0
    boot_info: BootInfo | None = None
    boot_failure: str | None = None  # the first boot failed: the BOOT stage fails
    reboot_failure: str | None = None  # a later boot failed: only its tests are lost
    host_cpus: tuple[int, ...] = ()  # QEMU's CPUs (the executor's CPU set); () is any

    def boot_stage(self) -> StageResult:
        return boot_stage(self.logs, self.boot_info, self.boot_failure)

    def run(self, pending: Sequence[Pending]) -> tuple[TestResult, ...]:
        """Run the pending tests in order, booting as often as dead guests require.

        Called once for the functional tests, then once per perf round; the
        first boot of the first call is the BOOT stage.
        """
        pending = list(pending)
        done: list[TestResult] = []
        self.reboot_failure = None
        # At least one boot, so a matrix without tests still checks that it boots.
        while (pending or self.boots == 0) and not (self.boot_failure or self.reboot_failure):
            done += self._one_boot(pending)
        failure = self.boot_failure or self.reboot_failure
        if failure is None:
            return tuple(done)
        reason = f"not run: boot failed: {failure}"
        return (*done, *(p.result(Verdict.ERROR, reason) for p in pending))

    def _spec(self, accel: str, index: int) -> qemu.VmSpec:
        g = self.matrix.guest
        return qemu.VmSpec(
            kernel=self.kernel,
            initrd=self._initrd,
            cpus=g.cpus,
            memory_mb=g.memory_mb,
            accel=qemu.Accel(accel),
            cmdline_extra=g.cmdline,
            console_log=self.logs / f"console-{index}.log",
            qmp_socket=self.setup.sockets / f"{socket_name(self.variant.name)}-{index}.qmp",
            ssh_port=qemu.free_port(),
            host_cpus=self.host_cpus,
        )

    @property
    def _initrd(self) -> Path:
        """The variant's own initramfs when something was built for it, else the run's."""
        return self.initrd or self.setup.initrd

    def _one_boot(self, pending: list[Pending]) -> list[TestResult]:
        """Boot once and run pending tests until they are done or the guest dies."""
        self.boots += 1
        accel, why = self.accel(self.kernel, self._initrd)
        spec = self._spec(accel, self.boots)
        timeout = self.matrix.guest.boot_timeout
        done: list[TestResult] = []
        try:
            with guest.boot(spec, self.setup.keys, timeout) as (session, booted):
                if self.boot_info is None:
                    seconds = round(booted.seconds, 3)
                    self.boot_info = BootInfo(accel, why, seconds, str(spec.console_log))
                while pending:
                    result = self._test(session, pending.pop(0))
                    done.append(result)
                    if not session.alive() or result.verdict is Verdict.KERNEL_HANG:
                        break
                    if result.verdict is Verdict.ERROR and not session.ping():
                        break  # e.g. its sshd is gone: the rest go to a fresh guest
        except qemu.BootFailed as exc:
            if self.boots == 1:
                self.boot_failure = exc.reason or "boot failed"
                self.boot_info = BootInfo(accel, why, 0.0, str(spec.console_log), exc.console_tail)
            else:
                self.reboot_failure = f"boot {self.boots} failed: {exc.reason}"
        return done

    def _test(self, session: guest.GuestSession, pending: Pending) -> TestResult:
        test = pending.test
        error = suites.not_installed(test, self.installed, self.setup.tests_error)
        if error is not None:
            return pending.result(Verdict.ERROR, error)
        expect, about = dict(self.variant.expect), dict(test.about)

        def judge(result: TestResult) -> TestResult:
            return verdicts.with_expectations(pending.identify(result), expect, about=about)

        # Reruns a run that missed its expectation, up to `retries:` times (flakes.py).
        logs = self.logs / "tests"
        return run_test.run_retried(session, test, logs, judge, label=pending.label)


@dataclass(frozen=True)
class Pending:
    """One run of a test still to do: the test and which run of it this is."""

    test: Test
    repeat: int = 0  # 1..N for a functional test with repeats: N; else 0
    round: int = 0  # the perf round, 1..N; 0 for functional tests
    warmup: bool = False  # a perf warm-up round: run, then discarded
    batch: int = 0  # the perf batch the round belongs to

    @property
    def label(self) -> str:
        return label(self.test.name, repeat=self.repeat, round=self.round, warmup=self.warmup)

    def identify(self, result: TestResult) -> TestResult:
        """The result marked as this run of the test (its subtests are named by it)."""
        return dataclasses.replace(
            result, repeat=self.repeat, round=self.round, warmup=self.warmup, batch=self.batch
        )

    def result(self, verdict: Verdict, reason: str) -> TestResult:
        return self.identify(TestResult(self.test.name, verdict, reason=reason))


def functional(tests: Sequence[Test]) -> list[Pending]:
    """The tests that run once per boot, repeats in a row."""
    return [
        Pending(t, repeat=i if t.repeats > 1 else 0)
        for t in plan.functional_tests(tests)
        for i in range(1, t.repeats + 1)
    ]


def perf_round(tests: Sequence[Test], round_: int, batch: int = 1) -> list[Pending]:
    """The perf tests measured in round N of a batch (0 is the discarded warm-up).

    Perf tests are measured boot by boot, variants interleaved (see plan):
    on this kind of machine the independent sample is a boot, not a repeat
    inside one boot, and the host drifts within minutes.
    """
    return [
        Pending(t, round=round_, warmup=round_ == 0, batch=batch)
        for t in plan.perf_tests(tests)
        if round_ <= t.repeats
    ]
