"""The fault suite writes docs/faults.md from its own rows when every case ran."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.faults.harness import ROWS, Row

DOC = REPO / "docs" / "faults.md"
_collected: set[Path] = set()

HEADER = """\
# Faults and what orchestrate makes of them

Written by the fault-injection suite (`tests/faults/`, run with
`pytest tests/faults`) from its own results: each row is one real run of
orchestrate with one fault injected.  Guest cases boot the e2e tests' real
kernel (Debian 6.1, tinyconfig + the project's fragments) under QEMU; build
cases use the real kernel where the row says so and the fake kernel tree of
the integration tests (real git, make and sandbox, a kernel that builds in
seconds) otherwise.  *Time* runs from the injection (or the start, for bad
input) to orchestrate's exit; *leftovers* are processes anywhere on the
machine that carry the run's marker after it ended (psutil scan).

| fault | verdict | exit | time (s) | leftovers |
|---|---|---|---|---|
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(rows: list[Row]) -> str:
    lines = [
        f"| {_cell(r.fault)} | {_cell(r.verdict)} | "
        f"{'-' if r.exit_code is None else r.exit_code} | {r.seconds:g} | "
        f"{', '.join(r.leftovers) or 'none'} |"
        for r in rows
    ]
    return HEADER + "\n".join(lines) + "\n"


_selected: set[str] = set()
_passed: set[str] = set()


def pytest_collection_finish(session: pytest.Session) -> None:
    # After -m/-k deselection: the cases this session will run.
    here = Path(__file__).parent
    _collected.update(Path(i.path) for i in session.items if Path(i.path).is_relative_to(here))
    _selected.update(i.nodeid for i in session.items if Path(i.path).is_relative_to(here))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" and report.passed and report.nodeid in _selected:
        _passed.add(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # Only a run of every case of the suite, all passing, rewrites the document
    # (a quick `-m "not e2e"` run selects none of them and must not empty it).
    whole = _collected == set(Path(__file__).parent.glob("test_*.py"))
    if whole and _selected and _passed == _selected and exitstatus == 0:
        DOC.write_text(render(ROWS))
