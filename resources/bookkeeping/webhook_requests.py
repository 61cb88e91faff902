"""The webhook's request ids (X-Request-Id) in the warehouse: `stagecoach.webhook_requests`.

A table rather than memory, so an id survives a restart of the webhook and is shared by
several webhook processes. The insert is the reservation: the key is (trigger scope, request
id), and `INSERT … ON CONFLICT DO NOTHING RETURNING` tells, atomically on DuckDB and
PostgreSQL alike, whether this request was first. An id older than the replay window is
deleted in the same transaction, so it can be used again.
"""

import hashlib
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import duckdb
from sqlalchemy import exc as sa_exc

from resources.bookkeeping.tables import SCHEMA, BookkeepingTable, now
from resources.warehouse import WarehouseError, WarehouseResource, first_line, qualified

TABLE = "webhook_requests"
COLUMNS = ["id", "scope", "request_id", "created_at"]
_TYPES = {"created_at": "TIMESTAMP"}
PURGE_EVERY_SECONDS = 60.0
CONFLICT_RETRIES = 5

log = logging.getLogger("stagecoach.webhook")


def row_id(scope: str, request_id: str) -> str:
    """One key for (scope, request id): a digest, so no separator can make two pairs collide."""
    return hashlib.sha256(f"{scope}\0{request_id}".encode()).hexdigest()


class RequestIdStore(BookkeepingTable):
    """Reserve and release request ids per trigger scope for `window_seconds`."""

    def __init__(self, warehouse: WarehouseResource, window_seconds: float = 600.0) -> None:
        super().__init__(warehouse, TABLE, COLUMNS, _TYPES)
        self.window = timedelta(seconds=window_seconds)
        self._purged_at = 0.0
        self._purge_lock = threading.Lock()

    def reserve(self, scope: str, request_id: str) -> bool:
        """True when this is the id's first use within the window (it is now reserved).

        Raises WarehouseError when the warehouse cannot be reached or written."""
        for attempt in range(CONFLICT_RETRIES + 1):
            try:
                with _as_warehouse_error("reserve a webhook request id"):
                    return self._reserve(scope, request_id)
            except WarehouseError as failed:
                if not _conflict(failed) or attempt == CONFLICT_RETRIES:
                    raise
                time.sleep(0.05 * (attempt + 1))  # the racing insert commits; then it decides
        return False  # not reached: the last attempt returns or raises

    def _reserve(self, scope: str, request_id: str) -> bool:
        self.ensure()
        self._purge()
        target, p, stamp = qualified(SCHEMA, TABLE), self._p, now()
        rows = self.warehouse.execute(
            "reserve a webhook request id",
            (f'DELETE FROM {target} WHERE "id" = {p("id")} AND "created_at" < {p("cutoff")}',
             {"id": row_id(scope, request_id), "cutoff": stamp - self.window}),
            (f'INSERT INTO {target} ("id", "scope", "request_id", "created_at") VALUES '
             f'({p("id")}, {p("scope")}, {p("rid")}, {p("at")}) ON CONFLICT DO NOTHING '
             f'RETURNING "id"',
             {"id": row_id(scope, request_id), "scope": scope, "rid": request_id, "at": stamp}))
        return bool(rows)

    def release(self, scope: str, request_id: str) -> None:
        """Forget an id whose request launched nothing, so the caller can send it again."""
        with _as_warehouse_error("release a webhook request id"):
            self.warehouse.execute(
                "release a webhook request id",
                (f'DELETE FROM {qualified(SCHEMA, TABLE)} WHERE "id" = {self._p("id")}',
                 {"id": row_id(scope, request_id)}))

    def _purge(self) -> None:
        """Drop expired ids now and then (at most once a minute per process)."""
        with self._purge_lock:
            if time.monotonic() - self._purged_at < PURGE_EVERY_SECONDS:
                return
            self._purged_at = time.monotonic()
        try:
            self.warehouse.execute(
                "purge expired webhook request ids",
                (f'DELETE FROM {qualified(SCHEMA, TABLE)} WHERE "created_at" < '
                 f'{self._p("cutoff")}', {"cutoff": now() - self.window}))
        except WarehouseError as failed:  # two processes purging at once: the next one will
            log.warning("webhook request ids not purged: %s", first_line(failed))


@contextmanager
def _as_warehouse_error(what: str) -> Iterator[None]:
    """Reads outside a transaction (the catalogue check of `ensure`) raise the driver's own
    errors: one kind for the webhook to answer 503 to."""
    try:
        yield
    except WarehouseError:
        raise
    except (duckdb.Error, sa_exc.SQLAlchemyError) as failed:
        raise WarehouseError(f"{what} failed: {first_line(failed)}") from failed


def _conflict(failed: WarehouseError) -> bool:
    """Another transaction reserved the same id at the same moment: DuckDB's optimistic
    concurrency reports it as a duplicate key or a write conflict rather than `DO NOTHING`."""
    cause = failed.__cause__
    return isinstance(cause, duckdb.ConstraintException | duckdb.TransactionException
                      | sa_exc.IntegrityError) or "conflict" in str(failed).lower()
