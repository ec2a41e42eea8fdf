"""The typed matrix: what the user asked for, already validated.

config.py turns YAML into these records; nothing else reads the YAML.  All
paths here are absolute and have been checked to exist.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path


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
class Variant:
    name: str
    series: tuple[Path, ...] = ()  # patch files, directories, mboxes, in order
    reverts: tuple[Revert, ...] = ()
    fragments: tuple[Path, ...] = ()  # extra kconfig fragments for this variant
    # test name (or test.subtest) -> expected status, e.g. {"htab_reuse.lock": "fail"}
    expect: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Kconfig:
    base: str = "tinyconfig"  # a make target: tinyconfig, defconfig, ...
    arch: str = "x86_64"
    fragments: tuple[Path, ...] = ()
    on_mismatch: str = "error"  # or "warn": a requested symbol that did not stick


@dataclass(frozen=True)
class Guest:
    cpus: int = 2
    memory_mb: int = 1024
    accel: str = "auto"  # auto | kvm | tcg
    boot_timeout: float = 120.0
    cmdline: str = ""
    # A directory whose Makefile builds the guest programs into $(OUT);
    # they are installed under /opt/selftests in the guest.
    selftests: Path | None = None


@dataclass(frozen=True)
class Kselftest:
    """What a `kind: kselftest` test runs: a program of the kernel tree's own selftests."""

    filter: str  # test_progs -t: comma-separated test[/subtest] names, '*' globs
    collection: str = "bpf/test_progs"  # <dir under tools/testing/selftests>/<program>
    deny: str = ""  # test_progs -d: names to leave out, same syntax


@dataclass(frozen=True)
class Test:
    __test__ = False  # not a pytest test class

    name: str
    kind: str  # ktap | map_perf | kselftest
    command: str = ""
    timeout: float = 300.0
    repeats: int = 1
    args: tuple[tuple[str, str], ...] = ()
    kselftest: Kselftest | None = None  # set for (and only for) kind kselftest


@dataclass(frozen=True)
class Report:
    dir: Path
    formats: tuple[str, ...] = ("json", "junit", "html", "text")
    baseline: str = ""  # variant name; "" means the first


@dataclass(frozen=True)
class Perf:
    """How perf tests are measured beyond their repeats."""

    # Measure the baseline's kernel a second time, as the variant <baseline>~aa,
    # to see the batch's noise floor; a batch it shows too noisy is rerun.
    aa_control: bool = False
    max_reruns: int = 1


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

    def variant(self, name: str) -> Variant:
        return next(v for v in self.variants if v.name == name)
