"""One run's results from the results of its CI shards (`orchestrate merge DIR...`).

Each DIR is a shard's run directory: its results.json (read through
results.read, so a file from anywhere is checked first) and its shard.json
(shards.Record: which shard of which matrix, and the whole partition).

The merge is a pure function of the *set* of shards given: the same shard
given twice counts once, the order of the DIRs does not matter, and merging
the same shards again gives the same results.  A variant found in two
shards must have the same result in both (the same shard's results given
twice), else it is an error: two different results for one variant are
not a run.  A shard of the partition that was not given is not silently
absent: RunResult.incomplete names it and its variants.

What the whole run has once (the baseline, the A/A control, the perf
batches) comes from the shard that ran the perf comparison (shards.py keeps
it whole in one shard); the host and the quarantine list come from the
lowest shard given.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestrator import results, shards
from orchestrator.errors import UserError
from orchestrator.results import RunResult, VariantResult


@dataclass(frozen=True)
class Part:
    """One shard's run directory, read."""

    dir: Path
    record: shards.Record
    run: RunResult


def read_part(run_dir: Path) -> Part:
    """A shard's run directory (or its results.json), or a UserError that says why it is not one."""
    if run_dir.name == "results.json" and run_dir.is_file():
        run_dir = run_dir.parent
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: not a directory (give shard run directories)")
    rec = shards.read_record(run_dir)
    path = run_dir / "results.json"
    if not path.exists():
        raise UserError(f"{path}: no such file (the shard wrote no results)")
    run = results.read_given(path)
    return Part(run_dir, rec, run)


def merge(parts: list[Part]) -> RunResult:
    """The shards' results as one run (see the module's docstring)."""
    if not parts:
        raise UserError("merge: no shard given")
    first = parts[0].record
    for p in parts[1:]:
        r = p.record
        if (r.matrix, r.matrix_digest, r.shards) != (
            first.matrix,
            first.matrix_digest,
            first.shards,
        ):
            raise UserError(
                f"{p.dir}: shard {r.label} of matrix {r.matrix!r} (file sha256 "
                f"{r.matrix_digest[:12]}), not of the same matrix and partition as "
                f"{parts[0].dir} ({first.matrix!r}, {first.matrix_digest[:12]}, "
                f"{len(first.shards)} shards)"
            )
    by_index: dict[int, Part] = {}
    for p in sorted(parts, key=lambda p: (p.record.index, str(p.dir))):
        seen = by_index.setdefault(p.record.index, p)
        if seen is not p and results.to_data(seen.run) != results.to_data(p.run):
            raise UserError(
                f"shard {p.record.label} given twice with different results: {seen.dir} and {p.dir}"
            )
    variants = _variants(list(by_index.values()))
    order = [name for shard in first.shards for name in shard]
    position = {name: i for i, name in enumerate(order)}
    unknown = sorted(set(variants) - set(position))
    if unknown:
        raise UserError(f"merge: variants not in the partition: {', '.join(unknown)}")
    lowest = by_index[min(by_index)].run
    perf = [
        p.run
        for p in by_index.values()
        if p.run.control is not None or p.run.batches or p.run.perf_plan is not None
    ]
    if len(perf) > 1:
        raise UserError("merge: more than one shard ran a perf comparison")
    source = perf[0] if perf else None
    return RunResult(
        matrix=lowest.matrix,  # the matrix file's path (the record has its name)
        started=min(p.run.started for p in by_index.values()),
        finished=max(p.run.finished for p in by_index.values()),
        variants=tuple(sorted(variants.values(), key=lambda v: position[v.name])),
        # The lowest shard's host, and which shards were merged.
        host={
            **lowest.host,
            "shards": ", ".join(by_index[i].record.label for i in sorted(by_index)),
        },
        baseline=source.baseline if source else first.baseline,
        control=source.control if source else None,
        batches=source.batches if source else (),
        incomplete=_incomplete(first, by_index),
        quarantine=lowest.quarantine,
        perf_plan=source.perf_plan if source else None,
        questions=lowest.questions,
    )


def _variants(parts: list[Part]) -> dict[str, VariantResult]:
    out: dict[str, tuple[VariantResult, Part]] = {}
    for p in parts:
        for v in p.run.variants:
            if v.name not in out:
                out[v.name] = (v, p)
            elif results.to_data(out[v.name][0]) != results.to_data(v):
                raise UserError(
                    f"variant {v.name!r} has different results in {out[v.name][1].dir} "
                    f"(shard {out[v.name][1].record.label}) and {p.dir} (shard {p.record.label})"
                )
    return {name: v for name, (v, _p) in out.items()}


def _incomplete(first: shards.Record, by_index: dict[int, Part]) -> str:
    """Why the merged run is not whole: shards missing, shards that stopped early."""
    notes = []
    missing = [i for i in range(1, first.total + 1) if i not in by_index]
    for i in missing:
        names = ", ".join(first.shards[i - 1])
        notes.append(f"shard {i}/{first.total} missing (variants: {names})")
    for i in sorted(by_index):
        if by_index[i].run.incomplete:
            notes.append(f"shard {i}/{first.total}: {by_index[i].run.incomplete}")
    return "; ".join(notes)


def exit_code(run: RunResult) -> int:
    """0 all good; 1 a variant failed or the merged run is incomplete (a shard missing)."""
    return 0 if run.ok and not run.incomplete else 1
