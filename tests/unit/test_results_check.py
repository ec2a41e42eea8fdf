"""A results file from elsewhere is checked before anything reads it.

`orchestrate report` on a mangled results.json says where it is wrong
(exit 2, one line, a JSON path) or renders it (exit 0), and never shows a
traceback: a seeded fuzz of the real fixture with wrong types, missing keys,
huge strings, deep nesting, nulls and wrong enum values.
"""

from __future__ import annotations

import copy
import json
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator import cli, results, results_check
from orchestrator.report import FILES
from orchestrator.results import RunResult
from orchestrator.results_check import MAX_DEPTH, MAX_STRING, ResultsError, check
from tests.unit.test_report_junit import sample_run

REAL = Path(__file__).parent / "data" / "results-bpf-reuse.json"
MUTATIONS = 400
SEED = 20261206

Location = tuple[str | int, ...]


def _locations(value: Any, where: Location = ()) -> Iterator[Location]:
    """Every place in a JSON document, the root aside."""
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return
    for key, item in items:
        yield (*where, key)
        yield from _locations(item, (*where, key))


DEEP = "\x00deep\x00"  # stands for a nested value until the document is JSON text


def _nested(depth: int, rng: random.Random) -> str:
    """Lists or objects `depth` deep, as JSON text (json.dumps stops at about 1000)."""
    if rng.random() < 0.5:
        return "[" * depth + "]" * depth
    return '{"subtests": ' * depth + '"x"' + "}" * depth


HOSTILE = "\x1b]0;pwned\x07\x1b[2J\u202egnp.exe\ud800 <script>\r"
OTHER_VALUES: list[Any] = [
    0, -1, 1.5, 2**64, 10**30, 10**400, 1e308, float("nan"), float("inf"), -0.0, True, False,
    "", "x", [], {}, [1, "a", None], {"a": 1}, {"name": 3},
]  # fmt: skip
WORDS = ["PASS", "passed", "bogus", "kernel_hang", " pass", "", "Error", "0"]
PATHS = ["/etc/passwd", "~/.ssh/id_ed25519", "../../../etc/shadow", "/dev/zero", "\x00"]


def mutate(doc: Any, rng: random.Random) -> tuple[str, tuple[Any, Any, Any, str]]:
    """One random mutation of a copy of doc, and what it was.

    A deep one comes back as (doc, parent, key, JSON text) to be put in as text.
    """
    doc = copy.deepcopy(doc)
    where = rng.choice(list(_locations(doc)))
    *parents, last = where
    parent = doc
    for key in parents:
        parent = parent[key]
    op = rng.choice(
        ["type", "type", "delete", "delete", "null", "enum", "huge", "deep", "text", "path"]
    )
    if op == "type":
        new: Any = rng.choice(OTHER_VALUES)
    elif op == "null":
        new = None
    elif op == "enum":
        new = rng.choice(WORDS)
    elif op == "huge":
        new = "A" * rng.choice([100_000, 2_000_000, MAX_STRING + 1])
    elif op == "deep":
        depth = rng.choice([10, MAX_DEPTH, 900, 5000, 100_000])
        return f"{depth} deep at {where}", (doc, parent, last, _nested(depth, rng))
    elif op == "text":
        new = HOSTILE * rng.choice([1, 1000])
    elif op == "path":
        new = [rng.choice(PATHS)] if isinstance(parent[last], list) else rng.choice(PATHS)
    else:
        if isinstance(parent, dict):
            del parent[last]
        else:
            parent.pop(last)
        return f"delete {where}", (doc, None, None, "")
    parent[last] = new
    return f"{op} at {where}", (doc, None, None, "")


def fuzz_cases(count: int = MUTATIONS, seed: int = SEED) -> Iterator[tuple[str, str]]:
    """(what, JSON text): the same `count` mutations of the real fixture on every run."""
    rng = random.Random(seed)
    doc = json.loads(REAL.read_text())
    for _ in range(count):
        what, (mutated, parent, last, deep) = mutate(doc, rng)
        if parent is None:
            yield what, json.dumps(mutated)
            continue
        parent[last] = DEEP
        yield what, json.dumps(mutated).replace(json.dumps(DEEP), deep)


def test_fuzzed_results_render_or_are_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "reports" / "m" / "run"
    run_dir.mkdir(parents=True)
    path = run_dir / "results.json"
    codes: Counter[int] = Counter()
    wrong: list[str] = []
    for what, text in fuzz_cases():
        path.write_text(text)
        code = cli.main(["report", str(path)])
        out, err = capsys.readouterr()
        codes[code] += 1
        if code not in (0, 2):
            wrong.append(f"{what}: exit {code}: {err[:300]}")
        elif code == 2 and not (
            err.startswith(f"orchestrate: error: {path}: ")
            and err.count("\n") == 1
            and len(err) < 1000
            and "\x1b" not in err
        ):
            wrong.append(f"{what}: {err[:300]!r}")
        elif "Traceback" in out + err:
            wrong.append(f"{what}: a traceback")
        elif code == 0:
            reports = "".join(
                (run_dir / name).read_text(errors="replace") for name in FILES.values()
            )
            if "root:x:0:0" in reports or "\x1b" in reports or "\u202e" in reports:
                wrong.append(f"{what}: /etc/passwd, an escape or a bidi override in a report")
    print(f"fuzz: {dict(sorted(codes.items()))} of {MUTATIONS}")
    assert not wrong, "\n".join(wrong[:20])
    assert codes[0] > 0 and codes[2] > 0  # the fuzz reaches both sides


# --- what the checker says ----------------------------------------------------------


def _real() -> Any:
    return json.loads(REAL.read_text())


def _problem(data: Any) -> str:
    with pytest.raises(ResultsError) as info:
        check(RunResult, data)
    return str(info.value)


def test_the_real_file_and_every_field_of_a_sample_pass() -> None:
    check(RunResult, _real())
    check(RunResult, json.loads(json.dumps(results.to_data(sample_run(Path("/x"))))))


def test_every_type_in_the_records_is_one_the_checker_knows() -> None:
    # A field of a new kind (a set, a union of two records) must be taught to it.
    assert results_check.unsupported(RunResult) == []


def test_a_wrong_enum_value_names_its_path_and_the_choices() -> None:
    data = _real()
    data["variants"][2]["tests"][0]["verdict"] = "bogus"
    assert _problem(data) == (
        "variants[2].tests[0].verdict: expected one of pass, fail, skip, timeout, "
        "kernel-hang, crash, error, flaky; got a string 'bogus'"
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["variants"][0].pop("stages"), "variants[0].stages: missing"),
        (lambda d: d["variants"][0].update(stages={}),
         "variants[0].stages: expected a list, got an object"),
        (lambda d: d["variants"][1]["stages"][0].update(duration="3"),
         "variants[1].stages[0].duration: expected a number, got a string '3'"),
        (lambda d: d["variants"][1]["stages"][0].update(duration=True),
         "variants[1].stages[0].duration: expected a number, got true"),
        (lambda d: d["variants"][1]["stages"][0].update(duration=float("nan")),
         "variants[1].stages[0].duration: expected a finite number of at most 9.2e+18, "
         "got a number nan"),
        (lambda d: d["variants"][0]["tests"][0].update(metrics={"y": 10**400}),
         "variants[0].tests[0].metrics['y']: expected a finite number of at most 9.2e+18, "
         "got a huge integer"),
        (lambda d: d["variants"][0]["tests"][0].update(metrics={"x": -1e308}),
         "variants[0].tests[0].metrics['x']: expected a finite number of at most 9.2e+18, "
         "got a number -1e+308"),
        (lambda d: d["variants"][0]["tests"][0].update(round=10**40),
         "variants[0].tests[0].round: expected an integer, got a huge integer"),
        (lambda d: d["variants"][0].update(name=None),
         "variants[0].name: expected a string, got null"),
        (lambda d: d["host"].update(kernel=3), "host['kernel']: expected a string, got a number 3"),
        (lambda d: d["variants"][0]["tests"][0].update(metrics={"x": "fast"}),
         "variants[0].tests[0].metrics['x']: expected a number, got a string 'fast'"),
        (lambda d: d.update(variants="x" * 10_000),
         "variants: expected a list, got a string 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
         "xxxxxxxxxxxxxxxxx…' (10000 characters)"),
    ],
)  # fmt: skip
def test_types_are_checked(change: Any, message: str) -> None:
    data = _real()
    change(data)
    assert _problem(data) == message


def test_limits() -> None:
    data = _real()
    data["variants"][0]["stages"][0]["reason"] = "x" * (MAX_STRING + 1)
    assert _problem(data) == (
        f"variants[0].stages[0].reason: a string of {MAX_STRING + 1} characters "
        f"(limit {MAX_STRING})"
    )
    data = _real()
    test = data["variants"][0]["tests"][0]
    for _ in range(40):  # subtests in subtests: two JSON levels each
        test = {"name": "t", "verdict": "pass", "subtests": [test]}
    data["variants"][0]["tests"][0] = test
    assert _problem(data).endswith(f": nested too deeply (limit {MAX_DEPTH})")


def test_read_bounds_the_file_and_its_nesting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ResultsError, match="nested too deeply"):
        results.read(deep)
    monkeypatch.setattr(results_check, "MAX_BYTES", 100)
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"schema": 2, "pad": "x" * 200}))
    with pytest.raises(ResultsError, match="larger than"):
        results.read(big)


def test_the_schema_is_quoted_briefly(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"schema": "9" * 100_000}))
    with pytest.raises(results.SchemaError) as info:
        results.read(path)
    assert len(str(info.value)) < 300


def test_report_names_the_path_of_the_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _real()
    data["variants"][2]["tests"][0]["verdict"] = "\x1b]0;owned\x07"
    path = tmp_path / "results.json"
    path.write_text(json.dumps(data))
    assert cli.main(["report", str(path)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"orchestrate: error: {path}: not a results file: variants[2].tests[0].verdict: "
        "expected one of pass, fail, skip, timeout, kernel-hang, crash, error, flaky; "
        "got a string '\\x1b]0;owned\\x07'\n"
    )


@pytest.mark.parametrize("value", [1e308, -1e308, 9.2e18, -9.2e18, 0, -1, 1e-6, 2**63 - 1])
def test_extreme_numbers_in_every_field_render_or_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: float
) -> None:
    """Every number of a run with perf metrics at once: the statistics must not overflow."""

    def replaced(data: Any) -> Any:
        if isinstance(data, dict):
            return {k: replaced(v) for k, v in data.items()}
        if isinstance(data, list):
            return [replaced(v) for v in data]
        if isinstance(data, int | float) and not isinstance(data, bool):
            return value if isinstance(data, float) else data
        return data

    path = tmp_path / "results.json"
    path.write_text(json.dumps(replaced(results.to_data(sample_run(tmp_path / "logs")))))
    assert cli.main(["report", str(path)]) in (0, 2), capsys.readouterr().err
