"""Activations: deliver a query's result as a file to a folder, SFTP or S3.

The file is written and hashed locally first, then uploaded under a temporary name and renamed
once its size is checked, so the destination never shows half a file and the metadata (name,
size, rows, md5) describes exactly what arrived.
"""


import posixpath

import dagster as dg

from assets import spec
from assets.common import (
    STAGING_KEY,
    WAREHOUSE_KEY,
    connection_key,
    owners_of,
    template_context,
)
from assets.file_writers import write_file
from assets.sql_tables import table_key
from assets.templating import render_text
from resources.files import TransferError, safe_relative
from resources.staging import StagingResource
from resources.warehouse import WarehouseResource


def activation_key(name: str) -> dg.AssetKey:
    return dg.AssetKey(["activation", name])


def build_activation_asset(workflow: spec.Workflow, name: str, activation: spec.Activation
                           ) -> dg.AssetsDefinition:
    wf = workflow.workflow.name
    destination = workflow.connections[activation.to]
    dest_key = connection_key(wf, activation.to)

    @dg.asset(
        key=activation_key(name),
        group_name=wf,
        description=activation.description or (
            f"Delivers query `{activation.query}` as {activation.file.type} "
            f"`{activation.file.name}` to `{activation.to}` ({destination.kind})."),
        owners=owners_of(workflow, activation),
        kinds={destination.kind, activation.file.type},
        deps=[table_key(f"query.{activation.query}")],
        required_resource_keys={WAREHOUSE_KEY, STAGING_KEY, dest_key},
        metadata={"destination": activation.to, "path_template": activation.path or ".",
                  "file": dg.MetadataValue.json(activation.file.model_dump()),
                  "overwrite": activation.overwrite},
        retry_policy=dg.RetryPolicy(max_retries=2, delay=2, backoff=dg.Backoff.EXPONENTIAL),
    )
    def _activation(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        warehouse: WarehouseResource = getattr(context.resources, WAREHOUSE_KEY)
        staging: StagingResource = getattr(context.resources, STAGING_KEY)
        target = getattr(context.resources, dest_key)
        values = template_context(context, workflow)
        try:
            file_name = safe_relative(render_text(activation.file.name, values))
            remote = safe_relative(posixpath.join(render_text(activation.path, values) or ".",
                                                  file_name))
        except TransferError as bad:
            raise dg.Failure(f"activation `{name}`: {bad}") from bad
        local = staging.folder(wf, "outbox", name, context.run_id) / posixpath.basename(remote)
        written = write_file(warehouse.batches(f'SELECT * FROM "query"."{activation.query}"'),
                             local, activation.file)
        try:
            delivered = target.upload(local, remote, overwrite=activation.overwrite)
        except TransferError as failed:
            raise dg.Failure(f"activation `{name}` was not delivered: {failed}") from failed
        where = target.describe(remote)
        context.log.info(f"delivered {written.rows:,} rows, {delivered:,} bytes to {where}")
        return dg.MaterializeResult(metadata={
            "destination": where,
            "file_name": posixpath.basename(remote),
            "size": delivered,
            "dagster/row_count": written.rows,
            "md5": written.md5,
            "local_copy": dg.MetadataValue.path(str(local)),
        })

    return _activation
