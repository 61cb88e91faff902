"""Courier ingest benchmark: Stagecoach's file load against DuckDB's own `read_csv`, side by side.

The requirement it checks: "Courier ingest must stream: loading a 2 GB CSV keeps peak RSS under
1 GiB, and its throughput is at least half of DuckDB's own `read_csv` into a table on the same
file, measured side by side in one run of the script."

Run it from the project root (a full run takes several minutes on 2 cores):

    .venv/bin/python benchmarks/ingest.py                  # 2 GiB CSV (the requirement)
    .venv/bin/python benchmarks/ingest.py --size-mb 200    # quick check
    .venv/bin/python benchmarks/ingest.py --rows 1000000   # a row count instead of a size

Options: `--workdir` (default /tmp/stagecoach-bench), `--keep` (keep the warehouses and run
folders; the CSV is always kept so the next run reuses it), `--repeat N` (best time of N runs,
interleaved), `--no-text` (skip the third variant), `--per-tag` (also the cost of each tag, see
below; `--per-tag-only` runs just that), `--no-bytecode-cache` (see below).
`rm -rf /tmp/stagecoach-bench` frees the disk. On a shared machine use `--repeat 3`: other
processes on the CPUs slow single runs.

What it does:

1. Generates a deterministic customer CSV (id, e-mail in mixed case with stray spaces, phones
   in seven formats, first/last names, a birth date in six formats or blank or `unknown`, postal
   codes, amounts with `$`, thousands separators or `n/a`) with DuckDB's
   `COPY (SELECT ... FROM range(N)) TO ...`, so it streams and is never held in memory. Values
   come from integer hashing of the row number, not `random()`, so the same row count always
   gives the same bytes. The row count for a target size comes from a 100,000-row sample; the
   file is named after its row count and generator version and reused when it exists. It is
   read once before measuring, so every variant reads it from the page cache alike.
2. `duckdb`: a fresh subprocess runs `CREATE TABLE t AS SELECT * FROM read_csv('<file>')` into a
   fresh DuckDB file with default settings (DuckDB sniffs the types itself).
3. `stagecoach`: a fresh subprocess runs the real workflow - a folder courier that reads the
   file in place and a domain table with the tags id, email, phone, name, date, postal_code and
   decimal - with `build_definitions(...)` and `execute_in_process` on an ephemeral instance and
   a fresh `STAGECOACH_DATA_DIR` (warehouse `<data_dir>/warehouse.duckdb`).
4. `stagecoach-text`: the same run with every column tagged `text`, the price of standardising.

The children import compiled bytecode from a cache in the workdir (`pycache/`, warmed by one
unmeasured import before the first variant), as a deployed code location does: with
PYTHONDONTWRITEBYTECODE=1 in the environment (this project's sessions set it) each Stagecoach
child would otherwise compile from source every module that has no `.pyc`. `make setup` now
compiles the installed packages' bytecode, so that is the project's own modules; a virtualenv
made before it held none, and each child compiled Dagster's ~2,500 modules, about 4.6 CPU
seconds that DuckDB's child (a compiled extension) never pays. `--no-bytecode-cache` measures
without this cache.

How it measures, per variant:

* `process` rows: wall time of the whole subprocess, from spawn to exit (Python start, imports,
  Dagster's run machinery, the load, commit and close), and its peak RSS.
* `statement` / `load step` rows: the `CREATE TABLE` alone, timed inside the child, and the
  domain table's step alone, from the run's step stats (`instance.get_run_step_stats`).
* Peak RSS is the kernel's high-water mark of the child, from `os.wait4(pid)`: Linux returns the
  reaped child's own rusage, whose `ru_maxrss` is the largest RSS that child (or any descendant
  it waited for) ever reached - exact, not sampled, and not polluted by earlier children (unlike
  `getrusage(RUSAGE_CHILDREN)`, whose `ru_maxrss` is the max over every child reaped so far).
  As a cross-check a thread also samples the RSS of the child's whole process tree with psutil
  every 50 ms (`sampled` column; it can only miss short spikes, never add to them).
* `cpu s` is the child's user + system CPU time (from the same rusage); `other` is the CPU time
  the rest of the machine used meanwhile (/proc/stat, including this script's sampler). When
  other processes compete for the CPUs the times are noisy and the script says so.

Cost per tag (`--per-tag`): the file's columns are staged once, cleaned as the load cleans them
(trimmed text, empty -> NULL), in an in-memory DuckDB table; then each column's tag expression
(exactly what the load runs: `standardise_value`, its named values computed once in
projections below it) is evaluated alone over it, `SELECT
count(<expr>)`, and the CPU seconds of that query (user + system of every DuckDB thread, from
`time.process_time`) less those of `count(<column>)` are divided by the non-empty values it read.
That gives CPU-seconds per million values per tag, the figure to attack first.

Throughput is file bytes per second (MB = 2**20 bytes) and generated rows per second. The ratio
compares each variant with DuckDB's at the same scope (process with process, step with
statement); the PASS/FAIL verdict uses the end-to-end `process` figures, the stricter reading,
and the largest peak RSS of any Stagecoach variant. The exit code is 0 whatever the verdict (it
is a report) and 1 only when a load failed or loaded the wrong number of rows.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MIB = 1 << 20
GENERATOR_VERSION = 1
SAMPLE_ROWS = 100_000
RSS_LIMIT_MIB = 1024
MIN_RATIO = 0.5
WORKFLOW = "bench_ingest"
TABLE = "customers"

# Source column -> (semantic tag, extra mapping settings) of the realistic domain table.
COLUMNS: dict[str, tuple[str, dict[str, Any]]] = {
    "customer_id": ("id", {"required": True, "not_null": True}),
    "email": ("email", {"required": True}),
    "phone": ("phone", {"default_country_code": "1"}),
    "first_name": ("name", {}),
    "last_name": ("name", {}),
    "birth_date": ("date", {}),
    "postal_code": ("postal_code", {}),
    "amount": ("decimal", {}),
}
VARIANTS = {
    "duckdb": "DuckDB read_csv",
    "stagecoach": "Stagecoach",
    "stagecoach-text": "Stagecoach, all text",
}


# ---------------------------------------------------------------- the CSV


def _sql_list(values: list[str]) -> str:
    return "[" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + "]"


FIRST = ["james", "MARY", "Robert", "patricia", "John ", " jennifer", "Michael", "LINDA",
         "david", "Elizabeth", "william", "barbara", "mary  ann", "SUSAN", "jean-luc", "Chloé"]
LAST = ["smith", "JOHNSON", "Williams", "brown", "Jones ", "garcia", "MILLER", "davis",
        "Rodriguez", "martinez", "van der berg", "LOPEZ", "o'neil", "Wilson", "ANDERSON", "Ng"]
DOMAINS = ["example.com", "Mail.Example.ORG", "shop.example.net", "EXAMPLE.co.uk"]


def generator_sql(rows: int) -> str:
    """The SELECT whose rows are the CSV: pure functions of the row number `i`."""
    # h1..h6: multiplicative hashes of i modulo a prime below 2**32 (BIGINT-safe to ~2e9 rows).
    hashes = ", ".join(f"(i * {m}) % 4294967291 AS h{n}" for n, m in enumerate(
        [2654435761, 2246822519, 3266489917, 668265263, 374761393, 1181783497], start=1))
    first = f"{_sql_list(FIRST)}[1 + h1 % {len(FIRST)}]"
    last = f"{_sql_list(LAST)}[1 + (h1 // 16) % {len(LAST)}]"
    email = (f"replace(trim({first}), ' ', '') || '.' || replace(trim({last}), ' ', '') || i "
             f"|| '@' || {_sql_list(DOMAINS)}[1 + h2 % {len(DOMAINS)}]")
    a, b, c = "201 + h3 % 789", "200 + (h3 // 789) % 800", "(h3 // 631) % 10000"
    day = "DATE '1950-01-01' + CAST(h4 % 18262 AS INTEGER)"
    zip5 = "lpad(CAST(1001 + h5 % 98950 AS VARCHAR), 5, '0')"
    amount = "CAST(h6 % 5000000 AS DECIMAL(18,0)) / 100"
    plain, grouped = f"format('{{:.2f}}', {amount})", f"format('{{:,.2f}}', {amount})"
    return f"""
        WITH n AS (SELECT i, {hashes} FROM range(1, {rows} + 1) t(i)),
        v AS (SELECT *, {email} AS e FROM n)
        SELECT
          'C' || lpad(CAST(i AS VARCHAR), 10, '0') AS customer_id,
          CASE (h2 // 8) % 10
            WHEN 5 THEN upper(e) WHEN 6 THEN upper(e[1]) || e[2:]
            WHEN 7 THEN '  ' || e || ' ' WHEN 8 THEN ' ' || lower(e)
            WHEN 9 THEN CASE WHEN h2 % 5 = 0 THEN replace(e, '@', ' at ') ELSE e END
            ELSE e END AS email,
          CASE (h3 // 7) % 8
            WHEN 0 THEN printf('(%d) %d-%04d', {a}, {b}, {c})
            WHEN 1 THEN printf('%d.%d.%04d', {a}, {b}, {c})
            WHEN 2 THEN printf('+1 %d %d %04d', {a}, {b}, {c})
            WHEN 3 THEN printf('%d%d%04d', {a}, {b}, {c})
            WHEN 4 THEN printf('1-%d-%d-%04d', {a}, {b}, {c})
            WHEN 5 THEN printf('+44 20 7946 %04d', {c})
            WHEN 6 THEN printf('%d-%04d', {b}, {c})
            ELSE '' END AS phone,
          CASE WHEN h1 % 3 = 0 THEN ' ' || {first} ELSE {first} END AS first_name,
          {last} AS last_name,
          CASE (h4 // 18262) % 8
            WHEN 0 THEN strftime({day}, '%Y-%m-%d') WHEN 1 THEN strftime({day}, '%m/%d/%Y')
            WHEN 2 THEN strftime({day}, '%d.%m.%Y') WHEN 3 THEN strftime({day}, '%Y/%m/%d')
            WHEN 4 THEN strftime({day}, '%Y%m%d') WHEN 5 THEN strftime({day}, '%d-%b-%Y')
            WHEN 6 THEN '' ELSE 'unknown' END AS birth_date,
          CASE (h5 // 98950) % 6
            WHEN 0 THEN {zip5} WHEN 1 THEN CAST(1001 + h5 % 98950 AS VARCHAR)
            WHEN 2 THEN ' ' || {zip5} || ' ' WHEN 3 THEN {zip5} || lpad(CAST(h5 % 10000 AS
              VARCHAR), 4, '0')
            WHEN 4 THEN {zip5} || '-' || lpad(CAST(h5 % 10000 AS VARCHAR), 4, '0')
            ELSE 'SW1A 1AA' END AS postal_code,
          CASE (h6 // 5000000) % 5
            WHEN 0 THEN {plain} WHEN 1 THEN '$' || {grouped} WHEN 2 THEN {grouped}
            WHEN 3 THEN {plain} || ' USD'
            ELSE CASE WHEN h6 % 2 = 0 THEN '' ELSE 'n/a' END END AS amount
        FROM v"""


def _copy_csv(rows: int, target: Path) -> None:
    import duckdb

    partial = target.with_name(target.name + ".partial")
    with duckdb.connect() as con:
        # Order preserved (the default) so the file is the same bytes on every run.
        con.execute(f"COPY ({generator_sql(rows)}) TO '{partial}' (HEADER, DELIMITER ',')")
    os.replace(partial, target)


def rows_for_size(workdir: Path, size_mb: float) -> int:
    """Rows for a target size, from the average row length of a (cached) sample file."""
    sample = workdir / f"sample_v{GENERATOR_VERSION}_{SAMPLE_ROWS}.csv"
    if not sample.exists():
        _copy_csv(SAMPLE_ROWS, sample)
    with open(sample, "rb") as f:
        header = len(f.readline())
    per_row = (sample.stat().st_size - header) / SAMPLE_ROWS
    return max(1, round((size_mb * MIB - header) / per_row))


def ensure_csv(workdir: Path, rows: int) -> Path:
    """The CSV of `rows` rows: reused when already made with the same parameters."""
    target = workdir / f"customers_v{GENERATOR_VERSION}_{rows}.csv"
    if target.exists():
        print(f"reusing {target} ({target.stat().st_size / MIB:,.0f} MB, {rows:,} rows)")
        return target
    print(f"generating {target} ({rows:,} rows) ...", flush=True)
    started = time.perf_counter()
    _copy_csv(rows, target)
    print(f"  {target.stat().st_size / MIB:,.0f} MB in {time.perf_counter() - started:.1f} s")
    return target


def warm_cache(path: Path) -> None:
    with open(path, "rb", buffering=0) as f:
        while f.read(8 * MIB):
            pass


# ---------------------------------------------------------------- the children


def workflow_spec(csv: Path, tags: str) -> dict[str, Any]:
    columns = {}
    for name, (tag, extra) in COLUMNS.items():
        columns[name] = {"source": name, "tag": "text" if tags == "text" else tag}
        columns[name].update({k: v for k, v in extra.items()
                              if tags != "text" or k in ("required", "not_null")})
    return {
        "workflow": {"name": WORKFLOW, "description": "Ingest benchmark."},
        "connections": {"drop": {"kind": "folder", "path": str(csv.parent)}},
        "couriers": {TABLE: {"from": "drop", "path": csv.name}},
        "domain_tables": {TABLE: {"from": TABLE, "primary_key": ["customer_id"],
                                  "columns": columns}},
    }


def child_duckdb(csv: Path, run_dir: Path) -> dict[str, Any]:
    import duckdb

    path = str(csv).replace("'", "''")
    with duckdb.connect(str(run_dir / "baseline.duckdb")) as con:
        started = time.perf_counter()
        con.execute(f"CREATE TABLE t AS SELECT * FROM read_csv('{path}')")
        seconds = time.perf_counter() - started
        rows = con.execute("SELECT count(*) FROM t").fetchone()[0]
    return {"core_seconds": seconds, "rows": rows, "core_label": "statement"}


def child_stagecoach(csv: Path, run_dir: Path, tags: str) -> dict[str, Any]:
    import dagster as dg
    import yaml

    sys.path.insert(0, str(ROOT))
    from assets.names import domain_key, workflow_job_name
    from orchestration.definitions import build_definitions

    workflows = run_dir / "workflows"
    workflows.mkdir(parents=True, exist_ok=True)
    (workflows / f"{WORKFLOW}.yaml").write_text(yaml.safe_dump(workflow_spec(csv, tags)))
    started = time.perf_counter()
    defs = build_definitions(workflows)
    job = defs.resolve_job_def(workflow_job_name(WORKFLOW))
    with dg.DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(instance=instance, raise_on_error=False)
        run_seconds = time.perf_counter() - started
        steps = {s.step_key: (s.end_time or 0) - (s.start_time or 0)
                 for s in instance.get_run_step_stats(result.run_id)}
    if not result.success:
        failures = []
        for event in result.all_events:
            error = event.event_specific_data.error if event.is_step_failure else None
            while error is not None:  # the step error, then what caused it
                failures.append(str(error.message).strip())
                error = error.cause
        raise RuntimeError(f"run {result.run_id} failed: {' <- '.join(failures)}")
    rows = next(e.materialization.metadata["dagster/row_count"].value
                for e in result.get_asset_materialization_events()
                if e.materialization.asset_key == domain_key(TABLE))
    domain_step = next(v for k, v in steps.items() if k.startswith("domain"))
    return {"core_seconds": domain_step, "rows": rows, "core_label": "load step",
            "run_seconds": run_seconds, "steps": steps}


def profile_tags(csv: Path, repeat: int = 1) -> list[tuple[str, str, int, float]]:
    """(column, tag, non-empty values, CPU-seconds per million values) of each tagged column,
    each tag's expression timed alone over the same staged, cleaned table (best of `repeat`)."""
    import duckdb

    sys.path.insert(0, str(ROOT))
    from assets.feeds import clean, with_lets
    from assets.semantic_tags import Staged, register, standardise_value
    from assets.spec import ColumnMapping
    from resources.warehouse import quote_ident

    path = str(csv).replace("'", "''")
    cleaned = ", ".join(f"{clean(c)} AS {quote_ident(c)}" for c in COLUMNS)
    results = []
    with duckdb.connect() as con:
        con.execute(f"CREATE TABLE staged AS SELECT {cleaned} FROM read_csv('{path}', "
                    "all_varchar = true)")
        for column, (tag, extra) in COLUMNS.items():
            mapping = ColumnMapping(tag=tag, **{k: v for k, v in extra.items()
                                                if k not in ("required", "not_null")})
            q, staged = quote_ident(column), Staged("_let_")
            expr = standardise_value(q, mapping, staged)  # as the load names values: once
            source = with_lets("staged", [staged.lets])
            values = con.execute(f"SELECT count({q}) FROM staged").fetchall()[0][0]
            best = float("inf")
            for _ in range(repeat):
                register(con)  # a fresh memo, as each load starts with
                started = time.process_time()
                con.execute(f"SELECT count({q}) FROM staged").fetchall()
                floor = time.process_time() - started
                started = time.process_time()
                con.execute(f"SELECT count({expr}) FROM {source}").fetchall()
                best = min(best, time.process_time() - started - floor)
            results.append((column, tag, values, max(0.0, best) / max(values, 1) * 1e6))
    return results


def print_tag_costs(costs: list[tuple[str, str, int, float]]) -> None:
    print()
    print(f"{'column':<14}{'tag':<13}{'values':>12}{'CPU s / M values':>18}")
    print("-" * 57)
    for column, tag, values, cost in costs:
        print(f"{column:<14}{tag:<13}{values:>12,}{cost:>18.3f}")
    print(f"{'all tags':<27}{sum(v for _, _, v, _ in costs):>12,}"
          f"{'':>18}  (sum of column costs: "
          f"{sum(v * c for _, _, v, c in costs) / 1e6:.1f} CPU s for the file)")


def run_child(args: argparse.Namespace) -> int:
    csv, run_dir = Path(args.csv), Path(args.run_dir)
    if args.child == "duckdb":
        out = child_duckdb(csv, run_dir)
    else:
        out = child_stagecoach(csv, run_dir, "text" if args.child.endswith("text") else "tags")
    Path(args.result).write_text(json.dumps(out))
    return 0


# ---------------------------------------------------------------- measuring


@dataclass
class Measure:
    variant: str
    seconds: float = 0.0
    core_seconds: float = 0.0
    core_label: str = ""
    cpu_seconds: float = 0.0
    other_cpu: float = 0.0
    peak_mib: float = 0.0
    sampled_mib: float = 0.0
    rows: int = 0
    ok: bool = True
    detail: dict[str, Any] = field(default_factory=dict)


class TreeSampler(threading.Thread):
    """Peak of the summed RSS of a process and its descendants, sampled every 50 ms."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak, self.done = pid, 0, threading.Event()

    def run(self) -> None:
        try:
            import psutil
        except ImportError:
            return
        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self.done.is_set():
            try:
                total = 0
                for proc in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        total += proc.memory_info().rss
                self.peak = max(self.peak, total)
            except psutil.Error:
                return
            self.done.wait(0.05)


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (Linux /proc/stat)."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
    except OSError:
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


BYTECODE: Path | None = None  # the children's bytecode cache (None: as the environment says)


def child_env() -> dict[str, str]:
    """The children's environment: no Stagecoach or Dagster settings of the caller's, and,
    unless `--no-bytecode-cache`, a bytecode cache of their own. A deployed code location
    imports compiled bytecode; a shell with PYTHONDONTWRITEBYTECODE=1 (this project's sessions
    set it) would make every child compile each module without a `.pyc` from source again (in
    a virtualenv without compiled bytecode, Dagster's ~2,500 modules: about 4.6 CPU seconds
    that DuckDB's child, a compiled extension, never pays)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STAGECOACH_", "DAGSTER_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if BYTECODE is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(BYTECODE)  # beside the CSV, not in the virtualenv
    return env


def warm_bytecode() -> None:
    """Import what the children import once, unmeasured, so the cache holds their bytecode."""
    if BYTECODE is None:
        return
    subprocess.run([sys.executable, "-c", "import duckdb, dagster, orchestration.definitions; "
                    "import assets.feeds, benchmarks.ingest"], cwd=ROOT, env=child_env(),
                   check=True)


def measure(variant: str, csv: Path, run_dir: Path) -> Measure:
    """Run one variant in a fresh child; time it, and read its peak RSS from wait4."""
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    result_file, log = run_dir / "result.json", run_dir / "child.log"
    env = child_env()
    env["STAGECOACH_DATA_DIR"] = str(run_dir / "data")
    command = [sys.executable, str(Path(__file__).resolve()), "--child", variant, "--csv",
               str(csv), "--run-dir", str(run_dir), "--result", str(result_file)]
    with open(log, "wb") as out:
        started, busy = time.perf_counter(), busy_cpu_seconds()
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        sampler = TreeSampler(proc.pid)
        sampler.start()
        # wait4 reaps this very child and hands back its own rusage (Linux: ru_maxrss in KiB).
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        busy = busy_cpu_seconds() - busy
        sampler.done.set()
        sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    cpu = usage.ru_utime + usage.ru_stime
    m = Measure(variant, seconds=seconds, cpu_seconds=cpu, other_cpu=max(0.0, busy - cpu),
                peak_mib=usage.ru_maxrss / 1024, sampled_mib=sampler.peak / MIB)
    if proc.returncode != 0 or not result_file.exists():
        m.ok = False
        tail = log.read_text(errors="replace").strip().splitlines()[-15:]
        print(f"  {variant} FAILED (exit {proc.returncode}); log {log}:\n    "
              + "\n    ".join(tail))
        return m
    out = json.loads(result_file.read_text())
    m.core_seconds, m.core_label, m.rows = out["core_seconds"], out["core_label"], out["rows"]
    m.detail = out
    return m


def run_all(variants: list[str], csv: Path, runs_dir: Path, repeat: int) -> list[Measure]:
    """Each variant `repeat` times, interleaved (A B C A B C) so drifting machine load hits all
    alike; per variant the fastest run, with the largest peak RSS of any of its runs."""
    runs: dict[str, list[Measure]] = {v: [] for v in variants}
    for n in range(repeat):
        for variant in variants:
            if runs[variant] and not runs[variant][-1].ok:
                continue
            print(f"running {variant}" + (f" ({n + 1}/{repeat})" if repeat > 1 else "") + " ...",
                  flush=True)
            m = measure(variant, csv, runs_dir / variant)
            print(f"  {m.seconds:.1f} s, peak RSS {m.peak_mib:,.0f} MiB, other CPU "
                  f"{m.other_cpu:.1f} s" if m.ok else "  failed", flush=True)
            runs[variant].append(m)
    results = []
    for variant in variants:
        failed = [r for r in runs[variant] if not r.ok]
        if failed:
            results.append(failed[0])
            continue
        best = min(runs[variant], key=lambda r: r.seconds)
        best.peak_mib = max(r.peak_mib for r in runs[variant])
        best.sampled_mib = max(r.sampled_mib for r in runs[variant])
        results.append(best)
    return results


# ---------------------------------------------------------------- report


def code_version() -> str:
    """The commit measured (and whether the working tree differs), and DuckDB's version."""
    import duckdb

    try:
        git = ["git", "-C", str(ROOT)]
        head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no", "--",
                                ".", ":!benchmarks"],
                               capture_output=True, text=True, check=True).stdout.strip()
        code = f"commit {head}{' + local changes' if dirty else ''}"
    except (OSError, subprocess.CalledProcessError):
        code = "commit unknown"
    return f"{code}; DuckDB {duckdb.__version__}"


def report(results: list[Measure], size: int, rows: int) -> bool:
    """Print the table and the verdict; False when a load failed or lost rows."""
    base = next(r for r in results if r.variant == "duckdb")
    header = (f"{'variant':<22}{'scope':<11}{'seconds':>9}{'MB/s':>9}{'rows/s':>12}"
              f"{'cpu s':>8}{'other':>7}{'peak RSS MiB':>14}{'sampled':>9}{'vs DuckDB':>11}")
    print()
    print(f"file: {size / MIB:,.0f} MB ({size:,} bytes), {rows:,} rows; "
          f"{os.cpu_count()} CPUs; MB = 2**20 bytes; {code_version()}")
    print(header)
    print("-" * len(header))
    ok = True
    for r in results:
        if not r.ok:
            print(f"{VARIANTS[r.variant]:<22}FAILED")
            ok = False
            continue
        if r.rows != rows:
            print(f"{VARIANTS[r.variant]:<22}loaded {r.rows:,} rows, expected {rows:,}")
            ok = False
        for scope, secs, ref in (("process", r.seconds, base.seconds),
                                 (r.core_label, r.core_seconds, base.core_seconds)):
            ratio = f"{ref / secs:.2f}x" if base.ok and secs else "-"
            mem = (f"{r.peak_mib:>14,.0f}{r.sampled_mib:>9,.0f}" if scope == "process"
                   else f"{'':>14}{'':>9}")
            cpu = (f"{r.cpu_seconds:>8.1f}{r.other_cpu:>7.1f}" if scope == "process"
                   else f"{'':>15}")
            name = VARIANTS[r.variant] if scope == "process" else ""
            print(f"{name:<22}{scope:<11}{secs:>9.2f}{size / MIB / secs:>9.1f}"
                  f"{rows / secs:>12,.0f}{cpu}{mem}{ratio:>11}")
    print()
    busy = [VARIANTS[r.variant] for r in results
            if r.ok and r.other_cpu > max(2.0, 0.1 * r.seconds)]
    if busy:
        print(f"warning: other processes used the CPUs during {', '.join(busy)} ('other' CPU "
              "seconds); the times are noisy, rerun on an idle machine or with --repeat")
    for r in results:
        if r.ok and "steps" in r.detail:
            steps = ", ".join(f"{k} {v:.2f} s" for k, v in r.detail["steps"].items())
            print(f"{VARIANTS[r.variant]}: execute_in_process {r.detail['run_seconds']:.2f} s "
                  f"(steps: {steps})")
    ours = [r for r in results if r.variant != "duckdb" and r.ok]
    if not ours or not base.ok:
        print("FAIL: a load failed, no verdict")
        return False
    peak = max(r.peak_mib for r in ours)
    main = next((r for r in ours if r.variant == "stagecoach"), ours[0])
    ratio = base.seconds / main.seconds
    core = base.core_seconds / main.core_seconds
    print(f"{'PASS' if peak < RSS_LIMIT_MIB else 'FAIL'}: peak RSS {peak:,.0f} MiB "
          f"(limit {RSS_LIMIT_MIB} MiB; DuckDB alone {base.peak_mib:,.0f} MiB)")
    print(f"{'PASS' if ratio >= MIN_RATIO else 'FAIL'}: throughput {ratio:.2f}x DuckDB's "
          f"read_csv end to end (need >= {MIN_RATIO}x; load step vs statement {core:.2f}x)")
    for r in ours:  # CPU seconds: the steadier figure when other processes share the CPUs
        print(f"CPU: {VARIANTS[r.variant]} {r.cpu_seconds:.1f} s against DuckDB's "
              f"{base.cpu_seconds:.1f} s: {base.cpu_seconds / r.cpu_seconds:.2f}x")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--size-mb", type=float, default=2048,
                      help="target CSV size in MB of 2**20 bytes (default 2048, i.e. 2 GiB)")
    size.add_argument("--rows", type=int, help="generate this many rows instead of a size")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/stagecoach-bench"))
    parser.add_argument("--keep", action="store_true",
                        help="keep the warehouses and run folders (the CSV is always kept)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per variant; best time")
    parser.add_argument("--no-text", action="store_true", help="skip the all-text variant")
    parser.add_argument("--per-tag", action="store_true",
                        help="also report each tag's CPU-seconds per million values")
    parser.add_argument("--per-tag-only", action="store_true",
                        help="only the per-tag costs, no load")
    parser.add_argument("--no-bytecode-cache", action="store_true",
                        help="children compile every module without a .pyc from source when "
                             "the environment sets PYTHONDONTWRITEBYTECODE (the behaviour "
                             "before the cache)")
    parser.add_argument("--child", choices=list(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--csv", help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return run_child(args)

    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    rows = args.rows or rows_for_size(workdir, args.size_mb)
    csv = ensure_csv(workdir, rows)
    warm_cache(csv)
    if args.per_tag_only:
        print_tag_costs(profile_tags(csv, max(1, args.repeat)))
        return 0
    variants = [v for v in VARIANTS if not (args.no_text and v == "stagecoach-text")]
    global BYTECODE
    BYTECODE = None if args.no_bytecode_cache else workdir / "pycache"
    warm_bytecode()
    results = run_all(variants, csv, workdir / "runs", max(1, args.repeat))
    ok = report(results, csv.stat().st_size, rows)
    if args.per_tag:
        print_tag_costs(profile_tags(csv, max(1, args.repeat)))
    if not args.keep:
        shutil.rmtree(workdir / "runs", ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
