"""The bad-file catalogue: every bad file a courier may bring, under each `bad_rows` policy.

Each case first loads a good file (ids 10 and 11), then the bad one under the same name, in one
workflow with three domain tables fed by the same courier: `t_fail`, `t_reject` and `t_skip`.
A failure must name the file and line with the exact message and leave the table as the good
load left it; `reject` and `skip` must load exactly the good rows, and `reject` must keep the
bad ones in stagecoach.rejects with their line, reason and raw text.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from openpyxl import Workbook

from resources.warehouse import WarehouseResource
from tests.conftest import WorkflowRun

pytestmark = pytest.mark.bad_input

POLICIES = ("fail", "reject", "skip")
HEADER = "id,name,email\n"
GOOD_ROWS = "10,Ten,ten@example.com\n11,Eleven,eleven@example.com\n"
SPEC = """\
workflow: {{name: badfiles}}
connections:
  inbox: {{kind: folder, path: inbox}}
couriers:
  people: {{from: inbox, path: "{file}", format: {format}}}
domain_tables:
{tables}
"""
TABLE = """\
  t_{policy}:
    from: people
    primary_key: [id]
    bad_rows: {policy}
    max_shrink: 100%  # these cases load 2 rows, then fewer: shrinking has its own test
    columns:
      id: {{tag: id, required: true, not_null: true}}
      name: {{tag: text}}
      email: {{tag: email, optional: true}}  # the JSON lines and Parquet cases have none
"""
UNCHANGED = "nothing was loaded; domain.{table} is unchanged"
FIX_COLUMNS = ("Fix the file or the feed's `source:` names (or set `optional: true` on a column "
               "a file may lack); ")
TO_LOAD_THE_REST = ("Fix the file, or set `bad_rows: reject` (load the other rows, keep these in "
                    "stagecoach.rejects) or `bad_rows: skip` on domain_tables.{table}")


def xlsx(rows: list[list[Any]]) -> bytes:
    book = Workbook()
    for row in rows:
        book.active.append(row)
    out = io.BytesIO()  # in memory: xdist workers collect this module at the same time
    book.save(out)
    return out.getvalue()


def broken_sheet(book: bytes) -> bytes:
    """The workbook with its first sheet's XML cut off mid-tag: a zip that passes the archive
    checks, but not a workbook openpyxl can read."""
    source, sink = zipfile.ZipFile(io.BytesIO(book)), io.BytesIO()
    with zipfile.ZipFile(sink, "w") as out:
        for member in source.infolist():
            out.writestr(member, b"<worksheet><sheetData><row" if member.filename ==
                         "xl/worksheets/sheet1.xml" else source.read(member))
    return sink.getvalue()


def parquet(columns: dict[str, list[Any]]) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.table(columns), sink)
    return sink.getvalue()


@dataclass
class Case:
    """A bad file and what each policy must make of it."""

    name: str
    file: str
    content: bytes
    good: bytes = (HEADER + GOOD_ROWS).encode()  # loaded first, under the same file name
    format: str = "{}"
    # A whole-file fault: every table fails with this message (`{table}`, `{src}` filled in).
    whole_file: str | None = None
    courier_fails: str | None = None  # the courier itself refuses the file
    loads: list[str] = field(default_factory=list)  # ids loaded when the rows are screened
    bad: list[tuple[int, str, str | None]] = field(default_factory=list)  # line, reason, raw

    def fail_message(self) -> str | None:
        """What `bad_rows: fail` says, or None when the file has no bad row."""
        if self.whole_file or self.courier_fails:
            return self.whole_file
        if not self.bad:
            return None
        shown = "; ".join(f"{{src}}:{line}: {reason}" + (f" ({braces(short(raw))})" if raw else "")
                          for line, reason, raw in self.bad[:5])
        count = len(self.bad)
        return (f"domain table `{{table}}`: {count} bad row{'s' if count != 1 else ''}, "
                f"{UNCHANGED}: {shown}. {TO_LOAD_THE_REST}")


def short(raw: str) -> str:
    flat = raw.replace("\r", "\\r").replace("\n", "\\n")
    return flat if len(flat) <= 80 else flat[:80] + "…"


def braces(text: str) -> str:
    """Literal text inside a str.format template."""
    return text.replace("{", "{{").replace("}", "}}")


def csv_bytes(*lines: str, end: str = "\n") -> bytes:
    return "".join(line + end for line in lines).encode()


WIDE = "x" * 3_000_000
CASES = [
    Case("wrong delimiter", "people.csv",
         csv_bytes("id;name;email", "1;Ann;ann@example.com"),
         whole_file="domain table `{table}`: {src}:1: missing required column(s) id, name (the "
                    "header has: id;name;email); the header looks "
                    "semicolon-separated: set `format.delimiter: ';'` on the courier. "
                    + FIX_COLUMNS + UNCHANGED + "."),
    Case("ragged rows", "people.csv",
         csv_bytes("id,name,email", "1,Ann,ann@example.com", "2,Bob", "3,Cy,cy@example.com,x,y",
                   "4,Dee,dee@example.com"),
         loads=["1", "4"],
         bad=[(3, "2 fields where the header has 3", "2,Bob"),
              (4, "5 fields where the header has 3", "3,Cy,cy@example.com,x,y")]),
    Case("ragged rows, CRLF line endings", "people.csv",
         csv_bytes("id,name,email", "1,Ann,ann@example.com", "2,Bob", "4,Dee,dee@example.com",
                   end="\r\n"),
         loads=["1", "4"], bad=[(3, "2 fields where the header has 3", "2,Bob")]),
    Case("bad encoding (latin-1 bytes in a UTF-8 file)", "people.csv",
         HEADER.encode() + b"1,Ann,ann@example.com\n2,Zo\xeb,zoe@example.com\n"
                           b"3,Cy,cy@example.com\n",
         loads=["1", "3"],
         bad=[(3, "bytes that are not valid utf-8 text; set `format.encoding` to the file's "
                  "real encoding (e.g. latin-1, cp1252)", "2,Zo\ufffd,zoe@example.com")]),
    Case("bad encoding (a byte cp1252 does not define)", "people.csv",
         HEADER.encode() + b"1,Ren\xe9,rene@example.com\n2,Bad\x81,bad@example.com\n",
         good=(HEADER + GOOD_ROWS).encode("cp1252"), format="{encoding: cp1252}",
         loads=["1"],
         bad=[(3, "bytes that are not valid cp1252 text; set `format.encoding` to the file's "
                  "real encoding (e.g. latin-1, cp1252)", "2,Bad\ufffd,bad@example.com")]),
    Case("UTF-8 byte order mark", "people.csv",
         b"\xef\xbb\xbf" + csv_bytes("id,name,email", "1,Ann,ann@example.com"), loads=["1"]),
    Case("UTF-16 with its byte order mark", "people.csv",
         (HEADER + "1,Zoë,zoe@example.com\n").encode("utf-16"),
         good=(HEADER + GOOD_ROWS).encode("utf-16"), format="{encoding: utf-16}", loads=["1"]),
    Case("embedded newlines", "people.csv",
         csv_bytes("id,name,email", '1,"Ann\nSmith",ann@example.com', '2,"Bob\r\nJones",bob@x.io',
                   "3,Cy"),
         loads=["1", "2"], bad=[(6, "2 fields where the header has 3", "3,Cy")]),
    Case("missing required column", "people.csv",
         csv_bytes("ID,name,email", "1,Ann,ann@example.com"),
         whole_file="domain table `{table}`: {src}:1: missing required column(s) id (the header "
                    "has: ID, name, email). " + FIX_COLUMNS + UNCHANGED + "."),
    Case("extra column", "people.csv",
         csv_bytes("id,name,email,notes", "1,Ann,ann@example.com,VIP"), loads=["1"]),
    Case("empty file", "people.csv", b"",
         whole_file="domain table `{table}`: {src}: the file is empty (0 bytes), so it has no "
                    "header; ask the sender to send it again (it may have been sent before it "
                    "was written). " + UNCHANGED.capitalize() + "."),
    Case("header-only file", "people.csv", csv_bytes("id,name,email"), loads=[]),
    Case("only a byte order mark", "people.csv", b"\xef\xbb\xbf",
         whole_file="domain table `{table}`: {src}: the file holds only a byte order mark, so "
                    "it has no header; ask the sender to send it again (it may have been sent "
                    "before it was written). " + UNCHANGED.capitalize() + "."),
    Case("a byte order mark and blank space", "people.csv", b"\xef\xbb\xbf \r\n\t\n",
         whole_file="domain table `{table}`: {src}: the file holds only a byte order mark and "
                    "blank space, so it has no header; ask the sender to send it again (it may "
                    "have been sent before it was written). " + UNCHANGED.capitalize() + "."),
    Case("truncated gzip", "people.csv.gz",
         gzip.compress(csv_bytes("id,name,email", *(f"{i},N{i},n{i}@example.com"
                                                    for i in range(50_000))))[:60_000],
         good=gzip.compress((HEADER + GOOD_ROWS).encode()),
         whole_file="domain table `{table}`: {src}:{gz_lines}: the gzip file is truncated or "
                    "damaged after line {gz_lines_before}; ask the sender to send it again. "
                    + UNCHANGED.capitalize() + "."),
    Case("truncated gzip, transcoded", "people.csv.gz",
         gzip.compress(csv_bytes("id,name,email", *(f"{i},N{i},n{i}@example.com"
                                                    for i in range(50_000))))[:60_000],
         good=gzip.compress((HEADER + GOOD_ROWS).encode("latin-1")), format="{encoding: latin-1}",
         courier_fails="{src}:{gz_lines}: the gzip file is truncated or damaged after line "
                       "{gz_lines_before}; ask the sender to send it again"),
    Case("an xlsx that is not one", "people.xlsx", csv_bytes("id,name,email", "1,Ann,a@b.co"),
         good=xlsx([["id", "name", "email"], [10, "Ten", "ten@example.com"],
                    [11, "Eleven", "eleven@example.com"]]), format="{type: xlsx}",
         courier_fails="{src} is not an xlsx workbook (it is text, perhaps CSV); ask the sender "
                       "for an .xlsx export, or set `format.type` on the courier to the file's "
                       "real type"),
    Case("a corrupt xlsx (its sheet XML cut off)", "people.xlsx",
         broken_sheet(xlsx([["id", "name", "email"], [1, "Ann", "ann@example.com"]])),
         good=xlsx([["id", "name", "email"], [10, "Ten", "ten@example.com"],
                    [11, "Eleven", "eleven@example.com"]]), format="{type: xlsx}",
         courier_fails="{src} is a zip archive but not a readable xlsx workbook (ParseError: "
                       "unclosed token: line 1, column 22); ask the sender for the file again"),
    Case("huge single field", "people.csv",
         csv_bytes("id,name,email", "1,Ann,ann@example.com", f"2,{WIDE},big@example.com",
                   "3,Cy,cy@example.com"),
         loads=["1", "3"],
         bad=[(3, "the line is 3,000,018 bytes, over `format.max_line_bytes` (2,000,000)",
               f"2,{WIDE[:1998]}… (3,000,018 bytes)")]),
    Case("huge single field, allowed", "people.csv",
         csv_bytes("id,name,email", "1,Ann,ann@example.com", f"2,{WIDE},big@example.com"),
         format="{max_line_bytes: 4000000}", loads=["1", "2"]),
    Case("duplicate keys", "people.csv",
         csv_bytes("id,name,email", "1,Ann,ann@example.com", "2,Bob,bob@example.com",
                   "1,Ann again,ann2@example.com", "3,Cy,cy@example.com", "2,Bob,bob@example.com"),
         loads=["1", "2", "3"],
         bad=[(4, "primary key (id=1) repeats line 2", "1,Ann again,ann2@example.com"),
              (6, "primary key (id=2) repeats line 3", "2,Bob,bob@example.com")]),
    Case("null in a not-null column", "people.csv",
         csv_bytes("id,name,email", "1,Ann,ann@example.com", " ,Nobody,no@example.com"),
         loads=["1"], bad=[(3, "no value in not-null column(s) id", " ,Nobody,no@example.com")]),
    Case("unclosed quote", "people.csv",
         csv_bytes("id,name,email", "1,Ann,ann@example.com", '2,"Bob,bob@example.com',
                   "3,Cy,cy@example.com"),
         loads=["1"],
         bad=[(3, "a quoted value is not closed (an unbalanced quote); the rest of the file "
                  "after it cannot be read", '2,"Bob,bob@example.com\n3,Cy,cy@example.com')]),
    Case("xlsx with a repeated key (lines are sheet rows)", "people.xlsx",
         xlsx([["People export"], ["id", "name", "email"], [1, "Ann", "ann@example.com"],
               [1, "Ann", "ann@example.com"]]),
         good=xlsx([["People export"], ["id", "name", "email"], [10, "Ten", "ten@example.com"],
                    [11, "Eleven", "eleven@example.com"]]), format="{type: xlsx, skip_rows: 1}",
         loads=["1"], bad=[(4, "primary key (id=1) repeats line 3", "1,Ann,ann@example.com")]),
    Case("JSON lines with a repeated key and a blank line", "people.jsonl",
         b'{"id": 1, "name": "Ann"}\n\n{"id": 2}\n{"id": 1, "name": "Again"}\n',
         good=b'{"id": 10, "name": "Ten"}\n{"id": 11, "name": "Eleven"}\n',
         format="{type: jsonl}", loads=["1", "2"],
         bad=[(4, "primary key (id=1) repeats line 1", '{"id": 1, "name": "Again"}')]),
    Case("Parquet with a null key (lines are row numbers)", "people.parquet",
         parquet({"id": ["1", None, "3"], "name": ["Ann", "Nobody", "Cy"]}),
         good=parquet({"id": ["10", "11"], "name": ["Ten", "Eleven"]}),
         format="{type: parquet}", loads=["1", "3"],
         bad=[(2, "no value in not-null column(s) id", None)]),
    Case("malformed JSON line", "people.jsonl",
         b'{"id": 1, "name": "Ann"}\n{"id": 2, "name": \n',
         good=b'{"id": 10, "name": "Ten"}\n{"id": 11, "name": "Eleven"}\n',
         format="{type: jsonl}",
         whole_file="domain table `{table}`: {src}:2: not valid JSON (Expecting value); a "
                    "JSON lines file holds one JSON object per line and a broken line cannot "
                    "be skipped: fix the file or ask the sender for it again. "
                    + UNCHANGED.capitalize() + "."),
]


def gz_lines(content: bytes) -> int:
    """Complete lines in a truncated gzip file (what the message reports)."""
    return zlib.decompressobj(wbits=31).decompress(content).count(b"\n")


# ---------------------------------------------------------------- running a case


def write_spec(root: Path, case: Case) -> Path:
    workflows = root / "workflows"
    (workflows / "inbox").mkdir(parents=True, exist_ok=True)
    tables = "".join(TABLE.format(policy=p) for p in POLICIES)
    (workflows / "badfiles.yaml").write_text(SPEC.format(file=case.file, format=case.format,
                                                         tables=tables))
    return workflows


def step_failures(run: WorkflowRun) -> dict[str, str]:
    """Each failed step's message (a dg.Failure's description), by step key."""
    failures = {}
    for event in run.result.all_events:
        if event.is_step_failure:
            data = event.step_failure_data
            failures[event.step_key] = (data.user_failure_data.description
                                        if data.user_failure_data else data.error.message)
    return failures


def table_rows(warehouse: WarehouseResource, table: str) -> list[tuple]:
    if not warehouse.has_table("domain", table):
        return []
    return sorted(warehouse.fetch(f'SELECT id, name FROM "domain"."{table}"'), key=str)


def rejects(warehouse: WarehouseResource, table: str) -> list[tuple]:
    if not warehouse.has_table("stagecoach", "rejects"):
        return []
    p = warehouse.placeholder.format
    return sorted(warehouse.fetch(
        f"SELECT source_file, line, reason, raw FROM stagecoach.rejects WHERE table_name = "
        f"{p('t')}", {"t": f"domain.{table}"}), key=lambda r: (r[0], r[1]))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_file(case: Case, stagecoach_env: Path,
                  workflow_runner: Callable[..., WorkflowRun]) -> None:
    workflows = write_spec(stagecoach_env, case)
    target = workflows / "inbox" / case.file
    src = str(target)
    warehouse = WarehouseResource(url=f"duckdb:///{stagecoach_env / 'data' / 'warehouse.duckdb'}")
    instance = dg.DagsterInstance.ephemeral()

    target.write_bytes(case.good)
    first = workflow_runner(workflows, "badfiles", instance=instance)
    assert first.success, first.failures()
    before = {p: table_rows(warehouse, f"t_{p}") for p in POLICIES}
    assert all(len(rows) == 2 for rows in before.values()), before

    target.write_bytes(case.content)
    run = workflow_runner(workflows, "badfiles", instance=instance)
    failures = step_failures(run)
    lines = gz_lines(case.content) if case.file.endswith(".gz") else 0
    fill = {"src": src, "gz_lines": lines + 1, "gz_lines_before": f"{lines:,}"}

    if case.courier_fails:
        assert failures == {"courier__people_file": case.courier_fails.format(**fill)}
        for policy in POLICIES:
            assert table_rows(warehouse, f"t_{policy}") == before[policy]
        return
    for policy in POLICIES:
        table = f"t_{policy}"
        message = case.whole_file if case.whole_file else (
            case.fail_message() if policy == "fail" else None)
        if message:
            assert failures.get(f"domain__{table}") == message.format(table=table, **fill)
            assert table_rows(warehouse, table) == before[policy], "the old table must stay"
            continue
        assert f"domain__{table}" not in failures, failures
        assert sorted(str(r[0]) for r in table_rows(warehouse, table)) == sorted(case.loads)
        meta = run.metadata("domain", table)
        assert meta["rows_loaded"] == len(case.loads)
        kept = [(src, line, reason, raw) for line, reason, raw in case.bad]
        assert rejects(warehouse, table) == (kept if policy == "reject" else [])
        assert meta["rows_rejected"] == (len(case.bad) if policy == "reject" else 0)
        assert meta["rows_skipped"] == (len(case.bad) if policy == "skip" else 0)


def test_the_catalogue_covers_the_issue() -> None:
    """Issue 8 asks for at least 15 bad files, these kinds among them."""
    names = " ".join(c.name for c in CASES)
    assert len(CASES) >= 15
    for kind in ("wrong delimiter", "ragged", "bad encoding", "byte order mark", "embedded "
                 "newlines", "missing required column", "extra column", "empty file",
                 "header-only", "truncated gzip", "xlsx that is not one", "huge single field",
                 "duplicate keys"):
        assert kind in names, kind


# ---------------------------------------------------------------- idempotence

IDEMPOTENT_SPEC = """\
workflow: {{name: {workflow}, start_date: 2026-11-01}}
connections:
  inbox: {{kind: folder, path: inbox}}
couriers:
  orders: {{from: inbox, path: "orders_{{{{ ds_nodash }}}}.csv"}}
domain_tables:
  {table}:
    from: orders
    primary_key: [id]
    bad_rows: reject
    columns:
      id: {{tag: id, required: true, not_null: true}}
      amount: {{tag: decimal}}
      day: {{tag: date}}
"""


def fingerprint(warehouse: WarehouseResource, table: str) -> tuple[int, str, int, str]:
    """Row count and checksum of the table, and of its rows in stagecoach.rejects."""
    rows = warehouse.fetch(f'SELECT id, CAST(amount AS VARCHAR), CAST(day AS VARCHAR), '
                           f'_source_file, _partition FROM "domain"."{table}"')
    p = warehouse.placeholder.format
    bad = warehouse.fetch(f"SELECT source_file, line, reason, raw, partition_key FROM "
                          f"stagecoach.rejects WHERE table_name = {p('t')}",
                          {"t": f"domain.{table}"})

    def digest(items: list[tuple]) -> str:
        return hashlib.sha256(repr(sorted(items, key=repr)).encode()).hexdigest()

    return len(rows), digest(rows), len(bad), digest(bad)


@pytest.mark.parametrize("backend", ["duckdb", "postgres"])
def test_rerunning_a_partition_gives_the_same_table(
        backend: str, stagecoach_env: Path, monkeypatch: pytest.MonkeyPatch,
        workflow_runner: Callable[..., WorkflowRun], request: pytest.FixtureRequest) -> None:
    """Loading the same partition again and again (courier and feed, or the feed alone) gives
    the same rows and the same rejects; the other partition is never touched."""
    table = f"idem_{backend}"
    if backend == "postgres":
        url = request.getfixturevalue("postgres_url")
        monkeypatch.setenv("STAGECOACH_WAREHOUSE_URL", url)
    else:
        url = f"duckdb:///{stagecoach_env / 'data' / 'warehouse.duckdb'}"
    warehouse = WarehouseResource(url=url)
    workflows = stagecoach_env / "workflows"
    inbox = workflows / "inbox"
    inbox.mkdir(parents=True)
    (workflows / "idem.yaml").write_text(IDEMPOTENT_SPEC.format(workflow=f"idem_{backend}",
                                                                table=table))
    for day in ("20261102", "20261103"):
        inbox.joinpath(f"orders_{day}.csv").write_text(
            "id,amount,day\n" + "".join(f"{day}-{i},${i},{day}\n" for i in range(200))
            + f"{day}-0,$1,{day}\n"  # a repeated key: rejected
            + f"{day}-x,$1\n")  # too few fields: rejected
    instance = dg.DagsterInstance.ephemeral()
    job = f"idem_{backend}"
    assert workflow_runner(workflows, job, "2026-11-02", instance=instance).success
    other = fingerprint(warehouse, table)
    runs = []
    for attempt in range(3):
        selection = [dg.AssetKey(["domain", table])] if attempt == 2 else None
        run = workflow_runner(workflows, job, "2026-11-03", asset_selection=selection,
                              instance=instance)
        assert run.success, run.failures()
        runs.append(fingerprint(warehouse, table))
    assert runs[0] == runs[1] == runs[2]
    assert runs[0][0] == 400 and runs[0][2] == 4  # 200 rows and 2 rejects per day
    # The first day's rows and rejects are still the ones loaded before.
    day_one = WarehouseResource(url=url).fetch(
        f'SELECT count(*) FROM "domain"."{table}" WHERE _partition = \'2026-11-02\'')
    assert day_one == [(200,)]
    assert other[0] == 200 and other[2] == 2


def test_a_key_repeated_across_partitions_fails_the_blocking_check(
        stagecoach_env: Path, workflow_runner: Callable[..., WorkflowRun]) -> None:
    """A load screens its own rows; a key that another day already holds is left to the
    blocking primary-key check, which fails the run after the (complete) load."""
    workflows = stagecoach_env / "workflows"
    inbox = workflows / "inbox"
    inbox.mkdir(parents=True)
    (workflows / "cross.yaml").write_text(IDEMPOTENT_SPEC.format(workflow="cross",
                                                                 table="cross_days"))
    inbox.joinpath("orders_20261102.csv").write_text("id,amount,day\nA,1,20261102\nB,2,20261102\n")
    inbox.joinpath("orders_20261103.csv").write_text("id,amount,day\nB,3,20261103\nC,4,20261103\n")
    instance = dg.DagsterInstance.ephemeral()
    assert workflow_runner(workflows, "cross", "2026-11-02", instance=instance).success
    run = workflow_runner(workflows, "cross", "2026-11-03", instance=instance)
    assert not run.success
    [check] = run.result.get_asset_check_evaluations()
    assert not check.passed and check.metadata["duplicate_keys"].value == 1
    assert run.metadata("domain", "cross_days")["rows_loaded"] == 2


@pytest.mark.fault
def test_concurrent_loads_into_a_new_schema_on_postgres(postgres_url: str) -> None:
    """Celery workers load several tables at once; on PostgreSQL, two transactions creating the
    same schema make one fail even with IF NOT EXISTS. Every load must still succeed."""
    import threading
    import uuid

    schema = f"race_{uuid.uuid4().hex[:8]}"
    warehouse = WarehouseResource(url=postgres_url)
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def load(index: int) -> None:
        try:
            start.wait()
            WarehouseResource(url=postgres_url).load_files(
                schema, f"t{index}", f"SELECT {index} AS n", {}, None, [])
        except BaseException as failed:  # reported below, with every other thread's
            errors.append(failed)

    threads = [threading.Thread(target=load, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert [warehouse.fetch(f'SELECT n FROM "{schema}"."t{i}"') for i in range(8)] == [
        [(i,)] for i in range(8)]
