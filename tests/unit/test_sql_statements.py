"""Splitting fetched SQL into statements: a `;` inside a string, a name, a $$ body or a comment
ends nothing, and only the allowed statement types are kept."""

from __future__ import annotations

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
