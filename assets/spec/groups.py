"""Courier and orchestration groups, their schedules, and the triggers that start them."""

from typing import Annotated, Literal

import dagster as dg
from pydantic import (
    Field,
    field_validator,
)

from assets.spec.common import Model, Name, Owner, Secret, TimeZone

Duration = Annotated[str, Field(pattern=r"^\d+(s|m|h|d)$",
                                description="A duration such as 90s, 30m, 2h or 1d.")]


def seconds_of(duration: str) -> int:
    """A spec duration (90s, 30m, 2h, 1d) in seconds."""
    return int(duration[:-1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[duration[-1]]


class Schedule(Model):
    cron: str = Field(description="Cron expression, e.g. '0 2 * * *' (02:00 every day).")
    timezone: TimeZone | None = Field(None, description="IANA name; default the workflow's.")
    enabled: bool = Field(True, description="False: the schedule exists but is stopped.")

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, cron: str) -> str:
        if not _valid_cron(cron):
            raise ValueError(f"{cron!r} is not a cron expression (five fields: minute hour "
                             "day-of-month month day-of-week, e.g. '0 2 * * *')")
        return cron



def _valid_cron(cron: str) -> bool:
    """Whether Dagster accepts `cron` for a schedule: the check Dagster applies, through its
    public API (a throwaway schedule definition)."""
    try:
        dg.ScheduleDefinition(name="cron_check", cron_schedule=cron, job_name="cron_check")
    except dg.DagsterInvalidDefinitionError:
        return False
    return True


Concurrency = Literal["queue", "skip", "cancel_running"]


class WaitForFiles(Model):
    """Amperity's "wait for missing files": look again until they arrive or the deadline."""

    up_to: Duration = Field(description="Deadline after the scheduled time, e.g. 2h.")
    every: Duration = Field("5m", description="How often the source is looked at.")
    then: Literal["notify_and_continue", "notify_and_stop"] = Field(
        "notify_and_stop", description="What happens when the deadline passes.")


class CourierGroup(Model):
    """Couriers loaded together: a job, its schedule and its missing-file policy."""

    couriers: list[Name] = Field(min_length=1)
    run: Literal["load", "load_and_build", "load_build_and_activate"] = Field(
        "load_build_and_activate", description="Load only; load and build the databases and "
                                               "queries downstream; or also run activations.")
    schedule: Schedule | None = None
    missing_files: Literal["notify_and_continue", "notify_and_stop", "wait"] = \
        "notify_and_stop"
    wait: WaitForFiles | None = None
    duration_alert: Duration | None = Field(
        None, description="Alert when a run takes longer (the run goes on).")
    concurrency: Concurrency = Field(
        "queue", description="When triggered while a run of this group is queued or going: "
                             "queue, skip (the tick says why), or cancel_running.")
    enabled: bool = Field(True, description="False: schedule and sensors exist but are stopped.")
    description: str | None = None
    owners: list[Owner] | None = None


class OrchestrationGroup(Model):
    """Activations (and the queries/databases they need) run after a courier group, or on a
    schedule: Amperity's orchestration groups and recurring campaigns."""

    activations: list[Name] = Field(min_length=1)
    queries: list[Name] = Field(default_factory=list)
    databases: list[Name] = Field(default_factory=list)
    after: Name | None = Field(None, description="A courier group: run once after each of its "
                                                 "successful runs.")
    schedule: Schedule | None = None
    duration_alert: Duration | None = None
    concurrency: Concurrency = "queue"
    enabled: bool = True
    description: str | None = None
    owners: list[Owner] | None = None


class FileChange(Model):
    kind: Literal["file_change"]
    connection: Name
    path: str = Field(description="File or glob (in the name) to watch.")


class TableChange(Model):
    kind: Literal["table_change"]
    table: str = Field(description="A warehouse table, schema.table (e.g. domain.customers).")


class SqlChange(Model):
    kind: Literal["sql_change"]
    connection: Name | None = Field(None, description="A `sql` connection; default the "
                                                      "warehouse.")
    query: str


class PythonTrigger(Model):
    kind: Literal["python"]
    callable: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
                          description="module:function returning a bool or a run config dict.")


class WebhookTrigger(Model):
    kind: Literal["webhook"]
    token: Secret = Field(description="The caller's bearer token, from an environment variable.")
    require_request_id: bool = Field(
        False, description="Every call must carry an X-Request-Id; an id seen in the last 10 "
                           "minutes is refused (409), so a repeated request never launches "
                           "twice. Without it, ids are still honoured when sent.")
    params: dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")],
                 Literal["int", "float", "str", "bool", "date"]] = Field(
        default_factory=dict,
        description="What a caller may pass in the body's `params`, name → type (int, float, "
                    "str, bool, date): the run's templates see them as `params.<name>`, over "
                    "the workflow's own params. Anything else is refused (400).")


TriggerWhen = Annotated[FileChange | TableChange | SqlChange | PythonTrigger | WebhookTrigger,
                        Field(discriminator="kind")]


class Trigger(Model):
    """Dataiku/Serenytics triggers: launch a job when something changes or is called."""

    job: Name = Field(description="A courier group, an orchestration group, or `workflow` for "
                                  "the whole workflow's job.")
    when: TriggerWhen
    partition: Literal["today", "last_complete_day"] | None = Field(
        None, description="The day the run works on (its partition if the job is dated). "
                          "Default: the day of the file that arrived (file_change), else "
                          "the last complete day for a dated job and today for an undated "
                          "one. `today` is for undated jobs only.")
    every: Duration = Field("1m", description="How often the sensor looks.")
    enabled: bool = True
    description: str | None = None
