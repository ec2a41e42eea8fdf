"""Command line: argument parsing and exit codes only; the work is elsewhere.

Exit codes: 0 all good, 1 some variant or test failed, 2 bad input,
3 infrastructure fault, 130 interrupted.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import shutil
import signal
import sqlite3
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from orchestrator import (
    bisect,
    config,
    history,
    journal,
    merge,
    preview,
    reply,
    reproduce,
    results,
    shards,
)
from orchestrator.assemble import stages_to
from orchestrator.cache import Cache, default_root
from orchestrator.errors import InfraError, Interrupted, OrchestrateError, UserError
from orchestrator.export import kcidb, patchwork
from orchestrator.journal import Journal
from orchestrator.kernel import series, source
from orchestrator.matrix import Matrix
from orchestrator.perf import History
from orchestrator.plan import selected
from orchestrator.progress import PlainProgress, progress_for
from orchestrator.report import FILES, write_reports
from orchestrator.results import RunResult, Stage
from orchestrator.runner import Options, Runner, collect_series
from orchestrator.textfmt import for_terminal

COMMANDS = ("run", "plan", "report", "history", "reproduce", "bisect", "reply", "export", "merge")
SUMMARY = 300  # characters of a variant's reasons on its summary line
ERROR_TEXT = 4000  # characters of an error message (git's stderr is cut at 2000)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orchestrate",
        description="Test Linux kernel patch series in virtual machines.",
        epilog="`orchestrate MATRIX` is short for `orchestrate run MATRIX`; "
        "--debug anywhere shows a traceback for an unexpected error (exit 3 otherwise).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    examples = {
        "run": "examples:\n  orchestrate run matrix.yaml --only pre-fix -j 4\n"
        "  orchestrate run --resume reports/bpf-reuse/20261206-101500\n"
        "  orchestrate run matrix.yaml --shard 2/4 --out shard-2   (one CI shard)",
        "plan": "examples:\n  orchestrate plan matrix.yaml --only gfp-zero\n"
        "  orchestrate plan matrix.yaml --shards 4 --format github   (a CI matrix)",
    }
    for name, text in (
        ("run", "apply, build and test every variant"),
        ("plan", "print what a run would do; touches nothing"),
    ):
        cmd = sub.add_parser(
            name,
            help=text,
            description=text,
            epilog=examples[name],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if name == "run":
            cmd.add_argument(
                "matrix", type=Path, nargs="?", help="the matrix YAML file (not with --resume)"
            )
            cmd.add_argument(
                "--resume",
                type=Path,
                default=None,
                metavar="RUN_DIR",
                help="continue a stopped run in its directory: only what it had not done runs",
            )
        else:
            cmd.add_argument("matrix", type=Path, help="the matrix YAML file")
        cmd.add_argument(
            "--cache-dir",
            type=Path,
            default=None,
            help=f"trees, builds and artifacts (default: {default_root()})",
        )
        cmd.add_argument(
            "--only",
            action="append",
            default=[],
            metavar="VARIANT",
            help="run only this variant (repeatable)",
        )
        if name == "plan":
            cmd.add_argument(
                "--shards",
                type=int,
                default=None,
                metavar="N",
                help="print the variants of at most N CI shards instead (variants sharing a "
                "build directory or a perf comparison stay together)",
            )
            cmd.add_argument(
                "--format",
                choices=shards.FORMATS,
                default="json",
                help="with --shards: a JSON list, a GitHub Actions matrix (fromJSON) or "
                "GitLab parallel:matrix (default: json)",
            )
        if name == "run":
            cmd.add_argument(
                "--shard",
                default=None,
                metavar="I/N",
                help="run shard I of N (as `plan --shards N` lists them); "
                "`orchestrate merge` combines the shards' run directories",
            )
            cmd.add_argument(
                "-j",
                "--jobs",
                type=int,
                default=os.cpu_count() or 1,
                help="make jobs (default: number of CPUs)",
            )
            cmd.add_argument(
                "--until",
                choices=("build", "test"),
                default="test",
                help="stop after this stage (build: apply, configure and build only)",
            )
            cmd.add_argument(
                "--no-sandbox",
                action="store_true",
                help="run the tree's make, kconfig and selftest builds unconfined (not advised "
                "for series from strangers; default: in a bubblewrap sandbox)",
            )
            cmd.add_argument(
                "--out",
                type=Path,
                default=None,
                help="run output directory (default: under the matrix's report dir)",
            )
    text = "render JUnit, HTML and text reports again from a results file; runs nothing"
    cmd = sub.add_parser(
        "report",
        help=text,
        description=text,
        epilog="example: orchestrate report reports/bpf-reuse/20261206-101500/results.json "
        "--out /tmp/again",
    )
    cmd.add_argument("results", type=Path, help="a results.json written by `orchestrate run`")
    cmd.add_argument(
        "--out", type=Path, default=None, help="where to write (default: next to the results)"
    )
    _history_parser(sub)
    _reproduce_parser(sub)
    _bisect_parser(sub)
    _reply_parser(sub)
    _export_parser(sub)
    _merge_parser(sub)
    return parser


def _merge_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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


def _history_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    text = "print the verdicts and metric medians of the last runs of a matrix"
    cmd = sub.add_parser(
        "history",
        help=text,
        description=text,
        epilog="example: orchestrate history --matrix matrix.yaml -n 20",
    )
    where = cmd.add_mutually_exclusive_group()
    where.add_argument(
        "--db", type=Path, default=None, help=f"a {history.FILENAME} (every matrix in it)"
    )
    where.add_argument(
        "--matrix",
        type=Path,
        default=None,
        help=f"the matrix whose report dir holds {history.FILENAME} (default: matrix.yaml)",
    )
    cmd.add_argument("-n", "--last", type=int, default=10, help="how many runs (default: 10)")


def _reproduce_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    text = "boot a variant's kernel from a run again and run its test, or open a shell in it"
    cmd = sub.add_parser(
        "reproduce",
        help=text,
        description=text + " (the kernel from the cache, rebuilt if it is gone)",
        epilog="example: orchestrate reproduce reports/bpf/20261206-101500/results.json "
        "pre-fix htab_reuse   (add --shell for a root shell in that guest)",
    )
    cmd.add_argument("results", type=Path, help="a results.json written by `orchestrate run`")
    cmd.add_argument("variant", help="the variant whose kernel boots")
    cmd.add_argument("test", nargs="?", default=None, help="the test to run (default: all)")
    cmd.add_argument(
        "--shell", action="store_true", help="log in to the guest instead (needs a terminal)"
    )
    _rerun_options(cmd)


def _bisect_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    text = "find the first patch of a variant's series that makes a test fail"
    cmd = sub.add_parser(
        "bisect",
        help=text,
        description=text + ": builds prefixes of the series incrementally, runs the test "
        "--runs times at each step; records the answer in the results and re-renders reports",
        epilog="example: orchestrate bisect reports/bpf/20261206-101500/results.json "
        "ctor htab_reuse --runs 10",
    )
    cmd.add_argument("results", type=Path, help="a results.json written by `orchestrate run`")
    cmd.add_argument("variant", help="the variant whose series is bisected")
    cmd.add_argument("test", help="the test it fails")
    cmd.add_argument(
        "--runs",
        type=int,
        default=None,
        help="runs of the test per step; any failure makes a step bad "
        "(default: the matrix's bisect: runs, else 5)",
    )
    _rerun_options(cmd)


def _rerun_options(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help=f"trees, builds and artifacts (default: the run's, else {default_root()})",
    )
    cmd.add_argument(
        "-j", "--jobs", type=int, default=os.cpu_count() or 1, help="make jobs (default: CPUs)"
    )
    cmd.add_argument(
        "--no-sandbox", action="store_true", help="run the tree's make unconfined (not advised)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    if args and args[0] not in COMMANDS and not args[0].startswith("-"):
        guess = _misspelt_command(args[0])
        if guess is not None:
            print(guess, file=sys.stderr)
            return 2
        args.insert(0, "run")
    ns = _parser().parse_args(args)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _terminate)
    try:
        code = _command(ns)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
        return code
    except BrokenPipeError:
        # `orchestrate plan X | head`: the reader has gone; say nothing more.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except Exception as exc:
        if debug:
            raise
        # A fault of the tool or the machine (disk full, a bug): one line, exit 3.
        where = f" ({exc.filename})" if isinstance(exc, OSError) and exc.filename else ""
        print(
            _shown(f"orchestrate: error: {type(exc).__name__}{where}: {exc}", one_line=True)
            + " (a fault of orchestrate or this machine; --debug shows the traceback)",
            file=sys.stderr,
        )
        return 3


def _misspelt_command(word: str) -> str | None:
    """What to say when `word`, read as a matrix path, looks like a mistyped command:
    `orchestrate histroy` should not be read as a matrix file named histroy."""
    if Path(word).exists() or os.sep in word or word.endswith((".yaml", ".yml")):
        return None
    close = difflib.get_close_matches(word, COMMANDS, n=1, cutoff=0.6)
    if close:
        return _shown(f"orchestrate: unknown command {word!r}; did you mean {close[0]!r}?")
    return _shown(
        f"orchestrate: {word!r} is neither a command ({', '.join(COMMANDS)}) nor a matrix file"
    )


def _command(ns: argparse.Namespace) -> int:
    if ns.command == "report":
        return _report(ns.results, ns.out)
    if ns.command == "history":
        return _history(ns.db, ns.matrix, ns.last)
    if ns.command in ("reproduce", "bisect"):
        return _again(ns)
    if ns.command in ("reply", "export"):
        return _mail_or_export(ns)
    if ns.command == "merge":
        return _merge(ns)
    try:
        resume = _resuming(ns) if ns.command == "run" else None
        if ns.matrix is None:
            print(
                "orchestrate: error: run needs a matrix file (or --resume RUN_DIR)", file=sys.stderr
            )
            return 2
        matrix = config.load(ns.matrix)
        unknown = sorted(set(ns.only) - {v.name for v in matrix.variants})
        if unknown:
            names = ", ".join(v.name for v in matrix.variants)
            print(
                _shown(f"orchestrate: --only: no such variant: {', '.join(unknown)} "
                       f"(the matrix has: {names})"),
                file=sys.stderr,
            )  # fmt: skip
            return 2
        cache = Cache((ns.cache_dir or default_root()).resolve())
        if _sharded(ns, matrix, cache):
            return 0
        patches = collect_series(matrix, tuple(ns.only))
        if ns.command == "plan":
            print(preview.render(preview.make_preview(matrix, cache, patches, tuple(ns.only))))
            return 0
        return _run(matrix, cache, patches, ns, resume)
    except OrchestrateError as exc:
        print(_shown(f"orchestrate: error: {exc}"), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("orchestrate: interrupted; child processes were stopped", file=sys.stderr)
        return 130


def _sharded(ns: argparse.Namespace, matrix: Matrix, cache: Cache) -> bool:
    """`plan --shards N` prints the shards (True: done); `run --shard I/N` narrows
    the run to the shard's variants and notes the shard for its run directory."""
    ns.shard_record = None
    wanted = getattr(ns, "shards", None) if ns.command == "plan" else getattr(ns, "shard", None)
    if wanted is None:
        return False
    if ns.command == "run" and ns.resume is not None:
        raise UserError("--resume continues a shard's run as it was: leave out --shard")
    if ns.only:
        raise UserError("--only and shards do not mix: a shard is its own set of variants")
    repo, work = source.cache_path(matrix.tree, cache.root), cache.work
    if ns.command == "plan":
        print(shards.render(shards.partition(matrix, ns.shards, repo, work), ns.format))
        return True
    ns.shard_record = shards.select(matrix, ns.shard, repo, work)
    ns.only = list(ns.shard_record.shards[ns.shard_record.index - 1])
    return False


def _merge(ns: argparse.Namespace) -> int:
    """`orchestrate merge DIR...`: the shards' results as one run, its reports and history."""
    try:
        parts = [merge.read_part(d) for d in ns.dirs]
        run, name = merge.merge(parts), parts[0].record.matrix
    except OrchestrateError as exc:
        print(_shown(f"orchestrate: error: {exc}"), file=sys.stderr)
        return exc.exit_code
    out = ns.out.resolve()
    try:
        results.write(run, out / "results.json")
    except OSError as exc:
        return _bad_results(out, f"cannot write the results: {exc.strerror or exc}")
    print(f"results: {out / 'results.json'}")
    past = None
    if run.incomplete:
        print(_shown(f"orchestrate: incomplete: {run.incomplete}"), file=sys.stderr)
        print("not recorded in the history: the run is incomplete", file=sys.stderr)
    else:
        past = _record(ns.history or out.parent.parent / history.FILENAME, run, name)
    logs = [p.dir / "logs" for p in parts]
    try:
        written = write_reports(run, out, FILES, past, run_dir=out, also_logs_from=logs)
    except OSError as exc:
        return _bad_results(out, f"cannot write the reports: {exc}")
    for path in written:
        print(f"report: {path}")
    for v in run.variants:
        print(f"  {v.name:24} {v.status.value.upper():7} {_summary(v)}")
    return merge.exit_code(run)


def _terminate(signum: int, frame: FrameType | None) -> None:
    # Unwind like Ctrl-C, so every running child's process tree is killed.
    raise Interrupted(signal.Signals(signum).name)


def _resuming(ns: argparse.Namespace) -> Journal | None:
    """With --resume: the stopped run's journal, and its matrix, cache and options as defaults."""
    if ns.resume is None:
        return None
    record = journal.read(ns.resume)
    if ns.only and tuple(ns.only) != record.only:
        raise UserError(
            f"--resume: the run was made with --only {' '.join(record.only) or '(all)'}"
        )
    ns.matrix = ns.matrix or Path(record.matrix)
    ns.cache_dir = ns.cache_dir or Path(record.cache)
    ns.only, ns.until, ns.out = list(record.only), record.until.value, ns.resume
    return record


def _run(
    matrix: Matrix,
    cache: Cache,
    patches: dict[str, tuple[series.Patch, ...]],
    ns: argparse.Namespace,
    resume: Journal | None = None,
) -> int:
    started = datetime.now(UTC)
    if source.cached_base(matrix.tree, cache.root) is None:
        print(
            f"preparing the kernel tree {matrix.tree.location} in {cache.root} (once)", flush=True
        )
    run_dir = (ns.out or _new_run_dir(matrix.report.dir / matrix.name, started)).resolve()
    shard = getattr(ns, "shard_record", None)
    if shard is not None:
        shards.write_record(shard, run_dir)
    options = Options(
        cache=cache,
        run_dir=run_dir,
        jobs=ns.jobs,
        only=tuple(ns.only),
        until=Stage(ns.until),
        # To the millisecond: two runs of a matrix started in the same second
        # are two runs (the history keys a run by matrix and start).
        started=started.isoformat(timespec="milliseconds"),
        sandbox=not ns.no_sandbox,
    )
    if ns.no_sandbox:
        print(
            "orchestrate: warning: --no-sandbox: code from the tree under test (its Makefiles, "
            "Kconfig, selftests) runs unconfined, as you, with your files and network",
            file=sys.stderr,
        )
    start = time.monotonic()
    names = [v.name for v in selected(matrix, options.only)]
    runner = None
    try:
        with progress_for(names, stages_to(options.until)) as progress:
            runner = Runner(matrix, options, progress)
            run = runner.run(patches, resume)
    except BaseException:
        # The runner wrote what was done, marked incomplete: make it readable.
        if runner is not None and runner.results_path.is_file():
            _partial_reports(runner.results_path, matrix)
        raise
    print(
        f"\n{len(run.variants)} variants in {time.monotonic() - start:.0f}s; "
        f"results: {run_dir / 'results.json'}"
    )
    run = _bisect_run(matrix, cache, run, run_dir, ns)
    # Recorded before rendering, so the reports can show this run's place in the trend.
    # A shard is a part of a run: `orchestrate merge` records the whole.
    sharded = shard is not None or (run_dir / shards.RECORD).is_file()  # or resumed
    past = None if sharded else _record(matrix.report.dir / history.FILENAME, run, matrix.name)
    for path in write_reports(run, run_dir, matrix.report.formats, past):
        print(f"report: {path}")
    for v in run.variants:
        print(f"  {v.name:24} {v.status.value.upper():7} {_summary(v)}")
    return 0 if run.ok else 1


def _bisect_run(
    matrix: Matrix, cache: Cache, run: RunResult, run_dir: Path, ns: argparse.Namespace
) -> RunResult:
    """`bisect: true`: the first bad patch of each test a variant fails and the baseline passes."""
    if not bisect.wanted(matrix, run):
        return run
    print("\nbisecting what the baseline passes and a variant fails:", flush=True)
    run = bisect.after_run(
        matrix,
        cache,
        run,
        run_dir,
        jobs=ns.jobs,
        confined=not ns.no_sandbox,
        progress=PlainProgress(),
    )
    results.write(run, run_dir / "results.json")
    for v in run.variants:
        for b in v.bisect:
            print(_shown(f"  {v.name} {b.test}: {b.summary}", one_line=True))
    return run


def _again(ns: argparse.Namespace) -> int:
    """`orchestrate reproduce` and `orchestrate bisect`: a finished run's variant again."""
    try:
        run = _read_run(ns.results)
        cache = Cache((ns.cache_dir or _cache_of(ns.results)).resolve())
        if ns.command == "reproduce":
            reproduce.variant_of(run, ns.variant, reproduce.matrix_of(run))  # before any mkdir
            work = _new_run_dir(ns.results.parent / "reproduce" / ns.variant, datetime.now(UTC))
            request = reproduce.Request(
                run, ns.variant, ns.test, ns.shell, cache, work, ns.jobs, not ns.no_sandbox
            )
            return reproduce.reproduce(request)
        return _bisect(ns, run, cache)
    except OrchestrateError as exc:
        print(_shown(f"orchestrate: error: {exc}"), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("orchestrate: interrupted; child processes were stopped", file=sys.stderr)
        return 130


def _bisect(ns: argparse.Namespace, run: RunResult, cache: Cache) -> int:
    matrix = reproduce.matrix_of(run)
    reproduce.variant_of(run, ns.variant, matrix)
    if ns.runs is not None and not 1 <= ns.runs <= config.MAX_BISECT_RUNS:
        raise UserError(f"--runs must be 1 to {config.MAX_BISECT_RUNS}, not {ns.runs}")
    job = bisect.Job(ns.variant, ns.test, ns.runs or matrix.bisect.runs)
    with cache.locked():
        found = bisect.bisect(
            matrix,
            cache,
            ns.results.parent / "bisect",
            job,
            jobs=ns.jobs,
            confined=not ns.no_sandbox,
            progress=PlainProgress(),
        )
    # Read again: the file may have changed while the steps ran (another bisect).
    run = bisect.record(_read_run(ns.results), ns.variant, (found,))
    results.write(run, ns.results)
    formats = matrix.report.formats
    for path in write_reports(run, ns.results.parent, formats, run_dir=ns.results.parent):
        print(f"report: {path}")
    print(_shown(f"{ns.variant} {ns.test}: {found.summary}"))
    return 0 if found.first_bad else 1


def _read_run(path: Path) -> RunResult:
    """A results file, or a UserError that says why it is not one."""
    try:
        return results.read(path)
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, not a results file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not JSON: {exc}") from None
    except OSError as exc:
        raise UserError(f"{path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise UserError(f"{path}: not a results file: {exc}") from None


def _cache_of(results_path: Path) -> Path:
    """The cache the run used (its journal says), else the default one."""
    try:
        return Path(journal.read(results_path.parent).cache)
    except (UserError, OSError, ValueError, KeyError, TypeError):
        return default_root()


def _reply_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    text = "write the run's verdict as a reply to the series' thread (.eml); sends only if told"
    cmd = sub.add_parser(
        "reply",
        help=text,
        description=text + ": In-Reply-To the cover letter (or first patch), the text summary "
        "inline, report.html attached, to the author with the thread's lists and people in Cc",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  orchestrate reply reports/bpf/20261206-101500/results.json   (writes reply.eml there)\n"
        "  orchestrate reply RESULTS.json --send smtp --smtp smtp.example.org:587 "
        "--smtp-user me\n"
        "  orchestrate reply RESULTS.json --send git   (git send-email, as you configured it)\n"
        f"the SMTP password comes from ${reply.PASSWORD_ENV}, else it is asked for",
    )
    cmd.add_argument("results", type=Path, help="a results.json written by `orchestrate run`")
    cmd.add_argument("--variant", default=None, help="whose series to answer (when several)")
    cmd.add_argument(
        "--out", type=Path, default=None, help="the .eml (default: reply.eml beside the results)"
    )
    cmd.add_argument(
        "--from",
        dest="sender",
        default=None,
        metavar="'NAME <ADDR>'",
        help="the sender (default: git's user.name and user.email)",
    )
    for flag, what in (
        ("--to", "an addressee besides the thread's (repeatable; the only one, outside any "
         "thread, when the results record no mail)"),
        ("--cc", "a copy besides the thread's (repeatable)"),
    ):  # fmt: skip
        cmd.add_argument(flag, action="append", default=[], metavar="ADDR", help=what)
    cmd.add_argument(
        "--attach",
        choices=[a.value for a in reply.Attach],
        default=reply.Attach.HTML.value,
        help="report.html as HTML, gzipped (for lists that refuse HTML parts) or not at all",
    )
    cmd.add_argument(
        "--send", choices=("smtp", "git"), default=None, help="send it (default: only write it)"
    )
    cmd.add_argument(
        "--smtp",
        default=os.environ.get("ORCHESTRATE_SMTP"),
        metavar="HOST:PORT",
        help="the server for --send smtp (default: $ORCHESTRATE_SMTP)",
    )
    cmd.add_argument(
        "--smtp-security",
        choices=("auto", *(s.value for s in reply.Security)),
        default="auto",
        help="auto: none on this machine, ssl on port 465, else starttls",
    )
    cmd.add_argument("--smtp-user", default=None, metavar="USER", help="log in as this user")


def _export_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    text = "write a run's results for another system: KCIDB v5 JSON or patchwork checks"
    cmd = sub.add_parser(
        "export",
        help=text,
        description=text + "; nothing is posted anywhere",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  orchestrate export --kcidb reports/bpf/20261206-101500/results.json --out kcidb.json\n"
        "  orchestrate export --patchwork RESULTS.json "
        "--report-url https://ci.example.org/bpf/report.html",
    )
    kind = cmd.add_mutually_exclusive_group(required=True)
    kind.add_argument("--kcidb", action="store_true", help="KCIDB v5 JSON, checked with kcidb-io")
    kind.add_argument(
        "--patchwork", action="store_true", help="check records for /api/patches/{id}/checks/"
    )
    cmd.add_argument("results", type=Path, help="a results.json written by `orchestrate run`")
    cmd.add_argument("--out", type=Path, default=None, help="the file (default: standard output)")
    cmd.add_argument(
        "--origin", default=None, help=f"KCIDB origin (default: {kcidb.DEFAULT_ORIGIN})"
    )
    cmd.add_argument(
        "--context",
        default=None,
        help=f"patchwork context prefix (default: {patchwork.DEFAULT_CONTEXT})",
    )
    cmd.add_argument("--report-url", default=None, help="where report.html is published")


def _mail_or_export(ns: argparse.Namespace) -> int:
    """`orchestrate reply` and `orchestrate export`: a finished run's results, elsewhere."""
    try:
        run = _read_run(ns.results)
        return _reply(ns, run) if ns.command == "reply" else _export(ns, run)
    except OrchestrateError as exc:
        print(_shown(f"orchestrate: error: {exc}"), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:  # at the password prompt, or while sending
        print("orchestrate: interrupted", file=sys.stderr)
        return 130


def _reply(ns: argparse.Namespace, run: RunResult) -> int:
    server = None
    if ns.send == "smtp":
        if not ns.smtp:
            raise UserError("--send smtp needs --smtp HOST:PORT (or $ORCHESTRATE_SMTP)")
        security = None if ns.smtp_security == "auto" else reply.Security(ns.smtp_security)
        server = reply.Smtp.parse(ns.smtp, security, ns.smtp_user)
    variant = reply.choose(run, ns.variant, ns.results)
    sender = ns.sender or reply.default_sender()
    if sender is None:
        raise UserError("no sender: give --from 'Name <you@example.org>' (or set git's user.email)")
    attach = reply.Attach(ns.attach)
    html = None if attach is reply.Attach.NONE else reply.report_html(ns.results, run)
    answer = reply.build(
        run, variant, sender=sender, html=html, to=ns.to, cc=ns.cc, attach=attach,
        where=ns.results,
    )  # fmt: skip
    out = ns.out or ns.results.parent / "reply.eml"
    try:
        reply.write(answer, out)
    except OSError as exc:
        raise UserError(f"{out}: cannot write the reply: {exc.strerror or exc}") from None
    print(f"reply: {out}")
    for key in ("To", "Cc", "Subject", "In-Reply-To"):
        if answer.message[key]:
            print(_shown(f"  {key}: {answer.message[key]}", one_line=True))
    if server is not None:
        refused = reply.send_smtp(answer, server)
        print(f"sent through {server.host}:{server.port}")
        if refused:
            print(_shown(f"orchestrate: warning: refused: {', '.join(refused)}"), file=sys.stderr)
    elif ns.send == "git":
        reply.send_git(answer, out)
        print("sent with git send-email")
    else:
        print("nothing sent (--send smtp or --send git sends it)")
    return 0


def _export(ns: argparse.Namespace, run: RunResult) -> int:
    if ns.kcidb:
        if ns.context or ns.report_url:
            raise UserError("--context and --report-url are for --patchwork")
        text = kcidb.dumps(kcidb.render(run, origin=ns.origin or kcidb.DEFAULT_ORIGIN))
    else:
        if ns.origin:
            raise UserError("--origin is for --kcidb")
        data = patchwork.render(
            run, context=ns.context or patchwork.DEFAULT_CONTEXT, target_url=ns.report_url
        )
        text = patchwork.dumps(data)
    if ns.out is None or str(ns.out) == "-":
        sys.stdout.write(text)
        return 0
    try:
        tmp = ns.out.with_name(ns.out.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(ns.out)
    except OSError as exc:
        raise UserError(f"{ns.out}: cannot write: {exc.strerror or exc}") from None
    print(f"{'kcidb' if ns.kcidb else 'patchwork'}: {ns.out}")
    return 0


def _new_run_dir(parent: Path, started: datetime) -> Path:
    """A directory of its own for this run, named by its start: made here, so two
    runs started in the same second get two (the second with a -2 suffix)."""
    stamp = started.strftime("%Y%m%d-%H%M%S")
    parent.mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        path = parent / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise InfraError(f"{parent}: no free run directory for {stamp}")


def _partial_reports(path: Path, matrix: Matrix) -> None:
    """Reports of an interrupted run, from its partial results (not in the history)."""
    try:
        run = results.read(path)
        write_reports(run, path.parent, matrix.report.formats)
    except (OSError, ValueError) as exc:
        print(_shown(f"orchestrate: warning: {path}: reports not written: {exc}"), file=sys.stderr)
        return
    print(f"partial results ({run.incomplete}): {path}", file=sys.stderr)


def _report(path: Path, out: Path | None) -> int:
    """Re-render every report format from a results file; nothing runs.

    The file may come from anywhere: results.read checks it before anything
    reads it, and the reports read logs only from inside its directory.
    """
    try:
        run = results.read(path)
    except FileNotFoundError:
        return _bad_results(path, "no such file")
    except IsADirectoryError:
        return _bad_results(path, "is a directory, not a results file")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return _bad_results(path, f"not JSON: {exc}")
    except OSError as exc:
        return _bad_results(path, exc.strerror or str(exc))
    except ValueError as exc:
        # The checker's ResultsError names the JSON path: variants[2].tests[0].verdict: ...
        return _bad_results(path, f"not a results file: {exc}")
    try:
        written = write_reports(
            run, out or path.parent, FILES, _past(path, run), run_dir=path.parent
        )
    except OSError as exc:
        return _bad_results(out or path.parent, f"cannot write the reports: {exc}")
    for report in written:
        print(f"report: {report}")
    return 0


def _record(db: Path, run: RunResult, matrix_name: str) -> History | None:
    """Add the run to the history and read back what the reports show of it.

    A broken or locked history costs the reports their trend, never the run.
    """
    try:
        history.record(db, run, matrix_name)
        return history.load_history(db, run, matrix_name)
    except (sqlite3.Error, OSError, history.HistoryError) as exc:
        print(_shown(f"orchestrate: warning: {db}: history not recorded: {exc}"), file=sys.stderr)
        return None


def _past(results_path: Path, run: RunResult) -> History | None:
    """The history next to the run directories: <report dir>/<matrix>/<run>/results.json."""
    parents = results_path.resolve().parents
    if len(parents) < 3:
        return None
    db = parents[2] / history.FILENAME
    try:
        return history.load_history(db, run)
    except (sqlite3.Error, OSError, history.HistoryError) as exc:
        print(_shown(f"orchestrate: warning: {db}: history not read: {exc}"), file=sys.stderr)
        return None


def _history(db: Path | None, matrix_path: Path | None, last: int) -> int:
    """Print the trend of one matrix (--matrix) or of every matrix in a database (--db)."""
    names: list[str] | None = None
    if db is None:
        try:
            matrix = config.load(matrix_path or Path("matrix.yaml"))
        except OrchestrateError as exc:
            print(_shown(f"orchestrate: error: {exc}"), file=sys.stderr)
            return exc.exit_code
        db, names = matrix.report.dir / history.FILENAME, [matrix.name]
    width = shutil.get_terminal_size((100, 24)).columns
    try:
        if not db.is_file():
            print(f"orchestrate: error: {db}: no history yet (no run recorded)", file=sys.stderr)
            return 2
        trends = [history.trend(db, name, last) for name in names or history.matrices(db)]
    except (sqlite3.Error, OSError, history.HistoryError) as exc:
        print(_shown(f"orchestrate: error: {db}: {exc}"), file=sys.stderr)
        return 2
    print("\n\n".join(history.format_trend(t, width) for t in trends) or f"{db}: no runs recorded")
    return 0


def _bad_results(path: Path, why: str) -> int:
    print(_shown(f"orchestrate: error: {path}: {why}", one_line=True), file=sys.stderr)
    return 2


def _summary(variant: results.VariantResult) -> str:
    """A variant's line in the run's last words: reasons hold patch subjects, compiler output."""
    bad = next((s for s in variant.stages if s.status.bad), None)
    if bad:
        text = f"{bad.stage.value}: {bad.reason}"
    else:
        text = "; ".join(f"{s.stage.value}: {s.reason}" for s in variant.stages[-3:] if s.reason)
    return for_terminal(text, one_line=True, limit=SUMMARY)


def _shown(message: str, *, one_line: bool = False) -> str:
    """An error or a warning as the terminal gets it: it may quote hostile text
    (a matrix value, a results file, git's stderr), so nothing in it acts and
    at most ERROR_TEXT characters of it are printed."""
    return for_terminal(message, one_line=one_line, limit=ERROR_TEXT)


if __name__ == "__main__":
    sys.exit(main())
