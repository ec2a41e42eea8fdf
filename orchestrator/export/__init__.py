"""Results in other systems' formats: KCIDB v5 JSON and patchwork checks.

Each exporter turns a RunResult into plain JSON data (`render`) and writes
nothing and calls no network: posting the data is the caller's business.
A results file may come from anywhere, so every string taken from it is
bounded and shown, never obeyed (textfmt.printable), and every identifier is
cut down to the characters the target accepts.
"""

from __future__ import annotations

import re

from orchestrator.errors import UserError
from orchestrator.textfmt import clip, printable

__all__ = ["ExportError", "one_line", "shown", "slug"]

_UNSLUG = re.compile(r"[^A-Za-z0-9_-]+")


class ExportError(UserError):
    """The options cannot make a valid export (a bad origin, context or URL): exit 2."""


def shown(text: str, limit: int) -> str:
    """Hostile text with nothing in it acting, at most `limit` characters (+ a note of the cut).

    A control character is shown in up to 8 (<U+202E>), so the cut comes after.
    """
    return clip(printable(text[: limit * 8]), limit)


def one_line(text: str, limit: int) -> str:
    """As shown, and on one line: every run of white space (newlines too) is one space."""
    return shown(" ".join(text[: limit * 8].split()), limit)


def slug(text: str) -> str:
    """Letters, digits, '_' and '-' only (a KCIDB path segment, a patchwork context)."""
    return _UNSLUG.sub("_", text).strip("_") or "_"
