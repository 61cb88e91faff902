"""A workflow's alerts: each event of its runs, schedules and sensors sent once to the reporters
that follow it.

- start, success, failure: Dagster run-status sensors on every run of the code location,
  keeping the workflow's (RunScope): runs of its jobs, and runs of any job that touched its
  assets, such as "Materialize all", an asset's Materialize button or a UI backfill, which run
  as `__ASSET_JOB` without the workflow's tag (their cursor is the event log's position).
  A failed run Dagster will retry (`dagster/will_retry=true`) is not
  reported: its last attempt is, and a retry that succeeds says so in its success alert.
- runtime_exceeded: a sensor over the running runs of jobs with a `duration_alert` (and asset
  runs touching those jobs' assets, with the tightest of their limits); the ids of
  the runs it reported are in its cursor. The run goes on.
- missing_files, sensor_error: a sensor reading the ticks of the workflow's schedules and
  sensors after the last one it read (its cursor): a tick that failed (the first of a series),
  a tick that ran nothing for missing files, a run started without some files.
- alarm: an asset check that failed in a run (a query's row-count bounds).

Every delivery is also written to a ledger, Stagecoach's table `stagecoach.alert_ledger` in the
warehouse, before the next one (sensors/alert_ledger.py): an evaluation that Dagster times out
and runs again (its cursor not saved) skips what already went out. A reporter that cannot
deliver is logged on the tick and the others still send. The sensor's own bookkeeping failing
(the ledger, the run's checks not readable) is logged at error level naming the reporter and
raised, after the other reporters had their turn, so the tick shows as failed: Dagster's
run-status sensors catch the exception, mark the tick FAILURE with it and still move their
cursor on (they are not retried: their run's alert may be lost); the other sensors keep their
cursor and try again on the next tick.
"""

import json
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from functools import partial
from typing import Any, Protocol

import dagster as dg

from assets import spec
from assets.names import (
    ATTRIBUTED_ASSETS_TAG,
    DURATION_ALERT_TAG,
    MISSING_FILES_TAG,
    RETRY_NUMBER_TAG,
    RETRY_PARENT_TAG,
    WILL_RETRY_TAG,
    WORKFLOW_TAG,
    sensor_name,
    workflow_job_name,
)
from resources.channels.alert_templates import first_lines, human_duration, render_alert
from resources.channels.alerting import AlertChannel, AlertDeliveryError, AlertMessage
from sensors.alert_ledger import (
    KEEP_SECONDS,
    AlertLedger,
    ledger_key,
    prune_due,
    pruned_key,
)
from sensors.common import missing_in_skip_reason

RETRY_GRACE_SECONDS = 300  # the retry daemon launches within a tick or two of a failure
RETRY_WATCH_WINDOW_SECONDS = 86_400  # failures older than this are not watched
INTERVAL_SECONDS = 15
STALE_TICK_SECONDS = 3600  # older ticks (a sensor stopped for a while) are passed over
TICKS_PER_EVALUATION = 50  # per instigator: a backlog drains over several evaluations
# Instigators without a stored state (not started yet) are looked for again after 30 s, then
# after twice as long each time none appears, at most every 10 minutes.
SOURCES_REFRESH_SECONDS = (30.0, 600.0)
# Tick outcomes and instigator types, by the values of Dagster's enums (which it does not export).
STARTED, SKIPPED, SUCCESS, FAILURE = "STARTED", "SKIPPED", "SUCCESS", "FAILURE"
SCHEDULE = "SCHEDULE"


class Tick(Protocol):
    """What the tick sensor reads of a tick the instance returns."""

    @property
    def tick_id(self) -> int: ...
    @property
    def timestamp(self) -> float: ...
    @property
    def status(self) -> Enum: ...
    @property
    def instigator_type(self) -> Enum: ...
    @property
    def skip_reason(self) -> str | None: ...
    @property
    def run_ids(self) -> Sequence[str]: ...
    @property
    def error(self) -> Any: ...


@dataclass(frozen=True)
class Reporter:
    """One `alerts:` entry, ready to send: which events, for which jobs, through what."""

    name: str
    events: frozenset[str]
    jobs: frozenset[str] | None  # job names; None: every job of the workflow
    templates: Mapping[str, Mapping[str, str]]
    make_channel: Callable[[], AlertChannel]  # variables are read when it is called
    description: str
    records_runs: bool = False  # a dataset reporter also records every finished run

    def follows(self, event: str, job: str | Collection[str] | None) -> bool:
        """Whether the reporter sends `event` of a run of `job` (or of any of the jobs a run
        counts as: a UI materialization counts as the groups whose assets it ran)."""
        return event in self.events and self.covers(job)

    def covers(self, job: str | Collection[str] | None) -> bool:
        """Whether the reporter follows runs of `job` (or of any of these jobs)."""
        if self.jobs is None:
            return True
        jobs = {job} if job is None or isinstance(job, str) else set(job)
        return bool(self.jobs & jobs)


@dataclass
class RunScope:
    """Which runs are a workflow's: those tagged with it, those of its jobs, and those that
    materialise or check its assets whatever job ran them (`__ASSET_JOB` runs from
    "Materialize all" or an asset's Materialize button, ad-hoc selections, UI backfills).

    `job_assets` gives each job's asset keys when first asked (resolving every group's
    selection costs time at load, and only alert sensors need it).
    """

    workflow: str
    jobs: frozenset[str]
    job_assets: Callable[[], Mapping[str, frozenset[dg.AssetKey]]]
    duration_limits: Mapping[str, int] = field(default_factory=dict)  # job → seconds
    _by_asset: dict[dg.AssetKey, frozenset[str]] | None = field(default=None, repr=False)

    def _asset_jobs(self) -> dict[dg.AssetKey, frozenset[str]]:
        if self._by_asset is None:
            found: dict[dg.AssetKey, set[str]] = {}
            for job, keys in self.job_assets().items():
                for key in keys:
                    found.setdefault(key, set()).add(job)
            self._by_asset = {k: frozenset(v) for k, v in found.items()}
        return self._by_asset

    def touched(self, run: dg.DagsterRun) -> list[dg.AssetKey]:
        """The workflow's assets (and assets of its checks) a run selected."""
        keys = set(run.asset_selection or ())
        keys |= {check.asset_key for check in run.asset_check_selection or ()}
        mine = self._asset_jobs()
        return sorted((k for k in keys if k in mine), key=lambda k: k.to_user_string())

    def jobs_of(self, run: dg.DagsterRun) -> frozenset[str] | None:
        """The workflow's jobs a run counts as, for reporters' `jobs:` and duration alerts; None
        when the run is not the workflow's. A run tagged with another workflow is not this
        one's. An asset run counts as each group job that runs one of the assets it touched,
        and as the whole workflow's job when it touched every asset ("Materialize all") or
        one that no group runs."""
        tag = run.tags.get(WORKFLOW_TAG)
        if tag is not None:
            return frozenset({run.job_name}) if tag == self.workflow else None
        if run.job_name in self.jobs:
            return frozenset({run.job_name})
        touched = set(self.touched(run))
        if not touched:
            return None
        whole, mine = workflow_job_name(self.workflow), self._asset_jobs()
        groups = {job for key in touched for job in mine[key] if job != whole}
        everything = {key for key, jobs in mine.items() if whole in jobs}
        if touched >= everything or any(not mine[key] - {whole} for key in touched):
            groups.add(whole)
        return frozenset({run.job_name} | groups)

    def duration_limit(self, run: dg.DagsterRun, jobs: Collection[str]) -> int:
        """The run's duration alert in seconds (0: none): its job's tag, else the tightest
        `duration_alert` of the groups whose assets it ran."""
        if tagged := _int(run.tags.get(DURATION_ALERT_TAG)):
            return tagged
        limits = [self.duration_limits[j] for j in jobs if j in self.duration_limits]
        return min(limits) if limits else 0


@dataclass(frozen=True)
class AlertContext:
    """What every alert sensor of one workflow shares."""

    workflow: str
    reporters: Sequence[Reporter]
    run_url: Callable[[str], str]
    ledger: Callable[[], AlertLedger]  # called at each evaluation: the warehouse read then
    scope: RunScope
    owners: Sequence[str] = ()  # the workflow's owners

    def metadata(self) -> dict[str, Any]:
        """What the UI shows on each alert sensor: the reporters, variables by name only."""
        return {"reporters": [r.description for r in self.reporters]}

    def describe(self, text: str, events: Iterable[str] | None = None,
                 records: bool = False, owners_in_text: bool = False) -> str:
        """A sensor's description with the reporters it sends to (those following `events`;
        all when None; with `records`, the dataset reporters recording runs too), variables
        by name only: the UI of Dagster 1.13 shows a sensor's
        description but not its metadata. A run-status sensor cannot carry owners (1.13):
        `owners_in_text` writes them here instead."""
        wanted = set(events) if events is not None else None
        shown = [r.description for r in self.reporters
                 if wanted is None or r.events & wanted or (records and r.records_runs)]
        text += "\n\nReporters: " + ("; ".join(shown) or "none")
        if owners_in_text and self.owners:
            text += "\n\nOwners: " + ", ".join(self.owners)
        return text

    def _ledger_key(self, reporter: Reporter, condition: str) -> str:
        return ledger_key(self.workflow, reporter.name, condition)

    def _read_ledger(self, context: Any, what: str, reporters: Sequence[Reporter],
                     keys: set[str]) -> tuple[Mapping[str, int], bool]:
        """The ledger entries among `keys`, and whether the ledger is due for pruning."""
        try:
            found = self.ledger().read({*keys, pruned_key(self.workflow)})
        except Exception as error:
            names = ", ".join(r.name for r in reporters)
            context.log.error(f"{what}: the alert ledger of reporter(s) {names} could not be "
                              f"read ({type(error).__name__}); nothing sent")
            raise
        return found, prune_due(found, self.workflow, time.time())

    def _write_ledger(self, context: Any, what: str, reporter: Reporter, key: str,
                      failures: list[Exception]) -> bool:
        """Note a delivery in the ledger; a failure is logged and kept in `failures`."""
        try:
            self.ledger().write(key, self.workflow, time.time())
        except Exception as error:
            context.log.error(f"{what} sent by reporter {reporter.name} but not written to the "
                              f"alert ledger ({type(error).__name__}): it may be sent again")
            failures.append(error)
            return False
        return True

    def _finish(self, context: Any, prune: bool, failures: list[Exception]) -> None:
        """Prune the ledger when due, then raise the first bookkeeping failure (the tick
        fails, after every reporter had its turn)."""
        if prune and not failures:
            try:
                pruned = self.ledger().prune(self.workflow, time.time())
            except Exception as error:
                context.log.error(f"the alert ledger of {self.workflow} could not be pruned "
                                  f"({type(error).__name__})")
                raise
            if pruned:
                context.log.info(f"{pruned} alert ledger entries older than "
                                 f"{human_duration(KEEP_SECONDS)} pruned")
        if failures:
            raise failures[0]

    def send(self, context: Any, event: str, condition: str, values: dict[str, Any]) -> None:
        """Send one event to every reporter following it, once per `condition` (e.g.
        'failure:<run id>') and reporter, however many times this is called."""
        values = {"workflow": self.workflow, **values}
        targets = [r for r in self.reporters
                   if r.follows(event, values.get("jobs") or values.get("job"))]
        if not targets:
            return
        what = f"{event} alert"
        done, prune = self._read_ledger(context, what, targets,
                                        {self._ledger_key(r, condition) for r in targets})
        failures: list[Exception] = []
        for reporter in targets:
            key = self._ledger_key(reporter, condition)
            if key in done:
                context.log.info(f"{what} already sent by reporter {reporter.name}")
                continue
            try:
                title, text = render_alert(event, values, reporter.templates.get(event))
            except ValueError as bad:  # checked at load; details may still surprise it
                context.log.warning(f"reporter {reporter.name}: {bad}; the default template "
                                    "is used")
                title, text = render_alert(event, values)
            message = AlertMessage(
                event=event, workflow=self.workflow, title=title, text=text,
                job=values.get("job"), run_id=values.get("run_id"), status=values.get("status"),
                duration_seconds=values.get("duration_seconds"),
                failed_step=values.get("failed_step"), error=first_lines(values.get("error")),
                run_url=values.get("run_url"), details=dict(values.get("details") or {}))
            if (_attempt(context.log, what, reporter,
                         lambda r=reporter, m=message: r.make_channel().send_alert(m))
                    and self._write_ledger(context, what, reporter, key, failures)):
                context.log.info(f"{what} sent by reporter {reporter.name} ({title})")
        self._finish(context, prune, failures)

    def record_run(self, context: Any, values: dict[str, Any], started: float | None,
                   ended: float | None, tags: Mapping[str, str]) -> None:
        """A row per finished run in the run-history table of each dataset reporter."""
        targets = [r for r in self.reporters if r.records_runs
                   and r.covers(values.get("jobs") or values.get("job"))]
        if not targets:
            return
        condition = f"run:{values['run_id']}"
        done, prune = self._read_ledger(context, "run record", targets,
                                        {self._ledger_key(r, condition) for r in targets})
        failures: list[Exception] = []
        for reporter in targets:
            key = self._ledger_key(reporter, condition)
            if key in done:
                continue
            if _attempt(context.log, "run record", reporter,
                        lambda r=reporter: r.make_channel().record_run(  # type: ignore
                            self.workflow, values.get("job"), values.get("run_id"),
                            values["status"], started, ended, values.get("failed_step"),
                            values.get("error"), tags)):
                self._write_ledger(context, "run record", reporter, key, failures)
        self._finish(context, prune, failures)

    def run_values(self, run: dg.DagsterRun, record: Any
                   ) -> tuple[dict[str, Any], float | None, float | None]:
        started = record.start_time if record else None
        ended = record.end_time if record else None
        duration = ((ended or time.time()) - started) if started else None
        values: dict[str, Any] = {
            "job": run.job_name, "run_id": run.run_id, "status": run.status.value,
            "duration_seconds": duration, "run_url": self.run_url(run.run_id)}
        jobs = self.scope.jobs_of(run)
        if jobs and jobs != {run.job_name}:  # an asset run: the groups it counts as
            values["jobs"] = sorted(jobs)
        return values, started, ended

    def run_tags(self, run: dg.DagsterRun) -> dict[str, str]:
        """The tags a run is recorded with: an untagged asset run gets the workflow's tag and
        the assets it was attributed by."""
        if run.tags.get(WORKFLOW_TAG) == self.workflow:
            return dict(run.tags)
        touched = [k.to_user_string() for k in self.scope.touched(run)]
        return {**run.tags, WORKFLOW_TAG: self.workflow,
                **({ATTRIBUTED_ASSETS_TAG: _cut(", ".join(touched))} if touched else {})}


def _attempt(log: Any, what: str, reporter: Reporter, deliver: Callable[[], object]) -> bool:
    """Run one delivery; a failure is logged (an unknown error by its type only: its text may
    quote a secret) and never raised."""
    try:
        deliver()
    except AlertDeliveryError as error:
        log.error(f"{what} not sent by reporter {reporter.name}: {error}")
    except Exception as error:
        log.error(f"{what} not sent by reporter {reporter.name}: {type(error).__name__} in "
                  "its channel")
    else:
        return True
    return False


def _root_error(error: Any) -> str | None:
    """The innermost cause of a serialised error (the step's own exception, not Dagster's
    wrapper), as 'Type: message'."""
    if error is None:
        return None
    while getattr(error, "cause", None) is not None:
        error = error.cause
    return error.message


def _current(context: dg.RunStatusSensorContext) -> tuple[dg.DagsterRun, Any]:
    """The run as stored now, and its record. Dagster tags a failure `will_retry` just after
    storing it: with retries on, a missing tag is looked for again for a moment."""
    instance, run_id = context.instance, context.dagster_run.run_id
    run, record = context.dagster_run, None
    for _ in range(10):
        record = instance.get_run_record_by_id(run_id)
        run = record.dagster_run if record else context.dagster_run
        if (run.status != dg.DagsterRunStatus.FAILURE or not instance.run_retries_enabled
                or WILL_RETRY_TAG in run.tags):
            break
        time.sleep(0.3)
    return run, record


@dataclass(frozen=True)
class RunSensorKind:
    """One run-status alert sensor: the run status it follows and what it does with a run."""

    status: dg.DagsterRunStatus
    name: str  # `<workflow>_<name>_sensor`
    description: str  # `{wf}` stands for the workflow's name
    event: str | None  # the alert it sends; None: it only records runs
    react: Callable[[Any, AlertContext, dg.DagsterRun, dict[str, Any], bool], None]
    records: bool = True  # also writes the run to the run history (dataset reporters)
    alarms: bool = False  # also needed for alarms (asset checks that failed in the run)


def _on_start(context: Any, alerts: AlertContext, run: dg.DagsterRun, values: dict[str, Any],
              checks: bool) -> None:
    # The event, not the run's status now (a short run may have finished already).
    values["status"] = dg.DagsterRunStatus.STARTED.value
    alerts.send(context, "start", f"start:{run.run_id}", values)


def _on_success(context: Any, alerts: AlertContext, run: dg.DagsterRun,
                values: dict[str, Any], checks: bool) -> None:
    retry = _int(run.tags.get(RETRY_NUMBER_TAG))
    if retry:
        values["details"] = {"note": f"on attempt {retry + 1}, after {retry} failed "
                                     f"attempt{'s' if retry > 1 else ''}"}
    alerts.send(context, "success", f"success:{run.run_id}", values)
    if checks:
        _report_alarms(context, alerts, values)


def _on_failure(context: dg.RunFailureSensorContext, alerts: AlertContext, run: dg.DagsterRun,
                values: dict[str, Any], checks: bool) -> None:
    try:
        steps = context.get_step_failure_events()
    except Exception as error:  # the event log unreadable: alert without the step
        context.log.warning(f"failed steps of run {run.run_id} not read "
                            f"({type(error).__name__}): the alert names no step")
        steps = []
    _add_failure(values, steps, context.failure_event.message)
    if run.tags.get(WILL_RETRY_TAG) == "true":
        context.log.info(f"run {run.run_id} will be retried: its last attempt alerts")
        return
    alerts.send(context, "failure", f"failure:{run.run_id}", values)
    if checks:
        _report_alarms(context, alerts, values)


def _add_failure(values: dict[str, Any], steps: Sequence[Any], fallback: str | None) -> None:
    """The first failed step and its root error, else the run's failure message."""
    if steps:
        values["failed_step"] = steps[0].step_key
        values["error"] = _root_error(steps[0].event_specific_data.error)
    else:
        values["error"] = fallback


def _on_cancel(context: Any, alerts: AlertContext, run: dg.DagsterRun, values: dict[str, Any],
               checks: bool) -> None:
    """Nothing to alert: a cancelled run is only recorded."""


RUN_SENSORS = (
    RunSensorKind(dg.DagsterRunStatus.STARTED, "run_started_alert",
                  "Reports each started run of {wf}'s jobs or assets.", "start", _on_start,
                  records=False),
    RunSensorKind(dg.DagsterRunStatus.SUCCESS, "run_success_alert",
                  "Reports each successful run of {wf}'s jobs or assets.", "success", _on_success,
                  alarms=True),
    RunSensorKind(dg.DagsterRunStatus.FAILURE, "run_failure_alert",
                  "Reports each failed run of {wf}'s jobs or assets (a run Dagster will retry: "
                  "its last attempt).", "failure", _on_failure, alarms=True),
    RunSensorKind(dg.DagsterRunStatus.CANCELED, "run_canceled_record",
                  "Records each cancelled run of {wf}'s jobs or assets in the run history.", None,
                  _on_cancel),
)


def _run_sensor(kind: RunSensorKind, alerts: AlertContext, checks: bool,
                common: Mapping[str, Any]) -> dg.SensorDefinition:
    """The run-status sensor of one RunSensorKind (a run-failure sensor for failures, whose
    context reads the failed steps)."""
    wf = alerts.workflow
    decorator = (dg.run_failure_sensor if kind.status == dg.DagsterRunStatus.FAILURE
                 else partial(dg.run_status_sensor, run_status=kind.status))

    events = {kind.event} if kind.event else set()
    if kind.alarms and checks:
        events.add("alarm")
    described = alerts.describe(kind.description.format(wf=wf), events, kind.records,
                                owners_in_text=True)

    @decorator(name=sensor_name(wf, kind.name), description=described, **common)
    def _react(context: dg.RunStatusSensorContext) -> None:
        jobs = alerts.scope.jobs_of(context.dagster_run)
        if jobs is None:
            return  # another workflow's run, or one touching none of this one's assets
        if not any(r.covers(jobs) and (kind.event in r.events or (kind.records and r.records_runs)
                                       or (kind.alarms and checks and "alarm" in r.events))
                   for r in alerts.reporters):
            return  # no reporter follows this run for this event: nothing to read or send
        run, record = _current(context)
        values, started, ended = alerts.run_values(run, record)
        try:
            kind.react(context, alerts, run, values, checks)
        finally:  # the run is recorded even when its alerts' bookkeeping failed
            if kind.records:
                alerts.record_run(context, values, started, ended, alerts.run_tags(run))

    return _react


def alert_definitions(workflow: spec.Workflow, reporters: Sequence[Reporter],
                      watched: dg.Definitions, run_url: Callable[[str], str],
                      ledger: Callable[[], AlertLedger]) -> dg.Definitions:
    """The alerts' family: the sensors the reporters need. `watched` is what the workflow's
    other families built: its jobs, its schedules and sensors (each names the job it
    launches) and its assets (a run of any job that touches one is the workflow's run: the
    sensors watch the whole code location and keep those). `ledger` is where each delivery
    is noted."""
    jobs = list(watched.jobs or [])
    assets = [a for a in watched.assets or [] if isinstance(a, dg.AssetsDefinition)]
    schedules = [s for s in watched.schedules or [] if isinstance(s, dg.ScheduleDefinition)]
    instigators = instigator_jobs(schedules, list(watched.sensors or []))
    return dg.Definitions(sensors=build_alert_sensors(workflow, reporters, jobs, instigators,
                                                      run_url, ledger, assets))


def instigator_jobs(schedules: Sequence[dg.ScheduleDefinition],
                    sensors: Sequence[dg.SensorDefinition]) -> dict[str, str | None]:
    """Schedule and sensor names → the job each launches (None: none or several)."""
    found: dict[str, str | None] = {s.name: s.job_name for s in schedules}
    for sensor in sensors:
        targets = {t.job_name for t in sensor.targets}
        found[sensor.name] = targets.pop() if len(targets) == 1 else None
    return found


def build_alert_sensors(workflow: spec.Workflow, reporters: Sequence[Reporter],
                        jobs: Sequence[Any], instigators: Mapping[str, str | None],
                        run_url: Callable[[str], str], ledger: Callable[[], AlertLedger],
                        assets: Sequence[dg.AssetsDefinition] = ()
                        ) -> list[dg.SensorDefinition]:
    """The sensors the reporters need: `jobs` are the workflow's job definitions,
    `instigators` its schedules and sensors (name → the job they launch), `ledger` where
    each delivery is noted, `assets` the workflow's assets."""
    sensors: list[dg.SensorDefinition] = []
    if not reporters or not jobs:
        return sensors
    wf = workflow.workflow.name
    alerts = AlertContext(wf, reporters, run_url, ledger, run_scope(wf, jobs, assets),
                          tuple(workflow.workflow.owners))
    wanted = set().union(*(r.events for r in reporters))
    records = any(r.records_runs for r in reporters)
    checks = "alarm" in wanted  # a failed asset check (a query's row-count bounds) is an alarm
    # No monitored_jobs: every run of the code location reaches the sensor, which keeps the
    # workflow's (RunScope), so UI materializations and backfills are watched too.
    common = {"default_status": dg.DefaultSensorStatus.RUNNING,
              "minimum_interval_seconds": INTERVAL_SECONDS, "metadata": alerts.metadata()}

    sensors += [_run_sensor(kind, alerts, checks, common) for kind in RUN_SENSORS
                if kind.event in wanted or (kind.records and records) or (kind.alarms and checks)]

    timed = sorted(alerts.scope.duration_limits)
    if "runtime_exceeded" in wanted and timed:
        sensors.append(_runtime_sensor(alerts, timed))
    if "failure" in wanted:
        sensors.append(_retry_watch_sensor(alerts))
    if wanted & {"missing_files", "sensor_error"} and instigators:
        sensors.append(_tick_sensor(alerts, instigators))
    return sensors


def run_scope(workflow: str, jobs: Sequence[Any], assets: Sequence[dg.AssetsDefinition]
              ) -> RunScope:
    """The RunScope of a workflow's jobs (asset jobs carry their selection) and assets."""
    def job_assets() -> dict[str, frozenset[dg.AssetKey]]:
        found = {}
        for job in jobs:
            selection = getattr(job, "selection", None)  # an asset job's; op jobs have none
            if isinstance(selection, dg.AssetSelection) and assets:
                found[job.name] = frozenset(selection.resolve(assets, allow_missing=True))
        return found

    limits = {j.name: _int((j.tags or {}).get(DURATION_ALERT_TAG)) for j in jobs}
    return RunScope(workflow, frozenset(j.name for j in jobs), job_assets,
                    {j: s for j, s in limits.items() if s})


def _cut(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def _event_data(record: dg.EventLogRecord) -> Any:
    """What an event record says beyond its type (None for a record without a Dagster event)."""
    event = record.event_log_entry.dagster_event
    return event.event_specific_data if event is not None else None


def _report_alarms(context: dg.RunStatusSensorContext, alerts: AlertContext,
                   values: dict[str, Any]) -> None:
    """An alarm per asset check that failed in the run, and per alarm step that was raised."""
    try:
        records = context.instance.get_records_for_run(
            run_id=values["run_id"], of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
        expectations = context.instance.get_records_for_run(
            run_id=values["run_id"], of_type=dg.DagsterEventType.STEP_EXPECTATION_RESULT).records
    except Exception as error:
        followers = ", ".join(r.name for r in alerts.reporters if r.follows("alarm",
                                                                             values["job"]))
        context.log.error(f"alarm alerts of reporter(s) {followers}: the checks of run "
                          f"{values['run_id']} could not be read ({type(error).__name__})")
        raise
    for record in expectations:
        result = getattr(_event_data(record), "expectation_result", None)
        if not isinstance(result, dg.ExpectationResult) or result.success:
            continue
        observed = {k: getattr(v, "value", v) for k, v in (result.metadata or {}).items()}
        alerts.send(context, "alarm", f"alarm:{values['run_id']}:{result.label}", {
            **values, "details": {"alarm": result.label, "value": observed.get("value"),
                                  "threshold": observed.get("threshold"),
                                  "reason": result.description, "observed": observed}})
    for record in records:
        evaluation = _event_data(record)
        if not isinstance(evaluation, dg.AssetCheckEvaluation) or evaluation.passed:
            continue
        observed = {k: getattr(v, "value", v) for k, v in (evaluation.metadata or {}).items()}
        check = f"{evaluation.asset_key.to_user_string()} {evaluation.check_name}"
        alerts.send(context, "alarm", f"alarm:{values['run_id']}:{check}", {
            **values, "details": {"alarm": check, "value": observed.get("rows"),
                                  "reason": evaluation.description, "observed": observed}})


def _runtime_sensor(alerts: AlertContext, jobs: list[str]) -> dg.SensorDefinition:
    wf = alerts.workflow

    @dg.sensor(name=sensor_name(wf, "runtime_alert"), minimum_interval_seconds=INTERVAL_SECONDS,
               default_status=dg.DefaultSensorStatus.RUNNING, metadata=alerts.metadata(),
               owners=list(alerts.owners),
               description=alerts.describe(f"Reports once each run of {', '.join(jobs)} (or "
                                           "of their assets, launched from the UI) going "
                                           "longer than its group's duration_alert; the run "
                                           "goes on.", {"runtime_exceeded"}))
    def _runtime(context: dg.SensorEvaluationContext) -> dg.SkipReason:
        reported = set(json.loads(context.cursor or "[]"))
        going: set[str] = set()
        now = time.time()
        # Every running run of the location: a UI materialization of a timed group's assets
        # has the group's limit too.
        records = context.instance.get_run_records(filters=dg.RunsFilter(
            statuses=[dg.DagsterRunStatus.STARTED]))
        for record in records:
            run, started = record.dagster_run, record.start_time
            jobs = alerts.scope.jobs_of(run)
            if jobs is None:
                continue
            going.add(run.run_id)
            limit = alerts.scope.duration_limit(run, jobs)
            if run.run_id in reported or not started or not limit or now - started <= limit:
                continue
            values, _, _ = alerts.run_values(run, record)
            values["details"] = {"limit": human_duration(limit)}
            alerts.send(context, "runtime_exceeded", f"runtime:{run.run_id}", values)
            reported.add(run.run_id)
        # Runs that ended are forgotten: the cursor stays as small as the runs going.
        context.update_cursor(json.dumps(sorted(reported & going)))
        return dg.SkipReason(f"{len(going)} run(s) going, {len(reported & going)} reported "
                             "as running long")

    return _runtime


def _retry_watch_sensor(alerts: AlertContext) -> dg.SensorDefinition:
    """A failure Dagster said it would retry is not alerted (its last attempt is): if no retry
    run appears within RETRY_GRACE_SECONDS (retries off in the instance, the daemon down or
    failing to launch), this sensor sends that failure's alert after all."""
    wf = alerts.workflow

    @dg.sensor(name=sensor_name(wf, "retry_watch_alert"), minimum_interval_seconds=60,
               default_status=dg.DefaultSensorStatus.RUNNING, metadata=alerts.metadata(),
               owners=list(alerts.owners),
               description=alerts.describe(f"Reports a failed run of {wf}'s jobs whose promised "
                                           "retry did not start within "
                                           f"{human_duration(RETRY_GRACE_SECONDS)}.",
                                           {"failure"}))
    def _watch(context: dg.SensorEvaluationContext) -> dg.SkipReason:
        instance, now = context.instance, time.time()
        settled = set(json.loads(context.cursor or "[]"))
        waiting = instance.get_run_records(filters=dg.RunsFilter(
            statuses=[dg.DagsterRunStatus.FAILURE], updated_after=datetime.fromtimestamp(
                now - RETRY_WATCH_WINDOW_SECONDS, UTC),
            tags={WILL_RETRY_TAG: "true"}))
        waiting = [r for r in waiting if alerts.scope.jobs_of(r.dagster_run) is not None]
        stalled = 0
        for record in waiting:
            run = record.dagster_run
            ended = record.end_time or record.update_timestamp.timestamp()
            if run.run_id in settled or now - ended < RETRY_GRACE_SECONDS:
                continue
            if not instance.get_run_ids(filters=dg.RunsFilter(
                    tags={RETRY_PARENT_TAG: run.run_id}), limit=1):
                stalled += 1
                values, _, _ = alerts.run_values(run, record)
                steps = [r.event_log_entry.dagster_event for r in instance.get_records_for_run(
                    run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records]
                _add_failure(values, steps, None)
                values["details"] = {"note": "Dagster was to retry this run, but no retry "
                                             f"started within "
                                             f"{human_duration(RETRY_GRACE_SECONDS)}"}
                alerts.send(context, "failure", f"failure:{run.run_id}", values)
            settled.add(run.run_id)
        # Runs past the window are forgotten: the cursor stays as small as the window.
        context.update_cursor(json.dumps(sorted(settled & {r.dagster_run.run_id
                                                           for r in waiting})))
        return dg.SkipReason(f"{len(waiting)} failed run(s) promised a retry; {stalled} "
                             "without one reported")

    return _watch


def _tick_sensor(alerts: AlertContext, instigators: Mapping[str, str | None]
                 ) -> dg.SensorDefinition:
    wf = alerts.workflow

    @dg.sensor(name=sensor_name(wf, "tick_alert"), minimum_interval_seconds=INTERVAL_SECONDS,
               default_status=dg.DefaultSensorStatus.RUNNING, metadata=alerts.metadata(),
               owners=list(alerts.owners),
               description=alerts.describe(f"Reports failed ticks and missing files of {wf}'s "
                                           "schedules and sensors, once each.",
                                           {"missing_files", "sensor_error"}))
    def _ticks(context: dg.SensorEvaluationContext) -> dg.SkipReason:
        now = time.time()
        state: dict[str, Any] = json.loads(context.cursor) if context.cursor else {"since": now}
        seen: dict[str, float] = state.setdefault("ticks", {})
        failing = set(state.get("failing", []))  # instigators whose last tick failed
        sent = 0
        for name, origin_id, selector_id in _tick_sources(context, instigators, known):
            last: float = seen[name] if name in seen else state["since"]
            after = max(last, now - STALE_TICK_SECONDS)
            ticks = context.instance.get_ticks(origin_id, selector_id, after=after)
            for tick in sorted(ticks, key=lambda t: t.timestamp)[:TICKS_PER_EVALUATION]:
                status = tick.status.value
                if status == STARTED:
                    break  # its outcome is not known yet: read it again next time
                if status == FAILURE and name in failing:
                    pass  # still failing: reported at the first failure of the series
                else:
                    kind = "schedule" if tick.instigator_type.value == SCHEDULE else "sensor"
                    sent += _report_tick(context, alerts, name, kind, instigators[name], tick)
                if status == FAILURE:
                    failing.add(name)
                else:
                    failing.discard(name)
                seen[name] = tick.timestamp
        state["ticks"] = {k: v for k, v in seen.items() if k in instigators}
        state["failing"] = sorted(failing & set(instigators))
        context.update_cursor(json.dumps(state))
        return dg.SkipReason(f"{sent} tick(s) reported" if sent else "no new tick to report")

    known: dict[tuple[str, str] | None, TickSources] = {}  # per code location and repository
    return _ticks


@dataclass
class TickSources:
    """The (origin id, selector id) of instigators by name, as their stored states give them,
    and when the states were last read."""

    ids: dict[str, tuple[str, str]] = field(default_factory=dict)
    read_at: float = float("-inf")
    wait: float = SOURCES_REFRESH_SECONDS[0]  # before the next look for missing ones
    repository_selector_id: str | None = None  # this repository's, once a state shows it


def _tick_sources(context: dg.SensorEvaluationContext, names: Mapping[str, Any],
                  known: dict[tuple[str, str] | None, TickSources]) -> list[tuple[str, str, str]]:
    """(name, origin id, selector id) of each of `names` that has a stored state (an
    instigator never started has no ticks), for reading its ticks.

    The ids come from the instance's schedule and sensor states of this code location and
    repository (Dagster's public way to them; only this repository's once one state shows its
    id), read again only while a name is missing, backing off per SOURCES_REFRESH_SECONDS: a
    sensor started later is found, and its ticks since are still read. Outside the daemon (a
    test) the location is not known: the states of every location are read, every time.
    """
    origin = context.code_location_origin
    where = (None if origin is None or context.repository_name is None
             else (origin.location_name, context.repository_name))
    sources = known.setdefault(where, TickSources())
    now = time.monotonic()
    if where is None or (set(names) - set(sources.ids) and now - sources.read_at >= sources.wait):
        states = context.instance.all_instigator_state(
            repository_selector_id=sources.repository_selector_id)
        found = {}
        for s in states:
            mine = (s.repository_selector.location_name,
                    s.repository_selector.repository_name) == where
            if mine:
                sources.repository_selector_id = s.repository_selector_id
            if (mine or where is None) and s.name in names:
                found[s.name] = (s.instigator_origin_id, s.selector_id)
        grew = set(found) - set(sources.ids)
        sources.wait = (SOURCES_REFRESH_SECONDS[0] if grew
                        else min(sources.wait * 2, SOURCES_REFRESH_SECONDS[1]))
        sources.ids, sources.read_at = found, now
    return [(name, *ids) for name, ids in sources.ids.items()]


def _report_tick(context: dg.SensorEvaluationContext, alerts: AlertContext, name: str,
                 kind: str, job: str | None, tick: Tick) -> int:
    details = {"sensor": name, "kind": kind, "tick_id": tick.tick_id}
    if tick.status.value == FAILURE:
        alerts.send(context, "sensor_error", f"tick:{tick.tick_id}", {
            "job": job, "error": _root_error(tick.error), "details": details})
        return 1
    if tick.status.value == SKIPPED and (files := missing_in_skip_reason(tick.skip_reason)):
        alerts.send(context, "missing_files", f"tick:{tick.tick_id}", {
            "job": job, "details": {**details, "files": files, "policy": "stop"}})
        return 1
    count = 0
    for run_id in tick.run_ids if tick.status.value == SUCCESS else []:
        run = context.instance.get_run_by_id(run_id)
        if run is not None and run.tags.get(MISSING_FILES_TAG):
            alerts.send(context, "missing_files", f"missing:{run_id}", {
                "job": run.job_name, "run_id": run_id, "run_url": alerts.run_url(run_id),
                "details": {**details, "files": run.tags[MISSING_FILES_TAG].split("; "),
                            "policy": "continue"}})
            count += 1
    return count
