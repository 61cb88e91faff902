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



def test_eleven_bound_values_are_not_glued_names() -> None:
    """`:p10` once read as `:p1` glued to `0`: any SQL with 11 values failed to load."""
    from assets.templating import check_template

    sql = "select " + ", ".join(f"{{{{ ds }}}} as v{i}" for i in range(12))
    assert check_template(sql, {}, sql=True) is None
    assert check_template("select x{{ ds }} as y", {}, sql=True) is not None
    assert check_template("select {{ ds }}x as y", {}, sql=True) is not None


# Templates of text and `{{ a }}` / `{{ a.b }}` render without Jinja (assets/templating.py):
# each case must give exactly what Jinja gives, newlines, odd values and fallbacks included.
SIMPLE_CASES = [
    "c_0001_{{ ds_nodash }}.csv", "{{ds}}", "{{  params.threshold  }}", "plain text",
    "", "\n", "two\n\n", "dos\r\nline\r\n", "old\rmac", "a {{ ds }}\r\n{{ params.brand }}\n",
    "}} braces { alone {", "{{ params.items }}", "{{ params.missing_key }}", "{{ none }}",
    "{{ ds }}{{ ds }}", "{{ params.n }} and {{ params.f }} and {{ params.b }}",
    "{{ params.nested.deep }}", "{{ ds.upper }}", "{{ ds | upper }}", "{%- if true %}x{% endif %}",
    "{# note #}{{ ds }}", "{{- ds -}}", "select * from t where d >= {{ ds }}\n",
]
CONTEXT = {**date_context(date(2026, 3, 1), {
    "brand": "acme", "threshold": 100, "n": None, "f": 1.5, "b": True,
    "nested": {"deep": "x"}, "items": "shadowed"})}


@pytest.mark.parametrize("template", SIMPLE_CASES)
def test_simple_templates_render_as_jinja_renders_them(template: str) -> None:
    from assets.templating import _bind_to, _BindCollector, _sql_template, _text_template

    def jinja_sql() -> tuple[str, dict]:
        token = _bind_to.set(_BindCollector(":{}".format))
        try:
            return _sql_template(template).render(**CONTEXT), _bind_to.get().values
        finally:
            _bind_to.reset(token)

    for ours, theirs in ((lambda: render_text(template, CONTEXT),
                          lambda: _text_template(template).render(**CONTEXT)),
                         (lambda: (lambda b: (b.text, b.params))(render_sql(template, CONTEXT)),
                          jinja_sql)):
        try:
            expected: object = theirs()
        except Exception as failed:  # the same error, with the same message
            with pytest.raises(type(failed), match=None) as raised:
                ours()
            assert str(raised.value) == str(failed)
        else:
            assert ours() == expected


def test_dated_and_variables_of_simple_templates_match_jinja() -> None:
    from jinja2 import meta

    from assets.templating import DATE_MACROS, _text_env, is_dated, uses_variable

    for template in SIMPLE_CASES:
        names = meta.find_undeclared_variables(_text_env.parse(template))
        assert is_dated(template) == bool(names & DATE_MACROS), template
        assert uses_variable(template, "params") == ("params" in names), template
