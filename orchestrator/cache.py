"""The cache directory: layout, stage records and the run lock.

Layout under the cache root:
  trees/       bare repositories of kernel trees (source.py)
  work/        worktrees and make O= directories (build.py)
  artifacts/   built kernels by (tree hash, config hash)
  ccache/      the compiler cache
  records/     small JSON records of finished apply and kconfig stages, so
               `plan` can tell what is cached without touching anything
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from orchestrator import ledger
from orchestrator.results import from_data, to_data
from orchestrator.textfmt import for_terminal

T = TypeVar("T")


def default_root() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "orchestrate"


def digest(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()


@dataclass(frozen=True)
class Cache:
    root: Path

    @property
    def work(self) -> Path:
        return self.root / "work"

    def load(self, kind: str, key: str, cls: type[T]) -> T | None:
        """The record, or None when there is none or it is unreadable (a torn
        write of a killed run, a hand edit): then the work is simply redone."""
        path = self._record(kind, key)
        try:
            return from_data(cls, json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            path.unlink(missing_ok=True)
            return None

    def save(self, kind: str, key: str, record: Any) -> None:
        path = self._record(kind, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(to_data(record), indent=2) + "\n")
        tmp.replace(path)

    def log_of(self, kind: str, key: str) -> Path:
        """Where the log of the work behind a record is kept, so that a run
        served from the cache can still show how the result came about."""
        path = self._record(kind, key).with_suffix(".log")
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def _record(self, kind: str, key: str) -> Path:
        return self.root / "records" / kind / f"{key}.json"

    @contextmanager
    def locked(self) -> Iterator[None]:
        """One run at a time per cache: runs share worktrees and build dirs.

        What a dead run left running (a killed orchestrate's compilers, say) is
        killed first, and this run's children are noted for the next one.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        for what in ledger.reap(self.root / ledger.DIRNAME):
            print(for_terminal(f"stopped what a dead run left behind: {what}"), flush=True)
        with (self.root / "lock").open("w") as f, ledger.recording(self.root / ledger.DIRNAME):
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                print(f"waiting for another orchestrate run using {self.root} ...", flush=True)
                fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
