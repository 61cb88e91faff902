"""Two runs writing the same warehouse table at once (two days of a dated job, a Celery worker
each): on PostgreSQL the second waits for the first, then writes on top of what it committed.
Neither fails, and neither drops the other's rows."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from resources.warehouse import WarehouseResource

pytestmark = pytest.mark.timeout(120)


def _write_together(warehouse: WarehouseResource, writes: list, schema: str) -> None:
    """Each write opens its transaction, and only once all are open do they write."""
    opened = threading.Barrier(len(writes))

    def write(job: tuple) -> int:
        table, partition, value = job
        with warehouse.file_load(schema, table, partition) as load:
            opened.wait(timeout=30)
            return load.replace(f"SELECT {value} AS n, '{partition}' AS _partition"
                                if partition else f"SELECT {value} AS n", {})

    with ThreadPoolExecutor(len(writes)) as pool:
        assert list(pool.map(write, writes)) == [1] * len(writes)


def test_two_days_of_a_new_table_at_once_keep_both(postgres_url: str) -> None:
    warehouse = WarehouseResource(url=postgres_url)
    _write_together(warehouse, [("orders", "2026-11-03", 3), ("orders", "2026-11-04", 4)],
                    "concurrent_days")
    rows = warehouse.fetch("SELECT _partition, n FROM concurrent_days.orders ORDER BY 1")
    assert rows == [("2026-11-03", 3), ("2026-11-04", 4)]


@pytest.mark.parametrize("existing", [False, True], ids=["new", "existing"])
def test_two_replacements_of_one_table_at_once_leave_one_whole(postgres_url: str,
                                                               existing: bool) -> None:
    warehouse = WarehouseResource(url=postgres_url)
    schema = f"concurrent_replace_{int(existing)}"
    if existing:
        warehouse.replace_table(schema, "customers", "SELECT 0 AS n")
    _write_together(warehouse, [("customers", None, 1), ("customers", None, 2)], schema)
    [(count,)] = warehouse.fetch(f"SELECT count(*) FROM {schema}.customers")
    assert count == 1
    engine = sa.create_engine(postgres_url)
    with engine.connect() as conn:  # no lock is left behind
        assert conn.execute(sa.text(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database())")).scalar() == 0
    engine.dispose()
