"""What a run would do, from the matrix and the cache alone (touches nothing)."""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.cache import Cache
from orchestrator.git import tree_of
from orchestrator.kernel import build, kconfig, series, source
from orchestrator.matrix import Matrix, Test
from orchestrator.runner import apply_key, build_dir_for, kconfig_key, selected
from orchestrator.vm import testbed


@dataclass(frozen=True)
class PlanRow:
    variant: str
    apply: str
    kconfig: str
    build: str
    build_dir: str


@dataclass(frozen=True)
class Plan:
    tree: str
    rows: tuple[PlanRow, ...]
    guest: str = ""  # what every variant that builds then does in the guest

    @property
    def builds(self) -> int:
        return sum(1 for r in self.rows if not r.build.startswith(("cached", "same tree")))


def make_plan(
    matrix: Matrix,
    cache: Cache,
    patches: dict[str, tuple[series.Patch, ...]],
    only: tuple[str, ...] = (),
) -> Plan:
    base = source.cached_base(matrix.tree, cache.root)
    repo = source.cache_path(matrix.tree, cache.root)
    tree_note = f"cached, base {base[:12]}" if base else "not cached yet: will be imported"
    rows = []
    trees: dict[tuple[str, str], str] = {}  # (tree, build dir) -> first variant
    for variant in selected(matrix, only):
        bdir = build_dir_for(matrix, variant, repo, cache.work)
        mode = "incremental" if (bdir.out / ".config").exists() else "clean"
        pending = f"build in {bdir.key} ({mode})"
        count = f"{len(patches[variant.name])} patches" + (
            f", {len(variant.reverts)} reverts" if variant.reverts else ""
        )
        applied = None
        if base:
            applied = cache.load(
                "apply", apply_key(base, variant, patches[variant.name]), series.Applied
            )
        if applied is None or not applied.head:
            rows.append(PlanRow(variant.name, f"{count}: apply", "configure", pending, bdir.key))
            continue
        tree = tree_of(repo, applied.head)
        configured = cache.load("kconfig", kconfig_key(tree, bdir), kconfig.Configured)
        if configured is None:
            rows.append(PlanRow(variant.name, f"{count}: cached", "configure", pending, bdir.key))
            continue
        first = trees.setdefault((tree, configured.sha256), variant.name)
        artifacts = build.artifact_dir(cache.root, tree, configured.sha256)
        if first != variant.name:
            what = f"same tree as {first}: built once"
        elif build.is_built(artifacts):
            what = f"cached: {artifacts.name}"
        else:
            what = pending
        rows.append(PlanRow(variant.name, f"{count}: cached", "cached", what, bdir.key))
    return Plan(
        tree=f"{matrix.tree.kind.value} {matrix.tree.location}: {tree_note}",
        rows=tuple(rows),
        guest=_guest_summary(matrix),
    )


def _guest_summary(matrix: Matrix) -> str:
    g = matrix.guest
    boot = f"boot ({g.accel} accelerator, {g.cpus} vCPUs, {g.memory_mb} MiB)"
    functional = [t for t in matrix.tests if t.kind not in testbed.PERF_KINDS]
    perf = [t for t in matrix.tests if t.kind in testbed.PERF_KINDS]
    parts = [boot]
    if functional:
        parts.append("run " + ", ".join(_times(t) for t in functional))
    if perf:
        rounds = testbed.perf_rounds(matrix.tests)
        names = ", ".join(_times(t) for t in perf)
        how = "plus a warm-up, one boot per variant per round, variants interleaved"
        parts.append(f"{rounds} perf rounds {how}: {names}")
        if matrix.perf.aa_control:
            n = matrix.perf.max_reruns
            again = f"the rounds rerun up to {n}x when its A/A spread is too wide"
            parts.append(f"the baseline booted again each round as an A/A control, {again}")
    return "; ".join(parts) if len(parts) > 1 else f"{boot}, no tests"


def _times(test: Test) -> str:
    return test.name + (f" x{test.repeats}" if test.repeats > 1 else "")


def render(plan: Plan) -> str:
    header = ("variant", "apply", "kconfig", "build")
    table = [header, *((r.variant, r.apply, r.kconfig, r.build) for r in plan.rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = [f"tree: {plan.tree}", ""]
    lines += [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in table
    ]
    lines += ["", f"then each variant that builds: {plan.guest}"] if plan.guest else []
    lines += ["", f"{plan.builds} of {len(plan.rows)} variants need a build"]
    return "\n".join(lines)
