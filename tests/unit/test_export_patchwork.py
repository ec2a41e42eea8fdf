"""export/patchwork.py: a run as patchwork check records, one per patch of a series."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest

from orchestrator import cli
from orchestrator.export import ExportError, patchwork
from orchestrator.results import RunResult, Stage, StageResult, Status, TestResult, Verdict
from tests.unit.samples import boots
from tests.unit.test_export_kcidb import SERIES
from tests.unit.test_report_junit import HOSTILE, REAL, partial_run, real_run, sample_run

SLUG = re.compile(r"[-a-zA-Z0-9_]+")  # patchwork's SlugField
STATES = {"pending", "success", "warning", "fail"}
URL = "https://ci.example.org/bpf/20261206/report.html"


@pytest.fixture()
def sample(tmp_path: Path) -> RunResult:
    return sample_run(tmp_path / "logs")


def _by_variant(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["variant"]: c for c in data["checks"]}


def test_states_follow_the_verdicts(sample: RunResult) -> None:
    checks = _by_variant(patchwork.render(sample))
    state = {name: c["check"]["state"] for name, c in checks.items()}
    assert state == {
        "upstream": "success",
        "pre-fix": "success",  # its failure was declared
        "gfp-zero": "fail",
        "conflict": "fail",
        "broken": "fail",
        "kconfig-miss": "fail",
        "no-boot": "fail",
    }
    assert checks["broken"]["check"]["description"].startswith("broken: build FAIL: ")
    assert checks["upstream"]["check"]["description"] == "upstream: passed"
    real = _by_variant(patchwork.render(real_run()))
    assert real["gfp-zero"]["check"]["description"] == "gfp-zero: test: 1 tests as expected"


def test_every_record_is_a_valid_check(sample: RunResult) -> None:
    data = patchwork.render(sample, context="lab-ci", target_url=URL)
    for record in data["checks"]:
        check = record["check"]
        assert set(check) == {"state", "context", "description", "target_url"}
        assert check["state"] in STATES and check["target_url"] == URL
        assert SLUG.fullmatch(check["context"]) and check["context"].startswith("lab-ci-")
        assert "\n" not in check["description"] and len(check["description"]) < 240
        assert record["post"] == "/api/patches/{id}/checks/"
    json.loads(patchwork.dumps(data))  # plain JSON


def test_one_record_per_patch_when_the_series_came_from_the_list() -> None:
    run = real_run()
    mailed = dataclasses.replace(run.variants[1], mail=SERIES)
    data = patchwork.render(dataclasses.replace(run, variants=(run.variants[0], mailed)))
    records = data["checks"]
    assert [r["message_id"] for r in records] == [None, *(p.message_id for p in SERIES.patches)]
    first = records[1]
    assert first["subject"] == "[PATCH v2 1/2] bpf: one"
    assert first["lookup"] == "/api/patches/?msgid=20230101.1234-1-dev%40example.org"
    assert {r["check"]["context"] for r in records[1:]} == {"orchestrate-pre-fix"}
    assert records[0]["lookup"] is None  # from local files: posted by hand


def test_an_error_is_a_warning_and_an_unfinished_variant_pending(tmp_path: Path) -> None:
    run = real_run()
    v = run.variants[0]
    stages = tuple(
        StageResult(Stage.BOOT, Status.ERROR, "qemu missing") if s.stage is Stage.BOOT else s
        for s in v.stages
    )
    errored = _by_variant(patchwork.render(dataclasses.replace(run, variants=(
        dataclasses.replace(v, stages=stages),
    ))))  # fmt: skip
    assert errored["upstream"]["check"]["state"] == "warning"
    assert "boot ERROR: qemu missing" in errored["upstream"]["check"]["description"]
    partial = _by_variant(patchwork.render(partial_run(tmp_path)))
    assert {c["check"]["state"] for c in partial.values()} == {"pending"}
    assert "not finished (interrupted" in partial["applied"]["check"]["description"]


def test_slower_than_the_baseline_is_a_warning() -> None:
    run = real_run()

    def measured(index: int, scale: float) -> tuple[TestResult, ...]:
        values = boots(10, 0.02, scale, seed=index)
        return tuple(
            TestResult("map_perf", Verdict.PASS, metrics={"ops_per_sec": x}, round=i, batch=1)
            for i, x in enumerate(values, 1)
        )

    base = dataclasses.replace(run.variants[0], tests=run.variants[0].tests + measured(1, 1.0))
    slow = dataclasses.replace(run.variants[1], tests=run.variants[1].tests + measured(2, 0.7))
    same = dataclasses.replace(run.variants[2], tests=run.variants[2].tests + measured(3, 1.0))
    checks = _by_variant(patchwork.render(dataclasses.replace(run, variants=(base, slow, same))))
    assert checks["pre-fix"]["check"]["state"] == "warning"
    assert (
        "slower than the baseline: map_perf.ops_per_sec"
        in (checks["pre-fix"]["check"]["description"])
    )
    assert checks["upstream"]["check"]["state"] == "success"
    assert checks["gfp-zero"]["check"]["state"] == "success"


def test_hostile_names_are_inert(sample: RunResult) -> None:
    evil = dataclasses.replace(sample.variants[3], name=f"x\r\n{HOSTILE}\u202e")
    data = patchwork.render(dataclasses.replace(sample, variants=(evil,)))
    (record,) = data["checks"]
    assert SLUG.fullmatch(record["check"]["context"])
    assert "\r" not in record["check"]["description"] and "\u202e" not in patchwork.dumps(data)
    assert "<U+202E>" in record["variant"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"context": "has space"}, "--context"),
        ({"context": "x" * 200}, "--context"),
        ({"target_url": "javascript:alert(1)"}, "--report-url"),
        ({"target_url": "https://ok.example.org/\nX: y"}, "--report-url"),
    ],
)
def test_bad_options_are_refused(options: dict[str, str], message: str) -> None:
    with pytest.raises(ExportError, match=message):
        patchwork.render(real_run(), **options)


# --- the command ----------------------------------------------------------------


def test_export_command_writes_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "checks.json"
    argv = ["export", "--patchwork", str(REAL), "--out", str(out), "--report-url", URL]
    assert cli.main(argv) == 0
    records = json.loads(out.read_text())["checks"]
    assert [r["check"]["state"] for r in records] == ["success"] * 3
    assert cli.main(["export", "--patchwork", str(REAL), "--report-url", "ftp://x"]) == 2
    assert "--report-url 'ftp://x': not an http(s) URL" in capsys.readouterr().err


def test_export_command_needs_one_format(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["export", str(REAL)])
    assert exit_.value.code == 2
    assert "one of the arguments --kcidb --patchwork is required" in capsys.readouterr().err
    assert cli.main(["export", "--kcidb", str(REAL), "--report-url", URL]) == 2
    assert "--report-url are for --patchwork" in capsys.readouterr().err


def test_export_command_rejects_a_bad_results_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "results.json"
    path.write_text('{"schema": 2, "matrix": 3}')
    assert cli.main(["export", "--patchwork", str(path)]) == 2
    err = capsys.readouterr().err
    assert "not a results file" in err and "Traceback" not in err
