"""What happened in a run: frozen records, written once as results JSON.

The JSON file is the single source of truth: every report is rendered from it
and `orchestrate report` re-renders without running anything.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from orchestrator import results_check
from orchestrator.errors import UserError

# 2: a test's repeat, perf round and warm-up are fields (were a name@N suffix);
# the run says when it is incomplete.  Older files are refused with a message.
SCHEMA_VERSION = 2


class Stage(enum.Enum):
    APPLY = "apply"
    KCONFIG = "kconfig"
    BUILD = "build"
    BOOT = "boot"
    TEST = "test"


class Status(enum.Enum):
    PASS = "pass"
    FAIL = "fail"
    SKIPPED = "skipped"
    ERROR = "error"  # the tool or the environment failed, not the kernel

    @property
    def bad(self) -> bool:
        return self in (Status.FAIL, Status.ERROR)


class Verdict(enum.Enum):
    """The outcome of one test (or subtest) in the guest."""

    PASS = "pass"
    FAIL = "fail"
    SKIP = "skip"
    TIMEOUT = "timeout"  # the test hung, the guest still answers
    KERNEL_HANG = "kernel-hang"  # the guest stopped answering
    CRASH = "crash"  # the kernel panicked or oopsed during the test
    ERROR = "error"  # the harness could not run the test
    # It missed its expectation, then met it on a retry (`retries: N`; flakes.py):
    # TestResult.failures of TestResult.attempts runs failed.
    FLAKY = "flaky"


class PatchOutcome(enum.Enum):
    APPLIED = "applied"
    ALREADY_APPLIED = "already-applied"
    CONFLICT = "conflict"
    NOT_ATTEMPTED = "not-attempted"


@dataclass(frozen=True)
class PatchResult:
    source: str  # the file (and message number for mboxes) it came from
    subject: str
    outcome: PatchOutcome
    revert: bool = False
    commit: str | None = None
    files: tuple[str, ...] = ()  # conflicting files
    output: str = ""


@dataclass(frozen=True)
class KconfigMismatch:
    symbol: str
    wanted: str
    got: str  # "n" for unset
    fragment: str
    reason: str


@dataclass(frozen=True)
class BuildInfo:
    tree: str  # git tree hash of the variant's source
    config: str  # sha256 of the final .config
    artifact_dir: str
    cached: bool  # True when the artifact existed and nothing was built
    shared_with: str | None = None  # variant whose identical tree was built
    first_error: str | None = None
    warnings: tuple[str, ...] = ()


class SplatKind(enum.StrEnum):
    """What a kernel complaint is (vm/console.py's patterns); the JSON holds the value."""

    PANIC = "panic"
    OOPS = "oops"
    BUG = "bug"
    GPF = "gpf"  # general protection fault
    WARNING = "warning"  # WARN() and lockdep reports
    SOFT_LOCKUP = "soft-lockup"
    HARD_LOCKUP = "hard-lockup"
    RCU_STALL = "rcu-stall"
    HUNG_TASK = "hung-task"
    KASAN = "kasan"
    KFENCE = "kfence"
    UBSAN = "ubsan"
    KCSAN = "kcsan"
    OOM = "oom"  # the OOM killer ran
    KMEMLEAK = "kmemleak"  # "kmemleak: N new suspected memory leaks"


@dataclass(frozen=True)
class Splat:
    """A kernel complaint seen on the console: panic, oops, lockup, ..."""

    kind: SplatKind
    title: str  # the first line, e.g. "BUG: kernel NULL pointer dereference, address: 0"
    timestamp: float | None  # guest seconds since boot, from the printk prefix
    trace: tuple[str, ...] = ()  # call trace lines
    test: str | None = None  # the test that was running, from the kmsg markers
    # How many times the kernel printed this report (same kind, title, trace
    # and test): repeats are counted, not kept (vm/console.py).  Files written
    # before the field existed read as 1.
    count: int = 1


@dataclass(frozen=True)
class BootInfo:
    accel: str  # kvm | tcg
    accel_reason: str  # why this accelerator was chosen
    seconds: float  # QEMU start to SSH ready
    console_log: str
    console_tail: str = ""  # last lines of the console, for BOOT-FAIL


@dataclass(frozen=True)
class TestResult:
    __test__ = False  # not a pytest test class

    name: str  # the test's name as the matrix declares it, or test.subtest for subtests
    verdict: Verdict
    duration: float = 0.0
    reason: str = ""
    expected: str = ""  # the verdict the matrix declares for this test, if any
    # What the subtest shows, from its test's `about:` in the matrix ("" if nothing is
    # said).  New in schema 2 without a bump: from_data leaves it "" in older files.
    about: str = ""
    logs: tuple[str, ...] = ()
    splats: tuple[Splat, ...] = ()
    metrics: dict[str, float] = field(default_factory=dict)
    subtests: tuple[TestResult, ...] = ()
    # Which run of the test this is.  Functional tests with `repeats: N` run
    # N times in one boot (repeat 1..N; 0 when the test runs once).  Perf
    # tests are sampled once per boot: round 1..N of perf batch 1, 2, ...
    # (a batch is rerun when the A/A control finds it noisy); functional
    # tests have round 0 and batch 0.  A warm-up round's samples are
    # discarded, so no stored result has warmup set; the field names the
    # run while it happens (its logs and console markers).
    repeat: int = 0
    round: int = 0
    batch: int = 0
    warmup: bool = False
    # Runs of this test in one guest (`retries: N` reruns one that missed its
    # expectation, flakes.py): how many, and how many of them missed.  A FLAKY
    # test has failures < attempts; one that missed every time keeps its verdict.
    attempts: int = 1
    failures: int = 0
    # The runs before this one when it was retried, oldest first: each missed.
    earlier_runs: tuple[TestResult, ...] = ()
    # The matrix's `quarantine:` names it and the entry had not expired when the
    # run started: a miss does not fail the TEST stage (RunResult.quarantine says why).
    quarantined: bool = False

    @property
    def label(self) -> str:
        """The run as people and file names see it: htab_reuse, map_perf@3, map_perf@warmup."""
        return label(self.name, repeat=self.repeat, round=self.round, warmup=self.warmup)


def label(name: str, *, repeat: int = 0, round: int = 0, warmup: bool = False) -> str:
    """One run of a test as a word (log file names, console markers, JUnit)."""
    if warmup:
        return f"{name}@warmup"
    number = round or repeat
    return f"{name}@{number}" if number else name


@dataclass(frozen=True)
class StageResult:
    stage: Stage
    status: Status
    reason: str = ""
    duration: float = 0.0
    logs: tuple[str, ...] = ()


@dataclass(frozen=True)
class MailPatch:
    """One patch of a series taken from the list (kernel/mail.py)."""

    message_id: str  # without <>
    subject: str  # cleaned subject line as sent
    patch_id: str  # `git patch-id --stable` of the diff


@dataclass(frozen=True)
class MailSeries:
    """A series taken from the list: what a reply and the exports need to find it."""

    message_id: str  # the cover letter's (or the first patch's when there is none), no <>
    subject: str  # the cover letter's subject (or first patch's), e.g. "[PATCH v2 0/3] bpf: ..."
    revision: int  # 1 when the subject has no vN
    author: str  # "Name <addr>" from the cover letter / first patch From:
    base_commit: str | None  # from a "base-commit: SHA" line when the series gives one
    to: tuple[str, ...]  # addresses from the thread's To: (the lists), for the reply
    cc: tuple[str, ...]
    patches: tuple[MailPatch, ...]


class StepStatus(enum.Enum):
    """One step of a bisection: the series' first N patches, tested M times."""

    GOOD = "good"  # no run of the test failed
    BAD = "bad"  # at least one run failed
    SKIP = "skip"  # not tested: it did not configure, build or boot (git bisect skip)


@dataclass(frozen=True)
class BisectStep:
    patches: int  # how many patches of the series were applied (0: the base, reverts done)
    commit: str
    status: StepStatus
    failures: int = 0  # runs of the test that failed
    runs: int = 0  # runs of the test that gave a verdict
    reason: str = ""  # why it was skipped, or the first failure's reason
    # A perf step (runs = samples, one per boot): its median and, against the
    # base's samples, the ratio of medians, its 95 % interval and Mann-Whitney p.
    median: float | None = None
    ratio: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    p: float | None = None


@dataclass(frozen=True)
class Bisection:
    """Which patch of a variant's series first makes a test fail (orchestrator/bisect.py)."""

    test: str
    runs: int  # runs of the test per step
    steps: tuple[BisectStep, ...] = ()  # in the order they were tested
    first_bad: int = 0  # 1-based index of the first bad patch in the series; 0: not found
    candidates: tuple[int, ...] = ()  # when skips leave several patches possible
    subject: str = ""  # of the first bad patch
    commit: str = ""
    source: str = ""
    confidence: float = 0.0  # 0..1: how sure (see bisect.confidence)
    summary: str = ""  # "patch 2 (...): bad in 5/5 runs; good in 0/5 runs at patch 1"
    metric: str = ""  # a perf bisection's metric (a step is bad when it is slower); "" otherwise


@dataclass(frozen=True)
class VariantResult:
    name: str
    stages: tuple[StageResult, ...]
    base: str = ""  # commit the series was applied on
    head: str = ""  # commit after the series
    patches: tuple[PatchResult, ...] = ()
    kconfig: tuple[KconfigMismatch, ...] = ()
    build: BuildInfo | None = None
    boot: BootInfo | None = None
    tests: tuple[TestResult, ...] = ()
    mail: MailSeries | None = None  # the series came from the list (kernel/mail.py)
    bisect: tuple[Bisection, ...] = ()  # first bad patches, one per test bisected

    def stage(self, stage: Stage) -> StageResult | None:
        return next((s for s in self.stages if s.stage is stage), None)

    @property
    def status(self) -> Status:
        if any(s.status is Status.ERROR for s in self.stages):
            return Status.ERROR
        if any(s.status is Status.FAIL for s in self.stages):
            return Status.FAIL
        return Status.PASS


@dataclass(frozen=True)
class Batch:
    """One pass of interleaved perf rounds over every variant (and the A/A control)."""

    attempt: int  # 1 for the first batch
    noisy: tuple[str, ...] = ()  # test.metric whose A/A control was too far from the baseline
    rerun: bool = False  # another batch followed: this one is kept but not judged


@dataclass(frozen=True)
class PerfPlan:
    """How a sequential run planned and judged its perf rounds (sequential.py).

    The reports recompute every verdict from the samples and these rules, so
    the file alone says what was decided and why; absent for a fixed plan.
    """

    method: str  # the error control, in words
    error_rate: float  # held across the run's comparisons
    control: str  # which: "fwer" (Holm) or "fdr" (Benjamini-Hochberg); sequential.Control
    equivalence: float  # "same" means within +-this
    alpha_eq: float  # per side of the two-one-sided test
    rho: float  # alpha spending alpha * t**rho
    n_min: int  # rounds before the first look
    max_boots: tuple[tuple[str, int], ...]  # per perf test
    budget: float = 0.0  # seconds of perf rounds at most; 0: none
    spent: float = 0.0  # seconds the perf rounds took, side by side ones counted once
    stopped: str = ""  # why the rounds stopped ("" while they run)
    blocks: int = 1  # rounds run side by side, each on CPUs (or a worker) of its own


@dataclass(frozen=True)
class Quarantine:
    """A matrix `quarantine:` entry as the run saw it (flakes.py)."""

    test: str  # a test or test.subtest
    reason: str
    expires: str  # YYYY-MM-DD, the last day it holds
    expired: bool = False  # the run started after that day: the test counts again


@dataclass(frozen=True)
class Placement:
    """Which worker ran a unit of a run on a Dask cluster (dask_executor.py)."""

    unit: str  # the plan's unit id, e.g. functional:base
    worker: str  # the worker's address
    host: str
    cpu: str  # the CPU model
    kernel: str  # the worker's kernel release
    qemu: str  # `qemu-system-x86_64 --version`, first line
    # BUILD: sha256 of the vmlinux guests boot; a guest unit that had to fetch
    # its kernel: from where (verified by hash on arrival).
    artifacts: str = ""


@dataclass(frozen=True)
class RunResult:
    matrix: str
    started: str
    finished: str
    variants: tuple[VariantResult, ...]
    host: dict[str, str] = field(default_factory=dict)
    schema: int = SCHEMA_VERSION
    # The variant perf metrics are compared with; "" means the first.  New in
    # schema 1 without a bump: from_data leaves it "" in older files.
    baseline: str = ""
    # The A/A control: the baseline's kernel measured again as a variant of its
    # own (named baseline~aa), perf tests only.  Kept out of `variants`: it is
    # a measurement of the noise, never a verdict.  Both new in schema 1 too.
    control: VariantResult | None = None
    batches: tuple[Batch, ...] = ()
    # Why the run stopped before every unit of work was done ("" when it did
    # not): the results are valid but partial.
    incomplete: str = ""
    # The matrix's quarantine list, expired entries included (flakes.py).
    quarantine: tuple[Quarantine, ...] = ()
    # Where each unit ran when a Dask cluster ran them, in plan order; empty for a
    # run on this machine (`host` says which).  New in schema 2 without a bump.
    workers: tuple[Placement, ...] = ()
    perf_plan: PerfPlan | None = None  # a sequential plan's rules; None: fixed rounds
    questions: tuple[tuple[str, str], ...] = ()  # the matrix's report.questions

    @property
    def ok(self) -> bool:
        return all(not v.status.bad for v in self.variants)


def write(run: RunResult, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(to_data(run), indent=2) + "\n")
    tmp.replace(path)


class SchemaError(ValueError):
    """A results file this version cannot read."""


def read(path: Path) -> RunResult:
    """A results file, checked before it is decoded: it may come from anywhere.

    Anything that is not a results file of this schema is a ValueError
    (results_check.ResultsError names the JSON path); OSError,
    UnicodeDecodeError and json.JSONDecodeError pass through.
    """
    data = results_check.load(path)
    schema = data.get("schema") if isinstance(data, dict) else None
    if schema != SCHEMA_VERSION:
        number = isinstance(schema, int) and not isinstance(schema, bool) and abs(schema) < 10**6
        shown = str(schema) if number else results_check.describe(schema)
        raise SchemaError(
            f"results schema {shown}; this version reads {SCHEMA_VERSION} "
            "(files from before orchestrate 0.2 keep the reports written with them)"
        )
    results_check.check(RunResult, data)
    return from_data(RunResult, data)


def to_data(value: Any) -> Any:
    """Dataclasses, enums and tuples to plain JSON data."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_data(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | list):
        return [to_data(v) for v in value]
    if isinstance(value, dict):
        return {k: to_data(v) for k, v in value.items()}
    return value


T = TypeVar("T")


def from_data(cls: type[T], data: Any) -> T:
    """The inverse of to_data, guided by the dataclass type hints."""
    hints = typing.get_type_hints(cls)
    kwargs = {
        f.name: _decode_value(hints[f.name], data[f.name])
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        if f.name in data
    }
    return cls(**kwargs)


def _decode_value(tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return _decode_value(inner, value)
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode_value(args[0], v) for v in value)
        return tuple(_decode_value(a, v) for a, v in zip(args, value, strict=True))
    if origin is dict:
        _k, inner = typing.get_args(tp)
        return {k: _decode_value(inner, v) for k, v in value.items()}
    if isinstance(tp, type) and issubclass(tp, enum.Enum | Path):
        return tp(value)
    if dataclasses.is_dataclass(tp):
        return from_data(tp, value)  # type: ignore[arg-type]
    return value


def read_given(path: Path) -> RunResult:
    """A results file the user named, or a UserError (exit 2) that says why it is not one."""
    try:
        return read(path)
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, not a results file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not JSON: {exc}") from None
    except OSError as exc:
        raise UserError(f"{path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        # The checker's ResultsError names the JSON path: variants[2].tests[0].verdict: ...
        raise UserError(f"{path}: not a results file: {exc}") from None
