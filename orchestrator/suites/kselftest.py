"""`kind: kselftest`: the kernel tree's own selftests, built per variant, run in its guest.

A `kind: kselftest` test names a program of the tree's own selftests
(`args.collection`, default `bpf/test_progs`) and what it should run
(`args.filter`: `-t FILTER`; `args.deny`: `-d DENY`); it has no `command:`.
Its output is test_progs' own (suites/test_progs.py).  After a variant's
kernel is built, `make -C <src>/tools/testing/selftests/bpf` builds the
program against that kernel's vmlinux (its BTF becomes vmlinux.h), with
OUTPUT in the cache under the variant's artifact key (tree hash + config
hash): variants with equal trees share one build, and an unchanged variant
builds nothing.  The program, its BPF objects and helper files are installed
under /opt/kselftests/<dir> in the variant's own initramfs layer, with the
shared libraries the program needs.

A build failure is a result, not an exception: the variant's kselftest tests
become ERROR with the first error line and the log; its other tests run.
(6.1's test_progs needs a kernel with CONFIG_DEBUG_INFO_BTF and, for
bpf_testmod.ko, CONFIG_MODULES; tinyconfig kernels have neither.)
"""

from __future__ import annotations

import re
import shlex
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from orchestrator import proc
from orchestrator.errors import InfraError
from orchestrator.kernel import build
from orchestrator.matrix import Test
from orchestrator.results import TestResult
from orchestrator.sandbox import Sandbox
from orchestrator.suites import test_progs
from orchestrator.suites.registry import Arg, Installed, Kernel, Need, Rule, Suite
from orchestrator.vm import image

KIND = "kselftest"
COLLECTIONS = ("bpf/test_progs",)  # the programs it knows how to build and install
GUEST_DIR = "/opt/kselftests"
SELFTESTS = Path("tools/testing/selftests")
DONE = ".done"
# What test_progs reads from its directory besides itself: BPF objects,
# bpf_testmod.ko, liburandom_read.so, setup scripts and the btf_dump cases.
_INSTALLED_SUFFIXES = (".bpf.o", ".ko", ".so", ".sh", ".c")
# The Makefile's own $(error ...), a compiler's error, bpftool's or libbpf's.
_CAUSES = (
    re.compile(r"^\S+:\d+: \*\*\* .*$", re.M),
    re.compile(r"^\S+?:\d+(?::\d+)?: (?:fatal )?error: .*$", re.M),
    # the compiler driver itself: "clang: error: invalid linker name ..."
    re.compile(r"^(?:clang|gcc|cc|ld(?:\.\w+)?|collect2)(?:-\d+)?: (?:fatal )?error: .*$", re.M),
    re.compile(r"^(?:Error: .*|libbpf: .*(?:fail|error).*)$", re.M | re.I),
)
_REASON_LIMIT = 300
# test_progs -t/-d: comma-separated test[/subtest] names with '*' globs.
_TEST_PROGS_NAMES = re.compile(r"[A-Za-z0-9_*][A-Za-z0-9_*/,.:-]*")


# --- the kind ---------------------------------------------------------------------------------


def names_problem(names: str) -> str | None:
    """Why names is not a test_progs -t/-d argument, or None when it is."""
    if _TEST_PROGS_NAMES.fullmatch(names):
        return None
    return (
        f"{names!r} is not a list of test_progs names: comma-separated test or "
        "test/subtest names of letters, digits, '_', '.', ':', '-' and '*' globs, "
        "without spaces, starting with a letter, digit, '_' or '*'"
    )


class KselftestInstaller:
    """The collections kselftest tests run, built against each variant's kernel."""

    name = KIND

    def wanted(self, tests: Iterable[Test]) -> tuple[str, ...]:
        return collections(tests)

    def needs(self, test: Test) -> str | None:
        options = _options(test)
        return options.collection if options is not None else None

    def ready(self, cache: Path, kernel: Kernel, unit: str) -> bool:
        return (cache_dir(cache, kernel.key, unit) / DONE).exists()

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
        return install(kernel, wanted, cache, log, jobs=jobs, timeout=timeout, sandbox=sandbox)


class KselftestSuite(Suite):
    """A program of the tree's selftests, run with test_progs' -t/-d filters."""

    kind = KIND
    command_rule = Rule(Need.FORBIDDEN, "it runs the program named by args.collection")
    args_rule = Rule(Need.REQUIRED, "e.g. {filter: htab}")
    args_schema = (
        Arg("filter", "test names", required=True, check=names_problem),
        Arg("collection", choices=COLLECTIONS, default=COLLECTIONS[0]),
        Arg("deny", "test names", check=names_problem),
    )
    installer = KselftestInstaller()

    def options(self, args: Mapping[str, str]) -> Options:
        return Options(filter=args["filter"], collection=args["collection"], deny=args["deny"])

    def command(self, test: Test) -> str:
        options = _options(test)
        if options is None:
            raise ValueError(f"kselftest test {test.name!r} has no options: config reads them")
        return guest_command(options)

    def parse(self, stdout: str, name: str) -> TestResult:
        return test_progs.parse(stdout, name)


def _options(test: Test) -> Options | None:
    return test.options if isinstance(test.options, Options) else None


# --- building and installing ------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    """What a `kind: kselftest` test runs: a program of the kernel tree's own selftests.

    A kselftest test's Test.options, read from its args.
    """

    filter: str  # test_progs -t: comma-separated test[/subtest] names, '*' globs
    collection: str = "bpf/test_progs"  # <dir under tools/testing/selftests>/<program>
    deny: str = ""  # test_progs -d: names to leave out, same syntax


@dataclass(frozen=True)
class Built:
    """One collection's build for one kernel: its files, or why there are none."""

    collection: str
    out: Path | None  # the installed files, on the host
    error: str | None
    log: Path

    def files(self) -> tuple[tuple[str, Path], ...]:
        """(guest path, host path) for every file to install."""
        if self.out is None:
            return ()
        where = guest_dir(self.collection)
        return tuple((f"{where}/{p.name}", p) for p in sorted(self.out.iterdir()) if p.is_file())


def collections(tests: Iterable[Test]) -> tuple[str, ...]:
    """The collections a matrix's tests need, in order of first use."""
    return tuple(dict.fromkeys(o.collection for t in tests if (o := _options(t)) is not None))


def guest_dir(collection: str) -> str:
    return f"{GUEST_DIR}/{PurePosixPath(collection).parent}"


def guest_command(selftest: Options) -> str:
    """The guest shell command: the program run from its directory, stderr merged.

    test_progs opens its BPF objects relative to the current directory; the
    merged streams keep a crash report next to the test that caused it.
    """
    program = PurePosixPath(selftest.collection).name
    argv = [f"./{program}", "-t", selftest.filter]
    if selftest.deny:
        argv += ["-d", selftest.deny]
    where = shlex.quote(guest_dir(selftest.collection))
    return f"cd {where} && exec {shlex.join(argv)} 2>&1"


def cache_dir(cache: Path, kernel_key: str, collection: str) -> Path:
    return cache / "kselftests" / kernel_key / collection.replace("/", "-")


def cached(cache: Path, kernel: Kernel, collection: str, log: Path) -> Built | None:
    """The collection's earlier successful build for this kernel, if any."""
    root = cache_dir(cache, kernel.key, collection)
    if (root / DONE).exists():
        return Built(collection, root / "files", None, log)
    return None


def make_argv(kernel: Kernel, collection: str, output: Path, jobs: int) -> list[str]:
    directory = kernel.src / SELFTESTS / PurePosixPath(collection).parent
    program = PurePosixPath(collection).name
    return [
        "make", "-C", str(directory), f"-j{jobs}",
        f"OUTPUT={output}", f"VMLINUX_BTF={kernel.vmlinux}", f"KDIR={kernel.out}",
        str(output / program),
    ]  # fmt: skip


def build_one(
    kernel: Kernel,
    collection: str,
    cache: Path,
    log: Path,
    *,
    jobs: int,
    timeout: float,
    sandbox: Sandbox,
) -> Built:
    """Build the collection's program for kernel (or reuse the cached build)."""
    found = cached(cache, kernel, collection, log)
    if found is not None:
        return found
    root = cache_dir(cache, kernel.key, collection)
    output = root / "build"  # kept after a failure: the next try is incremental
    output.mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    _link_urandom_read(kernel, collection, output)
    try:
        # The selftests' Makefile is the tree's code: it writes its OUTPUT and
        # its own source directory, and reads the kernel it builds against.
        wrap = sandbox.prefix(
            writable=[root, kernel.src / SELFTESTS / PurePosixPath(collection).parent],
            readable=[kernel.src, kernel.out, kernel.vmlinux.parent],
        )
        argv = make_argv(kernel, collection, output, jobs)
        result = proc.run(argv, timeout=timeout, log=log, wrap=wrap)
    except InfraError as exc:  # make itself is missing
        return Built(collection, None, str(exc), log)
    if not result.ok:
        why = "timed out" if result.timed_out else first_error(log.read_text(errors="replace"))
        return Built(collection, None, f"{collection} did not build: {why} (log: {log})", log)
    staging = root / "files.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    program = PurePosixPath(collection).name
    for path in sorted(output.iterdir()):
        if path.is_file() and (path.name == program or _installed(path)):
            shutil.copy2(path, staging / path.name)  # copies what a symlink points to
    shutil.rmtree(root / "files", ignore_errors=True)
    staging.rename(root / "files")
    (root / DONE).touch()
    return Built(collection, root / "files", None, log)


def _link_urandom_read(kernel: Kernel, collection: str, output: Path) -> None:
    """Work around 6.1's bpf Makefile with OUTPUT set: urandom_read links
    "liburandom_read.so" from the source directory (make's cwd) although the
    library is built in OUTPUT.  A link there to this build's library lets it
    link; at run time both sit in one directory (rpath ".")."""
    directory = kernel.src / SELFTESTS / PurePosixPath(collection).parent
    if collection != "bpf/test_progs" or not directory.is_dir():
        return
    link = directory / "liburandom_read.so"
    if link.is_symlink() or not link.exists():
        link.unlink(missing_ok=True)
        link.symlink_to(output / "liburandom_read.so")


def _installed(path: Path) -> bool:
    return path.name.endswith(_INSTALLED_SUFFIXES) or bool(path.stat().st_mode & 0o111)


def install(
    kernel: Kernel,
    wanted: Iterable[str],
    cache: Path,
    log: Path,
    *,
    jobs: int,
    timeout: float,
    sandbox: Sandbox,
) -> Installed:
    """Every wanted collection built for kernel, as files for the guest or errors."""
    files: list[tuple[str, Path]] = []
    errors: list[tuple[str, str]] = []
    for collection in wanted:
        built = build_one(
            kernel, collection, cache, log, jobs=jobs, timeout=timeout, sandbox=sandbox
        )
        if built.error is not None:
            errors.append((collection, built.error))
            continue
        program = built.out / PurePosixPath(collection).name if built.out else None
        try:
            libraries = image.shared_libraries(program, sandbox) if program else ()
        except InfraError as exc:  # ldd: a library the program needs is not on the host
            errors.append((collection, f"{collection}: {exc}"))
            continue
        files += built.files()
        files += [(lib, Path(lib)) for lib in libraries if lib not in dict(files)]
    return Installed(tuple(files), tuple(errors))


def first_error(log_text: str) -> str:
    """The earliest line that says why: the Makefile's, a compiler's or bpftool's error.

    Falls back to build.first_error (make's own complaint, else the last line).
    """
    found = [m for pattern in _CAUSES if (m := pattern.search(log_text))]
    if not found:
        return build.first_error(log_text)[:_REASON_LIMIT]
    return min(found, key=lambda m: m.start()).group(0).strip()[:_REASON_LIMIT]
