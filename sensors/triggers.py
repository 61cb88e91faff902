"""Spec triggers → Dagster sensors (Dataiku/Serenytics-style "run when something changes").

One sensor per trigger, named `<workflow>_<trigger>_sensor`, requesting its job's run when:

- `file_change`: a file matching the (templated) path is new or changed, and stable;
- `table_change`: a warehouse table's content changed;
- `sql_change`: a query's result changed;
- `python`: a `module:function` says so.

Everything a sensor knows lives in its cursor (JSON, stored by Dagster), never in the clock or
in memory, so a daemon restart neither loses a change nor fires twice. The first tick of a
change-watching sensor records what is there without firing: deploying a trigger never launches
runs for files and tables that were already there, nor does editing what it watches (path,
table, query or callable: the next tick is a first look). Every run request has a run_key unique
to its change: if the daemon dies between launching the run and storing the cursor, the retried tick
asks again with the same key and Dagster drops the duplicate.

Errors are raised, never turned into skips: a source that cannot be listed or queried fails the
tick, and Dagster shows the tick as failed with the message (which names the trigger).
"""

import hashlib
import importlib
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
import duckdb
import pyarrow as pa

from assets import spec
from assets.common import owners_of
from assets.names import (
    TRIGGER_KIND_TAG,
    TRIGGER_TAG,
    WAREHOUSE_KEY,
    WORKFLOW_TAG,
    connection_key,
    job_name,
    sensor_name,
)
from assets.run_day import day_tags, file_day, job_dated, resolve_day
from assets.templating import date_context, render_text
from resources.connections.files import FileConnection, RemoteFile
from resources.connections.retry import single_attempt
from resources.warehouse import WarehouseResource, first_line, qualified
from sensors.common import concurrency_gate, serial_tags

TAG_LIMIT = 200  # longest TRIGGER_TAG value: file lists are cut, with a count of the rest
ABSENT = "absent"  # a watched table that does not exist (yet) has this fingerprint
# The whole row as one value. A bare alias loses to a column of the same name (`hash(t)` of a
# table with a column `t` hashes that column only); no column is named like this one.
ROW = '"_stagecoach row"'


class TriggerError(Exception):
    """A trigger's source could not be read, or its callable failed; names the trigger."""


@dataclass(frozen=True)
class TriggerContext:
    """What a `python` trigger's callable receives.

    `cursor` is this trigger's stored state: `runs` (how many runs it has requested),
    `last_run_at` (ISO time of the last one, or None) and `since` (its first tick). The
    callable returns False or None (no run), True (a run) or a dict (the run's run config).
    """

    sensor: dg.SensorEvaluationContext
    workflow: str
    trigger: str
    params: Mapping[str, Any]
    cursor: Mapping[str, Any] = field(default_factory=dict)


def trigger_definitions(workflow: spec.Workflow) -> dg.Definitions:
    """The triggers' family: one sensor per trigger but webhooks, each launching its group's
    job under that group's `concurrency:` policy (an automation's job queues)."""
    groups = {**workflow.courier_groups, **workflow.orchestration_groups}
    sensors = []
    for name, trigger in workflow.triggers.items():
        target = groups.get(trigger.job)
        sensor = build_trigger_sensor(workflow, name, trigger,
                                      target.concurrency if target else "queue")
        sensors += [sensor] if sensor else []
    return dg.Definitions(sensors=sensors)


def build_trigger_sensor(workflow: spec.Workflow, name: str, trigger: spec.Trigger,
                         concurrency: str) -> dg.SensorDefinition | None:
    """The sensor of one spec trigger; None for `webhook` (an HTTP endpoint launches those).

    `concurrency` is the triggered job's `concurrency:` policy (queue, skip, cancel_running).
    """
    when = trigger.when
    wf = workflow.workflow.name
    if isinstance(when, spec.WebhookTrigger):
        return None
    job = job_name(wf, trigger.job)
    key: str | None  # the resource the sensor reads
    if isinstance(when, spec.FileChange):
        key = conn_key = connection_key(wf, when.connection)
        watches = (f"Runs `{job}` when a file matching `{when.path}` on connection "
                   f"`{when.connection}` is new or changed (taken once two consecutive looks "
                   "agree on its size and mtime).")
        tick = _file_change(workflow, name, when, conn_key)
    elif isinstance(when, spec.TableChange):
        key = WAREHOUSE_KEY
        watches = f"Runs `{job}` when the content of warehouse table `{when.table}` changes."
        tick = _table_change(name, when, key)
    elif isinstance(when, spec.SqlChange):
        key = connection_key(wf, when.connection) if when.connection else WAREHOUSE_KEY
        where = f"connection `{when.connection}`" if when.connection else "the warehouse"
        watches = f"Runs `{job}` when the result of a query on {where} changes."
        tick = _sql_change(name, when, key)
    elif isinstance(when, spec.PythonTrigger):
        key = None
        watches = f"Runs `{job}` when `{when.callable}` (called on every tick) asks for a run."
        tick = _python(workflow, name, when)
    else:  # the spec's union grew: fail at load, not on a night tick
        raise TypeError(f"trigger {name!r}: no sensor for kind {when.kind!r}")
    description = (f"{trigger.description}\n\n" if trigger.description else "") + \
        f"{watches} Checked every {trigger.every}."

    dated = job_dated(workflow, trigger.job)
    # What is watched, as the spec says it: when an edit changes it, the next tick is a first
    # look again (a new path or table is recorded, not fired for, like a new deploy).
    watch = _digest(when.model_dump(mode="json"))[:12]

    def evaluate(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        cursor = _read_cursor(name, context.cursor)
        if cursor is not None and cursor.pop("watch", None) != watch:
            cursor = None
        outcome = tick(context, cursor)
        stored = _dump({**outcome.cursor, "watch": watch})
        if outcome.request is None:
            return dg.SensorResult(skip_reason=outcome.reason, cursor=stored)
        skip = concurrency_gate(context, job, concurrency)
        if skip is not None:  # `skip` drops this change: the cursor moves on without a run
            return dg.SensorResult(skip_reason=skip, cursor=stored)
        run_key, changed, run_config = outcome.request
        tags = {TRIGGER_TAG: _cut(f"{name}: {changed}"), **serial_tags(job, concurrency)}
        # The run's day (assets/run_day.py): the files' day unless the trigger says otherwise.
        # A dated job gets one run per day of the files (each its partition), an undated one
        # one run on the newest file's day.
        days: tuple[date | None, ...] = (None,)
        if trigger.partition is None and outcome.days:
            days = outcome.days if dated else (max(outcome.days),)
        now, requests, early = datetime.now(UTC), [], []
        for arrived in days:
            partition, day = resolve_day(workflow.workflow, dated, now, trigger.partition,
                                         arrived)
            if dated and partition is None:
                early.append(day.date().isoformat())
                continue
            key = f"{run_key}:{day.date().isoformat()}" if len(days) > 1 else run_key
            requests.append(dg.RunRequest(
                run_key=key, run_config=run_config or {}, partition_key=partition,
                tags=tags | day_tags(partition, day, with_partition=False)))
        if not requests:
            return dg.SensorResult(skip_reason=(
                f"{changed}, but its day ({', '.join(early)}) is before the workflow's "
                f"start_date {workflow.workflow.start_date}: no partition to run"), cursor=stored)
        return dg.SensorResult(run_requests=requests, cursor=stored)

    return dg.SensorDefinition(
        name=sensor_name(wf, name),
        evaluation_fn=evaluate,
        job_name=job,
        minimum_interval_seconds=spec.seconds_of(trigger.every),
        description=description,
        default_status=(dg.DefaultSensorStatus.RUNNING if trigger.enabled
                        else dg.DefaultSensorStatus.STOPPED),
        required_resource_keys={key} if key else None,
        tags={WORKFLOW_TAG: wf, TRIGGER_KIND_TAG: when.kind},
        owners=owners_of(workflow, trigger),
    )


# ---------------------------------------------------------------- one tick's outcome


@dataclass(frozen=True)
class _Outcome:
    """The new cursor, and either a run request (run_key, what changed, run config) or why
    there is none."""

    cursor: dict[str, Any]
    request: tuple[str, str, dict[str, Any] | None] | None = None
    reason: str = ""
    days: tuple[date, ...] = ()  # file_change: the days of the files taken


_Tick = Callable[[dg.SensorEvaluationContext, dict[str, Any] | None], _Outcome]


def _read_cursor(name: str, raw: str | None) -> dict[str, Any] | None:
    """The stored state, or None on the first tick (or after the cursor was reset)."""
    if not raw:
        return None
    try:
        state = json.loads(raw)
    except json.JSONDecodeError:
        state = None
    if not isinstance(state, dict):
        raise TriggerError(f"trigger {name}: the stored cursor is not this trigger's "
                           f"({raw[:60]!r}); reset the sensor's cursor to start afresh")
    return state


def _dump(state: dict[str, Any]) -> str:
    return json.dumps(state, sort_keys=True, separators=(",", ":"))


def _digest(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _cut(text: str) -> str:
    return text if len(text) <= TAG_LIMIT else text[:TAG_LIMIT - 3] + "..."


# ---------------------------------------------------------------- file_change


def _file_change(workflow: spec.Workflow, name: str, when: spec.FileChange,
                 key: str) -> _Tick:
    """Cursor: `{"files": {path: [size, mtime, taken]}}`, the last look at every matching file.

    A file is taken (fires) when two consecutive looks agree on its size and mtime and that
    version was not taken yet: a file still being written waits, a file whose mtime is older
    than anything seen still fires, and a file that lands while a tick runs is in the next
    listing. Files that no longer match leave the cursor (so it stays the size of the listing);
    one that comes back is new again.
    """
    info = workflow.workflow

    def tick(context: dg.SensorEvaluationContext, cursor: dict[str, Any] | None) -> _Outcome:
        today = datetime.now(ZoneInfo(info.timezone)).date()
        pattern = render_text(when.path, {**date_context(today, info.params),
                                          "workflow": info.name})
        connection: FileConnection = getattr(context.resources, key)
        try:
            with single_attempt():  # the next tick is the retry
                listing = connection.list_files(pattern)
        except Exception as failed:  # re-raised with the trigger and connection named
            raise TriggerError(f"trigger {name}: cannot list {pattern!r} on connection "
                               f"{when.connection!r}: {first_line(failed)}") from failed
        return _look(listing, cursor, pattern, info.timezone)

    return tick


def _look(listing: list[RemoteFile], cursor: dict[str, Any] | None, pattern: str,
          timezone: str = "UTC") -> _Outcome:
    """Compare one listing with the previous look (see `_file_change`)."""
    if cursor is None:
        files = {f.path: [f.size, f.mtime, True] for f in listing}
        return _Outcome({"files": files}, reason=f"first look: {len(files)} file(s) matching "
                                                  f"{pattern!r} recorded, none taken")
    before: dict[str, list[Any]] = cursor.get("files", {})
    files: dict[str, list[Any]] = {}
    taken: list[RemoteFile] = []
    waiting: list[str] = []
    for f in listing:
        previous = before.get(f.path)
        if previous is None or previous[:2] != [f.size, f.mtime]:
            files[f.path] = [f.size, f.mtime, False]  # new or still changing: look again
            waiting.append(f.path)
        else:
            files[f.path] = [f.size, f.mtime, True]
            if not previous[2]:
                taken.append(f)
    state = {"files": files}
    if not taken:
        detail = (f"; waiting for {len(waiting)} new or changing file(s) to be stable: "
                  + ", ".join(waiting[:5])) if waiting else ""
        return _Outcome(state, reason=f"no new or changed file matching {pattern!r} "
                                      f"({len(listing)} seen){detail}")
    run_key = _digest("file_change", sorted((f.path, f.size, f.mtime) for f in taken))
    names = ", ".join(f.path for f in taken[:5])
    more = f" (+{len(taken) - 5} more)" if len(taken) > 5 else ""
    days = tuple(sorted({file_day(f.path, f.mtime, timezone) for f in taken}))
    return _Outcome(state, (run_key, f"{len(taken)} new or changed file(s): {names}{more}",
                            None), days=days)


# ---------------------------------------------------------------- table_change and sql_change


def _now() -> str:
    return datetime.now(ZoneInfo("UTC")).isoformat()


def _changed(name: str, kind: str, cursor: dict[str, Any] | None, fingerprint: str,
             what: str) -> _Outcome:
    """Cursor: `{"fingerprint": ..., "changes": n, "since": first look}`.

    The n-th change since the first look has its own run_key, so a table that changes back and
    forth fires every time, a retried tick never twice, and a reset cursor (a new first look)
    never reuses an old key.
    """
    if cursor is None:
        return _Outcome({"fingerprint": fingerprint, "changes": 0, "since": _now()},
                        reason=f"first look: {what} recorded, no run")
    if cursor.get("fingerprint") == fingerprint:
        return _Outcome(dict(cursor), reason=f"{what}: no change")
    state = {**cursor, "fingerprint": fingerprint, "changes": int(cursor.get("changes", 0)) + 1}
    run_key = _digest(kind, name, state.get("since"), state["changes"], fingerprint)
    return _Outcome(state, (run_key, f"{what} changed", None))


def table_fingerprint(warehouse: WarehouseResource, table: str) -> str:
    """Row count and the sum of every row's hash, in one statement run by the database.

    The sum makes it independent of row order and constant in memory. DuckDB hashes the row
    itself (`hash(row)`, ~50M rows/s; a DuckDB upgrade that changes its hash function fires the
    trigger once); PostgreSQL hashes each row's text with `hashtextextended`, which stays
    stable across versions because hash partitioning depends on it.
    """
    schema, name = table.split(".", 1)
    target = qualified(schema, name)
    if warehouse.is_duckdb:
        sql = f"SELECT count(*), coalesce(sum(hash({ROW})), 0) FROM {target} AS {ROW}"
    elif warehouse.engine().dialect.name == "postgresql":
        sql = (f"SELECT count(*), coalesce(sum(hashtextextended({ROW}::text, 0)), 0) "
               f"FROM {target} AS {ROW}")
    else:
        raise TriggerError(f"table_change works on DuckDB and PostgreSQL warehouses, not "
                           f"{warehouse.engine().dialect.name}; use a sql_change trigger")
    if not warehouse.has_table(schema, name):
        return ABSENT
    [(rows, total)] = warehouse.fetch(sql)
    return f"{rows}:{total}"


def _table_change(name: str, when: spec.TableChange, key: str) -> _Tick:
    def tick(context: dg.SensorEvaluationContext, cursor: dict[str, Any] | None) -> _Outcome:
        warehouse: WarehouseResource = getattr(context.resources, key)
        try:
            fingerprint = table_fingerprint(warehouse, when.table)
        except TriggerError as failed:
            raise TriggerError(f"trigger {name}: {failed}") from failed
        except Exception as failed:  # re-raised with the trigger and table named
            raise TriggerError(f"trigger {name}: cannot read table {when.table} in the "
                               f"warehouse: {first_line(failed)}") from failed
        what = f"table {when.table}" + (" (absent)" if fingerprint == ABSENT else "")
        return _changed(name, "table_change", cursor, fingerprint, what)

    return tick


def result_fingerprint(batches: Iterator[pa.RecordBatch]) -> str:
    """A hash of a whole query result, batch by batch (one batch in memory at a time).

    Rows are hashed as a multiset (count and the sum of DuckDB's hash of each row), so a query
    without ORDER BY whose rows come back in another order is not a change; the column names
    count too.
    """
    rows, total, names = 0, 0, None
    with duckdb.connect() as con:
        con.execute("SET enable_progress_bar = false")
        for batch in batches:
            if names is None:
                names = batch.schema.names
            if batch.num_rows == 0:
                continue
            con.register("result_batch", pa.Table.from_batches([batch]))
            [(count, summed)] = con.execute(
                f"SELECT count(*), coalesce(sum(hash({ROW})), 0) FROM result_batch AS {ROW}"
            ).fetchall()
            con.unregister("result_batch")
            rows, total = rows + count, total + int(summed)
    return _digest(names, rows, total)


def _sql_change(name: str, when: spec.SqlChange, key: str) -> _Tick:
    where = f"connection {when.connection!r}" if when.connection else "the warehouse"

    def tick(context: dg.SensorEvaluationContext, cursor: dict[str, Any] | None) -> _Outcome:
        database: WarehouseResource = getattr(context.resources, key)
        try:
            fingerprint = result_fingerprint(database.batches(when.query))
        except Exception as failed:  # re-raised with the trigger and connection named
            raise TriggerError(f"trigger {name}: the query on {where} failed: "
                               f"{first_line(failed)}") from failed
        return _changed(name, "sql_change", cursor, fingerprint, f"the query on {where}")

    return tick


# ---------------------------------------------------------------- python


def _python(workflow: spec.Workflow, name: str, when: spec.PythonTrigger) -> _Tick:
    """Cursor: `{"runs": n, "last_run_at": iso, "since": first tick}`; the n-th run's run_key
    is made of the trigger, `since` and n, so a retried tick cannot launch it twice."""
    module_name, _, function_name = when.callable.partition(":")

    def tick(context: dg.SensorEvaluationContext, cursor: dict[str, Any] | None) -> _Outcome:
        state: dict[str, Any] = dict(cursor or {"runs": 0, "last_run_at": None, "since": _now()})
        try:
            function = getattr(importlib.import_module(module_name), function_name)
            answer = function(TriggerContext(context, workflow.workflow.name, name,
                                             dict(workflow.workflow.params), dict(state)))
        except Exception as failed:  # the user's error, re-raised with the callable named
            raise TriggerError(f"trigger {name}: {when.callable} raised "
                               f"{type(failed).__name__}: {failed}") from failed
        if answer is None or answer is False:
            return _Outcome(state, reason=f"{when.callable} returned {answer}: no run")
        if answer is not True and not isinstance(answer, dict):
            raise TriggerError(f"trigger {name}: {when.callable} returned "
                               f"{type(answer).__name__}; return True, False, None or a run "
                               "config dict")
        state = {**state, "runs": int(state.get("runs", 0)) + 1, "last_run_at": _now()}
        run_key = _digest("python", name, state.get("since"), state["runs"])
        config = answer if isinstance(answer, dict) else None
        said = "a run config" if config is not None else "True"
        return _Outcome(state, (run_key, f"{when.callable} returned {said}", config))

    return tick
