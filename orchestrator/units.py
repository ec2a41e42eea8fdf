"""The work of each kind of unit, and its result as plain data.

Every function here takes a Context (the matrix, the cache and where the
run writes) plus the results of the units it needs, does one unit's work and
returns a frozen record that `results.to_data` turns into JSON and
`results.from_data` back (see OUTPUTS): what crosses from an executor to the
runner is data, never a live object.  Kernel problems are results; only the
tool's own faults (UserError, InfraError) raise.
"""

from __future__ import annotations

import dataclasses
import random
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from threading import Lock
from typing import Any, TypeVar

from orchestrator import plan, suites
from orchestrator.cache import Cache
from orchestrator.errors import UserError
from orchestrator.git import git, tree_of
from orchestrator.kernel import build, kconfig, mail, series, source
from orchestrator.matrix import AccelChoice, Matrix, OnMismatch
from orchestrator.plan import BuildState, UnitKind
from orchestrator.results import (
    BootInfo,
    BuildInfo,
    MailSeries,
    PatchOutcome,
    PatchResult,
    Stage,
    StageResult,
    Status,
    TestResult,
)
from orchestrator.sandbox import PLAIN, Sandbox
from orchestrator.suites import Installed, Kernel
from orchestrator.vm import qemu, testbed

T = TypeVar("T")
# Called on every stage change: variant, stage, status (None when starting), detail.
Progress = Callable[[str, Stage, Status | None, str], None]


def _quiet(variant: str, stage: Stage, status: Status | None, detail: str) -> None:
    pass


@dataclass(frozen=True)
class Context:
    """What every unit of one run reads: plain data, plus a progress callback
    that an executor in another process may leave quiet."""

    matrix: Matrix
    cache: Cache
    run_dir: Path
    patches: Mapping[str, tuple[series.Patch, ...]]
    jobs: int = 2
    progress: Progress = _quiet
    # Where code from the tree under test runs (make, kconfig, its selftests):
    # confined unless the user turned it off.
    sandbox: Sandbox = PLAIN
    # The host CPUs this unit's guests run on (the executor's CPU set for it,
    # see on_cpus); () is any CPU, as in a serial run.
    host_cpus: tuple[int, ...] = ()

    def logs(self, variant: str) -> Path:
        path = self.run_dir / "logs" / variant
        path.mkdir(parents=True, exist_ok=True)
        return path


# --- results ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    repo: Path  # the tree's bare repository in the cache
    base: str  # the commit every series is applied on


@dataclass(frozen=True)
class Applied:
    stage: StageResult
    base: str
    head: str
    patches: tuple[PatchResult, ...]
    mail: MailSeries | None = None  # the series came from the list through b4 (kernel/mail.py)


@dataclass(frozen=True)
class Configured:
    stage: StageResult
    tree: str  # git tree hash of the variant's source
    configured: kconfig.Configured


@dataclass(frozen=True)
class Built:
    stage: StageResult
    build: BuildInfo


@dataclass(frozen=True)
class InstalledFiles:
    installed: Installed  # what the kinds' installers built for the variant's kernel


@dataclass(frozen=True)
class GuestReady:
    setup: testbed.GuestSetup


@dataclass(frozen=True)
class GuestState:
    """A variant's guest between units: its kernel and image, and its boots so far."""

    name: str  # what it runs as: the variant, or the A/A control
    of: str  # the matrix variant whose kernel and expectations it has
    kernel: Path
    initrd: Path | None = None  # the variant's own, when something was built for its kernel
    installed: Installed = field(default_factory=Installed)
    boots: int = 0
    boot_info: BootInfo | None = None
    boot_failure: str | None = None  # the first boot failed


@dataclass(frozen=True)
class Tested:
    __test__ = False  # not a pytest test class

    stage: StageResult  # BOOT
    tests: tuple[TestResult, ...]
    guest: GuestState
    accel: tuple[str, str] | None  # what was chosen, and why (None: never booted)


@dataclass(frozen=True)
class Sampled:
    guest: GuestState  # after this round's boots
    tests: tuple[TestResult, ...]  # empty for the warm-up round


@dataclass(frozen=True)
class Round:
    samples: tuple[Sampled, ...]


Output = Prepared | Applied | Configured | Built | InstalledFiles | GuestReady | Tested | Round

# The record each kind of unit returns, for decoding it from JSON.
OUTPUTS: dict[UnitKind, type[Output]] = {
    UnitKind.PREPARE: Prepared,
    UnitKind.APPLY: Applied,
    UnitKind.CONFIGURE: Configured,
    UnitKind.BUILD: Built,
    UnitKind.INSTALL: InstalledFiles,
    UnitKind.GUEST: GuestReady,
    UnitKind.FUNCTIONAL: Tested,
    UnitKind.PERF_ROUND: Round,
}


def passed(output: Output | None) -> bool:
    """Whether the units that need this one may use it."""
    if output is None:
        return False
    if isinstance(output, Applied | Configured | Built | Tested):
        return output.stage.status is Status.PASS
    return True


# --- the work -----------------------------------------------------------------------------


def prepare(ctx: Context) -> Prepared:
    src = source.prepare(ctx.matrix.tree, ctx.cache.root)
    return Prepared(src.repo, src.base)


def apply(ctx: Context, variant: str, prepared: Prepared) -> Applied:
    src = source.Source(prepared.repo, prepared.base)
    worktree = source.worktree(src, ctx.cache.work / f"apply-{src.repo.stem}")
    spec = ctx.matrix.variant(variant)
    patches = ctx.patches[variant]
    log = ctx.logs(variant) / "apply.log"
    fetched: mail.Fetched | None = None
    if spec.mail is not None:  # a thread: b4 takes the series from it now, not at plan time
        try:
            fetched = mail.fetch(spec.mail, ctx.logs(variant) / "mail", ctx.cache.root / "b4")
        except mail.MailError as exc:
            log.write_text(f"{exc.log}\n{exc.reason}\n")
            failed = StageResult(Stage.APPLY, Status.FAIL, exc.reason, logs=(str(log),))
            return Applied(failed, src.base, "", ())
        patches = fetched.patches
    key = plan.apply_key(src.base, spec, patches)
    applied = ctx.cache.load("apply", key, series.Applied)
    if applied is None or not _has_commit(src.repo, applied.head):
        branch = f"orchestrate/{ctx.matrix.name}/{variant}"
        applied = series.apply(worktree, src.base, branch, patches, spec.reverts)
        if applied.ok:
            ctx.cache.save("apply", key, applied)
    outcomes = "".join(f"{p.source}: {p.outcome.value}\n{p.output}" for p in applied.patches)
    log.write_text((f"{fetched.log}\n" if fetched else "") + outcomes)
    stage = _apply_verdict(applied, str(log))
    record = fetched.series if fetched else None
    return Applied(stage, applied.base, applied.head or "", applied.patches, record)


def configure(ctx: Context, variant: str, prepared: Prepared, applied: Applied) -> Configured:
    spec = ctx.matrix.variant(variant)
    cfg = ctx.matrix.kconfig
    bdir = plan.build_dir_for(ctx.matrix, spec, prepared.repo, ctx.cache.work)
    tree = tree_of(prepared.repo, applied.head)
    key = plan.kconfig_key(tree, bdir)
    log = ctx.logs(variant) / "kconfig.log"
    kept = ctx.cache.log_of("kconfig", key)
    configured = ctx.cache.load("kconfig", key, kconfig.Configured)
    if configured is not None:
        _cached_log(kept, log, "configured")
    else:
        _checkout(prepared, bdir, applied.head)
        configured = kconfig.configure(
            bdir.src,
            bdir.config,
            arch=cfg.arch,
            base=cfg.base,
            fragments=plan.fragments_of(ctx.matrix, spec),
            make_args=build.FIXED_MAKE_VARS,
            env=build.make_env(ctx.cache.root, bdir),
            log=log,
            timeout=600,
            sandbox=ctx.sandbox,
        )
        if configured.error is None:
            ctx.cache.save("kconfig", key, configured)
            shutil.copyfile(log, kept)
    stage = _kconfig_verdict(configured, cfg.on_mismatch, log)
    return Configured(stage, tree, configured)


def build_kernel(
    ctx: Context,
    variant: str,
    prepared: Prepared,
    applied: Applied,
    configured: Configured,
    builder: str | None,
) -> Built:
    """`builder`: the variant of this run that already built these artifacts, if any."""
    artifacts = build.artifact_dir(ctx.cache.root, configured.tree, configured.configured.sha256)
    info = BuildInfo(
        tree=configured.tree,
        config=configured.configured.sha256,
        artifact_dir=str(artifacts),
        cached=True,
    )
    state = plan.build_state(build.is_built(artifacts), builder, variant)
    if state is not BuildState.BUILD:
        shared = builder if state is BuildState.SHARED else None
        info = replace(info, shared_with=shared, warnings=build.cached_warnings(artifacts))
        reason = f"same tree as {shared}: built once" if shared else "cached: nothing compiled"
        log = ctx.logs(variant) / "build.log"
        _cached_log(artifacts / "build.log", log, f"built by {shared}" if shared else "built")
        return Built(StageResult(Stage.BUILD, Status.PASS, reason, logs=(str(log),)), info)
    spec = ctx.matrix.variant(variant)
    bdir = plan.build_dir_for(ctx.matrix, spec, prepared.repo, ctx.cache.work)
    _checkout(prepared, bdir, applied.head)
    ctx.progress(variant, Stage.BUILD, None, f"log: {build.pending_log(artifacts)}")
    outcome = build.build(
        bdir,
        configured.configured.config_text,
        artifacts,
        cache=ctx.cache.root,
        arch=ctx.matrix.kconfig.arch,
        jobs=ctx.jobs,
        timeout=ctx.matrix.build_timeout,
        sandbox=ctx.sandbox,
    )
    info = replace(info, cached=False, first_error=outcome.first_error, warnings=outcome.warnings)
    # The run directory keeps its own copy: reports read logs from there only.
    log = ctx.logs(variant) / "build.log"
    shutil.copyfile(outcome.log, log)
    logs = (str(log),)
    if not outcome.ok:
        stage = StageResult(Stage.BUILD, Status.FAIL, outcome.first_error or "", logs=logs)
        return Built(stage, info)
    return Built(StageResult(Stage.BUILD, Status.PASS, "built", logs=logs), info)


def install(
    ctx: Context, variant: str, prepared: Prepared, applied: Applied, built: Built
) -> InstalledFiles:
    """What the matrix's test kinds build against the variant's kernel (the
    tree's kselftests), built or cached.  A failure is recorded for the tests
    that need it to report; it never stops the variant."""
    spec = ctx.matrix.variant(variant)
    bdir = plan.build_dir_for(ctx.matrix, spec, prepared.repo, ctx.cache.work)
    artifacts = Path(built.build.artifact_dir)
    kernel = Kernel(bdir.src, bdir.out, artifacts / "vmlinux", artifacts.name)
    files: list[tuple[str, Path]] = []
    errors: list[tuple[str, str]] = []
    for installer in suites.installers(ctx.matrix.tests):
        wanted = installer.wanted(ctx.matrix.tests)
        log = ctx.logs(variant) / f"{installer.name}.log"
        if not all(installer.ready(ctx.cache.root, kernel, unit) for unit in wanted):
            _checkout(prepared, bdir, applied.head)
            ctx.progress(variant, Stage.TEST, None, f"log: {log}")
        done = installer.install(
            kernel,
            wanted,
            ctx.cache.root,
            log,
            jobs=ctx.jobs,
            timeout=ctx.matrix.build_timeout,
            sandbox=ctx.sandbox,
        )
        files += done.files
        errors += done.errors
    return InstalledFiles(Installed(tuple(files), tuple(errors)))


def make_guest(ctx: Context) -> GuestReady:
    return GuestReady(testbed.prepare(ctx.matrix, ctx.cache, ctx.run_dir))


def functional(
    ctx: Context,
    variant: str,
    built: Built,
    setup: testbed.GuestSetup,
    installed: Installed,
    accel: tuple[str, str] | None,
) -> Tested:
    """Boot the variant's kernel and run its functional tests (the BOOT stage)."""
    out = ctx.run_dir / "guest" / f"initrd-{variant}.cpio"
    initrd: Path | None = None
    if installers := suites.installers(ctx.matrix.tests):
        try:
            initrd = testbed.variant_initrd(setup, installed, out)
        except (UserError, OSError) as exc:
            reason = f"{' and '.join(i.name for i in installers)} not installed in the guest: {exc}"
            wanted = [u for i in installers for u in i.wanted(ctx.matrix.tests)]
            installed = Installed(errors=tuple((u, reason) for u in wanted))
    kernel = Path(built.build.artifact_dir) / "vmlinux"
    state = GuestState(variant, variant, kernel, initrd, installed)
    chooser = _Accelerator(ctx, accel)
    run = _guest_run(ctx, state, setup, chooser)
    tests = run.run(testbed.functional(ctx.matrix.tests))
    return Tested(run.boot_stage(), tests, _after(state, run), chooser.chosen)


def perf_round(
    ctx: Context,
    batch: int,
    round_: int,
    guests: tuple[GuestState, ...],
    setup: testbed.GuestSetup,
    accel: tuple[str, str] | None,
    measure: Mapping[str, tuple[str, ...]] | None = None,
) -> Round:
    """One sample of every perf test per guest, one guest after another.

    A round is a block: every guest once, in an order shuffled per round
    (seeded by batch and round, so a rerun or resume boots the same order),
    so no guest is always first after an idle machine or always last.
    `measure`: a sequential round's perf tests per guest (those with an open
    comparison); None runs every test the round has on every guest.
    """
    every = testbed.perf_round(ctx.matrix.tests, round_, batch)
    chooser = _Accelerator(ctx, accel)
    samples = []
    order = list(guests)
    random.Random(f"perf round {batch}:{round_}").shuffle(order)
    for state in order:
        wanted = None if measure is None else set(measure.get(state.name, ()))
        pending = [p for p in every if wanted is None or p.test.name in wanted]
        if not pending:
            samples.append(Sampled(state, ()))
            continue
        note = f", batch {batch}" if batch > 1 else ""
        ctx.progress(state.name, Stage.TEST, None, f"perf round {round_}{note}")
        run = _guest_run(ctx, state, setup, chooser)
        tests = run.run(pending)
        samples.append(Sampled(_after(state, run), tests if round_ > 0 else ()))
    return Round(tuple(samples))


def on_cpus(work: Callable[[], T], cpus: tuple[int, ...]) -> Callable[[], T]:
    """A unit's work with its guests pinned to the host CPUs `cpus`.

    Every unit's work is `partial(units.<kind>, ctx, ...)` (runner._work),
    so the CPU set travels as data in the Context, like the rest of a unit's
    inputs, and no thread-local or global says where a guest runs.
    """
    if not (isinstance(work, partial) and work.args and isinstance(work.args[0], Context)):
        raise TypeError(f"not a unit's work (partial of a Context): {work!r}")
    ctx: Any = replace(work.args[0], host_cpus=cpus)
    return partial(work.func, ctx, *work.args[1:], **work.keywords)


# --- helpers ------------------------------------------------------------------------------


class _Accelerator:
    """The matrix's choice, or a KVM probe, once per unit; the runner hands
    the first unit's answer to the next ones, so a run probes once."""

    def __init__(self, ctx: Context, known: tuple[str, str] | None) -> None:
        self.ctx = ctx
        self.chosen = known
        self._lock = Lock()

    def __call__(self, kernel: Path, initrd: Path) -> tuple[str, str]:
        with self._lock:
            if self.chosen is None:
                choice = self.ctx.matrix.guest.accel
                if choice is not AccelChoice.AUTO:
                    self.chosen = (qemu.Accel(choice.value), "set in the matrix")
                else:
                    self.chosen = qemu.probe_accel(kernel, initrd, cache_dir=self.ctx.cache.root)
            return self.chosen


def _guest_run(
    ctx: Context, state: GuestState, setup: testbed.GuestSetup, accel: testbed.Accelerator
) -> testbed.VariantRun:
    spec = replace(ctx.matrix.variant(state.of), name=state.name)
    return testbed.VariantRun(
        ctx.matrix,
        spec,
        setup,
        state.kernel,
        ctx.logs(state.name),
        accel,
        initrd=state.initrd,
        installed=state.installed,
        boots=state.boots,
        boot_info=state.boot_info,
        boot_failure=state.boot_failure,
        host_cpus=ctx.host_cpus,
    )


def _after(state: GuestState, run: testbed.VariantRun) -> GuestState:
    return dataclasses.replace(
        state, boots=run.boots, boot_info=run.boot_info, boot_failure=run.boot_failure
    )


def _checkout(prepared: Prepared, bdir: build.BuildDir, commit: str) -> None:
    # configure, build and install all need the variant's checkout; a
    # second checkout of the same commit would stat every file of the tree.
    src = source.Source(prepared.repo, prepared.base)
    source.worktree(src, bdir.src)
    head = git(bdir.src, "rev-parse", "-q", "--verify", "HEAD", check=False)
    if head.ok and head.stdout.strip() == commit:
        return
    source.checkout(bdir.src, commit)


def _cached_log(kept: Path, log: Path, what: str) -> None:
    """This run's copy of the log of the run that did the work ("configured",
    "built", or "built by <variant>" earlier in this run)."""
    try:
        text = kept.read_text(errors="replace")
    except OSError:
        text = "(that log is no longer in the cache)\n"
    who = what if " by " in what else f"{what} by an earlier run"
    log.write_text(f"# cached: {who}; its log follows\n{text}")


def _has_commit(repo: Path, commit: str | None) -> bool:
    if not commit:
        return False
    return git(repo, "cat-file", "-e", f"{commit}^{{commit}}", check=False).ok


def _apply_verdict(applied: series.Applied, log: str) -> StageResult:
    conflicts = [p for p in applied.patches if p.outcome is PatchOutcome.CONFLICT]
    if conflicts:
        p = conflicts[0]
        files = ", ".join(p.files) or "unknown files"
        reason = f"{Path(p.source).name} ({p.subject}) does not apply: conflict in {files}"
        return StageResult(Stage.APPLY, Status.FAIL, reason, logs=(log,))
    counts: dict[str, int] = {}
    for p in applied.patches:
        counts[p.outcome.value] = counts.get(p.outcome.value, 0) + 1
    summary = ", ".join(f"{n} {what}" for what, n in counts.items()) or "no patches"
    return StageResult(Stage.APPLY, Status.PASS, summary, logs=(log,))


def _kconfig_verdict(
    configured: kconfig.Configured, on_mismatch: OnMismatch, log: Path
) -> StageResult:
    logs = (str(log),)
    if configured.error is not None:
        return StageResult(Stage.KCONFIG, Status.FAIL, configured.error, logs=logs)
    if configured.mismatches:
        missing = ", ".join(f"{m.symbol}={m.wanted} ({m.reason})" for m in configured.mismatches)
        status = Status.FAIL if on_mismatch is OnMismatch.ERROR else Status.PASS
        return StageResult(Stage.KCONFIG, status, f"did not stick: {missing}", logs=logs)
    return StageResult(Stage.KCONFIG, Status.PASS, "all requested symbols set", logs=logs)
