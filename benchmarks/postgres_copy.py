"""PostgreSQL load paths side by side: which COPY the warehouse uses for Arrow batches.

    .venv/bin/python benchmarks/postgres_copy.py [--rows 1000000] [--repeat 3] [--url URL]

Variants (each loads the same Arrow table into a fresh UNLOGGED table, one transaction):

* `psycopg2-csv` (the anchor, before): psycopg2's `copy_expert` reading Arrow's CSV bytes.
* `psycopg3-csv` (now): psycopg 3's `Cursor.copy` written with Arrow's CSV bytes per batch.
* `psycopg3-binary`: psycopg 3's binary COPY, `write_row` per row (`set_types`), the rows
  turned into Python objects by `to_pylist()`.

Prints seconds (best of --repeat, interleaved) and rows/s, and each as a ratio to the anchor.
"""

from __future__ import annotations

import argparse
import io
import time
from datetime import UTC, datetime, timedelta

import psycopg
import psycopg2
import pyarrow as pa
import pyarrow.csv as pacsv

COLUMNS = "id bigint, name text, amount double precision, seen timestamptz, active boolean"
TYPES = ["int8", "text", "float8", "timestamptz", "bool"]
BATCH = 100_000


def table(rows: int) -> pa.Table:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    return pa.table({
        "id": pa.array(range(rows), pa.int64()),
        "name": pa.array([f"customer {i}" for i in range(rows)]),
        "amount": pa.array([i * 0.25 for i in range(rows)]),
        "seen": pa.array([start + timedelta(seconds=i) for i in range(rows)],
                         pa.timestamp("us", tz="UTC")),
        "active": pa.array([i % 3 == 0 for i in range(rows)]),
    })


def csv_bytes(batch: pa.RecordBatch) -> memoryview:
    sink = io.BytesIO()
    pacsv.write_csv(batch, sink, pacsv.WriteOptions(include_header=False))
    return sink.getbuffer()


class _Stream(io.RawIOBase):
    def __init__(self, data: pa.Table):
        self._batches = iter(data.to_batches(BATCH))
        self._chunk, self._offset = memoryview(b""), 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while self._offset >= len(self._chunk):
            batch = next(self._batches, None)
            if batch is None:
                return b""
            self._chunk, self._offset = csv_bytes(batch), 0
        end = len(self._chunk) if size < 0 else min(self._offset + size, len(self._chunk))
        out = bytes(self._chunk[self._offset:end])
        self._offset = end
        return out


def psycopg2_csv(url: str, data: pa.Table) -> None:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS bench; CREATE UNLOGGED TABLE bench ({COLUMNS})")
        cur.copy_expert("COPY bench FROM STDIN WITH (FORMAT csv)", _Stream(data))
    conn.close()


def psycopg3_csv(url: str, data: pa.Table) -> None:
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS bench; CREATE UNLOGGED TABLE bench ({COLUMNS})")
        with cur.copy("COPY bench FROM STDIN (FORMAT csv)") as copy:
            for batch in data.to_batches(BATCH):
                copy.write(csv_bytes(batch))


def psycopg3_binary(url: str, data: pa.Table) -> None:
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS bench; CREATE UNLOGGED TABLE bench ({COLUMNS})")
        with cur.copy("COPY bench FROM STDIN (FORMAT binary)") as copy:
            copy.set_types(TYPES)
            for batch in data.to_batches(BATCH):
                columns = [c.to_pylist() for c in batch.columns]
                for row in zip(*columns, strict=True):
                    copy.write_row(row)


VARIANTS = {"psycopg2-csv": psycopg2_csv, "psycopg3-csv": psycopg3_csv,
            "psycopg3-binary": psycopg3_binary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    data = table(args.rows)
    best = dict.fromkeys(VARIANTS, float("inf"))
    for _ in range(args.repeat):
        for name, load in VARIANTS.items():
            started = time.perf_counter()
            load(args.url, data)
            best[name] = min(best[name], time.perf_counter() - started)
    with psycopg.connect(args.url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench")
    anchor = best["psycopg2-csv"]
    print(f"{args.rows:,} rows, best of {args.repeat}")
    print(f"{'variant':<18}{'seconds':>9}{'rows/s':>12}{'speed vs anchor':>17}")
    for name, seconds in best.items():
        print(f"{name:<18}{seconds:>9.2f}{args.rows / seconds:>12,.0f}{anchor / seconds:>16.2f}x")


if __name__ == "__main__":
    main()
