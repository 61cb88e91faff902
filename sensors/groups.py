"""Courier groups and orchestration groups: each becomes a job, its schedule, and the sensors
that apply its policies (missing files, run-after, one run at a time).

A courier group's schedule looks for the group's files before it asks for a run: with
`notify_and_stop` a missing file means no run (the tick names the files), with
`notify_and_continue` the run goes on without them (the run's tags name them); `wait` replaces
the schedule by a sensor that looks again until the files are there and stable, or a deadline.
"""

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg

from assets import spec
from assets.common import owners_of
from assets.names import (
    DURATION_ALERT_TAG,
    GROUP_TAG,
    MISSING_FILES_TAG,
    OPTIONAL_COURIERS_TAG,
    PARTITION_TAG,
    RUN_DAY_TAG,
    TRIGGER_TAG,
    UPSTREAM_RUN_TAG,
    WORKFLOW_TAG,
    activation_key,
    after_sensor_name,
    connection_key,
    courier_key,
    database_table_key,
    domain_key,
    job_name,
    missing_files_sensor_name,
    query_key,
    schedule_name,
)
from assets.run_day import day_tags, job_dated, resolve_day
from assets.webhook_params import webhook_job_args
from sensors.common import concurrency_gate, serial_tags, stopped_for_missing
from sensors.missing_files import describe_missing, expected_files, look

# What dg.define_asset_job returns: Dagster does not export its type (an unresolved asset job).
AssetJob = Any


def group_definitions(workflow: spec.Workflow) -> dg.Definitions:
    """The groups' family: every courier group's and orchestration group's job with its
    schedule and sensors (an orchestration group's run-after sensor watches its courier
    group's job, so the courier groups come first)."""
    courier_groups = [build_courier_group(workflow, name, group)
                      for name, group in workflow.courier_groups.items()]
    courier_jobs = {job.name: job for built in courier_groups for job in built.jobs or []}
    return dg.Definitions.merge(*courier_groups, *(
        build_orchestration_group(workflow, name, group, courier_jobs)
        for name, group in workflow.orchestration_groups.items()))


def _status(enabled: bool) -> dg.DefaultScheduleStatus:
    return dg.DefaultScheduleStatus.RUNNING if enabled else dg.DefaultScheduleStatus.STOPPED


def latest_cron_tick(cron: str, now: datetime, timezone: str) -> datetime:
    """The last time `cron` fired at or before `now`, in `timezone` (daylight-saving days
    included): the start of the cron-spaced window holding `now`, from Dagster's public
    partitions API, which computes ticks as schedules do."""
    windows = dg.TimeWindowPartitionsDefinition(
        cron_schedule=cron, timezone=timezone, start=datetime(2000, 1, 1),
        fmt="%Y-%m-%dT%H:%M", end_offset=1)  # end_offset: the window still open counts
    return windows.start_time_for_partition_key(
        windows.get_partition_key_for_timestamp(now.timestamp()))


def _sensor_status(enabled: bool) -> dg.DefaultSensorStatus:
    return dg.DefaultSensorStatus.RUNNING if enabled else dg.DefaultSensorStatus.STOPPED


def _job_tags(workflow: str, group: str, job: str, concurrency: str,
              duration_alert: str | None) -> dict[str, str]:
    tags = {WORKFLOW_TAG: workflow, GROUP_TAG: group,
            **serial_tags(job, concurrency)}
    if duration_alert:
        tags[DURATION_ALERT_TAG] = str(spec.seconds_of(duration_alert))
    return tags


# ---------------------------------------------------------------- courier groups


def courier_group_selection(workflow: spec.Workflow, group: spec.CourierGroup
                            ) -> dg.AssetSelection:
    """Load: the couriers and the domain tables they feed; build: and everything downstream
    but activations; activate: and the activations too."""
    keys = [courier_key(c) for c in group.couriers]
    couriers = set(group.couriers)
    keys += [domain_key(t) for t, table in workflow.domain_tables.items()
             if table.from_ in couriers]
    loaded = dg.AssetSelection.assets(*keys)
    if group.run == "load":
        return loaded
    if group.run == "load_and_build":
        return loaded.downstream() - dg.AssetSelection.key_prefixes(["activation"])
    return loaded.downstream()


def build_courier_group(workflow: spec.Workflow, name: str, group: spec.CourierGroup
                        ) -> dg.Definitions:
    """A courier group's job, and its schedule or wait-for-files sensor."""
    wf = workflow.workflow.name
    job = job_name(wf, name)
    partitioned = job_dated(workflow, name)
    job_def = dg.define_asset_job(
        job, selection=courier_group_selection(workflow, group), **webhook_job_args(
            workflow, name, group.description or (
                f"Courier group `{name}`: {group.run.replace('_', ' ')} for "
                f"{', '.join(group.couriers)} (missing files: {group.missing_files})."),
            _job_tags(wf, name, job, group.concurrency, group.duration_alert)))
    file_keys = {connection_key(wf, workflow.couriers[c].from_) for c in group.couriers
                 if workflow.couriers[c].path is not None}
    if group.schedule is None:
        return dg.Definitions(jobs=[job_def])
    timezone = group.schedule.timezone or workflow.workflow.timezone
    if group.missing_files == "wait":
        return dg.Definitions(jobs=[job_def], sensors=[
            _wait_sensor(workflow, name, group, job, partitioned, file_keys)])

    @dg.schedule(cron_schedule=group.schedule.cron, execution_timezone=timezone, job_name=job,
                 name=schedule_name(wf, name), default_status=_status(
                     group.enabled and group.schedule.enabled),
                 required_resource_keys=file_keys, owners=owners_of(workflow, group),
                 description=f"{group.schedule.cron} ({timezone}); looks for the group's files "
                             f"first (missing files: {group.missing_files}).")
    def _schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        if skip := concurrency_gate(context, job, group.concurrency):
            return skip
        tick = context.scheduled_execution_time or datetime.now(ZoneInfo(timezone))
        partition, day = resolve_day(workflow.workflow, partitioned, tick)
        expected = expected_files(workflow, group.couriers, day.date())
        missing = describe_missing(expected, look(workflow, expected, context.resources))
        tags = {TRIGGER_TAG: f"schedule {schedule_name(wf, name)}",
                **day_tags(partition, day, with_partition=False)}
        stopping = [m for m in missing if _policy(workflow, group, m) == "notify_and_stop"]
        if stopping:
            return dg.SkipReason(stopped_for_missing(missing))
        if missing:
            tags |= _missing_tags(missing)
        return dg.RunRequest(partition_key=partition, tags=tags)

    return dg.Definitions(jobs=[job_def], schedules=[_schedule])


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

    @dg.sensor(name=missing_files_sensor_name(wf, name), job_name=job,
               minimum_interval_seconds=spec.seconds_of(wait.every),
               default_status=_sensor_status(group.enabled and schedule.enabled),
               required_resource_keys=file_keys, owners=owners_of(workflow, group),
               description=f"Runs `{job}` after each {schedule.cron} ({timezone}) once the "
                           f"group's files are there and stable; waits up to {wait.up_to}, "
                           f"then {wait.then.replace('_', ' ')}.")
    def _sensor(context: dg.SensorEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        now = datetime.now(ZoneInfo(timezone))
        tick = latest_cron_tick(schedule.cron, now, timezone)
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
        partition, day = resolve_day(workflow.workflow, partitioned, tick)
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
        tags = {TRIGGER_TAG: missing_files_sensor_name(wf, name),
                **day_tags(partition, day, with_partition=False)}
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
    """The assets an orchestration group runs: its activations, queries and databases."""
    keys = [activation_key(a) for a in group.activations]
    keys += [query_key(q) for q in group.queries]
    keys += [database_table_key(db, t) for db in group.databases
             for t in workflow.databases[db].tables]
    return dg.AssetSelection.assets(*keys)


def build_orchestration_group(workflow: spec.Workflow, name: str,
                              group: spec.OrchestrationGroup,
                              upstream_jobs: dict[str, AssetJob]
                              ) -> dg.Definitions:
    """An orchestration group's job, its schedule and its run-after sensor."""
    wf = workflow.workflow.name
    job_def = dg.define_asset_job(
        job_name(wf, name), selection=orchestration_group_selection(group, workflow),
        **webhook_job_args(workflow, name, group.description or (
            f"Orchestration group `{name}`: {', '.join(group.activations)}" +
            (f", after courier group `{group.after}`" if group.after else "") + "."),
            _job_tags(wf, name, job_name(wf, name), group.concurrency, group.duration_alert)))
    schedules: list[dg.ScheduleDefinition] = []
    sensors: list[dg.SensorDefinition] = []
    job = job_name(wf, name)
    partitioned = job_dated(workflow, name)
    if group.schedule is not None:
        timezone = group.schedule.timezone or workflow.workflow.timezone

        @dg.schedule(cron_schedule=group.schedule.cron, execution_timezone=timezone,
                     job_name=job, name=schedule_name(wf, name),
                     default_status=_status(group.enabled and group.schedule.enabled),
                     owners=owners_of(workflow, group),
                     description=f"{group.schedule.cron} ({timezone})")
        def _schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
            if skip := concurrency_gate(context, job, group.concurrency):
                return skip
            tick = context.scheduled_execution_time or datetime.now(ZoneInfo(timezone))
            partition, day = resolve_day(workflow.workflow, partitioned, tick)
            return dg.RunRequest(partition_key=partition,
                                 tags={TRIGGER_TAG: f"schedule {schedule_name(wf, name)}",
                                       **day_tags(partition, day, with_partition=False)})

        schedules.append(_schedule)
    if group.after is not None:
        upstream = upstream_jobs[job_name(wf, group.after)]

        @dg.run_status_sensor(
            run_status=dg.DagsterRunStatus.SUCCESS, name=after_sensor_name(wf, name),
            monitored_jobs=[upstream], request_job=job_def,
            default_status=_sensor_status(group.enabled),
            # A run-status sensor takes no owners in Dagster 1.13: they are written here.
            description=f"Runs `{job}` once after each successful run of "
                        f"`{upstream.name}` (never after a failed one).\n\nOwners: "
                        f"{', '.join(owners_of(workflow, group))}")
        def _after(context: dg.RunStatusSensorContext) -> dg.RunRequest | dg.SkipReason:
            if skip := concurrency_gate(context, job, group.concurrency):
                return skip
            run = context.dagster_run
            # The upstream run's day: its partition, else its day tag, else the rule's.
            partition, day = resolve_day(workflow.workflow, partitioned, datetime.now(UTC))
            if upstream_day := run.tags.get(PARTITION_TAG) or run.tags.get(RUN_DAY_TAG):
                day = datetime.fromisoformat(upstream_day[:10]).replace(tzinfo=day.tzinfo)
                partition = day.date().isoformat() if partitioned else None
            return dg.RunRequest(run_key=f"after:{run.run_id}", partition_key=partition,
                                 tags={TRIGGER_TAG: f"after {upstream.name} run {run.run_id}",
                                       UPSTREAM_RUN_TAG: run.run_id,
                                       **day_tags(partition, day, with_partition=False)})

        sensors.append(_after)
    return dg.Definitions(jobs=[job_def], schedules=schedules, sensors=sensors)
