"""The typed matrix: what the user asked for, already validated.

config.py turns YAML into these records; nothing else reads the YAML.  All
paths here are absolute and have been checked to exist.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from orchestrator.sequential import Control, Design


class TreeKind(enum.Enum):
    DEBIAN = "debian"  # Debian's linux-source tarball, imported into git once
    GIT = "git"  # a git URL + ref, through one bare cache
    PATH = "path"  # a local git checkout, used read-only


@dataclass(frozen=True)
class Tree:
    kind: TreeKind
    location: str  # tarball path, URL, or local path
    ref: str = ""  # for git URLs and local paths; "" means HEAD


@dataclass(frozen=True)
class Revert:
    commit: str = ""  # a commit in the tree's history
    patch: Path | None = None  # or a patch file to apply in reverse


@dataclass(frozen=True)
class MailSource:
    """A series from the list, taken through b4 at apply time (kernel/mail.py)."""

    message_id: str = ""  # any message of the thread, no <>; "" with an mbox: its first thread
    mbox: Path | None = None  # offline: an mbox file or maildir; None: b4 fetches from lore


@dataclass(frozen=True)
class Variant:
    name: str
    series: tuple[Path, ...] = ()  # patch files, directories, mboxes, in order
    reverts: tuple[Revert, ...] = ()
    fragments: tuple[Path, ...] = ()  # extra kconfig fragments for this variant
    # test name (or test.subtest) -> expected status, e.g. {"htab_reuse.lock": "fail"}
    expect: tuple[tuple[str, str], ...] = ()
    # Find the first bad patch of a test this variant fails and the baseline passes.
    bisect: bool = False
    mail: MailSource | None = None  # series: {b4: ...}, {mbox: ...} or a lore URL; then no files


class OnMismatch(enum.StrEnum):
    """What a requested kconfig symbol that did not stick does to the KCONFIG stage."""

    ERROR = "error"  # fails it (and the variant's later stages are skipped)
    WARN = "warn"  # is reported, the stage passes


@dataclass(frozen=True)
class Kconfig:
    base: str = "tinyconfig"  # a make target: tinyconfig, defconfig, ...
    arch: str = "x86_64"
    fragments: tuple[Path, ...] = ()
    on_mismatch: OnMismatch = OnMismatch.ERROR


class AccelChoice(enum.StrEnum):
    """The accelerator the matrix asks for; AUTO probes KVM and falls back to TCG."""

    AUTO = "auto"
    KVM = "kvm"
    TCG = "tcg"


@dataclass(frozen=True)
class Guest:
    cpus: int = 2
    memory_mb: int = 1024
    accel: AccelChoice = AccelChoice.AUTO
    boot_timeout: float = 120.0
    cmdline: str = ""
    # A directory whose Makefile builds the guest programs into $(OUT);
    # they are installed under /opt/selftests in the guest.
    selftests: Path | None = None


@dataclass(frozen=True)
class Test:
    __test__ = False  # not a pytest test class

    name: str
    kind: str  # a registered kind (suites/): ktap, map_perf, kselftest, ...
    command: str = ""
    timeout: float = 300.0
    repeats: int = 1
    # Reruns, in the same guest, of a run that missed its expectation: one that
    # then meets it is FLAKY (flakes.py).  Functional tests only.
    retries: int = 0
    args: tuple[tuple[str, str], ...] = ()  # as written, values as text, sorted by key
    # The kind's own reading of args (a frozen record, e.g. suites.kselftest.Options), for
    # kinds that read them; None for the others.
    options: Hashable | None = None
    # What each subtest shows, in a short sentence for the reports: (subtest name as
    # the test reports it, without the test's name; text), in the matrix's order.
    about: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Report:
    dir: Path
    formats: tuple[str, ...] = ("json", "junit", "html", "text")
    baseline: str = ""  # variant name; "" means the first
    # Pairs of variants the reports answer "is A measurably different from B?"
    # for, one sentence per pair (perf.answers).
    questions: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Perf:
    """How perf tests are measured beyond their repeats."""

    # Measure the baseline's kernel a second time, as the variant <baseline>~aa,
    # to see the batch's noise floor; a batch it shows too noisy is rerun.
    aa_control: bool = False
    max_reruns: int = 1
    # Rounds go on only while a comparison is open (sequential.py); a test's
    # `repeats` is then its most boots.  False: every test gets its repeats.
    sequential: bool = True
    equivalence: float = 0.05  # "same" means within +-this (a two-one-sided test)
    error_rate: float = 0.05  # held across the run's comparisons, as `control` says
    control: Control = Control.FWER
    budget: float | None = None  # seconds of perf rounds at most

    @property
    def design(self) -> Design:
        return Design(q=self.error_rate, control=self.control, equivalence=self.equivalence)


@dataclass(frozen=True)
class Quarantine:
    """A known-bad test that does not fail the run until `expires` has passed (flakes.py)."""

    test: str  # a declared test, or test.subtest
    reason: str
    expires: date  # the last day the quarantine holds


@dataclass(frozen=True)
class Bisect:
    """`bisect:` in the matrix: after the run, find each failing variant's first bad patch."""

    enabled: bool = False  # for every variant (a variant's own `bisect: true` is for it alone)
    runs: int = 5  # runs of the test at each step; a step with any failure is bad


@dataclass(frozen=True)
class Matrix:
    path: Path  # the matrix file, absolute
    name: str
    tree: Tree
    kconfig: Kconfig
    variants: tuple[Variant, ...]
    report: Report
    guest: Guest = field(default_factory=Guest)
    tests: tuple[Test, ...] = ()
    build_timeout: float = 3600.0
    perf: Perf = field(default_factory=Perf)
    quarantine: tuple[Quarantine, ...] = ()
    bisect: Bisect = field(default_factory=Bisect)

    def variant(self, name: str) -> Variant:
        return next(v for v in self.variants if v.name == name)
