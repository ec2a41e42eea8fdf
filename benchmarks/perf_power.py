"""Power of the perf plan: measure map_perf's boot-to-boot noise under this
machine's emulator with an A/A run (the baseline kernel as two independent
variants, interleaved boot by boot), then print the smallest throughput change
the default plan detects with 95% power at a 5% false-alarm rate, and what that
plan costs per pair of variants.

    python benchmarks/perf_power.py [--rounds 8] [--value-size 8]

Goal: a change of 5% or less detected within 10 minutes per pair.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

from orchestrator import proc, results, stats
from orchestrator.config import load

REPO = Path(__file__).resolve().parents[1]
METRIC = "events_per_sec"


def aa_matrix(directory: Path, rounds: int, value_size: int, loops: int, maps: int) -> Path:
    frags = ", ".join(str(p) for p in load(REPO / "matrix.yaml").kconfig.fragments)
    test = (
        f"{{name: map_perf, kind: map_perf, command: /opt/selftests/map_perf, timeout: 300, "
        f"repeats: {rounds}, args: {{value-size: {value_size}, loops: {loops}, maps: {maps}}}}}"
    )
    matrix = directory / "matrix.yaml"
    matrix.write_text(
        "name: perf-power\n"
        f"kconfig: {{fragments: [{frags}]}}\n"
        f"guest: {{cpus: 2, memory: 1024, selftests: {REPO / 'selftests'}}}\n"
        f"tests:\n  - {test}\n"
        "report: {formats: [json]}\n"
        "variants:\n  - {name: a}\n  - {name: b}\n"  # the same stock tree twice: A/A
    )
    return matrix


def samples(run: results.RunResult, variant: str) -> list[float]:
    (v,) = [v for v in run.variants if v.name == variant]
    return [
        t.metrics[METRIC] for t in v.tests if t.name.startswith("map_perf@") and METRIC in t.metrics
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8, help="boots per variant after warm-up")
    parser.add_argument("--value-size", type=int, default=8)
    parser.add_argument("--loops", type=int, default=200000)
    parser.add_argument("--maps", type=int, default=3, help="fresh maps averaged per boot")
    parser.add_argument("--plan", type=int, default=5, help="the default plan's boots per variant")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="perf-power-") as tmp:
        work = Path(tmp)
        matrix = aa_matrix(work, args.rounds, args.value_size, args.loops, args.maps)
        start = time.monotonic()
        argv = [sys.executable, "-m", "orchestrator.cli", str(matrix), "--out", str(work / "run")]
        outcome = proc.run(argv, timeout=7200)
        wall = time.monotonic() - start
        run = results.read(work / "run" / "results.json")
    a, b = samples(run, "a"), samples(run, "b")
    if outcome.returncode != 0 or len(a) < 3 or len(b) < 3:
        sys.exit(f"A/A run failed:\n{outcome.stdout[-3000:]}")
    boots = 2 * (args.rounds + 1)  # + the warm-up round
    per_boot = wall / boots
    noise = stats.cv(
        [*(x / stats.estimate(a).median for x in a), *(x / stats.estimate(b).median for x in b)]
    )
    p = stats.mann_whitney(a, b)
    print(f"A/A: {len(a)}+{len(b)} boots, value size {args.value_size}, {args.maps} maps per boot")
    print(
        f"  a median {stats.estimate(a).median:,.0f}/s  b median {stats.estimate(b).median:,.0f}/s"
    )
    print(f"  boot-to-boot CV (each side around its own median): {noise:.1%}")
    print(f"  A/A Mann-Whitney p = {p:.2f} ({'false alarm' if p < 0.05 else 'no false alarm'})")
    print(f"  wall time {wall:.0f} s for {boots} boots: {per_boot:.1f} s per measured boot")
    for n in sorted({args.plan, 10, 15, 20}):
        change = stats.detectable_change(n, n, noise)
        minutes = 2 * (n + 1) * per_boot / 60
        print(f"  plan {n:2d}+{n:<2d} boots: detects {change:5.1%} (95% power, alpha 0.05), "
              f"{minutes:4.1f} min per pair")  # fmt: skip
    needed = next((n for n in range(3, 60) if stats.detectable_change(n, n, noise) <= 0.05), None)
    if needed is None:
        print("  no plan under 60 boots per variant detects 5% at this noise")
    else:
        minutes = 2 * (needed + 1) * per_boot / 60
        verdict = "OK" if minutes <= 10 else "over"
        print(f"  smallest plan detecting <= 5%: {needed}+{needed} boots, "
              f"{minutes:.1f} min per pair (goal: within 10 min) {verdict}")  # fmt: skip
    assert not math.isnan(noise)


if __name__ == "__main__":
    main()
