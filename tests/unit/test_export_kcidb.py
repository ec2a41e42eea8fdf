"""export/kcidb.py: a run as KCIDB v5 JSON, checked with kcidb-io's own schema."""

from __future__ import annotations

import dataclasses
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import kcidb_io  # type: ignore[import-untyped]
import pytest

from orchestrator import cli, results
from orchestrator.export import ExportError, kcidb
from orchestrator.results import (
    MailPatch,
    MailSeries,
    RunResult,
    Stage,
    StageResult,
    Status,
    TestResult,
    Verdict,
)
from tests.unit.test_report_junit import REAL, partial_run, real_run, sample_run
from tests.unit.test_results_check import fuzz_cases

PATH = re.compile(r"^([a-zA-Z0-9_-]+(\.[a-zA-Z0-9_-]+)*)?$")  # KCIDB's test path

SERIES = MailSeries(
    message_id="20230101.1234-0-dev@example.org",
    subject="[PATCH v2 0/2] bpf: Handle reuse in bpf memory alloc",
    revision=2,
    author="A Developer <dev@example.org>",
    base_commit="1" * 40,
    to=("bpf@vger.kernel.org",),
    cc=(),
    patches=(
        MailPatch("20230101.1234-1-dev@example.org", "[PATCH v2 1/2] bpf: one", "ab" * 20),
        MailPatch("20230101.1234-2-dev@example.org", "[PATCH v2 2/2] bpf: two", "cd" * 20),
    ),
)


@pytest.fixture()
def sample(tmp_path: Path) -> RunResult:
    return sample_run(tmp_path / "logs")


def _tests(data: dict[str, Any], variant: str) -> dict[str, list[dict[str, Any]]]:
    """A variant's tests by path (runs of one test share a path)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for t in data["tests"]:
        if t["id"].split("/")[1] == variant:
            out.setdefault(t["path"], []).append(t)
    return out


def test_real_results_are_valid_kcidb_v5() -> None:
    data = kcidb.render(real_run())
    kcidb_io.schema.V5_3.validate_exactly(data)
    assert kcidb_io.schema.LATEST.is_valid(data)
    assert data["version"] == {"major": 5, "minor": 3}
    assert [c["misc"]["variant"] for c in data["checkouts"]] == ["upstream", "pre-fix", "gfp-zero"]
    assert all(c["valid"] and c["origin"] == "orchestrate" for c in data["checkouts"])
    assert [b["status"] for b in data["builds"]] == ["PASS"] * 3
    tests = _tests(data, "upstream")
    assert tests["boot"][0]["status"] == "PASS"
    assert tests["smoke.kernel_release"][0]["status"] == "PASS"
    assert data["checkouts"][0]["git_commit_hash"] == "cb94e8e525888920dcb22ac3c8449111b145da17"


def test_the_schema_is_really_checked() -> None:
    """kcidb-io refuses what KCIDB refuses: the validation is not a formality."""
    data = kcidb.render(real_run())
    for bad in ("FLAKY", "pass"):
        broken = json.loads(json.dumps(data))
        broken["tests"][0]["status"] = bad
        with pytest.raises(jsonschema.ValidationError):
            kcidb.validate(broken)
    broken = json.loads(json.dumps(data))
    broken["tests"][0]["path"] = "smoke..x"
    with pytest.raises(jsonschema.ValidationError):
        kcidb.validate(broken)


def test_every_verdict_maps_to_a_kcidb_status(sample: RunResult) -> None:
    data = kcidb.render(sample)
    kcidb.validate(data)
    gfp = _tests(data, "gfp-zero")
    status = {path: [t["status"] for t in runs] for path, runs in gfp.items()}
    assert status["crashy"] == ["FAIL"] and status["hangy"] == ["FAIL"]
    assert status["sleepy"] == ["FAIL"] and status["broken_harness"] == ["ERROR"]
    assert status["skippy"] == ["SKIP"] and status["htab_reuse"] == ["PASS"]
    # the expectation is orchestrate's reading, kept beside KCIDB's status
    assert gfp["htab_reuse"][0]["misc"]["outcome"] == "UNEXPECTED-PASS"
    assert gfp["crashy"][0]["log_excerpt"].startswith("panic: Kernel panic - not syncing")
    pre = _tests(data, "pre-fix")
    assert pre["htab_reuse.lock"][0]["status"] == "FAIL"
    assert pre["htab_reuse.lock"][0]["misc"]["outcome"] == "XFAIL (expected)"
    # a kernel that did not boot: the boot failed, its tests never ran
    no_boot = _tests(data, "no-boot")
    assert no_boot["boot"][0]["status"] == "FAIL" and no_boot["smoke"][0]["status"] == "MISS"


def test_stages_become_checkouts_and_builds(sample: RunResult) -> None:
    data = kcidb.render(sample)
    checkouts = {c["misc"]["variant"]: c for c in data["checkouts"]}
    assert checkouts["conflict"]["valid"] is False
    assert "does not apply" in checkouts["conflict"]["log_excerpt"]
    builds = {b["id"].split("/")[1]: b for b in data["builds"]}
    assert "conflict" not in builds  # nothing was built
    assert builds["broken"]["status"] == "FAIL"
    assert "'boom' undeclared" in builds["broken"]["log_excerpt"]
    assert builds["kconfig-miss"]["status"] == "FAIL"  # configuring is part of the build
    assert builds["kconfig-miss"]["misc"]["kconfig_mismatches"]
    assert builds["upstream"]["status"] == "PASS" and builds["upstream"]["misc"]["cached"]
    assert {t["build_id"] for t in data["tests"]} <= {b["id"] for b in data["builds"]}
    assert {b["checkout_id"] for b in data["builds"]} <= {c["id"] for c in data["checkouts"]}


def test_perf_numbers_are_done_tests_with_a_number(sample: RunResult) -> None:
    data = kcidb.render(sample)
    tests = _tests(data, "upstream")
    ops = tests["map_perf.ops_per_sec"]
    assert [t["status"] for t in ops] == ["DONE"] * 3
    assert [t["number"] for t in ops] == [{"value": v} for v in (1000.0, 1100.0, 1050.0)]
    assert tests["map_perf.lookup.ns_per_op"][0]["number"]["value"] == pytest.approx(1e6)
    rounds = [t["misc"]["round"] for t in tests["map_perf"]]
    assert rounds == [1, 2, 3]


def test_ids_are_unique_and_paths_dotted(sample: RunResult) -> None:
    twin = dataclasses.replace(sample.variants[0])  # the same variant twice
    run = dataclasses.replace(sample, variants=(*sample.variants, twin))
    data = kcidb.render(run)
    for kind in ("checkouts", "builds", "tests"):
        ids = [o["id"] for o in data[kind]]
        assert len(ids) == len(set(ids)), kind
    assert all(PATH.match(t["path"]) for t in data["tests"])


def test_hostile_text_is_bounded_and_inert(sample: RunResult) -> None:
    nul = "a\x00b\u202e" + "x" * 100_000
    test = TestResult(f"evil.{nul}", Verdict.FAIL, reason=nul, metrics={"m\x00": float("nan")})
    upstream = dataclasses.replace(sample.variants[0], name=f"v{nul}", tests=(test,))
    run = dataclasses.replace(sample, variants=(upstream,), matrix=f"/{nul}.yaml")
    data = kcidb.render(run)
    text = kcidb.dumps(data)
    assert "\\u0000" not in text and "\\u202e" not in text
    assert len(text) < 60_000
    (evil,) = [t for t in data["tests"] if t["path"].startswith("evil")]
    assert evil["comment"].startswith("a\\x00b<U+202E>xxx")
    assert not [t for t in data["tests"] if "number" in t]  # NaN is no KCIDB number


def test_a_series_from_the_list_names_its_message_id(sample: RunResult) -> None:
    upstream = dataclasses.replace(sample.variants[0], mail=SERIES)
    data = kcidb.render(dataclasses.replace(sample, variants=(upstream,)))
    (checkout,) = data["checkouts"]
    assert checkout["message_id"] == SERIES.message_id
    assert checkout["comment"] == SERIES.subject
    assert checkout["misc"]["revision"] == 2


def test_an_incomplete_run_exports_what_was_done(tmp_path: Path) -> None:
    data = kcidb.render(partial_run(tmp_path))
    assert [c["misc"]["variant"] for c in data["checkouts"]] == ["upstream", "built", "applied"]
    assert [b["id"].split("/")[1] for b in data["builds"]] == ["upstream", "built"]


def test_origin_is_checked() -> None:
    run = real_run()
    assert {c["origin"] for c in kcidb.render(run, origin="my_ci")["checkouts"]} == {"my_ci"}
    for bad in ("My-CI", "", "a:b"):
        with pytest.raises(ExportError, match="origin"):
            kcidb.render(run, origin=bad)


def test_an_error_stage_is_a_kcidb_error() -> None:
    run = real_run()
    v = run.variants[0]
    stages = tuple(
        StageResult(Stage.BUILD, Status.ERROR, "no space left") if s.stage is Stage.BUILD else s
        for s in v.stages
    )
    data = kcidb.render(dataclasses.replace(run, variants=(dataclasses.replace(v, stages=stages),)))
    assert data["builds"][0]["status"] == "ERROR"


# --- the command ----------------------------------------------------------------


def test_export_command_writes_valid_kcidb(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "kcidb.json"
    assert cli.main(["export", "--kcidb", str(REAL), "--out", str(out)]) == 0
    kcidb_io.schema.LATEST.validate(json.loads(out.read_text()))
    assert capsys.readouterr().out == f"kcidb: {out}\n"
    assert cli.main(["export", "--kcidb", str(REAL), "--origin", "lab_1"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["checkouts"][0]["origin"] == "lab_1"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ("{not json", "not JSON"),
        ('{"schema": 2, "variants": 7}', "not a results file"),
        ('{"schema": 1}', "results schema 1"),
    ],
)
def test_export_command_rejects_bad_results(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, message: str
) -> None:
    path = tmp_path / "results.json"
    if content is not None:
        path.write_text(content)
    assert cli.main(["export", "--kcidb", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_export_command_rejects_a_bad_origin(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["export", "--kcidb", str(REAL), "--origin", "Bad Origin"]) == 2
    assert "origin" in capsys.readouterr().err


def test_round_trip_of_a_results_file(tmp_path: Path) -> None:
    """What `orchestrate run` writes, `export` reads: results.write then the command."""
    run = dataclasses.replace(real_run(), variants=(real_run().variants[0],))
    path = tmp_path / "results.json"
    results.write(dataclasses.replace(run, variants=(run.variants[0],)), path)
    assert cli.main(["export", "--kcidb", str(path), "--out", str(tmp_path / "k.json")]) == 0
    assert len(json.loads((tmp_path / "k.json").read_text())["checkouts"]) == 1


def test_fuzzed_results_export_or_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The results checker's fuzz (wrong types, huge strings, nulls, bad enums): every
    mutation exports valid KCIDB and patchwork records (exit 0) or is refused (exit 2)."""
    path = tmp_path / "results.json"
    out = tmp_path / "out.json"
    codes: Counter[int] = Counter()
    for what, text in fuzz_cases(150):
        path.write_text(text)
        for kind in ("--kcidb", "--patchwork"):
            code = cli.main(["export", kind, str(path), "--out", str(out)])
            err = capsys.readouterr().err
            codes[code] += 1
            assert code in (0, 2), f"{what}: exit {code}: {err[:300]}"
            assert "Traceback" not in err
            if code == 0 and kind == "--kcidb":
                kcidb.validate(json.loads(out.read_text()))
    assert codes[0] > 0 and codes[2] > 0  # the fuzz reaches both sides


def test_a_flaky_test_passes_with_its_failed_runs_in_misc() -> None:
    run = real_run()
    v = run.variants[0]
    flaky = dataclasses.replace(v.tests[0], verdict=Verdict.FLAKY, attempts=2, failures=1)
    run = dataclasses.replace(run, variants=(dataclasses.replace(v, tests=(flaky,)),))
    data = kcidb.render(run)
    (test,) = [t for t in data["tests"] if t["path"] == flaky.name.replace("-", "_")]
    assert test["status"] == "PASS" and test["misc"]["failed_runs"] == 1
