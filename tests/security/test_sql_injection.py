"""SQL injection: template values reach SQL only as bound parameters, and every identifier that
comes from a spec or a file is validated (names) or quoted (source columns, literals).

Run against the real warehouses: DuckDB (default) and PostgreSQL at 127.0.0.1:5432.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
import sqlalchemy as sa

from assets.templating import render_sql
from orchestration.spec_loader import SpecInvalid, load_workflow_text
from resources.warehouse import quote_ident
from tests.specs import NAME_COLUMNS, people_spec, write_workflow

pytestmark = [pytest.mark.security, pytest.mark.timeout(180)]

PAYLOADS = [
    "x' OR '1'='1",
    "'; DROP TABLE domain.people; --",
    "O'Brien",
    '" OR ""="',
    "1; DELETE FROM domain.people",
    "%(p0)s %s $1 ? :p0",  # placeholders of every paramstyle, as data
    "\\'; DROP TABLE domain.people; --",
]


def warehouse_rows(root: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(root / "data" / "warehouse.duckdb"), read_only=True) as con:
        return con.execute(sql).fetchall()


def people_workflow(root: Path, params: dict[str, str], where: str) -> Path:
    (root / "landing").mkdir(exist_ok=True)
    (root / "landing" / "people.csv").write_text(
        "id,name\n1,ada\n2,O'Brien\n3,\"x' OR '1'='1\"\n", encoding="utf-8")
    listed = ", ".join(f"{k}: {json.dumps(v)}" for k, v in params.items())  # JSON is YAML
    return write_workflow(root, "inj", people_spec(
        "inj", root / "landing", workflow=f"  owners: [team:data]\n  params: {{{listed}}}",
        columns=NAME_COLUMNS.replace("{tag: name}", "{tag: text}"), rest=f"""queries:
  picked:
    sql: "select customer_id, name from domain.people where {where}\""""))


@pytest.mark.parametrize("payload", PAYLOADS, ids=range(len(PAYLOADS)))
def test_a_param_full_of_sql_is_one_value(stagecoach_env: Path, workflow_runner, payload: str):
    root = stagecoach_env
    folder = people_workflow(root, {"who": payload}, "name = {{ params.who }}")

    run = workflow_runner(folder, "inj")

    assert run.success, run.failures()
    expected = [(i, n) for i, n in (("1", "ada"), ("2", "O'Brien"), ("3", "x' OR '1'='1"))
                if n == payload]
    assert warehouse_rows(root, "select customer_id, name from query.picked") == expected
    assert warehouse_rows(root, "select count(*) from domain.people") == [(3,)]


def test_bound_values_are_not_pasted_into_the_text():
    bound = render_sql("select * from t where a = {{ params.a }} and b in ({{ params.b }})",
                       {"params": {"a": PAYLOADS[1], "b": PAYLOADS[0]}}, ":{}".format)
    assert bound.text == "select * from t where a = :p0 and b in (:p1)"
    assert bound.params == {"p0": PAYLOADS[1], "p1": PAYLOADS[0]}


# ---------------------------------------------------------------- a SQL courier on PostgreSQL


@pytest.fixture
def crm(postgres_url: str) -> Iterator[str]:
    schema = f"crm_{secrets.token_hex(4)}"
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
        conn.execute(sa.text(f"CREATE TABLE {schema}.accounts (id integer, name text)"))
        conn.execute(sa.text(f"INSERT INTO {schema}.accounts VALUES (1, 'ada'), "
                             "(2, 'O''Brien'), (3, 'x'' OR ''1''=''1')"))
    yield schema
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
    engine.dispose()


@pytest.mark.parametrize("payload", PAYLOADS, ids=range(len(PAYLOADS)))
def test_a_sql_courier_binds_its_params_on_postgres(postgres_url: str, crm: str, payload: str,
                                                     stagecoach_env: Path, workflow_runner,
                                                     monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CRM_URL", postgres_url)
    folder = stagecoach_env / "workflows"
    folder.mkdir()
    (folder / "pull.yaml").write_text(f"""
workflow:
  name: pull
  params: {{who: {json.dumps(payload)}}}
connections:
  crm: {{kind: sql, url: {{env: CRM_URL}}}}
couriers:
  accounts:
    from: crm
    query: "select id, name from {crm}.accounts where name = {{{{ params.who }}}} order by id"
domain_tables:
  accounts:
    from: accounts
    columns:
      account_id: {{source: id, tag: id}}
      name: {{tag: text}}
""", encoding="utf-8")

    run = workflow_runner(folder, "pull")

    assert run.success, run.failures()
    expected = [n for n in ("ada", "O'Brien", "x' OR '1'='1") if n == payload]
    assert [n for (n,) in warehouse_rows(stagecoach_env, "select name from domain.accounts")] \
        == expected
    engine = sa.create_engine(postgres_url)
    with engine.connect() as conn:  # the source is intact
        assert conn.execute(sa.text(f"select count(*) from {crm}.accounts")).scalar() == 3
    engine.dispose()


# ---------------------------------------------------------------- identifiers and literals


def test_source_columns_and_format_literals_are_quoted(stagecoach_env: Path, workflow_runner):
    """A file's header is any text (quotes and SQL included), and format settings such as the
    quote character and date formats are SQL string literals: all are quoted, never pasted."""
    root = stagecoach_env
    (root / "landing").mkdir()
    evil = 'id"; DROP TABLE domain.x; --'
    (root / "landing" / "odd.csv").write_text(
        f"'{evil.replace(chr(39), chr(39) * 2)}';when\n'7';07'11'2026\n", encoding="utf-8")
    folder = write_workflow(root, "odd", f"""
workflow: {{name: odd, owners: [team:data]}}
connections:
  landing: {{kind: folder, path: {root / 'landing'}}}
couriers:
  odd:
    from: landing
    path: odd.csv
    format: {{type: csv, delimiter: ";", quote: "'", escape: "'"}}
domain_tables:
  odd:
    from: odd
    columns:
      key: {{source: '{evil}', tag: id, required: true}}
      day: {{source: when, tag: date, formats: ["%d'%m'%Y"]}}
""")

    run = workflow_runner(folder, "odd")

    assert run.success, run.failures()
    assert warehouse_rows(root, "select key, CAST(day AS VARCHAR) from domain.odd") == \
        [("7", "2026-11-07")]


BASE = """workflow: {name: acme, owners: [team:data]}
connections:
  landing: {kind: folder, path: landing}
couriers:
  people: {from: landing, path: people.csv}
domain_tables:
  people:
    from: people
    primary_key: [customer_id]
    columns:
      customer_id: {tag: id}
queries:
  q:
    sql: "select * from domain.people"
activations:
  act: {query: q, to: landing, file: {name: x.csv}}
triggers:
  t: {job: workflow, when: {kind: table_change, table: domain.people}}
"""


@pytest.mark.parametrize(("old", "new", "expected"), [
    ("  people:\n    from: people", '  "people; drop table x":\n    from: people',
     'wf.yaml:7 domain_tables.people; drop table x: names must be lower_snake_case'),
    ("      customer_id: {tag: id}", '      "id\\"; --": {tag: id}',
     "wf.yaml:10 domain_tables.people.columns: column name 'id\"; --' must match"),
    ("primary_key: [customer_id]", 'primary_key: ["customer_id\\" --"]',
     "wf.yaml:9 domain_tables.people.primary_key: 'customer_id\" --' is not one of the "
     "columns (customer_id)"),
    ("  q:\n", '  "q\\"; drop":\n', 'wf.yaml:13 queries.q"; drop: names must be '
                                     'lower_snake_case'),
    ("query: q,", 'query: "q\\"; drop",', "wf.yaml:16 activations.act.query: unknown query "
                                          "'q\"; drop' (known: q)"),
    ("table: domain.people}", 'table: "domain.people\\"; drop"}',
     "wf.yaml:18 triggers.t.when.table: unknown table 'domain.people\"; drop' (known: "
     "domain.people)"),
    ("select * from domain.people", 'select * from \\"domain\\".\\"people; drop\\"',
     "wf.yaml:14 queries.q.sql: unknown table 'domain.people; drop' in the SQL"),
], ids=["table", "column", "primary key", "query", "query reference", "watched table",
        "quoted name in SQL"])
def test_identifiers_from_the_spec_are_validated(old: str, new: str, expected: str,
                                                 tmp_path: Path):
    assert BASE.count(old) == 1, old
    with pytest.raises(SpecInvalid) as refused:
        load_workflow_text(BASE.replace(old, new), "wf.yaml", tmp_path)
    assert any(str(e).startswith(expected) for e in refused.value.errors), \
        [str(e) for e in refused.value.errors]


@pytest.mark.parametrize("name", ['a"b', "a b", "a;b", "1a", "", "a.b", "a\x00b", "ä"])
def test_quote_ident_refuses_what_it_cannot_quote_plainly(name: str):
    with pytest.raises(ValueError, match="not a valid SQL identifier"):
        quote_ident(name)
