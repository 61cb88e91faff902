"""An activation's file formatted inside the warehouse's own `COPY` has the very bytes of the
row-wise `csv.writer` (delimited) and `json.dumps` (JSON lines) writers, for every file option,
on tricky data; where it cannot, the query is streamed through the Python writers as before."""

import datetime as dt
import hashlib
import itertools
import json
import threading
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from assets import spec
from assets.file_writers import WrittenFile, _write_delimited, warehouse_line_sql, write_query
from resources.warehouse import WarehouseResource

SQL = 'SELECT * FROM "query"."partner"'
TRICKY_TEXT = ["plain", "", None, 'say "hi"', "a,b", "a;b", "a|b", "tab\there", "line\nbreak",
               "cr\rhere", "crlf\r\n", "café", "李小龙", "ø\\x", " lead", "trail ", '"', ",", "|",
               "\x01ctl\x0b\x1f", "emoji 🚚", "'single'"]


def _table() -> pa.Table:
    """Every type the warehouse's COPY path formats, with nulls, extremes and awkward text."""
    n = len(TRICKY_TEXT)
    return pa.table({
        "text": pa.array(TRICKY_TEXT, pa.string()),
        "big": pa.array([None if i % 5 == 0 else (i - 7) * 10**min(i, 17) for i in range(n)],
                        pa.int64()),
        "huge_u": pa.array([None if i % 4 == 0 else 2**64 - 1 - i for i in range(n)],
                           pa.uint64()),
        "small": pa.array([None if i % 4 == 0 else i - 9 for i in range(n)], pa.int16()),
        "ratio": pa.array([None, 0.1, 1.0, 1e16, 1e15, -2.5, 1e-5, 123456789.123, float("inf"),
                           float("nan"), 3.0, 0.0, -0.0, 1e22, 2 / 3, 5e-324, 1.5, 7.0, None,
                           -float("inf"), 1.7976931348623157e308, 1e-7], pa.float64()),
        "money": pa.array([None if i % 3 == 0 else Decimal(i * 137 - 900) / 100
                           for i in range(n)], pa.decimal128(18, 2)),
        "wide": pa.array([None if i % 3 == 1 else Decimal(10**30 + i) / 10**6 * (-1)**i
                          for i in range(n)], pa.decimal128(38, 6)),
        "flag": pa.array([None if i % 3 == 0 else i % 2 == 0 for i in range(n)], pa.bool_()),
        "day": pa.array([None if i % 6 == 0 else dt.date(1900 + 7 * i, 1 + i % 12, 1 + i)
                         for i in range(n)], pa.date32()),
        "stamp": pa.array([None if i % 7 == 0 else dt.datetime(
            999 if i == 20 else 2026, 1, 1 + i, i % 24, 2 * i % 60, 3 * i % 60,
            0 if i % 2 else 1000 * i + i) for i in range(n)], pa.timestamp("us")),
    })


def _warehouse(tmp_path: Path, table: pa.Table) -> WarehouseResource:
    path = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(path)) as con:
        con.register("incoming", table)
        con.execute("CREATE SCHEMA IF NOT EXISTS query")
        con.execute("CREATE OR REPLACE TABLE query.partner AS SELECT * FROM incoming")
    return WarehouseResource(url=f"duckdb:///{path}")


def _reference(warehouse: WarehouseResource, target: Path, fmt: spec.OutputFile) -> bytes:
    """Today's bytes: the warehouse's Arrow batches through the row-wise writer (delimited)
    or json.dumps of each record (JSON lines)."""
    if fmt.type == "jsonl":
        return "".join(json.dumps(record, default=str, ensure_ascii=False) + "\n"
                       for batch in warehouse.batches(SQL)
                       for record in batch.to_pylist()).encode()
    batches = warehouse.batches(SQL)
    _write_delimited(next(batches), batches, target, fmt)
    return target.read_bytes()


def _copy_path_taken(warehouse: WarehouseResource, fmt: spec.OutputFile) -> bool:
    with warehouse._duckdb() as con:
        relation = con.sql(SQL)
        schema = con.sql(f"SELECT * FROM ({SQL}) LIMIT 0").to_arrow_table().schema
        return warehouse_line_sql(fmt, schema, [str(t) for t in relation.types]) is not None


OPTIONS = [dict(type=kind, quoting=quoting, header=header, line_suffix=suffix,
                line_ending=ending)
           for kind, quoting, header, suffix, ending in itertools.product(
               ["csv", "tsv", "psv"], ["minimal", "all", "nonnumeric", "none"], [True, False],
               ["", "|", "\r"], ["lf", "crlf"])]


@pytest.fixture(scope="module")
def tricky(tmp_path_factory: pytest.TempPathFactory) -> WarehouseResource:
    return _warehouse(tmp_path_factory.mktemp("tricky"), _table())


@pytest.mark.parametrize("options", [*OPTIONS, {"type": "jsonl"}],
                         ids=lambda o: "-".join(map(repr, o.values())))
def test_warehouse_copy_writes_todays_bytes(tmp_path: Path, tricky: WarehouseResource,
                                            options: dict) -> None:
    fmt = spec.OutputFile(**options)
    assert _copy_path_taken(tricky, fmt)
    written = write_query(tricky, SQL, tmp_path / "out", fmt)
    assert_written(written, tmp_path / "out", _reference(tricky, tmp_path / "reference", fmt),
                   len(TRICKY_TEXT))


def assert_written(written: WrittenFile, out: Path, expected: bytes, rows: int) -> None:
    """The file holds today's bytes, and what the writer reports (rows, size, md5) is right."""
    assert out.read_bytes() == expected
    assert written.rows == rows
    assert written.size == len(expected)
    assert written.md5 == hashlib.md5(expected).hexdigest()


@pytest.mark.parametrize("quoting", ["minimal", "none"])
@pytest.mark.parametrize("delimiter", [" ", ".", "-", ":", "e", "t", "\x01", "'", "\\", '"'])
def test_warehouse_copy_with_delimiters_that_stand_in_values(
        tmp_path: Path, tricky: WarehouseResource, delimiter: str, quoting: str) -> None:
    fmt = spec.OutputFile(delimiter=delimiter, line_suffix="5", quoting=quoting)
    write_query(tricky, SQL, tmp_path / "out", fmt)
    assert (tmp_path / "out").read_bytes() == _reference(tricky, tmp_path / "reference", fmt)


def test_warehouse_copy_of_no_rows_and_a_lone_column(tmp_path: Path) -> None:
    for table in (pa.table({"only": pa.array(["a", "", None], pa.string())}),
                  pa.table({'odd, "name"': pa.array([], pa.int64())})):
        warehouse = _warehouse(tmp_path, table)
        for fmt in (spec.OutputFile(), spec.OutputFile(header=False),
                    spec.OutputFile(type="jsonl")):
            assert _copy_path_taken(warehouse, fmt)
            written = write_query(warehouse, SQL, tmp_path / "out", fmt)
            assert (tmp_path / "out").read_bytes() == _reference(warehouse, tmp_path / "ref", fmt)
            assert written.rows == table.num_rows


@pytest.mark.parametrize("fmt", [spec.OutputFile(encoding="latin-1"),
                                 spec.OutputFile(encoding="utf-8-sig")])
def test_other_encodings_write_the_python_writers_bytes(tmp_path: Path,
                                                        fmt: spec.OutputFile) -> None:
    """The UTF-8 line SQL declines them (warehouse_line_sql); write_query re-encodes the COPY's
    stream (tests/unit/test_copy_encodings.py) and must still give the row-wise bytes."""
    table = pa.table({"name": ["café", None, "x,y"], "n": [1, 2, 3]})
    warehouse = _warehouse(tmp_path, table)
    assert not _copy_path_taken(warehouse, fmt)
    written = write_query(warehouse, SQL, tmp_path / "out", fmt)
    assert (tmp_path / "out").read_bytes() == _reference(warehouse, tmp_path / "ref", fmt)
    assert written.rows == 3


def test_a_lone_column_unquoted_takes_the_python_path(tmp_path: Path) -> None:
    """csv.writer refuses to write a lone empty field without quotes: that error stays."""
    warehouse = _warehouse(tmp_path, pa.table({"only": pa.array(["a,b", ""], pa.string())}))
    fmt = spec.OutputFile(quoting="none")
    assert not _copy_path_taken(warehouse, fmt)
    with pytest.raises(Exception, match="single empty field record must be quoted"):
        write_query(warehouse, SQL, tmp_path / "out", fmt)


def test_types_the_copy_cannot_print_take_the_python_path(tmp_path: Path) -> None:
    table = pa.table({
        "stamp_tz": pa.array([dt.datetime(2026, 3, 1, 5, tzinfo=dt.UTC), None],
                             pa.timestamp("us", tz="UTC")),
        "ms": pa.array([dt.datetime(2026, 1, 1, 0, 0, 0, 5000), None], pa.timestamp("ms")),
        "tiny": pa.array([Decimal("1E-10"), None], pa.decimal128(38, 10)),
        "f32": pa.array([0.1, None], pa.float32()),
    })
    warehouse = _warehouse(tmp_path, table)
    for fmt in (spec.OutputFile(), spec.OutputFile(type="jsonl")):
        assert not _copy_path_taken(warehouse, fmt)
        write_query(warehouse, SQL, tmp_path / "out", fmt)
        assert (tmp_path / "out").read_bytes() == _reference(warehouse, tmp_path / "ref", fmt)


@pytest.mark.parametrize("fmt", [spec.OutputFile(), spec.OutputFile(type="jsonl"),
                                 spec.OutputFile(type="psv", quoting="all", line_ending="crlf")])
def test_postgres_warehouse_streams_through_the_python_writers(
        tmp_path: Path, postgres_url: str, fmt: spec.OutputFile) -> None:
    import sqlalchemy as sa

    warehouse = WarehouseResource(url=postgres_url)
    with warehouse.engine().begin() as conn:
        conn.execute(sa.text('CREATE SCHEMA IF NOT EXISTS "query"'))
        conn.execute(sa.text('DROP TABLE IF EXISTS "query"."partner"'))
        conn.execute(sa.text('CREATE TABLE "query"."partner" (name text, n bigint, '
                             'amount numeric(12, 2), day date, flag boolean)'))
        conn.execute(sa.text('INSERT INTO "query"."partner" VALUES '
                             "('say \"hi\", ok', 1, 12.50, '2026-01-02', true), "
                             "(NULL, NULL, NULL, NULL, NULL), ('line\nbreak', -3, 0, "
                             "'1999-12-31', false)"))
    try:
        written = write_query(warehouse, SQL, tmp_path / "out", fmt)
        assert (tmp_path / "out").read_bytes() == _reference(warehouse, tmp_path / "ref", fmt)
        assert written.rows == 3
    finally:
        with warehouse.engine().begin() as conn:
            conn.execute(sa.text('DROP TABLE "query"."partner"'))
        warehouse.engine().dispose()


def test_a_query_failing_midway_raises_its_error(tmp_path: Path) -> None:
    """DuckDB's message, through the Arrow stream (as the batch path raises it); the writer
    thread is not left waiting."""
    warehouse = _warehouse(tmp_path, pa.table({"n": pa.array([1], pa.int64())}))
    failing = ("SELECT CAST(CASE WHEN i = 150000 THEN 'x' ELSE '1' END AS INTEGER) AS n "
               "FROM range(200000) t(i)")
    with pytest.raises(Exception, match="Could not convert string 'x' to INT32"):
        write_query(warehouse, failing, tmp_path / "out.csv", spec.OutputFile())
    assert not [t for t in threading.enumerate() if t.name == "stagecoach-file-writer"]


def test_a_target_that_cannot_be_written_fails_the_copy(tmp_path: Path) -> None:
    warehouse = _warehouse(tmp_path, pa.table({"n": pa.array(range(300_000), pa.int64())}))
    (tmp_path / "out.csv").mkdir()  # the file cannot be opened: the COPY must not block
    with pytest.raises(IsADirectoryError):
        write_query(warehouse, SQL, tmp_path / "out.csv", spec.OutputFile())
