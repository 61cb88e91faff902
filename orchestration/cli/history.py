"""The file history from the command line: list what was sent, copy an archived file out.

`python -m orchestration history` lists ledger rows; `python -m orchestration download ID` copies
that row's archived file into a folder and checks it against the md5 recorded when it was sent.
"""

import os
from pathlib import Path
from typing import Any

from orchestration.connections import resource_for
from orchestration.spec_loader import load_workflows
from resources import settings
from resources.bookkeeping.ledger import DeliveryLedger, LedgerEntry
from resources.connections.files import TransferError, md5_of, partial_name
from resources.connections.folder import FolderResource
from resources.warehouse import WarehouseResource


class HistoryError(Exception):
    """Shown to the operator as is (no traceback)."""


def ledger() -> DeliveryLedger:
    """The delivery ledger in the configured warehouse."""
    url = os.environ.get(settings.WAREHOUSE_URL_ENV) or settings.default_warehouse_url()
    return DeliveryLedger(WarehouseResource(url=url))


def history_lines(entries: list[LedgerEntry]) -> list[str]:
    """The `history` command's table: one line per delivered file, newest first."""
    header = "id               made (UTC)        status            size  file -> destination"
    return [header, *(f"{e.id:16} {e.created_at:%Y-%m-%d %H:%M}  {e.status:16} "
                      f"{e.size:>9,}  {e.workflow}/{e.activation}: {e.file_name} -> "
                      f"{e.destination_uri}" + (f" (re-send of {e.resent_from})"
                                                if e.resent_from else "")
                      for e in entries)]


def archive_for(workflow: str, workflows: Path | None = None) -> Any:
    """The archive connection of a workflow as its spec says now (default: the data folder)."""
    for loaded in load_workflows(workflows):
        spec = loaded.spec
        if spec.workflow.name == workflow and spec.workflow.archive:
            resource = resource_for(spec.connections[spec.workflow.archive],
                                    spec.workflow.archive)
            return resource.process_config_and_initialize()  # env references read here
    return FolderResource(path=str(settings.archive_dir()))


def download(entry_id: str, folder: Path, workflows: Path | None = None) -> Path:
    """Copy an archived file out; a copy whose md5 differs from the ledger's is removed."""
    entry = ledger().get(entry_id)
    if entry is None:
        raise HistoryError(f"no file_history row {entry_id!r}; list them with "
                           "`python -m orchestration history`")
    if not entry.archive_path:
        raise HistoryError(f"row {entry_id} has no archived file (status {entry.status})")
    target = folder / entry.file_name
    partial = folder / partial_name(entry.file_name)
    try:
        archive_for(entry.workflow, workflows).download(entry.archive_path, partial)
    except TransferError as failed:
        raise HistoryError(f"cannot read the archived copy: {failed}") from failed
    found = md5_of(partial)
    if found != entry.md5:
        partial.unlink()
        raise HistoryError(f"the archived copy of {entry.file_name} has md5 {found}, but "
                           f"{entry.md5} was recorded when it was sent: it is damaged; nothing "
                           "was copied")
    partial.replace(target)
    return target
