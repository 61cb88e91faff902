"""The code location's one assembly point: workflow specs → one `dg.Definitions`.

Each family's factory (couriers, feeds, identity, SQL tables, quality, activations, file
history, connections, groups, automations, triggers, alerts) returns the `dg.Definitions` of
what it owns in one workflow; this module merges them, adds the job that materialises the whole
workflow, and applies project-wide policy once (resources shared by all, the executor).
"""

import gc
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import dagster as dg

from assets import spec
from assets.activations import activation_definitions
from assets.automations import ChildJob, automation_definitions
from assets.couriers import courier_definitions
from assets.feeds import domain_definitions
from assets.identity.asset import identity_definitions
from assets.names import (
    ARCHIVE_KEY,
    STAGING_KEY,
    WAREHOUSE_KEY,
    WORKFLOW_JOB,
    WORKFLOW_TAG,
    job_name,
    workflow_job_name,
)
from assets.quality import quality_definitions
from assets.resend import resend_definitions
from assets.run_day import run_partition
from assets.sql_tables import sql_table_definitions
from assets.webhook_params import webhook_job_args
from orchestration.alert_channels import channel_factory
from orchestration.alert_channels import describe as describe_reporter
from orchestration.connections import connection_definitions
from orchestration.executors import executor_from_settings
from orchestration.spec_loader import LoadedWorkflow, load_workflows
from resources import settings
from resources.connections.folder import FolderResource
from resources.staging import StagingResource
from resources.warehouse import WarehouseResource
from sensors.alert_ledger import AlertLedger, warehouse_ledger
from sensors.alerts import Reporter, alert_definitions
from sensors.groups import group_definitions
from sensors.triggers import trigger_definitions


def build_workflow_definitions(loaded: LoadedWorkflow, warehouse_kind: str = "duckdb"
                               ) -> dg.Definitions:
    """Everything one workflow spec describes: the families' Definitions, merged.

    The alerts come last: their sensors follow the jobs, schedules, sensors and assets the
    other families built."""
    workflow = loaded.spec
    assets = dg.Definitions.merge(
        courier_definitions(workflow),
        domain_definitions(workflow, warehouse_kind),
        identity_definitions(workflow, warehouse_kind),
        sql_table_definitions(workflow, warehouse_kind),
        activation_definitions(workflow),
    )
    built = dg.Definitions.merge(
        assets,
        quality_definitions(workflow),
        connection_definitions(workflow),
        workflow_job_definitions(workflow, has_assets=bool(assets.assets)),
        resend_definitions(workflow),
        group_definitions(workflow),
        automation_definitions(workflow, child_jobs(workflow)),
        trigger_definitions(workflow),
    )
    return dg.Definitions.merge(built, alert_definitions(
        workflow, reporters_of(workflow), built, settings.run_url, alert_ledger))


def workflow_job_definitions(workflow: spec.Workflow, has_assets: bool) -> dg.Definitions:
    """The job that materialises the whole workflow (its group), when it has assets."""
    name = workflow.workflow.name
    if not has_assets:
        return dg.Definitions()
    return dg.Definitions(jobs=[dg.define_asset_job(
        workflow_job_name(name),
        selection=dg.AssetSelection.groups(name),
        **webhook_job_args(workflow, WORKFLOW_JOB, workflow.workflow.description
                           or f"The whole `{name}` workflow.", {WORKFLOW_TAG: name}),
    )])


def child_jobs(workflow: spec.Workflow) -> dict[str, ChildJob]:
    """The groups' jobs a chain automation may run, launched through the webserver."""
    name = workflow.workflow.name
    return {group: ChildJob(job_name(name, group), partial(run_partition, workflow, group),
                            settings.dagster_url)
            for group in [*workflow.courier_groups, *workflow.orchestration_groups]}


def reporters_of(workflow: spec.Workflow) -> list[Reporter]:
    """The workflow's `alerts:` entries, each with the job names it follows."""
    name = workflow.workflow.name
    return [Reporter(
        name=reporter, events=frozenset(alert.events),
        jobs=frozenset(job_name(name, j) for j in alert.jobs) if alert.jobs else None,
        templates={e: t.model_dump(exclude_none=True) for e, t in alert.templates.items()},
        make_channel=channel_factory(workflow, reporter, alert, settings.warehouse_url),
        description=describe_reporter(reporter, alert),
        records_runs=isinstance(alert, spec.DatasetAlert),
    ) for reporter, alert in workflow.alerts.items()]


def alert_ledger() -> AlertLedger:
    """The alert ledger in the warehouse, as STAGECOACH_WAREHOUSE_URL names it when asked."""
    return warehouse_ledger(settings.warehouse_url())


def shared_resources() -> dict[str, dg.ConfigurableResource]:
    """The resources every workflow shares: warehouse, staging and the default archive."""
    url = (dg.EnvVar(settings.WAREHOUSE_URL_ENV) if settings.warehouse_url_from_env()
           else settings.default_warehouse_url())
    return {WAREHOUSE_KEY: WarehouseResource(url=url),
            STAGING_KEY: StagingResource(data_dir=str(settings.data_dir())),
            ARCHIVE_KEY: FolderResource(path=str(settings.archive_dir()))}


def build_definitions(target: Path | None = None) -> dg.Definitions:
    """Load and validate every workflow, then build the code location's Definitions.

    A bad spec raises `SpecInvalid` listing every error, so the location refuses to load.
    """
    kind = settings.warehouse_kind()
    with _collection_paused(), warnings.catch_warnings():
        # Owners on schedules and sensors are a beta parameter of 1.13, used on purpose: the
        # UI shows them. One warning per definition would bury the load's own messages.
        warnings.filterwarnings("ignore", message="Parameter `owners`", category=dg.BetaWarning)
        workflows = [build_workflow_definitions(w, kind) for w in load_workflows(target)]
        return dg.Definitions.merge(
            *workflows,
            # STAGECOACH_EXECUTOR: in process by default (~70 ms a step, DuckDB's one writer).
            dg.Definitions(resources=shared_resources(), executor=executor_from_settings()),
        )


def load_code_location(target: Path | None = None) -> dg.Definitions:
    """What the code server loads: `build_definitions`, its repository resolved too before the
    garbage collector runs again, then everything alive set aside from the collector's passes.

    Dagster caches the resolved repository on the Definitions, and the code server's own
    resolution reads that cache. The definitions live as long as the process (a reload starts
    a new code server), so scanning them again at every full collection is pure cost (the
    collector's passes were 1.6 s of a profiled 1,000-courier resolution). `gc.freeze` is for
    that.
    Tests call `build_definitions`, which freezes nothing: their many builds stay collectable.
    A process that loads again (a worker loading per task) first unfreezes and collects, so
    the garbage of its earlier loads is freed, not kept frozen for ever.
    """
    if gc.get_freeze_count():
        gc.unfreeze()
        gc.collect()
    with _collection_paused():
        built = build_definitions(target)
        built.resolve_asset_graph()
        gc.freeze()
    return built


@contextmanager
def _collection_paused() -> Iterator[None]:
    """Building thousands of definitions allocates long-lived objects only: the garbage
    collector's passes over them are pure cost (about a third of a 1,000-courier load), so it
    waits until the build is done."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@dg.definitions
def defs() -> dg.Definitions:
    """The code location Dagster loads."""
    return load_code_location()
