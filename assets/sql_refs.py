"""Which warehouse tables a piece of SQL reads, so dependencies come from the SQL itself.

Tables live in one schema per layer: `domain.<table>`, `<database>.<table>`, `query.<name>`,
`identity.<name>` (and its `_map`, `_pairs`, `_id_changes`).
A reference is `schema.table` where the schema is one of those; anything else (aliases,
columns) is left alone.
"""

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Self

_STRINGS_AND_COMMENTS = re.compile(r"\$\$.*?\$\$|[eE]?'(?:[^'\\]|''|\\.)*'|--[^\n]*|/\*.*?\*/",
                                   re.S)
_KEYWORDS = ("where|on|using|join|left|right|inner|outer|full|cross|group|order|limit|union|"
             "natural|lateral|window|having|qualify|offset|except|intersect|as")
# `from x.y alias`, `join x.y as alias`: the alias is a local name in this statement.
_ALIASES = re.compile(rf'(?i)\b(?:from|join)\s+[\w."]+\s+(?:as\s+)?"?(?!(?:{_KEYWORDS})\b)'
                      r'([A-Za-z_]\w*)')
_CTES = re.compile(r"(?i)(?:\bwith|,)\s+([A-Za-z_]\w*)\s+as\s*\(")


@dataclass(frozen=True)
class SqlCatalog:
    """The tables a workflow's SQL may name, by schema, to find an asset's dependencies."""

    tables: frozenset[str]
    schemas: frozenset[str]
    # What `references` found, by SQL text: a table's SQL is asked for by its check, its
    # asset's dependencies and description, and the binding.
    _found: dict[str, tuple[frozenset[str], tuple[str, ...]]] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False)

    @classmethod
    def of(cls, domain: Iterable[str], databases: dict[str, set[str]],
           queries: Iterable[str], identity: Iterable[str] = ()) -> Self:
        tables = {f"domain.{t}" for t in domain} | {f"query.{q}" for q in queries}
        tables |= {f"{db}.{t}" for db, names in databases.items() for t in names}
        tables |= {f"identity.{t}" for t in identity}
        return cls(frozenset(tables), frozenset({"domain", "query", "identity", *databases}))

    def references(self, sql: str) -> tuple[set[str], list[str]]:
        """(known tables the SQL reads, unknown schema.table names in a known schema).

        Names the SQL itself defines (table aliases, CTEs) are not schemas there, so
        `from domain.orders sales where sales.amount > 0` does not read a table `sales.amount`.
        """
        known = self._found.get(sql)
        if known is None:
            known = self._found[sql] = self._references(sql)
        return set(known[0]), list(known[1])

    def _references(self, sql: str) -> tuple[frozenset[str], tuple[str, ...]]:
        code = _STRINGS_AND_COMMENTS.sub(" ", sql)
        local = {name.lower() for name in _ALIASES.findall(code) + _CTES.findall(code)}
        schemas = sorted(self.schemas - local, key=len, reverse=True)
        if not schemas:
            return frozenset(), ()
        names = "|".join(map(re.escape, schemas))
        # A quoted table name is read whole ("people; drop" is not `people`).
        found = {s.lower() + "." + (quoted.replace('""', '"') or plain).lower()
                 for s, quoted, plain in re.findall(
                     rf'(?<![\w."])"?({names})"?\s*\.\s*(?:"((?:[^"]|"")+)"|([A-Za-z_]\w*))',
                     code, flags=re.I)}
        return frozenset(found & self.tables), tuple(sorted(found - self.tables))

    def describe(self, ref: str) -> str:
        """The known tables of a reference's schema, for an error message."""
        schema = ref.split(".", 1)[0]
        same = sorted(t for t in self.tables if t.startswith(f"{schema}."))
        return ", ".join(same) or f"no tables defined in {schema!r}"
