"""Bind every SQL table of a workflow against the columns its spec declares, without data.

Domain tables get the columns their feeds declare; each database table and query is then bound,
in dependency order, in an in-memory DuckDB (`DESCRIBE <its SQL>`), and its result becomes an
empty table for the ones after it. So `validate` finds `m.emial` before any run, and the UI shows
the column schema of every table at definition time.

DuckDB is the default warehouse, so there every bind error is the error the run would meet. For
another warehouse (PostgreSQL) the SQL is in that dialect: only unknown tables and columns are
reported (`strict=False`); a function or syntax DuckDB lacks is left for the warehouse to judge.
"""

import heapq
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import duckdb

from assets import spec
from assets.semantic_tags import TAG_TYPES
from assets.sql_refs import SqlCatalog
from assets.templating import SAMPLE_CONTEXT, render_sql
from assets.value_accounts import measured

Columns = dict[str, str]  # column name → SQL type, in table order
SOURCE_FILE, PARTITION = "_source_file", "_partition"
_LINE = re.compile(r"\nLINE (\d+):")
_TABLE_COLUMN = re.compile(r'Table "([^"]+)" does not have a column named "([^"]+)"')
_COLUMN = re.compile(r'Referenced column "([^"]+)" not found in FROM clause')
_UNKNOWN_TABLE = re.compile(r"Table with name (\S+) does not exist")


@dataclass(frozen=True)
class BindFailure:
    """Why one table's SQL does not bind: what is wrong, the SQL's own line (1 = its first)
    and the names it could have used."""

    message: str
    line: int | None
    known: str = ""

    def describe(self, source: str = "SQL") -> str:
        """`unknown column 'm.emial' at SQL line 2; known: …` (`source` names a SQL file)."""
        at = f" at {source} line {self.line}" if self.line else ""
        return f"{self.message}{at}" + (f"; known: {self.known}" if self.known else "")


@dataclass
class Binding:
    """The columns of every table that bound, and why the others did not (tables downstream of
    a failure are in neither: their inputs are unknown, so nothing is said about them)."""

    columns: dict[str, Columns] = field(default_factory=dict)  # schema.table → columns
    failures: dict[str, BindFailure] = field(default_factory=dict)


def domain_columns(table: spec.DomainTable, dated: bool) -> Columns:
    """The columns a feed's load leaves in `domain.<table>`: its declared columns (typed by
    tag), `<column>_raw` where kept, the source file and, for a dated courier, the partition."""
    columns: Columns = {}
    for name, mapping in table.columns.items():
        columns[name] = TAG_TYPES.get(mapping.tag, "VARCHAR")
        if mapping.keep_raw and measured(mapping):
            columns[f"{name}_raw"] = "VARCHAR"
    columns[SOURCE_FILE] = "VARCHAR"
    if dated:
        columns[PARTITION] = "VARCHAR"
    return columns


def bind_tables(domain: Mapping[str, Columns], sql_tables: Mapping[str, tuple[str, set[str]]],
                params: Mapping[str, Any], strict: bool = True) -> Binding:
    """Bind `sql_tables` (schema.table → (SQL template, the tables it reads)) in dependency
    order over the `domain` tables' columns; tables in a cycle are left out (reported
    elsewhere). The spec loader and the definitions ask for the same binding: the second is
    the first's result (the last few are kept)."""
    key = _key(domain, sql_tables, params, strict)
    if key in _RECENT:
        return _RECENT[key]
    binding = Binding(columns={f"domain.{t}": dict(c) for t, c in domain.items()})
    read = set().union(*(reads for _, reads in sql_tables.values()))
    # One thread: binding runs no query, and DuckDB's thread pool only adds CPU per statement.
    con = duckdb.connect(":memory:", config={"threads": 1})
    try:
        # The schemas and the domain tables SQL reads (a domain table no SQL reads need not
        # exist), in one call: ~0.3 ms of CPU a statement, 1,000 of them for 1,000 feeds.
        statements = [f"CREATE SCHEMA {_quote(schema)}" for schema in sorted(
            {t.split(".", 1)[0] for t in [*binding.columns, *sql_tables]})]
        statements += [_create_sql(table, columns) for table, columns in binding.columns.items()
                       if table in read]
        if statements:  # one transaction: each statement's own commit was ~15% of the CPU
            con.execute(";\n".join(["BEGIN", *statements, "COMMIT"]))
        names = sorted({*binding.columns, *sql_tables})
        described: dict[tuple[str, str], Columns | str | None] = {}
        for table in _order(sql_tables):
            template, reads = sql_tables[table]
            if not template or not all(r in binding.columns for r in reads):
                continue  # an input failed, is in a cycle or is unknown: said elsewhere
            result = _describe(con, template, params, reads, binding, strict, names, described)
            if isinstance(result, BindFailure):
                binding.failures[table] = result
            elif result is not None:
                binding.columns[table] = result
                if table in read:  # only what a later SQL reads
                    _create(con, table, result)
    finally:
        con.close()
    _RECENT[key] = binding
    while len(_RECENT) > RECENT_BINDINGS:
        _RECENT.pop(next(iter(_RECENT)))
    return binding


RECENT_BINDINGS = 8
_RECENT: dict[tuple, Binding] = {}


def _key(domain: Mapping[str, Columns], sql_tables: Mapping[str, tuple[str, set[str]]],
         params: Mapping[str, Any], strict: bool) -> tuple:
    return (tuple((t, tuple(c.items())) for t, c in sorted(domain.items())),
            tuple((t, sql, tuple(sorted(reads))) for t, (sql, reads) in sorted(
                sql_tables.items())),
            json.dumps(params, sort_keys=True, default=str), strict)


def _describe(con: duckdb.DuckDBPyConnection, template: str, params: Mapping[str, Any],
              reads: set[str], binding: Binding, strict: bool, names: list[str],
              described: dict[tuple[str, str], Columns | str | None]
              ) -> Columns | BindFailure | None:
    """The columns of one SQL's result, why it does not bind, or None when DuckDB cannot judge
    it (another warehouse's dialect). `described` holds what DuckDB said of each bound SQL
    text already asked in this connection: the same text reading the same tables binds the
    same way (queries of one mart often share their SQL)."""
    try:
        bound = render_sql(template, {**SAMPLE_CONTEXT, "params": dict(params)}, "${}".format)
    except Exception:
        return None
    sql = bound.text.strip().rstrip(";")
    key = (sql, repr(bound.params))
    if key not in described:
        try:
            rows = con.execute(f"DESCRIBE {sql}\n", bound.params).fetchall()
        except duckdb.Error as failed:
            described[key] = str(failed)
        else:
            described[key] = {str(name): str(kind) for name, kind, *_ in rows}
    result = described[key]
    if isinstance(result, str):
        return _failure(result, reads, binding, strict, names)
    return dict(result) if result is not None else None


def _failure(error: str, reads: set[str], binding: Binding, strict: bool, names: list[str]
             ) -> BindFailure | None:
    found = _LINE.search(error)
    line = int(found.group(1)) if found else None
    known = "; ".join(f"{t} ({', '.join(binding.columns[t])})" for t in sorted(reads)) or \
        "none (it reads no table of the workflow)"
    if match := _TABLE_COLUMN.search(error):
        return BindFailure(f"unknown column '{match.group(1)}.{match.group(2)}'", line, known)
    if match := _COLUMN.search(error):
        return BindFailure(f"unknown column '{match.group(1)}'", line, known)
    if match := _UNKNOWN_TABLE.search(error):
        return BindFailure(f"unknown table '{match.group(1).strip(chr(34))}'", line,
                           ", ".join(names))
    if not strict:
        return None
    first = error.split("\n", 1)[0].strip()
    return BindFailure(f"the SQL does not bind in DuckDB: {first}", line)


def _order(sql_tables: Mapping[str, tuple[str, set[str]]]) -> list[str]:
    """The tables, each after the SQL tables it reads (Kahn's algorithm, names in order);
    tables on or behind a cycle are left out."""
    waiting = {t: {r for r in reads if r in sql_tables and r != t} | (
        {t} if t in reads else set()) for t, (_, reads) in sql_tables.items()}
    readers: dict[str, list[str]] = {}
    for table, inputs in waiting.items():
        for read in inputs:
            readers.setdefault(read, []).append(table)
    order: list[str] = []
    ready = sorted(t for t, w in waiting.items() if not w)  # a sorted list is a heap
    while ready:  # the first name of those ready, each time
        table = heapq.heappop(ready)
        order.append(table)
        for other in readers.get(table, ()):
            w = waiting[other]
            w.discard(table)
            if not w:
                heapq.heappush(ready, other)
    return order


def _create(con: duckdb.DuckDBPyConnection, table: str, columns: Columns) -> None:
    con.execute(_create_sql(table, columns))


def _create_sql(table: str, columns: Columns) -> str:
    schema, name = table.split(".", 1)
    definition = ", ".join(f"{_quote(c)} {kind}" for c, kind in columns.items())
    return f"CREATE OR REPLACE TABLE {_quote(schema)}.{_quote(name)} ({definition})"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def bind_workflow(workflow: spec.Workflow, catalog: SqlCatalog, strict: bool = True) -> Binding:
    """A valid workflow's binding: the declared column schema of every table it builds."""
    domain = {name: domain_columns(table, workflow.couriers[table.from_].dated)
              for name, table in workflow.domain_tables.items()}
    tables: dict[str, tuple[str, set[str]]] = {}
    found = [(f"{db}.{t}", table) for db, d in workflow.databases.items()
             for t, table in d.tables.items()]
    for qualified, table in [*found, *((f"query.{q}", query)
                                      for q, query in workflow.queries.items())]:
        if table.sql:
            tables[qualified] = (table.sql, catalog.references(table.sql)[0] |
                                 set(table.depends_on))
    return bind_tables(domain, tables, workflow.workflow.params, strict)
