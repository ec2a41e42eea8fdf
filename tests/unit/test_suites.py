"""The registry of test kinds: the built-in kinds, and a toy kind plugged in from here.

A kind is a Suite registered under its word: config.py checks a test entry
by its rules, run_test.py runs the command it builds and reads the output
with its parser.  The toy kinds below exist only while a test uses them.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from orchestrator import config, suites
from orchestrator.errors import MatrixError
from orchestrator.matrix import Test
from orchestrator.results import TestResult, Verdict
from orchestrator.suites import kselftest
from orchestrator.suites.kselftest import Options as Kselftest
from orchestrator.vm.run_test import command_for, run_test
from tests.unit.test_run_test import FakeSession


def _one_word(value: str) -> str | None:
    return None if value.isalnum() else f"{value!r} is not one word"


class Probe(suites.Suite):
    """A toy kind: `echo` a word some times; the output passes when the word is there."""

    kind = "probe"
    command_rule = suites.Rule(suites.Need.FORBIDDEN, "it runs echo")
    args_rule = suites.Rule(suites.Need.REQUIRED, "e.g. {word: hi}")
    args_schema = (
        suites.Arg("word", "a word", required=True, check=_one_word),
        suites.Arg("times", choices=("1", "2"), default="1"),
    )

    def options(self, args: Mapping[str, str]) -> tuple[str, int]:
        return args["word"], int(args["times"])

    def command(self, test: Test) -> str:
        assert isinstance(test.options, tuple)
        word, times = test.options
        return f"echo {' '.join([word] * times)}"

    def parse(self, stdout: str, name: str) -> TestResult:
        words = stdout.split()
        return TestResult(name, Verdict.PASS if words else Verdict.FAIL, reason=" ".join(words))


class Plain(suites.Suite):
    """The least a kind can be: a word.  The rest is the defaults."""

    kind = "plain"


@pytest.fixture
def toys() -> Iterator[None]:
    suites.register(Probe())
    suites.register(Plain())
    yield
    suites.unregister("probe")
    suites.unregister("plain")


def load(tmp_path: Path, tests: str) -> tuple[Test, ...]:
    path = tmp_path / "matrix.yaml"
    tree = tmp_path / "linux"
    (tree / ".git").mkdir(parents=True, exist_ok=True)
    text = (
        f"tree: {{path: {tree}}}\ntests:\n{textwrap.indent(tests, '  ')}variants: [{{name: a}}]\n"
    )
    path.write_text(text)
    return config.load(path).tests


def error(tmp_path: Path, tests: str) -> MatrixError:
    with pytest.raises(MatrixError) as info:
        load(tmp_path, tests)
    return info.value


# --- the built-in kinds -------------------------------------------------------------------


def test_builtin_kinds_in_registration_order() -> None:
    assert suites.kinds() == ("ktap", "map_perf", "kselftest")
    assert [suites.get(k).perf for k in suites.kinds()] == [False, True, False]
    assert suites.suite_for(Test(name="t", kind="map_perf")) is suites.get("map_perf")


def test_unknown_and_duplicate_kinds() -> None:
    with pytest.raises(KeyError, match="no test kind 'kunit'; kinds: ktap, map_perf, kselftest"):
        suites.get("kunit")

    class Again(Plain):
        kind = "ktap"

    with pytest.raises(ValueError, match="test kind 'ktap' is already registered"):
        suites.register(Again())
    assert suites.kinds() == ("ktap", "map_perf", "kselftest")


def test_builtin_commands() -> None:
    ktap = Test(name="p", kind="ktap", command="/opt/p", args=(("n", "2"), ("s", "a b")))
    assert command_for(ktap) == "/opt/p --n=2 '--s=a b'"
    perf = Test(name="m", kind="map_perf", command="/opt/m", args=(("value_size", "8"),))
    assert command_for(perf) == "/opt/m --value_size=8"
    ks = Test(name="k", kind="kselftest", options=Kselftest(filter="htab"))
    assert command_for(ks) == "cd /opt/kselftests/bpf && exec ./test_progs -t htab 2>&1"
    with pytest.raises(ValueError, match="no options"):
        command_for(Test(name="k", kind="kselftest"))


def test_builtin_parsers() -> None:
    ktap = suites.get("ktap").parse("KTAP version 1\n1..1\nok 1 a\n", "p")
    assert ktap.verdict is Verdict.PASS and [s.name for s in ktap.subtests] == ["p.a"]
    progs = suites.get("kselftest").parse(
        "#1 htab:OK\nSummary: 1/0 PASSED, 0 SKIPPED, 0 FAILED\n", "k"
    )
    assert progs.verdict is Verdict.PASS and [s.name for s in progs.subtests] == ["k.htab"]


def test_what_each_kind_needs_in_the_guest() -> None:
    smoke = Test(name="smoke", kind="ktap", command="/x")
    perf = Test(name="perf", kind="map_perf", command="/y")
    ks = Test(name="ks", kind="kselftest", options=Kselftest(filter="htab"))
    built = suites.Installed(errors=(("bpf/test_progs", "no BTF"),))
    assert (
        suites.not_installed(smoke, built, "make failed")
        == "guest programs did not build: make failed"
    )
    assert suites.not_installed(perf, built, "make failed") is not None
    assert suites.not_installed(smoke, built, None) is None
    # A kselftest test needs its collection, not the guest programs.
    assert suites.not_installed(ks, built, "make failed") == "no BTF"
    assert suites.not_installed(ks, suites.Installed(), "make failed") is None
    (installer,) = suites.installers([smoke, ks, perf, ks])
    assert installer is suites.get("kselftest").installer
    assert installer.wanted([smoke, ks]) == ("bpf/test_progs",) and installer.needs(smoke) is None
    assert suites.installers([smoke, perf]) == ()


def test_kselftest_installer_is_ready_once_built(tmp_path: Path) -> None:
    installer = suites.get("kselftest").installer
    assert installer is not None
    kernel = suites.Kernel(tmp_path / "src", tmp_path / "out", tmp_path / "vmlinux", "tree-config")
    assert not installer.ready(tmp_path, kernel, "bpf/test_progs")
    done = kselftest.cache_dir(tmp_path, kernel.key, "bpf/test_progs") / kselftest.DONE
    done.parent.mkdir(parents=True)
    done.touch()
    assert installer.ready(tmp_path, kernel, "bpf/test_progs")


# --- a kind plugged in ----------------------------------------------------------------------


@pytest.mark.usefixtures("toys")
def test_a_new_kind_is_checked_by_config(tmp_path: Path) -> None:
    (probe, plain) = load(
        tmp_path,
        "- {name: p, kind: probe, args: {word: 42, times: '2'}}\n"
        "- {name: q, kind: plain, args: {x: 1}}\n",
    )
    assert probe.options == ("42", 2) and probe.args == (("times", "2"), ("word", "42"))
    assert plain.options is None and plain.command == ""
    (default,) = load(tmp_path, "- {name: p, kind: probe, args: {word: hi}}\n")
    assert default.options == ("hi", 1)


@pytest.mark.parametrize(
    ("entry", "key", "message"),
    [
        ("{name: p, kind: kunit}", "tests[0].kind",
         "must be one of ktap, map_perf, kselftest, probe, plain; got 'kunit'"),
        ("{name: p, kind: probe}", "tests[0].args",
         "is required for a probe test, e.g. {word: hi}"),
        ("{name: p, kind: probe, command: x, args: {word: a}}", "tests[0].command",
         "not allowed for a probe test: it runs echo"),
        ("{name: p, kind: probe, args: {}}", "tests[0].args.word", "is required"),
        ("{name: p, kind: probe, args: {word: a b}}", "tests[0].args.word",
         "'a b' is not one word"),
        ("{name: p, kind: probe, args: {word: true}}", "tests[0].args.word",
         "expected a word, got a boolean true"),
        ("{name: p, kind: probe, args: {word: a, times: '3'}}", "tests[0].args.times",
         "must be one of 1, 2; got '3'"),
        ("{name: p, kind: probe, args: {word: a, loud: yes}}", "tests[0].args.loud",
         "unknown key 'loud'; allowed keys: word, times"),
    ],
)  # fmt: skip
@pytest.mark.usefixtures("toys")
def test_a_new_kinds_rules_are_matrix_errors(
    tmp_path: Path, entry: str, key: str, message: str
) -> None:
    problem = error(tmp_path, f"- {entry}\n")
    assert (problem.key, problem.line) == (key, 3)
    assert message in problem.message


@pytest.mark.usefixtures("toys")
def test_a_new_kind_is_run_and_read_by_its_suite(tmp_path: Path) -> None:
    (probe,) = load(tmp_path, "- {name: p, kind: probe, args: {word: hi, times: '2'}}\n")
    session = FakeSession(output="hi hi\n")
    result = run_test(session, probe, tmp_path / "logs")
    assert session.commands == ["echo hi hi"]
    assert (result.name, result.verdict, result.reason) == ("p", Verdict.PASS, "hi hi")
    failed = run_test(FakeSession(output=""), probe, tmp_path / "logs")
    assert failed.verdict is Verdict.FAIL


@pytest.mark.usefixtures("toys")
def test_the_least_kind_runs_a_ktap_program_and_needs_nothing(tmp_path: Path) -> None:
    (plain,) = load(tmp_path, "- {name: q, kind: plain, command: /bin/q, args: {n: 1}}\n")
    session = FakeSession()
    result = run_test(session, plain, tmp_path / "logs")
    assert session.commands == ["/bin/q --n=1"]
    assert result.verdict is Verdict.PASS and len(result.subtests) == 2
    assert suites.not_installed(plain, suites.Installed(), "make failed") is None
    assert not suites.get("plain").perf and suites.installers([plain]) == ()
