"""Read a matrix file into the typed records of matrix.py.

This is the only module that reads the YAML and the only place that validates
it: everything downstream trusts the records.  The text is *composed* into
PyYAML nodes, never loaded into Python objects wholesale, so that every
problem can be reported as file:line plus a key path such as
``variants[2].series[0]``.  Scalars are converted with the safe resolver's
rules (strings, ints, floats, booleans, null) and nothing else.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import yaml

from orchestrator.errors import MatrixError
from orchestrator.matrix import (
    Guest,
    Kconfig,
    Kselftest,
    Matrix,
    Perf,
    Report,
    Revert,
    Test,
    Tree,
    TreeKind,
    Variant,
)

# Where Debian's linux-source-X.Y packages put their tarball (tests point it elsewhere).
DEBIAN_SOURCE_DIR = Path("/usr/src")
DEFAULT_DEBIAN_SOURCE = "linux-source-6.1"

TOP_KEYS = ("name", "tree", "kconfig", "build", "guest", "tests", "perf", "report", "variants")
TREE_KEYS = ("debian", "git", "path", "ref")
KCONFIG_KEYS = ("base", "arch", "fragments", "on_mismatch")
GUEST_KEYS = ("cpus", "memory", "accel", "boot_timeout", "cmdline", "selftests")
TEST_KEYS = ("name", "kind", "command", "timeout", "repeats", "args")
PERF_KEYS = ("aa_control", "max_reruns")
REPORT_KEYS = ("dir", "formats", "baseline")
VARIANT_KEYS = ("name", "series", "reverts", "kconfig", "expect")

ARCHES = ("x86_64",)
ON_MISMATCH = ("error", "warn")
ACCELS = ("auto", "kvm", "tcg")
TEST_KINDS = ("ktap", "map_perf", "kselftest")
KSELFTEST_KEYS = ("filter", "collection", "deny")
KSELFTEST_COLLECTIONS = ("bpf/test_progs",)
FORMATS = ("json", "junit", "html", "text")
OUTCOMES = ("pass", "fail", "skip", "timeout", "kernel-hang", "boot-fail")

_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SAFE_CHAR = re.compile(r"[A-Za-z0-9._-]")
_MAKE_TARGET = re.compile(r"[a-z0-9_]+config")
_COMMIT = re.compile(r"[0-9a-fA-F]{7,40}")
_GIT_REF = re.compile(r"[^\s-]\S*")
_GIT_URL = re.compile(
    r"(?:https?|git|ssh|file)://\S+"  # a URL
    r"|[A-Za-z0-9_][A-Za-z0-9._-]*@[A-Za-z0-9][A-Za-z0-9.-]*:\S+"  # or scp-like user@host:path
)
_DEBIAN_WORD = re.compile(r"linux-source-\d+\.\d+")
# test_progs -t/-d: comma-separated test[/subtest] names with '*' globs.
_TEST_PROGS_NAMES = re.compile(r"[A-Za-z0-9_*][A-Za-z0-9_*/,.:-]*")

Scalar = str | int | float | bool | None
T = TypeVar("T")

_TAG = "tag:yaml.org,2002:"
_SAFE = yaml.constructor.SafeConstructor()
_SCALARS: dict[str, Callable[[yaml.ScalarNode], Scalar]] = {
    _TAG + "null": _SAFE.construct_yaml_null,
    _TAG + "bool": _SAFE.construct_yaml_bool,
    _TAG + "int": _SAFE.construct_yaml_int,
    _TAG + "float": _SAFE.construct_yaml_float,
    _TAG + "str": lambda node: str(node.value),
    _TAG + "timestamp": lambda node: str(node.value),  # kept as the text written
}


# --- the cursor -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Node:
    """One YAML node and where it sits: file, line and key path."""

    node: yaml.Node
    key_path: str  # "" for the document itself
    line: int
    file: Path
    base: Path  # the matrix file's directory, resolved

    def join(self, key: str) -> str:
        return f"{self.key_path}.{key}" if self.key_path else key

    def child(self, key: str, key_node: yaml.Node, node: yaml.Node) -> _Node:
        return _Node(node, self.join(key), _line(key_node), self.file, self.base)

    def item(self, index: int, node: yaml.Node) -> _Node:
        return _Node(node, f"{self.key_path}[{index}]", _line(node), self.file, self.base)

    def error(self, message: str) -> MatrixError:
        return MatrixError(self.file, self.line, self.key_path or "<document>", message)

    def missing(self, key: str, message: str = "is required") -> MatrixError:
        return MatrixError(self.file, self.line, self.join(key), message)


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


# --- reading ----------------------------------------------------------------------------------


def load(path: Path) -> Matrix:
    """Read and validate the matrix file at *path*; raise MatrixError on any problem."""
    path = Path(path)
    root = _compose(path, _read(path))
    cur = _Node(root, "", _line(root), path, path.resolve().parent)
    top = _mapping(cur, TOP_KEYS, required=("variants",))
    name = _name(top["name"]) if "name" in top else _default_name(cur)
    tests: tuple[Test, ...] = _get(top, "tests", _tests, ())
    variants = _variants(top["variants"], tests)
    return Matrix(
        path=path.resolve(),
        name=name,
        tree=_tree(top["tree"]) if "tree" in top else _default_tree(cur),
        kconfig=_get(top, "kconfig", _kconfig, Kconfig()),
        variants=variants,
        report=_report(top.get("report"), cur.base, variants),
        guest=_get(top, "guest", _guest, Guest()),
        tests=tests,
        build_timeout=_get(top, "build", _build_timeout, 3600.0),
        perf=_get(top, "perf", _perf, Perf()),
    )


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise MatrixError(path, 0, "<file>", f"cannot read the matrix file: {reason}") from None


def _compose(path: Path, text: str) -> yaml.Node:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        message = e.problem or "invalid YAML"
        if e.context and e.context_mark:
            message = f"{e.context} at line {e.context_mark.line + 1}, {message}"
        raise MatrixError(path, mark.line + 1 if mark else 0, "<yaml>", message) from None
    except yaml.reader.ReaderError as e:  # a character YAML does not allow
        line = text.count("\n", 0, e.position) + 1
        message = f"unacceptable character #x{e.character:04x}: {e.reason}"
        raise MatrixError(path, line, "<yaml>", message) from None
    if root is None:
        raise MatrixError(path, 1, "<document>", "the file is empty; a matrix needs variants:")
    return root


# --- generic helpers --------------------------------------------------------------------------


def _describe(node: yaml.Node) -> str:
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if not isinstance(node, yaml.ScalarNode) or node.tag not in _SCALARS:
        return f"a value tagged {node.tag}"
    value = _SCALARS[node.tag](node)
    if value is None:
        return "null" if node.value else "an empty value"
    if isinstance(value, bool):
        return f"a boolean {node.value}"
    if isinstance(value, int):
        return f"an integer {node.value}"
    if isinstance(value, float):
        return f"a number {node.value}"
    return f"a string {value!r}"


def _wrong(cur: _Node, expected: str) -> MatrixError:
    return cur.error(f"expected {expected}, got {_describe(cur.node)}")


def _scalar(cur: _Node, expected: str) -> Scalar:
    node = cur.node
    if isinstance(node, yaml.ScalarNode) and node.tag in _SCALARS:
        return _SCALARS[node.tag](node)
    raise _wrong(cur, expected)


def _str(cur: _Node, what: str = "a string", *, raw_numbers: bool = False) -> str:
    """A string; with raw_numbers, an unquoted number is taken as the text written."""
    value = _scalar(cur, what)
    if isinstance(value, str):
        return value
    if raw_numbers and isinstance(value, int | float) and not isinstance(value, bool):
        return str(cur.node.value)
    hint = f" (quote it if you meant the text '{cur.node.value}')" if value is not None else ""
    raise cur.error(f"expected {what}, got {_describe(cur.node)}{hint}")


def _int(cur: _Node, low: int, high: int | None = None) -> int:
    value = _scalar(cur, "an integer")
    if isinstance(value, bool) or not isinstance(value, int):
        raise _wrong(cur, "an integer")
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise cur.error(f"must be {bounds}, got {value}")
    return value


def _bool(cur: _Node) -> bool:
    value = _scalar(cur, "true or false")
    if not isinstance(value, bool):
        raise _wrong(cur, "true or false")
    return value


def _seconds(cur: _Node) -> float:
    value = _scalar(cur, "a number of seconds")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _wrong(cur, "a number of seconds")
    if not (math.isfinite(value) and value > 0):
        raise cur.error(f"must be a positive number of seconds, got {value}")
    return float(value)


def _choice(cur: _Node, choices: tuple[str, ...]) -> str:
    value = _str(cur, "one of " + ", ".join(choices))
    if value not in choices:
        raise cur.error(f"must be one of {', '.join(choices)}; got {value!r}")
    return value


def _unsafe_reason(name: str) -> str | None:
    """Why *name* cannot be used as a directory name, or None if it can."""
    if _SAFE_NAME.fullmatch(name):
        return None
    if not name:
        reason = "it is empty"
    elif len(name) > 64:
        reason = "it is longer than 64 characters"
    elif not name[0].isascii() or not name[0].isalnum():
        reason = f"it starts with {name[0]!r}"
    else:
        reason = f"it contains {next(c for c in name if not _SAFE_CHAR.fullmatch(c))!r}"
    return (
        f"{name!r} is not a safe name: {reason}. It becomes a directory name, so it must be "
        "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
    )


def _name(cur: _Node) -> str:
    name = _str(cur, "a name", raw_numbers=True)
    reason = _unsafe_reason(name)
    if reason:
        raise cur.error(reason)
    return name


def _claim(cur: _Node, name: str, seen: dict[str, int], what: str) -> None:
    if name in seen:
        raise cur.error(f"duplicate {what} name {name!r} (first at line {seen[name]})")
    seen[name] = cur.line


def _entries(cur: _Node) -> list[tuple[str, _Node]]:
    """A mapping's entries in file order; keys are taken as the text written."""
    if not isinstance(cur.node, yaml.MappingNode):
        raise _wrong(cur, "a mapping")
    entries: list[tuple[str, _Node]] = []
    first: dict[str, int] = {}
    for key_node, value_node in cur.node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            problem = f"keys must be plain words, got {_describe(key_node)}"
            raise MatrixError(cur.file, _line(key_node), cur.key_path or "<document>", problem)
        key = str(key_node.value)
        child = cur.child(key, key_node, value_node)
        if key in first:
            raise child.error(f"duplicate key {key!r} (first at line {first[key]})")
        first[key] = child.line
        entries.append((key, child))
    return entries


def _mapping(
    cur: _Node, allowed: Collection[str], required: Collection[str] = ()
) -> dict[str, _Node]:
    fields = dict(_entries(cur))
    for key, child in fields.items():
        if key not in allowed:
            raise child.error(f"unknown key {key!r}; allowed keys: {', '.join(allowed)}")
    for key in required:
        if key not in fields:
            raise cur.missing(key)
    return fields


def _get(fields: dict[str, _Node], key: str, convert: Callable[[_Node], T], default: T) -> T:
    node = fields.get(key)
    return default if node is None else convert(node)


def _list(cur: _Node, what: str, *, one_ok: bool = False) -> list[_Node]:
    """The items of a list; with one_ok, a single string stands for a list of one."""
    node = cur.node
    if isinstance(node, yaml.SequenceNode):
        return [cur.item(i, item) for i, item in enumerate(node.value)]
    if one_ok and isinstance(node, yaml.ScalarNode) and isinstance(_scalar(cur, what), str):
        return [cur]
    raise _wrong(cur, what)


def _path(cur: _Node, kind: str, *, outside_ok: bool = False) -> Path:
    """A path, relative to the matrix directory; kind is what must exist there ("" = nothing)."""
    text = _str(cur, "a path")
    if not text:
        raise cur.error("expected a path, got an empty string")
    try:
        path = (cur.base / text).resolve()
    except (OSError, ValueError, RuntimeError) as e:
        raise cur.error(f"not a usable path {text!r}: {e}") from None
    if not Path(text).is_absolute() and not outside_ok and not path.is_relative_to(cur.base):
        raise cur.error(
            f"{text!r} escapes the matrix directory {cur.base} (it resolves to {path}); "
            "write an absolute path if you mean it"
        )
    if kind and not path.exists():
        raise cur.error(f"no such {kind}: {path}")
    if (kind == "file" and not path.is_file()) or (kind == "directory" and not path.is_dir()):
        raise cur.error(f"not a {kind}: {path}")
    return path


def _paths(cur: _Node, kind: str) -> tuple[Path, ...]:
    return tuple(_path(item, kind) for item in _list(cur, "a path or a list of paths", one_ok=True))


# --- sections ---------------------------------------------------------------------------------


def _default_name(root: _Node) -> str:
    reason = _unsafe_reason(root.file.stem)
    if reason:
        raise root.missing("name", f"no name given and the file name is not usable: {reason}")
    return root.file.stem


def _default_tree(root: _Node) -> Tree:
    tarball = DEBIAN_SOURCE_DIR / f"{DEFAULT_DEBIAN_SOURCE}.tar.xz"
    if not tarball.is_file():
        raise root.missing(
            "tree",
            f"no tree given and the default {tarball} does not exist; "
            f"install the {DEFAULT_DEBIAN_SOURCE} package or set tree:",
        )
    return Tree(TreeKind.DEBIAN, str(tarball.resolve()))


def _tree(cur: _Node) -> Tree:
    fields = _mapping(cur, TREE_KEYS)
    kinds = [kind for kind in ("debian", "git", "path") if kind in fields]
    if len(kinds) != 1:
        got = " and ".join(kinds) if kinds else "none"
        raise cur.error(f"needs exactly one of debian, git, path; got {got}")
    kind = kinds[0]
    ref = ""
    if "ref" in fields:
        if kind == "debian":
            raise fields["ref"].error("only allowed with git or path: a tarball has no history")
        ref = _ref(fields["ref"])
    where = fields[kind]
    if kind == "debian":
        location = str(_debian_tarball(where))
    elif kind == "git":
        location = _git_url(where)
    else:
        location = str(_checkout(where))
    return Tree(TreeKind(kind), location, ref)


def _debian_tarball(cur: _Node) -> Path:
    text = _str(cur, "a path")
    if not _DEBIAN_WORD.fullmatch(text):
        return _path(cur, "file")
    tarball = DEBIAN_SOURCE_DIR / f"{text}.tar.xz"
    if not tarball.is_file():
        raise cur.error(f"no such file: {tarball} (install the {text} package)")
    return tarball.resolve()


def _git_url(cur: _Node) -> str:
    url = _str(cur, "a git URL")
    if not _GIT_URL.fullmatch(url):
        raise cur.error(
            f"{url!r} is not a git URL: use https://, http://, git://, ssh://, file:// "
            "or user@host:path (for a local checkout use path:)"
        )
    return url


def _checkout(cur: _Node) -> Path:
    # A checkout usually sits beside the project (path: ../linux), so it may leave the
    # matrix directory; it is only ever read.
    path = _path(cur, "directory", outside_ok=True)
    if not (path / ".git").exists():
        raise cur.error(f"not a git checkout (no .git): {path}")
    return path


def _ref(cur: _Node) -> str:
    ref = _str(cur, "a git ref", raw_numbers=True)
    if ref and not _GIT_REF.fullmatch(ref):
        raise cur.error(f"{ref!r} is not a git ref: no spaces, and it must not start with '-'")
    return ref


def _kconfig(cur: _Node) -> Kconfig:
    fields = _mapping(cur, KCONFIG_KEYS)
    default = Kconfig()
    return Kconfig(
        base=_get(fields, "base", _make_target, default.base),
        arch=_get(fields, "arch", lambda n: _choice(n, ARCHES), default.arch),
        fragments=_get(fields, "fragments", lambda n: _paths(n, "file"), ()),
        on_mismatch=_get(fields, "on_mismatch", lambda n: _choice(n, ON_MISMATCH), "error"),
    )


def _make_target(cur: _Node) -> str:
    target = _str(cur, "a make target")
    if not _MAKE_TARGET.fullmatch(target):
        raise cur.error(
            f"{target!r} is not a base config target: it must look like tinyconfig or "
            "defconfig (lowercase letters, digits, '_', ending in 'config'); "
            "add .config fragments with fragments:"
        )
    return target


def _build_timeout(cur: _Node) -> float:
    return _get(_mapping(cur, ("timeout",)), "timeout", _seconds, 3600.0)


def _guest(cur: _Node) -> Guest:
    fields = _mapping(cur, GUEST_KEYS)
    default = Guest()
    return Guest(
        cpus=_get(fields, "cpus", lambda n: _int(n, 1, 64), default.cpus),
        memory_mb=_get(fields, "memory", lambda n: _int(n, 128, 65536), default.memory_mb),
        accel=_get(fields, "accel", lambda n: _choice(n, ACCELS), default.accel),
        boot_timeout=_get(fields, "boot_timeout", _seconds, default.boot_timeout),
        cmdline=_get(fields, "cmdline", _str, default.cmdline),
        selftests=_get(fields, "selftests", _selftests_dir, default.selftests),
    )


def _selftests_dir(cur: _Node) -> Path:
    path = _path(cur, "directory")
    if not (path / "Makefile").is_file():
        raise cur.error(f"{path} has no Makefile: the guest programs are built with make")
    return path


def _tests(cur: _Node) -> tuple[Test, ...]:
    seen: dict[str, int] = {}
    return tuple(_test(item, seen) for item in _list(cur, "a list of tests"))


def _test(cur: _Node, seen: dict[str, int]) -> Test:
    fields = _mapping(cur, TEST_KEYS, required=("name", "kind"))
    name = _name(fields["name"])
    if "." in name:
        raise fields["name"].error(
            f"test name {name!r} must not contain '.': expect: uses it to separate test.subtest"
        )
    _claim(fields["name"], name, seen, "test")
    kind = _choice(fields["kind"], TEST_KINDS)
    command = _get(fields, "command", _str, "")
    if kind == "ktap" and not command:
        if "command" in fields:
            raise fields["command"].error("must not be empty for a ktap test")
        raise cur.missing("command", "is required for a ktap test")
    if kind == "kselftest" and "command" in fields:
        raise fields["command"].error(
            "not allowed for a kselftest test: it runs the program named by args.collection"
        )
    timeout = _get(fields, "timeout", _seconds, 300.0)
    repeats = _get(fields, "repeats", lambda n: _int(n, 1), 1)
    args: tuple[tuple[str, str], ...] = _get(fields, "args", _args, ())
    selftest = None
    if kind == "kselftest":
        if "args" not in fields:
            raise cur.missing("args", "is required for a kselftest test, e.g. {filter: htab}")
        selftest = _kselftest(fields["args"])
    return Test(
        name=name,
        kind=kind,
        command=command,
        timeout=timeout,
        repeats=repeats,
        args=args,
        kselftest=selftest,
    )


def _kselftest(cur: _Node) -> Kselftest:
    fields = _mapping(cur, KSELFTEST_KEYS, required=("filter",))
    return Kselftest(
        filter=_test_progs_names(fields["filter"]),
        collection=_get(
            fields, "collection", lambda n: _choice(n, KSELFTEST_COLLECTIONS), "bpf/test_progs"
        ),
        deny=_get(fields, "deny", _test_progs_names, ""),
    )


def _test_progs_names(cur: _Node) -> str:
    names = _str(cur, "test names", raw_numbers=True)
    if not _TEST_PROGS_NAMES.fullmatch(names):
        raise cur.error(
            f"{names!r} is not a list of test_progs names: comma-separated test or "
            "test/subtest names of letters, digits, '_', '.', ':', '-' and '*' globs, "
            "without spaces, starting with a letter, digit, '_' or '*'"
        )
    return names


def _args(cur: _Node) -> tuple[tuple[str, str], ...]:
    pairs: list[tuple[str, str]] = []
    for key, child in _entries(cur):
        value = _scalar(child, "a string, number or boolean")
        if value is None:
            raise _wrong(child, "a string, number or boolean")
        pairs.append((key, str(value)))
    return tuple(sorted(pairs))


def _variants(cur: _Node, tests: tuple[Test, ...]) -> tuple[Variant, ...]:
    items = _list(cur, "a list of variants")
    if not items:
        raise cur.error("must list at least one variant")
    seen: dict[str, int] = {}
    return tuple(_variant(item, tests, seen) for item in items)


def _variant(cur: _Node, tests: tuple[Test, ...], seen: dict[str, int]) -> Variant:
    fields = _mapping(cur, VARIANT_KEYS, required=("name",))
    name = _name(fields["name"])
    _claim(fields["name"], name, seen, "variant")
    return Variant(
        name=name,
        series=_get(fields, "series", lambda n: _paths(n, "file or directory"), ()),
        reverts=_get(fields, "reverts", _reverts, ()),
        fragments=_get(fields, "kconfig", lambda n: _paths(n, "file"), ()),
        expect=_get(fields, "expect", lambda n: _expect(n, tests), ()),
    )


def _reverts(cur: _Node) -> tuple[Revert, ...]:
    return tuple(_revert(item) for item in _list(cur, "a list of reverts"))


def _revert(cur: _Node) -> Revert:
    fields = _mapping(cur, ("commit", "patch"))
    if len(fields) != 1:
        got = "both" if fields else "neither"
        raise cur.error(f"needs exactly one of commit or patch; got {got}")
    if "patch" in fields:
        return Revert(patch=_path(fields["patch"], "file"))
    commit = _str(fields["commit"], "a commit hash", raw_numbers=True)
    if not _COMMIT.fullmatch(commit):
        raise fields["commit"].error(f"{commit!r} is not a commit hash (7 to 40 hex digits)")
    return Revert(commit=commit)


def _expect(cur: _Node, tests: tuple[Test, ...]) -> tuple[tuple[str, str], ...]:
    declared = [test.name for test in tests]
    pairs: list[tuple[str, str]] = []
    for key, child in _entries(cur):
        test, dot, subtest = key.partition(".")
        if test not in declared:
            names = ", ".join(declared) or "none"
            raise child.error(f"{test!r} is not a declared test (declared tests: {names})")
        if dot and not subtest:
            raise child.error(f"{key!r} has an empty subtest name after '.'")
        pairs.append((key, _choice(child, OUTCOMES)))
    return tuple(pairs)


def _perf(cur: _Node) -> Perf:
    fields = _mapping(cur, PERF_KEYS)
    default = Perf()
    return Perf(
        aa_control=_get(fields, "aa_control", _bool, default.aa_control),
        # Each rerun costs a whole batch of boots: a few at most.
        max_reruns=_get(fields, "max_reruns", lambda n: _int(n, 0, 5), default.max_reruns),
    )


def _report(cur: _Node | None, base: Path, variants: tuple[Variant, ...]) -> Report:
    if cur is None:
        return Report(dir=base / "reports")
    fields = _mapping(cur, REPORT_KEYS)
    return Report(
        dir=_get(fields, "dir", lambda n: _path(n, ""), base / "reports"),
        formats=_get(fields, "formats", _formats, FORMATS),
        baseline=_get(fields, "baseline", lambda n: _baseline(n, variants), ""),
    )


def _formats(cur: _Node) -> tuple[str, ...]:
    formats: list[str] = []
    for item in _list(cur, "a format or a list of formats", one_ok=True):
        value = _choice(item, FORMATS)
        if value in formats:
            raise item.error(f"duplicate format {value!r}")
        formats.append(value)
    if not formats:
        raise cur.error(f"must name at least one of {', '.join(FORMATS)}")
    return tuple(formats)


def _baseline(cur: _Node, variants: tuple[Variant, ...]) -> str:
    name = _str(cur, "a variant name", raw_numbers=True)
    names = [variant.name for variant in variants]
    if name and name not in names:
        raise cur.error(f"{name!r} is not a declared variant (variants: {', '.join(names)})")
    return name
