"""Retries, FLAKY and quarantine through the real CLI, runner, test runner and reports.

The tree is tests/fakelinux (real git, real make); its "kernel" cannot boot,
so the guest is a scripted session (as in test_runner.py) whose test
programs keep a run counter the way a guest's /tmp would: `flaky` fails
its first run only, `stuck` fails every run.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import textwrap
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
import xmlschema

from orchestrator import cli, history, results
from orchestrator.git import git
from orchestrator.results import Verdict
from orchestrator.vm import guest
from orchestrator.vm.guest import Booted
from orchestrator.vm.image import Keys
from orchestrator.vm.qemu import VmSpec
from tests.fakes import FakeExec, HealthyGuest

pytestmark = pytest.mark.integration
FAKELINUX = Path(__file__).parent.parent / "fakelinux"
XSD = Path(__file__).parent.parent / "unit" / "data" / "junit" / "jenkins-junit.xsd"


class CountingGuest(HealthyGuest):
    """Answers /bin/NAME with KTAP; `flaky` fails its first run, `stuck` every run."""

    def __init__(self, runs: dict[str, int]) -> None:
        self.runs = runs  # program -> runs so far, across boots (the guest's /tmp counter)

    def run(self, command: str, *, timeout: float, stdout: Path, stderr: Path) -> FakeExec:
        name = Path(command.split()[0]).name
        self.runs[name] = self.runs.get(name, 0) + 1
        bad = name == "stuck" or (name == "flaky" and self.runs[name] == 1)
        word = "not ok" if bad else "ok"
        stdout.write_text(f"KTAP version 1\n1..1\n# run {self.runs[name]}\n{word} 1 {name}\n")
        stderr.write_text("")
        return FakeExec(1 if bad else 0)


@pytest.fixture()
def guest_runs(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Boots that never start QEMU; the runs of each guest program, across boots."""
    runs: dict[str, int] = {}

    @contextlib.contextmanager
    def boot(spec: VmSpec, keys: Keys, timeout: float) -> Iterator[tuple[CountingGuest, Booted]]:
        spec.console_log.write_text("fake console\n")
        yield CountingGuest(runs), Booted(1.0, 0.5)

    monkeypatch.setattr(guest, "boot", boot)
    return runs


def _project(tmp_path: Path, expires: str) -> Path:
    tree = tmp_path / "linux"
    shutil.copytree(FAKELINUX, tree)
    git(tree, "init", "-q", "-b", "master")
    git(tree, "add", "-A")
    git(tree, "commit", "-q", "-m", "fake linux")
    proj = tmp_path / "proj"
    proj.mkdir()
    matrix = proj / "matrix.yaml"
    matrix.write_text(
        textwrap.dedent(f"""\
        name: flakes
        tree: {{path: {tree}}}
        guest: {{accel: tcg}}
        tests:
          - {{name: flaky, kind: ktap, command: /bin/flaky, retries: 2}}
          - {{name: stuck, kind: ktap, command: /bin/stuck, retries: 1}}
          - {{name: fine, kind: ktap, command: /bin/fine}}
        quarantine:
          - test: stuck
            reason: "bug 1234, fix pending"
            expires: {expires}
        variants:
          - name: base
        """)
    )
    return matrix


def _run(matrix: Path, tmp_path: Path) -> tuple[int, Path]:
    out = tmp_path / "run"
    code = cli.main(["run", str(matrix), "--cache-dir", str(tmp_path / "cache"), "--out", str(out)])
    return code, out


def test_fail_then_pass_is_flaky_and_a_quarantined_failure_keeps_the_run_green(
    tmp_path: Path, guest_runs: dict[str, int]
) -> None:
    matrix = _project(tmp_path, "2999-12-31")
    code, out = _run(matrix, tmp_path)
    # FLAKY does not turn the run red, and the quarantine holds: exit 0.
    assert code == 0
    assert guest_runs == {"flaky": 2, "stuck": 2, "fine": 1}  # retried in the same guest

    data = json.loads((out / "results.json").read_text())
    flaky, stuck, fine = data["variants"][0]["tests"]
    assert (flaky["verdict"], flaky["failures"], flaky["attempts"]) == ("flaky", 1, 2)
    assert (stuck["verdict"], stuck["failures"], stuck["attempts"]) == ("fail", 2, 2)
    assert stuck["quarantined"] is True and fine["attempts"] == 1
    assert data["quarantine"] == [
        {"test": "stuck", "reason": "bug 1234, fix pending", "expires": "2999-12-31",
         "expired": False},
    ]  # fmt: skip
    # Each run has its own logs: the retry's label never collides with a test's.
    run = results.read(out / "results.json")
    first = run.variants[0].tests[0].earlier_runs[0]
    assert first.verdict is Verdict.FAIL and first.logs[0].endswith("/flaky.stdout")
    assert "# run 1\nnot ok 1 flaky\n" in Path(first.logs[0]).read_text()
    assert run.variants[0].tests[0].logs[0].endswith("/flaky~retry1.stdout")

    xml = (out / "junit.xml").read_text()
    xmlschema.XMLSchema(str(XSD)).validate(xml)
    cases = {c.get("name"): c for c in ET.fromstring(xml).iter("testcase")}
    assert [e.tag for e in cases["flaky"] if e.tag == "flakyFailure"] == ["flakyFailure"]
    assert cases["flaky"].find("failure") is None
    # stuck fails through its KTAP subtest (stuck.stuck), which the quarantine covers.
    skipped = cases["stuck.stuck"].find("skipped")
    assert skipped is not None and skipped.get("type") == "quarantined"
    assert [e.tag for e in cases["stuck"] if "erun" in e.tag] == ["rerunFailure"]

    summary = (out / "summary.txt").read_text()
    assert "base: flaky: FLAKY 1:2 (flaky in 1 of 1 runs recorded)" in summary
    assert "stuck: quarantined until 2999-12-31 (inclusive): bug 1234, fix pending" in summary
    page = (out / "report.html").read_text()
    assert "FLAKY <small>1:2</small>" in page and "bug 1234, fix pending" in page

    db = matrix.parent / "reports" / history.FILENAME
    assert history.flake_rates(db, "flakes") == {"flaky": (1, 1)}


def test_after_its_expiry_a_quarantined_test_counts_again(
    tmp_path: Path, guest_runs: dict[str, int]
) -> None:
    matrix = _project(tmp_path, "2020-01-31")
    code, out = _run(matrix, tmp_path)
    assert code == 1  # stuck fails the run again
    run = results.read(out / "results.json")
    test_stage = run.variants[0].stages[-1]
    assert test_stage.reason.startswith("1 unexpected: stuck.stuck: fail")
    assert "1 flaky: flaky 1:2" in test_stage.reason
    summary = (out / "summary.txt").read_text()
    assert "stuck: quarantine expired after 2020-01-31, the test counts again" in summary
    cases = {c.get("name"): c for c in ET.parse(out / "junit.xml").getroot().iter("testcase")}
    assert cases["stuck.stuck"].find("failure") is not None
