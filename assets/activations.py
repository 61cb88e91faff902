"""Activations: deliver a query's result as a file, or forward a courier's files, to folders,
SFTP, FTP, SMB, S3 or mail.

Each file is written (or taken as it arrived), sealed (GPG, zip), hashed, archived, then sent to
every destination under a temporary name renamed once its size (and md5 where the protocol can
read one back) is checked. The delivery ledger records each step, so the UI's materializations
and the `file_history` table say exactly what arrived where; nothing is sent twice unless asked.
"""

import shutil
from pathlib import Path
from typing import Any

import dagster as dg

from assets import spec
from assets.common import (
    REDELIVER_TAG,
    STAGING_KEY,
    WAREHOUSE_KEY,
    archive_key,
    asset_partition,
    connection_key,
    ends_on_termination,
    owners_of,
    partitions_for,
    template_context,
)
from assets.couriers import courier_key, manifest_path
from assets.delivery import (
    Delivery,
    Destination,
    archive_file,
    archive_path,
    deliver,
    outcome_metadata,
    record_empty,
)
from assets.file_writers import OutputEncodingError, write_file
from assets.sealing import SealedFile, SealError, seal
from assets.sql_tables import table_key
from assets.templating import render_text
from resources.files import (
    UnsafePath,
    checked_file_name,
    checked_template_path,
    md5_of,
)
from resources.ledger import DELIVERED, DeliveryLedger, LedgerEntry, new_id
from resources.staging import StagingResource
from resources.warehouse import WarehouseResource


def activation_key(name: str) -> dg.AssetKey:
    return dg.AssetKey(["activation", name])


def destinations_for(context: Any, workflow: spec.Workflow, activation: spec.Activation,
                     values: dict[str, Any], name: str) -> list[Destination]:
    """The activation's destinations as they are configured now (re-sends use this too)."""
    wf = workflow.workflow.name
    try:
        folder = checked_template_path(f"activation `{name}`", "path",
                                       render_text(activation.path, values) or ".")
    except UnsafePath as bad:
        raise dg.Failure(str(bad), allow_retries=False) from bad
    return [Destination(name, workflow.connections[name].kind,
                        getattr(context.resources, connection_key(wf, name)), folder)
            for name in activation.destinations]


def build_activation_asset(workflow: spec.Workflow, name: str, activation: spec.Activation
                           ) -> dg.AssetsDefinition:
    wf = workflow.workflow.name
    kinds = {workflow.connections[d].kind for d in activation.destinations}
    if activation.query:
        upstream = table_key(f"query.{activation.query}")
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
        required_resource_keys={WAREHOUSE_KEY, STAGING_KEY, archive_key(workflow),
                                *(connection_key(wf, d) for d in activation.destinations)},
        metadata={"destinations": ", ".join(activation.destinations),
                  "path_template": activation.path or ".",
                  "file": dg.MetadataValue.json(activation.file.model_dump()),
                  "seal": " then ".join(sealing) or "none",
                  "empty_result": activation.empty, "overwrite": activation.overwrite,
                  **({"mail": dg.MetadataValue.json(activation.mail.model_dump())}
                     if activation.mail else {}),
                  "file_history": "table stagecoach.file_history; re-send with "
                                  f"{wf}_resend_job"},
        retry_policy=dg.RetryPolicy(max_retries=2, delay=2, backoff=dg.Backoff.EXPONENTIAL),
    )
    @ends_on_termination
    def _activation(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        warehouse: WarehouseResource = getattr(context.resources, WAREHOUSE_KEY)
        staging: StagingResource = getattr(context.resources, STAGING_KEY)
        archive = getattr(context.resources, archive_key(workflow))
        ledger = DeliveryLedger(warehouse)
        values = template_context(context, workflow)
        destinations = destinations_for(context, workflow, activation, values, name)
        outbox = staging.folder(wf, "outbox", name, context.run_id)
        redeliver = context.run.tags.get(REDELIVER_TAG, "").lower() == "true"
        partition = asset_partition(context)
        results = []
        try:
            for plain, file_name, rows, md5 in _files(context, staging, workflow, name,
                                                      activation, values, outbox, partition):
                results.append(_send_one(context, ledger, archive, destinations, activation,
                                         name, wf, values, partition, plain, file_name, rows,
                                         md5 or md5_of(plain), outbox, redeliver))
        finally:
            shutil.rmtree(outbox, ignore_errors=True)  # the archive keeps what was sent
        return _materialization(name, results)

    return _activation


def _files(context: dg.AssetExecutionContext, staging: StagingResource,
           workflow: spec.Workflow, name: str, activation: spec.Activation,
           values: dict[str, Any],
           outbox: Path, partition: str | None
           ) -> list[tuple[Path, str, int | None, str | None]]:
    """(local file, name to send it as, rows, md5 if already known) for each file to deliver."""
    if activation.query:
        file_name = _checked_name(name, "file.name",
                                  render_text(activation.file.name or "", values))
        warehouse: WarehouseResource = getattr(context.resources, WAREHOUSE_KEY)
        try:
            written = write_file(
                warehouse.batches(f'SELECT * FROM "query"."{activation.query}"'),
                outbox / file_name, activation.file)
        except OutputEncodingError as bad:
            raise dg.Failure(f"{file_name}: {bad}", allow_retries=False) from bad
        return [(written.path, file_name, written.rows, written.md5)]
    manifest = staging.read_json(manifest_path(staging, workflow.workflow.name,
                                               activation.courier or "", partition))
    files = []
    for item in manifest["files"]:
        source = Path(item.get("original", item["path"]))
        arrived = item.get("name", source.name)
        file_name = _checked_name(name, "file.name", render_text(
            activation.file.name, {**values, "source_name": arrived}
        ) if activation.file.name else arrived)
        # A forwarded file's rows are not counted; an empty (0-byte) file counts as no rows.
        rows = item.get("rows", 0 if source.stat().st_size == 0 else None)
        files.append((source, file_name, rows, None))
    names = [name for _, name, _, _ in files]
    if len(set(names)) != len(names):
        raise dg.Failure(f"courier `{activation.courier}` brought {len(names)} files but they "
                         f"would all be sent as {sorted(set(names))}: put {{{{ source_name }}}} "
                         "in `file.name`, or leave it blank to keep their names",
                         allow_retries=False)
    if not files:
        context.log.warning(f"courier `{activation.courier}` brought no file: nothing to send")
    return files


def _checked_name(activation: str, key: str, value: str) -> str:
    """A rendered file name, or a failure naming the activation, the key and the value."""
    try:
        return checked_file_name(f"activation `{activation}`", key, value)
    except UnsafePath as bad:
        raise dg.Failure(str(bad), allow_retries=False) from bad


def _send_one(context: dg.AssetExecutionContext, ledger: DeliveryLedger, archive: Any,
              destinations: list[Destination], activation: spec.Activation, name: str,
              wf: str, values: dict[str, Any], partition: str | None, plain: Path,
              file_name: str, rows: int | None, content_md5: str, outbox: Path,
              redeliver: bool) -> tuple[SealedFile, Delivery, list[LedgerEntry]]:
    delivery = Delivery(workflow=wf, activation=name, run_id=context.run_id,
                        partition=partition, day=values["ds"], rows=rows,
                        content_md5=content_md5, file_id=new_id())
    if rows == 0 and activation.empty != "send":
        if activation.empty == "fail":
            raise dg.Failure(f"{file_name}: the result has no rows and `empty: fail` is set",
                             allow_retries=False)
        unsent = SealedFile(plain, file_name, plain.stat().st_size, delivery.content_md5, ())
        context.log.warning(f"{file_name}: the result has no rows; nothing is sealed or sent "
                            "(`empty: skip`; set `empty: send` to deliver empty files)")
        return unsent, delivery, record_empty(ledger, delivery, unsent, destinations,
                                              activation.mail)
    try:
        zip_name = render_text(activation.seal.zip_name, {**values, "source_name": file_name}
                               ) if activation.seal.zip_name else None
        if zip_name:
            zip_name = _checked_name(name, "seal.zip_name", zip_name)
        sealed = seal(plain, file_name, activation.seal, zip_name, outbox, content_md5)
    except SealError as failed:
        raise dg.Failure(f"{file_name}: {failed}", allow_retries=False) from failed

    def keep() -> tuple[str, str]:
        kept = archive_path(wf, name, values["ds"], delivery.file_id, sealed.name)
        uri = archive_file(archive, sealed, kept)
        context.log.info(f"{sealed.name}: {sealed.size:,} bytes, md5 {sealed.md5}, archived "
                         f"at {uri}")
        return kept, uri

    mail_values = {**values, "file_name": sealed.name, "rows": rows, "size": sealed.size,
                   "md5": sealed.md5, "activation": name}
    entries = deliver(context.log, ledger, delivery, sealed, keep, destinations,
                      overwrite=activation.overwrite, mail=activation.mail, values=mail_values,
                      redeliver=redeliver)
    return sealed, delivery, entries


def _materialization(name: str, results: list[tuple[SealedFile, Delivery, list[LedgerEntry]]]
                     ) -> dg.MaterializeResult:
    failed = [e for _, _, entries in results for e in entries if e.status == "failed"]
    if failed:
        raise dg.Failure(
            f"activation `{name}`: {len(failed)} deliver{'y' if len(failed) == 1 else 'ies'} "
            "failed (the others went through; a retry sends only what is missing): " +
            "; ".join(f"{e.destination_uri}: {e.error}" for e in failed),
            metadata={"failed": ", ".join(str(e.destination_uri) for e in failed),
                      "ledger_ids": ", ".join(e.id for e in failed)})
    if not results:
        return dg.MaterializeResult(metadata={"status": "no file to send", "size": 0,
                                              "dagster/row_count": 0})
    if len(results) == 1:
        sealed, delivery, entries = results[0]
        return dg.MaterializeResult(metadata=outcome_metadata(delivery, entries, sealed.steps))
    lines = [f"| {es[0].file_name} | {es[0].size:,} | {es[0].md5} | "
             f"{', '.join(sorted({e.status for e in es}))} |" for _, _, es in results]
    return dg.MaterializeResult(metadata={
        "files": dg.MetadataValue.md("| file | size | md5 | status |\n|---|---|---|---|\n" +
                                     "\n".join(lines)),
        "file_count": len(results),
        "size": sum(es[0].size for _, _, es in results),
        "delivered": sum(e.status == DELIVERED for _, _, es in results for e in es),
        "ledger_ids": ", ".join(e.id for _, _, es in results for e in es),
    })
