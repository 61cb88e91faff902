"""Databases and queries: SQL tables built in the warehouse in dependency order.

Dependencies come from the SQL itself (`domain.customers`, `customer_360.ltv`, `query.x`), so
the asset graph is the SQL's graph. Each table is rebuilt atomically.
"""

import weakref

import dagster as dg

from assets import spec
from assets.common import WAREHOUSE_KEY, markdown_table, owners_of, template_context
from assets.sql_refs import SqlCatalog
from assets.templating import render_sql
from resources.warehouse import WarehouseError, WarehouseResource


def table_key(qualified_name: str) -> dg.AssetKey:
    """`domain.x` → domain/x, `query.x` → query/x, `<database>.x` → db/<database>/x."""
    schema, table = qualified_name.split(".", 1)
    if schema in ("domain", "query"):
        return dg.AssetKey([schema, table])
    return dg.AssetKey(["db", schema, table])


# One catalog per workflow model, by identity (models are frozen but hold dicts, so they do not
# hash): every SQL asset asks for it, and building it each time made 600 SQL tables cost 600
# catalogs of 3,600 names. An entry goes when its workflow model does.
_CATALOGS: dict[int, tuple[weakref.ref, SqlCatalog]] = {}


def catalog_of(workflow: spec.Workflow) -> SqlCatalog:
    cached = _CATALOGS.get(id(workflow))
    if cached is not None and cached[0]() is workflow:
        return cached[1]
    catalog = SqlCatalog.of(domain=workflow.domain_tables,
                            databases={db: set(d.tables) for db, d in workflow.databases.items()},
                            queries=workflow.queries)
    key = id(workflow)
    _CATALOGS[key] = (weakref.ref(workflow, lambda _: _CATALOGS.pop(key, None)), catalog)
    return catalog


def _deps(workflow: spec.Workflow, table: spec.SqlTable) -> list[dg.AssetKey]:
    refs, _ = catalog_of(workflow).references(table.sql or "")
    return [table_key(ref) for ref in sorted(refs | set(table.depends_on))]


def _build(context: dg.AssetExecutionContext, workflow: spec.Workflow, schema: str, name: str,
           table: spec.SqlTable) -> tuple[WarehouseResource, int]:
    warehouse: WarehouseResource = getattr(context.resources, WAREHOUSE_KEY)
    bound = render_sql(table.sql or "", template_context(context, workflow),
                       warehouse.placeholder.format)
    try:
        rows = warehouse.replace_table(schema, name, bound.text, bound.params)
    except WarehouseError as failed:
        raise dg.Failure(f"`{schema}.{name}`: {failed}") from failed
    return warehouse, rows


def build_database_assets(workflow: spec.Workflow, db: str, database: spec.Database,
                          warehouse_kind: str = "duckdb") -> list[dg.AssetsDefinition]:
    return [_database_table(workflow, db, database, name, table, warehouse_kind)
            for name, table in database.tables.items()]


def _database_table(workflow: spec.Workflow, db: str, database: spec.Database, name: str,
                    table: spec.SqlTable, warehouse_kind: str) -> dg.AssetsDefinition:
    @dg.asset(
        key=table_key(f"{db}.{name}"),
        group_name=workflow.workflow.name,
        description=table.description or database.description or f"Table `{db}.{name}`.",
        owners=owners_of(workflow, table, database),
        kinds={"sql", warehouse_kind},
        deps=_deps(workflow, table),
        required_resource_keys={WAREHOUSE_KEY},
        metadata={"sql": dg.MetadataValue.md(f"```sql\n{table.sql}\n```"),
                  "dagster/table_name": f"{db}.{name}"},
    )
    def _table(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        _, rows = _build(context, workflow, db, name, table)
        return dg.MaterializeResult(metadata={"dagster/row_count": rows})

    return _table


def build_query_asset(workflow: spec.Workflow, name: str, query: spec.Query,
                      warehouse_kind: str = "duckdb") -> dg.AssetsDefinition:
    key = table_key(f"query.{name}")
    bounds = query.checks
    check_specs = []
    if bounds.min_rows is not None or bounds.max_rows is not None:
        check_specs.append(dg.AssetCheckSpec(
            "row_count_in_bounds", asset=key, blocking=True,
            description=f"Rows between {bounds.min_rows or 0} and {bounds.max_rows or 'any'}."))

    @dg.asset(
        key=key,
        group_name=workflow.workflow.name,
        description=query.description or f"Query/segment `{name}`.",
        owners=owners_of(workflow, query),
        kinds={"sql", warehouse_kind},
        deps=_deps(workflow, query),
        required_resource_keys={WAREHOUSE_KEY},
        check_specs=check_specs,
        metadata={"sql": dg.MetadataValue.md(f"```sql\n{query.sql}\n```"),
                  "dagster/table_name": f"query.{name}"},
    )
    def _query(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        warehouse, rows = _build(context, workflow, "query", name, query)
        # A LIMIT query yields one batch; draining the generator closes the connection.
        [preview] = list(warehouse.batches(f'SELECT * FROM "query"."{name}" LIMIT '
                                           f"{int(query.preview_rows)}"))
        rows_preview = [tuple(r.values()) for r in preview.to_pylist()]
        checks = []
        if check_specs:
            low, high = bounds.min_rows or 0, bounds.max_rows
            passed = rows >= low and (high is None or rows <= high)
            checks.append(dg.AssetCheckResult(
                check_name="row_count_in_bounds", passed=passed,
                metadata={"rows": rows, "min_rows": low, "max_rows": high if high is not None
                          else "none"},
                description=None if passed else f"{rows} rows, expected between {low} and "
                                                f"{high if high is not None else 'any'}"))
        return dg.MaterializeResult(
            metadata={"dagster/row_count": rows,
                      "preview": dg.MetadataValue.md(markdown_table(preview.schema.names,
                                                                    rows_preview))},
            check_results=checks)

    return _query
