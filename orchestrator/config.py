"""Read a matrix file into the typed records of matrix.py.

This is the only module that reads the matrix and the only place that
validates it: everything downstream trusts the records.  It reads through
yaml_nodes, so every problem is reported as file:line plus a key path such
as ``variants[2].series[0]``.  A test entry is checked by the rules of its
kind's suite (suites/), which config.py asks instead of knowing the kinds.
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import yaml

from orchestrator import suites
from orchestrator.kernel import mail
from orchestrator.matrix import (
    AccelChoice,
    Bisect,
    Guest,
    Kconfig,
    MailSource,
    Matrix,
    OnMismatch,
    Perf,
    Quarantine,
    Report,
    Revert,
    Test,
    Tree,
    TreeKind,
    Variant,
)
from orchestrator.sequential import Control
from orchestrator.textfmt import quote
from orchestrator.yaml_nodes import (
    QUOTE,
    Node,
    boolean,
    choice,
    claim,
    document,
    duration,
    entries,
    get,
    integer,
    local_path,
    local_paths,
    mapping,
    percent,
    scalar,
    seconds,
    sequence,
    string,
    wrong,
)

# Where Debian's linux-source-X.Y packages put their tarball (tests point it elsewhere).
DEBIAN_SOURCE_DIR = Path("/usr/src")
DEFAULT_DEBIAN_SOURCE = "linux-source-6.1"

TOP_KEYS = (
    "name", "tree", "kconfig", "build", "guest", "tests", "perf", "report", "variants",
    "quarantine", "bisect",
)  # fmt: skip
TREE_KEYS = ("debian", "git", "path", "ref")
KCONFIG_KEYS = ("base", "arch", "fragments", "on_mismatch")
GUEST_KEYS = ("cpus", "memory", "accel", "boot_timeout", "cmdline", "selftests")
TEST_KEYS = ("name", "kind", "command", "timeout", "repeats", "retries", "args", "about")
QUARANTINE_KEYS = ("test", "reason", "expires")
# Reruns of a test that missed its expectation (flakes.py): a few at most.
MAX_RETRIES = 10
PERF_KEYS = (
    "aa_control", "max_reruns", "sequential", "equivalence", "error_rate", "control", "budget",
)  # fmt: skip
BISECT_KEYS = ("enabled", "runs")
MAX_BISECT_RUNS = 100  # runs of a test per bisection step (syzbot does 10)
REPORT_KEYS = ("dir", "formats", "baseline", "questions")
VARIANT_KEYS = ("name", "series", "reverts", "kconfig", "expect", "bisect")

ARCHES = ("x86_64",)
ON_MISMATCH = tuple(m.value for m in OnMismatch)
ACCELS = tuple(a.value for a in AccelChoice)
FORMATS = ("json", "junit", "html", "text")
OUTCOMES = ("pass", "fail", "skip", "timeout", "kernel-hang", "boot-fail")
# A test's `about:` texts are shown next to its subtests: a short sentence each.
ABOUT_TEXT = 200
ABOUT_KEY = 128

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


# --- reading ----------------------------------------------------------------------------------


def load(path: Path) -> Matrix:
    """Read and validate the matrix file at *path*; raise MatrixError on any problem."""
    path = Path(path)
    cur = document(path)
    top = mapping(cur, TOP_KEYS, required=("variants",))
    name = _name(top["name"]) if "name" in top else _default_name(cur)
    tests: tuple[Test, ...] = get(top, "tests", _tests, ())
    variants = _variants(top["variants"], tests)
    return Matrix(
        path=path.resolve(),
        name=name,
        tree=_tree(top["tree"]) if "tree" in top else _default_tree(cur),
        kconfig=get(top, "kconfig", _kconfig, Kconfig()),
        variants=variants,
        report=_report(top.get("report"), cur.base, variants),
        guest=get(top, "guest", _guest, Guest()),
        tests=tests,
        build_timeout=get(top, "build", _build_timeout, 3600.0),
        perf=get(top, "perf", _perf, Perf()),
        quarantine=get(top, "quarantine", lambda n: _quarantine(n, tests), ()),
        bisect=get(top, "bisect", _bisect, Bisect()),
    )


# --- names ------------------------------------------------------------------------------------


def _unsafe_reason(name: str) -> str | None:
    """Why *name* cannot be used as a directory name and a git branch component
    (orchestrate/<matrix>/<variant>), or None if it can."""
    if _SAFE_NAME.fullmatch(name):
        # git check-ref-format's rules that the characters allowed here can break.
        for bad, why in (("..", "'..'"), (".lock", "'.lock' at its end"), (".", "'.' at its end")):
            if (bad in name) if bad == ".." else name.endswith(bad):
                return (
                    f"{name!r} is not a safe name: it contains {why}, which git does not "
                    "allow in a branch name"
                )
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


def _name(cur: Node) -> str:
    name = string(cur, "a name", raw_numbers=True)
    reason = _unsafe_reason(name)
    if reason:
        raise cur.error(reason)
    return name


# --- sections ---------------------------------------------------------------------------------


def _default_name(root: Node) -> str:
    reason = _unsafe_reason(root.file.stem)
    if reason:
        raise root.missing("name", f"no name given and the file name is not usable: {reason}")
    return root.file.stem


def _default_tree(root: Node) -> Tree:
    tarball = DEBIAN_SOURCE_DIR / f"{DEFAULT_DEBIAN_SOURCE}.tar.xz"
    if not tarball.is_file():
        raise root.missing(
            "tree",
            f"no tree given and the default {tarball} does not exist; "
            f"install the {DEFAULT_DEBIAN_SOURCE} package or set tree:",
        )
    return Tree(TreeKind.DEBIAN, str(tarball.resolve()))


def _tree(cur: Node) -> Tree:
    fields = mapping(cur, TREE_KEYS)
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


def _debian_tarball(cur: Node) -> Path:
    text = string(cur, "a path")
    if not _DEBIAN_WORD.fullmatch(text):
        return local_path(cur, "file")
    tarball = DEBIAN_SOURCE_DIR / f"{text}.tar.xz"
    if not tarball.is_file():
        raise cur.error(f"no such file: {tarball} (install the {text} package)")
    return tarball.resolve()


def _git_url(cur: Node) -> str:
    url = string(cur, "a git URL")
    if not _GIT_URL.fullmatch(url):
        raise cur.error(
            f"{url!r} is not a git URL: use https://, http://, git://, ssh://, file:// "
            "or user@host:path (for a local checkout use path:)"
        )
    return url


def _checkout(cur: Node) -> Path:
    # A checkout usually sits beside the project (path: ../linux), so it may leave the
    # matrix directory; it is only ever read.
    path = local_path(cur, "directory", outside_ok=True)
    if not (path / ".git").exists():
        raise cur.error(f"not a git checkout (no .git): {path}")
    return path


def _ref(cur: Node) -> str:
    ref = string(cur, "a git ref", raw_numbers=True)
    if ref and not _GIT_REF.fullmatch(ref):
        raise cur.error(f"{ref!r} is not a git ref: no spaces, and it must not start with '-'")
    return ref


def _kconfig(cur: Node) -> Kconfig:
    fields = mapping(cur, KCONFIG_KEYS)
    default = Kconfig()
    return Kconfig(
        base=get(fields, "base", _make_target, default.base),
        arch=get(fields, "arch", lambda n: choice(n, ARCHES), default.arch),
        fragments=get(fields, "fragments", lambda n: local_paths(n, "file"), ()),
        on_mismatch=get(
            fields, "on_mismatch", lambda n: OnMismatch(choice(n, ON_MISMATCH)), default.on_mismatch
        ),
    )


def _make_target(cur: Node) -> str:
    target = string(cur, "a make target")
    if not _MAKE_TARGET.fullmatch(target):
        raise cur.error(
            f"{target!r} is not a base config target: it must look like tinyconfig or "
            "defconfig (lowercase letters, digits, '_', ending in 'config'); "
            "add .config fragments with fragments:"
        )
    return target


def _build_timeout(cur: Node) -> float:
    return get(mapping(cur, ("timeout",)), "timeout", seconds, 3600.0)


def _guest(cur: Node) -> Guest:
    fields = mapping(cur, GUEST_KEYS)
    default = Guest()
    return Guest(
        cpus=get(fields, "cpus", lambda n: integer(n, 1, 64), default.cpus),
        memory_mb=get(fields, "memory", lambda n: integer(n, 128, 65536), default.memory_mb),
        accel=get(fields, "accel", lambda n: AccelChoice(choice(n, ACCELS)), default.accel),
        boot_timeout=get(fields, "boot_timeout", seconds, default.boot_timeout),
        cmdline=get(fields, "cmdline", string, default.cmdline),
        selftests=get(fields, "selftests", _selftests_dir, default.selftests),
    )


def _selftests_dir(cur: Node) -> Path:
    path = local_path(cur, "directory")
    if not (path / "Makefile").is_file():
        raise cur.error(f"{path} has no Makefile: the guest programs are built with make")
    return path


def _tests(cur: Node) -> tuple[Test, ...]:
    seen: dict[str, int] = {}
    return tuple(_test(item, seen) for item in sequence(cur, "a list of tests"))


def _test(cur: Node, seen: dict[str, int]) -> Test:
    fields = mapping(cur, TEST_KEYS, required=("name", "kind"))
    name = _name(fields["name"])
    if "." in name:
        raise fields["name"].error(
            f"test name {name!r} must not contain '.': expect: uses it to separate test.subtest"
        )
    claim(fields["name"], name, seen, "test")
    suite = suites.get(choice(fields["kind"], suites.kinds()))
    command = get(fields, "command", string, "")
    _obey(cur, fields, "command", suite.command_rule, suite.kind, empty=not command)
    timeout = get(fields, "timeout", seconds, 300.0)
    repeats = get(fields, "repeats", lambda n: integer(n, 1), 1)
    retries = get(fields, "retries", lambda n: integer(n, 0, MAX_RETRIES), 0)
    if retries and suite.perf:
        raise fields["retries"].error(
            f"a {suite.kind} test is a perf test: each round is a sample, and rerunning "
            "the slow ones would bias them; retries is for functional tests"
        )
    args: tuple[tuple[str, str], ...] = get(fields, "args", _args, ())
    _obey(cur, fields, "args", suite.args_rule, suite.kind, empty=False)
    schema = suite.args_schema
    if schema is None:
        values = dict(args)
    elif "args" in fields:
        values = _schema_args(fields["args"], schema)
    else:
        values = {arg.name: arg.default for arg in schema}
    return Test(
        name=name,
        kind=suite.kind,
        command=command,
        timeout=timeout,
        repeats=repeats,
        retries=retries,
        args=args,
        options=suite.options(values),
        about=get(fields, "about", lambda n: _about(n, name), ()),
    )


def _about(cur: Node, test: str) -> tuple[tuple[str, str], ...]:
    """What each subtest shows: subtest name -> one short line of text.

    Which subtests a test reports is known only once it has run, so a key
    naming none of them is not an error here (it is simply never shown).
    """
    pairs: list[tuple[str, str]] = []
    for key, child in entries(cur):
        if not key.strip() or len(key) > ABOUT_KEY:
            raise child.error(f"a subtest name must be 1-{ABOUT_KEY} characters, got {key!r}")
        if key.startswith(test + "."):
            raise child.error(
                f"{key!r}: name the subtest as the test reports it, without the test's "
                f"name (write {key[len(test) + 1 :]!r})"
            )
        text = string(child, "a short sentence", raw_numbers=True).strip()
        if not text or "\n" in text:
            raise child.error("must be one line of text, not empty")
        if len(text) > ABOUT_TEXT:
            raise child.error(
                f"is {len(text)} characters long; at most {ABOUT_TEXT} (a short sentence: "
                "it is shown next to the subtest)"
            )
        pairs.append((key, text))
    return tuple(pairs)


def _obey(
    cur: Node, fields: dict[str, Node], key: str, rule: suites.Rule, kind: str, *, empty: bool
) -> None:
    """Check a test entry's key against its kind's rule for it."""
    if rule.need is suites.Need.REQUIRED:
        if key not in fields:
            raise cur.missing(key, rule.missing(kind))
        if empty:
            raise fields[key].error(rule.empty(kind))
    if rule.need is suites.Need.FORBIDDEN and key in fields:
        raise fields[key].error(rule.forbidden(kind))


def _schema_args(cur: Node, schema: tuple[suites.Arg, ...]) -> dict[str, str]:
    """A kind's args checked against its schema; absent keys get their defaults."""
    names = [arg.name for arg in schema]
    fields = mapping(cur, names, required=[arg.name for arg in schema if arg.required])
    values: dict[str, str] = {}
    for arg in schema:
        node = fields.get(arg.name)
        if node is None:
            values[arg.name] = arg.default
            continue
        if arg.choices:
            value = choice(node, arg.choices)
        else:
            value = string(node, arg.what, raw_numbers=True)
        problem = arg.check(value) if arg.check is not None else None
        if problem is not None:
            raise node.error(problem)
        values[arg.name] = value
    return values


def _args(cur: Node) -> tuple[tuple[str, str], ...]:
    pairs: list[tuple[str, str]] = []
    for key, child in entries(cur):
        value = scalar(child, "a string, number or boolean")
        if value is None:
            raise wrong(child, "a string, number or boolean")
        pairs.append((key, str(value)))
    return tuple(sorted(pairs))


def _variants(cur: Node, tests: tuple[Test, ...]) -> tuple[Variant, ...]:
    items = sequence(cur, "a list of variants")
    if not items:
        raise cur.error("must list at least one variant")
    seen: dict[str, int] = {}
    return tuple(_variant(item, tests, seen) for item in items)


def _variant(cur: Node, tests: tuple[Test, ...], seen: dict[str, int]) -> Variant:
    fields = mapping(cur, VARIANT_KEYS, required=("name",))
    name = _name(fields["name"])
    claim(fields["name"], name, seen, "variant")
    patches, thread = get(fields, "series", _series, _NO_SERIES)
    return Variant(
        name=name,
        series=patches,
        mail=thread,
        reverts=get(fields, "reverts", _reverts, ()),
        fragments=get(fields, "kconfig", lambda n: local_paths(n, "file"), ()),
        expect=get(fields, "expect", lambda n: _expect(n, tests), ()),
        bisect=get(fields, "bisect", boolean, False),
    )


MAIL_KEYS = ("b4", "mbox", "message-id")
_NO_SERIES: tuple[tuple[Path, ...], MailSource | None] = ((), None)
_URL = re.compile(r"https?://", re.IGNORECASE)


def _series(cur: Node) -> tuple[tuple[Path, ...], MailSource | None]:
    """Patch files, or a thread for b4: {b4: MESSAGE-ID or lore URL}, {mbox: FILE,
    message-id: ID} or a lore URL (kernel/mail.py)."""
    if isinstance(cur.node, yaml.MappingNode):
        return (), _mail_source(cur)
    if isinstance(cur.node, yaml.ScalarNode):
        text = scalar(cur, "a path, a list of paths, a lore URL or {b4: ...} / {mbox: ...}")
        if isinstance(text, str) and _URL.match(text):
            return (), MailSource(message_id=_message_id(cur, url_ok=True))
    items = sequence(cur, "a path or a list of paths", one_ok=True)
    for item in items:
        value = scalar(item, "a path")
        if isinstance(value, str) and _URL.match(value):
            raise item.error("a lore URL is a series of its own: write `series: URL`, not a list")
    return local_paths(cur, "file or directory"), None


def _mail_source(cur: Node) -> MailSource:
    fields = mapping(cur, MAIL_KEYS)
    if ("b4" in fields) == ("mbox" in fields):
        raise cur.error(
            "a series from the list is {b4: MESSAGE-ID or lore URL} (fetched with b4) or "
            "{mbox: FILE, message-id: ID} (offline): give one of b4 or mbox"
        )
    if "b4" in fields:
        if "message-id" in fields:
            raise fields["message-id"].error("b4: names the message already; drop message-id")
        return MailSource(message_id=_message_id(fields["b4"], url_ok=True))
    return MailSource(
        message_id=get(fields, "message-id", _message_id, ""),
        mbox=local_path(fields["mbox"], "file or directory"),
    )


def _message_id(cur: Node, *, url_ok: bool = False) -> str:
    text = string(cur, "a Message-ID")
    try:
        if url_ok and _URL.match(text):
            return mail.message_id_from_url(text)
        return mail.message_id(text)
    except ValueError as exc:
        raise cur.error(str(exc)) from None


def _reverts(cur: Node) -> tuple[Revert, ...]:
    return tuple(_revert(item) for item in sequence(cur, "a list of reverts"))


def _revert(cur: Node) -> Revert:
    fields = mapping(cur, ("commit", "patch"))
    if len(fields) != 1:
        got = "both" if fields else "neither"
        raise cur.error(f"needs exactly one of commit or patch; got {got}")
    if "patch" in fields:
        return Revert(patch=local_path(fields["patch"], "file"))
    commit = string(fields["commit"], "a commit hash", raw_numbers=True)
    if not _COMMIT.fullmatch(commit):
        raise fields["commit"].error(f"{commit!r} is not a commit hash (7 to 40 hex digits)")
    return Revert(commit=commit)


def _expect(cur: Node, tests: tuple[Test, ...]) -> tuple[tuple[str, str], ...]:
    declared = [test.name for test in tests]
    pairs: list[tuple[str, str]] = []
    for key, child in entries(cur):
        test, dot, subtest = key.partition(".")
        if test not in declared:
            names = ", ".join(declared) or "none"
            raise child.error(f"{test!r} is not a declared test (declared tests: {names})")
        if dot and not subtest:
            raise child.error(f"{key!r} has an empty subtest name after '.'")
        pairs.append((key, choice(child, OUTCOMES)))
    return tuple(pairs)


def _quarantine(cur: Node, tests: tuple[Test, ...]) -> tuple[Quarantine, ...]:
    """Known-bad tests: `- {test: NAME or NAME.SUBTEST, reason: TEXT, expires: YYYY-MM-DD}`."""
    declared = [test.name for test in tests]
    seen: dict[str, int] = {}
    out: list[Quarantine] = []
    for item in sequence(cur, "a list of {test, reason, expires} entries"):
        fields = mapping(item, QUARANTINE_KEYS, required=QUARANTINE_KEYS)
        key = string(fields["test"], "a test name", raw_numbers=True)
        test, dot, subtest = key.partition(".")
        if test not in declared:
            names = ", ".join(declared) or "none"
            raise fields["test"].error(
                f"{quote(key, QUOTE)} is not a declared test (declared tests: {names})"
            )
        if dot and not subtest:
            raise fields["test"].error(f"{quote(key, QUOTE)} has an empty subtest name after '.'")
        claim(fields["test"], key, seen, "quarantined test")
        reason = string(fields["reason"], "a short reason", raw_numbers=True).strip()
        if not reason or "\n" in reason or len(reason) > ABOUT_TEXT:
            raise fields["reason"].error(
                f"must be one line of 1-{ABOUT_TEXT} characters (it is shown in every report)"
            )
        out.append(Quarantine(key, reason, _date(fields["expires"])))
    return tuple(out)


def _date(cur: Node) -> date:
    text = string(cur, "a date (YYYY-MM-DD)", raw_numbers=True)
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            raise ValueError(text)
        return date.fromisoformat(text)
    except ValueError:
        raise cur.error(
            f"{quote(text, QUOTE)} is not a date: write YYYY-MM-DD, e.g. 2026-12-31"
        ) from None


def _bisect(cur: Node) -> Bisect:
    """`bisect: true`, or `bisect: {enabled: true, runs: 10}` (runs of the test per step)."""
    if isinstance(cur.node, yaml.MappingNode):
        fields = mapping(cur, BISECT_KEYS)
        return Bisect(
            enabled=get(fields, "enabled", boolean, True),
            runs=get(fields, "runs", lambda n: integer(n, 1, MAX_BISECT_RUNS), Bisect.runs),
        )
    return Bisect(enabled=boolean(cur))


def _perf(cur: Node) -> Perf:
    fields = mapping(cur, PERF_KEYS)
    default = Perf()
    return Perf(
        aa_control=get(fields, "aa_control", boolean, default.aa_control),
        # Each rerun costs a whole batch of boots: a few at most.
        max_reruns=get(fields, "max_reruns", lambda n: integer(n, 0, 5), default.max_reruns),
        sequential=get(fields, "sequential", boolean, default.sequential),
        # Bounds past 50 % say nothing; under 0.5 % no boot-to-boot noise here reaches them.
        equivalence=get(fields, "equivalence", lambda n: percent(n, 0.5, 50), default.equivalence),
        error_rate=get(fields, "error_rate", lambda n: percent(n, 0.1, 20), default.error_rate),
        control=get(
            fields, "control", lambda n: Control(choice(n, tuple(Control))), default.control
        ),
        budget=get(fields, "budget", duration, default.budget),
    )


def _report(cur: Node | None, base: Path, variants: tuple[Variant, ...]) -> Report:
    if cur is None:
        return Report(dir=base / "reports")
    fields = mapping(cur, REPORT_KEYS)
    return Report(
        dir=get(fields, "dir", lambda n: local_path(n, ""), base / "reports"),
        formats=get(fields, "formats", _formats, FORMATS),
        baseline=get(fields, "baseline", lambda n: _baseline(n, variants), ""),
        questions=get(fields, "questions", lambda n: _questions(n, variants), ()),
    )


def _questions(cur: Node, variants: tuple[Variant, ...]) -> tuple[tuple[str, str], ...]:
    """[[a, b], ...]: pairs of declared variants, each asked "is a different from b?"."""
    out = []
    for item in sequence(cur, "a list of [variant, variant] pairs"):
        pair = sequence(item, "a pair of variant names: [a, b]")
        if len(pair) != 2:
            raise item.error(f"must name two variants, got {len(pair)}")
        a, b = (_baseline(n, variants) for n in pair)
        if not a or not b:
            raise item.error("must name two declared variants")
        if a == b:
            raise item.error(f"asks whether {a!r} differs from itself")
        out.append((a, b))
    return tuple(out)


def _formats(cur: Node) -> tuple[str, ...]:
    formats: list[str] = []
    for item in sequence(cur, "a format or a list of formats", one_ok=True):
        value = choice(item, FORMATS)
        if value in formats:
            raise item.error(f"duplicate format {value!r}")
        formats.append(value)
    if not formats:
        raise cur.error(f"must name at least one of {', '.join(FORMATS)}")
    return tuple(formats)


def _baseline(cur: Node, variants: tuple[Variant, ...]) -> str:
    name = string(cur, "a variant name", raw_numbers=True)
    names = [variant.name for variant in variants]
    if name and name not in names:
        raise cur.error(f"{name!r} is not a declared variant (variants: {', '.join(names)})")
    return name
