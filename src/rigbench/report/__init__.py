"""Every rendering: terminal tables, Markdown and self-contained HTML, all drawn from the typed rows of
`report.rows`, which `report.build` makes from the store."""

from __future__ import annotations

from pathlib import Path

from rigbench.report.build import ReportError, build, parse_ref, timeline, verdict
from rigbench.report.rows import Report


def write(rep: Report, path: Path, fmt: str = "html") -> Path:
    from rigbench.report import html, markdown

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html.render(rep) if fmt == "html" else markdown.render(rep))
    return path


__all__ = ["Report", "ReportError", "build", "parse_ref", "timeline", "verdict", "write"]
