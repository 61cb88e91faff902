"""Stagecoach's own tables are checked against the warehouse's catalogue once per process, not
once per object (a DeliveryLedger is built for every step)."""

from __future__ import annotations

from pathlib import Path

import duckdb

from resources.bookkeeping.ledger import DeliveryLedger
from resources.warehouse import WarehouseResource


def test_a_table_is_ensured_once_per_process_and_warehouse(tmp_path: Path):
    path = tmp_path / "wh.duckdb"
    warehouse = WarehouseResource(url=f"duckdb:///{path}")
    DeliveryLedger(warehouse).ensure()
    with duckdb.connect(str(path)) as db:
        db.execute("DROP TABLE stagecoach.file_history")

    DeliveryLedger(warehouse).ensure()  # a new object, the same process: no second check

    with duckdb.connect(str(path)) as db:
        assert db.execute("SELECT count(*) FROM information_schema.tables "
                          "WHERE table_name = 'file_history'").fetchone() == (0,)
    other = WarehouseResource(url=f"duckdb:///{tmp_path / 'other.duckdb'}")
    DeliveryLedger(other).ensure()  # another warehouse is checked
    with duckdb.connect(str(tmp_path / "other.duckdb")) as db:
        assert db.execute("SELECT count(*) FROM information_schema.tables "
                          "WHERE table_name = 'file_history'").fetchone() == (1,)
