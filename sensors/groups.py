"""Courier groups and orchestration groups: each becomes a job, its schedule, and the sensors
that apply its policies (missing files, run-after, one run at a time).

A courier group's schedule looks for the group's files before it asks for a run: with
`notify_and_stop` a missing file means no run (the tick names the files), with
`notify_and_continue` the run goes on without them (the run's tags name them); `wait` replaces
the schedule by a sensor that looks again until the files are there and stable, or a deadline.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import dagster as dg
from dagster._utils.schedules import get_latest_completed_cron_tick

from assets import spec
from assets.activations import activation_key
from assets.common import connection_key
from assets.couriers import courier_key
from assets.feeds import domain_key
from assets.sql_tables import table_key
from sensors.common import (
    DURATION_ALERT_TAG,
    MISSING_FILES_TAG,
    OPTIONAL_COURIERS_TAG,
    TRIGGER_TAG,
    concurrency_gate,
    job_name,
    schedule_name,
    serial_tags,
    stopped_for_missing,
)
from sensors.missing_files import describe_missing, expected_files, look


@dataclass
class GroupBundle:
    """What one group contributes to the code location."""

    jobs: list[dg.UnresolvedAssetJobDefinition] = field(default_factory=list)
    schedules: list[dg.ScheduleDefinition] = field(default_factory=list)
    sensors: list[dg.SensorDefinition] = field(default_factory=list)


def _status(enabled: bool) -> dg.DefaultScheduleStatus:
    return dg.DefaultScheduleStatus.RUNNING if enabled else dg.DefaultScheduleStatus.STOPPED


def _sensor_status(enabled: bool) -> dg.DefaultSensorStatus:
    return dg.DefaultSensorStatus.RUNNING if enabled else dg.DefaultSensorStatus.STOPPED


def _job_tags(workflow: str, group: str, job: str, concurrency: str,
              duration_alert: str | None) -> dict[str, str]:
    tags = {"stagecoach/workflow": workflow, "stagecoach/group": group,
            **serial_tags(job, concurrency)}
    if duration_alert:
        tags[DURATION_ALERT_TAG] = str(spec.seconds_of(duration_alert))
    return tags


def _run_day(workflow: spec.Workflow, partitioned: bool, tick: datetime) -> tuple[str | None,
                                                                                   datetime]:
    """(partition key, logical day as a datetime) of a run asked for at `tick`.

    A dated job loads the last complete day (a 02:00 tick loads yesterday's files, whose day is
    over); an undated one renders its names with the tick's own day.
    """
    info = workflow.workflow
    local = tick.astimezone(ZoneInfo(info.timezone))
    if not partitioned:
        return None, local
    day = local.date() - timedelta(days=1)  # daily partitions: the last complete day
    if info.start_date is not None and day < info.start_date:
        return None, local
    return day.isoformat(), datetime(day.year, day.month, day.day, tzinfo=local.tzinfo)


def group_partitioned(workflow: spec.Workflow, name: str) -> bool:
    """Whether a group's job is daily-partitioned: it loads or delivers a dated courier."""
    if name in workflow.courier_groups:
        return any(workflow.couriers[c].dated for c in workflow.courier_groups[name].couriers)
    return any(workflow.activations[a].courier and
               workflow.couriers[workflow.activations[a].courier or ""].dated
               for a in workflow.orchestration_groups[name].activations)


def run_partition(workflow: spec.Workflow, name: str, tick: datetime) -> str | None:
    """The partition a run of group `name` asked for at `tick` loads (as its schedule's)."""
    return _run_day(workflow, group_partitioned(workflow, name), tick)[0]


# ---------------------------------------------------------------- courier groups


def courier_group_selection(workflow: spec.Workflow, group: spec.CourierGroup
                            ) -> dg.AssetSelection:
    """Load: the couriers and the domain tables they feed; build: and everything downstream
    but activations; activate: and the activations too."""
    keys = [courier_key(c) for c in group.couriers]
    keys += [domain_key(t) for t, table in workflow.domain_tables.items()
             if table.from_ in group.couriers]
    loaded = dg.AssetSelection.assets(*keys)
    if group.run == "load":
        return loaded
    if group.run == "load_and_build":
        return loaded.downstream() - dg.AssetSelection.key_prefixes(["activation"])
    return loaded.downstream()


def build_courier_group(workflow: spec.Workflow, name: str, group: spec.CourierGroup
                        ) -> GroupBundle:
    wf = workflow.workflow.name
    job = job_name(wf, name)
    partitioned = group_partitioned(workflow, name)
    bundle = GroupBundle(jobs=[dg.define_asset_job(
        job, selection=courier_group_selection(workflow, group),
        description=group.description or (
            f"Courier group `{name}`: {group.run.replace('_', ' ')} for "
            f"{', '.join(group.couriers)} (missing files: {group.missing_files})."),
        tags=_job_tags(wf, name, job, group.concurrency, group.duration_alert))])
    file_keys = {connection_key(wf, workflow.couriers[c].from_) for c in group.couriers
                 if workflow.couriers[c].path is not None}
    if group.schedule is None:
        return bundle
    timezone = group.schedule.timezone or workflow.workflow.timezone
    if group.missing_files == "wait":
        bundle.sensors.append(_wait_sensor(workflow, name, group, job, partitioned, file_keys))
        return bundle

    @dg.schedule(cron_schedule=group.schedule.cron, execution_timezone=timezone, job_name=job,
                 name=schedule_name(wf, name), default_status=_status(
                     group.enabled and group.schedule.enabled),
                 required_resource_keys=file_keys,
                 description=f"{group.schedule.cron} ({timezone}); looks for the group's files "
                             f"first (missing files: {group.missing_files}).")
    def _schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        if skip := concurrency_gate(context, job, group.concurrency):
            return skip
        tick = context.scheduled_execution_time or datetime.now(ZoneInfo(timezone))
        partition, day = _run_day(workflow, partitioned, tick)
        expected = expected_files(workflow, group.couriers, day.date())
        missing = describe_missing(expected, look(workflow, expected, context.resources))
        tags = {TRIGGER_TAG: f"schedule {schedule_name(wf, name)}"}
        stopping = [m for m in missing if _policy(workflow, group, m) == "notify_and_stop"]
        if stopping:
            return dg.SkipReason(stopped_for_missing(missing))
        if missing:
            tags |= _missing_tags(missing)
        return dg.RunRequest(partition_key=partition, tags=tags)

    bundle.schedules.append(_schedule)
    return bundle


def _policy(workflow: spec.Workflow, group: spec.CourierGroup, missing: str) -> str:
    """The missing-file policy of the courier a `describe_missing` line names."""
    courier = workflow.couriers[missing.split(":", 1)[0]]
    return courier.missing_files or group.missing_files


def _missing_tags(missing: list[str]) -> dict[str, str]:
    return {MISSING_FILES_TAG: "; ".join(missing)[:1000],
            OPTIONAL_COURIERS_TAG: ",".join(m.split(":", 1)[0] for m in missing)}


def _wait_sensor(workflow: spec.Workflow, name: str, group: spec.CourierGroup, job: str,
                 partitioned: bool, file_keys: set[str]) -> dg.SensorDefinition:
    """Amperity's "wait for missing files", one window per scheduled time.

    Each tick lists every folder once; the run starts when every courier has its files and
    none of them changed size or mtime since the previous look (a file still being written is
    not taken), or when the deadline passes (then the follow-up policy applies). The cursor
    keeps the window and the last look, never a clock time; the run key makes one run per
    window even if the cursor were lost.
    """
    wf = workflow.workflow.name
    assert group.wait is not None and group.schedule is not None
    wait, schedule = group.wait, group.schedule
    timezone = schedule.timezone or workflow.workflow.timezone

    @dg.sensor(name=f"{wf}_{name}_missing_files_sensor", job_name=job,
               minimum_interval_seconds=spec.seconds_of(wait.every),
               default_status=_sensor_status(group.enabled and schedule.enabled),
               required_resource_keys=file_keys,
               description=f"Runs `{job}` after each {schedule.cron} ({timezone}) once the "
                           f"group's files are there and stable; waits up to {wait.up_to}, "
                           f"then {wait.then.replace('_', ' ')}.")
    def _sensor(context: dg.SensorEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        now = datetime.now(ZoneInfo(timezone))
        tick = get_latest_completed_cron_tick(schedule.cron, now, timezone)
        deadline = tick + timedelta(seconds=spec.seconds_of(wait.up_to))
        state = json.loads(context.cursor) if context.cursor else {}
        window = tick.isoformat()
        if state.get("window") != window:
            if not state and now >= deadline:  # first look ever, after this window closed
                context.update_cursor(json.dumps({"window": window, "done": "before start"}))
                return dg.SkipReason(f"the {window} window closed before this sensor started")
            state = {"window": window, "look": {}}
        if state.get("done"):
            return dg.SkipReason(f"the {window} window is done ({state['done']}); next: the "
                                 f"next {schedule.cron} tick")
        partition, day = _run_day(workflow, partitioned, tick)
        expected = expected_files(workflow, group.couriers, day.date())
        found = look(workflow, expected, context.resources)
        current = {f.path: [f.size, f.mtime] for files in found.values() for f in files}
        growing = sorted(p for p, seen in current.items() if state["look"].get(p) != seen)
        missing = describe_missing(expected, found)
        # Couriers allowed to go on without their file are not waited for.
        awaited = [m for m in missing if _policy(workflow, group, m) != "notify_and_continue"]
        state["look"] = current
        request = None
        run_key = f"{job}:{window}"
        tags = {TRIGGER_TAG: f"{wf}_{name}_missing_files_sensor"}
        if not awaited and not growing:
            state["done"] = "launched"
            request = dg.RunRequest(run_key=run_key, partition_key=partition,
                                    tags=tags | (_missing_tags(missing) if missing else {}))
        elif now >= deadline and wait.then == "notify_and_continue":
            state["done"] = "deadline passed: went on without " + "; ".join(missing)
            request = dg.RunRequest(run_key=run_key, partition_key=partition,
                                    tags=tags | _missing_tags(missing))
        elif now >= deadline:
            state["done"] = "deadline passed: stopped"
        if request is not None and (skip := concurrency_gate(context, job, group.concurrency)):
            state.pop("done")  # not launched: the next tick tries again
            context.update_cursor(json.dumps(state))
            return skip
        context.update_cursor(json.dumps(state))
        if request is not None:
            return request
        if state.get("done"):
            return dg.SkipReason(stopped_for_missing(missing, at_deadline=True))
        waiting = [*missing, *(f"{p} (new or still being written: looking again)"
                               for p in growing)]
        return dg.SkipReason(f"waiting until {deadline:%Y-%m-%d %H:%M %Z} for: "
                             f"{'; '.join(waiting)}")

    return _sensor


# ---------------------------------------------------------------- orchestration groups


def orchestration_group_selection(group: spec.OrchestrationGroup, workflow: spec.Workflow
                                  ) -> dg.AssetSelection:
    keys = [activation_key(a) for a in group.activations]
    keys += [table_key(f"query.{q}") for q in group.queries]
    keys += [table_key(f"{db}.{t}") for db in group.databases
             for t in workflow.databases[db].tables]
    return dg.AssetSelection.assets(*keys)


def build_orchestration_group(workflow: spec.Workflow, name: str,
                              group: spec.OrchestrationGroup,
                              upstream_jobs: dict[str, dg.UnresolvedAssetJobDefinition]
                              ) -> GroupBundle:
    wf = workflow.workflow.name
    job_def = dg.define_asset_job(
        job_name(wf, name), selection=orchestration_group_selection(group, workflow),
        description=group.description or (
            f"Orchestration group `{name}`: {', '.join(group.activations)}" +
            (f", after courier group `{group.after}`" if group.after else "") + "."),
        tags=_job_tags(wf, name, job_name(wf, name), group.concurrency, group.duration_alert))
    bundle = GroupBundle(jobs=[job_def])
    job = job_name(wf, name)
    partitioned = group_partitioned(workflow, name)
    if group.schedule is not None:
        timezone = group.schedule.timezone or workflow.workflow.timezone

        @dg.schedule(cron_schedule=group.schedule.cron, execution_timezone=timezone,
                     job_name=job, name=schedule_name(wf, name),
                     default_status=_status(group.enabled and group.schedule.enabled),
                     description=f"{group.schedule.cron} ({timezone})")
        def _schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
            if skip := concurrency_gate(context, job, group.concurrency):
                return skip
            tick = context.scheduled_execution_time or datetime.now(ZoneInfo(timezone))
            partition, _ = _run_day(workflow, partitioned, tick)
            return dg.RunRequest(partition_key=partition,
                                 tags={TRIGGER_TAG: f"schedule {schedule_name(wf, name)}"})

        bundle.schedules.append(_schedule)
    if group.after is not None:
        upstream = upstream_jobs[job_name(wf, group.after)]

        @dg.run_status_sensor(
            run_status=dg.DagsterRunStatus.SUCCESS, name=f"{wf}_{name}_after_sensor",
            monitored_jobs=[upstream], request_job=job_def,
            default_status=_sensor_status(group.enabled),
            description=f"Runs `{job}` once after each successful run of "
                        f"`{upstream.name}` (never after a failed one).")
        def _after(context: dg.RunStatusSensorContext) -> dg.RunRequest | dg.SkipReason:
            if skip := concurrency_gate(context, job, group.concurrency):
                return skip
            run = context.dagster_run
            partition = run.tags.get("dagster/partition") if partitioned else None
            return dg.RunRequest(run_key=f"after:{run.run_id}", partition_key=partition,
                                 tags={TRIGGER_TAG: f"after {upstream.name} run {run.run_id}",
                                       "stagecoach/upstream_run": run.run_id})

        bundle.sensors.append(_after)
    return bundle
