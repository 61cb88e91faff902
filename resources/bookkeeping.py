"""Stagecoach's own tables in the warehouse (the delivery ledger, the run history): one schema,
portable column types, created on first use through any warehouse (DuckDB, PostgreSQL...).

A table gains the columns a newer Stagecoach records, once per process; values always go in as
bound parameters (`param` gives the warehouse's placeholder for one).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from resources.warehouse import WarehouseResource

SCHEMA = "stagecoach"


def new_id() -> str:
    return uuid.uuid4().hex[:16]


def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)  # stored as UTC without a zone, portably


class BookkeepingTable:
    """One of Stagecoach's tables: `columns` are TEXT unless `types` says otherwise; `id` is
    the primary key."""

    def __init__(self, warehouse: WarehouseResource, table: str, columns: Sequence[str],
                 types: Mapping[str, str]):
        self.warehouse = warehouse
        self._table, self._columns, self._types = table, columns, types
        self._ready = False

    def _p(self, name: str) -> str:
        return self.warehouse.placeholder.format(name)

    def ensure(self) -> None:
        """Create the table (or add the columns a newer Stagecoach records) once per process."""
        if not self._ready:
            self.warehouse.ensure_table(SCHEMA, self._table, {
                c: self._types.get(c, "TEXT") for c in self._columns}, primary_key="id")
            self._ready = True
