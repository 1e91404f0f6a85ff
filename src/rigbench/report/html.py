"""One self-contained HTML file: plotly's JavaScript inlined (no CDN, works offline), every text escaped."""

from __future__ import annotations

import html

from rigbench.report.rows import Chart, Report, Timeline
from rigbench.report.text import DISTURBED, WHATIF_NOTE, fmt, plan_table, speed_table, whatif_rows

COLORS = {"prefill": "#4c78a8", "decode": "#f58518", "waiting": "#bab0ac", "model": "#72b7b2", "tool": "#54a24b",
          "agent": "#9ecae9",
          "verifier": "#b279a2", "other": "#e0e0e0"}
STATUS = {"success": "ok", "failure": "bad", "timeout": "warn", "error": "bad"}

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1200px;color:#222;
padding:0 1rem}
h1{font-size:1.6rem}h2{margin-top:2.2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.9rem}
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:right;vertical-align:top}
th:first-child,td:first-child{text-align:left}th{background:#f4f4f4}
code{font-size:.8rem;word-break:break-all}.ok{color:#1a7f37}.bad{color:#c62828}.warn{color:#b26a00}
.verdict li{margin:.2rem 0}.cands{display:flex;gap:1.5rem;flex-wrap:wrap}.cand{flex:1 1 360px}
.muted{color:#777;font-size:.85rem}
.badge{display:inline-block;border-radius:.6rem;padding:0 .4rem;font-size:.75rem;margin-left:.3rem}
.badge.quiet{background:#e6f4ea;color:#1a7f37}.badge.disturbed{background:#fdecea;color:#c62828}
"""


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def _label(x) -> str:
    """Text for a plotly label: plotly reads <b>, <br> and friends in labels, and decodes &lt; &gt; &amp; only."""
    return html.escape(str(x), quote=False)


def _table(header: list[str], rows: list[list[str]], raw: bool = False) -> str:
    h = "".join(f"<th>{_e(c)}</th>" for c in header)
    body = "".join("<tr>" + "".join(f"<td>{c if raw else _e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def _figure(fig, div_id: str, height: int = 380) -> str:
    fig.update_layout(template="plotly_white", margin={"l": 60, "r": 20, "t": 50, "b": 50}, height=height)
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id,
                       config={"displaylogo": False, "responsive": True})


PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"]


def chart_figure(c: Chart, candidates: list[str]):
    """Measured as markers and lines, predicted dashed, one colour per candidate."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for s in c.series:
        predicted = s.kind == "predicted"
        color = PALETTE[candidates.index(s.name) % len(PALETTE)] if s.name in candidates else None
        fig.add_trace(go.Scatter(x=s.x, y=s.y, name=_label(f"{s.name} ({s.kind})"),   # plotly reads tags in labels
                                 mode="lines" if predicted else "markers+lines",
                                 line={"dash": "dash", "color": color} if predicted else {"color": color}))
    fig.update_layout(title=_label(c.title), xaxis_title=_label(c.x_label), yaxis_title=_label(c.y_label))
    if c.log_x:
        fig.update_xaxes(type="log")
    return fig


def timeline_figure(task: str, lines: list[Timeline]):
    import plotly.graph_objects as go

    fig = go.Figure()
    shown: set[str] = set()
    for tl in lines:
        for kind in COLORS:
            segs = [s for s in tl.segments if s.kind == kind]
            if not segs:
                continue
            fig.add_trace(go.Bar(y=[_label(tl.candidate)] * len(segs), x=[s.end - s.start for s in segs],
                                 base=[s.start for s in segs], orientation="h", name=kind,
                                 marker_color=COLORS[kind], legendgroup=kind, showlegend=kind not in shown,
                                 hovertemplate=f"{kind}: %{{x:.2f}} s from %{{base:.2f}} s<extra></extra>"))
            shown.add(kind)
    fig.update_layout(title=_label(f"{task}: where the time went"), barmode="overlay",
                      xaxis_title="seconds since the start",
                      height=140 + 50 * len(lines))
    return fig


def speed_html(rep: Report) -> str:
    """The speed table with a badge on each measured figure: `quiet` where the sampler saw nobody else at work,
    `disturbed?` (its reasons on hover) where it did."""
    header, rows = speed_table(rep)
    out = [[_e(c) for c in r] for r in rows]
    for i, r in enumerate(rep.speed):
        for j, cand in enumerate(rep.candidates):
            cell = r.cells.get(cand)
            if cell is None or cell.measured is None or not cell.sampled and not cell.disturbed:
                continue
            k = 2 + 2 * j + 1
            if cell.disturbed:
                badge = f"<span class='badge disturbed' title='{_e('; '.join(cell.disturbed))}'>{DISTURBED}</span>"
                out[i][k] = out[i][k].replace(" " + DISTURBED, "") + badge
            else:
                out[i][k] += "<span class='badge quiet' title='no other load above the limits'>quiet</span>"
    return _table(header, out, raw=True)


def load_figure(c: Chart, candidates: list[str]):
    """Small: others' use solid, the measured processes' dotted, one colour per run."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for s in c.series:
        color = PALETTE[candidates.index(s.name) % len(PALETTE)] if s.name in candidates else None
        fig.add_trace(go.Scatter(x=s.x, y=s.y, name=_label(f"{s.name}: {s.kind}"), mode="lines",
                                 line={"color": color, "dash": "dot" if s.kind.startswith("measured") else "solid"}))
    fig.update_layout(title=_label(c.title), xaxis_title=_label(c.x_label), yaxis_title=_label(c.y_label))
    fig.update_yaxes(range=[0, 100])
    return fig


def render(rep: Report) -> str:
    import plotly.offline

    parts = [f"<h1>{_e(rep.title)}</h1>",
             f"<p class=muted>from {_e(', '.join(rep.sources))} · candidates: {_e(', '.join(rep.candidates))}</p>"]
    if rep.verdict:
        parts.append("<h2>Verdict</h2><ul class=verdict>" + "".join(f"<li>{_e(v)}</li>" for v in rep.verdict)
                     + "</ul><p class=muted>computed from the tables below</p>")
    if rep.plans:
        parts.append("<h2>Plans</h2><div class=cands>")
        for p in rep.plans:
            header, rows = plan_table(p)
            state = "<span class=ok>fits</span>" if p.fits else f"<span class=bad>does not fit: {_e(p.reason)}</span>"
            parts.append(f"<div class=cand><h3>{_e(p.candidate)}</h3><p>{_e(p.model)} · {_e(p.engine)} · "
                         f"{_e(p.quant or '')} · {_e(p.rig)} · {state}</p>{_table(header, rows)}"
                         f"<p>KV cache {p.kv_tokens:,} tokens · context {p.context:,} · max concurrency "
                         f"{p.max_concurrency:.2f}x</p><p><code>{_e(p.command)}</code></p></div>")
        parts.append("</div>")
    if rep.speed:
        parts.append("<h2>Speed</h2>" + speed_html(rep)
                     + "<p class=muted>predicted: rigbench's plan, before anything ran; measured: the stored bench "
                       "runs, the median of the repeats with the lowest and highest [low-high ×N]; "
                       f"{DISTURBED}: measured while other processes used the machine beyond the limits, or "
                       "beyond 2x from the prediction, and left out of the verdict; ratio: the winner over the "
                       "runner-up</p>")
        if rep.load:
            parts.append(_figure(load_figure(rep.load, rep.candidates), "chart-load", height=240))
    if rep.charts:
        parts.append("<h2>Charts</h2>")
        parts += [_figure(chart_figure(c, rep.candidates), f"chart-{c.key}") for c in rep.charts]
    if rep.eval_counts:
        parts.append("<h2>Eval</h2>" + _table(
            ["candidate", "success", "failure", "timeout", "error", "other", "wall s"],
            [[e.candidate, str(e.success), str(e.failure), str(e.timeout), str(e.error), str(e.other),
              fmt(e.wall_s)] for e in rep.eval_counts]))
        cols = sorted({k for g in rep.grid for k in g.cells})
        rows = []
        for g in rep.grid:
            cells = [_e(g.task)]
            for k in cols:
                c = g.cells.get(k)
                cells.append("-" if c is None else
                             f"<span class={STATUS.get(c.status, 'muted')}>{_e(c.status)}</span> {c.wall_s:.1f} s, "
                             f"{c.turns} turns")
            rows.append(cells)
        parts.append("<h3>Task × candidate</h3>" + _table(["task", *cols], rows, raw=True))
        by_task: dict[str, list[Timeline]] = {}
        for t in rep.timelines:
            by_task.setdefault(t.task, []).append(t)
        if by_task:
            parts.append("<h3>Where the time went</h3><p class=muted>from each task's stored trace: prefill and "
                         "decode by the server's timings, waiting the rest of a model call, tool the sandboxed "
                         "commands, verifier the task's tests, other the agent and sandbox between them</p>")
            for i, (task, lines) in enumerate(sorted(by_task.items())):
                parts.append(_figure(timeline_figure(task, lines), f"timeline-{i}"))
    if rep.whatif:
        header, rows = whatif_rows(rep)
        parts.append("<h2>What-if: the same tasks on each placement</h2><p class=muted>" + _e(WHATIF_NOTE) + "</p>"
                     + _table(header, rows))
    if rep.notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{_e(n)}</li>" for n in rep.notes) + "</ul>")
    js = plotly.offline.get_plotlyjs()
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{_e(rep.title)}</title>"
            f"<meta name=viewport content='width=device-width,initial-scale=1'><style>{CSS}</style>"
            f"<script>{js}</script></head><body>{''.join(parts)}</body></html>\n")
