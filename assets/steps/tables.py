"""The steps that rebuild a warehouse table from others: `pivot`, `concat` and `etl` (one
compiled SELECT)."""

import re
from typing import Any

import dagster as dg

from assets import spec
from assets.steps.common import (
    bad_sql_is_final,
    database,
    final,
    is_bad_sql,
    template_values,
)
from assets.templating import render_sql
from resources.warehouse import first_line, qualified, quote_ident


def pivot_column(value: object, taken: set[str]) -> str:
    """A column name for a pivoted value: lower_snake_case, unique."""
    base = re.sub(r"[^a-z0-9]+", "_", str(value).lower()).strip("_") or "blank"
    name = base if base[0].isalpha() else f"v_{base}"
    name, n = name[:60], 2
    while name in taken:
        name, n = f"{base[:56]}_{n}", n + 1
    taken.add(name)
    return name


def run_pivot(context: dg.OpExecutionContext, workflow: spec.Workflow, step: spec.PivotStep,
              params: dict[str, Any], files: list[str]) -> dict[str, Any]:
    """A `pivot` step: one column's distinct values become columns (at most `max_columns`)."""
    warehouse = database(context, workflow.workflow.name, None)
    source = qualified(*step.from_.split("."))
    pivot = quote_ident(step.columns)
    with bad_sql_is_final(f"step {context.op.name}: cannot read {step.from_}",
                          "check the table and columns"):
        distinct = [r[0] for r in warehouse.fetch(
            f"SELECT DISTINCT {pivot} FROM {source} WHERE {pivot} IS NOT NULL ORDER BY 1 "
            f"LIMIT {step.max_columns + 1}")]
    if len(distinct) > step.max_columns:
        raise final(f"step {context.op.name}: {step.columns} has more than "
                    f"{step.max_columns} distinct values; raise `max_columns` or pivot on a "
                    "column with fewer values")
    taken = set(step.index)
    placeholders, cells = {}, []
    for i, value in enumerate(distinct):
        placeholders[f"v{i}"] = value
        cells.append(f"{step.aggregate.upper()}(CASE WHEN {pivot} = "
                     f"{warehouse.placeholder.format(f'v{i}')} THEN {quote_ident(step.values)} "
                     f"END) AS {quote_ident(pivot_column(value, taken))}")
    index = ", ".join(quote_ident(c) for c in step.index)
    sql = (f"SELECT {index}{''.join(', ' + c for c in cells)} FROM {source} "
           f"GROUP BY {index} ORDER BY {index}")
    schema, table = step.into.split(".")
    with bad_sql_is_final(f"step {context.op.name}: the pivot failed",
                          "check the value column's type"):
        rows = warehouse.replace_table(schema, table, sql, placeholders)
    context.log.info(f"{step.into}: {rows} rows, {len(distinct)} pivoted columns")
    return {"table": step.into, "rows": rows, "pivoted_columns": len(distinct)}


def run_concat(context: dg.OpExecutionContext, workflow: spec.Workflow,
               step: spec.ConcatStep, params: dict[str, Any], files: list[str]
               ) -> dict[str, Any]:
    """A `concat` step: tables stacked by column name, a missing column as NULL."""
    warehouse = database(context, workflow.workflow.name, None)
    columns: dict[str, list[str]] = {}
    for source in step.sources:
        with bad_sql_is_final(f"step {context.op.name}: cannot read {source}",
                              "check the table's name"):
            [empty] = list(warehouse.batches(f"SELECT * FROM {qualified(*source.split('.'))} "
                                             "LIMIT 0"))
        columns[source] = list(empty.schema.names)
    aligned = list(dict.fromkeys(c for names in columns.values() for c in names
                                 if c != step.source_column))
    selects, values = [], {}
    for i, source in enumerate(step.sources):
        have = set(columns[source])
        parts = [quote_ident(c) if c in have else f"NULL AS {quote_ident(c)}" for c in aligned]
        if step.source_column:
            values[f"s{i}"] = source
            parts.append(f"{warehouse.placeholder.format(f's{i}')} AS "
                         f"{quote_ident(step.source_column)}")
        selects.append(f"SELECT {', '.join(parts)} FROM {qualified(*source.split('.'))}")
    schema, table = step.into.split(".")
    with bad_sql_is_final(f"step {context.op.name}: the concatenation failed",
                          "columns of one name must have compatible types"):
        rows = warehouse.replace_table(schema, table, " UNION ALL ".join(selects), values)
    context.log.info(f"{step.into}: {rows} rows from {len(step.sources)} tables, "
                     f"{len(aligned)} columns")
    return {"table": step.into, "rows": rows}


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
    """An `etl` step: one SELECT built from the spec's columns, filter and aggregates, rebuilding
    `into`."""
    warehouse = database(context, workflow.workflow.name, None)
    bound = render_sql(etl_select(step), template_values(context, params, workflow.workflow.name),
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

