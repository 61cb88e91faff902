"""Feeds: a courier's rows mapped to domain columns, standardised by semantic tag, loaded.

Standardisation compiles to DuckDB SQL over DuckDB's own file readers, so a 2 GB file streams
through one engine at its native speed; values that cannot be standardised become NULL.
"""


import re
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb

from assets import spec
from assets.common import (
    STAGING_KEY,
    WAREHOUSE_KEY,
    asset_partition,
    owners_of,
    partitions_for,
)
from assets.couriers import courier_key, manifest_path
from resources.staging import StagingResource
from resources.warehouse import PARTITION_COLUMN, WarehouseError, WarehouseResource, quote_ident

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


def reader_sql(fmt: dict[str, Any], filename: bool = True) -> str:
    """DuckDB's own reader for the manifest's files (bound as `$files`)."""
    kind = fmt["type"]
    names = f"filename = {str(filename).lower()}, union_by_name = true"
    if kind == "parquet":
        return f"read_parquet($files, {names})"
    if kind == "jsonl":
        return f"read_json($files, format = 'newline_delimited', {names})"
    options = [f"delim = {_literal(spec.delimiter_for(kind, fmt.get('delimiter')))}",
               f"header = {str(fmt.get('header', True)).lower()}",
               f"quote = {_literal(fmt.get('quote') or '')}",
               "all_varchar = true", names,
               f"skip = {int(fmt.get('skip_rows') or 0)}", "strict_mode = true"]
    if fmt.get("escape"):
        options.append(f"escape = {_literal(fmt['escape'])}")
    if fmt.get("compression") in ("gzip", "none"):
        options.append(f"compression = {_literal(fmt['compression'])}")
    return f"read_csv($files, {', '.join(options)})"


def file_columns(path: str, fmt: dict[str, Any]) -> list[str]:
    """The columns one file offers (reads its header or schema only)."""
    with duckdb.connect() as con:
        rows = con.execute(f"DESCRIBE SELECT * FROM {reader_sql(fmt)}", {"files": [path]}
                           ).fetchall()
    return [r[0] for r in rows if r[0] != "filename"]


def feed_select(table: spec.DomainTable, fmt: dict[str, Any], available: set[str],
                partitioned: bool, single_file: bool = False) -> str:
    """SELECT standardised domain columns from the files; absent optional columns are NULL.

    One file's name is a bound constant (`$source_file`), not a string per row.
    """
    cleaned = ["$source_file AS _source_file" if single_file else "filename AS _source_file"]
    projections = []
    for name, mapping in table.columns.items():
        source = mapping.source or name
        if source in available:  # clean each source value once, then standardise it
            cleaned.append(f"{clean(source)} AS {quote_ident(name)}")
            expr = standardise_value(quote_ident(name), mapping)
        else:
            expr = f"CAST(NULL AS {TAG_TYPES.get(mapping.tag, 'VARCHAR')})"
        projections.append(f"{expr} AS {quote_ident(name)}")
    projections.append("_source_file")
    if partitioned:
        projections.append(f"CAST($partition AS VARCHAR) AS {PARTITION_COLUMN}")
    return (f"SELECT {', '.join(projections)} FROM (SELECT {', '.join(cleaned)} "
            f"FROM {reader_sql(fmt, filename=not single_file)}) AS source")


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
        metadata={"dagster/column_schema": schema, "dagster/table_name": f"domain.{name}"},
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
        files = [f["path"] for f in manifest["files"]]
        if not files:  # an optional courier found nothing: keep what the table holds
            context.log.warning(f"courier `{table.from_}` brought no file: `domain.{name}` "
                                f"is left as it was")
            exists = warehouse.has_table("domain", name)
            return dg.MaterializeResult(
                metadata={"files": 0, "unchanged": True},
                check_results=[_primary_key_check(warehouse, name, table.primary_key)
                               if exists else dg.AssetCheckResult(
                                   check_name="primary_key_unique", passed=True,
                                   description="no table yet")] if table.primary_key else [])
        available = _check_required(table, files, manifest["format"])
        single = len(files) == 1
        select = feed_select(table, manifest["format"], available, partition is not None,
                             single)
        params: dict[str, Any] = {"files": files, **({"source_file": files[0]} if single else {})}
        if partition is not None:
            params["partition"] = partition
        not_null = [c for c, m in table.columns.items() if m.not_null]
        try:
            rows = warehouse.load_files("domain", name, select, params, partition, not_null)
        except (WarehouseError, duckdb.Error) as failed:
            raise dg.Failure(f"domain table `{name}` from {', '.join(map(_short, files))}: "
                             f"{str(failed).splitlines()[0]}") from failed
        return dg.MaterializeResult(metadata={
            "dagster/row_count": rows,
            "files": len(files),
            "source_files": dg.MetadataValue.md("\n".join(f"- `{f}`" for f in files)),
            "warehouse": warehouse.safe_url,
        }, check_results=[_primary_key_check(warehouse, name, table.primary_key)]
            if table.primary_key else [])

    return _domain


def _short(path: str) -> str:
    return Path(path).name


def _check_required(table: spec.DomainTable, files: list[str], fmt: dict[str, Any]
                    ) -> set[str]:
    """Every required source column must be in every file; name the file and the column."""
    available: set[str] = set()
    problems = []
    for path in files:
        try:
            columns = set(file_columns(path, fmt))
        except duckdb.Error as bad:
            raise dg.Failure(f"{path}: cannot read as {fmt['type']}: "
                             f"{str(bad).splitlines()[0]}") from bad
        available |= columns
        missing = [m.source or c for c, m in table.columns.items()
                   if m.required and (m.source or c) not in columns]
        if missing:
            problems.append(f"{path}: missing required column(s) {', '.join(missing)} "
                            f"(found: {', '.join(sorted(columns))})")
    if problems:
        raise dg.Failure("; ".join(problems) + ". Fix the file or the feed's `source:` names; "
                         "nothing was loaded.")
    return available


def _primary_key_check(warehouse: WarehouseResource, name: str, key: list[str]
                       ) -> dg.AssetCheckResult:
    columns = ", ".join(quote_ident(c) for c in key)
    duplicates = warehouse.fetch(
        f"SELECT count(*), coalesce(sum(n), 0) FROM (SELECT count(*) AS n FROM "
        f'"domain".{quote_ident(name)} GROUP BY {columns} HAVING count(*) > 1) AS d')[0]
    keys, rows = int(duplicates[0]), int(duplicates[1])
    return dg.AssetCheckResult(
        check_name="primary_key_unique", passed=keys == 0,
        metadata={"duplicate_keys": keys, "rows_with_duplicate_keys": rows},
        description=None if keys == 0 else f"{keys} key(s) appear more than once ({rows} rows)")
