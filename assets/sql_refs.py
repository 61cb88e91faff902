"""Which warehouse tables a piece of SQL reads, so dependencies come from the SQL itself.

Tables live in one schema per layer: `domain.<table>`, `<database>.<table>`, `query.<name>`.
A reference is `schema.table` where the schema is one of those; anything else (aliases,
columns) is left alone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

_STRINGS_AND_COMMENTS = re.compile(r"'(?:[^']|'')*'|--[^\n]*|/\*.*?\*/", re.S)


@dataclass(frozen=True)
class SqlCatalog:
    tables: frozenset[str]
    schemas: frozenset[str]

    @classmethod
    def of(cls, domain: Iterable[str], databases: dict[str, set[str]],
           queries: Iterable[str]) -> SqlCatalog:
        tables = {f"domain.{t}" for t in domain} | {f"query.{q}" for q in queries}
        tables |= {f"{db}.{t}" for db, names in databases.items() for t in names}
        return cls(frozenset(tables), frozenset({"domain", "query", *databases}))

    def references(self, sql: str) -> tuple[set[str], list[str]]:
        """(known tables the SQL reads, unknown schema.table names in a known schema)."""
        code = _STRINGS_AND_COMMENTS.sub(" ", sql)
        schemas = "|".join(sorted(map(re.escape, self.schemas), key=len, reverse=True))
        found = {f"{s.lower()}.{t.lower()}" for s, t in re.findall(
            rf"(?<![\w.\"])({schemas})\s*\.\s*([A-Za-z_]\w*)", code, flags=re.I)}
        return found & self.tables, sorted(found - self.tables)

    def describe(self, ref: str) -> str:
        """The known tables of a reference's schema, for an error message."""
        schema = ref.split(".", 1)[0]
        same = sorted(t for t in self.tables if t.startswith(f"{schema}."))
        return ", ".join(same or sorted(self.tables)) or "none defined"
