"""What a run would do, from the matrix and the cache alone (touches nothing).

`orchestrate plan` prints it: per variant, whether its apply, kconfig and
build results are cached, and which variants share a build.  It reads the
same keys and the same "built once" rule as the runner (plan.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator import plan
from orchestrator.cache import Cache
from orchestrator.git import tree_of
from orchestrator.kernel import build, kconfig, series, source
from orchestrator.matrix import Matrix, Test
from orchestrator.plan import BuildState
from orchestrator.textfmt import fmt_rate


@dataclass(frozen=True)
class PlanRow:
    variant: str
    apply: str
    kconfig: str
    build: str
    build_dir: str
    state: BuildState = BuildState.BUILD  # BUILD also when it is not known yet


@dataclass(frozen=True)
class Preview:
    tree: str
    rows: tuple[PlanRow, ...]
    guest: str = ""  # what every variant that builds then does in the guest

    @property
    def builds(self) -> int:
        return sum(1 for r in self.rows if r.state is BuildState.BUILD)


def make_preview(
    matrix: Matrix,
    cache: Cache,
    patches: dict[str, tuple[series.Patch, ...]],
    only: tuple[str, ...] = (),
) -> Preview:
    base = source.cached_base(matrix.tree, cache.root)
    repo = source.cache_path(matrix.tree, cache.root)
    tree_note = f"cached, base {base[:12]}" if base else "not cached yet: will be imported"
    rows = []
    builders: dict[str, str] = {}  # artifact dir -> the first variant of this run with it
    for variant in plan.selected(matrix, only):
        bdir = plan.build_dir_for(matrix, variant, repo, cache.work)
        mode = "incremental" if (bdir.out / ".config").exists() else "clean"
        pending = f"build in {bdir.key} ({mode})"
        count = f"{len(patches[variant.name])} patches" + (
            f", {len(variant.reverts)} reverts" if variant.reverts else ""
        )
        if variant.mail is not None:  # b4 reads the thread when the run applies it
            thread = variant.mail.message_id
            count = f"thread <{thread}> (b4)" if thread else "thread (b4)"
        applied = None
        if base and variant.mail is None:
            key = plan.apply_key(base, variant, patches[variant.name])
            applied = cache.load("apply", key, series.Applied)
        if applied is None or not applied.head:
            rows.append(PlanRow(variant.name, f"{count}: apply", "configure", pending, bdir.key))
            continue
        tree = tree_of(repo, applied.head)
        configured = cache.load("kconfig", plan.kconfig_key(tree, bdir), kconfig.Configured)
        if configured is None:
            rows.append(PlanRow(variant.name, f"{count}: cached", "configure", pending, bdir.key))
            continue
        artifacts = build.artifact_dir(cache.root, tree, configured.sha256)
        # The first variant with these artifacts builds them (or finds them cached).
        builder = builders.setdefault(str(artifacts), variant.name)
        state = plan.build_state(build.is_built(artifacts), builder, variant.name)
        what = {
            BuildState.SHARED: f"same tree as {builder}: built once",
            BuildState.CACHED: f"cached: {artifacts.name}",
            BuildState.BUILD: pending,
        }[state]
        rows.append(PlanRow(variant.name, f"{count}: cached", "cached", what, bdir.key, state))
    return Preview(
        tree=f"{matrix.tree.kind.value} {matrix.tree.location}: {tree_note}",
        rows=tuple(rows),
        guest=_guest_summary(matrix),
    )


def _guest_summary(matrix: Matrix) -> str:
    g = matrix.guest
    boot = f"boot ({g.accel} accelerator, {g.cpus} vCPUs, {g.memory_mb} MiB)"
    functional = plan.functional_tests(matrix.tests)
    perf = plan.perf_tests(matrix.tests)
    parts = [boot]
    if functional:
        parts.append("run " + ", ".join(_times(t) for t in functional))
    if perf:
        rounds = plan.perf_rounds(matrix.tests)
        names = ", ".join(_times(t) for t in perf)
        how = "plus a warm-up, one boot per variant per round, variants interleaved"
        if matrix.perf.sequential:
            eq = f"{fmt_rate(matrix.perf.equivalence)}"
            parts.append(
                f"sequential perf rounds ({how}), at most {rounds}: a variant is booted again "
                f"only while a comparison is open ({matrix.perf.control.text} "
                f"{fmt_rate(matrix.perf.error_rate)}, same within "
                f"±{eq}): {names} at most"
            )
        else:
            parts.append(f"{rounds} perf rounds {how}: {names}")
        if matrix.perf.aa_control:
            n = matrix.perf.max_reruns
            again = f"the rounds rerun up to {n}x when its A/A spread is too wide"
            parts.append(f"the baseline booted again each round as an A/A control, {again}")
    return "; ".join(parts) if len(parts) > 1 else f"{boot}, no tests"


def _times(test: Test) -> str:
    return test.name + (f" x{test.repeats}" if test.repeats > 1 else "")


def render(preview: Preview) -> str:
    header = ("variant", "apply", "kconfig", "build")
    table = [header, *((r.variant, r.apply, r.kconfig, r.build) for r in preview.rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = [f"tree: {preview.tree}", ""]
    lines += [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in table
    ]
    lines += ["", f"then each variant that builds: {preview.guest}"] if preview.guest else []
    lines += ["", f"{preview.builds} of {len(preview.rows)} variants need a build"]
    return "\n".join(lines)
