"""YAML nodes that know where they are, and typed readers whose errors say so.

config.py reads the matrix with these.  The text is *composed* into PyYAML
nodes, never loaded into Python objects wholesale, so that every problem
can be reported as file:line plus a key path such as
``variants[2].series[0]``.  Scalars are converted with the safe resolver's
rules (strings, ints, floats, booleans, null) and nothing else.

A matrix may come from elsewhere (a colleague, a bug report), and its
values are echoed in errors: the file is read up to MAX_BYTES, nesting
deeper than MAX_DEPTH is an error at its line (never a RecursionError), and
a message quotes at most QUOTE characters of a value ("… (N characters)").
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import yaml

from orchestrator.errors import MatrixError
from orchestrator.textfmt import clip, quote

Scalar = str | int | float | bool | None
T = TypeVar("T")

MAX_BYTES = 10 * 1024 * 1024  # a matrix file; the default one is a few kB
MAX_DEPTH = 100  # lists and mappings inside each other; a matrix needs about 6
QUOTE = 200  # characters of a value quoted in a message
_KEY = QUOTE  # characters of a key shown in a key path
_MESSAGE = 2000  # characters of a whole message
_LONG_WORD = re.compile(rf"\S{{{QUOTE + 1},}}")

_TAG = "tag:yaml.org,2002:"
_SAFE = yaml.constructor.SafeConstructor()
_SCALARS: dict[str, Callable[[yaml.ScalarNode], Scalar]] = {
    _TAG + "null": _SAFE.construct_yaml_null,
    _TAG + "bool": _SAFE.construct_yaml_bool,
    _TAG + "int": _SAFE.construct_yaml_int,
    _TAG + "float": _SAFE.construct_yaml_float,
    _TAG + "str": lambda node: str(node.value),
    _TAG + "timestamp": lambda node: str(node.value),  # kept as the text written
}


# --- the cursor -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    """One YAML node and where it sits: file, line and key path."""

    node: yaml.Node
    key_path: str  # "" for the document itself
    line: int
    file: Path
    base: Path  # the matrix file's directory, resolved

    def join(self, key: str) -> str:
        key = clip(key, _KEY)
        return f"{self.key_path}.{key}" if self.key_path else key

    def child(self, key: str, key_node: yaml.Node, node: yaml.Node) -> Node:
        return Node(node, self.join(key), line_of(key_node), self.file, self.base)

    def item(self, index: int, node: yaml.Node) -> Node:
        return Node(node, f"{self.key_path}[{index}]", line_of(node), self.file, self.base)

    def error(self, message: str) -> MatrixError:
        return MatrixError(self.file, self.line, self.key_path or "<document>", bounded(message))

    def missing(self, key: str, message: str = "is required") -> MatrixError:
        return MatrixError(self.file, self.line, self.join(key), bounded(message))


def bounded(message: str) -> str:
    """A message of at most about _MESSAGE characters, whatever value it quotes.

    The readers here quote values with textfmt.quote; this bounds what a
    caller built itself: a word longer than QUOTE (a value without spaces)
    is cut to QUOTE characters, then the message, keeping its end (the rule
    that was broken).
    """
    if len(message) <= _MESSAGE:
        return message
    message = _LONG_WORD.sub(lambda m: clip(m[0], QUOTE), message)
    if len(message) <= _MESSAGE:
        return message
    head, tail = message[: _MESSAGE // 2], message[-_MESSAGE // 4 :]
    return f"{head} … ({len(message) - len(head) - len(tail)} characters) … {tail}"


def line_of(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def document(path: Path) -> Node:
    """The matrix file at path, composed: its root node (MatrixError when unreadable)."""
    root = compose(path, read_text(path))
    return Node(root, "", line_of(root), path, path.resolve().parent)


def read_text(path: Path) -> str:
    """The matrix file's text: UTF-8, at most MAX_BYTES (MatrixError otherwise)."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_BYTES + 1)
        if len(data) > MAX_BYTES:
            limit = f"{MAX_BYTES // 2**20} MiB"
            raise MatrixError(path, 0, "<file>", f"larger than {limit}: not a matrix file")
        return data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise MatrixError(path, 0, "<file>", f"cannot read the matrix file: {reason}") from None


class _TooDeep(Exception):
    def __init__(self, mark: yaml.Mark, key_path: str) -> None:
        super().__init__(key_path)
        self.mark = mark
        self.key_path = key_path


class _Loader(yaml.SafeLoader):
    """The safe loader's composer, which recurses once per level, with a
    nesting limit: it knows the key path of the node it composes."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._parts: list[str] = []
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        # index: the item's number in a sequence; in a mapping the key node (for its
        # value) or None (for the key itself).  The stubs say int.
        if parent is None:
            part = ""
        elif isinstance(index, int):
            part = f"[{index}]"
        elif isinstance(index, yaml.ScalarNode):
            part = "." + clip(str(index.value), _KEY)
        else:
            part = ".<key>"  # a mapping's key, or the value of a key that is no scalar
        nested = self.check_event(yaml.SequenceStartEvent, yaml.MappingStartEvent)
        self._parts.append(part)
        self._depth += nested
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise _TooDeep(mark, self._key_path())
            return super().compose_node(parent, index)
        finally:
            self._parts.pop()
            self._depth -= nested

    def _key_path(self) -> str:
        path = "".join(self._parts).lstrip(".")
        return path if len(path) <= 200 else f"{path[:120]}…{path[-60:]}"


def compose(path: Path, text: str) -> yaml.Node:
    """The text's single YAML document as nodes (MatrixError on a syntax error)."""
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
    except _TooDeep as e:
        message = f"nested too deeply (limit {MAX_DEPTH})"
        raise MatrixError(path, e.mark.line + 1, e.key_path or "<document>", message) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        message = e.problem or "invalid YAML"
        if e.context and e.context_mark:
            message = f"{e.context} at line {e.context_mark.line + 1}, {message}"
        line = mark.line + 1 if mark else 0
        raise MatrixError(path, line, "<yaml>", bounded(message)) from None
    except yaml.reader.ReaderError as e:  # a character YAML does not allow
        line = text.count("\n", 0, e.position) + 1
        message = f"unacceptable character #x{e.character:04x}: {e.reason}"
        raise MatrixError(path, line, "<yaml>", message) from None
    finally:
        loader.dispose()
    if root is None:
        raise MatrixError(path, 1, "<document>", "the file is empty; a matrix needs variants:")
    return root


# --- typed readers: each returns a value or raises a MatrixError at the node ------------------


def describe(node: yaml.Node) -> str:
    """What a node holds, for messages: "a list", "a boolean true", "a string 'x'"..."""
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if not isinstance(node, yaml.ScalarNode) or node.tag not in _SCALARS:
        return f"a value tagged {clip(str(node.tag), QUOTE)}"
    try:
        value = _SCALARS[node.tag](node)
    except ValueError:  # Python reads no integer of more than 4300 digits
        return f"a number of {len(node.value)} characters"
    if value is None:
        return "null" if node.value else "an empty value"
    if isinstance(value, bool):
        return f"a boolean {clip(node.value, QUOTE)}"
    if isinstance(value, int):
        return f"an integer {clip(node.value, QUOTE)}"
    if isinstance(value, float):
        return f"a number {clip(node.value, QUOTE)}"
    return f"a string {quote(value, QUOTE)}"


def wrong(cur: Node, expected: str) -> MatrixError:
    return cur.error(f"expected {expected}, got {describe(cur.node)}")


def scalar(cur: Node, expected: str) -> Scalar:
    node = cur.node
    if isinstance(node, yaml.ScalarNode) and node.tag in _SCALARS:
        try:
            return _SCALARS[node.tag](node)
        except ValueError:  # an integer of more than 4300 digits
            raise wrong(cur, expected) from None
    raise wrong(cur, expected)


def string(cur: Node, what: str = "a string", *, raw_numbers: bool = False) -> str:
    """A string; with raw_numbers, an unquoted number is taken as the text written."""
    value = scalar(cur, what)
    if isinstance(value, str):
        return value
    if raw_numbers and isinstance(value, int | float) and not isinstance(value, bool):
        return str(cur.node.value)
    text = clip(str(cur.node.value), QUOTE)
    hint = f" (quote it if you meant the text '{text}')" if value is not None else ""
    raise cur.error(f"expected {what}, got {describe(cur.node)}{hint}")


def integer(cur: Node, low: int, high: int | None = None) -> int:
    value = scalar(cur, "an integer")
    if isinstance(value, bool) or not isinstance(value, int):
        raise wrong(cur, "an integer")
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise cur.error(f"must be {bounds}, got {value}")
    return value


def boolean(cur: Node) -> bool:
    value = scalar(cur, "true or false")
    if not isinstance(value, bool):
        raise wrong(cur, "true or false")
    return value


def seconds(cur: Node) -> float:
    value = scalar(cur, "a number of seconds")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise wrong(cur, "a number of seconds")
    if not (math.isfinite(value) and value > 0):
        raise cur.error(f"must be a positive number of seconds, got {value}")
    return float(value)


_DURATION = re.compile(r"(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>s|m|min|h)?")
_UNIT = {None: 1.0, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float | None:
    """ "20m", "90s", "1.5h" or plain seconds; None when it is none of these."""
    m = _DURATION.fullmatch(text.strip())
    if m is None:
        return None
    value = float(m["n"]) * _UNIT[m["unit"]]
    return value if value > 0 else None


def duration(cur: Node) -> float:
    """A positive time: seconds as a number, or text such as "20m", "90s", "1h"."""
    value = scalar(cur, "a duration such as 20m, 90s or 1h")
    if isinstance(value, bool):
        raise wrong(cur, "a duration such as 20m, 90s or 1h")
    if isinstance(value, int | float):
        return seconds(cur)
    parsed = parse_duration(str(value))
    if parsed is None:
        raise cur.error(
            f"must be a duration such as 20m, 90s or 1h; got {quote(str(value), QUOTE)}"
        )
    return parsed


def percent(cur: Node, low: float, high: float) -> float:
    """A percentage written "5%" (or 5), as a fraction (0.05), within [low, high] percent."""
    value = scalar(cur, "a percentage such as 5%")
    if isinstance(value, bool):
        raise wrong(cur, "a percentage such as 5%")
    text = str(value).strip()
    try:
        number = float(text[:-1] if text.endswith("%") else text)
    except ValueError:
        raise cur.error(f"must be a percentage such as 5%; got {quote(text, QUOTE)}") from None
    if not (math.isfinite(number) and low <= number <= high):
        raise cur.error(f"must be between {low:g}% and {high:g}%, got {text}")
    return number / 100


def choice(cur: Node, choices: tuple[str, ...]) -> str:
    value = string(cur, "one of " + ", ".join(choices))
    if value not in choices:
        raise cur.error(f"must be one of {', '.join(choices)}; got {quote(value, QUOTE)}")
    return value


def claim(cur: Node, name: str, seen: dict[str, int], what: str) -> None:
    if name in seen:
        raise cur.error(f"duplicate {what} name {quote(name, QUOTE)} (first at line {seen[name]})")
    seen[name] = cur.line


def entries(cur: Node) -> list[tuple[str, Node]]:
    """A mapping's entries in file order; keys are taken as the text written."""
    if not isinstance(cur.node, yaml.MappingNode):
        raise wrong(cur, "a mapping")
    entries: list[tuple[str, Node]] = []
    first: dict[str, int] = {}
    for key_node, value_node in cur.node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            problem = f"keys must be plain words, got {describe(key_node)}"
            raise MatrixError(cur.file, line_of(key_node), cur.key_path or "<document>", problem)
        key = str(key_node.value)
        child = cur.child(key, key_node, value_node)
        if key in first:
            raise child.error(f"duplicate key {quote(key, QUOTE)} (first at line {first[key]})")
        first[key] = child.line
        entries.append((key, child))
    return entries


def mapping(cur: Node, allowed: Collection[str], required: Collection[str] = ()) -> dict[str, Node]:
    fields = dict(entries(cur))
    for key, child in fields.items():
        if key not in allowed:
            allowed_keys = ", ".join(allowed)
            raise child.error(f"unknown key {quote(key, QUOTE)}; allowed keys: {allowed_keys}")
    for key in required:
        if key not in fields:
            raise cur.missing(key)
    return fields


def get(fields: dict[str, Node], key: str, convert: Callable[[Node], T], default: T) -> T:
    """fields[key] converted, or default when the key is absent."""
    node = fields.get(key)
    return default if node is None else convert(node)


def sequence(cur: Node, what: str, *, one_ok: bool = False) -> list[Node]:
    """The items of a list; with one_ok, a single string stands for a list of one."""
    node = cur.node
    if isinstance(node, yaml.SequenceNode):
        return [cur.item(i, item) for i, item in enumerate(node.value)]
    if one_ok and isinstance(node, yaml.ScalarNode) and isinstance(scalar(cur, what), str):
        return [cur]
    raise wrong(cur, what)


def local_path(cur: Node, kind: str, *, outside_ok: bool = False) -> Path:
    """A path, relative to the matrix directory; kind is what must exist there ("" = nothing)."""
    text = string(cur, "a path")
    if not text:
        raise cur.error("expected a path, got an empty string")
    try:
        path = (cur.base / text).resolve()
    except (OSError, ValueError, RuntimeError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else clip(str(e), QUOTE)
        raise cur.error(f"not a usable path {quote(text, QUOTE)}: {why}") from None
    shown = clip(str(path), QUOTE)
    if not Path(text).is_absolute() and not outside_ok and not path.is_relative_to(cur.base):
        raise cur.error(
            f"{quote(text, QUOTE)} escapes the matrix directory {cur.base} (it resolves to "
            f"{shown}); write an absolute path if you mean it"
        )
    try:
        exists = path.exists()
    except (OSError, ValueError) as e:  # a name too long, a NUL
        why = e.strerror if isinstance(e, OSError) and e.strerror else clip(str(e), QUOTE)
        raise cur.error(f"not a usable path {quote(text, QUOTE)}: {why}") from None
    if kind and not exists:
        raise cur.error(f"no such {kind}: {shown}")
    if (kind == "file" and not path.is_file()) or (kind == "directory" and not path.is_dir()):
        raise cur.error(f"not a {kind}: {shown}")
    return path


def local_paths(cur: Node, kind: str) -> tuple[Path, ...]:
    return tuple(
        local_path(item, kind) for item in sequence(cur, "a path or a list of paths", one_ok=True)
    )
