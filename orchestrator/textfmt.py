"""Numbers and text as people read them, and plain-text tables.

Shared by the reports and by `orchestrate history`, which is why it is no
part of the report package.  Pure: no I/O, no model.
"""

from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # textfmt stays light: the terminal and YAML readers use it too
    from orchestrator.stats import Comparison

MAIL_WIDTH = 72  # a line of a mailing-list reply
_MAX_COL = 20  # a wider column header or cell wraps

# C0 controls (but tab and newline), DEL and C1 controls: terminal escapes
# and NULs from consoles, which no report should pass on raw.
_CONTROL = "\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f"
# Bidirectional formatting (embeddings, overrides, isolates, marks): they
# reorder what is shown, so a patch subject or a test name could read as
# something else ("Trojan Source").  Shown as <U+202E>.
BIDI = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
# Lone surrogates (JSON can carry them; no encoder can write them).
_SURROGATE = "\ud800-\udfff"
_HIDDEN = re.compile(f"[{_CONTROL}{BIDI}{_SURROGATE}]")
# On a terminal a carriage return rewrites the line it is on, too.
_TERMINAL = re.compile(f"[{_CONTROL}\r{BIDI}{_SURROGATE}]")
_TERMINAL_LINE = re.compile(f"[{_CONTROL}\r\n{BIDI}{_SURROGATE}]")


def _shown(m: re.Match[str]) -> str:
    code = ord(m[0])
    if code < 0xA0:
        return f"\\x{code:02x}"
    if 0xD800 <= code <= 0xDFFF:
        return f"\\u{code:04x}"
    return f"<U+{code:04X}>"


def printable(text: str) -> str:
    """Text whose invisible characters are shown, so they read and do not act.

    Controls (but tab and newline) as \\xNN, bidirectional formatting as
    <U+202E>, lone surrogates as \\udNNN.
    """
    return _HIDDEN.sub(_shown, text)


def for_terminal(text: str, *, one_line: bool = False, limit: int | None = None) -> str:
    """Hostile text as a terminal may print it: nothing in it acts.

    As printable, and carriage returns too; with one_line, newlines too (a
    progress or summary line stays one line, so no text can forge another).
    With limit, at most that many characters of it (see clip).
    """
    if limit is not None:
        text = clip(text, limit)
    return (_TERMINAL_LINE if one_line else _TERMINAL).sub(_shown, text)


def clip(text: str, limit: int) -> str:
    """At most `limit` characters of text, saying how long it was: "aaaa… (5000 characters)"."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text)} characters)"


def quote(text: str, limit: int = 200) -> str:
    """A value quoted for a message, at most `limit` characters of it: 'aaaa…' (5000 characters)."""
    if len(text) <= limit:
        return repr(text)
    shown = repr(text[:limit])
    return f"{shown[:-1]}…{shown[-1]} ({len(text)} characters)"


def fmt_ratio(c: Comparison) -> str:
    """The ratio to the baseline and its interval: 0.63x [0.60, 0.66]."""
    if math.isnan(c.ratio):
        return "no ratio"
    return f"{c.ratio:.2f}x [{c.ci_low:.2f}, {c.ci_high:.2f}]"


def fmt_p(p: float) -> str:
    return f"{p:.2g}"


def fmt_percent(x: float) -> str:
    """A fraction as a percentage for people: 0.0312 -> "3.1%"; nan and inf -> "—"."""
    if not math.isfinite(x):
        return "—"
    return f"{x * 100:.1f}%" if x < 0.1 else f"{x * 100:.0f}%"


def fmt_rate(x: float) -> str:
    """A configured rate as the matrix writes it: 0.05 -> "5%", 0.005 -> "0.5%"."""
    return f"{x * 100:g}%"


def fmt_number(x: float) -> str:
    """A metric value for people: integers whole, others to about four digits."""
    x = float(x)  # ints arrive from JSON too
    if x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    if abs(x) >= 1000:
        return f"{x:.1f}"
    return f"{x:.4g}"


def grid(
    header: Sequence[str], rows: Sequence[Sequence[str]], width: int = MAIL_WIDTH
) -> list[str]:
    """A table whose columns are split into blocks that fit `width`.

    The first column (the row label) repeats in every block; headers and
    cells wider than _MAX_COL wrap inside their column.
    """
    table = [list(header), *map(list, rows)]
    widths = [min(_MAX_COL, max(len(r[c]) for r in table)) for c in range(len(header))]
    widths[0] = min(widths[0], width // 3)
    blocks: list[list[int]] = [[]]
    used = widths[0]
    for c in range(1, len(header)):
        if blocks[-1] and used + 2 + widths[c] > width:
            blocks.append([])
            used = widths[0]
        blocks[-1].append(c)
        used += 2 + widths[c]
    out: list[str] = []
    for block in blocks:
        cols = [0, *block]
        if out:
            out.append("")
        out += _grid_row(table[0], cols, widths)
        out.append("  ".join("-" * widths[c] for c in cols))
        for row in table[1:]:
            out += _grid_row(row, cols, widths)
    return out


def _grid_row(row: list[str], cols: list[int], widths: list[int]) -> list[str]:
    cells = [
        textwrap.wrap(printable(row[c]), widths[c], break_on_hyphens=False) or [""] for c in cols
    ]
    height = max(len(c) for c in cells)
    lines = []
    for i in range(height):
        parts = [
            (c[i] if i < len(c) else "").ljust(widths[col])
            for c, col in zip(cells, cols, strict=True)
        ]
        lines.append("  ".join(parts).rstrip())
    return lines
