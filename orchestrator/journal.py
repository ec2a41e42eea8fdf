"""The runner's journal: the plan and every unit result so far, for --resume.

Written next to results.json after every unit (atomically, like it), so a
run stopped by a signal, a crash or `kill -9` can continue where it was:
`orchestrate run --resume RUN_DIR` reads it, checks that the matrix still
makes the same plan, and runs only the units that are not in it (at most
one was interrupted).  results.json says what the run found; the journal
keeps what the runner needs to go on (each unit's output as data).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.assemble import UnitResult
from orchestrator.errors import UserError
from orchestrator.plan import Unit, UnitKind
from orchestrator.results import Batch, Placement, Stage, from_data, to_data
from orchestrator.units import OUTPUTS

FILENAME = "units.json"
SCHEMA = 1


@dataclass(frozen=True)
class Journal:
    matrix: str  # the matrix file
    cache: str  # the cache directory the run used
    only: tuple[str, ...]
    until: Stage
    started: str
    units: tuple[Unit, ...]  # the plan, with any perf batches added since
    done: tuple[UnitResult, ...]
    batches: tuple[Batch, ...] = ()
    perf_stopped: str = ""  # why a sequential plan's rounds stopped (runner.perf_stopped)


def write(journal: Journal, path: Path) -> None:
    data = to_data(journal)
    data["schema"] = SCHEMA
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data) + "\n")
    tmp.replace(path)


def read(run_dir: Path) -> Journal:
    """The journal of the run in run_dir; UserError (exit 2) when there is none to resume."""
    path = run_dir / FILENAME
    try:
        data = json.loads(path.read_text())
        if data.get("schema") != SCHEMA:
            raise ValueError(f"journal schema {data.get('schema')}; this version reads {SCHEMA}")
        units = tuple(from_data(Unit, u) for u in data["units"])
        kinds = {u.id: u.kind for u in units}
        done = tuple(_result(r, kinds) for r in data["done"])
        return Journal(
            matrix=str(data["matrix"]),
            cache=str(data["cache"]),
            only=tuple(map(str, data["only"])),
            until=Stage(data["until"]),
            started=str(data["started"]),
            units=units,
            done=done,
            batches=tuple(from_data(Batch, b) for b in data.get("batches", ())),
            perf_stopped=str(data.get("perf_stopped", "")),
        )
    except FileNotFoundError:
        raise UserError(f"{run_dir}: no {FILENAME}: not a run directory to resume") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UserError(f"{path}: cannot resume from it: {type(exc).__name__}: {exc}") from None


def _result(data: dict[str, Any], kinds: dict[str, UnitKind]) -> UnitResult:
    unit = str(data["unit"])
    output = data.get("output")
    placement = data.get("placement")
    return UnitResult(
        unit,
        from_data(OUTPUTS[kinds[unit]], output) if output is not None else None,
        seconds=float(data.get("seconds", 0.0)),
        skipped=str(data.get("skipped", "")),
        placement=from_data(Placement, placement) if placement else None,
    )
