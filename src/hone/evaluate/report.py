"""The evaluation ladder as one self-contained HTML file: the table, four charts and the flipped examples.

The file is what people pass around to decide whether fine-tuning was worth it, so it must open anywhere,
offline, long after the run: styles are inline, charts are SVG drawn here (hone.evaluate.charts), and there
is no script and nothing fetched. It renders the typed ladder (`hone.contract.Ladder`, what `ladder.json`
holds) as it is, and every piece of text taken from it (ticket text, model output, names) is escaped,
because model output can contain anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from html import escape
from pathlib import Path

from hone.contract import FlippedExample, GeneralFigures, Interval, Ladder, LadderRung, LadderTask
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


def render_html(ladder: Ladder) -> str:
    """The whole report for one ladder result (as read from ladder.json) as an HTML document."""
    title = f"Evaluation ladder: {task_name(ladder.task)}"
    body = [
        header(ladder),
        ladder_table(ladder),
        metrics_table(ladder),
        charts(ladder),
        flips_section(ladder),
    ]
    basis = sorted({rung.cost.basis for rung in ladder.rungs} - {""})
    footer = f"<footer>Cost basis: {escape('; '.join(basis)) or DASH}.</footer>"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head>\n<body><main>\n"
        + "\n".join(body)
        + footer
        + "\n</main></body></html>\n"
    )


def write_report(ladder: Ladder, path: Path) -> None:
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


def task_name(task: LadderTask) -> str:
    """The task's folder (examples/support-tickets/test.jsonl -> support-tickets), or the file's own name."""
    test = Path(task.test or "task")
    generic = test.stem in ("test", "eval", "evaluation")
    return (test.parent.name or test.stem) if generic else test.stem


def when(created: str) -> str:
    try:
        moment = datetime.fromisoformat(created)
    except ValueError:
        return created or DASH
    return moment.strftime("%d %b %Y %H:%M") + (f" {moment.tzname()}" if moment.tzinfo else "")


def metric_names(ladder: Ladder) -> list[str]:
    """Every metric any rung has, primary first, otherwise in the order the rungs list them."""
    names: dict[str, None] = {ladder.primary_metric: None}
    for rung in ladder.rungs:
        names.update(dict.fromkeys(rung.metrics))
    return list(names)


def point(score: Interval | None) -> float | None:
    """A rung's value on a metric, or None where the rung has no such metric (shown as a dash)."""
    return None if score is None else score.value


def interval(score: Interval | None) -> str:
    return "" if score is None else f"{number(score.low)}\u2013{number(score.high)}"


def cell(main: str, sub: str = "", css: str = "") -> str:
    """A table cell: the value, and under it in small type its interval or second number."""
    css_attr = f' class="{css}"' if css else ""
    return f"<td{css_attr}>{main}<small>{sub}</small></td>" if sub else f"<td{css_attr}>{main}</td>"


# ---- header and tables ------------------------------------------------------------------------------


def header(ladder: Ladder) -> str:
    task, target = ladder.task, ladder.target
    target_text = f"{target.metric} \u2265 {target.min:.2f}" if target else "none set"
    meta = [escape(task.test), f"{task.examples} test examples", escape(when(ladder.created))]
    if task.dataset_hash:
        meta.append(f"dataset {escape(task.dataset_hash[:12])}")
    facts = (
        ("Primary metric", ladder.primary_metric),
        ("Local models in", f"{ladder.precision or 'float32'} on {ladder.device or 'cpu'}"),
        ("Target", target_text),
        ("Baseline", ladder.baseline or DASH),
    )
    listed = "".join(
        f"<div><span>{label}</span><strong>{escape(value)}</strong></div>" for label, value in facts
    )
    return (
        f'<header><p class="eyebrow">hone evaluation ladder</p><h1>{escape(task_name(task))}</h1>'
        f'<p class="meta">{MIDDOT.join(meta)}</p><div class="facts">{listed}</div>'
        f"{recommendation(ladder)}</header>"
    )


def recommendation(ladder: Ladder) -> str:
    pick = ladder.recommendation
    if not pick.rung:
        state, rung, badge = "missed", "none", ""
    elif ladder.target is None:
        state, rung, badge = "", pick.rung, '<span class="badge muted">no target set</span>'
    elif pick.met_target:
        state, rung, badge = "met", pick.rung, '<span class="badge good">meets the target</span>'
    else:
        state, rung, badge = "missed", pick.rung, '<span class="badge bad">no rung meets the target</span>'
    reason = escape(pick.reason or ("" if pick.rung else "no rung could be recommended"))
    return (
        f'<section class="recommendation {state}"><p class="label">Recommendation</p>'
        f'<p class="pick">{escape(rung)} {badge}</p><p>{reason}</p></section>'
    )


def ladder_table(ladder: Ladder) -> str:
    primary, baseline = escape(ladder.primary_metric), escape(ladder.baseline or "baseline")
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
    rows = "".join(ladder_row(ladder, rung) for rung in ladder.rungs)
    return (
        '<section><h2>The ladder</h2><p class="note">Every rung is scored on the same test examples. '
        "Intervals are 95% bootstrap intervals; deltas are paired differences from the baseline.</p>"
        f'<div class="table-wrap"><table class="ladder"><thead><tr>{head}</tr></thead>'
        f"<tbody>{rows}</tbody></table></div></section>"
    )


def ladder_row(ladder: Ladder, rung: LadderRung) -> str:
    name, main = rung.name, rung.metrics.get(ladder.primary_metric)
    latency, tokens, cost, training = rung.latency, rung.tokens, rung.cost, rung.training
    recommended = name == ladder.recommendation.rung
    tags = ' <span class="badge muted">baseline</span>' if name == ladder.baseline else ""
    tags += ' <span class="badge good">recommended</span>' if recommended else ""
    cells = [
        cell(f'<span class="rung-name">{escape(name)}</span>{tags}', escape(rung.description)),
        cell(escape(rung.kind), css="kind"),
        cell(f"<strong>{number(point(main))}</strong>", interval(main), "primary"),
        f"<td>{significance(ladder, rung)}</td>",
        general(rung.general),
        cell(seconds(latency.p50_seconds), seconds(latency.p95_seconds)),
        cell(number(tokens.prompt_mean, 0), number(tokens.completion_mean, 1)),
        cell(money(cost.per_1000_requests)),
        cell(
            money(cost.training_one_off) if training is not None or cost.training_one_off else DASH,
            seconds(training.train_seconds) if training is not None else "",
        ),
    ]
    css = ' class="recommended"' if recommended else ""
    return f'<tr data-rung="{escape(name)}"{css}>' + "".join(cells) + "</tr>"


def significance(ladder: Ladder, rung: LadderRung) -> str:
    test = rung.significance
    if test is None:
        return '<span class="badge muted">baseline</span>' if rung.name == ladder.baseline else DASH
    if test.significant:
        up = test.delta > 0
        marker = f'<span class="badge {"good" if up else "bad"}">{UP if up else DOWN} significant</span>'
    else:
        marker = '<span class="badge muted">not significant</span>'
    spread = f"<small>{signed(test.low)} to {signed(test.high)}</small>"
    chance = f"<small>{escape(p_value(test.p_value))}</small>"
    return f"<strong>{signed(test.delta)}</strong> {marker}{spread}{chance}"


def general(check: GeneralFigures | None) -> str:
    if check is None:
        return cell('<span class="note">not run</span>')
    return cell(signed(check.delta_probe_accuracy), signed(check.delta_perplexity, 2))


def metrics_table(ladder: Ladder) -> str:
    """Every metric (a row each) of every rung (a column each) with its interval; the best value in bold."""
    rungs, primary = ladder.rungs, ladder.primary_metric
    head = "".join(f"<th>{escape(rung.name)}</th>" for rung in rungs)
    rows = []
    for name in metric_names(ladder):
        scores = [rung.metrics.get(name) for rung in rungs]
        present = [score.value for score in scores if score is not None]
        best = max(present) if len(rungs) > 1 and present else None  # one rung: nothing to compare
        cells = "".join(
            cell(
                number(point(score)),
                interval(score),
                "best" if best is not None and point(score) == best else "",
            )
            for score in scores
        )
        css = ' class="primary"' if name == primary else ""
        rows.append(f'<tr data-metric="{escape(name)}"{css}><td>{escape(name)}</td>{cells}</tr>')
    return (
        '<section><h2>Every metric</h2><p class="note">Point value and 95% interval; the best rung per '
        'metric in bold.</p><div class="table-wrap"><table class="metrics">'
        f"<thead><tr><th>Metric</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div></section>"
    )


# ---- charts -----------------------------------------------------------------------------------------


def charts(ladder: Ladder) -> str:
    figures = [metric_chart(ladder), loss_chart(ladder), latency_chart(ladder), cost_chart(ladder)]
    return '<section><h2>Charts</h2><div class="charts">' + "".join(figures) + "</div></section>"


def figure(title: str, caption: str, content: str) -> str:
    """`caption` and `content` are markup; the title is escaped here."""
    return f"<figure><figcaption><strong>{escape(title)}</strong>{caption}</figcaption>{content}</figure>"


def kind_key(rungs: Sequence[LadderRung]) -> str:
    present = {rung.kind for rung in rungs}
    kinds = [("prompting", PROMPTING_COLOUR), ("fine-tuned", FINE_TUNED_COLOUR)]
    return "".join(
        f'<span class="swatch" style="background:{c}"></span>{k}' for k, c in kinds if k in present
    )


def kind_colours(rungs: Sequence[LadderRung]) -> list[str]:
    return [FINE_TUNED_COLOUR if rung.kind == "fine-tuned" else PROMPTING_COLOUR for rung in rungs]


def rung_names(ladder: Ladder) -> list[str]:
    return [rung.name for rung in ladder.rungs]


def metric_chart(ladder: Ladder) -> str:
    """Rates (every value and interval within 0..1) get a fixed 0..1 axis, so rungs read as proportions."""
    rungs, primary, target = ladder.rungs, ladder.primary_metric, ladder.target
    scores = [rung.metrics.get(primary) for rung in rungs]
    values = [point(score) for score in scores]
    lows = [None if score is None else score.low for score in scores]
    highs = [None if score is None else score.high for score in scores]
    bounded = all(v is None or 0 <= v <= 1 for v in [*values, *highs])
    line = target.min if target and target.metric == primary else None
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
        note = f" Target on {escape(target.metric)}, not drawn." if target else " No target set."
    return figure(f"{primary} per rung", f"Whiskers: 95% interval.{note}{kind_key(rungs)}", svg)


def loss_lines(tuned: Sequence[LadderRung]) -> list[Line]:
    """Train loss solid, validation loss dashed with points; one colour per rung when there are several."""
    lines = []
    alone = len(tuned) == 1
    for index, rung in enumerate(tuned):
        history = rung.training.history if rung.training is not None else []
        curves = (
            ("train", False, [(row.step, row.loss) for row in history]),
            ("eval", True, [(row.step, row.eval_loss) for row in history]),
        )
        for label, dashed, steps in curves:
            points = [(float(step), loss) for step, loss in steps if loss is not None]
            colour = EVAL_COLOUR if dashed and alone else LINE_COLOURS[index % len(LINE_COLOURS)]
            name = f"{label} loss" if alone else f"{rung.name} {label}"
            if points:
                lines.append(Line(name, points, colour, dashed=dashed, markers=dashed))
    return lines


def loss_chart(ladder: Ladder) -> str:
    tuned = ladder.fine_tuned
    title = "Training and validation loss"
    if not tuned:
        return figure(title, "", '<p class="note">No fine-tuned rung in this ladder, so no loss curves.</p>')
    lines = loss_lines(tuned)
    if not lines:
        return figure(title, "", '<p class="note">The fine-tuned rungs recorded no training history.</p>')
    # several rungs: the legend says which colour is which rung; the caption says solid/dashed
    key = [(rung.name, LINE_COLOURS[i % len(LINE_COLOURS)], False) for i, rung in enumerate(tuned)]
    svg = line_chart(
        "loss",
        f"{title} per step",
        lines,
        x_label="step",
        y_label="loss",
        key=key if len(tuned) > 1 else None,
    )
    return figure(title, "Solid: training loss; dashed with points: validation loss.", svg)


def latency_chart(ladder: Ladder) -> str:
    latency = [rung.latency for rung in ladder.rungs]
    series = [
        BarSeries("p50", [row.p50_seconds for row in latency], P50_COLOUR),
        BarSeries("p95", [row.p95_seconds for row in latency], P95_COLOUR),
    ]
    title = "Latency per request, p50 and p95"
    svg = bar_chart(
        "latency", title, rung_names(ladder), series, y_label="seconds", value_format="{:.2f}".format
    )
    batch = sorted({str(row.batch_size) for row in latency if row.batch_size})
    note = f" Batch size {escape(', '.join(batch))}." if batch else ""
    return figure("Latency per request", f"Median (p50) and 95th percentile (p95), in seconds.{note}", svg)


def cost_chart(ladder: Ladder) -> str:
    rungs = ladder.rungs
    series = [BarSeries("cost", [rung.cost.per_1000_requests for rung in rungs], kind_colours(rungs))]
    title = "Cost per 1,000 requests"
    svg = bar_chart("cost", title, rung_names(ladder), series, y_label="$ per 1,000", value_format=money)
    paid_once = [(rung.name, rung.cost.training_one_off) for rung in ladder.fine_tuned]
    listed = ", ".join(f"{escape(name)} {money(value)}" for name, value in paid_once)
    note = f" Training, paid once: {listed}." if paid_once else ""
    return figure(title, f"Serving cost only.{note}{kind_key(rungs)}", svg)


# ---- flipped examples -------------------------------------------------------------------------------


def flips_section(ladder: Ladder) -> str:
    tuned = ladder.fine_tuned
    intro = (
        f"Test examples whose {escape(ladder.primary_metric)} changed between the baseline and a "
        "fine-tuned rung: fixed (the baseline was wrong, the rung is right) and broken (the other way round)."
    )
    if tuned:
        body = "".join(rung_flips(rung) for rung in tuned)
    else:
        body = '<p class="note">No fine-tuned rung in this ladder, so no flipped examples to show.</p>'
    return f'<section class="flips"><h2>Flipped examples</h2><p class="note">{intro}</p>{body}</section>'


def rung_flips(rung: LadderRung) -> str:
    name, flips = escape(rung.name), rung.flips
    if flips is None:
        return f'<h3>{name}</h3><p class="note">No per-example comparison was recorded for this rung.</p>'
    baseline = escape(flips.vs or "baseline")
    parts = [f'<article data-rung="{name}"><h3>{name} vs {baseline}</h3>']
    for kind, shown, count in (
        ("fixed", flips.fixed, flips.fixed_count),
        ("broken", flips.broken, flips.broken_count),
    ):
        more = f" ({len(shown)} shown)" if len(shown) < count else ""
        parts.append(f"<h4>{kind.capitalize()}: {count}{more}</h4>")
        parts += [example(item, kind, baseline, name) for item in shown]
        if not count:
            parts.append('<p class="note">None.</p>')
    return "".join(parts) + "</article>"


def example(item: FlippedExample, kind: str, baseline: str, rung: str) -> str:
    """One flipped example; `baseline` and `rung` arrive escaped, the example's texts are escaped here."""

    def block(label: str, content: str, css: str = "") -> str:
        return f'<div><span class="label">{label}</span><pre class="{css}">{escape(content)}</pre></div>'

    return (
        f'<div class="example {kind}"><span class="label">test example {item.index}</span>'
        + block("Input", item.input, "prose")
        + '<div class="triple">'
        + block("Reference", item.reference)
        + block(f"Before ({baseline})", item.before)
        + block(f"After ({rung})", item.after)
        + "</div></div>"
    )
