"""The HTML report of the evaluation ladder: its content and escaping, and how it renders in Chromium."""

from __future__ import annotations

import math
import os
import struct
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from html import escape
from html.parser import HTMLParser
from pathlib import Path

import pytest

from hone.contract import Interval, Ladder, LadderTask, Recommendation, Target, read
from hone.evaluate.report import money, p_value, render_html, signed, task_name, write_report

LADDER = Path(__file__).resolve().parents[2] / "assets" / "ladder.json"
CHROMIUM = Path("/usr/bin/chromium")
CHARTS = ("metric", "loss", "latency", "cost")
SHAPES = {"rect", "path", "line", "circle"}


@pytest.fixture
def ladder() -> Ladder:
    return read(Ladder, LADDER)


class Outline(HTMLParser):
    """What a reader would check: the shapes inside each chart, the rows of each table, any script."""

    def __init__(self) -> None:
        super().__init__()
        self.chart: str | None = None
        self.shapes: dict[str, int] = {}
        self.table: str | None = None
        self.rows: dict[str, list[str]] = {}
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self.tags.add(tag)
        if tag == "svg":
            self.chart = found.get("data-chart") or ""
            self.shapes[self.chart] = 0
        elif tag in SHAPES and self.chart is not None:
            self.shapes[self.chart] += 1
        elif tag == "table":
            self.table = found.get("class") or ""
        elif (
            tag == "tr"
            and self.table is not None
            and (key := found.get("data-rung") or found.get("data-metric"))
        ):
            self.rows.setdefault(self.table, []).append(key)

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg":
            self.chart = None
        elif tag == "table":
            self.table = None


def outline(html: str) -> Outline:
    parser = Outline()
    parser.feed(html)
    return parser


def charts_of(html: str) -> dict[str, ET.Element]:
    """Each chart parsed as XML: the SVG the report embeds must be well-formed on its own."""
    found = {}
    for piece in html.split("<svg ")[1:]:
        root = ET.fromstring("<svg " + piece[: piece.index("</svg>")] + "</svg>")
        found[root.get("data-chart", "")] = root
    return found


# ---- content ----------------------------------------------------------------------------------------


def test_sample_ladder_renders_every_section(ladder: Ladder) -> None:
    html = render_html(ladder)
    seen = outline(html)
    names = [r.name for r in ladder.rungs]
    assert seen.rows["ladder"] == names
    assert seen.rows["metrics"][0] == "exact_match" and len(seen.rows["metrics"]) == 9
    assert all(seen.shapes[chart] >= 4 for chart in CHARTS), seen.shapes
    assert (
        "<h1>support-tickets</h1>" in html and "150 test examples" in html and "23 Nov 2026 16:52 UTC" in html
    )
    assert "exact_match \u2265 0.80" in html and escape(ladder.recommendation.reason) in html
    assert "meets the target" in html and "lora-quickstart vs few-shot" in html
    assert "Fixed: 124 (3 shown)" in html and "Broken: 2</h4>" in html
    assert "+0.813" in html and "p ≤ 0.001" in html and "not significant" in html  # rag vs few-shot
    assert "$0.00989" in html and "$0.0169" in html and "0.36 s" in html
    assert set(charts_of(html)) == set(CHARTS)


def test_report_is_self_contained(ladder: Ladder) -> None:
    html = render_html(ladder)
    assert not {"script", "link", "img", "iframe", "object"} & outline(html).tags
    assert "url(" not in html and "@import" not in html
    assert html.count("http") == html.count('xmlns="http://www.w3.org/2000/svg"') == 4  # namespaces only


def test_text_from_the_ladder_is_escaped(ladder: Ladder) -> None:
    attack = "<script>alert('x')</script>"
    tuned = ladder.rung("lora-quickstart")
    assert tuned.flips is not None
    tuned.flips.fixed[0].input = f"Ticket {attack} & more"
    tuned.flips.broken[0].after = attack
    tuned.description = attack
    ladder.recommendation.reason = attack
    html = render_html(ladder)
    assert "<script" not in html
    assert "Ticket &lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more" in html
    assert html.count("&lt;script&gt;") == 4
    assert "script" not in outline(html).tags


def test_ladder_without_a_fine_tuned_rung_says_there_are_no_curves(ladder: Ladder) -> None:
    ladder.rungs = [r for r in ladder.rungs if r.kind == "prompting"]
    ladder.recommendation = Recommendation(rung="few-shot", met_target=False, reason="best prompting rung")
    html = render_html(ladder)
    assert set(charts_of(html)) == {"metric", "latency", "cost"}
    assert "no loss curves" in html and "no flipped examples to show" in html
    assert "no rung meets the target" in html


def test_ladder_without_a_target_draws_no_target_line(ladder: Ladder) -> None:
    ladder.target = None
    html = render_html(ladder)
    metric = charts_of(html)["metric"]
    assert not [e for e in metric.iter() if e.get("class") == "target"]
    assert "none set" in html and "No target set." in html and "no target set" in html


def test_target_on_another_metric_is_named_but_not_drawn(ladder: Ladder) -> None:
    ladder.target = Target(metric="json_valid", min=0.95)
    html = render_html(ladder)
    assert "json_valid \u2265 0.95" in html and "Target on json_valid, not drawn." in html
    assert not [e for e in charts_of(html)["metric"].iter() if e.get("class") == "target"]


def test_missing_general_check_and_training_read_as_not_run(ladder: Ladder) -> None:
    tuned = ladder.rung("lora-quickstart")
    tuned.general, tuned.training = None, None
    html = render_html(ladder)
    assert "not run" in html
    assert "The fine-tuned rungs recorded no training history." in html  # fine-tuned, but no history


def test_a_metric_one_rung_lacks_reads_as_a_dash(ladder: Ladder) -> None:
    del ladder.rung("rag").metrics["json_valid"]
    html = render_html(ladder)
    row = html[html.index('<tr data-metric="json_valid">') :]
    row = row[: row.index("</tr>")]
    assert row.count("<td>\u2014</td>") == 1 and row.count('class="best"') == 1


def test_zero_values_are_drawn_as_empty_bars(ladder: Ladder) -> None:
    zero = ladder.rung("zero-shot").metrics["exact_match"]
    assert zero == Interval(value=0.0, low=0.0, high=0.0)  # the sample's own zero-shot rung
    bars = list(charts_of(render_html(ladder))["metric"].iter("{http://www.w3.org/2000/svg}rect"))
    assert float(bars[0].get("height", "")) == 0.0 and float(bars[3].get("height", "")) > 150


def test_a_rung_without_throughput_costs_n_a_not_a_crash(ladder: Ladder) -> None:
    """A rung that served nothing has an unbounded cost per request: no bar, marked n/a, the axis kept."""
    ladder.rung("rag").cost.per_1000_requests = math.inf
    svg = charts_of(render_html(ladder))["cost"]
    bars = list(svg.iter("{http://www.w3.org/2000/svg}rect"))
    labels = [t.text for t in svg.iter("{http://www.w3.org/2000/svg}text")]
    assert len(bars) == len(ladder.rungs) - 1 and "n/a" in labels


def test_a_single_rung_renders(ladder: Ladder) -> None:
    single = ladder.model_copy(deep=True)
    single.rungs = [ladder.rung("few-shot")]
    single.recommendation = Recommendation(rung=None, reason="")
    html = render_html(single)
    assert outline(html).rows["ladder"] == ["few-shot"]
    assert set(charts_of(html)) == {"metric", "latency", "cost"}
    assert "no rung could be recommended" in html


def test_write_report_writes_the_rendered_page(ladder: Ladder, tmp_path: Path) -> None:
    target = tmp_path / "eval" / "report.html"
    write_report(ladder, target)
    assert target.read_text(encoding="utf-8") == render_html(ladder)


def test_formatting() -> None:
    assert [money(v) for v in (None, 0.0, 0.00989, 0.0217, 1234.5)] == [
        "\u2014",
        "$0",
        "$0.00989",
        "$0.0217",
        "$1,234.50",
    ]
    assert [p_value(v) for v in (0.0002, 0.7125, None)] == ["p ≤ 0.001", "p = 0.713", ""]
    assert signed(-0.0133) == "\u22120.013" and signed(0.8133) == "+0.813"
    task = LadderTask(test="examples/support-tickets/test.jsonl", examples=150, dataset_hash="0" * 64)
    assert task_name(task) == "support-tickets"
    assert task_name(task.model_copy(update={"test": "data/held_out.jsonl"})) == "held_out"


# ---- in a real browser ------------------------------------------------------------------------------


def chromium_or_skip() -> Path:
    if CHROMIUM.is_file():
        return CHROMIUM
    reason = f"{CHROMIUM} is not installed (Debian: apt-get install chromium)"
    if os.environ.get("HONE_REQUIRE_CHROMIUM") == "1":
        pytest.fail(f"HONE_REQUIRE_CHROMIUM=1 but {reason}")
    pytest.skip(reason)


def chromium(tmp_path: Path, page: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium with a fresh profile and nothing that reaches the network on its own."""
    command = [
        str(chromium_or_skip()),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path, prefix='profile-')}",
        "--window-size=1280,2000",
        *args,
        page.as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def png_size_and_colours(path: Path) -> tuple[int, int, int, float]:
    """(width, height, distinct colours, share of pixels that are not white) of a PNG."""
    from PIL import Image  # here, not at the top: only the browser test needs it (it comes with matplotlib)

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    with Image.open(path) as image:
        pixels = image.convert("RGB")
        colours = pixels.getcolors(maxcolors=width * height) or []
    white = next((count for count, colour in colours if colour == (255, 255, 255)), 0)
    return width, height, len(colours), 1 - white / (width * height)


def test_report_renders_in_headless_chromium(ladder: Ladder, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    write_report(ladder, page)
    screenshot = tmp_path / "report.png"
    chromium(tmp_path, page, f"--screenshot={screenshot}")
    width, height, colours, inked = png_size_and_colours(screenshot)
    assert (width, height) == (1280, 2000)
    assert colours > 200, f"only {colours} colours: the page looks blank"
    assert 0.03 < inked < 0.6, f"{inked:.1%} of the pixels are not white"

    dom = chromium(tmp_path, page, "--dump-dom").stdout
    seen = outline(dom)
    assert seen.rows["ladder"] == [r.name for r in ladder.rungs]
    assert set(seen.shapes) == set(CHARTS)
    assert all(seen.shapes[chart] >= 4 for chart in CHARTS), seen.shapes
