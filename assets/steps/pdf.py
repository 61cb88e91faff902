"""A PDF of query results: tables and one bar or line chart (reportlab, no system fonts).

The file is written under a hidden partial name beside the final one and renamed when whole, so
a delivery or a watching sensor never picks up half a report.
"""

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from reportlab.graphics.charts.barcharts import VerticalBarChart
from reportlab.graphics.charts.linecharts import HorizontalLineChart
from reportlab.graphics.shapes import Drawing
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4, landscape
from reportlab.lib.styles import StyleSheet1, getSampleStyleSheet
from reportlab.lib.units import cm
from reportlab.platypus import (
    CondPageBreak,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from resources.connections.files import partial_name

MAX_CELL_CHARS = 200  # a longer value is cut: a report is read, not parsed
MAX_LABEL_CHARS = 24


@dataclass(frozen=True)
class TableData:
    """One table of a report: its title, columns and rows (cut to its limit)."""

    title: str
    columns: list[str]
    rows: Sequence[Sequence[object]]
    cut: bool  # more rows than shown


@dataclass(frozen=True)
class ChartData:
    """A report's chart: labels and values read from its query."""

    type: str  # bar or line
    title: str
    x_name: str
    y_name: str
    labels: list[str]
    values: list[float]
    cut: bool


@dataclass(frozen=True)
class Report:
    """Everything a PDF report shows, read before any page is drawn."""

    title: str
    subtitle: str
    tables: list[TableData] = field(default_factory=list)
    chart: ChartData | None = None


def _cell(value: object) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= MAX_CELL_CHARS else text[:MAX_CELL_CHARS - 1] + "…"


def _table(data: TableData, width: float, styles: StyleSheet1) -> list:
    small = styles["BodyText"].clone("cell", fontSize=7.5, leading=9)
    head = small.clone("head", fontName="Helvetica-Bold")
    columns = max(len(data.columns), 1)
    fits = int((width / columns) / (7.5 * 0.6))  # characters of a column, roughly

    def cell(value: object) -> object:
        """Short text as it is (fast); longer text as a Paragraph, which wraps. Its text is
        escaped: a value is never markup."""
        text = _cell(value)
        return text if len(text) <= fits and "\n" not in text else Paragraph(escape(text), small)

    grid = [[Paragraph(escape(c), head) for c in data.columns]]
    grid += [[cell(v) for v in row] for row in data.rows]
    table = Table(grid, colWidths=[width / columns] * columns, repeatRows=1)
    table.setStyle(TableStyle([
        ("FONT", (0, 1), (-1, -1), "Helvetica", 7.5, 9),
        ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#dde4ee")),
        ("GRID", (0, 0), (-1, -1), 0.25, colors.grey),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("ROWBACKGROUNDS", (0, 1), (-1, -1), [colors.white, colors.HexColor("#f5f7fa")])]))
    # A heading starts a page when fewer than a few rows would fit under it (never orphaned).
    parts = [CondPageBreak(3 * cm), Paragraph(escape(data.title), styles["Heading2"]), table]
    if not data.rows:
        parts.append(Paragraph("No rows.", styles["Italic"]))
    if data.cut:
        parts.append(Paragraph(f"Only the first {len(data.rows)} rows are shown; the query "
                               "returned more (raise max_rows to show more).", styles["Italic"]))
    return [*parts, Spacer(1, 0.5 * cm)]


def _chart(data: ChartData, width: float, styles: StyleSheet1) -> list:
    drawing = Drawing(width, 8 * cm)
    # reportlab sets a chart's attributes in its constructor: no stub declares them.
    chart: Any = VerticalBarChart() if data.type == "bar" else HorizontalLineChart()
    chart.x, chart.y, chart.width, chart.height = 1.5 * cm, 1.5 * cm, width - 2 * cm, 6 * cm
    chart.data = [data.values or [0]]
    chart.categoryAxis.categoryNames = [
        label if len(label) <= MAX_LABEL_CHARS else label[:MAX_LABEL_CHARS - 1] + "…"
        for label in (data.labels or [""])]
    chart.categoryAxis.labels.angle = 30 if len(data.labels) > 8 else 0
    chart.categoryAxis.labels.boxAnchor = "ne" if len(data.labels) > 8 else "n"
    chart.valueAxis.valueMin = min(0.0, *data.values) if data.values else 0
    if data.type == "bar":
        chart.bars[0].fillColor = colors.HexColor("#4a72b0")
    else:
        chart.lines[0].strokeColor = colors.HexColor("#4a72b0")
        chart.lines[0].strokeWidth = 1.5
    drawing.add(chart)
    parts = [Paragraph(escape(data.title), styles["Heading2"]),
             Paragraph(escape(f"{data.y_name} by {data.x_name}"), styles["Italic"]), drawing]
    if data.cut:
        parts.append(Paragraph(f"Only the first {len(data.values)} points are drawn.",
                               styles["Italic"]))
    return parts


def write_report(report: Report, target: Path) -> int:
    """Render the report to `target` (partial name first); returns the file's size."""
    styles = getSampleStyleSheet()
    page = landscape(A4)
    partial = target.with_name(partial_name(target.name))
    document = SimpleDocTemplate(str(partial), pagesize=page, title=report.title,
                                 author="Stagecoach", leftMargin=1.5 * cm,
                                 rightMargin=1.5 * cm, topMargin=1.5 * cm,
                                 bottomMargin=1.5 * cm)
    width = page[0] - 3 * cm
    story = [Paragraph(escape(report.title), styles["Title"]),
             Paragraph(escape(report.subtitle), styles["Normal"]), Spacer(1, 0.5 * cm)]
    if report.chart is not None:
        story += _chart(report.chart, width, styles)
    for table in report.tables:
        story += _table(table, width, styles)
    story.append(Paragraph(f"Made {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.", styles["Italic"]))
    try:
        document.build(story)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target.stat().st_size
