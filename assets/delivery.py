"""Sending produced files: seal each, archive it, then deliver it to each destination, with the
ledger recording every step.

Shared by activations, automations' `deliver` steps (first delivery) and the re-send job: one
code path, so sealing, the empty-file and overwrite rules, mail and the file history behave the
same whichever produced the file. Order matters: the sealed file is
archived before anything is sent, so every file a partner may hold can be found and re-sent; a
ledger row says `sending` before a transfer and `delivered` only once the destination confirmed
the whole file.
"""

import glob
import posixpath
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import dagster as dg

from assets import spec
from assets.common import archive_key, connection_key
from assets.names import REDELIVER_TAG, WAREHOUSE_KEY
from assets.registry import Entry, Registry
from assets.sealing import SealedFile, SealError, seal
from assets.templating import render_text
from resources.bookkeeping.ledger import (
    ALREADY,
    DELIVERED,
    EMPTY,
    FAILED,
    SENDING,
    DeliveryLedger,
    LedgerEntry,
    new_id,
    now,
)
from resources.connections.files import (
    FileConnection,
    TransferError,
    UnsafePath,
    checked_file_name,
    checked_template_path,
    md5_of,
)
from resources.connections.mail import MailError
from resources.retries import PERMANENT_REASON, not_retried_reason, step_may_retry

# What sends files: an activation, or an automation's `deliver` step (the same delivery keys).
Deliverable = spec.Activation | spec.DeliverStep


@dataclass(frozen=True)
class Destination:
    """One place an activation sends its file, with the rendered folder under it."""

    name: str  # connection name in the spec
    sender: "Sender"  # how its kind receives a file (DESTINATIONS)
    resource: Any  # a FileConnection, or an SmtpResource for mail
    folder: str  # rendered folder under the destination ("." for its base)

    def remote(self, file_name: str) -> str:
        return posixpath.normpath(posixpath.join(self.folder or ".", file_name))

    def uri(self, file_name: str, mail: spec.MailDelivery | None) -> str:
        return self.sender.uri(self, file_name, mail)


class Sender(Protocol):
    """How one kind of destination receives a file, says where it went, and whether a file
    delivered before is still there."""

    def uri(self, destination: Destination, file_name: str,
            mail: spec.MailDelivery | None) -> str: ...

    def send(self, destination: Destination, sealed: SealedFile, overwrite: bool,
             mail: spec.MailDelivery | None, values: Mapping[str, Any]) -> str: ...

    def still_there(self, destination: Destination, before: LedgerEntry) -> bool: ...


class FileSender:
    """A file store (folder, SFTP, FTP, SMB, S3): upload under a temporary name, checked."""

    def uri(self, destination: Destination, file_name: str,
            mail: spec.MailDelivery | None) -> str:
        return destination.resource.describe(destination.remote(file_name))

    def send(self, destination: Destination, sealed: SealedFile, overwrite: bool,
             mail: spec.MailDelivery | None, values: Mapping[str, Any]) -> str:
        size = destination.resource.upload(sealed.path, destination.remote(sealed.name),
                                           overwrite=overwrite, md5=sealed.md5)
        checked = "size and md5" if destination.resource.checks_md5 else "size"
        return f"; {checked} checked at the destination ({size:,} bytes)"

    def still_there(self, destination: Destination, before: LedgerEntry) -> bool:
        """One listing of the file's own name: there, whole."""
        remote = destination.remote(before.file_name)
        folder, name = posixpath.split(remote)
        try:
            found = destination.resource.list_files(posixpath.join(folder or ".",
                                                                   glob.escape(name)))
        except TransferError:
            return False  # cannot tell: sending again is the safe side
        return any(f.size == before.size for f in found)


class MailSender:
    """An smtp connection: the file as an attachment, in the body or as a link."""

    def uri(self, destination: Destination, file_name: str,
            mail: spec.MailDelivery | None) -> str:
        return "mailto:" + ",".join(mail.to if mail else [])

    def send(self, destination: Destination, sealed: SealedFile, overwrite: bool,
             mail: spec.MailDelivery | None, values: Mapping[str, Any]) -> str:
        assert mail is not None  # the spec loader requires `mail:` for smtp destinations
        try:
            sent = destination.resource.deliver_file(
                sealed.path, to=list(mail.to), subject=render_text(mail.subject, values),
                text=render_text(mail.body, values), mode=mail.mode,
                link=values.get("link") or None,
                max_attachment_bytes=int(mail.max_attachment_mb * 1024 * 1024))
        except MailError as failed:
            raise MailDeliveryError(str(failed)) from failed
        return f" ({sent.mode_used}, message {sent.message_id})"

    def still_there(self, destination: Destination, before: LedgerEntry) -> bool:
        return True  # mail cannot be looked at: the ledger is trusted


DESTINATIONS: Registry[Sender] = Registry("destination", spec.Destination, [
    *(Entry(model, FileSender()) for model in spec.union_members(spec.FileStore)),
    Entry(spec.SmtpConnection, MailSender()),
])



@dataclass(frozen=True)
class Delivery:
    """What one activation run knows about the file it sends: the ledger rows' shared part."""

    workflow: str
    activation: str
    run_id: str
    partition: str | None
    day: str  # the logical day (ds) names and folders were rendered for
    rows: int | None
    content_md5: str
    file_id: str
    kind: str = "delivery"
    resent_from: str | None = None

    def entry(self, sealed: SealedFile, destination: str, destination_uri: str | None,
              status: str, archive: tuple[str | None, str | None] = (None, None)
              ) -> LedgerEntry:
        return LedgerEntry(
            id=new_id(), file_id=self.file_id, workflow=self.workflow,
            activation=self.activation, run_id=self.run_id, partition=self.partition,
            day=self.day, file_name=sealed.name, size=sealed.size, row_count=self.rows,
            md5=sealed.md5, content_md5=self.content_md5, archive_path=archive[0],
            archive_uri=archive[1], destination=destination, destination_uri=destination_uri,
            status=status, kind=self.kind, resent_from=self.resent_from, error=None,
            created_at=now(), delivered_at=None)


def archive_path(workflow: str, activation: str, day: str, file_id: str, name: str) -> str:
    """Where a sent file is kept in the archive: browsable by activation and day."""
    return posixpath.join(workflow, activation, day, file_id, name)


def archive_file(archive: FileConnection, sealed: SealedFile, path: str) -> str:
    """Keep the exact bytes that will be sent; the archive is checked like any destination."""
    try:
        # The path holds a unique file id, so no check for an existing file is needed (and
        # S3's conditional PUT would cap archived files at 5 GiB).
        archive.upload(sealed.path, path, overwrite=True, md5=sealed.md5)
    except TransferError as failed:
        raise dg.Failure(f"the file could not be archived, so it was not sent: {failed}",
                         allow_retries=step_may_retry(failed)) from failed
    return archive.describe(path)


def record_empty(ledger: DeliveryLedger, delivery: Delivery, sealed: SealedFile,
                 destinations: list[Destination], mail: spec.MailDelivery | None
                 ) -> list[LedgerEntry]:
    """The history shows the day had no rows, so a missing file at the partner is explained."""
    return [ledger.record(delivery.entry(sealed, d.name, d.uri(sealed.name, mail), EMPTY))
            for d in destinations]


def deliver(log: Any, ledger: DeliveryLedger, delivery: Delivery, sealed: SealedFile,
            archive: Callable[[], tuple[str | None, str | None]],
            destinations: list[Destination], *, overwrite: bool,
            mail: spec.MailDelivery | None, values: Mapping[str, Any], redeliver: bool,
            refused: dict[str, str] | None = None) -> list[LedgerEntry]:
    """Send to every destination (one failing does not stop the others); the rows say how each
    went. Raises nothing for a failed transfer: the caller decides after all were tried. The
    ledger ids of transfers refused for good (a host key, a login, a link out of a folder), or
    whose connection already spent its retries, are added to `refused` with the reason: the
    step's RetryPolicy must not retry them (docs/retries.md).

    `archive()` keeps the file and returns (archive path, uri); it is called once, before the
    first transfer, and not at all when every destination already has this content.
    """
    entries: list[LedgerEntry] = []
    kept: tuple[str | None, str | None] | None = None
    for destination in destinations:
        uri = destination.uri(sealed.name, mail)
        before = None if redeliver else ledger.delivered_before(
            delivery.activation, delivery.day, destination.name, uri, delivery.content_md5)
        if before is not None and not destination.sender.still_there(destination, before):
            log.warning(f"{uri}: the ledger shows the same content delivered by run "
                        f"{before.run_id} (ledger {before.id}), but the destination no longer "
                        "holds that file: sending it again")
            before = None
        if before is not None:
            log.info(f"{uri}: the same content was delivered by run {before.run_id} at "
                     f"{before.delivered_at:%Y-%m-%d %H:%M} UTC (ledger {before.id}); not sent "
                     f"again (tag the run stagecoach/redeliver=true to send it anyway)")
            entries.append(ledger.record(replace(
                before, id=new_id(), run_id=delivery.run_id, partition=delivery.partition,
                status=ALREADY, kind=delivery.kind, resent_from=None, error=None,
                created_at=now(), delivered_at=None)))
            continue
        kept = kept or archive()
        entry = ledger.record(delivery.entry(sealed, destination.name, uri, SENDING, kept))
        try:
            detail = destination.sender.send(destination, sealed, overwrite, mail, {
                **values, "link": kept[1] or "", "destination": destination.name})
        except Exception as failed:  # one destination's failure never stops the others
            reason = str(failed) if isinstance(failed, TransferError | MailDeliveryError) else \
                f"{type(failed).__name__}: {failed}"
            log.error(f"{uri}: not delivered: {reason}")
            if refused is not None and not step_may_retry(failed):
                refused[entry.id] = not_retried_reason(failed)
            entries.append(ledger.mark(entry, FAILED, reason))
            continue
        log.info(f"delivered {sealed.name} ({sealed.size:,} bytes, md5 {sealed.md5}) to {uri}"
                 f"{detail}")
        entries.append(ledger.mark(entry, DELIVERED))
    return entries


class MailDeliveryError(Exception):
    """A mail destination refused the message (wraps the mail resource's error)."""


def outcome_metadata(delivery: Delivery, entries: list[LedgerEntry], steps: tuple[str, ...]
                     ) -> dict[str, Any]:
    """The materialization's metadata: the UI's history of files per activation. The file's
    figures are the ledger's (for content delivered before, the file that was sent then)."""
    sent = entries[0]
    table = "\n".join(f"| {e.destination} | {e.status} | `{e.destination_uri}` | {e.id} |"
                      for e in entries)
    statuses = sorted({e.status for e in entries})
    return {
        "file_name": sent.file_name,
        "size": sent.size,
        "dagster/row_count": delivery.rows if delivery.rows is not None else 0,
        "md5": sent.md5,
        "content_md5": delivery.content_md5,
        "sealed": ", ".join(steps) or "no",
        "status": ", ".join(statuses),
        "destination": entries[0].destination_uri if len(entries) == 1 else
        ", ".join(str(e.destination_uri) for e in entries),
        "deliveries": dg.MetadataValue.md(
            "| destination | status | where | ledger id |\n|---|---|---|---|\n" + table),
        "ledger_ids": ", ".join(e.id for e in entries),
        "file_id": delivery.file_id,
        "archive": dg.MetadataValue.path(sent.archive_uri) if sent.archive_uri else
        "not archived",
    }



# ---------------------------------------------------------------- sending a producer's files


@dataclass(frozen=True)
class Outgoing:
    """One file a producer hands over: where it is, the name to send it as, its rows (None:
    not counted; 0: empty) and its md5 when already known."""

    path: Path
    name: str
    rows: int | None
    md5: str | None = None


@dataclass(frozen=True)
class Sent:
    """One file as it was sent: sealed, its delivery, and a ledger row per destination."""

    sealed: SealedFile
    delivery: Delivery
    entries: list[LedgerEntry]


def checked_name(what: str, key: str, value: str) -> str:
    """A rendered file name, or a failure naming the producer, the key and the value."""
    try:
        return checked_file_name(what, key, value)
    except UnsafePath as bad:
        raise dg.Failure(str(bad), allow_retries=False) from bad


def destinations_for(context: Any, workflow: spec.Workflow, target: Deliverable,
                     values: Mapping[str, Any], what: str) -> list[Destination]:
    """The destinations as they are configured now (re-sends use this too); `what` names the
    producer in errors (activation `x`, step a__b)."""
    wf = workflow.workflow.name
    try:
        folder = checked_template_path(what, "path", render_text(target.path, values) or ".")
    except UnsafePath as bad:
        raise dg.Failure(str(bad), allow_retries=False) from bad
    return [Destination(name, DESTINATIONS.build(workflow.connections[name]),
                        getattr(context.resources, connection_key(wf, name)), folder)
            for name in target.destinations]


def delivery_resources(workflow: spec.Workflow, target: Deliverable) -> set[str]:
    """The resource keys sending needs: the ledger's warehouse, the archive, each destination."""
    wf = workflow.workflow.name
    return {WAREHOUSE_KEY, archive_key(workflow),
            *(connection_key(wf, d) for d in target.destinations)}


def send_files(context: Any, workflow: spec.Workflow, target: Deliverable, label: str,
               what: str, values: Mapping[str, Any], partition: str | None,
               files: list[Outgoing], destinations: list[Destination], outbox: Path
               ) -> list[Sent]:
    """Seal, archive and deliver every file; `label` names the producer in the ledger (the
    activation, or `<automation>__<step>`). Failed deliveries fail the step once all were
    tried, retried unless every one was refused for good (a retry would be refused the same
    way)."""
    ledger = DeliveryLedger(getattr(context.resources, WAREHOUSE_KEY))
    archive = getattr(context.resources, archive_key(workflow))
    redeliver = context.run.tags.get(REDELIVER_TAG, "").lower() == "true"
    refused: dict[str, str] = {}
    if target.empty == "fail" and (empty := next((f for f in files if f.rows == 0), None)):
        raise dg.Failure(f"{empty.name}: the result has no rows and `empty: fail` is set",
                         allow_retries=False)  # before anything is sent, not half-way
    sent = [_send_one(context, ledger, archive, destinations, target, label, what, values,
                      partition, item, outbox, redeliver, refused) for item in files]
    failed = [e for item in sent for e in item.entries if e.status == FAILED]
    if failed:
        final = all(e.id in refused for e in failed)
        reasons = sorted({refused[e.id] for e in failed if e.id in refused})
        permanent = reasons == [PERMANENT_REASON]
        raise dg.Failure(
            f"{what}: {len(failed)} deliver{'y' if len(failed) == 1 else 'ies'} "
            + (f"{'refused' if permanent else 'failed'} ({'; '.join(reasons)}; the others "
               "went through): " if final else
               "failed (the others went through; a retry sends only what is missing): ") +
            "; ".join(f"{e.destination_uri}: {e.error}" for e in failed),
            metadata={"failed": ", ".join(str(e.destination_uri) for e in failed),
                      "ledger_ids": ", ".join(e.id for e in failed)},
            allow_retries=not final)
    return sent


def _send_one(context: Any, ledger: DeliveryLedger, archive: Any,
              destinations: list[Destination], target: Deliverable, label: str, what: str,
              values: Mapping[str, Any], partition: str | None, item: Outgoing, outbox: Path,
              redeliver: bool, refused: dict[str, str]) -> Sent:
    wf = values["workflow"]
    delivery = Delivery(workflow=wf, activation=label, run_id=context.run_id,
                        partition=partition, day=values["ds"], rows=item.rows,
                        content_md5=item.md5 or md5_of(item.path), file_id=new_id())
    if item.rows == 0 and target.empty == "skip":
        unsent = SealedFile(item.path, item.name, item.path.stat().st_size,
                            delivery.content_md5, ())
        context.log.warning(f"{item.name}: the result has no rows; nothing is sealed or sent "
                            "(`empty: skip`; set `empty: send` to deliver empty files)")
        return Sent(unsent, delivery, record_empty(ledger, delivery, unsent, destinations,
                                                   target.mail))
    try:
        zip_name = render_text(target.seal.zip_name, {**values, "source_name": item.name}
                               ) if target.seal.zip_name else None
        if zip_name:
            zip_name = checked_name(what, "seal.zip_name", zip_name)
        sealed = seal(item.path, item.name, target.seal, zip_name, outbox, delivery.content_md5)
    except SealError as failed:
        raise dg.Failure(f"{item.name}: {failed}", allow_retries=False) from failed

    def keep() -> tuple[str, str]:
        kept = archive_path(wf, label, values["ds"], delivery.file_id, sealed.name)
        uri = archive_file(archive, sealed, kept)
        context.log.info(f"{sealed.name}: {sealed.size:,} bytes, md5 {sealed.md5}, archived "
                         f"at {uri}")
        return kept, uri

    mail_values = {**values, "file_name": sealed.name, "rows": item.rows, "size": sealed.size,
                   "md5": sealed.md5, "activation": label}
    entries = deliver(context.log, ledger, delivery, sealed, keep, destinations,
                      overwrite=target.overwrite, mail=target.mail, values=mail_values,
                      redeliver=redeliver, refused=refused)
    return Sent(sealed, delivery, entries)


def files_metadata(sent: list[Sent]) -> dict[str, Any]:
    """Several files' outcome in one table (one file: `outcome_metadata`)."""
    lines = [f"| {s.entries[0].file_name} | {s.entries[0].size:,} | {s.entries[0].md5} | "
             f"{', '.join(sorted({e.status for e in s.entries}))} |" for s in sent]
    return {
        "files": dg.MetadataValue.md("| file | size | md5 | status |\n|---|---|---|---|\n" +
                                     "\n".join(lines)),
        "file_count": len(sent),
        "size": sum(s.entries[0].size for s in sent),
        "delivered": sum(e.status == DELIVERED for s in sent for e in s.entries),
        "ledger_ids": ", ".join(e.id for s in sent for e in s.entries),
    }


def deliverables(workflow: spec.Workflow) -> dict[str, Deliverable]:
    """Everything in a workflow that sends files, by the name its ledger rows carry: each
    activation, and each `deliver` step as `<automation>__<step>` (its op's name)."""
    found: dict[str, Deliverable] = dict(workflow.activations)
    for name, automation in workflow.automations.items():
        for step_name, step in zip(automation.step_names(), automation.steps, strict=True):
            if isinstance(step, spec.DeliverStep):
                found[f"{name}__{step_name}"] = step
    return found
