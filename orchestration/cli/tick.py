"""One tick of a schedule or sensor, evaluated in this process without the daemon.

`python -m orchestration tick NAME` shows what the daemon's next tick would ask for: each run
request (job, run key, partition, tags) or the reason it skips. Nothing is launched and no
cursor is stored; a sensor's new cursor is printed so that the following tick can be tried with
`--cursor`. Built on Dagster's public test contexts (`dg.build_schedule_context`,
`dg.build_sensor_context(definitions=...)`) and the definitions' `resolve_schedule_def` /
`resolve_sensor_def`, so the code that runs is the code the daemon runs.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

import dagster as dg


class TickError(Exception):
    """The tick cannot be evaluated as asked (unknown name, a bad option); says what to do."""


@dataclass(frozen=True)
class Tick:
    """What one schedule or sensor tick did, as the `tick` command reports it."""

    name: str
    kind: str  # "schedule" or "sensor"
    job: str | None  # what it launches, when it launches one job
    run_requests: list[dg.RunRequest] = field(default_factory=list)
    skip_reason: str | None = None
    cursor: str | None = None  # a sensor's cursor after this tick
    at: datetime | None = None  # a schedule's tick time


def _names(defs: dg.Definitions) -> tuple[list[str], list[str]]:
    repository = defs.get_repository_def()
    return (sorted(s.name for s in repository.schedule_defs),
            sorted(s.name for s in repository.sensor_defs))


def evaluate_tick(defs: dg.Definitions, name: str, instance: dg.DagsterInstance,
                  cursor: str | None = None, at: datetime | None = None) -> Tick:
    """Evaluate schedule or sensor `name` once. `at` is a schedule's tick time (naive: in the
    schedule's time zone; default now); `cursor` a sensor's cursor (default none: its first
    tick)."""
    schedules, sensors = _names(defs)
    if name in schedules:
        if cursor is not None:
            raise TickError(f"{name} is a schedule: schedules have no cursor (leave out "
                            "--cursor; --time picks the tick)")
        schedule = defs.resolve_schedule_def(name)
        zone = ZoneInfo(schedule.execution_timezone or "UTC")
        when = (at if at is None or at.tzinfo else at.replace(tzinfo=zone)) or datetime.now(zone)
        context = dg.build_schedule_context(instance=instance, scheduled_execution_time=when,
                                            resources=defs.resources,
                                            repository_def=defs.get_repository_def())
        data = schedule.evaluate_tick(context)
        return Tick(name, "schedule", schedule.job_name, list(data.run_requests or []),
                    data.skip_message, None, when)
    if name in sensors:
        if at is not None:
            raise TickError(f"{name} is a sensor: a sensor's tick is now (leave out --time; "
                            "--cursor sets what it saw before)")
        sensor = defs.resolve_sensor_def(name)
        context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs,
                                          resources=defs.resources, sensor_name=name)
        data = sensor.evaluate_tick(context)
        jobs = {target.job_name for target in sensor.targets}
        return Tick(name, "sensor", jobs.pop() if len(jobs) == 1 else None,
                    list(data.run_requests or []), data.skip_message, data.cursor)
    known = ", ".join([*schedules, *sensors]) or "none"
    raise TickError(f"no schedule or sensor named {name!r} (known: {known})")


def tick_lines(tick: Tick) -> list[str]:
    """What an operator reads: the tick, then each run request or the skip reason."""
    when = f" at {tick.at.isoformat()}" if tick.at else ""
    lines = [f"{tick.kind} {tick.name}{when}:"]
    for number, request in enumerate(tick.run_requests, 1):
        job = request.job_name or tick.job or "-"
        lines.append(f"  run request {number}: job {job}, run key {request.run_key or '-'}, "
                     f"partition {request.partition_key or '-'}")
        lines += [f"    tag {key}={value}" for key, value in sorted(request.tags.items())]
    if tick.skip_reason:
        lines.append(f"  skipped: {tick.skip_reason}")
    elif not tick.run_requests:
        lines.append("  no run requested")
    if tick.kind == "sensor":
        lines.append(f"  cursor: {tick.cursor if tick.cursor is not None else '-'}")
    return lines


@contextmanager
def tick_instance() -> Iterator[tuple[dg.DagsterInstance, str]]:
    """$DAGSTER_HOME's instance (the runs and ticks the daemon sees), else a temporary one;
    with a line saying which."""
    import os

    if home := os.environ.get("DAGSTER_HOME"):
        if not os.path.isdir(home):
            raise TickError(f"$DAGSTER_HOME is {home!r}, which is not a directory; create it "
                            "(mkdir -p) or point DAGSTER_HOME at your instance's folder")
        with dg.DagsterInstance.get() as instance:
            yield instance, f"instance: $DAGSTER_HOME ({os.environ['DAGSTER_HOME']})"
    else:
        with dg.DagsterInstance.local_temp() as instance:
            yield instance, ("instance: a temporary one ($DAGSTER_HOME is not set), so "
                             "run-status sensors see no runs")
