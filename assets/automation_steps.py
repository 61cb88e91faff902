"""What automation steps share, and the steps beyond plain SQL: queries fetched at run time,
ETL (a table into another through one compiled SELECT) and PDF reports.

A fetched query is cached before parameters are applied; at each run it is rendered (template
values become bound parameters), split as its database reads it, cut down to the statement
types the step allows (the rest removed, with a warning) and shown, strings masked, in the op's
output. On DuckDB it runs without file access.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any

import dagster as dg

from assets import spec
from assets.common import STAGING_KEY, WAREHOUSE_KEY, connection_key
from assets.sql_statements import DEFAULT_ALLOWED, SqlTextError, keep_allowed
from assets.templating import (
    BoundSql,
    check_template,
    date_context,
    render_sql,
    render_text,
)
from resources.files import TransferError
from resources.query_source import (
    SourceRefused,
    SourceUnreachable,
    cached_fetch,
    describe_url,
    fetch_file,
    fetch_url,
)
from resources.warehouse import (
    WarehouseError,
    WarehouseResource,
    first_line,
    qualified,
    quote_ident,
)

QUERY_CACHE = "query_cache"  # under the data directory: <workflow>/<op>-<source hash>.sql
REPORTS = "reports"  # under the data directory: <workflow>/<run id>/<file>.pdf


def final(description: str) -> dg.Failure:
    """A failure a retry cannot fix: it bypasses the step's retry policy (a plain dg.Failure
    would be retried like any other error)."""
    return dg.Failure(description, allow_retries=False)


def is_bad_sql(error: Exception) -> bool:
    """A query a retry cannot fix: syntax, unknown table or column, a constraint."""
    import duckdb
    import sqlalchemy as sa

    # The warehouse and a source's retried read wrap the driver's error: judge that one.
    while isinstance(error, WarehouseError | TransferError) and error.__cause__:
        error = error.__cause__
    if isinstance(error, duckdb.Error):
        return not isinstance(error, duckdb.IOException | duckdb.ConnectionException)
    return isinstance(error, sa.exc.ProgrammingError | sa.exc.IntegrityError
                      | sa.exc.DataError)


def template_values(context: dg.OpExecutionContext, params: dict[str, Any]) -> dict[str, Any]:
    """The date macros of the run's day (its schedule tick, else today) and the parameters."""
    scheduled = context.run.tags.get("dagster/scheduled_execution_time")
    day = (datetime.fromisoformat(scheduled) if scheduled else datetime.now(UTC)).date()
    return date_context(day, params)


def database(context: dg.OpExecutionContext, workflow: str, connection: str | None
             ) -> WarehouseResource:
    key = connection_key(workflow, connection) if connection else WAREHOUSE_KEY
    return getattr(context.resources, key)


def step_resources(workflow: str, step: Any) -> set[str]:
    """Resource keys a step needs beyond its database: the query source and the staging area
    (for the cached copy or the report file)."""
    keys: set[str] = set()
    fetched = isinstance(step, spec.FetchedQueryStep) and step.fetched
    if fetched and step.file_source is not None:
        keys.add(connection_key(workflow, step.file_source.connection))
    if fetched or isinstance(step, spec.ReportStep):
        keys.add(STAGING_KEY)
    if isinstance(step, spec.EtlStep | spec.ReportStep):
        connection = getattr(step, "connection", None)
        keys.add(connection_key(workflow, connection) if connection else WAREHOUSE_KEY)
    return keys


# ---------------------------------------------------------------- queries fetched at run time


def _token(source: spec.UrlSource, step: str) -> str | None:
    if source.token is None:
        return None
    if source.token.env not in os.environ:
        raise final(f"step {step}: environment variable {source.token.env} (the token of "
                    f"{describe_url(source.url)}) is not set; set it where the runs execute")
    return os.environ[source.token.env]


def _fetch(context: dg.OpExecutionContext, workflow: str, step: spec.FetchedQueryStep
           ) -> tuple[str, str]:
    """(query text, where it came from): fetched now, else the cached copy (with a warning)."""
    op = context.op.name
    file_source, url_source = step.file_source, step.url_source
    if file_source is not None:
        files = getattr(context.resources, connection_key(workflow, file_source.connection))
        where = f"connection {file_source.connection}: {file_source.path}"
        fetch = partial(fetch_file, files, file_source.path)
    else:
        assert url_source is not None
        token = _token(url_source, op)
        where = describe_url(url_source.url)
        fetch = partial(fetch_url, url_source.url, token, url_source.header, url_source.scheme,
                        url_source.ca_file, url_source.timeout_seconds)
    source = f"{file_source.connection}:{file_source.path}" if file_source else url_source.url
    digest = hashlib.sha256(source.encode()).hexdigest()[:12]  # the whole URL, query included
    cache = getattr(context.resources, STAGING_KEY).folder(QUERY_CACHE, workflow)
    try:
        fetched = cached_fetch(fetch, cache / f"{op}-{digest}.sql")
    except SourceRefused as refused:
        raise final(f"step {op}: the query source refused: {refused}") from None
    except SourceUnreachable as down:  # retryable: the step's retry policy applies
        raise RuntimeError(f"step {op}: query source {down}") from None
    if fetched.warning:
        context.log.warning(f"step {op}: {fetched.warning}")
    return fetched.text, where


def _fence(text: str) -> str:
    """A Markdown code fence longer than any run of backticks in the text."""
    ticks = 3
    while "`" * ticks in text:
        ticks += 1
    return "`" * ticks


def step_statements(context: dg.OpExecutionContext, workflow: str,
                    step: spec.SqlStep | spec.AlarmStep,
                    params: dict[str, Any]) -> list[BoundSql]:
    """The statements a sql or alarm step runs, rendered for its database: its own SQL as one,
    or a fetched query's statements of the allowed types.

    A fetched query is rendered before it is split, so what is checked is what runs (a Jinja
    comment or filter block cannot turn one checked statement into two)."""
    db = database(context, workflow, step.connection)
    values = template_values(context, params)
    inline = step.sql if isinstance(step, spec.SqlStep) else step.query
    if not step.fetched:
        return [render_sql(inline or "", values, db.placeholder.format)]
    op = context.op.name
    text, where = _fetch(context, workflow, step)
    if problem := check_template(text, params, sql=True):
        raise final(f"step {op}: the query from {where}: {problem}")
    bound = render_sql(text, values, db.placeholder.format)
    allowed = step.allow_statements or list(DEFAULT_ALLOWED)
    try:
        kept, removed = keep_allowed(bound.text, allowed, "duckdb" if db.is_duckdb
                                     else "postgres")
    except SqlTextError as bad:
        raise final(f"step {op}: the query from {where} cannot be split into statements: "
                    f"{bad}") from None
    if removed:
        context.log.warning(
            f"step {op}: removed {len(removed)} statement(s) of a type not allowed "
            f"(allowed: {', '.join(allowed)}) from the query of {where}: "
            + "; ".join(s.short() for s in removed))
    preview = ";\n".join(s.masked for s in kept)  # strings masked, as in the warning
    fence = _fence(preview)
    context.add_output_metadata({
        "query": dg.MetadataValue.md(f"{fence}sql\n{preview}\n{fence}"),
        "query_source": where, "removed_statements": len(removed)})
    if not kept:
        raise final(f"step {op}: the query from {where} has no statement left to run (allowed: "
                    f"{', '.join(allowed)}; removed {len(removed)})")
    return [BoundSql(s.text, {k: v for k, v in bound.params.items() if k in s.params})
            for s in kept]


def without_file_access_when_fetched(run: Callable[..., dict[str, Any]]
                                     ) -> Callable[..., dict[str, Any]]:
    """A sql or alarm runner whose DuckDB database cannot touch files while it runs a fetched
    query (the warehouse's own loads, made elsewhere, keep their access)."""

    def runner(context: dg.OpExecutionContext, workflow: spec.Workflow,
               step: spec.SqlStep | spec.AlarmStep,
               params: dict[str, Any], files: list[str]) -> dict[str, Any]:
        if not step.fetched:
            return run(context, workflow, step, params, files)
        with database(context, workflow.workflow.name, step.connection).without_file_access():
            return run(context, workflow, step, params, files)

    return runner


# ---------------------------------------------------------------- etl


def etl_select(step: spec.EtlStep) -> str:
    """The step as one SELECT: computed columns over the source, then the filter, then the
    kept columns or the group by and its aggregates. Names are validated and quoted;
    expressions are the spec author's SQL (checked at load: one expression each)."""
    computed = "".join(f", {expression} AS {quote_ident(name)}"
                       for name, expression in step.computed.items())
    inner = f"SELECT *{computed} FROM {qualified(*step.from_.split('.'))}"
    if step.group_by or step.aggregates:
        keys = [quote_ident(c) for c in step.group_by]
        outputs = keys + [f"{expression} AS {quote_ident(name)}"
                          for name, expression in step.aggregates.items()]
    else:
        outputs = [quote_ident(c) for c in step.columns] or ["*"]
    sql = f"SELECT {', '.join(outputs)} FROM ({inner}) AS {quote_ident('etl_source')}"
    if step.filter:
        sql += f" WHERE ({step.filter}\n)"
    if step.group_by:
        sql += f" GROUP BY {', '.join(quote_ident(c) for c in step.group_by)}"
    return sql


def run_etl(context: dg.OpExecutionContext, workflow: spec.Workflow, step: spec.EtlStep,
            params: dict[str, Any], files: list[str]) -> dict[str, Any]:
    warehouse = database(context, workflow.workflow.name, None)
    bound = render_sql(etl_select(step), template_values(context, params),
                       warehouse.placeholder.format)
    schema, table = step.into.split(".")
    try:
        rows = warehouse.replace_table(schema, table, bound.text, bound.params)
    except Exception as error:
        if is_bad_sql(error):
            raise final(f"step {context.op.name}: the ETL from {step.from_} failed: "
                        f"{first_line(error)}; fix the step's expressions (not retried)"
                        ) from None
        raise
    context.log.info(f"{step.into}: {rows} rows from {step.from_}")
    context.add_output_metadata({"sql": dg.MetadataValue.md(f"```sql\n{bound.text}\n```")})
    return {"table": step.into, "rows": rows}


# ---------------------------------------------------------------- pdf report


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
    from assets.pdf_report import ChartData, Report, TableData, write_report
    from resources.files import UnsafePath, checked_file_name

    wf, op = workflow.workflow.name, context.op.name
    warehouse = database(context, wf, step.connection)
    values = template_values(context, params)

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


RUNNERS = {spec.EtlStep: run_etl, spec.ReportStep: run_report}
