"""Stagecoach's own tables in the warehouse (the delivery ledger, the run history): one schema,
portable column types, created on first use through any warehouse (DuckDB, PostgreSQL...).

A table gains the columns a newer Stagecoach records, once per process; values always go in as
bound parameters (`param` gives the warehouse's placeholder for one).
"""

import threading
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import ClassVar

from resources.warehouse import WarehouseResource

SCHEMA = "stagecoach"


def new_id() -> str:
    """A short random id for a bookkeeping row."""
    return uuid.uuid4().hex[:16]


def now() -> datetime:
    """The time a row is written."""
    return datetime.now(UTC).replace(tzinfo=None)  # stored as UTC without a zone, portably


class BookkeepingTable:
    """One of Stagecoach's tables: `columns` are TEXT unless `types` says otherwise; `id` is
    the primary key."""

    # (warehouse URL, table, columns) ensured in this process: the objects are built per step,
    # so a flag on each one would re-check the warehouse's catalogue every time.
    _ensured: ClassVar[set[tuple[str, str, tuple[str, ...]]]] = set()
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, warehouse: WarehouseResource, table: str, columns: Sequence[str],
                 types: Mapping[str, str]) -> None:
        self.warehouse = warehouse
        self._table, self._columns, self._types = table, columns, types

    def _p(self, name: str) -> str:
        return self.warehouse.placeholder.format(name)

    def ensure(self) -> None:
        """Create the table (or add the columns a newer Stagecoach records) once per process
        and warehouse; an in-memory database is new on each connection, so always."""
        key = (self.warehouse.url, self._table, tuple(self._columns))
        if key in self._ensured:
            return
        self.warehouse.ensure_table(SCHEMA, self._table, {
            c: self._types.get(c, "TEXT") for c in self._columns}, primary_key="id")
        if ":memory:" not in self.warehouse.url and self.warehouse.url.rstrip("/") != "duckdb:":
            with self._lock:
                self._ensured.add(key)
