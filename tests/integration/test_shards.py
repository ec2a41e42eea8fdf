"""CI shards through the real CLI on the fake kernel tree, and the CI examples' schemas.

`test_pipeline_steps_match_one_run` is the nightly pipeline of ci-examples/
run locally: plan --shards 2 --format json → run each shard in its own run
directory with its own cache (as on separate runners) → merge; the merged
verdicts equal one unsharded run of the same matrix.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from orchestrator import cli, proc, results
from orchestrator.report.common import OUTSIDE
from orchestrator.results import RunResult
from tests.integration.test_runner import project  # noqa: F401  (the fixture)

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "ci-examples"


def _run(proj: Path, tmp: Path, name: str, *extra: str) -> int:
    return cli.main(
        [
            "run", str(proj / "matrix.yaml"), "--cache-dir", str(tmp / f"cache-{name}"),
            "--out", str(tmp / name), "--until", "build", *extra,
        ]
    )  # fmt: skip


def _verdicts(run: RunResult) -> list[tuple[str, list[tuple[str, str, str]]]]:
    return [
        (v.name, [(s.stage.value, s.status.value, s.reason) for s in v.stages])
        for v in run.variants
    ]


def test_pipeline_steps_match_one_run(
    project: Path,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    matrix = str(project / "matrix.yaml")
    assert cli.main(["plan", matrix, "--shards", "2", "--format", "json"]) == 0
    shards = json.loads(capsys.readouterr().out)
    assert [s["shard"] for s in shards] == ["1/2", "2/2"]
    # The fake matrix has two build directories: kconfig-miss has a fragment of its own.
    assert sorted(map(tuple, (s["variants"] for s in shards))) == [
        ("base", "tweak", "same-as-base", "conflict", "broken"),
        ("kconfig-miss",),
    ]
    codes = [_run(project, tmp_path, f"shard-{s['index']}", "--shard", s["shard"]) for s in shards]
    assert codes == [1, 1]  # broken and conflict fail in one, kconfig-miss in the other
    assert not (project / "reports").exists() or not list(project.glob("reports/history*"))

    whole = _run(project, tmp_path, "whole")
    merged_dir = tmp_path / "reports" / "fake" / "merged"
    dirs = [str(tmp_path / "shard-2"), str(tmp_path / "shard-1")]  # any order
    assert cli.main(["merge", *dirs, "--out", str(merged_dir)]) == whole == 1
    merged = results.read(merged_dir / "results.json")
    one = results.read(tmp_path / "whole" / "results.json")
    assert _verdicts(merged) == _verdicts(one)
    assert not merged.incomplete
    assert {"junit.xml", "report.html", "summary.txt"} <= {p.name for p in merged_dir.iterdir()}
    assert (tmp_path / "reports" / "history.sqlite").is_file()  # REPORT_DIR/MATRIX/RUN
    assert "kconfig-miss" in (merged_dir / "junit.xml").read_text()
    html = (merged_dir / "report.html").read_text()
    assert OUTSIDE not in html  # the shards' logs are read where the shards wrote them
    assert "Did you hand edit your patch?" in html  # conflict's apply.log, from shard 1

    # Again, in the other order and with a shard given twice: the same file.
    again = tmp_path / "again"
    assert cli.main(["merge", *reversed(dirs), dirs[0], "--out", str(again)]) == 1
    assert (again / "results.json").read_text() == (merged_dir / "results.json").read_text()

    # A missing shard is named, and the exit code says so even when all else passed.
    partial = tmp_path / "partial"
    assert cli.main(["merge", dirs[0], "--out", str(partial)]) == 1
    assert "shard 1/2 missing" in results.read(partial / "results.json").incomplete
    assert "shard 1/2 missing" in capsys.readouterr().err


def test_bad_shards_and_merges_exit_2(
    project: Path,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for spec in ("3/2", "0/2", "x", "3/3"):  # 3/3: the matrix splits into at most 2
        assert _run(project, tmp_path, "bad", "--shard", spec) == 2, spec
        err = capsys.readouterr().err
        assert "--shard" in err and "Traceback" not in err
    assert not (tmp_path / "bad").exists()
    assert _run(project, tmp_path, "s2", "--shard", "2/2") == 1
    bogus = tmp_path / "bogus"
    bogus.mkdir()
    assert cli.main(["merge", str(bogus)]) == 2  # no shard.json
    assert "not the run directory of a shard" in capsys.readouterr().err
    shutil.copytree(tmp_path / "s2", bogus, dirs_exist_ok=True)
    (bogus / "results.json").write_text('{"schema": 2, "matrix": 1}')
    assert cli.main(["merge", str(bogus), "--out", str(tmp_path / "m")]) == 2
    assert "not a results file" in capsys.readouterr().err
    # Another matrix file (a changed variant list) is not the same run.
    other = tmp_path / "other"
    shutil.copytree(tmp_path / "s2", other)
    record = json.loads((other / "shard.json").read_text())
    record["matrix_digest"] = "0" * 64
    (other / "shard.json").write_text(json.dumps(record))
    assert cli.main(["merge", str(tmp_path / "s2"), str(other), "--out", str(tmp_path / "m")]) == 2
    assert "not of the same matrix" in capsys.readouterr().err


def _check_jsonschema(schema: str, path: Path) -> None:
    tool = Path(sys.executable).parent / "check-jsonschema"
    done = proc.run([tool, "--builtin-schema", schema, path], timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("schema", "name"),
    [
        ("vendor.github-workflows", "github-nightly.yml"),
        ("vendor.gitlab-ci", "gitlab-ci.yml"),
        ("vendor.gitlab-ci", "gitlab-shard.yml"),
    ],
)
def test_ci_examples_pass_the_engines_schemas(schema: str, name: str) -> None:
    _check_jsonschema(schema, EXAMPLES / name)


def test_the_gitlab_child_pipeline_passes_gitlab_schema(
    project: Path,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    matrix = str(project / "matrix.yaml")
    assert cli.main(["plan", matrix, "--shards", "2", "--format", "gitlab"]) == 0
    child = tmp_path / "shards.yml"
    child.write_text(capsys.readouterr().out)
    _check_jsonschema("vendor.gitlab-ci", child)
    assert (REPO / json.loads(child.read_text())["include"][0]["local"]).is_file()


def test_a_schema_check_that_can_fail(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("on: {schedule: [{cron: 5}]}\njobs: {x: {runs-on: 3}}\n")
    with pytest.raises(AssertionError):
        _check_jsonschema("vendor.github-workflows", bad)
