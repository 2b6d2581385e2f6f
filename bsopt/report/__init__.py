"""Rendering the analysis: Markdown, HTML, plots, the dashboard note."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bsopt._lazy import attach

if TYPE_CHECKING:
    from bsopt.report._dashboard import attach_report, serve_dashboard
    from bsopt.report._report import Report, write_report

# Public name -> the private module that defines it (or the subpackage itself).
_LAZY = {
    "attach_report": "bsopt.report._dashboard",
    "serve_dashboard": "bsopt.report._dashboard",
    "Report": "bsopt.report._report",
    "write_report": "bsopt.report._report",
}
__getattr__, __dir__ = attach(__name__, _LAZY)

__all__ = [
    "Report",
    "attach_report",
    "serve_dashboard",
    "write_report",
]
