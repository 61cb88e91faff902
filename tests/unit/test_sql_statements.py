"""Splitting fetched SQL into statements: a `;` inside a string, a name, a $$ body or a comment
ends nothing, and only the allowed statement types are kept."""

from __future__ import annotations

from contextlib import suppress

import duckdb
import pytest

from assets.sql_statements import (
    DEFAULT_ALLOWED,
    SqlTextError,
    expression_problem,
    keep_allowed,
    split_statements,
)


def test_semicolons_inside_strings_names_bodies_and_comments_end_nothing() -> None:
    text = """-- lead; comment
    select 'a;b', "c;d", $$e;f$$, $tag$ g; $tag$, E'h\\';i' as x /* j; /* k; */ l; */ ;
    ;;  -- only a comment; here
    (select 2)"""
    statements = split_statements(text)
    assert [s.kind for s in statements] == ["select", "select"]
    assert statements[0].text.startswith("-- lead; comment\n    select 'a;b'")
    assert statements[0].text.endswith("as x")  # a trailing comment is left out
    assert statements[1].text == "-- only a comment; here\n    (select 2)"  # leads what follows


def test_what_is_kept_runs_as_the_database_reads_it() -> None:
    """The kept text, run by DuckDB, gives what the original's allowed statements give."""
    text = ("create table t as select 'x;y' as v; SET threads = 1; insert into t values "
            "($$it's; z$$); PRAGMA version; insert into t values (E'q\\'r')  -- end;")
    kept, removed = keep_allowed(text, DEFAULT_ALLOWED)
    assert [s.kind for s in removed] == ["set", "pragma"]
    with duckdb.connect() as db:
        for statement in kept:
            db.execute(statement.text)
        assert db.execute("select v from t").fetchall() == [("x;y",), ("it's; z",), ("q'r",)]


def test_two_word_rules_narrow_a_type() -> None:
    kept, removed = keep_allowed("create table a (x int); create secret s (type s3); "
                                 "CREATE   TABLE b (y int)", ["create table", "select"])
    assert [s.short() for s in kept] == ["create table a (x int)", "CREATE TABLE b (y int)"]
    assert [s.words[:2] for s in removed] == [("create", "secret")]


def test_by_default_create_reaches_only_tables_views_schemas_and_indexes() -> None:
    kept, removed = keep_allowed(
        "create or replace table a as select 1; create temp table b (x int); create view v as "
        "select 1; create schema s; create unique index i on a (x); CREATE SECRET s3 (TYPE s3, "
        "KEY_ID 'AKIA-not-a-real-key', SECRET 'hunter2'); create extension plpython3u; "
        "create or replace macro m(x) as x; create function f() returns int as $$ 1 $$",
        DEFAULT_ALLOWED)
    assert [s.words[:3] for s in kept] == [("create", "or", "replace"), ("create", "temp",
                                                                         "table"),
                                           ("create", "view", "v"), ("create", "schema", "s"),
                                           ("create", "unique", "index")]
    assert [s.words[1] for s in removed] == ["secret", "extension", "or", "function"]
    assert removed[0].short() == "CREATE SECRET s3 (TYPE s3, KEY_ID '…', SECRET '…')"
    assert removed[3].short() == "create function f() returns int as '…'"


@pytest.mark.bad_input
@pytest.mark.parametrize(("text", "message"), [
    ("select 'open", "a quoted string opened at character 8 is never closed"),
    ('select "open', "a quoted name opened at character 8 is never closed"),
    ("select 1 /* open", "a /* comment opened at character 10 is never closed"),
    ("select $x$ open", "a $x$ string opened at character 8 is never closed"),
])
def test_unclosed_pieces_are_refused(text: str, message: str) -> None:
    with pytest.raises(SqlTextError) as raised:
        split_statements(text)
    assert str(raised.value) == message


@pytest.mark.bad_input
@pytest.mark.parametrize(("expression", "problem"), [
    ("qty * price", None),
    ("coalesce(note, ';--')", None),
    ("qty > 1; drop table x", "holds a `;`: give one SQL expression, not statements"),
    ("qty > 1 -- and", "holds a comment (-- or /*), which would hide the SQL after it"),
    ("sum(qty", "opens a parenthesis it never closes"),
    ("qty) union select (1", "closes a parenthesis it never opened"),
    ("'open", "a quoted string opened at character 1 is never closed"),
])
def test_expressions_stay_one_expression(expression: str, problem: str | None) -> None:
    assert expression_problem(expression) == problem


# ---------------------------------------------------------------- smuggling, on each database
# Each payload hides a statement of a forbidden type ({S}) where a splitter that sees a quote
# or comment the database does not see would keep it inside an allowed one. The kept statements
# are then run one by one, as a step runs them; {S} must not have run.
SMUGGLED = [
    pytest.param("select $é$ ` $é$; {S}; select $é$ ` $é$", id="unicode-dollar-tag-backtick"),
    pytest.param("select $é$;$é$; {S}", id="unicode-dollar-tag"),
    pytest.param("select 1 as `x; {S}; select 1 as y`", id="backticks"),
    pytest.param("select 1 /* a /* b */ c */; {S}", id="nested-comment-closed"),
    pytest.param("select 1 /* a /* b */ ; {S}; */ ; select 2", id="nested-comment-open"),
    pytest.param("select 1 -- ends at a carriage return\r; {S}; select 2 --\n as y",
                 id="comment-cr"),
    pytest.param("select E'\\'; {S}; select '", id="e-string"),
    pytest.param("select 'a\\'; {S}; select 'b'", id="backslash-in-plain-string"),
    pytest.param("select e'x\\'' as v; {S}", id="e-string-escaped-quote"),
    pytest.param("select 1 as a$b$; {S}; select $b$", id="dollar-inside-a-name"),
    pytest.param("select 1\u00a0E'\\'; {S}; select '", id="non-ascii-space-before-e"),
    pytest.param("select \"a;\"\"\"; {S}", id="doubled-quote-in-name"),
]


def _run_kept(text: str, dialect: str, execute: object) -> list[str]:
    """Run what keep_allowed keeps, each statement alone; returns the removed statements."""
    try:
        kept, removed = keep_allowed(text, DEFAULT_ALLOWED, dialect)  # type: ignore[arg-type]
    except SqlTextError:
        return ["(refused whole)"]
    for statement in kept:
        with suppress(Exception):  # a kept statement may be invalid: what matters is {S}
            execute(statement.text)  # type: ignore[operator]
    return [s.text for s in removed]


@pytest.mark.security
@pytest.mark.parametrize("payload", SMUGGLED)
def test_duckdb_never_runs_a_smuggled_statement(payload: str, tmp_path) -> None:
    target = tmp_path / "smuggled.csv"
    for smuggled in (f"copy (select 42) to '{target}'", "attach ':memory:' as evil"):
        with duckdb.connect(str(tmp_path / "w.duckdb")) as db:
            _run_kept(payload.replace("{S}", smuggled), "duckdb", db.execute)
            attached = [r[0] for r in db.execute("select database_name from duckdb_databases()"
                                                 ).fetchall()]
        assert not target.exists() and "evil" not in attached


@pytest.mark.security
@pytest.mark.parametrize("payload", SMUGGLED)
def test_postgres_never_runs_a_smuggled_statement(payload: str, postgres_url: str) -> None:
    import uuid

    import sqlalchemy as sa

    role = f"smuggled_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            for smuggled in (f"create role {role}",
                             "create schema sm create table smuggled (x int)"):
                # exec_driver_sql: the simple query protocol, which runs several statements
                _run_kept(payload.replace("{S}", smuggled), "postgres", conn.exec_driver_sql)
            roles = conn.exec_driver_sql(f"select count(*) from pg_roles where rolname = "
                                         f"'{role}'").scalar()
            tables = conn.exec_driver_sql("select count(*) from information_schema.tables "
                                          "where table_name = 'smuggled'").scalar()
            conn.exec_driver_sql(f"drop role if exists {role}")
    finally:
        engine.dispose()
    assert (roles, tables) == (0, 0)


def test_the_reviewers_payload_is_split_as_each_database_reads_it() -> None:
    text = ("select $é$ ` $é$; copy (select 42) to '/tmp/x'; attach ':memory:' as evil; "
            "select $é$ ` $é$")
    for dialect in ("duckdb", "postgres"):
        kept, removed = keep_allowed(text, DEFAULT_ALLOWED, dialect)
        assert [s.kind for s in kept] == ["select", "select"], dialect
        assert [s.kind for s in removed] == ["copy", "attach"], dialect


@pytest.mark.security
@pytest.mark.parametrize("dialect", ["duckdb", "postgres"])
def test_the_default_list_creates_a_bare_schema_and_drops_only_tables_and_views(
        dialect: str) -> None:
    text = "create schema if not exists a; create schema main.b; drop table if exists t; " \
           "drop view v; drop schema s cascade; "
    text += ("drop macro m; drop secret k" if dialect == "duckdb" else
             "drop role r; drop database d; create schema s grant create on database postgres "
             "to public; create schema s2 create table t2 (x int)")
    kept, removed = keep_allowed(text, DEFAULT_ALLOWED, dialect)  # type: ignore[arg-type]
    assert [s.short() for s in kept] == ["create schema if not exists a",
                                         "create schema main.b", "drop table if exists t",
                                         "drop view v"]
    assert [s.short() for s in removed] == ["drop schema s cascade", *(
        ["drop macro m", "drop secret k"] if dialect == "duckdb" else
        ["drop role r", "drop database d", "create schema s grant create on database "
         "postgres to public", "create schema s2 create table t2 (x int)"])]


@pytest.mark.bad_input
def test_postgres_refuses_a_backslash_in_a_plain_string() -> None:
    """With standard_conforming_strings off, PostgreSQL would end that string elsewhere."""
    with pytest.raises(SqlTextError) as raised:
        split_statements("select 'C:\\temp' as path")
    assert str(raised.value) == (
        "the string opened at character 8 holds a backslash, which PostgreSQL reads as an "
        "escape when standard_conforming_strings is off; write it as an E'...' string with "
        "the backslash doubled")
    assert [s.kind for s in split_statements("select E'C:\\\\temp' as path")] == ["select"]


@pytest.mark.parametrize("dialect", ["duckdb", "postgres"])
def test_the_masked_text_hides_every_string_and_comment(dialect: str) -> None:
    [statement] = split_statements(
        "select 'pw1' /* note: pw2 */ as a, $$pw3$$ -- pw4\n, E'pw5' as b", dialect)
    assert statement.short() == "select '…' as a, '…' , '…' as b"


def test_duckdb_keywords_and_parsed_type_must_agree() -> None:
    """The first keywords pick the rule; DuckDB's parsed type must be the one they name."""
    kept, removed = keep_allowed("with a as (select 1) insert into t select * from a; "
                                 "with b as (select 1) select * from b", ["with"], "duckdb")
    assert [s.text for s in kept] == ["with a as (select 1) insert into t select * from a",
                                      "with b as (select 1) select * from b"]
    assert not removed
