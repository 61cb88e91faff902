"""The alert ledger: each alert a reporter sent, as a key in the instance's key-value store (run
storage), so an evaluation Dagster runs again sends nothing twice.

Keys are `stagecoach/alert/<workflow>/<reporter>/<condition>`, values the time the alert went out
(epoch seconds). Entries older than KEEP_SECONDS are pruned, at most once per PRUNE_EVERY_SECONDS
per workflow (the time of the last pruning is itself a key), by the alert sensors that write.
"""

from __future__ import annotations

from collections.abc import Mapping

import dagster as dg
import sqlalchemy as sa
from dagster._core.storage.legacy_storage import LegacyRunStorage
from dagster._core.storage.runs.base import RunStorage
from dagster._core.storage.runs.schema import KeyValueStoreTable
from dagster._core.storage.runs.sql_run_storage import SqlRunStorage

LEDGER_PREFIX = "stagecoach/alert"
PRUNED_PREFIX = "stagecoach/alert-pruned"  # outside LEDGER_PREFIX: never pruned itself
KEEP_SECONDS = 30 * 86400  # far longer than any evaluation Dagster runs again
PRUNE_EVERY_SECONDS = 3600
DELETE_BATCH = 400  # (key, value) pairs per DELETE statement: 800 bound values


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


_unavailable_logged = False


def _sql_storage(storage: RunStorage) -> SqlRunStorage | None:
    """The SQL run storage behind `storage` (a dagster.yaml `storage: custom:` block wraps it
    in a LegacyRunStorage)."""
    if isinstance(storage, LegacyRunStorage):
        storage = storage._storage.run_storage
    return storage if isinstance(storage, SqlRunStorage) else None


def prune_ledger(storage: RunStorage, workflow: str, now: float) -> int | None:
    """Delete the workflow's entries written KEEP_SECONDS or more before `now` and note the time;
    the count deleted, None where the run storage is not SQL (no way to list its keys).

    The prefix is checked again in Python (SQLite's LIKE ignores case, so it would also match
    another workflow's keys), and a row goes only while it still holds the value read: an
    alert re-stamped meanwhile keeps its new stamp."""
    global _unavailable_logged
    sql = _sql_storage(storage)
    if sql is None:
        if not _unavailable_logged:
            _unavailable_logged = True
            dg.get_dagster_logger("stagecoach.alerts").warning(
                f"the alert ledger is not pruned: the run storage ({type(storage).__name__}) "
                "is not SQL, so its keys cannot be listed; entries stay until removed by hand")
        return None
    table, cutoff = KeyValueStoreTable, now - KEEP_SECONDS
    prefix = f"{LEDGER_PREFIX}/{workflow}/"
    with sql.connect() as conn:
        rows = conn.execute(table.select().with_only_columns(table.c.key, table.c.value).where(
            table.c.key.startswith(prefix, autoescape=True))).fetchall()
        old = [(key, value) for key, value in rows if key.startswith(prefix)
               and (when := stamp(value)) is not None and when <= cutoff]
        deleted = 0
        for start in range(0, len(old), DELETE_BATCH):
            deleted += conn.execute(table.delete().where(sa.tuple_(
                table.c.key, table.c.value).in_(old[start:start + DELETE_BATCH]))).rowcount
    sql.set_cursor_values({pruned_key(workflow): str(int(now))})
    return deleted
