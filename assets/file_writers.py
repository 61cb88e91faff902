"""Write a stream of Arrow record batches to a delivery file, hashing as it goes."""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from assets import spec


@dataclass(frozen=True)
class WrittenFile:
    path: Path
    rows: int
    size: int
    md5: str


def md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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


def _write_delimited(first: pa.RecordBatch, batches: Iterable[pa.RecordBatch], target: Path,
                     fmt: spec.OutputFile) -> int:
    """Quote only where needed (or everywhere when asked), as partner specs expect."""
    rows = 0
    with open(target, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out, delimiter=fmt.effective_delimiter, lineterminator="\n",
                            quoting=csv.QUOTE_ALL if fmt.quote_all else csv.QUOTE_MINIMAL)
        if fmt.header:
            writer.writerow(first.schema.names)
        for batch in (first, *batches):
            columns = [column.to_pylist() for column in batch.columns]
            writer.writerows([_text(v) for v in row] for row in zip(*columns, strict=True))
            rows += batch.num_rows
    return rows
