"""What every asset factory shares: names, resource keys, the run's template context."""

import functools
import inspect
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import dagster as dg

from assets import spec
from assets.names import (
    ARCHIVE_KEY,
    PARTITION_TAG,
    RUN_DAY_TAG,
    SCHEDULED_TIME_TAG,
    connection_key,
)
from assets.templating import date_context, logical_date
from assets.webhook_params import ParamError, run_params
from resources.retries import not_retried_reason, step_may_retry

Compute = TypeVar("Compute", bound=Callable[..., Any])


def signed(compute: Compute) -> Compute:
    """`compute` with its signature set on it (`__signature__`, which `inspect.signature` and
    Dagster read first): Dagster inspects an asset's function about 17 times while it builds
    the asset, and each inspection of a plain function builds its signature again (~7 µs, about
    0.4 s of CPU for 3,600 assets). The signature is the one `inspect.signature` finds, computed
    once per function definition: the closures of one `def` share its code, and their defaults
    and annotations are part of the key."""
    key = (compute.__code__, compute.__defaults__, _frozen(compute.__kwdefaults__),
           _frozen(compute.__annotations__))
    try:
        signature = _SIGNATURES.get(key)
    except TypeError:  # an annotation that does not hash: inspected as is, not shared
        return compute
    if signature is None:
        signature = _SIGNATURES[key] = inspect.signature(compute)
    compute.__signature__ = signature  # type: ignore[attr-defined]
    return compute


# Signatures by function definition: one per `def` of an asset body, so few.
_SIGNATURES: dict[tuple, inspect.Signature] = {}


def _frozen(mapping: dict[str, Any] | None) -> tuple | None:
    return None if mapping is None else tuple(mapping.items())


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
    return _daily(info.start_date.isoformat(), info.timezone)


@functools.lru_cache(maxsize=256)
def _daily(start_date: str, timezone: str) -> dg.DailyPartitionsDefinition:
    """The same (immutable) definition for every dated asset of a workflow: built once, not
    once per asset (it parses its dates and time zone; ~0.1 s for 1,000 couriers)."""
    return dg.DailyPartitionsDefinition(start_date=start_date, timezone=timezone)


def template_context(context: dg.AssetExecutionContext, workflow: spec.Workflow
                     ) -> dict[str, Any]:
    """Date macros from the run's partition, else the schedule tick, else today in the workflow's
    time zone; plus the workflow's params (a webhook launch's declared params over them) and the
    run id."""
    info = workflow.workflow
    # The run's day as its launcher resolved it (assets/run_day.py): partition, day tag, tick.
    partition = context.run.tags.get(PARTITION_TAG) or context.run.tags.get(RUN_DAY_TAG)
    scheduled = context.run.tags.get(SCHEDULED_TIME_TAG)
    day = logical_date(partition, scheduled, datetime.now(ZoneInfo(info.timezone)))
    try:
        params = run_params(workflow, context.run.tags)
    except ParamError as bad:
        raise dg.Failure(f"workflow {info.name}: {bad}", allow_retries=False) from None
    return {**date_context(day, params), "run_id": context.run_id, "workflow": info.name}


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
    """This asset's partition; None for an unpartitioned asset even inside a dated run.

    A dated asset in a run without a partition (a GraphQL launch without the
    `dagster/partition` tag, on an instance without Stagecoach's run coordinator, which would
    have added it) stops before it touches anything: loading it undated would replace every
    day's rows with one file's.
    """
    if context.assets_def.partitions_def is None:
        return None
    if not context.has_partition_key:
        raise dg.Failure(
            f"{context.asset_key.to_user_string()} is dated (one partition per day) but run "
            f"{context.run_id} has no partition. Launch it with the tag "
            f"{PARTITION_TAG}=YYYY-MM-DD (the rule's day is the last complete day), pick a "
            "partition in the UI, or use `python -m orchestration run JOB`, which resolves it.",
            allow_retries=False)
    return context.partition_key


# Couriers' and activations' steps: what the connections do not retry themselves (an unexpected
# error, a lost warehouse connection mid-write) gets 2 more tries, 2 s then 4 s later. Faults a
# connection retried, and permanent refusals, skip it (`ends_on_termination`; docs/retries.md).
STEP_RETRY_POLICY = dg.RetryPolicy(max_retries=2, delay=2, backoff=dg.Backoff.EXPONENTIAL)


def ends_on_termination(compute: Compute) -> Compute:
    """For a step with a retry policy: Dagster retries a step interrupted by its run's
    termination, so the run would go on. Here the interruption ends the step for good, and a
    step starting once the run is being terminated does not run; the run then ends CANCELED.

    It also keeps the retry layers apart (docs/retries.md): an error a connection judged
    permanent, or already retried up to its budget, ends the step without the RetryPolicy.
    """

    @functools.wraps(compute)
    def _compute(context: Any, *args: Any, **kwargs: Any) -> Any:
        run = context.instance.get_run_by_id(context.run_id)
        if run is not None and run.status == dg.DagsterRunStatus.CANCELING:
            raise _terminated()
        try:
            return compute(context, *args, **kwargs)
        except (dg.DagsterExecutionInterruptedError, KeyboardInterrupt):
            raise _terminated() from None
        except dg.Failure:
            raise
        except Exception as failed:
            if step_may_retry(failed):
                raise
            raise dg.Failure(f"{failed} ({not_retried_reason(failed)})",
                             allow_retries=False) from failed

    return _compute  # type: ignore[return-value]


def _terminated() -> dg.Failure:
    return dg.Failure("the run is being terminated: this step stops and is not retried",
                      allow_retries=False)
