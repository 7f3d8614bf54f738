"""The evaluation ladder as one self-contained HTML file: the table, four charts and the flipped examples.

The file is what people pass around to decide whether fine-tuning was worth it, so it must open anywhere,
offline, long after the run: styles are inline, charts are SVG drawn here (hone.evaluate.charts), and there
is no script and nothing fetched. It renders `ladder.json` as it is, and every piece of text taken from the
ladder (ticket text, model output, names) is escaped, because model output can contain anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from html import escape
from pathlib import Path
from typing import Any

from hone.evaluate.charts import BarSeries, Line, bar_chart, line_chart
from hone.io import atomic_write_text

PROMPTING_COLOUR, FINE_TUNED_COLOUR = "#9aa5b1", "#3e6fb0"
P50_COLOUR, P95_COLOUR = "#3e6fb0", "#a9c1e0"
LINE_COLOURS = ("#3e6fb0", "#2f855a", "#8b5cf6", "#b7791f", "#0e7490")
EVAL_COLOUR = "#dd6b20"  # validation loss, when one rung's curves are drawn alone
DASH, MIDDOT, DELTA, UP, DOWN = "\u2014", " \u00b7 ", "\u0394", "\u25b2", "\u25bc"
MONO = 'ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace'

CSS = """
:root { color-scheme: light; --ink: #1f2933; --muted: #616e7c; --line: #e4e7eb; --soft: #f5f7fa;
  --accent: #3e6fb0; --good: #2f855a; --bad: #c53030; }
* { box-sizing: border-box; }
body { margin: 0; background: #fff; color: var(--ink); font: 14px/1.45 -apple-system, BlinkMacSystemFont,
  "Segoe UI", Roboto, "Helvetica Neue", Arial, "Noto Sans", "Liberation Sans", sans-serif; }
main { max-width: 1200px; margin: 0 auto; padding: 28px 32px 48px; }
h1 { font-size: 26px; margin: 2px 0 4px; } h2 { font-size: 18px; margin: 36px 0 10px; }
h3 { font-size: 15px; margin: 20px 0 6px; } h4 { font-size: 13px; margin: 14px 0 6px; }
.eyebrow, .label, th, .facts span { text-transform: uppercase; letter-spacing: .05em; font-size: 11px;
  color: var(--muted); }
.eyebrow { margin: 0; } .meta, .note { color: var(--muted); margin: 4px 0; }
.facts { display: flex; gap: 28px; margin: 14px 0; flex-wrap: wrap; }
.facts span { display: block; } .facts strong { font-size: 15px; }
.recommendation { border: 1px solid var(--line); border-left: 5px solid var(--accent); border-radius: 6px;
  background: var(--soft); padding: 14px 18px; margin-top: 8px; }
.recommendation.met { border-left-color: var(--good); }
.recommendation.missed { border-left-color: var(--bad); }
.recommendation .pick { font-size: 22px; font-weight: 650; margin: 2px 0 6px; }
.recommendation p { margin: 0; }
.badge { display: inline-block; font-size: 11px; font-weight: 600; padding: 2px 8px; border-radius: 999px;
  vertical-align: middle; background: var(--line); margin-left: 6px; text-transform: none; }
.badge.good { background: #dcfce7; color: #166534; } .badge.bad { background: #fee2e2; color: #991b1b; }
.badge.muted { background: var(--soft); color: var(--muted); border: 1px solid var(--line); }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { text-align: right; padding: 8px 10px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { vertical-align: bottom; font-weight: 600; }
th:first-child, td:first-child, .kind { text-align: left; } .kind { white-space: nowrap; }
th small, td small { display: block; color: var(--muted); font-size: 12px; }
table.ladder td small { white-space: nowrap; }
table.ladder td:first-child small { white-space: normal; max-width: 280px; }
tr.recommended td { background: #f0f6ff; }
tr.recommended td:first-child { box-shadow: inset 4px 0 var(--accent); }
.primary, tr.primary td { background: #f7f9fb; } td.best { font-weight: 700; }
.rung-name { font-weight: 650; } table.metrics td:first-child { font: 13px/1.45 MONO; }
.charts { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 18px; }
figure { margin: 0; border: 1px solid var(--line); border-radius: 6px; padding: 12px 14px; }
figcaption { color: var(--muted); font-size: 12px; }
figcaption strong { display: block; font-size: 14px; color: var(--ink); }
svg { width: 100%; height: auto; display: block; margin-top: 6px; }
svg .tick, svg .legend, svg .axis { fill: #616e7c; } svg .axis { font-style: italic; }
svg .value { font-weight: 600; font-size: 10.5px; } svg .target-label { fill: #c2410c; font-weight: 600; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin: 0 4px 0 10px; }
.example { border: 1px solid var(--line); border-radius: 6px; padding: 10px 12px; margin: 8px 0; }
.example.fixed { border-left: 4px solid var(--good); } .example.broken { border-left: 4px solid var(--bad); }
.triple { display: grid; grid-template-columns: repeat(3, minmax(0, 1fr)); gap: 10px; margin-top: 8px; }
pre { white-space: pre-wrap; word-break: break-word; margin: 2px 0 0; background: var(--soft);
  padding: 6px 8px; border-radius: 4px; font: 12px/1.4 MONO; }
pre.prose { font-family: inherit; font-size: 13px; }
footer { margin-top: 40px; color: var(--muted); font-size: 12px; }
@media (max-width: 800px) { .charts, .triple { grid-template-columns: 1fr; } }
""".replace("MONO", MONO)


def render_html(ladder: dict[str, Any]) -> str:
    """The whole report for one ladder result (the contents of ladder.json) as an HTML document."""
    title = f"Evaluation ladder: {task_name(ladder)}"
    body = [
        header(ladder),
        ladder_table(ladder),
        metrics_table(ladder),
        charts(ladder),
        flips_section(ladder),
    ]
    basis = sorted({str((rung.get("cost") or {}).get("basis") or "") for rung in ladder["rungs"]} - {""})
    footer = f"<footer>Cost basis: {escape('; '.join(basis)) or DASH}.</footer>"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head>\n<body><main>\n"
        + "\n".join(body)
        + footer
        + "\n</main></body></html>\n"
    )


def write_report(ladder: dict[str, Any], path: Path) -> None:
    atomic_write_text(path, render_html(ladder))


# ---- formatting -------------------------------------------------------------------------------------


def number(value: float | None, digits: int = 3) -> str:
    return DASH if value is None else f"{value:.{digits}f}"


def signed(value: float | None, digits: int = 3) -> str:
    return DASH if value is None else f"{value:+.{digits}f}".replace("-", "\u2212")


def money(value: float | None) -> str:
    """Three significant figures below a dollar: serving costs per request are fractions of a cent."""
    if value is None:
        return DASH
    if value == 0:
        return "$0"
    return f"${value:,.2f}" if value >= 1 else f"${value:.3g}"


def seconds(value: float | None) -> str:
    if value is None:
        return DASH
    return f"{value:.2f} s" if value < 10 else f"{value:,.0f} s"


def p_value(value: float | None) -> str:
    if value is None:
        return ""
    return "p ≤ 0.001" if value <= 0.001 else f"p = {value:.3f}"


def task_name(ladder: dict[str, Any]) -> str:
    """The task's folder (examples/support-tickets/test.jsonl -> support-tickets) unless it has a name."""
    task = ladder.get("task") or {}
    if task.get("name"):
        return str(task["name"])
    test = Path(str(task.get("test") or "task"))
    generic = test.stem in ("test", "eval", "evaluation")
    return (test.parent.name or test.stem) if generic else test.stem


def when(created: str | None) -> str:
    try:
        moment = datetime.fromisoformat(str(created))
    except ValueError:
        return str(created or DASH)
    return moment.strftime("%d %b %Y %H:%M") + (f" {moment.tzname()}" if moment.tzinfo else "")


def metric_names(ladder: dict[str, Any]) -> list[str]:
    """Every metric any rung has, primary first, otherwise in the order the rungs list them."""
    names: dict[str, None] = {ladder["primary_metric"]: None}
    for rung in ladder["rungs"]:
        names.update(dict.fromkeys(rung.get("metrics") or {}))
    return list(names)


def metric(rung: dict[str, Any], name: str) -> dict[str, Any]:
    return (rung.get("metrics") or {}).get(name) or {}


def interval(value: dict[str, Any]) -> str:
    if value.get("low") is None or value.get("high") is None:
        return ""
    return f"{number(value['low'])}\u2013{number(value['high'])}"


def is_fine_tuned(rung: dict[str, Any]) -> bool:
    return rung.get("kind") == "fine-tuned"


def cell(main: str, sub: str = "", css: str = "") -> str:
    """A table cell: the value, and under it in small type its interval or second number."""
    css_attr = f' class="{css}"' if css else ""
    return f"<td{css_attr}>{main}<small>{sub}</small></td>" if sub else f"<td{css_attr}>{main}</td>"


# ---- header and tables ------------------------------------------------------------------------------


def header(ladder: dict[str, Any]) -> str:
    task, target = ladder.get("task") or {}, ladder.get("target")
    target_text = f"{target['metric']} \u2265 {target['min']:.2f}" if target else "none set"
    meta = [escape(str(task.get("test", DASH))), f"{escape(str(task.get('examples', DASH)))} test examples"]
    meta.append(escape(when(ladder.get("created"))))
    if task.get("dataset_hash"):
        meta.append(f"dataset {escape(str(task['dataset_hash'])[:12])}")
    facts = (
        ("Primary metric", ladder["primary_metric"]),
        ("Local models in", f"{ladder.get('precision') or 'float32'} on {ladder.get('device') or 'cpu'}"),
        ("Target", target_text),
        ("Baseline", ladder.get("baseline") or DASH),
    )
    listed = "".join(
        f"<div><span>{label}</span><strong>{escape(str(value))}</strong></div>" for label, value in facts
    )
    return (
        f'<header><p class="eyebrow">hone evaluation ladder</p><h1>{escape(task_name(ladder))}</h1>'
        f'<p class="meta">{MIDDOT.join(meta)}</p><div class="facts">{listed}</div>'
        f"{recommendation(ladder)}</header>"
    )


def recommendation(ladder: dict[str, Any]) -> str:
    pick = ladder.get("recommendation") or {}
    if not pick.get("rung"):
        state, rung, badge = "missed", "none", ""
    elif not ladder.get("target"):
        state, rung, badge = "", pick["rung"], '<span class="badge muted">no target set</span>'
    elif pick.get("met_target"):
        state, rung, badge = "met", pick["rung"], '<span class="badge good">meets the target</span>'
    else:
        state, rung, badge = "missed", pick["rung"], '<span class="badge bad">no rung meets the target</span>'
    reason = escape(str(pick.get("reason") or ("" if pick.get("rung") else "no rung could be recommended")))
    return (
        f'<section class="recommendation {state}"><p class="label">Recommendation</p>'
        f'<p class="pick">{escape(str(rung))} {badge}</p><p>{reason}</p></section>'
    )


def ladder_table(ladder: dict[str, Any]) -> str:
    primary, baseline = escape(ladder["primary_metric"]), escape(str(ladder.get("baseline") or "baseline"))
    heads = [
        ("Rung", "", ""),
        ("Kind", "", "kind"),
        (primary, "95% interval", "primary"),
        (f"{DELTA} vs {baseline}", f"on {primary}", ""),
        (f"General {DELTA}", "probe acc. / perplexity", ""),
        ("Latency", "p50 / p95", ""),
        ("Tokens", "prompt / completion", ""),
        ("Cost", "per 1,000 requests", ""),
        ("Training", "one-off", ""),
    ]
    head = "".join(f'<th class="{css}">{label}<small>{sub}</small></th>' for label, sub, css in heads)
    rows = "".join(ladder_row(ladder, rung) for rung in ladder["rungs"])
    return (
        '<section><h2>The ladder</h2><p class="note">Every rung is scored on the same test examples. '
        "Intervals are 95% bootstrap intervals; deltas are paired differences from the baseline.</p>"
        f'<div class="table-wrap"><table class="ladder"><thead><tr>{head}</tr></thead>'
        f"<tbody>{rows}</tbody></table></div></section>"
    )


def ladder_row(ladder: dict[str, Any], rung: dict[str, Any]) -> str:
    name = str(rung["name"])
    main = metric(rung, ladder["primary_metric"])
    latency, tokens, cost = rung.get("latency") or {}, rung.get("tokens") or {}, rung.get("cost") or {}
    training = rung.get("training") or {}
    recommended = name == (ladder.get("recommendation") or {}).get("rung")
    tags = ' <span class="badge muted">baseline</span>' if name == ladder.get("baseline") else ""
    tags += ' <span class="badge good">recommended</span>' if recommended else ""
    description = escape(str(rung.get("description") or ""))
    one_off = cost.get("training_one_off")
    cells = [
        cell(f'<span class="rung-name">{escape(name)}</span>{tags}', description),
        cell(escape(str(rung.get("kind") or DASH)), css="kind"),
        cell(f"<strong>{number(main.get('value'))}</strong>", interval(main), "primary"),
        f"<td>{significance(ladder, rung)}</td>",
        general(rung.get("general")),
        cell(seconds(latency.get("p50_seconds")), seconds(latency.get("p95_seconds"))),
        cell(number(tokens.get("prompt_mean"), 0), number(tokens.get("completion_mean"), 1)),
        cell(money(cost.get("per_1000_requests"))),
        cell(
            money(one_off) if training or one_off else DASH,
            seconds(training.get("train_seconds")) if training else "",
        ),
    ]
    css = ' class="recommended"' if recommended else ""
    return f'<tr data-rung="{escape(name)}"{css}>' + "".join(cells) + "</tr>"


def significance(ladder: dict[str, Any], rung: dict[str, Any]) -> str:
    test = rung.get("significance")
    if not test:
        return '<span class="badge muted">baseline</span>' if rung["name"] == ladder.get("baseline") else DASH
    if test.get("significant"):
        up = (test.get("delta") or 0) > 0
        marker = f'<span class="badge {"good" if up else "bad"}">{UP if up else DOWN} significant</span>'
    else:
        marker = '<span class="badge muted">not significant</span>'
    spread = f"<small>{signed(test.get('low'))} to {signed(test.get('high'))}</small>"
    chance = f"<small>{escape(p_value(test.get('p_value')))}</small>"
    return f"<strong>{signed(test.get('delta'))}</strong> {marker}{spread}{chance}"


def general(check: dict[str, Any] | None) -> str:
    if not check:
        return cell('<span class="note">not run</span>')
    return cell(signed(check.get("delta_probe_accuracy")), signed(check.get("delta_perplexity"), 2))


def metrics_table(ladder: dict[str, Any]) -> str:
    """Every metric (a row each) of every rung (a column each) with its interval; the best value in bold."""
    rungs, primary = ladder["rungs"], ladder["primary_metric"]
    head = "".join(f"<th>{escape(str(rung['name']))}</th>" for rung in rungs)
    rows = []
    for name in metric_names(ladder):
        values = [metric(rung, name) for rung in rungs]
        present = [v["value"] for v in values if v.get("value") is not None]
        best = max(present) if len(rungs) > 1 and present else None  # one rung: nothing to compare
        cells = "".join(
            cell(
                number(v.get("value")),
                interval(v),
                "best" if best is not None and v.get("value") == best else "",
            )
            for v in values
        )
        css = ' class="primary"' if name == primary else ""
        rows.append(f'<tr data-metric="{escape(name)}"{css}><td>{escape(name)}</td>{cells}</tr>')
    return (
        '<section><h2>Every metric</h2><p class="note">Point value and 95% interval; the best rung per '
        'metric in bold.</p><div class="table-wrap"><table class="metrics">'
        f"<thead><tr><th>Metric</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div></section>"
    )


# ---- charts -----------------------------------------------------------------------------------------


def charts(ladder: dict[str, Any]) -> str:
    figures = [metric_chart(ladder), loss_chart(ladder), latency_chart(ladder), cost_chart(ladder)]
    return '<section><h2>Charts</h2><div class="charts">' + "".join(figures) + "</div></section>"


def figure(title: str, caption: str, content: str) -> str:
    """`caption` and `content` are markup; the title is escaped here."""
    return f"<figure><figcaption><strong>{escape(title)}</strong>{caption}</figcaption>{content}</figure>"


def kind_key(rungs: Sequence[dict[str, Any]]) -> str:
    present = {rung.get("kind") for rung in rungs}
    kinds = [("prompting", PROMPTING_COLOUR), ("fine-tuned", FINE_TUNED_COLOUR)]
    return "".join(
        f'<span class="swatch" style="background:{c}"></span>{k}' for k, c in kinds if k in present
    )


def kind_colours(rungs: Sequence[dict[str, Any]]) -> list[str]:
    return [FINE_TUNED_COLOUR if is_fine_tuned(rung) else PROMPTING_COLOUR for rung in rungs]


def rung_names(ladder: dict[str, Any]) -> list[str]:
    return [str(rung["name"]) for rung in ladder["rungs"]]


def metric_chart(ladder: dict[str, Any]) -> str:
    """Rates (every value and interval within 0..1) get a fixed 0..1 axis, so rungs read as proportions."""
    rungs, primary = ladder["rungs"], ladder["primary_metric"]
    points = [metric(rung, primary) for rung in rungs]
    values, lows, highs = ([p.get(key) for p in points] for key in ("value", "low", "high"))
    bounded = all(v is None or 0 <= v <= 1 for v in [*values, *highs])
    target = ladder.get("target")
    line = target["min"] if target and target.get("metric") == primary else None
    svg = bar_chart(
        "metric",
        f"{primary} per rung with 95% intervals",
        rung_names(ladder),
        [BarSeries(primary, values, kind_colours(rungs), lows, highs)],
        y_max=1.0 if bounded else None,
        y_label=primary,
        target=line,
        target_label=f"target {line:.2f}" if line is not None else "",
        value_format="{:.3f}".format,
    )
    if line is not None:
        note = " Dashed line: the target."
    else:
        note = f" Target on {escape(target['metric'])}, not drawn." if target else " No target set."
    return figure(f"{primary} per rung", f"Whiskers: 95% interval.{note}{kind_key(rungs)}", svg)


def loss_lines(tuned: Sequence[dict[str, Any]]) -> list[Line]:
    """Train loss solid, validation loss dashed with points; one colour per rung when there are several."""
    lines = []
    for index, rung in enumerate(tuned):
        history = (rung.get("training") or {}).get("history") or []
        alone = len(tuned) == 1
        for key, label, dashed in (("loss", "train", False), ("eval_loss", "eval", True)):
            points = [(float(row["step"]), float(row[key])) for row in history if row.get(key) is not None]
            colour = EVAL_COLOUR if dashed and alone else LINE_COLOURS[index % len(LINE_COLOURS)]
            name = f"{label} loss" if alone else f"{rung['name']} {label}"
            if points:
                lines.append(Line(name, points, colour, dashed=dashed, markers=dashed))
    return lines


def loss_chart(ladder: dict[str, Any]) -> str:
    tuned = [rung for rung in ladder["rungs"] if is_fine_tuned(rung)]
    title = "Training and validation loss"
    if not tuned:
        return figure(title, "", '<p class="note">No fine-tuned rung in this ladder, so no loss curves.</p>')
    lines = loss_lines(tuned)
    if not lines:
        return figure(title, "", '<p class="note">The fine-tuned rungs recorded no training history.</p>')
    # several rungs: the legend says which colour is which rung; the caption says solid/dashed
    key = [(str(r["name"]), LINE_COLOURS[i % len(LINE_COLOURS)], False) for i, r in enumerate(tuned)]
    svg = line_chart(
        "loss",
        f"{title} per step",
        lines,
        x_label="step",
        y_label="loss",
        key=key if len(tuned) > 1 else None,
    )
    return figure(title, "Solid: training loss; dashed with points: validation loss.", svg)


def latency_chart(ladder: dict[str, Any]) -> str:
    latency = [rung.get("latency") or {} for rung in ladder["rungs"]]
    series = [
        BarSeries("p50", [row.get("p50_seconds") for row in latency], P50_COLOUR),
        BarSeries("p95", [row.get("p95_seconds") for row in latency], P95_COLOUR),
    ]
    title = "Latency per request, p50 and p95"
    svg = bar_chart(
        "latency", title, rung_names(ladder), series, y_label="seconds", value_format="{:.2f}".format
    )
    batch = sorted({str(row["batch_size"]) for row in latency if row.get("batch_size")})
    note = f" Batch size {escape(', '.join(batch))}." if batch else ""
    return figure("Latency per request", f"Median (p50) and 95th percentile (p95), in seconds.{note}", svg)


def cost_chart(ladder: dict[str, Any]) -> str:
    rungs = ladder["rungs"]
    values = [(rung.get("cost") or {}).get("per_1000_requests") for rung in rungs]
    series = [BarSeries("cost", values, kind_colours(rungs))]
    title = "Cost per 1,000 requests"
    svg = bar_chart("cost", title, rung_names(ladder), series, y_label="$ per 1,000", value_format=money)
    paid_once = [
        (r["name"], (r.get("cost") or {}).get("training_one_off")) for r in rungs if is_fine_tuned(r)
    ]
    listed = ", ".join(f"{escape(str(name))} {money(value)}" for name, value in paid_once)
    note = f" Training, paid once: {listed}." if paid_once else ""
    return figure(title, f"Serving cost only.{note}{kind_key(rungs)}", svg)


# ---- flipped examples -------------------------------------------------------------------------------


def flips_section(ladder: dict[str, Any]) -> str:
    tuned = [rung for rung in ladder["rungs"] if is_fine_tuned(rung)]
    intro = (
        f"Test examples whose {escape(ladder['primary_metric'])} changed between the baseline and a "
        "fine-tuned rung: fixed (the baseline was wrong, the rung is right) and broken (the other way round)."
    )
    if tuned:
        body = "".join(rung_flips(rung) for rung in tuned)
    else:
        body = '<p class="note">No fine-tuned rung in this ladder, so no flipped examples to show.</p>'
    return f'<section class="flips"><h2>Flipped examples</h2><p class="note">{intro}</p>{body}</section>'


def rung_flips(rung: dict[str, Any]) -> str:
    name, flips = escape(str(rung["name"])), rung.get("flips")
    if not flips:
        return f'<h3>{name}</h3><p class="note">No per-example comparison was recorded for this rung.</p>'
    baseline = escape(str(flips.get("vs") or "baseline"))
    parts = [f'<article data-rung="{name}"><h3>{name} vs {baseline}</h3>']
    for kind in ("fixed", "broken"):
        shown = flips.get(kind) or []
        count = flips.get(f"{kind}_count", len(shown))
        more = f" ({len(shown)} shown)" if len(shown) < count else ""
        parts.append(f"<h4>{kind.capitalize()}: {count}{more}</h4>")
        parts += [example(item, kind, baseline, name) for item in shown]
        if not count:
            parts.append('<p class="note">None.</p>')
    return "".join(parts) + "</article>"


def example(item: dict[str, Any], kind: str, baseline: str, rung: str) -> str:
    """One flipped example; `baseline` and `rung` arrive escaped, the example's texts are escaped here."""

    def block(label: str, content: Any, css: str = "") -> str:
        shown = escape(str(content if content is not None else ""))
        return f'<div><span class="label">{label}</span><pre class="{css}">{shown}</pre></div>'

    index = escape(str(item.get("index", "?")))
    return (
        f'<div class="example {kind}"><span class="label">test example {index}</span>'
        + block("Input", item.get("input"), "prose")
        + '<div class="triple">'
        + block("Reference", item.get("reference"))
        + block(f"Before ({baseline})", item.get("before"))
        + block(f"After ({rung})", item.get("after"))
        + "</div></div>"
    )
