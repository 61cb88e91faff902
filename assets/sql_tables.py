"""Databases and queries: SQL tables built in the warehouse in dependency order.

Dependencies come from the SQL itself (`domain.customers`, `customer_360.ltv`, `query.x`), so
the asset graph is the SQL's graph. Each table is rebuilt atomically.
"""

import functools
import weakref
from typing import Any

import dagster as dg

from assets import spec
from assets.common import markdown_table, owners_of, signed, template_context
from assets.names import (
    WAREHOUSE_KEY,
    database_table_key,
    identity_tables,
    query_key,
    table_key,
)
from assets.sql_bind import Binding, bind_workflow
from assets.sql_refs import SqlCatalog
from assets.templating import render_sql, resolved_sql
from resources.warehouse import WarehouseError, WarehouseResource

# One catalog per workflow model, by identity (models are frozen but hold dicts, so they do not
# hash): every SQL asset asks for it, and building it each time made 600 SQL tables cost 600
# catalogs of 3,600 names. An entry goes when its workflow model does.
_CATALOGS: dict[int, tuple[weakref.ref, SqlCatalog]] = {}


def catalog_of(workflow: spec.Workflow) -> SqlCatalog:
    """Every table a workflow's SQL may refer to."""
    cached = _CATALOGS.get(id(workflow))
    if cached is not None and cached[0]() is workflow:
        return cached[1]
    catalog = SqlCatalog.of(domain=workflow.domain_tables,
                            databases={db: set(d.tables) for db, d in workflow.databases.items()},
                            queries=workflow.queries,
                            identity=[t for n in workflow.identity
                                      for t in identity_tables(n).values()])
    key = id(workflow)
    _CATALOGS[key] = (weakref.ref(workflow, lambda _: _CATALOGS.pop(key, None)), catalog)
    return catalog


_BINDINGS: dict[tuple[int, bool], tuple[weakref.ref, Binding]] = {}


def binding_of(workflow: spec.Workflow, warehouse_kind: str) -> Binding:
    """The declared columns of every SQL table of a workflow (bound once per workflow model)."""
    key = (id(workflow), warehouse_kind == "duckdb")
    cached = _BINDINGS.get(key)
    if cached is not None and cached[0]() is workflow:
        return cached[1]
    binding = bind_workflow(workflow, catalog_of(workflow), strict=key[1])
    _BINDINGS[key] = (weakref.ref(workflow, lambda _: _BINDINGS.pop(key, None)), binding)
    return binding


def table_schema(columns: list[tuple[str, str]],
                 descriptions: dict[str, str] | None = None) -> dg.TableSchema:
    """Columns as the UI's column schema (`dagster/column_schema`)."""
    return dg.TableSchema(columns=[
        dg.TableColumn(name, kind.lower(), description=(descriptions or {}).get(name))
        for name, kind in columns])


@functools.lru_cache(maxsize=4096)
def _bound_schema(columns: tuple[tuple[str, str], ...]) -> dg.TableSchema:
    """A SQL table's bound columns as a column schema: one (immutable) object per distinct
    schema (the queries of one mart often return the same columns)."""
    return table_schema(list(columns))


def built_schema(warehouse: WarehouseResource, schema: str, table: str,
                 descriptions: dict[str, str] | None = None) -> dict[str, dg.TableSchema]:
    """The column schema of a table just built, read back from the warehouse."""
    columns = warehouse.columns(schema, table)
    return {"dagster/column_schema": table_schema(columns, descriptions)} if columns else {}


def sql_metadata(workflow: spec.Workflow, qualified: str, table: spec.SqlTable,
                 warehouse_kind: str) -> dict[str, Any]:
    """What the UI shows of a SQL table at definition time: its SQL with the workflow's params
    written in, the template as written when that differs, the declared column schema."""
    sql = (table.sql or "").rstrip()
    shown = resolved_sql(sql, workflow.workflow.params).rstrip()
    metadata: dict[str, Any] = {"sql": dg.MetadataValue.md(f"```sql\n{shown}\n```"),
                                "dagster/table_name": qualified}
    if shown != sql:
        metadata["sql_template"] = dg.MetadataValue.md(f"```sql\n{sql}\n```")
        metadata["params"] = dg.MetadataValue.json(dict(workflow.workflow.params))
    columns = binding_of(workflow, warehouse_kind).columns.get(qualified)
    if columns:
        metadata["dagster/column_schema"] = _bound_schema(tuple(columns.items()))
    return metadata


def _deps(workflow: spec.Workflow, table: spec.SqlTable) -> list[dg.AssetKey]:
    refs, _ = catalog_of(workflow).references(table.sql or "")
    return [table_key(ref) for ref in sorted(refs | set(table.depends_on))]


def _build(context: dg.AssetExecutionContext, workflow: spec.Workflow, schema: str, name: str,
           table: spec.SqlTable) -> tuple[WarehouseResource, int, dict[str, dg.TableSchema]]:
    warehouse: WarehouseResource = getattr(context.resources, WAREHOUSE_KEY)
    bound = render_sql(table.sql or "", template_context(context, workflow),
                       warehouse.placeholder.format)
    try:
        rows = warehouse.replace_table(schema, name, bound.text, bound.params)
        columns = built_schema(warehouse, schema, name)
    except WarehouseError as failed:
        raise dg.Failure(f"`{schema}.{name}`: {failed}") from failed
    return warehouse, rows, columns


def sql_table_definitions(workflow: spec.Workflow, warehouse_kind: str = "duckdb"
                          ) -> dg.Definitions:
    """The SQL tables' family: every database's tables, then every query."""
    assets = [asset for db, database in workflow.databases.items()
              for asset in build_database_assets(workflow, db, database, warehouse_kind)]
    assets += [build_query_asset(workflow, name, query, warehouse_kind)
               for name, query in workflow.queries.items()]
    return dg.Definitions(assets=assets)


def build_database_assets(workflow: spec.Workflow, db: str, database: spec.Database,
                          warehouse_kind: str = "duckdb") -> list[dg.AssetsDefinition]:
    """One asset per table of a database, depending on the tables its SQL names."""
    return [_database_table(workflow, db, database, name, table, warehouse_kind)
            for name, table in database.tables.items()]


def _database_table(workflow: spec.Workflow, db: str, database: spec.Database, name: str,
                    table: spec.SqlTable, warehouse_kind: str) -> dg.AssetsDefinition:
    @dg.asset(
        key=database_table_key(db, name),
        group_name=workflow.workflow.name,
        description=table.description or _table_description(workflow, db, database, name,
                                                            table),
        owners=owners_of(workflow, table, database),
        kinds={"sql", warehouse_kind},
        deps=_deps(workflow, table),
        required_resource_keys={WAREHOUSE_KEY},
        metadata=sql_metadata(workflow, f"{db}.{name}", table, warehouse_kind),
    )
    @signed
    def _table(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        _, rows, columns = _build(context, workflow, db, name, table)
        return dg.MaterializeResult(metadata={"dagster/row_count": rows, **columns})

    return _table


def _table_description(workflow: spec.Workflow, db: str, database: spec.Database, name: str,
                       table: spec.SqlTable) -> str:
    """A table's own description when the spec gives none: what it is built from first, then
    the database it belongs to (each table says something of its own)."""
    reads = sorted({k.to_user_string().removeprefix("db/").replace("/", ".")
                    for k in _deps(workflow, table)})
    built = f"`{db}.{name}`: built by its SQL" + (
        f" from {', '.join(f'`{r}`' for r in reads)}." if reads else ".")
    return built + (f" Part of database `{db}`: {database.description}"
                    if database.description else "")


def build_query_asset(workflow: spec.Workflow, name: str, query: spec.Query,
                      warehouse_kind: str = "duckdb") -> dg.AssetsDefinition:
    """A query's asset: its rows as query.<name>, with row count and preview."""
    key = query_key(name)
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
        metadata=sql_metadata(workflow, f"query.{name}", query, warehouse_kind),
    )
    @signed
    def _query(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        warehouse, rows, columns = _build(context, workflow, "query", name, query)
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
            metadata={"dagster/row_count": rows, **columns,
                      "preview": dg.MetadataValue.md(markdown_table(preview.schema.names,
                                                                    rows_preview))},
            check_results=checks)

    return _query
