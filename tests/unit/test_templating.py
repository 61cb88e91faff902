"""Dates come from the partition, and values in SQL are bound, never pasted."""

from datetime import date, datetime

import duckdb
import pytest
from jinja2.exceptions import SecurityError, UndefinedError

from assets.templating import date_context, logical_date, render_sql, render_text


def test_date_macros() -> None:
    ctx = date_context(date(2026, 3, 1), {"brand": "acme"})
    rendered = render_text("{{ ds }} {{ ds_nodash }} {{ yesterday_ds }} {{ month_start }} "
                           "{{ params.brand }}", ctx)
    assert rendered == "2026-03-01 20260301 2026-02-28 2026-03-01 acme"


def test_sql_values_are_bound_parameters() -> None:
    hostile = "x'; DROP TABLE customers; --"
    bound = render_sql("select * from t where name = {{ params.name }} and d = {{ ds }}",
                       date_context(date(2026, 1, 2), {"name": hostile}))
    assert bound.text == "select * from t where name = :p0 and d = :p1"
    assert bound.params == {"p0": hostile, "p1": "2026-01-02"}
    with duckdb.connect() as con:
        con.execute("create table t (name varchar, d date)")
        con.execute("insert into t values (?, '2026-01-02')", [hostile])
        duck = render_sql("select count(*) from t where name = {{ params.name }} and "
                          "d = {{ ds }}", date_context(date(2026, 1, 2), {"name": hostile}),
                          "${}".format)
        assert con.execute(duck.text, duck.params).fetchone()[0] == 1


def test_the_sandbox_refuses_python_internals() -> None:
    with pytest.raises(SecurityError):
        render_text("{{ params.__class__.__mro__[1].__subclasses__() }}", date_context(
            date(2026, 1, 1)))


def test_an_undefined_name_is_an_error_not_an_empty_string() -> None:
    with pytest.raises(UndefinedError):
        render_sql("select {{ nope }}", date_context(date(2026, 1, 1)))


def test_logical_date_prefers_partition_then_schedule() -> None:
    now = datetime(2026, 5, 5, 12)
    assert logical_date("2026-01-02", "2026-03-03T02:00:00+00:00", now) == date(2026, 1, 2)
    assert logical_date(None, "2026-03-03T02:00:00+00:00", now) == date(2026, 3, 3)
    assert logical_date(None, None, now) == date(2026, 5, 5)

