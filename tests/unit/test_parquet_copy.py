"""An activation's Parquet written by the warehouse's own `COPY` reads back as the very table
(schema and values) pyarrow's `ParquetWriter` wrote from the warehouse's Arrow batches; a type
whose Parquet would read back otherwise keeps the pyarrow path."""

import datetime as dt
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from assets import spec
from assets.file_writers import write_file, write_query
from resources.connections.files import md5_of
from resources.warehouse import WarehouseResource

SQL = 'SELECT * FROM "query"."partner"'
PARQUET = spec.OutputFile(type="parquet")

# Every type the COPY path takes, in the warehouse's own type names, with nulls and extremes.
COLUMNS = """
    CAST(i % 100 AS TINYINT) AS tiny, CAST(i % 4000 * 7 AS SMALLINT) AS small,
    CAST(i * 1000 AS INTEGER) AS int, CAST(i AS BIGINT) * 1000000000000 AS big,
    CAST(i % 256 AS UTINYINT) AS utiny,
    CAST(i % 65536 AS USMALLINT) AS usmall, CAST(i AS UINTEGER) AS uint,
    CAST(18446744073709551615 - i AS UBIGINT) AS ubig,
    CASE i % 5 WHEN 0 THEN 'nan'::DOUBLE WHEN 1 THEN '-inf'::DOUBLE ELSE i / 3 END AS ratio,
    CAST(i / 7 AS FLOAT) AS single, TIME '23:59:59.5' AS t,
    DATE '0999-01-01' + CAST(i % 3000 AS INTEGER) * 1000 AS day,
    CASE i % 4 WHEN 0 THEN 'say "hi", ok' WHEN 1 THEN '' WHEN 2 THEN 'café 李 🚚' END AS text,
    CAST('bytes' || i AS BLOB) AS raw,
    TIMESTAMP '2026-01-01 00:00:00' + to_microseconds(i * 1234567) AS stamp,
    CAST(TIMESTAMP '2026-01-01 00:00:00.123' AS TIMESTAMP_MS) AS stamp_ms,
    CAST(TIMESTAMP '2026-01-01 00:00:00.123456' AS TIMESTAMP_NS) AS stamp_ns,
    CAST(i % 10000 / 100 AS DECIMAL(4, 2)) AS money4, CAST(i * 1.37 AS DECIMAL(18, 2)) AS money,
    CAST(i / 7 AS DECIMAL(38, 6)) AS wide, CAST(i / 7 AS DECIMAL(30, 10)) AS fine,
    i % 3 = 0 AS flag
"""


def _warehouse(tmp_path: Path, select: str) -> WarehouseResource:
    path = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE SCHEMA IF NOT EXISTS query")
        con.execute(f"CREATE OR REPLACE TABLE query.partner AS {select}")
    return WarehouseResource(url=f"duckdb:///{path}")


def _with_nulls(rows: int) -> str:
    """The columns above over `rows` rows, every one of them NULL on every sixth row."""
    nulled = ", ".join(f"CASE WHEN i % 6 = 5 THEN NULL ELSE {name} END AS {name}"
                       for name in ("tiny", "small", "int", "big", "utiny", "usmall", "uint",
                                    "ubig", "ratio", "single", "day", "t", "text", "raw",
                                    "stamp", "stamp_ms", "stamp_ns", "money4", "money", "wide",
                                    "fine", "flag"))
    return f"SELECT {nulled} FROM (SELECT i, {COLUMNS} FROM range({rows}) r(i))"


def _same(ours: pa.Table, theirs: pa.Table) -> bool:
    """Equal schemas and values, a NaN equal to a NaN (Table.equals holds NaN != NaN)."""
    if not ours.schema.equals(theirs.schema) or ours.num_rows != theirs.num_rows:
        return False
    for name in ours.column_names:
        a, b = ours.column(name), theirs.column(name)
        if pa.types.is_floating(a.type):
            if not pc.is_nan(a).equals(pc.is_nan(b)):
                return False
            a, b = (pc.if_else(pc.is_nan(c), pa.scalar(0, c.type), c) for c in (a, b))
        if not a.equals(b):
            return False
    return True


def _written_by_duckdb(path: Path) -> bool:
    return "DuckDB" in (pq.ParquetFile(path).metadata.created_by or "")


@pytest.mark.parametrize("rows", [250_000, 0])
def test_the_copy_parquet_reads_back_as_pyarrows(tmp_path: Path, rows: int) -> None:
    warehouse = _warehouse(tmp_path, _with_nulls(rows))
    written = write_query(warehouse, SQL, tmp_path / "copy.parquet", PARQUET)
    reference = write_file(warehouse.batches(SQL), tmp_path / "arrow.parquet", PARQUET)
    assert _written_by_duckdb(written.path) and not _written_by_duckdb(reference.path)
    ours, theirs = pq.read_table(written.path), pq.read_table(reference.path)
    assert ours.schema.equals(theirs.schema)
    assert ours.num_rows == theirs.num_rows == rows == written.rows
    assert _same(ours, theirs)
    if rows:
        assert pc.sum(pc.is_nan(ours.column("ratio"))).as_py() > 0  # NaN compared, not skipped
    assert written.size == written.path.stat().st_size
    assert written.md5 == md5_of(written.path)


@pytest.mark.parametrize("select", [
    f"SELECT {COLUMNS} FROM range(1000) r(i)",  # no NULL anywhere: still OPTIONAL columns
    'SELECT CAST(i AS BIGINT) AS "odd ""name"", é", CAST(i AS VARCHAR) AS s FROM range(3) r(i)',
])
def test_columns_without_nulls_keep_pyarrows_schema(tmp_path: Path, select: str) -> None:
    warehouse = _warehouse(tmp_path, select)
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as con:  # and a NOT NULL column
        con.execute('CREATE TABLE query.strict (n BIGINT NOT NULL, s VARCHAR)')
        con.execute("INSERT INTO query.strict VALUES (1, 'a'), (2, NULL)")
    for sql in (SQL, "SELECT * FROM query.strict"):
        written = write_query(warehouse, sql, tmp_path / "copy.parquet", PARQUET)
        reference = write_file(warehouse.batches(sql), tmp_path / "arrow.parquet", PARQUET)
        assert _written_by_duckdb(written.path)
        ours, theirs = pq.read_table(written.path), pq.read_table(reference.path)
        assert all(field.nullable for field in ours.schema)
        assert _same(ours, theirs)


@pytest.mark.parametrize("column", [
    "CAST(TIMESTAMP '2026-01-01 10:00:00' AS TIMESTAMP_S)",
    "TIMESTAMPTZ '2026-01-01 10:00:00+00'",
    "CAST(12 AS HUGEINT)",
    "uuid()",
    "[1, 2]",
    "{'k': 1}",
    "INTERVAL 1 DAY",
])
def test_types_whose_parquet_differs_take_the_pyarrow_path(tmp_path: Path, column: str) -> None:
    warehouse = _warehouse(tmp_path, f"SELECT 1 AS n, {column} AS odd")
    if column == "INTERVAL 1 DAY":  # pyarrow cannot write it: that error stays
        with pytest.raises(pa.ArrowNotImplementedError):
            write_query(warehouse, SQL, tmp_path / "out.parquet", PARQUET)
        return
    written = write_query(warehouse, SQL, tmp_path / "out.parquet", PARQUET)
    assert not _written_by_duckdb(written.path)
    assert written.rows == 1


def test_a_name_twice_takes_the_pyarrow_path(tmp_path: Path) -> None:
    warehouse = _warehouse(tmp_path, "SELECT 1 AS n")
    written = write_query(warehouse, "SELECT n, n FROM query.partner", tmp_path / "out.parquet",
                          PARQUET)
    assert not _written_by_duckdb(written.path)
    assert pq.ParquetFile(written.path).schema_arrow.names == ["n", "n"]


def test_parquet_of_the_same_values_as_python_objects(tmp_path: Path) -> None:
    """One row checked against Python values, not only against the other writer."""
    warehouse = _warehouse(tmp_path, "SELECT CAST(12.5 AS DECIMAL(18, 2)) AS money, "
                                     "DATE '2026-03-01' AS day, 'x,y' AS text, true AS flag")
    written = write_query(warehouse, SQL, tmp_path / "out.parquet", PARQUET)
    assert _written_by_duckdb(written.path)
    assert pq.read_table(written.path).to_pylist() == [
        {"money": Decimal("12.50"), "day": dt.date(2026, 3, 1), "text": "x,y", "flag": True}]
