"""`orchestrate merge DIR...`: the results of a run's CI shards as one run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from orchestrator import history, merge, results
from orchestrator.commands import Subparsers
from orchestrator.commands.common import bad_results, print_summaries, record, shown
from orchestrator.report import FILES, write_reports

NAMES: tuple[str, ...] = ("merge",)


def add_parsers(sub: Subparsers) -> None:
    text = "combine the results of a run's CI shards into one results.json and its reports"
    cmd = sub.add_parser(
        "merge",
        help=text,
        description=text + " (JUnit, HTML, text) and record it in the history; the same "
        "shards in any order, or one given twice, give the same result; a missing shard is "
        "named in the results and the exit code is 1",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n"
        "  orchestrate run matrix.yaml --shard 1/2 --out shard-1   (on one runner)\n"
        "  orchestrate run matrix.yaml --shard 2/2 --out shard-2   (on another)\n"
        "  orchestrate merge shard-1 shard-2 --out reports/bpf/merged "
        "--history reports/history.sqlite",
    )
    cmd.add_argument("dirs", type=Path, nargs="+", metavar="DIR", help="a shard's run directory")
    cmd.add_argument(
        "--out", type=Path, default=Path("merged"), help="where to write (default: ./merged)"
    )
    cmd.add_argument(
        "--history",
        type=Path,
        default=None,
        metavar="DB",
        help=f"the history database to record the run in (default: {history.FILENAME} two "
        "levels above --out, where `run` keeps it: REPORT_DIR/MATRIX/RUN)",
    )


def run(ns: argparse.Namespace) -> int:
    """The shards' results as one run, its reports and history."""
    parts = [merge.read_part(d) for d in ns.dirs]
    whole, name = merge.merge(parts), parts[0].record.matrix
    out = ns.out.resolve()
    try:
        results.write(whole, out / "results.json")
    except OSError as exc:
        return bad_results(out, f"cannot write the results: {exc.strerror or exc}")
    print(f"results: {out / 'results.json'}")
    past = None
    if whole.incomplete:
        print(shown(f"orchestrate: incomplete: {whole.incomplete}"), file=sys.stderr)
        print("not recorded in the history: the run is incomplete", file=sys.stderr)
    else:
        past = record(ns.history or out.parent.parent / history.FILENAME, whole, name)
    logs = [p.dir / "logs" for p in parts]
    try:
        written = write_reports(whole, out, FILES, past, run_dir=out, also_logs_from=logs)
    except OSError as exc:
        return bad_results(out, f"cannot write the reports: {exc}")
    for path in written:
        print(f"report: {path}")
    print_summaries(whole)
    return merge.exit_code(whole)
