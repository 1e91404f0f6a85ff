"""Writing a report to a file: self-contained HTML (plotly) or Markdown."""

from __future__ import annotations

from pathlib import Path

from rigbench.report.rows import Report


def write(rep: Report, path: Path, fmt: str = "html") -> Path:
    """`rep` rendered as `fmt` (html or markdown) into `path`, its folder made."""
    from rigbench.report import html, markdown

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html.render(rep) if fmt == "html" else markdown.render(rep))
    return path
