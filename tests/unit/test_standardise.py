"""Semantic tags evaluated by DuckDB itself, value by value."""

import datetime as dt
from decimal import Decimal

import duckdb
import pytest

from assets.feeds import standardise
from assets.semantic_tags import register
from assets.spec import ColumnMapping


def run(tag: str, raw: str | None, **options: object) -> object:
    expr = standardise("raw value", ColumnMapping(tag=tag, **options))
    with duckdb.connect() as con:
        register(con)
        return con.execute(f'SELECT {expr} FROM (SELECT $v AS "raw value")', {"v": raw}
                           ).fetchone()[0]


@pytest.mark.parametrize(("raw", "expected"), [
    ("  John.Smith@Example.COM ", "john.smith@example.com"),
    ("john at example.com", None),
    ("", None),
    (None, None),
])
def test_email(raw: str | None, expected: str | None) -> None:
    assert run("email", raw) == expected


@pytest.mark.parametrize(("raw", "expected"), [
    ("(212) 555-0134", "+12125550134"),
    ("212.555.0134", "+12125550134"),
    ("+1 212 555 0134", "+12125550134"),
    ("1-212-555-0134", "+12125550134"),
    ("0033 1 42 68 53 00", "+33142685300"),
    ("555-0134", None),
    ("call me", None),
])
def test_phone_with_us_default(raw: str, expected: str | None) -> None:
    assert run("phone", raw, default_country_code="1") == expected


def test_phone_national_number_takes_the_calling_code() -> None:
    assert run("phone", "01 42 68 53 00", default_country_code="33") == "+33142685300"
    assert run("phone", "01 42 68 53 00") is None  # no default country: not guessable


@pytest.mark.parametrize(("raw", "expected"), [
    ("  JOHN ", "John"), ("mary   ann smith", "Mary Ann Smith"),
    ("mary   ann SMITH", "mary ann SMITH"),  # mixed case: as its owner wrote it
    ("", None)])
def test_name(raw: str, expected: str | None) -> None:
    assert run("name", raw) == expected


@pytest.mark.parametrize(("raw", "expected"), [
    ("2134", "02134"), (" 10001 ", "10001"), ("021341234", "02134-1234")])
def test_postal_code(raw: str, expected: str) -> None:
    assert run("postal_code", raw, default_region="US") == expected  # US rules: say so


def test_postal_code_without_a_country_is_only_upper_cased() -> None:
    assert run("postal_code", "sw1a   1aa") == "SW1A 1AA"
    assert run("postal_code", "2134") == "2134"  # no US padding unless the country is US


@pytest.mark.parametrize(("raw", "expected"), [
    ("1984-03-07", dt.date(1984, 3, 7)), ("03/07/1984", dt.date(1984, 3, 7)),
    ("07.03.1984", dt.date(1984, 3, 7)), ("unknown", None)])
def test_date(raw: str, expected: dt.date | None) -> None:
    assert run("date", raw) == expected


def test_date_with_explicit_formats() -> None:
    assert run("date", "07/03/1984", formats=["%d/%m/%Y"]) == dt.date(1984, 3, 7)


def test_numbers_and_booleans() -> None:
    assert run("decimal", "$1,234.50") == Decimal("1234.5")
    assert run("integer", "1,204") == 1204
    assert run("integer", "n/a") is None
    assert run("boolean", "Yes") is True
    assert run("boolean", "0") is False
    assert run("datetime", "2026-11-01 13:45:00") == dt.datetime(2026, 11, 1, 13, 45)


@pytest.mark.parametrize("raw", [
    "$1,234.50", "1,2,3", "$ 1 234", "$1_000", "$-5", "-$5", "$+5", "5$", "1e3,", "$.5",
    "$1,234.5678901", "$99999999999999999999", "1,000e2", "$1,2e3", "$,", "$", "$1.2.3",
    "$0x10", "$(5)", "$1 000", "$1__0", "$_1", "$ inf", "$nan", "$1e", "$\t12", "$\uff11\uff12",
])
def test_decimal_with_dollar_or_comma_reads_as_the_regex_does(raw: str) -> None:
    """The cheap path for `$` and `,` (both removed by replace, then the cast) gives what the
    regex that removes everything but digits, sign, point and exponent gives."""
    with duckdb.connect() as con:
        regex = con.execute("SELECT TRY_CAST(regexp_replace($v, '[^0-9.eE+-]', '', 'g') AS "
                            "DECIMAL(18,4))", {"v": raw}).fetchall()
    assert [(run("decimal", raw),)] == regex
