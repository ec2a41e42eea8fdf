"""Numbers and text as people read them, and plain-text tables.

Shared by the reports and by `orchestrate history`, which is why it is no
part of the report package.  Pure: no I/O, no model.
"""

from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Sequence

from orchestrator.stats import Comparison

MAIL_WIDTH = 72  # a line of a mailing-list reply
_MAX_COL = 20  # a wider column header or cell wraps

# C0 controls (but tab and newline), DEL and C1 controls: terminal escapes
# and NULs from consoles, which no report should pass on raw.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """Text with control characters shown as \\xNN, so they read and do not act."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m[0]):02x}", text)


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
