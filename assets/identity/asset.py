"""An `identity:` entry as one Dagster multi-asset: its four warehouse tables built together.

The records come from the domain tables through the warehouse (DuckDB or PostgreSQL); the
resolution runs in a DuckDB of its own (splink's DuckDB backend), and the tables go back through
the warehouse's bulk path. The map is written last: a run that fails before it leaves the
previous ids in place for the next one.
"""

import json
import tempfile
from collections.abc import Iterator

import dagster as dg
import duckdb
import pyarrow as pa

from assets import spec
from assets.common import markdown_table, owners_of, signed
from assets.identity import engine
from assets.names import (
    IDENTITY_SCHEMA,
    WAREHOUSE_KEY,
    domain_key,
    identity_key,
    identity_tables,
)
from assets.spec import percent
from resources.warehouse import FileLoad, WarehouseError, WarehouseResource, quote_ident

CHANGE_COLUMNS = {"change": "TEXT", "customer_id": "TEXT", "customer_seq": "BIGINT",
                  "other_customer_id": "TEXT", "other_seq": "BIGINT", "records": "BIGINT",
                  "run_id": "TEXT", "changed_at": "TIMESTAMP"}
_DESCRIPTIONS = {
    "customers": "One row per customer of identity resolution `{name}`: each field by its "
                 "survivorship rule, and the count of source records.",
    "map": "Every source record (source_table, source_key) of `{name}` → its customer id.",
    "pairs": "Sampled pairs of `{name}` with the exact rule or splink's match score, for "
             "review.",
    "id_changes": "Customer ids of `{name}` retired by a merge or created by a split, run "
                  "after run.",
}


def identity_definitions(workflow: spec.Workflow, warehouse_kind: str = "duckdb"
                         ) -> dg.Definitions:
    """The identity family: one multi-asset (with its checks) per identity resolution."""
    return dg.Definitions(assets=[build_identity_asset(workflow, name, ident, warehouse_kind)
                                  for name, ident in workflow.identity.items()])


def build_identity_asset(workflow: spec.Workflow, name: str, ident: spec.IdentityResolution,
                         warehouse_kind: str = "duckdb") -> dg.AssetsDefinition:
    """The multi-asset of one identity resolution, with its two checks."""
    tables = identity_tables(name)
    keys = {role: identity_key(table) for role, table in tables.items()}
    deps = [domain_key(source) for source in ident.sources]
    owners = owners_of(workflow, ident)
    specs = [dg.AssetSpec(
        key, deps=deps, group_name=workflow.workflow.name, owners=owners,
        kinds={"splink", warehouse_kind},
        description=(ident.description + "\n\n" if ident.description and role == "customers"
                     else "") + _DESCRIPTIONS[role].format(name=name),
        metadata={"dagster/table_name": f"{IDENTITY_SCHEMA}.{tables[role]}",
                  **({"spec": dg.MetadataValue.json(ident.model_dump(mode="json",
                                                                     exclude_none=True))}
                     if role == "customers" else {})},
        skippable=False) for role, key in keys.items()]
    checks = ident.checks
    check_specs = [
        dg.AssetCheckSpec("max_cluster_size", asset=keys["customers"], blocking=checks.blocking,
                          description=f"No customer gathers more than {checks.max_cluster_size}"
                                      " source records (a runaway cluster means a bad rule)."),
        dg.AssetCheckSpec("id_stability", asset=keys["map"], blocking=checks.blocking,
                          description=f"At least {checks.min_stability} of the records seen "
                                      "by the previous run keep their customer id."),
    ]

    @dg.multi_asset(name=f"identity_{name}", specs=specs, check_specs=check_specs,
                    required_resource_keys={WAREHOUSE_KEY},
                    description=ident.description or f"Identity resolution `{name}`.")
    @signed
    def _resolve(context: dg.AssetExecutionContext
                 ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        warehouse: WarehouseResource = getattr(context.resources, WAREHOUSE_KEY)
        try:
            result = run_resolution(warehouse, ident, tables, context.run_id)
        except WarehouseError as failed:
            raise dg.Failure(f"identity resolution `{name}`: {failed}") from failed
        except duckdb.Error as failed:  # resolving (splink's SQL included): the same each retry
            raise dg.Failure(f"identity resolution `{name}` failed, the previous tables are "
                             f"unchanged: {str(failed).splitlines()[0]}",
                             allow_retries=False) from failed
        yield from _results(ident, keys, result)

    return _resolve


def run_resolution(warehouse: WarehouseResource, ident: spec.IdentityResolution,
                   tables: dict[str, str], run_id: str) -> engine.Resolution:
    """Read the sources and the previous map, resolve, write the four tables."""
    quote = quote_ident
    with tempfile.TemporaryDirectory(prefix="stagecoach-identity-") as scratch, \
            duckdb.connect() as con:
        con.execute(f"SET memory_limit = '{warehouse.duckdb_memory_limit}'")
        con.execute(f"SET temp_directory = '{scratch}'")
        sources = {s: _read(warehouse, engine.source_select(ident, s, quote))
                   for s in ident.sources}
        engine.prepare_records(con, ident, sources)
        del sources
        previous, max_seq = None, 0
        if warehouse.has_table(IDENTITY_SCHEMA, tables["map"]):
            previous = _read(warehouse, "SELECT source_table, source_key, customer_id, "
                             f"customer_seq FROM {quote(IDENTITY_SCHEMA)}."
                             f"{quote(tables['map'])}")
            max_seq = max(max_seq, *(warehouse.fetch(
                f"SELECT coalesce(max(customer_seq), 0) FROM {quote(IDENTITY_SCHEMA)}."
                f"{quote(tables['map'])}")[0]))
        if warehouse.has_table(IDENTITY_SCHEMA, tables["id_changes"]):
            max_seq = max(max_seq, *(warehouse.fetch(
                f"SELECT coalesce(max(customer_seq), 0), coalesce(max(other_seq), 0) FROM "
                f"{quote(IDENTITY_SCHEMA)}.{quote(tables['id_changes'])}")[0]))
        engine.set_previous(con, previous)
        del previous
        result = engine.resolve(con, ident, max_seq=max_seq, run_id=run_id)
    # The four tables are replaced in one transaction: a failure leaves the previous ones.
    warehouse.ensure_table(IDENTITY_SCHEMA, tables["id_changes"], CHANGE_COLUMNS)
    with warehouse.file_load(IDENTITY_SCHEMA, tables["map"], None) as load:
        for name, rows in (("pairs", result.pairs), ("customers", result.customers),
                           ("map", result.map)):
            _replace(load.for_table(IDENTITY_SCHEMA, tables[name]), rows)
        load.replace_rows(IDENTITY_SCHEMA, tables["id_changes"], result.id_changes,
                          {"run_id": run_id})
    return result


def _read(warehouse: WarehouseResource, sql: str) -> pa.Table:
    batches = list(warehouse.batches(sql))
    return pa.Table.from_batches(batches) if batches else pa.table({})


def _replace(load: FileLoad, rows: pa.Table) -> None:
    """Replace the load's table with `rows` (COPY on PostgreSQL)."""
    load.reader.register("stagecoach_identity_rows", rows)
    try:
        load.replace("SELECT * FROM stagecoach_identity_rows", {})
    finally:
        load.reader.unregister("stagecoach_identity_rows")


def _results(ident: spec.IdentityResolution, keys: dict[str, dg.AssetKey],
             result: engine.Resolution) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    stats, checks = result.stats, ident.checks
    severity = dg.AssetCheckSeverity.ERROR if checks.blocking else dg.AssetCheckSeverity.WARN
    biggest = result.biggest
    preview = markdown_table(list(biggest[0]) if biggest else ["customer_id"],
                             [tuple(row.values()) for row in biggest])
    model = stats.get("splink_model")
    yield dg.MaterializeResult(asset_key=keys["customers"], metadata={
        "dagster/row_count": result.customers.num_rows,
        "records": stats["records"], "customers": stats["customers"],
        "match_rate": dg.MetadataValue.float(round(stats["match_rate"], 6)),
        "largest_cluster": stats["largest_cluster"],
        **{f"clusters_of_size/{size}": count for size, count in result.cluster_sizes.items()},
        "exact_links": stats["exact_links"],
        "splink_pairs_scored": stats["splink_pairs_scored"],
        "splink_links": stats["splink_links"],
        "household_rule_refused": stats["household_rule_refused"],
        **({"em_passes_skipped": ", ".join(stats["em_passes_skipped"]) or "none"}
           if "em_passes_skipped" in stats else {}),
        "biggest_clusters": dg.MetadataValue.md(preview),
        **({"splink_model": dg.MetadataValue.json(json.loads(json.dumps(model, default=str)))}
           if model else {}),
    })
    yield dg.MaterializeResult(asset_key=keys["map"], metadata={
        "dagster/row_count": result.map.num_rows,
        "stability": dg.MetadataValue.float(round(stats["stability"], 6)),
        "previous_records": stats["previous_records"],
        "records_keeping_id": stats["records_keeping_id"],
        "ids_new": stats["ids_new"], "ids_merged": stats["ids_merged"],
        "ids_split": stats["ids_split"],
    })
    yield dg.MaterializeResult(asset_key=keys["pairs"],
                               metadata={"dagster/row_count": result.pairs.num_rows})
    yield dg.MaterializeResult(asset_key=keys["id_changes"], metadata={
        "changes_this_run": result.id_changes.num_rows,
        "ids_merged": stats["ids_merged"], "ids_split": stats["ids_split"]})
    largest = stats["largest_cluster"]
    yield dg.AssetCheckResult(
        asset_key=keys["customers"], check_name="max_cluster_size", severity=severity,
        passed=largest <= checks.max_cluster_size,
        metadata={"largest_cluster": largest, "max_cluster_size": checks.max_cluster_size},
        description=None if largest <= checks.max_cluster_size else
        f"a customer gathers {largest} source records, more than max_cluster_size "
        f"{checks.max_cluster_size}: see biggest_clusters and the pairs table")
    stability, floor = stats["stability"], percent(checks.min_stability)
    yield dg.AssetCheckResult(
        asset_key=keys["map"], check_name="id_stability", severity=severity,
        passed=stability >= floor,
        metadata={"stability": dg.MetadataValue.float(round(stability, 6)),
                  "min_stability": dg.MetadataValue.float(floor),
                  "previous_records": stats["previous_records"]},
        description=("first run: no previous ids" if not stats["previous_records"] else None)
        if stability >= floor else
        f"{stability:.2%} of the previous run's records kept their customer id, below "
        f"min_stability {checks.min_stability}: the id_changes table says which ids merged or "
        "split")
