"""A real flaky test: a shell script in a real guest that fails one time in three.

The kernel is the default matrix's upstream build (tests/e2e/conftest.py's
e2e_cache shares its tree and ccache).  The script keeps a counter in the
guest's /tmp and fails on the first of every three runs, so with
`retries: 2` its first run fails, the retry passes: FLAKY 1:2, and the run
stays green (exit 0).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import xmlschema

from orchestrator.results import Verdict
from tests.faults.harness import guest_matrix, read_results, run_cli

pytestmark = pytest.mark.e2e
XSD = Path(__file__).parent.parent / "unit" / "data" / "junit" / "jenkins-junit.xsd"

# Fails on runs 1, 4, 7, ... of this guest: deterministic, one time in three.
ONE_IN_THREE = (
    "n=$(cat /tmp/flaky.count 2>/dev/null || echo 0); n=$((n + 1)); echo $n > /tmp/flaky.count; "
    'echo "KTAP version 1"; echo "1..1"; echo "# run $n"; '
    'if [ $((n % 3)) -eq 1 ]; then echo "not ok 1 counter"; exit 1; fi; echo "ok 1 counter"'
)


def test_a_test_that_fails_one_time_in_three_is_flaky(
    kernel: Path, e2e_cache: Path, tmp_path: Path
) -> None:
    tests = (
        f"- name: counter\n  kind: ktap\n  retries: 2\n  timeout: 60\n  command: '{ONE_IN_THREE}'\n"
    )
    matrix = guest_matrix(tmp_path, tests)
    outcome = run_cli([matrix, "--cache-dir", e2e_cache, "--out", tmp_path / "out"], "flaky")
    run_ = read_results(tmp_path / "out", outcome)
    # FLAKY does not turn the run red by itself.
    assert outcome.returncode == 0, outcome.stdout[-3000:] + outcome.stderr[-3000:]
    (v,) = run_.variants
    (counter,) = v.tests
    assert counter.verdict is Verdict.FLAKY, counter
    assert (counter.failures, counter.attempts) == (1, 2)
    (first,) = counter.earlier_runs
    assert first.verdict is Verdict.FAIL
    assert "# run 1\nnot ok 1 counter" in Path(first.logs[0]).read_text()
    assert "# run 2\nok 1 counter" in Path(counter.logs[0]).read_text()

    data = json.loads((tmp_path / "out" / "results.json").read_text())
    shown = data["variants"][0]["tests"][0]
    assert (shown["verdict"], shown["failures"], shown["attempts"]) == ("flaky", 1, 2)

    xml = (tmp_path / "out" / "junit.xml").read_text()
    xmlschema.XMLSchema(str(XSD)).validate(xml)
    case = next(c for c in ET.fromstring(xml).iter("testcase") if c.get("name") == "counter")
    assert case.find("failure") is None
    flaky = case.find("flakyFailure")
    assert flaky is not None and flaky.get("type") == "fail"
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert (props["failures"], props["attempts"]) == ("1", "2")
    summary = (tmp_path / "out" / "summary.txt").read_text()
    assert "FLAKY 1:2" in summary
