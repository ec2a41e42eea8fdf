"""The perf section's pictures and tables: charts, comparison rows, sparklines.

Geometry and words only: every number comes from the perf model
(orchestrator.perf), every string is escaped by the HTML template.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from orchestrator.perf import History, MetricKey, MetricRow, MetricSummary
from orchestrator.stats import ALPHA, NOISE_LIMIT, Change, higher_is_better
from orchestrator.textfmt import fmt_number, fmt_p, fmt_percent, fmt_ratio

_W, _LEFT, _RIGHT, _ROW, _TOP, _AXIS = 720, 170, 100, 28, 8, 26


@dataclass(frozen=True)
class Dot:
    x: float
    y: float
    value: str


@dataclass(frozen=True)
class Whisker:
    """The 95 % interval of the median, drawn across the row."""

    low: float  # x of the interval's ends
    high: float
    text: str


@dataclass(frozen=True)
class Bar:
    label: str
    y: float  # the row's centre
    x: float
    width: float
    median: str
    dots: list[Dot]
    whisker: Whisker


@dataclass(frozen=True)
class Spark:
    """A small line of one variant's medians over the last runs."""

    width: int
    height: int
    points: str  # SVG polyline points
    last: tuple[float, float]
    title: str


@dataclass(frozen=True)
class PerfRow:
    """A variant's line in a metric's table: its estimate and its comparison."""

    variant: str
    n: int
    median: str
    ci: str
    cv: str
    ratio: str
    p: str
    verdict: str
    css: str
    detectable: str
    spark: Spark | None


@dataclass(frozen=True)
class Chart:
    test: str
    metric: str
    width: int
    height: int
    left: int
    right: int  # x of the plot's right edge
    axis_y: float
    bars: list[Bar]
    ticks: list[tuple[float, str]]
    rows: list[MetricRow]
    table: list[PerfRow] = field(default_factory=list)
    noise: str = ""  # the noise floor, in words
    noisy: str = ""  # why the batch is too noisy to trust (A/A control or baseline CV); "" if not
    direction: str = ""
    breakdown: bool = False  # per CPU, min or max: shown folded, after the headline metrics


def charts(summaries: list[MetricSummary], history: History | None = None) -> list[Chart]:
    """A chart and a comparison table per metric that more than one variant reports."""
    out = []
    for s in summaries:
        if len(s.rows) < 2:
            continue  # one variant: its table in the variant's section says it all
        direction = "higher is better" if higher_is_better(s.metric) else "lower is better"
        rows = [*s.rows, *([s.control] if s.control is not None else [])]
        out.append(
            dataclasses.replace(
                chart((s.test, s.metric), rows),
                table=[_perf_row(s, r, history) for r in rows],
                noise=_noise(s),
                noisy=_noisy(s),
                direction=direction,
                breakdown=s.breakdown,
            )
        )
    return out


def _noisy(s: MetricSummary) -> str:
    if s.floor is not None:
        return s.floor.reason
    if s.base is not None and s.noisy:
        return f"the baseline's CV is over {fmt_percent(NOISE_LIMIT)}"
    return ""


_VERDICT_CSS = {
    Change.FASTER: "c-faster",
    Change.SLOWER: "c-slower",
    Change.SAME: "c-same",
    Change.INCONCLUSIVE: "c-inconclusive",
}


def ci_text(row: MetricRow) -> str:
    e = row.estimate
    return f"[{fmt_number(e.ci_low)}, {fmt_number(e.ci_high)}]"


def _perf_row(s: MetricSummary, r: MetricRow, history: History | None) -> PerfRow:
    c = r.comparison
    if c is None:
        ratio = "baseline" if r.variant == s.baseline else "no baseline samples"
        p = verdict = detectable = ""
        css = "c-baseline"
    elif s.control is r and s.floor is not None:  # the A/A control: a noise floor, no verdict
        ratio, p, detectable = fmt_ratio(c), fmt_p(c.p), fmt_percent(r.detectable)
        verdict = "A/A control: " + (s.floor.reason or "within the noise limit")
        css = "c-inconclusive" if s.floor.noisy else "c-baseline"
    else:
        ratio, p, verdict = fmt_ratio(c), fmt_p(c.p), c.text
        css, detectable = _VERDICT_CSS[c.verdict], fmt_percent(r.detectable)
    e = r.estimate
    return PerfRow(
        r.variant, r.n, fmt_number(e.median), ci_text(r), fmt_percent(e.cv), ratio, p, verdict, css,
        detectable, spark(s, r, history),
    )  # fmt: skip


def _noise(s: MetricSummary) -> str:
    base = s.base
    if base is None:
        return "No baseline samples: nothing to compare with."
    cv = fmt_percent(s.noise)
    n = base.n
    detectable = fmt_percent(s.detectable)
    text = (
        f"Noise floor: {s.baseline} CV {cv} over {n} samples; with {n}+{n} samples a drop of "
        f"{detectable} is detectable (Mann-Whitney, alpha {ALPHA}, power 0.95)."
    )
    if s.floor is not None and s.control is not None:
        f = s.floor
        text += (
            f" Measured again as {s.control.variant}, the same kernel read "
            f"{fmt_ratio(f.comparison)} of itself (within ±{fmt_percent(f.spread)}), "
            f"CV {fmt_percent(f.cv)} over both."
        )
    return text


def chart(key: MetricKey, rows: list[MetricRow]) -> Chart:
    """Every sample as a dot, the median as a bar, its 95 % interval as a whisker."""
    values = [x for r in rows for x in r.samples]
    values += [x for r in rows for x in (r.estimate.ci_low, r.estimate.ci_high)]
    ticks = nice_ticks(min(0.0, *values), max(0.0, *values))
    lo, hi = ticks[0], ticks[-1]
    right = _W - _RIGHT

    def xs(value: float) -> float:
        return round(_LEFT + (value - lo) / (hi - lo) * (right - _LEFT), 1)

    base = xs(0.0)
    bars = []
    for i, r in enumerate(rows):
        y = _TOP + _ROW * i + _ROW / 2
        dots = [
            Dot(xs(x), round(y + ((j % 5) - 2) * 2.5, 1), fmt_number(x))
            for j, x in enumerate(r.samples)
        ]
        end = xs(r.median)
        e = r.estimate
        whisker = Whisker(xs(e.ci_low), xs(e.ci_high), f"95% CI of the median {ci_text(r)}")
        bars.append(
            Bar(r.variant, y, min(base, end), abs(end - base), fmt_number(r.median), dots, whisker)
        )
    axis_y = _TOP + _ROW * len(rows) + 4
    return Chart(
        test=key[0],
        metric=key[1],
        width=_W,
        height=int(axis_y + _AXIS),
        left=_LEFT,
        right=right,
        axis_y=axis_y,
        bars=bars,
        ticks=[(xs(t), fmt_number(t)) for t in ticks],
        rows=rows,
    )


_SPARK_W, _SPARK_H, _SPARK_PAD = 120, 24, 3


def spark(s: MetricSummary, r: MetricRow, history: History | None) -> Spark | None:
    """The variant's medians over the last runs, when there are at least two."""
    if history is None:
        return None
    points = history.medians.get((s.test, s.metric), {}).get(r.variant, ())
    return sparkline(points)


def sparkline(points: tuple[tuple[str, float], ...]) -> Spark | None:
    if len(points) < 2:
        return None
    values = [m for _, m in points]
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0  # a flat line sits in the middle
    step = (_SPARK_W - 2 * _SPARK_PAD) / (len(points) - 1)
    inner = _SPARK_H - 2 * _SPARK_PAD
    xy = [
        (
            round(_SPARK_PAD + i * step, 1),
            round(_SPARK_PAD + inner * ((hi - m) / span if hi > lo else 0.5), 1),
        )
        for i, m in enumerate(values)
    ]
    title = "\n".join(f"{started}: {fmt_number(m)}" for started, m in points)
    return Spark(
        _SPARK_W,
        _SPARK_H,
        " ".join(f"{x},{y}" for x, y in xy),
        xy[-1],
        f"median over the last {len(points)} runs\n{title}",
    )


def nice_ticks(lo: float, hi: float, count: int = 4) -> list[float]:
    """Round axis ticks (steps of 1, 2 or 5 times a power of ten) covering lo..hi."""
    if not hi - lo > abs(lo) * 1e-9:  # no span, or one lost in the rounding of tiny values
        hi = lo + max(abs(lo), 1.0)
    raw = (hi - lo) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.floor(lo / step) * step
    n = math.ceil((hi - first) / step - 1e-9)
    # Twelve significant digits: float noise away, tiny scales kept.
    return [float(f"{first + i * step:.12g}") for i in range(n + 1)]
