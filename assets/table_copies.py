"""Rows of a `sql` connection copied into the warehouse: a query's result (Serenytics' "SQL
query to storage") or whole tables ("sync datasource to storage").

The rows stream from the source into a Parquet file in the staging area (the row count logged
as they arrive), then load through the warehouse's bulk path (DuckDB's reader, PostgreSQL
COPY) in one transaction: a failure anywhere leaves the old table as it was.
"""

from collections.abc import Mapping
from contextlib import suppress
from typing import TYPE_CHECKING, Any

import dagster as dg

from assets.names import STAGING_KEY, WAREHOUSE_KEY, connection_key
from resources.warehouse import WarehouseResource, quote_ident

if TYPE_CHECKING:
    from resources.staging import StagingResource


def copy_query(context: dg.OpExecutionContext, workflow: str, source: str, sql: str,
               params: Mapping[str, Any] | None, into: str) -> int:
    """Replace warehouse table `into` (schema.table) with a query's rows on `source`."""
    database: WarehouseResource = getattr(context.resources, connection_key(workflow, source))
    warehouse: WarehouseResource = getattr(context.resources, WAREHOUSE_KEY)
    staging: StagingResource = getattr(context.resources, STAGING_KEY)
    target = staging.folder(workflow, "copies", context.run_id) / f"{into}.parquet"
    try:
        read = database.query_to_parquet(sql, params, target, lambda rows: context.log.info(
            f"{into}: {rows:,} rows read from `{source}`"))
        schema, table = into.split(".")
        loaded = warehouse.load_parquet(schema, table, target)
    finally:
        target.unlink(missing_ok=True)
        with suppress(OSError):  # another copy of the run may still use the folder
            target.parent.rmdir()
    context.log.info(f"{into}: {loaded:,} rows loaded ({read:,} read)")
    return loaded


def source_table(name: str) -> str:
    """A source table as written (`table` or `schema.table`), each part quoted as it is."""
    return ".".join(quote_ident(part) for part in name.split("."))
