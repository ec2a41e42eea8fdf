"""How the sequential perf plan does on this machine's recorded A/A boots.

Replays per-boot samples recorded with the real tool (benchmarks/record_aa.py:
stock upstream booted as two variants, every perf test in every boot) through
the plan's own decision code (orchestrator.sequential), over thousands of
resampled runs of the matrix's family (its variants x perf tests), and prints:

* false alarms per run: the chance of any "faster"/"slower" when nothing
  changed (family-wise; under the complete null it is also the FDR);
* power at 3, 5 and 10 % per value size: one comparison of the family is 5 %
  slower (its variant's samples scaled by 0.95), the rest unchanged;
* the boots this costs: per variant, and for the whole matrix against the
  fixed plan of schema-2 runs (every variant, every round).

    python benchmarks/perf_power.py [--data benchmarks/data/aa-samples.json] [--runs 2000]

Goals (issue "Faster, sharper perf verdicts"): at most 5 % false alarms per
run; at least 90 % power for a 5 % change at every value size.  Each goal
line ends PASS or NOT MET.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from orchestrator import plan, results, sequential
from orchestrator.config import load
from orchestrator.matrix import Test
from orchestrator.sequential import Design

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "benchmarks" / "data" / "aa-samples.json"
METRIC = "events_per_sec"
FIXED_ROUNDS = {"map_perf_8": 30, "map_perf_256": 10, "map_perf_4096": 15}  # schema-2's plan
SEED = 20261207


# --- the A/A matrix record_aa.py runs --------------------------------------------------------


def aa_matrix(directory: Path, source: Path, rounds: int) -> tuple[Path, list[Test]]:
    """The source matrix's perf tests, `rounds` boots each, on stock upstream twice.

    The fixed plan (`sequential: false`): every boot runs every test, so each
    side gets `rounds` samples of each.
    """
    matrix = load(source)
    perf = list(plan.perf_tests(matrix.tests))
    frags = ", ".join(str(p) for p in matrix.kconfig.fragments)
    tests = test_lines(perf, rounds)
    path = directory / "matrix.yaml"
    path.write_text(
        "name: perf-power\n"
        f"kconfig: {{fragments: [{frags}]}}\n"
        f"guest: {{cpus: {matrix.guest.cpus}, memory: {matrix.guest.memory_mb}, "
        f"selftests: {REPO / 'selftests'}}}\n"
        f"tests:\n{tests}"
        "perf: {sequential: false}\n"
        "report: {formats: [json]}\n"
        "variants:\n  - {name: a}\n  - {name: b}\n"  # the same stock tree twice: A/A
    )
    return path, perf


def test_lines(tests: Iterable[Test], rounds: int) -> str:
    """These tests as a matrix's `tests:` entries, each of `rounds` boots at most."""
    return "".join(
        f"  - {{name: {t.name}, kind: {t.kind}, command: {t.command}, timeout: {t.timeout:g}, "
        f"repeats: {rounds}, args: {{{', '.join(f'{k}: {v}' for k, v in t.args)}}}}}\n"
        for t in tests
    )


def samples(run: results.RunResult, variant: str, test: str) -> list[float]:
    (v,) = [v for v in run.variants if v.name == variant]
    return [
        t.metrics[METRIC]
        for t in v.tests
        if t.name == test and t.round and not t.warmup and METRIC in t.metrics
    ]


def durations(run: results.RunResult, test: str) -> list[float]:
    return [
        t.duration
        for v in run.variants
        for t in v.tests
        if t.name == test and t.round and not t.warmup
    ]


# --- the simulation ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What resampled runs of one scenario gave, one entry per run."""

    false_alarm: np.ndarray  # some unchanged comparison was called changed
    false_share: np.ndarray  # false discoveries / discoveries (0 without any)
    found: np.ndarray  # every changed comparison was called slower
    boots: np.ndarray  # per run: each variant's boots, then the baseline's

    def perf_boots(self, variants: int) -> np.ndarray:
        """All perf boots of a run: the variants', the baseline's and the A/A control's."""
        out: np.ndarray = self.boots[:, :variants].sum(axis=1) + 2 * self.boots[:, variants]
        return out


@dataclass(frozen=True)
class Rounds:
    """A test's recorded A/A boots as rounds: what a round shares, what a boot adds.

    Both boots of a recorded round ran back to back, so the host's drift is
    in both: a boot's log-throughput is its round's level plus its own noise.
    A simulated round takes one recorded round's level for every guest and
    gives each guest a residual drawn from all the recorded ones.
    """

    levels: np.ndarray  # per recorded round, the mean of its two log-throughputs
    residuals: np.ndarray  # each boot's distance from its round's level, x sqrt(2)

    @classmethod
    def of(cls, a: Sequence[float], b: Sequence[float]) -> Rounds:
        x, y = np.log(np.asarray(a)), np.log(np.asarray(b))
        levels = (x + y) / 2
        # A boot's distance from a two-boot mean has half a boot's variance.
        return cls(levels, np.concatenate([x - levels, y - levels]) * math.sqrt(2))

    def draw(self, rounds: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        out: np.ndarray = self.levels[rounds] + rng.choice(self.residuals, size=rounds.shape)
        return out


def simulate(
    recorded: dict[str, Rounds],
    n_max: dict[str, int],
    variants: int,
    design: Design,
    runs: int,
    rng: np.random.Generator,
    effects: dict[tuple[int, str], float] | None = None,
) -> Outcome:
    """`runs` resampled runs of the family (variants x tests).

    Each simulated round draws one recorded round for all its boots (every
    test of a boot, every guest of the round) and a residual per boot; all
    comparisons of a run share the baseline's and the A/A control's boots,
    whose average is the reference, as in a real run (perf.paired_ratios).
    `effects`: (variant index, test) -> drop, applied to that variant's boots.
    """
    effects = effects or {}
    tests = list(recorded)
    family = variants * len(tests)
    decided: dict[tuple[int, str], list[sequential.Track]] = {}
    longest = max(n_max.values())
    which = rng.integers(0, len(recorded[tests[0]].levels), size=(runs, longest))
    for test in tests:
        rec, n = recorded[test], n_max[test]
        rounds = which[:, :n]
        base = (rec.draw(rounds, rng) + rec.draw(rounds, rng)) / 2
        for v in range(variants):
            mine = rec.draw(rounds, rng) + math.log1p(-effects.get((v, test), 0.0))
            decided[(v, test)] = sequential.tracks_of(mine - base, n, family, design)
    false_alarm = np.zeros(runs, dtype=bool)
    false_share = np.zeros(runs)
    found = np.zeros(runs, dtype=bool)
    boots = np.zeros((runs, variants + 1), dtype=int)
    for r in range(runs):
        tracks = {(str(v), t, METRIC): decided[(v, t)][r] for (v, t) in decided}
        changed = sequential.discoveries(tracks, design)
        false = [k for k in changed if (int(k[0]), k[1]) not in effects]
        false_alarm[r] = bool(false)
        false_share[r] = len(false) / max(1, len(changed))
        found[r] = all(
            (str(v), t, METRIC) in changed and tracks[(str(v), t, METRIC)].ratio < 1
            for (v, t) in effects
        )
        for v in range(variants):
            boots[r, v] = max(tracks[(str(v), t, METRIC)].n for t in tests)
        boots[r, variants] = boots[r, :variants].max()
    return Outcome(false_alarm, false_share, found, boots)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "NOT MET"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--matrix", type=Path, default=REPO / "matrix.yaml")
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument(
        "--same-kernel",
        action="append",
        default=None,
        help="a variant that boots the baseline's very build (default: gfp-zero)",
    )
    parser.add_argument("--max-boots", type=int, default=0, help="instead of the tests' repeats")
    parser.add_argument("--rho", type=float, default=0.0, help="instead of the plan's spending")
    args = parser.parse_args(argv)
    data = json.loads(args.data.read_text())
    matrix = load(args.matrix)
    design = matrix.perf.design
    if args.rho:
        design = replace(design, rho=args.rho)
    perf = plan.perf_tests(matrix.tests)
    n_max = {t.name: args.max_boots or t.repeats for t in perf}
    recorded = {
        t.name: Rounds.of(data["tests"][t.name]["a"], data["tests"][t.name]["b"]) for t in perf
    }
    # The default family: the variants that boot a kernel of their own.  gfp-zero
    # boots upstream's very build: its comparisons are "same kernel", never measured.
    twins = set(args.same_kernel or ["gfp-zero"]) & {v.name for v in matrix.variants}
    variants = len(matrix.variants) - 1 - len(twins)
    rng = np.random.default_rng(SEED)
    host = data["host"]
    print(f"A/A data: {args.data.name}, recorded {data['recorded'][:16]} on {host.get('cpu', '?')}"
          f" ({host.get('cpus', '?')} CPUs), {data['boots_per_side']}+{data['boots_per_side']}"
          " boots per test")  # fmt: skip
    for t in perf:
        values = np.array(data["tests"][t.name]["a"] + data["tests"][t.name]["b"])
        cv = np.std(values, ddof=1) / np.mean(values)
        within = np.std(recorded[t.name].residuals, ddof=1)
        print(f"  {t.name}: boot-to-boot CV {cv:.1%} over {len(values)} boots, "
              f"{within:.1%} within a round; at most {n_max[t.name]} boots a variant")  # fmt: skip
    family = variants * len(perf)
    print(f"family: {variants} variants x {len(perf)} tests = {family} comparisons; "
          f"{sequential.METHOD}; {design.control.text} at {design.q:.0%}; "
          f"same = TOST at +-{design.equivalence:.0%}")  # fmt: skip
    print(f"simulated runs: {args.runs} per line\n")

    fixed_boots = max(FIXED_ROUNDS.values()) * (len(matrix.variants) + 1)
    null = simulate(recorded, n_max, variants, design, args.runs, rng)
    alarms = null.false_alarm.mean()
    print(f"A/A (nothing changed): any false faster/slower in {alarms:.1%} of runs "
          f"(goal <= 5 %) {verdict(alarms <= 0.05)}")  # fmt: skip
    print(f"  boots per variant {null.boots[:, :variants].mean():.1f}, baseline and A/A "
          f"{null.boots[:, variants].mean():.1f} each; {null.perf_boots(variants).mean():.0f} "
          f"perf boots per run (the fixed plan: {fixed_boots})")  # fmt: skip
    # The default matrix as the cold run found it: no-reuse and reuse-after-rcu-gp
    # 25-35 % slower at every size, pre-fix and ctor within a few percent.
    strong = {(v, t.name): 0.30 for v in (0, 1) for t in perf}
    mixed = simulate(recorded, n_max, variants, design, args.runs, rng, strong)
    mixed_boots = mixed.perf_boots(variants) + len(matrix.variants) + 1 - len(twins)  # warm-up
    print(f"default-like (2 variants 30 % slower, 2 unchanged): FDR {mixed.false_share.mean():.1%},"
          f" any false alarm {mixed.false_alarm.mean():.1%}, every slowdown found "
          f"{mixed.found.mean():.1%}; {mixed_boots.mean():.0f} perf boots with the warm-up "
          f"({mixed_boots.mean() / fixed_boots:.0%} of the fixed plan's {fixed_boots}; "
          f"goal <= 45 %) {verdict(mixed_boots.mean() <= 0.45 * fixed_boots)}")  # fmt: skip
    for t in perf:
        for drop in (0.03, 0.05, 0.10):
            one = simulate(recorded, n_max, variants, design, args.runs, rng, {(0, t.name): drop})
            power = one.found.mean()
            goal = f" (goal >= 90 %) {verdict(power >= 0.90)}" if drop == 0.05 else ""
            print(f"{t.name}: {drop:.0%} slower found in {power:.1%} of runs, "
                  f"{one.boots[:, 0].mean():.1f} boots for that variant{goal}")  # fmt: skip
    sys.stdout.flush()


if __name__ == "__main__":
    main()


__all__ = ["Outcome", "aa_matrix", "durations", "samples", "simulate"]
