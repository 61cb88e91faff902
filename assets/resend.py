"""The re-send job: an archived file, byte for byte, to its activation's current destinations.

Operators launch `<workflow>_resend_job` from the launchpad with a ledger id (or an activation
and a day). The archived copy is checked against the md5 the ledger recorded before anything is
sent, and the re-send gets its own ledger rows pointing at the original.
"""

import shutil
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from assets import spec
from assets.activations import activation_key, destinations_for
from assets.common import STAGING_KEY, WAREHOUSE_KEY, archive_key, connection_key
from assets.delivery import Delivery, deliver, outcome_metadata
from assets.sealing import SealedFile
from assets.templating import date_context
from resources.files import TransferError, md5_of
from resources.ledger import EMPTY, FAILED, DeliveryLedger, LedgerEntry
from resources.staging import StagingResource
from resources.warehouse import WarehouseResource


class ResendConfig(dg.Config):
    ledger_id: str = Field("", description="Id of a file_history row (see `python -m "
                                           "orchestration history`); or give activation and day.")
    activation: str = Field("", description="Re-send this activation's latest file of `day`.")
    day: str = Field("", description="YYYY-MM-DD: the partition, or the day the file was made.")
    overwrite: bool = Field(True, description="Replace a file of that name at the destination.")


def resend_job_name(workflow: str) -> str:
    return f"{workflow}_resend_job"


def build_resend_job(workflow: spec.Workflow) -> dg.JobDefinition | None:
    wf = workflow.workflow.name
    if not workflow.activations:
        return None
    destinations = {d for a in workflow.activations.values() for d in a.destinations}

    @dg.op(name=f"{wf}_resend_file",
           required_resource_keys={WAREHOUSE_KEY, STAGING_KEY, archive_key(workflow),
                                   *(connection_key(wf, d) for d in destinations)},
           description="Sends an archived file again, unchanged, and records it in the ledger.")
    def resend_file(context: dg.OpExecutionContext, config: ResendConfig) -> None:
        warehouse: WarehouseResource = getattr(context.resources, WAREHOUSE_KEY)
        staging: StagingResource = getattr(context.resources, STAGING_KEY)
        archive = getattr(context.resources, archive_key(workflow))
        ledger = DeliveryLedger(warehouse)
        original = _pick(ledger, wf, config)
        activation = workflow.activations.get(original.activation)
        if activation is None:
            raise dg.Failure(f"activation `{original.activation}` is no longer in the workflow "
                             "spec, so it has no destination to re-send to", allow_retries=False)
        folder = staging.folder(wf, "resend", context.run_id)
        try:
            _resend(context, workflow, ledger, archive, original, activation, folder,
                    config.overwrite)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    @dg.job(name=resend_job_name(wf), tags={"stagecoach/workflow": wf},
            description=f"Re-sends an archived file of `{wf}` (by ledger id, or activation and "
                        "day) to its activation's current destinations.")
    def resend_job() -> None:
        resend_file()

    return resend_job


def _resend(context: dg.OpExecutionContext, workflow: spec.Workflow, ledger: DeliveryLedger,
            archive: Any, original: LedgerEntry, activation: spec.Activation, folder: Path,
            overwrite: bool) -> None:
    local = folder / original.file_name
    try:
        archive.download(original.archive_path, local)
    except TransferError as failed:
        raise dg.Failure(f"the archived copy of {original.file_name} could not be read: "
                         f"{failed}") from failed
    if (found := md5_of(local)) != original.md5:
        raise dg.Failure(f"the archived copy of {original.file_name} has md5 {found}, not the "
                         f"{original.md5} that was sent; it is not re-sent", allow_retries=False)
    # The original's day renders the destination folder: a backfilled file goes where it went.
    values = {**date_context(date.fromisoformat(original.day), workflow.workflow.params),
              "run_id": context.run_id, "workflow": workflow.workflow.name}
    sealed = SealedFile(local, original.file_name, local.stat().st_size, original.md5, ())
    delivery = Delivery(workflow=original.workflow, activation=original.activation,
                        run_id=context.run_id, partition=original.partition, day=original.day,
                        rows=original.row_count, content_md5=original.content_md5,
                        file_id=original.file_id, kind="resend", resent_from=original.id)
    kept = (original.archive_path, original.archive_uri)
    entries = deliver(
        context.log, ledger, delivery, sealed, lambda: kept,
        destinations_for(context, workflow, activation, values, original.activation),
        overwrite=overwrite,
        mail=activation.mail, redeliver=True,
        values={**values, "file_name": original.file_name, "rows": original.row_count,
                "size": sealed.size, "md5": sealed.md5, "activation": original.activation})
    metadata = {**outcome_metadata(delivery, entries, ()), "resent_from": original.id}
    context.log_event(dg.AssetObservation(asset_key=activation_key(original.activation),
                                          metadata=metadata))
    failed = [e for e in entries if e.status == FAILED]
    if failed:
        raise dg.Failure("re-send failed: " + "; ".join(f"{e.destination_uri}: {e.error}"
                                                        for e in failed), metadata=metadata)


def _pick(ledger: DeliveryLedger, workflow: str, config: ResendConfig) -> LedgerEntry:
    """The ledger row to re-send: by id, or the newest archived file of an activation and day."""
    if config.ledger_id:
        entry = ledger.get(config.ledger_id)
        if entry is None or entry.workflow != workflow:
            raise dg.Failure(f"no file_history row {config.ledger_id!r} in workflow "
                             f"`{workflow}`", allow_retries=False)
    elif config.activation and config.day:
        try:
            date.fromisoformat(config.day)
        except ValueError:
            raise dg.Failure(f"day {config.day!r} must be YYYY-MM-DD", allow_retries=False
                             ) from None
        candidates = [e for e in ledger.find(workflow=workflow, activation=config.activation,
                                             day=config.day) if e.archive_path]
        if not candidates:
            raise dg.Failure(f"no archived file of activation `{config.activation}` for "
                             f"{config.day}", allow_retries=False)
        entry = candidates[0]
    else:
        raise dg.Failure("give `ledger_id`, or both `activation` and `day` (YYYY-MM-DD)",
                         allow_retries=False)
    if entry.status == EMPTY or not entry.archive_path:
        raise dg.Failure(f"ledger row {entry.id} has no archived file (status {entry.status})",
                         allow_retries=False)
    return entry
