"""Automations: a job of ops, one per step, run one after the other.

Each op takes the chain's state from the op before it and hands it on: the parameters (from
the first op's config: the spec's defaults, overridable in the launchpad or a launch's run
config) and the current files (a Python step's output files replace them). So the chain's
order is the ops' dependencies: the first failure stops the chain and Dagster shows the steps
after it as not run. Retryable failures (a lost
connection, a timeout) are retried per the step's policy; a bad query, a bad script or an
alarm that stops the chain raise `dg.Failure(allow_retries=False)`, which is never retried.
"""

from __future__ import annotations

import operator
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

from assets import automation_steps, spec
from assets.automation_steps import database as _database
from assets.automation_steps import final as _final
from assets.automation_steps import first_line as _first_line
from assets.automation_steps import is_bad_sql as _is_bad_sql
from assets.automation_steps import step_statements
from assets.automation_steps import template_values as _template_values
from assets.common import WAREHOUSE_KEY, connection_key, owners_of
from assets.templating import render_sql, render_text
from resources.warehouse import qualified, quote_ident

MUTEX_TAG = "stagecoach/mutex"  # deploy/*.yaml limit runs sharing a value to one at a time
AUTOMATION_TAG = "stagecoach/automation"
EX_TEMPFAIL = 75  # sysexits.h: a script exiting with it asks for its step's retry policy
TRIGGERED_BY_TAG = "stagecoach/triggered_by"  # who launched a run; scripts get it as a variable
CONDITIONS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le,
    "==": operator.eq, "!=": operator.ne}


@dataclass
class AutomationBundle:
    jobs: list[dg.JobDefinition] = field(default_factory=list)
    schedules: list[dg.ScheduleDefinition] = field(default_factory=list)


def automation_job_name(workflow: str, name: str) -> str:
    return f"{workflow}_{name}_job"


def _retry_policy(retry: spec.StepRetry) -> dg.RetryPolicy | None:
    if not retry.count:
        return None
    return dg.RetryPolicy(
        max_retries=retry.count, delay=spec.seconds_of(retry.delay),
        backoff=dg.Backoff.EXPONENTIAL if retry.backoff == "exponential" else None,
        jitter=dg.Jitter.PLUS_MINUS)


def _run_sql(context: dg.OpExecutionContext, wf: str, step: spec.SqlStep,
             params: dict[str, Any]) -> dict[str, Any]:
    database = _database(context, wf, step.connection)
    values = _template_values(context, params)
    bound = [render_sql(sql, values, database.placeholder.format)
             for sql in step_statements(context, wf, step, params)]
    try:
        if step.into:
            if len(bound) != 1:
                raise _final(f"step {context.op.name}: `into` needs one SELECT; the fetched "
                             f"query has {len(bound)} statements")
            schema, table = step.into.split(".")
            rows = database.replace_table(schema, table, bound[0].text, bound[0].params)
            context.log.info(f"{step.into}: {rows} rows")
            return {"table": step.into, "rows": rows}
        database.execute(f"step {context.op.name}", *((b.text, b.params) for b in bound))
        return {}
    except Exception as error:
        if _is_bad_sql(error):
            raise _final(f"step {context.op.name}: the query failed: "
                             f"{_first_line(error)}; fix the SQL (not retried)") from None
        raise


def _run_alarm(context: dg.OpExecutionContext, wf: str, step: spec.AlarmStep,
               params: dict[str, Any]) -> dict[str, Any]:
    database = _database(context, wf, step.connection)
    statements = step_statements(context, wf, step, params)
    if len(statements) != 1:
        raise _final(f"step {context.op.name}: an alarm runs one query; the fetched text has "
                     f"{len(statements)} statements")
    bound = render_sql(statements[0], _template_values(context, params),
                       database.placeholder.format)
    try:
        rows = database.fetch(bound.text, bound.params)
    except Exception as error:
        if _is_bad_sql(error):
            raise _final(f"step {context.op.name}: the alarm's query failed: "
                             f"{_first_line(error)}; fix the SQL (not retried)") from None
        raise
    if len(rows) != 1 or len(rows[0]) != 1:
        raise _final(f"step {context.op.name}: the alarm's query must return one value "
                         f"(one row, one column), not {len(rows)} row(s)")
    value = rows[0][0]
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _final(f"step {context.op.name}: the alarm's query returned {value!r}, not "
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
        raise _final(f"step {context.op.name}: alarm raised ({rule}); the chain stops "
                         "here (`stop: true`)")
    return {"value": number, "alarm": raised}


def _env_values(settings: Mapping[str, Any], step: str) -> dict[str, Any]:
    """A step's environment: `{env: NAME}` read now (a missing one fails, named)."""
    values = {}
    for name, setting in settings.items():
        if isinstance(setting, spec.EnvRef):
            if setting.env not in os.environ:
                raise _final(f"step {step}: environment variable {setting.env} (for "
                                 f"{name}) is not set; set it where the runs execute")
            values[name] = os.environ[setting.env]
        else:
            values[name] = setting
    return values


def _run_variables(context: dg.OpExecutionContext, params: dict[str, Any]) -> dict[str, str]:
    """What a script or command gets: the parameters, the run's day and who launched it."""
    values = _template_values(context, params)
    return {**{f"STAGECOACH_PARAM_{k.upper()}": str(v) for k, v in params.items()},
            "STAGECOACH_DS": values["ds"], "STAGECOACH_RUN_ID": context.run_id,
            "STAGECOACH_TRIGGERED_BY": context.run.tags.get(TRIGGERED_BY_TAG, "")}


def _run_python(context: dg.OpExecutionContext, workflow: spec.Workflow,
                step: spec.PythonStep,
                params: dict[str, Any], files: list[str]) -> dict[str, Any]:
    from resources.python_script import ScriptError, run_python_script

    values = {**_template_values(context, params), "files": files}
    args = [render_text(a, values) for a in step.args] if step.args else files[:1]
    env = _run_variables(context, params)
    env |= _env_values(step.env, context.op.name)
    try:
        outcome = run_python_script(
            context, Path(step.script), args, env, step.requirements,
            timeout_seconds=spec.seconds_of(step.timeout) if step.timeout else None)
    except ScriptError as failed:
        if failed.exit_code == EX_TEMPFAIL:  # the script says a retry may work
            raise RuntimeError(f"step {context.op.name}: {failed}") from None
        raise _final(f"step {context.op.name}: {failed}") from None
    result: dict[str, Any] = {"exit_code": outcome.exit_code}
    if outcome.output_files:
        result["files"] = list(outcome.output_files)
    return result


def _run_ssh(context: dg.OpExecutionContext, workflow: spec.Workflow, step: spec.SshStep,
             params: dict[str, Any], files: list[str]) -> dict[str, Any]:
    from resources.ssh_command import SshCommandError, SshCommandResource

    connection = workflow.connections[step.connection]
    settings = {k: getattr(connection, k) for k in (
        "host", "port", "username", "password", "private_key_path", "private_key_passphrase",
        "known_hosts", "host_key", "timeout_seconds") if getattr(connection, k, None) is not None}
    remote = SshCommandResource(**_env_values(settings, context.op.name))
    # Values reach the remote shell as variables, never pasted into the command text.
    env = _run_variables(context, params)
    env |= _env_values(step.env, context.op.name)
    try:
        result = remote.run(step.command or "", context.log.info, env,
                            spec.seconds_of(step.timeout) if step.timeout else None)
    except SshCommandError as failed:
        raise RuntimeError(f"step {context.op.name}: {failed}") from None  # retryable
    if result.exit_code != 0:
        raise _final(f"step {context.op.name}: the command exited with {result.exit_code}; "
                         f"its last lines:\n{result.tail}")
    return {"exit_code": 0}


def _pivot_column(value: object, taken: set[str]) -> str:
    """A column name for a pivoted value: lower_snake_case, unique."""
    base = re.sub(r"[^a-z0-9]+", "_", str(value).lower()).strip("_") or "blank"
    name = base if base[0].isalpha() else f"v_{base}"
    name, n = name[:60], 2
    while name in taken:
        name, n = f"{base[:56]}_{n}", n + 1
    taken.add(name)
    return name


def _run_pivot(context: dg.OpExecutionContext, workflow: spec.Workflow, step: spec.PivotStep,
               params: dict[str, Any], files: list[str]) -> dict[str, Any]:
    warehouse = _database(context, workflow.workflow.name, None)
    source = qualified(*step.from_.split("."))
    pivot = quote_ident(step.columns)
    try:
        distinct = [r[0] for r in warehouse.fetch(
            f"SELECT DISTINCT {pivot} FROM {source} WHERE {pivot} IS NOT NULL ORDER BY 1 "
            f"LIMIT {step.max_columns + 1}")]
    except Exception as error:
        raise _final(f"step {context.op.name}: cannot read {step.from_}: "
                     f"{_first_line(error)}") from None
    if len(distinct) > step.max_columns:
        raise _final(f"step {context.op.name}: {step.columns} has more than "
                     f"{step.max_columns} distinct values; raise `max_columns` or pivot on a "
                     "column with fewer values")
    taken = set(step.index)
    placeholders, cells = {}, []
    for i, value in enumerate(distinct):
        placeholders[f"v{i}"] = value
        cells.append(f"{step.aggregate.upper()}(CASE WHEN {pivot} = "
                     f"{warehouse.placeholder.format(f'v{i}')} THEN {quote_ident(step.values)} "
                     f"END) AS {quote_ident(_pivot_column(value, taken))}")
    index = ", ".join(quote_ident(c) for c in step.index)
    sql = (f"SELECT {index}{''.join(', ' + c for c in cells)} FROM {source} "
           f"GROUP BY {index} ORDER BY {index}")
    schema, table = step.into.split(".")
    try:
        rows = warehouse.replace_table(schema, table, sql, placeholders)
    except Exception as error:
        raise _final(f"step {context.op.name}: the pivot failed: {_first_line(error)}") from None
    context.log.info(f"{step.into}: {rows} rows, {len(distinct)} pivoted columns")
    return {"table": step.into, "rows": rows, "pivoted_columns": len(distinct)}


def _run_concat(context: dg.OpExecutionContext, workflow: spec.Workflow,
                step: spec.ConcatStep, params: dict[str, Any], files: list[str]
                ) -> dict[str, Any]:
    warehouse = _database(context, workflow.workflow.name, None)
    columns: dict[str, list[str]] = {}
    try:
        for source in step.sources:
            [empty] = list(warehouse.batches(f"SELECT * FROM {qualified(*source.split('.'))} "
                                             "LIMIT 0"))
            columns[source] = list(empty.schema.names)
    except Exception as error:
        raise _final(f"step {context.op.name}: cannot read {source}: "
                     f"{_first_line(error)}") from None
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
    try:
        rows = warehouse.replace_table(schema, table, " UNION ALL ".join(selects), values)
    except Exception as error:
        raise _final(f"step {context.op.name}: the concatenation failed (columns of one name "
                     f"must have compatible types): {_first_line(error)}") from None
    context.log.info(f"{step.into}: {rows} rows from {len(step.sources)} tables, "
                     f"{len(aligned)} columns")
    return {"table": step.into, "rows": rows}


RUNNERS: dict[type, Callable[..., dict[str, Any]]] = {
    spec.PivotStep: _run_pivot, spec.ConcatStep: _run_concat,
    spec.SqlStep: lambda context, workflow, step, params, files: _run_sql(
        context, workflow.workflow.name, step, params),
    spec.AlarmStep: lambda context, workflow, step, params, files: _run_alarm(
        context, workflow.workflow.name, step, params),
    spec.PythonStep: _run_python, spec.SshStep: _run_ssh, **automation_steps.RUNNERS}


def _step_op(workflow: spec.Workflow, automation_name: str, automation: spec.Automation,
             index: int, step_name: str, first: bool) -> dg.OpDefinition:
    wf = workflow.workflow.name
    step = automation.steps[index]
    runner = RUNNERS[type(step)]
    connection = getattr(step, "connection", None)
    resources = ({connection_key(wf, connection) if connection else WAREHOUSE_KEY}
                 if isinstance(step, spec.SqlStep | spec.AlarmStep | spec.PivotStep
                                 | spec.ConcatStep) else set())
    resources |= automation_steps.step_resources(wf, step)
    retry = step.retry or automation.retry
    defaults = {**workflow.workflow.params, **automation.params}
    config = {"params": dg.Field(dg.Permissive(), default_value=defaults, is_required=False,
                                 description="Parameters of this launch (defaults from the "
                                             "spec).")} if first else None

    @dg.op(name=f"{automation_name}__{step_name}", required_resource_keys=resources,
           retry_policy=_retry_policy(retry), config_schema=config,
           ins={} if first else {"state": dg.In(dict)}, out=dg.Out(dict),
           description=step.description or f"Step {index + 1} of automation "
                                           f"`{automation_name}`: {step.kind}.",
           tags={"stagecoach/step_kind": step.kind})
    def _step(context, **inputs: Any) -> dict:
        state = ({"params": dict(context.op_config["params"]), "files": []} if first
                 else inputs["state"])
        outcome = runner(context, workflow, step, state["params"], state["files"])
        context.add_output_metadata({"step": step_name, "kind": step.kind, **{
            k: v for k, v in outcome.items() if isinstance(v, int | float | str | bool)}})
        return {**state, "files": outcome.get("files", state["files"])}

    return _step


def build_automation(workflow: spec.Workflow, name: str, automation: spec.Automation
                     ) -> AutomationBundle:
    """The job of one automation (its steps chained in order) and its schedule, if any."""
    wf = workflow.workflow.name
    job_name = automation_job_name(wf, name)
    ops = [_step_op(workflow, name, automation, i, step_name, i == 0)
           for i, step_name in enumerate(automation.step_names())]

    @dg.graph(name=f"{name}_chain")
    def _chain() -> None:
        state = ops[0]()
        for op in ops[1:]:
            state = op(state)

    tags = {"stagecoach/workflow": wf, AUTOMATION_TAG: name}
    if automation.mutex:
        tags[MUTEX_TAG] = automation.mutex
    owners = owners_of(workflow, automation)
    job = _chain.to_job(
        name=job_name, tags=tags,
        description=automation.description or f"Automation `{name}`: "
                    + " → ".join(automation.step_names()),
        metadata={"steps": [f"{n} ({s.kind})" for n, s in zip(
            automation.step_names(), automation.steps, strict=True)],
                  **({"owners": owners} if owners else {})})
    bundle = AutomationBundle(jobs=[job])
    if automation.schedule is not None:
        timezone = automation.schedule.timezone or workflow.workflow.timezone
        enabled = automation.enabled and automation.schedule.enabled
        bundle.schedules.append(dg.ScheduleDefinition(
            name=f"{wf}_{name}_schedule", job=job, cron_schedule=automation.schedule.cron,
            execution_timezone=timezone, description=f"{automation.schedule.cron} ({timezone})",
            default_status=dg.DefaultScheduleStatus.RUNNING if enabled
            else dg.DefaultScheduleStatus.STOPPED))
    return bundle
