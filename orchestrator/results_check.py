"""A results file checked against the records of results.py before anything reads it.

`orchestrate report` renders files that may come from anywhere (a CI
artifact, an attachment to a mail), and results.from_data trusts the shape
of its data.  So results.read first loads the file with bounds (its size,
its nesting) and `check` walks the JSON against the dataclass type hints,
the way from_data will decode it.  The first problem is one ResultsError (a
ValueError) that names its JSON path and quotes at most a little of the
value:

    variants[2].tests[0].verdict: expected one of pass, fail, ...; got a string 'bogus'

Besides types and enum values it bounds what would choke a renderer:
nesting (subtests in subtests), strings, integers that are no machine
number and numbers that are not finite (JSON as Python writes it can hold
NaN).  Keys the records do not know are ignored (a newer file may have
more); keys without a default are required.  Generic over dataclasses:
it imports nothing of results.py.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import math
import types
import typing
from pathlib import Path
from typing import Any

from orchestrator.textfmt import quote

MAX_BYTES = 64 * 1024 * 1024  # a results file; a default-matrix run writes a few MB
MAX_DEPTH = 64  # JSON containers inside each other: ~28 levels of subtests
MAX_STRING = 4 * 1024 * 1024  # characters in one string (a reason, git's output)
MAX_INT = 2**63 - 1  # an integer a machine can hold; numbers too (statistics square them)


class ResultsError(ValueError):
    """A results file that is not what results.py writes: where (a JSON path) and what."""

    def __init__(self, where: str, message: str) -> None:
        self.where = where or "<document>"
        self.message = message
        super().__init__(f"{self.where}: {message}")


def load(path: Path) -> Any:
    """The JSON of a results file, read with bounds (ResultsError beyond them).

    OSError, UnicodeDecodeError and json.JSONDecodeError pass through, as
    from reading any file.
    """
    with path.open("rb") as f:
        raw = f.read(MAX_BYTES + 1)
    if len(raw) > MAX_BYTES:
        raise ResultsError("<file>", f"larger than {MAX_BYTES // 2**20} MiB; not a results file")
    try:
        return json.loads(raw)
    except RecursionError:
        # The parser gives up a few hundred levels in; a results file has ~10.
        raise ResultsError("<file>", "nested too deeply to be a results file") from None


def check(cls: type, data: Any) -> None:
    """Raise ResultsError at the first place where data is not what from_data(cls, data) reads."""
    _check(cls, data, "", 0)


def _check(tp: Any, value: Any, where: str, depth: int) -> None:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1:
            raise TypeError(f"results_check: unsupported type {tp}")  # a bug, not the file's
        tp, origin = inner[0], typing.get_origin(inner[0])
    if origin in (tuple, list):
        items = _container(value, list, where, depth)
        args = typing.get_args(tp)
        if origin is list or (len(args) == 2 and args[1] is Ellipsis):
            args = (args[0],) * len(items)
        elif len(items) != len(args):
            raise ResultsError(where, f"expected a list of {len(args)}, got {len(items)} items")
        for i, (arg, item) in enumerate(zip(args, items, strict=True)):
            _check(arg, item, f"{where}[{i}]", depth + 1)
    elif origin is dict:
        key_type, inner_type = typing.get_args(tp)
        if key_type is not str:
            raise TypeError(f"results_check: unsupported type {tp}")
        for key, item in _container(value, dict, where, depth).items():
            _string(key, f"{where}[{quote(key, 40)}]")
            _check(inner_type, item, f"{where}[{quote(key, 40)}]", depth + 1)
    elif isinstance(tp, type) and dataclasses.is_dataclass(tp):
        fields = _container(value, dict, where, depth)
        hints = _hints(tp)
        for f in dataclasses.fields(tp):
            at = f"{where}.{f.name}" if where else f.name
            if f.name in fields:
                _check(hints[f.name], fields[f.name], at, depth + 1)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ResultsError(at, "missing")
    elif origin is typing.Literal or (isinstance(tp, type) and issubclass(tp, enum.Enum)):
        allowed = list(typing.get_args(tp)) if origin is typing.Literal else [m.value for m in tp]
        if not (isinstance(value, str) and value in allowed):
            choices = ", ".join(map(str, allowed))
            raise ResultsError(where, f"expected one of {choices}; got {describe(value)}")
    elif tp in (str, Path):
        _string(value, where)
    elif tp is bool:
        if not isinstance(value, bool):
            raise ResultsError(where, f"expected true or false, got {describe(value)}")
    elif tp is int:
        if isinstance(value, bool) or not isinstance(value, int) or abs(value) > MAX_INT:
            raise ResultsError(where, f"expected an integer, got {describe(value)}")
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ResultsError(where, f"expected a number, got {describe(value)}")
        if not (abs(value) <= MAX_INT and math.isfinite(value)):  # a NaN compares False
            within = f"a finite number of at most {float(MAX_INT):.2g}"
            raise ResultsError(where, f"expected {within}, got {describe(value)}")
    else:
        raise TypeError(f"results_check: unsupported type {tp}")  # a bug, not the file's


def _container(value: Any, kind: type, where: str, depth: int) -> Any:
    if not isinstance(value, kind):
        what = "a list" if kind is list else "an object"
        raise ResultsError(where, f"expected {what}, got {describe(value)}")
    if depth >= MAX_DEPTH:
        raise ResultsError(where, f"nested too deeply (limit {MAX_DEPTH})")
    return value


def _string(value: Any, where: str) -> None:
    if not isinstance(value, str):
        raise ResultsError(where, f"expected a string, got {describe(value)}")
    if len(value) > MAX_STRING:
        raise ResultsError(where, f"a string of {len(value)} characters (limit {MAX_STRING})")


def unsupported(cls: type) -> list[str]:
    """The type hints under cls that check cannot check (a test keeps this empty)."""
    out: list[str] = []
    seen: set[Any] = set()

    def walk(tp: Any) -> None:
        if tp in seen:
            return
        seen.add(tp)
        origin = typing.get_origin(tp)
        args = [a for a in typing.get_args(tp) if a is not type(None) and a is not Ellipsis]
        if origin in (typing.Union, types.UnionType) and len(args) == 1:
            walk(args[0])
        elif origin in (tuple, list) or (origin is dict and args and args[0] is str):
            for arg in args:
                walk(arg)
        elif isinstance(tp, type) and dataclasses.is_dataclass(tp):
            for hint in _hints(tp).values():
                walk(hint)
        elif origin is typing.Literal and all(isinstance(a, str) for a in args):
            return
        elif isinstance(tp, type) and issubclass(tp, enum.Enum):
            if not all(isinstance(m.value, str) for m in tp):
                out.append(str(tp))
        elif tp not in (str, Path, bool, int, float):
            out.append(str(tp))

    walk(cls)
    return out


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def describe(value: Any) -> str:
    """What a JSON value is, for a message, never more than a few dozen characters of it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) or (isinstance(value, int) and abs(value) < 10**30):
        return f"a number {value!r}"
    if isinstance(value, int):
        return "a huge integer"
    if isinstance(value, str):
        return f"a string {quote(value, 60)}"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
