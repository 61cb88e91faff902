"""The `sql`, `alarm` and `sync` steps: statements on the warehouse or a `sql` connection,
one value compared with a threshold, tables copied from a `sql` connection."""

import operator
from collections.abc import Callable
from typing import Any

import dagster as dg

from assets import spec
from assets.steps.common import (
    bad_sql_is_final,
    database,
    final,
)
from assets.steps.queries import step_statements
from assets.table_copies import copy_query, source_table

CONDITIONS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le,
    "==": operator.eq, "!=": operator.ne}


def run_sql(context: dg.OpExecutionContext, wf: str, step: spec.SqlStep,
            params: dict[str, Any]) -> dict[str, Any]:
    """A `sql` step: its statements run, or its one SELECT rebuilding `into`."""
    db = database(context, wf, step.connection)
    bound = step_statements(context, wf, step, params)
    with bad_sql_is_final(f"step {context.op.name}: the query failed"):
        if step.into and len(bound) != 1:
            raise final(f"step {context.op.name}: `into` needs one SELECT; the fetched "
                        f"query has {len(bound)} statements")
        if step.into and step.connection:  # rows from another database into the warehouse
            rows = copy_query(context, wf, step.connection, bound[0].text, bound[0].params,
                              step.into)
            return {"table": step.into, "rows": rows}
        if step.into:
            schema, table = step.into.split(".")
            rows = db.replace_table(schema, table, bound[0].text, bound[0].params)
            context.log.info(f"{step.into}: {rows} rows")
            return {"table": step.into, "rows": rows}
        db.execute(f"step {context.op.name}", *((b.text, b.params) for b in bound))
        return {}


def run_alarm(context: dg.OpExecutionContext, wf: str, step: spec.AlarmStep,
              params: dict[str, Any]) -> dict[str, Any]:
    """An `alarm` step: one value compared with the threshold, recorded as an expectation."""
    db = database(context, wf, step.connection)
    statements = step_statements(context, wf, step, params)
    if len(statements) != 1:
        raise final(f"step {context.op.name}: an alarm runs one query; the fetched text has "
                    f"{len(statements)} statements")
    bound = statements[0]
    with bad_sql_is_final(f"step {context.op.name}: the alarm's query failed"):
        rows = db.fetch(bound.text, bound.params)
    if len(rows) != 1 or len(rows[0]) != 1:
        shape = f"{len(rows)} row(s)" + (f" of {len(rows[0])} columns" if rows else "")
        raise final(f"step {context.op.name}: the alarm's query must return one value "
                    f"(one row, one column), not {shape}")
    value = rows[0][0]
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise final(f"step {context.op.name}: the alarm's query returned {value!r}, not "
                         "a number") from None
    raised = CONDITIONS[step.condition](number, step.threshold)
    rule = f"{number:g} {step.condition} {step.threshold:g}"
    # An expectation result is how an op records a check: the alert sensors read the failed
    # ones as alarms, and the run's page shows it.
    context.log_event(dg.ExpectationResult(
        success=not raised, label=context.op.name,
        description=f"alarm {context.op.name}: {rule}" if raised else f"no alarm: not {rule}",
        metadata={"value": number, "condition": step.condition, "threshold": step.threshold}))
    if raised and step.stop:
        raise final(f"step {context.op.name}: alarm raised ({rule}); the chain stops "
                         "here (`stop: true`)")
    return {"value": number, "alarm": raised}


def run_sync(context: dg.OpExecutionContext, workflow: spec.Workflow, step: spec.SyncStep,
             params: dict[str, Any], files: list[str]) -> dict[str, Any]:
    """A `sync` step: whole tables copied from a `sql` connection into the warehouse."""
    total = 0
    for source, into in step.tables.items():
        with bad_sql_is_final(f"step {context.op.name}: copying {source} from "
                              f"`{step.connection}` failed", "check the table's name"):
            total += copy_query(context, workflow.workflow.name, step.connection,
                                f"SELECT * FROM {source_table(source)}", None, into)
    return {"tables": len(step.tables), "rows": total}

