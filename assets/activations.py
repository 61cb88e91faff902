"""Activations: deliver a query's result as a file, or forward a courier's files, to folders,
SFTP, FTP, SMB, S3 or mail.

Each file is written (or taken as it arrived), sealed (GPG, zip), hashed, archived, then sent to
every destination under a temporary name renamed once its size (and md5 where the protocol can
read one back) is checked. The delivery ledger records each step, so the UI's materializations
and the `file_history` table say exactly what arrived where; nothing is sent twice unless asked.
"""

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg

from assets import spec
from assets.common import (
    STEP_RETRY_POLICY,
    asset_partition,
    ends_on_termination,
    owners_of,
    partitions_for,
    signed,
    template_context,
)
from assets.couriers import manifest_path
from assets.delivery import (
    Outgoing,
    Sent,
    checked_name,
    delivery_resources,
    destinations_for,
    files_metadata,
    outcome_metadata,
    send_files,
)
from assets.file_writers import OutputEncodingError, write_query
from assets.names import (
    STAGING_KEY,
    WAREHOUSE_KEY,
    activation_key,
    courier_key,
    query_key,
    resend_job_name,
)
from assets.staged import Manifest
from assets.templating import render_text
from resources.progress import recorded_transfers, transfer_metadata
from resources.staging import StagingResource

if TYPE_CHECKING:
    from resources.warehouse import WarehouseResource


def activation_definitions(workflow: spec.Workflow) -> dg.Definitions:
    """The activations' family: one asset per activation (its re-send job is the file
    history's, `assets/resend.py`)."""
    return dg.Definitions(assets=[build_activation_asset(workflow, name, activation)
                                  for name, activation in workflow.activations.items()])


def build_activation_asset(workflow: spec.Workflow, name: str, activation: spec.Activation
                           ) -> dg.AssetsDefinition:
    """The asset whose materialization is the delivery: one file to every destination, recorded in
    the ledger."""
    wf = workflow.workflow.name
    kinds = {workflow.connections[d].kind for d in activation.destinations}
    if activation.query:
        upstream = query_key(activation.query or "")
        partitions = None
        what = f"query `{activation.query}` as {activation.file.type} `{activation.file.name}`"
        kinds.add(activation.file.type)
    else:
        upstream = courier_key(activation.courier or "")
        partitions = partitions_for(workflow) if workflow.couriers[
            activation.courier or ""].dated else None
        what = f"the files of courier `{activation.courier}`"
    sealing = [s for s, on in (("gpg", activation.seal.gpg), ("zip", activation.seal.zip)) if on]
    kinds |= set(sealing)
    to = ", ".join(f"`{d}` ({workflow.connections[d].kind})" for d in activation.destinations)

    @dg.asset(
        key=activation_key(name),
        group_name=wf,
        description=activation.description or f"Delivers {what} to {to}.",
        owners=owners_of(workflow, activation),
        kinds=kinds,
        deps=[upstream],
        partitions_def=partitions,
        required_resource_keys={STAGING_KEY, *delivery_resources(workflow, activation)},
        metadata={"destinations": ", ".join(activation.destinations),
                  "path_template": activation.path or ".",
                  "file": dg.MetadataValue.json(activation.file.model_dump()),
                  "seal": " then ".join(sealing) or "none",
                  "empty_result": activation.empty, "overwrite": activation.overwrite,
                  **({"mail": dg.MetadataValue.json(activation.mail.model_dump())}
                     if activation.mail else {}),
                  "file_history": "table stagecoach.file_history; re-send with "
                                  f"{resend_job_name(wf)}"},
        retry_policy=STEP_RETRY_POLICY,
    )
    @ends_on_termination
    @signed
    def _activation(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        staging: StagingResource = getattr(context.resources, STAGING_KEY)
        values = template_context(context, workflow)
        what = f"activation `{name}`"
        destinations = destinations_for(context, workflow, activation, values, what)
        outbox = staging.folder(wf, "outbox", name, context.run_id)
        partition = asset_partition(context)
        try:
            files = _files(context, staging, workflow, name, activation, values, outbox,
                           partition)
            with recorded_transfers() as transfers:
                sent = send_files(context, workflow, activation, name, what, values,
                                  partition, files, destinations, outbox)
        finally:
            shutil.rmtree(outbox, ignore_errors=True)  # the archive keeps what was sent
        result = _materialization(sent)
        return dg.MaterializeResult(metadata={**(result.metadata or {}),
                                              **transfer_metadata(transfers)})

    return _activation


def _files(context: dg.AssetExecutionContext, staging: StagingResource,
           workflow: spec.Workflow, name: str, activation: spec.Activation,
           values: dict[str, Any],
           outbox: Path, partition: str | None
           ) -> list[Outgoing]:
    """Each file to deliver: the query's result written now, or the courier's files."""
    if activation.query:
        file_name = checked_name(f"activation `{name}`", "file.name",
                                 render_text(activation.file.name or "", values))
        warehouse: WarehouseResource = getattr(context.resources, WAREHOUSE_KEY)
        try:
            written = write_query(warehouse, f'SELECT * FROM "query"."{activation.query}"',
                                  outbox / file_name, activation.file)
        except OutputEncodingError as bad:
            raise dg.Failure(f"{file_name}: {bad}", allow_retries=False) from bad
        return [Outgoing(written.path, file_name, written.rows, written.md5)]
    manifest = Manifest.model_validate(staging.read_json(manifest_path(
        staging, workflow.workflow.name, activation.courier or "", partition)))
    files = []
    for item in manifest.files:
        source = Path(item.original or item.path)
        arrived = item.name or source.name
        file_name = checked_name(f"activation `{name}`", "file.name", render_text(
            activation.file.name, {**values, "source_name": arrived}
        ) if activation.file.name else arrived)
        # A forwarded file's rows are not counted; an empty (0-byte) file counts as no rows.
        rows = item.rows if item.rows is not None else (
            0 if source.stat().st_size == 0 else None)
        files.append(Outgoing(source, file_name, rows))
    names = [item.name for item in files]
    if len(set(names)) != len(names):
        raise dg.Failure(f"courier `{activation.courier}` brought {len(names)} files but they "
                         f"would all be sent as {sorted(set(names))}: put {{{{ source_name }}}} "
                         "in `file.name`, or leave it blank to keep their names",
                         allow_retries=False)
    if not files:
        context.log.warning(f"courier `{activation.courier}` brought no file: nothing to send")
    return files


def _materialization(sent: list[Sent]) -> dg.MaterializeResult:
    """The asset's history entry: the file's figures and where it went (one table for several
    files)."""
    if not sent:
        return dg.MaterializeResult(metadata={"status": "no file to send", "size": 0,
                                              "dagster/row_count": 0})
    if len(sent) == 1:
        [one] = sent
        return dg.MaterializeResult(metadata=outcome_metadata(one.delivery, one.entries,
                                                              one.sealed.steps))
    return dg.MaterializeResult(metadata=files_metadata(sent))
