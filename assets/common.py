"""What every asset factory shares: names, resource keys, the run's template context."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import dagster as dg

from assets import spec
from assets.templating import date_context, logical_date

WAREHOUSE_KEY = "warehouse"
STAGING_KEY = "staging"
ARCHIVE_KEY = "archive"  # the default archive of delivered files, shared by all workflows
MISSING_FILES_TAG = "stagecoach/missing_files"  # files a run went on without (notify & continue)
OPTIONAL_COURIERS_TAG = "stagecoach/optional_couriers"  # couriers that may find no file this run
REDELIVER_TAG = "stagecoach/redeliver"  # "true": send even what the ledger shows as delivered
SCHEDULED_TIME_TAG = "dagster/scheduled_execution_time"
PARTITION_TAG = "dagster/partition"
Compute = TypeVar("Compute", bound=Callable[..., Any])


def connection_key(workflow: str, connection: str) -> str:
    """Resource key of a workflow's connection: workflows may reuse connection names."""
    return f"{workflow}__{connection}"


def archive_key(workflow: spec.Workflow) -> str:
    """Resource key of the workflow's archive: its own connection, or the shared default."""
    archive = workflow.workflow.archive
    return connection_key(workflow.workflow.name, archive) if archive else ARCHIVE_KEY


def owners_of(workflow: spec.Workflow, *items: Any) -> list[str]:
    """The owners of the most specific item that names some, else the workflow's."""
    for item in items:
        if getattr(item, "owners", None):
            return list(item.owners)
    return list(workflow.workflow.owners)


def partitions_for(workflow: spec.Workflow) -> dg.DailyPartitionsDefinition | None:
    """One daily partitioning per workflow, so its dated assets share one job."""
    info = workflow.workflow
    if info.start_date is None:
        return None
    return dg.DailyPartitionsDefinition(start_date=info.start_date.isoformat(),
                                        timezone=info.timezone)


def template_context(context: dg.AssetExecutionContext, workflow: spec.Workflow
                     ) -> dict[str, Any]:
    """Date macros from the run's partition, else the schedule tick, else today in the workflow's
    time zone; plus the workflow's params and the run id."""
    info = workflow.workflow
    partition = context.run.tags.get(PARTITION_TAG)
    scheduled = context.run.tags.get(SCHEDULED_TIME_TAG)
    day = logical_date(partition, scheduled, datetime.now(ZoneInfo(info.timezone)))
    return {**date_context(day, info.params), "run_id": context.run_id,
            "workflow": info.name}


def markdown_table(names: list[str], rows: list[tuple]) -> str:
    """A small markdown table for metadata previews (cells escaped, long values cut)."""
    def cell(value: Any) -> str:
        text = "" if value is None else str(value)
        text = text.replace("|", "\\|").replace("\n", " ")
        return text if len(text) <= 60 else text[:57] + "..."

    lines = ["| " + " | ".join(map(cell, names)) + " |", "|" + "---|" * len(names)]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
    return "\n".join(lines)


def asset_partition(context: dg.AssetExecutionContext) -> str | None:
    """This asset's partition; None for an unpartitioned asset even inside a dated run."""
    if context.assets_def.partitions_def is None or not context.has_partition_key:
        return None
    return context.partition_key


def ends_on_termination(compute: Compute) -> Compute:
    """For a step with a retry policy: Dagster retries a step interrupted by its run's
    termination, so the run would go on. Here the interruption ends the step for good, and a
    step starting once the run is being terminated does not run; the run then ends CANCELED."""

    @functools.wraps(compute)
    def _compute(context: Any, *args: Any, **kwargs: Any) -> Any:
        run = context.instance.get_run_by_id(context.run_id)
        if run is not None and run.status == dg.DagsterRunStatus.CANCELING:
            raise _terminated()
        try:
            return compute(context, *args, **kwargs)
        except (dg.DagsterExecutionInterruptedError, KeyboardInterrupt):
            raise _terminated() from None

    return _compute  # type: ignore[return-value]


def _terminated() -> dg.Failure:
    return dg.Failure("the run is being terminated: this step stops and is not retried",
                      allow_retries=False)
