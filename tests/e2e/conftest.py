"""The e2e tests' fixtures (e2e_cache, kernel) are in tests/conftest.py, shared
with the fault-injection suite (tests/faults/)."""

from tests.conftest import REPO

__all__ = ["REPO"]
