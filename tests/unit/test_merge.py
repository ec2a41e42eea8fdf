"""Merging shard results: order independence, idempotence, duplicates, missing shards."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import pytest

from orchestrator import merge, results, shards
from orchestrator.errors import UserError
from orchestrator.merge import Part
from orchestrator.results import (
    Batch,
    RunResult,
    Stage,
    StageResult,
    Status,
    TestResult,
    VariantResult,
    Verdict,
)

PARTITION = (("a", "c"), ("b",), ("d", "e"))


def _variant(name: str, status: Status = Status.PASS) -> VariantResult:
    return VariantResult(
        name,
        (StageResult(Stage.BUILD, Status.PASS), StageResult(Stage.BOOT, status)),
        tests=(TestResult("smoke", Verdict.PASS if status is Status.PASS else Verdict.FAIL),),
    )


def _part(index: int, *, status: Status = Status.PASS, digest: str = "d" * 64) -> Part:
    record = shards.Record(index, 3, "m", digest, "a", PARTITION)
    run = RunResult(
        matrix="/src/m.yaml",
        started=f"2026-12-07T0{index}:00:00.000+00:00",
        finished=f"2026-12-07T0{index}:30:00.000+00:00",
        variants=tuple(_variant(n, status) for n in PARTITION[index - 1]),
        host={"hostname": f"runner-{index}"},
        baseline=PARTITION[index - 1][0],
    )
    return Part(Path(f"/shards/{index}"), record, run)


def test_any_order_gives_the_same_run() -> None:
    parts = [_part(1), _part(2), _part(3)]
    merged = [merge.merge(list(p)) for p in itertools.permutations(parts)]
    assert all(results.to_data(m) == results.to_data(merged[0]) for m in merged)
    run = merged[0]
    assert [v.name for v in run.variants] == ["a", "c", "b", "d", "e"]  # the partition's order
    assert run.started.startswith("2026-12-07T01") and run.finished.startswith("2026-12-07T03")
    assert run.host == {"hostname": "runner-1", "shards": "1/3, 2/3, 3/3"}
    assert run.baseline == "a"  # the whole matrix's, from the record
    assert not run.incomplete and merge.exit_code(run) == 0


def test_a_shard_given_twice_counts_once() -> None:
    once = merge.merge([_part(1), _part(2), _part(3)])
    twice = merge.merge([_part(2), _part(1), _part(3), _part(2), _part(1)])
    assert results.to_data(twice) == results.to_data(once)


def test_a_variant_with_two_different_results_is_an_error() -> None:
    other = _part(2, status=Status.FAIL)
    with pytest.raises(UserError, match="shard 2/3 given twice with different results"):
        merge.merge([_part(1), _part(2), other])
    # The same variant in two different shards (a hand-made directory) is refused too.
    stray = replace(_part(3), run=replace(_part(3).run, variants=(_variant("a", Status.FAIL),)))
    with pytest.raises(UserError, match="variant 'a' has different results"):
        merge.merge([_part(1), stray])


def test_a_missing_shard_is_named_and_fails_the_merge() -> None:
    run = merge.merge([_part(3), _part(1)])
    assert run.incomplete == "shard 2/3 missing (variants: b)"
    assert [v.name for v in run.variants] == ["a", "c", "d", "e"]
    assert run.ok and merge.exit_code(run) == 1
    stopped = replace(_part(2), run=replace(_part(2).run, incomplete="interrupted (SIGTERM)"))
    run = merge.merge([_part(1), stopped, _part(3)])
    assert run.incomplete == "shard 2/3: interrupted (SIGTERM)"
    assert merge.exit_code(merge.merge([_part(1), _part(2, status=Status.FAIL), _part(3)])) == 1


def test_shards_of_another_matrix_are_refused() -> None:
    with pytest.raises(UserError, match="not of the same matrix"):
        merge.merge([_part(1), _part(2, digest="e" * 64)])
    with pytest.raises(UserError, match="no shard"):
        merge.merge([])


def test_the_perf_shard_gives_baseline_control_and_batches() -> None:
    perf = _part(3)
    control = _variant("d~aa")
    perf = replace(
        perf,
        run=replace(perf.run, baseline="d", control=control, batches=(Batch(1),)),
    )
    run = merge.merge([_part(1), _part(2), perf])
    assert (run.baseline, run.control, run.batches) == ("d", control, (Batch(1),))
    with pytest.raises(UserError, match="more than one shard ran a perf comparison"):
        twin = replace(_part(1), run=replace(_part(1).run, batches=(Batch(1),)))
        merge.merge([twin, perf])


def test_directories_that_are_not_shards(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not a directory"):
        merge.read_part(tmp_path / "nothing")
    shards.write_record(_part(1).record, tmp_path)
    with pytest.raises(UserError, match="no such file"):
        merge.read_part(tmp_path)
    (tmp_path / "results.json").write_text('{"schema": 2, "variants": 3}')
    with pytest.raises(UserError, match="not a results file"):
        merge.read_part(tmp_path)
    results.write(_part(1).run, tmp_path / "results.json")
    assert merge.read_part(tmp_path) == replace(_part(1), dir=tmp_path)
    assert merge.read_part(tmp_path / "results.json") == replace(_part(1), dir=tmp_path)
