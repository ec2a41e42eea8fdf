"""The plan as data: which units a matrix makes, their order and dependencies."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator import plan
from orchestrator.matrix import Kconfig, Matrix, Perf, Report, Test, Tree, TreeKind, Variant
from orchestrator.plan import BuildState, UnitKind, build_state, unit_id
from orchestrator.results import Stage
from orchestrator.suites.kselftest import Options as Kselftest


@pytest.fixture()
def fragments(tmp_path: Path) -> tuple[Path, Path]:
    base = tmp_path / "base.config"
    base.write_text("CONFIG_BPF=y\n")
    extra = tmp_path / "extra.config"
    extra.write_text("CONFIG_DEBUG=y\n")
    return base, extra


def _matrix(
    tmp_path: Path, fragments: tuple[Path, Path], tests: tuple[Test, ...], sequential: bool = False
) -> Matrix:
    """A fixed perf plan unless `sequential`: its rounds are all known up front."""
    base, extra = fragments
    return Matrix(
        path=tmp_path / "m.yaml",
        name="m",
        tree=Tree(TreeKind.PATH, str(tmp_path)),
        kconfig=Kconfig(fragments=(base,)),
        variants=(Variant("a"), Variant("b"), Variant("other", fragments=(extra,)), Variant("c")),
        report=Report(tmp_path / "reports"),
        tests=tests,
        perf=Perf(sequential=sequential),
    )


SMOKE = Test("smoke", "ktap", "/bin/smoke")
PERF = Test("map_perf", "map_perf", "/bin/map_perf", repeats=2)
SELFTEST = Test("bpf", "kselftest", options=Kselftest(filter="htab"))


def _units(m: Matrix, tmp_path: Path, until: Stage = Stage.TEST) -> dict[str, plan.Unit]:
    made = plan.units(m, (), until, tmp_path / "repo", tmp_path / "work")
    return {u.id: u for u in made}


def test_a_serial_run_takes_the_units_in_todays_order(
    tmp_path: Path, fragments: tuple[Path, Path]
) -> None:
    units = _units(_matrix(tmp_path, fragments, (SMOKE, PERF)), tmp_path)
    kinds = [u.kind for u in units.values()]
    # The tree, every apply, then configure and build per variant, the guest
    # image, every boot, then the perf rounds (a warm-up first).
    assert kinds == [
        UnitKind.PREPARE, *[UnitKind.APPLY] * 4,
        *[UnitKind.CONFIGURE, UnitKind.BUILD] * 4,
        UnitKind.GUEST, *[UnitKind.FUNCTIONAL] * 4, *[UnitKind.PERF_ROUND] * 3,
    ]  # fmt: skip
    rounds = [u for u in units.values() if u.kind is UnitKind.PERF_ROUND]
    assert [(u.batch, u.round) for u in rounds] == [(1, 0), (1, 1), (1, 2)]
    assert rounds[1].after == (rounds[0].id,) and rounds[2].after == (rounds[1].id,)
    assert set(rounds[0].needs_any) == {unit_id(UnitKind.FUNCTIONAL, v) for v in "abc"} | {
        unit_id(UnitKind.FUNCTIONAL, "other")
    }


def test_shared_worktrees_chain_their_units(tmp_path: Path, fragments: tuple[Path, Path]) -> None:
    units = _units(_matrix(tmp_path, fragments, (SMOKE,)), tmp_path)
    # One apply worktree: every apply after the one before.
    assert units["apply:b"].after == ("apply:a",) and units["apply:b"].needs == ("prepare",)
    # a, b and c share a build directory; "other" has a fragment of its own.
    assert units["configure:b"].after == ("build:a",)
    assert units["configure:c"].after == ("build:b",)
    assert units["configure:other"].after == ()
    assert units["configure:a"].inputs != units["configure:other"].inputs
    assert units["build:b"].needs == ("configure:b",)
    # The guest image waits for some kernel; a boot needs its own kernel and the image.
    assert set(units["guest"].needs_any) == {f"build:{v}" for v in ("a", "b", "other", "c")}
    assert units["functional:c"].needs == ("build:c", "guest")


def test_installs_are_in_the_build_directory_chain(
    tmp_path: Path, fragments: tuple[Path, Path]
) -> None:
    units = _units(_matrix(tmp_path, fragments, (SMOKE, SELFTEST)), tmp_path)
    # kselftests are built against each kernel, in its build directory's checkout.
    assert units["install:a"].needs == ("build:a",)
    assert units["configure:b"].after == ("install:a",)
    assert units["functional:a"].needs == ("build:a", "guest", "install:a")


def test_until_build_stops_the_plan(tmp_path: Path, fragments: tuple[Path, Path]) -> None:
    units = _units(_matrix(tmp_path, fragments, (SMOKE, PERF, SELFTEST)), tmp_path, Stage.BUILD)
    assert {u.kind for u in units.values()} == {
        UnitKind.PREPARE, UnitKind.APPLY, UnitKind.CONFIGURE, UnitKind.BUILD,
    }  # fmt: skip


def test_a_rerun_batch_starts_warm(tmp_path: Path, fragments: tuple[Path, Path]) -> None:
    m = _matrix(tmp_path, fragments, (PERF,))
    again = plan.perf_batch(m, ("functional:a",), batch=2, after=("perf-round:1:2",))
    assert [(u.batch, u.round) for u in again] == [(2, 1), (2, 2)]
    assert again[0].after == ("perf-round:1:2",) and again[0].id == "perf-round:2:1"


def test_a_sequential_plan_knows_only_its_first_round(
    tmp_path: Path, fragments: tuple[Path, Path]
) -> None:
    m = _matrix(tmp_path, fragments, (PERF,), sequential=True)
    rounds = [u for u in _units(m, tmp_path).values() if u.kind is UnitKind.PERF_ROUND]
    assert [(u.batch, u.round, u.measure) for u in rounds] == [(1, 0, ())]  # the warm-up
    again = plan.perf_batch(m, ("functional:a",), batch=2, after=("perf-round:1:9",))
    assert [(u.batch, u.round) for u in again] == [(2, 1)]  # a rerun starts warm


def test_without_perf_tests_there_are_no_rounds(
    tmp_path: Path, fragments: tuple[Path, Path]
) -> None:
    units = _units(_matrix(tmp_path, fragments, (SMOKE,)), tmp_path)
    assert not [u for u in units.values() if u.kind is UnitKind.PERF_ROUND]


def test_one_rule_for_a_build_done_once() -> None:
    assert build_state(False, None, "a") is BuildState.BUILD
    assert build_state(True, None, "a") is BuildState.CACHED
    assert build_state(True, "a", "a") is BuildState.CACHED
    assert build_state(True, "a", "b") is BuildState.SHARED
    assert build_state(False, "a", "b") is BuildState.SHARED
