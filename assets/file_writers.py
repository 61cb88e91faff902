"""Write a stream of Arrow record batches to a delivery file, hashing as it goes."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from assets import spec
from resources.files import md5_of


@dataclass(frozen=True)
class WrittenFile:
    path: Path
    rows: int
    size: int
    md5: str


def write_file(batches: Iterable[pa.RecordBatch], target: Path, fmt: spec.OutputFile
               ) -> WrittenFile:
    """Write the batches in the activation's format; memory holds one batch at a time."""
    target.parent.mkdir(parents=True, exist_ok=True)
    batches = iter(batches)
    first = next(batches)
    rows = 0
    if fmt.type in ("csv", "tsv", "psv"):
        rows = _write_delimited(first, batches, target, fmt)
    elif fmt.type == "parquet":
        with pq.ParquetWriter(target, first.schema) as writer:
            for batch in (first, *batches):
                writer.write_batch(batch)
                rows += batch.num_rows
    elif fmt.type == "jsonl":
        with open(target, "w", encoding="utf-8") as out:
            for batch in (first, *batches):
                for record in batch.to_pylist():
                    out.write(json.dumps(record, default=str, ensure_ascii=False) + "\n")
                rows += batch.num_rows
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


QUOTING = {"minimal": csv.QUOTE_MINIMAL, "all": csv.QUOTE_ALL,
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
        raise
