"""Units on a Dask cluster: `orchestrate run MATRIX --executor dask://HOST:PORT`.

A `dask scheduler` and, on every box, `dask worker --resources "vm=1,build=1"`
(README, "On a Dask cluster").  Each unit becomes one Dask task:

* **Resources**: a unit that boots guests (FUNCTIONAL, PERF_ROUND) holds
  `vm=1`, every other unit `build=1` (the tree, its build directories and the
  image live in the worker's cache).  A unit's task secedes from the worker's
  thread pool at once: the resources, not the thread count, say what runs
  together, and the freed thread serves other workers' artifact fetches.
* **Locality** (`workers=`, `allow_other_workers=True`): units of the kernel
  tree prefer the worker that prepared it (tree cache and ccache warm); a unit
  that boots a kernel prefers a worker holding its artifacts and not already
  running one of our guests, else any worker with a free guest slot, which
  then fetches the artifacts (from a shared directory, else from a worker
  holding them) and checks every file's sha256 against what the build
  recorded; a mismatch is an InfraError.  Perf rounds prefer the workers of
  the rounds before, a free one first: a round is a block (every guest once,
  on one worker) and a sequential plan runs one per worker side by side
  (`perf_blocks`); its verdicts pair boots within a round, so ratios never
  cross hosts.
* **Lost workers**: the scheduler re-runs a unit whose worker died, and a
  unit that was running on two workers that died raises `KilledWorker`
  (`allowed-failures` is set to 1 on connecting), which becomes an InfraError
  naming the unit.  A unit's exception of its own (UserError, InfraError)
  comes back as data and is not retried; anything else gets one retry.
* **Placement**: each result says which worker ran it (host, CPU model,
  kernel, QEMU version) and the runner writes it into results.json.

Units cross as data: the work goes out pickled (the Context without its
progress callback) and the output comes back through results.to_data, as in
the runner's JSON round-trip test.  The run directory must be at the same
path on every worker (logs go there); the cache need not be:
`ORCHESTRATE_CACHE_DIR` in a worker's environment gives it its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import shutil
import signal
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import distributed
from distributed.scheduler import KilledWorker

from orchestrator import proc, sandbox, units
from orchestrator.cache import Cache
from orchestrator.errors import InfraError, OrchestrateError, UserError
from orchestrator.executor import interrupt
from orchestrator.git import git
from orchestrator.kernel import build
from orchestrator.machine import identity
from orchestrator.plan import Unit, UnitKind
from orchestrator.results import Placement, Status, from_data, to_data
from orchestrator.units import OUTPUTS, Built, Context, GuestState
from orchestrator.vm import testbed

T = TypeVar("T")

SCHEME = "dask://"
CACHE_ENV = "ORCHESTRATE_CACHE_DIR"  # a worker's own cache (default: the client's path)
SHARED_ENV = "ORCHESTRATE_SHARED_ARTIFACTS"  # a directory every worker reads and writes
GUEST_KINDS = frozenset({UnitKind.FUNCTIONAL, UnitKind.PERF_ROUND})
TREE_KINDS = frozenset({UnitKind.APPLY, UnitKind.CONFIGURE, UnitKind.BUILD, UnitKind.INSTALL})
# A unit that was running on a worker that died runs again elsewhere; when a
# second one dies under it, the unit is the likely killer: an infrastructure
# fault, not retried forever.
ALLOWED_FAILURES = 1
# An exception that is not the unit's own verdict (an OSError of a flaky box): once more.
RETRIES = 1
FETCH_TIMEOUT = 600.0  # seconds to copy one kernel's artifacts between workers
CONNECT_TIMEOUT = 10.0


def scheduler_address(spec: str) -> str:
    """dask://HOST:PORT as the scheduler's tcp:// address; UserError (exit 2) otherwise."""
    parts = urlsplit(spec)
    try:
        port = parts.port
    except ValueError:
        port = None
    if (
        not spec.startswith(SCHEME)
        or not parts.hostname
        or port is None
        or parts.path not in ("", "/")
        or parts.query
        or parts.username is not None
    ):
        raise UserError(f"--executor {spec!r}: expected dask://HOST:PORT (a dask scheduler)")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"tcp://{host}:{port}"


def resources_for(kind: UnitKind) -> dict[str, float]:
    """What a unit holds on its worker: a guest slot or the build box."""
    return {"vm": 1} if kind in GUEST_KINDS else {"build": 1}


# --- artifacts: what a guest boots, by content -------------------------------------------


@dataclass(frozen=True)
class Copy:
    worker: str  # address of a worker holding the directory
    path: str  # where, on that worker


@dataclass(frozen=True)
class Artifacts:
    """A kernel's artifact directory: its files' sha256 and who holds a copy."""

    name: str  # the directory's name (tree and config hashes): the same in every cache
    manifest: tuple[tuple[str, str], ...]  # (file, sha256), sorted
    copies: tuple[Copy, ...] = ()

    @property
    def vmlinux(self) -> str:
        return dict(self.manifest).get("vmlinux", "")


def manifest_of(directory: Path) -> tuple[tuple[str, str], ...]:
    """sha256 of every file in an artifact directory (it holds no subdirectories)."""
    return tuple((p.name, _sha256_file(p)) for p in sorted(directory.iterdir()) if p.is_file())


def mismatch(files: Mapping[str, bytes], manifest: Iterable[tuple[str, str]]) -> str | None:
    """The first file that is missing or not what the build recorded; None when all match."""
    for name, want in manifest:
        data = files.get(name)
        if data is None:
            return f"{name} is missing"
        got = hashlib.sha256(data).hexdigest()
        if got != want:
            return f"{name} has sha256 {got[:16]}…, the build recorded {want[:16]}…"
    return None


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(functools.partial(f.read, 1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def artifact_dirs(work: Callable[[], Any]) -> tuple[Path, ...]:
    """The artifact directories a unit's work boots kernels from (none for most kinds)."""
    found: list[Path] = []
    for arg in _args(work):
        if isinstance(arg, Built):
            found.append(Path(arg.build.artifact_dir))
        elif isinstance(arg, tuple):
            found += [g.kernel.parent for g in arg if isinstance(g, GuestState)]
    return tuple(dict.fromkeys(found))


def _args(work: Callable[[], Any]) -> tuple[Any, ...]:
    return tuple(work.args) if isinstance(work, functools.partial) else ()


# --- where a unit should run (pure) ---------------------------------------------------------


def preferred(
    unit: Unit,
    needed: Iterable[Artifacts],
    ran_on: Mapping[str, str],
    guests_on: Mapping[str, int],
    alive: Mapping[str, Mapping[str, float]],
) -> tuple[str, ...]:
    """The workers a unit should go to, best first; () leaves it to the scheduler.

    `ran_on`: worker of each finished unit; `guests_on`: our guest units in
    flight per worker; `alive`: each live worker's resources.
    """
    slots = {w: int(r.get("vm", 0)) for w, r in alive.items()}
    free = [w for w, n in slots.items() if guests_on.get(w, 0) < n]
    if unit.kind is UnitKind.PERF_ROUND:
        # A worker of the rounds before (warm) that has no guest of ours; else
        # any free one: rounds planned side by side go to different workers.
        # (Preferring a busy one queues the round behind its neighbour.)
        before = [w for w in dict.fromkeys(ran_on.get(u, "") for u in unit.after) if w in free]
        if before:
            return tuple(before)
    if unit.kind in GUEST_KINDS:
        holders = [c.worker for a in needed for c in a.copies if c.worker in alive]
        holders = list(dict.fromkeys(holders))
        return tuple([w for w in holders if w in free] or free or holders)
    if unit.kind in TREE_KINDS or unit.kind is UnitKind.GUEST:
        home = ran_on.get("prepare")
        if home in alive:
            return (cast(str, home),)
    return ()


def request(unit: Unit, best_first: Sequence[str]) -> tuple[list[str], str]:
    """The `workers=` to submit a unit with, given its preferred workers, and
    the worker its guests are counted on ("" for a unit without guests, or
    when any worker will do).

    Only the best worker is named: given several, the scheduler picks among
    them by its own estimate, which can put two guests queued on one worker
    while another idles (measured: rounds side by side then ran one by one).
    """
    best = list(best_first[:1])
    return best, (best[0] if best and unit.kind in GUEST_KINDS else "")


# --- on the worker ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Envelope:
    """What a unit's task returns: its output as data, and where it ran."""

    output: Any  # results.to_data of the unit's output; None when it failed
    placement: Placement
    artifacts: Artifacts | None = None  # a BUILD's, as this worker holds them
    fetched: tuple[Copy, ...] = ()  # artifact directories this worker copied in, and where to
    failure: tuple[int, str] | None = None  # an OrchestrateError's exit code and message


def _quiet(variant: str, stage: Any, status: Any, detail: str) -> None:
    """Progress of a unit on a worker: the runner reports its stages from its results."""


async def _warm_up() -> None:
    """Run on each worker as the run starts (unpickling it imported orchestrate there)."""
    await asyncio.get_running_loop().run_in_executor(None, identity)


def _placement(unit_id: str, address: str, artifacts: str = "") -> Placement:
    host, cpu, kernel, qemu = identity()
    return Placement(unit_id, address, host, cpu, kernel, qemu, artifacts)


class Stopped(BaseException):
    """Raised in a unit's thread on a worker when its run was interrupted
    (stop_units): like Ctrl-C in a serial run, every `finally` of the unit runs
    (QEMU stopped, nothing more cached) and nothing catches it on the way."""


# Our units running on this worker: task key -> the thread running it.
_running: dict[str, int] = {}
_running_lock = threading.Lock()
STOP_GRACE = 20.0  # seconds a stopped unit may take to unwind before it is left to die


def run_unit(
    unit_id: str, key: str, work: Callable[[], Any], needed: tuple[Artifacts, ...]
) -> Envelope:
    """A unit's task on a worker: its inputs made local, its work, its output as data."""
    # Out of the thread pool at once: the unit's resources stay held, and the
    # thread can serve another worker's fetch of artifacts from this one.
    distributed.secede()
    address = distributed.get_worker().address
    try:
        with _running_lock:
            _running[key] = threading.get_ident()
        try:
            return _run_unit(unit_id, work, needed, address)
        finally:
            with _running_lock:
                _running.pop(key, None)
    except Stopped:  # also when it lands just after the unit's work
        message = f"{unit_id}: stopped on {address}: the run was interrupted"
        return Envelope(None, _placement(unit_id, address), failure=(130, message))


def _run_unit(
    unit_id: str, work: Callable[[], Any], needed: tuple[Artifacts, ...], address: str
) -> Envelope:
    try:
        work, fetched, notes = _localized(work, needed, address)
        note = "; ".join(notes)
        output = work()
    except OrchestrateError as exc:  # the unit's own fault: data, not retried
        return Envelope(None, _placement(unit_id, address), failure=(exc.exit_code, str(exc)))
    artifacts = None
    if isinstance(output, Built) and output.stage.status is Status.PASS:
        directory = Path(output.build.artifact_dir)
        here = (Copy(address, str(directory)),)
        artifacts = Artifacts(directory.name, manifest_of(directory), here)
        _publish(directory)
        note = f"vmlinux sha256 {artifacts.vmlinux}"
    placement = _placement(unit_id, address, note)
    return Envelope(to_data(output), placement, artifacts, tuple(fetched))


async def stop_units(keys: list[str], grace: float = STOP_GRACE) -> list[str]:
    """Run on every worker (Client.run) when a run is interrupted: each of its
    units running here is stopped as Ctrl-C stops a unit of a serial run, and
    this returns once they have unwound (or after `grace`, their process trees
    killed).  A coroutine: the worker's event loop goes on meanwhile."""
    with _running_lock:
        threads = {k: t for k, t in _running.items() if k in set(keys)}
    for thread in threads.values():
        interrupt(thread, Stopped)
    # The exception lands once the unit's thread runs Python again: ending the
    # child it waits for (QEMU, make, ssh) wakes it.  TERM first, then KILL.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    while True:
        with _running_lock:
            left = [t for k, t in threads.items() if k in _running]
        if not left or loop.time() > deadline + grace:  # stuck past any signal: left to die
            return sorted(threads)
        sig = signal.SIGKILL if loop.time() > deadline else signal.SIGTERM
        for thread in left:
            for pid in proc.children_of(thread):
                proc.signal_tree(pid, sig)
        await asyncio.sleep(0.2)


def read_artifacts(path: str) -> dict[str, bytes]:
    """Every file of an artifact directory on this worker (a fetch's task)."""
    return {p.name: p.read_bytes() for p in sorted(Path(path).iterdir()) if p.is_file()}


def _localized(
    work: Callable[[], Any], needed: tuple[Artifacts, ...], address: str
) -> tuple[Callable[[], Any], list[Copy], list[str]]:
    """The work with this worker's cache and its own copies of the kernels it boots;
    the copies it made, and a note of where each came from."""
    if not isinstance(work, functools.partial):
        return work, [], []
    ctx = next((a for a in work.args if isinstance(a, Context)), None)
    if ctx is None:
        return work, [], []
    ctx = _worker_context(ctx)
    work = _with_tree(work, ctx)
    fetched: list[Copy] = []
    notes: list[str] = []
    moved: dict[Path, Path] = {}
    for art in needed:
        local = ctx.cache.root / "artifacts" / art.name
        if not build.is_built(local):
            source = _fetch(art, local, address)
            fetched.append(Copy(address, str(local)))
            notes.append(f"fetched {art.name} from {source} (sha256 verified)")
        for copy in art.copies:
            moved[Path(copy.path)] = local
    args = tuple(_moved(a, ctx, moved) for a in work.args)
    return functools.partial(work.func, *args, **work.keywords), fetched, notes


def _with_tree(work: functools.partial[Any], ctx: Context) -> functools.partial[Any]:
    """A tree unit on a worker that lacks the tree or the variant's commit (its
    own cache, the tree's worker lost): the tree is prepared and the series
    applied here first (same base and tree; only the commit's dates differ)."""
    args = list(work.args)
    prepared = next((a for a in args if isinstance(a, units.Prepared)), None)
    if prepared is None:
        return work
    here = prepared
    if not prepared.repo.is_dir():
        here = units.prepare(ctx)
        if here.base != prepared.base:
            raise InfraError(
                f"the kernel tree moved: base {here.base[:12]} on this worker, "
                f"{prepared.base[:12]} where the run started"
            )
    for i, arg in enumerate(args):
        if arg is prepared:
            args[i] = here
        elif isinstance(arg, units.Applied) and not _has_commit(here.repo, arg.head):
            variant = next(a for a in args if isinstance(a, str))
            args[i] = replace(arg, head=units.apply(ctx, variant, here).head)
    return functools.partial(work.func, *args, **work.keywords)


def _has_commit(repo: Path, commit: str) -> bool:
    return bool(commit) and git(repo, "cat-file", "-e", f"{commit}^{{commit}}", check=False).ok


def _worker_context(ctx: Context) -> Context:
    """The client's Context on this worker: its cache, if the worker has its own."""
    own = os.environ.get(CACHE_ENV)
    if not own or Path(own).resolve() == ctx.cache.root:
        return ctx
    cache = Cache(Path(own).resolve())
    confined = sandbox.for_run(
        cache=cache.root,
        run_dir=ctx.run_dir,
        reports=ctx.matrix.report.dir,
        enabled=ctx.sandbox.enabled,
    )
    return replace(ctx, cache=cache, sandbox=confined)


def _moved(arg: Any, ctx: Context, moved: Mapping[Path, Path]) -> Any:
    """An argument of a unit's work with its paths on this worker."""
    if isinstance(arg, Context):
        return ctx
    if isinstance(arg, Built):
        where = moved.get(Path(arg.build.artifact_dir))
        return replace(arg, build=replace(arg.build, artifact_dir=str(where))) if where else arg
    if isinstance(arg, testbed.GuestSetup):
        # The boots' unix sockets: a short directory, made by the guest unit's worker.
        arg.sockets.mkdir(parents=True, exist_ok=True)
        return arg
    if isinstance(arg, tuple) and any(isinstance(g, GuestState) for g in arg):
        return tuple(_moved(g, ctx, moved) for g in arg)
    if isinstance(arg, GuestState) and arg.kernel.parent in moved:
        return replace(arg, kernel=moved[arg.kernel.parent] / arg.kernel.name)
    return arg


def _fetch(art: Artifacts, dest: Path, address: str) -> str:
    """Copy a kernel's artifacts into this worker's cache, checked by hash on arrival;
    where from (a worker's address, or the shared directory)."""
    shared = os.environ.get(SHARED_ENV)
    if shared and (Path(shared) / art.name).is_dir():
        files = read_artifacts(str(Path(shared) / art.name))
        if mismatch(files, art.manifest) is None:
            _install(files, dest)
            return shared
    client = distributed.get_client()
    alive = set(live_workers(client))
    sources = [c for c in art.copies if c.worker != address and c.worker in alive]
    for copy in sources:
        task = client.submit(
            read_artifacts,
            copy.path,
            key=f"fetch-{art.name}-{uuid.uuid4().hex[:8]}",
            workers=[copy.worker],
            allow_other_workers=False,
            pure=False,
        )
        try:
            files = task.result(timeout=FETCH_TIMEOUT)
        except (OSError, TimeoutError, KilledWorker):
            task.cancel()
            continue  # that worker went away: the next copy
        wrong = mismatch(files, art.manifest)
        if wrong is not None:
            raise InfraError(f"artifacts {art.name} from {copy.worker}: {wrong}")
        _install(files, dest)
        return copy.worker
    held = ", ".join(c.worker for c in art.copies) or "no worker"
    raise InfraError(
        f"artifacts {art.name}: held by {held}, none reachable, and no shared directory "
        f"({SHARED_ENV}) has them"
    )


def _install(files: Mapping[str, bytes], dest: Path) -> None:
    """Write a fetched artifact directory atomically (a rename), as a build does."""
    staging = dest.with_name(f"{dest.name}.fetch-{uuid.uuid4().hex[:8]}")
    staging.mkdir(parents=True)
    for name, data in files.items():
        (staging / Path(name).name).write_bytes(data)
    try:
        staging.rename(dest)
    except OSError:  # another unit installed it first
        shutil.rmtree(staging, ignore_errors=True)


def _publish(directory: Path) -> None:
    """A built kernel into the shared artifacts directory, when the workers have one."""
    shared = os.environ.get(SHARED_ENV)
    if not shared or (Path(shared) / directory.name).is_dir():
        return
    _install(read_artifacts(str(directory)), Path(shared) / directory.name)


def live_workers(client: distributed.Client) -> dict[str, dict[str, float]]:
    """Each worker the scheduler has now, with its resources.

    Asked of the scheduler itself: `Client.scheduler_info()` returns a cache
    that the client's periodic refresh replaces with one without workers.
    """
    scheduler = client.scheduler
    if scheduler is None:  # closed
        return {}
    info = client.sync(scheduler.identity, n_workers=-1)
    return {addr: dict(w.get("resources") or {}) for addr, w in info["workers"].items()}


# --- the client's side ------------------------------------------------------------------------


class DaskExecutor:
    """Hands units to the workers of a `dask scheduler` (see the module's notes)."""

    def __init__(self, address: str, *, timeout: float = CONNECT_TIMEOUT) -> None:
        self.address = address
        # Its retries while connecting are ours to report, in one line.
        logging.getLogger("distributed.client").setLevel(logging.ERROR)
        try:
            self._client = distributed.Client(
                address, timeout=timeout, set_as_default=False, name="orchestrate"
            )
        except (OSError, TimeoutError) as exc:
            raise InfraError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
        try:
            self._client.wait_for_workers(1, timeout=timeout)
        except TimeoutError:
            self._client.close()
            raise InfraError(f"the Dask scheduler at {address} has no workers") from None
        # For every client of this scheduler: its cluster is orchestrate's.
        self._client.run_on_scheduler(
            lambda dask_scheduler: setattr(dask_scheduler, "allowed_failures", ALLOWED_FAILURES)
        )
        # Each worker imports orchestrate and asks QEMU its version now, while this
        # process plans the run, not when the first unit arrives (measured: 1.9 s).
        self._client.run(_warm_up, wait=False)
        self._lock = threading.Lock()
        self._inflight: dict[str, distributed.Future[Any]] = {}
        self._keys: dict[str, str] = {}  # task key -> unit id, while it runs
        self._ran_on: dict[str, str] = {}  # unit id -> worker address
        self._placements: dict[str, Placement] = {}
        self._artifacts: dict[str, Artifacts] = {}  # by directory name
        self._guests_on: dict[str, int] = {}  # our guest units in flight, by preferred worker
        workers = self._workers()
        self.capacity = max(1, sum(_slots(r) for r in workers.values()))
        # A sequential plan's perf rounds side by side: one per worker that boots guests.
        self.perf_blocks = max(1, sum(1 for r in workers.values() if r.get("vm", 0) >= 1))

    def _workers(self) -> dict[str, dict[str, float]]:
        return live_workers(self._client)

    def submit(self, unit: Unit, work: Callable[[], T]) -> Future[T]:
        alive = self._workers()
        wanted = resources_for(unit.kind)
        if not any(all(r.get(k, 0) >= n for k, n in wanted.items()) for r in alive.values()):
            (name,) = wanted
            raise InfraError(
                f"{unit.id}: no worker of {self.address} offers the resource {name!r} "
                '(start workers with --resources "vm=1,build=1")'
            )
        with self._lock:
            needed = tuple(
                self._artifacts.get(d.name) or Artifacts(d.name, (), ())
                for d in artifact_dirs(work)
            )
            best_first = preferred(unit, needed, self._ran_on, self._guests_on, alive)
            workers, guest_on = request(unit, best_first)
            if guest_on:
                self._guests_on[guest_on] = self._guests_on.get(guest_on, 0) + 1
        key = f"{unit.kind.value}-{unit.id}-{uuid.uuid4().hex[:8]}"
        task = self._client.submit(
            run_unit,
            unit.id,
            key,
            _shippable(work),
            tuple(a for a in needed if a.manifest),
            key=key,
            resources=wanted,
            workers=workers or None,
            allow_other_workers=bool(workers),  # a preference, never a restriction
            retries=RETRIES,
            pure=False,
        )
        result: Future[T] = Future()
        with self._lock:
            self._inflight[key] = task
            self._keys[key] = unit.id
        task.add_done_callback(functools.partial(self._done, unit, key, result, guest_on))
        return result

    def _done(
        self,
        unit: Unit,
        key: str,
        result: Future[Any],
        guest_on: str,
        task: distributed.Future[Any],
    ) -> None:
        try:
            envelope = self._envelope(unit, task)
        except BaseException as exc:  # it reaches the runner through the future
            result.set_exception(exc)
            return
        finally:
            with self._lock:
                self._inflight.pop(key, None)
                self._keys.pop(key, None)
                if guest_on:
                    self._guests_on[guest_on] -= 1
            task.release()  # else a lost worker's copy would be recomputed
        if envelope.failure is not None:
            code, message = envelope.failure
            result.set_exception(UserError(message) if code == 2 else InfraError(message))
            return
        with self._lock:
            self._ran_on[unit.id] = envelope.placement.worker
            self._placements[unit.id] = envelope.placement
            if envelope.artifacts is not None:
                known = self._artifacts.get(envelope.artifacts.name)
                copies = (known.copies if known else ()) + envelope.artifacts.copies
                self._artifacts[envelope.artifacts.name] = replace(
                    envelope.artifacts, copies=tuple(dict.fromkeys(copies))
                )
            for copy in envelope.fetched:
                name = Path(copy.path).name
                if name in self._artifacts:
                    art = self._artifacts[name]
                    self._artifacts[name] = replace(art, copies=(*art.copies, copy))
        result.set_result(from_data(OUTPUTS[unit.kind], envelope.output))

    def _envelope(self, unit: Unit, task: distributed.Future[Any]) -> Envelope:
        try:
            return cast(Envelope, task.result())
        except KilledWorker as exc:
            raise InfraError(
                f"{unit.id}: {exc.allowed_failures + 1} Dask workers died while running it "
                f"(the last {exc.last_worker.address}): an infrastructure fault, not retried"
            ) from None
        except distributed.client.FutureCancelledError:
            raise InfraError(f"{unit.id}: cancelled on the Dask cluster") from None
        except Exception as exc:
            raise InfraError(
                f"{unit.id}: failed on a Dask worker: {type(exc).__name__}: {exc}"
            ) from None

    def placement(self, unit: Unit) -> Placement | None:
        with self._lock:
            return self._placements.get(unit.id)

    def where(self, unit_id: str) -> str:
        """The worker a running unit's task is on, or "queued" before the scheduler
        has started it (the runner's progress snapshots ask)."""
        with self._lock:
            keys = [k for k, u in self._keys.items() if u == unit_id]
        if not keys:
            return "queued"
        try:
            processing = self._client.processing()
        except (OSError, TimeoutError):
            return "queued"
        return next((w for w, ks in processing.items() if keys[0] in ks), "queued")

    def shutdown(self) -> None:
        """Stop what runs (the run was interrupted) and let go of the cluster.

        Dask cannot interrupt a running task, so each worker is asked to stop
        our units itself (stop_units), and this returns once their QEMUs and
        builds are gone; then the tasks are cancelled."""
        with self._lock:
            pending = dict(self._inflight)
            self._inflight.clear()
        if pending:
            with contextlib.suppress(Exception):  # a worker gone or the scheduler down
                self._client.run(stop_units, list(pending), on_error="ignore")
            self._client.cancel(list(pending.values()), force=True)
        self._client.close()


def _slots(resources: Mapping[str, float]) -> int:
    """Units a worker runs at once: a guest and a build."""
    return int(resources.get("vm", 0)) + int(resources.get("build", 0))


def _shippable(work: Callable[[], T]) -> Callable[[], T]:
    """The work without what must not leave this process (the progress display)."""
    if not isinstance(work, functools.partial):
        return work
    args = tuple(replace(a, progress=_quiet) if isinstance(a, Context) else a for a in work.args)
    return functools.partial(work.func, *args, **work.keywords)
