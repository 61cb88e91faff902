"""Bad files and bad rows: what a feed does with a file or a row it cannot load as it is.

A whole-file fault (an empty file, a truncated gzip, no header, a missing required column, a
malformed JSON line, a file that is not Parquet) always fails the load, naming the file (and
line where there is one). A row fault (a wrong field count, an unclosed quote, bytes that are
not valid in the file's encoding, a line over `format.max_line_bytes`, no value in a not-null
column, a primary key already seen) follows the domain table's `bad_rows`: `fail` names the
file and line of the first bad rows and loads nothing; `reject` loads the other rows and keeps
the bad ones in `stagecoach.rejects`; `skip` loads the other rows and counts the bad ones.

Lines are the file's own text lines, as an editor numbers them (1 = the first line), also
after quoted values that hold line breaks; for xlsx they are sheet rows, for Parquet row
numbers. They are worked out only for bad rows, from the byte offsets DuckDB reports for rows
it could not parse and by counting records for rows a check refused, so good loads pay nothing.
"""

import csv
import gzip
import io
import json
import re
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import pyarrow as pa

from assets import spec
from assets.staged import StagedFile, StagedFormat

REJECTS_SCHEMA, REJECTS_TABLE = "stagecoach", "rejects"
# One row per rejected row of every domain table; a load replaces its table's (and partition's).
REJECTS_COLUMNS = {"table_name": "TEXT", "partition_key": "TEXT", "source_file": "TEXT",
                   "line": "BIGINT", "reason": "TEXT", "raw": "TEXT", "run_id": "TEXT"}
RAW_LIMIT = 2000  # characters of a bad row kept in the rejects table and shown in messages
SHOWN_IN_MESSAGE = 5
DELIMITED = ("csv", "tsv", "psv")
DELIMITER_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
GZIP_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile)

csv.field_size_limit(sys.maxsize)  # a huge field is DuckDB's to judge (max_line_bytes), not ours


class BadFile(Exception):
    """A whole-file fault: the message names the file (and line) and says what to do."""


@dataclass(frozen=True)
class SourceFile:
    """One file of a load, as the feed reads it."""

    index: int
    path: str  # the local file DuckDB reads
    source: str  # where it came from: messages, `_source_file`, the rejects table
    columns: tuple[str, ...]  # empty: nothing to read (an empty headerless or JSON lines file)
    header_line: int | None = None  # the header's line, for a delimited file with one
    day_first: tuple[str, ...] = ()  # date columns whose `a/b/yyyy` values this file has day-first


@dataclass
class BadRow:
    """A row that cannot be loaded; `offset` (DuckDB's parse rejects) or `ordinal` (the k-th
    row the reader gave, for rows a check refused) says where it is until `line` is known."""

    file: int
    reason: str
    offset: int | None = None
    ordinal: int | None = None
    raw: str | None = None
    line: int | None = None
    first: "BadRow | None" = None  # for a repeated key: where the key was first seen
    columns: tuple[str, ...] = ()  # columns whose value its tag could not read (`on_invalid`)

    def where(self, files: list[SourceFile]) -> str:
        return f"{files[self.file].source}:{self.line}" if self.line else \
            files[self.file].source


# ---------------------------------------------------------------- reading files


def is_gzip(path: str, fmt: StagedFormat) -> bool:
    """Whether the file is gzip-compressed: by its format's setting, else by a .gz name."""
    compression = fmt.compression
    return compression == "gzip" or (compression == "auto" and path.lower().endswith(".gz"))


def open_binary(path: str, fmt: StagedFormat) -> IO[bytes]:
    """The file's bytes, decompressed when it is gzip."""
    return cast("IO[bytes]", gzip.open(path, "rb")) if is_gzip(path, fmt) else open(path, "rb")


def csv_dialect(fmt: StagedFormat) -> dict[str, Any]:
    """Python's csv options that read a file as DuckDB's read_csv does with these options."""
    quote = fmt.quote or ""
    escape = fmt.escape or quote
    options: dict[str, Any] = {"delimiter": spec.delimiter_for(fmt.type, fmt.delimiter),
                               "strict": False}
    if not quote:
        return {**options, "quoting": csv.QUOTE_NONE}
    return {**options, "quotechar": quote, "doublequote": escape == quote,
            "escapechar": None if escape == quote else escape}


class _Tap:
    """Binary lines as text for csv.reader, keeping the lines each record took."""

    def __init__(self, raw: IO[bytes]):
        self.raw, self.taken = raw, []

    def __iter__(self) -> "_Tap":
        return self

    def __next__(self) -> str:
        line = self.raw.readline()
        if not line:
            raise StopIteration
        self.taken.append(line)
        return line.decode("latin-1")  # byte for byte: newlines and quotes stay where they are

    def take(self) -> bytes:
        taken, self.taken = b"".join(self.taken), []
        return taken


def records(path: str, fmt: StagedFormat) -> Iterator[tuple[int, int, bytes]]:
    """(first line, record number, raw bytes) of every record after the skipped lines, the
    header counted as record 1 when there is one; blank lines are not records (DuckDB skips
    them)."""
    with open_binary(path, fmt) as raw:
        line = 0
        for _ in range(fmt.skip_rows):
            if raw.readline():
                line += 1
        tap = _Tap(raw)
        number = 0
        for fields in csv.reader(tap, **csv_dialect(fmt)):
            taken = tap.take()
            start, line = line + 1, line + taken.count(b"\n") + (not taken.endswith(b"\n"))
            if fields:
                number += 1
                yield start, number, taken


def inspect(index: int, entry: StagedFile, fmt: StagedFormat) -> SourceFile:
    """The columns one file offers, reading only its start; whole-file faults raise BadFile."""
    path, source = entry.path, entry.source
    kind = fmt.type
    size = Path(path).stat().st_size
    header = kind == "parquet" or (kind in DELIMITED and fmt.header)
    if size == 0:
        if header:
            raise BadFile(f"{source}: the file is empty (0 bytes), so it has no header; ask "
                          "the sender to send it again (it may have been sent before it was "
                          "written)")
        return SourceFile(index, path, source, ())
    if kind not in DELIMITED:
        return SourceFile(index, path, source, tuple(_described_columns(path, source, fmt)))
    skip = fmt.skip_rows
    try:
        blank = _only_bom_and_blanks(path, fmt)
        headless = fmt.model_copy(update={"header": False})
        first = None if blank else next(records(path, headless), None)
    except GZIP_ERRORS as bad:
        raise BadFile(gzip_problem(source, path, fmt)) from bad
    if blank:
        if header:
            raise BadFile(f"{source}: the file holds only {blank}, so it has no header; ask "
                          "the sender to send it again (it may have been sent before it was "
                          "written)")
        return SourceFile(index, path, source, ())
    if first is None:
        if header:
            raise BadFile(f"{source}: no header line{f' after {skip} skipped' if skip else ''}"
                          f" (the file holds only blank lines); ask the sender to send it "
                          "again")
        return SourceFile(index, path, source, ())
    start, _, raw = first
    fields = next(csv.reader(io.StringIO(raw.decode("utf-8-sig", "replace")),
                             **csv_dialect(fmt)), [])
    if not header:
        return SourceFile(index, path, source, tuple(f"column{i}" for i in range(len(fields))))
    return SourceFile(index, path, source, tuple(_unique_names(fields)), header_line=start)


def holds_nothing(path: str, fmt: StagedFormat) -> bool:
    """0 bytes, or for a delimited file only a byte order mark and blank space: what a feed's
    `empty_file` is about (a header without rows is not empty: it says the file was written)."""
    if Path(path).stat().st_size == 0:
        return True
    if fmt.type not in DELIMITED:
        return False
    try:
        if _only_bom_and_blanks(path, fmt):
            return True
        with open_binary(path, fmt) as raw:
            start = raw.read(_BLANK_PROBE + 1)
    except GZIP_ERRORS:
        return False
    return len(start) <= _BLANK_PROBE and not start.strip()


BOM = b"\xef\xbb\xbf"
_BLANK_PROBE = 64 * 1024  # a file this short is read whole to see whether it holds anything


def _only_bom_and_blanks(path: str, fmt: StagedFormat) -> str | None:
    """What a delimited file holds when that is only a UTF-8 byte order mark and blank space
    ('a byte order mark', '… and blank space'), else None: such a file has no header, as an
    empty one."""
    with open_binary(path, fmt) as raw:
        start = raw.read(_BLANK_PROBE + 1)
    if len(start) > _BLANK_PROBE or not start.startswith(BOM) or start[len(BOM):].strip():
        return None
    return "a byte order mark" + (" and blank space" if start[len(BOM):] else "")


def _unique_names(fields: list[str]) -> list[str]:
    """Header names as DuckDB would give them: blanks named by position, repeats numbered."""
    names: list[str] = []
    for position, field in enumerate(fields):
        name = field or f"column{position}"
        base, n = name, 0
        while name in names:
            n += 1
            name = f"{base}_{n}"
        names.append(name)
    return names


def _described_columns(path: str, source: str, fmt: StagedFormat) -> list[str]:
    import duckdb

    kind = fmt.type
    reader = ("read_parquet($file)" if kind == "parquet"
              else "read_json($file, format = 'newline_delimited')")
    try:
        with duckdb.connect() as con:
            return [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {reader}",
                                              {"file": path}).fetchall()]
    except duckdb.Error as bad:
        raise BadFile(file_error(SourceFile(-1, path, source, ()), str(bad), fmt)) from bad


def file_error(file: SourceFile | str, message: str, fmt: StagedFormat) -> str:
    """DuckDB's message about a whole file, said plainly, naming the file and what to do."""
    source, path = (file.source, file.path) if isinstance(file, SourceFile) else (file, file)
    first = message.strip().splitlines()[0] if message.strip() else message
    if fmt.type == "jsonl" and "Malformed JSON" in first:
        line, problem = _first_bad_json_line(path, fmt)
        return (f"{source}:{line}: not valid JSON ({problem}); a JSON lines file holds one "
                "JSON object per line and a broken line cannot be skipped: fix the file or ask "
                "the sender for it again")
    if fmt.type == "parquet":
        return (f"{source}: not a readable Parquet file ({first}); ask the sender to send it "
                "again, or set `format.type` on the courier to the file's real type")
    return f"{source}: {first}"


def _first_bad_json_line(path: str, fmt: StagedFormat) -> tuple[int | str, str]:
    """The first line that is not a JSON value (DuckDB names where it noticed, often later)."""
    with open_binary(path, fmt) as raw:
        for number, line in enumerate(raw, start=1):
            if line.strip():
                try:
                    json.loads(line)
                except ValueError as bad:
                    return number, str(getattr(bad, "msg", bad))
    return "?", "malformed"


def gzip_problem(source: str, path: str, fmt: spec.FileFormat) -> str:
    """A truncated or damaged gzip file: the line where it breaks, and what to do."""
    lines = readable_lines(path)
    return (f"{source}:{lines + 1}: the gzip file is truncated or damaged after line "
            f"{lines:,}; ask the sender to send it again")


def readable_lines(path: str) -> int:
    """Complete lines in the part of a gzip file that decompresses."""
    lines, inflate = 0, zlib.decompressobj(wbits=31)
    try:
        with open(path, "rb") as raw:
            while chunk := raw.read(1 << 20):
                lines += inflate.decompress(chunk).count(b"\n")
                if inflate.eof:
                    break
    except zlib.error:
        pass
    return lines


def header_problem(file: SourceFile, missing: list[str], fmt: StagedFormat) -> str:
    """A required column is missing: say which, what the header has, and a likely cause."""
    where = f"{file.source}:{file.header_line}" if file.header_line else file.source
    text = (f"{where}: missing required column(s) {', '.join(missing)} "
            f"(the header has: {', '.join(file.columns) or 'nothing'})")
    delimiter = spec.delimiter_for(fmt.type, fmt.delimiter)
    if fmt.type in DELIMITED and len(file.columns) == 1:
        for other, name in DELIMITER_NAMES.items():
            if other != delimiter and other in file.columns[0]:
                return (f"{text}; the header looks {name}-separated: set `format.delimiter: "
                        f"{other!r}` on the courier")
    return text


# ---------------------------------------------------------------- locating bad rows


def locate(file: SourceFile, fmt: StagedFormat, bad: list[BadRow]) -> None:
    """Fill in the line (and raw text) of one file's bad rows."""
    kind = fmt.type
    if kind == "parquet":
        for row in bad:
            row.line = row.ordinal
        return
    if kind == "jsonl":
        wanted = {row.ordinal for row in bad}
        found: dict[int, tuple[int, bytes]] = {}
        with open_binary(file.path, fmt) as raw:
            ordinal = 0
            for number, text in enumerate(raw, start=1):
                if text.strip():
                    ordinal += 1
                    if ordinal in wanted:
                        found[ordinal] = (number, text)
                        if len(found) == len(wanted):
                            break
        for row in bad:
            row.line, text = (found.get(row.ordinal, (None, b"")) if row.ordinal is not None
                              else (None, b""))
            row.raw = row.raw or _text(text)
        return
    parsed = [(row, row.offset) for row in bad if row.offset is not None]
    lines = _lines_at(file.path, fmt, [offset for _, offset in parsed])
    for row, offset in parsed:
        row.line = lines[offset]
    rejected = {lines[offset] for _, offset in parsed}
    wanted = {row.ordinal for row in bad if row.ordinal is not None}
    sheet_rows = fmt.converted_from == "xlsx"
    by_ordinal: dict[int, tuple[int, bytes]] = {}
    by_line: dict[int, tuple[int, bytes]] = {}  # first line → (sheet row, raw)
    ordinal, header = 0, fmt.header
    row_offset = fmt.sheet_skip_rows
    last = max(rejected, default=0)
    for start, number, raw in records(file.path, fmt):
        if start in rejected:
            by_line[start] = (number + row_offset, raw)
        elif not (header and number == 1):
            ordinal += 1
            if ordinal in wanted:
                by_ordinal[ordinal] = (start, raw)
                if sheet_rows:
                    by_line[start] = (number + row_offset, raw)
        if len(by_ordinal) == len(wanted) and start >= last:
            break
    for row in bad:
        if row.ordinal is not None:
            row.line, raw = by_ordinal.get(row.ordinal, (None, b""))
        else:
            raw = by_line.get(row.line, (None, b""))[1] if row.line is not None else b""
        row.raw = _text(raw) if raw else row.raw
        if sheet_rows and row.line in by_line:
            row.line = by_line[row.line][0]


def _lines_at(path: str, fmt: StagedFormat, offsets: list[int]) -> dict[int, int]:
    r"""The line of each of DuckDB's `line_byte_position`s: 1-based, so the byte it names is the
    row's first one, or for CRLF files the `\n` that ends the line before."""
    result: dict[int, int] = {}
    if not offsets:
        return result
    seen = newlines = 0
    with open_binary(path, fmt) as raw:
        for offset in sorted(set(offsets)):
            want = offset - seen
            while want > 0:
                chunk = raw.read(min(want, 1 << 20))
                if not chunk:
                    break
                newlines += chunk.count(b"\n")
                seen += len(chunk)
                want -= len(chunk)
            result[offset] = newlines + 1
    return result


def _text(raw: bytes) -> str | None:
    if not raw:
        return None
    raw = raw.rstrip(b"\r\n")
    text = raw.decode("utf-8", "replace").replace("\x00", "\\0")  # PostgreSQL stores no NUL
    return text if len(text) <= RAW_LIMIT else f"{text[:RAW_LIMIT]}… ({len(raw):,} bytes)"


# ---------------------------------------------------------------- reasons and messages


def parse_reason(error_type: str, message: str, fmt: StagedFormat) -> str:
    """DuckDB's reason for a row it could not read, said plainly."""
    counts = re.search(r"Expected Number of Columns: (\d+) Found: (\d+)", message)
    if error_type in ("MISSING COLUMNS", "TOO MANY COLUMNS") and counts:
        expected, found = int(counts[1]), int(counts[2])
        fields = f"{found} field{'s' if found != 1 else ''}"
        return (f"{fields} where the header has {expected}" if fmt.header
                else f"{fields} where the first row has {expected}")
    if error_type == "UNQUOTED VALUE":
        return ("a quoted value is not closed (an unbalanced quote); the rest of the file "
                "after it cannot be read")
    if error_type == "LINE SIZE OVER MAXIMUM":
        size = re.search(r"Actual Size:\s*(\d+)", message)
        return (f"the line is {int(size[1]):,} bytes, over `format.max_line_bytes` "
                f"({fmt.max_line_bytes:,})" if size else
                "the line is over `format.max_line_bytes`")
    if error_type == "INVALID ENCODING":
        encoding = fmt.source_encoding or "utf-8"
        return (f"bytes that are not valid {encoding} text; set `format.encoding` to the "
                "file's real encoding (e.g. latin-1, cp1252)")
    return message.strip().splitlines()[0] if message.strip() else error_type.lower()


def rejects_table(rows: list[BadRow], files: list[SourceFile], table: str,
                  partition: str | None, run_id: str) -> pa.Table:
    """The rows to append to stagecoach.rejects: what failed, where, and the raw line."""
    return pa.table({
        "table_name": pa.array([table] * len(rows), pa.string()),
        "partition_key": pa.array([partition] * len(rows), pa.string()),
        "source_file": pa.array([files[r.file].source for r in rows], pa.string()),
        "line": pa.array([r.line for r in rows], pa.int64()),
        "reason": pa.array([r.reason for r in rows], pa.string()),
        "raw": pa.array([r.raw for r in rows], pa.string()),
        "run_id": pa.array([run_id] * len(rows), pa.string()),
    })


def describe(rows: list[BadRow], files: list[SourceFile]) -> str:
    """The first bad rows as `file:line: reason (raw line)`, and how many there are in all. A
    row refused for a value its tag cannot read shows only that value, masked: its raw line
    would show the value (an e-mail, a phone) whole."""
    shown = []
    for row in rows[:SHOWN_IN_MESSAGE]:
        raw = f" ({_short(row.raw)})" if row.raw and not row.columns else ""
        shown.append(f"{row.where(files)}: {row.reason}{raw}")
    more = f" and {len(rows) - SHOWN_IN_MESSAGE:,} more" if len(rows) > SHOWN_IN_MESSAGE else ""
    return "; ".join(shown) + more


def _short(raw: str, limit: int = 80) -> str:
    flat = raw.replace("\r", "\\r").replace("\n", "\\n")
    return flat if len(flat) <= limit else flat[:limit] + "…"


def sort_key(row: BadRow) -> tuple[int, int]:
    """Bad rows in file order, then line order, as a reader expects them."""
    return row.file, row.line or 0
