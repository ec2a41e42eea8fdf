"""test_progs output (6.1's own format, or KTAP) into TestResults."""

from __future__ import annotations

import textwrap

from orchestrator.results import TestResult, Verdict
from orchestrator.suites.test_progs import parse


def out(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def verdicts(result: TestResult) -> dict[str, Verdict]:
    """Every result in the tree, by full name."""
    found = {result.name: result.verdict}
    for sub in result.subtests:
        found |= verdicts(sub)
    return found


# As 6.1's test_progs prints it: a failed test's log, then its subtests, then
# the test; the failed tests again after "All error logs:"; the summary.
HTAB = out(
    """
    test_htab:PASS:setup 0 nsec
    test_htab:FAIL:map_update unexpected error: -12 (errno 12)
    #12/1    htab/lookup:OK
    test_update:FAIL:value expected 42, got 0
    #12/2    htab/update:FAIL
    #12      htab:FAIL
    #13      htab_reuse:OK
    #45      foo:SKIP

    All error logs:
    test_htab:FAIL:map_update unexpected error: -12 (errno 12)
    test_update:FAIL:value expected 42, got 0
    #12/2    htab/update:FAIL
    #12      htab:FAIL
    Summary: 1/1 PASSED, 1 SKIPPED, 1 FAILED
    """
)


def test_tests_and_subtests_with_reasons() -> None:
    result = parse(HTAB, "bpf_htab")
    assert verdicts(result) == {
        "bpf_htab": Verdict.FAIL,
        "bpf_htab.htab": Verdict.FAIL,
        "bpf_htab.htab.lookup": Verdict.PASS,
        "bpf_htab.htab.update": Verdict.FAIL,
        "bpf_htab.htab_reuse": Verdict.PASS,
        "bpf_htab.foo": Verdict.SKIP,
    }
    assert result.reason == "1 of 3 failed: htab"
    htab = result.subtests[0]
    assert htab.reason == "test_htab:FAIL:map_update unexpected error: -12 (errno 12)"
    assert htab.subtests[1].reason == "test_update:FAIL:value expected 42, got 0"
    # The repeat under "All error logs:" is not a second result.
    assert [t.name for t in result.subtests] == [
        "bpf_htab.htab", "bpf_htab.htab_reuse", "bpf_htab.foo",
    ]  # fmt: skip
    assert len(htab.subtests) == 2


def test_all_passed() -> None:
    text = "#1/1    a/x:OK\n#1      a:OK\n#2      b:OK\nSummary: 2/1 PASSED, 0 SKIPPED, 0 FAILED\n"
    result = parse(text, "p")
    assert (result.verdict, result.reason) == (Verdict.PASS, "")
    assert verdicts(result)["p.a.x"] is Verdict.PASS


def test_all_skipped() -> None:
    result = parse("#7      tc_redirect:SKIP\nSummary: 0/0 PASSED, 1 SKIPPED, 0 FAILED\n", "p")
    assert (result.verdict, result.reason) == (Verdict.SKIP, "all tests skipped")


def test_filter_matching_nothing_is_an_error() -> None:
    result = parse("Summary: 0/0 PASSED, 0 SKIPPED, 0 FAILED\n", "p")
    assert result.verdict is Verdict.ERROR
    assert "ran no test" in result.reason


def test_no_output_at_all() -> None:
    assert parse("", "p").verdict is Verdict.ERROR
    missing = parse("sh: ./test_progs: not found\n", "p")
    assert (missing.verdict, missing.reason) == (
        Verdict.ERROR,
        "no test_progs results: sh: ./test_progs: not found",
    )


def test_crash_mid_run() -> None:
    # The crash handler reports the running test as failed, then the signal.
    text = out(
        """
        #3      align:OK
        #4/1    crashy/first:FAIL
        #4      crashy:FAIL
        Caught signal #11!
        Stack trace:
        ./test_progs(crash_handler+0x1f)[0x55d0c0]
        """
    )
    result = parse(text, "p")
    assert result.verdict is Verdict.FAIL
    assert result.reason.startswith("test_progs crashed: Caught signal #11! (after #4 crashy)")
    assert verdicts(result)["p.align"] is Verdict.PASS
    assert verdicts(result)["p.crashy.first"] is Verdict.FAIL


def test_truncated_output_is_a_failure() -> None:
    # Cut after two subtests: the test's own line and the summary never came.
    text = "#1      first:OK\n#2/1    second/a:OK\n#2/2    second/b:OK\n"
    result = parse(text, "p")
    assert result.verdict is Verdict.FAIL
    assert "did not finish: no Summary line (after #2/2 second/b)" in result.reason
    second = result.subtests[1]
    assert (second.name, second.verdict) == ("p.second", Verdict.ERROR)
    assert [s.verdict for s in second.subtests] == [Verdict.PASS, Verdict.PASS]


def test_truncated_after_a_failed_subtest() -> None:
    result = parse("#2/1    second/a:FAIL\n", "p")
    assert verdicts(result) == {
        "p": Verdict.FAIL, "p.second": Verdict.FAIL, "p.second.a": Verdict.FAIL,
    }  # fmt: skip


def test_summary_counting_failures_it_did_not_print() -> None:
    result = parse("#1      a:OK\nSummary: 1/0 PASSED, 0 SKIPPED, 2 FAILED\n", "p")
    assert (result.verdict, result.reason) == (Verdict.FAIL, "Summary counts 2 failed")


def test_hostile_names_are_kept_not_interpreted() -> None:
    text = out(
        """
        #1/1    weird/a:b:OK
        #1/2    weird/x/y <script>alert(1)</script>:FAIL
        #1      weird:FAIL
        #2      ok 1 - not tap:OK
        #3      \x1b[31mred\x1b[0m:SKIP
        #4      no result here
        # 5     a:OK
        Summary: 1/1 PASSED, 1 SKIPPED, 1 FAILED
        """
    )
    result = parse(text + "\0garbage\0\n" + "x" * 100_000 + "\n", "p")
    names = list(verdicts(result))
    assert names == [
        "p", "p.weird", "p.weird.a:b", "p.weird.x/y <script>alert(1)</script>",
        "p.ok 1 - not tap", "p.\x1b[31mred\x1b[0m",
    ]  # fmt: skip
    assert result.verdict is Verdict.FAIL


def test_a_huge_log_does_not_grow_without_bound() -> None:
    text = (
        "noise: error here\n" * 50_000
        + "#1      a:FAIL\nSummary: 0/0 PASSED, 0 SKIPPED, 1 FAILED\n"
    )
    result = parse(text, "p")
    assert result.subtests[0].reason == "noise: error here"
    assert len(result.subtests[0].reason) <= 300


def test_ktap_output_goes_to_the_ktap_parser() -> None:
    text = out(
        """
        TAP version 13
        1..2
        ok 1 htab
        not ok 2 htab_reuse
        """
    )
    result = parse(text, "p")
    assert verdicts(result) == {
        "p": Verdict.FAIL, "p.htab": Verdict.PASS, "p.htab_reuse": Verdict.FAIL,
    }  # fmt: skip
