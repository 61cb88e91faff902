"""The one rule for the day a run works on, used by every launcher: schedules, the wait-for-files
and run-after sensors, triggers, the webhook, chains and the command line.

- A dated job (it loads or delivers a dated courier: daily partitions) works on the last
  complete day in the workflow's time zone, as its schedule does: at 03:00 it loads yesterday's
  files, whose day is over. A file-arrival trigger works on the day of the file that arrived.
- An undated job works on the launch's own day (`today`).
- A trigger can say otherwise with `partition: today | last_complete_day` (`today` only for an
  undated job: a dated job's partition for today exists once the day is over).

Every run gets the day as a tag (RUN_DAY_TAG; a dated run also its partition), so a run
launched from a schedule, a sensor, a webhook, a chain or the CLI says which day it is about.
"""

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from assets import spec
from assets.names import PARTITION_TAG, RUN_DAY_TAG, WORKFLOW_JOB

DayRule = Literal["today", "last_complete_day"]
DAY_RULES: tuple[DayRule, ...] = ("today", "last_complete_day")
# A date written in a file name: 2026-11-07, 2026_11_07 or 20261107 (not inside a longer number).
_FILE_DATE = re.compile(r"(?<!\d)(20\d\d)[-_]?(0[1-9]|1[0-2])[-_]?(0[1-9]|[12]\d|3[01])(?!\d)")


@dataclass(frozen=True)
class Calendar:
    """What the rule needs of a workflow: its time zone and first partition (for launchers that
    keep no spec, such as the webhook's targets)."""

    timezone: str
    start_date: date | None = None


def job_dated(workflow: spec.Workflow, group: str) -> bool:
    """Whether a group's job (or `workflow`, the whole workflow's) is daily-partitioned: it
    loads or delivers a dated courier of a workflow with a start_date."""
    if workflow.workflow.start_date is None:
        return False
    if group == WORKFLOW_JOB:
        return any(c.dated for c in workflow.couriers.values())
    if group in workflow.courier_groups:
        return any(workflow.couriers[c].dated for c in workflow.courier_groups[group].couriers)
    if group in workflow.orchestration_groups:
        return any(workflow.activations[a].courier
                   and workflow.couriers[workflow.activations[a].courier or ""].dated
                   for a in workflow.orchestration_groups[group].activations)
    return False  # an automation: its children's jobs resolve their own day


def last_complete_day(timezone: str, at: datetime) -> date:
    """The last day that is over at `at` in `timezone`."""
    return at.astimezone(ZoneInfo(timezone)).date() - timedelta(days=1)


def resolve_day(info: spec.WorkflowInfo | Calendar, dated: bool, at: datetime,
                rule: DayRule | None = None, file_day: date | None = None
                ) -> tuple[str | None, datetime]:
    """(partition key or None, the day as a midnight in the workflow's time zone) of a run
    launched at `at`: `file_day` first (a file-arrival trigger), else `rule`, else the default
    (a dated job: the last complete day; an undated one: `at`'s own day). A dated job's day
    before the workflow's start_date has no partition (None)."""
    zone = ZoneInfo(info.timezone)
    local = at.astimezone(zone)
    if file_day is not None:
        day = file_day
    elif (rule or ("last_complete_day" if dated else "today")) == "today":
        day = local.date()
    else:
        day = local.date() - timedelta(days=1)
    midnight = datetime(day.year, day.month, day.day, tzinfo=zone)
    if not dated:
        return None, midnight if (file_day or rule) else local
    if info.start_date is not None and day < info.start_date:
        return None, midnight
    return day.isoformat(), midnight


def run_partition(workflow: spec.Workflow, group: str, at: datetime,
                  rule: DayRule | None = None) -> str | None:
    """The partition a run of `group` launched at `at` works on (None: undated)."""
    return resolve_day(workflow.workflow, job_dated(workflow, group), at, rule)[0]


def day_tags(partition: str | None, day: datetime, with_partition: bool = True
             ) -> dict[str, str]:
    """The tags a launch sets: the run's day, and its partition when dated. A RunRequest sets
    the partition through `partition_key` (Dagster then adds its partition tags itself), so
    schedules and sensors pass `with_partition=False`."""
    tags = {RUN_DAY_TAG: day.date().isoformat()}
    if partition and with_partition:
        tags[PARTITION_TAG] = partition
    return tags


def file_day(path: str, mtime: float | None, timezone: str) -> date:
    """The day of an arrived file: a date in its name (the last one, as in
    `orders/2026/orders_20261107.csv`), else the day it was last modified in `timezone`
    (a listing without times: today)."""
    name = path.rsplit("/", 1)[-1]
    for candidate in reversed(list(_FILE_DATE.finditer(name)) or list(_FILE_DATE.finditer(path))):
        try:
            return date(int(candidate[1]), int(candidate[2]), int(candidate[3]))
        except ValueError:
            continue
    if mtime is None:
        return datetime.now(ZoneInfo(timezone)).date()
    return datetime.fromtimestamp(mtime, ZoneInfo(timezone)).date()
