"""The shard partition: build-dir groups never split, perf plans whole, balanced, deterministic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator import plan, shards
from orchestrator.errors import UserError
from orchestrator.matrix import Kconfig, Matrix, Perf, Report, Test, Tree, TreeKind, Variant

SMOKE = Test("smoke", "ktap", "/bin/smoke")
PERF = Test("map_perf", "map_perf", "/bin/map_perf", repeats=3)


def _matrix(
    tmp_path: Path, dirs: dict[str, list[str]], tests: tuple[Test, ...] = (SMOKE,)
) -> Matrix:
    """Variants grouped by their fragment: one build directory per key of `dirs`."""
    variants = []
    for frag, names in dirs.items():
        path = tmp_path / f"{frag}.config"
        path.write_text(f"CONFIG_{frag.upper()}=y\n")
        variants += [Variant(n, fragments=(path,)) for n in names]
    m = tmp_path / "m.yaml"
    m.write_text("name: m\n")
    return Matrix(
        path=m,
        name="m",
        tree=Tree(TreeKind.PATH, str(tmp_path)),
        kconfig=Kconfig(),
        variants=tuple(variants),
        report=Report(tmp_path / "reports"),
        tests=tests,
        perf=Perf(aa_control=True),
    )


def _partition(m: Matrix, n: int, tmp_path: Path) -> tuple[shards.Shard, ...]:
    return shards.partition(m, n, tmp_path / "repo", tmp_path / "work")


def _dir_of(m: Matrix, name: str, tmp_path: Path) -> str:
    return plan.build_dir_for(m, m.variant(name), tmp_path / "repo", tmp_path / "work").key


DIRS = {"x": ["a", "b", "c"], "y": ["d"], "z": ["e", "f"], "w": ["g"]}


def test_variants_of_a_build_directory_are_never_split(tmp_path: Path) -> None:
    m = _matrix(tmp_path, DIRS)
    for n in range(1, 6):
        parts = _partition(m, n, tmp_path)
        assert len(parts) == min(n, 4)  # never more shards than groups
        where = {v: s.index for s in parts for v in s.variants}
        assert sorted(where) == list("abcdefg")  # every variant once
        for a in m.variants:
            for b in m.variants:
                if _dir_of(m, a.name, tmp_path) == _dir_of(m, b.name, tmp_path):
                    assert where[a.name] == where[b.name], (n, a.name, b.name)
        for s in parts:  # each shard keeps the matrix's order
            assert list(s.variants) == sorted(s.variants)


def test_balanced_by_cost(tmp_path: Path) -> None:
    m = _matrix(tmp_path, DIRS)
    parts = _partition(m, 2, tmp_path)
    # A build directory's first build dominates: two directories per shard.
    assert sorted(len({_dir_of(m, v, tmp_path) for v in s.variants}) for s in parts) == [2, 2]
    costs = [s.cost for s in parts]
    assert max(costs) - min(costs) <= shards.COST_NEXT_BUILD * 2 + shards.COST_BOOT * 2
    assert sum(costs) == sum(shards.cost(m, g) for g in shards.groups(m, tmp_path, tmp_path))


def test_deterministic(tmp_path: Path) -> None:
    m = _matrix(tmp_path, DIRS)
    first = _partition(m, 3, tmp_path)
    assert all(_partition(m, 3, tmp_path) == first for _ in range(3))
    # The same matrix elsewhere (another checkout, another cache) splits the same way.
    assert _partition(m, 3, tmp_path / "elsewhere") == first


def test_a_perf_comparison_is_one_shard(tmp_path: Path) -> None:
    m = _matrix(tmp_path, DIRS, (SMOKE, PERF))
    (whole,) = _partition(m, 4, tmp_path)
    assert whole.variants == tuple("abcdefg") and whole.label == "1/1"
    # Boots of every perf round (warm-up and the A/A control included) count.
    per_round = (len(m.variants) + 1) * shards.COST_BOOT
    assert whole.cost == shards.cost(m, shards.Group(tuple("abcdefg"), 4))
    assert whole.cost > _partition(_matrix(tmp_path, DIRS), 1, tmp_path)[0].cost + 3 * per_round


def test_shard_specs(tmp_path: Path) -> None:
    assert shards.parse_spec("2/4") == (2, 4)
    for bad in ("0/4", "5/4", "1/0", "x", "1/", "-1/2", "1/999"):
        with pytest.raises(UserError, match="--shard"):
            shards.parse_spec(bad)
    m = _matrix(tmp_path, DIRS)
    rec = shards.select(m, "2/3", tmp_path / "repo", tmp_path / "work")
    assert (rec.index, rec.total, rec.matrix, rec.baseline) == (2, 3, "m", "a")
    assert [v for s in rec.shards for v in s] != [] and len(rec.shards) == 3
    with pytest.raises(UserError, match="at most 4 shards"):
        shards.select(m, "5/5", tmp_path / "repo", tmp_path / "work")
    with pytest.raises(UserError, match="--shards"):
        _partition(m, 0, tmp_path)


def test_record_round_trip_and_bad_records(tmp_path: Path) -> None:
    m = _matrix(tmp_path, DIRS)
    rec = shards.select(m, "1/2", tmp_path / "repo", tmp_path / "work")
    run = tmp_path / "run"
    shards.write_record(rec, run)
    assert shards.read_record(run) == rec
    (run / shards.RECORD).write_text(json.dumps({"index": "1"}))
    with pytest.raises(UserError, match="index: expected an integer"):
        shards.read_record(run)
    (run / shards.RECORD).write_text("{")
    with pytest.raises(UserError, match="not JSON"):
        shards.read_record(run)
    data = json.loads(
        json.dumps({**vars(rec), "index": 3, "shards": [list(s) for s in rec.shards]})
    )
    (run / shards.RECORD).write_text(json.dumps(data))
    with pytest.raises(UserError, match="shard 3/2"):
        shards.read_record(run)
    with pytest.raises(UserError, match="not the run directory of a shard"):
        shards.read_record(tmp_path)


def test_formats(tmp_path: Path) -> None:
    parts = _partition(_matrix(tmp_path, DIRS), 2, tmp_path)
    rows = json.loads(shards.render(parts, "json"))
    assert [r["shard"] for r in rows] == ["1/2", "2/2"]
    github = json.loads(shards.render(parts, "github"))
    assert github["include"] == rows
    gitlab = json.loads(shards.render(parts, "gitlab"))
    assert gitlab["include"] == [{"local": shards.GITLAB_TEMPLATE}]
    assert gitlab["shard"]["parallel"]["matrix"] == [{"SHARD": ["1/2", "2/2"]}]
    with pytest.raises(ValueError, match="format"):
        shards.render(parts, "yaml")
