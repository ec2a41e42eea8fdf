"""A run as KCIDB v5 JSON: a checkout per variant, its build, its tests.

The shape KernelCI's common database takes (kcidb-io's schema v5.3):

* a **checkout** per variant: the base commit with the variant's series
  on top; `valid` says whether the series applied; a series taken from the
  list gives its Message-ID and subject;
* a **build** per variant that configured (kconfig and make are one build:
  a kconfig mismatch is a failed build);
* **tests** on that build, by dotted path: `boot`, then every test and
  subtest (`htab_reuse.lookup_identity`), one object per run of a test
  (repeats and perf rounds share the path; misc says which run), and each
  metric as a test of its own with status DONE and a `number`
  (`map_perf.lookup.ns_per_op`).

KCIDB statuses say what the test said of the code, not what the matrix
expected: an expected failure is FAIL here (misc.outcome says "XFAIL").
A test that never ran because its kernel did not boot is MISS.  The A/A
control is a measurement of noise, not a kernel under test: not exported.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import kcidb_io  # type: ignore[import-untyped]

from orchestrator.export import ExportError, one_line, shown, slug
from orchestrator.results import RunResult, Stage, Status, TestResult, VariantResult, Verdict
from orchestrator.textfmt import quote
from orchestrator.verdicts import Outcome, boot_failed, labelled, own_outcome

SCHEMA = kcidb_io.schema.V5_3
DEFAULT_ORIGIN = "orchestrate"
ORIGIN = re.compile(r"[a-z0-9_]+")  # KCIDB's origin pattern
COMMENT = 1000  # characters of a comment (a reason, a subject)
EXCERPT = 16384  # KCIDB's log_excerpt limit
LIMIT = EXCERPT - 100  # what is kept of an excerpt: room for the note of the cut
SEGMENT, SEGMENTS = 100, 10  # characters of a test path's segment, segments of a path
_COMMIT = re.compile(r"[0-9a-f]{40}")

# What the test said of the code.  A kernel that crashed, hung or never
# finished the test failed it; ERROR is the harness's own failure.
_STATUS = {
    Verdict.PASS: "PASS",
    Verdict.FAIL: "FAIL",
    Verdict.SKIP: "SKIP",
    Verdict.TIMEOUT: "FAIL",
    Verdict.KERNEL_HANG: "FAIL",
    Verdict.CRASH: "FAIL",
    Verdict.ERROR: "ERROR",
    Verdict.FLAKY: "PASS",  # it met its expectation on a retry; the misses are in misc
}
_STAGE_STATUS = {Status.PASS: "PASS", Status.FAIL: "FAIL", Status.ERROR: "ERROR"}


def render(run: RunResult, *, origin: str = DEFAULT_ORIGIN) -> dict[str, Any]:
    """The run as KCIDB data, validated against kcidb-io's schema before it is returned."""
    if not ORIGIN.fullmatch(origin):
        raise ExportError(
            f"--origin {quote(origin)}: KCIDB takes lower-case letters, digits and '_' only"
        )
    data: dict[str, Any] = {
        "version": {"major": SCHEMA.major, "minor": SCHEMA.minor},
        "checkouts": [],
        "builds": [],
        "tests": [],
    }
    ids = _Ids()
    # origin:matrix@start/variant/build/test: a run is its matrix and its start
    when = run.started.replace(":", "")
    run_key = f"{origin}:{one_line(Path(run.matrix).stem, 100)}@{one_line(when, 40)}"
    started = _time(run.started)
    for variant in run.variants:
        checkout = _checkout(variant, ids.new(f"{run_key}/{variant.name}"), origin, started)
        data["checkouts"].append(checkout)
        build = _build(variant, checkout["id"], origin, started)
        if build is None:
            continue
        data["builds"].append(build)
        data["tests"] += _tests(variant, build["id"], origin, ids)
    validate(data)
    return data


def validate(data: dict[str, Any]) -> None:
    """kcidb-io's check: raises jsonschema.ValidationError when the data is not KCIDB v5."""
    SCHEMA.validate(data)


def dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, allow_nan=False) + "\n"


class _Ids:
    """Object ids, unique however the results file names things."""

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def new(self, wanted: str) -> str:
        wanted = one_line(wanted, 600)
        found, n = wanted, 1
        while found in self.seen:
            n += 1
            found = f"{wanted}~{n}"
        self.seen.add(found)
        return found


def _time(text: str) -> str | None:
    """An RFC 3339 time, or None when the results hold something else."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return when.isoformat() if when.tzinfo is not None else None


def _checkout(
    variant: VariantResult, checkout_id: str, origin: str, started: str | None
) -> dict[str, Any]:
    checkout: dict[str, Any] = {"id": checkout_id, "origin": origin}
    if _COMMIT.fullmatch(variant.base):
        checkout["git_commit_hash"] = variant.base
    if started:
        checkout["start_time"] = started
    apply = variant.stage(Stage.APPLY)
    if apply is not None and apply.status is not Status.SKIPPED:
        checkout["valid"] = apply.status is Status.PASS
        if apply.status.bad and apply.reason:
            checkout["log_excerpt"] = shown(apply.reason, LIMIT)
    mail = variant.mail
    if mail is not None:
        checkout["message_id"] = one_line(mail.message_id, 500)
        checkout["comment"] = one_line(mail.subject, COMMENT)
    else:
        checkout["comment"] = one_line(f"{variant.name}: {len(variant.patches)} patches", COMMENT)
    checkout["misc"] = {
        "variant": one_line(variant.name, 200),
        "head": one_line(variant.head, 100),
        "patches": [
            {
                "subject": one_line(p.subject, COMMENT),
                "outcome": p.outcome.value,
                "revert": p.revert,
            }
            for p in variant.patches[:1000]
        ],
    }
    if mail is not None:
        checkout["misc"]["author"] = one_line(mail.author, 300)
        checkout["misc"]["revision"] = mail.revision
    return checkout


def _build(
    variant: VariantResult, checkout_id: str, origin: str, started: str | None
) -> dict[str, Any] | None:
    """The build object: kconfig and make as one, or None when neither ran."""
    kconfig, make = variant.stage(Stage.KCONFIG), variant.stage(Stage.BUILD)
    ran = [s for s in (kconfig, make) if s is not None and s.status is not Status.SKIPPED]
    if not ran:
        return None
    failed = next((s for s in ran if s.status.bad), None)
    decided = failed or ran[-1]
    build: dict[str, Any] = {
        "id": f"{checkout_id}/build",
        "checkout_id": checkout_id,
        "origin": origin,
        "status": _STAGE_STATUS[decided.status],
        "duration": _seconds(sum(s.duration for s in ran)),
        "comment": one_line(f"{decided.stage.value}: {decided.reason}", COMMENT),
    }
    if started:
        build["start_time"] = started
    info = variant.build
    if info is not None:
        if info.first_error:
            build["log_excerpt"] = shown(info.first_error, LIMIT)
        build["misc"] = {
            "tree": one_line(info.tree, 100),
            "config_sha256": one_line(info.config, 100),
            "cached": info.cached,
            "shared_with": one_line(info.shared_with or "", 200),
            "warnings": len(info.warnings),
        }
    if variant.kconfig:
        build.setdefault("misc", {})["kconfig_mismatches"] = [
            one_line(f"{m.symbol}: wanted {m.wanted}, got {m.got}", 300)
            for m in variant.kconfig[:200]
        ]
    return build


def _tests(variant: VariantResult, build_id: str, origin: str, ids: _Ids) -> list[dict[str, Any]]:
    boot = variant.stage(Stage.BOOT)
    out: list[dict[str, Any]] = []
    if boot is not None and boot.status is not Status.SKIPPED:
        test: dict[str, Any] = {
            "id": ids.new(f"{build_id}/boot"),
            "build_id": build_id,
            "origin": origin,
            "path": "boot",
            "status": _STAGE_STATUS[boot.status],
            "duration": _seconds(variant.boot.seconds if variant.boot else boot.duration),
            "comment": one_line(boot.reason, COMMENT),
        }
        if variant.boot is not None:
            test["environment"] = {"comment": one_line(f"QEMU, {variant.boot.accel}", 200)}
            if boot.status.bad and variant.boot.console_tail:
                test["log_excerpt"] = shown(variant.boot.console_tail[-EXCERPT // 8 :], LIMIT)
        out.append(test)
    not_run = boot_failed(variant)
    for top in variant.tests:
        run = top.label + (f"/batch{top.batch}" if top.batch > 1 else "")
        for label, t in labelled(top):
            test_id = ids.new(f"{build_id}/{run}{label[len(top.label) :]}")
            out.append(_test(t, top, test_id, build_id, origin, not_run))
            out += _metrics(t, test_id, build_id, origin, ids)
    return out


def _seconds(value: float) -> float:
    """A duration KCIDB can hold: JSON has no NaN or infinity (a results file might)."""
    return float(value) if math.isfinite(value) else 0.0


def _path(name: str) -> str:
    """test.subtest as KCIDB takes it: letters, digits, '_' and '-' between dots; bounded."""
    return ".".join(slug(part[:SEGMENT])[:SEGMENT] for part in name.split(".", SEGMENTS)[:SEGMENTS])


def _test(
    t: TestResult, top: TestResult, test_id: str, build_id: str, origin: str, not_run: bool
) -> dict[str, Any]:
    outcome = own_outcome(t, not_run=not_run)
    status = "MISS" if outcome is Outcome.NOT_RUN else _STATUS[t.verdict]
    test: dict[str, Any] = {
        "id": test_id,
        "build_id": build_id,
        "origin": origin,
        "path": _path(t.name),
        "status": status,
        "misc": {
            "outcome": outcome.word,
            "expected": one_line(t.expected, 50),
            "repeat": top.repeat,
            "round": top.round,
            "batch": top.batch,
        },
    }
    if t.attempts > 1:
        test["misc"]["runs"] = t.attempts
        test["misc"]["failed_runs"] = t.failures
    if t.duration:
        test["duration"] = _seconds(t.duration)
    if t.reason:
        test["comment"] = one_line(t.reason, COMMENT)
    if t.splats:
        titles = "\n".join(f"{s.kind}: {s.title}" for s in t.splats[:20])
        test["log_excerpt"] = shown(titles, LIMIT)
    return test


def _metrics(
    t: TestResult, test_id: str, build_id: str, origin: str, ids: _Ids
) -> Iterator[dict[str, Any]]:
    """Each measurement as a test of its own: status DONE and the number."""
    for metric, value in list(t.metrics.items())[:200]:
        if not isinstance(value, int | float) or not math.isfinite(value):
            continue  # KCIDB numbers are finite; the HTML report shows what was measured
        yield {
            "id": ids.new(f"{test_id}.{metric}"),
            "build_id": build_id,
            "origin": origin,
            "path": f"{_path(t.name)}.{slug(metric[:SEGMENT])[:SEGMENT]}",
            "status": "DONE",
            "number": {"value": float(value)},
        }
