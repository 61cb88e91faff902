"""`validate` binds every database and query SQL against the columns the spec declares, and
reports every error of every section in one pass (assets/sql_bind.py)."""

from pathlib import Path

import pytest

from assets import spec
from assets.sql_bind import bind_tables, domain_columns
from assets.sql_refs import SqlCatalog
from orchestration.spec_loader import load_workflow_text
from tests.unit.test_spec_catalogue import VALID, errors_of

DAILY = 'daily: {sql: "select * from domain.orders"}'

pytestmark = pytest.mark.bad_input


def with_daily(sql: str) -> str:
    return VALID.replace(DAILY, f"daily: {{sql: {sql!r}}}".replace("'", '"'), 1)


def test_an_unknown_column_through_an_alias_names_the_known_columns(tmp_path: Path) -> None:
    text = with_daily("select o.order_id, o.amout from domain.orders o")
    assert errors_of(text, tmp_path) == [
        "wf.yaml:26 databases.sales.tables.daily.sql: unknown column 'o.amout' at SQL line 1; "
        "known: domain.orders (order_id, amount, _source_file, _partition)"]


def test_an_unknown_column_without_alias(tmp_path: Path) -> None:
    text = with_daily("select emial from domain.orders")
    assert errors_of(text, tmp_path) == [
        "wf.yaml:26 databases.sales.tables.daily.sql: unknown column 'emial' at SQL line 1; "
        "known: domain.orders (order_id, amount, _source_file, _partition)"]


def test_a_table_is_bound_against_the_columns_of_the_table_built_before_it(
        tmp_path: Path) -> None:
    """The query reads sales.daily, whose columns come from its own SQL: `amount` is gone."""
    text = with_daily("select order_id from domain.orders")
    assert errors_of(text, tmp_path) == [
        "wf.yaml:29 queries.big_orders.sql: unknown column 'amount' at SQL line 1; known: "
        "sales.daily (order_id)"]


def test_a_sql_file_error_names_the_file_and_its_line(tmp_path: Path) -> None:
    (tmp_path / "sql").mkdir()
    (tmp_path / "sql" / "daily.sql").write_text(
        "select order_id,\n       amount\nfrom domain.orders\nwhere amout > 0\n")
    text = VALID.replace(DAILY, "daily: {sql_file: sql/daily.sql}")
    assert errors_of(text, tmp_path) == [
        "wf.yaml:26 databases.sales.tables.daily.sql_file: unknown column 'amout' at daily.sql "
        "line 4; known: domain.orders (order_id, amount, _source_file, _partition)"]


def test_an_unknown_table_in_a_schema_that_is_not_a_layer(tmp_path: Path) -> None:
    text = with_daily("select * from sales_archive.daily")
    assert errors_of(text, tmp_path) == [
        "wf.yaml:26 databases.sales.tables.daily.sql: unknown table 'sales_archive.daily' at SQL "
        "line 1; known: domain.orders, query.big_orders, sales.daily"]


def test_a_duckdb_warehouse_reports_any_bind_error(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STAGECOACH_WAREHOUSE_URL", raising=False)
    text = with_daily("select order_id, amount || 1 as label, no_such_fn(amount) from "
                      "domain.orders")
    assert errors_of(text, tmp_path) == [
        "wf.yaml:26 databases.sales.tables.daily.sql: the SQL does not bind in DuckDB: Catalog "
        "Error: Scalar Function with name no_such_fn does not exist! at SQL line 1"]


def test_a_postgresql_warehouse_reports_unknown_names_only(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    """PostgreSQL SQL may use what DuckDB lacks: only unknown tables and columns are errors, and
    the tables after one DuckDB cannot judge are not bound (not reported either)."""
    monkeypatch.setenv("STAGECOACH_WAREHOUSE_URL", "postgresql+psycopg2://127.0.0.1/test")
    fine = with_daily("select order_id, amount, no_such_fn(amount) as x from domain.orders")
    load_workflow_text(fine.replace("amount >", "amout >"), "wf.yaml", tmp_path)
    wrong = with_daily("select order_id, amout from domain.orders")
    assert errors_of(wrong, tmp_path) == [
        "wf.yaml:26 databases.sales.tables.daily.sql: unknown column 'amout' at SQL line 1; "
        "known: domain.orders (order_id, amount, _source_file, _partition)"]


def test_quality_checks_of_a_sql_table_name_its_result_columns(tmp_path: Path) -> None:
    text = VALID.replace(DAILY, 'daily: {sql: "select order_id from domain.orders", '
                                "quality: [{kind: not_null, columns: [amount]}]}"
                         ).replace(" where amount > {{ params.threshold }}", "")
    assert errors_of(text, tmp_path) == [
        "wf.yaml:26 databases.sales.tables.daily.quality.0: unknown column 'amount' (known: "
        "order_id)"]


def test_every_error_of_every_section_in_one_pass(tmp_path: Path) -> None:
    """A domain table with a bad tag still has its quality checks and `from:` checked, beside
    the other sections' errors; SQL reading the invalid table is not bound (no error that
    fixing the tag would make disappear)."""
    text = (VALID
            .replace("      order_id: {tag: id, required: true}\n",
                     "      order_id: {tag: idd, required: true}\n")
            .replace("      amount: {tag: decimal}\n",
                     "      amount: {tag: decimal}\n    quality:\n"
                     "      - {kind: not_null, columns: [amout]}\n"
                     "      - {kind: unique}\n"
                     "      - {kind: not_null, columns: [order_id]}\n")
            .replace("    from: orders\n", "    from: ordrs\n")
            .replace("username: acme", "username: acme\n    port: x")
            .replace(DAILY, 'daily: {sql: "select * from domain.orders", '
                            "quality: [{kind: row_count}]}\n"
                            '      named: {sql: "select m.emial from sales.daily m"}'))
    assert errors_of(text, tmp_path) == [
        "wf.yaml:12 connections.vendor_sftp.port: Input should be a valid integer, unable to "
        "parse string as an integer",
        "wf.yaml:20 domain_tables.orders.from: unknown courier 'ordrs' (known: orders)",
        "wf.yaml:22 domain_tables.orders.columns.order_id.tag: unknown value; input should be "
        "'text', 'id', 'email', 'phone', 'name', 'given_name', 'surname', 'full_name', "
        "'postal_code', 'date', 'datetime', 'birthdate', 'gender', 'integer', 'decimal', "
        "'boolean', 'country', 'state', 'upper' or 'lower'",
        "wf.yaml:25 domain_tables.orders.quality.0: unknown column 'amout' (known: "
        "_partition, _source_file, amount, order_id)",
        "wf.yaml:26 domain_tables.orders.quality.1.columns: is required",
        "wf.yaml:31 databases.sales.tables.daily.quality.0: a row_count check needs `min:` "
        "and/or `max:`"]


def test_domain_columns_are_what_the_load_leaves() -> None:
    table = spec.DomainTable.model_validate({"from": "x", "columns": {
        "id": {"tag": "id"}, "amount": {"tag": "decimal", "keep_raw": True},
        "born": {"tag": "date"}}})
    assert domain_columns(table, dated=True) == {
        "id": "VARCHAR", "amount": "DECIMAL(18,4)", "amount_raw": "VARCHAR", "born": "DATE",
        "_source_file": "VARCHAR", "_partition": "VARCHAR"}
    assert "_partition" not in domain_columns(table, dated=False)


def test_binding_follows_dependencies_not_names() -> None:
    """`a.z` reads `a.b` (built first though named later); a cycle and what follows it are
    left out, without an error of their own."""
    catalog = SqlCatalog.of(domain={"t"}, databases={"a": {"b", "z", "c1", "c2"}}, queries=())
    tables = {name: (sql, catalog.references(sql)[0]) for name, sql in {
        "a.z": "select total * 2 as double_total from a.b",
        "a.b": "select sum(n) as total from domain.t where n > {{ params.low }}",
        "a.c1": "select * from a.c2", "a.c2": "select * from a.c1"}.items()}
    binding = bind_tables({"t": {"n": "BIGINT"}}, tables, {"low": 3})
    assert binding.columns == {"domain.t": {"n": "BIGINT"}, "a.b": {"total": "HUGEINT"},
                               "a.z": {"double_total": "HUGEINT"}}
    assert binding.failures == {}


def test_each_table_that_does_not_bind_is_reported(tmp_path: Path) -> None:
    """A failed bind does not stop the binder: the next independent SQL is bound too."""
    text = with_daily("select amout from domain.orders").replace(
        "from sales.daily where amount", "from domain.orders where amont")
    assert errors_of(text, tmp_path) == [
        "wf.yaml:26 databases.sales.tables.daily.sql: unknown column 'amout' at SQL line 1; "
        "known: domain.orders (order_id, amount, _source_file, _partition)",
        "wf.yaml:29 queries.big_orders.sql: unknown column 'amont' at SQL line 1; known: "
        "domain.orders (order_id, amount, _source_file, _partition)"]
