"""Write a stream of Arrow record batches to a delivery file, hashing as it goes."""

import codecs
import csv
import hashlib
import itertools
import json
import queue
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa
import pyarrow.compute as _pc
import pyarrow.parquet as pq

from assets import spec
from resources.connections.files import md5_of

if TYPE_CHECKING:
    from resources.warehouse import CopyLines, WarehouseResource


@dataclass(frozen=True)
class WrittenFile:
    """A file an activation wrote: where, its rows, size and md5."""

    path: Path
    rows: int
    size: int
    md5: str


def write_query(warehouse: "WarehouseResource", sql: str, target: Path, fmt: spec.OutputFile
                ) -> WrittenFile:
    """Write a query's result as the activation's file: formatted inside the warehouse when
    it can build the very bytes `write_file` would (DuckDB or PostgreSQL; delimited or JSON
    lines over types whose text it prints as Python does, re-encoded on the way for another
    encoding; Parquet that reads back as pyarrow's, by DuckDB's own COPY), else through
    `write_file`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if fmt.type == "parquet":
        rows = warehouse.copy_parquet(sql, _parquet_copy_types, target)
        if rows is not None:
            return WrittenFile(target, rows, target.stat().st_size, md5_of(target))
        return write_file(warehouse.batches(sql), target, fmt)

    # Another encoding: the warehouse builds the UTF-8 lines, re-encoded as they are written.
    delimited = fmt.type in ("csv", "tsv", "psv")
    utf8 = not delimited or codecs.lookup(fmt.encoding).name == "utf-8"
    lines_fmt = fmt if utf8 else fmt.model_copy(update={"encoding": "utf-8"})
    transcode = None if utf8 else _transcoder(fmt)
    md5 = ""
    try:
        with _hashing_writer(target, transcode) as (write, digest):
            if warehouse.is_duckdb:
                rows = warehouse.copy_lines(
                    sql, lambda schema, types: warehouse_line_sql(lines_fmt, schema, types),
                    write)
            else:
                rows = warehouse.copy_lines_out(
                    sql, lambda names, types: postgres_line_sql(lines_fmt, names, types), write)
        md5 = digest.hexdigest()
    except UnicodeEncodeError:
        rows = None  # a value the encoding cannot hold: the batch path names its row and column
    if rows is None:
        return write_file(warehouse.batches(sql), target, fmt)
    return WrittenFile(target, rows, target.stat().st_size, md5)


def _transcoder(fmt: spec.OutputFile) -> Callable[[bytes, bool], bytes]:
    """UTF-8 bytes in, the file's encoding out, across chunk boundaries (one byte-order mark):
    the bytes `write_file`'s one incremental encoder writes for the same text."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    errors = "replace" if fmt.encoding_errors == "replace" else "strict"
    encoder = codecs.getincrementalencoder(fmt.encoding)(errors)
    return lambda chunk, final: encoder.encode(decoder.decode(chunk, final), final)


@contextmanager
def _hashing_writer(target: Path, transcode: Callable[[bytes, bool], bytes] | None = None
                    ) -> Iterator[tuple[Callable[[Any], None], Any]]:
    """`write(chunk)` for the warehouse's lines: a thread writes each chunk into `target`
    and hashes it (re-encoded first with `transcode`), while the warehouse builds the next,
    so the md5 costs no second read of the file and little time on a second core. At most
    four chunks wait (memory flat); the chunk must not change once handed over (an Arrow
    buffer, bytes).

    The thread's error (a full disk, a value the encoding cannot hold) is raised by the next
    `write` (so the warehouse stops reading) and on the way out; the file is opened before,
    so an unwritable target fails at once."""
    digest = hashlib.md5(usedforsecurity=False)
    chunks: queue.Queue[Any] = queue.Queue(maxsize=4)
    failed: list[BaseException] = []
    out = open(target, "wb")  # noqa: SIM115 - closed by the thread, or below if it never runs

    def drain() -> None:
        try:
            with out:
                while (chunk := chunks.get()) is not None:
                    if failed:
                        continue  # the producer hears it at its next write; keep it unblocked
                    try:
                        data = transcode(bytes(chunk), False) if transcode else chunk
                        digest.update(data)
                        out.write(data)
                    except BaseException as error:
                        failed.append(error)
                if transcode and not failed:
                    data = transcode(b"", True)
                    digest.update(data)
                    out.write(data)
        except BaseException as error:
            failed.append(error)

    def write(chunk: Any) -> None:
        if failed:
            raise failed[0]
        chunks.put(chunk)

    thread = threading.Thread(target=drain, name="stagecoach-file-writer", daemon=True)
    try:
        thread.start()
    except BaseException:
        out.close()
        raise
    try:
        yield write, digest
    finally:
        chunks.put(None)
        thread.join()
    if failed:
        raise failed[0]


# DuckDB types whose Arrow type `_sql_text` / `_json_value_sql` print from, the expressions
# then run on the warehouse's own column (its type is the one the Arrow path registers back).
_COPY_TYPES = re.compile(r"BOOLEAN|(U?(TINY|SMALL|BIG)?INT(EGER)?)|DOUBLE|DATE|VARCHAR|TIMESTAMP"
                         r"|DECIMAL\(\d+,\s*[0-6]\)")


# DuckDB types whose Parquet, written by DuckDB's COPY, reads back as the very table (types and
# values) pyarrow's ParquetWriter writes from the warehouse's Arrow batches. Not listed:
# TIMESTAMP_S (pyarrow writes it as ms), TIMESTAMP WITH TIME ZONE (the time zone's name
# differs), HUGEINT (DuckDB writes a double), UUID, ENUM, INTERVAL, lists and structs.
_PARQUET_COPY_TYPES = re.compile(r"BOOLEAN|U?(TINY|SMALL|BIG)?INT(EGER)?|FLOAT|DOUBLE|DATE|TIME"
                                 r"|VARCHAR|BLOB|TIMESTAMP(_MS|_NS)?|DECIMAL\(\d+,\s*\d+\)")


def _parquet_copy_types(names: list[str], types: list[str]) -> bool:
    """Whether DuckDB's Parquet has pyarrow's table: listed types, each name once."""
    return (bool(types) and len(set(names)) == len(names)
            and all(_PARQUET_COPY_TYPES.fullmatch(t) for t in types))


def warehouse_line_sql(fmt: spec.OutputFile, schema: pa.Schema, types: list[str]
                       ) -> "CopyLines | None":
    """How DuckDB builds the file's lines over columns c0, c1...: the SQL of the whole line,
    its line ending included (the SQL `write_file` runs over Arrow batches, here over the
    warehouse's own columns), the delimiter and the header's fields; None where only the
    Python path writes the same bytes (another encoding, Parquet, xlsx, a type listed
    nowhere, a lone column unquoted)."""
    from resources.warehouse import CopyLines

    if not all(_COPY_TYPES.fullmatch(t) for t in types) or len(types) == 0:
        return None
    names = [f"c{i}" for i in range(len(schema))]
    kinds = list(schema.types)
    if fmt.type == "jsonl":
        if any(_json_value_sql(n, k) is None for n, k in zip(names, kinds, strict=True)):
            return None
        return CopyLines([_json_line_sql(names, kinds, schema)], "", None)
    if fmt.type not in ("csv", "tsv", "psv") or codecs.lookup(fmt.encoding).name != "utf-8":
        return None
    if fmt.quoting == "none" and len(names) == 1:
        return None  # csv.writer refuses a lone empty field unquoted: its error, its path
    if any(_sql_text(n, k) is None for n, k in zip(names, kinds, strict=True)):
        return None
    ending = fmt.line_suffix + ("\r\n" if fmt.line_ending == "crlf" else "\n")
    special = fmt.effective_delimiter + '"' + ending
    header = None
    if fmt.header:
        header = [_header_field(n, fmt, special, len(names) == 1) for n in schema.names]
        header[-1] += ending[:-1]
    return CopyLines([_delimited_line_sql(names, kinds, schema, fmt, ending)],
                     fmt.effective_delimiter, header)


# PostgreSQL types the batch path reads as these Arrow types, and whose text PostgreSQL's
# expressions below print as Python's str() does: (type name pattern, Arrow type). Not float8:
# PostgreSQL's shortest-digits output is not always the shortest (1e+23 prints as
# 9.999999999999999e+22, 4.73e+21 as 4.729999999999999e+21: about 1 value in 250 in a test of
# 240,000), where Python's repr() is; nor float4, unscaled numeric, timestamptz, char(n).
_POSTGRES_TYPES: list[tuple[re.Pattern[str], pa.DataType]] = [
    (re.compile(r"bool"), pa.bool_()), (re.compile(r"int[248]"), pa.int64()),
    (re.compile(r"text|varchar(\(\d+\))?"), pa.string()), (re.compile(r"date"), pa.date32()),
    (re.compile(r"timestamp(\([0-6]\))?"), pa.timestamp("us")),
    # A declared scale: every value has it, as the Decimal the batch path gets does.
    (re.compile(r"numeric\((\d+),([0-6])\)"), pa.decimal128(38, 0)),
]


def _postgres_kind(type_name: str) -> pa.DataType | None:
    for pattern, kind in _POSTGRES_TYPES:
        if match := pattern.fullmatch(type_name):
            return pa.decimal128(38, int(match.group(2))) if pa.types.is_decimal(kind) else kind
    return None


def _postgres_text(column: str, kind: pa.DataType) -> str:
    """A PostgreSQL expression printing the column as `str()` does the value psycopg reads
    (DateStyle ISO, set by the COPY's transaction)."""
    text = f"CAST({column} AS text)"
    if pa.types.is_boolean(kind):
        return f"CASE WHEN {column} THEN 'true' WHEN NOT {column} THEN 'false' END"
    if pa.types.is_timestamp(kind):
        return f"CASE WHEN length({text}) > 19 THEN rpad({text}, 26, '0') ELSE {text} END"
    return text


def postgres_line_sql(fmt: spec.OutputFile, names: list[str], types: list[str]
                      ) -> "CopyLines | None":
    """`warehouse_line_sql` for a PostgreSQL warehouse: the whole line as one PostgreSQL
    expression over columns c0, c1... (its COPY has no unquoted CSV, so the line is the one
    field of a text COPY), the same bytes as the batch path writes; None where only that path
    does (a type not in `_POSTGRES_TYPES`, another encoding, Parquet, xlsx...)."""
    from resources.warehouse import CopyLines

    kinds = [_postgres_kind(t) for t in types]
    columns = [f"c{i}" for i in range(len(names))]
    if not names or any(k is None for k in kinds) or len(set(names)) != len(names):
        return None
    known = [k for k in kinds if k is not None]
    if fmt.type == "jsonl":
        parts = []
        for index, (name, column, kind) in enumerate(zip(names, columns, known, strict=True)):
            key = ("{" if index == 0 else ", ") + json.dumps(name, ensure_ascii=False) + ": "
            parts += [_sql_literal(key), f"coalesce({_postgres_json(column, kind)}, 'null')"]
        return CopyLines([f"concat({', '.join(parts)}, '}}')"], "", None)
    if fmt.type not in ("csv", "tsv", "psv") or codecs.lookup(fmt.encoding).name != "utf-8":
        return None
    if fmt.quoting == "none" and len(names) == 1:
        return None  # csv.writer refuses a lone empty field unquoted: its error, its path
    ending = fmt.line_suffix + ("\r\n" if fmt.line_ending == "crlf" else "\n")
    special = fmt.effective_delimiter + '"' + ending
    lone = len(names) == 1
    if (fmt.quoting in ("minimal", "all") and ending == "\n" and not lone
            and fmt.effective_delimiter in _POSTGRES_CSV_DELIMITERS):
        header = [_header_field(n, fmt, special, lone) for n in names] if fmt.header else None
        return CopyLines(_postgres_csv_fields(columns, known, fmt.quoting == "all"),
                         fmt.effective_delimiter, header, csv=True,
                         force_quote=fmt.quoting == "all")
    fields = [_sql_field(column, kind, _postgres_text(column, kind), fmt, special, lone,
                         postgres=True)
              for column, kind in zip(columns, known, strict=True)]
    delimiter = _sql_literal(fmt.effective_delimiter)
    line = "concat(" + f", {delimiter}, ".join(fields) + f", {_sql_literal(ending[:-1])})"
    header = None
    if fmt.header:
        header = [_header_field(n, fmt, special, lone) for n in names]
        header[-1] += ending[:-1]
    return CopyLines([line], fmt.effective_delimiter, header)


# Delimiters PostgreSQL's CSV COPY takes (one byte, not the quote, CR or LF) among those
# partner files use; another keeps the line built in SQL.
_POSTGRES_CSV_DELIMITERS = (",", "\t", "|", ";")


def _postgres_csv_fields(columns: list[str], kinds: list[pa.DataType], quote_all: bool
                         ) -> list[str]:
    """Each column for PostgreSQL's own CSV COPY, writing `csv.writer`'s bytes (LF endings,
    no suffix, not a lone column): it quotes as `quoting: minimal` does a value holding the
    delimiter, a quote or LF; also one holding CR (unquoted again by `copy_lines_out`) and
    an empty text, made NULL here (written as nothing, as `csv.writer` writes ""). Integers,
    scaled numerics and dates print as they are (DateStyle ISO); booleans and timestamps
    through `_postgres_text`. `quoting: all`: FORCE_QUOTE over every value, NULL made ''."""
    fields = []
    for column, kind in zip(columns, kinds, strict=True):
        if quote_all:
            fields.append(f"coalesce({_postgres_text(column, kind)}, '')")
        elif pa.types.is_string(kind):
            fields.append(f"NULLIF({column}, '')")
        elif pa.types.is_boolean(kind) or pa.types.is_timestamp(kind):
            fields.append(_postgres_text(column, kind))
        else:
            fields.append(column)
    return fields


def _postgres_json(column: str, kind: pa.DataType) -> str:
    r"""`json.dumps(value, default=str, ensure_ascii=False)` of the value psycopg reads:
    PostgreSQL's to_json escapes strings as json.dumps does (lower-case \u00xx)."""
    if pa.types.is_string(kind):
        return f"CAST(to_json({column}) AS text)"
    if pa.types.is_boolean(kind) or pa.types.is_integer(kind):
        return _postgres_text(column, kind)
    return f"""'"' || {_postgres_text(column, kind)} || '"'"""


def _header_field(name: str, fmt: spec.OutputFile, special: str, lone: bool) -> str:
    """A column name as `_field` writes a text value, in plain Python: building a one-value
    Arrow array for it made pyarrow import pandas (about 2 s of a fresh process)."""
    if fmt.quoting == "none":
        return _escaped(name, special)
    if fmt.quoting in ("all", "nonnumeric") or any(c in name for c in special) or (
            lone and name == ""):
        return '"' + name.replace('"', '""') + '"'
    return name


def _escaped(text: str, special: str) -> str:
    """`quoting: none`: a backslash before the delimiter, quote, backslash and line ending."""
    return "".join("\\" + c if c in special + '"\\' else c for c in text)


def _native(kind: pa.DataType) -> bool:
    """Types DuckDB's CSV writer prints as str() does (a timestamp's fraction it shortens)."""
    return (pa.types.is_integer(kind) or pa.types.is_float64(kind) or pa.types.is_date32(kind)
            or pa.types.is_boolean(kind) or (pa.types.is_decimal(kind) and kind.scale <= 6))


def write_file(batches: Iterable[pa.RecordBatch], target: Path, fmt: spec.OutputFile
               ) -> WrittenFile:
    """Write the batches in the activation's format; memory holds one batch at a time."""
    target.parent.mkdir(parents=True, exist_ok=True)
    batches = iter(batches)
    first = next(batches)
    rows = 0
    if fmt.type in ("csv", "tsv", "psv") and fmt.quoting == "none":
        rows = _write_delimited(first, batches, target, fmt)  # escaping: csv.writer's own
    elif fmt.type in ("csv", "tsv", "psv"):
        rows = _write_delimited_vectorised(first, batches, target, fmt)
    elif fmt.type == "parquet":
        with pq.ParquetWriter(target, first.schema) as writer:
            for batch in (first, *batches):
                writer.write_batch(batch)
                rows += batch.num_rows
    elif fmt.type == "jsonl":
        with open(target, "wb") as out:
            rows = _write_lines(_duckdb_lines(
                itertools.chain([first], batches), first.schema, _json_value_sql, _json_text,
                lambda names, kinds: _json_line_sql(names, kinds, first.schema)), out)
    elif fmt.type == "xlsx":
        rows = _write_xlsx(first, batches, target, fmt.header)
    else:  # pragma: no cover - the spec's Literal forbids it
        raise ValueError(f"unknown output type {fmt.type!r}")
    return WrittenFile(target, rows, target.stat().st_size, md5_of(target))


def _write_xlsx(first: pa.RecordBatch, batches: Iterable[pa.RecordBatch], target: Path,
                header: bool) -> int:
    from openpyxl import Workbook  # heavy: imported only when an xlsx is written

    book = Workbook(write_only=True)
    sheet = book.create_sheet("data")
    if header:
        sheet.append(first.schema.names)
    rows = 0
    for batch in (first, *batches):
        for record in batch.to_pylist():
            sheet.append([_excel_value(v) for v in record.values()])
        rows += batch.num_rows
    book.save(target)
    return rows


def _excel_value(value: object) -> object:
    return float(value) if isinstance(value, Decimal) else value


def _text(value: object) -> object:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else value


# pyarrow.compute's functions are generated when it is imported: no stub names them.
pc: Any = _pc

QUOTING: dict[str, Literal[0, 1, 2, 3]] = {"minimal": csv.QUOTE_MINIMAL, "all": csv.QUOTE_ALL,
           "nonnumeric": csv.QUOTE_NONNUMERIC, "none": csv.QUOTE_NONE}


class OutputEncodingError(ValueError):
    """A value cannot be written in the file's encoding; names the row and column."""


def _write_delimited(first: pa.RecordBatch, batches: Iterable[pa.RecordBatch], target: Path,
                     fmt: spec.OutputFile) -> int:
    """Quote only where needed (or as asked), as partner specs expect.

    Each line ends with `line_suffix` then the line ending (the extract tool's "characters
    appended to each line"); the text is encoded as the spec says.
    """
    rows = 0
    ending = fmt.line_suffix + ("\r\n" if fmt.line_ending == "crlf" else "\n")
    errors = "replace" if fmt.encoding_errors == "replace" else "strict"
    with open(target, "w", newline="", encoding=fmt.encoding, errors=errors) as out:
        writer = csv.writer(out, delimiter=fmt.effective_delimiter, lineterminator=ending,
                            quoting=QUOTING[fmt.quoting],
                            escapechar="\\" if fmt.quoting == "none" else None)
        names = first.schema.names
        if fmt.header:
            _write_rows(writer, [names], names, 0, fmt.encoding)
        for batch in (first, *batches):
            columns = [column.to_pylist() for column in batch.columns]
            _write_rows(writer, [[_text(v) for v in row] for row in zip(*columns, strict=True)],
                        names, rows + 1, fmt.encoding)
            rows += batch.num_rows
    return rows


def _write_rows(writer: Any, records: list[list[object]], names: list[str], first_row: int,
                encoding: str) -> None:
    try:
        writer.writerows(records)
    except UnicodeEncodeError as failed:
        _raise_unencodable(records, names, first_row, encoding, failed)
        raise


def _raise_unencodable(records: Iterable[Iterable[object]], names: list[str], first_row: int,
                       encoding: str, failed: UnicodeEncodeError) -> None:
    """Raise OutputEncodingError naming the first row and column the encoding cannot hold."""
    for offset, record in enumerate(records):
        for name, value in zip(names, record, strict=True):
            try:
                str(value).encode(encoding)
            except UnicodeEncodeError:
                where = "the header" if first_row == 0 else f"row {first_row + offset}"
                raise OutputEncodingError(
                    f"{where}, column {name!r}: {failed.object[failed.start:failed.end]!r} "
                    f"cannot be written in {encoding}; choose another `file.encoding` or "
                    "set `file.encoding_errors: replace`") from None


# ------------------------------------------------------------ delimited files, vectorised
# The bytes are those `csv.writer` writes (the row-wise writer below stays the reference and
# the path for `quoting: none`), built column by column with Arrow compute instead of one
# Python object per value: the activation benchmark measured 81% of an activation's time in
# the row-wise writer.

_ARROW_TEXT_TYPES = (pa.types.is_integer, pa.types.is_string, pa.types.is_large_string,
                     pa.types.is_date32)
# Every character str() writes for a number, date, time or boolean (e.g. -1.5E+20, inf, nan,
# 2026-01-01 10:00:00.5+01:00, true, Decimal's sNaN).
_PLAIN_CHARACTERS = set("0123456789+-.:eE TtrufalsinfNIFAsN")


def _plain(kind: pa.DataType) -> bool:
    return any(test(kind) for test in (*_NUMERIC_TYPES, pa.types.is_boolean, pa.types.is_date,
                                       pa.types.is_timestamp, pa.types.is_time))
_NUMERIC_TYPES = (pa.types.is_integer, pa.types.is_floating, pa.types.is_decimal)


def _column_text(column: pa.Array) -> pa.Array:
    """Each value as `str()` writes it (booleans true/false, null ''), as Arrow large strings.

    Arrow's own casts agree with Python's `str()` for integers, text, dates and decimals of
    scale ≤ 6 (a larger scale can print as `1E-10` in Python); the rest go through `str()`."""
    kind = column.type
    if pa.types.is_boolean(kind):
        text = pc.if_else(column, _large("true"), _large("false"))
    elif any(test(kind) for test in _ARROW_TEXT_TYPES) or (
            pa.types.is_decimal(kind) and kind.scale <= 6):
        text = pc.cast(column, pa.large_string())
    elif pa.types.is_timestamp(kind) and kind.tz is None:
        text = _timestamp_text(column)
    else:
        text = pa.array([None if v is None else str(v) for v in column.to_pylist()],
                        pa.large_string())
    return pc.fill_null(pc.cast(text, pa.large_string()), _large(""))


def _timestamp_text(column: pa.Array) -> pa.Array:
    """`str(datetime)`: seconds, then `.ffffff` only when the microseconds are not zero."""
    micros = pc.cast(column, pa.timestamp("us"), safe=False)
    years = pc.year(micros)
    if pc.any(pc.less(years, 1000)).as_py() or pc.any(pc.greater(years, 9999)).as_py():
        return pa.array([None if v is None else str(v) for v in column.to_pylist()],
                        pa.large_string())
    seconds = pc.cast(pc.cast(micros, pa.timestamp("s"), safe=False), pa.large_string())
    fraction = pc.add(pc.multiply(pc.millisecond(micros), 1000), pc.microsecond(micros))
    if not pc.any(pc.not_equal(fraction, 0)).as_py():
        return seconds
    padded = pc.utf8_lpad(pc.cast(fraction, pa.large_string()), 6, "0")
    return pc.if_else(pc.equal(fraction, 0), seconds,
                      pc.binary_join_element_wise(seconds, padded, _large(".")))


def _large(text: str) -> pa.Scalar:
    return pa.scalar(text, pa.large_string())


def _quoted(text: pa.Array, quote: pa.Array | bool) -> pa.Array:
    """Quote where `quote` holds, doubling the quote characters inside, as csv.writer does."""
    if quote is False:
        return text
    wrapped = pc.binary_join_element_wise(
        _large('"'), pc.replace_substring(text, '"', '""'), _large('"'), _large(""))
    return wrapped if quote is True else pc.if_else(quote, wrapped, text)


def _field(column: pa.Array, text: pa.Array, fmt: spec.OutputFile, special: str,
           lone: bool) -> pa.Array:
    """One column's fields: `minimal` quotes a value holding the delimiter, a quote or a
    character of the line terminator (and a lone empty field, which would read as no field);
    `nonnumeric` quotes all but numbers (a null number is an empty text, so it is quoted)."""
    if fmt.quoting == "all":
        return _quoted(text, True)
    if fmt.quoting == "nonnumeric":
        if any(test(column.type) for test in _NUMERIC_TYPES):
            return _quoted(text, pc.fill_null(pc.is_null(column), True))
        return _quoted(text, True)
    if _plain(column.type) and not set(special) & _PLAIN_CHARACTERS and not lone:
        return text  # a number, date, time or boolean cannot hold these characters
    pattern = "[" + "".join("\\" + c if c in "\\]^-[" else c for c in special) + "]"
    quote = pc.match_substring_regex(text, pattern)
    if lone:
        quote = pc.or_(quote, pc.equal(text, ""))
    return _quoted(text, quote)


def _lines(batch: pa.RecordBatch, fmt: spec.OutputFile, ending: str) -> pa.Array:
    special = fmt.effective_delimiter + '"' + ending
    lone = batch.num_columns == 1
    fields = [_field(column, _column_text(column), fmt, special, lone)
              for column in batch.columns]
    joined = pc.binary_join_element_wise(*fields, _large(fmt.effective_delimiter))
    lines = pc.binary_join_element_wise(joined, _large(ending), _large(""))
    return lines.combine_chunks() if isinstance(lines, pa.ChunkedArray) else lines


def _joined(lines: pa.Array) -> memoryview:
    """The lines back to back: Arrow keeps a string array's values so in one buffer."""
    from resources.warehouse import text_buffer

    return text_buffer(lines)


def _write_delimited_vectorised(first: pa.RecordBatch, batches: Iterable[pa.RecordBatch],
                                target: Path, fmt: spec.OutputFile) -> int:
    """`_write_delimited`'s bytes, a batch at a time: each batch's lines are built by Arrow
    and written as one buffer (UTF-8 as it is, another encoding through one encoder, so a
    byte-order mark is written once)."""
    ending = fmt.line_suffix + ("\r\n" if fmt.line_ending == "crlf" else "\n")
    errors = "replace" if fmt.encoding_errors == "replace" else "strict"
    utf8 = codecs.lookup(fmt.encoding).name == "utf-8"
    encoder = codecs.getincrementalencoder(fmt.encoding)(errors)
    names = first.schema.names
    rows = 0
    with open(target, "wb") as out:

        def put(batch: pa.RecordBatch, first_row: int) -> None:
            chunk = _joined(_lines(batch, fmt, ending))
            if utf8:
                out.write(chunk)
                return
            try:
                out.write(encoder.encode(str(chunk, "utf-8")))
            except UnicodeEncodeError as failed:
                records = ([_text(v) for v in r.values()] for r in batch.to_pylist())
                _raise_unencodable(records, names, first_row, fmt.encoding, failed)
                raise

        if fmt.header:
            put(pa.RecordBatch.from_arrays([pa.array([n], pa.large_string()) for n in names],
                                           names=names), 0)
        if utf8:  # nothing to encode: DuckDB builds the lines
            return _write_lines(_duckdb_lines(
                itertools.chain([first], batches), first.schema, _sql_text, _column_text,
                lambda names, kinds: _delimited_line_sql(names, kinds, first.schema, fmt,
                                                         ending)), out)
        for batch in (first, *batches):
            put(batch, rows + 1)
            rows += batch.num_rows
        out.write(encoder.encode("", final=True))
    return rows


# The same lines, built by DuckDB over the Arrow stream: its casts print integers, doubles,
# decimals of scale ≤ 6 and dates as Python's str() does, and it formats on every core. A
# column of another type is turned into text by `_column_text` first.
def _sql_text(column: str, kind: pa.DataType) -> str | None:
    """A DuckDB expression printing the column as `str()` would, or None."""
    if pa.types.is_boolean(kind):
        return f"CASE WHEN {column} THEN 'true' WHEN NOT {column} THEN 'false' END"
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return column
    if (pa.types.is_integer(kind) or pa.types.is_float64(kind) or pa.types.is_date32(kind)
            or (pa.types.is_decimal(kind) and kind.scale <= 6)):
        return f"CAST({column} AS VARCHAR)"
    if pa.types.is_timestamp(kind) and kind.tz is None and kind.unit != "ns":
        # DuckDB prints `2026-01-01 10:00:00.5` where str() prints `.500000`; a year is always
        # four digits (str() has no other), so padding to 26 characters writes the six digits.
        # Whole seconds (the usual case) are tested on the number: one cast per value, not three.
        text = f"CAST({column} AS VARCHAR)"
        return (f"CASE WHEN epoch_us({column}) % 1000000 <> 0 THEN rpad({text}, 26, '0') "
                f"ELSE {text} END")
    return None


def _sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _sql_field(column: str, kind: pa.DataType, text: str, fmt: spec.OutputFile, special: str,
               lone: bool, postgres: bool = False) -> str:
    """`_field` in SQL: the same quoting rules (`kind` is the query's type, before any column
    was turned into text for DuckDB); DuckDB's SQL, or PostgreSQL's."""
    value = f"coalesce({text}, '')"
    # concat() skips a NULL (so a NULL is written ""), and is faster than || in DuckDB; a
    # number, date or boolean holds no quote to double.
    inner = text if _plain(kind) else f"""replace({text}, '"', '""')"""
    quoted = f"""concat('"', {inner}, '"')"""
    if fmt.quoting == "none":  # csv.writer's escaping: a backslash before each special one
        if _plain(kind) and not set(special) & _PLAIN_CHARACTERS:
            return value
        escaped = f"replace({value}, '\\', '\\\\')"  # the backslash itself first
        for c in dict.fromkeys(special + '"'):
            if c != "\\":
                escaped = f"replace({escaped}, {_sql_literal(c)}, {_sql_literal(chr(92) + c)})"
        return escaped
    if fmt.quoting == "all":
        return quoted
    if fmt.quoting == "nonnumeric":
        numeric = any(test(kind) for test in _NUMERIC_TYPES)
        empty = f"{column} IS NULL OR {value} = ''"  # str() of a number is never empty
        return f"CASE WHEN {empty} THEN '\"\"' ELSE {value} END" if numeric else quoted
    # A NULL is left NULL below: DuckDB's COPY writes it as nothing, concat() skips it.
    if _plain(kind) and not set(special) & _PLAIN_CHARACTERS and not lone:
        return text
    needs = " OR ".join((f"strpos({text}, {_sql_literal(c)}) > 0" if postgres else
                         f"contains({text}, {_sql_literal(c)})") for c in dict.fromkeys(special))
    if lone:
        needs += f" OR {value} = ''"
    return f"CASE WHEN {needs} THEN {quoted} ELSE {text} END"


def _delimited_line_sql(names: list[str], kinds: list[pa.DataType], schema: pa.Schema,
                        fmt: spec.OutputFile, ending: str) -> str:
    special = fmt.effective_delimiter + '"' + ending
    fields = [_sql_field(name, field.type, _sql_text(name, kind) or name, fmt, special,
                         len(names) == 1)
              for name, kind, field in zip(names, kinds, schema, strict=True)]
    delimiter = _sql_literal(fmt.effective_delimiter)
    # concat() over all the parts: about twice as fast in DuckDB as a chain of ||.
    return "concat(" + f", {delimiter}, ".join(fields) + f", {_sql_literal(ending)})"


def _json_value_sql(column: str, kind: pa.DataType) -> str | None:
    """A DuckDB expression writing the value as `json.dumps(v, default=str,
    ensure_ascii=False)` does (decimals, dates and times become JSON strings), or None."""
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        value = _json_string_sql(column)
    elif pa.types.is_float64(kind):
        value = (f"CASE WHEN isnan({column}) THEN 'NaN' WHEN isinf({column}) THEN CASE WHEN "
                 f"{column} > 0 THEN 'Infinity' ELSE '-Infinity' END ELSE "
                 f"CAST({column} AS VARCHAR) END")
    elif pa.types.is_boolean(kind) or pa.types.is_integer(kind):
        value = _sql_text(column, kind) or ""
    elif (text := _sql_text(column, kind)) is not None:
        value = f"""'"' || {text} || '"'"""
    else:
        return None
    return f"coalesce({value}, 'null')"


# DuckDB writes \u000B where json.dumps writes \u000b: those escapes are lower-cased, with each
# escaped backslash set aside first (to_json never writes a raw NUL) so `\\u000B` is left alone.
_UPPER_ESCAPES = ("000B", "000E", "000F", "001A", "001B", "001C", "001D", "001E", "001F")


def _json_string_sql(column: str) -> str:
    encoded = f"CAST(to_json({column}) AS VARCHAR)"
    fixed = f"replace({encoded}, '\\\\', chr(0))"
    for code in _UPPER_ESCAPES:
        fixed = f"replace({fixed}, '\\u{code}', '\\u{code.lower()}')"
    fixed = f"replace({fixed}, chr(0), '\\\\')"
    # Only a text holding one of those escapes needs fixing: one contains() on the encoded
    # text (computed once) costs less than a regular expression on every value.
    return f"CASE WHEN contains({encoded}, '\\u00') THEN {fixed} ELSE {encoded} END"


def _json_line_sql(names: list[str], kinds: list[pa.DataType], schema: pa.Schema,
                   newline: bool = True) -> str:
    """One record as json.dumps writes it: `{"key": value, ...}` then a newline (unless the
    COPY writes it)."""
    parts = []
    for index, (name, kind, field) in enumerate(zip(names, kinds, schema, strict=True)):
        key = ("{" if index == 0 else ", ") + json.dumps(field.name, ensure_ascii=False) + ": "
        parts += [_sql_literal(key), _json_value_sql(name, kind) if kind == field.type else name]
    parts.append(_sql_literal("}" if parts else "{}"))
    if newline:
        parts.append("chr(10)")
    return f"concat({', '.join(parts)})"


def _json_text(column: pa.Array) -> pa.Array:
    """Each value as a JSON fragment, for types DuckDB's expressions above do not cover."""
    return pa.array([json.dumps(v, default=str, ensure_ascii=False) for v in column.to_pylist()],
                    pa.large_string())


def _duckdb_lines(batches: Iterator[pa.RecordBatch], schema: pa.Schema,
                  covered: Callable[[str, pa.DataType], str | None],
                  as_text: Callable[[pa.Array], pa.Array],
                  line_sql: Callable[[list[str], list[pa.DataType]], str]) -> Iterator[pa.Array]:
    """The file's lines, a batch at a time, built by an in-memory DuckDB over the Arrow stream.

    A column whose type `covered` has no expression for is turned into text by `as_text`
    first; `line_sql` builds one line from the columns (named c0, c1... in DuckDB)."""
    import duckdb

    names = [f"c{i}" for i in range(len(schema))]
    kinds = [field.type if covered(name, field.type) else pa.large_string()
             for name, field in zip(names, schema, strict=True)]
    renamed = pa.schema([pa.field(n, k) for n, k in zip(names, kinds, strict=True)])

    def prepared(batch: pa.RecordBatch) -> pa.RecordBatch:
        columns = [column if kind == field.type else as_text(column)
                   for column, kind, field in zip(batch.columns, kinds, schema, strict=True)]
        return pa.RecordBatch.from_arrays(columns, schema=renamed)

    reader = pa.RecordBatchReader.from_batches(renamed, (prepared(b) for b in batches))
    with duckdb.connect() as con:
        con.register("batches", reader)
        lines = con.sql(f"SELECT {line_sql(names, kinds)} AS line FROM batches")
        for batch in lines.to_arrow_reader(100_000):
            yield batch.column(0)


def _write_lines(lines: Iterable[pa.Array], out: Any) -> int:
    rows = 0
    for batch in lines:
        out.write(_joined(batch))
        rows += len(batch)
    return rows
