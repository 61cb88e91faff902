"""Sending one produced file: archive it, then deliver it to each destination, with the ledger
recording every step.

Shared by activations (first delivery) and the re-send job. Order matters: the sealed file is
archived before anything is sent, so every file a partner may hold can be found and re-sent; a
ledger row says `sending` before a transfer and `delivered` only once the destination confirmed
the whole file.
"""

from __future__ import annotations

import glob
import posixpath
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import dagster as dg

from assets import spec
from assets.sealing import SealedFile
from assets.templating import render_text
from resources.files import FileConnection, TransferError
from resources.ledger import (
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
from resources.mail import MailError


@dataclass(frozen=True)
class Destination:
    name: str  # connection name in the spec
    kind: str
    resource: Any  # a FileConnection, or an SmtpResource for kind smtp
    folder: str  # rendered folder under the destination ("." for its base)

    def remote(self, file_name: str) -> str:
        return posixpath.normpath(posixpath.join(self.folder or ".", file_name))

    def uri(self, file_name: str, mail: spec.MailDelivery | None) -> str:
        if self.kind == "smtp":
            return "mailto:" + ",".join(mail.to if mail else [])
        return self.resource.describe(self.remote(file_name))


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
        raise dg.Failure(f"the file could not be archived, so it was not sent: {failed}"
                         ) from failed
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
            mail: spec.MailDelivery | None, values: Mapping[str, Any], redeliver: bool
            ) -> list[LedgerEntry]:
    """Send to every destination (one failing does not stop the others); the rows say how each
    went. Raises nothing for a failed transfer: the caller decides after all were tried.

    `archive()` keeps the file and returns (archive path, uri); it is called once, before the
    first transfer, and not at all when every destination already has this content.
    """
    entries: list[LedgerEntry] = []
    kept: tuple[str | None, str | None] | None = None
    for destination in destinations:
        uri = destination.uri(sealed.name, mail)
        before = None if redeliver else ledger.delivered_before(
            delivery.activation, delivery.day, destination.name, uri, delivery.content_md5)
        if before is not None and not _still_there(destination, before):
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
            detail = _send(destination, sealed, overwrite, mail,
                           {**values, "link": kept[1] or "", "destination": destination.name})
        except Exception as failed:  # one destination's failure never stops the others
            reason = str(failed) if isinstance(failed, TransferError | MailDeliveryError) else \
                f"{type(failed).__name__}: {failed}"
            log.error(f"{uri}: not delivered: {reason}")
            entries.append(ledger.mark(entry, FAILED, reason))
            continue
        log.info(f"delivered {sealed.name} ({sealed.size:,} bytes, md5 {sealed.md5}) to {uri}"
                 f"{detail}")
        entries.append(ledger.mark(entry, DELIVERED))
    return entries


def _still_there(destination: Destination, before: LedgerEntry) -> bool:
    """Whether the file the ledger says was delivered is still at the destination, whole.

    Mail cannot be looked at: the ledger is trusted. One listing of the file's own name."""
    if destination.kind == "smtp":
        return True
    remote = destination.remote(before.file_name)
    folder, name = posixpath.split(remote)
    try:
        found = destination.resource.list_files(posixpath.join(folder or ".", glob.escape(name)))
    except TransferError:
        return False  # cannot tell: sending again is the safe side
    return any(f.size == before.size for f in found)


class MailDeliveryError(Exception):
    """A mail destination refused the message (wraps the mail resource's error)."""


def _send(destination: Destination, sealed: SealedFile, overwrite: bool,
          mail: spec.MailDelivery | None, values: Mapping[str, Any]) -> str:
    if destination.kind == "smtp":
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
    size = destination.resource.upload(sealed.path, destination.remote(sealed.name),
                                       overwrite=overwrite, md5=sealed.md5)
    checked = "size and md5" if destination.resource.checks_md5 else "size"
    return f"; {checked} checked at the destination ({size:,} bytes)"


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

