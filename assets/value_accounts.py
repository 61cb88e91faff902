"""Every value accounted for: how many values each semantic tag found invalid or changed.

The load carries, per standardised column, a hidden column holding the raw value, masked
(`mask_sql`), where the tag could not read it, and per row one bit mask
(`_stagecoach_changed_0`, a BIGINT; one more per 62 columns) whose bit of a text-result column
says the tag rewrote its value; they are counted in the warehouse right after the rows are
written (in the same transaction) and dropped, so a 2 GB load is read once. One mask instead of
a BOOLEAN column per text-result column: every stored column costs the load its own
compression and writing, even a column of flags.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from assets import spec
from resources.warehouse import quote_ident

INVALID, CHANGED = "_stagecoach_invalid_", "_stagecoach_changed_"
MASK_BITS = 62  # columns per changed mask: bits 0..61 of a BIGINT, clear of its sign bit
SHOWN = 3  # masked examples of invalid values per column
CHECK = "standardisation"


def measured(mapping: spec.ColumnMapping) -> bool:
    """Tags that can find a value invalid or rewrite it (text and id only trim)."""
    return mapping.tag not in ("text", "id")


def changed_bits(table: spec.DomainTable, columns: list[str]) -> dict[str, tuple[str, int]]:
    """Of the measured `columns` (in table order), each text-result one's changed mask column
    and bit: the i-th such column is bit i % 62 of mask i // 62."""
    rewritten = [c for c in columns if table.columns[c].tag in spec.TEXT_RESULT_TAGS]
    return {c: (f"{CHANGED}{i // MASK_BITS}", 1 << (i % MASK_BITS))
            for i, c in enumerate(rewritten)}


def hidden_columns(table: spec.DomainTable, columns: list[str]) -> dict[str, str]:
    """The helper columns the measured `columns` add to a load, name → portable SQL type."""
    hidden = {INVALID + c: "TEXT" for c in columns}
    hidden.update({flags: "BIGINT" for flags, _ in changed_bits(table, columns).values()})
    return hidden


def changed_masks(table: spec.DomainTable, columns: list[str],
                  changed: dict[str, str]) -> list[str]:
    """The SELECT items of the changed masks, from each text-result column's test `changed`
    (SQL true where the tag rewrote the value)."""
    masks: dict[str, list[str]] = {}
    for name, (flags, bit) in changed_bits(table, columns).items():
        masks.setdefault(flags, []).append(f"CASE WHEN {changed[name]} THEN {bit} ELSE 0 END")
    return [f"CAST({' + '.join(bits)} AS BIGINT) AS {quote_ident(flags)}"
            for flags, bits in masks.items()]


def mask_sql(raw: str) -> str:
    """An invalid value as shown: a short prefix then `…`, enough to recognise a kind of mistake,
    never a whole e-mail or phone number; values of up to 4 characters (`n/a`, `-`) identify
    nobody and are shown whole. DuckDB computes it (counting characters as Python does), so a
    load stores only the masked value, short enough to sit inline in DuckDB's strings."""
    return (f"CASE WHEN length({raw}) <= 4 THEN {raw} "
            f"ELSE left({raw}, least(7, length({raw}) // 2)) || '…' END")


@dataclass
class ColumnAccount:
    """One column's count of invalid and changed values in a load."""

    present: int = 0  # non-empty raw values
    invalid: int = 0
    changed: int = 0
    examples: list[str] = field(default_factory=list)


Query = Callable[[str, dict[str, Any]], list[tuple]]


def count(query: Query, relation: str, table: spec.DomainTable, columns: list[str],
          where: str = "", args: dict[str, Any] | None = None) -> dict[str, ColumnAccount]:
    """Count invalid and changed values of the measured `columns` in `relation` (portable SQL,
    run by DuckDB or PostgreSQL)."""
    args = args or {}
    accounts: dict[str, ColumnAccount] = {}
    if not columns:
        return accounts
    parts = []
    bits = changed_bits(table, columns)
    for name in columns:
        parts += [f"count({quote_ident(name)})", f"count({quote_ident(INVALID + name)})"]
        if name in bits:
            flags, bit = bits[name]
            parts.append(f"sum(CASE WHEN ({quote_ident(flags)} & {bit}) <> 0 THEN 1 ELSE 0 END)")
        else:
            parts.append("0")
    row = query(f"SELECT {', '.join(parts)} FROM {relation}{where}", args)[0]
    for i, name in enumerate(columns):
        values, invalid, changed = (int(v or 0) for v in row[3 * i:3 * i + 3])
        keep = table.columns[name].on_invalid == "keep"
        account = ColumnAccount(values + (0 if keep else invalid), invalid, changed)
        if invalid:
            hidden = quote_ident(INVALID + name)
            filtered = f"{where} AND {hidden} IS NOT NULL" if where else \
                f" WHERE {hidden} IS NOT NULL"
            account.examples = [r[0] for r in query(
                f"SELECT {hidden} FROM {relation}{filtered} GROUP BY {hidden} ORDER BY {hidden} "
                f"LIMIT {SHOWN}", args)]
        accounts[name] = account
    return accounts


def metadata(accounts: dict[str, ColumnAccount]) -> dict[str, Any]:
    """`invalid/<column>` and `changed/<column>` counts and `invalid_examples/<column>`."""
    result: dict[str, Any] = {}
    for name, account in accounts.items():
        result[f"invalid/{name}"] = dg.MetadataValue.int(account.invalid)
        result[f"changed/{name}"] = dg.MetadataValue.int(account.changed)
        if account.examples:
            result[f"invalid_examples/{name}"] = dg.MetadataValue.text(
                ", ".join(account.examples))
    return result


def check_spec(key: dg.AssetKey, table: spec.DomainTable) -> list[dg.AssetCheckSpec]:
    """The `standardisation` check of a table whose columns set `max_invalid`, else none."""
    limits = {c: m.max_invalid for c, m in table.columns.items() if m.max_invalid}
    if not limits:
        return []
    shown = ", ".join(f"`{c}` ≤ {limit}" for c, limit in limits.items())
    return [dg.AssetCheckSpec(CHECK, asset=key, blocking=table.standardisation.blocking,
                              description=f"Invalid values per column within bounds: {shown}.")]


def check_result(table: spec.DomainTable, accounts: dict[str, ColumnAccount] | None
                 ) -> dg.AssetCheckResult:
    """Pass when no column's invalid share is over its `max_invalid`; a warning unless the
    feed's `standardisation.blocking` is set."""
    severity = (dg.AssetCheckSeverity.ERROR if table.standardisation.blocking
                else dg.AssetCheckSeverity.WARN)
    if accounts is None:
        return dg.AssetCheckResult(check_name=CHECK, passed=True, severity=severity,
                                   description="nothing was loaded")
    over, meta = [], {}
    for name, mapping in table.columns.items():
        if not mapping.max_invalid:
            continue
        account = accounts.get(name, ColumnAccount())
        share = account.invalid / account.present if account.present else 0.0
        meta[f"invalid_share/{name}"] = dg.MetadataValue.float(round(share, 6))
        if share > spec.percent(mapping.max_invalid):
            over.append(f"`{name}`: {account.invalid:,} of {account.present:,} values invalid "
                        f"({share:.1%}, max {mapping.max_invalid})")
    return dg.AssetCheckResult(
        check_name=CHECK, passed=not over, severity=severity, metadata=meta,
        description="; ".join(over) if over else "every column within its max_invalid")
