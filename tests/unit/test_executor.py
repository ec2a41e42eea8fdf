"""The guest executor: what runs beside what, and which CPUs each guest gets.

Units here wait on events the test sets, so every check is about order,
never about time (the waits' timeouts only keep a broken executor from
hanging the suite)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future
from functools import partial
from pathlib import Path
from typing import Any

import psutil
import pytest

from orchestrator import proc
from orchestrator.executor import Claim, GuestExecutor, claim_of
from orchestrator.plan import Unit, UnitKind
from orchestrator.units import Context, on_cpus

WAIT = 30.0  # a safety net only


class Gate:
    """A unit's work that says when it starts and finishes when the test opens it."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.go = threading.Event()
        self.cpus: tuple[int, ...] | None = None

    def __call__(self, ctx: Context) -> str:
        self.cpus = ctx.host_cpus
        self.started.set()
        assert self.go.wait(WAIT)
        return "done"

    def work(self) -> partial[str]:
        ctx: Any = Context(None, None, Path("/run"), {})  # type: ignore[arg-type]
        return partial(self, ctx)


def unit(kind: UnitKind, name: str) -> Unit:
    return Unit(f"{kind.value}:{name}", kind, name)


@pytest.fixture()
def pool() -> Iterator[GuestExecutor]:
    executor = GuestExecutor(((0,), (1,)))
    yield executor
    executor.shutdown()


def started(*gates: Gate) -> bool:
    return all(g.started.wait(WAIT) for g in gates)


def test_claims() -> None:
    assert claim_of(UnitKind.FUNCTIONAL) is Claim.GUEST
    assert claim_of(UnitKind.PERF_ROUND) is Claim.MACHINE
    assert claim_of(UnitKind.PERF_ROUND, blocks=True) is Claim.BLOCK
    assert {claim_of(k) for k in (UnitKind.BUILD, UnitKind.APPLY, UnitKind.GUEST)} == {Claim.BUILD}


def test_guests_run_at_once_each_on_a_set_of_its_own(pool: GuestExecutor) -> None:
    a, b, c = Gate(), Gate(), Gate()
    fa = pool.submit(unit(UnitKind.FUNCTIONAL, "a"), a.work())
    fb = pool.submit(unit(UnitKind.FUNCTIONAL, "b"), b.work())
    assert started(a, b)
    assert {a.cpus, b.cpus} == {(0,), (1,)}
    # Both sets are held: a third guest waits for one.
    fc = pool.submit(unit(UnitKind.FUNCTIONAL, "c"), c.work())
    assert not c.started.is_set()
    # What the progress view shows for each.
    assert {pool.where("functional:a"), pool.where("functional:b")} == {"CPUs 0", "CPUs 1"}
    assert pool.where("functional:c") == "waiting for a CPU set"
    a.go.set()
    assert fa.result(WAIT) == "done"
    assert pool.where("functional:a") == "local"  # done: no longer placed
    assert started(c) and c.cpus == a.cpus
    b.go.set()
    c.go.set()
    assert (fb.result(WAIT), fc.result(WAIT)) == ("done", "done")


def test_builds_run_one_at_a_time_beside_guests(pool: GuestExecutor) -> None:
    g, b1, b2 = Gate(), Gate(), Gate()
    pool.submit(unit(UnitKind.FUNCTIONAL, "g"), g.work())
    f1 = pool.submit(unit(UnitKind.BUILD, "x"), b1.work())
    pool.submit(unit(UnitKind.BUILD, "y"), b2.work())
    assert started(g, b1)
    assert b1.cpus == ()  # a build is not pinned: make -j uses the machine
    assert not b2.started.is_set()
    b1.go.set()
    assert f1.result(WAIT) == "done"
    assert started(b2)
    g.go.set()
    b2.go.set()


def test_perf_rounds_run_side_by_side_one_per_set(pool: GuestExecutor) -> None:
    assert pool.perf_blocks == 2
    g, r1, r2, r3, later = Gate(), Gate(), Gate(), Gate(), Gate()
    fg = pool.submit(unit(UnitKind.FUNCTIONAL, "g"), g.work())
    assert started(g)
    rounds = [pool.submit(unit(UnitKind.PERF_ROUND, str(n)), r.work()) for n, r in
              enumerate((r1, r2, r3), 1)]  # fmt: skip
    fl = pool.submit(unit(UnitKind.FUNCTIONAL, "later"), later.work())
    # A set is free, but no round runs beside a functional guest, and nothing
    # overtakes a waiting round.
    assert not r1.started.is_set() and not later.started.is_set()
    g.go.set()
    assert fg.result(WAIT) == "done"
    assert started(r1, r2)
    assert {r1.cpus, r2.cpus} == {(0,), (1,)}  # a block each, pinned to its set
    assert not r3.started.is_set() and not later.started.is_set()
    r1.go.set()
    assert rounds[0].result(WAIT) == "done"
    assert started(r3) and r3.cpus == r1.cpus
    # Where each finished round ran, for the reports' per-block spread.
    placed = pool.placement(unit(UnitKind.PERF_ROUND, "1"))
    assert placed is not None and r1.cpus is not None
    assert placed.worker == f"CPUs {r1.cpus[0]}"
    assert pool.placement(unit(UnitKind.FUNCTIONAL, "g")) is None
    assert not later.started.is_set()
    r2.go.set()
    r3.go.set()
    assert [f.result(WAIT) for f in rounds[1:]] == ["done", "done"]
    assert started(later)
    later.go.set()
    assert fl.result(WAIT) == "done"


@pytest.mark.parametrize(
    "executor",
    [GuestExecutor(((0, 1), (0, 1))), GuestExecutor(((0,), (1,)), blocks=False)],
    ids=["sets-overlap", "fixed-plan"],
)
def test_a_perf_round_has_the_machine_to_itself_unless_blocks(executor: GuestExecutor) -> None:
    assert executor.perf_blocks == 1
    try:
        _a_perf_round_has_the_machine(executor)
    finally:
        executor.shutdown()


def _a_perf_round_has_the_machine(pool: GuestExecutor) -> None:
    g, perf, later = Gate(), Gate(), Gate()
    fg = pool.submit(unit(UnitKind.FUNCTIONAL, "g"), g.work())
    assert started(g)
    fp = pool.submit(unit(UnitKind.PERF_ROUND, "1"), perf.work())
    # A set is free, but nothing overtakes the round waiting for the machine.
    fl = pool.submit(unit(UnitKind.FUNCTIONAL, "later"), later.work())
    assert not perf.started.is_set() and not later.started.is_set()
    g.go.set()
    assert fg.result(WAIT) == "done"
    assert started(perf)
    assert perf.cpus == (0, 1)  # every CPU: its QEMU runs as in a serial run
    assert not later.started.is_set()
    perf.go.set()
    assert fp.result(WAIT) == "done"
    assert started(later)
    later.go.set()
    assert fl.result(WAIT) == "done"


def test_a_units_fault_is_in_its_future_and_frees_its_set(pool: GuestExecutor) -> None:
    def broken(ctx: Context) -> None:
        raise ValueError("a bug")

    ctx: Any = Context(None, None, Path("/run"), {})  # type: ignore[arg-type]
    for name in ("a", "b", "c"):  # more than the sets: each failure gave its set back
        future: Future[None] = pool.submit(unit(UnitKind.FUNCTIONAL, name), partial(broken, ctx))
        with pytest.raises(ValueError, match="a bug"):
            future.result(WAIT)


def test_a_guest_unit_whose_work_carries_no_context_is_refused(pool: GuestExecutor) -> None:
    future = pool.submit(unit(UnitKind.FUNCTIONAL, "a"), lambda: 1)
    with pytest.raises(TypeError, match="not a unit's work"):
        future.result(WAIT)


def test_on_cpus_changes_only_the_contexts_cpus() -> None:
    ctx: Any = Context(None, None, Path("/run"), {}, jobs=3)  # type: ignore[arg-type]

    def work(c: Context, x: int, *, y: int) -> tuple[int, tuple[int, ...], int, int]:
        return c.jobs, c.host_cpus, x, y

    assert on_cpus(partial(work, ctx, 1, y=2), (4, 5))() == (3, (4, 5), 1, 2)


def test_shutdown_of_an_interrupted_run_stops_its_units_and_their_children() -> None:
    executor = GuestExecutor(((0,),))
    future = executor.submit(
        unit(UnitKind.BUILD, "x"), partial(proc.run, ["sh", "-c", "sleep 299.5; echo"], timeout=600)
    )

    def running() -> bool:
        # The sleep itself: its shell is past its start.
        return any(
            p.cmdline() == ["sleep", "299.5"] for p in psutil.Process().children(recursive=True)
        )

    assert _eventually(running)
    executor.shutdown()  # as the runner does when Ctrl-C stops its loop
    # The unit stopped as a serial run's does on Ctrl-C, its child killed.
    with pytest.raises(KeyboardInterrupt):
        future.result(0)
    assert not running()
    with pytest.raises(RuntimeError):
        executor.submit(unit(UnitKind.BUILD, "y"), lambda: 1)


def _eventually(check: Any) -> bool:
    done = threading.Event()
    for _ in range(int(WAIT / 0.05)):
        if check():
            return True
        done.wait(0.05)
    return False
