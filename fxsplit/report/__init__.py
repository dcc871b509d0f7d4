"""The report: its content from a design and its build (``summary.build_report``), and its renderings:
``report.json`` and a self-contained ``report.html`` (``html``, with the SVG charts of ``svg``), and the terminal
text (``text``); ``fmt`` holds what they share."""

from .html import render_html, write_report
from .summary import build_report
from .text import format_text

__all__ = ["build_report", "format_text", "render_html", "write_report"]
