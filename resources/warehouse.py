"""The warehouse: DuckDB by default, any SQLAlchemy URL otherwise (PostgreSQL tested).

Every write is atomic: a table is replaced, or a partition's rows swapped, inside one
transaction, so a failed load leaves the previous table as it was. Loads take each database's
bulk path: DuckDB reads the files itself; PostgreSQL gets COPY; others get batched inserts.
"""

import io
import re
from collections.abc import Callable, Generator, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import sqlalchemy as sa
import tenacity
from pydantic import Field, PrivateAttr
from sqlalchemy import exc as sa_exc

from resources.connections.files import TransferError, partial_name
from resources.connections.retry import socket_transient, with_retries
from resources.progress import Progress, watching
from resources.retries import causes, mark_retried_inside

PARTITION_COLUMN = "_partition"
BATCH_ROWS = 100_000
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def quote_ident(name: str) -> str:
    """Quote a schema, table or column name; names come from validated specs."""
    if not _IDENTIFIER.match(name):
        raise ValueError(f"not a valid SQL identifier: {name!r}")
    return f'"{name}"'


def quote_any(name: str) -> str:
    """Quote any column name a query returned (its quotes doubled)."""
    return '"' + name.replace('"', '""') + '"'


def qualified(schema: str, table: str) -> str:
    """`schema.table` quoted for SQL."""
    return f"{quote_ident(schema)}.{quote_ident(table)}"


# DuckDB databases (their paths) opened without file access in the current block.
_NO_FILE_ACCESS: ContextVar[frozenset[str]] = ContextVar("stagecoach_duckdb_no_file_access",
                                                         default=frozenset())


@dataclass(frozen=True)
class CopyLines:
    """What `copy_lines` (DuckDB) and `copy_lines_out` (PostgreSQL) write, over columns c0,
    c1...: the SQL of the whole line as the one field (DuckDB: its line ending included; a
    PostgreSQL text COPY adds the newline), or, with `csv`, one SQL per column that
    PostgreSQL's own CSV COPY writes (see `copy_lines_out`); the delimiter; the header's
    fields (None: no header)."""

    fields: list[str]
    delimiter: str
    header: list[str] | None
    csv: bool = False
    force_quote: bool = False  # with `csv`: every value quoted (FORCE_QUOTE *)


def text_buffer(lines: pa.Array) -> memoryview:
    """A text array's values back to back, as Arrow keeps them in one buffer (no copy)."""
    if not (pa.types.is_string(lines.type) or pa.types.is_large_string(lines.type)):
        lines = lines.cast(pa.large_string())
    if len(lines) == 0:
        return memoryview(b"")
    _, offsets, data = lines.buffers()
    width = pa.int64() if pa.types.is_large_string(lines.type) else pa.int32()
    bounds = pa.Array.from_buffers(width, len(lines) + 1, [None, offsets], offset=lines.offset)
    start, end = bounds[0].as_py(), bounds[-1].as_py()
    return memoryview(data)[start:end] if data is not None else memoryview(b"")


class WarehouseError(Exception):
    """A warehouse operation failed; the message names the table and never the URL."""


class WarehouseResource(dg.ConfigurableResource):
    """Where domain tables, databases and queries live."""

    url: str = Field(description="SQLAlchemy URL, e.g. duckdb:///data/warehouse.duckdb or "
                                 "postgresql://user@host/db (psycopg 3; a postgresql+psycopg2:// "
                                 "URL is read the same way). Give it via an env var.")
    lock_timeout_seconds: float = Field(
        default=120, description="DuckDB allows one writing process: how long to wait for the lock."
    )
    duckdb_memory_limit: str = Field(
        default="512MB", pattern=r"^\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)$",
        description="DuckDB's memory_limit: past it DuckDB spills to disk, so a 2 GB load "
                    "stays under 1 GiB of RSS. Raise it for large joins.")
    connection_name: str = Field(default="", description="The spec's name, when this is a `sql` "
                                 "connection a courier reads from.")
    retries: int = Field(
        default=0, ge=0, le=10, description="A courier's read from this connection: "
        "further attempts after a lost connection (the warehouse's own writes "
        "are one transaction each and are not retried here).")
    backoff_seconds: float = Field(default=1.0, ge=0, le=300)
    _engine: sa.Engine | None = PrivateAttr(None)

    # ---------------------------------------------------------------- public interface
    @property
    def is_duckdb(self) -> bool:
        return self.url.startswith("duckdb:")

    @property
    def placeholder(self) -> str:
        """Format for a named bound parameter in this warehouse's paramstyle."""
        return "${}" if self.is_duckdb else ":{}"

    def replace_table(self, schema: str, table: str, sql: str,
                      params: Mapping[str, Any] | None = None) -> int:
        """Rebuild `schema.table` from a SELECT, atomically; returns its row count."""
        target = qualified(schema, table)
        if not self.is_duckdb:
            self.ensure_schema(schema)  # in a transaction of its own: see there
        with self._transaction(f"build {schema}.{table}") as run:
            run.wait_for_other_writers(schema, table)
            run(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}")
            run(f"DROP TABLE IF EXISTS {target}")
            run(f"CREATE TABLE {target} AS {sql}", params)
            return run(f"SELECT count(*) FROM {target}")[0][0]

    def load_files(self, schema: str, table: str, select_sql: str,
                   params: Mapping[str, Any], partition: str | None,
                   not_null: list[str]) -> int:
        """Load the rows of a DuckDB SELECT over local files into `schema.table`.

        Without a partition the table is replaced; with one, only that partition's rows are.
        Rows with nulls in `not_null` columns fail the load and nothing changes.
        """
        with self.file_load(schema, table, partition) as load:
            rows = load.replace(select_sql, params)
            _check_not_null(load.run, load.target, partition, not_null,
                            load.placeholder.format("partition"))
            return rows

    @contextmanager
    def file_load(self, schema: str, table: str, partition: str | None
                  ) -> Iterator["FileLoad"]:
        """One transaction for a load from files: DuckDB reads them (`load.reader`, where
        staging tables may be made), `load.replace` writes the table or partition and
        `load.replace_rows` bookkeeping rows; an error anywhere changes nothing."""
        if self.is_duckdb:
            with self._transaction(f"load {schema}.{table}", ordered=False) as run:
                assert run.duckdb_con is not None  # a DuckDB transaction runs on its connection
                yield FileLoad(self, run.duckdb_con, run, schema, table, partition)
            return
        self.ensure_schema(schema)
        with duckdb.connect() as reader, self._transaction(f"load {schema}.{table}") as run:
            run.wait_for_other_writers(schema, table)  # from the first read of the table on
            reader.execute(f"SET memory_limit = '{self.duckdb_memory_limit}'")
            reader.execute("SET preserve_insertion_order = false")
            yield FileLoad(self, reader, run, schema, table, partition)

    def batches(self, sql: str, params: Mapping[str, Any] | None = None,
                rows: int = BATCH_ROWS) -> Generator[pa.RecordBatch]:
        """Stream a query's result as Arrow record batches (memory stays flat).

        At least one batch comes back, empty when there are no rows, so the columns are known.
        """
        if self.is_duckdb:
            with self._duckdb() as con:
                reader = con.sql(sql, params=dict(params or {})).to_arrow_reader(rows)
                empty = True
                for batch in reader:
                    empty = False
                    yield batch
                if empty:
                    yield pa.RecordBatch.from_pylist([], schema=reader.schema)
            return
        with self.engine().connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=rows).execute(
                sa.text(sql), dict(params or {}))
            names, schema = list(result.keys()), None
            for chunk in result.partitions(rows):
                records = [dict(zip(names, r, strict=True)) for r in chunk]
                if schema is None:  # fixed by the first batch: a later one must not differ
                    schema = _widen_nulls(pa.RecordBatch.from_pylist(records).schema)
                yield pa.RecordBatch.from_pylist(records, schema=schema)
            if schema is None:
                yield pa.RecordBatch.from_pydict({n: pa.array([], pa.string()) for n in names})

    def copy_lines(self, sql: str, line_for: Callable[[pa.Schema, list[str]], "CopyLines | None"],
                   write: Callable[[memoryview], object]) -> int | None:
        """DuckDB: write a query's result as text lines built inside the warehouse:
        `line_for(schema, types)` says, over the columns renamed c0, c1..., the SQL of the whole
        line (its line ending included) as the one field of a CopyLines, the delimiter and the
        header's fields; or None to decline, as it does for a type it cannot print as the
        Python writer would. Returns the row count, or None when declined or the warehouse is
        not DuckDB (the caller streams batches then).

        The lines come back as Arrow batches, whose text values lie back to back in one buffer:
        each batch is handed to `write` as that buffer, in the query's order, with no copy.
        (A `COPY ... TO` through DuckDB's CSV writer cost more: its per-value scan of a long
        line, then a pipe or a second read of the file for the md5.)"""
        if not self.is_duckdb:
            return None
        with self._duckdb() as con:
            relation = con.sql(sql)
            names = [f"c{i}" for i in range(len(relation.columns))]
            schema = con.sql(f"SELECT * FROM ({sql}) LIMIT 0").to_arrow_table().schema
            lines = line_for(schema, [str(t) for t in relation.types])
            if lines is None:
                return None
            if lines.header is not None:
                write(memoryview((lines.delimiter.join(lines.header) + "\n").encode()))
            reader = con.sql(f"SELECT {lines.fields[0]} AS line FROM ({sql}) AS "
                             f"q({', '.join(names)})").to_arrow_reader(BATCH_ROWS)
            rows = 0
            for batch in reader:
                write(text_buffer(batch.column(0)))
                rows += batch.num_rows
            return rows

    def copy_lines_out(self, sql: str,
                       line_for: Callable[[list[str], list[str]], "CopyLines | None"],
                       write: Callable[[bytes | bytearray], object]) -> int | None:
        r"""PostgreSQL: write a query's result as text lines with `COPY (...) TO STDOUT`
        through psycopg 3, each chunk of lines handed to `write` as it arrives.
        `line_for(names, types)` (PostgreSQL's type names, e.g. `numeric(12,2)`) gives the SQL
        of the whole line over columns c0, c1... as the single field of a CopyLines, or the
        SQL of each column for PostgreSQL's own CSV writer (`csv`), the delimiter and the
        header's fields; or None to decline. Returns the row count, or None when declined or
        the warehouse is not PostgreSQL (the caller streams batches then).

        COPY's text format escapes a backslash and the control characters \b \f \n \r
        \t \v of each line; they are unescaped here, so the bytes are the line's own. Its
        CSV format quotes a value holding the delimiter, a quote, LF or CR (an empty text too,
        which `line_for` makes NULL): one holding CR and none of the others is unquoted again
        here, as `csv.writer` leaves it (unless every value is quoted, `force_quote`)."""
        if self.is_duckdb or not sa.make_url(self.url).drivername.startswith("postgresql"):
            return None
        with self.engine().connect() as conn:
            raw = conn.connection.driver_connection
            assert raw is not None  # an open connection has its driver's
            with raw.cursor() as cursor:
                if not hasattr(cursor, "copy") or not hasattr(raw, "pgconn"):
                    return None
                # Transaction-local (the connection goes back to the pool): ISO dates, UTF-8.
                cursor.execute("SET LOCAL DateStyle = 'ISO, YMD'")
                cursor.execute("SET LOCAL client_encoding = 'UTF8'")
                cursor.execute(f"SELECT * FROM ({sql}) AS q LIMIT 0")
                columns = cursor.description or []
                names = [f"c{i}" for i in range(len(columns))]
                lines = line_for([c.name for c in columns], [c.type_display for c in columns])
                if lines is None:
                    return None
                if lines.header is not None:
                    write((lines.delimiter.join(lines.header) + "\n").encode())
                source = f"FROM ({sql}) AS q({', '.join(names)})"
                if lines.csv:
                    force = ", FORCE_QUOTE *" if lines.force_quote else ""
                    statement = (f"COPY (SELECT {', '.join(lines.fields)} {source}) TO STDOUT "
                                 f"(FORMAT csv, DELIMITER {_sql_string(lines.delimiter)}{force})")
                    delimiter = lines.delimiter.encode()
                    fixed: Callable[[bytearray], bytes | bytearray] = (
                        (lambda rows: rows) if lines.force_quote
                        else (lambda rows: _csv_cr_unquoted(rows, delimiter)))
                else:
                    statement = f"COPY (SELECT {lines.fields[0]} {source}) TO STDOUT"
                    fixed = _copy_text_unescaped
                return _copy_out(raw, statement, fixed, write)

    def copy_parquet(self, sql: str, accept: Callable[[list[str], list[str]], bool],
                     target: Path) -> int | None:
        """Write a query's result as Parquet with the warehouse's own `COPY ... TO` when
        `accept(names, types)` holds for its columns (DuckDB type names); returns the row count,
        or None when declined or the warehouse is not DuckDB (the caller streams batches)."""
        if not self.is_duckdb:
            return None
        with self._duckdb() as con:
            relation = con.sql(sql)
            if not accept(relation.columns, [str(t) for t in relation.types]):
                return None
            # A column DuckDB knows has no NULL (from its statistics or a NOT NULL) would be
            # written REQUIRED, where pyarrow writes every column OPTIONAL: the CASE hides that.
            names = [f"c{i}" for i in range(len(relation.columns))]
            select = ", ".join(
                f"CASE WHEN {c} IS NULL THEN NULL ELSE {c} END AS {quote_any(n)}"
                for c, n in zip(names, relation.columns, strict=True))
            copied = con.execute(
                f"COPY (SELECT {select} FROM ({sql}) AS q({', '.join(names)})) "
                f"TO {_sql_string(str(target))} (FORMAT parquet)").fetchone()
            return int(copied[0]) if copied else 0

    def query_to_parquet(self, sql: str, params: Mapping[str, Any] | None, target: Path,
                         progress: Callable[[int], None] = lambda rows: None) -> int:
        """Stream a query's rows into a Parquet file (a courier reading this `sql` connection);
        returns the row count. The file appears under `target` only once whole. A connection
        lost mid-read starts the read over (`retries`), never appending to what it wrote;
        otherwise TransferError names the connection and says `read`."""
        partial = target.with_name(partial_name(target.name))

        def read_all() -> int:
            rows, writer = 0, None
            try:
                for batch in self.batches(sql, params):
                    writer = writer or pq.ParquetWriter(partial, batch.schema)
                    writer.write_batch(batch)
                    rows += batch.num_rows
                    progress(rows)
                if writer is not None:
                    writer.close()
                return rows
            except Exception as failed:
                if writer is not None:
                    with suppress(Exception):
                        writer.close()
                partial.unlink(missing_ok=True)
                raise TransferError(f"query failed: {str(failed).strip().splitlines()[0]}"
                                    ) from failed

        rows = with_retries(read_all, connection=self.connection_name or self.safe_url,
                            operation="read", retries=self.retries,
                            backoff_seconds=self.backoff_seconds, transient=lost_connection_only)
        partial.replace(target)
        return rows

    def load_parquet(self, schema: str, table: str, path: Path) -> int:
        """Replace `schema.table` with a Parquet file's rows through each backend's bulk path
        (DuckDB's reader; COPY into PostgreSQL), all or nothing. Returns the row count."""
        return self.load_files(schema, table, "SELECT * FROM read_parquet($path)",
                               {"path": str(path)}, None, [])

    def columns(self, schema: str, table: str) -> list[tuple[str, str]]:
        """(name, type) of each column of a built table, as the warehouse reports them."""
        mark = self.placeholder.format
        return [(str(name), str(kind)) for name, kind in self.fetch(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = "
            f"{mark('schema')} AND table_name = {mark('table')} ORDER BY ordinal_position",
            {"schema": schema, "table": table})]

    def fetch(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple]:
        if self.is_duckdb:
            with self._duckdb() as con:
                return con.execute(sql, dict(params or {})).fetchall()
        with self.engine().connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(sql), dict(params or {}))]

    def execute(self, what: str, *statements: tuple[str, Mapping[str, Any] | None]
                ) -> list[tuple]:
        """Run statements in one transaction (all or nothing); returns the last one's rows.

        Parameters use this warehouse's `placeholder` style.
        """
        rows: list[tuple] = []
        with self._transaction(what) as run:
            for sql, params in statements:
                rows = run(sql, params)
        return rows

    def ensure_schema(self, schema: str) -> None:
        """Create a schema in a transaction of its own. Two PostgreSQL transactions creating
        the same schema at once (Celery workers loading two tables) make one fail even with
        IF NOT EXISTS; that one is fine once the schema exists."""
        try:
            self.execute(f"create schema {schema}",
                         (f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}", None))
        except WarehouseError:
            p = self.placeholder.format
            if not self.fetch(f"SELECT count(*) FROM information_schema.schemata WHERE "
                              f"schema_name = {p('s')}", {"s": schema})[0][0]:
                raise

    def ensure_table(self, schema: str, table: str, columns: Mapping[str, str],
                     primary_key: str | None = None) -> None:
        """Create Stagecoach's own bookkeeping table if needed, and add the columns a newer
        version records, so an upgrade never needs a manual migration. `columns` maps name →
        SQL type (TEXT, BIGINT, TIMESTAMP, DOUBLE PRECISION: portable types only)."""
        target = qualified(schema, table)
        definition = ", ".join(f"{quote_ident(c)} {kind}" + (" PRIMARY KEY" if c == primary_key
                                                            else "")
                               for c, kind in columns.items())
        try:
            self.execute(f"create {schema}.{table}",
                         (f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}", None),
                         (f"CREATE TABLE IF NOT EXISTS {target} ({definition})", None))
        except WarehouseError:
            # Two runs creating it at once: PostgreSQL lets one of them fail. Fine if it exists.
            if not self.has_table(schema, table):
                raise
        p = self.placeholder.format
        present = {row[0] for row in self.fetch(
            f"SELECT column_name FROM information_schema.columns WHERE table_schema = {p('s')} "
            f"AND table_name = {p('t')}", {"s": schema, "t": table})}
        missing = [c for c in columns if c not in present]
        if missing:
            self.execute(f"add columns to {schema}.{table}", *(
                (f"ALTER TABLE {target} ADD COLUMN {quote_ident(c)} {columns[c]}", None)
                for c in missing))

    def insert_row(self, schema: str, table: str, row: Mapping[str, Any]) -> None:
        """Append one row to a bookkeeping table; every value is a bound parameter."""
        names = ", ".join(quote_ident(c) for c in row)
        marks = ", ".join(self.placeholder.format(c) for c in row)
        self.execute(f"append to {schema}.{table}",
                     (f"INSERT INTO {qualified(schema, table)} ({names}) VALUES ({marks})",
                      row))

    def has_table(self, schema: str, table: str) -> bool:
        sql = ("SELECT count(*) FROM information_schema.tables WHERE table_schema = "
               f"{self.placeholder.format('s')} AND table_name = {self.placeholder.format('t')}")
        return self.fetch(sql, {"s": schema, "t": table})[0][0] > 0

    @contextmanager
    def without_file_access(self) -> Iterator[None]:
        """DuckDB connections this warehouse opens inside the block cannot read, write or attach
        files, nor install extensions (`enable_external_access=false`): for SQL that comes from
        outside the spec, whose read_text('/proc/self/environ') or `FROM 'secrets.csv'` would
        copy files into tables. No effect on other databases (their roles set the limits)."""
        if not self.is_duckdb:
            yield
            return
        token = _NO_FILE_ACCESS.set(_NO_FILE_ACCESS.get() | {self._duckdb_path()})
        try:
            yield
        finally:
            _NO_FILE_ACCESS.reset(token)

    # ---------------------------------------------------------------- DuckDB
    def _duckdb_path(self) -> str:
        path = self.url.removeprefix("duckdb:///").removeprefix("duckdb://")
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        return path or ":memory:"

    @contextmanager
    def _duckdb(self, ordered: bool = True) -> Iterator[duckdb.DuckDBPyConnection]:
        path = self._duckdb_path()
        # A setting of the database, not the connection: such a connection cannot open while
        # another of this process has the file open with file access (and the reverse), so it
        # waits for it as for the lock.
        config: dict[str, str | bool | int | float | list[str]] = (
            {"enable_external_access": False} if path in _NO_FILE_ACCESS.get() else {})

        def locked(error: BaseException) -> bool:
            return isinstance(error, duckdb.IOException | duckdb.ConnectionException) and bool(
                re.search(r"lock|different configuration", str(error), re.I))

        # Waiting for another writer is a lock wait, not a retry: it lasts up to
        # lock_timeout_seconds, and a step is not retried after it (the wait was spent).
        waiting = tenacity.Retrying(
            stop=tenacity.stop_after_delay(self.lock_timeout_seconds),
            wait=tenacity.wait_exponential(multiplier=0.05, max=2.0),
            retry=tenacity.retry_if_exception(locked), reraise=True)
        try:
            con = waiting(duckdb.connect, path, config=config)
        except (duckdb.IOException, duckdb.ConnectionException) as busy:
            failed = WarehouseError(f"cannot open the DuckDB warehouse {path}: {busy}")
            if locked(busy):
                mark_retried_inside(failed, waiting.statistics.get("attempt_number", 1))
            raise failed from busy
        if not ordered:  # loaded files have no meaningful row order: let DuckDB stream them
            con.execute("SET preserve_insertion_order = false")
        con.execute(f"SET memory_limit = '{self.duckdb_memory_limit}'")
        try:
            yield con
        finally:
            con.close()

    # ---------------------------------------------------------------- SQLAlchemy
    def engine(self) -> sa.Engine:
        if self._engine is None:
            try:
                self._engine = sa.create_engine(driver_url(self.url), pool_pre_ping=True)
            except (sa_exc.ArgumentError, ValueError):
                # SQLAlchemy echoes the whole URL, password included: say only what to fix.
                raise WarehouseError("the database URL cannot be parsed; check its format "
                                     "(dialect+driver://user@host:port/database)") from None
        return self._engine

    @property
    def safe_url(self) -> str:
        """The URL for metadata and messages: password and secret-looking query values hidden."""
        try:
            url = sa.make_url(self.url)
        except (sa_exc.ArgumentError, ValueError):
            return "(unparseable URL)"
        hidden = {k: "***" for k in url.query if re.search(r"pass|secret|token|key", k, re.I)}
        return url.update_query_dict(hidden).render_as_string(hide_password=True)

    # ---------------------------------------------------------------- transactions
    @contextmanager
    def _transaction(self, what: str, ordered: bool = True) -> Iterator["_Runner"]:
        """One transaction for a whole write; any error rolls everything back."""
        try:
            if self.is_duckdb:
                with self._duckdb(ordered) as con:
                    con.execute("BEGIN TRANSACTION")
                    try:
                        yield _Runner(duckdb_con=con)
                        con.execute("COMMIT")
                    except BaseException:
                        con.execute("ROLLBACK")
                        raise
            else:
                with self.engine().begin() as conn:
                    yield _Runner(connection=conn)
        except (duckdb.Error, sa_exc.SQLAlchemyError, *self._driver_errors()) as failed:
            lost = None if self.is_duckdb else _lost_connection(failed)
            if lost is not None:
                # The server went away mid-write (nothing was committed): name the warehouse
                # and the first error, not the rollback's "connection already closed".
                raise WarehouseError(
                    f"{what} failed, the previous table is unchanged: lost the connection to "
                    f"the warehouse {self.safe_url} ({lost}); run again once it is back"
                ) from failed
            raise WarehouseError(f"{what} failed, the previous table is unchanged: "
                                 f"{first_line(failed)}") from failed

    def _driver_errors(self) -> tuple[type[BaseException], ...]:
        """The DB-API driver's own error class: COPY runs on the raw driver connection, so
        its errors are not wrapped by SQLAlchemy."""
        if self.is_duckdb or self._engine is None:
            return ()
        dbapi = getattr(self._engine.dialect, "dbapi", None)
        error = getattr(dbapi, "Error", None)
        return (error,) if isinstance(error, type) else ()



# A refusal no retry fixes, though the driver words it as a failed connection.
_REFUSED = re.compile(r"authentication failed|no password supplied|does not exist|"
                      r"permission denied|not permitted|pg_hba\.conf", re.I)


def lost_connection_only(failed: BaseException) -> bool:
    """Whether `failed` came from a lost or refused connection (a retry may succeed), rather
    than from the query, the data or a refused login."""
    chain = list(causes(failed))
    if any(_REFUSED.search(str(getattr(e, "orig", None) or e)) or _refused_sqlstate(e)
           for e in chain):
        return False
    return _lost_connection(failed) is not None or any(
        socket_transient(e) for e in chain if isinstance(e, OSError))


# PostgreSQL's codes for a database or role that does not exist and a refused login: the
# server's messages may be translated (lc_messages), the codes are not.
_REFUSED_SQLSTATES = {"3D000", "28000", "28P01"}


def _refused_sqlstate(error: BaseException) -> bool:
    """Whether the driver error (psycopg2's `pgcode`, psycopg's `sqlstate`) is a refusal."""
    driver = getattr(error, "orig", None) or error
    return any(getattr(driver, name, None) in _REFUSED_SQLSTATES
               for name in ("pgcode", "sqlstate"))


def first_line(error: BaseException) -> str:
    """An error's first line, a driver error's own (SQLAlchemy's `orig`) when it wraps one:
    the rest repeats the statement and its parameters."""
    text = str(getattr(error, "orig", None) or error).strip()
    return (text.splitlines() or [type(error).__name__])[0]


def _lost_connection(failed: BaseException) -> str | None:
    """The first line of the earliest connection-loss error in `failed`'s chain, else None."""
    seen, chain, current = set(), [], failed
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(current)
        current = current.__cause__ or current.__context__
    lost = None
    for error in chain:
        driver = getattr(error, "orig", None) or error
        invalidated = getattr(error, "connection_invalidated", False)
        if invalidated or (type(driver).__name__ in ("OperationalError", "InterfaceError") and
                           re.search(r"server closed the connection|connection already closed|"
                                     r"terminating connection|could not connect|"
                                     r"connection refused|connection to server|"
                                     r"connection is (closed|lost)|consuming input failed",
                                     str(driver),
                                     re.I)):
            lost = (str(driver).strip().splitlines() or [type(driver).__name__])[0]
    return lost


class FileLoad:
    """An open load of one table: `reader` is the DuckDB connection that reads the files (the
    warehouse's own for DuckDB, an in-memory one otherwise); `run` runs SQL on the warehouse
    inside the load's transaction."""

    def __init__(self, warehouse: WarehouseResource, reader: duckdb.DuckDBPyConnection,
                 run: "_Runner", schema: str, table: str, partition: str | None):
        self.warehouse, self.reader, self.run = warehouse, reader, run
        self.schema, self.table, self.partition = schema, table, partition
        self.target = qualified(schema, table)
        self.placeholder = warehouse.placeholder
        # Set by the caller: rows written so far where the warehouse streams them (COPY,
        # inserts), the percent DuckDB reports for its own statements.
        self.progress: Progress | None = None

    def for_table(self, schema: str, table: str) -> "FileLoad":
        """A load of another table inside this load's transaction (tables that only make sense
        together, like identity resolution's, are replaced all or none)."""
        return FileLoad(self.warehouse, self.reader, self.run, schema, table, None)

    def replace(self, select_sql: str, params: Mapping[str, Any]) -> int:
        """Write the rows of a DuckDB SELECT (run by `reader`) as the whole table, or as the
        load's partition of it; returns the rows written."""
        run, target, partition = self.run, self.target, self.partition
        run(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(self.schema)}")
        run.wait_for_other_writers(self.schema, self.table)
        exists = self._exists()
        mark = self.placeholder.format("partition")
        if self.warehouse.is_duckdb:
            if partition is None or not exists:
                with self._watched():
                    run(f"CREATE OR REPLACE TABLE {target} AS {select_sql}", params)
            else:
                run(f"DELETE FROM {target} WHERE {PARTITION_COLUMN} = {mark}",
                    {"partition": partition})
                with self._watched():
                    run(f"INSERT INTO {target} BY NAME {select_sql}", params)
        else:
            batches = self.reader.sql(select_sql, params=dict(params)).to_arrow_reader(
                BATCH_ROWS)
            if partition is None or not exists:
                run(f"DROP TABLE IF EXISTS {target}")
                columns = ", ".join(f"{quote_ident(f.name)} {_sql_type(f.type)}"
                                    for f in batches.schema)
                run(f"CREATE TABLE {target} ({columns})")
            else:
                run(f"DELETE FROM {target} WHERE {PARTITION_COLUMN} = {mark}",
                    {"partition": partition})
            self._insert(target, self.table, batches)
        where, args = _partition_filter(partition, mark)
        return run(f"SELECT count(*) FROM {target}{where}", args)[0][0]

    def replace_rows(self, schema: str, table: str, rows: pa.Table | None,
                     match: Mapping[str, Any]) -> None:
        """In a bookkeeping table (made by `ensure_table`), replace the rows matching `match`
        (column → value; None matches NULL) with `rows` (None: no rows), inside the load's
        transaction."""
        target = qualified(schema, table)
        conditions = [f"{quote_ident(c)} IS NULL" if v is None
                      else f"{quote_ident(c)} = {self.placeholder.format(c)}"
                      for c, v in match.items()]
        self.run(f"DELETE FROM {target} WHERE {' AND '.join(conditions) or 'true'}",
                 {c: v for c, v in match.items() if v is not None})
        if rows is None or rows.num_rows == 0:
            return
        if self.warehouse.is_duckdb:
            self.reader.register("stagecoach_new_rows", rows)
            try:
                self.run(f"INSERT INTO {target} BY NAME SELECT * FROM stagecoach_new_rows")
            finally:
                self.reader.unregister("stagecoach_new_rows")
        else:
            self._insert(target, table, rows.to_reader(), schema)

    def _watched(self) -> AbstractContextManager[None]:
        """DuckDB's own percent of the running statement, logged while it runs."""
        con = self.reader
        if self.progress is not None:
            con.execute("SET enable_progress_bar = true")
            con.execute("SET enable_progress_bar_print = false")
        return watching(con.query_progress, self.progress)

    def _rows_done(self, rows: int) -> None:
        if self.progress is not None:
            self.progress.update(rows)

    def _insert(self, target: str, table: str, batches: pa.RecordBatchReader,
                schema: str | None = None) -> None:
        if self.warehouse.engine().dialect.name == "postgresql" and self.run.copy(
                target, batches, self._rows_done):
            return
        # Other databases: SQLAlchemy's batched executemany ("insertmanyvalues").
        assert self.run.connection is not None  # not DuckDB: an SQLAlchemy connection
        statement = sa.insert(sa.table(table, *(sa.column(f.name) for f in batches.schema),
                                       schema=schema or self.schema))
        rows = 0
        for batch in batches:
            if batch.num_rows:
                self.run.connection.execute(statement, batch.to_pylist())
                rows += batch.num_rows
                self._rows_done(rows)

    def _exists(self) -> bool:
        p = self.placeholder.format
        return self.run(f"SELECT count(*) FROM information_schema.tables WHERE table_schema = "
                        f"{p('s')} AND table_name = {p('t')}",
                        {"s": self.schema, "t": self.table})[0][0] > 0


class _Runner:
    """Runs statements inside the open transaction of either backend."""

    def __init__(self, duckdb_con: duckdb.DuckDBPyConnection | None = None,
                 connection: sa.Connection | None = None):
        self.duckdb_con, self.connection = duckdb_con, connection

    def __call__(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple]:
        if self.duckdb_con is not None:
            cursor = self.duckdb_con.execute(sql, dict(params or {}))
            return cursor.fetchall() if cursor.description else []
        assert self.connection is not None  # one of the two is always given
        result = self.connection.execute(sa.text(sql), dict(params or {}))
        return [tuple(r) for r in result] if result.returns_rows else []

    def wait_for_other_writers(self, schema: str, table: str) -> None:
        """On PostgreSQL, hold the table's advisory lock until the transaction ends. Two runs
        replacing one table at once (two days of a dated job) would otherwise both create it,
        and one fail, or the later one drop what the earlier one committed. DuckDB has one
        writer anyway; other databases get no such lock."""
        if self.connection is not None and self.connection.dialect.name == "postgresql":
            self("SELECT pg_advisory_xact_lock(hashtextextended(:table, 0))",
                {"table": f"stagecoach {schema}.{table}"})

    def copy(self, target: str, batches: pa.RecordBatchReader,
             progress: Callable[[int], None] = lambda rows: None) -> bool:
        """PostgreSQL COPY through psycopg 3's `Cursor.copy`, fed batch by batch with the CSV
        bytes Arrow's C++ writer makes (faster than binary COPY, whose rows would go through
        Python objects one by one); `progress` hears the rows sent so far. False when the
        driver is not psycopg 3 (no COPY): the caller inserts instead."""
        columns = ", ".join(quote_ident(f.name) for f in batches.schema)
        assert self.connection is not None  # COPY is PostgreSQL's: an SQLAlchemy connection
        raw = self.connection.connection.driver_connection
        assert raw is not None  # an open connection has its driver's
        options, rows = pacsv.WriteOptions(include_header=False), 0
        with raw.cursor() as cursor:
            if not hasattr(cursor, "copy"):
                return False
            with cursor.copy(f"COPY {target} ({columns}) FROM STDIN (FORMAT csv)") as copy:
                for batch in batches:
                    sink = io.BytesIO()
                    pacsv.write_csv(batch, sink, options)
                    copy.write(sink.getbuffer())
                    rows += batch.num_rows
                    progress(rows)
        return True


_COPY_TEXT_ESCAPES = {b"\\\\": b"\\", b"\\b": b"\b", b"\\f": b"\f", b"\\n": b"\n", b"\\r": b"\r",
                      b"\\t": b"\t", b"\\v": b"\v"}
_COPY_TEXT_ESCAPE = re.compile(rb"\\[\\bfnrtv]")


def _copy_out(connection: Any, statement: str,
              fixed: Callable[[bytearray], bytes | bytearray],
              write: Callable[[bytes | bytearray], object]) -> int:
    """Run `COPY ... TO STDOUT` on a psycopg 3 connection (in its open transaction) through
    its libpq connection (`Connection.pgconn`, psycopg's documented way to libpq): a blocking
    `get_copy_data` per row, the GIL released while it waits, each row copied into a 1 MiB
    block handed to `write` (after `fixed`). psycopg's `Copy` iteration costs twice the CPU
    (a Python generator and a lock per row), and holding its rows' memoryviews four times.

    Returns the rows. The server's error is raised as psycopg's class for its SQLSTATE; if
    `write` fails the COPY is cancelled and drained first, so the connection stays usable."""
    import psycopg
    from psycopg import pq

    pgconn = connection.pgconn
    pgconn.send_query(statement.encode())
    started = pgconn.get_result()
    if started is None or started.status != pq.ExecStatus.COPY_OUT:
        while pgconn.get_result() is not None:
            pass
        _raise_result(psycopg, started)
    rows, block = 0, bytearray()
    get = pgconn.get_copy_data
    try:
        while True:
            size, row = get(0)
            if size < 0:
                break
            block += row
            rows += 1
            if len(block) >= 1 << 20:
                write(fixed(block))
                block = bytearray()
    except BaseException:
        with suppress(Exception):  # cancel_safe: psycopg 3.2 on; cancel before
            cancel = getattr(connection, "cancel_safe", None) or connection.cancel
            cancel()
        with suppress(Exception):
            while get(0)[0] >= 0:
                pass
            while pgconn.get_result() is not None:
                pass
        raise
    results = []
    while (result := pgconn.get_result()) is not None:
        results.append(result)
    failed = [r for r in results if r.status != pq.ExecStatus.COMMAND_OK]
    if failed or not results:
        _raise_result(psycopg, failed[0] if failed else None)
    write(fixed(block))
    return rows


def _raise_result(psycopg: Any, result: Any) -> None:
    """Raise a failed libpq result as psycopg's error class for its SQLSTATE."""
    message = (result.error_message.decode(errors="replace").strip() if result is not None
               else "no result from the server") or "COPY failed"
    code = result.error_field(psycopg.pq.DiagnosticField.SQLSTATE) if result is not None \
        else None
    try:
        error = psycopg.errors.lookup(code.decode()) if code else psycopg.DatabaseError
    except KeyError:
        error = psycopg.DatabaseError
    raise error(message)


# A field PostgreSQL's CSV COPY quoted: it writes a quote only to open, close or double one.
_CSV_QUOTED = re.compile(rb'"((?:[^"]|"")*)"')


def _csv_cr_unquoted(lines: bytes | bytearray, delimiter: bytes) -> bytes | bytearray:
    """PostgreSQL CSV rows (whole rows), each field quoted only for a CR unquoted again: it
    holds CR and no quote, LF or delimiter, what `csv.writer` quotes (with a LF line
    ending). Rows without CR are left as they are (one search of the chunk)."""
    if b"\r" not in lines:
        return lines

    def unquoted(match: re.Match[bytes]) -> bytes:
        inner = match.group(1)
        if b"\r" not in inner or b'"' in inner or b"\n" in inner or delimiter in inner:
            return match.group(0)
        return inner

    return _CSV_QUOTED.sub(unquoted, lines)


def _copy_text_unescaped(lines: bytes | bytearray) -> bytes | bytearray:
    """PostgreSQL COPY text rows (whole rows: an escape never spans two) as their bytes."""
    if b"\\" not in lines:
        return lines
    return _COPY_TEXT_ESCAPE.sub(lambda m: _COPY_TEXT_ESCAPES[m.group()], lines)


def driver_url(url: str) -> sa.URL:
    """The URL SQLAlchemy connects with: PostgreSQL through psycopg 3 (`postgresql+psycopg`,
    what `postgresql://` means in SQLAlchemy 2.1), also for a `postgresql+psycopg2://` URL
    written for earlier versions, so one driver serves loads (COPY) and reads alike."""
    parsed = sa.make_url(url)
    if parsed.drivername in ("postgresql", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _partition_filter(partition: str | None, marker: str) -> tuple[str, dict[str, Any]]:
    if partition is None:
        return "", {}
    return f" WHERE {PARTITION_COLUMN} = {marker}", {"partition": partition}


def _check_not_null(run: _Runner, target: str, partition: str | None, columns: list[str],
                    marker: str) -> None:
    where, args = _partition_filter(partition, marker)
    for column in columns:
        condition = f"{quote_ident(column)} IS NULL"
        sql = f"SELECT count(*) FROM {target}" + (f"{where} AND {condition}" if where
                                                   else f" WHERE {condition}")
        nulls = run(sql, args)[0][0]
        if nulls:
            raise WarehouseError(f"{nulls} row(s) have no value in not-null column "
                                 f"{column!r}; nothing was loaded, the previous table is "
                                 "unchanged")


def _widen_nulls(schema: pa.Schema) -> pa.Schema:
    """A column with no value in the first batch is text, not Arrow's `null` type."""
    return pa.schema([f.with_type(pa.string()) if pa.types.is_null(f.type) else f
                      for f in schema])


def _sql_type(arrow_type: pa.DataType) -> str:
    if pa.types.is_boolean(arrow_type):
        return "BOOLEAN"
    if pa.types.is_integer(arrow_type):
        return "BIGINT"
    if pa.types.is_floating(arrow_type):
        return "DOUBLE PRECISION"
    if pa.types.is_decimal(arrow_type):
        return f"NUMERIC({arrow_type.precision}, {arrow_type.scale})"
    if pa.types.is_date(arrow_type):
        return "DATE"
    if pa.types.is_timestamp(arrow_type):
        return "TIMESTAMP WITH TIME ZONE" if arrow_type.tz else "TIMESTAMP"
    return "TEXT"
