"""What every section's reference checker is given, and the small checks they share.

A checker is a function `check_<section>(ctx) -> list[Problem]`: it reads the validated
sections and the names each section defines (`ctx.known`, including entries that failed
validation, so a reference to them is not reported twice), and returns its problems.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Self

from assets import spec
from assets.names import RESERVED_SCHEMAS, identity_tables
from assets.sql_bind import Binding, bind_tables, domain_columns
from assets.sql_refs import SqlCatalog
from assets.templating import RUN_ONLY, check_template, uses_variable
from orchestration.spec_problems import Path_, Problem
from resources import settings


@dataclass(frozen=True)
class Context:
    """The inputs of every checker, built once before any runs."""

    sections: Mapping[str, Mapping[str, Any]]  # section → name → validated item
    known: Mapping[str, set[str]]  # section → every name written, valid or not
    info: spec.WorkflowInfo | None  # None when the `workflow:` section is invalid
    params: Mapping[str, Any]  # the workflow's params (raw ones if `workflow:` is invalid)
    raw: Mapping[str, Mapping[str, Any]]  # section → name → the YAML value, valid or not
    flawed: frozenset[Path_]  # where validation found problems before any checker ran

    @classmethod
    def of(cls, sections: Mapping[str, Mapping[str, Any]], known: Mapping[str, set[str]],
           info: spec.WorkflowInfo | None, raw_params: Any,
           raw: Mapping[str, Mapping[str, Any]] | None = None,
           flawed: Iterable[Path_] = ()) -> Self:
        params = info.params if info is not None else (
            raw_params if isinstance(raw_params, dict) else {})
        return cls(sections, known, info, params, raw or {}, frozenset(flawed))

    def is_flawed(self, path: Path_) -> bool:
        """True when validation already found a problem at or under `path`."""
        return any(p[:len(path)] == path for p in self.flawed)

    def invalid(self, section: str) -> dict[str, dict[str, Any]]:
        """The entries of a section that failed validation, as written (mappings only): what
        can still be checked in them is checked in the same pass, not after they are fixed."""
        return {str(name): value for name, value in self.raw.get(section, {}).items()
                if name not in self.sections[section] and isinstance(value, dict)}

    @property
    def connections(self) -> Mapping[str, Any]:
        return self.sections["connections"]

    @cached_property
    def catalog(self) -> SqlCatalog:
        return SqlCatalog.of(
            domain=self.known["domain_tables"],
            databases={db: set(d.tables) for db, d in self.sections["databases"].items()},
            queries=self.known["queries"],
            identity=[t for n in self.known["identity"] for t in identity_tables(n).values()])

    @cached_property
    def written_catalog(self) -> SqlCatalog:
        """Every table the spec names, valid or not: SQL reading an invalid one is not bound
        (its errors are said where it is written)."""
        databases = {str(db): set(map(str, tables)) if isinstance(
            tables := (raw.get("tables") if isinstance(raw, dict) else None), dict) else set()
            for db, raw in self.raw.get("databases", {}).items()}
        return SqlCatalog.of(domain=self.known["domain_tables"], queries=self.known["queries"],
                             databases={**databases, **{db: set(d.tables) for db, d in
                                                        self.sections["databases"].items()}},
                             identity=[t for n in self.known["identity"]
                                       for t in identity_tables(n).values()])

    @cached_property
    def binding(self) -> Binding:
        """Every SQL table bound against the declared columns (assets/sql_bind.py). A table
        whose SQL names an unknown table or does not render is left out: its error is said once,
        by the reference check."""
        domain = {}
        for name, table in self.sections["domain_tables"].items():
            courier = self.sections["couriers"].get(table.from_)
            domain[name] = domain_columns(table, courier is None or courier.dated)
        tables: dict[str, tuple[str, set[str]]] = {}
        for path, schema, name, table in self.sql_tables():
            if (path[0] == "databases" and schema in RESERVED_SCHEMAS) or self.is_flawed(path):
                continue  # a reserved name or an entry with errors: said already
            refs, unknown = self.written_catalog.references(table.sql or "")
            if table.sql and not unknown and not self.template(table.sql, (), sql=True):
                tables[f"{schema}.{name}"] = (table.sql, refs | set(table.depends_on))
        return bind_tables(domain, tables, self.params,
                           strict=settings.warehouse_kind() == "duckdb")

    def sql_tables(self) -> list[tuple[Path_, str, str, spec.SqlTable]]:
        """(spec path, schema, table, its model) of every valid database table and query."""
        found: list[tuple[Path_, str, str, spec.SqlTable]] = [
            (("databases", db, "tables", t), db, t, table)
            for db, database in self.sections["databases"].items()
            for t, table in database.tables.items()]
        return found + [(("queries", q), "query", q, query)
                        for q, query in self.sections["queries"].items()]

    @property
    def jobs(self) -> set[str]:
        """What triggers and alerts may name: the workflow's job and every group's."""
        return {"workflow", *self.known["courier_groups"], *self.known["orchestration_groups"],
                *self.known["automations"]}

    def kind(self, connection: str) -> str | None:
        """A connection's kind; None when it failed validation (its errors already said)."""
        return getattr(self.connections.get(connection), "kind", None)

    def unknown(self, section: str, name: str, path: Path_, what: str) -> list[Problem]:
        """[] when `name` is defined in `section`, else the problem listing the known names."""
        if name in self.known[section]:
            return []
        known = ", ".join(sorted(self.known[section])) or "none defined"
        return [Problem(path, f"unknown {what} {name!r} (known: {known})")]

    def template(self, template: str | None, path: Path_, params: Mapping[str, Any] | None = None,
                 sql: bool = False, extra: Mapping[str, Any] | None = None) -> list[Problem]:
        """A template's problem (unknown variable, bad syntax), checked against `params`
        (default the workflow's)."""
        if not template:
            return []
        problem = check_template(template, self.params if params is None else params, sql,
                                 extra)
        return [Problem(path, problem)] if problem else []


def no_run_id(template: str | None, path: Path_, why: str) -> list[Problem]:
    """{{ run_id }} where no run exists yet (a sensor or schedule renders the template)."""
    if uses_variable(template, RUN_ONLY):
        return [Problem(path, f"{{{{ {RUN_ONLY} }}}} is unknown here: {why}; use the date "
                              "macros or `workflow` instead")]
    return []
