"""The alert ledger: each alert a reporter sent, as a key in the instance's key-value store (run
storage), so an evaluation Dagster runs again sends nothing twice.

Keys are `stagecoach/alert/<workflow>/<reporter>/<condition>`, values the time the alert went out
(epoch seconds). Entries older than KEEP_SECONDS are pruned, at most once per PRUNE_EVERY_SECONDS
per workflow (the time of the last pruning is itself a key), by the alert sensors that write.
"""

from __future__ import annotations

from collections.abc import Mapping

from dagster._core.storage.runs.schema import KeyValueStoreTable
from dagster._core.storage.runs.sql_run_storage import SqlRunStorage

LEDGER_PREFIX = "stagecoach/alert"
PRUNED_PREFIX = "stagecoach/alert-pruned"  # outside LEDGER_PREFIX: never pruned itself
KEEP_SECONDS = 30 * 86400  # far longer than any evaluation Dagster runs again
PRUNE_EVERY_SECONDS = 3600
DELETE_BATCH = 500  # keys per DELETE statement


def ledger_key(workflow: str, reporter: str, condition: str) -> str:
    return f"{LEDGER_PREFIX}/{workflow}/{reporter}/{condition}"


def pruned_key(workflow: str) -> str:
    return f"{PRUNED_PREFIX}/{workflow}"


def stamp(value: str | None) -> int | None:
    """A ledger value as epoch seconds; None if it is not one."""
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def prune_due(found: Mapping[str, str], workflow: str, now: float) -> bool:
    """Whether the workflow's ledger was last pruned PRUNE_EVERY_SECONDS ago or more (`found`:
    ledger values read with pruned_key among the keys)."""
    last = stamp(found.get(pruned_key(workflow)))
    return last is None or now - last >= PRUNE_EVERY_SECONDS


def prune_ledger(storage: object, workflow: str, now: float) -> int | None:
    """Delete the workflow's entries written KEEP_SECONDS or more before `now` and note the time;
    the count deleted, None where the run storage is not SQL (no way to list its keys)."""
    if not isinstance(storage, SqlRunStorage):
        return None
    table, cutoff = KeyValueStoreTable, now - KEEP_SECONDS
    prefix = f"{LEDGER_PREFIX}/{workflow}/"
    with storage.connect() as conn:
        rows = conn.execute(table.select().with_only_columns(table.c.key, table.c.value).where(
            table.c.key.startswith(prefix, autoescape=True))).fetchall()
        old = [key for key, value in rows
               if (when := stamp(value)) is not None and when <= cutoff]
        for start in range(0, len(old), DELETE_BATCH):
            conn.execute(table.delete().where(table.c.key.in_(old[start:start + DELETE_BATCH])))
    storage.set_cursor_values({pruned_key(workflow): str(int(now))})
    return len(old)
