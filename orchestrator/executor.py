"""Executors run ready units of work; the runner decides which are ready.

An executor takes a unit (what it is: its kind says which resources it
holds, a guest or a build) and its work as a callable, and returns a future
of the work's result.  The serial executor runs it at once, in the caller's thread, which
is how a plain `orchestrate run` goes: one unit after another in plan order,
Ctrl-C and SIGTERM landing in the unit that runs.  The thread executor runs
up to N at once; it proves the runner does not depend on the order units
finish in, and is the shape of executors that hand units to other processes
or machines (the unit's inputs and results are plain, JSON-able data).
The guest executor runs several guests at once on this machine, each on
host CPUs of its own (`orchestrate run --vms N`); dask_executor.py hands
units to a Dask cluster (`--executor dask://HOST:PORT`).
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

import psutil

from orchestrator import machine, proc, units
from orchestrator.errors import UserError
from orchestrator.plan import Unit, UnitKind
from orchestrator.results import Placement
from orchestrator.vm import cpusets
from orchestrator.vm.cpusets import CpuSet

T = TypeVar("T")


class Executor(Protocol):
    @property
    def capacity(self) -> int:
        """How many units may run at once."""

    def submit(self, unit: Unit, work: Callable[[], T]) -> Future[T]: ...

    def shutdown(self) -> None: ...


@runtime_checkable
class Placing(Protocol):
    """An executor that runs units elsewhere and says where each one ran."""

    def placement(self, unit: Unit) -> Placement | None: ...


def placement_of(executor: Executor, unit: Unit) -> Placement | None:
    """Where a finished unit ran; None when it ran on this machine."""
    return executor.placement(unit) if isinstance(executor, Placing) else None


def for_spec(spec: str) -> Executor:
    """`--executor`: "serial" (the default) or "dask://HOST:PORT" (a scheduler to connect to)."""
    if spec == "serial":
        return SerialExecutor()
    if spec.startswith("dask://"):
        # Imported here: distributed takes a second to import, and a plain run needs none of it.
        from orchestrator import dask_executor

        return dask_executor.DaskExecutor(dask_executor.scheduler_address(spec))
    raise UserError(f"--executor {spec!r}: expected serial or dask://HOST:PORT")


class SerialExecutor:
    """Runs each unit when it is submitted; exceptions other than
    KeyboardInterrupt and SystemExit land in the future."""

    capacity = 1

    def submit(self, unit: Unit, work: Callable[[], T]) -> Future[T]:
        future: Future[T] = Future()
        try:
            future.set_result(work())
        except Exception as exc:  # the runner re-raises it from the future
            future.set_exception(exc)
        return future

    def shutdown(self) -> None:
        pass


class ThreadExecutor:
    """Runs up to `workers` units at once in threads of this process."""

    def __init__(self, workers: int) -> None:
        self.capacity = workers
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="unit")

    def submit(self, unit: Unit, work: Callable[[], T]) -> Future[T]:
        return self._pool.submit(work)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class Claim(enum.Enum):
    """What a unit holds while it runs on the guest executor."""

    BUILD = "build"  # the one build slot: make -j already uses every core
    GUEST = "guest"  # one CPU set, which its QEMU is pinned to
    BLOCK = "block"  # one CPU set for a perf round, with no build or functional guest beside it
    MACHINE = "machine"  # every CPU set and the build slot: nothing else runs beside it


def claim_of(kind: UnitKind, blocks: bool = False) -> Claim:
    """`blocks`: the executor's CPU sets are disjoint, so perf rounds may run
    side by side, one per set (perf_blocks)."""
    if kind is UnitKind.FUNCTIONAL:
        return Claim.GUEST
    # A perf round boots its guests one at a time.  With disjoint CPU sets it
    # holds one of them and only other perf rounds run beside it: each round
    # is a block (every guest once, on one set), and a sequential plan's
    # verdicts pair boots within a round, so one set being faster than
    # another does not reach a comparison.  With overlapping sets it has the
    # whole machine, as in a serial run.
    if kind is UnitKind.PERF_ROUND:
        return Claim.BLOCK if blocks else Claim.MACHINE
    return Claim.BUILD


def perf_blocks(executor: Executor) -> int:
    """How many perf rounds an executor runs side by side, each on CPUs (or a
    worker) of its own: an optional `perf_blocks` attribute, else 1."""
    return max(1, int(getattr(executor, "perf_blocks", 1)))


@dataclass(frozen=True, eq=False)  # eq=False: queued twice is two units, found by identity
class _Queued:
    unit: Unit
    work: Callable[[], Any]
    future: Future[Any]
    claim: Claim


_WANTS = {
    Claim.BUILD: "the build slot",
    Claim.GUEST: "a CPU set",
    Claim.BLOCK: "a CPU set with no build or functional guest beside it",
    Claim.MACHINE: "the whole machine",
}


def _place(held: tuple[CpuSet, ...]) -> str:
    cpus = sorted({cpu for s in held for cpu in s})
    return f"CPUs {','.join(map(str, cpus))}" if cpus else "local"


STOP_POLL = 0.5  # seconds between signals to what stopping units still run
STOP_LIMIT = 60.0  # seconds a stopping unit may take to unwind before it is left to die


class GuestExecutor:
    """Guests run up to one per CPU set at once, each QEMU pinned to its set;
    other units run one at a time beside them (see claim_of).

    A unit that cannot have what it claims yet waits here, in submission
    order; nothing overtakes a perf round waiting for the whole machine.
    The set a unit holds reaches its QEMU as data: units.on_cpus puts it in
    the Context its work gets.
    """

    def __init__(self, sets: Sequence[CpuSet], *, blocks: bool = True) -> None:
        """`blocks`: perf rounds may run side by side, one per set, when the sets
        are disjoint (a sequential plan; a fixed plan's rounds get the machine)."""
        if not sets:
            raise ValueError("a guest executor needs at least one CPU set")
        self.sets = tuple(sets)
        # Every guest at once, and a build or the guest image beside them.
        self.capacity = len(self.sets) + 1
        side_by_side = blocks and cpusets.disjoint(self.sets)
        self.perf_blocks = len(self.sets) if side_by_side else 1
        self._free: list[CpuSet] = list(self.sets)
        self._build_free = True
        self._held: dict[Claim, int] = dict.fromkeys(Claim, 0)  # units running, by claim
        self._queue: list[_Queued] = []
        self._threads: set[threading.Thread] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._places: dict[str, str] = {}  # unit id -> where it runs or waits (see where)
        self._ran: dict[str, str] = {}  # perf round id -> the CPU set it ran on (placement)

    def submit(self, unit: Unit, work: Callable[[], T]) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the executor was shut down")
            claim = claim_of(unit.kind, self.perf_blocks > 1)
            self._queue.append(_Queued(unit, work, future, claim))
            self._places[unit.id] = f"waiting for {_WANTS[claim]}"
            self._dispatch()
        return future

    def _dispatch(self) -> None:
        """Start every queued unit whose claim is free (the lock is held)."""
        for item in list(self._queue):
            held = self._take(item.claim)
            if held is None:
                if item.claim in (Claim.MACHINE, Claim.BLOCK):
                    break  # the machine drains for it
                continue
            self._held[item.claim] += 1
            self._queue.remove(item)
            self._places[item.unit.id] = _place(held)
            thread = threading.Thread(
                target=self._run,
                args=(item, held),
                name=f"unit {item.unit.id}",
                # Not joined at exit: a unit stuck past STOP_LIMIT must not
                # keep the process alive (its children die with it: pdeathsig).
                daemon=True,
            )
            self._threads.add(thread)
            thread.start()

    def _take(self, claim: Claim) -> tuple[CpuSet, ...] | None:
        """The CPU sets claim holds (() for a build), or None when it must wait."""
        if claim in (Claim.BUILD, Claim.GUEST) and self._held[Claim.BLOCK]:
            return None  # nothing but perf rounds beside a perf round
        match claim:
            case Claim.BUILD:
                if not self._build_free:
                    return None
                self._build_free = False
                return ()
            case Claim.GUEST:
                return (self._free.pop(0),) if self._free else None
            case Claim.BLOCK:
                if not self._build_free or self._held[Claim.GUEST] or not self._free:
                    return None
                return (self._free.pop(0),)
            case Claim.MACHINE:
                if not self._build_free or len(self._free) < len(self.sets):
                    return None
                self._build_free = False
                held, self._free = tuple(self._free), []
                return held
        raise AssertionError(claim)

    def _give_back(self, claim: Claim, held: tuple[CpuSet, ...]) -> None:
        if claim in (Claim.BUILD, Claim.MACHINE):
            self._build_free = True
        # Back in the order they were made, so a set's CPUs are reused predictably.
        self._free = sorted([*self._free, *held], key=self.sets.index)

    def _run(self, item: _Queued, held: tuple[CpuSet, ...]) -> None:
        # shutdown's KeyboardInterrupt, landing after the unit's work: the run stops anyway.
        with contextlib.suppress(KeyboardInterrupt):
            self._unit(item, held)

    def _unit(self, item: _Queued, held: tuple[CpuSet, ...]) -> None:
        value: Any = None
        fault: BaseException | None = None
        started = False
        try:
            started = item.future.set_running_or_notify_cancel()
            if started:
                cpus = tuple(sorted({cpu for s in held for cpu in s}))
                try:
                    work = item.work
                    if item.claim is not Claim.BUILD:
                        work = units.on_cpus(work, cpus)
                    value = work()
                except BaseException as exc:  # the runner re-raises it from the future
                    fault = exc
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())
                self._places.pop(item.unit.id, None)
                if started and item.claim is Claim.BLOCK:
                    self._ran[item.unit.id] = _place(held)
                self._held[item.claim] -= 1
                self._give_back(item.claim, held)
                if not self._closed:
                    self._dispatch()
        # The future last: the runner, woken by it, finds the next unit placed.
        if not started:
            return
        if fault is not None:
            item.future.set_exception(fault)
        else:
            item.future.set_result(value)

    def placement(self, unit: Unit) -> Placement | None:
        """The CPU set a perf round ran on, for the reports' per-block spread
        (RunResult.workers); None for other units and with one block at a time."""
        with self._lock:
            where = self._ran.get(unit.id)
        if where is None:
            return None
        return Placement(unit.id, where, *machine.identity())

    def where(self, unit_id: str) -> str:
        """Where a unit submitted here runs, for the progress view."""
        with self._lock:
            return self._places.get(unit_id, "local")

    def shutdown(self) -> None:
        """Cancel what waits; stop what runs (the run was interrupted) as Ctrl-C
        stops a unit of a serial run, and wait until it has unwound."""
        with self._lock:
            self._closed = True
            for item in self._queue:
                item.future.cancel()
            self._queue.clear()
            running = list(self._threads)
            # Raised in each unit as Ctrl-C is in a serial run's: its `finally`s
            # and `except BaseException`s kill QEMU and make and write nothing
            # more (no cache record of a command that was killed, a build
            # directory's make-running marker left for the next build to see).
            for thread in running:
                _interrupt(thread)
        if not running:
            return
        deadline = time.monotonic() + STOP_LIMIT
        # The exception lands once the unit's thread runs Python again: the
        # signal ends the child it waits for.  TERM first, then KILL for what
        # is still there next time round.
        sig = signal.SIGTERM
        try:
            while time.monotonic() < deadline:
                running = [t for t in running if t.is_alive()]
                if not running:
                    return
                _signal_children(sig)
                sig = signal.SIGKILL
                for thread in running:
                    thread.join(STOP_POLL / len(running))
        finally:
            # Also on a second Ctrl-C while waiting above.
            _signal_children(signal.SIGKILL)


def interrupt(thread: int, exc: type[BaseException] = KeyboardInterrupt) -> None:
    """Raise exc in the thread of this ident (CPython's async exception: it is
    raised at the thread's next Python instruction)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread), ctypes.py_object(exc))


def _interrupt(thread: threading.Thread) -> None:
    if thread.ident is not None:
        interrupt(thread.ident)


def _signal_children(sig: signal.Signals) -> None:
    """Signal the process trees of this process's children: each belongs to a unit
    (the runner's own thread starts none while an executor runs its units).

    Signals only: the unit that started a child reaps it and sees how it died.
    (Waiting here would reap it first, and Popen then reports exit status 0
    for a child it cannot find: a killed make would look like a build that
    succeeded.)
    """
    for child in psutil.Process().children():
        proc.signal_tree(child.pid, sig)
