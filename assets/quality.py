"""Data-quality checks on warehouse tables, as Dagster asset checks.

Each `quality:` entry of a domain table, database table or query is an asset check that runs
after the table is built, in the same run. A blocking one that fails stops what is downstream
(Dataiku's "run a step depending on a check"); its failure is also an alarm for the alert
reporters. Values from the spec are bound parameters; column names are validated and quoted.
"""

from datetime import UTC, datetime
from typing import Any

import dagster as dg

from assets import spec
from assets.common import signed
from assets.names import WAREHOUSE_KEY, database_table_key, domain_key, query_key
from resources.warehouse import WarehouseResource, qualified, quote_ident


def check_name(check: Any) -> str:
    """An asset check's name: the spec's, else <kind>[_<column>]."""
    column = getattr(check, "column", None) or "_".join(getattr(check, "columns", []) or [])
    return check.name or (f"{check.kind}_{column}" if column else check.kind)


def _failing_rows(warehouse: WarehouseResource, sql: str, params: dict[str, Any] | None = None
                  ) -> int:
    return int(warehouse.fetch(sql, params)[0][0] or 0)


def _evaluate(warehouse: WarehouseResource, table: str, check: Any
              ) -> tuple[bool, dict[str, Any], str]:
    """(passed, metadata, what was found) for one check on `table` (schema.table)."""
    target = qualified(*table.split("."))
    if isinstance(check, spec.RowCountCheck):
        rows = _failing_rows(warehouse, f"SELECT count(*) FROM {target}")
        passed = (check.min is None or rows >= check.min) and (check.max is None
                                                               or rows <= check.max)
        return passed, {"rows": rows}, (f"{rows} rows, expected between {check.min or 0} and "
                                        f"{check.max if check.max is not None else 'any'}")
    if isinstance(check, spec.NotNullCheck):
        counts = {c: _failing_rows(warehouse, f"SELECT count(*) FROM {target} WHERE "
                                              f"{quote_ident(c)} IS NULL")
                  for c in check.columns}
        bad = {c: n for c, n in counts.items() if n}
        return not bad, {"null_rows": counts}, ", ".join(f"{n} null(s) in {c}"
                                                         for c, n in bad.items())
    if isinstance(check, spec.UniqueCheck):
        columns = ", ".join(quote_ident(c) for c in check.columns)
        repeated = _failing_rows(warehouse, f"SELECT count(*) FROM (SELECT {columns} FROM "
                                            f"{target} GROUP BY {columns} HAVING count(*) > 1) "
                                            "AS repeated")
        return not repeated, {"repeated_keys": repeated}, (
            f"{repeated} value(s) of ({', '.join(check.columns)}) appear more than once")
    if isinstance(check, spec.AcceptedValuesCheck):
        names = {f"a{i}": v for i, v in enumerate(check.values)}
        accepted = ", ".join(warehouse.placeholder.format(n) for n in names)
        column = quote_ident(check.column)
        where = f"{column} IS NOT NULL AND {column} NOT IN ({accepted})"
        bad = _failing_rows(warehouse, f"SELECT count(*) FROM {target} WHERE {where}", names)
        sample = [r[0] for r in warehouse.fetch(
            f"SELECT DISTINCT {column} FROM {target} WHERE {where} ORDER BY 1 LIMIT 5", names)]
        return not bad, {"unexpected_rows": bad, "unexpected_values": [str(v) for v in sample]
                         }, f"{bad} row(s) with other values, e.g. {sample}"
    if isinstance(check, spec.FreshnessCheck):
        [(latest,)] = warehouse.fetch(f"SELECT max({quote_ident(check.column)}) FROM {target}")
        if latest is None:
            return False, {"latest": "none"}, f"no value in {check.column}"
        if not isinstance(latest, datetime):
            latest = datetime.fromisoformat(str(latest))
        latest = latest if latest.tzinfo else latest.replace(tzinfo=UTC)
        age = (datetime.now(UTC) - latest).total_seconds()
        limit = spec.seconds_of(check.max_age)
        return age <= limit, {"latest": latest.isoformat(), "age_seconds": round(age)}, (
            f"the latest {check.column} is {latest.isoformat()}, older than {check.max_age}")
    failing = _failing_rows(warehouse, check.sql)
    return not failing, {"failing_rows": failing}, f"{failing} failing row(s)"


def quality_definitions(workflow: spec.Workflow) -> dg.Definitions:
    """The quality family: the `quality:` checks of every domain table, database table and
    query that has some."""
    return dg.Definitions(asset_checks=[check for key, table, checks in quality_targets(workflow)
                                        for check in build_quality_checks(key, table, checks)])


def quality_targets(workflow: spec.Workflow) -> list[tuple[dg.AssetKey, str, list]]:
    """(asset key, warehouse table, its `quality:` checks) of every table that has some."""
    targets = [(domain_key(n), f"domain.{n}", t.quality)
               for n, t in workflow.domain_tables.items()]
    targets += [(database_table_key(db, t), f"{db}.{t}", table.quality)
                for db, database in workflow.databases.items()
                for t, table in database.tables.items()]
    targets += [(query_key(n), f"query.{n}", q.quality)
                for n, q in workflow.queries.items()]
    return [target for target in targets if target[2]]


def build_quality_checks(asset_key: dg.AssetKey, table: str, checks: list[Any]
                         ) -> list[dg.AssetChecksDefinition]:
    """One asset check per `quality:` entry of the table `table` (schema.table)."""
    return [_quality_check(asset_key, table, check) for check in checks]


def _quality_check(asset_key: dg.AssetKey, table: str, check: Any
                   ) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=asset_key, name=check_name(check), blocking=check.blocking,
                    required_resource_keys={WAREHOUSE_KEY},
                    description=check.description or f"{check.kind} on {table}",
                    metadata={"kind": check.kind})
    @signed
    def _check(context) -> dg.AssetCheckResult:  # Dagster reads the context by name
        warehouse = getattr(context.resources, WAREHOUSE_KEY)
        passed, metadata, found = _evaluate(warehouse, table, check)
        return dg.AssetCheckResult(
            passed=passed, metadata=metadata, description=None if passed else found,
            severity=dg.AssetCheckSeverity.ERROR if check.blocking
            else dg.AssetCheckSeverity.WARN)

    return _check
