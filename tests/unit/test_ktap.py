"""KTAP / TAP 13 parsing on output shaped like kselftest's and KUnit's."""

from __future__ import annotations

import textwrap

import pytest

from orchestrator.results import TestResult, Verdict
from orchestrator.suites.ktap import parse


def ktap(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def verdicts(result: TestResult) -> dict[str, Verdict]:
    """Every result in the tree, by full name."""
    out = {result.name: result.verdict}
    for sub in result.subtests:
        out |= verdicts(sub)
    return out


KSELFTEST = ktap(
    """
    TAP version 13
    1..3
    # timeout set to 0
    # selftests: bpf: test_verifier
    # #0/u invalid and of negative number OK
    # #0/p invalid and of negative number OK
    # Summary: 1562 PASSED, 0 SKIPPED, 0 FAILED
    ok 1 selftests: bpf: test_verifier
    # selftests: bpf: test_progs
    # WARNING! Selftests relying on bpf_testmod.ko will be skipped.
    ok 2 selftests: bpf: test_progs # SKIP
    # selftests: bpf: test_maps
    # Fork 1024 tasks to 'test_update_delete'
    # test_maps: test_map_large:FAIL:map_update_elem unexpected error: -12 (errno 12)
    # Summary: 41 PASSED, 0 SKIPPED, 1 FAILED
    not ok 3 selftests: bpf: test_maps # exit=1
    """
)


def test_kselftest_runner_output() -> None:
    result = parse(KSELFTEST, "bpf")
    assert result.name == "bpf"
    assert result.verdict is Verdict.FAIL
    assert result.reason == "1 of 3 failed: selftests: bpf: test_maps"
    verifier, progs, maps = result.subtests
    assert (verifier.name, verifier.verdict, verifier.reason) == (
        "bpf.selftests: bpf: test_verifier",
        Verdict.PASS,
        "",
    )
    assert (progs.verdict, progs.reason) == (Verdict.SKIP, "")
    assert maps.verdict is Verdict.FAIL
    # The directive and the diagnostic that says what failed; not the summary.
    assert maps.reason == (
        "exit=1; test_maps: test_map_large:FAIL:map_update_elem unexpected error: -12 (errno 12)"
    )
    assert maps.logs == ()  # logs are paths to files, not the output's lines


def test_kselftest_timeout_is_a_timeout() -> None:
    text = ktap(
        """
        TAP version 13
        1..1
        # selftests: bpf: test_lru_map
        not ok 1 selftests: bpf: test_lru_map # TIMEOUT 45 seconds
        """
    )
    result = parse(text, "bpf")
    (lru,) = result.subtests
    assert (lru.verdict, lru.reason) == (Verdict.TIMEOUT, "TIMEOUT 45 seconds")
    assert result.verdict is Verdict.FAIL


KUNIT = ktap(
    """
    KTAP version 1
    1..2
        KTAP version 1
        # Subtest: example
        1..4
        # example_simple_test: initializing
        ok 1 example_simple_test
        # example_skip_test: initializing
        # example_skip_test: You should not see a line like this
        ok 2 example_skip_test # SKIP this test should be skipped
        # example_fail_test: initializing
        # example_fail_test: EXPECTATION FAILED at lib/kunit/kunit-example-test.c:29
        Expected 1 + 1 == 3, but
            1 + 1 == 2
            3 == 3
        not ok 3 example_fail_test
            KTAP version 1
            # Subtest: example_params_test
            ok 1 example value 3
            # example_params_test: initializing
            ok 2 example value 2 # SKIP unsupported param value
        # example_params_test: pass:1 fail:0 skip:1 total:2
        ok 4 example_params_test
    # example: pass:2 fail:1 skip:1 total:4
    not ok 1 example
        KTAP version 1
        # Subtest: bpf_lru
        1..1
        ok 1 bpf_lru_pop_free
    ok 2 bpf_lru
    # Totals: pass:4 fail:1 skip:2 total:7
    """
)


def test_kunit_nested_ktap_v1() -> None:
    result = parse(KUNIT, "kunit")
    assert verdicts(result) == {
        "kunit": Verdict.FAIL,
        "kunit.example": Verdict.FAIL,
        "kunit.example.example_simple_test": Verdict.PASS,
        "kunit.example.example_skip_test": Verdict.SKIP,
        "kunit.example.example_fail_test": Verdict.FAIL,
        "kunit.example.example_params_test": Verdict.PASS,
        "kunit.example.example_params_test.example value 3": Verdict.PASS,
        "kunit.example.example_params_test.example value 2": Verdict.SKIP,
        "kunit.bpf_lru": Verdict.PASS,
        "kunit.bpf_lru.bpf_lru_pop_free": Verdict.PASS,
    }
    example = result.subtests[0]
    _simple, skip, fail, params = example.subtests
    assert skip.reason == "this test should be skipped"
    assert (
        fail.reason == "example_fail_test: EXPECTATION FAILED at lib/kunit/kunit-example-test.c:29"
    )
    assert params.subtests[1].reason == "unsupported param value"
    assert example.reason == "1 of 4 failed: example_fail_test"
    assert result.reason == "1 of 2 failed: example"


def test_ktap_spec_two_space_indentation() -> None:
    text = ktap(
        """
        KTAP version 1
        1..1
          KTAP version 1
          1..2
          ok 1 test_1
          not ok 2 test_2
        # example failed
        not ok 1 example
        """
    )
    result = parse(text, "spec")
    assert verdicts(result) == {
        "spec": Verdict.FAIL,
        "spec.example": Verdict.FAIL,
        "spec.example.test_1": Verdict.PASS,
        "spec.example.test_2": Verdict.FAIL,
    }
    assert result.subtests[0].reason == "1 of 2 failed: test_2; example failed"


def test_tap13_subtest_headers_and_dashes() -> None:
    text = ktap(
        """
        TAP version 13
        1..2
            # Subtest: htab
            1..2
            ok 1 - reuse
            ok 2 - lru
        ok 1 - htab
            # Subtest: array
            1..1
            ok 1 - lookup
        ok 2 - array
        """
    )
    result = parse(text, "maps")
    assert verdicts(result) == {
        "maps": Verdict.PASS,
        "maps.htab": Verdict.PASS,
        "maps.htab.reuse": Verdict.PASS,
        "maps.htab.lru": Verdict.PASS,
        "maps.array": Verdict.PASS,
        "maps.array.lookup": Verdict.PASS,
    }


def test_bail_out_errors_the_remaining_planned_tests() -> None:
    text = ktap(
        """
        TAP version 13
        1..4
        ok 1 setup
        not ok 2 load_prog
        Bail out! cannot load BPF program: Operation not permitted
        ok 3 never_read
        """
    )
    result = parse(text, "prog")
    assert result.verdict is Verdict.FAIL
    assert result.reason == (
        "Bail out! cannot load BPF program: Operation not permitted; 1 of 2 failed: load_prog"
    )
    assert [(s.name, s.verdict) for s in result.subtests] == [
        ("prog.setup", Verdict.PASS),
        ("prog.load_prog", Verdict.FAIL),
        ("prog.3", Verdict.ERROR),
        ("prog.4", Verdict.ERROR),
    ]
    assert result.subtests[3].reason == (
        "bailed out: cannot load BPF program: Operation not permitted"
    )


def test_bail_out_inside_a_block_stops_everything() -> None:
    text = ktap(
        """
        KTAP version 1
        1..2
            KTAP version 1
            # Subtest: group
            1..3
            ok 1 a
            Bail out! out of memory
        """
    )
    result = parse(text, "prog")
    assert result.verdict is Verdict.FAIL
    assert result.reason.startswith("Bail out! out of memory")
    group, second = result.subtests
    assert (group.name, group.verdict, group.reason) == (
        "prog.group",
        Verdict.FAIL,
        "Bail out! out of memory",
    )
    assert [s.verdict for s in group.subtests] == [Verdict.PASS, Verdict.ERROR, Verdict.ERROR]
    assert (second.name, second.verdict) == ("prog.2", Verdict.ERROR)


def test_plan_mismatch() -> None:
    text = "KTAP version 1\n1..5\nok 1 a\nok 2 b\nok 3 c\n"
    result = parse(text, "prog")
    assert (result.verdict, result.reason) == (Verdict.FAIL, "2 planned tests did not report")
    assert [s.verdict for s in result.subtests] == [Verdict.PASS] * 3

    extra = parse("KTAP version 1\n1..1\nok 1 a\nok 2 b\n", "prog")
    assert (extra.verdict, extra.reason) == (Verdict.FAIL, "2 tests reported, 1 planned")


def test_a_block_that_says_ok_but_missed_its_plan_fails() -> None:
    text = ktap(
        """
        KTAP version 1
        1..1
            KTAP version 1
            # Subtest: group
            1..3
            ok 1 a
        ok 1 group
        """
    )
    result = parse(text, "prog")
    (group,) = result.subtests
    assert (group.verdict, group.reason) == (Verdict.FAIL, "2 planned tests did not report")
    assert result.verdict is Verdict.FAIL


def test_program_killed_inside_a_block() -> None:
    text = ktap(
        """
        KTAP version 1
        1..2
            KTAP version 1
            # Subtest: group
            1..2
            ok 1 a
            ok 2 b
        """
    )
    result = parse(text, "prog")
    (group,) = result.subtests
    assert (group.name, group.verdict) == ("prog.group", Verdict.FAIL)
    assert group.reason == "no result line after its subtests"
    assert [s.verdict for s in group.subtests] == [Verdict.PASS, Verdict.PASS]
    assert result.reason == "1 planned tests did not report; 1 of 1 failed: group"


def test_todo_and_xfail() -> None:
    text = ktap(
        """
        TAP version 13
        1..4
        not ok 1 lru_percpu_reuse # TODO fix in the next series
        ok 2 lru_shared # TODO
        ok 3 expected_failure # XFAIL needs CONFIG_DEBUG_LOCK_ALLOC
        not ok 4 skipped_the_old_way # SKIP no BTF
        """
    )
    result = parse(text, "prog")
    todo, fixed, xfail, skipped = result.subtests
    # A failing TODO is not a failure, and not a pass either.
    assert (todo.verdict, todo.reason) == (Verdict.SKIP, "TODO: fix in the next series")
    assert (fixed.verdict, fixed.reason) == (Verdict.PASS, "TODO")
    assert (xfail.verdict, xfail.reason) == (Verdict.PASS, "XFAIL: needs CONFIG_DEBUG_LOCK_ALLOC")
    assert (skipped.verdict, skipped.reason) == (Verdict.SKIP, "no BTF")
    assert result.verdict is Verdict.PASS


def test_all_skipped_and_skipped_plan() -> None:
    skipped = parse("TAP version 13\n1..2\nok 1 a # SKIP x\nok 2 b # skip y\n", "prog")
    assert (skipped.verdict, skipped.reason) == (Verdict.SKIP, "all subtests skipped")
    assert [s.reason for s in skipped.subtests] == ["x", "y"]

    nothing = parse("TAP version 13\n1..0 # SKIP no BPF JIT on this kernel\n", "prog")
    assert (nothing.verdict, nothing.reason) == (Verdict.SKIP, "no BPF JIT on this kernel")


def test_metrics() -> None:
    text = ktap(
        """
        KTAP version 1
        1..2
            KTAP version 1
            # Subtest: htab_reuse
            1..2
            # metric: lookup_ns 123.5 ns
            # metric: update_ns 4.56e2 ns
            ok 1 reuse_after_free
            # metric: rounds 1000
            # metric: broken not-a-number
            # metric: infinite inf
            ok 2 lru
            # metric: total_s 3.5 s
        ok 1 htab_reuse
        # metric: map_perf_ops 2500000 ops/s
        ok 2 map_perf
        # metric: boot_to_ready_s 1.25
        """
    )
    result = parse(text, "prog")
    htab, perf = result.subtests
    reuse, lru = htab.subtests
    assert reuse.metrics == {"lookup_ns": 123.5, "update_ns": 456.0}
    assert lru.metrics == {"rounds": 1000.0}  # the unparsable values are ignored
    assert htab.metrics == {"total_s": 3.5}  # after the block's last result
    assert perf.metrics == {"map_perf_ops": 2500000.0}
    assert result.metrics == {"boot_to_ready_s": 1.25}
    assert result.verdict is Verdict.PASS


@pytest.mark.parametrize("text", ["", "\n\n", "Segmentation fault\n", "# only a comment\n"])
def test_no_ktap_output(text: str) -> None:
    result = parse(text, "prog")
    assert (result.name, result.verdict, result.reason) == ("prog", Verdict.ERROR, "no KTAP output")
    assert result.subtests == ()


def test_header_without_results() -> None:
    result = parse("KTAP version 1\n", "prog")
    assert (result.verdict, result.reason) == (Verdict.ERROR, "no test results")


def test_hostile_and_odd_names_are_kept_literally() -> None:
    text = ktap(
        r"""
        TAP version 13
        1..5
        ok 1 <script>alert(1)</script>
        ok 2 name with spaces & "quotes"
        ok 3 dotted.name.v2
        ok 4 hash\#tag # SKIP reason # with hash
        ok 5
        """
    )
    names = [s.name for s in parse(text, "prog").subtests]
    assert names == [
        "prog.<script>alert(1)</script>",
        'prog.name with spaces & "quotes"',
        "prog.dotted.name.v2",
        "prog.hash#tag",
        "prog.5",  # no name: its number
    ]
    assert parse(text, "prog").subtests[3].reason == "reason # with hash"


def test_garbage_lines_are_ignored() -> None:
    text = ktap(
        """
        [   12.345678] random: crng init done
        TAP version 13
        Starting the test ...
        1..2
        [   13.000001] bpf_testmod: loading out-of-tree module taints kernel.
        ok 1 first
        okay, this is not a result line
        not okay either
        ok 2 second
        \x1b[0mdone
        """
    )
    result = parse(text, "prog")
    assert verdicts(result) == {
        "prog": Verdict.PASS,
        "prog.first": Verdict.PASS,
        "prog.second": Verdict.PASS,
    }


def test_crlf_and_indented_root() -> None:
    text = "  KTAP version 1\r\n  1..1\r\n  ok 1 a\r\n"
    result = parse(text, "prog")
    assert verdicts(result) == {"prog": Verdict.PASS, "prog.a": Verdict.PASS}


def test_kselftest_harness_failure_reason() -> None:
    text = ktap(
        """
        TAP version 13
        1..2
        # Starting 2 tests from 1 test cases.
        #  RUN           global.reuse ...
        #            OK  global.reuse
        ok 1 global.reuse
        #  RUN           global.lru ...
        # htab.c:42:lru:Expected value (0) == 1 (1)
        # lru: Test terminated by assertion
        #          FAIL  global.lru
        not ok 2 global.lru
        # FAILED: 1 / 2 tests passed.
        # Totals: pass:1 fail:1 xfail:0 xpass:0 skip:0 error:0
        """
    )
    result = parse(text, "htab")
    assert result.subtests[1].reason == "htab.c:42:lru:Expected value (0) == 1 (1)"
    assert result.reason == "1 of 2 failed: global.lru"


def test_failure_reason_falls_back_to_the_last_diagnostic() -> None:
    text = "KTAP version 1\n1..1\n# map has 3 entries\n# want 4 entries\nnot ok 1 count\n"
    assert parse(text, "prog").subtests[0].reason == "want 4 entries"


def test_many_failures_are_listed_briefly() -> None:
    lines = [f"not ok {n} case_{n}" for n in range(1, 8)]
    noise = [f"# step {n}" for n in range(5000)]
    text = "\n".join(["KTAP version 1", "1..7", *noise, *lines, ""])
    result = parse(text, "prog")
    assert result.reason == "7 of 7 failed: case_1, case_2, case_3, case_4, case_5, ..."
    assert result.subtests[0].reason == "step 4999"  # the latest diagnostic is kept
