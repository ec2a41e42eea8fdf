"""Power of the default perf plan: measure map_perf's boot-to-boot noise under
this machine's emulator with an A/A run (the baseline kernel as two independent
variants, interleaved boot by boot, running exactly the default matrix's
map_perf tests), then print, per test, the smallest throughput change the
plan's repeats detect with 95% power at a 5% false-alarm rate, and what the
plan costs per pair of variants.

    python benchmarks/perf_power.py [--rounds N] [--matrix matrix.yaml]

Goal: a change of 5% or less detected within 10 minutes per pair.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from orchestrator import plan, proc, results, stats
from orchestrator.config import load
from orchestrator.matrix import Test

REPO = Path(__file__).resolve().parents[1]
METRIC = "events_per_sec"
GOAL = 0.05


def aa_matrix(directory: Path, source: Path, rounds: int) -> tuple[Path, list[Test]]:
    """The source matrix's perf tests, `rounds` boots each, on stock upstream twice."""
    matrix = load(source)
    perf = list(plan.perf_tests(matrix.tests))
    frags = ", ".join(str(p) for p in matrix.kconfig.fragments)
    tests = "".join(
        f"  - {{name: {t.name}, kind: {t.kind}, command: {t.command}, timeout: {t.timeout:g}, "
        f"repeats: {rounds}, args: {{{', '.join(f'{k}: {v}' for k, v in t.args)}}}}}\n"
        for t in perf
    )
    path = directory / "matrix.yaml"
    path.write_text(
        "name: perf-power\n"
        f"kconfig: {{fragments: [{frags}]}}\n"
        f"guest: {{cpus: {matrix.guest.cpus}, memory: {matrix.guest.memory_mb}, "
        f"selftests: {REPO / 'selftests'}}}\n"
        f"tests:\n{tests}"
        "report: {formats: [json]}\n"
        "variants:\n  - {name: a}\n  - {name: b}\n"  # the same stock tree twice: A/A
    )
    return path, perf


def samples(run: results.RunResult, variant: str, test: str) -> list[float]:
    (v,) = [v for v in run.variants if v.name == variant]
    return [
        t.metrics[METRIC]
        for t in v.tests
        if t.name == test and t.round and not t.warmup and METRIC in t.metrics
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--matrix", type=Path, default=REPO / "matrix.yaml")
    parser.add_argument(
        "--rounds", type=int, default=0, help="A/A boots per side (default: the plan's largest)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="perf-power-") as tmp:
        work = Path(tmp)
        planned = plan.perf_tests(load(args.matrix).tests)
        rounds = args.rounds or max(t.repeats for t in planned)
        matrix, perf = aa_matrix(work, args.matrix, rounds)
        start = time.monotonic()
        argv = [sys.executable, "-m", "orchestrator.cli", str(matrix), "--out", str(work / "run")]
        outcome = proc.run(argv, timeout=7200)
        wall = time.monotonic() - start
        run = results.read(work / "run" / "results.json")
    boots = 2 * (rounds + 1)  # + the warm-up round; every test in every boot
    per_boot = wall / boots
    print(f"A/A on {args.matrix.name}'s perf tests: {rounds}+{rounds} boots after a warm-up")
    print(f"  wall time {wall:.0f} s: {per_boot:.1f} s per boot running all {len(perf)} tests")
    seconds: dict[str, float] = {}  # a test's mean time in one boot
    repeats: dict[str, int] = {}  # what the plan needs for GOAL
    worst = 0.0
    for t in perf:
        a, b = samples(run, "a", t.name), samples(run, "b", t.name)
        if outcome.returncode != 0 or len(a) < 3 or len(b) < 3:
            sys.exit(f"A/A run failed for {t.name}:\n{outcome.stdout[-3000:]}")
        seconds[t.name] = statistics.mean(durations(run, t.name))
        noise = stats.cv(
            [*(x / stats.estimate(a).median for x in a), *(x / stats.estimate(b).median for x in b)]
        )
        p = stats.mann_whitney(a, b)
        change = stats.detectable_change(t.repeats, t.repeats, noise)
        needed = next((n for n in range(3, 80) if stats.detectable_change(n, n, noise) <= GOAL), 80)
        repeats[t.name] = needed
        alarm = "FALSE ALARM" if p < stats.ALPHA else "no false alarm"
        print(f"{t.name} ({', '.join(f'{k} {v}' for k, v in t.args)}), "
              f"{seconds[t.name]:.1f} s per boot:")  # fmt: skip
        print(f"  a median {stats.estimate(a).median:,.0f}/s, b {stats.estimate(b).median:,.0f}/s;"
              f" A/A Mann-Whitney p = {p:.2f} ({alarm})")  # fmt: skip
        print(f"  boot-to-boot CV {noise:.1%}; the plan's {t.repeats}+{t.repeats} boots detect "
              f"{change:.1%}; {needed}+{needed} would detect {GOAL:.0%}")  # fmt: skip
        worst = max(worst, change)
    overhead = per_boot - sum(seconds.values())  # boot, SSH, image: paid once per boot
    minutes = pair_minutes(overhead, seconds, {t.name: t.repeats for t in perf})
    verdict = "OK" if worst <= GOAL and minutes <= 10 else "NOT MET"
    print(f"boot overhead {overhead:.1f} s per boot")
    print(f"default plan: every test detects {worst:.1%} or less, {minutes:.1f} min per pair "
          f"of variants (goal: {GOAL:.0%} within 10 min) {verdict}")  # fmt: skip
    print(
        f"a plan detecting {GOAL:.0%} in every test: "
        + ", ".join(f"{name} x{n}" for name, n in repeats.items())
        + f", {pair_minutes(overhead, seconds, repeats):.1f} min per pair"
    )


def durations(run: results.RunResult, test: str) -> list[float]:
    return [
        t.duration
        for v in run.variants
        for t in v.tests
        if t.name == test and t.round and not t.warmup
    ]


def pair_minutes(overhead: float, seconds: dict[str, float], repeats: dict[str, int]) -> float:
    """Two variants' boots for a plan: round N boots each variant once and runs
    the tests with at least N repeats; round 0 is the warm-up and runs all."""
    rounds = max(repeats.values()) + 1
    work = sum(seconds[name] * (n + 1) for name, n in repeats.items())
    return 2 * (rounds * overhead + work) / 60


if __name__ == "__main__":
    main()
