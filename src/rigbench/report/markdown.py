"""The report as Markdown, to paste into an issue or a blog post."""

from __future__ import annotations

from rigbench.report.rows import Report
from rigbench.report.text import WHATIF_NOTE, eval_rows, grid_rows, plan_table, speed_table, timeline_rows, whatif_rows


def _md(header: list[str], rows: list[list[str]]) -> str:
    def cell(x: str) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def render(rep: Report) -> str:
    out = [f"# {rep.title}", "", f"From {', '.join(rep.sources)}.", ""]
    if rep.verdict:
        out += ["## Verdict", "", *(f"- {v}" for v in rep.verdict), ""]
    if rep.plans:
        out += ["## Plans", ""]
        for p in rep.plans:
            state = "fits" if p.fits else f"does not fit: {p.reason}"
            out += [f"### {p.candidate}", "", f"{p.model} · {p.engine} · {p.quant or ''} · {p.rig} · {state}", "",
                    _md(*plan_table(p)), "",
                    f"KV cache {p.kv_tokens:,} tokens · context {p.context:,} · max concurrency "
                    f"{p.max_concurrency:.2f}x", "", f"`{p.command}`", ""]
    if rep.speed:
        out += ["## Speed", "", _md(*speed_table(rep)), ""]
    if rep.eval_counts:
        out += ["## Eval", "", _md(*eval_rows(rep)), "", _md(*grid_rows(rep)), ""]
        if rep.timelines:
            out += ["### Where the time went (seconds)", "", _md(*timeline_rows(rep)), ""]
    if rep.whatif:
        out += ["## What-if: the same tasks on each placement", "", WHATIF_NOTE + ".", "", _md(*whatif_rows(rep)), ""]
    if rep.notes:
        out += ["## Notes", "", *(f"- {n}" for n in rep.notes), ""]
    return "\n".join(out)
