"""How reliably and how fast htab_reuse's same_key_reuse subtest detects a
torn BPF_F_LOCK read of an element reused for the same key, per kernel of
the default matrix, with the real tool: write a matrix of the default
matrix's variants and kconfig with only htab_reuse, running only that subtest
(`--test=same_key_reuse`, `duration: 10`), run `orchestrate` N times on one
cache (each run boots every variant once; gfp-zero boots upstream's kernel),
then print per variant the detections out of the boots and the time to
detection (min / median / max).

    python benchmarks/htab_reuse_detect.py [--runs 20] [--only VARIANT ...]
        [--cache-dir DIR] [--keep DIR] [--arg KEY=VALUE ...]

(`--arg writers=0`, say, is passed to the program as `--writers=0`: to see
what the BPF_F_LOCK readers alone detect.)

Goals: detection in at least 9 of 10 boots within 10 s on every kernel the
default matrix expects it on, and no false alarm in 20 boots x 10 s on the
others (no-reuse, reuse-after-rcu-gp).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator import proc, results
from orchestrator.config import load
from orchestrator.matrix import Matrix
from orchestrator.results import Verdict

REPO = Path(__file__).resolve().parents[1]
TEST = "htab_reuse"
SUBTEST = "same_key_reuse"
KEY = f"{TEST}.{SUBTEST}"
_AFTER = re.compile(r"after (\d+(?:\.\d+)?) s")


def detect_matrix(
    directory: Path, source: Matrix, duration: float, extra: dict[str, str] | None = None
) -> Path:
    """The source matrix's tree, kconfig, guest and variants; one test: the subtest alone.

    Written as JSON (which is YAML) with absolute paths, so it can live anywhere.
    """
    (test,) = [t for t in source.tests if t.name == TEST]
    variants = []
    for v in source.variants:
        entry: dict[str, object] = {"name": v.name}
        if v.series:
            entry["series"] = [str(p) for p in v.series]
        expect = {k: o for k, o in v.expect if k == KEY}
        if expect:
            entry["expect"] = expect
        variants.append(entry)
    k, g = source.kconfig, source.guest
    assert g.selftests is not None
    matrix = {
        "name": "htab-reuse-detect",
        "tree": {"debian": source.tree.location},
        "kconfig": {
            "base": k.base,
            "arch": k.arch,
            "fragments": [str(p) for p in k.fragments],
            "on_mismatch": k.on_mismatch.value,
        },
        "guest": {
            "cpus": g.cpus,
            "memory": g.memory_mb,
            "accel": g.accel.value,
            "boot_timeout": g.boot_timeout,
            "selftests": str(g.selftests),
        },
        "tests": [
            {
                "name": TEST,
                "kind": test.kind,
                "command": test.command,
                "timeout": duration + 50,
                "args": {"duration": duration, "test": SUBTEST, **(extra or {})},
                "about": {k: text for k, text in test.about if k == SUBTEST},
            }
        ],
        "report": {"dir": str(directory / "reports"), "formats": ["json", "text"]},
        "variants": variants,
    }
    path = directory / "matrix.yaml"
    path.write_text(json.dumps(matrix, indent=2) + "\n")
    return path


@dataclass
class Tally:
    expected: str  # "fail" where the default matrix expects the subtest to detect
    boots: int = 0
    detections: list[float] = field(default_factory=list)  # seconds to detection
    readers: int = 0  # detections by a BPF_F_LOCK reader (the others: by a locked writer)
    other: list[str] = field(default_factory=list)  # boots that neither passed nor detected


def detection_seconds(sub: results.TestResult) -> float | None:
    """When a failing subtest detected: its metric, else the "after X s" of its reason."""
    if "detect_seconds" in sub.metrics:
        return sub.metrics["detect_seconds"]
    found = _AFTER.search(sub.reason)
    return float(found.group(1)) if found else None


def count(run: results.RunResult, tallies: dict[str, Tally], accels: set[str]) -> None:
    for v in run.variants:
        tally = tallies[v.name]
        if v.boot is not None:
            accels.add(v.boot.accel)
        test = next((t for t in v.tests if t.name == TEST), None)
        if test is None:
            tally.other.append(f"not run ({v.status.value})")
            continue
        sub = next((s for s in test.subtests if s.name == KEY), None)
        tally.boots += 1
        seconds = detection_seconds(sub) if sub is not None else None
        if sub is not None and sub.verdict is Verdict.FAIL and seconds is not None:
            tally.detections.append(seconds)
            tally.readers += "BPF_F_LOCK read" in sub.reason
        elif sub is not None and sub.verdict is Verdict.PASS:
            continue
        else:
            what = sub.verdict.value if sub is not None else test.verdict.value
            tally.other.append(f"{what}: {(sub or test).reason[:80]}")


def report(tallies: dict[str, Tally], duration: float) -> list[str]:
    lines = [
        f"{'variant':<20} {'expected':<9} {'detected':>9}  {'by reader':>9}  time to detection (s)",
        f"{'':<20} {'':<9} {'/ boots':>9}  {'/ writer':>9}  min / median / max",
    ]
    for name, t in tallies.items():
        if not t.boots and not t.other:
            continue
        times = sorted(t.detections)
        spread = (
            f"{times[0]:.2f} / {statistics.median(times):.2f} / {times[-1]:.2f}" if times else "-"
        )
        expected = "detect" if t.expected == "fail" else "pass"
        by = f"{t.readers} / {len(times) - t.readers}" if times else "-"
        lines.append(f"{name:<20} {expected:<9} {len(times):>4} / {t.boots:<3} {by:>9}  {spread}")
        lines += [f"    {o}" for o in t.other]
    lines.append("goals:")
    for name, t in tallies.items():
        if not t.boots:
            continue
        hits = len(t.detections)
        if t.expected == "fail":
            needed = 10
            ok = hits >= 0.9 * t.boots and all(x <= duration for x in t.detections)
            goal = f"detect in >= 9 of 10 boots within {duration:g} s"
        else:
            needed = 20
            ok = hits == 0 and not t.other
            goal = f"no false alarm in 20 boots x {duration:g} s"
        verdict = "met" if ok else "NOT MET"
        if ok and t.boots < needed:
            verdict = f"so far ({t.boots} of the {needed} boots it needs)"
        lines.append(f"  {name}: {goal}: {verdict} ({hits}/{t.boots} detected)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--matrix", type=Path, default=REPO / "matrix.yaml")
    parser.add_argument("--runs", type=int, default=20, help="orchestrate runs (default 20)")
    parser.add_argument("--only", action="append", default=[], help="only this variant")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per boot")
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--jobs", type=int, default=2, help="make jobs (default 2)")
    parser.add_argument("--keep", type=Path, default=None, help="keep the runs here")
    parser.add_argument(
        "--arg", action="append", default=[], help="KEY=VALUE: one more option for the program"
    )
    args = parser.parse_args()
    extra = dict(a.split("=", 1) for a in args.arg if "=" in a)
    if len(extra) != len(args.arg):
        sys.exit("--arg takes KEY=VALUE")
    source = load(args.matrix)
    names = [v.name for v in source.variants]
    unknown = sorted(set(args.only) - set(names))
    if unknown:
        sys.exit(f"unknown variant(s) {', '.join(unknown)}; the matrix has {', '.join(names)}")
    tallies = {
        v.name: Tally(dict(v.expect).get(KEY, ""))
        for v in source.variants
        if not args.only or v.name in args.only
    }
    accels: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="htab-reuse-detect-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        matrix = detect_matrix(work, source, args.duration, extra)
        start = time.monotonic()
        for i in range(1, args.runs + 1):
            out = work / f"run{i:02d}"
            argv = [sys.executable, "-m", "orchestrator.cli", str(matrix), "--out", str(out)]
            argv += ["-j", str(args.jobs)]
            argv += ["--cache-dir", str(args.cache_dir)] if args.cache_dir else []
            argv += [a for name in args.only for a in ("--only", name)]
            outcome = proc.run(argv, timeout=3600)
            if outcome.returncode not in (0, 1):  # 1: some outcome was not the expected one
                sys.exit(f"run {i}: orchestrate exited {outcome.returncode}:\n"
                         f"{outcome.stdout[-3000:]}{outcome.stderr[-3000:]}")  # fmt: skip
            count(results.read(out / "results.json"), tallies, accels)
            print(f"run {i}/{args.runs} done at {time.monotonic() - start:.0f} s", flush=True)
        wall = time.monotonic() - start
    print(
        f"{KEY}: {args.runs} runs of {args.matrix.name}'s variants "
        f"({', '.join(tallies)}), {source.guest.cpus} vCPUs ({'/'.join(sorted(accels))}), "
        f"duration {args.duration:g} s, wall time {wall / 60:.1f} min"
        + "".join(f", --{k}={v}" for k, v in extra.items())
    )
    print("gfp-zero boots upstream's kernel (the same tree, built once).")
    print("\n".join(report(tallies, args.duration)))


if __name__ == "__main__":
    main()
