"""The `report` step: its queries' rows as a PDF in staging (assets/steps/pdf.py), handed to
the next step as a file."""

from typing import Any

import dagster as dg

from assets import spec
from assets.names import STAGING_KEY
from assets.steps.common import database, final, is_bad_sql, template_values
from assets.templating import render_sql, render_text
from resources.warehouse import WarehouseResource, first_line

REPORTS = "reports"  # under the data directory: <workflow>/<run id>/<file>.pdf


def _rows(warehouse: WarehouseResource, sql: str, params: dict[str, Any], limit: int
          ) -> tuple[list[str], list[tuple], bool]:
    """(columns, up to `limit` rows, whether there were more): read in batches, stopped early."""
    columns: list[str] = []
    rows: list[tuple] = []
    batches = warehouse.batches(sql, params, rows=limit + 1)
    try:
        for batch in batches:
            columns = list(batch.schema.names)
            rows += list(zip(*(c.to_pylist() for c in batch.columns), strict=True))
            if len(rows) > limit:
                break
    finally:
        batches.close()
    return columns, rows[:limit], len(rows) > limit


def run_report(context: dg.OpExecutionContext, workflow: spec.Workflow, step: spec.ReportStep,
               params: dict[str, Any], files: list[str]) -> dict[str, Any]:
    """A `report` step: its queries' rows as a PDF in staging, handed to the next step as a file."""
    from assets.steps.pdf import ChartData, Report, TableData, write_report
    from resources.connections.files import UnsafePath, checked_file_name

    wf, op = workflow.workflow.name, context.op.name
    warehouse = database(context, wf, step.connection)
    values = template_values(context, params, wf)

    def query(what: str, sql: str, limit: int) -> tuple[list[str], list[tuple], bool]:
        bound = render_sql(sql.strip().rstrip(";"), values, warehouse.placeholder.format)
        try:
            return _rows(warehouse, bound.text, bound.params, limit)
        except Exception as error:
            if is_bad_sql(error):
                raise final(f"step {op}: the query of {what} failed: {first_line(error)}; fix "
                            "the SQL (not retried)") from None
            raise

    tables = []
    for i, item in enumerate(step.tables):
        title = item.title or f"Table {i + 1}"
        columns, rows, cut = query(f"table {title!r}", item.sql, item.max_rows)
        tables.append(TableData(title, columns, rows, cut))
    chart = None
    if step.chart is not None:
        spec_chart = step.chart
        columns, rows, cut = query("the chart", spec_chart.sql, spec_chart.max_points)
        x = spec_chart.x or (columns[0] if columns else "")
        y = spec_chart.y or (columns[1] if len(columns) > 1 else "")
        if x not in columns or y not in columns or x == y:
            raise final(f"step {op}: the chart needs two columns, x and y; its query returned "
                        f"{', '.join(columns) or 'none'}")
        xi, yi = columns.index(x), columns.index(y)
        points = []
        for row in rows:
            try:
                points.append(float(row[yi] if row[yi] is not None else 0))
            except (TypeError, ValueError):
                raise final(f"step {op}: the chart's {y} column holds {row[yi]!r}, not a "
                            "number") from None
        chart = ChartData(spec_chart.type, spec_chart.title or f"{y} by {x}", x, y,
                          [str(r[xi]) for r in rows], points, cut)
    try:
        name = checked_file_name(f"step {op}", "file_name", render_text(
            step.file_name or f"{op.split('__', 1)[-1]}_{{{{ ds_nodash }}}}.pdf", values))
    except UnsafePath as bad:
        raise final(str(bad)) from None
    target = getattr(context.resources, STAGING_KEY).folder(REPORTS, wf, context.run_id) / name
    size = write_report(Report(step.title, f"{workflow.workflow.name} · {values['ds']}",
                               tables, chart), target)
    context.log.info(f"report {name}: {size:,} bytes, {len(tables)} table(s)"
                     f"{', a chart' if chart else ''}")
    context.add_output_metadata({"report": dg.MetadataValue.path(str(target))})
    return {"files": [str(target)], "file": name, "bytes": size}

