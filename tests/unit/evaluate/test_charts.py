"""Geometry of the report's SVG charts, checked against coordinates computed by hand."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from hone.evaluate.charts import (
    HEIGHT,
    WIDTH,
    BarSeries,
    Line,
    Plot,
    bar_chart,
    fit,
    line_chart,
    nice_ticks,
    tick_label,
)

SVG = "{http://www.w3.org/2000/svg}"
PLOT = Plot(y_max=1.0)  # the default frame: left 56, top 44, 488 wide, 216 high


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def rects(root: ET.Element) -> list[dict[str, float]]:
    return [
        {k: float(v) for k, v in r.attrib.items() if k in "x y width height"} for r in root.iter(f"{SVG}rect")
    ]


def test_plot_maps_values_onto_the_frame() -> None:
    assert (PLOT.left, PLOT.top, PLOT.width, PLOT.height) == (56, 44, 488, 216)
    assert PLOT.y(0.0) == 260.0 and PLOT.y(1.0) == 44.0 and PLOT.y(0.5) == 152.0
    assert PLOT.y(1.7) == 44.0 and PLOT.y(-3.0) == 260.0  # clamped, never drawn outside the frame
    assert Plot(y_max=1.0, x_max=80.0).x(20.0) == 56 + 488 / 4


@pytest.mark.parametrize(
    ("maximum", "count", "ticks"),
    [
        (1.0, 5, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]),
        (1.33, 5, [0.0, 0.5, 1.0, 1.5]),  # 0.266 per tick rounds up to 0.5
        (0.0283, 5, [0.0, 0.01, 0.02, 0.03]),
        (75.0, 6, [0.0, 20.0, 40.0, 60.0, 80.0]),
        (1.31, 5, [0.0, 0.5, 1.0, 1.5]),
        (10.0, 4, [0.0, 2.5, 5.0, 7.5, 10.0]),
    ],
)
def test_nice_ticks_are_round_and_reach_the_maximum(maximum: float, count: int, ticks: list[float]) -> None:
    assert nice_ticks(maximum, count) == pytest.approx(ticks)


def test_tick_labels_carry_only_the_decimals_the_step_needs() -> None:
    assert [tick_label(v, 20.0) for v in (0.0, 20.0, 80.0)] == ["0", "20", "80"]
    assert [tick_label(v, 0.25) for v in (0.0, 0.25, 0.5)] == ["0.00", "0.25", "0.50"]
    assert tick_label(0.03, 0.01) == "0.03"


def test_long_labels_are_cut_to_their_width() -> None:
    assert fit("rag", 120) == "rag"
    assert fit("lora-with-a-very-long-name", 62) == "lora-with…"  # 62 px hold 10 characters


def test_a_bar_of_half_the_axis_is_half_the_plot_high() -> None:
    svg = bar_chart("metric", "m", ["a", "b"], [BarSeries("m", [0.5, 1.0], "#000")], y_max=1.0)
    half, full = rects(parse(svg))
    assert half["height"] == pytest.approx(PLOT.height / 2) and half["y"] == pytest.approx(152.0)
    assert full["height"] == pytest.approx(PLOT.height) and full["y"] == pytest.approx(PLOT.top)
    # two categories share 488 px: bars are 0.7 of a 244 px group, centred in it (4 px gap inside)
    assert half["x"] + half["width"] / 2 == pytest.approx(56 + 122)
    assert full["x"] + full["width"] / 2 == pytest.approx(56 + 244 + 122)


def test_whiskers_span_the_interval_and_the_target_line_sits_at_its_value() -> None:
    series = BarSeries("m", [0.5], "#000", lows=[0.25], highs=[0.75])
    root = parse(bar_chart("metric", "m", ["a"], [series], y_max=1.0, target=0.8, target_label="target"))
    whisker = next(p for p in root.iter(f"{SVG}path") if p.get("class") == "whisker")
    numbers = [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", whisker.get("d", ""))]
    assert numbers[1:3] == [PLOT.y(0.25), PLOT.y(0.75)] == [206.0, 98.0]  # M centre low V high
    target = next(line for line in root.iter(f"{SVG}line") if line.get("class") == "target")
    assert float(target.get("y1", "")) == float(target.get("y2", "")) == pytest.approx(260 - 0.8 * 216)
    assert target.get("stroke-dasharray")


def test_a_zero_bar_has_no_height_and_a_missing_value_no_bar() -> None:
    root = parse(bar_chart("cost", "c", ["a", "b"], [BarSeries("c", [0.0, None], "#000")], y_max=1.0))
    (zero,) = rects(root)
    assert zero["height"] == 0.0 and zero["y"] == PLOT.bottom
    assert "n/a" in [t.text for t in root.iter(f"{SVG}text")]


def test_a_chart_with_nothing_to_show_keeps_a_readable_axis() -> None:
    root = parse(bar_chart("latency", "l", ["a"], [BarSeries("p50", [None], "#000")]))
    ticks = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "tick"]
    assert ticks == ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]


def test_grouped_bars_sit_side_by_side_with_a_legend() -> None:
    series = [BarSeries("p50", [1.0], "#111"), BarSeries("p95", [2.0], "#222")]
    root = parse(bar_chart("latency", "l", ["a"], series))
    p50, p95 = rects(root)
    assert p50["x"] < p95["x"] and p95["height"] == pytest.approx(2 * p50["height"])
    assert {"p50", "p95"} <= {t.text for t in root.iter(f"{SVG}text")}


def test_line_chart_puts_points_on_the_axes_it_draws() -> None:
    lines = [
        Line("train", [(0.0, 0.0), (40.0, 1.0), (80.0, 2.0)], "#000"),
        Line("eval", [(80.0, 1.0)], "#f00"),
    ]
    root = parse(line_chart("loss", "Loss", lines, x_label="step", y_label="loss"))
    train = next(p for p in root.iter(f"{SVG}path") if p.findtext(f"{SVG}title") == "train")
    # x axis 0..80, y axis 0..2: the line runs from the bottom-left corner to the top-right one
    assert train.get("d") == f"M56 260L{56 + 244:g} 152L544 44"
    (marker,) = list(root.iter(f"{SVG}circle"))  # a lone point always gets a marker
    assert (float(marker.get("cx", "")), float(marker.get("cy", ""))) == (544.0, 152.0)


def test_every_chart_is_scalable_titled_svg() -> None:
    root = parse(bar_chart("cost", "Cost <per> 1,000", ["x & y"], [BarSeries("c", [1.0], "#000")]))
    assert root.get("viewBox") == f"0 0 {WIDTH} {HEIGHT}" and root.get("data-chart") == "cost"
    assert root[0].tag == f"{SVG}title" and root[0].text == "Cost <per> 1,000"  # escaped in, parsed back
