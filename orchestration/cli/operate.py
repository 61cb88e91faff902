"""Operators' commands: list the workflows' jobs and what they would run, and run or backfill one
of them for a day or a range, through the Dagster webserver's GraphQL API (the same launch and
backfill machinery as the UI, so every run and backfill shows there, queued and watched like
any other).

The day of each run comes from the one rule (assets/run_day.py): without `--day`, a dated job
runs its last complete day, an undated one today.
"""

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import dagster as dg

from assets import spec
from assets.names import (
    TRIGGER_TAG,
    TRIGGERED_BY_TAG,
    WORKFLOW_JOB,
    job_name,
)
from assets.run_day import day_tags, job_dated, resolve_day
from orchestration.spec_loader import LoadedWorkflow
from resources.dagster_runs import REPOSITORY_NAME, DagsterRuns, LaunchFailed

LOCATION = "stagecoach"  # workspace.yaml's location_name
MAX_DAYS = 400  # a range longer than this is a typo more often than a plan


class OperateError(Exception):
    """A command that cannot go on: an unknown job, a bad day, Dagster's refusal."""


@dataclass(frozen=True)
class JobTarget:
    """One workflow job an operator can run."""

    workflow: spec.Workflow
    group: str  # a courier or orchestration group, an automation, or `workflow`
    kind: str  # what the group is, as the listing says it
    name: str  # the Dagster job's name

    @property
    def dated(self) -> bool:
        return job_dated(self.workflow, self.group)


def job_targets(loaded: list[LoadedWorkflow]) -> dict[str, JobTarget]:
    """Every job of every workflow, by its Dagster name."""
    found: dict[str, JobTarget] = {}
    for item in loaded:
        wf = item.spec
        name = wf.workflow.name
        kinds = [(WORKFLOW_JOB, "whole workflow")]
        kinds += [(g, "courier group") for g in wf.courier_groups]
        kinds += [(g, "orchestration group") for g in wf.orchestration_groups]
        kinds += [(a, "automation") for a in wf.automations]
        for group, kind in kinds:
            target = JobTarget(wf, group, kind, job_name(name, group))
            found[target.name] = target
    return found


def find(targets: dict[str, JobTarget], name: str) -> JobTarget:
    """The job called `name`, or an error listing the jobs there are."""
    if name in targets:
        return targets[name]
    raise OperateError(f"unknown job {name!r}; the jobs are: {', '.join(sorted(targets))} "
                       "(`python -m orchestration jobs` lists them with their days)")


def parse_day(text: str, what: str) -> date:
    """A YYYY-MM-DD option's day, or an error naming the option."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise OperateError(f"{what} {text!r} is not a day YYYY-MM-DD (e.g. 2026-11-07)") from None


def plan(target: JobTarget, now: datetime, day: date | None = None,
         first: date | None = None, last: date | None = None) -> list[tuple[str | None, date]]:
    """(partition or None, day) of each run the command would launch: the rule's day, one
    day, or every day of a range. A dated job's days must have partitions: from the
    workflow's start_date to its last complete day."""
    info = target.workflow.workflow
    if day is None and first is None and last is None:
        partition, resolved = resolve_day(info, target.dated, now)
        if target.dated and partition is None:
            raise OperateError(f"{target.name} is dated and its last complete day "
                               f"{resolved.date()} is before the workflow's start_date "
                               f"{info.start_date}: nothing to run yet")
        return [(partition, resolved.date())]
    if day is not None:
        first = last = day
    if first is None or last is None:
        raise OperateError("a range needs both --from and --to")
    if last < first:
        raise OperateError(f"--to {last} is before --from {first}")
    count = (last - first).days + 1
    if count > MAX_DAYS:
        raise OperateError(f"{count} days from {first} to {last}: more than {MAX_DAYS}; split "
                           "the range")
    days = [first + timedelta(days=n) for n in range(count)]
    if target.dated:
        newest, _ = resolve_day(info, True, now)
        start = info.start_date
        outside = [d for d in (first, last) if (start and d < start)
                   or newest is None or d > date.fromisoformat(newest)]
        if outside:
            raise OperateError(
                f"{target.name} is dated: its partitions run from {start} to {newest} (the "
                f"last complete day in {info.timezone}); {outside[0]} is outside them")
    return [(d.isoformat() if target.dated else None, d) for d in days]


def launch_tags(partition: str | None, day: date, by: str) -> dict[str, str]:
    """The tags of a command-line launch: its day (and partition), and who launched it."""
    midnight = datetime(day.year, day.month, day.day)
    return {**day_tags(partition, midnight), TRIGGER_TAG: f"cli by {by}",
            TRIGGERED_BY_TAG: by}


def run_days(dagster_url: str, target: JobTarget, days: list[tuple[str | None, date]],
             by: str) -> list[str]:
    """One run per day, launched like the UI's Launch button; the run ids."""
    runs = _client(dagster_url)
    ids = []
    for partition, day in days:
        try:
            ids.append(runs.launch(target.name, launch_tags(partition, day, by), {}))
        except LaunchFailed as refused:
            raise OperateError(f"Dagster did not launch {target.name} for {day} "
                               f"({len(ids)} launched before it): {refused}") from refused
    return ids


BACKFILL = """
mutation ($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
    __typename ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message } ... on PartitionSetNotFoundError { message }
    ... on PartitionKeysNotFoundError { message } ... on InvalidSubsetError { message }
    ... on UnauthorizedError { message } ... on RunConflict { message }
    ... on InvalidStepError { invalidStepKey } ... on InvalidOutputError { invalidOutputName }
    ... on PresetNotFoundError { message } ... on ConflictingExecutionParamsError { message }
    ... on NoModeProvidedError { message } ... on RunConfigValidationInvalid { errors {
        message } } } }
"""


def backfill(dagster_url: str, target: JobTarget, days: list[tuple[str | None, date]],
             by: str) -> str:
    """A backfill of a dated job's partitions, as the UI's Launch backfill makes it (the
    daemon launches its runs); its id."""
    if not target.dated:
        raise OperateError(f"{target.name} is not dated (no daily partitions): a backfill needs "
                           "partitions; `run --from ... --to ...` launches one run per day")
    partitions = [p for p, _ in days if p]
    tags = {TRIGGER_TAG: f"cli backfill by {by}", TRIGGERED_BY_TAG: by}
    answer = graphql(dagster_url, BACKFILL, {"params": {
        "selector": {"partitionSetName": f"{target.name}_partition_set",
                     "repositorySelector": {"repositoryLocationName": LOCATION,
                                            "repositoryName": REPOSITORY_NAME}},
        "partitionNames": partitions,
        "tags": [{"key": k, "value": v} for k, v in tags.items()],
        "title": f"{target.name} {partitions[0]}..{partitions[-1]}",
    }})["launchPartitionBackfill"]
    if answer.get("__typename") != "LaunchBackfillSuccess":
        raise OperateError(f"Dagster did not launch the backfill of {target.name}: "
                           f"{answer.get('__typename')}: {_message(answer)}")
    return answer["backfillId"]


def _message(answer: dict[str, Any]) -> str:
    if "errors" in answer:
        return "; ".join(e.get("message", "") for e in answer["errors"])
    return str(answer.get("message") or answer)


def graphql(dagster_url: str, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    """POST one query to the webserver's /graphql; its data, or OperateError."""
    base = _base(dagster_url)
    request = urllib.request.Request(f"{base}/graphql", method="POST",
                                     data=json.dumps({"query": query,
                                                      "variables": variables}).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            body = json.loads(answer.read())
    except (OSError, urllib.error.URLError, ValueError) as failed:
        raise OperateError(f"the Dagster webserver at {base} did not answer ({failed}); is it "
                           "running (`make dev`)? Set STAGECOACH_DAGSTER_URL or "
                           "--dagster-url") from failed
    if body.get("errors"):
        raise OperateError(f"Dagster answered: {body['errors'][0].get('message')}")
    return body["data"]


def _base(dagster_url: str) -> str:
    parts = urlsplit(dagster_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise OperateError(f"the Dagster URL must look like http://HOST:PORT, not "
                           f"{dagster_url!r}")
    return dagster_url.rstrip("/")


def _client(dagster_url: str) -> DagsterRuns:
    _base(dagster_url)
    return DagsterRuns(dagster_url, LOCATION)


def instigator_lines(defs: dg.Definitions) -> list[str]:
    """Each schedule and sensor, ON or OFF as the spec says (what `dagster dev` starts)."""
    repository = defs.get_repository_def()
    lines = []
    for schedule in sorted(repository.schedule_defs, key=lambda s: s.name):
        state = "ON " if schedule.default_status == dg.DefaultScheduleStatus.RUNNING else "OFF"
        lines.append(f"  {state} schedule {schedule.name}: {schedule.cron_schedule} "
                     f"({schedule.execution_timezone or 'UTC'}) -> {schedule.job_name}")
    for sensor in sorted(repository.sensor_defs, key=lambda s: s.name):
        state = "ON " if sensor.default_status == dg.DefaultSensorStatus.RUNNING else "OFF"
        jobs = sorted({t.job_name for t in sensor.targets})
        lines.append(f"  {state} sensor   {sensor.name}"
                     + (f" -> {', '.join(jobs)}" if jobs else ""))
    return lines


def job_lines(targets: dict[str, JobTarget], now: datetime) -> list[str]:
    """Each job: what it is, whether it is dated, and the day a launch now would run."""
    lines = []
    for name in sorted(targets):
        target = targets[name]
        info = target.workflow.workflow
        partition, day = resolve_day(info, target.dated, now)
        if target.dated:
            when = (f"dated; now: partition {partition} (last complete day, {info.timezone})"
                    if partition else f"dated; no partition yet (starts {info.start_date})")
        else:
            when = f"undated; now: day {day.date()} ({info.timezone})"
        lines.append(f"{name}  [{target.kind} `{target.group}` of {info.name}] {when}")
    return lines
