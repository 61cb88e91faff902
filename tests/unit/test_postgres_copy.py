"""An activation's file from a PostgreSQL warehouse, formatted by PostgreSQL inside
`COPY (...) TO STDOUT`, has the very bytes the batch path (psycopg's values through the
row-wise `csv.writer`, or `json.dumps` per record) writes, for every file option, on tricky
data; a type PostgreSQL cannot print as Python does keeps the batch path."""

import datetime as dt
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from assets import spec
from assets.file_writers import _write_delimited, postgres_line_sql, write_query
from resources.warehouse import WarehouseResource, _csv_cr_unquoted
from tests.unit.test_warehouse_copy import OPTIONS, assert_written  # as on DuckDB

SQL = 'SELECT * FROM "query"."partner" ORDER BY n'
TEXT = ["plain", "", None, 'say "hi"', "a,b", "a;b", "a|b", "tab\there", "line\nbreak",
        "cr\rhere", "crlf\r\n", "café", "李小龙", "ø\\x", " lead", "trail ", '"', ",", "|",
        "\x01ctl\x0b\x1f\x08\x0c", "emoji 🚚", "'single'", "back\\nslash", "\\", "5e+15"]
COLUMNS = ("n int4, text text, short varchar(20), big int8, small int2, "
           "money numeric(18,2), whole numeric(12,0), wide numeric(38,6), flag bool, day date, "
           "stamp timestamp, stamp3 timestamp(3)")


def _rows() -> list[dict]:
    rows = []
    for i, text in enumerate(TEXT):
        rows.append({
            "n": i, "text": text, "short": None if i % 4 == 0 else f"s,{i}",
            "big": None if i % 5 == 0 else (i - 7) * 10 ** min(i, 17),
            "small": None if i % 4 == 1 else i - 9,
            "money": None if i % 3 == 0 else Decimal(i * 137 - 900) / 100,
            "whole": None if i % 3 == 2 else Decimal(i * 10**9),
            "wide": None if i % 3 == 1 else Decimal(10**30 + i) / 10**6 * (-1) ** i,
            "flag": None if i % 3 == 0 else i % 2 == 0,
            "day": None if i % 6 == 0 else dt.date(1900 + 7 * i, 1 + i % 12, 1 + i),
            "stamp": None if i % 7 == 0 else dt.datetime(
                999 if i == 20 else 2026, 1, 1 + i, i % 24, 2 * i % 60, 3 * i % 60,
                0 if i % 2 else 1000 * i + i),
            "stamp3": dt.datetime(2026, 2, 1, 0, 0, i, 1000 * i)})
    return rows


@pytest.fixture(scope="module")
def tricky(postgres_url: str) -> Iterator[WarehouseResource]:
    warehouse = WarehouseResource(url=postgres_url)
    with warehouse.engine().begin() as conn:
        conn.execute(sa.text('CREATE SCHEMA IF NOT EXISTS "query"'))
        conn.execute(sa.text('DROP TABLE IF EXISTS "query"."partner"'))
        conn.execute(sa.text(f'CREATE TABLE "query"."partner" ({COLUMNS})'))
        names = [c.split()[0] for c in COLUMNS.split(", ")]
        conn.execute(sa.text(f'INSERT INTO "query"."partner" VALUES '
                             f'({", ".join(":" + n for n in names)})'), _rows())
    yield warehouse
    with warehouse.engine().begin() as conn:
        conn.execute(sa.text('DROP TABLE "query"."partner"'))
    warehouse.engine().dispose()


def _reference(warehouse: WarehouseResource, target: Path, fmt: spec.OutputFile) -> bytes:
    """Today's bytes: psycopg's values as Arrow batches through the row-wise writer
    (delimited) or json.dumps of each record (JSON lines)."""
    if fmt.type == "jsonl":
        return "".join(json.dumps(record, default=str, ensure_ascii=False) + "\n"
                       for batch in warehouse.batches(SQL)
                       for record in batch.to_pylist()).encode()
    batches = warehouse.batches(SQL)
    _write_delimited(next(batches), batches, target, fmt)
    return target.read_bytes()


def _copy_path_taken(warehouse: WarehouseResource, fmt: spec.OutputFile, sql: str = SQL
                     ) -> bool:
    with warehouse.engine().connect() as conn:
        raw = conn.connection.driver_connection
        assert raw is not None
        with raw.cursor() as cursor:
            cursor.execute(f"SELECT * FROM ({sql}) AS q LIMIT 0")
            columns = cursor.description or []
    return postgres_line_sql(fmt, [c.name for c in columns],
                             [c.type_display for c in columns]) is not None


@pytest.mark.parametrize("options", [*OPTIONS, {"type": "jsonl"},
                                     {"delimiter": ".", "line_suffix": "5"},
                                     {"delimiter": "\\", "quoting": "none"},
                                     {"delimiter": "e"}, {"delimiter": "\t", "line_suffix": "n"},
                                     {"delimiter": ";"}, {"delimiter": ";", "quoting": "all"}],
                         ids=lambda o: "-".join(map(repr, o.values())))
def test_postgres_copy_writes_todays_bytes(tmp_path: Path, tricky: WarehouseResource,
                                           options: dict) -> None:
    fmt = spec.OutputFile(**options)
    assert _copy_path_taken(tricky, fmt)
    written = write_query(tricky, SQL, tmp_path / "out", fmt)
    assert_written(written, tmp_path / "out", _reference(tricky, tmp_path / "reference", fmt),
                   len(TEXT))


@pytest.mark.parametrize("column", ["now()", "CAST(1e23 AS float8)", "CAST(1.5 AS float4)",
                                    "CAST(1.5 AS numeric)", "CAST(1.5 AS numeric(20,10))",
                                    "'a'::char(3)", "'{1}'::int[]",
                                    "gen_random_uuid()", "'{}'::jsonb", "interval '1 day'"])
def test_types_postgres_cannot_print_take_the_batch_path(tmp_path: Path,
                                                         tricky: WarehouseResource,
                                                         column: str) -> None:
    sql = f"SELECT 1 AS n, {column} AS odd"
    for fmt in (spec.OutputFile(), spec.OutputFile(type="jsonl")):
        assert not _copy_path_taken(tricky, fmt, sql)
        assert write_query(tricky, sql, tmp_path / "out", fmt).rows == 1


def test_other_encodings_and_parquet_take_the_batch_path(tmp_path: Path,
                                                         tricky: WarehouseResource) -> None:
    for fmt in (spec.OutputFile(encoding="latin-1", encoding_errors="replace"),
                spec.OutputFile(type="parquet")):
        assert not _copy_path_taken(tricky, fmt)
        assert write_query(tricky, SQL, tmp_path / "out", fmt).rows == len(TEXT)


def test_no_rows_writes_the_header_alone(tmp_path: Path, tricky: WarehouseResource) -> None:
    sql = f"SELECT * FROM ({SQL}) AS q WHERE false"
    for fmt in (spec.OutputFile(), spec.OutputFile(type="jsonl")):
        written = write_query(tricky, sql, tmp_path / "out", fmt)
        assert written.rows == 0
        expected = b"" if fmt.type == "jsonl" else (
            ",".join(c.split()[0] for c in COLUMNS.split(", ")) + "\n").encode()
        assert (tmp_path / "out").read_bytes() == expected


def _native_csv(fmt: spec.OutputFile, names: tuple[str, ...] = ("a", "b")) -> bool:
    lines = postgres_line_sql(fmt, list(names), ["text"] * len(names))
    assert lines is not None
    return lines.csv


def test_postgresqls_own_csv_is_used_where_it_writes_the_same_bytes() -> None:
    """PostgreSQL's CSV COPY for `quoting: minimal` or `all`, LF endings, no suffix and a
    common delimiter (the bytes are checked by test_postgres_copy_writes_todays_bytes); the
    line built in SQL otherwise, and for a lone column (csv.writer quotes its empty field)."""
    for fmt in (spec.OutputFile(), spec.OutputFile(type="tsv", header=False),
                spec.OutputFile(type="psv", quoting="all"), spec.OutputFile(delimiter=";")):
        assert _native_csv(fmt)
    for fmt in (spec.OutputFile(quoting="nonnumeric"), spec.OutputFile(quoting="none"),
                spec.OutputFile(line_ending="crlf"), spec.OutputFile(line_suffix="|"),
                spec.OutputFile(delimiter="e"), spec.OutputFile(delimiter=".")):
        assert not _native_csv(fmt)
    assert not _native_csv(spec.OutputFile(), ("lone",))


def test_a_field_quoted_only_for_its_cr_is_unquoted_again() -> None:
    """csv.writer (LF endings) quotes the delimiter, a quote and LF, not CR."""
    rows = (b'1,"cr\rhere",x\n2,"a\rb,c","say ""hi""\r"\n'
            b'3,"crlf\r\n",""\n4,"\r",plain\n')
    assert _csv_cr_unquoted(rows, b",") == (b'1,cr\rhere,x\n2,"a\rb,c","say ""hi""\r"\n'
                                            b'3,"crlf\r\n",""\n4,\r,plain\n')
    assert _csv_cr_unquoted(b'1,"a,b"\n', b",") == b'1,"a,b"\n'  # no CR: as it is
    assert _csv_cr_unquoted(b'"a\r,b"|"c\rd"\n', b"|") == b'a\r,b|c\rd\n'


def test_a_query_failing_midway_raises_the_servers_error(tmp_path: Path,
                                                         tricky: WarehouseResource) -> None:
    """The COPY's error as psycopg raises it (its class for the SQLSTATE), and the pooled
    connection serves the next query."""
    import psycopg

    failing = "SELECT i, 1 / (150000 - i) AS n FROM generate_series(0, 200000) AS t(i)"
    with pytest.raises(psycopg.errors.DivisionByZero, match="division by zero"):
        write_query(tricky, failing, tmp_path / "out", spec.OutputFile())
    assert write_query(tricky, SQL, tmp_path / "out", spec.OutputFile()).rows == len(TEXT)


def test_a_failing_write_cancels_the_copy_and_leaves_the_connection_usable(
        tricky: WarehouseResource) -> None:
    def write(chunk: bytes | bytearray) -> None:
        if len(chunk) > 100:
            raise OSError("disk full")

    sql = "SELECT i FROM generate_series(0, 2000000) AS t(i)"
    with pytest.raises(OSError, match="disk full"):
        tricky.copy_lines_out(sql, lambda names, types: postgres_line_sql(
            spec.OutputFile(), names, types), write)
    assert tricky.fetch("SELECT 1") == [(1,)]
