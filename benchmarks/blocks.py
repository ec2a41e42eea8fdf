"""A/A spread within and across perf blocks, from a real run on two CPU sets.

`record` runs the real CLI with `--vms 2` on a matrix of 1-vCPU guests:
upstream (the baseline), its A/A control and ctor, the default matrix's perf
tests, a sequential plan that cannot decide early (±0.5 % equivalence,
0.1 % error rate), so every round runs; the rounds go side by side, one per
CPU set.  It keeps, per round, where it ran and each guest's throughput in
benchmarks/data/blocks-aa.json.  `spread` (what benchmarks/scale.py prints)
compares the A/A log ratio paired within a round (a block, as the verdicts
pair boots) with the same ratio taken across rounds of different CPU sets.

    python benchmarks/blocks.py [--rounds 16] [--cache-dir DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator import perf, proc, results
from orchestrator.config import load
from orchestrator.plan import perf_tests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from perf_power import REPO, test_lines

DATA = REPO / "benchmarks" / "data" / "blocks-aa.json"
METRIC = "events_per_sec"
BASE, AA, OTHER = "upstream", "upstream~aa", "ctor"


def blocks_matrix(directory: Path, rounds: int) -> Path:
    """The default matrix's perf tests on 1-vCPU guests, `rounds` boots at most."""
    source = load(REPO / "matrix.yaml")
    frags = ", ".join(str(p) for p in source.kconfig.fragments)
    tests = test_lines(perf_tests(source.tests), rounds)
    patches = REPO / "patches"
    path = directory / "matrix.yaml"
    path.write_text(
        "name: blocks-aa\n"
        f"kconfig: {{fragments: [{frags}]}}\n"
        f"guest: {{cpus: 1, memory: {source.guest.memory_mb}, selftests: {REPO / 'selftests'}}}\n"
        f"tests:\n{tests}"
        # Nothing decides early: every round runs, so every round is a block.
        "perf: {aa_control: true, max_reruns: 0, sequential: true, equivalence: 0.5%, "
        "error_rate: 0.1%}\n"
        f"report: {{formats: [json], baseline: {BASE}}}\n"
        f"variants:\n  - {{name: {BASE}}}\n"
        f"  - {{name: {OTHER}, series: [{patches / 'pre-fix'}, {patches / 'ctor'}]}}\n"
    )
    return path


def record(rounds: int, cache: Path | None, out: Path, keep: Path | None) -> None:
    with tempfile.TemporaryDirectory(prefix="blocks-aa-") as tmp:
        matrix = blocks_matrix(Path(tmp), rounds)
        run_dir = keep or Path(tmp) / "run"
        argv = [sys.executable, "-m", "orchestrator.cli", "run", str(matrix), "--vms", "2"]
        argv += ["--out", str(run_dir)] + (["--cache-dir", str(cache)] if cache else [])
        start = time.monotonic()
        outcome = proc.run(argv, timeout=4 * 3600, cwd=REPO)
        wall = time.monotonic() - start
        if not (run_dir / "results.json").is_file():
            sys.exit(f"the run failed (exit {outcome.returncode}):\n{outcome.stdout[-3000:]}")
        run = results.read(run_dir / "results.json")
    data: dict[str, Any] = {
        "about": "A/A on two CPU sets: upstream, upstream~aa and ctor, 1-vCPU guests, --vms 2",
        "recorded": run.started,
        "host": run.host,
        "wall_seconds": round(wall, 1),
        "exit": outcome.returncode,
        "rounds": rounds_of(run),
    }
    out.write_text(json.dumps(data, indent=1) + "\n")
    print(f"{len(data['rounds'])} rounds in {wall / 60:.1f} min -> {out}")


def rounds_of(run: results.RunResult) -> list[dict[str, Any]]:
    """Per round of the last batch: where it ran and each guest's headline metric per test."""
    batch = perf.latest_batch([*run.variants, *([run.control] if run.control else [])])
    places = perf.places_of(run, batch)
    out: dict[int, dict[str, Any]] = {}
    for v in (*run.variants, *([run.control] if run.control else [])):
        for t in v.tests:
            if t.batch != batch or t.round < 1 or t.warmup or METRIC not in t.metrics:
                continue
            row = out.setdefault(t.round, {"round": t.round, "place": places.get(t.round)})
            row.setdefault(t.name, {})[v.name] = t.metrics[METRIC]
    return [out[r] for r in sorted(out)]


@dataclass(frozen=True)
class Spread:
    test: str
    within: float  # SD of the A/A log ratio paired within a round
    across: float  # SD of the A/A log ratio across rounds on different sets
    within_mean: float  # mean A/A log ratio within rounds
    across_mean: float  # mean log(A/A on one set / upstream on the other), set 1 over set 0
    between: float  # upstream's median on one set over the other's
    pairs: int


def spread(rounds: list[dict[str, Any]]) -> list[Spread]:
    """Per test: the A/A ratio paired within a block against across blocks."""
    places = sorted({r["place"] for r in rounds if r.get("place")})
    if len(places) != 2:
        raise SystemExit(f"need rounds on two CPU sets, found {places or 'none'}")
    tests = sorted({k for r in rounds for k in r if k not in ("round", "place")})
    out = []
    for test in tests:
        by = {
            p: [r[test] for r in rounds if r["place"] == p and {BASE, AA} <= set(r.get(test, {}))]
            for p in places
        }
        within = [math.log(x[AA] / x[BASE]) for p in places for x in by[p]]
        # Across: the control of the i-th round on one set against upstream
        # in the i-th round on the other (both ways), as an unblocked
        # comparison pairs them.
        first, second = by[places[0]], by[places[1]]
        n = min(len(first), len(second))
        across = [math.log(second[i][AA] / first[i][BASE]) for i in range(n)]
        across_back = [math.log(first[i][AA] / second[i][BASE]) for i in range(n)]
        base = [statistics.median(x[BASE] for x in by[p]) for p in places]
        out.append(
            Spread(
                test,
                statistics.stdev(within),
                statistics.stdev(across + across_back),
                statistics.fmean(within),
                statistics.fmean(across),
                base[1] / base[0],
                n,
            )
        )
    return out


def report(path: Path = DATA) -> list[str]:
    data = json.loads(path.read_text())
    rounds = data["rounds"]
    places = sorted({r["place"] for r in rounds if r.get("place")})
    lines = [
        f"A/A on two CPU sets ({data['recorded'][:16]}, {len(rounds)} rounds, "
        f"{' and '.join(places)}; {path.name}):"
    ]
    for s in spread(rounds):
        lines.append(
            f"  {s.test}: {BASE} on {places[1]} reads {s.between:.3f}x of {places[0]}; "
            f"A/A log-ratio SD within blocks {100 * s.within:.1f} %, across blocks "
            f"{100 * s.across:.1f} % (x{s.across / s.within:.2f}); mean A/A ratio within "
            f"{math.exp(s.within_mean):.3f}x, across ({places[1]} over {places[0]}) "
            f"{math.exp(s.across_mean):.3f}x"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("record", "spread"))
    parser.add_argument("--rounds", type=int, default=16, help="perf rounds (blocks)")
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=DATA)
    parser.add_argument("--keep", type=Path, default=None, help="keep the run directory here")
    args = parser.parse_args()
    if args.command == "record":
        record(args.rounds, args.cache_dir, args.out, args.keep)
    print("\n".join(report(args.out)))


if __name__ == "__main__":
    main()
