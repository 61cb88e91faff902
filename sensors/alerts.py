"""A workflow's alerts: each event of its runs, schedules and sensors sent once to the reporters
that follow it.

- start, success, failure: Dagster run-status sensors on the workflow's jobs. Their cursor is
  the event log's position, so each run is reported once, across daemon restarts too. A failed
  run Dagster will retry (`dagster/will_retry=true`) is not reported: its last attempt is, and a
  retry that succeeds says so in its success alert.
- runtime_exceeded: a sensor over the running runs of jobs with a `duration_alert`; the ids of
  the runs already reported are in its cursor. The run goes on.
- missing_files, sensor_error: a sensor reading the ticks of the workflow's schedules and
  sensors after the last one it read (its cursor): a failed tick, a tick that ran nothing for
  missing files, a run started without some files.

A reporter that cannot deliver is logged on the sensor's tick and the others still send; nothing
is retried by the sensor (each channel retries with backoff itself), so nothing is sent twice.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
from dagster._core.scheduler.instigation import TickStatus

from assets import spec
from resources.alert_templates import first_lines, human_duration, render_alert
from resources.alerting import AlertChannel, AlertDeliveryError, AlertMessage
from sensors.common import DURATION_ALERT_TAG, MISSING_FILES_TAG, missing_in_skip_reason

WILL_RETRY_TAG = "dagster/will_retry"  # set by Dagster on a failed run when retries are on
RETRY_NUMBER_TAG = "dagster/retry_number"
INTERVAL_SECONDS = 15


@dataclass(frozen=True)
class Reporter:
    """One `alerts:` entry, ready to send: which events, for which jobs, through what."""

    name: str
    events: frozenset[str]
    jobs: frozenset[str] | None  # job names; None: every job of the workflow
    templates: Mapping[str, Mapping[str, str]]
    channel: Callable[[], AlertChannel]  # built per alert: variables are read then
    description: str
    records_runs: bool = False  # a dataset reporter also records every finished run

    def follows(self, event: str, job: str | None) -> bool:
        return event in self.events and (self.jobs is None or job in self.jobs)


@dataclass
class AlertBundle:
    sensors: list[dg.SensorDefinition] = field(default_factory=list)


@dataclass(frozen=True)
class AlertContext:
    """What every alert sensor of one workflow shares."""

    workflow: str
    reporters: Sequence[Reporter]
    run_url: Callable[[str], str]

    def metadata(self) -> dict[str, Any]:
        """What the UI shows on each alert sensor: the reporters, variables by name only."""
        return {"reporters": [r.description for r in self.reporters]}

    def send(self, log: Any, event: str, values: dict[str, Any]) -> int:
        """Send one event to every reporter following it; returns how many failed."""
        failed = 0
        values = {"workflow": self.workflow, **values}
        for reporter in self.reporters:
            if not reporter.follows(event, values.get("job")):
                continue
            try:
                title, text = render_alert(event, values, reporter.templates.get(event))
            except ValueError as bad:  # checked at load; details may still surprise it
                log.warning(f"reporter {reporter.name}: {bad}; sent with the default template")
                title, text = render_alert(event, values)
            message = AlertMessage(
                event=event, workflow=self.workflow, title=title, text=text,
                job=values.get("job"), run_id=values.get("run_id"), status=values.get("status"),
                duration_seconds=values.get("duration_seconds"),
                failed_step=values.get("failed_step"), error=first_lines(values.get("error")),
                run_url=values.get("run_url"), details=dict(values.get("details") or {}))
            try:
                reporter.channel().send_alert(message)
            except AlertDeliveryError as error:
                failed += 1
                log.error(f"{event} alert not sent by reporter {reporter.name}: {error}")
            except Exception as error:  # an unknown error's text may quote a secret: type only
                failed += 1
                log.error(f"{event} alert not sent by reporter {reporter.name}: "
                          f"{type(error).__name__} in its channel")
            else:
                log.info(f"{event} alert sent by reporter {reporter.name} ({title})")
        return failed

    def record_run(self, log: Any, values: dict[str, Any], started: float | None,
                   ended: float | None, tags: Mapping[str, str]) -> None:
        """A row per finished run in the run-history table of each dataset reporter."""
        for reporter in self.reporters:
            if not reporter.records_runs or (reporter.jobs is not None
                                             and values.get("job") not in reporter.jobs):
                continue
            try:
                reporter.channel().record_run(  # type: ignore[attr-defined]
                    self.workflow, values.get("job"), values.get("run_id"), values["status"],
                    started, ended, values.get("failed_step"), values.get("error"), tags)
            except AlertDeliveryError as error:
                log.error(f"run not recorded by reporter {reporter.name}: {error}")

    def run_values(self, instance: dg.DagsterInstance, run: dg.DagsterRun
                   ) -> tuple[dict[str, Any], float | None, float | None]:
        record = instance.get_run_record_by_id(run.run_id)
        started = record.start_time if record else None
        ended = record.end_time if record else None
        duration = ((ended or time.time()) - started) if started else None
        return ({"job": run.job_name, "run_id": run.run_id, "status": run.status.value,
                 "duration_seconds": duration, "run_url": self.run_url(run.run_id)},
                started, ended)


def _root_error(error: Any) -> str | None:
    """The innermost cause of a serialised error (the step's own exception, not Dagster's
    wrapper), as 'Type: message'."""
    if error is None:
        return None
    while getattr(error, "cause", None) is not None:
        error = error.cause
    return error.message


def build_alert_sensors(workflow: spec.Workflow, reporters: Sequence[Reporter],
                        jobs: Sequence[Any], instigators: Mapping[str, str | None],
                        run_url: Callable[[str], str]) -> AlertBundle:
    """The sensors the reporters need: `jobs` are the workflow's job definitions,
    `instigators` its schedules and sensors (name → the job they launch)."""
    bundle = AlertBundle()
    if not reporters or not jobs:
        return bundle
    wf = workflow.workflow.name
    alerts = AlertContext(wf, reporters, run_url)
    wanted = set().union(*(r.events for r in reporters))
    records = any(r.records_runs for r in reporters)
    common = {"monitored_jobs": list(jobs), "default_status": dg.DefaultSensorStatus.RUNNING,
              "minimum_interval_seconds": INTERVAL_SECONDS,
              "metadata": alerts.metadata()}

    if "start" in wanted:
        @dg.run_status_sensor(run_status=dg.DagsterRunStatus.STARTED,
                              name=f"{wf}_run_started_alerts",
                              description=f"Reports each started run of {wf}'s jobs.", **common)
        def _started(context: dg.RunStatusSensorContext) -> None:
            values, _, _ = alerts.run_values(context.instance, context.dagster_run)
            # The event, not the run's status now (a short run may have finished already).
            values["status"] = dg.DagsterRunStatus.STARTED.value
            alerts.send(context.log, "start", values)

        bundle.sensors.append(_started)

    checks = "alarm" in wanted  # a failed asset check (a query's row-count bounds) is an alarm
    if "success" in wanted or records or checks:
        @dg.run_status_sensor(run_status=dg.DagsterRunStatus.SUCCESS,
                              name=f"{wf}_run_success_alerts",
                              description=f"Reports each successful run of {wf}'s jobs.",
                              **common)
        def _succeeded(context: dg.RunStatusSensorContext) -> None:
            run = context.dagster_run
            values, started, ended = alerts.run_values(context.instance, run)
            alerts.record_run(context.log, values, started, ended, run.tags)
            retry = int(run.tags.get(RETRY_NUMBER_TAG, "0") or 0)
            if retry:
                values["details"] = {"note": f"on attempt {retry + 1}, after {retry} failed "
                                             f"attempt{'s' if retry > 1 else ''}"}
            alerts.send(context.log, "success", values)
            if checks:
                _report_alarms(context, alerts, values)

        bundle.sensors.append(_succeeded)

    if "failure" in wanted or records or checks:
        @dg.run_failure_sensor(name=f"{wf}_run_failure_alerts",
                               description=f"Reports each failed run of {wf}'s jobs (a run "
                                           "Dagster will retry: its last attempt).", **common)
        def _failed(context: dg.RunFailureSensorContext) -> None:
            run = context.instance.get_run_by_id(context.dagster_run.run_id) or \
                context.dagster_run
            values, started, ended = alerts.run_values(context.instance, run)
            steps = context.get_step_failure_events()
            if steps:
                values["failed_step"] = steps[0].step_key
                values["error"] = _root_error(steps[0].event_specific_data.error)
            else:
                values["error"] = context.failure_event.message
            alerts.record_run(context.log, values, started, ended, run.tags)
            if checks:
                _report_alarms(context, alerts, values)
            if run.tags.get(WILL_RETRY_TAG) == "true":
                context.log.info(f"run {run.run_id} will be retried: its last attempt alerts")
                return
            alerts.send(context.log, "failure", values)

        bundle.sensors.append(_failed)

    if records:
        @dg.run_status_sensor(run_status=dg.DagsterRunStatus.CANCELED,
                              name=f"{wf}_run_canceled_records",
                              description=f"Records each cancelled run of {wf}'s jobs.",
                              **common)
        def _canceled(context: dg.RunStatusSensorContext) -> None:
            run = context.dagster_run
            values, started, ended = alerts.run_values(context.instance, run)
            alerts.record_run(context.log, values, started, ended, run.tags)

        bundle.sensors.append(_canceled)

    timed = [j.name for j in jobs if DURATION_ALERT_TAG in (j.tags or {})]
    if "runtime_exceeded" in wanted and timed:
        bundle.sensors.append(_runtime_sensor(alerts, timed))
    if wanted & {"missing_files", "sensor_error"} and instigators:
        bundle.sensors.append(_tick_sensor(alerts, instigators))
    return bundle


def _report_alarms(context: dg.RunStatusSensorContext, alerts: AlertContext,
                   values: dict[str, Any]) -> None:
    """An alarm per asset check that failed in the run (each run is seen once)."""
    records = context.instance.get_records_for_run(
        run_id=values["run_id"], of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
    for record in records:
        evaluation = record.event_log_entry.dagster_event.event_specific_data
        if evaluation.passed:
            continue
        observed = {k: getattr(v, "value", v) for k, v in (evaluation.metadata or {}).items()}
        alerts.send(context.log, "alarm", {**values, "details": {
            "alarm": f"{evaluation.asset_key.to_user_string()} {evaluation.check_name}",
            "value": observed.get("rows"), "reason": evaluation.description,
            "observed": observed}})


def _runtime_sensor(alerts: AlertContext, jobs: list[str]) -> dg.SensorDefinition:
    wf = alerts.workflow

    @dg.sensor(name=f"{wf}_runtime_alerts", minimum_interval_seconds=INTERVAL_SECONDS,
               default_status=dg.DefaultSensorStatus.RUNNING, metadata=alerts.metadata(),
               description=f"Reports once each run of {', '.join(jobs)} going longer than its "
                           "group's duration_alert; the run goes on.")
    def _runtime(context: dg.SensorEvaluationContext) -> dg.SkipReason:
        reported = set(json.loads(context.cursor or "[]"))
        going: set[str] = set()
        now = time.time()
        for job in jobs:
            records = context.instance.get_run_records(filters=dg.RunsFilter(
                job_name=job, statuses=[dg.DagsterRunStatus.STARTED]))
            for record in records:
                run, started = record.dagster_run, record.start_time
                going.add(run.run_id)
                limit = float(run.tags.get(DURATION_ALERT_TAG) or 0)
                if run.run_id in reported or not started or not limit or now - started <= limit:
                    continue
                values, _, _ = alerts.run_values(context.instance, run)
                values["details"] = {"limit": human_duration(limit)}
                alerts.send(context.log, "runtime_exceeded", values)
                reported.add(run.run_id)
        # Runs that ended are forgotten: the cursor stays as small as the runs going.
        context.update_cursor(json.dumps(sorted(reported & going)))
        return dg.SkipReason(f"{len(going)} run(s) going, {len(reported & going)} reported "
                             "as running long")

    return _runtime


def _tick_sensor(alerts: AlertContext, instigators: Mapping[str, str | None]
                 ) -> dg.SensorDefinition:
    wf = alerts.workflow

    @dg.sensor(name=f"{wf}_tick_alerts", minimum_interval_seconds=INTERVAL_SECONDS,
               default_status=dg.DefaultSensorStatus.RUNNING, metadata=alerts.metadata(),
               description=f"Reports failed ticks and missing files of {wf}'s schedules and "
                           "sensors, once each.")
    def _ticks(context: dg.SensorEvaluationContext) -> dg.SkipReason:
        state = json.loads(context.cursor) if context.cursor else {"since": time.time()}
        seen: dict[str, float] = state.setdefault("ticks", {})
        sent = 0
        for instigator in context.instance.all_instigator_state():
            name = instigator.name
            if name not in instigators:
                continue
            after = seen.get(name, state["since"])
            ticks = context.instance.get_ticks(instigator.instigator_origin_id,
                                               instigator.selector_id, after=after)
            for tick in sorted(ticks, key=lambda t: t.timestamp):
                if tick.status == TickStatus.STARTED:
                    break  # its outcome is not known yet: read it again next time
                sent += _report_tick(context, alerts, name, instigators[name], tick)
                seen[name] = tick.timestamp
        context.update_cursor(json.dumps(state))
        return dg.SkipReason(f"{sent} alert(s) from ticks" if sent else "no new tick to report")

    return _ticks


def _report_tick(context: dg.SensorEvaluationContext, alerts: AlertContext, name: str,
                 job: str | None, tick: Any) -> int:
    if tick.status == TickStatus.FAILURE:
        alerts.send(context.log, "sensor_error", {
            "job": job, "error": _root_error(tick.error), "details": {"sensor": name}})
        return 1
    if tick.status == TickStatus.SKIPPED and (files := missing_in_skip_reason(tick.skip_reason)):
        alerts.send(context.log, "missing_files", {
            "job": job, "details": {"files": files, "instigator": name, "policy": "stop"}})
        return 1
    count = 0
    for run_id in tick.run_ids if tick.status == TickStatus.SUCCESS else []:
        run = context.instance.get_run_by_id(run_id)
        if run is not None and run.tags.get(MISSING_FILES_TAG):
            alerts.send(context.log, "missing_files", {
                "job": run.job_name, "run_id": run_id, "run_url": alerts.run_url(run_id),
                "details": {"files": run.tags[MISSING_FILES_TAG].split("; "),
                            "instigator": name, "policy": "continue"}})
            count += 1
    return count
