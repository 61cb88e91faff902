"""The delivery ledger: one row per file sent (or not sent) to one destination, in the warehouse.

It is the file history operators browse, re-send from and download from: what was produced
(name, size, rows, md5, where its archived copy is), where it went, and whether it arrived. A
row is written as `sending` before the transfer and marked `delivered` only after the
destination confirmed the whole file, so a crash mid-transfer never reads as delivered.
"""

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from typing import Any

from resources.bookkeeping.tables import SCHEMA, BookkeepingTable, new_id, now  # noqa: F401 (new_id re-exported)
from resources.warehouse import WarehouseResource

TABLE = "file_history"
TARGET = f'"{SCHEMA}"."{TABLE}"'

SENDING, DELIVERED, FAILED, EMPTY = "sending", "delivered", "failed", "empty_not_sent"
ALREADY = "already_delivered"


@dataclass(frozen=True)
class LedgerEntry:
    """One delivery of one file to one destination, as stagecoach.file_history keeps it."""

    id: str
    file_id: str  # one produced file; its deliveries and re-sends share it
    workflow: str
    activation: str
    run_id: str
    partition: str | None
    day: str  # the logical day (YYYY-MM-DD) its names and folders were rendered for
    file_name: str
    size: int
    row_count: int | None
    md5: str  # of the file sent (after encryption and zip)
    content_md5: str  # of the content before sealing: the same data re-sealed matches it
    archive_uri: str | None  # where an operator finds the copy (path or s3:// URL)
    archive_path: str | None  # the copy's path inside the workflow's archive connection
    destination: str  # connection name
    destination_uri: str | None
    status: str
    kind: str  # delivery | resend
    resent_from: str | None
    error: str | None
    created_at: datetime
    delivered_at: datetime | None


COLUMNS = [f.name for f in fields(LedgerEntry)]
_TYPES = {"size": "BIGINT", "row_count": "BIGINT", "created_at": "TIMESTAMP",
          "delivered_at": "TIMESTAMP"}


class DeliveryLedger(BookkeepingTable):
    """Reads and writes the ledger table through any warehouse (DuckDB, PostgreSQL...)."""

    def __init__(self, warehouse: WarehouseResource) -> None:
        super().__init__(warehouse, TABLE, COLUMNS, _TYPES)

    def record(self, entry: LedgerEntry) -> LedgerEntry:
        self.ensure()
        self.warehouse.insert_row(SCHEMA, TABLE, asdict(entry))
        return entry

    def mark(self, entry: LedgerEntry, status: str, error: str | None = None) -> LedgerEntry:
        """Set a delivery's outcome; `delivered` stamps the time it was confirmed."""
        delivered_at = now() if status == DELIVERED else None
        self.warehouse.execute(
            f"mark delivery {entry.id} {status}",
            (f'UPDATE {TARGET} SET "status" = {self._p("status")}, "error" = {self._p("error")}, '
             f'"delivered_at" = {self._p("at")} WHERE "id" = {self._p("id")}',
             {"status": status, "error": error, "at": delivered_at, "id": entry.id}))
        return LedgerEntry(**{**asdict(entry), "status": status, "error": error,
                              "delivered_at": delivered_at})

    def get(self, entry_id: str) -> LedgerEntry | None:
        found = self._select(f'"id" = {self._p("id")}', {"id": entry_id})
        return found[0] if found else None

    def find(self, workflow: str | None = None, activation: str | None = None,
             partition: str | None = None, day: str | None = None, status: str | None = None,
             limit: int = 100) -> list[LedgerEntry]:
        """Newest first. `day` is the logical day the file was made for (its `ds`)."""
        where, params = [], {}
        for column, value in (("workflow", workflow), ("activation", activation),
                              ("partition", partition), ("status", status)):
            if value is not None:
                where.append(f'"{column}" = {self._p(column)}')
                params[column] = value
        if day is not None:
            where.append(f'"day" = {self._p("day")}')
            params["day"] = day
        return self._select(" AND ".join(where) or "1 = 1", params, limit)

    def delivered_before(self, activation: str, day: str, destination: str,
                         destination_uri: str, content_md5: str) -> LedgerEntry | None:
        """The same content of the same day already delivered to the same place under the same
        name: a re-run need not send it again (GPG and zip output differ on every run, so the
        content's md5 before sealing is compared). Another day's identical file is sent."""
        found = self._select(
            f'"activation" = {self._p("a")} AND "day" = {self._p("day")} AND '
            f'"destination" = {self._p("d")} AND "destination_uri" = {self._p("u")} AND '
            f'"content_md5" = {self._p("m")} AND "status" = {self._p("s")}',
            {"a": activation, "day": day, "d": destination, "u": destination_uri,
             "m": content_md5, "s": DELIVERED},
            limit=1)
        return found[0] if found else None

    def _select(self, where: str, params: Mapping[str, Any], limit: int = 100
                ) -> list[LedgerEntry]:
        if not self.warehouse.has_table(SCHEMA, TABLE):
            return []
        names = ", ".join(f'"{c}"' for c in COLUMNS)
        rows = self.warehouse.fetch(f'SELECT {names} FROM {TARGET} WHERE {where} '
                                    f'ORDER BY "created_at" DESC, "id" LIMIT {int(limit)}',
                                    params)
        return [LedgerEntry(*row) for row in rows]
