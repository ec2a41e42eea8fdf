"""Record A/A perf samples on this machine: the default matrix's perf tests on
stock upstream booted as two variants, interleaved boot by boot, with the real
tool.  benchmarks/perf_power.py replays them through the perf plan's decision
code; they are kept in benchmarks/data/ as the null the plan is calibrated on.

    python benchmarks/record_aa.py [--rounds 45] [--cache-dir DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

from orchestrator import proc, results

sys.path.insert(0, str(Path(__file__).resolve().parent))
from perf_power import REPO, aa_matrix, durations, samples

DATA = REPO / "benchmarks" / "data" / "aa-samples.json"


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--matrix", type=Path, default=REPO / "matrix.yaml")
    parser.add_argument("--rounds", type=int, default=45, help="boots per side (after a warm-up)")
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=DATA)
    parser.add_argument("--keep", type=Path, default=None, help="keep the run directory here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="record-aa-") as tmp:
        work = Path(tmp)
        matrix, perf = aa_matrix(work, args.matrix, args.rounds)
        run_dir = args.keep or work / "run"
        argv = [sys.executable, "-m", "orchestrator.cli", str(matrix), "--out", str(run_dir)]
        if args.cache_dir:
            argv += ["--cache-dir", str(args.cache_dir)]
        start = time.monotonic()
        outcome = proc.run(argv, timeout=4 * 3600)
        wall = time.monotonic() - start
        run = results.read(run_dir / "results.json")
    if outcome.returncode != 0:
        sys.exit(f"the A/A run failed (exit {outcome.returncode}):\n{outcome.stdout[-3000:]}")
    data = {
        "about": "A/A: stock upstream booted as variants a and b, interleaved boot by boot",
        "recorded": run.started,
        "host": {**run.host, "cpu": cpu_model()},
        "accel": run.variants[0].boot.accel if run.variants[0].boot else "",
        "matrix": str(args.matrix.name),
        "wall_seconds": round(wall, 1),
        "boots_per_side": args.rounds,
        "tests": {
            t.name: {
                "args": dict(t.args),
                "metric": "events_per_sec",
                "a": samples(run, "a", t.name),
                "b": samples(run, "b", t.name),
                "seconds": durations(run, t.name),
            }
            for t in perf
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=1) + "\n")
    print(f"{args.out}: {args.rounds}+{args.rounds} boots in {wall / 60:.1f} min")


if __name__ == "__main__":
    main()
