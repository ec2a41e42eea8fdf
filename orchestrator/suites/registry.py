"""What a kind of test is, and the registry that maps `kind:` names to them.

A :class:`Suite` says everything the rest of the tool needs to know about one
kind of test: how its matrix entry is checked (config.py asks it, and turns
its rules into ``file:line: key`` errors), whether it is a perf kind, the
shell command that runs a test in the guest, how that command's output
becomes results, and what must be installed in the guest first.  The
defaults describe the simplest kind: a program already in the guest that
prints KTAP, run as ``command --key=value ...``, with nothing to install.

Adding a kind is one module with a Suite subclass plus one ``register()``
line in ``suites/__init__.py``; `Test.kind` stays a plain word, and the
registry is the set of words the matrix accepts (in registration order).
"""

from __future__ import annotations

import enum
import shlex
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from orchestrator.matrix import Test
from orchestrator.results import TestResult
from orchestrator.sandbox import Sandbox
from orchestrator.suites import ktap

# --- how a kind's matrix entry is checked ----------------------------------------------------


class Need(enum.Enum):
    """Whether a kind's test entries must, may or must not have a key."""

    REQUIRED = "required"  # present and, for a command, not empty
    OPTIONAL = "optional"
    FORBIDDEN = "forbidden"


@dataclass(frozen=True)
class Rule:
    """A kind's rule for one key of its test entries (`command`, `args`)."""

    need: Need = Need.OPTIONAL
    why: str = ""  # said with the error: "e.g. {filter: htab}", "it runs ..."

    def missing(self, kind: str) -> str:
        """The error when a REQUIRED key is absent."""
        return f"is required for a {kind} test" + (f", {self.why}" if self.why else "")

    def empty(self, kind: str) -> str:
        """The error when a REQUIRED key is present but empty."""
        return f"must not be empty for a {kind} test"

    def forbidden(self, kind: str) -> str:
        """The error when a FORBIDDEN key is present."""
        return f"not allowed for a {kind} test" + (f": {self.why}" if self.why else "")


@dataclass(frozen=True)
class Arg:
    """One key of a kind's `args:` mapping, for kinds that read their args themselves.

    config.py reads the value as text (an unquoted number as written), or
    as one of `choices`, then asks `check`; its answer, when not None, is
    the error reported at the value.
    """

    name: str
    what: str = "a string"  # what the value is, in errors: "test names"
    required: bool = False
    choices: tuple[str, ...] = ()  # when set, the value must be one of these
    default: str = ""  # when the key is absent
    check: Callable[[str], str | None] | None = None  # why a value is wrong, or None


# --- what a kind installs in the guest --------------------------------------------------------


@dataclass(frozen=True)
class Kernel:
    """A variant's built kernel, as what is built against it needs it."""

    src: Path  # a checkout of the variant's tree
    out: Path  # the kernel's make O= directory (KDIR for modules)
    vmlinux: Path  # the variant's own vmlinux (its BTF makes vmlinux.h)
    key: str  # names the build in the cache: the artifact dir's name (tree + config)


@dataclass(frozen=True)
class Installed:
    """What an installer put in a variant's guest, and what of it did not build."""

    files: tuple[tuple[str, Path], ...] = ()  # (guest path, host path)
    errors: tuple[tuple[str, str], ...] = ()  # (unit, reason)

    def error(self, unit: str) -> str | None:
        return dict(self.errors).get(unit)


class Installer(Protocol):
    """Builds what some kinds' tests run, for each variant's kernel, as guest files.

    What it builds comes in units (kselftest: a collection such as
    bpf/test_progs); a unit that does not build makes the tests that need
    it ERROR with the reason, and the variant's other tests still run.
    """

    name: str  # names its log: logs/<variant>/<name>.log

    def wanted(self, tests: Iterable[Test]) -> tuple[str, ...]:
        """The units the tests need, in order of first use (() for none)."""
        ...

    def needs(self, test: Test) -> str | None:
        """The unit one test needs, or None."""
        ...

    def ready(self, cache: Path, kernel: Kernel, unit: str) -> bool:
        """Whether unit is already built for kernel (installing needs no checkout)."""
        ...

    def install(
        self,
        kernel: Kernel,
        wanted: Iterable[str],
        cache: Path,
        log: Path,
        *,
        jobs: int,
        timeout: float,
        sandbox: Sandbox,
    ) -> Installed:
        """Every wanted unit built for kernel (or taken from the cache), as files or errors.

        What it runs from the tree (make, and ldd on what was built) runs in sandbox."""
        ...


# --- the protocol -----------------------------------------------------------------------------


class Suite(Protocol):
    """One kind of test.  Subclass it and override what differs from the defaults."""

    kind: str  # the `kind:` word of the matrix

    # Sampled once per boot, variants interleaved round by round, instead of
    # run `repeats` times in a row (see DESIGN.md, "Perf methodology").
    perf: bool = False

    # The matrix entry.  `args` is always read as scalars into Test.args; a
    # kind with an args_schema also gets them checked against it and read
    # by options() into Test.options.
    command_rule: Rule = Rule()
    args_rule: Rule = Rule()
    args_schema: tuple[Arg, ...] | None = None

    # What the guest needs first.  uses_guest_programs: the matrix's
    # guest.selftests programs, built once per run (vm/programs.py); an
    # installer: something built for each variant's kernel (kselftest).
    uses_guest_programs: bool = False
    installer: Installer | None = None

    def options(self, args: Mapping[str, str]) -> Hashable | None:
        """The kind's own reading of a test's checked args (Test.options); None by default.

        With an args_schema, args holds every key of it (absent ones with
        their default); without one, the args as written.
        """
        return None

    def command(self, test: Test) -> str:
        """The guest shell command; by default the command plus its args as --key=value."""
        args = [f"--{key}={value}" for key, value in test.args]
        return " ".join([test.command, *map(shlex.quote, args)])

    def parse(self, stdout: str, name: str) -> TestResult:
        """The test's results from its standard output; by default KTAP."""
        return ktap.parse(stdout, name)


# --- the registry -----------------------------------------------------------------------------

_SUITES: dict[str, Suite] = {}


def register(suite: Suite) -> Suite:
    """Add a kind; its word must be new."""
    if suite.kind in _SUITES:
        raise ValueError(f"test kind {suite.kind!r} is already registered")
    _SUITES[suite.kind] = suite
    return suite


def unregister(kind: str) -> None:
    """Remove a kind (a plug-in unloaded, or a test's toy kind)."""
    _SUITES.pop(kind, None)


def kinds() -> tuple[str, ...]:
    """Every registered kind, in registration order."""
    return tuple(_SUITES)


def get(kind: str) -> Suite:
    try:
        return _SUITES[kind]
    except KeyError:
        raise KeyError(f"no test kind {kind!r}; kinds: {', '.join(_SUITES)}") from None


def suite_for(test: Test) -> Suite:
    return get(test.kind)


def installers(tests: Iterable[Test]) -> tuple[Installer, ...]:
    """The per-kernel installers the tests need, in order of first use."""
    found = (suite_for(t).installer for t in tests)
    return tuple({id(i): i for i in found if i is not None}.values())


def not_installed(test: Test, installed: Installed, programs_error: str | None) -> str | None:
    """Why test cannot run in a guest (what it needs did not build), or None when it can.

    installed: what the test's installer put in this variant's guest;
    programs_error: why the run's guest programs did not build, if they did not.
    """
    suite = suite_for(test)
    unit = suite.installer.needs(test) if suite.installer is not None else None
    error = installed.error(unit) if unit is not None else None
    if error is not None:
        return error
    if suite.uses_guest_programs and programs_error:
        return f"guest programs did not build: {programs_error}"
    return None
