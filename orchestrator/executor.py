"""Executors run ready units of work; the runner decides which are ready.

An executor takes a unit (what it is: its kind says which resources it
holds, a guest or a build) and its work as a callable, and returns a future
of the work's result.  The serial executor runs it at once, in the caller's thread, which
is how a plain `orchestrate run` goes: one unit after another in plan order,
Ctrl-C and SIGTERM landing in the unit that runs.  The thread executor runs
up to N at once; it proves the runner does not depend on the order units
finish in, and is the shape of executors that hand units to other processes
or machines (the unit's inputs and results are plain, JSON-able data):
dask_executor.py hands them to a Dask cluster (`--executor dask://HOST:PORT`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol, TypeVar, runtime_checkable

from orchestrator.errors import UserError
from orchestrator.plan import Unit
from orchestrator.results import Placement

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

    def where(self, units: Sequence[Unit]) -> dict[str, str]:
        """Where each of these running units is now, by unit id."""


def placement_of(executor: Executor, unit: Unit) -> Placement | None:
    """Where a finished unit ran; None when it ran on this machine."""
    return executor.placement(unit) if isinstance(executor, Placing) else None


def where_of(executor: Executor, units: Sequence[Unit]) -> dict[str, str]:
    """Where running units are, for the progress display: "local" on this machine."""
    if isinstance(executor, Placing):
        return executor.where(units)
    return {u.id: "local" for u in units}


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
