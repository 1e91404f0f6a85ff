"""Every rendering: terminal tables, Markdown and self-contained HTML, all drawn from the typed rows of
`report.rows`, which `report.build` makes from the store; `report.output` writes a file."""

from rigbench.report.build import ReportError, build, parse_ref, timeline, verdict
from rigbench.report.output import write
from rigbench.report.rows import Report

__all__ = ["Report", "ReportError", "build", "parse_ref", "timeline", "verdict", "write"]
