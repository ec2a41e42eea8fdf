"""Cache records: a record that cannot be read is a miss, not a fault."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestrator.cache import Cache


@dataclass(frozen=True)
class Record:
    tree: str
    count: int


def test_saved_records_load(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    cache.save("kind", "k", Record("abc", 2))
    assert cache.load("kind", "k", Record) == Record("abc", 2)
    assert cache.load("kind", "other", Record) is None


@pytest.mark.parametrize("text", ['{"tree": "abc", "cou', "[1, 2]", '{"tree": "a"}', "\xff"])
def test_a_torn_or_foreign_record_is_a_miss_and_is_removed(tmp_path: Path, text: str) -> None:
    cache = Cache(tmp_path)
    cache.save("kind", "k", Record("abc", 2))
    (path,) = (tmp_path / "records" / "kind").glob("k.json")
    path.write_text(text)
    assert cache.load("kind", "k", Record) is None
    assert not path.exists()
