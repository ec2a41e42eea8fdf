"""config.load: YAML matrix files into matrix.py records, and every way they can be wrong."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from orchestrator import config
from orchestrator.errors import MatrixError, UserError
from orchestrator.matrix import (
    AccelChoice,
    Guest,
    Kconfig,
    Matrix,
    OnMismatch,
    Report,
    Revert,
    Tree,
    TreeKind,
    Variant,
)
from orchestrator.matrix import Test as MatrixTest
from orchestrator.suites.kselftest import Options as Kselftest


@pytest.fixture
def proj(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project directory with a few patches and fragments, and a fake /usr/src beside it."""
    usr_src = tmp_path / "usr-src"
    usr_src.mkdir()
    (usr_src / "linux-source-6.1.tar.xz").write_bytes(b"")
    monkeypatch.setattr(config, "DEBIAN_SOURCE_DIR", usr_src)
    (tmp_path / "outside.patch").write_text("outside\n")
    (tmp_path / "linux" / ".git").mkdir(parents=True)
    root = tmp_path / "proj"
    (root / "patches" / "series-dir").mkdir(parents=True)
    (root / "kconfigs").mkdir()
    for name in ("patches/a.patch", "patches/x.patch", "patches/series-dir/0001-x.patch"):
        (root / name).write_text("diff\n")
    for name in ("kconfigs/base.config", "kconfigs/extra.config"):
        (root / name).write_text("CONFIG_BPF=y\n")
    return root.resolve()


def write(directory: Path, text: str, name: str = "matrix.yaml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def load(directory: Path, text: str) -> Matrix:
    return config.load(write(directory, text))


FULL = """
    name: bpf-reuse
    tree:
      git: https://git.kernel.org/pub/scm/linux/kernel/git/bpf/bpf-next.git
      ref: master
    kconfig:
      base: defconfig
      arch: x86_64
      fragments: [kconfigs/base.config]
      on_mismatch: warn
    build:
      timeout: 1800
    guest:
      cpus: 4
      memory: 2048
      accel: tcg
      boot_timeout: 90.5
      cmdline: "console=ttyS0 nokaslr"
    tests:
      - name: smoke
        kind: ktap
        command: /bin/true
      - name: htab_reuse
        kind: map_perf
        timeout: 60
        repeats: 3
        args: {threads: 4, entries: 8192, mode: fast, ratio: 0.5}
    report:
      dir: out/reports
      formats: [json, html]
      baseline: upstream
    variants:
      - name: upstream
      - name: fixed
        series: [patches/a.patch, patches/series-dir]
        reverts:
          - commit: 0123abcd
          - patch: patches/x.patch
        kconfig: kconfigs/extra.config
        expect:
          smoke: pass
          htab_reuse.lock_integrity: fail
          htab_reuse: kernel-hang
"""


def test_full_matrix(proj: Path) -> None:
    matrix = load(proj, FULL)
    assert matrix == Matrix(
        path=proj / "matrix.yaml",
        name="bpf-reuse",
        tree=Tree(
            TreeKind.GIT,
            "https://git.kernel.org/pub/scm/linux/kernel/git/bpf/bpf-next.git",
            "master",
        ),
        kconfig=Kconfig("defconfig", "x86_64", (proj / "kconfigs/base.config",), OnMismatch.WARN),
        variants=(
            Variant("upstream"),
            Variant(
                name="fixed",
                series=(proj / "patches/a.patch", proj / "patches/series-dir"),
                reverts=(Revert(commit="0123abcd"), Revert(patch=proj / "patches/x.patch")),
                fragments=(proj / "kconfigs/extra.config",),
                expect=(
                    ("smoke", "pass"),
                    ("htab_reuse.lock_integrity", "fail"),
                    ("htab_reuse", "kernel-hang"),
                ),
            ),
        ),
        report=Report(dir=proj / "out/reports", formats=("json", "html"), baseline="upstream"),
        guest=Guest(
            cpus=4,
            memory_mb=2048,
            accel=AccelChoice.TCG,
            boot_timeout=90.5,
            cmdline="console=ttyS0 nokaslr",
        ),
        tests=(
            MatrixTest(name="smoke", kind="ktap", command="/bin/true"),
            MatrixTest(
                name="htab_reuse",
                kind="map_perf",
                timeout=60.0,
                repeats=3,
                args=(("entries", "8192"), ("mode", "fast"), ("ratio", "0.5"), ("threads", "4")),
            ),
        ),
        build_timeout=1800.0,
    )
    assert matrix.variant("fixed").series[1].is_dir()
    # Closed sets are enums (their values are the words written).
    assert matrix.kconfig.on_mismatch is OnMismatch.WARN and matrix.guest.accel is AccelChoice.TCG
    assert (Kconfig().on_mismatch, Guest().accel) == (OnMismatch.ERROR, AccelChoice.AUTO)


def test_defaults(proj: Path) -> None:
    matrix = config.load(write(proj, "variants: [{name: only}]\n", name="my-matrix.yaml"))
    assert matrix == Matrix(
        path=proj / "my-matrix.yaml",
        name="my-matrix",
        tree=Tree(TreeKind.DEBIAN, str(config.DEBIAN_SOURCE_DIR / "linux-source-6.1.tar.xz")),
        kconfig=Kconfig(),
        variants=(Variant("only"),),
        report=Report(dir=proj / "reports"),
        guest=Guest(),
        tests=(),
        build_timeout=3600.0,
    )
    assert matrix.report.formats == ("json", "junit", "html", "text")
    assert matrix.tree.location.startswith("/")


def test_string_or_list(proj: Path) -> None:
    single = load(
        proj,
        """
        kconfig: {fragments: kconfigs/base.config}
        report: {formats: junit}
        variants:
          - name: a
            series: patches/a.patch
            kconfig: kconfigs/extra.config
        """,
    )
    listed = load(
        proj,
        """
        kconfig: {fragments: [kconfigs/base.config]}
        report: {formats: [junit]}
        variants:
          - name: a
            series: [patches/a.patch]
            kconfig: [kconfigs/extra.config]
        """,
    )
    assert single == listed
    assert single.variants[0].series == (proj / "patches/a.patch",)
    assert single.report.formats == ("junit",)


def test_relative_paths_resolve_against_the_matrix_directory(
    proj: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(
        proj,
        f"""
        variants:
          - name: a
            series:
              - ./patches/./series-dir/../a.patch
              - {tmp_path / "outside.patch"}
        """,
    )
    monkeypatch.chdir(tmp_path)  # the working directory plays no part
    matrix = config.load(Path("proj/matrix.yaml"))
    assert matrix.path == proj / "matrix.yaml"
    assert matrix.variants[0].series == (proj / "patches/a.patch", tmp_path / "outside.patch")


def test_escape_is_judged_from_the_matrix_directory(proj: Path) -> None:
    # sub/ is the matrix directory here, so ../patches escapes it.
    (proj / "sub").mkdir()
    path = write(proj / "sub", "variants: [{name: a, series: ../patches/a.patch}]\n")
    with pytest.raises(MatrixError, match="escapes the matrix directory"):
        config.load(path)


def test_tree_kinds(proj: Path, tmp_path: Path) -> None:
    bare = load(proj, "tree: {debian: linux-source-6.1}\nvariants: [{name: a}]\n")
    assert bare.tree == Tree(TreeKind.DEBIAN, str(tmp_path / "usr-src/linux-source-6.1.tar.xz"))
    (proj / "my.tar.xz").write_bytes(b"")
    local = load(proj, "tree: {debian: my.tar.xz}\nvariants: [{name: a}]\n")
    assert local.tree == Tree(TreeKind.DEBIAN, str(proj / "my.tar.xz"))
    checkout = load(proj, "tree: {path: ../linux, ref: v6.1}\nvariants: [{name: a}]\n")
    assert checkout.tree == Tree(TreeKind.PATH, str(tmp_path / "linux"), "v6.1")
    scp = load(proj, "tree: {git: 'git@github.com:torvalds/linux.git'}\nvariants: [{name: a}]\n")
    assert scp.tree == Tree(TreeKind.GIT, "git@github.com:torvalds/linux.git", "")


def test_unquoted_numbers_are_kept_as_written_where_text_is_meant(proj: Path) -> None:
    matrix = load(
        proj,
        """
        name: 2024.10
        variants:
          - name: 0123
            reverts: [{commit: 1234567}, {commit: 0777000}]
        """,
    )
    assert matrix.name == "2024.10"
    assert matrix.variants[0].name == "0123"
    assert matrix.variants[0].reverts == (Revert(commit="1234567"), Revert(commit="0777000"))


def test_unreadable_file_is_a_matrix_error(tmp_path: Path) -> None:
    with pytest.raises(MatrixError) as info:
        config.load(tmp_path / "nope.yaml")
    assert (info.value.line, info.value.key) == (0, "<file>")
    assert "No such file" in info.value.message
    assert isinstance(info.value, UserError)


def test_message_is_located(proj: Path) -> None:
    path = write(proj, "variants:\n  - name: a\nguest: {cpus: 0}\n")
    with pytest.raises(MatrixError) as info:
        config.load(path)
    assert str(info.value) == f"{path}:3: guest.cpus: must be between 1 and 64, got 0"


V = "variants:\n  - name: a\n"  # a valid variants section, two lines
T = "tests:\n  - {name: smoke, kind: ktap, command: /bin/true}\n"  # one test, two lines

V2 = "variants:\n  - name: a\n  - name: b\n"

BAD: list[tuple[str, str, int, str, str]] = [
    # (id, matrix text,
    #  line, key path, message fragment)
    ("question-not-a-variant", "report: {questions: [[a, c]]}\n" + V2,
     1, "report.questions[0][1]", "'c' is not a declared variant"),
    ("question-of-one", "report:\n  questions:\n    - [a]\n" + V2,
     3, "report.questions[0]", "must name two variants, got 1"),
    ("question-of-itself", "report:\n  questions:\n    - [a, a]\n" + V2,
     3, "report.questions[0]", "whether 'a' differs from itself"),
    ("unknown-top-key", "name: m\ncolour: blue\n" + V,
     2, "colour", "unknown key 'colour'"),
    ("unknown-nested-key", "guest:\n  cpus: 2\n  ram: 5\n" + V,
     3, "guest.ram", "allowed keys"),
    ("cpus-string", "guest:\n  cpus: two\n" + V,
     2, "guest.cpus", "expected an integer, got a string 'two'"),
    ("memory-bool", V + "guest: {memory: true}\n",
     3, "guest.memory", "expected an integer, got a boolean true"),
    ("cpus-float", V + "guest: {cpus: 1.5}\n",
     3, "guest.cpus", "expected an integer, got a number 1.5"),
    ("cpus-range", V + "guest: {cpus: 65}\n",
     3, "guest.cpus", "between 1 and 64"),
    ("bad-accel", V + "guest:\n  accel: xen\n",
     4, "guest.accel", "one of auto, kvm, tcg; got 'xen'"),
    ("missing-variants", "# a comment\nname: m\n",
     2, "variants", "is required"),
    ("empty-variants", "name: m\nvariants: []\n",
     2, "variants", "at least one variant"),
    ("variants-mapping", "variants: {name: a}\n",
     1, "variants", "expected a list of variants, got a mapping"),
    ("duplicate-variant", V + "  - name: b\n  - name: a\n",
     4, "variants[2].name", "duplicate variant name 'a' (first at line 2)"),
    ("unsafe-dotdot", "variants:\n  - name: ../evil\n",
     2, "variants[0].name", "starts with '.'"),
    ("unsafe-space", "variants:\n  - name: a b\n",
     2, "variants[0].name", "contains ' '. It becomes a directory name"),
    ("unsafe-slash", "variants:\n  - name: a/b\n",
     2, "variants[0].name", "not a safe name"),
    ("git-dotdot", "variants:\n  - name: a..b\n",
     2, "variants[0].name", "contains '..', which git does not allow in a branch name"),
    ("git-lock", "variants:\n  - name: v.lock\n",
     2, "variants[0].name", "contains '.lock' at its end, which git does not allow"),
    ("git-dot-end", "name: m.\nvariants:\n  - name: a\n",
     1, "name", "contains '.' at its end"),
    ("name-bool", "name: yes\n" + V,
     1, "name", "got a boolean yes (quote it"),
    ("variant-no-name", "variants:\n  - series: patches/a.patch\n",
     2, "variants[0].name", "is required"),
    ("missing-series", V + "    series: patches/nope.patch\n",
     3, "variants[0].series", "no such file or directory: "),
    ("missing-series-item", V + "    series: [patches/a.patch, nope]\n",
     3, "variants[0].series[1]", "nope"),
    ("series-int", V + "    series: 5\n",
     3, "variants[0].series", "expected a path or a list of paths, got an integer 5"),
    ("escape", V + "    series:\n      - ../outside.patch\n",
     4, "variants[0].series[0]", "escapes the matrix directory"),
    ("duplicate-yaml-key", "guest:\n  cpus: 2\n  cpus: 4\n" + V,
     3, "guest.cpus", "duplicate key 'cpus' (first at line 2)"),
    ("duplicate-top-key", V + "variants: []\n",
     3, "variants", "duplicate key"),
    ("yaml-syntax", V + "    series: [a.patch\nname: m\n",
     4, "<yaml>", "while parsing a flow sequence at line 3"),
    ("yaml-tab", V + "\tname: m\n",
     3, "<yaml>", "cannot start any token"),
    ("two-tree-kinds", "tree:\n  debian: linux-source-6.1\n  git: https://x/y.git\n" + V,
     1, "tree", "exactly one of debian, git, path; got debian and git"),
    ("no-tree-kind", "tree: {ref: master}\n" + V,
     1, "tree", "got none"),
    ("ref-with-debian", "tree: {debian: linux-source-6.1, ref: v1}\n" + V,
     1, "tree.ref", "only allowed with git or path"),
    ("bad-git-url", "tree: {git: /srv/linux}\n" + V,
     1, "tree.git", "not a git URL"),
    ("missing-tarball", "tree: {debian: linux-source-9.9}\n" + V,
     1, "tree.debian", "install the linux-source-9.9 package"),
    ("not-a-checkout", "tree:\n  path: patches\n" + V,
     2, "tree.path", "not a git checkout"),
    ("bad-base", "kconfig: {base: kvm_guest.config}\n" + V,
     1, "kconfig.base", "not a base config target"),
    ("bad-arch", "kconfig: {arch: arm64}\n" + V,
     1, "kconfig.arch", "one of x86_64"),
    ("missing-fragment", "kconfig:\n  fragments: [kconfigs/base.config, kconfigs/no.config]\n" + V,
     2, "kconfig.fragments[1]", "no such file"),
    ("fragment-is-dir", "kconfig: {fragments: kconfigs}\n" + V,
     1, "kconfig.fragments", "not a file"),
    ("bad-build-timeout", "build: {timeout: 0}\n" + V,
     1, "build.timeout", "must be a positive number of seconds, got 0"),
    ("baseline-unknown", V + "report:\n  baseline: nope\n",
     4, "report.baseline", "'nope' is not a declared variant (variants: a)"),
    ("format-unknown", V + "report: {formats: [json, pdf]}\n",
     3, "report.formats[1]", "got 'pdf'"),
    ("format-duplicate", V + "report: {formats: [json, json]}\n",
     3, "report.formats[1]", "duplicate format 'json'"),
    ("report-escape", V + "report: {dir: ../out}\n",
     3, "report.dir", "escapes the matrix directory"),
    ("expect-unknown-test", T + V + "    expect:\n      smoke: pass\n      nosuch.x: fail\n",
     7, "variants[0].expect.nosuch.x", "'nosuch' is not a declared test (declared tests: smoke)"),
    ("expect-bad-value", T + V + "    expect: {smoke.case1: broken}\n",
     5, "variants[0].expect.smoke.case1", "kernel-hang, boot-fail; got 'broken'"),
    ("expect-empty-subtest", T + V + "    expect: {'smoke.': fail}\n",
     5, "variants[0].expect.smoke.", "empty subtest"),
    ("revert-both", V + "    reverts:\n      - commit: 0123abcd\n        patch: patches/x.patch\n",
     4, "variants[0].reverts[0]", "exactly one of commit or patch; got both"),
    ("revert-neither", V + "    reverts: [{}]\n",
     3, "variants[0].reverts[0]", "got neither"),
    ("revert-bad-commit", V + "    reverts: [{commit: main}]\n",
     3, "variants[0].reverts[0].commit", "'main' is not a commit hash"),
    ("revert-not-list", V + "    reverts: {commit: 0123abcd}\n",
     3, "variants[0].reverts", "expected a list of reverts"),
    ("test-no-kind", "tests:\n  - name: t\n" + V,
     2, "tests[0].kind", "is required"),
    ("test-bad-kind", "tests:\n  - {name: t, kind: kunit}\n" + V,
     2, "tests[0].kind", "one of ktap, map_perf, kselftest"),
    ("ktap-no-command", "tests:\n  - {name: t, kind: ktap}\n" + V,
     2, "tests[0].command", "required for a ktap test"),
    ("test-dotted-name", "tests:\n  - {name: a.b, kind: kselftest}\n" + V,
     2, "tests[0].name", "must not contain '.'"),
    ("test-duplicate", T + "  - {name: smoke, kind: kselftest}\n" + V,
     3, "tests[1].name", "duplicate test name 'smoke'"),
    ("test-repeats", "tests:\n  - {name: t, kind: kselftest, repeats: 0}\n" + V,
     2, "tests[0].repeats", "at least 1"),
    ("test-timeout", "tests:\n  - {name: t, kind: kselftest, timeout: -1}\n" + V,
     2, "tests[0].timeout", "positive"),
    ("kselftest-no-args", "tests:\n  - {name: t, kind: kselftest}\n" + V,
     2, "tests[0].args", "required for a kselftest test"),
    ("kselftest-no-filter", "tests:\n  - name: t\n    kind: kselftest\n    args: {deny: x}\n" + V,
     4, "tests[0].args.filter", "is required"),
    ("kselftest-unknown-arg",
     "tests:\n  - name: t\n    kind: kselftest\n    args:\n      filter: htab\n      dry: 1\n"
     + V,
     6, "tests[0].args.dry", "unknown key 'dry'; allowed keys: filter, collection, deny"),
    ("kselftest-bad-filter",
     "tests:\n  - name: t\n    kind: kselftest\n    args:\n      filter: \"a; reboot\"\n" + V,
     5, "tests[0].args.filter", "'a; reboot' is not a list of test_progs names"),
    ("kselftest-option-filter", "tests:\n  - {name: t, kind: kselftest, args: {filter: -v}}\n" + V,
     2, "tests[0].args.filter", "starting with a letter"),
    ("kselftest-bad-deny",
     "tests:\n  - name: t\n    kind: kselftest\n    args: {filter: a, deny: 'b c'}\n" + V,
     4, "tests[0].args.deny", "without spaces"),
    ("kselftest-collection",
     "tests:\n  - name: t\n    kind: kselftest\n    args: {filter: a, collection: net/x}\n" + V,
     4, "tests[0].args.collection", "one of bpf/test_progs; got 'net/x'"),
    ("kselftest-command", "tests:\n  - {name: t, kind: kselftest, command: /bin/sh}\n" + V,
     2, "tests[0].command", "not allowed for a kselftest test"),
    ("test-args-list", "tests:\n  - name: t\n    kind: map_perf\n    args: {n: [1]}\n" + V,
     4, "tests[0].args.n", "got a list"),
    ("test-args-null", "tests:\n  - name: t\n    kind: map_perf\n    args:\n      n:\n" + V,
     5, "tests[0].args.n", "got an empty value"),
    ("custom-tag", "name: !evil x\n" + V,
     1, "name", "a value tagged !evil"),
    ("complex-key", "? [a]\n: 1\n" + V,
     1, "<document>", "keys must be plain words"),
    ("empty-file", "",
     1, "<document>", "empty"),
    ("comments-only", "# nothing\n",
     1, "<document>", "empty"),
    ("top-level-list", "- name: a\n",
     1, "<document>", "expected a mapping, got a list"),
    ("top-level-scalar", "hello\n",
     1, "<document>", "expected a mapping, got a string 'hello'"),
    ("two-documents", V + "---\n" + V,
     3, "<yaml>", "expected a single document"),
    ("about-list", "tests:\n  - name: t\n    kind: ktap\n    command: x\n    about: [a]\n" + V,
     5, "tests[0].about", "expected a mapping, got a list"),
    ("about-not-text", "tests:\n  - name: t\n    kind: ktap\n    command: x\n"
     "    about: {a: {b: c}}\n" + V,
     5, "tests[0].about.a", "expected a short sentence, got a mapping"),
    ("about-bool", "tests:\n  - name: t\n    kind: ktap\n    command: x\n"
     "    about: {a: yes}\n" + V,
     5, "tests[0].about.a", "got a boolean yes (quote it if you meant the text 'yes')"),
    ("about-empty", "tests:\n  - name: t\n    kind: ktap\n    command: x\n"
     "    about:\n      a: '  '\n" + V,
     6, "tests[0].about.a", "one line of text, not empty"),
    ("about-two-lines", "tests:\n  - name: t\n    kind: ktap\n    command: x\n"
     "    about:\n      a: |\n        one\n        two\n" + V,
     6, "tests[0].about.a", "one line of text"),
    ("about-too-long", "tests:\n  - name: t\n    kind: ktap\n    command: x\n"
     "    about:\n      a: " + "w" * 201 + "\n" + V,
     6, "tests[0].about.a", "is 201 characters long; at most 200"),
    ("about-key-with-test-name", "tests:\n  - name: t\n    kind: ktap\n    command: x\n"
     "    about:\n      t.lock: problem 1\n" + V,
     6, "tests[0].about.t.lock", "without the test's name (write 'lock')"),
    ("about-key-too-long", "tests:\n  - name: t\n    kind: ktap\n    command: x\n"
     "    about:\n      " + "k" * 129 + ": x\n" + V,
     6, "tests[0].about." + "k" * 129, "a subtest name must be 1-128 characters"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "line", "key", "fragment"), [c[1:] for c in BAD], ids=[c[0] for c in BAD]
)
def test_bad_matrix(proj: Path, text: str, line: int, key: str, fragment: str) -> None:
    path = proj / "matrix.yaml"
    path.write_text(text)
    with pytest.raises(MatrixError) as info:
        config.load(path)
    error = info.value
    assert (error.line, error.key) == (line, key), error.message
    assert fragment in error.message
    assert error.file == path


def test_kselftest_test(proj: Path) -> None:
    matrix = load(
        proj,
        """
        tests:
          - name: bpf_htab
            kind: kselftest
            args: {filter: "htab*,lru_bug/*", deny: 123}
          - {name: smoke, kind: ktap, command: /bin/true}
        variants:
          - name: a
            expect: {bpf_htab.htab.sub: fail}
        """,
    )
    selftest, smoke = matrix.tests
    assert selftest.kind == "kselftest" and selftest.command == ""
    assert selftest.options == Kselftest(filter="htab*,lru_bug/*", deny="123")
    assert selftest.options.collection == "bpf/test_progs"
    assert smoke.options is None


def test_about_says_what_subtests_show(proj: Path) -> None:
    matrix = load(
        proj,
        """
        tests:
          - name: htab_reuse
            kind: ktap
            command: /opt/selftests/htab_reuse
            about:
              lock_integrity: "problem 1: a reused element's lock is reset under its reader"
              lookup_identity: "  problem 2: another key's element  "
              nested.sub: 42
              never_reported: not checked before the run
          - {name: smoke, kind: ktap, command: /bin/true}
        variants: [{name: a}]
        """,
    )
    htab, smoke = matrix.tests
    assert htab.about == (
        ("lock_integrity", "problem 1: a reused element's lock is reset under its reader"),
        ("lookup_identity", "problem 2: another key's element"),
        ("nested.sub", "42"),
        ("never_reported", "not checked before the run"),
    )
    assert smoke.about == ()
    assert hash(htab)  # the matrix's records stay hashable


def test_the_default_matrices_say_what_htab_reuse_subtests_show() -> None:
    root = Path(__file__).resolve().parents[2]
    if not (config.DEBIAN_SOURCE_DIR / "linux-source-6.1.tar.xz").is_file():
        pytest.skip("the default matrices name Debian's linux-source-6.1")
    for name in ("matrix.yaml", "matrix-quick.yaml"):
        matrix = config.load(root / name)
        htab = next(t for t in matrix.tests if t.name == "htab_reuse")
        about = dict(htab.about)
        assert set(about) == {"lock_integrity", "lookup_identity", "same_key_reuse"}, name
        assert about["lock_integrity"].startswith("problem 1")
        assert about["lookup_identity"].startswith("problem 2")
        assert about["same_key_reuse"].startswith("problem 2")


def test_unsafe_file_stem_needs_a_name(proj: Path) -> None:
    path = write(proj, V, name=".hidden.yaml")
    with pytest.raises(MatrixError) as info:
        config.load(path)
    assert (info.value.line, info.value.key) == (1, "name")
    assert "file name is not usable" in info.value.message


def test_missing_default_tarball(proj: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "DEBIAN_SOURCE_DIR", proj / "nowhere")
    with pytest.raises(MatrixError) as info:
        load(proj, V)
    assert (info.value.line, info.value.key) == (1, "tree")
    assert "install the linux-source-6.1 package" in info.value.message


def test_questions_are_pairs_of_variants(proj: Path) -> None:
    m = load(proj, "report: {questions: [[b, a]]}\n" + V2)
    assert m.report.questions == (("b", "a"),)
