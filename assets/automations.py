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
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg

from assets import automation_steps, spec
from assets.automation_steps import database as _database
from assets.automation_steps import final as _final
from assets.automation_steps import is_bad_sql as _is_bad_sql
from assets.automation_steps import step_statements, without_file_access_when_fetched
from assets.automation_steps import template_values as _template_values
from assets.common import (
    STAGING_KEY,
    WAREHOUSE_KEY,
    connection_key,
    ends_on_termination,
    owners_of,
)
from assets.table_copies import copy_query, source_table
from assets.templating import render_text
from resources.ssh_command import CONN_PREFIX
from resources.warehouse import first_line, qualified, quote_ident

MUTEX_TAG = "stagecoach/mutex"  # deploy/*.yaml limit runs sharing a value to one at a time
AUTOMATION_TAG = "stagecoach/automation"
EX_TEMPFAIL = 75  # sysexits.h: a script exiting with it asks for its step's retry policy
TRIGGERED_BY_TAG = "stagecoach/triggered_by"  # who launched a run; scripts get it as a variable
RUN_AS_TAG = "stagecoach/run_as"  # the profile whose connections a run's steps use
CANCEL_RETRY_TAG = "stagecoach/cancel_retry"  # set by an operator: no further step retries
PARENT_RUN_TAG = "stagecoach/parent_run"  # on a chain's child run: the chain's run
CONDITIONS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le,
    "==": operator.eq, "!=": operator.ne}


@dataclass(frozen=True)
class ChildJob:
    """A group's job a chain can run: launched through the webserver, followed to its end."""

    job: str
    partition: Callable[[datetime], str | None]  # what a run asked for at that time loads
    dagster_url: Callable[[], str]  # read at run time: the webserver's GraphQL API


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
        backoff=dg.Backoff.EXPONENTIAL if retry.backoff == "exponential" else None)
    # No jitter: Dagster's PLUS_MINUS adds ±delay (a 30 s delay could be 0 s) and FULL
    # shrinks it; a retry waits the time the spec says.


@contextmanager
def _bad_sql_is_final(what: str, hint: str = "fix the SQL") -> Iterator[None]:
    """A query a retry cannot fix (syntax, unknown table, a constraint) fails the step for
    good, saying `what` failed; anything else (a lost connection) is left to the retries."""
    try:
        yield
    except dg.Failure:
        raise
    except Exception as error:
        if _is_bad_sql(error):
            raise _final(f"{what}: {first_line(error)}; {hint} (not retried)") from None
        raise


def _run_sql(context: dg.OpExecutionContext, wf: str, step: spec.SqlStep,
             params: dict[str, Any]) -> dict[str, Any]:
    database = _database(context, wf, step.connection)
    bound = step_statements(context, wf, step, params)
    with _bad_sql_is_final(f"step {context.op.name}: the query failed"):
        if step.into and len(bound) != 1:
            raise _final(f"step {context.op.name}: `into` needs one SELECT; the fetched "
                         f"query has {len(bound)} statements")
        if step.into and step.connection:  # rows from another database into the warehouse
            rows = copy_query(context, wf, step.connection, bound[0].text, bound[0].params,
                              step.into)
            return {"table": step.into, "rows": rows}
        if step.into:
            schema, table = step.into.split(".")
            rows = database.replace_table(schema, table, bound[0].text, bound[0].params)
            context.log.info(f"{step.into}: {rows} rows")
            return {"table": step.into, "rows": rows}
        database.execute(f"step {context.op.name}", *((b.text, b.params) for b in bound))
        return {}


def _run_alarm(context: dg.OpExecutionContext, wf: str, step: spec.AlarmStep,
               params: dict[str, Any]) -> dict[str, Any]:
    database = _database(context, wf, step.connection)
    statements = step_statements(context, wf, step, params)
    if len(statements) != 1:
        raise _final(f"step {context.op.name}: an alarm runs one query; the fetched text has "
                     f"{len(statements)} statements")
    bound = statements[0]
    with _bad_sql_is_final(f"step {context.op.name}: the alarm's query failed"):
        rows = database.fetch(bound.text, bound.params)
    if len(rows) != 1 or len(rows[0]) != 1:
        shape = f"{len(rows)} row(s)" + (f" of {len(rows[0])} columns" if rows else "")
        raise _final(f"step {context.op.name}: the alarm's query must return one value "
                     f"(one row, one column), not {shape}")
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
            "STAGECOACH_TRIGGERED_BY": triggered_by(context.run.tags)}


def triggered_by(tags: Mapping[str, str]) -> str:
    """Who or what launched a run: its tag (a webhook caller, a launchpad tag, a schedule),
    else the sensor, else a manual launch (Dagster OSS records no user)."""
    if who := tags.get(TRIGGERED_BY_TAG):
        return who
    if sensor := tags.get("dagster/sensor_name"):
        return f"sensor:{sensor}"
    if schedule := tags.get("dagster/schedule_name"):
        return f"schedule:{schedule}"
    return "manual"


def _run_python(context: dg.OpExecutionContext, workflow: spec.Workflow,
                step: spec.PythonStep,
                params: dict[str, Any], files: list[str]) -> dict[str, Any]:
    from resources.python_script import ScriptError, run_python_script

    values = {**_template_values(context, params), "files": files}
    args = [render_text(a, values) for a in step.args] if step.args else files[:1]
    env = _run_variables(context, params)
    env |= _connection_variables(context, workflow, step.connections)
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


def _connection_variables(context: dg.OpExecutionContext, workflow: spec.Workflow,
                          names: list[str]) -> dict[str, str]:
    """STAGECOACH_CONN_<NAME>_<FIELD> for each named connection (the run-as profile's in its
    place, under the name the script knows), secrets read from their variables now."""
    profile = context.run.tags.get(RUN_AS_TAG)
    swaps = workflow.profiles[profile].connections if profile in workflow.profiles else {}
    variables = {}
    for name in names:
        used = swaps.get(name, name)
        connection = workflow.connections[used]
        fields = {f"connection {used}: {k}": getattr(connection, k)
                  for k in type(connection).model_fields
                  if k not in ("kind", "description") and getattr(connection, k) is not None}
        for label, value in _env_values(fields, context.op.name).items():
            field_name = label.rsplit(": ", 1)[1]
            variables[f"{CONN_PREFIX}{name.upper()}_{field_name.upper()}"] = (
                str(value).lower() if isinstance(value, bool) else str(value))
    return variables


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
    with _bad_sql_is_final(f"step {context.op.name}: cannot read {step.from_}",
                           "check the table and columns"):
        distinct = [r[0] for r in warehouse.fetch(
            f"SELECT DISTINCT {pivot} FROM {source} WHERE {pivot} IS NOT NULL ORDER BY 1 "
            f"LIMIT {step.max_columns + 1}")]
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
    with _bad_sql_is_final(f"step {context.op.name}: the pivot failed",
                           "check the value column's type"):
        rows = warehouse.replace_table(schema, table, sql, placeholders)
    context.log.info(f"{step.into}: {rows} rows, {len(distinct)} pivoted columns")
    return {"table": step.into, "rows": rows, "pivoted_columns": len(distinct)}


def _run_concat(context: dg.OpExecutionContext, workflow: spec.Workflow,
                step: spec.ConcatStep, params: dict[str, Any], files: list[str]
                ) -> dict[str, Any]:
    warehouse = _database(context, workflow.workflow.name, None)
    columns: dict[str, list[str]] = {}
    for source in step.sources:
        with _bad_sql_is_final(f"step {context.op.name}: cannot read {source}",
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
    with _bad_sql_is_final(f"step {context.op.name}: the concatenation failed",
                           "columns of one name must have compatible types"):
        rows = warehouse.replace_table(schema, table, " UNION ALL ".join(selects), values)
    context.log.info(f"{step.into}: {rows} rows from {len(step.sources)} tables, "
                     f"{len(aligned)} columns")
    return {"table": step.into, "rows": rows}


def _run_sync(context: dg.OpExecutionContext, workflow: spec.Workflow, step: spec.SyncStep,
              params: dict[str, Any], files: list[str]) -> dict[str, Any]:
    total = 0
    for source, into in step.tables.items():
        with _bad_sql_is_final(f"step {context.op.name}: copying {source} from "
                               f"`{step.connection}` failed", "check the table's name"):
            total += copy_query(context, workflow.workflow.name, step.connection,
                                f"SELECT * FROM {source_table(source)}", None, into)
    return {"tables": len(step.tables), "rows": total}


RUNNERS: dict[type, Callable[..., dict[str, Any]]] = {
    spec.SyncStep: _run_sync,
    spec.PivotStep: _run_pivot, spec.ConcatStep: _run_concat,
    spec.SqlStep: without_file_access_when_fetched(lambda context, workflow, step, params,
                                                   files: _run_sql(
        context, workflow.workflow.name, step, params)),
    spec.AlarmStep: without_file_access_when_fetched(lambda context, workflow, step, params,
                                                     files: _run_alarm(
        context, workflow.workflow.name, step, params)),
    spec.PythonStep: _run_python, spec.SshStep: _run_ssh, **automation_steps.RUNNERS}


def _run_as(context: dg.OpExecutionContext, workflow: spec.Workflow, step: Any,
            allowed_by_job: Mapping[str, frozenset[str]]) -> Any:
    """The step with its connection swapped for the run's profile's (`stagecoach/run_as`).
    Only a profile named by the job's own automation, or by a chain between it and this
    step, is honoured: a tag cannot borrow another chain's account."""
    profile = context.run.tags.get(RUN_AS_TAG)
    if not profile:
        return step
    job_automation = context.run.tags.get(AUTOMATION_TAG, "")
    allowed = allowed_by_job.get(job_automation, frozenset())
    if profile not in allowed:
        raise _final(f"step {context.op.name}: the run asks to run as profile {profile!r}, "
                     f"which automation `{job_automation}` does not name for this step "
                     f"(run_as: {', '.join(sorted(allowed)) or 'none'}); remove the "
                     f"{RUN_AS_TAG} tag or name the profile in the spec")
    swapped = workflow.profiles[profile].connections.get(getattr(step, "connection", None))
    return step.model_copy(update={"connection": swapped}) if swapped else step


def _refuse_cancelled_retry(context: dg.OpExecutionContext) -> None:
    """An operator's cancel-retry (a run tag) ends the run before a retry attempt starts."""
    if context.retry_number == 0:
        return
    run = context.instance.get_run_by_id(context.run_id)
    if run is not None and (cancelled := run.tags.get(CANCEL_RETRY_TAG)):
        raise _final(f"step {context.op.name}: retry {context.retry_number} not run: the "
                     f"retries were cancelled ({cancelled})")


def request_cancel_retry(instance: dg.DagsterInstance, run_id: str, by: str) -> str:
    """Tag a run so that no pending or later step retry of it runs; the run then fails.

    Returns what was done, for the operator; raises ValueError for a run that cannot be
    cancelled (unknown, or already over)."""
    run = instance.get_run_by_id(run_id)
    if run is None:
        raise ValueError(f"no run {run_id!r} in this instance")
    if run.is_finished:
        raise ValueError(f"run {run_id} already ended ({run.status.value}); it has no retry "
                         "left to cancel")
    instance.add_run_tags(run_id, {CANCEL_RETRY_TAG: f"by {by} at "
                                                     f"{datetime.now(UTC):%Y-%m-%d %H:%M:%S}Z"})
    return (f"run {run_id} ({run.job_name}): retries cancelled; a step waiting to retry fails "
            "at its next attempt and the run ends as failed")


def _step_op(workflow: spec.Workflow, automation_name: str, automation: spec.Automation,
             index: int, step_name: str, first: bool,
             profiles_by_job: Mapping[str, frozenset[str]]) -> dg.OpDefinition:
    wf = workflow.workflow.name
    step = automation.steps[index]
    runner = RUNNERS[type(step)]
    connection = getattr(step, "connection", None)
    profiles = frozenset().union(*profiles_by_job.values())
    swaps = {workflow.profiles[p].connections.get(connection) for p in profiles} - {None}
    resources = ({connection_key(wf, c) if c else WAREHOUSE_KEY for c in {connection, *swaps}}
                 if isinstance(step, spec.SqlStep | spec.AlarmStep | spec.PivotStep
                                 | spec.ConcatStep | spec.SyncStep | spec.ReportStep)
                 else set())
    if isinstance(step, spec.SyncStep) or (isinstance(step, spec.SqlStep) and step.into):
        resources |= {WAREHOUSE_KEY, STAGING_KEY}  # rows copied in through a staged file
    resources |= automation_steps.step_resources(wf, step)
    retry = step.retry or automation.retry
    defaults = {**workflow.workflow.params, **automation.params}
    config = {"params": dg.Field(dg.Permissive(), default_value=defaults, is_required=False,
                                 description="Parameters of this launch (defaults from the "
                                             "spec).")} if first else None

    @dg.op(name=f"{automation_name}__{step_name}", required_resource_keys=resources,
           retry_policy=_retry_policy(retry), config_schema=config,
           ins={"after": dg.In(dg.Nothing)} if first else {"state": dg.In(dict)},
           out=dg.Out(dict),
           description=step.description or f"Step {index + 1} of automation "
                                           f"`{automation_name}`: {step.kind}.",
           tags={"stagecoach/step_kind": step.kind})
    @ends_on_termination
    def _step(context, **inputs: Any) -> dict:
        _refuse_cancelled_retry(context)
        state = ({"params": dict(context.op_config["params"]), "files": []} if first
                 else inputs["state"])
        outcome = runner(context, workflow, _run_as(context, workflow, step, profiles_by_job),
                         state["params"], state["files"])
        context.add_output_metadata({"step": step_name, "kind": step.kind, **{
            k: v for k, v in outcome.items() if isinstance(v, int | float | str | bool)}})
        return {**state, "files": outcome.get("files", state["files"])}

    return _step


def _job_child_op(chain: str, child: str, target: ChildJob) -> dg.OpDefinition:
    """Runs a group's job as a chain's child: launched over GraphQL (tagged with the chain's
    run and partition), followed until it ends; a failed or cancelled child fails the chain,
    and a chain run that is terminated terminates its child."""

    @dg.op(name=f"{chain}__run_{child}", ins={"after": dg.In(dg.Nothing)}, out=dg.Out(dict),
           description=f"Runs job `{target.job}` and waits for it (child of chain `{chain}`).",
           tags={"stagecoach/step_kind": "job"})
    @ends_on_termination
    def _run_job(context) -> dict:
        from resources.dagster_runs import DagsterRuns, LaunchFailed

        scheduled = context.run.tags.get("dagster/scheduled_execution_time")
        partition = context.run.tags.get("dagster/partition") or target.partition(
            datetime.fromisoformat(scheduled) if scheduled else datetime.now(UTC))
        tags = {PARENT_RUN_TAG: context.run_id, TRIGGERED_BY_TAG: f"chain:{chain}",
                **({"dagster/partition": partition} if partition else {})}
        location = context.dagster_run.remote_job_origin
        if location is None:
            raise _final(f"step {context.op.name}: job `{target.job}` can only be launched "
                         "from a run the webserver or daemon started (not in-process)")
        runs = DagsterRuns(target.dagster_url(), location.location_name)
        try:
            run_id = runs.launch(target.job, tags, {})
        except LaunchFailed as refused:
            if refused.transient:  # the webserver unreachable: the step's retries may help
                raise RuntimeError(f"step {context.op.name}: could not reach Dagster to "
                                   f"launch `{target.job}`: {refused}") from None
            raise _final(f"step {context.op.name}: Dagster refused to launch "
                         f"`{target.job}`: {refused}") from None
        context.log.info(f"launched `{target.job}` run {run_id}"
                         + (f" for partition {partition}" if partition else ""))
        try:
            status = runs.wait(run_id, on_change=lambda now: context.log.info(
                f"`{target.job}` run {run_id}: {now.value}"))
        except BaseException:  # the chain was terminated (or lost the webserver): stop it too
            try:
                runs.terminate(run_id)
            except Exception as stuck:
                context.log.error(f"`{target.job}` run {run_id} could not be terminated "
                                  f"({type(stuck).__name__}: {stuck}); stop it from the UI")
            raise
        context.add_output_metadata({"child_run": run_id, "status": status.value,
                                     **({"partition": partition} if partition else {})})
        if status != dg.DagsterRunStatus.SUCCESS:
            raise _final(f"step {context.op.name}: `{target.job}` run {run_id} ended "
                         f"{status.value}; the chain stops")
        return {}

    return _run_job


def _paths(workflow: spec.Workflow) -> dict[str, dict[str, list[spec.Automation]]]:
    """Step automation → {automation whose job runs it (itself, or a chain) → the
    automations from that one down to it}. Run-as profiles and params follow these paths."""
    automations = workflow.automations
    paths: dict[str, dict[str, list[spec.Automation]]] = {
        name: {} for name, a in automations.items() if not a.chain}

    def walk(root: str, name: str, trail: list[spec.Automation]) -> None:
        automation = automations[name]
        trail = [*trail, automation]
        if not automation.chain:
            paths[name].setdefault(root, trail)
        for child in automation.chain:
            if child in automations:
                walk(root, child, trail)

    for root in automations:
        walk(root, root, [])
    return paths


def _mutex_of(name: str, paths: Mapping[str, Mapping[str, list[spec.Automation]]]
              ) -> str | None:
    """The mutex a job holds: the first along its paths, its own first (the loader refuses a
    chain over anything holding another one)."""
    return next((a.mutex for by_root in paths.values() for a in by_root.get(name, ())
                 if a.mutex), None)


def build_automations(workflow: spec.Workflow, child_jobs: Mapping[str, ChildJob]
                      ) -> AutomationBundle:
    """Every automation's job (steps chained in order; a chain's children in order or side
    by side) and schedule. A step's op is one definition, shared by its automation's job and
    by every chain that runs it."""
    wf = workflow.workflow.name
    paths = _paths(workflow)
    profiles = {leaf: {root: frozenset(a.run_as for a in trail if a.run_as)
                       for root, trail in by_root.items()} for leaf, by_root in paths.items()}
    ops = {name: [_step_op(workflow, name, automation, i, step_name, i == 0, profiles[name])
                  for i, step_name in enumerate(automation.step_names())]
           for name, automation in workflow.automations.items() if not automation.chain}

    jobs_run = {(chain, child): _job_child_op(chain, child, child_jobs[child])
                for chain, automation in workflow.automations.items()
                for child in automation.chain if child not in workflow.automations}

    def compose(name: str, after: list[Any], chain: str = "") -> list[Any]:
        """Invoke `name`'s ops after `after`; returns the outputs the next child waits on."""
        if name not in workflow.automations:  # a group's job, run by an op of its chain
            run_job = jobs_run[(chain, name)]
            return [run_job(after=after) if after else run_job()]
        automation = workflow.automations[name]
        if not automation.chain:
            first, *rest = ops[name]
            state = first(after=after) if after else first()
            for op in rest:
                state = op(state)
            return [state]
        if automation.mode == "parallel":
            return [done for child in automation.chain for done in compose(child, after, name)]
        for child in automation.chain:
            after = compose(child, after, name)
        return after

    bundle = AutomationBundle()
    for name, automation in workflow.automations.items():
        graph = dg.graph(name=f"{name}_chain")(_composer(compose, name))
        bundle.jobs.append(_automation_job(workflow, name, automation, graph, paths))
        if automation.schedule is not None:
            bundle.schedules.append(_schedule(workflow, name, automation, bundle.jobs[-1]))
    if workflow.automations:
        bundle.jobs.append(_cancel_retry_job(wf))
    return bundle


def _composer(compose: Callable[[str, list[Any]], list[Any]], name: str) -> Callable[[], None]:
    def _body() -> None:
        compose(name, [])

    return _body


def _automation_job(workflow: spec.Workflow, name: str, automation: spec.Automation,
                    graph: dg.GraphDefinition,
                    paths: Mapping[str, Mapping[str, list[spec.Automation]]]
                    ) -> dg.JobDefinition:
    wf = workflow.workflow.name
    tags = {"stagecoach/workflow": wf, AUTOMATION_TAG: name}
    if mutex := _mutex_of(name, paths):
        tags[MUTEX_TAG] = mutex
    owners = owners_of(workflow, automation)
    if automation.chain:
        joiner = " → " if automation.mode == "series" else " ∥ "
        summary = f"Chain `{name}` ({automation.mode}): " + joiner.join(automation.chain)
        metadata: dict[str, Any] = {"children": list(automation.chain),
                                    "mode": automation.mode}
    else:
        summary = f"Automation `{name}`: " + " → ".join(automation.step_names())
        metadata = {"steps": [f"{n} ({s.kind})" for n, s in zip(
            automation.step_names(), automation.steps, strict=True)]}
    if automation.run_as:
        metadata["run_as"] = automation.run_as
    description = automation.description or summary
    if not automation.enabled:
        metadata["enabled"] = False
        description = ("Disabled (its schedule is stopped; a manual launch still runs). "
                       + description)
    config = None
    if automation.chain:  # each chain's values override those of what it runs
        config = {"ops": {}}
        for leaf, trail in ((leaf, by_root[name]) for leaf, by_root in paths.items()
                            if name in by_root):
            params = dict(workflow.workflow.params)
            for step_automation in reversed(trail):  # the leaf first, this chain last
                params |= step_automation.params
            first = workflow.automations[leaf].step_names()[0]
            config["ops"][f"{leaf}__{first}"] = {"config": {"params": params}}
    return graph.to_job(
        name=automation_job_name(wf, name), tags=tags, config=config,
        description=description,
        metadata={**metadata, **({"owners": owners} if owners else {})})


def _schedule(workflow: spec.Workflow, name: str, automation: spec.Automation,
              job: dg.JobDefinition) -> dg.ScheduleDefinition:
    schedule = automation.schedule
    assert schedule is not None
    timezone = schedule.timezone or workflow.workflow.timezone
    enabled = automation.enabled and schedule.enabled
    schedule_name = f"{workflow.workflow.name}_{name}_schedule"
    tags = {TRIGGERED_BY_TAG: f"schedule:{schedule_name}"}
    if automation.run_as:
        tags[RUN_AS_TAG] = automation.run_as
    return dg.ScheduleDefinition(
        name=schedule_name, job=job, cron_schedule=schedule.cron, tags=tags,
        execution_timezone=timezone, description=f"{schedule.cron} ({timezone})"
        + (f", runs as {automation.run_as}" if automation.run_as else ""),
        default_status=dg.DefaultScheduleStatus.RUNNING if enabled
        else dg.DefaultScheduleStatus.STOPPED)


def _cancel_retry_job(wf: str) -> dg.JobDefinition:
    """Cancel-retry from the UI: launch this job with the run's id."""

    @dg.op(name=f"{wf}_cancel_retry", config_schema={
        "run_id": dg.Field(str, description="The run whose pending retries to cancel."),
        "by": dg.Field(str, default_value="the launchpad", description="Who cancels.")})
    def _cancel(context) -> None:
        context.log.info(request_cancel_retry(context.instance, context.op_config["run_id"],
                                              context.op_config["by"]))

    @dg.job(name=f"{wf}_cancel_retry_job", tags={"stagecoach/workflow": wf},
            description="Cancel-retry: the given run's steps waiting to retry fail at their "
                        "next attempt instead, and the run ends as failed (also `python -m "
                        "orchestration cancel-retry`).")
    def _job() -> None:
        _cancel()

    return _job
