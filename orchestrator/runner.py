"""Runs the stages for every variant: apply, kconfig, build.

A stage that fails marks its variant's later stages SKIPPED with the reason;
other variants go on.  Kernel problems are results; only the tool's own
faults (UserError, InfraError) propagate.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from orchestrator import aa_control, verdicts
from orchestrator.cache import Cache, digest
from orchestrator.errors import UserError
from orchestrator.git import git, tree_of
from orchestrator.kernel import build, kconfig, series, source
from orchestrator.matrix import Matrix, Variant
from orchestrator.results import (
    Batch,
    BuildInfo,
    PatchOutcome,
    Stage,
    StageResult,
    Status,
    VariantResult,
)
from orchestrator.suites import kselftest
from orchestrator.vm import qemu, testbed

STAGES = (Stage.APPLY, Stage.KCONFIG, Stage.BUILD, Stage.BOOT, Stage.TEST)

# Called on every stage change: variant, stage, status (None when starting), detail.
Progress = Callable[[str, Stage, Status | None, str], None]


@dataclass(frozen=True)
class Options:
    cache: Cache
    run_dir: Path
    jobs: int = 2
    only: tuple[str, ...] = ()
    until: Stage = Stage.TEST  # the last stage to run


def selected(matrix: Matrix, only: tuple[str, ...]) -> tuple[Variant, ...]:
    return tuple(v for v in matrix.variants if not only or v.name in only)


def collect_series(matrix: Matrix, only: tuple[str, ...]) -> dict[str, tuple[series.Patch, ...]]:
    """Read every patch up front, so bad input fails before anything starts."""
    return {v.name: series.collect(v.series) for v in selected(matrix, only)}


def apply_key(base: str, variant: Variant, patches: tuple[series.Patch, ...]) -> str:
    reverts = [r.commit or (r.patch.read_text() if r.patch else "") for r in variant.reverts]
    return digest(base, *reverts, "--", *(p.text for p in patches))


def fragments_of(matrix: Matrix, variant: Variant) -> tuple[Path, ...]:
    return (*matrix.kconfig.fragments, *variant.fragments)


def build_dir_for(matrix: Matrix, variant: Variant, repo: Path, work: Path) -> build.BuildDir:
    """The shared build directory of every variant with this variant's kconfig input."""
    cfg = matrix.kconfig
    key = build.build_dir_key(repo, cfg.arch, cfg.base, fragments_of(matrix, variant))
    return build.BuildDir.at(work, key)


def kconfig_key(tree: str, bdir: build.BuildDir) -> str:
    return f"{tree[:16]}-{bdir.key}"


@dataclass
class _Variant:
    """A variant's record while it runs; frozen into a VariantResult at the end."""

    name: str
    stages: list[StageResult] = field(default_factory=list)
    result: VariantResult | None = None
    guest: testbed.VariantRun | None = None  # set once the variant booted

    def done(self) -> VariantResult:
        assert self.result is not None
        return replace(self.result, stages=tuple(self.stages))


class Runner:
    def __init__(self, matrix: Matrix, options: Options, progress: Progress) -> None:
        self.matrix = matrix
        self.options = options
        self.cache = options.cache
        self.progress = progress
        self.built: dict[Path, str] = {}  # artifact dir -> variant that built it this run
        self._guest: testbed.GuestSetup | None = None
        self._accel: tuple[str, str] | None = None
        self._checked_out: dict[Path, str] = {}  # build worktree -> commit
        self.control: VariantResult | None = None  # the A/A control, once measured
        self.batches: list[Batch] = []  # perf batches, in order

    def run(self, patches: dict[str, tuple[series.Patch, ...]]) -> tuple[VariantResult, ...]:
        with self.cache.locked():
            src = source.prepare(self.matrix.tree, self.cache.root)
            apply_wt = source.worktree(src, self.cache.work / f"apply-{src.repo.stem}")
            records = [_Variant(v.name) for v in selected(self.matrix, self.options.only)]
            for rec in records:
                self._apply(rec, src, apply_wt, patches[rec.name])
            for rec in records:
                self._configure_and_build(rec, src)
            if self.options.until in (Stage.APPLY, Stage.KCONFIG, Stage.BUILD):
                return tuple(rec.done() for rec in records)
            try:
                for rec in records:
                    self._boot_and_test(rec, src)
                self._perf(records)
                for rec in records:
                    self._judge(rec)
            finally:
                if self._guest is not None:
                    shutil.rmtree(self._guest.sockets, ignore_errors=True)
            return tuple(rec.done() for rec in records)

    @contextmanager
    def _stage(self, rec: _Variant, stage: Stage) -> Iterator[list[StageResult]]:
        """Times a stage; the body appends exactly one StageResult."""
        self.progress(rec.name, stage, None, "")
        start = time.monotonic()
        out: list[StageResult] = []
        yield out
        (result,) = out
        result = replace(result, duration=round(time.monotonic() - start, 3))
        rec.stages.append(result)
        self.progress(rec.name, stage, result.status, result.reason)

    def _skip_rest(self, rec: _Variant, after: Stage, reason: str) -> None:
        last = STAGES.index(self.options.until)
        for stage in STAGES[STAGES.index(after) + 1 : last + 1]:
            rec.stages.append(StageResult(stage, Status.SKIPPED, reason))
            self.progress(rec.name, stage, Status.SKIPPED, reason)

    def _logs(self, name: str) -> Path:
        path = self.options.run_dir / "logs" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _apply(
        self, rec: _Variant, src: source.Source, worktree: Path, patches: tuple[series.Patch, ...]
    ) -> None:
        variant = self.matrix.variant(rec.name)
        with self._stage(rec, Stage.APPLY) as out:
            key = apply_key(src.base, variant, patches)
            applied = self.cache.load("apply", key, series.Applied)
            if applied is None or not _has_commit(src.repo, applied.head):
                branch = f"orchestrate/{self.matrix.name}/{rec.name}"
                applied = series.apply(worktree, src.base, branch, patches, variant.reverts)
                if applied.ok:
                    self.cache.save("apply", key, applied)
            log = self._logs(rec.name) / "apply.log"
            log.write_text(
                "".join(f"{p.source}: {p.outcome.value}\n{p.output}" for p in applied.patches)
            )
            rec.result = VariantResult(
                rec.name, (), base=applied.base, head=applied.head or "", patches=applied.patches
            )
            out.append(_apply_verdict(applied, str(log)))

    def _configure_and_build(self, rec: _Variant, src: source.Source) -> None:
        assert rec.result is not None
        if rec.stages[-1].status is not Status.PASS:
            self._skip_rest(rec, Stage.APPLY, f"apply failed: {rec.stages[-1].reason}")
            return
        cfg = self.matrix.kconfig
        variant = self.matrix.variant(rec.name)
        fragments = fragments_of(self.matrix, variant)
        bdir = build_dir_for(self.matrix, variant, src.repo, self.cache.work)
        tree = tree_of(src.repo, rec.result.head)
        with self._stage(rec, Stage.KCONFIG) as out:
            configured = self._configure(rec, src, bdir, tree, fragments)
            rec.result = replace(rec.result, kconfig=configured.mismatches)
            out.append(_kconfig_verdict(configured, cfg.on_mismatch, self._logs(rec.name)))
        if rec.stages[-1].status is not Status.PASS:
            self._skip_rest(rec, Stage.KCONFIG, f"kconfig failed: {rec.stages[-1].reason}")
            return
        with self._stage(rec, Stage.BUILD) as out:
            info, stage = self._build(rec, src, bdir, tree, configured)
            rec.result = replace(rec.result, build=info)
            out.append(stage)

    def _configure(
        self,
        rec: _Variant,
        src: source.Source,
        bdir: build.BuildDir,
        tree: str,
        fragments: tuple[Path, ...],
    ) -> kconfig.Configured:
        key = kconfig_key(tree, bdir)
        configured = self.cache.load("kconfig", key, kconfig.Configured)
        if configured is not None:
            return configured
        self._checkout(src, bdir, rec.result.head if rec.result else "")
        cfg = self.matrix.kconfig
        configured = kconfig.configure(
            bdir.src,
            bdir.config,
            arch=cfg.arch,
            base=cfg.base,
            fragments=fragments,
            make_args=build.FIXED_MAKE_VARS,
            env=build.make_env(self.cache.root, bdir),
            log=self._logs(rec.name) / "kconfig.log",
            timeout=600,
        )
        if configured.error is None:
            self.cache.save("kconfig", key, configured)
        return configured

    def _build(
        self,
        rec: _Variant,
        src: source.Source,
        bdir: build.BuildDir,
        tree: str,
        configured: kconfig.Configured,
    ) -> tuple[BuildInfo, StageResult]:
        artifacts = build.artifact_dir(self.cache.root, tree, configured.sha256)
        info = BuildInfo(
            tree=tree, config=configured.sha256, artifact_dir=str(artifacts), cached=True
        )
        if build.is_built(artifacts):
            shared = self.built.get(artifacts)
            info = replace(info, shared_with=shared, warnings=build.cached_warnings(artifacts))
            reason = f"same tree as {shared}: built once" if shared else "cached: nothing compiled"
            return info, StageResult(
                Stage.BUILD, Status.PASS, reason, logs=(str(artifacts / "build.log"),)
            )
        assert rec.result is not None
        self._checkout(src, bdir, rec.result.head)
        self.progress(rec.name, Stage.BUILD, None, f"log: {build.pending_log(artifacts)}")
        outcome = build.build(
            bdir,
            configured.config_text,
            artifacts,
            cache=self.cache.root,
            arch=self.matrix.kconfig.arch,
            jobs=self.options.jobs,
            timeout=self.matrix.build_timeout,
        )
        info = replace(
            info, cached=False, first_error=outcome.first_error, warnings=outcome.warnings
        )
        logs = (str(outcome.log),)
        if not outcome.ok:
            return info, StageResult(Stage.BUILD, Status.FAIL, outcome.first_error or "", logs=logs)
        self.built[artifacts] = rec.name
        return info, StageResult(Stage.BUILD, Status.PASS, "built", logs=logs)

    def _boot_and_test(self, rec: _Variant, src: source.Source) -> None:
        """BOOT stage and the functional tests; the TEST verdict comes after perf."""
        assert rec.result is not None
        last = rec.stages[-1]
        if last.stage is not Stage.BUILD:
            return  # an earlier stage failed and the rest is already SKIPPED
        if last.status is not Status.PASS:
            self._skip_rest(rec, Stage.BUILD, f"build failed: {last.reason}")
            return
        assert rec.result.build is not None
        if self._guest is None:
            self._guest = testbed.prepare(self.matrix, self.cache, self.options.run_dir)
        installed, initrd = self._kselftests(rec, src)
        rec.guest = testbed.VariantRun(
            self.matrix,
            self.matrix.variant(rec.name),
            self._guest,
            Path(rec.result.build.artifact_dir) / "vmlinux",
            self._logs(rec.name),
            self._accelerator,
            initrd=initrd,
            kselftests=installed,
        )
        self.progress(rec.name, Stage.BOOT, None, "")
        start = time.monotonic()
        tests = rec.guest.run(testbed.functional(self.matrix.tests))
        boot = replace(rec.guest.boot_stage(), duration=round(time.monotonic() - start, 3))
        rec.stages.append(boot)
        self.progress(rec.name, Stage.BOOT, boot.status, boot.reason)
        rec.result = replace(rec.result, boot=rec.guest.boot_info, tests=tests)
        if boot.status is not Status.PASS:
            rec.guest = None
            self._skip_rest(rec, Stage.BOOT, f"boot failed: {boot.reason}")

    def _kselftests(
        self, rec: _Variant, src: source.Source
    ) -> tuple[kselftest.Installed, Path | None]:
        """The variant's in-tree kselftests, built (or cached), and its initramfs with them.

        A failure is recorded for the kselftest tests to report; it never
        stops the variant.
        """
        wanted = kselftest.collections(self.matrix.tests)
        if not wanted:
            return kselftest.Installed(), None
        assert rec.result is not None and rec.result.build is not None and self._guest is not None
        bdir = build_dir_for(self.matrix, self.matrix.variant(rec.name), src.repo, self.cache.work)
        artifacts = Path(rec.result.build.artifact_dir)
        kernel = kselftest.Kernel(bdir.src, bdir.out, artifacts / "vmlinux", artifacts.name)
        log = self._logs(rec.name) / "kselftest.log"
        if any(kselftest.cached(self.cache.root, kernel, c, log) is None for c in wanted):
            self._checkout(src, bdir, rec.result.head)
            self.progress(rec.name, Stage.TEST, None, f"log: {log}")
        installed = kselftest.install(
            kernel,
            wanted,
            self.cache.root,
            log,
            jobs=self.options.jobs,
            timeout=self.matrix.build_timeout,
        )
        out = self.options.run_dir / "guest" / f"initrd-{rec.name}.cpio"
        try:
            return installed, testbed.variant_initrd(self._guest, installed, out)
        except (UserError, OSError) as exc:
            reason = f"kselftests not installed in the guest: {exc}"
            return kselftest.Installed(errors=tuple((c, reason) for c in wanted)), None

    def _perf(self, records: list[_Variant]) -> None:
        """Perf tests, one sample per boot, variants interleaved: A B C A B C ...

        With perf.aa_control the baseline's kernel also runs as its A/A
        control in every round, and a batch the control shows too noisy is
        run again (aa_control.judge_batch).
        """
        booted = [rec for rec in records if rec.guest is not None]
        if not booted or not testbed.perf_rounds(self.matrix.tests):
            return
        # The baseline as the reports take it: the matrix's choice, else the first variant.
        name = self.matrix.report.baseline or records[0].name
        base = next((rec for rec in booted if rec.name == name), None)
        control = None
        if base is not None and self.matrix.perf.aa_control:
            control = self._control(base)
        self._perf_batches(booted, base, control)
        if control is not None:
            self.control = self._control_done(control)

    def _perf_batches(
        self, booted: list[_Variant], base: _Variant | None, control: _Variant | None
    ) -> None:
        measured = [*booted, *([control] if control is not None else [])]
        attempt = 1
        while True:
            self._perf_batch(measured, attempt)
            judged = Batch(attempt)  # no control: nothing says a batch is noisy
            if base is not None and control is not None:
                assert base.result is not None and control.result is not None
                max_reruns = self.matrix.perf.max_reruns
                judged = aa_control.judge_batch(attempt, base.result, control.result, max_reruns)
            self.batches.append(judged)
            if not judged.rerun:
                return
            attempt += 1

    def _perf_batch(self, measured: list[_Variant], attempt: int) -> None:
        """One batch of rounds; its samples are tagged with the attempt number.

        Round 0 is a warm-up whose samples are discarded (first boots after
        a build run against cold host caches); a rerun starts warm.
        """
        first = 0 if attempt == 1 else 1
        for round_ in range(first, testbed.perf_rounds(self.matrix.tests) + 1):
            pending = testbed.perf_round(self.matrix.tests, round_, attempt)
            for rec in measured:
                assert rec.guest is not None and rec.result is not None
                if not pending:
                    continue
                batch = f", batch {attempt}" if attempt > 1 else ""
                self.progress(rec.name, Stage.TEST, None, f"perf round {round_}{batch}")
                tests = rec.guest.run(pending)
                if round_ > 0:
                    rec.result = replace(rec.result, tests=(*rec.result.tests, *tests))

    def _control(self, base: _Variant) -> _Variant:
        """The A/A control: the baseline's built kernel and image, booted as one more variant."""
        assert base.guest is not None and base.result is not None
        name = aa_control.name_for(base.name)
        built = base.result.build
        rec = _Variant(name)
        rec.result = VariantResult(
            name,
            (),
            base=base.result.base,
            head=base.result.head,
            build=replace(built, shared_with=base.name) if built is not None else None,
        )
        # The baseline's run with its kernel and image, under its own name and
        # logs, and none of its boots: a fresh start as an independent variant.
        rec.guest = replace(
            base.guest,
            variant=replace(base.guest.variant, name=name),
            logs=self._logs(name),
            boots=0,
            boot_info=None,
            boot_failure=None,
            reboot_failure=None,
        )
        return rec

    def _control_done(self, rec: _Variant) -> VariantResult:
        assert rec.guest is not None and rec.result is not None
        tests = rec.result.tests
        rec.stages += [rec.guest.boot_stage(), verdicts.judge_tests(tests)]
        return replace(rec.result, stages=tuple(rec.stages), boot=rec.guest.boot_info)

    def _judge(self, rec: _Variant) -> None:
        if rec.guest is None or rec.result is None:
            return
        tests = rec.result.tests
        stage = replace(verdicts.judge_tests(tests), duration=sum(t.duration for t in tests))
        rec.stages.append(stage)
        self.progress(rec.name, Stage.TEST, stage.status, stage.reason)

    def _accelerator(self, kernel: Path, initrd: Path) -> tuple[str, str]:
        """The matrix's choice, or a KVM probe once per run (cached per host boot)."""
        if self.matrix.guest.accel != "auto":
            return self.matrix.guest.accel, "set in the matrix"
        if self._accel is None:
            self._accel = qemu.probe_accel(kernel, initrd, cache_dir=self.cache.root)
        return self._accel

    def _checkout(self, src: source.Source, bdir: build.BuildDir, commit: str) -> None:
        # kconfig and build both need the variant's checkout; a second git
        # checkout of a kernel tree would stat every file again for nothing.
        if self._checked_out.get(bdir.src) == commit:
            return
        source.worktree(src, bdir.src)
        source.checkout(bdir.src, commit)
        self._checked_out[bdir.src] = commit


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


def _kconfig_verdict(configured: kconfig.Configured, on_mismatch: str, logs: Path) -> StageResult:
    log = (str(logs / "kconfig.log"),)
    if configured.error is not None:
        return StageResult(Stage.KCONFIG, Status.FAIL, configured.error, logs=log)
    if configured.mismatches:
        missing = ", ".join(f"{m.symbol}={m.wanted} ({m.reason})" for m in configured.mismatches)
        status = Status.FAIL if on_mismatch == "error" else Status.PASS
        return StageResult(Stage.KCONFIG, status, f"did not stick: {missing}", logs=log)
    return StageResult(Stage.KCONFIG, Status.PASS, "all requested symbols set", logs=log)
