"""What the Dask executor costs: matrix-quick.yaml run serially and through a
`dask scheduler` with one `dask worker` (on this machine, the same warm cache),
wall time of the real CLI each.  Goal: Dask / serial <= 1.05.

A warm-up run first fills the cache (builds, guest image, selftests) unless
--no-warmup; then the two runs alternate, serial first, --pairs times, and
the medians are compared.

    python benchmarks/dask_overhead.py --cache-dir DIR [--pairs 1] [--keep DIR]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import distributed

from orchestrator import journal, proc, results

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "orchestrator.cli"]
DASK = Path(sys.executable).with_name("dask")
GOAL = 1.05


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
    # Sequential perf plans stop when they have decided: say how many units ran.
    units = len(journal.read(out).done)
    return seconds, f"{units} units; " + " ".join(
        f"{v.name}={v.status.value}" for v in run.variants
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--matrix", type=Path, default=REPO / "matrix-quick.yaml")
    parser.add_argument("--cache-dir", type=Path, required=True)
    parser.add_argument("--pairs", type=int, default=1, help="serial/Dask runs each")
    parser.add_argument("--no-warmup", action="store_true", help="the cache is warm already")
    parser.add_argument("--keep", type=Path, default=None, help="keep the run directories here")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="dask-overhead-"))
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {"PYTHONPATH": str(REPO)}
    scheduler: list[str | Path] = [
        DASK,
        "scheduler",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-dashboard",
    ]
    worker: list[str | Path] = [DASK, "worker", f"tcp://127.0.0.1:{port}", "--nthreads", "1"]
    worker += ["--resources", "vm=1,build=1", "--no-dashboard"]
    worker += ["--local-directory", str(work / "worker")]
    try:
        if not args.no_warmup:
            seconds, verdicts = timed_run(args.matrix, args.cache_dir, work / "warmup")
            print(f"warm-up (serial): {seconds:.1f}s  {verdicts}", flush=True)
        with (
            proc.spawn(scheduler, log=work / "scheduler.log", env=env),
            proc.spawn(worker, log=work / "worker.log", env=env),
        ):
            with distributed.Client(f"tcp://127.0.0.1:{port}", timeout=60) as client:
                client.wait_for_workers(1, timeout=60)
            serial: list[float] = []
            dask: list[float] = []
            for i in range(1, args.pairs + 1):
                seconds, verdicts = timed_run(args.matrix, args.cache_dir, work / f"serial-{i}")
                serial.append(seconds)
                print(f"serial {i}: {seconds:.1f}s  {verdicts}", flush=True)
                seconds, verdicts = timed_run(
                    args.matrix,
                    args.cache_dir,
                    work / f"dask-{i}",
                    "--executor",
                    f"dask://127.0.0.1:{port}",
                )
                dask.append(seconds)
                print(f"dask   {i}: {seconds:.1f}s  {verdicts}", flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    ratio = statistics.median(dask) / statistics.median(serial)
    verdict = "PASS" if ratio <= GOAL else "NOT MET"
    print(
        f"serial {statistics.median(serial):.1f}s, dask (one worker) "
        f"{statistics.median(dask):.1f}s: ratio {ratio:.3f} "
        f"(overhead {100 * (ratio - 1):+.1f} %; goal <= {100 * (GOAL - 1):.0f} %): {verdict}"
    )


if __name__ == "__main__":
    main()
