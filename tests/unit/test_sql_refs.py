"""Dependencies read from SQL: quoted names count, strings, comments and aliases do not."""

import pytest

from assets.sql_refs import SqlCatalog

CATALOG = SqlCatalog.of(domain={"orders", "customers"}, databases={"sales": {"daily"}},
                        queries={"top"})


@pytest.mark.parametrize(("sql", "known", "unknown"), [
    ('select * from "domain"."orders"', {"domain.orders"}, []),
    ("select * from DOMAIN.Orders", {"domain.orders"}, []),
    ("select * from domain.orders sales where sales.amount > 0", {"domain.orders"}, []),
    ("with sales as (select 1 as id) select * from sales join domain.customers c "
     "on c.id = sales.id", {"domain.customers"}, []),
    ("select 'domain.nope', $$ domain.zz $$ from domain.orders -- domain.nope2\n"
     "/* query.gone */", {"domain.orders"}, []),
    ("select * from sales.daily d join domain.custmers x using (id)", {"sales.daily"},
     ["domain.custmers"]),
    ("select * from query.top t, sales.daily as s", {"query.top", "sales.daily"}, []),
    ("select o.id from domain.orders o", {"domain.orders"}, []),
])
def test_references(sql: str, known: set[str], unknown: list[str]) -> None:
    assert CATALOG.references(sql) == (known, unknown)


def test_describe_says_when_a_schema_has_no_tables() -> None:
    empty = SqlCatalog.of(domain=set(), databases={}, queries=set())
    assert empty.describe("domain.x") == "no tables defined in 'domain'"
