"""A query's rows and whole tables copied from a PostgreSQL connection into the warehouse
(DuckDB and PostgreSQL): streamed through a staged Parquet file and bulk-loaded, all or
nothing, with a bad source table refused without touching the old copy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from tests.conftest import fresh_database
from tests.integration.test_automations import failure_message, run, step_statuses, write_spec

pytestmark = pytest.mark.timeout(180)
ACCOUNTS = 25_000


@pytest.fixture
def crm(monkeypatch: pytest.MonkeyPatch) -> Iterator[sa.Engine]:
    """A source database of its own: accounts (some active) and orders."""
    with fresh_database("stagecoach_crm") as url:
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.execute(sa.text("create table accounts (id int primary key, name text, "
                                 "active bool, joined date)"))
            conn.execute(sa.text(
                "insert into accounts select i, 'account ' || i, i % 3 = 0, "
                f"date '2026-01-01' + (i % 300) from generate_series(1, {ACCOUNTS}) i"))
            conn.execute(sa.text('create schema sales; create table sales."Orders" '
                                 "(id int, account_id int, amount numeric(10, 2))"))
            conn.execute(sa.text('insert into sales."Orders" values (1, 3, 10.50), '
                                 "(2, 6, 4.25)"))
        monkeypatch.setenv("CRM_DB_URL", url)
        yield engine
        engine.dispose()


def rows_of(root: Path, warehouse_url: str | None, sql: str) -> list[tuple]:
    if warehouse_url:
        engine = sa.create_engine(warehouse_url)
        with engine.connect() as conn:
            rows = [tuple(r) for r in conn.execute(sa.text(sql))]
        engine.dispose()
        return rows
    import duckdb

    with duckdb.connect(str(root / "data" / "warehouse.duckdb"), read_only=True) as db:
        return db.execute(sql).fetchall()


def test_query_and_whole_tables_copied_into_the_warehouse(
        stagecoach_env: Path, crm: sa.Engine, warehouse_url: str | None):
    url = warehouse_url
    defs = write_spec(stagecoach_env, """
  copy_crm:
    params: {since: "2026-06-01"}
    steps:
      - {name: recent, kind: sql, connection: crm, into: crm_copy.recent_active,
         sql: "select id, name, joined from accounts where active
               and joined >= cast({{ params.since }} as date)"}
      - name: everything
        kind: sync
        connection: crm
        tables: {accounts: crm_copy.accounts, sales.Orders: crm_copy.orders}
""")
    with dg.instance_for_test() as instance:
        result = run(defs, "copy_crm", instance)
        assert result.success, [e.event_specific_data.error.message
                                for e in result.all_events if e.is_step_failure]
        with crm.connect() as conn:
            expected = conn.execute(sa.text(
                "select count(*), sum(id) from accounts where active and joined >= "
                "date '2026-06-01'")).one()
        assert rows_of(stagecoach_env, url, "select count(*), sum(id) from "
                                            "crm_copy.recent_active") == [tuple(expected)]
        assert rows_of(stagecoach_env, url, "select count(*) from crm_copy.accounts") == [
            (ACCOUNTS,)]
        amounts = rows_of(stagecoach_env, url, "select id, amount from crm_copy.orders "
                                               "order by id")
        assert [(i, float(a)) for i, a in amounts] == [(1, 10.5), (2, 4.25)]
        logs = [e.message for e in instance.all_logs(result.run_id) if e.message]
        assert any(f"crm_copy.accounts: {ACCOUNTS:,} rows loaded" in m for m in logs)
        assert not list((stagecoach_env / "data").rglob("*.parquet*")), "staged files left"
        assert not list((stagecoach_env / "data" / "auto" / "copies").iterdir())

        # The source table goes away: the step fails at once and the old copy stays whole.
        with crm.begin() as conn:
            conn.execute(sa.text('drop table sales."Orders"'))
        again = run(defs, "copy_crm", instance)
    assert not again.success
    assert step_statuses(again) == {"copy_crm__recent": "success",
                                    "copy_crm__everything": "failure"}
    message = failure_message(again)
    assert "copying sales.Orders from `crm` failed" in message
    assert "check the table's name (not retried)" in message
    assert rows_of(stagecoach_env, url, "select count(*) from crm_copy.orders") == [(2,)]
    if url:
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.execute(sa.text("drop schema crm_copy cascade"))
        engine.dispose()
