"""Which variants run in which CI shard: `plan --shards N` and `run --shard I/N`.

A shard is a set of variants run as one `orchestrate run` (on one CI
runner); `merge` (merge.py) puts the shards' results back together.  The
partition is plain data computed from the matrix alone, so the plan job and
every shard job compute the same one.

Two kinds of variants must stay together, so the partition is made of
*groups* that are never split:

* the variants of one build directory (plan.build_dir_for: the same arch,
  base config and fragments): they configure and build in turn in one
  directory, and only then is the second build incremental;
* a perf comparison: perf ratios mean something only between variants
  sampled boot by boot, interleaved, on one host (DESIGN "Perf
  methodology").  The baseline, its A/A control and every measured variant
  therefore run in one shard.  Running the baseline again in every shard
  would give each shard a baseline of its own and two results for one
  variant, which merge refuses; so a matrix with perf tests (they measure
  every variant) is one group and one shard.

Groups are balanced over the shards by a cost estimate in rough seconds
(a build directory's first build, the incremental builds after it, a boot
per variant and one per perf round), largest first onto the least loaded
shard; ties go to the lower index and the matrix's order, so the partition
is deterministic.  Never more shards than groups: `plan --shards 8` on a
matrix of three groups prints three.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from orchestrator import plan, results, results_check
from orchestrator.cache import digest
from orchestrator.errors import UserError
from orchestrator.matrix import Matrix
from orchestrator.verdicts import choose_baseline

MAX_SHARDS = 256
RECORD = "shard.json"  # in a shard's run directory, beside results.json

# The cost estimate (rough seconds on a 2-core box, DESIGN's measured build
# and boot times): only their proportions matter.
COST_FIRST_BUILD = 210.0  # a build directory's first (clean) build
COST_NEXT_BUILD = 10.0  # each further variant of that directory (incremental)
COST_BOOT = 15.0  # a boot with its functional tests


@dataclass(frozen=True)
class Shard:
    index: int  # 1-based
    total: int
    variants: tuple[str, ...]  # in the matrix's order
    cost: float

    @property
    def label(self) -> str:
        return f"{self.index}/{self.total}"


@dataclass(frozen=True)
class Record:
    """What a shard's run directory says about it (shard.json): which shard of
    which matrix, and the whole partition, so a merge can name what is missing."""

    index: int
    total: int
    matrix: str  # the matrix's name
    matrix_digest: str  # sha256 of the matrix file: shards of one matrix agree
    baseline: str  # the whole matrix's baseline (choose_baseline over every variant)
    shards: tuple[tuple[str, ...], ...]  # every shard's variants, shard 1 first

    @property
    def label(self) -> str:
        return f"{self.index}/{self.total}"


@dataclass(frozen=True)
class Group:
    variants: tuple[str, ...]  # in the matrix's order
    build_dirs: int  # how many build directories its variants use


def groups(matrix: Matrix, repo: Path, work: Path) -> tuple[Group, ...]:
    """The variants that must share a shard, ordered by their first variant."""
    by_dir: dict[str, list[str]] = {}
    for v in matrix.variants:
        key = plan.build_dir_for(matrix, v, repo, work).key
        by_dir.setdefault(key, []).append(v.name)
    if plan.perf_tests(matrix.tests) and by_dir:
        return (Group(tuple(v.name for v in matrix.variants), len(by_dir)),)
    return tuple(Group(tuple(g), 1) for g in by_dir.values())


def cost(matrix: Matrix, group: Group) -> float:
    """The estimate for one group: builds and boots count."""
    n = len(group.variants)
    boots = n
    if plan.perf_tests(matrix.tests):
        rounds = plan.perf_rounds(matrix.tests) + 1  # the warm-up round
        boots += rounds * (n + (1 if matrix.perf.aa_control else 0))
    builds = group.build_dirs * COST_FIRST_BUILD + (n - group.build_dirs) * COST_NEXT_BUILD
    return builds + boots * COST_BOOT


def partition(matrix: Matrix, count: int, repo: Path, work: Path) -> tuple[Shard, ...]:
    """At most `count` shards (never more than there are groups), balanced by cost."""
    if not 1 <= count <= MAX_SHARDS:
        raise UserError(f"--shards: must be 1 to {MAX_SHARDS}, not {count}")
    return balance(matrix, groups(matrix, repo, work), count)


def balance(matrix: Matrix, grouped: tuple[Group, ...], count: int) -> tuple[Shard, ...]:
    """Longest processing time first: each group, costliest first, onto the
    least loaded shard (ties: the lower shard)."""
    total = min(count, len(grouped))
    costs = [cost(matrix, g) for g in grouped]
    order = sorted(range(len(grouped)), key=lambda i: (-costs[i], i))
    loads = [0.0] * total
    members: list[list[int]] = [[] for _ in range(total)]
    for i in order:
        target = min(range(total), key=lambda s: (loads[s], s))
        loads[target] += costs[i]
        members[target].append(i)
    position = {v.name: n for n, v in enumerate(matrix.variants)}
    shards = []
    for s in range(total):
        names = sorted(
            (n for i in members[s] for n in grouped[i].variants), key=position.__getitem__
        )
        shards.append(Shard(s + 1, total, tuple(names), loads[s]))
    return tuple(shards)


_SPEC = re.compile(r"([0-9]{1,4})/([0-9]{1,4})")


def parse_spec(text: str) -> tuple[int, int]:
    """`--shard I/N` → (I, N); a UserError for anything else."""
    m = _SPEC.fullmatch(text.strip())
    if not m:
        raise UserError(f"--shard: expected I/N such as 1/4, not {text!r}")
    index, total = int(m[1]), int(m[2])
    if not 1 <= total <= MAX_SHARDS or not 1 <= index <= total:
        raise UserError(f"--shard {text}: I must be 1 to N and N 1 to {MAX_SHARDS}")
    return index, total


def select(matrix: Matrix, spec: str, repo: Path, work: Path) -> Record:
    """The shard `spec` names, as the record its run directory keeps."""
    index, total = parse_spec(spec)
    shards = partition(matrix, total, repo, work)
    if total != len(shards):
        raise UserError(
            f"--shard {spec}: the matrix {matrix.name} splits into at most {len(shards)} "
            f"shards (variants sharing a build directory or a perf comparison stay together); "
            f"`orchestrate plan {matrix.path.name} --shards {total}` lists them"
        )
    return record(matrix, shards, index)


def record(matrix: Matrix, shards: tuple[Shard, ...], index: int) -> Record:
    names = [v.name for v in matrix.variants]
    return Record(
        index=index,
        total=len(shards),
        matrix=matrix.name,
        matrix_digest=digest(matrix.path.read_bytes()),
        baseline=choose_baseline(names, matrix.report.baseline),
        shards=tuple(s.variants for s in shards),
    )


def write_record(rec: Record, run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / RECORD
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(results.to_data(rec), indent=2) + "\n")
    tmp.replace(path)


def read_record(run_dir: Path) -> Record:
    """A shard's record, checked like a results file (it may come from a CI
    artifact); a UserError that says why when it is not one."""
    path = run_dir / RECORD
    try:
        data = results_check.load(path)
        results_check.check(Record, data)
    except FileNotFoundError:
        raise UserError(
            f"{run_dir}: no {RECORD}: not the run directory of a shard "
            "(made by `orchestrate run MATRIX --shard I/N`)"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not JSON: {exc}") from None
    except OSError as exc:
        raise UserError(f"{path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise UserError(f"{path}: not a shard record: {exc}") from None
    rec = results.from_data(Record, data)
    if not 1 <= rec.index <= rec.total <= MAX_SHARDS or len(rec.shards) != rec.total:
        raise UserError(f"{path}: shard {rec.index}/{rec.total} with {len(rec.shards)} shards")
    return rec


def render(shards: tuple[Shard, ...], fmt: str) -> str:
    """The shard list for a CI engine: a JSON list (`json`), a GitHub Actions
    matrix (`github`: {"include": [...]}, for fromJSON) or a GitLab child
    pipeline (`gitlab`; JSON is YAML) whose `shard` job runs each shard with
    parallel:matrix (variable SHARD) from the template GITLAB_TEMPLATE."""
    rows = [
        {"shard": s.label, "index": s.index, "total": s.total, "variants": list(s.variants),
         "cost": round(s.cost)}
        for s in shards
    ]  # fmt: skip
    if fmt == "json":
        return json.dumps(rows, indent=2)
    if fmt == "github":
        return json.dumps({"include": rows}, separators=(",", ":"))
    if fmt == "gitlab":  # a child pipeline: the shard jobs and the merge of the template
        job = {
            "extends": GITLAB_JOB,
            "parallel": {"matrix": [{"SHARD": [s.label for s in shards]}]},
        }
        return json.dumps({"include": [{"local": GITLAB_TEMPLATE}], "shard": job}, indent=2)
    raise ValueError(f"unknown shard format {fmt!r}")


FORMATS = ("json", "github", "gitlab")
# What `--format gitlab` includes and extends: the shard job's template and the merge job.
GITLAB_TEMPLATE = "ci-examples/gitlab-shard.yml"
GITLAB_JOB = ".orchestrate-shard"
