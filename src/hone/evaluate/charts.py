"""Inline SVG charts for the evaluation report: pure functions from numbers to markup.

The report has to open offline, from a file, long after the run: no charting library, no script, nothing
fetched. Bars with interval whiskers and lines with markers are all the ladder needs, and as plain
functions their geometry is testable. Every chart is well-formed XML with a viewBox, so it scales with
the page and a test can parse it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

WIDTH = 560
HEIGHT = 300
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 44, 40
CHAR_WIDTH = 6.2  # average width of an 11px system-font character, for fitting labels
INK, MUTED, GRID = "#1f2933", "#616e7c", "#e4e7eb"
TARGET_COLOUR = "#c2410c"
DASHED = ' stroke-dasharray="5 3"'


@dataclass(frozen=True)
class Plot:
    """The area inside the chart's margins and the value ranges its axes show (both start at 0)."""

    y_max: float
    x_max: float = 1.0
    left: float = LEFT
    top: float = TOP
    width: float = WIDTH - LEFT - RIGHT
    height: float = HEIGHT - TOP - BOTTOM

    @property
    def bottom(self) -> float:
        return self.top + self.height

    @property
    def right(self) -> float:
        return self.left + self.width

    def y(self, value: float) -> float:
        """Values beyond the axis are clamped to its ends, so nothing is drawn outside the frame."""
        share = min(max(value, 0.0), self.y_max) / self.y_max
        return round(self.bottom - self.height * share, 2)

    def x(self, value: float) -> float:
        share = min(max(value, 0.0), self.x_max) / self.x_max
        return round(self.left + self.width * share, 2)


@dataclass(frozen=True)
class BarSeries:
    """One bar per category; `colour` is one colour for all bars or one per category."""

    name: str
    values: Sequence[float | None]
    colour: str | Sequence[str]
    lows: Sequence[float | None] | None = None
    highs: Sequence[float | None] | None = None

    def colour_at(self, index: int) -> str:
        return self.colour if isinstance(self.colour, str) else self.colour[index]


@dataclass(frozen=True)
class Line:
    name: str
    points: Sequence[tuple[float, float]]
    colour: str
    dashed: bool = False
    markers: bool = False


def nice_step(maximum: float, count: int = 5) -> float:
    """A round tick spacing (1, 2, 2.5 or 5 times a power of ten) for about `count` ticks up to `maximum`."""
    raw = maximum / count if maximum > 0 else 1.0
    power = 10 ** math.floor(math.log10(raw))
    return next(power * factor for factor in (1, 2, 2.5, 5, 10) if power * factor >= raw * (1 - 1e-9))


def nice_ticks(maximum: float, count: int = 5) -> list[float]:
    """Ticks from 0 to the first round value at or above `maximum`."""
    step = nice_step(maximum, count)
    ticks = math.ceil(maximum / step - 1e-9) if maximum > 0 else count
    return [round(step * index, 12) for index in range(max(ticks, 1) + 1)]


def tick_label(value: float, step: float) -> str:
    """As many decimals as the step needs: 0, 0.25, 0.5 rather than 0.000, 0.250, 0.500."""
    decimals = 0
    while decimals < 8 and abs(round(step, decimals) - step) > step * 1e-6:
        decimals += 1
    return f"{value:.{decimals}f}"


def fit(text: str, width: float) -> str:
    """Cut a label to the width it has, with an ellipsis; the full text stays in the element's title."""
    room = max(int(width / CHAR_WIDTH), 3)
    return text if len(text) <= room else text[: room - 1] + "…"


def text(x: float, y: float, content: str, *, anchor: str = "middle", css: str = "", extra: str = "") -> str:
    css_attr = f' class="{css}"' if css else ""
    return f'<text x="{x:g}" y="{y:g}" text-anchor="{anchor}"{css_attr}{extra}>{escape(content)}</text>'


def segment(x1: float, y1: float, x2: float, y2: float, stroke: str, extra: str = "") -> str:
    return f'<line x1="{x1:g}" y1="{y1:g}" x2="{x2:g}" y2="{y2:g}" stroke="{stroke}"{extra}/>'


def svg_frame(chart: str, title: str, body: Sequence[str]) -> str:
    opening = (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'data-chart="{escape(chart)}" role="img" font-size="11" fill="{INK}">'
    )
    return f"{opening}<title>{escape(title)}</title>{''.join(body)}</svg>"


def y_axis(plot: Plot, ticks: Sequence[float], label: str) -> list[str]:
    """Horizontal grid lines with their values, and the axis name above the values."""
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    parts = []
    for tick in ticks:
        y = plot.y(tick)
        parts.append(segment(plot.left, y, plot.right, y, GRID))
        parts.append(text(plot.left - 6, y + 4, tick_label(tick, step), anchor="end", css="tick"))
    if label:
        parts.append(text(8, plot.top - 14, label, anchor="start", css="axis"))
    return parts


def legend(items: Sequence[tuple[str, str, bool]], right: float, y: float) -> list[str]:
    """Swatches and names (name, colour, dashed) laid out right to left, in a second row when one is full."""
    parts, x = [], right
    for name, colour, dashed in reversed(items):
        width = len(name) * CHAR_WIDTH + 36
        if x - width < LEFT and x < right:
            x, y = right, y + 14
        x -= width - 36
        parts.append(text(x, y + 4, name, anchor="start", css="legend"))
        parts.append(segment(x - 24, y, x - 6, y, colour, ' stroke-width="3"' + (DASHED if dashed else "")))
        x -= 36
    return parts


def bar_chart(
    chart: str,
    title: str,
    categories: Sequence[str],
    series: Sequence[BarSeries],
    *,
    y_max: float | None = None,
    y_label: str = "",
    target: float | None = None,
    target_label: str = "target",
    value_format: Callable[[float], str] = "{:.3g}".format,
) -> str:
    """Grouped vertical bars from 0, optional 95% interval whiskers, and an optional dashed target line."""
    # a missing or unbounded value (a rung with no throughput costs infinitely much) gets no bar
    tops = [v for s in series for v in [*s.values, *(s.highs or [])] if v is not None and math.isfinite(v)]
    highest = max([*tops, target or 0.0]) or 1.0  # all zero or missing: still a readable 0..1 axis
    ticks = nice_ticks(highest if y_max is None else y_max)
    plot = Plot(y_max=y_max if y_max is not None else ticks[-1])
    group = plot.width / max(len(categories), 1)
    bar_width = min(group * 0.7 / max(len(series), 1), 72)
    body = y_axis(plot, ticks, y_label)
    for index, category in enumerate(categories):
        start = plot.left + group * index + (group - bar_width * len(series)) / 2
        for offset, one in enumerate(series):
            body += bar(plot, one, index, start + offset * bar_width, bar_width, category, value_format)
        centre = plot.left + group * (index + 0.5)
        body.append(text(centre, plot.bottom + 16, fit(category, group), css="category"))
    body.append(segment(plot.left, plot.bottom, plot.right, plot.bottom, MUTED))
    if target is not None:
        y = plot.y(target)
        dash = ' class="target" stroke-width="1.5" stroke-dasharray="6 4"'
        body.append(segment(plot.left, y, plot.right, y, TARGET_COLOUR, dash))
        halo = ' stroke="#fff" stroke-width="3" paint-order="stroke"'
        body.append(text(plot.left + 4, y - 5, target_label, anchor="start", css="target-label", extra=halo))
    if len(series) > 1:
        body += legend([(s.name, s.colour_at(0), False) for s in series], WIDTH - RIGHT, 18)
    return svg_frame(chart, title, body)


def bar(
    plot: Plot, one: BarSeries, index: int, x: float, width: float, category: str, fmt: Callable[[float], str]
) -> list[str]:
    """One bar with its whisker and value label; a missing or unbounded value is marked n/a instead."""
    value = one.values[index]
    centre = round(x + width / 2, 2)
    if value is None or not math.isfinite(value):
        return [text(centre, plot.bottom - 4, "n/a", css="value")]
    top = plot.y(value)
    name = escape(f"{category} {one.name}: {fmt(value)}")
    parts = [
        f'<rect x="{x + 2:g}" y="{top:g}" width="{max(width - 4, 1):g}" height="{plot.bottom - top:g}" '
        f'fill="{one.colour_at(index)}" rx="2"><title>{name}</title></rect>'
    ]
    label_y = top
    low = one.lows[index] if one.lows is not None else None
    high = one.highs[index] if one.highs is not None else None
    if low is not None and high is not None:
        y_low, y_high, left, right = plot.y(low), plot.y(high), centre - width / 4, centre + width / 4
        parts.append(
            f'<path class="whisker" d="M{centre:g} {y_low:g}V{y_high:g}M{left:g} {y_high:g}H{right:g}'
            f'M{left:g} {y_low:g}H{right:g}" stroke="{INK}" stroke-width="1.2" fill="none"/>'
        )
        label_y = min(top, y_high)
    parts.append(text(centre, label_y - 5, fmt(value), css="value"))
    return parts


def line_chart(
    chart: str,
    title: str,
    lines: Sequence[Line],
    *,
    x_label: str,
    y_label: str,
    key: Sequence[tuple[str, str, bool]] | None = None,
) -> str:
    """Lines over a shared x axis from 0 (e.g. training step) and a y axis from 0.

    The legend names every line unless `key` (name, colour, dashed) says what the colours mean instead.
    """
    xs = [x for line in lines for x, _ in line.points]
    ys = [y for line in lines for _, y in line.points]
    x_ticks, y_ticks = nice_ticks(max([*xs, 0.0]) or 1.0, 6), nice_ticks(max([*ys, 0.0]) or 1.0)
    plot = Plot(y_max=y_ticks[-1], x_max=x_ticks[-1])
    body = y_axis(plot, y_ticks, y_label)
    step = x_ticks[1] - x_ticks[0] if len(x_ticks) > 1 else 1.0
    for tick in x_ticks:
        x = plot.x(tick)
        body.append(segment(x, plot.bottom, x, plot.bottom + 4, MUTED))
        body.append(text(x, plot.bottom + 16, tick_label(tick, step), css="tick"))
    body.append(segment(plot.left, plot.bottom, plot.right, plot.bottom, MUTED))
    body.append(text(plot.right, plot.bottom + 32, x_label, anchor="end", css="axis"))
    for line in lines:
        body += polyline(plot, line)
    body += legend(key or [(line.name, line.colour, line.dashed) for line in lines], WIDTH - RIGHT, 18)
    return svg_frame(chart, title, body)


def polyline(plot: Plot, line: Line) -> list[str]:
    """The line through its points in x order; markers on request, and always for a lone point."""
    if not line.points:
        return []
    points = sorted(line.points)
    path = "".join(f"{'M' if i == 0 else 'L'}{plot.x(x):g} {plot.y(y):g}" for i, (x, y) in enumerate(points))
    style = f'fill="none" stroke="{line.colour}" stroke-width="2"' + (DASHED if line.dashed else "")
    parts = [f'<path d="{path}" {style}><title>{escape(line.name)}</title></path>']
    if line.markers or len(points) == 1:
        parts += [
            f'<circle cx="{plot.x(x):g}" cy="{plot.y(y):g}" r="3.5" fill="{line.colour}" stroke="#fff">'
            f"<title>{escape(line.name)} at {x:g}: {y:.4g}</title></circle>"
            for x, y in points
        ]
    return parts
