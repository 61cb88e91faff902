"""The re-send job: an archived file, byte for byte, to its producer's current destinations
(an activation's, or an automation `deliver` step's).

Operators launch `<workflow>_resend_job` from the launchpad with a ledger id (or an activation,
or `<automation>__<step>`, and a day). The archived copy is checked against the md5 the ledger
recorded before anything is sent, and the re-send gets its own ledger rows pointing at the original.
"""

import shutil
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import Field

from assets import spec
from assets.common import archive_key
from assets.delivery import (
    Deliverable,
    Delivery,
    deliver,
    deliverables,
    delivery_resources,
    destinations_for,
    outcome_metadata,
)
from assets.names import (
    STAGING_KEY,
    WAREHOUSE_KEY,
    WORKFLOW_TAG,
    activation_key,
    resend_job_name,
)
from assets.sealing import SealedFile
from assets.templating import date_context
from resources.bookkeeping.ledger import EMPTY, FAILED, DeliveryLedger, LedgerEntry
from resources.connections.files import TransferError, md5_of

if TYPE_CHECKING:
    from resources.staging import StagingResource
    from resources.warehouse import WarehouseResource


class ResendConfig(dg.Config):
    """What the re-send job sends: a ledger id, or an activation's file of one day."""

    ledger_id: str = Field(default="", description="Id of a file_history row (see `python -m "
                                           "orchestration history`); or give activation and day.")
    activation: str = Field(default="", description="Re-send this activation's (or deliver "
                                                    "step's, `<automation>__<step>`) latest "
                                                    "file of `day`.")
    day: str = Field(
        default="", description="YYYY-MM-DD: the partition, or the day the file was made.")
    overwrite: bool = Field(
        default=True, description="Replace a file of that name at the destination.")


def resend_definitions(workflow: spec.Workflow) -> dg.Definitions:
    """The file history's family: the re-send job, when the workflow delivers anything."""
    job = build_resend_job(workflow)
    return dg.Definitions(jobs=[job] if job else [])


def build_resend_job(workflow: spec.Workflow) -> dg.JobDefinition | None:
    """The workflow's re-send job, or None when it has no activation."""
    wf = workflow.workflow.name
    targets = deliverables(workflow)
    if not targets:
        return None
    resources = {STAGING_KEY}.union(*(delivery_resources(workflow, t) for t in targets.values()))

    @dg.op(name=f"{wf}_resend_file", required_resource_keys=resources,
           description="Sends an archived file again, unchanged, and records it in the ledger.")
    def resend_file(context: dg.OpExecutionContext, config: ResendConfig) -> None:
        warehouse: WarehouseResource = getattr(context.resources, WAREHOUSE_KEY)
        staging: StagingResource = getattr(context.resources, STAGING_KEY)
        archive = getattr(context.resources, archive_key(workflow))
        ledger = DeliveryLedger(warehouse)
        original = _pick(ledger, wf, config)
        target = targets.get(original.activation)
        if target is None:
            raise dg.Failure(f"`{original.activation}` (an activation or deliver step) is no "
                             "longer in the workflow spec, so it has no destination to re-send "
                             "to", allow_retries=False)
        folder = staging.folder(wf, "resend", context.run_id)
        try:
            _resend(context, workflow, ledger, archive, original, target, folder,
                    config.overwrite)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    @dg.job(name=resend_job_name(wf), tags={WORKFLOW_TAG: wf},
            description=f"Re-sends an archived file of `{wf}` (by ledger id, or activation and "
                        "day) to its activation's or deliver step's current destinations.")
    def resend_job() -> None:
        resend_file()

    return resend_job


def _resend(context: dg.OpExecutionContext, workflow: spec.Workflow, ledger: DeliveryLedger,
            archive: Any, original: LedgerEntry, target: Deliverable, folder: Path,
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
    values = {**date_context(date.fromisoformat(original.day),
                             _default_params(workflow, original.activation, target)),
              "run_id": context.run_id, "workflow": workflow.workflow.name}
    sealed = SealedFile(local, original.file_name, local.stat().st_size, original.md5, ())
    delivery = Delivery(workflow=original.workflow, activation=original.activation,
                        run_id=context.run_id, partition=original.partition, day=original.day,
                        rows=original.row_count, content_md5=original.content_md5,
                        file_id=original.file_id, kind="resend", resent_from=original.id)
    kept = (original.archive_path, original.archive_uri)
    entries = deliver(
        context.log, ledger, delivery, sealed, lambda: kept,
        destinations_for(context, workflow, target, values, _what(original.activation, target)),
        overwrite=overwrite,
        mail=target.mail, redeliver=True,
        values={**values, "file_name": original.file_name, "rows": original.row_count,
                "size": sealed.size, "md5": sealed.md5, "activation": original.activation})
    metadata = {**outcome_metadata(delivery, entries, ()), "resent_from": original.id}
    if isinstance(target, spec.Activation):  # a deliver step's files have no asset
        context.log_event(dg.AssetObservation(asset_key=activation_key(original.activation),
                                              metadata=metadata))
    else:
        context.add_output_metadata(metadata)
    failed = [e for e in entries if e.status == FAILED]
    if failed:
        raise dg.Failure("re-send failed: " + "; ".join(f"{e.destination_uri}: {e.error}"
                                                        for e in failed), metadata=metadata)


def _default_params(workflow: spec.Workflow, label: str, target: Deliverable
                    ) -> dict[str, Any]:
    """The parameters a re-sent file's folder is rendered with: the workflow's, and for a
    deliver step its automation's defaults over them (a launch's own values are not kept)."""
    params = dict(workflow.workflow.params)
    if isinstance(target, spec.DeliverStep):
        params |= workflow.automations[label.split("__", 1)[0]].params
    return params


def _what(label: str, target: Deliverable) -> str:
    return f"activation `{label}`" if isinstance(target, spec.Activation) else f"step {label}"


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
