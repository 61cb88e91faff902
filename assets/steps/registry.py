"""The registry of step kinds: each spec model tied to its runner, the connection kinds its
`connection:` may name and the resources it needs. A new kind is its model (assets/spec/
automations.py), its runner module here and one entry below."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dagster as dg

from assets import spec
from assets.names import STAGING_KEY, WAREHOUSE_KEY, connection_key
from assets.registry import Entry, Registry
from assets.steps.deliver import deliver_resources, run_deliver
from assets.steps.queries import step_resources, without_file_access_when_fetched
from assets.steps.report import run_report
from assets.steps.scripts import run_python, run_ssh
from assets.steps.sql import run_alarm, run_sql, run_sync
from assets.steps.tables import run_concat, run_etl, run_pivot


@dataclass(frozen=True)
class StepKind:
    """What a step kind is made of besides its spec model: how it runs, which connection kinds
    its `connection:` may name (none: it takes no connection) and the resources it needs."""

    run: Callable[..., dict[str, Any]]
    connections: tuple[str, ...] = ()
    resources: Callable[[spec.Workflow, Any, frozenset[str]], set[str]] = (
        lambda workflow, step, profiles: set())


def _database_resources(workflow: spec.Workflow, step: Any, profiles: frozenset[str]
                        ) -> set[str]:
    """The step's SQL connection (or the warehouse) and, for each run profile the step may run
    as, that profile's connection; plus the query source, staging area or report file."""
    wf, connection = workflow.workflow.name, getattr(step, "connection", None)
    keys = {WAREHOUSE_KEY}
    if connection:
        swaps = {workflow.profiles[p].connections.get(connection) for p in profiles} - {None}
        keys = {connection_key(wf, c) for c in {connection, *swaps} if c}
    return keys | step_resources(wf, step)


def _copying_resources(workflow: spec.Workflow, step: Any, profiles: frozenset[str]
                       ) -> set[str]:
    """Rows copied into the warehouse go through a staged file."""
    keys = _database_resources(workflow, step, profiles)
    return keys | {WAREHOUSE_KEY, STAGING_KEY} if getattr(step, "into", True) else keys


def _sql(context: dg.OpExecutionContext, workflow: spec.Workflow, step: spec.SqlStep,
         params: dict[str, Any], files: list[str]) -> dict[str, Any]:
    return run_sql(context, workflow.workflow.name, step, params)


def _alarm(context: dg.OpExecutionContext, workflow: spec.Workflow, step: spec.AlarmStep,
           params: dict[str, Any], files: list[str]) -> dict[str, Any]:
    return run_alarm(context, workflow.workflow.name, step, params)


STEPS: Registry[StepKind] = Registry("automation step", spec.Step, [
    Entry(spec.SqlStep, StepKind(without_file_access_when_fetched(_sql), ("sql",),
                                 _copying_resources)),
    Entry(spec.AlarmStep, StepKind(without_file_access_when_fetched(_alarm), ("sql",),
                                   _database_resources)),
    Entry(spec.SyncStep, StepKind(run_sync, ("sql",), _copying_resources)),
    Entry(spec.PivotStep, StepKind(run_pivot, (), _database_resources)),
    Entry(spec.ConcatStep, StepKind(run_concat, (), _database_resources)),
    Entry(spec.EtlStep, StepKind(run_etl, (), _database_resources)),
    Entry(spec.ReportStep, StepKind(run_report, ("sql",),
                                    _database_resources)),
    Entry(spec.PythonStep, StepKind(run_python)),
    Entry(spec.SshStep, StepKind(run_ssh, ("sftp",))),
    Entry(spec.DeliverStep, StepKind(run_deliver, (), deliver_resources)),
])

