"""The subcommands, one module per command or per pair that shares options.

Each module is a `Command`: its command names, the parsers for them, and the
work.  `orchestrator.cli` builds the parser and dispatches by name; a new
command is a module here and one entry in `cli.MODULES`.
"""

from __future__ import annotations

import argparse
from typing import Protocol, TypeAlias

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


class Command(Protocol):
    """What `cli` needs of a command module."""

    NAMES: tuple[str, ...]  # in the order `orchestrate --help` lists them

    def add_parsers(self, sub: Subparsers) -> None:
        """Add a parser for each of NAMES, with its help, description and example epilog."""

    def run(self, ns: argparse.Namespace) -> int:
        """Do the command `ns.command`; the exit code.  An OrchestrateError or a
        KeyboardInterrupt that escapes is mapped to its exit code by `cli`."""
