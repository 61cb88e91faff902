"""The `identity:` section end to end, on DuckDB and on PostgreSQL: files → domain tables →
identity resolution → a database table built on it, then a second run with changed files."""

from __future__ import annotations

import csv
from pathlib import Path

import duckdb
import pytest
import sqlalchemy as sa

pytestmark = pytest.mark.timeout(240)

WORKFLOW = """
workflow: {{name: people}}
connections:
  landing: {{kind: folder, path: {landing}}}
couriers:
  web: {{from: landing, path: web.csv}}
  store: {{from: landing, path: store.csv}}
domain_tables:
  web:
    from: web
    primary_key: [id]
    columns:
      id: {{tag: id, not_null: true}}
      email: {{tag: email}}
      phone: {{tag: phone, default_region: US}}
      first: {{tag: given_name}}
      last: {{tag: surname}}
      born: {{tag: birthdate}}
      updated: {{tag: datetime}}
  store:
    from: store
    primary_key: [member]
    columns:
      member: {{tag: id, not_null: true}}
      mail: {{tag: email}}
      mobile: {{tag: phone, default_region: US}}
      given: {{tag: given_name}}
      family: {{tag: surname}}
      dob: {{tag: birthdate}}
      spend: {{tag: decimal}}
identity:
  people:
    sources:
      web: {{key: id, updated_at: updated}}
      store: {{key: member, columns: {{email: mail, phone: mobile, first: given, last: family,
              born: dob}}}}
    fields: {{email: email, phone: phone, first: given_name, last: surname, born: birthdate}}
    exact_rules:
      - {{name: same_email, columns: [email]}}
      - {{name: same_phone, columns: [phone]}}
    probabilistic:
      blocking_rules: [[last, born], [first, born]]
      threshold: 0.9
      training: {{max_pairs: 100000}}
    survivorship:
      email: {{rule: preferred_source, sources: [web]}}
    checks: {{max_cluster_size: 5, min_stability: 90%}}
databases:
  crm:
    tables:
      spend:
        sql: |
          select c.customer_id, c.email, c.first, sum(s.spend) as spend
          from identity.people c
          join identity.people_map m on m.customer_id = c.customer_id
          left join domain.store s on m.source_table = 'store' and s.member = m.source_key
          group by c.customer_id, c.email, c.first
"""

GIVEN = ["Robert", "Mary", "John", "Linda", "James", "Susan", "David", "Karen"]
FAMILY = ["Holton", "Berman", "Morley", "Linford", "Ostberg", "Parwood", "Vanley", "Weston"]


def write_files(landing: Path, people: int = 120, changed: bool = False) -> None:
    """Web customers; store members for two in three of them (no e-mail for half, a nickname
    or typo now and then), and a household member sharing a web customer's phone."""
    landing.mkdir(parents=True, exist_ok=True)
    web = [["id", "email", "phone", "first", "last", "born", "updated"]]
    store = [["member", "mail", "mobile", "given", "family", "dob", "spend"]]
    for p in range(people):
        first, last = GIVEN[p % 8], FAMILY[(p // 8) % 8]
        born = f"19{50 + p % 45}-{1 + p % 12:02d}-{1 + p % 27:02d}"
        email = f"{first.lower()}.{last.lower()}{p}@example.com"
        phone = f"(212) 555-{p:04d}"
        if changed and p == 5:
            email = f"new.address{p}@example.com"  # a changed e-mail: the store still knows
        web.append([f"W{p:04d}", email, phone, first, last, born,
                    f"2024-01-{1 + p % 28:02d} 10:00:00"])
        if p % 3:
            given = {"Robert": "Bob", "James": "Jim"}.get(first, first) if p % 5 == 0 else first
            store.append([f"S{p:04d}", email if p % 2 else "", phone if p % 4 else "",
                          given, last, born, f"{10 + p}.50"])
    store.append(["S9999", "", "(212) 555-0001", "Zoe", FAMILY[0], "2001-05-05", "5.00"])
    if changed:
        web.append(["W9000", "newcomer@example.com", "", "Nora", "Quill", "1990-01-01",
                    "2024-02-01 10:00:00"])
    for name, rows in (("web.csv", web), ("store.csv", store)):
        with open(landing / name, "w", newline="", encoding="utf-8") as out:
            csv.writer(out).writerows(rows)


def rows(url: str | None, root: Path, sql: str) -> list[tuple]:
    if url is None:
        with duckdb.connect(str(root / "data" / "warehouse.duckdb"), read_only=True) as con:
            return con.execute(sql).fetchall()
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(sql))]
    finally:
        engine.dispose()


def test_identity_section_end_to_end(warehouse_url: str | None, stagecoach_env: Path,
                                     workflow_runner) -> None:
    landing, workflows = stagecoach_env / "landing", stagecoach_env / "workflows"
    workflows.mkdir()
    (workflows / "people.yaml").write_text(WORKFLOW.format(landing=landing), encoding="utf-8")
    write_files(landing)
    first = workflow_runner(workflows, "people")
    assert first.success, first.failures()
    meta = first.metadata("identity", "people")
    records = meta["records"]
    assert records == 120 + 80 + 1
    assert meta["customers"] == 121  # every web customer, and Zoe on her own
    assert meta["household_rule_refused"] >= 0 and meta["exact_links"] > 0
    assert "| customer_id | records | sources |" in meta["biggest_clusters"]
    assert rows(warehouse_url, stagecoach_env,
                "select count(*), count(distinct customer_id) from identity.people_map") \
        == [(records, 121)]
    # Zoe shares W0001's phone but not the person: the household rule keeps her apart.
    [(zoe, w1)] = rows(warehouse_url, stagecoach_env, """select
        (select customer_id from identity.people_map where source_key = 'S9999'),
        (select customer_id from identity.people_map where source_key = 'W0001')""")
    assert zoe != w1
    # A store record without e-mail or phone is found by name and birth date (splink).
    [(s2, w2)] = rows(warehouse_url, stagecoach_env, """select
        (select customer_id from identity.people_map where source_key = 'S0002'),
        (select customer_id from identity.people_map where source_key = 'W0002')""")
    assert s2 == w2
    assert rows(warehouse_url, stagecoach_env, "select count(*) from crm.spend") == [(121,)]
    layers = {r[0] for r in rows(warehouse_url, stagecoach_env,
                                 "select distinct layer from identity.people_pairs")}
    assert layers == {"exact", "splink"}
    before = dict(rows(warehouse_url, stagecoach_env,
                       "select source_key, customer_id from identity.people_map"))

    write_files(landing, changed=True)
    second = workflow_runner(workflows, "people")
    assert second.success, second.failures()
    after = dict(rows(warehouse_url, stagecoach_env,
                      "select source_key, customer_id from identity.people_map"))
    assert {k: after[k] for k in before} == before  # every id kept
    assert after["W9000"] not in before.values()
    assert second.metadata("identity", "people_map")["stability"] == 1.0
    checks = {c.check_name: c.passed for c in second.result.get_asset_check_evaluations()}
    assert checks == {"max_cluster_size": True, "id_stability": True, "primary_key_unique": True}


def test_the_identity_tables_are_replaced_all_or_none(postgres_url: str, stagecoach_env: Path,
                                                      workflow_runner, monkeypatch) -> None:
    """A failure while the four tables are written (here PostgreSQL refusing to drop the map,
    which a view depends on) leaves all four as the last good run wrote them."""
    monkeypatch.setenv("STAGECOACH_WAREHOUSE_URL", postgres_url)
    landing, workflows = stagecoach_env / "landing", stagecoach_env / "workflows"
    workflows.mkdir()
    (workflows / "people.yaml").write_text(WORKFLOW.format(landing=landing), encoding="utf-8")
    write_files(landing)
    assert workflow_runner(workflows, "people").success
    tables = ("people_map", "people", "people_pairs", "people_id_changes")
    counts = "select " + ", ".join(f"(select count(*) from identity.{t})" for t in tables)
    before = rows(postgres_url, stagecoach_env, counts)
    engine = sa.create_engine(postgres_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE VIEW public.people_map_watch AS "
                                 "SELECT * FROM identity.people_map"))
        write_files(landing, people=150, changed=True)  # more people: every table changes
        failed = workflow_runner(workflows, "people")
        assert not failed.success
        assert "people_map" in failed.failures()
        assert rows(postgres_url, stagecoach_env, counts) == before
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text("DROP VIEW IF EXISTS public.people_map_watch"))
        engine.dispose()
