"""How orchestrate scales out, in one run of three measurements (issue #11).

1. overhead: matrix-quick.yaml through the real CLI, serially and through a
   `dask scheduler` with one `dask worker` on this machine (same warm cache),
   alternating, --pairs times each; goal: Dask / serial <= 1.05 (medians).
2. placement: the unit timings of a real default-matrix run (the plan and
   every unit's seconds, benchmarks/data/default-run-timings.json) replayed on
   1, 2, 4, 8 and 16 simulated workers of this box's size (vm=1, build=1
   each): a real Dask scheduler places units that sleep for the recorded
   durations (scaled down by --speedup), ready units submitted in plan order
   with the executor's own resources and worker choice
   (dask_executor.resources_for, preferred, request), and the sequential perf plan's
   rounds in waves of one per worker (runner._plan_wave) up to the default
   matrix's most boots.  Goal: wall <= 1.15 x serial / N up to 8 workers.
3. blocks: the A/A spread within and across blocks from a real run on two CPU
   sets (benchmarks/blocks.py records it).

    python benchmarks/scale.py [--only overhead,placement,blocks] --cache-dir DIR
        [--timings FILE_OR_RUN_DIR] [--save-timings RUN_DIR] [--pairs 3] [--speedup 100]
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import distributed

from orchestrator import dask_executor, journal, proc, results
from orchestrator.config import load
from orchestrator.plan import Unit, UnitKind, perf_tests, unit_id

sys.path.insert(0, str(Path(__file__).resolve().parent))
import blocks

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "orchestrator.cli"]
DASK = Path(sys.executable).with_name("dask")
OVERHEAD_GOAL = 1.05
PLACEMENT_GOAL = 1.15  # x serial / N
WORKERS = (1, 2, 4, 8, 16)
# The default matrix cold, as measured (docs/DESIGN.md, "Default matrix, measured"):
# importing the tree, then the first build in a build directory, then each incremental one.
COLD = {"prepare": 60.0, "first build": 296.0, "build": 9.0}
# A default-matrix run's units (`--save-timings`): warm kernels, --perf-budget 20m.
TIMINGS = REPO / "benchmarks" / "data" / "default-run-timings.json"


# --- 1. the Dask executor's overhead -------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def timed_run(matrix: Path, cache: Path, out: Path, *extra: str) -> tuple[float, str]:
    """Seconds of one `orchestrate run`, and what it did (units, variants' statuses)."""
    start = time.monotonic()
    ran = proc.run(
        [*CLI, "run", matrix, "--cache-dir", cache, "--out", out, *extra],
        timeout=7200,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO)},
    )
    seconds = time.monotonic() - start
    if not (out / "results.json").is_file():
        raise SystemExit(f"no results (exit {ran.returncode}):\n{ran.stdout[-2000:]}{ran.stderr}")
    run = results.read(out / "results.json")
    units = len(journal.read(out).done)
    return seconds, f"{units} units; " + " ".join(
        f"{v.name}={v.status.value}" for v in run.variants
    )


def overhead(matrix: Path, cache: Path, pairs: int, work: Path) -> list[str]:
    port = free_port()
    env = {"PYTHONPATH": str(REPO)}
    scheduler: list[str | Path] = [DASK, "scheduler", "--host", "127.0.0.1"]
    scheduler += ["--port", str(port), "--no-dashboard"]
    worker: list[str | Path] = [DASK, "worker", f"tcp://127.0.0.1:{port}", "--nthreads", "1"]
    worker += ["--resources", "vm=1,build=1", "--no-dashboard"]
    worker += ["--local-directory", str(work / "worker")]
    seconds, what = timed_run(matrix, cache, work / "warmup")
    lines = [f"  warm-up (serial, fills the cache): {seconds:.1f}s  {what}"]
    print(lines[-1], flush=True)
    serial: list[float] = []
    dask: list[float] = []
    with (
        proc.spawn(scheduler, log=work / "scheduler.log", env=env),
        proc.spawn(worker, log=work / "worker.log", env=env),
    ):
        with distributed.Client(f"tcp://127.0.0.1:{port}", timeout=60) as client:
            client.wait_for_workers(1, timeout=60)
        for i in range(1, pairs + 1):
            seconds, what = timed_run(matrix, cache, work / f"serial-{i}")
            serial.append(seconds)
            lines.append(f"  serial {i}: {seconds:.1f}s  {what}")
            print(lines[-1], flush=True)
            address = f"dask://127.0.0.1:{port}"
            seconds, what = timed_run(matrix, cache, work / f"dask-{i}", "--executor", address)
            dask.append(seconds)
            lines.append(f"  dask   {i}: {seconds:.1f}s  {what}")
            print(lines[-1], flush=True)
    ratio = statistics.median(dask) / statistics.median(serial)
    verdict = "PASS" if ratio <= OVERHEAD_GOAL else "NOT MET"
    lines.append(
        f"overhead: serial {statistics.median(serial):.1f}s, Dask with one worker "
        f"{statistics.median(dask):.1f}s (medians of {pairs}): ratio {ratio:.3f}, "
        f"{100 * (ratio - 1):+.1f} % (goal <= {100 * (OVERHEAD_GOAL - 1):.0f} %) {verdict}"
    )
    return lines


# --- 2. placement of the default matrix on N workers ---------------------------------------


@dataclass(frozen=True)
class Timed:
    unit: Unit
    seconds: float


def timings(source: Path) -> list[Timed]:
    """Every unit of a recorded run with its seconds: a run directory (its
    units.json) or a timings file (`--save-timings`)."""
    if source.is_dir():
        record = journal.read(source)
        seconds = {r.unit: r.seconds for r in record.done}
        return [Timed(u, seconds[u.id]) for u in record.units if u.id in seconds]
    return [
        Timed(
            Unit(
                t["id"],
                UnitKind(t["kind"]),
                t["variant"],
                needs=tuple(t["needs"]),
                needs_any=tuple(t["needs_any"]),
                after=tuple(t["after"]),
                batch=t["batch"],
                round=t["round"],
            ),
            t["seconds"],
        )
        for t in json.loads(source.read_text())["units"]
    ]


def save_timings(run_dir: Path, out: Path) -> None:
    units = [
        {
            "id": t.unit.id,
            "kind": t.unit.kind.value,
            "variant": t.unit.variant,
            "needs": t.unit.needs,
            "needs_any": t.unit.needs_any,
            "after": t.unit.after,
            "batch": t.unit.batch,
            "round": t.unit.round,
            "seconds": round(t.seconds, 2),
        }
        for t in timings(run_dir)
    ]
    about = "unit timings of a default-matrix run (units.json): the plan and each unit's seconds"
    record = journal.read(run_dir)
    out.write_text(json.dumps({"about": about, "started": record.started, "units": units}) + "\n")


def recorded(timed: Sequence[Timed], cold: bool) -> list[Timed]:
    """The recorded units but the perf rounds (replay adds its own).  `cold`:
    prepare and builds at the cold cache's measured durations (the recording's
    cache may have held every kernel)."""
    out = []
    # The first build of a build directory is the clean one: its configure
    # comes after no other variant's build (plan.units orders a directory's).
    clean = {
        t.unit.variant for t in timed if t.unit.kind is UnitKind.CONFIGURE and not t.unit.after
    }
    for t in timed:
        u, s = t.unit, t.seconds
        if u.kind is UnitKind.PERF_ROUND:
            continue
        if cold and u.kind is UnitKind.PREPARE:
            s = COLD["prepare"]
        if cold and u.kind is UnitKind.BUILD:
            s = COLD["first build"] if u.variant in clean else COLD["build"]
        out.append(Timed(u, s))
    return out


def round_seconds(timed: Sequence[Timed]) -> tuple[float, float]:
    """The recorded warm-up round's seconds and the mean of the other rounds'."""
    rounds = [t for t in timed if t.unit.kind is UnitKind.PERF_ROUND]
    warm = [t.seconds for t in rounds if t.unit.round == 0]
    rest = [t.seconds for t in rounds if t.unit.round > 0]
    if not warm or not rest:
        raise SystemExit("no perf rounds recorded")
    return warm[0], statistics.fmean(rest)


def bound(
    timed: Sequence[Timed], warmup: float, per_round: float, rounds: int, workers: int
) -> float:
    """The least wall time any placement could reach: the longest chain of
    recorded units (unlimited workers), then the warm-up round, then the perf
    rounds in waves of `workers`."""
    seconds = {t.unit.id: t.seconds for t in timed}
    finish: dict[str, float] = {}
    for t in timed:  # plan order: every unit after what it depends on
        finish[t.unit.id] = seconds[t.unit.id] + max(
            (finish[d] for d in t.unit.deps if d in finish), default=0.0
        )
    waves = -(-rounds // workers)
    return max(finish.values(), default=0.0) + warmup + waves * per_round


def _sleep(seconds: float) -> str:
    """A simulated unit on a worker: out of the thread pool (as run_unit), then asleep."""
    distributed.secede()
    time.sleep(seconds)
    return str(distributed.get_worker().address)


def replay(
    timed: Sequence[Timed], warmup: float, per_round: float, rounds: int, workers: int,
    speedup: float,
) -> float:  # fmt: skip
    """Simulated wall seconds (unscaled) of the recorded units plus `rounds` perf
    rounds in waves of `workers`, on that many workers under a real scheduler."""
    functional = tuple(t.unit.id for t in timed if t.unit.kind is UnitKind.FUNCTIONAL)
    plan = list(timed)
    warm = Unit(unit_id(UnitKind.PERF_ROUND, batch=1, round=0), UnitKind.PERF_ROUND,
                needs_any=functional, batch=1, round=0)  # fmt: skip
    plan.append(Timed(warm, warmup))
    before: tuple[str, ...] = (warm.id,)
    r = 1
    while r <= rounds:
        wave = []
        for n in range(r, min(rounds, r + workers - 1) + 1):
            uid = unit_id(UnitKind.PERF_ROUND, batch=1, round=n)
            wave.append(Timed(Unit(uid, UnitKind.PERF_ROUND, needs_any=functional,
                                   after=before, batch=1, round=n), per_round))  # fmt: skip
        plan += wave
        before = tuple(t.unit.id for t in wave)
        r += len(wave)
    cluster = distributed.LocalCluster(
        n_workers=workers,
        threads_per_worker=2,
        processes=False,
        resources={"vm": 1, "build": 1},
        dashboard_address=None,
        worker_dashboard_address=None,
    )
    with cluster, distributed.Client(cluster) as client:
        alive = {w: {"vm": 1.0, "build": 1.0} for w in client.scheduler_info()["workers"]}
        done: set[str] = set()
        ran_on: dict[str, str] = {}
        guests_on: dict[str, int] = {}
        running: dict[distributed.Future[str], tuple[Unit, str]] = {}
        start = time.monotonic()
        while len(done) < len(plan):
            for t in plan:
                u = t.unit
                if u.id in done or any(u.id == v.id for v, _ in running.values()):
                    continue
                if not all(d in done for d in u.deps):
                    continue
                best_first = dask_executor.preferred(u, [], ran_on, guests_on, alive)
                prefer, guest_on = dask_executor.request(u, best_first)
                if guest_on:
                    guests_on[guest_on] = guests_on.get(guest_on, 0) + 1
                future = client.submit(
                    _sleep,
                    t.seconds / speedup,
                    key=f"{u.id}-{workers}",
                    resources=dask_executor.resources_for(u.kind),
                    workers=prefer or None,
                    allow_other_workers=bool(prefer),
                    pure=False,
                )
                running[future] = (u, guest_on)
            finished = distributed.wait(list(running), return_when="FIRST_COMPLETED").done
            for future in finished:
                u, guest_on = running.pop(future)
                ran_on[u.id] = future.result()
                if guest_on:
                    guests_on[guest_on] -= 1
                done.add(u.id)
        return (time.monotonic() - start) * speedup


def placement(source: Path, rounds: int, speedup: float) -> list[str]:
    timed = timings(source)
    warmup, per_round = round_seconds(timed)
    lines = [
        f"placement: {source.name}, perf rounds {rounds} (+ warm-up {warmup:.0f}s) "
        f"of {per_round:.0f}s each, replayed {speedup:g}x faster under a real scheduler"
    ]
    for cold in (False, True):
        units = recorded(timed, cold)
        work = sum(t.seconds for t in units) + warmup + rounds * per_round
        what = "cold cache (prepare and builds at their measured cold times)" if cold else (
            "as recorded (the kernels were cached)")  # fmt: skip
        lines.append(f"  {what}: {work / 60:.1f} min of units")
        serial = 0.0
        for n in WORKERS:
            wall = replay(units, warmup, per_round, rounds, n, speedup)
            serial = serial or wall
            goal = PLACEMENT_GOAL * serial / n
            verdict = ("PASS" if wall <= goal else "NOT MET") if n <= 8 else "(no goal)"
            least = bound(units, warmup, per_round, rounds, n)
            lines.append(
                f"    {n:2d} workers: {wall / 60:5.1f} min, {serial / wall:4.1f}x faster; "
                f"goal <= {goal / 60:.1f} min (1.15 x serial / {n}) {verdict}; "
                f"least possible {least / 60:.1f} min"
            )
            print(lines[-1], flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="overhead,placement,blocks")
    parser.add_argument("--matrix", type=Path, default=REPO / "matrix-quick.yaml")
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--pairs", type=int, default=3, help="serial/Dask runs each")
    parser.add_argument("--timings", type=Path, default=TIMINGS,
                        help="a default-matrix run directory, or a timings file")  # fmt: skip
    parser.add_argument("--save-timings", type=Path, default=None, metavar="RUN_DIR",
                        help="write RUN_DIR's unit timings to --timings, then go on")  # fmt: skip
    parser.add_argument("--speedup", type=float, default=100.0)
    parser.add_argument("--blocks", type=Path, default=blocks.DATA)
    args = parser.parse_args()
    parts = set(args.only.split(","))
    out: list[str] = []
    if "overhead" in parts:
        if args.cache_dir is None:
            parser.error("overhead needs --cache-dir (a cache for matrix-quick.yaml)")
        work = Path(tempfile.mkdtemp(prefix="scale-"))
        try:
            out += overhead(args.matrix, args.cache_dir, args.pairs, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    if args.save_timings:
        save_timings(args.save_timings, args.timings)
    if "placement" in parts:
        most = max(t.repeats for t in perf_tests(load(REPO / "matrix.yaml").tests))
        out += placement(args.timings, most, args.speedup)
    if "blocks" in parts:
        out += blocks.report(args.blocks)
    print("\n" + "\n".join(out))


if __name__ == "__main__":
    main()
