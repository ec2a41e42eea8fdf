"""The tool's own faults, in two roots.

Verdicts about the kernel (a patch that does not apply, a build that fails)
are results, not exceptions.  Exceptions are for problems that stop the tool:
bad input from the user (exit 2) or a broken environment (exit 3).
"""

from __future__ import annotations

from pathlib import Path


class OrchestrateError(Exception):
    exit_code = 1


class UserError(OrchestrateError):
    """Bad input: a malformed matrix, a missing file.  Nothing was started."""

    exit_code = 2


class InfraError(OrchestrateError):
    """The environment is broken: a tool is missing, the disk is full."""

    exit_code = 3


class MatrixError(UserError):
    """A matrix problem, located as file:line and the dotted key path."""

    def __init__(self, file: Path | str, line: int, key: str, message: str) -> None:
        self.file = Path(file)
        self.line = line
        self.key = key
        self.message = message
        # Line 0 is the file as a whole (too large, unreadable): no line, no key.
        where = f"{file}:{line}: {key}" if line else f"{file}"
        super().__init__(f"{where}: {message}")


class Interrupted(KeyboardInterrupt):
    """A signal asked the run to stop (SIGTERM, SIGHUP); Ctrl-C is a plain
    KeyboardInterrupt.  Either unwinds every unit, killing its children."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name
