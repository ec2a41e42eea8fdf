"""A run as patchwork checks, ready for patchwork's REST API.

Patchwork (patchwork.kernel.org and others) shows CI results as *checks* on
each patch: POST /api/patches/{id}/checks/ with state, context,
description and target_url.  orchestrate knows a patch by its Message-ID,
not by patchwork's number, so each record names the Message-ID and the
look-up that finds the number (GET /api/patches/?msgid=...); its `check` is
the body to POST as it is.  Nothing here talks to a server.

One record per patch of a variant's series when the series came from the
list (every patch gets the variant's state, as BPF CI does), otherwise one
per variant with no Message-ID, to be posted by hand.  The context is
`<prefix>-<variant>`, so variants of one series are checks of their own.

States: success (every stage and test as expected), fail (a stage failed
or a test went against its expectation), warning (the tool or the machine
failed, so nothing is known of the patch; or it passed but is slower than
the baseline beyond its noise), pending (the run stopped before this
variant finished).
"""

from __future__ import annotations

import enum
import json
import re
from typing import Any
from urllib.parse import quote as url_quote
from urllib.parse import urlsplit

from orchestrator.export import ExportError, one_line, slug
from orchestrator.perf import perf
from orchestrator.results import RunResult, Status, VariantResult
from orchestrator.stats import Change
from orchestrator.textfmt import quote
from orchestrator.verdicts import not_reached

DEFAULT_CONTEXT = "orchestrate"
DESCRIPTION = 200  # characters: patchwork shows it in one table cell
CONTEXT = 255  # patchwork's SlugField
_CONTEXT = re.compile(r"[A-Za-z0-9_-]+")


class State(enum.StrEnum):
    PENDING = "pending"
    SUCCESS = "success"
    WARNING = "warning"
    FAIL = "fail"


def render(
    run: RunResult, *, context: str = DEFAULT_CONTEXT, target_url: str | None = None
) -> dict[str, Any]:
    """The checks of every variant, as JSON data: {"checks": [record, ...]}."""
    if not _CONTEXT.fullmatch(context) or len(context) > CONTEXT // 2:
        raise ExportError(
            f"--context {quote(context)}: patchwork takes letters, digits, '_' and '-' only "
            f"(at most {CONTEXT // 2})"
        )
    if target_url is not None:
        check_url(target_url)
    slower = _regressions(run)
    checks: list[dict[str, Any]] = []
    for variant in run.variants:
        state, description = judge(run, variant, slower.get(variant.name, ()))
        check = {
            "state": state.value,
            "context": f"{context}-{slug(variant.name)}"[:CONTEXT],
            "description": one_line(description, DESCRIPTION),
            "target_url": target_url,
        }
        mail = variant.mail
        if mail is None:
            checks.append(_record(variant, None, "", check))
            continue
        for patch in mail.patches:
            checks.append(_record(variant, patch.message_id, patch.subject, check))
    return {"checks": checks}


def dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2) + "\n"


def check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or one_line(url, 2000) != url:
        raise ExportError(f"--report-url {quote(url)}: not an http(s) URL")


def judge(run: RunResult, variant: VariantResult, slower: tuple[str, ...]) -> tuple[State, str]:
    """The variant's state and why, in one line."""
    name = variant.name
    if run.incomplete and not_reached(variant) and not variant.status.bad:
        return State.PENDING, f"{name}: not finished ({run.incomplete})"
    bad = next((s for s in variant.stages if s.status.bad), None)
    if bad is not None:
        word = "ERROR" if bad.status is Status.ERROR else "FAIL"
        state = State.WARNING if bad.status is Status.ERROR else State.FAIL
        return state, f"{name}: {bad.stage.value} {word}: {bad.reason}"
    last = variant.stages[-1] if variant.stages else None
    summary = f"{last.stage.value}: {last.reason}" if last and last.reason else "passed"
    if slower:
        return State.WARNING, f"{name}: slower than the baseline: {', '.join(slower)}; {summary}"
    return State.SUCCESS, f"{name}: {summary}"


def _regressions(run: RunResult) -> dict[str, tuple[str, ...]]:
    """Per variant, the metrics slower than the baseline beyond their noise."""
    found: dict[str, list[str]] = {}
    for summary in perf(run):
        if summary.breakdown:
            continue
        for row in summary.rows:
            if row.comparison is not None and row.comparison.verdict is Change.SLOWER:
                found.setdefault(row.variant, []).append(summary.name)
    return {k: tuple(v) for k, v in found.items()}


def _record(
    variant: VariantResult, message_id: str | None, subject: str, check: dict[str, Any]
) -> dict[str, Any]:
    shown = one_line(message_id, 500) if message_id is not None else None
    return {
        "variant": one_line(variant.name, 200),
        "message_id": shown,
        "subject": one_line(subject, 500),
        # patchwork's number for the patch: the first result's "id"
        "lookup": f"/api/patches/?msgid={url_quote(shown, safe='')}" if shown else None,
        "post": "/api/patches/{id}/checks/",
        "check": check,
    }
