"""The code location's one assembly point: workflow specs → one `dg.Definitions`.

Each workflow becomes its assets (one factory per spec part), its connections' resources and a
job that materialises the whole workflow; project-wide policy (resources shared by all, the
executor) is applied here once.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import dagster as dg

from assets import spec
from assets.activations import build_activation_asset
from assets.automations import ChildJob, build_automations
from assets.common import ARCHIVE_KEY, STAGING_KEY, WAREHOUSE_KEY, connection_key
from assets.couriers import build_courier_asset
from assets.feeds import build_domain_asset, domain_key
from assets.quality import build_quality_checks
from assets.resend import build_resend_job
from assets.sql_tables import build_database_assets, build_query_asset, table_key
from orchestration import settings
from orchestration.alert_channels import channel_factory
from orchestration.alert_channels import describe as describe_reporter
from orchestration.connections import resource_for
from orchestration.executors import executor_from_settings
from orchestration.spec_loader import LoadedWorkflow, load_workflows
from resources.folder import FolderResource
from resources.staging import StagingResource
from resources.warehouse import WarehouseResource
from sensors.alerts import Reporter, build_alert_sensors
from sensors.common import job_name
from sensors.groups import build_courier_group, build_orchestration_group, run_partition
from sensors.triggers import build_trigger_sensor


def workflow_job_name(workflow: str) -> str:
    return f"{workflow}_job"


def build_workflow_definitions(loaded: LoadedWorkflow, warehouse_kind: str = "duckdb"
                               ) -> dg.Definitions:
    """Everything one workflow spec describes."""
    workflow = loaded.spec
    name = workflow.workflow.name
    assets: list[dg.AssetsDefinition] = []
    assets += [build_courier_asset(workflow, n, c) for n, c in workflow.couriers.items()]
    assets += [build_domain_asset(workflow, n, t, warehouse_kind)
               for n, t in workflow.domain_tables.items()]
    for db, database in workflow.databases.items():
        assets += build_database_assets(workflow, db, database, warehouse_kind)
    assets += [build_query_asset(workflow, n, q, warehouse_kind)
               for n, q in workflow.queries.items()]
    assets += [build_activation_asset(workflow, n, a) for n, a in workflow.activations.items()]
    checks = [c for key, table, quality in quality_targets(workflow)
              for c in build_quality_checks(key, table, quality)]
    job = dg.define_asset_job(
        workflow_job_name(name),
        selection=dg.AssetSelection.groups(name),
        description=workflow.workflow.description or f"The whole `{name}` workflow.",
        tags={"stagecoach/workflow": name},
    )
    resources = {connection_key(name, c): resource_for(conn, c)
                 for c, conn in workflow.connections.items()}
    jobs: list = [job] if assets else []
    if resend := build_resend_job(workflow):
        jobs.append(resend)
    schedules, sensors = [], []
    courier_jobs = {}
    for group_name, group in workflow.courier_groups.items():
        bundle = build_courier_group(workflow, group_name, group)
        courier_jobs |= {j.name: j for j in bundle.jobs}
        jobs, schedules, sensors = (jobs + bundle.jobs, schedules + bundle.schedules,
                                    sensors + bundle.sensors)
    for group_name, group in workflow.orchestration_groups.items():
        bundle = build_orchestration_group(workflow, group_name, group, courier_jobs)
        jobs, schedules, sensors = (jobs + bundle.jobs, schedules + bundle.schedules,
                                    sensors + bundle.sensors)
    automations = build_automations(workflow, {
        group: ChildJob(job_name(name, group), partial(run_partition, workflow, group),
                        settings.dagster_url)
        for group in [*workflow.courier_groups, *workflow.orchestration_groups]})
    jobs, schedules = jobs + automations.jobs, schedules + automations.schedules
    groups = {**workflow.courier_groups, **workflow.orchestration_groups}
    for trigger_name, trigger in workflow.triggers.items():
        target = groups.get(trigger.job)
        sensor = build_trigger_sensor(workflow, trigger_name, trigger,
                                      target.concurrency if target else "queue")
        sensors += [sensor] if sensor else []
    sensors += build_alert_sensors(workflow, reporters_of(workflow), jobs,
                                   instigator_jobs(schedules, sensors), settings.run_url).sensors
    return dg.Definitions(assets=assets, asset_checks=checks, jobs=jobs, schedules=schedules,
                          sensors=sensors, resources=resources)


def quality_targets(workflow: spec.Workflow) -> list[tuple[dg.AssetKey, str, list]]:
    """(asset key, warehouse table, its `quality:` checks) of every table that has some."""
    targets = [(domain_key(n), f"domain.{n}", t.quality)
               for n, t in workflow.domain_tables.items()]
    targets += [(table_key(f"{db}.{t}"), f"{db}.{t}", table.quality)
                for db, database in workflow.databases.items()
                for t, table in database.tables.items()]
    targets += [(table_key(f"query.{n}"), f"query.{n}", q.quality)
                for n, q in workflow.queries.items()]
    return [target for target in targets if target[2]]


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


def instigator_jobs(schedules: list[dg.ScheduleDefinition], sensors: list[dg.SensorDefinition]
                    ) -> dict[str, str | None]:
    """Schedule and sensor names → the job each launches (None: none or several)."""
    found: dict[str, str | None] = {s.name: s.job_name for s in schedules}
    for sensor in sensors:
        targets = {t.job_name for t in sensor.targets}
        found[sensor.name] = targets.pop() if len(targets) == 1 else None
    return found


def shared_resources() -> dict[str, dg.ConfigurableResource]:
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
    with _collection_paused():
        workflows = [build_workflow_definitions(w, kind) for w in load_workflows(target)]
        return dg.Definitions.merge(
            *workflows,
            # STAGECOACH_EXECUTOR: in process by default (~70 ms a step, DuckDB's one writer).
            dg.Definitions(resources=shared_resources(), executor=executor_from_settings()),
        )


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
    return build_definitions()
