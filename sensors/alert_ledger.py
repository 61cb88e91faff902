"""The alert ledger: each alert a reporter sent, as a row of Stagecoach's own table
`stagecoach.alert_ledger` in the warehouse, so an evaluation Dagster runs again sends nothing
twice.

A row's id is `<workflow>/<reporter>/<condition>`; it holds the workflow and the time the alert
went out (epoch seconds). Rows older than KEEP_SECONDS are pruned, at most once per
PRUNE_EVERY_SECONDS per workflow (the time of the last pruning is itself a row,
`pruned/<workflow>`), by the alert sensors that write. Stagecoach's own table, not Dagster's
key-value store: Dagster offers no public way to list or delete its keys.
"""

from collections.abc import Iterable, Mapping

from resources.bookkeeping.tables import SCHEMA, BookkeepingTable
from resources.warehouse import WarehouseResource

TABLE = "alert_ledger"
TARGET = f'"{SCHEMA}"."{TABLE}"'
KEEP_SECONDS = 30 * 86400  # far longer than any evaluation Dagster runs again
PRUNE_EVERY_SECONDS = 3600
# A sensor evaluation has about 60 s: a DuckDB warehouse locked by a long load fails the tick
# (logged, tried again) in time rather than having the evaluation killed.
LOCK_TIMEOUT_SECONDS = 20
READ_BATCH = 400  # ids per SELECT: bound values stay far below every driver's limit


def ledger_key(workflow: str, reporter: str, condition: str) -> str:
    """The ledger row of one alert condition sent by one reporter."""
    return f"{workflow}/{reporter}/{condition}"


def pruned_key(workflow: str) -> str:
    """The row holding when `workflow`'s ledger was last pruned (one `/`: never an alert's)."""
    return f"pruned/{workflow}"


def prune_due(found: Mapping[str, int], workflow: str, now: float) -> bool:
    """Whether the workflow's ledger was last pruned PRUNE_EVERY_SECONDS ago or more (`found`:
    ledger values read with pruned_key among the keys)."""
    last = found.get(pruned_key(workflow))
    return last is None or now - last >= PRUNE_EVERY_SECONDS


class AlertLedger(BookkeepingTable):
    """Reads and writes the ledger through any warehouse (DuckDB, PostgreSQL...); every value is
    a bound parameter."""

    def __init__(self, warehouse: WarehouseResource) -> None:
        super().__init__(warehouse, TABLE, ["id", "workflow", "sent_at"], {"sent_at": "BIGINT"})

    def read(self, keys: Iterable[str]) -> dict[str, int]:
        """The ledger's entries among `keys`: key → when it was written (epoch seconds)."""
        self.ensure()
        wanted, found = sorted(set(keys)), {}
        for start in range(0, len(wanted), READ_BATCH):
            batch = {f"k{i}": key for i, key in enumerate(wanted[start:start + READ_BATCH])}
            marks = ", ".join(self._p(name) for name in batch)
            found |= {key: int(sent_at) for key, sent_at in self.warehouse.fetch(
                f'SELECT "id", "sent_at" FROM {TARGET} WHERE "id" IN ({marks})', batch)}
        return found

    def write(self, key: str, workflow: str, sent_at: float) -> None:
        """Note `key` as written at `sent_at` (a later write replaces the time)."""
        self.ensure()
        self.warehouse.execute(
            f"note alert {key}",
            (f'INSERT INTO {TARGET} ("id", "workflow", "sent_at") VALUES ({self._p("id")}, '
             f'{self._p("wf")}, {self._p("at")}) ON CONFLICT ("id") DO UPDATE SET '
             '"sent_at" = excluded."sent_at"',
             {"id": key, "wf": workflow, "at": int(sent_at)}))

    def prune(self, workflow: str, now: float) -> int:
        """Delete the workflow's entries written KEEP_SECONDS or more before `now` and note the
        time; the count deleted. The workflow is compared as a value (never a LIKE pattern)."""
        self.ensure()
        rows = self.warehouse.execute(
            f"prune the alert ledger of {workflow}",
            (f'DELETE FROM {TARGET} WHERE "workflow" = {self._p("wf")} AND "id" <> '
             f'{self._p("mark")} AND "sent_at" <= {self._p("cutoff")} RETURNING "id"',
             {"wf": workflow, "mark": pruned_key(workflow), "cutoff": int(now - KEEP_SECONDS)}))
        self.write(pruned_key(workflow), workflow, now)
        return len(rows)


def warehouse_ledger(url: str) -> AlertLedger:
    """The ledger in the warehouse at `url`, waiting at most LOCK_TIMEOUT_SECONDS for DuckDB."""
    return AlertLedger(WarehouseResource(url=url, lock_timeout_seconds=LOCK_TIMEOUT_SECONDS))
