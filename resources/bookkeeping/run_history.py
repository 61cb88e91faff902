"""The run history: one row per alert sent and per finished run, in the warehouse, so operators
can query how workflows ran (durations, failures, what was alerted) next to their data.

The table `stagecoach.run_history` is created on first use and gains the columns a newer
Stagecoach records; its types are portable (TEXT, TIMESTAMP, DOUBLE PRECISION) so DuckDB and
PostgreSQL hold the same thing. Every value goes in as a bound parameter.
"""

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import duckdb
from pydantic import PrivateAttr
from sqlalchemy import exc as sa_exc

from resources.bookkeeping.tables import SCHEMA, BookkeepingTable, new_id, now
from resources.channels.alerting import AlertDeliveryError, AlertMessage
from resources.warehouse import WarehouseError, WarehouseResource, first_line

TABLE = "run_history"
TARGET = f'"{SCHEMA}"."{TABLE}"'
ALERT, RUN = "alert", "run"
ERROR_MAX_CHARS = 4000


@dataclass(frozen=True)
class RunRecord:
    """One row of stagecoach.run_history: a finished run or an alert sent."""

    id: str
    recorded_at: datetime  # UTC, without a zone
    kind: str  # alert | run
    event: str | None  # an alert's event; a run's final status in lower case
    workflow: str
    job: str | None
    run_id: str | None
    status: str | None
    started_at: datetime | None
    ended_at: datetime | None
    duration_seconds: float | None
    failed_step: str | None
    error: str | None
    title: str | None
    details: dict[str, Any]  # an alert's text, run URL and details; a run's tags


COLUMNS = [f.name for f in fields(RunRecord)]
_TYPES = {"recorded_at": "TIMESTAMP", "started_at": "TIMESTAMP", "ended_at": "TIMESTAMP",
          "duration_seconds": "DOUBLE PRECISION"}


def utc(moment: datetime | float | None) -> datetime | None:
    """A datetime or a Unix timestamp (as Dagster's run records give) as naive UTC."""
    if moment is None:
        return None
    if isinstance(moment, int | float):
        return datetime.fromtimestamp(moment, UTC).replace(tzinfo=None)
    if moment.tzinfo is not None:
        return moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def _capped(text: str | None) -> str | None:
    if text is None or len(text) <= ERROR_MAX_CHARS:
        return text
    return text[: ERROR_MAX_CHARS - 3] + "..."


class RunHistory(BookkeepingTable):
    """Appends to and reads the run-history table through any warehouse."""

    def __init__(self, warehouse: WarehouseResource) -> None:
        super().__init__(warehouse, TABLE, COLUMNS, _TYPES)

    def _append(self, record: RunRecord) -> RunRecord:
        self.ensure()
        values = asdict(record)
        values["details"] = json.dumps(record.details, default=str, ensure_ascii=False,
                                       sort_keys=True)
        self.warehouse.insert_row(SCHEMA, TABLE, values)
        return record

    def record_alert(self, message: AlertMessage) -> RunRecord:
        """One row for an alert: its facts in columns, its text and run URL in details."""
        return self._append(RunRecord(
            id=new_id(), recorded_at=now(), kind=ALERT, event=message.event,
            workflow=message.workflow, job=message.job, run_id=message.run_id,
            status=message.status, started_at=None, ended_at=None,
            duration_seconds=message.duration_seconds, failed_step=message.failed_step,
            error=_capped(message.error), title=message.title,
            details={"text": message.text, "run_url": message.run_url,
                     "details": dict(message.details)}))

    def record_run(self, workflow: str, job: str | None, run_id: str | None, status: str,
                   started_at: datetime | float | None, ended_at: datetime | float | None,
                   failed_step: str | None = None, error: str | None = None,
                   tags: Mapping[str, str] | None = None) -> RunRecord:
        """One row for a finished run; its duration comes from its start and end."""
        start, end = utc(started_at), utc(ended_at)
        duration = (end - start).total_seconds() if start and end else None
        return self._append(RunRecord(
            id=new_id(), recorded_at=now(), kind=RUN, event=status.lower(), workflow=workflow,
            job=job, run_id=run_id, status=status, started_at=start, ended_at=end,
            duration_seconds=duration, failed_step=failed_step, error=_capped(error),
            title=None, details={"tags": dict(tags or {})}))

    def recent(self, workflow: str | None = None, limit: int = 100) -> list[RunRecord]:
        """Newest first; all workflows unless one is named."""
        if not self.warehouse.has_table(SCHEMA, TABLE):
            return []
        where, params = ("1 = 1", {}) if workflow is None else (
            f'"workflow" = {self._p("workflow")}', {"workflow": workflow})
        names = ", ".join(f'"{c}"' for c in COLUMNS)
        rows = self.warehouse.fetch(f"SELECT {names} FROM {TARGET} WHERE {where} "
                                    f'ORDER BY "recorded_at" DESC, "id" DESC LIMIT {int(limit)}',
                                    params)
        return [_record(row) for row in rows]


def _record(row: tuple) -> RunRecord:
    values = dict(zip(COLUMNS, row, strict=True))
    try:
        values["details"] = json.loads(values["details"]) if values["details"] else {}
    except ValueError:  # written by hand: keep it readable rather than fail the listing
        values["details"] = {"unparsed": values["details"]}
    if values["duration_seconds"] is not None:
        values["duration_seconds"] = float(values["duration_seconds"])
    return RunRecord(**values)


class DatasetChannel(dg.ConfigurableResource):
    """An alert channel that appends each alert to the run-history table ("send to dataset");
    the run-status sensor also records finished runs through it."""

    warehouse: WarehouseResource
    _history: RunHistory | None = PrivateAttr(None)

    def history(self) -> RunHistory:
        if self._history is None:
            self._history = RunHistory(self.warehouse)
        return self._history

    def describe(self) -> str:
        kind = self.warehouse.url.partition(":")[0].partition("+")[0]
        return f"dataset {SCHEMA}.{TABLE} ({kind} warehouse)"

    def _failed(self, failed: Exception) -> AlertDeliveryError:
        # WarehouseError names the table, never the URL; a driver error's first line neither
        return AlertDeliveryError(f"{self.describe()}: {first_line(failed)}")

    def send_alert(self, message: AlertMessage) -> None:
        try:
            self.history().record_alert(message)
        except (WarehouseError, sa_exc.SQLAlchemyError, duckdb.Error) as failed:
            raise self._failed(failed) from None

    def record_run(self, workflow: str, job: str | None, run_id: str | None, status: str,
                   started_at: datetime | float | None, ended_at: datetime | float | None,
                   failed_step: str | None = None, error: str | None = None,
                   tags: Mapping[str, str] | None = None) -> RunRecord:
        try:
            return self.history().record_run(workflow, job, run_id, status, started_at,
                                              ended_at, failed_step, error, tags)
        except (WarehouseError, sa_exc.SQLAlchemyError, duckdb.Error) as failed:
            raise self._failed(failed) from None
