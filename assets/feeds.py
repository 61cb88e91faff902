"""Feeds: a courier's rows mapped to domain columns, standardised by semantic tag, loaded.

Standardisation compiles to DuckDB SQL over DuckDB's own file readers, so a 2 GB file streams
through one engine at its native speed; values that cannot be standardised become NULL.
"""


import dataclasses
import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
import duckdb
import pyarrow as pa

from assets import bad_rows, semantic_tags, spec, value_accounts
from assets.common import asset_partition, markdown_table, owners_of, partitions_for, signed
from assets.couriers import manifest_path
from assets.names import DOMAIN_SCHEMA, STAGING_KEY, WAREHOUSE_KEY, courier_key, domain_key
from assets.semantic_tags import TAG_TYPES, literal, standardise_value
from assets.sql_bind import PARTITION, SOURCE_FILE
from assets.sql_tables import built_schema
from assets.staged import Manifest, StagedFormat
from resources.progress import Progress
from resources.warehouse import (
    PARTITION_COLUMN,
    FileLoad,
    WarehouseError,
    WarehouseResource,
    quote_ident,
)

if TYPE_CHECKING:
    from resources.staging import StagingResource


def quote_source(column: str) -> str:
    """Quote a source column as the file names it (any text, quotes doubled)."""
    return '"' + column.replace('"', '""') + '"'


def clean(column: str) -> str:
    """A source value as trimmed text, empty → NULL: the input of every semantic tag."""
    return f"nullif(trim(CAST({quote_source(column)} AS VARCHAR)), '')"


def has_nul(columns: list[str]) -> str:
    """True where one of the source values holds a NUL byte."""
    tests = [f"contains(CAST({quote_source(c)} AS VARCHAR), chr(0))" for c in columns]
    return f"coalesce({' OR '.join(tests)}, false)" if tests else "false"


def standardise(column: str, mapping: spec.ColumnMapping) -> str:
    """The DuckDB expression that turns a raw source column into its standard form."""
    return standardise_value(clean(column), mapping)


RAW, LET = "_stagecoach_raw_", "_stagecoach_let_"
NUL = "_stagecoach_nul"  # a row holding a NUL byte: a bad row on every warehouse
READER_REJECTS, READER_SCANS = "stagecoach_reject_errors", "stagecoach_reject_scans"
INCOMING, BAD_KEYS = "stagecoach_incoming", "stagecoach_bad_keys"


def reader_sql(fmt: StagedFormat, index: int) -> str:
    """DuckDB's own reader for file `index` of a load, bound as `$file_<index>`.

    Delimited files are read with the columns their header names (`$columns_<index>`), so
    DuckDB never guesses the dialect from a sample that a bad row can spoil, and every row it
    cannot read becomes a reject with its byte offset instead of failing the whole read.
    """
    kind, file = fmt.type, f"$file_{index}"
    if kind == "parquet":
        return f"read_parquet({file})"
    if kind == "jsonl":
        return f"read_json({file}, format = 'newline_delimited')"
    quote = fmt.quote or ""
    options = ["auto_detect = false", f"columns = $columns_{index}",
               f"delim = {literal(spec.delimiter_for(kind, fmt.delimiter))}",
               f"header = {str(fmt.header).lower()}",
               f"quote = {literal(quote)}", f"escape = {literal(fmt.escape or quote)}",
               f"skip = {fmt.skip_rows}", "strict_mode = true",
               f"max_line_size = {fmt.max_line_bytes}",
               "store_rejects = true", f"rejects_table = '{READER_REJECTS}'",
               f"rejects_scan = '{READER_SCANS}'"]
    if fmt.compression in ("gzip", "none"):
        options.append(f"compression = {literal(fmt.compression)}")
    return f"read_csv({file}, {', '.join(options)})"


def feed_params(files: list[bad_rows.SourceFile], fmt: StagedFormat,
                partition: str | None) -> dict[str, Any]:
    """The bound values of a feed's load query: each file's path, source name and columns."""
    params: dict[str, Any] = {}
    for f in files:
        params[f"source_{f.index}"] = f.source
        if f.columns:
            params[f"file_{f.index}"] = f.path
            if fmt.type in bad_rows.DELIMITED:
                params[f"columns_{f.index}"] = dict.fromkeys(f.columns, "VARCHAR")
    if partition is not None:
        params["partition"] = partition
    return params


def feed_select(table: spec.DomainTable, fmt: StagedFormat, files: list[bad_rows.SourceFile],
                partitioned: bool, numbered: bool = False) -> str:
    """SELECT standardised domain columns from the files; absent optional columns are NULL.

    Each file is read on its own (`_source_file` is a bound constant); `numbered` adds the
    file's index (`_file`) and the row's position among the rows read from it (`_row`), which
    is how a bad row is traced back to its line.
    """
    available = {c for f in files for c in f.columns}
    branches = []
    for f in files:
        cleaned, sources = [], []
        for name, mapping in table.columns.items():
            source = mapping.source or name
            if source in available:  # clean each source value once, then standardise it
                value = clean(source) if source in f.columns else "CAST(NULL AS VARCHAR)"
                cleaned.append(f"{value} AS {quote_ident(name)}")
                if source in f.columns and source not in sources:
                    sources.append(source)
        cleaned += [f"CAST($source_{f.index} AS VARCHAR) AS _source_file", f"{f.index} AS _file"]
        cleaned.append(f"{has_nul(sources)} AS {NUL}")
        if not f.columns:  # an empty file that may be empty: no rows, same columns
            cleaned = [c if c.endswith(("_source_file", "_file", NUL)) else
                       f"CAST(NULL AS VARCHAR) AS {c.rsplit(' AS ', 1)[1]}" for c in cleaned]
            branches.append(f"SELECT {', '.join(cleaned)}, CAST(0 AS BIGINT) AS _row "
                            "WHERE false")
            continue
        reader = reader_sql(fmt, f.index)
        if numbered:
            branches.append(f"SELECT {', '.join(cleaned)}, ordinality AS _row FROM {reader} "
                            "WITH ORDINALITY")
        else:
            branches.append(f"SELECT {', '.join(cleaned)} FROM {reader}")
    inner = ["_source_file", "_file", NUL, *(["_row"] if numbered else [])]
    outer: list[str] = []
    lets: list[list[tuple[str, str]]] = []  # per column, the values its tag names (in order)
    measured: list[str] = []
    changed: dict[str, str] = {}  # per measured column: true where its tag rewrote the value
    for name, mapping in table.columns.items():
        q = quote_ident(name)
        if (mapping.source or name) not in available:
            outer.append(f"CAST(NULL AS {TAG_TYPES.get(mapping.tag, 'VARCHAR')}) AS {q}")
            continue
        if not value_accounts.measured(mapping):
            inner.append(f"{standardise_value(q, mapping)} AS {q}")
            outer.append(q)
            continue
        raw = quote_ident(RAW + name)
        staged = semantic_tags.Staged(f"{LET}{len(lets)}_")
        inner += [f"{_standardised(q, name, mapping, files, staged)} AS {q}", f"{q} AS {raw}"]
        lets.append(staged.lets)
        outer.append(f"coalesce({q}, {raw}) AS {q}" if mapping.on_invalid == "keep" else q)
        if mapping.keep_raw:
            outer.append(f"{raw} AS {quote_ident(name + '_raw')}")
        outer.append(f"CASE WHEN {q} IS NULL THEN {value_accounts.mask_sql(raw)} END AS "
                     f"{quote_ident(value_accounts.INVALID + name)}")
        measured.append(name)
        changed[name] = f"{q} <> {raw}"
        if mapping.tag in ("date", "datetime", "birthdate") and not mapping.formats:
            outer += _order_evidence(raw, name)
    outer += value_accounts.changed_masks(table, measured, changed)
    outer += ["_source_file", NUL]
    if partitioned:
        outer.append(f"CAST($partition AS VARCHAR) AS {PARTITION_COLUMN}")
    if numbered:
        outer += ["_file", "_row"]
    source = with_lets(f"({' UNION ALL '.join(branches)}) AS source", lets)
    return (f"SELECT {', '.join(outer)} FROM (SELECT {', '.join(inner)} FROM {source}) "
            "AS standardised")


def with_lets(source: str, lets: list[list[tuple[str, str]]]) -> str:
    """`source` with the values the tags name (`semantic_tags.Staged`), one projection per
    depth, so each is computed once and may use those named before it."""
    for depth in range(max(map(len, lets), default=0)):
        named = ", ".join(f"{value} AS {ref}" for column in lets if len(column) > depth
                          for ref, value in [column[depth]])
        source = f"(SELECT *, {named} FROM {source}) AS let_{depth}"
    return source


def _standardised(q: str, name: str, mapping: spec.ColumnMapping,
                  files: list[bad_rows.SourceFile], let: semantic_tags.Let) -> str:
    """The tag's expression; a date column is read day-first in the files found to be so."""
    day_first = [str(f.index) for f in files if name in f.day_first]
    if not day_first:
        return standardise_value(q, mapping, let)
    return (f"CASE WHEN _file IN ({', '.join(day_first)}) THEN "
            f"{standardise_value(q, semantic_tags.day_first(mapping), let)} "
            f"ELSE {standardise_value(q, mapping, let)} END")


DAY_FIRST, MONTH_FIRST = "_stagecoach_day_first_", "_stagecoach_month_first_"


def undated(table: spec.DomainTable) -> list[str]:
    """Date columns without `formats`: their `a/b/yyyy` order is judged per file."""
    return [c for c, m in table.columns.items()
            if m.tag in ("date", "datetime", "birthdate") and not m.formats]


def _order_evidence(raw: str, name: str) -> list[str]:
    """Hidden columns holding a value only day-first (or only month-first) can read."""
    first, second = (f"TRY_CAST(split_part({raw}, '/', {i}) AS INTEGER)" for i in (1, 2))
    slashed = f"contains({raw}, '/')"  # string functions: far cheaper than a regex
    return [f"CASE WHEN {slashed} AND {first} BETWEEN 13 AND 31 AND {second} BETWEEN 1 AND 12 "
            f"THEN {raw} END AS {quote_ident(DAY_FIRST + name)}",
            f"CASE WHEN {slashed} AND {second} BETWEEN 13 AND 31 AND {first} BETWEEN 1 AND 12 "
            f"THEN {raw} END AS {quote_ident(MONTH_FIRST + name)}"]


class _DayFirstFiles(Exception):
    """Some files hold dates only day-first can read: roll back and load again so."""

    def __init__(self, files: list[bad_rows.SourceFile]):
        super().__init__("day-first files")
        self.files = files


class _MixedDates(Exception):
    """A file holds dates of both orders: which one it means cannot be known."""


def _judge_date_orders(query: value_accounts.Query, relation: str, table: spec.DomainTable,
                       files: list[bad_rows.SourceFile], hidden: dict[str, str], where: str,
                       args: dict[str, Any]) -> None:
    """Raise `_DayFirstFiles` when a file not yet read day-first holds only day-first dates,
    `_MixedDates` when a file holds both orders."""
    by_source = {f.source: f for f in files}
    changed, problems = dict(by_source), []
    for name in undated(table):
        day, month = quote_ident(DAY_FIRST + name), quote_ident(MONTH_FIRST + name)
        if DAY_FIRST + name not in hidden:
            continue
        filtered = (f"{where} AND" if where else " WHERE") + f" ({day} IS NOT NULL OR " \
            f"{month} IS NOT NULL)"
        for source, day_value, month_value in query(
                f"SELECT _source_file, min({day}), min({month}) FROM {relation}{filtered} "
                "GROUP BY _source_file", args):
            f = changed[source]
            if day_value and month_value:
                problems.append(f"{source}: column `{name}` holds dates only day-first can "
                                f"read ({day_value}) and dates only month-first can read "
                                f"({month_value})")
            elif day_value and name not in f.day_first:
                changed[source] = dataclasses.replace(f, day_first=(*f.day_first, name))
    if problems:
        raise _MixedDates("; ".join(problems))
    if changed != by_source:
        raise _DayFirstFiles([changed[f.source] for f in files])


def hidden_columns(table: spec.DomainTable, files: list[bad_rows.SourceFile]
                   ) -> dict[str, str]:
    """The helper columns a load of these files adds (and drops once counted)."""
    available = {c for f in files for c in f.columns}
    hidden: dict[str, str] = {NUL: "BOOLEAN"}
    dates = undated(table)
    measured = [name for name, mapping in table.columns.items()
                if value_accounts.measured(mapping) and (mapping.source or name) in available]
    hidden.update(value_accounts.hidden_columns(table, measured))
    for name in measured:
        if name in dates:
            hidden.update({DAY_FIRST + name: "TEXT", MONTH_FIRST + name: "TEXT"})
    return hidden


def domain_definitions(workflow: spec.Workflow, warehouse_kind: str = "duckdb"
                       ) -> dg.Definitions:
    """The feeds' family: one domain table asset per feed (its `quality:` checks are the
    quality family's, `assets/quality.py`)."""
    return dg.Definitions(assets=[build_domain_asset(workflow, name, table, warehouse_kind)
                                  for name, table in workflow.domain_tables.items()])


@functools.lru_cache(maxsize=4096)
def _declared_schema(columns: tuple[tuple[str, str, str, bool], ...]) -> dg.TableSchema:
    """A domain table's declared column schema from (name, type, description, nullable) of
    each column: one (immutable) object per distinct schema, as feeds of one layout share."""
    return dg.TableSchema(columns=[
        dg.TableColumn(name, kind, description=description,
                       constraints=dg.TableColumnConstraints(nullable=nullable))
        for name, kind, description, nullable in columns])


def build_domain_asset(workflow: spec.Workflow, name: str, table: spec.DomainTable,
                       warehouse_kind: str = "duckdb") -> dg.AssetsDefinition:
    """The asset that loads a courier's files into `domain.<table>`, standardised by tag."""
    wf = workflow.workflow.name
    courier = workflow.couriers[table.from_]
    partitions = partitions_for(workflow) if courier.dated else None
    tags = ", ".join(f"`{c}` ({m.tag})" for c, m in table.columns.items())
    schema = _declared_schema(tuple((c, TAG_TYPES.get(m.tag, "VARCHAR").lower(),
                                     m.description or f"{m.tag} from `{m.source or c}`",
                                     not m.not_null) for c, m in table.columns.items()))

    check_specs = [dg.AssetCheckSpec(
        "primary_key_unique", asset=domain_key(name), blocking=True,
        description=f"No two rows share ({', '.join(table.primary_key)}).",
    )] if table.primary_key else []
    check_specs += value_accounts.check_spec(domain_key(name), table)

    @dg.asset(
        key=domain_key(name),
        check_specs=check_specs,
        group_name=wf,
        description=table.description or f"Domain table standardised from courier "
                                          f"`{table.from_}`: {tags}.",
        owners=owners_of(workflow, table),
        kinds={"table", warehouse_kind},
        partitions_def=partitions,
        deps=[courier_key(table.from_)],
        required_resource_keys={WAREHOUSE_KEY, STAGING_KEY},
        metadata={"dagster/column_schema": schema, "dagster/table_name": f"domain.{name}",
                  "bad_rows": table.bad_rows},
    )
    @signed
    def _domain(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        warehouse: WarehouseResource = getattr(context.resources, WAREHOUSE_KEY)
        staging: StagingResource = getattr(context.resources, STAGING_KEY)
        partition = asset_partition(context)
        manifest_file = manifest_path(staging, wf, table.from_, partition)
        if not manifest_file.exists():
            raise dg.Failure(f"courier `{table.from_}` has not run for "
                             f"{partition or 'this table'}; materialize it first")
        manifest = Manifest.model_validate(staging.read_json(manifest_file))
        fmt = manifest.format
        empty = [e for e in manifest.files if table.empty_file != "fail"
                 and bad_rows.holds_nothing(e.path, fmt)]
        if empty and table.empty_file == "keep_table":
            context.log.warning(f"{', '.join(e.source for e in empty)} "
                                f"is empty (`empty_file: keep_table`): `domain.{name}` is left "
                                "as it was")
            return _unchanged(warehouse, name, table, {"empty_files": len(empty)})
        if not manifest.files:  # an optional courier found nothing: keep what the table holds
            context.log.warning(f"courier `{table.from_}` brought no file: `domain.{name}` "
                                f"is left as it was")
            return _unchanged(warehouse, name, table, {"files": 0})
        unchanged = f"nothing was loaded; domain.{name} is unchanged"
        try:
            files = [bad_rows.SourceFile(i, e.path, e.source, ())
                     if e in empty else bad_rows.inspect(i, e, fmt)
                     for i, e in enumerate(manifest.files)]
        except bad_rows.BadFile as bad:
            raise dg.Failure(f"domain table `{name}`: {bad}. {unchanged.capitalize()}.",
                             allow_retries=False) from bad
        absent = _check_columns(name, table, files, fmt, unchanged)
        for f in files:
            if not f.columns:
                context.log.warning(f"{f.source} is empty: it adds no rows")
        warehouse.ensure_table(bad_rows.REJECTS_SCHEMA, bad_rows.REJECTS_TABLE,
                               bad_rows.REJECTS_COLUMNS)
        try:
            try:
                rows, bad, accounts = _load_rows(context, warehouse, name, table, fmt, files,
                                            partition)
            except _DayFirstFiles as again:  # rare: read those files day-first, once more
                files = again.files
                rows, bad, accounts = _load_rows(context, warehouse, name, table, fmt, files,
                                            partition)
        except _BadRowsFound:
            bad = _scratch_bad_rows(warehouse, table, fmt, files, partition)
            bad = [b for b in bad if not b.columns or any(
                table.columns[c].on_invalid == "fail" for c in b.columns)]
            raise dg.Failure(
                f"domain table `{name}`: {len(bad):,} bad row{'s' if len(bad) != 1 else ''}, "
                f"{unchanged}: {bad_rows.describe(bad, files)}. Fix the file, or set "
                f"`bad_rows: reject` (load the other rows, keep these in "
                f"{bad_rows.REJECTS_SCHEMA}.{bad_rows.REJECTS_TABLE}) or `bad_rows: skip` on "
                f"domain_tables.{name}", allow_retries=False) from None
        except _InvalidValues as invalid:
            bad = [b for b in _scratch_bad_rows(warehouse, table, fmt, files, partition)
                   if set(b.columns) & set(invalid.columns)]
            raise dg.Failure(
                f"domain table `{name}`: {len(bad):,} row{'s' if len(bad) != 1 else ''} with "
                f"a value that `on_invalid: fail` column(s) {', '.join(invalid.columns)} cannot "
                f"read, {unchanged}: {bad_rows.describe(bad, files)}. Fix the file, or set "
                f"`on_invalid: null`, `keep` or `reject` on the column",
                allow_retries=False) from None
        except (_MixedDates, _DayFirstFiles) as mixed:
            raise dg.Failure(
                f"domain table `{name}`: {mixed}. Set `formats:` on the column (e.g. "
                f"[\"%d/%m/%Y\"]) or fix the file; {unchanged}.", allow_retries=False) from None
        except _Shrunk as shrunk:
            drop = (shrunk.previous - shrunk.rows) / shrunk.previous
            raise dg.Failure(
                f"domain table `{name}`: the load would take domain.{name}"
                f"{f' (partition {partition})' if partition else ''} from "
                f"{shrunk.previous:,} rows to {shrunk.rows:,} ({drop:.0%} fewer), more than "
                f"`max_shrink: {table.max_shrink}` allows; {unchanged}. Check the files "
                f"({', '.join(f.source for f in files)}); if the drop is expected, raise "
                f"`max_shrink` on domain_tables.{name} (100% allows any drop)",
                allow_retries=False) from None
        except (WarehouseError, duckdb.Error) as failed:
            raise dg.Failure(f"domain table `{name}`: {_load_problem(failed, files, fmt)}. "
                             f"{unchanged.capitalize()}.", allow_retries=False) from failed
        if bad:  # a row `on_invalid: reject` refused goes to the rejects whatever `bad_rows`
            to_rejects = sum(1 for b in bad if table.bad_rows == "reject" or b.columns)
            verb = ("rejected to stagecoach.rejects" if to_rejects == len(bad) else "skipped"
                    if not to_rejects else
                    f"skipped or rejected ({to_rejects:,} to stagecoach.rejects)")
            context.log.warning(f"domain table `{name}`: {len(bad):,} bad row"
                                f"{'s' if len(bad) != 1 else ''} {verb}: "
                                f"{bad_rows.describe(bad, files)}")
        no_rows = [f.source for f in files if f.columns and rows == 0]
        if no_rows:
            context.log.warning(f"domain table `{name}`: no rows in {', '.join(no_rows)}")
        rejected = [b for b in bad if table.bad_rows == "reject" or b.columns]
        metadata: dict[str, Any] = {
            "dagster/row_count": rows,
            "rows_loaded": rows,
            "rows_rejected": len(rejected),
            "rows_skipped": len(bad) - len(rejected),
            "bad_rows": table.bad_rows,
            "files": len(files),
            "source_files": dg.MetadataValue.md("\n".join(f"- `{f.source}`" for f in files)),
            "warehouse": warehouse.safe_url,
            **value_accounts.metadata(accounts),
            **_built_schema(warehouse, name, table),
        }
        if absent:
            metadata["absent_columns"] = dg.MetadataValue.md(absent)
        if bad:
            metadata["bad_row_sample"] = dg.MetadataValue.md(markdown_table(
                ["file", "line", "reason"],
                [(files[b.file].source, b.line, b.reason) for b in bad[:10]]))
        checks = [_primary_key_check(warehouse, name, table.primary_key,
                                     screened=partition is None)] if table.primary_key else []
        if value_accounts.check_spec(domain_key(name), table):
            checks.append(value_accounts.check_result(table, accounts))
        return dg.MaterializeResult(metadata=metadata, check_results=checks)

    return _domain


def _built_schema(warehouse: WarehouseResource, name: str, table: spec.DomainTable
                  ) -> dict[str, dg.TableSchema]:
    """The loaded table's columns as the warehouse has them, described as the spec says."""
    described = {c: m.description or f"{m.tag} from `{m.source or c}`"
                 for c, m in table.columns.items()}
    described |= {SOURCE_FILE: "the file the row came from", PARTITION: "the day it was loaded "
                  "for (dated couriers)"}
    return built_schema(warehouse, DOMAIN_SCHEMA, name, described)


def _unchanged(warehouse: WarehouseResource, name: str, table: spec.DomainTable,
               metadata: dict[str, Any]) -> dg.MaterializeResult:
    """A load that leaves the table as it was: its checks still answer."""
    checks = []
    if table.primary_key:
        checks.append(_primary_key_check(warehouse, name, table.primary_key)
                      if warehouse.has_table("domain", name) else dg.AssetCheckResult(
                          check_name="primary_key_unique", passed=True,
                          description="no table yet"))
    if value_accounts.check_spec(domain_key(name), table):
        checks.append(value_accounts.check_result(table, None))
    return dg.MaterializeResult(metadata={**metadata, "unchanged": True}, check_results=checks)


def _scratch_bad_rows(warehouse: WarehouseResource, table: spec.DomainTable,
                      fmt: StagedFormat, files: list[bad_rows.SourceFile],
                      partition: str | None) -> list[bad_rows.BadRow]:
    """The error path: read the files again in a scratch DuckDB, numbering the rows."""
    with duckdb.connect() as scratch:
        scratch.execute(f"SET memory_limit = '{warehouse.duckdb_memory_limit}'")
        semantic_tags.register(scratch)
        return _find_bad_rows(scratch, table, fmt, files, partition)


class _BadRowsFound(Exception):
    """A `bad_rows: fail` load met bad rows: roll back, then find where they are."""


class _InvalidValues(Exception):
    """A column with `on_invalid: fail` met values its tag cannot read: roll back, then say
    where they are."""

    def __init__(self, columns: list[str]):
        super().__init__(", ".join(columns))
        self.columns = columns


class _Shrunk(Exception):
    """The load would take the table down by more than `max_shrink`: roll back."""

    def __init__(self, previous: int, rows: int):
        super().__init__(f"{previous} -> {rows}")
        self.previous, self.rows = previous, rows


def _load(context: dg.AssetExecutionContext, warehouse: WarehouseResource, name: str,
          table: spec.DomainTable, fmt: StagedFormat, files: list[bad_rows.SourceFile],
          partition: str | None
          ) -> tuple[int, list[bad_rows.BadRow], dict[str, value_accounts.ColumnAccount]]:
    """Load the files in one transaction; returns the rows loaded, the bad rows left out and
    the account of every standardised column's values."""
    params = feed_params(files, fmt, partition)
    match = {"table_name": f"domain.{name}", "partition_key": partition}
    hidden = hidden_columns(table, files)
    measured = [c for c in table.columns if value_accounts.INVALID + c in hidden]
    rejecting = any(m.on_invalid == "reject" for m in table.columns.values())
    with warehouse.file_load("domain", name, partition) as load:
        load.progress = Progress(f"load domain.{name}", unit="rows")
        semantic_tags.register(load.reader)
        where, args = _partition_where(load, partition)
        previous = _previous_rows(load, where, args)
        if previous is not None and partition is not None:  # rows go into the existing table
            for column, kind in hidden.items():
                load.run(f"ALTER TABLE {load.target} ADD COLUMN IF NOT EXISTS "
                         f"{quote_ident(column)} {kind}")
        if table.bad_rows == "fail" and not rejecting:  # one pass straight into the table
            rows = load.replace(feed_select(table, fmt, files, partition is not None), params)
            if _parse_rejects(load.reader, fmt, files) or _violations(load, table, partition):
                raise _BadRowsFound
            bad: list[bad_rows.BadRow] = []
            accounts = value_accounts.count(load.run, load.target, table, measured, where, args)
        else:
            bad = _find_bad_rows(load.reader, table, fmt, files, partition)
            if table.bad_rows == "fail" and any(not b.columns for b in bad):
                raise _BadRowsFound
            accounts = value_accounts.count(
                lambda sql, a: load.reader.execute(sql, a).fetchall(), INCOMING, table,
                measured)
            refused = pa.table({"_file": pa.array([b.file for b in bad if b.ordinal], pa.int32()),
                                "_row": pa.array([b.ordinal for b in bad if b.ordinal],
                                                 pa.int64())})
            load.reader.register(BAD_KEYS, refused)
            good = (f"SELECT * EXCLUDE (_file, _row) FROM {INCOMING} ANTI JOIN {BAD_KEYS} "
                    "USING (_file, _row)")
            rows = load.replace(good, {})
        if table.bad_rows == "fail" and not rejecting:
            _judge_date_orders(load.run, load.target, table, files, hidden, where, args)
        else:
            _judge_date_orders(lambda sql, a: load.reader.execute(sql, a).fetchall(), INCOMING,
                               table, files, hidden, "", {})
        failing = [c for c in measured
                   if table.columns[c].on_invalid == "fail" and accounts[c].invalid]
        if failing:
            raise _InvalidValues(failing)
        if previous and _shrinks_too_much(table, files, previous, rows):
            raise _Shrunk(previous, rows)
        for column in hidden:
            load.run(f"ALTER TABLE {load.target} DROP COLUMN {quote_ident(column)}")
        kept = bad if table.bad_rows == "reject" else [b for b in bad if b.columns]
        # No rejects (the usual load): no Arrow table, whose first one imports pandas (~1 s).
        load.replace_rows(bad_rows.REJECTS_SCHEMA, bad_rows.REJECTS_TABLE,
                          bad_rows.rejects_table(kept, files, f"domain.{name}", partition,
                                                 context.run_id) if kept else None, match)
    return rows, bad, accounts


def _load_rows(context: dg.AssetExecutionContext, warehouse: WarehouseResource, name: str,
               table: spec.DomainTable, fmt: StagedFormat, files: list[bad_rows.SourceFile],
               partition: str | None
               ) -> tuple[int, list[bad_rows.BadRow], dict[str, value_accounts.ColumnAccount]]:
    """`_load`; PostgreSQL refusing a NUL byte in a strict load is a bad row like on DuckDB
    (where the `NUL` flag finds it), so the rows are named by file and line."""
    try:
        return _load(context, warehouse, name, table, fmt, files, partition)
    except WarehouseError as failed:
        if "0x00" in str(failed):
            raise _BadRowsFound from failed
        raise


def _partition_where(load: FileLoad, partition: str | None) -> tuple[str, dict[str, Any]]:
    if partition is None:
        return "", {}
    return (f" WHERE {PARTITION_COLUMN} = {load.placeholder.format('partition')}",
            {"partition": partition})


def _previous_rows(load: FileLoad, where: str, args: dict[str, Any]) -> int | None:
    """The rows the table (or partition) holds before this load; None when there is no table."""
    p = load.placeholder.format
    if not load.run(f"SELECT count(*) FROM information_schema.tables WHERE table_schema = "
                    f"{p('s')} AND table_name = {p('t')}",
                    {"s": load.schema, "t": load.table})[0][0]:
        return None
    return int(load.run(f"SELECT count(*) FROM {load.target}{where}", args)[0][0])


def _shrinks_too_much(table: spec.DomainTable, files: list[bad_rows.SourceFile],
                      previous: int, rows: int) -> bool:
    """More than `max_shrink` of the rows would go, and no `empty_file: zero_rows` asked for
    exactly that (every file empty)."""
    if table.empty_file == "zero_rows" and not any(f.columns for f in files):
        return False
    return (previous - rows) / previous > spec.percent(table.max_shrink)


def _parse_rejects(con: duckdb.DuckDBPyConnection, fmt: StagedFormat,
                   files: list[bad_rows.SourceFile]) -> int:
    """How many rows DuckDB's CSV reader could not read in this connection."""
    if fmt.type not in bad_rows.DELIMITED or not any(f.columns for f in files):
        return 0  # nothing was read: asking would abort the warehouse's transaction
    try:
        row = con.execute(f"SELECT count(*) FROM {READER_REJECTS}").fetchall()[0]
        return row[0] if row else 0
    except duckdb.CatalogException:  # no delimited file was read (all empty)
        return 0


def _violations(load: FileLoad, table: spec.DomainTable, partition: str | None) -> bool:
    """Nulls in not-null columns, or a key repeated among the rows just loaded."""
    where = (f" WHERE {PARTITION_COLUMN} = {load.placeholder.format('partition')}"
             if partition is not None else "")
    args = {"partition": partition} if partition is not None else {}
    joined = f"{where} AND {NUL}" if where else f" WHERE {NUL}"
    if load.run(f"SELECT count(*) FROM {load.target}{joined}", args)[0][0]:
        return True
    not_null = [quote_ident(c) for c, m in table.columns.items() if m.not_null]
    if not_null:
        nulls = " OR ".join(f"{c} IS NULL" for c in not_null)
        joined = f"{where} AND ({nulls})" if where else f" WHERE {nulls}"
        if load.run(f"SELECT count(*) FROM {load.target}{joined}", args)[0][0]:
            return True
    if table.primary_key:
        key = ", ".join(quote_ident(c) for c in table.primary_key)
        repeated = load.run(f"SELECT count(*) FROM (SELECT 1 AS one FROM {load.target}{where} "
                            f"GROUP BY {key} HAVING count(*) > 1) AS repeated", args)[0][0]
        if repeated:
            return True
    return False


def _find_bad_rows(con: duckdb.DuckDBPyConnection, table: spec.DomainTable,
                   fmt: StagedFormat, files: list[bad_rows.SourceFile],
                   partition: str | None) -> list[bad_rows.BadRow]:
    """Stage the rows (numbered) in `con` and list every bad one with its file and line."""
    params = feed_params(files, fmt, partition)
    con.execute(f"CREATE OR REPLACE TEMP TABLE {INCOMING} AS "
                f"{feed_select(table, fmt, files, partition is not None, numbered=True)}",
                params)
    found: list[bad_rows.BadRow] = []
    if fmt.type in bad_rows.DELIMITED and _parse_rejects(con, fmt, files):
        index = {f.path: f.index for f in files}
        by_row: dict[tuple[int, int], bad_rows.BadRow] = {}
        for path, offset, kind, raw, message in con.execute(
                f"SELECT s.file_path, e.line_byte_position, CAST(e.error_type AS VARCHAR), "
                f"left(e.csv_line, {bad_rows.RAW_LIMIT}), e.error_message "
                f"FROM {READER_REJECTS} e JOIN {READER_SCANS} s USING (scan_id, file_id) "
                f"ORDER BY 1, 2").fetchall():
            row = bad_rows.BadRow(index[path], bad_rows.parse_reason(kind, message, fmt),
                                  offset=offset, raw=raw)
            # DuckDB reports a row with too many fields once per extra field: keep the last
            by_row[(row.file, offset)] = row
        found += by_row.values()
    for file, row in con.execute(f"SELECT _file, _row FROM {INCOMING} WHERE {NUL}").fetchall():
        found.append(bad_rows.BadRow(file, "a NUL byte (\\0) in a value: no warehouse can "
                                     "store it as text; remove it from the file", ordinal=row))
    not_null = [c for c, m in table.columns.items() if m.not_null]
    missing_any = " OR ".join(f"{quote_ident(c)} IS NULL" for c in not_null) or "false"
    if not_null:
        missing = ", ".join(f"CASE WHEN {quote_ident(c)} IS NULL THEN {literal(c)} END"
                            for c in not_null)
        for file, row, columns in con.execute(
                f"SELECT _file, _row, concat_ws(', ', {missing}) FROM {INCOMING} "
                f"WHERE {missing_any}").fetchall():
            found.append(bad_rows.BadRow(file, f"no value in not-null column(s) {columns}",
                                         ordinal=row))
    found += _invalid_rows(con, table, files, {(b.file, b.ordinal): b for b in found
                                               if b.ordinal})
    repeats: list[tuple[bad_rows.BadRow, str]] = []
    if table.primary_key:
        key = [quote_ident(c) for c in table.primary_key]
        same = " AND ".join(f"ok.{c} IS NOT DISTINCT FROM r.{c}" for c in key)
        text = " || ', ' || ".join(f"{literal(c + '=')} || coalesce(CAST(ok.{q} AS VARCHAR), "
                                   f"'NULL')" for c, q in zip(table.primary_key, key,
                                                              strict=True))
        window = f"PARTITION BY {', '.join(f'ok.{c}' for c in key)} ORDER BY ok._file, ok._row"
        for file, row, key_text, first_file, first_row in con.execute(
                f"WITH ok AS (SELECT * FROM {INCOMING} WHERE NOT ({missing_any} OR {NUL})), "
                f"repeated AS (SELECT {', '.join(key)} FROM ok GROUP BY ALL "
                f"HAVING count(*) > 1), "
                f"ranked AS (SELECT ok._file, ok._row, {text} AS key_text, "
                f"row_number() OVER ({window}) AS n, first_value(ok._file) OVER ({window}) "
                f"AS first_file, first_value(ok._row) OVER ({window}) AS first_row "
                f"FROM ok JOIN repeated r ON {same}) "
                f"SELECT _file, _row, key_text, first_file, first_row FROM ranked "
                f"WHERE n > 1").fetchall():
            first = bad_rows.BadRow(first_file, "", ordinal=first_row)
            repeats.append((bad_rows.BadRow(file, "", ordinal=row, first=first), key_text))
    for row, _ in repeats:
        found.append(row)
    for f in files:
        mine = [b for b in found if b.file == f.index]
        mine += [b.first for b, _ in repeats if b.first is not None and b.first.file == f.index]
        if mine:
            bad_rows.locate(f, fmt, mine)
    for row, key_text in repeats:
        first = row.first
        assert first is not None  # every repeat names the row it repeats
        elsewhere = "" if first.file == row.file else f" of {files[first.file].source}"
        at = f"line {first.line}" if first.line else "an earlier row"
        row.reason = f"primary key ({key_text}) repeats {at}{elsewhere}"
    return sorted(found, key=bad_rows.sort_key)


def _invalid_rows(con: duckdb.DuckDBPyConnection, table: spec.DomainTable,
                  files: list[bad_rows.SourceFile],
                  seen: dict[tuple[int, int], bad_rows.BadRow]) -> list[bad_rows.BadRow]:
    """Rows holding a value that a column with `on_invalid: reject` or `fail` cannot read; a
    row already bad for another reason gets the column added to its reason."""
    available = {c for f in files for c in f.columns}
    strict = [c for c, m in table.columns.items() if m.on_invalid in ("reject", "fail")
              and value_accounts.measured(m) and (m.source or c) in available]
    if not strict:
        return []
    hidden = [quote_ident(value_accounts.INVALID + c) for c in strict]
    new: list[bad_rows.BadRow] = []
    for file, row, *values in con.execute(
            f"SELECT _file, _row, {', '.join(hidden)} FROM {INCOMING} "
            f"WHERE {' OR '.join(f'{h} IS NOT NULL' for h in hidden)}").fetchall():
        columns = tuple(c for c, v in zip(strict, values, strict=True) if v is not None)
        reason = "; ".join(f"`{c}`: {v!r} is not a valid "
                           f"{table.columns[c].tag}"
                           for c, v in zip(strict, values, strict=True) if v is not None)
        if (file, row) in seen:
            seen[(file, row)].reason += f"; {reason}"
        else:
            new.append(bad_rows.BadRow(file, reason, ordinal=row, columns=columns))
    return new


def _load_problem(failed: Exception, files: list[bad_rows.SourceFile],
                  fmt: StagedFormat) -> str:
    """A whole-file fault met while loading, naming the file, or the warehouse's message."""
    detail = str(failed.__cause__ or failed)
    for f in files:
        if f.path in detail or Path(f.path).name in detail:
            if "gzip" in detail.lower():
                return bad_rows.gzip_problem(f.source, f.path, fmt)
            return bad_rows.file_error(f, detail, fmt)
    return str(failed)


def _check_columns(name: str, table: spec.DomainTable, files: list[bad_rows.SourceFile],
                   fmt: StagedFormat, unchanged: str) -> str:
    """Every source column must be in every file unless the column is `optional`: a misspelt
    `source:` would otherwise load a column of NULLs. Returns the absent optional columns."""
    problems, absent = [], []
    for f in files:
        if f.columns:
            missing = [_named(c, m) for c, m in table.columns.items()
                       if not m.optional and (m.source or c) not in f.columns]
        else:  # an empty file that may be empty: only `required` columns must be there
            missing = [_named(c, m) for c, m in table.columns.items() if m.required
                       and fmt.type in bad_rows.DELIMITED and table.empty_file != "zero_rows"]
        if missing:
            problems.append(bad_rows.header_problem(f, missing, fmt))
        absent += [f"- `{c}` (source `{m.source or c}`) is not in `{f.source}`"
                   for c, m in table.columns.items()
                   if m.optional and f.columns and (m.source or c) not in f.columns]
    if problems:
        raise dg.Failure(f"domain table `{name}`: " + "; ".join(problems) + ". Fix the file "
                         f"or the feed's `source:` names (or set `optional: true` on a column "
                         f"a file may lack); {unchanged}.", allow_retries=False)
    return "\n".join(absent)


def _named(column: str, mapping: spec.ColumnMapping) -> str:
    source = mapping.source or column
    return source if source == column else f"{source} (column `{column}`)"


def _primary_key_check(warehouse: WarehouseResource, name: str, key: list[str],
                       screened: bool = False) -> dg.AssetCheckResult:
    """No key twice in the whole table. `screened`: the load just replaced the whole table
    with rows it had checked for repeated keys itself, so the answer is known."""
    if screened:
        return dg.AssetCheckResult(
            check_name="primary_key_unique", passed=True,
            metadata={"duplicate_keys": 0, "rows_with_duplicate_keys": 0},
            description="checked by the load: a repeated key is a bad row")
    columns = ", ".join(quote_ident(c) for c in key)
    duplicates = warehouse.fetch(
        f"SELECT count(*), coalesce(sum(n), 0) FROM (SELECT count(*) AS n FROM "
        f'"domain".{quote_ident(name)} GROUP BY {columns} HAVING count(*) > 1) AS d')[0]
    keys, rows = int(duplicates[0]), int(duplicates[1])
    return dg.AssetCheckResult(
        check_name="primary_key_unique", passed=keys == 0,
        metadata={"duplicate_keys": keys, "rows_with_duplicate_keys": rows},
        description=None if keys == 0 else f"{keys} key(s) appear more than once ({rows} rows)")
