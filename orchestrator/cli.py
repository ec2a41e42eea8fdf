"""Command line: the entry point, the parser, dispatch and exit codes; each
command's options and work are in `orchestrator.commands`.

Exit codes: 0 all good, 1 some variant or test failed, 2 bad input,
3 infrastructure fault, 130 interrupted.
"""

from __future__ import annotations

import argparse
import difflib
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from orchestrator.commands import Command, again, history, mail, merge, report, run
from orchestrator.commands.common import shown
from orchestrator.errors import Interrupted, OrchestrateError

# In the order `orchestrate --help` lists their commands.
MODULES: tuple[Command, ...] = (run, report, history, again, mail, merge)
DISPATCH: dict[str, Callable[[argparse.Namespace], int]] = {
    name: module.run for module in MODULES for name in module.NAMES
}
COMMANDS = tuple(DISPATCH)  # run, plan, report, history, reproduce, bisect, reply, export, merge


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orchestrate",
        description="Test Linux kernel patch series in virtual machines.",
        epilog="`orchestrate MATRIX` is short for `orchestrate run MATRIX`; "
        "--debug anywhere shows a traceback for an unexpected error (exit 3 otherwise).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for module in MODULES:
        module.add_parsers(sub)
    return parser


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
            shown(f"orchestrate: error: {type(exc).__name__}{where}: {exc}", one_line=True)
            + " (a fault of orchestrate or this machine; --debug shows the traceback)",
            file=sys.stderr,
        )
        return 3


def _command(ns: argparse.Namespace) -> int:
    """The command's exit code; its own errors (bad input, a broken environment,
    a signal) are reported here, anything else is main's unexpected fault."""
    try:
        return DISPATCH[ns.command](ns)
    except OrchestrateError as exc:
        print(shown(f"orchestrate: error: {exc}"), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("orchestrate: interrupted; child processes were stopped", file=sys.stderr)
        return 130


def _misspelt_command(word: str) -> str | None:
    """What to say when `word`, read as a matrix path, looks like a mistyped command:
    `orchestrate histroy` should not be read as a matrix file named histroy."""
    if Path(word).exists() or os.sep in word or word.endswith((".yaml", ".yml")):
        return None
    close = difflib.get_close_matches(word, COMMANDS, n=1, cutoff=0.6)
    if close:
        return shown(f"orchestrate: unknown command {word!r}; did you mean {close[0]!r}?")
    return shown(
        f"orchestrate: {word!r} is neither a command ({', '.join(COMMANDS)}) nor a matrix file"
    )


def _terminate(signum: int, frame: FrameType | None) -> None:
    # Unwind like Ctrl-C, so every running child's process tree is killed.
    raise Interrupted(signal.Signals(signum).name)


if __name__ == "__main__":
    sys.exit(main())
