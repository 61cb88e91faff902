"""Feeds: a courier's rows mapped to domain columns, standardised by semantic tag, loaded.

Standardisation compiles to DuckDB SQL over DuckDB's own file readers, so a 2 GB file streams
through one engine at its native speed; values that cannot be standardised become NULL.
"""


import re
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pyarrow as pa

from assets import bad_rows, spec
from assets.common import (
    STAGING_KEY,
    WAREHOUSE_KEY,
    asset_partition,
    markdown_table,
    owners_of,
    partitions_for,
)
from assets.couriers import courier_key, manifest_path
from resources.staging import StagingResource
from resources.warehouse import (
    PARTITION_COLUMN,
    FileLoad,
    WarehouseError,
    WarehouseResource,
    quote_ident,
)

DEFAULT_DATE_FORMATS = ["%Y-%m-%d", "%m/%d/%Y", "%d.%m.%Y", "%Y/%m/%d", "%Y%m%d", "%d-%b-%Y"]
DEFAULT_DATETIME_FORMATS = ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%m/%d/%Y %H:%M",
                            "%Y-%m-%dT%H:%M:%S%z"]
TAG_TYPES = {"date": "DATE", "datetime": "TIMESTAMP", "integer": "BIGINT",
             "decimal": "DECIMAL(18,4)", "boolean": "BOOLEAN"}


def domain_key(name: str) -> dg.AssetKey:
    return dg.AssetKey(["domain", name])


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def quote_source(column: str) -> str:
    """Quote a source column as the file names it (any text, quotes doubled)."""
    return '"' + column.replace('"', '""') + '"'


def clean(column: str) -> str:
    """A source value as trimmed text, empty → NULL: the input of every semantic tag."""
    return f"nullif(trim(CAST({quote_source(column)} AS VARCHAR)), '')"


def _bind(value: str, name: str, body: str) -> str:
    """Evaluate `value` once and use it as `name` in `body` (DuckDB has no LET)."""
    return f"list_transform([{value}], lambda {name}: {body})[1]"


def standardise(column: str, mapping: spec.ColumnMapping) -> str:
    """The DuckDB expression that turns a raw source column into its standard form."""
    return standardise_value(clean(column), mapping)


def standardise_value(v: str, mapping: spec.ColumnMapping) -> str:
    """The standard form of a cleaned value `v` (a column reference, evaluated once)."""
    tag = mapping.tag
    if tag in ("text", "id"):
        return v
    if tag in ("upper", "country"):
        return f"upper({v})"
    if tag == "lower":
        return f"lower({v})"
    if tag == "email":  # LIKE and contains are far cheaper than a regular expression
        return _bind(f"lower({v})", "e", "CASE WHEN e LIKE '%_@_%._%' AND NOT contains(e, ' ') "
                     "AND length(e) - length(replace(e, '@', '')) = 1 THEN e END")
    if tag == "name":
        words = f"string_split(lower(regexp_replace({v}, '\\s+', ' ', 'g')), ' ')"
        several = (f"list_aggr(list_transform({words}, lambda w: upper(w[1]) || w[2:]), "
                   "'string_agg', ' ')")
        return (f"CASE WHEN contains({v}, ' ') OR contains({v}, chr(9)) THEN {several} "
                f"ELSE upper({v}[1]) || lower({v}[2:]) END")  # one word: the usual case
    if tag == "phone":
        return _phone(v, mapping.default_country_code)
    if tag == "postal_code":
        body = ("CASE WHEN length(z) < 5 AND regexp_full_match(z, '\\d+') THEN lpad(z, 5, '0') "
                "WHEN length(z) = 9 AND regexp_full_match(z, '\\d+') THEN z[1:5] || '-' || z[6:] "
                "ELSE z END")
        compact = (f"upper(CASE WHEN contains({v}, ' ') THEN regexp_replace({v}, '\\s+', ' ', "
                   f"'g') ELSE {v} END)")
        return _bind(compact, "z", body)
    if tag in ("date", "datetime"):
        formats = mapping.formats or (DEFAULT_DATE_FORMATS if tag == "date"
                                      else DEFAULT_DATETIME_FORMATS)
        tries = [_try_format(v, f) for f in formats]
        if not mapping.formats:  # ISO first, by DuckDB's own fast cast
            tries.insert(0, f"TRY_CAST({v} AS {TAG_TYPES[tag]})")
        return f"CAST(coalesce({', '.join(tries)}) AS {TAG_TYPES[tag]})"
    if tag == "integer":
        return f"TRY_CAST(replace({v}, ',', '') AS BIGINT)"
    if tag == "decimal":
        return (f"coalesce(TRY_CAST({v} AS DECIMAL(18,4)), TRY_CAST(regexp_replace({v}, "
                "'[^0-9.eE+-]', '', 'g') AS DECIMAL(18,4)))")
    if tag == "boolean":
        return (f"CASE WHEN lower({v}) IN ('true','t','yes','y','1') THEN TRUE "
                f"WHEN lower({v}) IN ('false','f','no','n','0') THEN FALSE END")
    raise ValueError(f"unknown semantic tag {tag!r}")


def _try_format(v: str, fmt: str) -> str:
    """Parse with one format, trying only values that hold the format's separators."""
    separators = sorted(set(re.sub(r"%.", "", fmt)))
    parse = f"try_strptime({v}, {_literal(fmt)})"
    if not separators:
        return parse
    holds = " AND ".join(f"contains({v}, {_literal(c)})" for c in separators)
    return f"CASE WHEN {holds} THEN {parse} END"


def _phone(v: str, country_code: str | None) -> str:
    """E.164: keep international numbers, prefix national ones with the calling code."""
    national = "NULL"
    if country_code == "1":
        national = ("CASE WHEN length(d) = 10 THEN '1' || d "
                    "WHEN length(d) = 11 AND d[1] = '1' THEN d END")
    elif country_code:
        national = f"'{country_code}' || regexp_replace(d, '^0', '')"
    digits = (f"CASE WHEN starts_with({v}, '+') THEN d WHEN starts_with(d, '00') THEN d[3:] "
              f"ELSE {national} END")
    valid = "CASE WHEN length(e) BETWEEN 8 AND 15 AND e[1] <> '0' THEN '+' || e END"
    return _bind(f"regexp_replace({v}, '[^0-9]', '', 'g')", "d", _bind(digits, "e", valid))


READER_REJECTS, READER_SCANS = "stagecoach_reject_errors", "stagecoach_reject_scans"
INCOMING, BAD_KEYS = "stagecoach_incoming", "stagecoach_bad_keys"


def reader_sql(fmt: dict[str, Any], index: int) -> str:
    """DuckDB's own reader for file `index` of a load, bound as `$file_<index>`.

    Delimited files are read with the columns their header names (`$columns_<index>`), so
    DuckDB never guesses the dialect from a sample that a bad row can spoil, and every row it
    cannot read becomes a reject with its byte offset instead of failing the whole read.
    """
    kind, file = fmt["type"], f"$file_{index}"
    if kind == "parquet":
        return f"read_parquet({file})"
    if kind == "jsonl":
        return f"read_json({file}, format = 'newline_delimited')"
    quote = fmt.get("quote") or ""
    options = ["auto_detect = false", f"columns = $columns_{index}",
               f"delim = {_literal(spec.delimiter_for(kind, fmt.get('delimiter')))}",
               f"header = {str(fmt.get('header', True)).lower()}",
               f"quote = {_literal(quote)}", f"escape = {_literal(fmt.get('escape') or quote)}",
               f"skip = {int(fmt.get('skip_rows') or 0)}", "strict_mode = true",
               f"max_line_size = {int(fmt.get('max_line_bytes') or 2_000_000)}",
               "store_rejects = true", f"rejects_table = '{READER_REJECTS}'",
               f"rejects_scan = '{READER_SCANS}'"]
    if fmt.get("compression") in ("gzip", "none"):
        options.append(f"compression = {_literal(fmt['compression'])}")
    return f"read_csv({file}, {', '.join(options)})"


def feed_params(files: list[bad_rows.SourceFile], fmt: dict[str, Any],
                partition: str | None) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for f in files:
        params[f"source_{f.index}"] = f.source
        if f.columns:
            params[f"file_{f.index}"] = f.path
            if fmt["type"] in bad_rows.DELIMITED:
                params[f"columns_{f.index}"] = dict.fromkeys(f.columns, "VARCHAR")
    if partition is not None:
        params["partition"] = partition
    return params


def feed_select(table: spec.DomainTable, fmt: dict[str, Any], files: list[bad_rows.SourceFile],
                partitioned: bool, numbered: bool = False) -> str:
    """SELECT standardised domain columns from the files; absent optional columns are NULL.

    Each file is read on its own (`_source_file` is a bound constant); `numbered` adds the
    file's index (`_file`) and the row's position among the rows read from it (`_row`), which
    is how a bad row is traced back to its line.
    """
    available = {c for f in files for c in f.columns}
    branches = []
    for f in files:
        cleaned = []
        for name, mapping in table.columns.items():
            source = mapping.source or name
            if source in available:  # clean each source value once, then standardise it
                value = clean(source) if source in f.columns else "CAST(NULL AS VARCHAR)"
                cleaned.append(f"{value} AS {quote_ident(name)}")
        cleaned += [f"CAST($source_{f.index} AS VARCHAR) AS _source_file", f"{f.index} AS _file"]
        if not f.columns:  # an empty file that may be empty: no rows, same columns
            cleaned = [c if c.endswith(("_source_file", "_file")) else
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
    projections = []
    for name, mapping in table.columns.items():
        if (mapping.source or name) in available:
            expr = standardise_value(quote_ident(name), mapping)
        else:
            expr = f"CAST(NULL AS {TAG_TYPES.get(mapping.tag, 'VARCHAR')})"
        projections.append(f"{expr} AS {quote_ident(name)}")
    projections.append("_source_file")
    if partitioned:
        projections.append(f"CAST($partition AS VARCHAR) AS {PARTITION_COLUMN}")
    if numbered:
        projections += ["_file", "_row"]
    return f"SELECT {', '.join(projections)} FROM ({' UNION ALL '.join(branches)}) AS source"


def build_domain_asset(workflow: spec.Workflow, name: str, table: spec.DomainTable,
                       warehouse_kind: str = "duckdb") -> dg.AssetsDefinition:
    wf = workflow.workflow.name
    courier = workflow.couriers[table.from_]
    partitions = partitions_for(workflow) if courier.dated else None
    tags = ", ".join(f"`{c}` ({m.tag})" for c, m in table.columns.items())
    schema = dg.TableSchema(columns=[
        dg.TableColumn(c, TAG_TYPES.get(m.tag, "VARCHAR").lower(),
                       description=m.description or f"{m.tag} from `{m.source or c}`",
                       constraints=dg.TableColumnConstraints(nullable=not m.not_null))
        for c, m in table.columns.items()])

    check_specs = [dg.AssetCheckSpec(
        "primary_key_unique", asset=domain_key(name), blocking=True,
        description=f"No two rows share ({', '.join(table.primary_key)}).",
    )] if table.primary_key else []

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
    def _domain(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        warehouse: WarehouseResource = getattr(context.resources, WAREHOUSE_KEY)
        staging: StagingResource = getattr(context.resources, STAGING_KEY)
        partition = asset_partition(context)
        manifest_file = manifest_path(staging, wf, table.from_, partition)
        if not manifest_file.exists():
            raise dg.Failure(f"courier `{table.from_}` has not run for "
                             f"{partition or 'this table'}; materialize it first")
        manifest = staging.read_json(manifest_file)
        if not manifest["files"]:  # an optional courier found nothing: keep what the table holds
            context.log.warning(f"courier `{table.from_}` brought no file: `domain.{name}` "
                                f"is left as it was")
            exists = warehouse.has_table("domain", name)
            return dg.MaterializeResult(
                metadata={"files": 0, "unchanged": True},
                check_results=[_primary_key_check(warehouse, name, table.primary_key)
                               if exists else dg.AssetCheckResult(
                                   check_name="primary_key_unique", passed=True,
                                   description="no table yet")] if table.primary_key else [])
        fmt = manifest["format"]
        unchanged = f"nothing was loaded; domain.{name} is unchanged"
        try:
            files = [bad_rows.inspect(i, entry, fmt) for i, entry in enumerate(manifest["files"])]
        except bad_rows.BadFile as bad:
            raise dg.Failure(f"domain table `{name}`: {bad}. {unchanged.capitalize()}.",
                             allow_retries=False) from bad
        _check_required(name, table, files, fmt, unchanged)
        for f in files:
            if not f.columns:
                context.log.warning(f"{f.source} is empty: it adds no rows")
        warehouse.ensure_table(bad_rows.REJECTS_SCHEMA, bad_rows.REJECTS_TABLE,
                               bad_rows.REJECTS_COLUMNS)
        try:
            rows, bad = _load(context, warehouse, name, table, fmt, files, partition)
        except _BadRowsFound:
            with duckdb.connect() as scratch:  # the error path: read again, number the rows
                scratch.execute(f"SET memory_limit = '{warehouse.duckdb_memory_limit}'")
                bad = _find_bad_rows(scratch, table, fmt, files, partition)
            raise dg.Failure(
                f"domain table `{name}`: {len(bad):,} bad row{'s' if len(bad) != 1 else ''}, "
                f"{unchanged}: {bad_rows.describe(bad, files)}. Fix the file, or set "
                f"`bad_rows: reject` (load the other rows, keep these in "
                f"{bad_rows.REJECTS_SCHEMA}.{bad_rows.REJECTS_TABLE}) or `bad_rows: skip` on "
                f"domain_tables.{name}", allow_retries=False) from None
        except (WarehouseError, duckdb.Error) as failed:
            raise dg.Failure(f"domain table `{name}`: {_load_problem(failed, files, fmt)}. "
                             f"{unchanged.capitalize()}.", allow_retries=False) from failed
        if bad:
            verb = "rejected to stagecoach.rejects" if table.bad_rows == "reject" else "skipped"
            context.log.warning(f"domain table `{name}`: {len(bad):,} bad row"
                                f"{'s' if len(bad) != 1 else ''} {verb}: "
                                f"{bad_rows.describe(bad, files)}")
        empty = [f.source for f in files if f.columns and rows == 0]
        if empty:
            context.log.warning(f"domain table `{name}`: no rows in {', '.join(empty)}")
        metadata: dict[str, Any] = {
            "dagster/row_count": rows,
            "rows_loaded": rows,
            "rows_rejected": len(bad) if table.bad_rows == "reject" else 0,
            "rows_skipped": len(bad) if table.bad_rows == "skip" else 0,
            "bad_rows": table.bad_rows,
            "files": len(files),
            "source_files": dg.MetadataValue.md("\n".join(f"- `{f.source}`" for f in files)),
            "warehouse": warehouse.safe_url,
        }
        if bad:
            metadata["bad_row_sample"] = dg.MetadataValue.md(markdown_table(
                ["file", "line", "reason"],
                [(files[b.file].source, b.line, b.reason) for b in bad[:10]]))
        return dg.MaterializeResult(metadata=metadata, check_results=[
            _primary_key_check(warehouse, name, table.primary_key, screened=partition is None)]
            if table.primary_key else [])

    return _domain


class _BadRowsFound(Exception):
    """A `bad_rows: fail` load met bad rows: roll back, then find where they are."""


def _load(context: dg.AssetExecutionContext, warehouse: WarehouseResource, name: str,
          table: spec.DomainTable, fmt: dict[str, Any], files: list[bad_rows.SourceFile],
          partition: str | None) -> tuple[int, list[bad_rows.BadRow]]:
    """Load the files in one transaction; returns the rows loaded and the bad rows left out."""
    params = feed_params(files, fmt, partition)
    match = {"table_name": f"domain.{name}", "partition_key": partition}
    with warehouse.file_load("domain", name, partition) as load:
        if table.bad_rows == "fail":  # one pass straight into the table; checks after
            rows = load.replace(feed_select(table, fmt, files, partition is not None), params)
            if _parse_rejects(load.reader, fmt) or _violations(load, table, partition):
                raise _BadRowsFound
            bad: list[bad_rows.BadRow] = []
        else:
            bad = _find_bad_rows(load.reader, table, fmt, files, partition)
            refused = pa.table({"_file": pa.array([b.file for b in bad if b.ordinal], pa.int32()),
                                "_row": pa.array([b.ordinal for b in bad if b.ordinal],
                                                 pa.int64())})
            load.reader.register(BAD_KEYS, refused)
            good = (f"SELECT * EXCLUDE (_file, _row) FROM {INCOMING} ANTI JOIN {BAD_KEYS} "
                    "USING (_file, _row)")
            rows = load.replace(good, {})
        kept = bad if table.bad_rows == "reject" else []
        load.replace_rows(bad_rows.REJECTS_SCHEMA, bad_rows.REJECTS_TABLE,
                          bad_rows.rejects_table(kept, files, f"domain.{name}", partition,
                                                 context.run_id), match)
    return rows, bad


def _parse_rejects(con: duckdb.DuckDBPyConnection, fmt: dict[str, Any]) -> int:
    """How many rows DuckDB's CSV reader could not read in this connection."""
    if fmt["type"] not in bad_rows.DELIMITED:
        return 0
    try:
        return con.execute(f"SELECT count(*) FROM {READER_REJECTS}").fetchone()[0]
    except duckdb.CatalogException:  # no delimited file was read (all empty)
        return 0


def _violations(load: FileLoad, table: spec.DomainTable, partition: str | None) -> bool:
    """Nulls in not-null columns, or a key repeated among the rows just loaded."""
    where = (f" WHERE {PARTITION_COLUMN} = {load.placeholder.format('partition')}"
             if partition is not None else "")
    args = {"partition": partition} if partition is not None else {}
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
                   fmt: dict[str, Any], files: list[bad_rows.SourceFile],
                   partition: str | None) -> list[bad_rows.BadRow]:
    """Stage the rows (numbered) in `con` and list every bad one with its file and line."""
    params = feed_params(files, fmt, partition)
    con.execute(f"CREATE OR REPLACE TEMP TABLE {INCOMING} AS "
                f"{feed_select(table, fmt, files, partition is not None, numbered=True)}",
                params)
    found: list[bad_rows.BadRow] = []
    if fmt["type"] in bad_rows.DELIMITED and _parse_rejects(con, fmt):
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
    not_null = [c for c, m in table.columns.items() if m.not_null]
    missing_any = " OR ".join(f"{quote_ident(c)} IS NULL" for c in not_null) or "false"
    if not_null:
        missing = ", ".join(f"CASE WHEN {quote_ident(c)} IS NULL THEN {_literal(c)} END"
                            for c in not_null)
        for file, row, columns in con.execute(
                f"SELECT _file, _row, concat_ws(', ', {missing}) FROM {INCOMING} "
                f"WHERE {missing_any}").fetchall():
            found.append(bad_rows.BadRow(file, f"no value in not-null column(s) {columns}",
                                         ordinal=row))
    repeats: list[tuple[bad_rows.BadRow, str]] = []
    if table.primary_key:
        key = [quote_ident(c) for c in table.primary_key]
        same = " AND ".join(f"ok.{c} IS NOT DISTINCT FROM r.{c}" for c in key)
        text = " || ', ' || ".join(f"{_literal(c + '=')} || coalesce(CAST(ok.{q} AS VARCHAR), "
                                   f"'NULL')" for c, q in zip(table.primary_key, key,
                                                              strict=True))
        window = f"PARTITION BY {', '.join(f'ok.{c}' for c in key)} ORDER BY ok._file, ok._row"
        for file, row, key_text, first_file, first_row in con.execute(
                f"WITH ok AS (SELECT * FROM {INCOMING} WHERE NOT ({missing_any})), "
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
        mine += [b.first for b, _ in repeats if b.first.file == f.index]
        if mine:
            bad_rows.locate(f, fmt, mine)
    for row, key_text in repeats:
        first = row.first
        elsewhere = "" if first.file == row.file else f" of {files[first.file].source}"
        at = f"line {first.line}" if first.line else "an earlier row"
        row.reason = f"primary key ({key_text}) repeats {at}{elsewhere}"
    return sorted(found, key=bad_rows.sort_key)


def _load_problem(failed: Exception, files: list[bad_rows.SourceFile],
                  fmt: dict[str, Any]) -> str:
    """A whole-file fault met while loading, naming the file, or the warehouse's message."""
    detail = str(failed.__cause__ or failed)
    for f in files:
        if f.path in detail or Path(f.path).name in detail:
            if "gzip" in detail.lower():
                return bad_rows.gzip_problem(f.source, f.path, fmt)
            return bad_rows.file_error(f, detail, fmt)
    return str(failed)


def _check_required(name: str, table: spec.DomainTable, files: list[bad_rows.SourceFile],
                    fmt: dict[str, Any], unchanged: str) -> None:
    """Every required source column must be in every file; name the file and the column."""
    problems = []
    for f in files:
        missing = [m.source or c for c, m in table.columns.items()
                   if m.required and (m.source or c) not in f.columns]
        if missing and (f.columns or fmt["type"] in bad_rows.DELIMITED):
            problems.append(bad_rows.header_problem(f, missing, fmt))
    if problems:
        raise dg.Failure(f"domain table `{name}`: " + "; ".join(problems) + ". Fix the file "
                         f"or the feed's `source:` names; {unchanged}.", allow_retries=False)


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
