"""Activation output benchmark: Stagecoach's file writer against DuckDB's own `COPY ... TO`.

Run it from the project root:

    .venv/bin/python benchmarks/activation_output.py                   # 2,000,000 rows
    .venv/bin/python benchmarks/activation_output.py --rows 200000 --repeat 1   # quick check

What it does: builds a DuckDB warehouse holding `query.partner_file` (id, e-mail, a name that
sometimes holds a comma or a quote, a decimal amount, a date, a boolean, a timestamp), made
deterministically from `range(N)`. Then, each in a fresh subprocess and interleaved `--repeat`
times (the best time counts), for each case (a format, or CSV with a partner's options):

* `duckdb`: `COPY (SELECT * FROM query.partner_file) TO '<file>' (<format options>)`, the
  warehouse writing the file itself: the anchor (plain CSV for the partner-option cases);
* `duckdb+md5`: the same COPY, then the file's md5 read back as an activation needs it for
  the delivery ledger: the floor for any writer that must hash what it wrote;
* `stagecoach`: what an activation does, `assets.file_writers.write_query`: the lines built by
  the warehouse (streamed as Arrow buffers, written and hashed by a second thread) where
  they are today's bytes, Parquet by DuckDB's own COPY, else the batches below;
* `stagecoach-batches`: `WarehouseResource.batches(sql)` streamed into `write_file` (the path
  before the COPY, and the one a PostgreSQL warehouse takes); its file must be byte-identical
  to `stagecoach`'s (checked; Parquet excepted, written by the same code either way);
* `stagecoach-rowwise` (CSV only): the row-wise `csv.writer` path, which `quoting: none` took
  before the COPY path and every CSV took before the vectorised writer;
* `stagecoach-md5-after` (delimited, DuckDB): the same lines written straight to the file in
  one thread, the md5 read back afterwards: the alternative to hashing them in a second
  thread as they are written.

The `pg-*` cases run against a PostgreSQL warehouse (`--postgres`, default the local test
server; the table `query.partner_file` is built there once, the same columns): the anchor is
`psql`'s `\\copy (SELECT * FROM query.partner_file) TO '<file>' (FORMAT csv, HEADER)` run as
a process (for JSON lines `\\copy (SELECT row_to_json(t) FROM query.partner_file t)`, the
nearest PostgreSQL has), `psql+md5` the same then the md5; `stagecoach` is `write_query`
(PostgreSQL formats each line inside `COPY (...) TO STDOUT`, streamed through psycopg 3),
`stagecoach-batches` the batch path (SQLAlchemy rows into Arrow into the writers).

It prints the whole process's wall time, the write alone (timed inside the child: the COPY
statement, or the batches streamed into the writer), the write's CPU seconds (least of the
runs; the child's threads and its own children, so `psql` but not the server), peak RSS
(the reaped child's `ru_maxrss` from `os.wait4`) and the ratios anchor time / Stagecoach
time (1.0 = as fast as DuckDB; `vs +md5` against the COPY followed by the md5 read back). The
process figure includes importing Dagster (about 2 s), which an activation's step does not
pay. It is a report: exit code 0 unless a variant failed, wrote the wrong number of rows, or
the two Stagecoach paths wrote different bytes.
"""

import argparse
import filecmp
import json
import os
import subprocess
import sys
import time
from pathlib import Path

CASES = {  # case: (DuckDB's COPY options for the same file, the spec's file options)
    "csv": ("FORMAT csv, HEADER true", {"type": "csv"}),
    "tsv": ("FORMAT csv, HEADER true, DELIMITER '\t'", {"type": "tsv"}),
    "psv": ("FORMAT csv, HEADER true, DELIMITER '|'", {"type": "psv"}),
    "jsonl": ("FORMAT json", {"type": "jsonl"}),
    "parquet": ("FORMAT parquet", {"type": "parquet"}),
    # Partner options: the anchor stays DuckDB's plain CSV.
    "csv-suffix-crlf": ("FORMAT csv, HEADER true", {"type": "csv", "line_suffix": "|",
                                                    "line_ending": "crlf"}),
    "csv-quote-all": ("FORMAT csv, HEADER true", {"type": "csv", "quoting": "all"}),
    "csv-latin1": ("FORMAT csv, HEADER true", {"type": "csv", "encoding": "latin-1"}),
    "csv-quoting-none": ("FORMAT csv, HEADER true", {"type": "csv", "quoting": "none"}),
    # A PostgreSQL warehouse: the anchor is psql's \copy of the same query.
    "pg-csv": ("(FORMAT csv, HEADER)", {"type": "csv"}),
    "pg-jsonl": ("", {"type": "jsonl"}),
    "pg-csv-quote-all": ("(FORMAT csv, HEADER)", {"type": "csv", "quoting": "all"}),
}
DEFAULT_CASES = [c for c in CASES if not c.startswith("pg-")]
TABLE = "query.partner_file"

BUILD = """
CREATE SCHEMA IF NOT EXISTS query;
CREATE OR REPLACE TABLE {table} AS
SELECT i AS id,
       'member' || i || '@example.com' AS email,
       CASE WHEN i % 17 = 0 THEN 'Smith, Anne' WHEN i % 23 = 0 THEN 'the "Boss"'
            ELSE 'Name ' || (i % 5000) END AS name,
       CAST((i % 100000) / 100.0 AS DECIMAL(18, 2)) AS amount,
       DATE '2020-01-01' + CAST(i % 2000 AS INTEGER) AS joined,
       i % 3 = 0 AS opted_in,
       TIMESTAMP '2026-01-01 00:00:00' + to_seconds(i % 86400) AS seen_at
FROM range({rows}) t(i);
"""

BUILD_POSTGRES = """
CREATE SCHEMA IF NOT EXISTS query;
DROP TABLE IF EXISTS {table};
CREATE TABLE {table} AS
SELECT i::bigint AS id,
       'member' || i || '@example.com' AS email,
       CASE WHEN i % 17 = 0 THEN 'Smith, Anne' WHEN i % 23 = 0 THEN 'the "Boss"'
            ELSE 'Name ' || (i % 5000) END AS name,
       CAST((i % 100000) / 100.0 AS numeric(18, 2)) AS amount,
       DATE '2020-01-01' + (i % 2000)::int AS joined,
       i % 3 = 0 AS opted_in,
       TIMESTAMP '2026-01-01 00:00:00' + make_interval(secs => i % 86400) AS seen_at
FROM generate_series(0, {rows} - 1) AS t(i);
"""

PSQL = """
import subprocess, sys, time
from urllib.parse import urlsplit
url = urlsplit(sys.argv[1])
query = ("SELECT row_to_json(t) FROM {table} t" if sys.argv[3] == "" else "SELECT * FROM {table}")
command = f"\\\\copy ({{query}}) TO '{{sys.argv[2]}}' {{sys.argv[3]}}"
psql = ["psql", "-h", url.hostname, "-p", str(url.port or 5432), "-U", url.username,
        "-d", url.path.lstrip("/"), "-X"]
started, cpu_started = time.perf_counter(), _cpu()
subprocess.run([*psql, "-q", "-c", command], check=True)
{md5}seconds, cpu = time.perf_counter() - started, _cpu() - cpu_started
out = subprocess.run([*psql, "-At", "-c", "SELECT count(*) FROM {table}"],
                     check=True, capture_output=True, text=True).stdout
print(out.strip(), seconds, cpu)
"""
MD5_AFTER = """import hashlib
digest = hashlib.md5(usedforsecurity=False)
with open(sys.argv[2], "rb") as handle:
    while block := handle.read(1 << 20):
        digest.update(block)
"""

CHILD = {
    "psql": PSQL.replace("{md5}", ""),
    "psql+md5": PSQL.replace("{md5}", MD5_AFTER),
    "duckdb": """
import duckdb, sys, time
con = duckdb.connect(sys.argv[1], read_only=True)
started, cpu_started = time.perf_counter(), _cpu()
con.execute(f"COPY (SELECT * FROM {table}) TO '{{sys.argv[2]}}' ({{sys.argv[3]}})")
seconds, cpu = time.perf_counter() - started, _cpu() - cpu_started
print(con.execute(f"SELECT count(*) FROM {table}").fetchone()[0], seconds, cpu)
""",
    "duckdb+md5": """
import duckdb, hashlib, sys, time
con = duckdb.connect(sys.argv[1], read_only=True)
started, cpu_started = time.perf_counter(), _cpu()
con.execute(f"COPY (SELECT * FROM {table}) TO '{{sys.argv[2]}}' ({{sys.argv[3]}})")
digest = hashlib.md5(usedforsecurity=False)
with open(sys.argv[2], "rb") as handle:
    while block := handle.read(1 << 20):
        digest.update(block)
seconds, cpu = time.perf_counter() - started, _cpu() - cpu_started
print(con.execute(f"SELECT count(*) FROM {table}").fetchone()[0], seconds, cpu)
""",
    "stagecoach": """
import json, sys, time
from pathlib import Path
from assets import spec
from assets.file_writers import write_query
from resources.warehouse import WarehouseResource
warehouse = WarehouseResource(url=sys.argv[1])
fmt = spec.OutputFile(**json.loads(sys.argv[3]))
started, cpu_started = time.perf_counter(), _cpu()
rows = write_query(warehouse, "SELECT * FROM {table}", Path(sys.argv[2]), fmt).rows
print(rows, time.perf_counter() - started, _cpu() - cpu_started)
""",
    "stagecoach-batches": """
import json, sys, time
from pathlib import Path
from assets import spec
from assets.file_writers import write_file
from resources.warehouse import WarehouseResource
warehouse = WarehouseResource(url=sys.argv[1])
fmt = spec.OutputFile(**json.loads(sys.argv[3]))
started, cpu_started = time.perf_counter(), _cpu()
rows = write_file(warehouse.batches("SELECT * FROM {table}"), Path(sys.argv[2]), fmt).rows
print(rows, time.perf_counter() - started, _cpu() - cpu_started)
""",
    "stagecoach-rowwise": """
import sys, time
from pathlib import Path
from assets import spec
from assets.file_writers import _write_delimited
from resources.warehouse import WarehouseResource
warehouse = WarehouseResource(url=sys.argv[1])
started, cpu_started = time.perf_counter(), _cpu()
batches = warehouse.batches("SELECT * FROM {table}")
rows = _write_delimited(next(batches), batches, Path(sys.argv[2]), spec.OutputFile())
print(rows, time.perf_counter() - started, _cpu() - cpu_started)
""",
    "stagecoach-md5-after": """
import json, sys, time
from pathlib import Path
from assets import spec
from assets.file_writers import warehouse_line_sql
from resources.connections.files import md5_of
from resources.warehouse import WarehouseResource
warehouse = WarehouseResource(url=sys.argv[1])
fmt = spec.OutputFile(**json.loads(sys.argv[3]))
started, cpu_started = time.perf_counter(), _cpu()
with open(sys.argv[2], "wb") as out:
    rows = warehouse.copy_lines("SELECT * FROM {table}",
                                lambda schema, types: warehouse_line_sql(fmt, schema, types),
                                out.write)
assert rows is not None, "the warehouse declined"
md5_of(Path(sys.argv[2]))
print(rows, time.perf_counter() - started, _cpu() - cpu_started)
""",
}
# Each child's CPU seconds over the write (its threads; `psql`'s process for the anchor),
# printed after its wall time: steadier than wall time on a shared machine.
CPU = """
import resource as _resource
def _cpu():
    mine = _resource.getrusage(_resource.RUSAGE_SELF)
    kids = _resource.getrusage(_resource.RUSAGE_CHILDREN)
    return mine.ru_utime + mine.ru_stime + kids.ru_utime + kids.ru_stime
"""


def run_child(variant: str, warehouse: str, target: Path, case: str
              ) -> tuple[float, float, float, int, float]:
    """Process wall seconds, the write alone (timed in the child), peak RSS in MiB, the rows
    the child wrote and the write's CPU seconds. `warehouse` is the DuckDB file, or the
    PostgreSQL URL for `pg-*` cases."""
    target.unlink(missing_ok=True)
    anchor, options = CASES[case]
    argument = anchor if variant.startswith(("duckdb", "psql")) else json.dumps(options)
    code = CPU + CHILD[variant].format(table=TABLE)
    if variant.startswith("duckdb"):
        warehouse = warehouse.removeprefix("duckdb:///")
    elif variant.startswith("psql"):
        warehouse = warehouse.replace("postgresql+psycopg://", "postgresql://")
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-c", code, warehouse, str(target), argument],
                             stdout=subprocess.PIPE, cwd=Path(__file__).resolve().parents[1])
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    out = child.stdout.read().decode() if child.stdout else ""
    if status != 0:
        raise SystemExit(f"{variant} {case} failed (status {status})")
    rows, write_seconds, cpu = out.strip().splitlines()[-1].split()
    return seconds, float(write_seconds), usage.ru_maxrss / 1024, int(rows), float(cpu)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cases", default=",".join(DEFAULT_CASES),
                        help=f"comma-separated, of: {', '.join(CASES)}")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test",
                        help="the PostgreSQL warehouse of the pg-* cases")
    parser.add_argument("--no-md5-after", action="store_true",
                        help="skip the stagecoach-md5-after variant")
    parser.add_argument("--no-rowwise", action="store_true",
                        help="skip the stagecoach-rowwise variant (about 15 s a run)")
    parser.add_argument("--no-batches", action="store_true",
                        help="skip the stagecoach-batches variant (the path before the COPY)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/stagecoach-bench-output"))
    args = parser.parse_args()
    import duckdb

    args.workdir.mkdir(parents=True, exist_ok=True)
    warehouse = args.workdir / f"warehouse-{args.rows}.duckdb"
    if not warehouse.exists():
        with duckdb.connect(str(warehouse)) as con:
            con.execute(BUILD.format(table=TABLE, rows=args.rows))
    cases = args.cases.split(",")
    if any(c.startswith("pg-") for c in cases):
        import sqlalchemy as sa

        from resources.warehouse import driver_url

        engine = sa.create_engine(driver_url(args.postgres))
        with engine.begin() as conn:
            exists = conn.execute(sa.text("SELECT to_regclass(:t)"), {"t": TABLE}).scalar()
            count = exists and conn.execute(sa.text(f"SELECT count(*) FROM {TABLE}")).scalar()
            if count != args.rows:
                for statement in BUILD_POSTGRES.format(table=TABLE, rows=args.rows).split(";"):
                    if statement.strip():
                        conn.execute(sa.text(statement))
        engine.dispose()
    print(f"{args.rows:,} rows, best of {args.repeat}, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f} at the start")
    print(f"{'case':16} {'variant':20} {'process s':>9} {'write s':>8} {'MB':>7} "
          f"{'peak RSS MiB':>13} {'ratio process':>13} {'ratio write':>11} {'vs +md5':>8} "
          f"{'write CPU s':>11}")
    for case in cases:
        kind = CASES[case][1]["type"]
        postgres = case.startswith("pg-")
        anchors = ["psql", "psql+md5"] if postgres else ["duckdb", "duckdb+md5"]
        after = (not args.no_md5_after and not postgres and kind in ("csv", "tsv", "psv")
                 and "latin" not in case)
        variants = (anchors + ["stagecoach"]
                    + ([] if args.no_batches else ["stagecoach-batches"])
                    + (["stagecoach-rowwise"] if case == "csv" and not args.no_rowwise else [])
                    + (["stagecoach-md5-after"] if after else []))
        url = args.postgres if postgres else f"duckdb:///{warehouse}"
        best: dict[str, tuple[float, float, float, int, float]] = {}
        cpu: dict[str, float] = {}
        size: dict[str, int] = {}
        for _ in range(args.repeat):
            for variant in variants:
                target = args.workdir / f"out-{variant}.{kind}"
                result = run_child(variant, url, target, case)
                if result[3] != args.rows:
                    raise SystemExit(f"{variant} wrote {result[3]} rows, not {args.rows}")
                if variant not in best or result[1] < best[variant][1]:
                    best[variant] = result
                cpu[variant] = min(cpu.get(variant, result[4]), result[4])
                size[variant] = target.stat().st_size
        if "stagecoach-batches" in variants and kind != "parquet":
            same = filecmp.cmp(args.workdir / f"out-stagecoach.{kind}",
                               args.workdir / f"out-stagecoach-batches.{kind}", shallow=False)
            if not same:
                raise SystemExit(f"{case}: the COPY path and the batches path wrote different "
                                 "bytes")
        anchor, hashed = best[anchors[0]], best[anchors[1]]
        for variant in variants:
            seconds, write, rss, _, _ = best[variant]
            print(f"{case:16} {variant:20} {seconds:9.2f} {write:8.2f} "
                  f"{size[variant] / 2**20:7.1f} {rss:13.0f} "
                  f"{anchor[0] / seconds:13.2f} {anchor[1] / write:11.2f} "
                  f"{hashed[1] / write:8.2f} {cpu[variant]:11.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
