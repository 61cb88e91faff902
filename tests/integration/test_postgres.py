"""Workflows on a real PostgreSQL: the warehouse, a `sql` courier source, atomic loads."""

from __future__ import annotations

import csv
import hashlib
import shutil
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from orchestration.cli.demo_data import generate
from tests.specs import MEMBERS_WORKFLOW

pytestmark = pytest.mark.timeout(180)

REPO = Path(__file__).resolve().parents[2]
DEMO_DAYS = [date(2026, 11, 1), date(2026, 11, 2)]
DAILY = [dg.AssetKey(["courier", "orders_file"]), dg.AssetKey(["domain", "orders"])]


@pytest.fixture
def pg(postgres_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(postgres_url)
    yield engine
    engine.dispose()


def fetch(engine: sa.Engine, sql: str, **params) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(sa.text(sql), params)]


def demo_workflows(folder: Path, landing: Path, outbox: Path) -> Path:
    """The demo spec and its SQL files, with the two folder connections moved to tmp folders."""
    folder.mkdir(parents=True)
    shutil.copytree(REPO / "workflows" / "sql", folder / "sql")
    text = (REPO / "workflows" / "acme_retail.yaml").read_text(encoding="utf-8")
    for old, new in [("path: ../data/demo/landing", f"path: {landing}"),
                     ("path: ../data/demo/outbox", f"path: {outbox}")]:
        assert text.count(old) == 1, f"the demo spec no longer has {old!r}"
        text = text.replace(old, new)
    (folder / "acme_retail.yaml").write_text(text, encoding="utf-8")
    return folder


def run_demo(workflow_runner, workflows: Path):
    """Day one's orders only, then everything for day two (as orchestration/cli/demo.py does)."""
    instance = dg.DagsterInstance.ephemeral()
    first = workflow_runner(workflows, "acme_retail", partition_key=DEMO_DAYS[0].isoformat(),
                            asset_selection=DAILY, instance=instance)
    assert first.success, first.failures()
    full = workflow_runner(workflows, "acme_retail", partition_key=DEMO_DAYS[1].isoformat(),
                           instance=instance)
    assert full.success, full.failures()
    return full


def delivered(outbox: Path) -> dict[str, bytes]:
    return {str(p.relative_to(outbox)): p.read_bytes()
            for p in sorted(outbox.rglob("*")) if p.is_file()}


def test_demo_on_postgres_matches_duckdb(postgres_url: str, pg: sa.Engine, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch, workflow_runner):
    landing = tmp_path / "landing"
    generate(landing, DEMO_DAYS)

    # The same workflow twice: the default DuckDB warehouse, then PostgreSQL.
    monkeypatch.setenv("STAGECOACH_DATA_DIR", str(tmp_path / "duck_data"))
    monkeypatch.delenv("STAGECOACH_WAREHOUSE_URL", raising=False)
    duck_outbox = tmp_path / "duck_outbox"
    duck = run_demo(workflow_runner,
                    demo_workflows(tmp_path / "duck_workflows", landing, duck_outbox))

    monkeypatch.setenv("STAGECOACH_DATA_DIR", str(tmp_path / "pg_data"))
    monkeypatch.setenv("STAGECOACH_WAREHOUSE_URL", postgres_url)
    pg_outbox = tmp_path / "pg_outbox"
    on_pg = run_demo(workflow_runner,
                     demo_workflows(tmp_path / "pg_workflows", landing, pg_outbox))

    # The data really is in PostgreSQL.
    assert fetch(pg, 'SELECT count(*), count(DISTINCT "_partition") FROM "domain"."orders"') \
        == [(800, 2)]
    assert fetch(pg, 'SELECT "_partition", count(*) FROM "domain"."orders" GROUP BY 1 '
                     "ORDER BY 1") == [("2026-11-01", 400), ("2026-11-02", 400)]
    assert fetch(pg, 'SELECT count(*) FROM "domain"."customers"') == [(2000,)]
    segment = fetch(pg, 'SELECT count(*) FROM "query"."high_value_customers"')[0][0]
    assert segment > 0
    assert on_pg.metadata("query", "high_value_customers")["dagster/row_count"] == segment
    assert on_pg.metadata("domain", "orders")["warehouse"].startswith("postgresql")

    # Both warehouses deliver the same files, byte for byte.
    names = ["crm/high_value_customers_2026-11-02.csv", "partner/acme_high_value_20261102.txt"]
    assert sorted(delivered(pg_outbox)) == sorted(delivered(duck_outbox)) == names
    assert delivered(pg_outbox) == delivered(duck_outbox)
    with open(pg_outbox / names[0], newline="", encoding="utf-8") as crm:
        rows = list(csv.DictReader(crm))
    assert len(rows) == segment
    assert all(float(r["lifetime_value"]) >= 400 for r in rows)
    for name, meta in (("crm_csv", on_pg.metadata("activation", "crm_csv")),
                       ("partner_file", duck.metadata("activation", "partner_file"))):
        assert meta["dagster/row_count"] == segment, name
    # The delivery ledger lives in the PostgreSQL warehouse too, with the files' md5s.
    with pg.connect() as conn:
        ledger = {r.file_name: (r.status, r.md5, r.row_count) for r in conn.execute(sa.text(
            "select file_name, status, md5, row_count from stagecoach.file_history"))}
    assert ledger == {Path(n).name: ("delivered", hashlib.md5(body).hexdigest(), segment)
                      for n, body in delivered(pg_outbox).items()}


SOURCE_WORKFLOW = """
workflow:
  name: crm_pull
  params: {min_id: 2}
connections:
  crm:
    kind: sql
    url: {env: SOURCE_DB_URL}
couriers:
  accounts:
    from: crm
    query: |
      select id, email, full_name, balance, created_at
      from crm_src.accounts
      where id >= {{ params.min_id }}
      order by id
domain_tables:
  accounts:
    from: accounts
    primary_key: [account_id]
    columns:
      account_id: {source: id, tag: id, required: true, not_null: true}
      email: {tag: email}
      name: {source: full_name, tag: name}
      balance: {tag: decimal}
      created_at: {tag: datetime}
"""


@pytest.fixture
def crm_source(pg: sa.Engine) -> Iterator[None]:
    with pg.begin() as conn:
        conn.execute(sa.text("CREATE SCHEMA crm_src"))
        conn.execute(sa.text("CREATE TABLE crm_src.accounts (id integer primary key, "
                             "email text, full_name text, balance numeric(12, 2), "
                             "created_at timestamp)"))
        conn.execute(sa.text(
            "INSERT INTO crm_src.accounts VALUES "
            "(1, 'skip@example.com', 'not me', 1.00, '2026-01-01 00:00:00'), "
            "(2, ' Ada@Example.COM ', 'ada   lovelace', 1234.50, '2026-11-20 09:30:00'), "
            "(3, 'broken-address', 'GRACE HOPPER', NULL, '2026-11-21 10:00:00'), "
            "(4, NULL, NULL, -5.25, NULL)"))
    yield
    with pg.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA crm_src CASCADE"))


def test_courier_from_sql_connection(postgres_url: str, crm_source, stagecoach_env: Path,
                                     monkeypatch: pytest.MonkeyPatch, workflow_runner):
    workflows = stagecoach_env / "workflows"
    workflows.mkdir()
    (workflows / "crm_pull.yaml").write_text(SOURCE_WORKFLOW)
    monkeypatch.setenv("SOURCE_DB_URL", postgres_url)

    run = workflow_runner(workflows, "crm_pull")
    assert run.success, run.failures()
    assert run.metadata("courier", "accounts_file")["file_count"] == 1
    assert run.metadata("domain", "accounts")["dagster/row_count"] == 3

    import duckdb

    warehouse = stagecoach_env / "data" / "warehouse.duckdb"
    with duckdb.connect(str(warehouse), read_only=True) as con:
        rows = con.execute("SELECT account_id, email, name, CAST(balance AS VARCHAR), "
                           "CAST(created_at AS VARCHAR) FROM domain.accounts "
                           "ORDER BY account_id").fetchall()
    assert rows == [
        ("2", "ada@example.com", "Ada Lovelace", "1234.5000", "2026-11-20 09:30:00"),
        ("3", None, "Grace Hopper", None, "2026-11-21 10:00:00"),
        ("4", None, None, "-5.2500", None),
    ]


def test_sql_courier_without_its_variable_names_it(postgres_url: str, crm_source,
                                                   stagecoach_env: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   workflow_runner):
    workflows = stagecoach_env / "workflows"
    workflows.mkdir()
    (workflows / "crm_pull.yaml").write_text(SOURCE_WORKFLOW)
    monkeypatch.delenv("SOURCE_DB_URL", raising=False)
    # The URL is somewhere in the environment, just not under the name the spec asks for.
    monkeypatch.setenv("OTHER_DB_URL", postgres_url)

    # Dagster resolves the connection's config when the run starts, and names the variable.
    with pytest.raises(dg.DagsterInvalidConfigError) as refused:
        workflow_runner(workflows, "crm_pull")
    message = str(refused.value)
    assert 'environment variable "SOURCE_DB_URL" which is not set' in message
    assert postgres_url not in message and "postgresql" not in message
    assert not (stagecoach_env / "data" / "warehouse.duckdb").exists()


def test_failed_load_leaves_previous_table_on_postgres(postgres_url: str, pg: sa.Engine,
                                                       stagecoach_env: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       workflow_runner):
    monkeypatch.setenv("STAGECOACH_WAREHOUSE_URL", postgres_url)
    workflows = stagecoach_env / "workflows"
    (workflows / "inbox").mkdir(parents=True)
    (workflows / "members_load.yaml").write_text(MEMBERS_WORKFLOW)
    members = workflows / "inbox" / "members.csv"

    members.write_text("member_id,email\nM1,a@example.com\nM2,B@Example.com\n")
    first = workflow_runner(workflows, "members_load")
    assert first.success, first.failures()
    before = fetch(pg, 'SELECT member_id, email FROM "domain"."members" ORDER BY 1')
    assert before == [("M1", "a@example.com"), ("M2", "b@example.com")]

    # The new file has a row without the not-null member_id: the load must not happen.
    members.write_text("member_id,email\nM3,c@example.com\n,nobody@example.com\n")
    second = workflow_runner(workflows, "members_load")
    assert not second.success
    failures = second.failures()
    assert "members.csv:3: no value in not-null column(s) member_id" in failures
    assert "domain.members is unchanged" in failures
    assert fetch(pg, 'SELECT member_id, email FROM "domain"."members" ORDER BY 1') == before
