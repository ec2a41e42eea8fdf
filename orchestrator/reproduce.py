"""`orchestrate reproduce`: one variant of a finished run, booted again.

The kernel is the one the run built (its artifact in the cache, keyed by the
tree and config hashes results.json records), rebuilt through the same unit
functions as a run when the artifact is gone; the guest image is the run's
recipe.  Then the variant's test runs again and its verdict and output are
printed, or `--shell` logs in to the guest over SSH with a terminal.

A `Bench` is what reproducing and bisecting share: the tree prepared, the
variant's series applied (one commit per patch, cached like a run's apply),
the guest image made, and a way to build and test any commit of the series.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import shutil
import sys
import termios
import tty
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TextIO

import paramiko

from orchestrator import plan, results, sandbox, suites, units, verdicts
from orchestrator.cache import Cache
from orchestrator.errors import InfraError, UserError
from orchestrator.kernel import build, series
from orchestrator.matrix import AccelChoice, Matrix, Test
from orchestrator.results import Stage, StageResult, Status, TestResult, VariantResult
from orchestrator.suites import Installed
from orchestrator.textfmt import for_terminal
from orchestrator.units import Applied, Built, Context, Prepared, Progress, Tested
from orchestrator.vm import guest, qemu, ssh, testbed
from orchestrator.vm.image import Keys

_HASH = re.compile(r"[0-9a-f]{16,64}")  # a git tree or sha256 hash as results.json holds it
OUTPUT_LINES = 60  # lines of a test's output printed by reproduce
OUTPUT_BYTES = 16 * 1024


@dataclass(frozen=True)
class Bench:
    """One variant's series applied and a guest image, ready to build and test commits."""

    ctx: Context  # the matrix with only the tests to run, writing under a work directory
    variant: str
    prepared: Prepared
    applied: Applied  # the whole series, one commit per patch
    setup: testbed.GuestSetup

    @property
    def commits(self) -> tuple[str, ...]:
        """The tree after 0, 1, ... N patches of the series (0: the base with the reverts)."""
        return series_commits(self.applied.base, self.applied.patches)

    @property
    def patches(self) -> tuple[results.PatchResult, ...]:
        return tuple(p for p in self.applied.patches if not p.revert)


def series_commits(base: str, patches: tuple[results.PatchResult, ...]) -> tuple[str, ...]:
    """The tree after 0, 1, ... N patches; the reverts (applied first) belong to
    the base, and an already-applied patch makes no commit of its own."""
    current = base
    for p in patches:
        if p.revert:
            current = p.commit or current
    out = [current]
    for p in patches:
        if not p.revert:
            current = p.commit or current
            out.append(current)
    return tuple(out)


def open_bench(
    matrix: Matrix,
    cache: Cache,
    work: Path,
    variant: str,
    tests: tuple[Test, ...],
    *,
    jobs: int,
    confined: bool,
    progress: Progress,
) -> Bench:
    """Prepare the tree, apply the variant's series and make the guest image.

    The caller holds the cache lock (Cache.locked) for as long as it uses the bench.
    """
    spec = matrix.variant(variant)
    box = sandbox.for_run(
        cache=cache.root, run_dir=work, reports=matrix.report.dir, enabled=confined
    )
    patches = {variant: series.collect(spec.series)}
    ctx = Context(replace(matrix, tests=tests), cache, work, patches, jobs, progress, box)
    prepared = units.prepare(ctx)
    applied = units.apply(ctx, variant, prepared)
    if applied.stage.status is not Status.PASS:
        raise UserError(f"variant {variant}: its series does not apply: {applied.stage.reason}")
    return Bench(ctx, variant, prepared, applied, units.make_guest(ctx).setup)


def close(bench: Bench) -> None:
    """Remove what the bench's guests needed while it lived (their QMP sockets)."""
    shutil.rmtree(bench.setup.sockets, ignore_errors=True)


def at(bench: Bench, where: Path) -> Bench:
    """The same bench writing its logs under `where` (one directory per step)."""
    return replace(bench, ctx=replace(bench.ctx, run_dir=where))


def build_at(bench: Bench, commit: str) -> Built | StageResult:
    """The kernel of `commit` (cached, or built in the variant's shared build
    directory), or the failed stage that says why there is none."""
    ctx, v = bench.ctx, bench.variant
    applied = replace(bench.applied, head=commit)
    configured = units.configure(ctx, v, bench.prepared, applied)
    if configured.stage.status is not Status.PASS:
        return configured.stage
    built = units.build_kernel(ctx, v, bench.prepared, applied, configured, None)
    if built.stage.status is not Status.PASS:
        return built.stage
    return built


def installed_for(bench: Bench, commit: str, built: Built) -> Installed:
    """What the test kinds build against this kernel (kselftests), if any of them does."""
    if not suites.installers(bench.ctx.matrix.tests):
        return Installed()
    applied = replace(bench.applied, head=commit)
    return units.install(bench.ctx, bench.variant, bench.prepared, applied, built).installed


def test_on(
    bench: Bench, built: Built, installed: Installed, accel: tuple[str, str] | None
) -> Tested:
    """Boot the kernel and run the bench's tests (each test's repeats in one boot)."""
    return units.functional(bench.ctx, bench.variant, built, bench.setup, installed, accel)


def failed(test: TestResult) -> bool | None:
    """Whether one run of a test failed: None when the harness could not run it."""
    if test.verdict is results.Verdict.ERROR:
        return None
    if test.verdict.value == "flaky":  # failed, then passed on a retry: it failed
        return True
    return verdicts.outcome_of(test).bad


# --- orchestrate reproduce ------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    run: results.RunResult
    variant: str
    test: str | None  # None: every functional test of the matrix
    shell: bool
    cache: Cache
    work: Path  # where this reproduction writes its logs
    jobs: int = 2
    confined: bool = True


def matrix_of(run: results.RunResult) -> Matrix:
    """The matrix the run was made from (it must still be there)."""
    from orchestrator import config  # config imports suites; keep this module light to import

    path = Path(run.matrix)
    if not path.is_file():
        raise UserError(f"{path}: the run's matrix file is gone; reproduce needs it")
    return config.load(path)


def variant_of(run: results.RunResult, name: str, matrix: Matrix | None = None) -> VariantResult:
    """The run's record of a variant that its matrix still has (names checked
    by config: safe as directory names, unlike what a results file says)."""
    found = next((v for v in run.variants if v.name == name), None)
    if found is None:
        names = ", ".join(v.name for v in run.variants) or "none"
        raise UserError(f"no variant {name!r} in this run (its variants: {names})")
    if matrix is not None and name not in {v.name for v in matrix.variants}:
        raise UserError(f"{name}: no such variant in {matrix.path} any more")
    return found


def tests_for(matrix: Matrix, test: str | None) -> tuple[Test, ...]:
    """The functional test named (all of them for None), as a one-shot run."""
    functional = plan.functional_tests(matrix.tests)
    if test is None:
        return tuple(replace(t, repeats=1) for t in functional)
    found = next((t for t in matrix.tests if t.name == test), None)
    if found is None:
        names = ", ".join(t.name for t in matrix.tests) or "none"
        raise UserError(f"no test {test!r} in the matrix (its tests: {names})")
    if found not in functional:
        raise UserError(
            f"{test} is a perf test: it is measured over many boots against the other "
            f"variants; `orchestrate run {matrix.path} --only VARIANT` measures it again"
        )
    return (replace(found, repeats=1),)


def reproduce(request: Request, out: TextIO | None = None) -> int:
    """Boot the variant's kernel again and run its test (or a shell); the exit code."""
    out = out or sys.stdout
    matrix = matrix_of(request.run)
    recorded = variant_of(request.run, request.variant, matrix)
    if request.shell and not (sys.stdin.isatty() and out.isatty()):
        raise UserError("--shell needs a terminal (stdin and stdout a TTY); run it interactively")
    # With --shell the tests are not run, but what their kinds install is in the guest.
    tests = tests_for(matrix, None if request.shell else request.test)
    request.work.mkdir(parents=True, exist_ok=True)
    say = _printer(out)
    with request.cache.locked():
        bench = open_bench(
            matrix,
            request.cache,
            request.work,
            request.variant,
            tests,
            jobs=request.jobs,
            confined=request.confined,
            progress=lambda v, stage, status, detail: (
                say(f"{stage.value}: {detail}") if detail else None
            ),
        )
        if recorded.head and bench.applied.head != recorded.head:
            say(
                f"note: the series now gives {bench.applied.head[:12]}, the run had "
                f"{recorded.head[:12]}: the series or its base changed since"
            )
        try:
            built = _kernel(bench, recorded, say)
            installed = installed_for(bench, bench.applied.head, built)
            if request.shell:
                return _shell(bench, built, installed, say)
            tested = test_on(bench, built, installed, None)
        finally:
            close(bench)
    return _verdicts(tested, say)


def _kernel(bench: Bench, recorded: VariantResult, say: _Say) -> Built:
    """The run's artifact when the cache still has it, else a fresh build.

    The artifact is looked up by the tree and config hashes the run recorded,
    never by the path it wrote down: a results file may come from anywhere.
    """
    info = recorded.build
    if info is not None and _HASH.fullmatch(info.tree) and _HASH.fullmatch(info.config):
        artifacts = build.artifact_dir(bench.ctx.cache.root, info.tree, info.config)
        if build.is_built(artifacts):
            say(f"kernel: {artifacts} (from the run)")
            stage = StageResult(Stage.BUILD, Status.PASS, "cached")
            return Built(stage, replace(info, artifact_dir=str(artifacts)))
    say("kernel: not in the cache any more; building it")
    built = build_at(bench, bench.applied.head)
    if isinstance(built, StageResult):
        raise UserError(f"variant {bench.variant}: {built.stage.value} failed: {built.reason}")
    say(f"kernel: {built.build.artifact_dir}")
    return built


def _verdicts(tested: Tested, say: _Say) -> int:
    if tested.stage.status is not Status.PASS:
        say(f"BOOT-FAIL: {tested.stage.reason}")
        if tested.guest.boot_info is not None and tested.guest.boot_info.console_tail:
            say(tested.guest.boot_info.console_tail)
        return 1
    bad = False
    for t in tested.tests:
        outcome = verdicts.outcome_of(t)
        bad = bad or outcome.bad
        say(f"\n== {t.label}: {outcome.word}" + (f" ({t.reason})" if t.reason else ""))
        for log in t.logs:
            say(f"-- {log}")
            say(_tail(Path(log)))
    return 1 if bad else 0


def _tail(path: Path) -> str:
    try:
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - OUTPUT_BYTES))
            text = f.read().decode(errors="replace")
    except OSError as exc:
        return f"(cannot read: {exc.strerror})"
    lines = text.splitlines()[-OUTPUT_LINES:]
    return "\n".join(lines) if lines else "(empty)"


# --- --shell --------------------------------------------------------------------------


def _shell(bench: Bench, built: Built, installed: Installed, say: _Say) -> int:
    """Boot the kernel and hand the terminal to a shell in the guest until it exits."""
    ctx = bench.ctx
    kernel = Path(built.build.artifact_dir) / "vmlinux"
    initrd = bench.setup.initrd
    if installed.files:
        initrd = testbed.variant_initrd(bench.setup, installed, ctx.run_dir / "initrd-shell.cpio")
    g = ctx.matrix.guest
    accel, why = (
        qemu.probe_accel(kernel, initrd, cache_dir=ctx.cache.root)
        if g.accel is AccelChoice.AUTO
        else (qemu.Accel(g.accel.value), "set in the matrix")
    )
    spec = qemu.VmSpec(
        kernel=kernel,
        initrd=initrd,
        cpus=g.cpus,
        memory_mb=g.memory_mb,
        accel=qemu.Accel(accel),
        cmdline_extra=g.cmdline,
        console_log=ctx.logs(bench.variant) / "console-shell.log",
        qmp_socket=bench.setup.sockets / "shell.qmp",
        ssh_port=qemu.free_port(),
    )
    say(f"booting {kernel} ({accel}: {why}); console log: {spec.console_log}")
    try:
        with guest.boot(spec, bench.setup.keys, g.boot_timeout) as (session, booted):
            say(f"logged in after {booted.seconds:.1f}s; exit the shell to stop the guest")
            port = session.machine.spec.ssh_port
            code = interactive(port, bench.setup.keys, sys.stdin.fileno(), sys.stdout.fileno())
    except qemu.BootFailed as exc:
        say(f"BOOT-FAIL: {exc.reason}\n{exc.console_tail}")
        return 1
    return code


def interactive(port: int, keys: Keys, stdin: int, stdout: int) -> int:
    """A login shell in the guest on this terminal (raw mode); its exit status.

    What the guest prints goes to the terminal as it is, as with ssh(1): the
    user asked for the guest's terminal.
    """
    client = paramiko.SSHClient()
    client.get_host_keys().add(f"[127.0.0.1]:{port}", "ssh-ed25519", ssh.host_key(keys.host_public))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(
            "127.0.0.1",
            port,
            username=ssh.USER,
            pkey=paramiko.Ed25519Key.from_private_key_file(str(keys.client_private)),
            timeout=ssh.ATTEMPT_TIMEOUT,
            look_for_keys=False,
            allow_agent=False,
        )
    except (paramiko.SSHException, OSError) as exc:
        raise InfraError(f"no SSH login for the shell on port {port}: {exc}") from exc
    with contextlib.closing(client):
        size = shutil.get_terminal_size()
        channel = client.invoke_shell(
            term=os.environ.get("TERM", "vt100"), width=size.columns, height=size.lines
        )
        with _raw(stdin):
            _pump(channel, stdin, stdout)
        return channel.recv_exit_status() if channel.exit_status_ready() else 0


@contextlib.contextmanager
def _raw(fd: int) -> Iterator[None]:
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd, termios.TCSADRAIN)  # keeps what was typed ahead
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _pump(channel: paramiko.Channel, stdin: int, stdout: int) -> None:
    while True:
        ready, _, _ = select.select([channel.fileno(), stdin], [], [])
        if channel.fileno() in ready:
            data = channel.recv(4096)
            if not data:
                return
            os.write(stdout, data)
        if stdin in ready:
            data = os.read(stdin, 1024)
            if not data:
                return
            channel.sendall(data)


class _Say:
    def __init__(self, out: TextIO) -> None:
        self.out = out

    def __call__(self, text: str) -> None:
        if text:
            print(for_terminal(text), file=self.out, flush=True)


def _printer(out: TextIO) -> _Say:
    return _Say(out)
