"""Two runs writing the same warehouse table at once (two days of a dated job, a Celery worker
each): on PostgreSQL the second load waits until the first has committed, then writes on top of
what it committed. Unguarded, both found no table, both created one, and one failed
("duplicate key value violates unique constraint pg_type_typname_nsp_index"), or the later one
dropped the rows the earlier one had just committed."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from resources.warehouse import WarehouseResource

pytestmark = pytest.mark.timeout(120)


def _load(warehouse: WarehouseResource, schema: str, partition: str | None, value: int,
          entered: threading.Event | None = None) -> int:
    with warehouse.file_load(schema, "orders", partition) as load:
        if entered is not None:
            entered.set()
        select = f"SELECT {value} AS n" + (f", '{partition}' AS _partition" if partition else "")
        return load.replace(select, {})


def _second_waits_for_first(warehouse: WarehouseResource, schema: str,
                            partitions: tuple[str | None, str | None]) -> None:
    entered, done = threading.Event(), []
    with warehouse.file_load(schema, "orders", partitions[0]) as first:
        second = threading.Thread(target=lambda: done.append(
            _load(warehouse, schema, partitions[1], 2, entered)))
        second.start()
        assert not entered.wait(1.5), "the second load did not wait for the first"
        select = "SELECT 1 AS n" + (f", '{partitions[0]}' AS _partition" if partitions[0]
                                    else "")
        assert first.replace(select, {}) == 1
    second.join(30)
    assert done == [1]


def _advisory_locks(url: str) -> int:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        held = conn.execute(sa.text(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database())")).scalar()
    engine.dispose()
    return int(held or 0)


def test_two_days_of_a_new_table_keep_both(postgres_url: str) -> None:
    warehouse = WarehouseResource(url=postgres_url)
    _second_waits_for_first(warehouse, "concurrent_days", ("2026-11-03", "2026-11-04"))
    rows = warehouse.fetch("SELECT _partition, n FROM concurrent_days.orders ORDER BY 1")
    assert rows == [("2026-11-03", 1), ("2026-11-04", 2)]
    assert _advisory_locks(postgres_url) == 0


def test_two_replacements_of_one_table_leave_the_later_whole(postgres_url: str) -> None:
    warehouse = WarehouseResource(url=postgres_url)
    _second_waits_for_first(warehouse, "concurrent_replace", (None, None))
    assert warehouse.fetch("SELECT n FROM concurrent_replace.orders") == [(2,)]


def test_sql_tables_built_at_once_from_many_threads(postgres_url: str) -> None:
    """`replace_table` (databases, queries) takes the same lock: eight builds of one new
    table at once all succeed."""
    warehouse = WarehouseResource(url=postgres_url)
    failures: list[BaseException] = []

    def build(n: int) -> None:
        try:
            warehouse.replace_table("concurrent_sql", "segment", f"SELECT {n} AS n")
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=build, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures, failures
    assert len(warehouse.fetch("SELECT n FROM concurrent_sql.segment")) == 1
