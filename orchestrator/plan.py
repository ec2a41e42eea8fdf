"""A run as units of work: what to do, in which order, from which inputs.

The plan is data.  `units()` turns a matrix into a graph of units (prepare
the tree, apply a series, configure, build, install what test kinds build
against the kernel, make the guest image, boot and run the functional
tests, one perf round) with their content inputs and dependencies; the
runner hands ready units to an executor and folds their results into the
run's results.  Nothing here
runs anything, so `orchestrate plan` and the runner read the same plan.

Dependencies come in three kinds:

* `needs`: the unit uses these units' results; when one of them failed
  for its variant, the unit is skipped and its stages say why;
* `needs_any`: the unit runs if at least one of these passed (the guest
  image is made only when some kernel built; a perf round measures the
  variants that booted);
* `after`: order only.  Units that share a worktree run one after another:
  every apply uses the one apply worktree, and the variants of one build
  directory configure, build and install (kselftests) in turn, which is
  what keeps their builds incremental.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestrator import suites
from orchestrator.cache import digest
from orchestrator.kernel import build, series
from orchestrator.matrix import Matrix, Test, Variant
from orchestrator.results import Stage


class UnitKind(enum.Enum):
    PREPARE = "prepare"  # the kernel tree in the cache and its base commit
    APPLY = "apply"  # one variant's series on the base
    CONFIGURE = "configure"  # one variant's .config
    BUILD = "build"  # one variant's kernel, shared when its tree and config were built
    INSTALL = "install"  # what some kinds build against one variant's kernel (kselftests)
    GUEST = "guest"  # the run's guest image: keys, guest programs, initramfs
    FUNCTIONAL = "functional"  # one variant booted, its functional tests run
    PERF_ROUND = "perf-round"  # one perf sample per variant, one guest at a time


# The stage each per-variant unit reports (KSELFTESTS and PERF_ROUND feed TEST).
STAGE_OF = {
    UnitKind.APPLY: Stage.APPLY,
    UnitKind.CONFIGURE: Stage.KCONFIG,
    UnitKind.BUILD: Stage.BUILD,
    UnitKind.FUNCTIONAL: Stage.BOOT,
}


@dataclass(frozen=True)
class Unit:
    id: str
    kind: UnitKind
    variant: str = ""  # "" for units of the whole run
    needs: tuple[str, ...] = ()
    needs_any: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    # Content hashes known before the run (patches, fragments, tests); the
    # rest (tree, config) come from the results of the units it needs.
    inputs: tuple[tuple[str, str], ...] = ()
    batch: int = 0  # PERF_ROUND: the batch (1, then 2... when the A/A control asks)
    round: int = 0  # PERF_ROUND: 0 is the discarded warm-up
    # PERF_ROUND of a sequential plan: the guests this round boots and the perf
    # tests each runs (those with an open comparison); () boots every guest.
    measure: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def deps(self) -> tuple[str, ...]:
        return (*self.needs, *self.needs_any, *self.after)


def unit_id(kind: UnitKind, variant: str = "", *, batch: int = 0, round: int = 0) -> str:
    if kind is UnitKind.PERF_ROUND:
        return f"{kind.value}:{batch}:{round}"
    return f"{kind.value}:{variant}" if variant else kind.value


# --- keys: the content a stage's result depends on ---------------------------------------


def selected(matrix: Matrix, only: Sequence[str]) -> tuple[Variant, ...]:
    return tuple(v for v in matrix.variants if not only or v.name in only)


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


class BuildState(enum.Enum):
    BUILD = "build"  # make runs
    CACHED = "cached"  # the artifacts exist: nothing compiled
    SHARED = "shared"  # another variant of this run builds (or built) the same tree


def build_state(built: bool, builder: str | None, variant: str) -> BuildState:
    """One rule for "same tree, built once": `builder` is the variant of this
    run that builds these artifacts (None when none of them does)."""
    if builder is not None and builder != variant:
        return BuildState.SHARED
    return BuildState.CACHED if built else BuildState.BUILD


# --- tests ----------------------------------------------------------------------------------


def is_perf(test: Test) -> bool:
    """Perf kinds are sampled once per boot, variants interleaved round by round."""
    return suites.suite_for(test).perf


def perf_tests(tests: Sequence[Test]) -> tuple[Test, ...]:
    return tuple(t for t in tests if is_perf(t))


def functional_tests(tests: Sequence[Test]) -> tuple[Test, ...]:
    return tuple(t for t in tests if not is_perf(t))


def perf_rounds(tests: Sequence[Test]) -> int:
    return max((t.repeats for t in perf_tests(tests)), default=0)


def _tests_key(tests: Sequence[Test]) -> str:
    return digest(*(repr(t) for t in tests))


# --- the graph --------------------------------------------------------------------------------


def units(
    matrix: Matrix, only: Sequence[str], until: Stage, repo: Path, work: Path
) -> tuple[Unit, ...]:
    """Every unit of a run, in the order a serial run takes them."""
    variants = selected(matrix, only)
    prepare = Unit(unit_id(UnitKind.PREPARE), UnitKind.PREPARE)
    out = [prepare]
    previous_apply: tuple[str, ...] = ()
    for v in variants:
        uid = unit_id(UnitKind.APPLY, v.name)
        series_key = digest(*(str(p) for p in v.series), *(repr(r) for r in v.reverts))
        if v.mail is not None:  # a thread: b4 takes the series from it in the apply unit
            series_key = digest(series_key, repr(v.mail))
        out.append(
            Unit(
                uid,
                UnitKind.APPLY,
                v.name,
                needs=(prepare.id,),
                after=previous_apply,
                inputs=(("series", series_key),),
            )
        )
        previous_apply = (uid,)
    if until is Stage.APPLY:
        return tuple(out)
    installs = bool(suites.installers(matrix.tests))
    last_in_dir: dict[str, str] = {}  # build dir key -> the last unit using it
    builds: list[str] = []
    for v in variants:
        bdir = build_dir_for(matrix, v, repo, work)
        after = (last_in_dir[bdir.key],) if bdir.key in last_in_dir else ()
        inputs = (("build-dir", bdir.key),)
        configure = Unit(
            unit_id(UnitKind.CONFIGURE, v.name),
            UnitKind.CONFIGURE,
            v.name,
            needs=(unit_id(UnitKind.APPLY, v.name),),
            after=after,
            inputs=inputs,
        )
        built = Unit(
            unit_id(UnitKind.BUILD, v.name),
            UnitKind.BUILD,
            v.name,
            needs=(configure.id,),
            inputs=inputs,
        )
        out += [configure, built]
        builds.append(built.id)
        last_in_dir[bdir.key] = built.id
        if installs and until is Stage.TEST:
            ks = Unit(
                unit_id(UnitKind.INSTALL, v.name),
                UnitKind.INSTALL,
                v.name,
                needs=(built.id,),
                inputs=(*inputs, ("tests", _tests_key(matrix.tests))),
            )
            out.append(ks)
            last_in_dir[bdir.key] = ks.id
    if until in (Stage.KCONFIG, Stage.BUILD):
        return tuple(out)
    guest = Unit(
        unit_id(UnitKind.GUEST),
        UnitKind.GUEST,
        needs_any=tuple(builds),
        inputs=(("guest", digest(repr(matrix.guest))),),
    )
    out.append(guest)
    functional = []
    for v in variants:
        needs: tuple[str, ...] = (unit_id(UnitKind.BUILD, v.name), guest.id)
        if installs:
            needs += (unit_id(UnitKind.INSTALL, v.name),)
        uid = unit_id(UnitKind.FUNCTIONAL, v.name)
        tests = functional_tests(matrix.tests)
        out.append(
            Unit(
                uid,
                UnitKind.FUNCTIONAL,
                v.name,
                needs=needs,
                inputs=(("tests", _tests_key(tests)),),
            )
        )
        functional.append(uid)
    out += perf_batch(matrix, tuple(functional), batch=1, after=())
    return tuple(out)


def perf_batch(
    matrix: Matrix, functional: tuple[str, ...], *, batch: int, after: tuple[str, ...]
) -> list[Unit]:
    """The rounds of one perf batch known up front, each after the one before.

    Batch 1 starts with a warm-up round whose samples are discarded (first
    boots after a build run against cold host caches); a rerun starts warm.
    A fixed plan knows every round; a sequential one its first, and the
    runner adds each next round while it may (runner._after_round).
    """
    rounds = perf_rounds(matrix.tests)
    if not rounds:
        return []
    if matrix.perf.sequential:
        rounds = 0 if batch == 1 else 1  # the runner adds each next one (and checks the budget)
    out: list[Unit] = []
    for round_ in range(0 if batch == 1 else 1, rounds + 1):
        unit = perf_round_unit(matrix, functional, batch, round_, after)
        out.append(unit)
        after = (unit.id,)
    return out


def perf_round_unit(
    matrix: Matrix,
    functional: tuple[str, ...],
    batch: int,
    round_: int,
    after: tuple[str, ...],
    measure: tuple[tuple[str, tuple[str, ...]], ...] = (),
) -> Unit:
    return Unit(
        unit_id(UnitKind.PERF_ROUND, batch=batch, round=round_),
        UnitKind.PERF_ROUND,
        needs_any=functional,
        after=after,
        inputs=(("tests", _tests_key(perf_tests(matrix.tests))),),
        batch=batch,
        round=round_,
        measure=measure,
    )
